//! Redis: one multiplexed, self-reconnecting connection shared by the whole process, and the
//! key prefix that keeps deployments (and parallel tests) apart.
//!
//! Redis holds only what may be lost without losing money: queues, revocations, rate limits,
//! caches and pub/sub. The connection is lazy so the service starts (and reports itself not
//! ready) while Redis is down, and heals when it comes back.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl Redis {
    pub fn connect_lazy(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("creating the Redis connection manager")?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.into(),
        })
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
