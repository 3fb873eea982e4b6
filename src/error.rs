//! `AppError`: every failure a handler can return, rendered as RFC 9457
//! `application/problem+json` with the stable `code` of API.md.
//!
//! Internal causes (database, Redis, providers) are logged with the request id and never sent
//! to the client; the client gets a generic 500/502/503 problem.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub type AppResult<T> = Result<T, AppError>;

/// One invalid field of a 422 answer.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error answer (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, lower snake case code a client can switch on.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// Only for `ticket_already_used`: when the ticket was first scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_in_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("bad request ({code}): {detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Well-formed and valid in shape, but refused (422) with its own code, e.g. `invalid_code`.
    #[error("unprocessable ({code}): {detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("unauthorized ({code})")]
    Unauthorized { code: &'static str, detail: String },
    #[error("forbidden ({code})")]
    Forbidden { code: &'static str, detail: String },
    #[error("not found ({code})")]
    NotFound { code: &'static str, detail: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict ({code}): {detail}")]
    Conflict { code: &'static str, detail: String },
    /// 409 `ticket_already_used`, carrying when the ticket was first scanned.
    #[error("ticket already used")]
    TicketAlreadyUsed { checked_in_at: String },
    #[error("payload too large")]
    PayloadTooLarge,
    /// 426: a websocket route asked without the handshake.
    #[error("upgrade required")]
    UpgradeRequired,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("rate limited ({code})")]
    RateLimited {
        code: &'static str,
        retry_after: Duration,
    },
    #[error("timed out")]
    Timeout,
    /// An upstream provider failed or answered something we cannot use.
    #[error("upstream {provider} failed: {cause}")]
    Upstream {
        provider: &'static str,
        cause: String,
    },
    /// A dependency we need (database, Redis) is not answering.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Like `Unavailable`, with the time the dependency named for coming back (a provider's
    /// rate-limit window).
    #[error("service unavailable: {0}")]
    UnavailableFor(String, Duration),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        AppError::NotFound {
            code: "not_found",
            detail: format!("{} was not found", what.into()),
        }
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Unauthorized {
            code,
            detail: detail.into(),
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Unprocessable {
            code,
            detail: detail.into(),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    // ---- the domain errors of API.md, one constructor per code used in more than one place
    // (or that a client switches on): the code and its wording live here only ----

    pub fn not_organizer() -> Self {
        Self::forbidden(
            "not_organizer",
            "Only organizers may do this; create an organizer profile first.",
        )
    }

    pub fn not_event_owner() -> Self {
        Self::forbidden("not_event_owner", "Only the event's organizer may do this.")
    }

    pub fn event_cancelled() -> Self {
        Self::conflict("event_cancelled", "The event is cancelled.")
    }

    pub fn event_ended() -> Self {
        Self::conflict("event_ended", "The event is over.")
    }

    pub fn tier_not_found() -> Self {
        AppError::NotFound {
            code: "tier_not_found",
            detail: "No tier of this event has that name or id.".into(),
        }
    }

    pub fn sold_out() -> Self {
        Self::conflict("sold_out", "Not enough tickets are left in this tier.")
    }

    pub fn payout_started() -> Self {
        Self::conflict(
            "payout_started",
            "The event's payout has started; it can no longer be cancelled or refunded.",
        )
    }

    pub fn order_not_refundable() -> Self {
        Self::conflict("order_not_refundable", "Only a paid order can be refunded.")
    }

    pub fn invalid_password() -> Self {
        Self::forbidden("invalid_password", "The password is wrong.")
    }

    /// A wrong or reused 2FA code when confirming or disabling 2FA, or changing the bank
    /// account (422); at login it is a 401 (`invalid_login_code`).
    pub fn invalid_code() -> Self {
        Self::unprocessable("invalid_code", "The code is not valid.")
    }

    pub fn invalid_login_code() -> Self {
        Self::unauthorized("invalid_code", "The code or challenge is not valid.")
    }

    pub fn two_factor_already_enabled() -> Self {
        Self::conflict(
            "two_factor_already_enabled",
            "Two-factor authentication is already on; disable it first.",
        )
    }

    pub fn email_taken() -> Self {
        Self::conflict("email_taken", "An account with this email already exists.")
    }

    pub fn organizer_exists() -> Self {
        Self::conflict(
            "organizer_exists",
            "You already have an organizer profile; update it instead.",
        )
    }

    pub fn tier_name_taken() -> Self {
        Self::conflict(
            "tier_name_taken",
            "This event already has a tier with that name.",
        )
    }

    /// 401 `unauthorized`: no usable token (missing, malformed, expired, revoked).
    pub fn not_authenticated(detail: impl Into<String>) -> Self {
        Self::unauthorized("unauthorized", detail)
    }

    /// 400 `invalid_query`: a query string we cannot use.
    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::bad_request("invalid_query", detail)
    }

    /// 400 `malformed_multipart`.
    pub fn malformed_multipart(detail: impl Into<String>) -> Self {
        Self::bad_request("malformed_multipart", detail)
    }

    /// The token's user no longer exists (deleted).
    pub fn account_gone() -> Self {
        Self::not_authenticated("The account no longer exists.")
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::MalformedJson(_) | AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Validation(_) | AppError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict { .. } | AppError::TicketAlreadyUsed { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Timeout | AppError::Unavailable(_) | AppError::UnavailableFor(..) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::MalformedJson(_) => "malformed_json",
            AppError::Validation(_) => "validation_failed",
            AppError::BadRequest { code, .. }
            | AppError::Unauthorized { code, .. }
            | AppError::Forbidden { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::Unprocessable { code, .. }
            | AppError::NotFound { code, .. }
            | AppError::RateLimited { code, .. } => code,
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::UpgradeRequired => "upgrade_required",
            AppError::TicketAlreadyUsed { .. } => "ticket_already_used",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Timeout => "timeout",
            AppError::Upstream { .. } => "upstream_unavailable",
            AppError::Unavailable(_) | AppError::UnavailableFor(..) => "service_unavailable",
            AppError::Internal(_) => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            AppError::MalformedJson(msg) => format!("The request body is not valid JSON: {msg}"),
            AppError::Validation(_) => "One or more fields are invalid.".into(),
            AppError::BadRequest { detail, .. }
            | AppError::Unauthorized { detail, .. }
            | AppError::Forbidden { detail, .. }
            | AppError::NotFound { detail, .. }
            | AppError::Conflict { detail, .. }
            | AppError::Unprocessable { detail, .. } => detail.clone(),
            AppError::MethodNotAllowed => "This method is not allowed on this path.".into(),
            AppError::PayloadTooLarge => "The request body is too large.".into(),
            AppError::UpgradeRequired => "This route speaks the websocket protocol only.".into(),
            AppError::TicketAlreadyUsed { checked_in_at } => {
                format!("This ticket was already checked in at {checked_in_at}.")
            }
            AppError::UnsupportedMediaType(msg) => msg.clone(),
            AppError::RateLimited { retry_after, .. } => format!(
                "Too many requests; retry in {} seconds.",
                retry_after_secs(*retry_after)
            ),
            AppError::Timeout => "The request took too long and was abandoned.".into(),
            AppError::Upstream { provider, .. } => {
                format!("The {provider} service did not answer usefully; try again shortly.")
            }
            AppError::Unavailable(_) | AppError::UnavailableFor(..) => {
                "A dependency of this service is unavailable.".into()
            }
            AppError::Internal(_) => "An unexpected error occurred.".into(),
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("/problems/{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_owned(),
            errors: match self {
                AppError::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
            checked_in_at: match self {
                AppError::TicketAlreadyUsed { checked_in_at } => Some(checked_in_at.clone()),
                _ => None,
            },
        }
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    // Never tell a client to retry "in 0 seconds".
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.as_secs() == 0))
}

/// Renders a problem with the right content type; used by `AppError` and by the few
/// places (panic handler) that build a problem without an `AppError`.
pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            AppError::Upstream { provider, cause } => {
                tracing::warn!(provider, cause, "upstream failure")
            }
            AppError::Unavailable(cause) | AppError::UnavailableFor(cause, _) => {
                tracing::warn!(cause, "dependency unavailable")
            }
            _ => tracing::debug!(code = self.code(), "client error"),
        }
        let mut res = problem_response(status, &self.to_problem());
        // Every 429 and 503 says when to come back (API.md: 503 `service_unavailable` with
        // `Retry-After`); a dependency that is down is retried after a second.
        let retry_after = match &self {
            AppError::RateLimited { retry_after, .. }
            | AppError::UnavailableFor(_, retry_after) => Some(retry_after_secs(*retry_after)),
            AppError::Timeout | AppError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// Turns a unique violation of one named constraint into a client error, everything else
/// into the usual mapping: `repo::users::insert(..).await.on_constraint("users_email_key",
/// AppError::email_taken)?`. The constraint names are the ones the migrations declare.
pub trait OnConstraint<T> {
    fn on_constraint(self, name: &str, error: impl FnOnce() -> AppError) -> AppResult<T>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, error: impl FnOnce() -> AppError) -> AppResult<T> {
        self.map_err(|e| {
            if crate::db::is_unique_violation(&e, name) {
                error()
            } else {
                e.into()
            }
        })
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => AppError::Unavailable("database pool timed out".into()),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        AppError::Unavailable(format!("redis: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_never_zero_and_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
        assert_eq!(retry_after_secs(Duration::from_millis(59_100)), 60);
    }

    #[test]
    fn validation_problem_lists_fields() {
        let p = AppError::validation("email", "is not an email address").to_problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.code, "validation_failed");
        assert_eq!(p.errors.unwrap()[0].field, "email");
    }
}
