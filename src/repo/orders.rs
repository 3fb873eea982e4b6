//! Orders, their idempotency records and their tickets being issued. The ledger, refunds,
//! payouts and webhook deliveries have modules of their own.
//!
//! Every change of an order's state is one guarded statement (`... WHERE status = <from>`),
//! so two webhooks, two workers or two sweepers racing on one order change it once. Holds are
//! created in batches under the tier row's lock (`lock_tier_for_holds`, `insert_holds`).

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::status::{OrderStatus, RefundReason};

#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: Uuid,
    pub reference: String,
    pub user_id: Uuid,
    pub event_id: Uuid,
    pub tier_id: Uuid,
    pub quantity: i32,
    pub unit_price: i64,
    pub total_amount: i64,
    pub discounted: bool,
    pub currency: String,
    pub status: OrderStatus,
    pub holds_seats: bool,
    pub expires_at: OffsetDateTime,
    pub authorization_url: Option<String>,
    pub paid_at: Option<OffsetDateTime>,
    pub mail_queued_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// What a buyer asks of a tier's hold lane (`service::batcher`).
pub struct HoldAsk {
    pub order_id: Uuid,
    pub reference: String,
    pub user_id: Uuid,
    pub quantity: i32,
    /// `(key, request hash)` of the Idempotency-Key.
    pub idempotency: Option<(String, String)>,
    /// Paystack's initialize budget had no slot for this purchase: the order is created
    /// with its link handed to the paced initializer (`checkout_deferred_at` set at insert —
    /// setting it afterwards would be a non-HOT update of every deferred order, which cost
    /// PostgreSQL more than the hold itself).
    pub deferred: bool,
    /// A batch gave this hold back because another transaction held its buyer's lock: the
    /// next batch waits for that lock before the tier row (`service::batcher`), so a hold is
    /// given back at most once.
    pub given_back: bool,
}

/// How a hold lane answered one buyer.
#[derive(Debug, Clone)]
pub enum HoldOutcome {
    Held(Box<OrderRow>),
    /// No seats taken: not enough left, the event is closed, the quantity is over the event's
    /// limit, or no such tier (the caller tells which, on its slow path).
    Nothing,
    /// The Idempotency-Key is already stored with another order: answer that one.
    Duplicate,
    /// `MAX_ACTIVE_HOLDS_PER_USER`: retry once the first hold ends (at the earliest in
    /// `retry_after`).
    TooManyHolds {
        retry_after: Duration,
    },
    /// `MAX_FREE_TICKETS_PER_USER`: the buyer already has `have` of `cap`.
    FreeTicketLimit {
        cap: i64,
        have: i64,
    },
    /// The batch's transaction failed: nothing was taken, try again.
    Failed(String),
}

/// A tier and its event as a batch of holds sees them, the tier row locked until the batch's
/// transaction ends (`lock_tier_for_holds`).
#[derive(Debug, Clone)]
pub struct TierForHolds {
    pub taken: i32,
    pub quantity: i32,
    pub price: i64,
    pub currency: String,
    pub discount_price: Option<i64>,
    pub discount_quantity: Option<i32>,
    pub discount_taken: i32,
    pub discount_expires_at: Option<OffsetDateTime>,
    /// The event is scheduled (not cancelled).
    pub scheduled: bool,
    pub ends_at: OffsetDateTime,
    pub max_per_order: i32,
}

impl TierForHolds {
    /// Whether holds may be taken at `now`: scheduled and not over.
    pub fn open_at(&self, now: OffsetDateTime) -> bool {
        self.scheduled && self.ends_at > now
    }
}

/// Locks the tier row for the rest of the transaction and reads what deciding a batch of
/// holds needs. Every hold of the tier, on every instance, goes through this lock, so the
/// seats counted here are the seats there are until the commit. `None`: no such tier on this
/// event.
pub async fn lock_tier_for_holds(
    db: impl PgExecutor<'_>,
    tier_id: Uuid,
    event_id: Uuid,
) -> sqlx::Result<Option<TierForHolds>> {
    sqlx::query_as!(
        TierForHolds,
        r#"SELECT t.taken, t.quantity, t.price, t.currency, t.discount_price, t.discount_quantity,
                  t.discount_taken, t.discount_expires_at,
                  e.status = 'scheduled' AS "scheduled!", e.ends_at, e.max_per_order
           FROM ticket_tiers t JOIN events e ON e.id = t.event_id
           WHERE t.id = $1 AND t.event_id = $2
           FOR UPDATE OF t"#,
        tier_id,
        event_id
    )
    .fetch_optional(db)
    .await
}

/// One hold the batch decided to grant: its order, price already decided.
pub struct GrantedHold {
    pub order_id: Uuid,
    pub reference: String,
    pub user_id: Uuid,
    pub quantity: i32,
    pub unit_price: i64,
    pub discounted: bool,
    /// `(key, request hash)` of the Idempotency-Key, stored with the order.
    pub idempotency: Option<(String, String)>,
    /// Its link is the paced initializer's to make (`HoldAsk::deferred`).
    pub deferred: bool,
}

/// The orders a batch inserted, and those whose Idempotency-Key was already taken (by the
/// same request on another instance or an earlier one): the caller takes those back
/// (`undo_holds`) before committing.
pub struct InsertedHolds {
    pub orders: Vec<OrderRow>,
    pub duplicates: Vec<Uuid>,
}

/// Takes the seats of every granted hold from the (locked) tier and inserts their orders and
/// idempotency records — one statement, so a batch costs one round trip however large. The
/// `taken + seats <= quantity` guard and the table's CHECK stay as independent guards even
/// though the caller counted under the row lock.
pub async fn insert_holds(
    tx: &mut sqlx::PgConnection,
    tier_id: Uuid,
    event_id: Uuid,
    currency: &str,
    hold_seconds: f64,
    holds: &[GrantedHold],
) -> sqlx::Result<InsertedHolds> {
    // At most MAX_BATCH × 100 seats: far inside i32.
    let seats: i32 = holds.iter().map(|h| h.quantity).sum();
    let discounted_seats: i32 = holds
        .iter()
        .filter(|h| h.discounted)
        .map(|h| h.quantity)
        .sum();
    let keyed: Vec<&GrantedHold> = holds.iter().filter(|h| h.idempotency.is_some()).collect();
    let key_part = |f: fn(&(String, String)) -> &String| -> Vec<String> {
        keyed
            .iter()
            .filter_map(|h| h.idempotency.as_ref().map(|i| f(i).clone()))
            .collect()
    };
    let rows = sqlx::query!(
        r#"WITH tier AS (
               UPDATE ticket_tiers SET taken = taken + $3::int,
                                       discount_taken = discount_taken + $4::int
               WHERE id = $1 AND event_id = $2 AND taken + $3 <= quantity
               RETURNING id
           ), ord AS (
               INSERT INTO orders (id, reference, user_id, event_id, tier_id, quantity, unit_price,
                                   total_amount, discounted, currency, status, expires_at,
                                   checkout_deferred_at)
               SELECT o.id, o.reference, o.user_id, $2, $1, o.quantity, o.unit_price,
                      o.unit_price * o.quantity, o.discounted, $5, 'pending',
                      now() + make_interval(secs => $6),
                      -- A free order never needs a link.
                      CASE WHEN o.deferred AND o.unit_price > 0 THEN now() END
               FROM unnest($7::uuid[], $8::text[], $9::uuid[], $10::int[], $11::bigint[], $12::bool[],
                           $17::bool[])
                    AS o(id, reference, user_id, quantity, unit_price, discounted, deferred)
               WHERE EXISTS (SELECT 1 FROM tier)
               RETURNING *
           ), idem AS (
               -- A key already stored (or being stored by a transaction this one waits for)
               -- is skipped, not an error: one duplicate must not fail the whole batch.
               INSERT INTO idempotency_keys (user_id, key, request_hash, order_id)
               SELECT k.user_id, k.key, k.hash, k.order_id
               FROM unnest($13::uuid[], $14::text[], $15::text[], $16::uuid[])
                    AS k(user_id, key, hash, order_id)
               WHERE EXISTS (SELECT 1 FROM tier)
               -- One order of insertion for every batch, so two batches waiting on each
               -- other's keys cannot wait in a circle.
               ORDER BY k.user_id, k.key
               ON CONFLICT DO NOTHING
               RETURNING order_id
           )
           SELECT id AS "id!", reference AS "reference!", user_id AS "user_id!",
                  event_id AS "event_id!", tier_id AS "tier_id!", quantity AS "quantity!",
                  unit_price AS "unit_price!", total_amount AS "total_amount!",
                  discounted AS "discounted!", currency AS "currency!", status AS "status!: OrderStatus",
                  holds_seats AS "holds_seats!", expires_at AS "expires_at!", authorization_url,
                  paid_at, mail_queued_at, created_at AS "created_at!",
                  EXISTS (SELECT 1 FROM idem WHERE idem.order_id = ord.id) AS "key_stored!"
           FROM ord"#,
        tier_id,
        event_id,
        seats,
        discounted_seats,
        currency,
        hold_seconds,
        &holds.iter().map(|h| h.order_id).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.reference.clone()).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.user_id).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.quantity).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.unit_price).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.discounted).collect::<Vec<_>>(),
        &keyed.iter().map(|h| h.user_id).collect::<Vec<_>>(),
        &key_part(|i| &i.0),
        &key_part(|i| &i.1),
        &keyed.iter().map(|h| h.order_id).collect::<Vec<_>>(),
        &holds.iter().map(|h| h.deferred).collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?;
    let keyed_ids: std::collections::HashSet<Uuid> = keyed.iter().map(|h| h.order_id).collect();
    let mut inserted = InsertedHolds {
        orders: Vec::with_capacity(rows.len()),
        duplicates: Vec::new(),
    };
    for r in rows {
        if keyed_ids.contains(&r.id) && !r.key_stored {
            inserted.duplicates.push(r.id);
        }
        inserted.orders.push(OrderRow {
            id: r.id,
            reference: r.reference,
            user_id: r.user_id,
            event_id: r.event_id,
            tier_id: r.tier_id,
            quantity: r.quantity,
            unit_price: r.unit_price,
            total_amount: r.total_amount,
            discounted: r.discounted,
            currency: r.currency,
            status: r.status,
            holds_seats: r.holds_seats,
            expires_at: r.expires_at,
            authorization_url: r.authorization_url,
            paid_at: r.paid_at,
            mail_queued_at: r.mail_queued_at,
            created_at: r.created_at,
        });
    }
    Ok(inserted)
}

/// Takes back, inside the batch's transaction, orders whose Idempotency-Key turned out to be
/// taken: they never become visible, and their seats return to the tier before the commit.
pub async fn undo_holds(
    tx: &mut sqlx::PgConnection,
    tier_id: Uuid,
    order_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"WITH gone AS (
               DELETE FROM orders WHERE id = ANY($1) AND status = 'pending'
               RETURNING quantity, discounted
           )
           UPDATE ticket_tiers SET
               taken = taken - (SELECT COALESCE(SUM(quantity), 0) FROM gone)::int,
               discount_taken = discount_taken
                   - (SELECT COALESCE(SUM(quantity) FILTER (WHERE discounted), 0) FROM gone)::int
           WHERE id = $2"#,
        order_ids,
        tier_id
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Serialises each buyer's purchases on one event until the transaction ends, so that the
/// counts of `buyers_usage` read after it cannot be raced by the same buyer's next request
/// (on this instance or another: its batch waits here and then counts this one).
/// Transaction-scoped advisory locks, waited for in one order (sorted keys), and only before
/// the tier row by a batch led by given-back holds (`try_lock_buyers` under the row), so no
/// two batches wait on each other in a circle; unrelated buyers never wait (a hash collision
/// only serialises two buyers for a moment).
pub async fn lock_buyers(
    db: impl PgExecutor<'_>,
    user_ids: &[Uuid],
    event_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock(k) AS "locked"
           FROM (SELECT DISTINCT hashtextextended(u::text || $2::text, 0) AS k
                 FROM unnest($1::uuid[]) AS u ORDER BY 1) AS keys"#,
        user_ids,
        event_id.to_string()
    )
    .fetch_all(db)
    .await?;
    Ok(())
}

/// The same locks without waiting: those of `user_ids` this transaction now holds (taken
/// now, or held already); the others are held by another transaction. For buyers met while
/// holding a tier row, where waiting could tie the row to another tier's commit.
pub async fn try_lock_buyers(
    db: impl PgExecutor<'_>,
    user_ids: &[Uuid],
    event_id: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT u AS "u!"
           FROM (SELECT DISTINCT u FROM unnest($1::uuid[]) AS u) AS buyers
           WHERE pg_try_advisory_xact_lock(hashtextextended(u::text || $2::text, 0))"#,
        user_ids,
        event_id.to_string()
    )
    .fetch_all(db)
    .await
}

/// What one buyer has of one event right now.
#[derive(Debug, Clone, Default)]
pub struct BuyerUsage {
    /// Pending orders still holding seats.
    pub active_holds: i64,
    /// When the first of those holds expires.
    pub first_expiry: Option<OffsetDateTime>,
    /// Tickets of free orders, pending or issued.
    pub free_tickets: i64,
}

/// `BuyerUsage` of each of `user_ids` on the event, in one query (absent: nothing yet).
pub async fn buyers_usage(
    db: impl PgExecutor<'_>,
    user_ids: &[Uuid],
    event_id: Uuid,
) -> sqlx::Result<std::collections::HashMap<Uuid, BuyerUsage>> {
    let rows = sqlx::query!(
        r#"SELECT user_id,
                  COUNT(*) FILTER (WHERE status = 'pending' AND holds_seats) AS "active_holds!",
                  MIN(expires_at) FILTER (WHERE status = 'pending' AND holds_seats) AS first_expiry,
                  COALESCE(SUM(quantity) FILTER (WHERE total_amount = 0 AND status IN ('pending', 'paid')), 0)
                      AS "free_tickets!"
           FROM orders
           WHERE user_id = ANY($1) AND event_id = $2 AND (status = 'pending' OR total_amount = 0)
           GROUP BY user_id"#,
        user_ids,
        event_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.user_id,
                BuyerUsage {
                    active_holds: r.active_holds,
                    first_expiry: r.first_expiry,
                    free_tickets: r.free_tickets,
                },
            )
        })
        .collect())
}

/// `(request hash, order id)` stored for a user's Idempotency-Key.
pub async fn idempotency_record(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<(String, Uuid)>> {
    let row = sqlx::query!(
        "SELECT request_hash, order_id FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        user_id,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.request_hash, r.order_id)))
}

/// Removes the idempotency record of an order (its key, if there was one).
pub async fn delete_idempotency_for(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "DELETE FROM idempotency_keys WHERE order_id = $1 RETURNING key",
        order_id
    )
    .fetch_optional(db)
    .await
}

/// paid → refund_pending (an organizer's refund or a cancelled event): the seats and their
/// discount allowance go back to the tier and the tickets are void, in one statement. Returns
/// `(order id, tier id, reference)` of the orders this call moved; the caller reverses their ledger
/// entries and creates their refunds in the same transaction.
pub async fn owe_back_paid(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    reason: RefundReason,
) -> sqlx::Result<Vec<(Uuid, Uuid, String)>> {
    let rows = sqlx::query!(
        r#"WITH moved AS (
               UPDATE orders SET status = 'refund_pending', refund_reason = $2, holds_seats = false,
                   updated_at = now()
               WHERE id = ANY($1) AND status = 'paid'
               RETURNING id, tier_id, quantity, discounted, reference
           ), per_tier AS (
               SELECT tier_id, SUM(quantity)::int AS seats,
                      COALESCE(SUM(quantity) FILTER (WHERE discounted), 0)::int AS discounted_seats
               FROM moved GROUP BY tier_id
           ), seats AS (
               UPDATE ticket_tiers t SET taken = t.taken - p.seats,
                   discount_taken = GREATEST(t.discount_taken - p.discounted_seats, 0)
               FROM per_tier p WHERE t.id = p.tier_id
           ), voided AS (
               UPDATE tickets SET status = 'void', changed_at = clock_timestamp()
               WHERE order_id IN (SELECT id FROM moved) AND status <> 'void'
           )
           SELECT id, tier_id, reference FROM moved"#,
        ids,
        reason.as_str()
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.tier_id, r.reference))
        .collect())
}

pub async fn paid_for_event(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM orders WHERE event_id = $1 AND status = 'paid'",
        event_id
    )
    .fetch_all(db)
    .await
}

pub async fn pending_for_event(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM orders WHERE event_id = $1 AND status = 'pending'",
        event_id
    )
    .fetch_all(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as!(
        OrderRow,
        r#"SELECT id, reference, user_id, event_id, tier_id, quantity, unit_price, total_amount,
                  discounted, currency, status AS "status: OrderStatus", holds_seats, expires_at, authorization_url, paid_at,
                  mail_queued_at, created_at
           FROM orders WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn find_by_reference(
    db: impl PgExecutor<'_>,
    reference: &str,
) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as!(
        OrderRow,
        r#"SELECT id, reference, user_id, event_id, tier_id, quantity, unit_price, total_amount,
                  discounted, currency, status AS "status: OrderStatus", holds_seats, expires_at, authorization_url, paid_at,
                  mail_queued_at, created_at
           FROM orders WHERE reference = $1"#,
        reference
    )
    .fetch_optional(db)
    .await
}

/// Stores the checkout URL. Committed without waiting for the disk flush: losing it in a
/// crash loses no money or seat (the hold is durable; verify and the sweeper settle it), and
/// it saves a second fsync on the purchase path.
pub async fn set_checkout(
    db: &sqlx::PgPool,
    id: Uuid,
    authorization_url: &str,
    access_code: &str,
) -> sqlx::Result<()> {
    // One round trip: set_config(..., true) is local to this statement's own transaction,
    // and synchronous_commit is read when that transaction commits.
    sqlx::query!(
        r#"WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
           UPDATE orders SET authorization_url = $2, access_code = $3, updated_at = now()
           FROM async_commit WHERE id = $1"#,
        id,
        authorization_url,
        access_code
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Hands a hold's checkout link to the paced initializer (`service::checkout`).
pub async fn defer_checkout(db: &sqlx::PgPool, id: Uuid) -> sqlx::Result<()> {
    defer_checkouts(db, &[id]).await
}

/// `defer_checkout` of many holds in one statement.
pub async fn defer_checkouts(db: &sqlx::PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_deferred_at = now(), updated_at = now()
         WHERE id = ANY($1) AND status = 'pending' AND authorization_url IS NULL
           AND checkout_deferred_at IS NULL AND total_amount > 0",
        ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Whether the hold's link is the initializer's to make (not its purchase's, still inline).
pub async fn checkout_deferred(db: &sqlx::PgPool, id: Uuid) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"SELECT checkout_deferred_at IS NOT NULL AS "deferred!" FROM orders WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.unwrap_or(false))
}

/// A deferred hold the initializer claimed, with what Paystack needs.
pub struct DeferredCheckout {
    pub id: Uuid,
    pub reference: String,
    pub event_id: Uuid,
    pub total_amount: i64,
    pub currency: String,
    pub email: String,
}

/// Claims (as `claim`) up to `limit` live deferred holds still without a link, oldest first,
/// for `lease_seconds`; holds another initializer claims are skipped. Live: pending, and
/// unexpired or deferred less than `link_wait_seconds` ago (the sweeper leaves those alone:
/// `claim_expired_holds`).
pub async fn claim_deferred_checkouts(
    db: &sqlx::PgPool,
    limit: i64,
    lease_seconds: f64,
    claim: Uuid,
    link_wait_seconds: f64,
) -> sqlx::Result<Vec<DeferredCheckout>> {
    sqlx::query_as!(
        DeferredCheckout,
        r#"WITH due AS (
               SELECT id FROM orders
               WHERE status = 'pending' AND authorization_url IS NULL
                 AND checkout_deferred_at IS NOT NULL
                 AND (expires_at > now()
                      OR checkout_deferred_at > now() - make_interval(secs => $4))
                 AND (checkout_claimed_until IS NULL OR checkout_claimed_until < now())
               ORDER BY checkout_deferred_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED
           ), claimed AS (
               UPDATE orders o SET checkout_claimed_until = now() + make_interval(secs => $2),
                                   checkout_claim = $3
               FROM due WHERE o.id = due.id
               RETURNING o.id, o.reference, o.event_id, o.total_amount, o.currency, o.user_id,
                         o.checkout_deferred_at
           )
           SELECT c.id, c.reference, c.event_id, c.total_amount, c.currency,
                  u.email AS "email!: String"
           FROM claimed c JOIN users u ON u.id = c.user_id
           ORDER BY c.checkout_deferred_at"#,
        limit,
        lease_seconds,
        claim,
        link_wait_seconds
    )
    .fetch_all(db)
    .await
}

/// Right before a Paystack call: the claim is still `claim`'s, unexpired, and the hold still
/// needs its link; extended by `lease_seconds` (past the call). False: leave the order.
pub async fn reassert_checkout_claim(
    db: &sqlx::PgPool,
    id: Uuid,
    claim: Uuid,
    lease_seconds: f64,
    link_wait_seconds: f64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE orders SET checkout_claimed_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND checkout_claim = $2 AND checkout_claimed_until > now()
           AND status = 'pending' AND authorization_url IS NULL
           AND (expires_at > now()
                OR checkout_deferred_at > now() - make_interval(secs => $4))",
        id,
        claim,
        lease_seconds,
        link_wait_seconds
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back `claim`'s holds still without a link (an initializer shutting down).
pub async fn release_checkout_claims(db: &sqlx::PgPool, claim: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_claimed_until = NULL
         WHERE checkout_claim = $1 AND authorization_url IS NULL AND status = 'pending'",
        claim
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The deferred hold's link exists: stored, and the hold now runs `hold_seconds` from here
/// (API.md: `expires_at` counts from when the link exists). False when the hold ended
/// meanwhile (expired, cancelled): nothing to show the buyer.
pub async fn set_deferred_checkout(
    db: &sqlx::PgPool,
    id: Uuid,
    authorization_url: &str,
    access_code: &str,
    hold_seconds: f64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE orders SET authorization_url = $2, access_code = $3,
                expires_at = GREATEST(expires_at, now() + make_interval(secs => $4)),
                checkout_claimed_until = NULL, updated_at = now()
         WHERE id = $1 AND status = 'pending' AND authorization_url IS NULL",
        id,
        authorization_url,
        access_code,
        hold_seconds
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The initializer could not make the link now: tried again after `seconds`.
pub async fn retry_deferred_checkout(
    db: &sqlx::PgPool,
    id: Uuid,
    seconds: f64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_claimed_until = now() + make_interval(secs => $2)
         WHERE id = $1",
        id,
        seconds
    )
    .execute(db)
    .await?;
    Ok(())
}

/// pending → `to` (expired, failed, cancelled), clearing `holds_seats`; returns the order when
/// this call made the change (the caller then gives the seats back in the same transaction).
pub async fn end_hold(
    db: impl PgExecutor<'_>,
    id: Uuid,
    to: OrderStatus,
) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as!(
        OrderRow,
        r#"UPDATE orders SET status = $2, holds_seats = false, updated_at = now()
           WHERE id = $1 AND status = 'pending' AND holds_seats
           RETURNING id, reference, user_id, event_id, tier_id, quantity, unit_price, total_amount,
                     discounted, currency, status AS "status: OrderStatus", holds_seats, expires_at, authorization_url, paid_at,
                     mail_queued_at, created_at"#,
        id,
        to.as_str()
    )
    .fetch_optional(db)
    .await
}

/// `from` → paid with the verified amount and fee; true when this call made the change.
pub async fn mark_paid(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: OrderStatus,
    paid_amount: i64,
    paystack_fee: i64,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE orders SET status = 'paid', holds_seats = true, paid_at = now(),
               paid_amount = $3, paystack_fee = $4, updated_at = now()
           WHERE id = $1 AND status = $2"#,
        id,
        from.as_str(),
        paid_amount,
        paystack_fee
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// A payment arrived for an order that no longer holds seats and none are left: it is owed
/// back (`from` → refund_pending with a reason).
pub async fn mark_refund_pending(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: OrderStatus,
    paid_amount: i64,
    paystack_fee: i64,
    reason: RefundReason,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE orders SET status = 'refund_pending', paid_at = now(), paid_amount = $3,
               paystack_fee = $4, refund_reason = $5, updated_at = now()
           WHERE id = $1 AND status = $2"#,
        id,
        from.as_str(),
        paid_amount,
        paystack_fee,
        reason.as_str()
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn mark_mail_queued(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET mail_queued_at = now() WHERE id = $1 AND mail_queued_at IS NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Claims up to `limit` holds past their expiry for this sweeper, for `lease_seconds`: rows
/// another instance is claiming right now are skipped (`SKIP LOCKED`), rows it holds a lease
/// on are left alone, so no two instances ask Paystack about the same hold.
/// A deferred hold still waiting for its link is not expired while it has waited less than
/// `link_wait_seconds` (its time runs from the link: a buyer never loses seats because
/// Paystack's budget made them queue). `(id, reference, expires_at)`.
pub async fn claim_expired_holds(
    db: impl PgExecutor<'_>,
    lease_seconds: f64,
    limit: i64,
    link_wait_seconds: f64,
) -> sqlx::Result<Vec<(Uuid, String, OffsetDateTime)>> {
    let rows = sqlx::query!(
        r#"UPDATE orders o SET verify_claimed_until = now() + make_interval(secs => $1)
           FROM (SELECT id FROM orders
                 WHERE status = 'pending' AND expires_at < now()
                   AND (verify_claimed_until IS NULL OR verify_claimed_until < now())
                   AND NOT (authorization_url IS NULL AND checkout_deferred_at IS NOT NULL
                            AND checkout_deferred_at > now() - make_interval(secs => $3))
                 ORDER BY expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED) claimed
           WHERE o.id = claimed.id
           RETURNING o.id, o.reference, o.expires_at"#,
        lease_seconds,
        limit,
        link_wait_seconds
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.reference, r.expires_at))
        .collect())
}

/// Claims up to `limit` orders marked `reverify` (expired while Paystack could not answer),
/// like `claim_expired_holds`. `(id, reference)`.
pub async fn claim_reverify(
    db: impl PgExecutor<'_>,
    lease_seconds: f64,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        r#"UPDATE orders o SET verify_claimed_until = now() + make_interval(secs => $1)
           FROM (SELECT id FROM orders
                 WHERE reverify
                   AND (verify_claimed_until IS NULL OR verify_claimed_until < now())
                 ORDER BY expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED) claimed
           WHERE o.id = claimed.id
           RETURNING o.id, o.reference"#,
        lease_seconds,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.reference)).collect())
}

/// Keeps a claim for `seconds` from now (Paystack could not answer: nobody asks again
/// before then).
pub async fn hold_verify_claim(
    db: impl PgExecutor<'_>,
    id: Uuid,
    seconds: f64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET verify_claimed_until = now() + make_interval(secs => $2) WHERE id = $1",
        id,
        seconds
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks (or unmarks) an order for re-verification, and gives its claim back.
pub async fn set_reverify(db: impl PgExecutor<'_>, id: Uuid, on: bool) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE orders SET reverify = $2, verify_claimed_until = NULL WHERE id = $1",
        id,
        on
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Paid orders (older than `grace_seconds`) whose tickets or mail are missing: a crash
/// between payment and issuance, or a lost job.
pub async fn incomplete_paid(
    db: impl PgExecutor<'_>,
    grace_seconds: f64,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT o.reference FROM orders o
           WHERE o.status = 'paid' AND o.paid_at < now() - make_interval(secs => $1)
             AND (o.mail_queued_at IS NULL
                  OR (SELECT count(*) FROM tickets t WHERE t.order_id = o.id) < o.quantity)
           ORDER BY o.paid_at LIMIT $2"#,
        grace_seconds,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn count_pending(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM orders WHERE status = 'pending'"#)
        .fetch_one(db)
        .await
}
