//! `/payments/*`: the bank list (and, with selling, the webhook and order lookups).

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    clients::paystack::Bank,
    error::{AppResult, Problem},
    service::banks,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_banks))
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
        (status = 502, description = "Paystack unavailable and nothing cached yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_banks(State(state): State<AppState>) -> AppResult<Json<BankList>> {
    let banks = banks::list(&state).await?;
    Ok(Json(BankList {
        items: banks.into_iter().map(BankResponse::from).collect(),
    }))
}
