//! Refunds: one per order owed back (created by `ledger::reverse_and_refund`), driven by one
//! lease holder at a time. Every write after the claim is guarded by the lease id, so a
//! driver whose lease ran out (and was taken over) changes nothing.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::status::{RefundReason, RefundState};

#[derive(Debug, Clone)]
pub struct RefundRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub reference: String,
    pub user_id: Uuid,
    pub event_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub reason: RefundReason,
    pub note: Option<String>,
    pub status: RefundState,
    pub paystack_refund_id: Option<i64>,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub holder_mailed_at: Option<OffsetDateTime>,
}

/// Extends a lease still held (`false`: released or taken over).
pub async fn renew(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    lease_id: Uuid,
    lease_seconds: f64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE refunds SET locked_until = now() + make_interval(secs => $3)
         WHERE order_id = $1 AND lease_id = $2 AND locked_until IS NOT NULL",
        order_id,
        lease_id,
        lease_seconds
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the lease on an order's unfinished refund for `lease_seconds`; `None` when there is
/// none, it is finished, or another driver holds it.
pub async fn claim(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    lease_id: Uuid,
    lease_seconds: f64,
) -> sqlx::Result<Option<RefundRow>> {
    sqlx::query_as!(
        RefundRow,
        r#"WITH claimed AS (
               UPDATE refunds SET locked_until = now() + make_interval(secs => $3), lease_id = $2
               WHERE order_id = $1 AND (locked_until IS NULL OR locked_until < now())
                 AND status <> 'processed'
               RETURNING *
           )
           SELECT c.id, c.order_id, o.reference, o.user_id, o.event_id, c.amount, c.currency,
                  c.reason AS "reason: RefundReason", c.note, c.status AS "status: RefundState", c.paystack_refund_id, c.attempts, c.next_attempt_at,
                  c.holder_mailed_at
           FROM claimed c JOIN orders o ON o.id = c.order_id"#,
        order_id,
        lease_id,
        lease_seconds
    )
    .fetch_optional(db)
    .await
}

/// What a driver writes back: the new status and when to look again. Releases the lease.
pub struct RefundUpdate<'a> {
    pub status: RefundState,
    pub paystack_refund_id: Option<i64>,
    pub last_error: Option<&'a str>,
    pub retry_in_seconds: f64,
    /// The clock's now: retry times are on the service's clock (`domain::clock`).
    pub now: OffsetDateTime,
}

/// Moves the refund to `u.status` while keeping the lease (a step inside one drive).
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    u: &RefundUpdate<'_>,
    release: bool,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE refunds SET status = $3,
               paystack_refund_id = COALESCE($4, paystack_refund_id),
               last_error = $5,
               next_attempt_at = $8::timestamptz + make_interval(secs => $6),
               processed_at = CASE WHEN $3 = 'processed' THEN COALESCE(processed_at, now()) END,
               locked_until = CASE WHEN $7 THEN NULL ELSE locked_until END,
               lease_id = CASE WHEN $7 THEN NULL ELSE lease_id END,
               updated_at = now()
           WHERE id = $1 AND lease_id = $2"#,
        id,
        lease_id,
        u.status.as_str(),
        u.paystack_refund_id,
        u.last_error,
        u.retry_in_seconds,
        release,
        u.now
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Before a `POST /refund`: the attempt is counted and the refund is `sending` until the
/// answer is known, so a crash or timeout is looked up before any resend. Only with at least
/// `call_seconds` of lease left (the call ends inside the lease), and with the earliest
/// look-up `lookup_in` seconds after `now` (on the service clock): a second driver that
/// takes the row over (the lease lapsed under a live driver) must not look for the refund
/// before this call could have reached Paystack, or it finds none and sends another.
pub async fn start_sending(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    call_seconds: f64,
    now: OffsetDateTime,
    lookup_in: f64,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE refunds SET status = 'sending', attempts = attempts + 1,
               next_attempt_at = $4::timestamptz + make_interval(secs => $5), updated_at = now()
           WHERE id = $1 AND lease_id = $2 AND status IN ('pending', 'failed')
             AND locked_until > now() + make_interval(secs => $3)"#,
        id,
        lease_id,
        call_seconds,
        now,
        lookup_in
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Takes back the attempt `start_sending` counted (Paystack refused it unread: a 429).
pub async fn uncount_attempt(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE refunds SET attempts = GREATEST(attempts - 1, 0) WHERE id = $1 AND lease_id = $2",
        id,
        lease_id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn mark_holder_mailed(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE refunds SET holder_mailed_at = now() WHERE id = $1 AND holder_mailed_at IS NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Lets go of the lease without changing anything else.
pub async fn release(db: impl PgExecutor<'_>, id: Uuid, lease_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE refunds SET locked_until = NULL, lease_id = NULL WHERE id = $1 AND lease_id = $2",
        id,
        lease_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// refund_pending → refunded, in the transaction that marks its refund processed.
pub async fn mark_order_refunded(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE orders SET status = 'refunded', updated_at = now()
           WHERE id = $1 AND status = 'refund_pending'"#,
        order_id
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// The status of an order's refund, if it has one.
pub async fn status_of(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> sqlx::Result<Option<RefundState>> {
    sqlx::query_scalar!(
        r#"SELECT status AS "status: RefundState" FROM refunds WHERE order_id = $1"#,
        order_id
    )
    .fetch_optional(db)
    .await
}

/// Orders whose refund is due: unfinished, its time come, no live lease.
pub async fn due(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT r.order_id FROM refunds r
           WHERE r.next_attempt_at <= $2
             AND (r.locked_until IS NULL OR r.locked_until < now())
             AND r.status <> 'processed'
           ORDER BY r.next_attempt_at LIMIT $1"#,
        limit,
        now
    )
    .fetch_all(db)
    .await
}
