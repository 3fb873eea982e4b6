//! `/events/:id/tickets/*` (tiers, discounts, purchase), `/events/:id/sales`, and the
//! caller's tickets at `/users/tickets`.

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
    domain::ids::{EventId, UserId},
    error::{AppError, AppResult, FieldError},
    http::{
        extract::{
            AuthUser, Checks, ClientAddress, IdempotencyKey, Organizer, Page, PathId,
            RequestDeadline, Validate, ValidatedJson, query_pairs,
        },
        responses::{
            OrderResponse, TicketResponse, TierResponse, order_response, ticket_responses,
        },
    },
    service::{purchase, tickets},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_tier))
        .routes(routes!(remove_discount))
        .routes(routes!(purchase_tickets))
        .routes(routes!(ticket_qr))
        .routes(routes!(validate_ticket))
        .routes(routes!(event_sales))
        .routes(routes!(my_tickets))
}

// ---- tiers ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountInput {
    pub price: i64,
    pub quantity: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRequest {
    pub name: String,
    /// Kobo; 0 is a free tier.
    pub price: i64,
    pub quantity: i32,
    #[serde(default)]
    pub benefits: Vec<String>,
    pub discount: Option<DiscountInput>,
}

impl Validate for TierRequest {
    fn validate(&self, now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        c.check(
            (1..=100).contains(&self.name.trim().chars().count()),
            "name",
            "must be 1 to 100 characters",
        )
        .check(
            (0..=100_000_000_000).contains(&self.price),
            "price",
            "must be 0 to 100,000,000,000 kobo",
        )
        .check(
            (1..=1_000_000).contains(&self.quantity),
            "quantity",
            "must be 1 to 1,000,000",
        )
        .check(
            self.benefits.len() <= 20
                && self
                    .benefits
                    .iter()
                    .all(|b| (1..=200).contains(&b.chars().count())),
            "benefits",
            "at most 20, each 1 to 200 characters",
        );
        if let Some(d) = &self.discount {
            c.check(
                d.price >= 0 && d.price < self.price,
                "discount.price",
                "must be below the price",
            )
            .check(
                d.quantity >= 1 && d.quantity <= self.quantity,
                "discount.quantity",
                "must be 1 to the tier's quantity",
            )
            .check(
                d.expires_at > now,
                "discount.expires_at",
                "must be in the future",
            );
        }
        c.finish()
    }
}

/// Add a ticket tier (the event's organizer only).
#[utoipa::path(post, path = "/events/{event_id}/tickets/add", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)), request_body = TierRequest,
    responses(
        (status = 201, body = TierResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 409, description = "`tier_name_taken`, `event_cancelled`, `event_ended`"),
    ))]
async fn add_tier(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(event_id): PathId,
    ValidatedJson(body): ValidatedJson<TierRequest>,
) -> AppResult<(StatusCode, Json<TierResponse>)> {
    let tier = tickets::add_tier(
        &state,
        UserId(organizer.user_id),
        EventId(event_id),
        tickets::TierInput {
            name: body.name,
            price: body.price,
            quantity: body.quantity,
            benefits: body.benefits,
            discount: body.discount.map(|d| (d.price, d.quantity, d.expires_at)),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tier.into())))
}

/// End a tier's discount (`?tier=` name or id; the event's organizer only).
#[utoipa::path(post, path = "/events/{event_id}/tickets/remove-discount", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path), ("tier" = String, Query, description = "tier name or id")),
    responses(
        (status = 200, body = TierResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 404, description = "`not_found`, `tier_not_found`"),
    ))]
async fn remove_discount(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(event_id): PathId,
    RawQuery(query): RawQuery,
) -> AppResult<Json<TierResponse>> {
    let tier = query_pairs(query.as_deref(), &["tier"])?
        .into_iter()
        .find(|(k, _)| k == "tier")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 400 && !v.contains('\0'))
        .ok_or_else(|| AppError::invalid_query("?tier= (name or id) is required"))?;
    let tier =
        tickets::remove_discount(&state, UserId(organizer.user_id), EventId(event_id), &tier)
            .await?;
    Ok(Json(tier.into()))
}

// ---- purchase ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The tier's name or id.
    pub tier: String,
    pub quantity: i32,
}

impl Validate for PurchaseRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        Checks::new()
            .check(
                (1..=400).contains(&self.tier.len()),
                "tier",
                "must be a tier name or id",
            )
            .finish()
    }
}

/// Buy tickets: holds them until `expires_at` and answers the Paystack checkout URL. A free
/// tier is issued at once. With `Idempotency-Key`, a retry answers the first order again.
/// While Paystack's request budget is spent (a flash sale) or Paystack answers 429, the
/// seats are still held and `authorization_url` is null: the link follows on the websocket
/// and on `GET /payments/transactions/{reference}`, and `expires_at` counts from it.
#[utoipa::path(post, path = "/events/{event_id}/tickets/purchase", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "1–255 characters")),
    request_body = PurchaseRequest,
    responses(
        (status = 201, body = OrderResponse, description = "held; `authorization_url` is null while the link is being made within Paystack's budget"),
        (status = 404, description = "`not_found`, `tier_not_found`"),
        (status = 409, description = "`sold_out`, `event_cancelled`, `event_ended`; `free_ticket_limit`: over `MAX_FREE_TICKETS_PER_USER` free tickets for this event"),
        (status = 422, description = "`quantity_out_of_range`, `validation_failed` (also a reused Idempotency-Key with another body)"),
        (status = 429, description = "`too_many_holds`: `MAX_ACTIVE_HOLDS_PER_USER` unpaid holds on this event already; `rate_limited`: over `PURCHASE_RATE_LIMIT_PER_MINUTE` per user or `PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE` per address. Both with `Retry-After`"),
        (status = 502, description = "Paystack refused the checkout; the hold was released"),
        (status = 503, description = "`service_unavailable`: Paystack did not answer, with `Retry-After`"),
    ))]
async fn purchase_tickets(
    State(state): State<AppState>,
    user: AuthUser,
    ClientAddress(address): ClientAddress,
    RequestDeadline(deadline): RequestDeadline,
    PathId(event_id): PathId,
    IdempotencyKey(key): IdempotencyKey,
    ValidatedJson(body): ValidatedJson<PurchaseRequest>,
) -> AppResult<(StatusCode, Json<OrderResponse>)> {
    let bought = purchase::purchase(
        &state,
        purchase::Buyer {
            id: user.id,
            email: &user.email,
            address: address.as_deref(),
            deadline,
        },
        event_id,
        purchase::PurchaseRequest {
            tier: body.tier,
            quantity: body.quantity,
        },
        key.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(order_response(&state, bought.order).await?),
    ))
}

// ---- the QR image of the ticket mail ----

/// A ticket's QR code as a PNG image, for the ticket mail (mail clients drop `data:` images
/// and fetch linked ones without logging in). `file` is `<token>.png`, the token as the mail
/// links it: unguessable, one per ticket. 404 for any other token and for a void ticket.
#[utoipa::path(get, path = "/tickets/qr/{file}", tag = "tickets",
    params(("file" = String, Path, description = "`<token>.png`, as linked from the ticket mail")),
    responses(
        (status = 200, content_type = "image/png", body = Vec<u8>, description = "The QR code of the ticket's access key"),
        (status = 404, description = "unknown token, or a void ticket"),
    ))]
async fn ticket_qr(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> AppResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let token = file
        .strip_suffix(".png")
        .ok_or_else(|| AppError::not_found("QR code"))?;
    let png = tickets::qr_png(&state, token).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/png"),
            (axum::http::header::CACHE_CONTROL, "private, max-age=86400"),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        png.to_vec(),
    )
        .into_response())
}

// ---- the door ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub access_key: String,
    /// Which gate scanned it (1–64 characters; `online` when not given).
    pub gate: Option<String>,
}

impl Validate for ValidateRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        Checks::new()
            .check(
                (1..=128).contains(&self.access_key.len()),
                "access_key",
                "must be 1 to 128 characters",
            )
            .check(
                self.gate
                    .as_ref()
                    .is_none_or(|g| (1..=64).contains(&g.chars().count())),
                "gate",
                "must be 1 to 64 characters",
            )
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    pub ticket: TicketResponse,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_in_at: OffsetDateTime,
}

/// Check a ticket in at the door (the event's organizer only). A ticket is admitted once:
/// a second scan is 409 `ticket_already_used` with the first `checked_in_at`.
#[utoipa::path(post, path = "/events/{event_id}/tickets/validate", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)), request_body = ValidateRequest,
    responses(
        (status = 200, body = ValidateResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 404, description = "unknown event or access key"),
        (status = 409, description = "`ticket_already_used` (with `checked_in_at`), `ticket_not_for_event`, `ticket_void`"),
    ))]
async fn validate_ticket(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(event_id): PathId,
    ValidatedJson(body): ValidatedJson<ValidateRequest>,
) -> AppResult<Json<ValidateResponse>> {
    let gate = body.gate.as_deref().unwrap_or("online");
    let ticket = tickets::check_in(
        &state,
        UserId(user.id),
        EventId(event_id),
        &body.access_key,
        gate,
    )
    .await?;
    let checked_in_at = ticket.checked_in_at.unwrap_or_else(|| state.clock.now());
    let ticket = ticket_responses(vec![ticket])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("rendered no ticket"))?;
    Ok(Json(ValidateResponse {
        valid: true,
        ticket,
        checked_in_at,
    }))
}

// ---- sales ----

#[derive(Serialize, ToSchema)]
pub struct TierSalesResponse {
    pub tier_id: Uuid,
    pub name: String,
    pub sold: i64,
    pub held: i64,
    pub available: i64,
    pub gross_amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SalesResponse {
    pub tiers: Vec<TierSalesResponse>,
    pub gross_amount: i64,
    pub platform_fee_amount: i64,
    pub refunded_amount: i64,
    pub net_amount: i64,
    pub checked_in: i64,
    pub currency: String,
}

/// Sales of an event (its organizer only), from orders and the ledger.
#[utoipa::path(get, path = "/events/{event_id}/sales", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)),
    responses(
        (status = 200, body = SalesResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
    ))]
async fn event_sales(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(event_id): PathId,
) -> AppResult<Json<SalesResponse>> {
    let s = tickets::sales(&state, UserId(organizer.user_id), EventId(event_id)).await?;
    Ok(Json(SalesResponse {
        tiers: s
            .tiers
            .into_iter()
            .map(|t| TierSalesResponse {
                tier_id: t.tier_id,
                name: t.name,
                sold: t.sold,
                held: t.held,
                available: i64::from(t.quantity - t.taken).max(0),
                gross_amount: t.gross_amount,
            })
            .collect(),
        gross_amount: s.totals.gross_amount,
        platform_fee_amount: s.totals.platform_fee_amount,
        refunded_amount: s.totals.refunded_amount,
        net_amount: s.totals.net_amount,
        checked_in: s.checked_in,
        currency: "NGN".to_owned(),
    }))
}

// ---- the caller's tickets ----

#[derive(Serialize, ToSchema)]
pub struct TicketList {
    pub items: Vec<TicketResponse>,
    pub next_cursor: Option<String>,
}

/// The caller's tickets, newest first.
#[utoipa::path(get, path = "/users/tickets", tag = "users", security(("bearer" = [])),
    params(("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses(
        (status = 200, body = TicketList),
    ))]
async fn my_tickets(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
) -> AppResult<Json<TicketList>> {
    let (mut cursor_raw, mut limit) = (None, None);
    for (k, v) in query_pairs(query.as_deref(), &["cursor", "limit"])? {
        match k.as_str() {
            "cursor" => cursor_raw = Some(v),
            _ => limit = Some(v),
        }
    }
    let page = Page::parse(limit.as_deref(), cursor_raw.as_deref())?;
    let (rows, next_cursor) = tickets::of_user(&state, user.id, page.after, page.limit).await?;
    Ok(Json(TicketList {
        items: ticket_responses(rows).await?,
        next_cursor,
    }))
}
