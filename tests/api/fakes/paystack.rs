//! Fake Paystack (§1): Bearer auth with `Invalid key` (401), the `{status, message, data}`
//! envelopes, fault injection. Endpoints are added with the features that call them.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
};
use serde_json::json;

use super::{Fault, serve};

pub const SECRET_KEY: &str = "sk_test_fake_paystack_secret";

#[derive(Default)]
struct Inner {
    faults: VecDeque<Fault>,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakePaystack {
    inner: Arc<Mutex<Inner>>,
    pub base_url: String,
}

impl FakePaystack {
    pub async fn spawn() -> Self {
        let mut fake = FakePaystack::default();
        let router = Router::new()
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "Route not found", "api_error", None)
            })
            .layer(middleware::from_fn_with_state(fake.clone(), gate))
            .with_state(fake.clone());
        fake.base_url = serve(router).await;
        fake
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// `METHOD path` of every call received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }
}

pub fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(json!({ "status": false, "message": message, "type": kind, "code": code })),
    )
        .into_response()
}

/// Auth and fault injection in front of every route, as Paystack's edge does.
async fn gate(State(fake): State<FakePaystack>, req: Request, next: Next) -> Response {
    let fault = {
        let mut inner = fake.inner.lock().unwrap();
        inner
            .requests
            .push(format!("{} {}", req.method(), req.uri().path()));
        inner.faults.pop_front()
    };
    match fault {
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server error",
                "api_error",
                None,
            );
        }
        Some(Fault::HtmlUnavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, Html("<html>503</html>")).into_response();
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SECRET_KEY}"));
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid key",
            "api_error",
            Some("invalid_Key"),
        );
    }
    let res = next.run(req).await;
    if fault == Some(Fault::ServerErrorAfterAccept) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error",
            "api_error",
            None,
        );
    }
    res
}
