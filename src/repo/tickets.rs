//! Tickets as their holders and the door see them.

use std::collections::HashMap;

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::status::TicketStatus,
    repo::{events::EventRow, orders::OrderRow},
};

#[derive(Debug, Clone)]
pub struct TicketRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub access_key: String,
    pub status: TicketStatus,
    pub checked_in_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub event_id: Uuid,
    pub event_title: String,
    pub event_starts_at: OffsetDateTime,
    pub event_venue: String,
    pub tier_id: Uuid,
    pub tier_name: String,
}

/// The user's tickets, newest first, keyset-paginated on (created_at, id) descending.
pub async fn for_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<TicketRow>> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.id, t.order_id, t.access_key, t.status AS "status: TicketStatus", t.checked_in_at, t.created_at,
                  e.id AS event_id, e.title AS event_title, e.starts_at AS event_starts_at,
                  e.venue AS event_venue, tt.id AS tier_id, tt.name AS tier_name
           FROM tickets t
           JOIN events e ON e.id = t.event_id
           JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.user_id = $1
             AND ($2::timestamptz IS NULL OR (t.created_at, t.id) < ($2, $3::uuid))
           ORDER BY t.created_at DESC, t.id DESC
           LIMIT $4"#,
        user_id,
        before.map(|b| b.0),
        before.map(|b| b.1),
        limit
    )
    .fetch_all(db)
    .await
}

/// One ticket per seat; seats already issued are skipped, so issuing twice issues once.
/// Returns how many tickets were created by this call.
pub async fn issue(
    db: impl PgExecutor<'_>,
    order: &OrderRow,
    access_keys: &[String],
) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = access_keys.iter().map(|_| Uuid::now_v7()).collect();
    let seats: Vec<i32> = (1..=access_keys.len() as i32).collect();
    let res = sqlx::query!(
        // `changed_at` by the clock, not the transaction's start: a door sync token taken
        // while this transaction ran must still see these tickets as new.
        r#"INSERT INTO tickets (id, order_id, event_id, tier_id, user_id, seat, access_key,
                                changed_at)
           SELECT id, $2, $3, $4, $5, seat, access_key, clock_timestamp()
           FROM UNNEST($1::uuid[], $6::int[], $7::text[]) AS t(id, seat, access_key)
           ON CONFLICT (order_id, seat) DO NOTHING"#,
        &ids,
        order.id,
        order.event_id,
        order.tier_id,
        order.user_id,
        &seats,
        access_keys
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected())
}

pub async fn for_order(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Vec<TicketRow>> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.id, t.order_id, t.access_key, t.status AS "status: TicketStatus", t.checked_in_at, t.created_at,
                  e.id AS event_id, e.title AS event_title, e.starts_at AS event_starts_at,
                  e.venue AS event_venue, tt.id AS tier_id, tt.name AS tier_name
           FROM tickets t
           JOIN events e ON e.id = t.event_id
           JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.order_id = $1
           ORDER BY t.seat"#,
        order_id
    )
    .fetch_all(db)
    .await
}

/// What a gate asks of its event's admission lane (`service::admission`).
#[derive(Debug, Clone)]
pub struct ScanAsk {
    /// Who scans: the event's owner, or the scan is refused.
    pub user_id: Uuid,
    pub access_key: String,
    pub gate: String,
}

/// How an admission lane answered one scan.
#[derive(Debug, Clone)]
pub enum ScanOutcome {
    Admitted(Box<TicketRow>),
    /// Not admitted: where the ticket stands (`None`: no such key).
    Refused(Option<KeyState>),
    /// No such event, or the scanner does not own it (the caller tells which).
    NotOwner,
    /// The batch's statement failed: nothing was admitted.
    Failed(String),
}

/// Checks in a batch of online scans of one event in one statement, so they share one
/// commit (`service::admission`). Each scan is still its own guarded update (`valid` → `used`,
/// this event only): PostgreSQL re-checks the condition on the latest row version after
/// waiting for a concurrent scan of the same ticket, so two gates, two batches or two
/// instances admit a ticket once. `keys` must be distinct, `gates` beside them; returns the
/// index of each admitted scan with its ticket. The rows are locked in the order given
/// (`locked`), so two batches given keys in one order (sorted) lock shared tickets in that
/// order. At scale the plan is driven by the list of keys (checked with
/// `plan_cache_mode = force_generic_plan` at 50,000 tickets of one event among 200 events:
/// a nested loop over the list, each ticket by index).
pub async fn check_in_many(
    db: impl PgExecutor<'_>,
    event: &EventRow,
    keys: &[String],
    gates: &[String],
) -> sqlx::Result<Vec<(usize, TicketRow)>> {
    let rows = sqlx::query!(
        r#"WITH scans AS MATERIALIZED (
               -- Each key is located by the unique access-key index through a scalar
               -- subquery, so the plan is always that index (a generic plan on the
               -- (event_id, status) index once scanned the whole event per scan), and the
               -- tickets are then reached by primary key in the scans' order.
               SELECT s.ord, s.gate, (SELECT id FROM tickets WHERE access_key = s.access_key) AS id
               FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS s(access_key, gate, ord)
           ), locked AS (
               -- The rows are locked in the keys' order (the caller sorts them), whatever
               -- plan PostgreSQL picks for the update (in a small table, a hash join in
               -- heap order): FOR UPDATE locks the sorted rows one by one.
               SELECT t.id FROM tickets t JOIN scans s ON t.id = s.id
               WHERE t.event_id = $1 AND t.status = 'valid'
               ORDER BY s.ord
               FOR UPDATE OF t
           ), used AS (
               UPDATE tickets t SET status = 'used', checked_in_at = now(), checked_in_gate = s.gate,
                                    changed_at = clock_timestamp()
               FROM scans s
               WHERE t.id = s.id AND t.id IN (SELECT id FROM locked)
                 AND t.event_id = $1 AND t.status = 'valid'
               RETURNING s.ord, t.id, t.order_id, t.access_key, t.status, t.checked_in_at,
                         t.created_at, t.event_id, t.tier_id
           )
           -- The event's fields come from the batch's own read of it: one join fewer to
           -- plan, and PostgreSQL plans this statement on every call (custom plans: the
           -- array's length changes the estimates).
           SELECT u.ord AS "ord!", u.id AS "id!", u.order_id AS "order_id!",
                  u.access_key AS "access_key!", u.status AS "status!: TicketStatus",
                  u.checked_in_at, u.created_at AS "created_at!",
                  tt.id AS tier_id, tt.name AS tier_name
           FROM used u
           JOIN ticket_tiers tt ON tt.id = u.tier_id"#,
        event.id,
        keys,
        gates
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            // `WITH ORDINALITY` counts from 1.
            let index = usize::try_from(r.ord - 1).ok()?;
            Some((
                index,
                TicketRow {
                    id: r.id,
                    order_id: r.order_id,
                    access_key: r.access_key,
                    status: r.status,
                    checked_in_at: r.checked_in_at,
                    created_at: r.created_at,
                    event_id: event.id,
                    event_title: event.title.clone(),
                    event_starts_at: event.starts_at,
                    event_venue: event.venue.clone(),
                    tier_id: r.tier_id,
                    tier_name: r.tier_name,
                },
            ))
        })
        .collect())
}

/// Where a ticket stands, for a scan that did not admit it.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub event_id: Uuid,
    pub status: TicketStatus,
    pub checked_in_at: Option<OffsetDateTime>,
}

/// The state of each known ticket among `keys`, by access key.
pub async fn find_by_keys(
    db: impl PgExecutor<'_>,
    keys: &[String],
) -> sqlx::Result<HashMap<String, KeyState>> {
    let rows = sqlx::query!(
        r#"SELECT access_key, event_id, status AS "status: TicketStatus", checked_in_at
           FROM tickets WHERE access_key = ANY($1)"#,
        keys
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.access_key,
                KeyState {
                    event_id: r.event_id,
                    status: r.status,
                    checked_in_at: r.checked_in_at,
                },
            )
        })
        .collect())
}

/// What a ticket looks like to the door after a scan was applied.
pub struct ScanState {
    pub ticket_id: Uuid,
    pub event_id: Uuid,
    pub status: TicketStatus,
    pub checked_in_at: Option<OffsetDateTime>,
    pub checked_in_gate: Option<String>,
}

/// Applies one scan `(access_key, scanned_at, gate)` to the event: the scan becomes the
/// ticket's admission if the ticket is valid, or if it is earlier than the admission on
/// record (`(checked_in_at, gate)`, the gate breaking ties so every server agrees). One
/// guarded statement: PostgreSQL re-checks the condition on the latest row version after
/// waiting for a concurrent scan of the same ticket, so no interleaving of gates records
/// two admissions. Returns the ticket as it stands afterwards (`None`: unknown key); when
/// this scan did not become the admission, the ticket is read again by a second statement,
/// whose snapshot includes whatever concurrent scan won.
pub async fn apply_scan(
    db: &sqlx::PgPool,
    event_id: Uuid,
    access_key: &str,
    scanned_at: OffsetDateTime,
    gate: &str,
) -> sqlx::Result<Option<ScanState>> {
    let admitted = sqlx::query_as!(
        ScanState,
        r#"UPDATE tickets SET status = 'used', checked_in_at = $3, checked_in_gate = $4,
                              changed_at = clock_timestamp()
           WHERE id = (SELECT id FROM tickets WHERE access_key = $2) AND event_id = $1
             AND (status = 'valid'
                  OR (status = 'used'
                      AND (checked_in_at, COALESCE(checked_in_gate, '')) > ($3, $4)))
           RETURNING id AS ticket_id, event_id, status AS "status: TicketStatus", checked_in_at,
                     checked_in_gate"#,
        event_id,
        access_key,
        scanned_at,
        gate
    )
    .fetch_optional(db)
    .await?;
    if admitted.is_some() {
        return Ok(admitted);
    }
    sqlx::query_as!(
        ScanState,
        r#"SELECT id AS ticket_id, event_id, status AS "status: TicketStatus", checked_in_at,
                  checked_in_gate
           FROM tickets WHERE access_key = $1"#,
        access_key
    )
    .fetch_optional(db)
    .await
}

/// One entry of the door list.
pub struct DoorEntry {
    pub ticket_id: Uuid,
    pub key_hash: String,
    pub tier_id: Uuid,
    pub tier_name: String,
    pub status: TicketStatus,
    pub checked_in_at: Option<OffsetDateTime>,
}

/// The event's tickets by id after `after`, only those changed after `since` when given.
pub async fn door_page(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    since: Option<OffsetDateTime>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<DoorEntry>> {
    sqlx::query_as!(
        DoorEntry,
        r#"SELECT t.id AS ticket_id,
                  encode(sha256(convert_to(t.access_key, 'UTF8')), 'hex') AS "key_hash!",
                  t.tier_id, tt.name AS tier_name, t.status AS "status: TicketStatus",
                  t.checked_in_at
           FROM tickets t JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.event_id = $1
             AND ($2::timestamptz IS NULL OR t.changed_at > $2)
             AND ($3::uuid IS NULL OR t.id > $3)
           ORDER BY t.id
           LIMIT $4"#,
        event_id,
        since,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// `(access_key, status)` of a ticket by id.
pub async fn access_key_of(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<(String, TicketStatus)>> {
    let row = sqlx::query!(
        r#"SELECT access_key, status AS "status: TicketStatus" FROM tickets WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.access_key, r.status)))
}

/// PostgreSQL's own clock (`changed_at` is written with it).
pub async fn database_now(db: impl PgExecutor<'_>) -> sqlx::Result<OffsetDateTime> {
    sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
        .fetch_one(db)
        .await
}
