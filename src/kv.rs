//! Redis: one multiplexed, self-reconnecting connection shared by the whole process, and the
//! key prefix that keeps deployments (and parallel tests) apart.
//!
//! Redis holds only what may be lost without losing money: queues, revocations, rate limits,
//! caches and pub/sub. The connection is lazy so the service starts (and reports itself not
//! ready) while Redis is down, and heals when it comes back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    breaker: Arc<Breaker>,
}

/// How long a path with a PostgreSQL fallback skips Redis after Redis failed it.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Remembers that Redis just failed, so paths that can do without it (authentication) stop
/// paying a failed round trip per request for a while. Per process; no lock.
struct Breaker {
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is skipped; 0 = not skipped.
    skip_until: AtomicU64,
    /// Milliseconds since `epoch` of the last `once_a_second` that said yes (+1; 0 = never).
    last_attempt: AtomicU64,
}

impl Redis {
    pub fn connect_lazy(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            // Short, so a Redis that is down costs a request well under a second (a 503 or
            // the PostgreSQL fallback), never a hang: a refused connection fails at once, a
            // Redis that stopped answering after the response timeout.
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(700)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("creating the Redis connection manager")?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.into(),
            breaker: Arc::new(Breaker {
                epoch: Instant::now(),
                skip_until: AtomicU64::new(0),
                last_attempt: AtomicU64::new(0),
            }),
        })
    }

    /// False for a second after `failed`: a caller with a fallback goes straight to it.
    pub fn worth_trying(&self) -> bool {
        let until = self.breaker.skip_until.load(Ordering::Relaxed);
        until == 0 || self.breaker.epoch.elapsed().as_millis() as u64 >= until
    }

    /// True at most once a second per process: for repair work that every request could
    /// otherwise start at once (refilling a Redis that restarted empty).
    pub fn once_a_second(&self) -> bool {
        let now = self.breaker.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.breaker.last_attempt.load(Ordering::Relaxed);
        (last == 0 || now >= last + 1_000)
            && self
                .breaker
                .last_attempt
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Records that a Redis call failed or timed out.
    pub fn failed(&self) {
        let until = (self.breaker.epoch.elapsed() + SKIP_AFTER_FAILURE).as_millis() as u64;
        self.breaker.skip_until.store(until, Ordering::Relaxed);
    }

    /// `<prefix>:<suffix>`: every key this service writes goes through here.
    pub fn key(&self, suffix: impl std::fmt::Display) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A clone of the shared connection (cheap: the connection is multiplexed).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for the few uses that need their own connection (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}
