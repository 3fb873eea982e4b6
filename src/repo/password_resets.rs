//! Password resets: the mailed OTP, its failed tries, and the reset token it turns into.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

pub struct OpenReset {
    pub id: Uuid,
    pub user_id: Uuid,
    pub otp_hash: String,
    pub otp_expires_at: OffsetDateTime,
    pub failed_attempts: i32,
}

/// Closes any open OTP of the user and opens a new one (call inside a transaction).
pub async fn replace_open(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    user_id: Uuid,
    otp_hash: &str,
    otp_expires_at: OffsetDateTime,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE password_resets SET closed_at = now() WHERE user_id = $1 AND closed_at IS NULL",
        user_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"INSERT INTO password_resets (id, user_id, otp_hash, otp_expires_at)
           VALUES ($1, $2, $3, $4)"#,
        id,
        user_id,
        otp_hash,
        otp_expires_at
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The newest reset of a user, open or not (a voided one answers `otp_expired`).
pub async fn latest_for_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> sqlx::Result<Option<(OpenReset, bool)>> {
    let row = sqlx::query!(
        r#"SELECT id, user_id, otp_hash, otp_expires_at, failed_attempts,
                  closed_at IS NULL AS "open!"
           FROM password_resets WHERE user_id = $1
           ORDER BY created_at DESC, id DESC LIMIT 1"#,
        user_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            OpenReset {
                id: r.id,
                user_id: r.user_id,
                otp_hash: r.otp_hash,
                otp_expires_at: r.otp_expires_at,
                failed_attempts: r.failed_attempts,
            },
            r.open,
        )
    }))
}

/// Counts a wrong OTP; the reset is closed (voided) by the try that reaches `max`.
/// Returns the attempts so far, or None when it was already closed.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    id: Uuid,
    max: i32,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!(
        r#"UPDATE password_resets
           SET failed_attempts = failed_attempts + 1,
               closed_at = CASE WHEN failed_attempts + 1 >= $2 THEN now() ELSE NULL END
           WHERE id = $1 AND closed_at IS NULL
           RETURNING failed_attempts"#,
        id,
        max
    )
    .fetch_optional(db)
    .await
}

/// Turns an open, unexpired OTP into a reset token (single use of the OTP is the guard).
pub async fn issue_token(
    db: impl PgExecutor<'_>,
    id: Uuid,
    token_hash: &str,
    token_expires_at: OffsetDateTime,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE password_resets
           SET closed_at = now(), token_hash = $2, token_expires_at = $3
           WHERE id = $1 AND closed_at IS NULL AND otp_expires_at > now()"#,
        id,
        token_hash,
        token_expires_at
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Uses a reset token once; returns its user when it was valid and unused.
pub async fn consume_token(
    db: impl PgExecutor<'_>,
    token_hash: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"UPDATE password_resets SET token_used_at = now()
           WHERE token_hash = $1 AND token_used_at IS NULL AND token_expires_at > now()
           RETURNING user_id"#,
        token_hash
    )
    .fetch_optional(db)
    .await
}
