//! Users, their two-factor state and recovery codes.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// `Debug` is written by hand below: the password hash and the TOTP secret never reach a log.
#[derive(Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub token_version: i32,
    pub totp_secret: Option<Vec<u8>>,
    pub two_factor_enabled: bool,
    pub is_organizer: bool,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("two_factor_enabled", &self.two_factor_enabled)
            .field("is_organizer", &self.is_organizer)
            .finish_non_exhaustive()
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    email: &str,
    password_hash: &str,
    first_name: &str,
    last_name: &str,
) -> sqlx::Result<OffsetDateTime> {
    sqlx::query_scalar!(
        r#"INSERT INTO users (id, email, password_hash, first_name, last_name)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING created_at"#,
        id,
        email as _,
        password_hash,
        first_name,
        last_name
    )
    .fetch_one(db)
    .await
}

pub async fn find_by_email(db: impl PgExecutor<'_>, email: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT u.id, u.email AS "email!: String", u.password_hash, u.first_name, u.last_name,
                  u.token_version, u.totp_secret, u.two_factor_enabled, u.created_at,
                  EXISTS (SELECT 1 FROM organizers o WHERE o.user_id = u.id) AS "is_organizer!"
           FROM users u
           WHERE u.email = $1 AND u.deleted_at IS NULL"#,
        email as _
    )
    .fetch_optional(db)
    .await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT u.id, u.email AS "email!: String", u.password_hash, u.first_name, u.last_name,
                  u.token_version, u.totp_secret, u.two_factor_enabled, u.created_at,
                  EXISTS (SELECT 1 FROM organizers o WHERE o.user_id = u.id) AS "is_organizer!"
           FROM users u
           WHERE u.id = $1 AND u.deleted_at IS NULL"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// The token version and email of a live (not deleted) user: what every authenticated
/// request checks (the email rides along for the purchase path, which needs it for Paystack).
pub async fn token_version(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> sqlx::Result<Option<(i32, String)>> {
    let row = sqlx::query!(
        r#"SELECT token_version, email AS "email!: String" FROM users WHERE id = $1 AND deleted_at IS NULL"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.token_version, r.email)))
}

/// What authentication checks when Redis cannot answer: the token version and email of a
/// live user, and whether this token was logged out (`revoked_tokens`).
pub async fn auth_state(
    db: impl PgExecutor<'_>,
    id: Uuid,
    jti: Uuid,
) -> sqlx::Result<Option<(i32, String, bool)>> {
    let row = sqlx::query!(
        r#"SELECT token_version, email AS "email!: String",
                  EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $2) AS "revoked!"
           FROM users WHERE id = $1 AND deleted_at IS NULL"#,
        id,
        jti
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.token_version, r.email, r.revoked)))
}

/// Records a logged-out token until it would have expired (idempotent), as not yet copied
/// into Redis (`mark_revocations_in_redis` once it is).
pub async fn revoke_token(
    db: impl PgExecutor<'_>,
    jti: Uuid,
    user_id: Uuid,
    expires_at: OffsetDateTime,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at, in_redis) VALUES ($1, $2, $3, false)
         ON CONFLICT (jti) DO UPDATE SET in_redis = false",
        jti,
        user_id,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Unexpired revocations whose Redis copy was not written, oldest first, with seconds left.
pub async fn revocations_not_in_redis(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT jti, GREATEST(1, CEIL(EXTRACT(EPOCH FROM expires_at - now())))::BIGINT AS "secs!"
           FROM revoked_tokens WHERE NOT in_redis AND expires_at > now()
           ORDER BY created_at LIMIT $1"#,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.jti, r.secs)).collect())
}

/// Records that Redis now holds these revocations.
pub async fn mark_revocations_in_redis(db: impl PgExecutor<'_>, jtis: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE revoked_tokens SET in_redis = true WHERE jti = ANY($1)",
        jtis
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Logged-out tokens that have not expired yet, with their seconds left: what a Redis that
/// lost its data is refilled with. Bounded by the token lifetime (logouts of the last hour).
pub async fn unexpired_revocations(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(Uuid, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT jti, GREATEST(1, CEIL(EXTRACT(EPOCH FROM expires_at - now())))::BIGINT AS "secs!"
           FROM revoked_tokens WHERE expires_at > now()"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.jti, r.secs)).collect())
}

/// Drops revocations of tokens that have expired anyway.
pub async fn prune_revocations(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let done = sqlx::query!("DELETE FROM revoked_tokens WHERE expires_at <= now()")
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Sets a new password and bumps the token version, so every older token stops working.
pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    password_hash: &str,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users SET password_hash = $2, token_version = token_version + 1, updated_at = now()
           WHERE id = $1 AND deleted_at IS NULL"#,
        id,
        password_hash
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Stores a fresh (not yet confirmed) TOTP secret; refused while 2FA is on.
pub async fn set_pending_totp(
    db: impl PgExecutor<'_>,
    id: Uuid,
    sealed_secret: &[u8],
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users SET totp_secret = $2, totp_last_step = NULL, updated_at = now()
           WHERE id = $1 AND NOT two_factor_enabled AND deleted_at IS NULL"#,
        id,
        sealed_secret
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Records that a TOTP code of `step` was used, only if no code of this or a later step was
/// used before: the guard is what makes a code single-use, even under concurrent requests.
pub async fn accept_totp_step(db: impl PgExecutor<'_>, id: Uuid, step: i64) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users SET totp_last_step = $2
           WHERE id = $1 AND totp_secret IS NOT NULL
             AND (totp_last_step IS NULL OR totp_last_step < $2)"#,
        id,
        step
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn set_two_factor(
    db: impl PgExecutor<'_>,
    id: Uuid,
    enabled: bool,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users
           SET two_factor_enabled = $2,
               totp_secret = CASE WHEN $2 THEN totp_secret ELSE NULL END,
               totp_last_step = CASE WHEN $2 THEN totp_last_step ELSE NULL END,
               updated_at = now()
           WHERE id = $1 AND two_factor_enabled <> $2 AND deleted_at IS NULL"#,
        id,
        enabled
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn count_two_factor_enabled(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM users WHERE two_factor_enabled AND deleted_at IS NULL"#
    )
    .fetch_one(db)
    .await
}

/// Replaces the user's recovery codes with new ones (hashes).
pub async fn replace_recovery_codes(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    hashes: &[String],
) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        .execute(&mut *tx)
        .await?;
    let ids: Vec<Uuid> = hashes.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query!(
        r#"INSERT INTO recovery_codes (id, user_id, code_hash)
           SELECT id, $2, code_hash FROM UNNEST($1::uuid[], $3::text[]) AS t(id, code_hash)"#,
        &ids,
        user_id,
        hashes
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Uses a recovery code once; false when unknown or already used.
/// Marks one unused code as used; `code_hashes` are the forms it may be stored in (keyed,
/// and the unkeyed form of codes issued before keys were used).
pub async fn use_recovery_code(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    code_hashes: &[String],
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        // A user's codes are all of one form (one enrolment issues them), so at most one
        // row matches.
        r#"UPDATE recovery_codes SET used_at = now()
           WHERE user_id = $1 AND code_hash = ANY($2) AND used_at IS NULL"#,
        user_id,
        code_hashes
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn update_names(
    db: impl PgExecutor<'_>,
    id: Uuid,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users SET first_name = COALESCE($2, first_name),
               last_name = COALESCE($3, last_name), updated_at = now()
           WHERE id = $1 AND deleted_at IS NULL"#,
        id,
        first_name,
        last_name
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Erases a user's personal data and marks the account deleted. The row stays, because
/// orders and tickets (money records) point at it; the email is freed for a new signup.
pub async fn erase(db: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE users SET email = 'deleted-' || id::text || '@deleted.invalid',
               password_hash = '!', first_name = '', last_name = '', totp_secret = NULL,
               two_factor_enabled = false, totp_last_step = NULL,
               token_version = token_version + 1, deleted_at = now(), updated_at = now()
           WHERE id = $1 AND deleted_at IS NULL"#,
        id
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!("DELETE FROM recovery_codes WHERE user_id = $1", id)
        .execute(&mut *db)
        .await?;
    // An organizer profile keeps its name (past events show it) but loses contact and bank data.
    sqlx::query!(
        r#"UPDATE organizers SET email = '', phone = '', account_number = '', account_name = '',
               recipient_code = '', description = NULL, website = NULL, updated_at = now()
           WHERE user_id = $1"#,
        id
    )
    .execute(&mut *db)
    .await?;
    Ok(res.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_out_the_password_hash_and_totp_secret() {
        let row = UserRow {
            id: Uuid::nil(),
            email: "u@example.com".into(),
            password_hash: "$argon2id$secret-hash".into(),
            first_name: "U".into(),
            last_name: "V".into(),
            token_version: 0,
            totp_secret: Some(b"totp-secret".to_vec()),
            two_factor_enabled: true,
            is_organizer: false,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let shown = format!("{row:?}");
        assert!(
            !shown.contains("argon2id") && !shown.contains("116, 111, 116, 112"),
            "{shown}"
        );
    }
}
