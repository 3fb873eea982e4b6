//! `/users/*`: the caller's profile, organizer account and events.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::email::EmailAddress,
    error::{AppError, AppResult, FieldError},
    http::{
        extract::{AuthUser, Checks, Page, Validate, ValidatedJson, query_pairs},
        responses::{EventList, EventResponse, UserResponse},
    },
    repo::organizers::OrganizerRow,
    service::{events, organizers, users},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_profile, update_profile, delete_profile))
        .routes(routes!(get_organizer, create_organizer, update_organizer))
        .routes(routes!(my_payouts))
        .routes(routes!(my_events))
}

/// The caller's profile.
#[utoipa::path(get, path = "/users/profile", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
    ))]
async fn get_profile(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<UserResponse>> {
    Ok(Json(users::profile(&state, user.id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl Validate for ProfilePatch {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let ok = |v: &Option<String>| {
            v.as_ref()
                .is_none_or(|s| (1..=100).contains(&s.trim().chars().count()))
        };
        Checks::new()
            .check(
                ok(&self.first_name),
                "first_name",
                "must be 1 to 100 characters",
            )
            .check(
                ok(&self.last_name),
                "last_name",
                "must be 1 to 100 characters",
            )
            .finish()
    }
}

/// Change the caller's names.
#[utoipa::path(patch, path = "/users/profile", tag = "users", security(("bearer" = [])),
    request_body = ProfilePatch,
    responses(
        (status = 200, body = UserResponse),
    ))]
async fn update_profile(
    State(state): State<AppState>,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<ProfilePatch>,
) -> AppResult<Json<UserResponse>> {
    let row = users::rename(
        &state,
        user.id,
        body.first_name.as_deref(),
        body.last_name.as_deref(),
    )
    .await?;
    Ok(Json(row.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteProfileRequest {
    pub password: String,
}

impl Validate for DeleteProfileRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        Checks::new()
            .check(self.password.len() <= 1024, "password", "is too long")
            .finish()
    }
}

/// Delete the caller's account: personal data is erased, orders and tickets stay for
/// accounting, and every token of the account stops working.
#[utoipa::path(delete, path = "/users/profile", tag = "users", security(("bearer" = [])),
    request_body = DeleteProfileRequest,
    responses(
        (status = 204),
        (status = 403, description = "`invalid_password`"),
        (status = 409, description = "`organizer_has_active_events`"),
        (status = 429, description = "`rate_limited` past `PASSWORD_CHECKS_PER_USER_PER_HOUR`, or `account_locked`, with `Retry-After`"),
        (status = 503, description = "`service_unavailable`: password hashing saturated, with `Retry-After`"),
    ))]
async fn delete_profile(
    State(state): State<AppState>,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<DeleteProfileRequest>,
) -> AppResult<StatusCode> {
    users::delete_account(&state, user.id, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organizer as its owner sees it: bank details reduced to the last four digits.
#[derive(Serialize, ToSchema)]
pub struct OrganizerResponse {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub bank_name: String,
    pub account_number_last4: String,
    /// As the bank knows it (resolved with Paystack).
    pub account_name: String,
    pub description: Option<String>,
    pub website: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<OrganizerRow> for OrganizerResponse {
    fn from(o: OrganizerRow) -> Self {
        let n = o.account_number.len();
        Self {
            id: o.id,
            name: o.name,
            email: o.email,
            phone: o.phone,
            bank_name: o.bank_name,
            account_number_last4: o.account_number[n.saturating_sub(4)..].to_owned(),
            account_name: o.account_name,
            description: o.description,
            website: o.website,
            created_at: o.created_at,
        }
    }
}

/// Create: all fields but `description` and `website` required. Update: any of them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizerRequest {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub bank_code: Option<String>,
    /// 10-digit NUBAN.
    pub account_number: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub website: Option<Option<String>>,
    /// PATCH only: the account password, required when `bank_code` or `account_number` change.
    pub password: Option<String>,
    /// PATCH only: a current TOTP (or recovery) code, required with `password` when 2FA is on.
    pub code: Option<String>,
}

/// `null` (clear) and absent (keep) are different things in a PATCH.
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

impl Validate for OrganizerRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        if let Some(n) = &self.name {
            c.check(
                (1..=200).contains(&n.trim().chars().count()),
                "name",
                "must be 1 to 200 characters",
            );
        }
        if let Some(e) = &self.email {
            c.check(
                EmailAddress::parse(e).is_ok(),
                "email",
                "is not an email address",
            );
        }
        if let Some(p) = &self.phone {
            let digits = p.chars().filter(char::is_ascii_digit).count();
            c.check(
                (7..=15).contains(&digits)
                    && p.chars()
                        .all(|ch| ch.is_ascii_digit() || "+ -()".contains(ch))
                    && p.len() <= 32,
                "phone",
                "must be a phone number of 7 to 15 digits",
            );
        }
        if let Some(b) = &self.bank_code {
            c.check(
                (3..=10).contains(&b.len()) && b.chars().all(|ch| ch.is_ascii_digit()),
                "bank_code",
                "must be a bank code from GET /payments/banks",
            );
        }
        if let Some(a) = &self.account_number {
            c.check(
                a.len() == 10 && a.chars().all(|ch| ch.is_ascii_digit()),
                "account_number",
                "must be a 10-digit account number",
            );
        }
        if let Some(p) = &self.password {
            c.check(p.len() <= 128, "password", "must be at most 128 characters");
        }
        if let Some(code) = &self.code {
            c.check(code.len() <= 32, "code", "must be at most 32 characters");
        }
        if let Some(Some(d)) = &self.description {
            c.check(
                d.chars().count() <= 2000,
                "description",
                "must be at most 2000 characters",
            );
        }
        if let Some(Some(w)) = &self.website {
            c.check(
                w.len() <= 200
                    && url::Url::parse(w).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                "website",
                "must be an http(s) URL of at most 200 characters",
            );
        }
        c.finish()
    }
}

impl From<OrganizerRequest> for organizers::OrganizerInput {
    fn from(r: OrganizerRequest) -> Self {
        Self {
            name: r.name.map(|s| s.trim().to_owned()),
            email: r
                .email
                .and_then(|e| EmailAddress::parse(&e).ok())
                .map(|e| e.as_str().to_owned()),
            phone: r.phone.map(|s| s.trim().to_owned()),
            bank_code: r.bank_code,
            account_number: r.account_number,
            description: r.description,
            website: r.website,
            password: r.password,
            code: r.code,
        }
    }
}

/// The caller's organizer profile (404 when there is none).
#[utoipa::path(get, path = "/users/organizer", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = OrganizerResponse),
        (status = 404, description = "`not_found`: the caller has no organizer profile"),
    ))]
async fn get_organizer(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<OrganizerResponse>> {
    Ok(Json(organizers::of_user(&state, user.id).await?.into()))
}

/// Become an organizer. The bank account is resolved with Paystack and a transfer recipient
/// is created for payouts.
#[utoipa::path(post, path = "/users/organizer", tag = "users", security(("bearer" = [])),
    request_body = OrganizerRequest,
    responses(
        (status = 201, body = OrganizerResponse),
        (status = 409, description = "`organizer_exists`"),
        (status = 422, description = "invalid fields, unknown bank or unresolvable account"),
        (status = 429, description = "`rate_limited` past `BANK_ACCOUNT_LOOKUPS_PER_USER_PER_DAY`, with `Retry-After`"),
        (status = 502, description = "Paystack unavailable"),
    ))]
async fn create_organizer(
    State(state): State<AppState>,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<OrganizerRequest>,
) -> AppResult<(StatusCode, Json<OrganizerResponse>)> {
    let row = organizers::create(&state, user.id, body.into()).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Change the organizer profile. A changed bank or account needs `password` (and `code` when
/// 2FA is on), is resolved again with a new recipient, is mailed to the login email and to
/// the organizer email as it was, and receives payouts only after
/// `PAYOUT_ACCOUNT_COOLDOWN_SECONDS`.
#[utoipa::path(patch, path = "/users/organizer", tag = "users", security(("bearer" = [])),
    request_body = OrganizerRequest,
    responses(
        (status = 200, body = OrganizerResponse),
        (status = 403, description = "`invalid_password`"),
        (status = 404, description = "`not_found`: the caller has no organizer profile"),
        (status = 422, description = "invalid fields, `invalid_code`, a missing password"),
        (status = 429, description = "`rate_limited` past `BANK_ACCOUNT_LOOKUPS_PER_USER_PER_DAY` or `PASSWORD_CHECKS_PER_USER_PER_HOUR`, or `account_locked`, with `Retry-After`"),
        (status = 502),
        (status = 503, description = "`service_unavailable`: password hashing saturated, with `Retry-After`"),
    ))]
async fn update_organizer(
    State(state): State<AppState>,
    user: AuthUser,
    ValidatedJson(body): ValidatedJson<OrganizerRequest>,
) -> AppResult<Json<OrganizerResponse>> {
    let row = organizers::update(&state, user.id, body.into()).await?;
    Ok(Json(row.into()))
}

/// Events the caller organizes (`role=organizer`) or holds tickets for (`role=attendee`).
#[utoipa::path(get, path = "/users/events", tag = "users", security(("bearer" = [])),
    params(
        ("role" = String, Query, description = "attendee or organizer"),
        ("cursor" = Option<String>, Query),
        ("limit" = Option<i64>, Query),
    ),
    responses(
        (status = 200, body = EventList),
    ))]
async fn my_events(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
) -> AppResult<Json<EventList>> {
    let (mut role, mut cursor, mut limit) = (None, None, None);
    for (k, v) in query_pairs(query.as_deref(), &["role", "cursor", "limit"])? {
        match k.as_str() {
            "role" => role = Some(v),
            "cursor" => cursor = Some(v),
            _ => limit = Some(v),
        }
    }
    let Page { limit, after } = Page::parse(limit.as_deref(), cursor.as_deref())?;
    let page = match role.as_deref() {
        Some("organizer") => match organizers::id_of_user(&state, user.id).await? {
            Some(organizer_id) => events::organized_by(&state, organizer_id, after, limit).await?,
            None => events::Page {
                items: vec![],
                next_cursor: None,
            },
        },
        Some("attendee") => events::attended_by(&state, user.id, after, limit).await?,
        _ => {
            return Err(AppError::invalid_query(
                "role must be attendee or organizer",
            ));
        }
    };
    Ok(Json(EventList {
        items: page
            .items
            .into_iter()
            .map(|e| EventResponse::at(e, state.clock.now()))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PayoutResponse {
    pub id: Uuid,
    pub event_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// `failed` and `reversed` are retried.
    pub status: crate::domain::status::PayoutStatus,
    /// The transfer reference of the current attempt.
    pub reference: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub settled_at: Option<OffsetDateTime>,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceResponse {
    /// The share of events not yet payable (not ended, or inside `PAYOUT_DELAY_SECONDS`).
    pub held_amount: i64,
    /// The share of events past the delay and not yet paid out (failed payouts included).
    pub payable_amount: i64,
    /// Successful payouts.
    pub paid_out_amount: i64,
    pub currency: String,
}

#[derive(Serialize, ToSchema)]
pub struct PayoutsResponse {
    pub balance: BalanceResponse,
    pub items: Vec<PayoutResponse>,
}

/// The organizer's money: held, payable and paid out, and the payouts (newest first).
#[utoipa::path(get, path = "/users/organizer/payouts", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = PayoutsResponse),
        (status = 404, description = "the caller has no organizer profile"),
    ))]
async fn my_payouts(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<PayoutsResponse>> {
    let b = crate::service::payouts::balance(&state, user.id).await?;
    Ok(Json(PayoutsResponse {
        balance: BalanceResponse {
            held_amount: b.held_amount,
            payable_amount: b.payable_amount,
            paid_out_amount: b.paid_out_amount,
            currency: "NGN".to_owned(),
        },
        items: b
            .items
            .into_iter()
            .map(|p| PayoutResponse {
                reference: p.reference(),
                id: p.id,
                event_id: p.event_id,
                amount: p.amount,
                currency: p.currency,
                status: p.status,
                created_at: p.created_at,
                settled_at: p.settled_at,
            })
            .collect(),
    }))
}
