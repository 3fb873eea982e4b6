//! The fan-out behind `GET /ws`: which of this instance's websocket connections want to hear
//! about which order, fed by ONE Redis pub/sub subscription per instance, so a change made
//! on any instance reaches subscribers on every instance (API.md "Realtime").
//!
//! What travels on the channel is small: `{"reference", "status"}` when an order changes
//! (`service::holds::publish_status`) and `{"user_id"}` when a user's tokens may have been
//! revoked (`service::auth::forget_user`, logout). Each connection then reads the order (or
//! checks its token) itself, so nothing is rendered for an order nobody here watches.
//!
//! Every connection has a bounded queue of `QUEUE` events. A connection that does not read
//! its socket stops draining it; when the queue is full the hub marks the connection lagging
//! and it is closed with 1008 `slow_consumer` instead of buffering without bound.
//!
//! The same subscription keeps this instance's `memo` fresh: `{"event_id"}`, `{"tier_id"}`
//! and `{"user_id"}` drop the event documents, sold-out flags and tokens they concern
//! (`announce`).
//!
//! Pub/sub loses what is published while the subscription is down: after every
//! (re)subscription the hub tells every connection to `Resync` (re-read its orders and push
//! what changed) and starts the memo afresh; while it is down the memo keeps nothing.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    kv::Redis,
    memo::{Change, Memo},
};

/// Events waiting for one connection before it counts as a slow consumer (API.md: 256).
pub const QUEUE: usize = 256;

/// What a connection is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This order (one the connection subscribed to) changed.
    Status { reference: String },
    /// The connection's user may have lost tokens: check this connection's token again.
    Auth,
    /// Messages may have been missed: re-read every subscribed order.
    Resync,
}

/// The channel every instance publishes to and listens on.
pub fn channel(redis: &Redis) -> String {
    redis.key("orders:status")
}

#[derive(Default)]
struct Inner {
    /// Messages this instance published and waits to hear back (`announce`).
    echoes: HashMap<String, tokio::sync::oneshot::Sender<()>>,
    by_reference: HashMap<String, HashSet<u64>>,
    by_user: HashMap<Uuid, HashSet<u64>>,
    conns: HashMap<u64, Conn>,
}

struct Conn {
    user_id: Uuid,
    references: HashSet<String>,
    events: mpsc::Sender<Event>,
    lagged: Arc<Notify>,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Cancelled at shutdown: connections close with 1001 (going away).
    pub shutdown: CancellationToken,
    /// What this instance remembers, kept fresh by this subscription.
    pub memo: Memo,
}

/// Publishes one message on the instances' channel. Best effort: every reader of what it
/// announces also bounds its staleness on its own (the memo's age, the sockets' re-checks).
pub async fn publish(redis: &Redis, message: String) {
    let mut conn = redis.conn();
    let published: Result<(), _> = redis::cmd("PUBLISH")
        .arg(channel(redis))
        .arg(message)
        .query_async(&mut conn)
        .await;
    if let Err(e) = published {
        tracing::debug!(error = %e, "change not published");
    }
}

/// How long `announce` waits to hear its own message back.
const ECHO_WAIT: Duration = Duration::from_millis(250);

/// Drops what `change` concerns from this instance's memo at once (its next read sees the
/// change), then tells every other instance, and waits (briefly) until this instance's own
/// subscription hears the message back: Redis hands a published message to every subscriber
/// in the same step, so the other instances have it too, give or take their own scheduling.
/// That is the best effort for event documents; revocations do not rely on it
/// (`service::auth::publish_revocation` waits out the memo's age).
///
/// A release of seats (`Change::Tier`) does not wait: it is announced inside the releasing
/// transaction, under the tier row's lock, after the epoch moved in Redis, and purchases trust
/// a remembered sold-out flag only when they make no Redis trip at all.
pub async fn announce(hub: &Hub, redis: &Redis, change: Change) {
    hub.memo.heard(&change);
    let mut message = change.message();
    if let Change::Tier(_) = change {
        publish(redis, message.to_string()).await;
        return;
    }
    let mut echo = hub.await_echo();
    message["echo"] = serde_json::Value::String(echo.id.clone());
    publish(redis, message.to_string()).await;
    if hub.memo.events.is_live() {
        let _ = tokio::time::timeout(ECHO_WAIT, &mut echo.heard).await;
    }
}

/// A message of ours the subscription has yet to hear back; dropping it (answered, timed
/// out or the request gone) forgets it, so nothing waits in the hub forever.
struct Echo<'a> {
    hub: &'a Hub,
    id: String,
    heard: tokio::sync::oneshot::Receiver<()>,
}

impl Drop for Echo<'_> {
    fn drop(&mut self) {
        self.hub.lock().echoes.remove(&self.id);
    }
}

/// A connection's place in the hub; dropping it unregisters the connection.
pub struct Registration {
    id: u64,
    hub: Arc<Hub>,
    pub events: mpsc::Receiver<Event>,
    /// Notified once when the connection's queue overflowed.
    pub lagged: Arc<Notify>,
}

impl Registration {
    /// Starts delivering this order's changes; false past `max` subscriptions.
    pub fn subscribe(&self, reference: &str, max: usize) -> bool {
        let mut inner = self.hub.lock();
        let Some(conn) = inner.conns.get_mut(&self.id) else {
            return false;
        };
        if !conn.references.contains(reference) && conn.references.len() >= max {
            return false;
        }
        conn.references.insert(reference.to_owned());
        inner
            .by_reference
            .entry(reference.to_owned())
            .or_default()
            .insert(self.id);
        true
    }

    /// The orders this connection subscribed to.
    pub fn references(&self) -> Vec<String> {
        let inner = self.hub.lock();
        inner
            .conns
            .get(&self.id)
            .map(|c| c.references.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        let Some(conn) = inner.conns.remove(&self.id) else {
            return;
        };
        for reference in conn.references {
            if let Some(ids) = inner.by_reference.get_mut(&reference) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    inner.by_reference.remove(&reference);
                }
            }
        }
        if let Some(ids) = inner.by_user.get_mut(&conn.user_id) {
            ids.remove(&self.id);
            if ids.is_empty() {
                inner.by_user.remove(&conn.user_id);
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent across a panic elsewhere (each change is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>, user_id: Uuid) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        let lagged = Arc::new(Notify::new());
        let mut inner = self.lock();
        inner.conns.insert(
            id,
            Conn {
                user_id,
                references: HashSet::new(),
                events: tx,
                lagged: lagged.clone(),
            },
        );
        inner.by_user.entry(user_id).or_default().insert(id);
        Registration {
            id,
            hub: self.clone(),
            events: rx,
            lagged,
        }
    }

    fn await_echo(&self) -> Echo<'_> {
        let id = Uuid::now_v7().simple().to_string();
        let (tx, heard) = tokio::sync::oneshot::channel();
        self.lock().echoes.insert(id.clone(), tx);
        Echo {
            hub: self,
            id,
            heard,
        }
    }

    /// Hands one published message to the memo and the connections it concerns.
    pub fn deliver(&self, payload: &str) {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(payload) else {
            tracing::debug!("unreadable realtime message ignored");
            return;
        };
        let change = Change::from_message(&message);
        if let Some(change) = &change {
            self.memo.heard(change);
        }
        let mut inner = self.lock();
        if let Some(echo) = message["echo"].as_str()
            && let Some(heard) = inner.echoes.remove(echo)
        {
            let _ = heard.send(());
        }
        let (ids, event) = if let Some(reference) = message["reference"].as_str() {
            (
                inner.by_reference.get(reference),
                Event::Status {
                    reference: reference.to_owned(),
                },
            )
        } else if let Some(Change::User(user)) = change {
            (inner.by_user.get(&user), Event::Auth)
        } else {
            return;
        };
        for id in ids.into_iter().flatten() {
            if let Some(conn) = inner.conns.get(id) {
                offer(conn, event.clone());
            }
        }
    }

    fn resync_all(&self) {
        let inner = self.lock();
        for conn in inner.conns.values() {
            offer(conn, Event::Resync);
        }
    }

    /// Keeps this instance subscribed to the channel until shutdown, re-subscribing (and
    /// telling every connection to resync) after Redis drops the subscription.
    pub async fn run(self: Arc<Self>, redis: Redis) {
        let channel = channel(&redis);
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            let subscribed = async {
                let mut pubsub = redis.client().get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    self.memo.subscribed();
                    self.resync_all();
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => {
                                self.memo.unsubscribed();
                                return;
                            }
                            message = messages.next() => match message {
                                Some(m) => match m.get_payload::<String>() {
                                    Ok(payload) => self.deliver(&payload),
                                    Err(e) => tracing::debug!(error = %e, "realtime payload unreadable"),
                                },
                                None => break,
                            },
                        }
                    }
                    self.memo.unsubscribed();
                    tracing::warn!("realtime subscription lost; re-subscribing");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime subscription failed; retrying");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Queues an event for a connection; a full queue marks it lagging (it is closed).
fn offer(conn: &Conn, event: Event) {
    if let Err(mpsc::error::TrySendError::Full(_)) = conn.events.try_send(event) {
        conn.lagged.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_only_subscribers_and_a_full_queue_marks_lagging() {
        let hub = Arc::new(Hub::default());
        let user = Uuid::now_v7();
        let mut a = hub.register(user);
        let mut b = hub.register(Uuid::now_v7());
        assert!(a.subscribe("ord-1", 50));
        hub.deliver(r#"{"reference":"ord-1","status":"paid"}"#);
        hub.deliver(r#"{"reference":"ord-2","status":"paid"}"#);
        hub.deliver(&format!(r#"{{"user_id":"{user}"}}"#));
        assert_eq!(
            a.events.try_recv().unwrap(),
            Event::Status {
                reference: "ord-1".into()
            }
        );
        assert_eq!(a.events.try_recv().unwrap(), Event::Auth);
        assert!(b.events.try_recv().is_err());

        for _ in 0..=QUEUE {
            hub.deliver(r#"{"reference":"ord-1","status":"paid"}"#);
        }
        tokio::time::timeout(Duration::from_secs(1), a.lagged.notified())
            .await
            .expect("a full queue marks the connection lagging");
    }

    #[test]
    fn subscriptions_are_capped_and_dropped_with_the_connection() {
        let hub = Arc::new(Hub::default());
        let reg = hub.register(Uuid::now_v7());
        assert!(reg.subscribe("a", 2));
        assert!(reg.subscribe("b", 2));
        assert!(reg.subscribe("a", 2), "the same reference again is fine");
        assert!(!reg.subscribe("c", 2));
        drop(reg);
        let inner = hub.lock();
        assert!(inner.by_reference.is_empty() && inner.by_user.is_empty());
    }
}
