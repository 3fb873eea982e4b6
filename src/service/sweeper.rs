//! One sweeper pass: what makes a lost webhook, a lost job or a crash between two steps
//! harmless (DESIGN.md step 6). Safe on every instance at once: hold transitions are guarded
//! statements, refunds and payouts are claimed by lease (one driver each), so there is no
//! leader election.

use futures::{StreamExt, stream};

use crate::{
    clients::paystack::TxStatus,
    domain::{
        ids::{OrderId, PayoutId},
        status::OrderStatus,
    },
    error::AppResult,
    repo,
    service::{holds, payments, payouts, refunds},
    state::AppState,
};

/// How many refunds or payouts one instance drives at once (each may wait on Paystack).
const PARALLEL: usize = 8;

/// What one pass did, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    pub redriven: usize,
    pub refunds: usize,
    pub payouts_started: usize,
    pub payouts: usize,
}

pub async fn sweep(state: &AppState) -> AppResult<Sweep> {
    let mut done = Sweep {
        expired: expire_holds(state).await?,
        ..Sweep::default()
    };
    let grace = state.config.redrive_after.as_secs_f64();
    // Paid orders missing tickets or mail, and charges whose job never ran or gave up: the
    // settlement is idempotent, so running it again only finishes what is missing.
    let mut stuck = repo::orders::incomplete_paid(&state.db, grace, 100).await?;
    stuck.extend(repo::payment_events::unprocessed_charges(&state.db, grace, 100).await?);
    stuck.sort();
    stuck.dedup();
    for reference in &stuck {
        if let Err(e) = payments::settle(state, reference).await {
            tracing::warn!(error = %e, %reference, "re-driving a payment failed");
        }
    }
    done.redriven = stuck.len();

    let due = repo::refunds::due(&state.db, state.clock.now(), 200).await?;
    done.refunds = due.len();
    stream::iter(due)
        .for_each_concurrent(PARALLEL, |order_id| async move {
            if let Err(e) = refunds::drive(state, OrderId(order_id)).await {
                tracing::warn!(error = %e, %order_id, "refund step failed; retried when due");
            }
        })
        .await;

    done.payouts_started = payouts::start_due(state).await?;
    let due = repo::payouts::due(&state.db, state.clock.now(), 100).await?;
    done.payouts = due.len();
    stream::iter(due)
        .for_each_concurrent(PARALLEL, |payout_id| async move {
            if let Err(e) = payouts::drive(state, PayoutId(payout_id), false).await {
                tracing::warn!(error = %e, %payout_id, "payout step failed; retried when due");
            }
        })
        .await;

    // A gauge from the database, not from increments: holds are made on one instance and
    // released on another, so only the shared count is true.
    if let Ok(n) = repo::orders::count_pending(&state.db).await {
        metrics::gauge!("ticketing_holds_active").set(n as f64);
    }
    Ok(done)
}

/// Expires holds past `expires_at`, after asking Paystack whether they were paid.
async fn expire_holds(state: &AppState) -> AppResult<usize> {
    let mut expired = 0;
    for (order_id, reference) in repo::orders::expired_holds(&state.db, 200).await? {
        match state.gateway.verify(&reference).await {
            Ok(v) if v.status == TxStatus::Success => {
                // Paid after all (a lost webhook): settle instead of expiring.
                if let Err(e) = payments::settle(state, &reference).await {
                    tracing::warn!(error = %e, %reference, "settling a paid hold failed; next pass retries");
                }
            }
            Ok(_) => match holds::end(state, OrderId(order_id), OrderStatus::Expired).await {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, %reference, "expiring a hold failed"),
            },
            // Paystack unreachable: keep the hold; the next pass asks again.
            Err(e) => tracing::warn!(error = %e, %reference, "cannot verify an expired hold yet"),
        }
    }
    Ok(expired)
}
