//! The shared Paystack budget for calls that move money out (DESIGN.md "Paystack's limits
//! shape the flash sale"): a per-second window in Redis per endpoint, shared by every
//! instance, so a mass refund of 10,000 orders paces itself instead of failing on 429s.
//!
//! A sliding window in Redis (`window_slot`), by Redis's clock: one round trip per call.
//! The mail sender paces Resend with the same window (`service::mail`).

use std::time::Duration;

use crate::state::AppState;

#[derive(Debug, Clone, Copy)]
pub enum Call {
    Initialize,
    Verify,
    Refund,
    Transfer,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Initialize => "initialize",
            Call::Verify => "verify",
            Call::Refund => "refund",
            Call::Transfer => "transfer",
        }
    }

    fn per_second(self, state: &AppState) -> u32 {
        match self {
            Call::Initialize => state.config.paystack_initializes_per_second,
            Call::Verify => state.config.paystack_verifies_per_second,
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
    let name = format!("paystack:budget:{}", call.name());
    for _ in 0..3 {
        match window_slot(state, &name, call.per_second(state)).await {
            Ok(None) => return true,
            Ok(Some(wait)) => {
                metrics::counter!("ticketing_paystack_budget_waits_total", "call" => call.name())
                    .increment(1);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "paystack budget unavailable; calling anyway");
                return true;
            }
        }
    }
    false
}

/// Waits for a slot as long as `longest` allows (a queue of calls at the budget's pace);
/// `Some(wait)` when none came in time (the caller retries after `wait`). A Redis that
/// cannot answer counts as a free slot (as in `take`).
pub async fn wait(state: &AppState, call: Call, longest: Duration) -> Option<Duration> {
    let until = tokio::time::Instant::now() + longest;
    loop {
        let wait = try_now(state, call).await?;
        metrics::counter!("ticketing_paystack_budget_waits_total", "call" => call.name())
            .increment(1);
        if tokio::time::Instant::now() + wait > until {
            return Some(wait);
        }
        tokio::time::sleep(wait).await;
    }
}

/// One slot now, or `Some(wait)` until one frees; never waits. A Redis that cannot answer
/// counts as a free slot (as in `take`).
pub async fn try_now(state: &AppState, call: Call) -> Option<Duration> {
    let name = format!("paystack:budget:{}", call.name());
    match window_slot(state, &name, call.per_second(state)).await {
        Ok(wait) => wait,
        Err(e) => {
            tracing::warn!(error = %e, "paystack budget unavailable; calling anyway");
            None
        }
    }
}

/// How far back a budget looks: a little over a second, so that `per_second` calls spaced by
/// this window also fit in any one-second window of the provider, whose clock and our
/// network add a few milliseconds either way (a plain per-second window let a 6th request
/// of one provider second through across the boundary).
const WINDOW_MS: i64 = 1_100;

/// At most `ARGV[2]` members within the last `ARGV[1]` ms, by Redis's own clock (one clock
/// for every instance): 0 when this call took a slot, else the milliseconds until one frees.
static SLIDING: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local window = tonumber(ARGV[1])
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
          if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
              redis.call('ZADD', KEYS[1], now, ARGV[3])
              redis.call('PEXPIRE', KEYS[1], window)
              return 0
          end
          local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
          return math.max(1, tonumber(oldest[2]) + window - now)",
    )
});

/// One call's worth of a per-second budget shared by every instance (a sliding window in
/// Redis). `None`: taken; `Some(wait)`: spent, a slot frees after `wait`.
pub async fn window_slot(
    state: &AppState,
    name: &str,
    per_second: u32,
) -> redis::RedisResult<Option<Duration>> {
    let mut conn = state.redis.conn();
    let wait_ms: i64 = SLIDING
        .key(state.redis.key(name))
        .arg(WINDOW_MS)
        .arg(per_second.max(1))
        .arg(uuid::Uuid::now_v7().to_string())
        .invoke_async(&mut conn)
        .await?;
    Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
}
