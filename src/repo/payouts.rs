//! Payouts: one per event, created under the event row's lock when the event is due, then
//! driven by one lease holder at a time (writes guarded by the lease id, as for refunds).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::status::{PayoutStatus, TransferState};

#[derive(Debug, Clone)]
pub struct PayoutRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organizer_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub recipient_code: String,
    pub status: PayoutStatus,
    pub attempt: i32,
    pub transfer_state: TransferState,
    pub transfer_code: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    pub settled_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl PayoutRow {
    /// `payout-<id>-<attempt>`: deterministic per attempt, so a retry of the same attempt can
    /// never create a second transfer (Paystack dedupes on it).
    pub fn reference(&self) -> String {
        format!("payout-{}-{}", self.id.simple(), self.attempt)
    }
}

/// Events whose payout is due (ended `delay` ago, not cancelled, none started), oldest first.
pub async fn due_events(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
    delay_seconds: f64,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT id FROM events
           WHERE status = 'scheduled' AND payout_started_at IS NULL
             AND ends_at <= $1::timestamptz - make_interval(secs => $2)
           ORDER BY ends_at LIMIT $3"#,
        now,
        delay_seconds,
        limit
    )
    .fetch_all(db)
    .await
}

/// Marks the event's payout as started, under the event row's lock (a guarded update): from
/// here on the event cannot be cancelled nor an order refunded. Returns the organizer's id,
/// recipient and when its bank account last changed; `None` when not due (any more).
pub async fn start_for_event(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    now: OffsetDateTime,
    delay_seconds: f64,
) -> sqlx::Result<Option<(Uuid, String, Option<OffsetDateTime>)>> {
    let row = sqlx::query!(
        r#"WITH started AS (
               UPDATE events SET payout_started_at = $2, updated_at = now()
               WHERE id = $1 AND status = 'scheduled' AND payout_started_at IS NULL
                 AND ends_at <= $2::timestamptz - make_interval(secs => $3)
               RETURNING organizer_id
           )
           SELECT o.id, o.recipient_code, o.bank_changed_at
           FROM started s JOIN organizers o ON o.id = s.organizer_id"#,
        event_id,
        now,
        delay_seconds
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.recipient_code, r.bank_changed_at)))
}

pub struct NewPayout<'a> {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organizer_id: Uuid,
    pub amount: i64,
    pub recipient_code: &'a str,
    /// Nothing to send (a free or fully refunded event): settled at once.
    pub settled: bool,
    /// Not sent before this (the bank-account cooldown).
    pub not_before: OffsetDateTime,
}

pub async fn insert(db: impl PgExecutor<'_>, p: NewPayout<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO payouts (id, event_id, organizer_id, amount, recipient_code, status,
                                next_attempt_at, settled_at)
           VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN 'success' ELSE 'pending' END,
                   $7, CASE WHEN $6 THEN now() END)"#,
        p.id,
        p.event_id,
        p.organizer_id,
        p.amount,
        p.recipient_code,
        p.settled,
        p.not_before
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Extends a lease still held (`false`: released or taken over).
pub async fn renew(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    lease_seconds: f64,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE payouts SET locked_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND lease_id = $2 AND locked_until IS NOT NULL",
        id,
        lease_id,
        lease_seconds
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the lease on a payout (any status: a `transfer.reversed` may follow a success).
pub async fn claim(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    lease_seconds: f64,
) -> sqlx::Result<Option<PayoutRow>> {
    sqlx::query_as!(
        PayoutRow,
        r#"UPDATE payouts SET locked_until = now() + make_interval(secs => $3), lease_id = $2
           WHERE id = $1 AND (locked_until IS NULL OR locked_until < now())
           RETURNING id, event_id, organizer_id, amount, currency, recipient_code, status AS "status: PayoutStatus", attempt,
                     transfer_state AS "transfer_state: TransferState", transfer_code, next_attempt_at, settled_at, created_at"#,
        id,
        lease_id,
        lease_seconds
    )
    .fetch_optional(db)
    .await
}

/// What a driver writes back (guarded by its lease).
pub struct PayoutUpdate<'a> {
    pub status: PayoutStatus,
    pub transfer_state: TransferState,
    pub attempt: i32,
    pub recipient_code: &'a str,
    pub transfer_code: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub retry_in_seconds: f64,
    /// The clock's now: retry times are on the service's clock (`domain::clock`).
    pub now: OffsetDateTime,
    pub release: bool,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    u: &PayoutUpdate<'_>,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE payouts SET status = $3, transfer_state = $4, attempt = $5, recipient_code = $6,
               transfer_code = COALESCE($7, transfer_code), last_error = $8,
               next_attempt_at = $11::timestamptz + make_interval(secs => $9),
               settled_at = CASE WHEN $3 = 'success' THEN COALESCE(settled_at, now()) END,
               locked_until = CASE WHEN $10 THEN NULL ELSE locked_until END,
               lease_id = CASE WHEN $10 THEN NULL ELSE lease_id END,
               updated_at = now()
           WHERE id = $1 AND lease_id = $2"#,
        id,
        lease_id,
        u.status.as_str(),
        u.transfer_state.as_str(),
        u.attempt,
        u.recipient_code,
        u.transfer_code,
        u.last_error,
        u.retry_in_seconds,
        u.release,
        u.now
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn release(db: impl PgExecutor<'_>, id: Uuid, lease_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE payouts SET locked_until = NULL, lease_id = NULL WHERE id = $1 AND lease_id = $2",
        id,
        lease_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Payouts whose next step is due and that no one holds.
pub async fn due(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT id FROM payouts
           WHERE status <> 'success' AND next_attempt_at <= $2
             AND (locked_until IS NULL OR locked_until < now())
           ORDER BY next_attempt_at LIMIT $1"#,
        limit,
        now
    )
    .fetch_all(db)
    .await
}

/// The organizer's payouts, newest first.
pub async fn for_organizer(
    db: impl PgExecutor<'_>,
    organizer_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<PayoutRow>> {
    sqlx::query_as!(
        PayoutRow,
        r#"SELECT id, event_id, organizer_id, amount, currency, recipient_code, status AS "status: PayoutStatus", attempt,
                  transfer_state AS "transfer_state: TransferState", transfer_code, next_attempt_at, settled_at, created_at
           FROM payouts WHERE organizer_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"#,
        organizer_id,
        limit
    )
    .fetch_all(db)
    .await
}

/// The organizer's current payout account: recipient and when it last changed.
pub async fn organizer_account(
    db: impl PgExecutor<'_>,
    organizer_id: Uuid,
) -> sqlx::Result<Option<(String, Option<OffsetDateTime>)>> {
    let row = sqlx::query!(
        "SELECT recipient_code, bank_changed_at FROM organizers WHERE id = $1",
        organizer_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.recipient_code, r.bank_changed_at)))
}
