//! The paced checkout (DESIGN.md "Paystack's limits shape the flash sale"). Paystack allows an
//! integration ~20 initializes a second; a flash sale takes seats far faster. A purchase
//! initializes inline while the shared budget (`budget::Call::Initialize`) has a slot, and
//! otherwise keeps its seats, answers 201 with `authorization_url: null` and hands the link
//! over to this initializer: the order is inserted deferred by its hold's batch
//! (`HoldAsk::deferred`), or marked afterwards on a Paystack 429
//! (`repo::orders::defer_checkout`).
//!
//! One initializer per instance. It claims deferred holds oldest first (a claim per order,
//! renewed right before each call, so two instances never initialize one), takes a budget
//! slot for each, and stores the link; the hold's `expires_at` then counts from the link, and the change is published so
//! websocket subscribers get the link at once (`GET /payments/transactions/:reference` shows
//! it too). A hold that ends before its link exists is simply skipped.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    clients::paystack::{GatewayError, NewTransaction},
    domain::{ids::OrderId, status::OrderStatus},
    repo::{self, orders::DeferredCheckout},
    service::{
        budget::{self, Call},
        holds,
    },
    state::AppState,
};

/// Holds claimed per round: a little over a second of the live budget.
const BATCH: i64 = 25;

/// How long a deferred hold may wait for its link. Its time (`HOLD_TTL_SECONDS`) runs from the
/// link, so until then the sweeper leaves it alone: at Paystack's 20 links a second a sale of
/// 20,000 deferred holds needs ~17 minutes, past the default hold time. The bound keeps seats
/// from being held for ever when Paystack will not make links at all (at 20 a second, an hour
/// is 72,000 links).
pub const LINK_WAIT_LIMIT: Duration = Duration::from_secs(3_600);

/// How long a round's claim lasts before each order's own is renewed (right before its call).
const CLAIM_SECONDS: f64 = 30.0;

/// A claim renewed for one call: the call's timeout and a margin, so it cannot lapse while
/// the call is in flight and another instance initialize the same reference.
fn call_claim_seconds(state: &AppState) -> f64 {
    state.config.paystack_timeout.as_secs_f64() + 10.0
}

/// After a failure that is not a rate limit (Paystack down, a timeout): the next try.
const RETRY_SECONDS: f64 = 2.0;

/// Makes the links of deferred holds until `shutdown`. The calls of a round run side by side
/// (up to the budget a second): one after another, Paystack's latency (0.3–0.8 s) would cap
/// an instance at a few links a second, far under the budget.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let poll = state
        .config
        .job_poll_interval
        .max(Duration::from_millis(20));
    let parallel = state.config.paystack_initializes_per_second.clamp(1, 20) as usize;
    while !shutdown.is_cancelled() {
        let claim = Uuid::now_v7();
        let claimed = match repo::orders::claim_deferred_checkouts(
            &state.db,
            BATCH,
            CLAIM_SECONDS,
            claim,
            LINK_WAIT_LIMIT.as_secs_f64(),
        )
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
        // The longest window Paystack named in a 429 this round: the next round waits it out
        // rather than meet another 429.
        let limited = std::sync::Mutex::new(None::<Duration>);
        futures::stream::iter(claimed)
            .for_each_concurrent(parallel, |order| {
                let (state, shutdown, limited) = (&state, &shutdown, &limited);
                async move {
                    if let Some(wait) = initialize(state, &order, claim, shutdown).await
                        && let Ok(mut longest) = limited.lock()
                    {
                        *longest = Some(longest.map_or(wait, |w| w.max(wait)));
                    }
                }
            })
            .await;
        if shutdown.is_cancelled() {
            // What this round did not reach is free for the other instances at once.
            let _ = repo::orders::release_checkout_claims(&state.db, claim).await;
            break;
        }
        let pause = limited.lock().ok().and_then(|l| *l);
        if let Some(wait) = pause {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One link, within the budget, under `claim`. `Some(wait)`: Paystack answered 429; come
/// back after `wait`.
async fn initialize(
    state: &AppState,
    order: &DeferredCheckout,
    claim: Uuid,
    shutdown: &CancellationToken,
) -> Option<Duration> {
    while let Some(wait) = budget::try_now(state, Call::Initialize).await {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Still ours and still wanted, for as long as the call can take.
    match repo::orders::reassert_checkout_claim(
        &state.db,
        order.id,
        claim,
        call_claim_seconds(state),
        LINK_WAIT_LIMIT.as_secs_f64(),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "checkout claim not renewed; left for the next round");
            return None;
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
        // Refused for good. Among these `duplicate_reference`: an earlier attempt reached
        // Paystack but its answer was lost, and Paystack never gives an existing
        // transaction's link back (contract: "Idempotency"). The hold ends and the buyer is
        // told (websocket, GET, mail); they may buy again, with a fresh reference.
        Err(e @ GatewayError::Rejected { .. }) => {
            metrics::counter!("ticketing_deferred_checkouts_total", "outcome" => "refused")
                .increment(1);
            tracing::warn!(error = %e, reference = %order.reference, "deferred checkout refused; the hold ends");
            if let Err(e) = holds::end_and_tell(state, OrderId(order.id), OrderStatus::Failed).await
            {
                tracing::warn!(error = %e, "refused hold not ended; tried again");
                retry(RETRY_SECONDS).await;
            }
            None
        }
        // Paystack down or slow: tried again (a call that did reach it is then refused as a
        // duplicate, above).
        Err(e) => {
            metrics::counter!("ticketing_deferred_checkouts_total", "outcome" => "failed")
                .increment(1);
            tracing::warn!(error = %e, reference = %order.reference, "deferred checkout failed; retried");
            retry(RETRY_SECONDS).await;
            None
        }
    }
}
