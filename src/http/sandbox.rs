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
    domain::status::OrderStatus, error::AppResult, security::signing::escape_html,
    service::sandbox, state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/checkout/{reference}", get(page))
        .route("/sandbox/checkout/{reference}/pay", post(pay))
        .route("/sandbox/checkout/{reference}/decline", post(decline))
}

async fn page(State(state): State<AppState>, Path(reference): Path<String>) -> AppResult<Response> {
    let c = sandbox::checkout(&state, &reference).await?;
    let r = escape_html(&reference);
    let buttons = if c.order_status == OrderStatus::Pending {
        format!(
            "<form method=\"post\" action=\"/sandbox/checkout/{r}/pay\"><button id=\"pay\">Pay</button></form>\
             <form method=\"post\" action=\"/sandbox/checkout/{r}/decline\"><button id=\"decline\">Decline</button></form>"
        )
    } else {
        String::new()
    };
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox checkout</title></head>\
         <body style=\"font-family:sans-serif;max-width:420px;margin:40px auto\">\
         <h2>Sandbox checkout</h2>\
         <p id=\"event\"><strong>{}</strong> — {}</p>\
         <p>Amount: <strong id=\"amount\">{} {}.{:02}</strong></p>\
         <p>Buyer: {}</p><p>Order <code>{r}</code>: <span id=\"status\">{}</span></p>{buttons}\
         </body></html>",
        escape_html(&c.event_title),
        escape_html(&c.tier_name),
        escape_html(&c.currency),
        c.amount / 100,
        c.amount % 100,
        escape_html(&c.email),
        c.order_status.as_str(),
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
    let r = escape_html(&reference);
    let outcome = if status == "success" {
        "Payment made: your tickets are on their way."
    } else {
        "Payment declined: the order failed and its tickets were released."
    };
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox checkout</title></head>\
         <body style=\"font-family:sans-serif;max-width:420px;margin:40px auto\">\
         <h2 id=\"result\">{outcome}</h2><p>Order <code>{r}</code></p>\
         <p><a id=\"back\" href=\"/sandbox/checkout/{r}\">Back to the order</a></p></body></html>"
    ))
    .into_response())
}
