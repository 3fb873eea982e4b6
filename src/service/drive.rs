//! What the refund and payout drivers share: how long a lease lasts, how retries back off,
//! and what one drive ended with. Both hold a row's lease while they call Paystack, so the
//! lease must outlast every call one drive makes.

use crate::state::AppState;

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

/// Up to six Paystack calls (verify and list with a quick retry each, the write, a check),
/// each bounded by the timeout, plus the budget wait and a margin. A lease that ran out lets
/// another driver in, so it must not run out.
pub fn lease_seconds(state: &AppState) -> f64 {
    6.0 * state.config.paystack_timeout.as_secs_f64() + 60.0
}

/// `JOB_RETRY_BASE × 2^attempts`, at most an hour.
pub fn backoff(state: &AppState, attempts: i32) -> f64 {
    let base = state.config.job_retry_base.as_secs_f64().max(0.001);
    (base * 2f64.powi(attempts.clamp(0, 16))).min(3600.0)
}
