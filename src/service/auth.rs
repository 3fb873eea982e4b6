//! Accounts: signup, login (with the two-factor challenge), logout, TOTP enrolment, and the
//! password reset by mailed OTP.
//!
//! Where a secret decides (passwords, codes, tokens) the answer must not reveal which part
//! was wrong or whether an account exists: one `invalid_credentials` for unknown email and
//! wrong password, with a dummy hash so both take the same time; the reset endpoints answer
//! 202 for any email.

use std::time::Duration;

use redis::AsyncCommands;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::email::EmailAddress,
    error::{AppError, AppResult, OnConstraint},
    repo::{self, users::UserRow},
    security::{crypto, jwt::Claims, password, totp},
    service::{notifications, rate_limit},
    state::AppState,
};

/// How long a login's two-factor challenge lives.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one challenge tolerates before it is voided.
const CHALLENGE_MAX_FAILURES: i64 = 5;
pub const OTP_TTL: Duration = Duration::from_secs(10 * 60);
pub const OTP_RESEND_GAP: Duration = Duration::from_secs(60);
pub const OTP_MAX_FAILURES: i32 = 5;
pub const RESET_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

pub struct NewUser {
    pub email: EmailAddress,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

pub struct Session {
    pub user: UserRow,
    pub access_token: String,
}

pub enum LoginOutcome {
    Session(Session),
    TwoFactorRequired { challenge_token: String },
}

fn login_metric(outcome: &'static str) {
    metrics::counter!("ticketing_logins_total", "outcome" => outcome).increment(1);
}

fn invalid_credentials() -> AppError {
    AppError::unauthorized("invalid_credentials", "The email or password is wrong.")
}

fn issue_session(state: &AppState, user: UserRow) -> AppResult<Session> {
    let (access_token, _) = state.jwt.issue(user.id, user.token_version)?;
    Ok(Session { user, access_token })
}

#[tracing::instrument(skip_all)]
pub async fn signup(state: &AppState, input: NewUser) -> AppResult<Session> {
    let hash = password::hash_blocking(input.password).await?;
    let id = Uuid::now_v7();
    let email = input.email.as_str();
    let first_name = input.first_name.trim().to_owned();
    let last_name = input.last_name.trim().to_owned();
    repo::users::insert(&state.db, id, email, &hash, &first_name, &last_name)
        .await
        .on_constraint("users_email_key", AppError::email_taken)?;
    let user = repo::users::find_by_id(&state.db, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("user vanished right after signup"))?;
    // A lost welcome mail is regrettable, not harmful: the account exists either way.
    if let Err(e) = state
        .queues
        .send_mail(notifications::welcome(id, email, &first_name))
        .await
    {
        tracing::warn!(error = %e, "welcome mail not queued");
    }
    tracing::info!(user_id = %id, "signed up");
    issue_session(state, user)
}

#[tracing::instrument(skip_all)]
pub async fn login(state: &AppState, email: &str, password: String) -> AppResult<LoginOutcome> {
    // An unparseable email cannot match an account; it still costs a hash, like a miss.
    let email = EmailAddress::parse(email).map(|e| e.as_str().to_owned());
    let key = email.clone().unwrap_or_default();
    if let Err(e) = rate_limit::check_account_lock(&state.redis, &key).await {
        login_metric("locked");
        return Err(e);
    }
    let user = match &email {
        Ok(email) => repo::users::find_by_email(&state.db, email).await?,
        Err(_) => None,
    };
    let ok =
        password::verify_blocking(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            rate_limit::record_login_failure(&state.redis, &key).await?;
            login_metric("invalid_credentials");
            return Err(invalid_credentials());
        }
    };
    rate_limit::clear_login_failures(&state.redis, &key).await?;
    if user.two_factor_enabled {
        let challenge_token = crypto::random_token(32);
        let mut conn = state.redis.conn();
        let _: () = conn
            .set_ex(
                challenge_key(state, &challenge_token),
                user.id.to_string(),
                CHALLENGE_TTL.as_secs(),
            )
            .await?;
        login_metric("two_factor_required");
        return Ok(LoginOutcome::TwoFactorRequired { challenge_token });
    }
    login_metric("success");
    Ok(LoginOutcome::Session(issue_session(state, user)?))
}

fn challenge_key(state: &AppState, token: &str) -> String {
    state
        .redis
        .key(format!("2fa:challenge:{}", crypto::token_hash(token)))
}

fn revoked_key(state: &AppState, jti: Uuid) -> String {
    state.redis.key(format!("revoked:{jti}"))
}

/// Revokes this token (only this one) until it would have expired anyway. Kept in Redis, so
/// every instance sees it at once.
pub async fn logout(state: &AppState, claims: &Claims) -> AppResult<()> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let ttl = (claims.exp - now).max(1) as u64 + 5;
    let mut conn = state.redis.conn();
    let _: () = conn.set_ex(revoked_key(state, claims.jti), 1, ttl).await?;
    Ok(())
}

fn user_cache_key(state: &AppState, user_id: Uuid) -> String {
    state.redis.key(format!("user:{user_id}"))
}

/// How long a user's token version stays cached (it is also dropped on every change).
const USER_CACHE_SECS: u64 = 3600;

/// Drops the cached token version of a user. Called before and after the transaction that
/// bumps the version (password reset) or deletes the user: the first so no request
/// re-reads a stale copy meanwhile from an old cache entry, the second so a copy re-read from
/// the not-yet-committed state is gone once the change is visible.
pub async fn forget_user(state: &AppState, user_id: Uuid) {
    let mut conn = state.redis.conn();
    if let Err(e) = conn.del::<_, ()>(user_cache_key(state, user_id)).await {
        tracing::error!(error = %e, %user_id, "could not drop a cached token version");
    }
}

/// Resolves a bearer token to its user: signature and expiry, not revoked, the user still
/// exists, and the token's version is current (a password change bumps it).
///
/// One Redis round trip answers both "revoked?" and "current version?" (the version and
/// email are cached per user), so an authenticated request usually costs PostgreSQL nothing.
pub async fn authenticate(state: &AppState, token: &str) -> AppResult<(Claims, String)> {
    let unauthorized = || AppError::not_authenticated("A valid access token is required.");
    let claims = state.jwt.verify(token).ok_or_else(unauthorized)?;
    let mut conn = state.redis.conn();
    let cache_key = user_cache_key(state, claims.sub);
    let (revoked, cached): (Option<String>, Option<String>) = redis::cmd("MGET")
        .arg(revoked_key(state, claims.jti))
        .arg(&cache_key)
        .query_async(&mut conn)
        .await?;
    if revoked.is_some() {
        return Err(unauthorized());
    }
    let current = match cached.as_deref().and_then(|c| c.split_once('\n')) {
        Some((version, email)) => version.parse::<i32>().ok().map(|v| (v, email.to_owned())),
        None => {
            let found = repo::users::token_version(&state.db, claims.sub).await?;
            if let Some((v, email)) = &found {
                let _: Result<(), _> = conn
                    .set_ex(&cache_key, format!("{v}\n{email}"), USER_CACHE_SECS)
                    .await;
            }
            found
        }
    };
    match current {
        Some((v, email)) if v == claims.ver => Ok((claims, email)),
        _ => Err(unauthorized()),
    }
}

pub struct Enrollment {
    pub secret: String,
    pub otpauth_url: String,
    pub qr_code_png: String,
}

async fn current_user(state: &AppState, user_id: Uuid) -> AppResult<UserRow> {
    repo::users::find_by_id(&state.db, user_id)
        .await?
        .ok_or_else(|| AppError::not_authenticated("The account no longer exists."))
}

/// Starts enrolment: a new secret, stored encrypted, on only after the first good code.
pub async fn enable_two_factor(state: &AppState, user_id: Uuid) -> AppResult<Enrollment> {
    let user = current_user(state, user_id).await?;
    if user.two_factor_enabled {
        return Err(AppError::two_factor_already_enabled());
    }
    let secret = totp::new_secret();
    let sealed = crypto::seal(&state.config.totp_encryption_key, &secret)?;
    if !repo::users::set_pending_totp(&state.db, user_id, &sealed).await? {
        return Err(AppError::two_factor_already_enabled());
    }
    let account = user.email.clone();
    let enrollment = tokio::task::spawn_blocking(move || totp::enrollment(&secret, &account))
        .await
        .map_err(anyhow::Error::from)??;
    Ok(Enrollment {
        secret: enrollment.secret_base32,
        otpauth_url: enrollment.otpauth_url,
        qr_code_png: enrollment.qr_code_png,
    })
}

fn unix_now() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// True when `code` is a current TOTP code of the user not used before; records its use.
async fn accept_totp(state: &AppState, user: &UserRow, code: &str) -> AppResult<bool> {
    let Some(sealed) = &user.totp_secret else {
        return Ok(false);
    };
    let secret = crypto::open(&state.config.totp_encryption_key, sealed)?;
    let Some(step) = totp::check(&secret, code, unix_now()) else {
        return Ok(false);
    };
    Ok(repo::users::accept_totp_step(&state.db, user.id, step as i64).await?)
}

async fn accept_recovery_code(state: &AppState, user: &UserRow, code: &str) -> AppResult<bool> {
    let normalized = totp::normalize_recovery_code(code);
    if normalized.len() != 10 {
        return Ok(false);
    }
    let hash = crypto::token_hash(&normalized);
    Ok(repo::users::use_recovery_code(&state.db, user.id, &hash).await?)
}

/// Confirms enrolment with the first good code; returns ten recovery codes (shown once).
pub async fn confirm_two_factor(
    state: &AppState,
    user_id: Uuid,
    code: &str,
) -> AppResult<Vec<String>> {
    let user = current_user(state, user_id).await?;
    if user.two_factor_enabled {
        return Err(AppError::two_factor_already_enabled());
    }
    if user.totp_secret.is_none() {
        return Err(AppError::conflict(
            "two_factor_not_started",
            "Call POST /auth/2fa/enable first.",
        ));
    }
    if !accept_totp(state, &user, code).await? {
        return Err(AppError::invalid_code());
    }
    let codes = totp::recovery_codes();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| crypto::token_hash(&totp::normalize_recovery_code(c)))
        .collect();
    let mut tx = state.db.begin().await?;
    if !repo::users::set_two_factor(&mut *tx, user_id, true).await? {
        return Err(AppError::two_factor_already_enabled());
    }
    repo::users::replace_recovery_codes(&mut tx, user_id, &hashes).await?;
    tx.commit().await?;
    refresh_two_factor_gauge(state).await;
    Ok(codes)
}

/// Re-checks who is at the keyboard before a sensitive change (the payout bank account): the
/// password (403 `invalid_password`), and a current TOTP or recovery code when 2FA is on
/// (422 `invalid_code`). A stolen access token alone is not enough.
pub async fn confirm_identity(
    state: &AppState,
    user_id: Uuid,
    password_attempt: Option<String>,
    code: Option<&str>,
) -> AppResult<UserRow> {
    let user = current_user(state, user_id).await?;
    // The login lock counts these too: a stolen token must not become a password oracle.
    rate_limit::check_account_lock(&state.redis, &user.email).await?;
    let Some(attempt) = password_attempt else {
        return Err(AppError::validation(
            "password",
            "is required to change the payout bank account",
        ));
    };
    if !password::verify_blocking(attempt, Some(user.password_hash.clone())).await {
        rate_limit::record_login_failure(&state.redis, &user.email).await?;
        return Err(AppError::invalid_password());
    }
    if user.two_factor_enabled {
        let ok = match code {
            Some(code) => {
                accept_totp(state, &user, code).await?
                    || accept_recovery_code(state, &user, code).await?
            }
            None => false,
        };
        if !ok {
            return Err(AppError::invalid_code());
        }
    }
    Ok(user)
}

pub async fn disable_two_factor(state: &AppState, user_id: Uuid, code: &str) -> AppResult<()> {
    let user = current_user(state, user_id).await?;
    if !user.two_factor_enabled {
        return Err(AppError::conflict(
            "two_factor_not_enabled",
            "Two-factor authentication is not on.",
        ));
    }
    let ok =
        accept_totp(state, &user, code).await? || accept_recovery_code(state, &user, code).await?;
    if !ok {
        return Err(AppError::invalid_code());
    }
    let mut tx = state.db.begin().await?;
    repo::users::set_two_factor(&mut *tx, user_id, false).await?;
    repo::users::replace_recovery_codes(&mut tx, user_id, &[]).await?;
    tx.commit().await?;
    refresh_two_factor_gauge(state).await;
    Ok(())
}

/// Finishes a two-factor login: the challenge from `login` plus a current code or an unused
/// recovery code. The challenge is single use, and voided after five wrong codes.
pub async fn verify_login_challenge(
    state: &AppState,
    challenge_token: &str,
    code: &str,
) -> AppResult<Session> {
    let invalid = AppError::invalid_login_code;
    let key = challenge_key(state, challenge_token);
    let mut conn = state.redis.conn();
    let user_id: Option<String> = conn.get(&key).await?;
    let user_id = user_id
        .and_then(|s| Uuid::parse_str(&s).ok())
        .ok_or_else(invalid)?;
    let user = repo::users::find_by_id(&state.db, user_id)
        .await?
        .ok_or_else(invalid)?;
    let ok =
        accept_totp(state, &user, code).await? || accept_recovery_code(state, &user, code).await?;
    if !ok {
        let failures_key = format!("{key}:failures");
        let (failures,): (i64,) = redis::pipe()
            .atomic()
            .incr(&failures_key, 1i64)
            .expire(&failures_key, CHALLENGE_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        if failures >= CHALLENGE_MAX_FAILURES {
            let _: () = conn.del(&key).await?;
        }
        login_metric("invalid_code");
        return Err(invalid());
    }
    // Single use: of two requests racing with one challenge, only the one that deletes it wins.
    let deleted: i64 = conn.del(&key).await?;
    if deleted != 1 {
        return Err(invalid());
    }
    login_metric("success");
    issue_session(state, user)
}

pub async fn refresh_two_factor_gauge(state: &AppState) {
    if let Ok(n) = repo::users::count_two_factor_enabled(&state.db).await {
        metrics::gauge!("ticketing_two_factor_enabled_users").set(n as f64);
    }
}

fn reset_metric(stage: &'static str) {
    metrics::counter!("ticketing_password_resets_total", "stage" => stage).increment(1);
}

/// `/auth/password/reset` and `/resend-otp`: mails a new OTP when the email has an account.
/// `strict` (resend) answers 429 inside the 60 s gap; the first request answers 202 anyway,
/// but neither mails twice within the gap.
pub async fn start_password_reset(
    state: &AppState,
    raw_email: &str,
    strict: bool,
) -> AppResult<()> {
    let Ok(email) = EmailAddress::parse(raw_email) else {
        return Ok(());
    };
    if let Some(wait) =
        rate_limit::claim_otp_mail(&state.redis, email.as_str(), OTP_RESEND_GAP).await?
    {
        if strict {
            return Err(AppError::RateLimited {
                code: "rate_limited",
                retry_after: wait,
            });
        }
        return Ok(());
    }
    let Some(user) = repo::users::find_by_email(&state.db, email.as_str()).await? else {
        return Ok(());
    };
    let otp = crypto::random_digits(6);
    let otp_hash = crypto::keyed_hash(&otp_key(state), &otp);
    let reset_id = Uuid::now_v7();
    let expires = state.clock.now() + OTP_TTL;
    let mut tx = state.db.begin().await?;
    repo::password_resets::replace_open(&mut tx, reset_id, user.id, &otp_hash, expires).await?;
    tx.commit().await?;
    // The OTP exists only in this job until it is mailed; if Redis refuses it the client is
    // told (503) and can ask again.
    state
        .queues
        .send_mail(notifications::password_reset_otp(
            reset_id,
            email.as_str(),
            &user.first_name,
            &otp,
        ))
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    reset_metric("requested");
    Ok(())
}

/// The OTP HMAC key: derived from the signing secret for this one purpose, so a reset code's
/// hash never equals anything computed with the JWT key itself.
fn otp_key(state: &AppState) -> Vec<u8> {
    crypto::keyed_hash(
        state.config.jwt_secret.expose_secret().as_bytes(),
        "password-otp-key",
    )
    .into_bytes()
}

/// Checks the OTP; a good one becomes a single-use reset token valid 15 minutes.
pub async fn verify_reset_otp(state: &AppState, raw_email: &str, otp: &str) -> AppResult<String> {
    let invalid = || AppError::bad_request("invalid_otp", "The code is not valid.");
    let expired =
        || AppError::bad_request("otp_expired", "The code has expired; ask for a new one.");
    let email = EmailAddress::parse(raw_email).map_err(|_| invalid())?;
    let user = repo::users::find_by_email(&state.db, email.as_str())
        .await?
        .ok_or_else(invalid)?;
    let (reset, open) = repo::password_resets::latest_for_user(&state.db, user.id)
        .await?
        .ok_or_else(invalid)?;
    if !open {
        // Voided by wrong tries, replaced, or already used.
        return Err(if reset.failed_attempts >= OTP_MAX_FAILURES {
            expired()
        } else {
            invalid()
        });
    }
    if reset.otp_expires_at <= state.clock.now() {
        return Err(expired());
    }
    let candidate = crypto::keyed_hash(&otp_key(state), otp.trim());
    if !crate::security::signing::constant_time_eq(candidate.as_bytes(), reset.otp_hash.as_bytes())
    {
        reset_metric("failed");
        return match repo::password_resets::record_failure(&state.db, reset.id, OTP_MAX_FAILURES)
            .await?
        {
            Some(n) if n < OTP_MAX_FAILURES => Err(invalid()),
            // The try that voided it, or it was voided concurrently.
            _ => Err(expired()),
        };
    }
    let token = crypto::random_token(32);
    let issued = repo::password_resets::issue_token(
        &state.db,
        reset.id,
        &crypto::token_hash(&token),
        state.clock.now() + RESET_TOKEN_TTL,
    )
    .await?;
    if !issued {
        return Err(expired());
    }
    reset_metric("verified");
    Ok(token)
}

/// Sets the new password with a reset token (once), and revokes every session.
pub async fn complete_password_reset(
    state: &AppState,
    reset_token: &str,
    new_password: String,
) -> AppResult<()> {
    let hash = password::hash_blocking(new_password).await?;
    let mut tx = state.db.begin().await?;
    let user_id = repo::password_resets::consume_token(&mut *tx, &crypto::token_hash(reset_token))
        .await?
        .ok_or_else(|| {
            AppError::bad_request("invalid_reset_token", "The reset token is invalid or used.")
        })?;
    forget_user(state, user_id).await;
    repo::users::set_password(&mut *tx, user_id, &hash).await?;
    tx.commit().await?;
    forget_user(state, user_id).await;
    reset_metric("completed");
    tracing::info!(%user_id, "password reset; all sessions revoked");
    Ok(())
}
