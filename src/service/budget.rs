//! The shared Paystack budget for calls that move money out (DESIGN.md "Paystack's limits
//! shape the flash sale"): a per-second window in Redis per endpoint, shared by every
//! instance, so a mass refund of 10,000 orders paces itself instead of failing on 429s.
//!
//! A fixed one-second window (INCR + EXPIRE) is enough here: the limits are per minute at
//! Paystack and we stay well under them per second; it costs one round trip per call.

use std::time::Duration;

use crate::state::AppState;

#[derive(Debug, Clone, Copy)]
pub enum Call {
    Refund,
    Transfer,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Refund => "refund",
            Call::Transfer => "transfer",
        }
    }

    fn per_second(self, state: &AppState) -> u32 {
        match self {
            Call::Refund => state.config.paystack_refunds_per_second,
            Call::Transfer => state.config.paystack_transfers_per_second,
        }
    }
}

/// Waits (up to about two seconds) for a slot in the budget. False: none free now — the
/// caller keeps its item and tries again later, it never calls Paystack over the budget.
/// When Redis cannot answer, the call goes ahead: jobs cannot run without Redis anyway, and
/// the sweeper's own pace is bounded.
pub async fn take(state: &AppState, call: Call) -> bool {
    let limit = i64::from(call.per_second(state).max(1));
    for _ in 0..3 {
        let now = time::OffsetDateTime::now_utc();
        let key = state.redis.key(format!(
            "paystack:budget:{}:{}",
            call.name(),
            now.unix_timestamp()
        ));
        let mut conn = state.redis.conn();
        let used: Result<(i64,), _> = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, 2)
            .ignore()
            .query_async(&mut conn)
            .await;
        match used {
            Ok((n,)) if n <= limit => return true,
            Ok(_) => {
                metrics::counter!("ticketing_paystack_budget_waits_total", "call" => call.name())
                    .increment(1);
                let into_second = u64::from(now.millisecond());
                tokio::time::sleep(Duration::from_millis(1_000 - into_second.min(999) + 5)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "paystack budget unavailable; calling anyway");
                return true;
            }
        }
    }
    false
}
