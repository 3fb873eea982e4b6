//! Fake Resend: `POST /emails` with auth, validation and 24 h idempotency (§2.2, §2.4), an
//! outbox, and fault injection. `GET /_fake/emails?to=` lists accepted messages.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Fault, serve};

pub const API_KEY: &str = "re_test_fake_key";
pub const VERIFIED_DOMAIN: &str = "tickets.test";

#[derive(Debug, Clone)]
pub struct SentEmail {
    /// When the fake accepted it.
    pub accepted_at: std::time::Instant,
    pub id: String,
    pub to: Vec<String>,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    outbox: Vec<SentEmail>,
    /// idempotency key → (request body, id answered)
    keys: HashMap<String, (Value, String)>,
    faults: VecDeque<Fault>,
    requests: usize,
    /// Resend's rate limit (requests per second; 0: none), and what it refused.
    rate_limit: u32,
    window: (u64, u32),
    rate_limited: usize,
    batch_requests: usize,
}

#[derive(Clone, Default)]
pub struct FakeResend {
    inner: Arc<Mutex<Inner>>,
    pub base_url: String,
}

impl FakeResend {
    pub async fn spawn() -> Self {
        let mut fake = FakeResend::default();
        let router = Router::new()
            .route("/emails", post(send))
            .route("/emails/batch", post(send_batch))
            .route("/_fake/emails", get(list))
            .with_state(fake.clone());
        fake.base_url = serve(router).await;
        fake
    }

    /// Every message accepted (sent) so far.
    pub fn outbox(&self) -> Vec<SentEmail> {
        self.inner.lock().unwrap().outbox.clone()
    }

    pub fn sent_to(&self, to: &str) -> Vec<SentEmail> {
        self.outbox()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// How many `POST /emails` calls arrived, accepted or not.
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// Refuses requests past `per_second` in any wall-clock second with 429, as Resend does.
    pub fn set_rate_limit(&self, per_second: u32) {
        self.inner.lock().unwrap().rate_limit = per_second;
    }

    /// How many requests the rate limit refused.
    pub fn rate_limited(&self) -> usize {
        self.inner.lock().unwrap().rate_limited
    }

    /// How many `POST /emails/batch` calls arrived.
    pub fn batch_requests(&self) -> usize {
        self.inner.lock().unwrap().batch_requests
    }

    /// The next calls suffer these faults, in order.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "statusCode": status.as_u16(), "name": name, "message": message })),
    )
        .into_response()
}

fn recipients(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// Over the rate limit: 429 with Resend's headers (§2.4), or `None`.
fn over_rate_limit(inner: &mut Inner) -> Option<Response> {
    if inner.rate_limit == 0 {
        return None;
    }
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if inner.window.0 != second {
        inner.window = (second, 0);
    }
    inner.window.1 += 1;
    if inner.window.1 <= inner.rate_limit {
        return None;
    }
    inner.rate_limited += 1;
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "Too many requests.",
    );
    let h = res.headers_mut();
    h.insert("retry-after", "1".parse().unwrap());
    h.insert(
        "ratelimit-limit",
        inner.rate_limit.to_string().parse().unwrap(),
    );
    h.insert("ratelimit-remaining", "0".parse().unwrap());
    h.insert("ratelimit-reset", "1".parse().unwrap());
    Some(res)
}

/// `POST /emails/batch` (§2.2b): up to 100 messages, all or nothing, one idempotency key.
async fn send_batch(
    State(fake): State<FakeResend>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let Json(body) = body;
    let fault = {
        let mut inner = fake.inner.lock().unwrap();
        inner.requests += 1;
        inner.batch_requests += 1;
        if let Some(res) = over_rate_limit(&mut inner) {
            return res;
        }
        inner.faults.pop_front()
    };
    if fault == Some(Fault::ServerError) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application_error",
            "boom",
        );
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {API_KEY}").as_str())
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Missing API key",
        );
    }
    let Some(messages) = body.as_array() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "Expected an array.",
        );
    };
    if messages.is_empty() || messages.len() > 100 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "A batch holds 1 to 100 emails.",
        );
    }
    for m in messages {
        let to = recipients(m.get("to"));
        let from = m["from"].as_str().unwrap_or_default();
        if to.is_empty()
            || to.iter().any(|t| !t.contains('@'))
            || m["subject"].as_str().is_none()
            || !from.trim_end_matches('>').ends_with(VERIFIED_DOMAIN)
        {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "Invalid email in the batch.",
            );
        }
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = fake.inner.lock().unwrap();
    if let Some(key) = &key
        && let Some((first_body, ids)) = inner.keys.get(key)
    {
        if *first_body != body {
            return error(
                StatusCode::CONFLICT,
                "invalid_idempotent_request",
                "Same idempotency key used with a different request payload.",
            );
        }
        let ids: Vec<Value> = ids.split(',').map(|id| json!({ "id": id })).collect();
        return Json(json!({ "data": ids })).into_response();
    }
    let mut ids = Vec::new();
    for m in messages {
        let id = uuid::Uuid::new_v4().to_string();
        inner.outbox.push(SentEmail {
            accepted_at: std::time::Instant::now(),
            id: id.clone(),
            to: recipients(m.get("to")),
            subject: m["subject"].as_str().unwrap_or_default().to_owned(),
            html: m["html"].as_str().map(str::to_owned),
            text: m["text"].as_str().map(str::to_owned),
            idempotency_key: key.clone(),
            body: m.clone(),
        });
        ids.push(id);
    }
    if let Some(key) = &key {
        inner
            .keys
            .insert(key.clone(), (body.clone(), ids.join(",")));
    }
    drop(inner);
    if fault == Some(Fault::ServerErrorAfterAccept) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application_error",
            "boom",
        );
    }
    let data: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    Json(json!({ "data": data })).into_response()
}

async fn send(State(fake): State<FakeResend>, headers: HeaderMap, body: Json<Value>) -> Response {
    let Json(body) = body;
    let fault = {
        let mut inner = fake.inner.lock().unwrap();
        inner.requests += 1;
        if let Some(res) = over_rate_limit(&mut inner) {
            return res;
        }
        inner.faults.pop_front()
    };
    match fault {
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application_error",
                "boom",
            );
        }
        Some(Fault::HtmlUnavailable) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html("<html><body>503 Service Unavailable</body></html>"),
            )
                .into_response();
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        _ => {}
    }

    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "Missing API key",
            );
        }
        Some(v) if v != format!("Bearer {API_KEY}") => {
            return error(
                StatusCode::FORBIDDEN,
                "validation_error",
                "API key is invalid",
            );
        }
        _ => {}
    }
    for field in ["from", "to", "subject"] {
        if body.get(field).is_none_or(Value::is_null) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_required_field",
                &format!("Missing `{field}` field."),
            );
        }
    }
    let to = recipients(body.get("to"));
    if to.is_empty() || to.len() > 50 || to.iter().any(|t| !t.contains('@')) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "Invalid `to` field.",
        );
    }
    let from = body["from"].as_str().unwrap_or_default();
    let domain = from
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('>');
    if domain != VERIFIED_DOMAIN {
        return error(
            StatusCode::FORBIDDEN,
            "validation_error",
            &format!("The {domain} domain is not verified."),
        );
    }

    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = fake.inner.lock().unwrap();
    if let Some(key) = &key {
        if key.is_empty() || key.len() > 256 {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "The key must be between 1-256 chars.",
            );
        }
        if let Some((first_body, id)) = inner.keys.get(key) {
            if *first_body != body {
                return error(
                    StatusCode::CONFLICT,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload.",
                );
            }
            return Json(json!({ "id": id })).into_response();
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(key) = &key {
        inner.keys.insert(key.clone(), (body.clone(), id.clone()));
    }
    inner.outbox.push(SentEmail {
        accepted_at: std::time::Instant::now(),
        id: id.clone(),
        to,
        subject: body["subject"].as_str().unwrap_or_default().to_owned(),
        html: body["html"].as_str().map(str::to_owned),
        text: body["text"].as_str().map(str::to_owned),
        idempotency_key: key,
        body,
    });
    drop(inner);
    if fault == Some(Fault::ServerErrorAfterAccept) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application_error",
            "boom",
        );
    }
    Json(json!({ "id": id })).into_response()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    to: Option<String>,
}

async fn list(State(fake): State<FakeResend>, Query(q): Query<ListQuery>) -> Json<Value> {
    let items: Vec<Value> = fake
        .outbox()
        .into_iter()
        .filter(|m| q.to.as_ref().is_none_or(|to| m.to.contains(to)))
        .map(|m| {
            json!({ "id": m.id, "to": m.to, "subject": m.subject, "text": m.text,
                         "idempotency_key": m.idempotency_key })
        })
        .collect();
    Json(json!({ "data": items }))
}
