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
    try_slot(state, call).await.err()
}

/// A slot taken by `try_slot`, which its taker may give back unused (`give_back`).
pub struct Slot(Option<String>);

/// `try_now`, keeping the slot's identity so that a caller that decides before it knows
/// whether it will call (the purchase, before its hold) can give an unused slot back.
pub async fn try_slot(state: &AppState, call: Call) -> Result<Slot, Duration> {
    let name = format!("paystack:budget:{}", call.name());
    let member = uuid::Uuid::now_v7().to_string();
    match window_slot_as(state, &name, call.per_second(state), &member).await {
        Ok(None) => Ok(Slot(Some(member))),
        Ok(Some(wait)) => Err(wait),
        Err(e) => {
            tracing::warn!(error = %e, "paystack budget unavailable; calling anyway");
            Ok(Slot(None))
        }
    }
}

/// Returns an unused slot to the window at once (a purchase that took no seats, or whose
/// order turned out free), so refused attempts do not eat the links of real holds.
pub async fn give_back(state: &AppState, call: Call, slot: Slot) {
    let Some(member) = slot.0 else { return };
    let name = format!("paystack:budget:{}", call.name());
    let mut conn = state.redis.conn();
    let _: Result<i64, _> = redis::cmd("ZREM")
        .arg(state.redis.key(name))
        .arg(member)
        .query_async(&mut conn)
        .await;
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
    window_slot_as(state, name, per_second, &uuid::Uuid::now_v7().to_string()).await
}

/// `window_slot` with the slot's member chosen by the caller (to give it back later).
async fn window_slot_as(
    state: &AppState,
    name: &str,
    per_second: u32,
    member: &str,
) -> redis::RedisResult<Option<Duration>> {
    let mut conn = state.redis.conn();
    let wait_ms: i64 = SLIDING
        .key(state.redis.key(name))
        .arg(WINDOW_MS)
        .arg(per_second.max(1))
        .arg(member)
        .invoke_async(&mut conn)
        .await?;
    Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
}
