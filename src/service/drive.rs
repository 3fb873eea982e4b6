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

/// How long a claim on a refund or payout lasts unless renewed: one Paystack call and a
/// margin. A live driver renews it every `RENEW_EVERY` (`keep_renewed`), so a driver that died
/// (SIGKILL, a lost machine) frees its item within this time rather than after the longest
/// drive could take.
///
/// Should a lease lapse under a live driver anyway (its renewals could not reach the
/// database), a second driver is still safe: every write is guarded by the lease id, a send
/// starts only with a call's worth of lease left, and a refund being sent is not looked up
/// before that call could have finished (`repo::refunds::start_sending`).
pub fn lease_seconds(state: &AppState) -> f64 {
    state.config.paystack_timeout.as_secs_f64() + 15.0
}

/// How often a live driver renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The longest a drive keeps renewing: up to six Paystack calls (verify and list with a quick
/// retry each, the write, a check) and the budget wait. A drive stuck past this (a lock wait
/// that never ends) lets its lease lapse, so the item is not held forever.
fn longest_drive(state: &AppState) -> Duration {
    6 * state.config.paystack_timeout + Duration::from_secs(60)
}

/// Which table a lease is on.
#[derive(Clone, Copy, Debug)]
pub enum Leased {
    /// By order id.
    Refund(Uuid),
    Payout(Uuid),
}

/// Renews a lease until dropped (the drive ended), until the lease is no longer ours, or
/// until `longest_drive` has passed.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn keep_renewed(state: &AppState, item: Leased, lease: Uuid) -> Renewal {
    let db = state.db.clone();
    let seconds = lease_seconds(state);
    let until = tokio::time::Instant::now() + longest_drive(state);
    Renewal(tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tokio::time::Instant::now() >= until {
                tracing::warn!(?item, "a drive ran past its longest; its lease will lapse");
                return;
            }
            let renewed = match item {
                Leased::Refund(order_id) => {
                    repo::refunds::renew(&db, order_id, lease, seconds).await
                }
                Leased::Payout(id) => repo::payouts::renew(&db, id, lease, seconds).await,
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
