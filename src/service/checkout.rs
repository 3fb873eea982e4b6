//! The paced checkout (DESIGN.md "Paystack's limits shape the flash sale"). Paystack allows an
//! integration ~20 initializes a second; a flash sale takes seats far faster. A purchase
//! initializes inline while the shared budget (`budget::Call::Initialize`) has a slot, and
//! otherwise (or on a Paystack 429) keeps its seats, answers 201 with `authorization_url:
//! null` and hands the link over to this initializer (`repo::orders::defer_checkout`).
//!
//! One initializer per instance. It claims deferred holds oldest first (a claim per order,
//! so two instances never initialize one), takes a budget slot for each, and stores the
//! link; the hold's `expires_at` then counts from the link, and the change is published so
//! websocket subscribers get the link at once (`GET /payments/transactions/:reference` shows
//! it too). A hold that ends before its link exists is simply skipped.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    clients::paystack::{GatewayError, NewTransaction},
    domain::status::OrderStatus,
    repo::{self, orders::DeferredCheckout},
    service::{
        budget::{self, Call},
        holds,
    },
    state::AppState,
};

/// Holds claimed per round: a little over a second of the live budget.
const BATCH: i64 = 25;

/// How long a claim lasts: the batch at the budget's pace, each call's timeout, a margin.
fn claim_seconds(state: &AppState) -> f64 {
    let per_second = f64::from(state.config.paystack_initializes_per_second.max(1));
    BATCH as f64 / per_second + 2.0 * state.config.paystack_timeout.as_secs_f64() + 10.0
}

/// After a failure that is not a rate limit (Paystack down, a timeout): the next try.
const RETRY_SECONDS: f64 = 2.0;

/// Makes the links of deferred holds until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let poll = state
        .config
        .job_poll_interval
        .max(Duration::from_millis(20));
    while !shutdown.is_cancelled() {
        let claimed =
            match repo::orders::claim_deferred_checkouts(&state.db, BATCH, claim_seconds(&state))
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "checkout initializer: orders unavailable");
                    Vec::new()
                }
            };
        if claimed.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        tracing::info!(holds = claimed.len(), "making deferred checkout links");
        let mut rest = claimed.into_iter();
        while let Some(order) = rest.next() {
            if shutdown.is_cancelled() {
                return;
            }
            if let Some(wait) = initialize(&state, &order, &shutdown).await {
                // Paystack is over its limit: this batch waits for its window (the claims
                // keep other instances away meanwhile).
                for later in rest.by_ref() {
                    let _ = repo::orders::retry_deferred_checkout(
                        &state.db,
                        later.id,
                        wait.as_secs_f64(),
                    )
                    .await;
                }
            }
        }
    }
}

/// One link, within the budget. `Some(wait)`: Paystack answered 429; come back after `wait`.
async fn initialize(
    state: &AppState,
    order: &DeferredCheckout,
    shutdown: &CancellationToken,
) -> Option<Duration> {
    while let Some(wait) = budget::try_now(state, Call::Initialize).await {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    let started = state
        .gateway
        .initialize(NewTransaction {
            email: &order.email,
            amount: order.total_amount,
            currency: &order.currency,
            reference: &order.reference,
            order_id: order.id,
            event_id: order.event_id,
        })
        .await;
    let retry = |seconds: f64| async move {
        if let Err(e) = repo::orders::retry_deferred_checkout(&state.db, order.id, seconds).await {
            tracing::warn!(error = %e, "deferred checkout not rescheduled; its claim lapses");
        }
    };
    match started {
        Ok(checkout) => {
            let stored = repo::orders::set_deferred_checkout(
                &state.db,
                order.id,
                &checkout.authorization_url,
                &checkout.access_code,
                state.config.hold_ttl.as_secs_f64(),
            )
            .await;
            match stored {
                Ok(true) => {
                    metrics::counter!("ticketing_deferred_checkouts_total", "outcome" => "linked")
                        .increment(1);
                    holds::publish_status(state, &order.reference, OrderStatus::Pending).await;
                }
                // The hold ended meanwhile: its transaction is never paid (or, if it is, the
                // late-payment rules settle or refund it).
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, reference = %order.reference, "link not stored; made again");
                    retry(RETRY_SECONDS).await;
                }
            }
            None
        }
        Err(GatewayError::Limited { retry_after }) => {
            metrics::counter!("ticketing_deferred_checkouts_total", "outcome" => "rate_limited")
                .increment(1);
            retry(retry_after.as_secs_f64()).await;
            Some(retry_after)
        }
        Err(e) => {
            metrics::counter!("ticketing_deferred_checkouts_total", "outcome" => "failed")
                .increment(1);
            tracing::warn!(error = %e, reference = %order.reference, "deferred checkout failed; retried");
            retry(RETRY_SECONDS).await;
            None
        }
    }
}
