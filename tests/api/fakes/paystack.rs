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
use std::collections::HashMap;

use axum::extract::Query;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Fault, serve};

pub const SECRET_KEY: &str = "sk_test_fake_paystack_secret";

#[derive(Default)]
struct Inner {
    faults: VecDeque<Fault>,
    requests: Vec<String>,
    /// account_number → recipient code, so a second create returns the same recipient.
    recipients: HashMap<String, Value>,
}

/// Bank list served by the fake: real names and string codes, one inactive, one deleted and
/// one duplicate, so the client's filtering shows.
pub fn banks() -> Vec<Value> {
    let rows = [
        ("Access Bank", "044", true, false),
        ("Citibank Nigeria", "023", true, false),
        ("Ecobank Nigeria", "050", true, false),
        ("Fidelity Bank", "070", true, false),
        ("First Bank of Nigeria", "011", true, false),
        ("Guaranty Trust Bank", "058", true, false),
        ("Kuda Bank", "50211", true, false),
        ("Old Defunct Bank", "999", false, false),
        ("Deleted Bank", "998", true, true),
        ("United Bank For Africa", "033", true, false),
        ("Zenith Bank", "057", true, false),
        ("Guaranty Trust Bank", "058", true, false),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, (name, code, active, deleted))| {
            json!({ "id": i + 1, "name": name, "code": code,
                    "slug": name.to_lowercase().replace(' ', "-"), "longcode": "", "gateway": null,
                    "pay_with_bank": false, "active": active, "is_deleted": deleted,
                    "country": "Nigeria", "currency": "NGN", "type": "nuban" })
        })
        .collect()
}

/// Accounts the fake can resolve: (account_number, bank_code, account_name).
pub const KNOWN_ACCOUNTS: [(&str, &str, &str); 3] = [
    ("0123456789", "058", "LAGOS LIVE LTD"),
    ("0987654321", "044", "IBADAN SHOWS ENTERPRISES"),
    ("1122334455", "057", "ABUJA ARENA LTD"),
];

/// Page size of the fake's bank list, small so that clients must follow the cursor.
const BANK_PAGE: usize = 4;

#[derive(Clone, Default)]
pub struct FakePaystack {
    inner: Arc<Mutex<Inner>>,
    pub base_url: String,
}

impl FakePaystack {
    pub async fn spawn() -> Self {
        let mut fake = FakePaystack::default();
        let router = Router::new()
            .route("/bank", get(list_banks))
            .route("/bank/resolve", get(resolve))
            .route("/transferrecipient", post(create_recipient))
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

    /// How many calls for `METHOD path` arrived.
    pub fn count(&self, call: &str) -> usize {
        self.requests().iter().filter(|r| *r == call).count()
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

fn ok(message: &str, data: Value) -> Response {
    Json(json!({ "status": true, "message": message, "data": data })).into_response()
}

async fn list_banks(Query(q): Query<HashMap<String, String>>) -> Response {
    let all = banks();
    let start: usize = q
        .get("next")
        .and_then(|c| c.strip_prefix("cursor:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let per_page = q
        .get("perPage")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100)
        .min(BANK_PAGE);
    let end = (start + per_page).min(all.len());
    let next = (end < all.len()).then(|| format!("cursor:{end}"));
    Json(json!({
        "status": true, "message": "Banks retrieved",
        "data": all[start..end],
        "meta": { "next": next, "previous": null, "perPage": per_page }
    }))
    .into_response()
}

async fn resolve(Query(q): Query<HashMap<String, String>>) -> Response {
    let account = q.get("account_number").map(String::as_str).unwrap_or("");
    let bank = q.get("bank_code").map(String::as_str).unwrap_or("");
    match KNOWN_ACCOUNTS
        .iter()
        .find(|(a, b, _)| *a == account && *b == bank)
    {
        Some((a, _, name)) => ok(
            "Account number resolved",
            json!({ "account_number": a, "account_name": name, "bank_id": 9 }),
        ),
        None => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Could not resolve account name. Check parameters or try again.",
            "validation_error",
            None,
        ),
    }
}

async fn create_recipient(State(fake): State<FakePaystack>, Json(body): Json<Value>) -> Response {
    let account = body["account_number"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bank = body["bank_code"].as_str().unwrap_or_default().to_owned();
    if body["type"] != "nuban" || account.is_empty() || bank.is_empty() || body["name"].is_null() {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid recipient details",
            "validation_error",
            None,
        );
    }
    let mut inner = fake.inner.lock().unwrap();
    let n = inner.recipients.len();
    let recipient = inner
        .recipients
        .entry(format!("{bank}/{account}"))
        .or_insert_with(|| {
            json!({ "recipient_code": format!("RCP_fake{n:06}"), "type": "nuban",
                    "name": body["name"], "currency": "NGN",
                    "details": { "account_number": account, "bank_code": bank } })
        })
        .clone();
    ok("Transfer recipient created successfully", recipient)
}
