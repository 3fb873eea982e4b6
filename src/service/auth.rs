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
    memo::{Change, TokenSeen},
    repo::{self, users::UserRow},
    security::{crypto, jwt::Claims, password, totp},
    service::{
        notifications,
        rate_limit::{self, Failure},
    },
    state::AppState,
};

/// How long a login's two-factor challenge lives.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one challenge tolerates before it is voided.
const CHALLENGE_MAX_FAILURES: i64 = 5;
pub const OTP_TTL: Duration = Duration::from_secs(10 * 60);
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

/// Argon2 through this instance's slots: saturated is 503 `service_unavailable` (with
/// `Retry-After`), at once rather than after a long queue.
pub async fn hash_password(state: &AppState, password: String) -> AppResult<String> {
    state.passwords.hash(password).await.map_err(password_error)
}

/// `phc: None` checks against a dummy hash (same cost) and is false.
pub async fn check_password(
    state: &AppState,
    attempt: String,
    phc: Option<String>,
) -> AppResult<bool> {
    state
        .passwords
        .verify(attempt, phc)
        .await
        .map_err(password_error)
}

fn password_error(e: password::PasswordError) -> AppError {
    match e {
        password::PasswordError::Saturated => {
            AppError::Unavailable("password hashing is saturated".into())
        }
        password::PasswordError::Failed(e) => AppError::Internal(e),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// The password of a signed-in user, re-checked before a sensitive change (account deletion,
/// the payout bank account): at most `PASSWORD_CHECKS_PER_USER_PER_HOUR` checks (429
/// `rate_limited`), refused while the account is locked, and a wrong one counts toward the
/// login lock — a stolen token must be neither a password oracle nor a way to keep the
/// hashing slots busy.
pub async fn check_user_password(
    state: &AppState,
    user: &UserRow,
    attempt: String,
) -> AppResult<()> {
    rate_limit::check_account_lock(&state.redis, &user.email).await?;
    rate_limit::hit(
        &state.redis,
        &format!("password-check:{}", user.id),
        state.config.limits.password_checks_per_user_per_hour,
        HOUR,
    )
    .await?;
    if !check_password(state, attempt, Some(user.password_hash.clone())).await? {
        rate_limit::record_login_failure(&state.redis, &user.email).await?;
        return Err(AppError::invalid_password());
    }
    Ok(())
}

fn issue_session(state: &AppState, user: UserRow) -> AppResult<Session> {
    let (access_token, _) = state.jwt.issue(user.id, user.token_version)?;
    Ok(Session { user, access_token })
}

#[tracing::instrument(skip_all)]
pub async fn signup(state: &AppState, input: NewUser) -> AppResult<Session> {
    let hash = hash_password(state, input.password).await?;
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
    if let Err(e) =
        crate::service::mail::enqueue(state, &notifications::welcome(id, email, &first_name)).await
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
    let ok = check_password(
        state,
        password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            rate_limit::record_login_failure(&state.redis, &key).await?;
            login_metric("invalid_credentials");
            return Err(invalid_credentials());
        }
    };
    rate_limit::clear_failures(&state.redis, Failure::Password, &key).await?;
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

/// How long past a token's expiry its revocation is kept: beyond the JWT leeway (5 s) and
/// any clock difference between instances.
const REVOCATION_MARGIN_SECS: i64 = 60;

/// Revokes this token (only this one) until it would have expired anyway, in PostgreSQL (the
/// truth: the fallback path and a refill read it) and then in Redis (what every instance's
/// hot path reads). The logout is done once PostgreSQL holds it. The row says `in_redis =
/// false` until the Redis copy is confirmed, so whatever happens to Redis in between (the
/// write fails, or Redis restarts and is refilled before the row was visible), the sweeper
/// copies it (`copy_pending_revocations`): an instance on the Redis path accepts the token
/// for at most a sweep interval more.
pub async fn logout(state: &AppState, claims: &Claims) -> AppResult<()> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let expires = claims.exp.max(now) + REVOCATION_MARGIN_SECS;
    let expires_at = OffsetDateTime::from_unix_timestamp(expires)
        .map_err(|e| anyhow::anyhow!("token expiry out of range: {e}"))?;
    repo::users::revoke_token(&state.db, claims.jti, claims.sub, expires_at).await?;
    let mut conn = state.redis.conn();
    let copied = conn
        .set_ex::<_, _, ()>(revoked_key(state, claims.jti), 1, (expires - now) as u64)
        .await;
    match copied {
        Ok(()) => {
            if let Err(e) = repo::users::mark_revocations_in_redis(&state.db, &[claims.jti]).await {
                tracing::warn!(error = %e, "revocation copied but not marked; copied again");
            }
        }
        Err(e) => tracing::warn!(error = %e, "revocation not in Redis yet; the sweeper copies it"),
    }
    publish_revocation(state, claims.sub).await;
    Ok(())
}

/// Present while Redis holds every unexpired revocation of `revoked_tokens`. Redis keeps
/// nothing on disk: after a restart the marker is gone, and until a refill puts the
/// revocations and the marker back, authentication asks PostgreSQL.
fn revocations_loaded_key(state: &AppState) -> String {
    state.redis.key("revocations:loaded")
}

/// Refills Redis when its revocations marker is gone, and copies the revocations whose
/// logout could not reach Redis. Every sweep, on every instance.
pub async fn ensure_revocations(state: &AppState) -> AppResult<()> {
    let mut conn = state.redis.conn();
    let loaded: bool = conn.exists(revocations_loaded_key(state)).await?;
    if !loaded {
        refill_revocations(state).await?;
    }
    copy_pending_revocations(state).await
}

/// Copies revocations recorded while Redis could not take them (`in_redis = false`).
async fn copy_pending_revocations(state: &AppState) -> AppResult<()> {
    let pending = repo::users::revocations_not_in_redis(&state.db, 1_000).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (jti, secs) in &pending {
        pipe.set_ex(revoked_key(state, *jti), 1, *secs as u64)
            .ignore();
    }
    let mut conn = state.redis.conn();
    pipe.query_async::<()>(&mut conn).await?;
    let jtis: Vec<Uuid> = pending.iter().map(|(jti, _)| *jti).collect();
    repo::users::mark_revocations_in_redis(&state.db, &jtis).await?;
    tracing::info!(revocations = jtis.len(), "logouts copied into Redis");
    Ok(())
}

/// Marks the copy complete only while this refill still holds its lock. A Redis that
/// restarted during the copy has lost the lock (and part of the copy): no marker then, and
/// the next refill starts again.
static FINISH_REFILL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
              redis.call('SET', KEYS[2], 1)
              redis.call('DEL', KEYS[1])
              return 1
          end
          return 0",
    )
});

/// Copies the unexpired revocations from PostgreSQL into Redis, then sets the marker. One
/// instance at a time (a short lock in Redis with a value of its own); safe to repeat. A
/// logout during the copy is safe: it writes its own Redis key, or leaves its row for the
/// sweeper.
pub async fn refill_revocations(state: &AppState) -> AppResult<()> {
    let lock = state.redis.key("revocations:refilling");
    let token = Uuid::now_v7().to_string();
    let mut conn = state.redis.conn();
    let won: Option<String> = redis::cmd("SET")
        .arg(&lock)
        .arg(&token)
        .arg("NX")
        .arg("EX")
        .arg(30)
        .query_async(&mut conn)
        .await?;
    if won.is_none() {
        return Ok(());
    }
    let revocations = repo::users::unexpired_revocations(&state.db).await?;
    if !revocations.is_empty() {
        let mut pipe = redis::pipe();
        for (jti, secs) in &revocations {
            pipe.set_ex(revoked_key(state, *jti), 1, *secs as u64)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let done: i64 = FINISH_REFILL
        .key(&lock)
        .key(revocations_loaded_key(state))
        .arg(&token)
        .invoke_async(&mut conn)
        .await?;
    tracing::info!(
        revocations = revocations.len(),
        complete = done == 1,
        "Redis refilled with the logged-out tokens"
    );
    Ok(())
}

fn user_cache_key(state: &AppState, user_id: Uuid) -> String {
    state.redis.key(format!("user:{user_id}"))
}

fn user_generation_key(state: &AppState, user_id: Uuid) -> String {
    state.redis.key(format!("user-gen:{user_id}"))
}

/// How long a user's token version stays cached (it is also dropped on every change).
const USER_CACHE_SECS: u64 = 3600;

/// Drops the cached token version of a user and bumps the user's cache generation. Called
/// before and after the transaction that bumps the version (password reset) or deletes the
/// user: the first so no request re-reads a stale copy meanwhile from an old cache entry,
/// the second so a copy re-read from the not-yet-committed state is gone once the change is
/// visible. The generation closes the remaining gap: a request that read the old version
/// from PostgreSQL before the commit cannot write it back after the second drop
/// (`fill_version_cache` writes only while the generation it started with is current).
pub async fn forget_user(state: &AppState, user_id: Uuid) {
    let generation = user_generation_key(state, user_id);
    let mut conn = state.redis.conn();
    let dropped = redis::pipe()
        .atomic()
        .del(user_cache_key(state, user_id))
        .ignore()
        .incr(&generation, 1)
        .ignore()
        .expire(&generation, (2 * USER_CACHE_SECS) as i64)
        .ignore()
        .query_async::<()>(&mut conn)
        .await;
    if let Err(e) = dropped {
        tracing::error!(error = %e, %user_id, "could not drop a cached token version");
    }
    crate::hub::announce(&state.hub, &state.redis, Change::User(user_id)).await;
}

/// Tells every instance (its websockets and its memo of tokens seen valid) that this user's
/// tokens may have been revoked: a reset, a deletion or a logout, already written to Redis
/// and PostgreSQL. Then waits out the memo's age: any copy of a token's checks an instance
/// still holds was read before that write and has expired by then, so the revocation holds on
/// every instance by the time it is answered (API.md), whatever became of the message.
/// Revocations are rare; the second is the price of no Redis trip on every other request.
async fn publish_revocation(state: &AppState, user_id: Uuid) {
    let written = tokio::time::Instant::now();
    crate::hub::announce(&state.hub, &state.redis, Change::User(user_id)).await;
    tokio::time::sleep_until(written + crate::memo::MAX_AGE).await;
}

/// `forget_user` once the change is committed: answered only when the old tokens are refused
/// on every instance (`publish_revocation`).
pub async fn forget_user_everywhere(state: &AppState, user_id: Uuid) {
    let written = tokio::time::Instant::now();
    forget_user(state, user_id).await;
    tokio::time::sleep_until(written + crate::memo::MAX_AGE).await;
}

/// A token version read from PostgreSQL on a cache miss, with the cache generation seen
/// before the read.
pub struct VersionRead {
    user_id: Uuid,
    generation: Option<String>,
    pub current: Option<(i32, String)>,
}

/// The first half of `authenticate`'s miss path on its own: the generation, then the row
/// (`authenticate` reads the generation in its MGET). The race test uses it to hold a read
/// across a password reset.
pub async fn read_version(state: &AppState, user_id: Uuid) -> AppResult<VersionRead> {
    let mut conn = state.redis.conn();
    let generation: Option<String> = conn.get(user_generation_key(state, user_id)).await?;
    let current = repo::users::token_version(&state.db, user_id).await?;
    Ok(VersionRead {
        user_id,
        generation,
        current,
    })
}

/// The miss path of `authenticate`: caches what was read, only if no `forget_user` ran since
/// the generation (read in the same MGET, before the row) was read.
pub async fn fill_version_cache(state: &AppState, read: &VersionRead) {
    let Some((version, email)) = &read.current else {
        return;
    };
    // GET and SET in one script, so no forget can fall between the check and the write.
    static FILL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then
                  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
              end
              return 0",
        )
    });
    let mut conn = state.redis.conn();
    let filled: Result<i64, _> = FILL
        .key(user_generation_key(state, read.user_id))
        .key(user_cache_key(state, read.user_id))
        .arg(read.generation.as_deref().unwrap_or(""))
        .arg(format!("{version}\n{email}"))
        .arg(USER_CACHE_SECS)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = filled {
        tracing::debug!(error = %e, "token version not cached");
    }
}

/// How long authentication waits for Redis before it asks PostgreSQL instead.
const REDIS_AUTH_BUDGET: Duration = Duration::from_millis(250);

/// What one Redis round trip says about a token.
struct Cached {
    revoked: bool,
    /// `version\nemail`, when cached.
    user: Option<String>,
    /// Redis holds every revocation (a restarted Redis does not, until refilled).
    loaded: bool,
    /// The user's cache generation, for a fill after a miss (`fill_version_cache`).
    generation: Option<String>,
}

/// Resolves a bearer token to its user: signature and expiry, not revoked, the user still
/// exists, and the token's version is current (a password change bumps it).
///
/// One Redis round trip answers "revoked?", "current version?" (the version and email are
/// cached per user) and "does Redis hold every revocation?", so an authenticated request
/// usually costs PostgreSQL nothing. When Redis cannot answer (down, slower than
/// `REDIS_AUTH_BUDGET`, or restarted empty) the same questions go to PostgreSQL, which holds
/// the truth: the door keeps admitting through a Redis outage. Only Redis's own failures
/// send later requests straight to PostgreSQL (`kv::Redis::failed`): a slow database must not
/// move more load onto itself.
///
/// A token that passed within the last second on this instance passes again without either
/// (`memo::Memo::tokens`): every revocation is announced to every instance, which drops the
/// user's tokens at once, and a lost announcement lets a revoked token pass here for at most
/// that second.
pub async fn authenticate(state: &AppState, token: &str) -> AppResult<(Claims, String)> {
    let claims = state
        .jwt
        .verify(token)
        .ok_or_else(|| AppError::not_authenticated("A valid access token is required."))?;
    let memo = &state.hub.memo.tokens;
    if let Some(seen) = memo.get(&claims.jti)
        && seen.user_id == claims.sub
        && seen.version == claims.ver
    {
        return Ok((claims, seen.email));
    }
    let ticket = memo.ticket();
    let email = check_token(state, &claims).await?;
    let seen = TokenSeen {
        user_id: claims.sub,
        version: claims.ver,
        email: email.clone(),
    };
    memo.put(ticket, claims.jti, seen);
    Ok((claims, email))
}

/// Every check of `authenticate` past the signature, from Redis or PostgreSQL: the user's
/// email when the token passes.
async fn check_token(state: &AppState, claims: &Claims) -> AppResult<String> {
    let unauthorized = || AppError::not_authenticated("A valid access token is required.");
    let current = |found: Option<(i32, String)>| match found {
        Some((v, email)) if v == claims.ver => Ok(email),
        _ => Err(unauthorized()),
    };
    if state.redis.worth_trying() {
        match tokio::time::timeout(REDIS_AUTH_BUDGET, cached(state, claims)).await {
            Ok(Ok(c)) if c.revoked => return Err(unauthorized()),
            Ok(Ok(c)) if c.loaded => {
                if let Some((v, email)) = c.user.as_deref().and_then(|u| u.split_once('\n')) {
                    return current(v.parse::<i32>().ok().map(|v| (v, email.to_owned())));
                }
                let read = VersionRead {
                    user_id: claims.sub,
                    generation: c.generation,
                    current: repo::users::token_version(&state.db, claims.sub).await?,
                };
                fill_version_cache(state, &read).await;
                return current(read.current);
            }
            // Redis answered but lost its revocations: refilled in the background (at most
            // one attempt a second per instance), PostgreSQL answers meanwhile.
            Ok(Ok(_)) => {
                if state.redis.once_a_second() {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = refill_revocations(&state).await {
                            tracing::warn!(error = %e, "revocations not refilled");
                        }
                    });
                }
            }
            Ok(Err(e)) => {
                state.redis.failed();
                tracing::warn!(error = %e, "Redis failed; authenticating from PostgreSQL");
            }
            Err(_) => {
                state.redis.failed();
                tracing::warn!("Redis too slow; authenticating from PostgreSQL");
            }
        }
    }
    metrics::counter!("ticketing_auth_fallbacks_total").increment(1);
    match repo::users::auth_state(&state.db, claims.sub, claims.jti).await? {
        Some((v, email, false)) => current(Some((v, email))),
        _ => Err(unauthorized()),
    }
}

/// The Redis half of `authenticate`: one MGET.
async fn cached(state: &AppState, claims: &Claims) -> redis::RedisResult<Cached> {
    let mut conn = state.redis.conn();
    let (revoked, user, loaded, generation): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = redis::cmd("MGET")
        .arg(revoked_key(state, claims.jti))
        .arg(user_cache_key(state, claims.sub))
        .arg(revocations_loaded_key(state))
        .arg(user_generation_key(state, claims.sub))
        .query_async(&mut conn)
        .await?;
    Ok(Cached {
        revoked: revoked.is_some(),
        user,
        loaded: loaded.is_some(),
        generation,
    })
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
    // Codes issued before they were keyed are stored as a plain SHA-256; they stay usable
    // until the user's next enrolment replaces them.
    let forms = [
        recovery_code_hash(state, &normalized),
        crypto::token_hash(&normalized),
    ];
    Ok(repo::users::use_recovery_code(&state.db, user.id, &forms).await?)
}

/// Recovery codes carry ~50 bits: a plain hash of one could be brute-forced from a database
/// dump. They are stored as an HMAC under a key derived from `TOTP_ENCRYPTION_KEY`, which
/// never lives in the database.
fn recovery_code_hash(state: &AppState, normalized: &str) -> String {
    let key = crypto::keyed_hash(&state.config.totp_encryption_key, "recovery-code-key");
    format!("k1:{}", crypto::keyed_hash(key.as_bytes(), normalized))
}

/// A current TOTP code or an unused recovery code. A wrong one counts toward the account's
/// lock (`Failure::SecondFactor`), wherever it is tried: at login, disabling 2FA, or
/// confirming a bank account change.
///
/// The attempt is counted before the code is checked (`rate_limit::reserve_attempt`), so a
/// burst of parallel guesses gets ten checks at most, not one each; a locked account's codes
/// are not checked at all.
async fn accept_second_factor(state: &AppState, user: &UserRow, code: &str) -> AppResult<bool> {
    let redis = &state.redis;
    rate_limit::check_account_lock(redis, &user.email).await?;
    let attempt = rate_limit::reserve_attempt(redis, Failure::SecondFactor, &user.email).await?;
    if accept_totp(state, user, code).await? || accept_recovery_code(state, user, code).await? {
        rate_limit::clear_failures(redis, Failure::SecondFactor, &user.email).await?;
        return Ok(true);
    }
    rate_limit::lock_if_spent(redis, &user.email, attempt).await?;
    Ok(false)
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
        .map(|c| recovery_code_hash(state, &totp::normalize_recovery_code(c)))
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
    let Some(attempt) = password_attempt else {
        return Err(AppError::validation(
            "password",
            "is required to change the payout bank account",
        ));
    };
    check_user_password(state, &user, attempt).await?;
    if user.two_factor_enabled {
        let ok = match code {
            Some(code) => accept_second_factor(state, &user, code).await?,
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
    if !accept_second_factor(state, &user, code).await? {
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
    let accepted = accept_second_factor(state, &user, code)
        .await
        .inspect_err(|e| {
            if e.code() == "account_locked" {
                login_metric("locked");
            }
        })?;
    if !accepted {
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

const DAY: Duration = Duration::from_secs(86_400);

/// `/auth/password/reset` and `/resend-otp`: mails a new OTP when the email has an account.
/// `strict` (resend) answers 429 inside the 60 s gap or past `RESET_OTP_MAILS_PER_DAY`; the
/// first request answers 202 anyway, but neither mails past those limits. Every rule is
/// applied by email, whether or not it has an account.
pub async fn start_password_reset(
    state: &AppState,
    raw_email: &str,
    strict: bool,
) -> AppResult<()> {
    let Ok(email) = EmailAddress::parse(raw_email) else {
        return Ok(());
    };
    let refused = |wait| {
        if strict {
            Err(AppError::RateLimited {
                code: "rate_limited",
                retry_after: wait,
            })
        } else {
            Ok(())
        }
    };
    let gap = state.config.limits.reset_resend_gap;
    if !gap.is_zero()
        && let Some(wait) = rate_limit::claim_otp_mail(&state.redis, email.as_str(), gap).await?
    {
        return refused(wait);
    }
    // One resend a minute alone would allow ~1,440 mails (and 5 guesses each) a day.
    if let Err(AppError::RateLimited { retry_after, .. }) = rate_limit::hit(
        &state.redis,
        &format!("otp-mails:{}", email.as_str()),
        state.config.limits.reset_mails_per_day,
        DAY,
    )
    .await
    {
        reset_metric("refused_daily_cap");
        return refused(retry_after);
    }
    let Some(user) = repo::users::find_by_email(&state.db, email.as_str()).await? else {
        // No account: remember that a code was "sent", so that verify-otp answers this email
        // exactly as it would a real one (`invalid_otp`, then `otp_expired`).
        phantom_reset(state, email.as_str()).await?;
        return Ok(());
    };
    let otp = crypto::random_digits(6);
    let otp_hash = crypto::keyed_hash(&otp_key(state), &otp);
    let reset_id = Uuid::now_v7();
    let expires = state.clock.now() + OTP_TTL;
    let mail = notifications::password_reset_otp(reset_id, email.as_str(), &user.first_name, &otp);
    // The code and its mail are stored together: the OTP exists in plain text only in the
    // outbox row, until it is sent.
    let mut tx = state.db.begin().await?;
    repo::password_resets::replace_open(&mut tx, reset_id, user.id, &otp_hash, expires).await?;
    crate::service::mail::enqueue_in(&mut *tx, &mail).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    reset_metric("requested");
    Ok(())
}

// ---- resets of emails without an account ----
//
// A reset for an unknown email mails nothing, but verify-otp must still answer it like a
// known one: `invalid_otp` for each wrong try, `otp_expired` from the fifth on or once ten
// minutes have passed. A Redis record per email ("a code went out at T, N wrong tries")
// plays the reset row's part; it outlives the OTP by a week, as a real reset row would stay.

fn phantom_key(state: &AppState, email: &str) -> String {
    state.redis.key(format!("otp-phantom:{email}"))
}

const PHANTOM_TTL_SECS: u64 = 7 * 86_400;

async fn phantom_reset(state: &AppState, email: &str) -> AppResult<()> {
    let key = phantom_key(state, email);
    let mut conn = state.redis.conn();
    redis::pipe()
        .atomic()
        .hset(&key, "sent_at", state.clock.now().unix_timestamp())
        .hset(&key, "failures", 0)
        .expire(&key, PHANTOM_TTL_SECS as i64)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// A wrong try at an unknown email's "code": `invalid_otp` or `otp_expired`, as for a real one.
async fn phantom_attempt(state: &AppState, email: &str) -> AppResult<AppError> {
    let key = phantom_key(state, email);
    let mut conn = state.redis.conn();
    let sent_at: Option<i64> = conn.hget(&key, "sent_at").await?;
    let Some(sent_at) = sent_at else {
        return Ok(invalid_otp());
    };
    let failures: i64 = conn
        .hget::<_, _, Option<i64>>(&key, "failures")
        .await?
        .unwrap_or(0);
    if failures >= i64::from(OTP_MAX_FAILURES) {
        return Ok(otp_expired());
    }
    if sent_at + OTP_TTL.as_secs() as i64 <= state.clock.now().unix_timestamp() {
        return Ok(otp_expired());
    }
    let failures: i64 = conn.hincr(&key, "failures", 1).await?;
    Ok(if failures < i64::from(OTP_MAX_FAILURES) {
        invalid_otp()
    } else {
        otp_expired()
    })
}

fn invalid_otp() -> AppError {
    AppError::bad_request("invalid_otp", "The code is not valid.")
}

fn otp_expired() -> AppError {
    AppError::bad_request("otp_expired", "The code has expired; ask for a new one.")
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

/// The user's latest reset, as verify-otp may consider it: one older than an unknown
/// email's stand-in record lives (`PHANTOM_TTL_SECS`) counts as none, so an old abandoned
/// reset does not set a known email apart from an unknown one.
async fn latest_reset(
    state: &AppState,
    user_id: Uuid,
) -> AppResult<Option<(repo::password_resets::OpenReset, bool)>> {
    let latest = repo::password_resets::latest_for_user(&state.db, user_id).await?;
    let horizon = state.clock.now() - OTP_TTL - Duration::from_secs(PHANTOM_TTL_SECS);
    Ok(latest.filter(|(reset, _)| reset.otp_expires_at > horizon))
}

/// Checks the OTP; a good one becomes a single-use reset token valid 15 minutes. Past
/// `RESET_OTP_WRONG_CODES_PER_DAY` wrong codes for an email (across every code mailed to
/// it), no code is accepted until the day is over: `otp_expired`.
pub async fn verify_reset_otp(state: &AppState, raw_email: &str, otp: &str) -> AppResult<String> {
    let email = EmailAddress::parse(raw_email).map_err(|_| invalid_otp())?;
    let wrong_codes = format!("otp-wrong:{}", email.as_str());
    let cap = state.config.limits.reset_wrong_codes_per_day;
    if cap > 0 && rate_limit::peek(&state.redis, &wrong_codes, DAY).await? >= u64::from(cap) {
        reset_metric("refused_wrong_cap");
        return Err(otp_expired());
    }
    let count_wrong = || async {
        // Counting only (the cap was checked above): its refusal is not this answer.
        let _ = rate_limit::hit(&state.redis, &wrong_codes, u32::MAX, DAY).await;
    };
    let Some(user) = repo::users::find_by_email(&state.db, email.as_str()).await? else {
        count_wrong().await;
        return Err(phantom_attempt(state, email.as_str()).await?);
    };
    // Every answer but success counts toward the daily cap, on this path as on the
    // unknown-email one, so the cap cannot tell them apart either.
    let latest = latest_reset(state, user.id).await?;
    let Some((reset, open)) = latest else {
        count_wrong().await;
        return Err(invalid_otp());
    };
    if !open {
        // Voided by wrong tries, replaced, or already used.
        count_wrong().await;
        return Err(if reset.failed_attempts >= OTP_MAX_FAILURES {
            otp_expired()
        } else {
            invalid_otp()
        });
    }
    if reset.otp_expires_at <= state.clock.now() {
        count_wrong().await;
        return Err(otp_expired());
    }
    let candidate = crypto::keyed_hash(&otp_key(state), otp.trim());
    if !crate::security::signing::constant_time_eq(candidate.as_bytes(), reset.otp_hash.as_bytes())
    {
        reset_metric("failed");
        count_wrong().await;
        return match repo::password_resets::record_failure(&state.db, reset.id, OTP_MAX_FAILURES)
            .await?
        {
            Some(n) if n < OTP_MAX_FAILURES => Err(invalid_otp()),
            // The try that voided it, or it was voided concurrently.
            _ => Err(otp_expired()),
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
        return Err(otp_expired());
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
    let hash = hash_password(state, new_password).await?;
    let mut tx = state.db.begin().await?;
    let user_id = repo::password_resets::consume_token(&mut *tx, &crypto::token_hash(reset_token))
        .await?
        .ok_or_else(|| {
            AppError::bad_request("invalid_reset_token", "The reset token is invalid or used.")
        })?;
    forget_user(state, user_id).await;
    repo::users::set_password(&mut *tx, user_id, &hash).await?;
    tx.commit().await?;
    forget_user_everywhere(state, user_id).await;
    reset_metric("completed");
    tracing::info!(%user_id, "password reset; all sessions revoked");
    Ok(())
}
