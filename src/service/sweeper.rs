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
    service::{auth, holds, payments, payouts, refunds},
    state::AppState,
};

/// How many refunds or payouts one instance drives at once (each may wait on Paystack).
const PARALLEL: usize = 8;

/// What one pass did, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    /// Orders expired unverified, asked about again.
    pub reverified: usize,
    pub redriven: usize,
    pub refunds: usize,
    pub payouts_started: usize,
    pub payouts: usize,
}

pub async fn sweep(state: &AppState) -> AppResult<Sweep> {
    // First, and whatever else fails: a Redis that restarted empty gets the logged-out tokens
    // back even when no authenticated request notices, and logouts that missed Redis are
    // copied (the rest of a pass can take minutes during a mass refund).
    if let Err(e) = auth::ensure_revocations(state).await {
        tracing::warn!(error = %e, "revocations not checked in Redis");
    }
    let mut done = Sweep {
        expired: expire_holds(state).await?,
        reverified: reverify(state).await?,
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

    // The outbox keeps what was sent for a month (bodies are dropped when sent); pruned
    // about hourly per instance, as the scan is not free.
    static LAST_PRUNE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let due = LAST_PRUNE.lock().map(|mut last| {
        let due = last.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(3600));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    });
    if due.unwrap_or(false) {
        if let Err(e) = repo::mail::prune(&state.db, 30).await {
            tracing::warn!(error = %e, "old mail not pruned");
        }
        if let Err(e) = repo::users::prune_revocations(&state.db).await {
            tracing::warn!(error = %e, "expired revocations not pruned");
        }
    }

    // A gauge from the database, not from increments: holds are made on one instance and
    // released on another, so only the shared count is true.
    if let Ok(n) = repo::orders::count_pending(&state.db).await {
        metrics::gauge!("ticketing_holds_active").set(n as f64);
    }
    Ok(done)
}

/// How long a sweeper's claim on a hold lasts: past one Paystack call and what follows it.
/// Holds are claimed `PARALLEL` at a time, so a claim never waits behind a long batch.
fn claim_lease(state: &AppState) -> f64 {
    (state.config.paystack_timeout * 2).as_secs_f64() + 5.0
}

/// Holds one pass looks at, at most.
const HOLDS_PER_PASS: usize = 200;

/// Expires holds past `expires_at`, after asking Paystack whether they were paid. The holds
/// are claimed per instance (`repo::orders::claim_expired_holds`) and verified
/// `PARALLEL` at a time. While Paystack cannot answer a hold stays, until `HOLD_TTL_SECONDS`
/// past its expiry: then it is expired anyway and marked for re-verification.
async fn expire_holds(state: &AppState) -> AppResult<usize> {
    let expired = std::sync::atomic::AtomicUsize::new(0);
    let give_up_after = time::Duration::try_from(state.config.hold_ttl).unwrap_or_default();
    let mut seen = 0;
    while seen < HOLDS_PER_PASS {
        let claimed = repo::orders::claim_expired_holds(
            &state.db,
            claim_lease(state),
            PARALLEL as i64,
            crate::service::checkout::LINK_WAIT_LIMIT.as_secs_f64(),
        )
        .await?;
        if claimed.is_empty() {
            break;
        }
        seen += claimed.len();
        futures::future::join_all(claimed.into_iter().map(|(order_id, reference, expires_at)| {
            let expired = &expired;
            async move {
                let ended = match payments::verify_within(state, &reference, std::time::Duration::ZERO).await {
                    Ok(v) if v.status == TxStatus::Success => {
                        // Paid after all (a lost webhook): settle instead of expiring.
                        if let Err(e) = payments::settle(state, &reference).await {
                            tracing::warn!(error = %e, %reference, "settling a paid hold failed; next pass retries");
                            back_off(state, order_id).await;
                        }
                        return;
                    }
                    Ok(_) => {
                        holds::end_and_tell(state, OrderId(order_id), OrderStatus::Expired).await
                    }
                    Err(e) if state.clock.now() >= expires_at + give_up_after => {
                        tracing::warn!(error = %e, %reference, "Paystack cannot say whether an expired hold was paid; releasing its seats and asking again later");
                        holds::expire_unverified(state, OrderId(order_id)).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %reference, "cannot verify an expired hold yet");
                        back_off(state, order_id).await;
                        return;
                    }
                };
                match ended {
                    Ok(true) => {
                        expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, %reference, "expiring a hold failed");
                        back_off(state, order_id).await;
                    }
                }
            }
        }))
        .await;
    }
    Ok(expired.into_inner())
}

/// Orders expired while Paystack could not answer: asked again until it gives a final
/// answer. Paid: `settle` applies the late-payment rules. Failed, abandoned or unknown to
/// Paystack: nothing was paid, the mark goes. Anything else (still processing, or no answer):
/// asked again after a sweep interval.
async fn reverify(state: &AppState) -> AppResult<usize> {
    let claimed = repo::orders::claim_reverify(&state.db, claim_lease(state), 100).await?;
    let n = claimed.len();
    stream::iter(claimed)
        .for_each_concurrent(PARALLEL, |(order_id, reference)| async move {
            let done = match payments::verify_within(state, &reference, std::time::Duration::ZERO).await {
                Ok(v) if v.status == TxStatus::Success => payments::settle(state, &reference)
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string()),
                Ok(v) => Ok(!matches!(v.status, TxStatus::NotFinal(ref s) if s != "abandoned")),
                Err(e) => Err(e.to_string()),
            };
            match done {
                Ok(true) => {
                    if let Err(e) = repo::orders::set_reverify(&state.db, order_id, false).await {
                        tracing::warn!(error = %e, %reference, "re-verified order not unmarked");
                    }
                }
                Ok(false) => back_off(state, order_id).await,
                Err(e) => {
                    tracing::warn!(error = %e, %reference, "re-verifying an expired hold failed; next pass retries");
                    back_off(state, order_id).await;
                }
            }
        })
        .await;
    Ok(n)
}

/// Paystack could not settle it now: the claim is kept for one sweep interval, so no
/// instance asks again before then (a backoff shared by every instance).
async fn back_off(state: &AppState, order_id: uuid::Uuid) {
    let seconds = state.config.sweep_interval.as_secs_f64();
    if let Err(e) = repo::orders::hold_verify_claim(&state.db, order_id, seconds).await {
        // The lease runs out by itself.
        tracing::warn!(error = %e, %order_id, "verify claim not renewed");
    }
}
