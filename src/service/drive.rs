//! What the refund and payout drivers share: how long a lease lasts, how retries back off,
//! and what one drive ended with. Both hold a row's lease while they call Paystack, so the
//! lease must outlast every call one drive makes.

use std::time::Duration;

use uuid::Uuid;

use crate::{repo, state::AppState};

/// What one drive of a refund or payout ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Driven {
    /// Another driver holds the item (or there is nothing left to do).
    NotClaimed,
    /// Finished: refunded, or paid out.
    Done,
    /// Waiting for Paystack or a retry; the row says when to look again.
    Later,
    /// The shared Paystack budget is spent: come back shortly.
    Throttled,
}

/// How long a claim on a refund or payout lasts unless renewed. A live driver renews it every
/// third of that (`keep_renewed`) for as long as its drive takes, however many slow Paystack
/// calls that is; a driver that died (SIGKILL, a lost machine) stops renewing and its item is
/// free again within this time rather than after the longest drive could take.
///
/// Should a lease lapse under a live driver anyway (the database unreachable for that long),
/// the second driver is still safe: every write is guarded by the lease id, and a refund or
/// transfer whose send may have happened is looked up, after a delay, before it is resent.
pub const LEASE_SECONDS: f64 = 15.0;

/// Which table a lease is on.
#[derive(Clone, Copy, Debug)]
pub enum Leased {
    /// By order id.
    Refund(Uuid),
    Payout(Uuid),
}

/// Renews a lease until dropped (the drive ended) or until the lease is no longer ours.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn keep_renewed(state: &AppState, item: Leased, lease: Uuid) -> Renewal {
    let db = state.db.clone();
    Renewal(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(LEASE_SECONDS / 3.0));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let renewed = match item {
                Leased::Refund(order_id) => {
                    repo::refunds::renew(&db, order_id, lease, LEASE_SECONDS).await
                }
                Leased::Payout(id) => repo::payouts::renew(&db, id, lease, LEASE_SECONDS).await,
            };
            match renewed {
                Ok(true) => {}
                // Released by the drive, or taken over: nothing left to renew.
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, ?item, "lease not renewed; retried"),
            }
        }
    }))
}

/// `JOB_RETRY_BASE × 2^attempts`, at most an hour.
pub fn backoff(state: &AppState, attempts: i32) -> f64 {
    let base = state.config.job_retry_base.as_secs_f64().max(0.001);
    (base * 2f64.powi(attempts.clamp(0, 16))).min(3600.0)
}
