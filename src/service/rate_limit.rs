//! Limits kept in Redis, so they hold across every instance: fixed-window request counters,
//! the account lock after repeated failed logins, and the one-mail-per-minute OTP rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{error::AppError, kv::Redis};

/// Failed logins (per email) that lock the account.
pub const LOCK_AFTER_FAILURES: i64 = 10;
pub const LOCK_DURATION: Duration = Duration::from_secs(15 * 60);

/// Counts one hit in the current window of `window`; over `limit` it is refused with the
/// time left in the window.
pub async fn hit(redis: &Redis, name: &str, limit: u32, window: Duration) -> Result<(), AppError> {
    hit_all(redis, &[(name, limit)], window).await
}

/// Counts one hit against several limits in one Redis round trip (e.g. per user and per
/// address); refused when any of them is over, with the time left in the window. A limit of
/// zero is off (and is not counted).
pub async fn hit_all(
    redis: &Redis,
    limits: &[(impl AsRef<str>, u32)],
    window: Duration,
) -> Result<(), AppError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let counted = count_into(&mut pipe, redis, limits, window);
    if counted.is_empty() {
        return Ok(());
    }
    let mut conn = redis.conn();
    let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
    counted.judge(&counts)
}

/// One hit against several limits, as commands added to a caller's pipeline, so that the
/// count shares a round trip with the caller's own reads (the purchase). The pipeline's first
/// `len()` replies are the counts, for `judge`.
pub fn count_into(
    pipe: &mut redis::Pipeline,
    redis: &Redis,
    limits: &[(impl AsRef<str>, u32)],
    window: Duration,
) -> Counted {
    let window_secs = window.as_secs().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let index = now.as_secs() / window_secs;
    let mut counted = Vec::new();
    for (name, limit) in limits.iter().filter(|(_, limit)| *limit > 0) {
        let key = redis.key(format!("rl:{}:{index}", name.as_ref()));
        pipe.incr(&key, 1u64)
            .expire(&key, window_secs as i64 + 1)
            .ignore();
        counted.push(*limit);
    }
    Counted {
        limits: counted,
        retry_after: Duration::from_secs((index + 1) * window_secs).saturating_sub(now),
    }
}

/// The limits `count_into` counted, to judge their counts.
pub struct Counted {
    limits: Vec<u32>,
    retry_after: Duration,
}

impl Counted {
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Refused when any count is over its limit, with the time left in the window.
    pub fn judge(&self, counts: &[u64]) -> Result<(), AppError> {
        let over = counts
            .iter()
            .zip(&self.limits)
            .any(|(count, limit)| *count > u64::from(*limit));
        if over {
            return Err(AppError::RateLimited {
                code: "rate_limited",
                retry_after: self.retry_after,
            });
        }
        Ok(())
    }
}

/// How many hits `name` has in the current window of `window` (counted by `hit`).
pub async fn peek(redis: &Redis, name: &str, window: Duration) -> Result<u64, AppError> {
    let window_secs = window.as_secs().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let key = redis.key(format!("rl:{name}:{}", now.as_secs() / window_secs));
    let mut conn = redis.conn();
    let count: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
    Ok(count.unwrap_or(0))
}

fn lock_key(redis: &Redis, email: &str) -> String {
    redis.key(format!("login:lock:{email}"))
}

/// What failed: a password (`login`) or a second factor (`2fa`). Counted apart, so that a
/// correct password (which clears its own count) never clears the wrong codes: with
/// rotating addresses and a fresh challenge per correct password, per-challenge counting
/// alone would let 2FA be guessed in hours.
#[derive(Clone, Copy)]
pub enum Failure {
    Password,
    SecondFactor,
}

fn failures_key(redis: &Redis, what: Failure, email: &str) -> String {
    match what {
        Failure::Password => redis.key(format!("login:failures:{email}")),
        Failure::SecondFactor => redis.key(format!("login:2fa-failures:{email}")),
    }
}

/// Refuses a login while the account is locked. Keyed by the normalised email, whether or not
/// an account exists, so the lock reveals nothing about which emails are registered.
pub async fn check_account_lock(redis: &Redis, email: &str) -> Result<(), AppError> {
    let mut conn = redis.conn();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(lock_key(redis, email))
        .query_async(&mut conn)
        .await?;
    if ttl > 0 {
        return Err(AppError::RateLimited {
            code: "account_locked",
            retry_after: Duration::from_millis(ttl as u64),
        });
    }
    Ok(())
}

/// Counts a failed login; the tenth within the lock duration locks the account.
pub async fn record_login_failure(redis: &Redis, email: &str) -> Result<(), AppError> {
    record_failure(redis, Failure::Password, email).await
}

/// Adds one to the count of `what` for `email` (kept for the lock duration); its new value.
async fn count_failure(redis: &Redis, what: Failure, email: &str) -> Result<i64, AppError> {
    let key = failures_key(redis, what, email);
    let mut conn = redis.conn();
    let (count,): (i64,) = redis::pipe()
        .atomic()
        .incr(&key, 1i64)
        .expire(&key, LOCK_DURATION.as_secs() as i64)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(count)
}

/// Counts a failure of either kind; the tenth of one kind within the lock duration locks
/// the account (the same lock, the same 429 `account_locked`).
pub async fn record_failure(redis: &Redis, what: Failure, email: &str) -> Result<(), AppError> {
    if count_failure(redis, what, email).await? >= LOCK_AFTER_FAILURES {
        lock_account(redis, email).await?;
    }
    Ok(())
}

/// Counts an attempt BEFORE it is checked, so a burst of parallel guesses cannot all pass a
/// lock check made before any of them had failed: past `LOCK_AFTER_FAILURES` attempts since
/// the last success the account is locked and the attempt refused (429 `account_locked`).
/// Returns the attempt's number; a wrong answer at the limit locks the account
/// (`lock_if_spent`), a right one clears the count (`clear_failures`).
pub async fn reserve_attempt(redis: &Redis, what: Failure, email: &str) -> Result<i64, AppError> {
    let count = count_failure(redis, what, email).await?;
    if count > LOCK_AFTER_FAILURES {
        lock_account(redis, email).await?;
        return Err(AppError::RateLimited {
            code: "account_locked",
            retry_after: LOCK_DURATION,
        });
    }
    Ok(count)
}

/// After a wrong answer on attempt number `attempt`: the last one allowed locks the account.
pub async fn lock_if_spent(redis: &Redis, email: &str, attempt: i64) -> Result<(), AppError> {
    if attempt >= LOCK_AFTER_FAILURES {
        lock_account(redis, email).await?;
    }
    Ok(())
}

/// The count is kept (it expires with the lock): clearing it here would let attempts that
/// passed the lock check just before it was set start a fresh count of ten.
async fn lock_account(redis: &Redis, email: &str) -> Result<(), AppError> {
    let mut conn = redis.conn();
    redis::cmd("SET")
        .arg(lock_key(redis, email))
        .arg(1)
        .arg("EX")
        .arg(LOCK_DURATION.as_secs())
        .query_async::<()>(&mut conn)
        .await?;
    tracing::warn!("account locked after repeated failures");
    Ok(())
}

pub async fn clear_failures(redis: &Redis, what: Failure, email: &str) -> Result<(), AppError> {
    let mut conn = redis.conn();
    redis::cmd("DEL")
        .arg(failures_key(redis, what, email))
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// Claims the right to mail an OTP to `email` for the next `gap`: `None` when claimed, else
/// how long to wait. Applied whether or not the email has an account.
pub async fn claim_otp_mail(
    redis: &Redis,
    email: &str,
    gap: Duration,
) -> Result<Option<Duration>, AppError> {
    let key = redis.key(format!("otp-mail:{email}"));
    let mut conn = redis.conn();
    let claimed: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(gap.as_millis() as u64)
        .query_async(&mut conn)
        .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
    Ok(Some(Duration::from_millis(ttl.max(1) as u64)))
}
