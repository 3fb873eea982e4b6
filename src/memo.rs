//! What one instance remembers of answers that live in PostgreSQL or Redis, so the hottest
//! reads skip the trip: the public event documents (`GET /events/:id`), the tiers seen sold
//! out (`service::purchase`) and the tokens seen valid (`service::auth::authenticate`).
//!
//! Three rules keep it honest (docs/inventory.md, "Reads and sold-out answers"):
//! - an entry is trusted for at most its map's `max_age` (one second), counted from when its
//!   source was read, so anything is at most that stale even if a message is lost;
//! - every change is published on the instances' channel (`hub`) and drops the entries it
//!   concerns on every instance at once;
//! - the memo is used only while this instance's subscription is live: the hub empties it
//!   and stores nothing when the subscription drops (what is published meanwhile is lost),
//!   and starts afresh once re-subscribed.
//!
//! A read that began before a change must not store what it read after the change dropped
//! the entry: `ticket()` is taken before the read and `put` stores only while no `forget` or
//! `clear` ran since (one generation per map: a forget voids every read in flight, which
//! costs at most a second trip, never a stale answer).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How long an entry is trusted: API.md lets a tier's availability lag by up to a second,
/// and a revoked token may pass on another instance for at most a second.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A bounded map of entries trusted for `max_age`.
pub struct Fresh<K, V> {
    inner: Mutex<Entries<K, V>>,
    max_age: Duration,
    capacity: usize,
}

struct Entries<K, V> {
    map: HashMap<K, (Instant, V)>,
    generation: u64,
    /// The subscription that brings changes is live: entries may be stored and trusted.
    live: bool,
}

/// Taken before reading the source; `put` stores only if nothing was forgotten since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    at: Instant,
}

impl<K: Eq + Hash, V: Clone> Fresh<K, V> {
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                generation: 0,
                live: false,
            }),
            max_age,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        // Every change below is one step: the map is consistent even after a panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry, if it was read less than `max_age` ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.lock();
        if !entries.live {
            return None;
        }
        let (at, value) = entries.map.get(key)?;
        (at.elapsed() < self.max_age).then(|| value.clone())
    }

    /// Whether the subscription that keeps this map fresh is live.
    pub fn is_live(&self) -> bool {
        self.lock().live
    }

    pub fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.lock().generation,
            at: Instant::now(),
        }
    }

    /// Stores what was read since `ticket`, aged from the ticket, unless something was
    /// forgotten meanwhile. Full, it drops what is expired, then everything (a bound, not a
    /// policy: at capacity the memo is only a smaller saving).
    pub fn put(&self, ticket: Ticket, key: K, value: V) {
        let mut entries = self.lock();
        if !entries.live || entries.generation != ticket.generation {
            return;
        }
        if entries.map.len() >= self.capacity {
            let max_age = self.max_age;
            entries.map.retain(|_, (at, _)| at.elapsed() < max_age);
            if entries.map.len() >= self.capacity {
                entries.map.clear();
            }
        }
        entries.map.insert(key, (ticket.at, value));
    }

    pub fn forget(&self, key: &K) {
        let mut entries = self.lock();
        entries.map.remove(key);
        entries.generation += 1;
    }

    /// Forgets every entry `matches` picks.
    pub fn forget_where(&self, matches: impl Fn(&K, &V) -> bool) {
        let mut entries = self.lock();
        entries.map.retain(|k, (_, v)| !matches(k, v));
        entries.generation += 1;
    }

    /// Drops everything, and trusts what comes next only if `live`.
    fn reset(&self, live: bool) {
        let mut entries = self.lock();
        entries.map.clear();
        entries.generation += 1;
        entries.live = live;
    }
}

/// A public event document as served: the JSON bytes and their strong `ETag`.
#[derive(Clone)]
pub struct EventDocument {
    pub bytes: bytes::Bytes,
    pub etag: String,
}

/// A token that passed every check: whose it is, and the email its user had.
#[derive(Clone)]
pub struct TokenSeen {
    pub user_id: Uuid,
    pub version: i32,
    pub email: String,
}

/// The instance's memo (see the module's rules).
pub struct Memo {
    /// Event id → its public document.
    pub events: Fresh<Uuid, EventDocument>,
    /// Tier id → the release epoch at which it was seen sold out.
    pub sold_out: Fresh<Uuid, String>,
    /// Token id (`jti`) → the token's checks, passed.
    pub tokens: Fresh<Uuid, TokenSeen>,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            events: Fresh::new(MAX_AGE, 10_000),
            sold_out: Fresh::new(MAX_AGE, 10_000),
            tokens: Fresh::new(MAX_AGE, 100_000),
        }
    }
}

impl Memo {
    /// The subscription is (re)established: start afresh, since changes may have been missed.
    pub fn subscribed(&self) {
        self.reset(true);
    }

    /// The subscription is lost: changes published from now on are not heard, so nothing is
    /// stored or trusted until it is back.
    pub fn unsubscribed(&self) {
        self.reset(false);
    }

    fn reset(&self, live: bool) {
        self.events.reset(live);
        self.sold_out.reset(live);
        self.tokens.reset(live);
    }

    /// One published change: drops what it concerns.
    pub fn heard(&self, change: &Change) {
        match change {
            Change::Event(id) => self.events.forget(id),
            Change::Tier(id) => self.sold_out.forget(id),
            Change::User(id) => self.tokens.forget_where(|_, seen| seen.user_id == *id),
        }
    }
}

/// What a published message says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An event's public document (its fields, its tiers, its status).
    Event(Uuid),
    /// A tier's seats were released (its sold-out flag no longer holds).
    Tier(Uuid),
    /// A user's tokens may have been revoked.
    User(Uuid),
}

impl Change {
    pub fn message(&self) -> serde_json::Value {
        let (field, id) = match self {
            Change::Event(id) => ("event_id", id),
            Change::Tier(id) => ("tier_id", id),
            Change::User(id) => ("user_id", id),
        };
        serde_json::json!({ field: id })
    }

    pub fn from_message(message: &serde_json::Value) -> Option<Self> {
        let id = |field: &str| {
            message[field]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        id("event_id")
            .map(Change::Event)
            .or_else(|| id("tier_id").map(Change::Tier))
            .or_else(|| id("user_id").map(Change::User))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_a_forget_voids_reads_in_flight() {
        let fresh: Fresh<u32, &str> = Fresh::new(Duration::from_millis(50), 10);
        fresh.reset(true);
        let t = fresh.ticket();
        fresh.put(t, 1, "a");
        assert_eq!(fresh.get(&1), Some("a"));

        // A read that began before a forget does not store what it read.
        let before = fresh.ticket();
        fresh.forget(&1);
        fresh.put(before, 1, "stale");
        assert_eq!(fresh.get(&1), None);

        // Aged from the ticket, not from the put.
        let old = Ticket {
            generation: fresh.ticket().generation,
            at: Instant::now() - Duration::from_millis(60),
        };
        fresh.put(old, 2, "old");
        assert_eq!(fresh.get(&2), None);
    }

    #[test]
    fn capacity_is_a_bound() {
        let fresh: Fresh<u32, u32> = Fresh::new(Duration::from_secs(60), 3);
        fresh.reset(true);
        for i in 0..10 {
            fresh.put(fresh.ticket(), i, i);
        }
        assert!(fresh.lock().map.len() <= 3);
        assert_eq!(fresh.get(&9), Some(9));
    }

    #[test]
    fn changes_travel_as_messages_and_drop_their_entries() {
        let memo = Memo::default();
        memo.subscribed();
        let (user, other, event) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for (jti, user_id) in [(Uuid::now_v7(), user), (Uuid::now_v7(), other)] {
            let seen = TokenSeen {
                user_id,
                version: 0,
                email: String::new(),
            };
            memo.tokens.put(memo.tokens.ticket(), jti, seen);
        }
        memo.sold_out.put(memo.sold_out.ticket(), event, "3".into());
        let change = Change::from_message(&Change::User(user).message()).unwrap();
        assert_eq!(change, Change::User(user));
        memo.heard(&change);
        let left = memo
            .tokens
            .lock()
            .map
            .values()
            .map(|(_, s)| s.user_id)
            .collect::<Vec<_>>();
        assert_eq!(left, vec![other]);
        assert_eq!(memo.sold_out.get(&event).as_deref(), Some("3"));
        memo.unsubscribed();
        assert_eq!(memo.sold_out.get(&event), None);
        memo.sold_out.put(memo.sold_out.ticket(), event, "3".into());
        assert_eq!(
            memo.sold_out.get(&event),
            None,
            "nothing is kept while deaf"
        );
    }
}
