//! `/auth/*`: signup, login, logout, two-factor, password reset. Every route here is rate
//! limited per client address (`AUTH_RATE_LIMIT_PER_MINUTE`), in Redis so the limit holds
//! across instances.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    domain::email::EmailAddress,
    error::{AppError, AppResult},
    http::extract::{
        AuthUser, Checks, MaybeAuthUser, Validate, ValidatedJson, address_key, client_ip,
    },
    http::responses::UserResponse,
    service::{auth, rate_limit},
    state::AppState,
};

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(enable_two_factor))
        .routes(routes!(verify_two_factor))
        .routes(routes!(disable_two_factor))
        .routes(routes!(request_password_reset))
        .routes(routes!(resend_password_otp))
        .routes(routes!(verify_password_otp))
        .routes(routes!(set_new_password))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            limit_per_client,
        ))
}

/// Counts the request against its client address's budget for `/auth/*`.
async fn limit_per_client(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = client_ip(req.headers(), peer, state.config.trust_forwarded_for);
    let name = format!(
        "auth:{}",
        ip.map(address_key).unwrap_or_else(|| "unknown".into())
    );
    match rate_limit::hit(
        &state.redis,
        &name,
        state.config.auth_rate_limit_per_minute,
        state.config.auth_rate_limit_window,
    )
    .await
    {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub user: UserResponse,
    pub access_token: String,
}

impl From<auth::Session> for SessionResponse {
    fn from(s: auth::Session) -> Self {
        Self {
            user: s.user.into(),
            access_token: s.access_token,
        }
    }
}

fn check_password(checks: &mut Checks, field: &str, password: &str) {
    let n = password.chars().count();
    checks.check((8..=128).contains(&n), field, "must be 8 to 128 characters");
}

fn check_name(checks: &mut Checks, field: &str, name: &str) {
    let n = name.trim().chars().count();
    checks.check((1..=100).contains(&n), field, "must be 1 to 100 characters");
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

impl Validate for SignupRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        let mut c = Checks::new();
        if let Err(msg) = EmailAddress::parse(&self.email) {
            c.check(false, "email", msg);
        }
        check_password(&mut c, "password", &self.password);
        check_name(&mut c, "first_name", &self.first_name);
        check_name(&mut c, "last_name", &self.last_name);
        c.finish()
    }
}

/// Create an account (attendee). The email is trimmed and lower-cased.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, body = SessionResponse),
        (status = 400, description = "Malformed JSON"),
        (status = 409, description = "`email_taken`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`: password hashing saturated (`PASSWORD_HASH_WAIT_MILLIS`), with `Retry-After`"),
    ))]
async fn signup(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<SignupRequest>,
) -> AppResult<(StatusCode, Json<SessionResponse>)> {
    let email = EmailAddress::parse(&body.email).map_err(|m| AppError::validation("email", m))?;
    let session = auth::signup(
        &state,
        auth::NewUser {
            email,
            password: body.password,
            first_name: body.first_name,
            last_name: body.last_name,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl Validate for LoginRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        // Only bounds: a wrong-looking email or password is `invalid_credentials`, like any miss.
        Checks::new()
            .check(self.email.len() <= 320, "email", "is too long")
            .check(self.password.len() <= 1024, "password", "is too long")
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Session(SessionResponse),
    TwoFactor {
        two_factor_required: bool,
        challenge_token: String,
    },
}

/// Log in. With two-factor on, the answer is a `challenge_token` for `/auth/2fa/verify`.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, description = "`invalid_credentials` (same body for unknown email and wrong password)"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`, or `account_locked` after 10 failed logins or 10 wrong 2FA codes (`Retry-After`)"),
        (status = 503, description = "`service_unavailable`: password hashing saturated (`PASSWORD_HASH_WAIT_MILLIS`), with `Retry-After`"),
    ))]
async fn login(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<LoginRequest>,
) -> AppResult<Json<LoginResponse>> {
    Ok(Json(
        match auth::login(&state, &body.email, body.password).await? {
            auth::LoginOutcome::Session(s) => LoginResponse::Session(s.into()),
            auth::LoginOutcome::TwoFactorRequired { challenge_token } => LoginResponse::TwoFactor {
                two_factor_required: true,
                challenge_token,
            },
        },
    ))
}

/// Revoke the presented token, on every instance at once. Other sessions live on.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204),
    ))]
async fn logout(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    auth::logout(&state, &user.claims).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct EnableTwoFactorResponse {
    /// Base32 TOTP secret.
    pub secret: String,
    pub otpauth_url: String,
    /// Base64 PNG of `otpauth_url`.
    pub qr_code_png: String,
}

/// Start two-factor enrolment; it is on only after the first good code.
#[utoipa::path(post, path = "/auth/2fa/enable", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, body = EnableTwoFactorResponse),
        (status = 409, description = "`two_factor_already_enabled`"),
    ))]
async fn enable_two_factor(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<EnableTwoFactorResponse>> {
    let e = auth::enable_two_factor(&state, user.id).await?;
    Ok(Json(EnableTwoFactorResponse {
        secret: e.secret,
        otpauth_url: e.otpauth_url,
        qr_code_png: e.qr_code_png,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyTwoFactorRequest {
    pub code: String,
    /// From `/auth/login`: finishes a login. Without it, a bearer token confirms enrolment.
    pub challenge_token: Option<String>,
}

impl Validate for VerifyTwoFactorRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        Checks::new()
            .check(
                (1..=32).contains(&self.code.len()),
                "code",
                "must be 1 to 32 characters",
            )
            .check(
                self.challenge_token.as_ref().is_none_or(|t| t.len() <= 128),
                "challenge_token",
                "is too long",
            )
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyTwoFactorResponse {
    Confirmed {
        two_factor_enabled: bool,
        recovery_codes: Vec<String>,
    },
    Session(SessionResponse),
}

/// Confirm enrolment (with a bearer token) or finish a login (with `challenge_token`).
#[utoipa::path(post, path = "/auth/2fa/verify", tag = "auth", request_body = VerifyTwoFactorRequest,
    responses(
        (status = 200, body = VerifyTwoFactorResponse),
        (status = 401, description = "login: `invalid_code`; confirm: no token"),
        (status = 409, description = "`two_factor_already_enabled`, `two_factor_not_started`"),
        (status = 422, description = "confirm: `invalid_code`"),
        (status = 429, description = "login: `account_locked` (10 wrong codes count across challenges), or `rate_limited`"),
    ))]
async fn verify_two_factor(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    ValidatedJson(body): ValidatedJson<VerifyTwoFactorRequest>,
) -> AppResult<Json<VerifyTwoFactorResponse>> {
    if let Some(challenge) = &body.challenge_token {
        let session = auth::verify_login_challenge(&state, challenge, &body.code).await?;
        return Ok(Json(VerifyTwoFactorResponse::Session(session.into())));
    }
    let user = user.ok_or_else(|| {
        AppError::not_authenticated(
            "Send a bearer token to confirm, or a challenge_token to log in.",
        )
    })?;
    let recovery_codes = auth::confirm_two_factor(&state, user.id, &body.code).await?;
    Ok(Json(VerifyTwoFactorResponse::Confirmed {
        two_factor_enabled: true,
        recovery_codes,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// A current TOTP code or an unused recovery code.
    pub code: String,
}

impl Validate for CodeRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        Checks::new()
            .check(
                (1..=32).contains(&self.code.len()),
                "code",
                "must be 1 to 32 characters",
            )
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct TwoFactorState {
    pub two_factor_enabled: bool,
}

/// Turn two-factor off with a current code or a recovery code.
#[utoipa::path(post, path = "/auth/2fa/disable", tag = "auth", security(("bearer" = [])), request_body = CodeRequest,
    responses(
        (status = 200, body = TwoFactorState),
        (status = 409, description = "`two_factor_not_enabled`"),
        (status = 422, description = "`invalid_code` (wrong codes count toward the account lock)"),
    ))]
async fn disable_two_factor(
    State(state): State<AppState>,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<CodeRequest>,
) -> AppResult<Json<TwoFactorState>> {
    auth::disable_two_factor(&state, user.id, &body.code).await?;
    Ok(Json(TwoFactorState {
        two_factor_enabled: false,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    pub email: String,
}

impl Validate for EmailRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        Checks::new()
            .check(self.email.len() <= 320, "email", "is too long")
            .finish()
    }
}

/// Mail a 6-digit code (valid 10 minutes) when the email has an account. Always 202.
#[utoipa::path(post, path = "/auth/password/reset", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 202, description = "Accepted, whether or not the email exists"),
        (status = 429, description = "`rate_limited`"),
    ))]
async fn request_password_reset(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<EmailRequest>,
) -> AppResult<StatusCode> {
    auth::start_password_reset(&state, &body.email, false).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Mail a new code, replacing the old; at most one mail per 60 s per email.
#[utoipa::path(post, path = "/auth/password/resend-otp", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 202),
        (status = 429, description = "`rate_limited` within `RESET_OTP_RESEND_GAP_SECONDS` of the last mail or past `RESET_OTP_MAILS_PER_DAY`, with `Retry-After`"),
    ))]
async fn resend_password_otp(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<EmailRequest>,
) -> AppResult<StatusCode> {
    auth::start_password_reset(&state, &body.email, true).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyOtpRequest {
    pub email: String,
    pub otp: String,
}

impl Validate for VerifyOtpRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        Checks::new()
            .check(self.email.len() <= 320, "email", "is too long")
            .check(self.otp.len() <= 16, "otp", "is too long")
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResetTokenResponse {
    /// Single use, valid 15 minutes, for `/auth/password/new`.
    pub reset_token: String,
}

/// Exchange the mailed code for a reset token. Five wrong tries void the code.
#[utoipa::path(post, path = "/auth/password/verify-otp", tag = "auth", request_body = VerifyOtpRequest,
    responses(
        (status = 200, body = ResetTokenResponse),
        (status = 400, description = "`invalid_otp`, `otp_expired` (also past `RESET_OTP_WRONG_CODES_PER_DAY` wrong codes; an unknown email is answered exactly like a known one)"),
        (status = 429),
    ))]
async fn verify_password_otp(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<VerifyOtpRequest>,
) -> AppResult<Json<ResetTokenResponse>> {
    let reset_token = auth::verify_reset_otp(&state, &body.email, &body.otp).await?;
    Ok(Json(ResetTokenResponse { reset_token }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasswordRequest {
    pub reset_token: String,
    pub new_password: String,
}

impl Validate for NewPasswordRequest {
    fn validate(&self, _now: time::OffsetDateTime) -> Result<(), Vec<crate::error::FieldError>> {
        let mut c = Checks::new();
        c.check(self.reset_token.len() <= 128, "reset_token", "is too long");
        check_password(&mut c, "new_password", &self.new_password);
        c.finish()
    }
}

/// Set the new password; every session of the user is revoked.
#[utoipa::path(post, path = "/auth/password/new", tag = "auth", request_body = NewPasswordRequest,
    responses(
        (status = 204),
        (status = 400, description = "`invalid_reset_token`"),
    ))]
async fn set_new_password(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<NewPasswordRequest>,
) -> AppResult<StatusCode> {
    auth::complete_password_reset(&state, &body.reset_token, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}
