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

use crate::{error::AppResult, security::signing::escape_html, service::sandbox, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/checkout/{reference}", get(page))
        .route("/sandbox/checkout/{reference}/pay", post(pay))
        .route("/sandbox/checkout/{reference}/decline", post(decline))
}

async fn page(State(state): State<AppState>, Path(reference): Path<String>) -> AppResult<Response> {
    let tx = sandbox::checkout(&state, &reference).await?;
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
    sandbox::settle(&state, &reference, status).await?;
    Ok(Html(format!(
        "<p>Sandbox payment {}: {}</p>",
        escape_html(&reference),
        escape_html(status)
    ))
    .into_response())
}
