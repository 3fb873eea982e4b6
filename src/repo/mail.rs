//! The mail outbox (`migrations/0009_mail_outbox.sql`, `service::mail`).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A message as it waits to be sent.
pub struct OutboxRow {
    pub id: Uuid,
    pub kind: String,
    pub to_address: String,
    pub subject: String,
    pub html: String,
    pub body_text: String,
    pub idempotency_key: String,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    /// The batch it is being sent in.
    pub batch_id: Uuid,
}

pub struct NewMail<'a> {
    pub kind: &'a str,
    pub priority: i16,
    pub to_address: &'a str,
    pub subject: &'a str,
    pub html: &'a str,
    pub body_text: &'a str,
    pub idempotency_key: &'a str,
}

/// Queues a message; a message with the same idempotency key is queued once. True when
/// this call queued it.
pub async fn enqueue(db: impl PgExecutor<'_>, m: NewMail<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"INSERT INTO mail_outbox (id, kind, priority, to_address, subject, html, body_text,
                                    idempotency_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (idempotency_key) DO NOTHING"#,
        Uuid::now_v7(),
        m.kind,
        m.priority,
        m.to_address,
        m.subject,
        m.html,
        m.body_text,
        m.idempotency_key
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A batch whose sender died or whose send failed and is due again: the same rows, for the
/// same idempotency key, in the same order (by id). Claimed for `lease_seconds`. A batch is
/// claimed as a unit with a transaction-scoped advisory lock on its id: two senders never
/// take rows of one batch each (which would deadlock their updates).
pub async fn claim_due_batch(
    db: impl PgExecutor<'_>,
    lease_seconds: f64,
) -> sqlx::Result<Option<(Uuid, Vec<OutboxRow>)>> {
    let mut rows = sqlx::query_as!(
        OutboxRow,
        r#"WITH due AS (
               SELECT batch_id FROM mail_outbox
               WHERE status = 'sending' AND next_attempt_at <= now()
                 AND pg_try_advisory_xact_lock(hashtextextended(batch_id::text, 7))
               ORDER BY next_attempt_at LIMIT 1
           )
           UPDATE mail_outbox m SET next_attempt_at = now() + make_interval(secs => $1)
           FROM due WHERE m.batch_id = due.batch_id AND m.status = 'sending'
             AND m.next_attempt_at <= now()
           RETURNING m.id, m.kind, m.to_address, m.subject, m.html, m.body_text,
                     m.idempotency_key, m.attempts, m.created_at, m.batch_id AS "batch_id!""#,
        lease_seconds
    )
    .fetch_all(db)
    .await?;
    // The order of RETURNING is not defined; a resend must carry the very same body.
    rows.sort_by_key(|r| r.id);
    Ok(rows
        .first()
        .map(|r| r.batch_id)
        .map(|batch_id| (batch_id, rows)))
}
/// Forms a new batch of up to `limit` due messages, most urgent first, and records it
/// (`batch_id`, `sending`) before anything is sent. A message marked `solo` goes alone.
pub async fn claim_new_batch(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    limit: i64,
    lease_seconds: f64,
) -> sqlx::Result<Vec<OutboxRow>> {
    let mut rows = sqlx::query_as!(
        OutboxRow,
        r#"WITH first AS (
               SELECT id, solo FROM mail_outbox
               WHERE status = 'queued' AND next_attempt_at <= now()
               ORDER BY priority, next_attempt_at LIMIT $2
               FOR UPDATE SKIP LOCKED
           ), picked AS (
               -- A solo message is a batch of its own; otherwise the non-solo ones.
               SELECT id FROM first
               WHERE CASE WHEN (SELECT bool_or(solo) FROM first)
                          THEN id = (SELECT id FROM first WHERE solo LIMIT 1)
                          ELSE true END
           )
           UPDATE mail_outbox m SET status = 'sending', batch_id = $1,
               next_attempt_at = now() + make_interval(secs => $3)
           FROM picked WHERE m.id = picked.id
           RETURNING m.id, m.kind, m.to_address, m.subject, m.html, m.body_text,
                     m.idempotency_key, m.attempts, m.created_at, m.batch_id AS "batch_id!""#,
        batch_id,
        limit,
        lease_seconds
    )
    .fetch_all(db)
    .await?;
    // By id, as a resend of this batch will order them (`claim_due_batch`).
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Resend accepted the batch: each message with its id.
pub async fn mark_sent(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    provider_ids: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        // The bodies go once sent: a reset code or an access key must not outlive its mail.
        r#"UPDATE mail_outbox m SET status = 'sent', sent_at = now(), provider_id = p.provider_id,
               last_error = NULL, html = '', body_text = ''
           FROM UNNEST($1::uuid[], $2::text[]) AS p(id, provider_id)
           WHERE m.id = p.id"#,
        ids,
        provider_ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A temporary failure: the same batch (same key) is sent again after `delay_seconds`.
pub async fn retry_batch(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
    delay_seconds: f64,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE mail_outbox SET attempts = attempts + 1, last_error = $3,
               next_attempt_at = now() + make_interval(secs => $2)
           WHERE batch_id = $1 AND status = 'sending'"#,
        batch_id,
        delay_seconds,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Resend refused the batch as a whole (nothing was sent): its messages go back to the
/// queue, each to be sent on its own, so one bad message does not hold the others.
pub async fn split_batch(db: impl PgExecutor<'_>, batch_id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE mail_outbox SET status = 'queued', batch_id = NULL, solo = true,
               last_error = $2, next_attempt_at = now()
           WHERE batch_id = $1 AND status = 'sending'"#,
        batch_id,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Given up (a permanent refusal of a message sent alone, or too many attempts).
pub async fn fail_batch(db: impl PgExecutor<'_>, batch_id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE mail_outbox SET status = 'failed', last_error = $2, html = '', body_text = ''
           WHERE batch_id = $1 AND status = 'sending'"#,
        batch_id,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Messages waiting to be sent (queued or in a batch), for the gauge.
pub async fn backlog(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!" FROM mail_outbox WHERE status IN ('queued', 'sending')"#
    )
    .fetch_one(db)
    .await
}

/// Forgets sent and failed messages older than `days` (their bodies are already gone; the
/// rows were kept for the record of what was sent).
pub async fn prune(db: impl PgExecutor<'_>, days: i32) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"DELETE FROM mail_outbox
           WHERE status IN ('sent', 'failed') AND created_at < now() - make_interval(days => $1)"#,
        days
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A deleted account's mail that is not waiting to go: its address and name are erased.
pub async fn erase_for(db: impl PgExecutor<'_>, to_address: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM mail_outbox WHERE to_address = $1 AND status IN ('sent', 'failed')",
        to_address
    )
    .execute(db)
    .await?;
    Ok(())
}
