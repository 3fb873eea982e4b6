//! The sandbox checkout (development only, when no `PAYSTACK_SECRET_KEY` is set): the page an
//! order's `authorization_url` points at, whose Pay and Decline buttons settle the sandbox
//! transaction and send a correctly signed `charge.success` to `/payments/callback`, so the
//! whole purchase flow runs on a laptop.

use axum::{
    Router,
    extract::{Path, State},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};

use crate::{
    clients::paystack::SandboxGateway,
    error::{AppError, AppResult},
    security::signing::{escape_html, hmac_sha512_hex},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/checkout/{reference}", get(page))
        .route("/sandbox/checkout/{reference}/pay", post(pay))
        .route("/sandbox/checkout/{reference}/decline", post(decline))
}

fn only_in_sandbox(state: &AppState) -> AppResult<()> {
    if state.config.paystack.is_some() || state.config.is_production() {
        return Err(AppError::not_found("This route"));
    }
    Ok(())
}

async fn page(State(state): State<AppState>, Path(reference): Path<String>) -> AppResult<Response> {
    only_in_sandbox(&state)?;
    let tx = SandboxGateway::load(&state.redis, &reference)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    let r = escape_html(&reference);
    Ok(Html(format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;max-width:420px;margin:40px auto\">\
         <h2>Sandbox checkout</h2><p>Order <code>{r}</code></p>\
         <p>Amount: <strong>{} {}.{:02}</strong> — {}</p><p>Status: {}</p>\
         <form method=\"post\" action=\"/sandbox/checkout/{r}/pay\"><button>Pay</button></form>\
         <form method=\"post\" action=\"/sandbox/checkout/{r}/decline\"><button>Decline</button></form>\
         </body></html>",
        escape_html(&tx.currency),
        tx.amount / 100,
        tx.amount % 100,
        escape_html(&tx.email),
        escape_html(&tx.status),
    ))
    .into_response())
}

async fn pay(State(state): State<AppState>, Path(reference): Path<String>) -> AppResult<Response> {
    settle(state, reference, "success").await
}

async fn decline(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> AppResult<Response> {
    settle(state, reference, "failed").await
}

async fn settle(state: AppState, reference: String, status: &str) -> AppResult<Response> {
    only_in_sandbox(&state)?;
    let tx = SandboxGateway::settle(&state.redis, &reference, status)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    if status == "success" {
        // Exactly what Paystack would send: compact JSON, signed over the raw bytes.
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "charge.success",
            "data": { "id": rand::random::<u32>(), "status": "success", "reference": reference,
                      "amount": tx.amount, "currency": tx.currency, "fees": null },
        }))
        .unwrap_or_default();
        let signature = hmac_sha512_hex(state.config.webhook_secret().as_bytes(), &body);
        let url = format!("{}/payments/callback", state.config.public_base_url);
        if let Err(e) = state
            .http_client
            .post(url)
            .header("content-type", "application/json")
            .header("x-paystack-signature", signature)
            .body(body)
            .send()
            .await
        {
            tracing::warn!(error = %e, "sandbox webhook not delivered; the sweeper will verify");
        }
    }
    Ok(Html(format!(
        "<p>Sandbox payment {}: {}</p>",
        escape_html(&reference),
        escape_html(status)
    ))
    .into_response())
}
