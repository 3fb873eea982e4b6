//! `/payments/*`: the bank list (and, with selling, the webhook and order lookups).

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::AppResult,
    http::{
        extract::AuthUser,
        responses::{OrderResponse, order_response},
    },
    service::banks::Bank,
    service::{banks, payments, purchase},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_banks))
        .routes(routes!(paystack_webhook))
        .routes(routes!(get_transaction))
}

/// Paystack webhooks. `x-paystack-signature` must be the HMAC-SHA512 of the raw body under
/// the secret key; each delivery is recorded once and its work queued; the answer is at once.
#[utoipa::path(post, path = "/payments/callback", tag = "payments",
    request_body(content = serde_json::Value, description = "Paystack's event (a JSON object), exactly as sent", content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded (also for duplicates, unknown events and references)"),
        (status = 401, description = "`invalid_signature`"),
    ))]
async fn paystack_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> AppResult<StatusCode> {
    let signature = headers
        .get("x-paystack-signature")
        .and_then(|v| v.to_str().ok());
    // The signature covers the exact bytes received: never parse and re-serialise first.
    payments::receive_webhook(&state, &body, signature).await?;
    Ok(StatusCode::OK)
}

/// An order by its Paystack reference, for the buyer who polls instead of subscribing.
#[utoipa::path(get, path = "/payments/transactions/{reference}", tag = "payments", security(("bearer" = [])),
    params(("reference" = String, Path)),
    responses(
        (status = 200, body = OrderResponse),
        (status = 404, description = "unknown, or another user's"),
    ))]
async fn get_transaction(
    State(state): State<AppState>,
    user: AuthUser,
    Path(reference): Path<String>,
) -> AppResult<Json<OrderResponse>> {
    let order = purchase::order_for_buyer(&state, user.id, &reference).await?;
    Ok(Json(order_response(&state, order).await?))
}

#[derive(Serialize, ToSchema)]
pub struct BankResponse {
    pub name: String,
    pub code: String,
    pub slug: String,
}

#[derive(Serialize, ToSchema)]
pub struct BankList {
    pub items: Vec<BankResponse>,
}

impl From<Bank> for BankResponse {
    fn from(b: Bank) -> Self {
        Self {
            name: b.name,
            code: b.code,
            slug: b.slug,
        }
    }
}

/// Paystack's Nigerian banks (cached; a Paystack outage serves the cached list).
#[utoipa::path(get, path = "/payments/banks", tag = "payments",
    responses(
        (status = 200, body = BankList),
        (status = 502, description = "Paystack unavailable and nothing cached yet"),
    ))]
async fn list_banks(State(state): State<AppState>) -> AppResult<Json<BankList>> {
    let banks = banks::list(&state).await?;
    Ok(Json(BankList {
        items: banks.into_iter().map(BankResponse::from).collect(),
    }))
}
