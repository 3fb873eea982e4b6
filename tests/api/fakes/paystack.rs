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

use super::Fault;

pub const SECRET_KEY: &str = "sk_test_fake_paystack_secret";

#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: u64,
    pub reference: String,
    pub email: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub access_code: String,
    pub fees: Option<i64>,
    pub paid_at: Option<String>,
}

/// How the fake delivers webhooks after a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    #[default]
    Once,
    /// The same event twice, concurrently (Paystack's at-least-once delivery).
    Twice,
    /// Lost: only the sweeper's verify can find the payment.
    Never,
    /// Signed with the wrong key.
    BadSignature,
}

#[derive(Default)]
struct Inner {
    faults: VecDeque<Fault>,
    /// Faults for one route only (`METHOD path-prefix`).
    route_faults: HashMap<String, VecDeque<Fault>>,
    transactions: HashMap<String, Transaction>,
    webhook_url: Option<String>,
    delivery: Delivery,
    next_id: u64,
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
        let (listener, base_url) = super::listen().await;
        let fake = FakePaystack {
            base_url,
            ..Default::default()
        };
        let router = Router::new()
            .route("/bank", get(list_banks))
            .route("/bank/resolve", get(resolve))
            .route("/transferrecipient", post(create_recipient))
            .route("/transaction/initialize", post(initialize))
            .route("/transaction/verify/{reference}", get(verify))
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "Route not found", "api_error", None)
            })
            .layer(middleware::from_fn_with_state(fake.clone(), gate))
            .with_state(fake.clone());
        super::serve_on(listener, router);
        fake
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Faults for the next calls to one route, e.g. `("POST /transaction/initialize", ...)`.
    pub fn fail_route(&self, route: &str, faults: &[Fault]) {
        self.inner
            .lock()
            .unwrap()
            .route_faults
            .entry(route.to_owned())
            .or_default()
            .extend(faults);
    }

    pub fn set_webhook_url(&self, url: &str) {
        self.inner.lock().unwrap().webhook_url = Some(url.to_owned());
    }

    pub fn set_delivery(&self, delivery: Delivery) {
        self.inner.lock().unwrap().delivery = delivery;
    }

    pub fn transaction(&self, reference: &str) -> Option<Transaction> {
        self.inner
            .lock()
            .unwrap()
            .transactions
            .get(reference)
            .cloned()
    }

    /// Changes what verify will report as the amount (a tampered or partial payment).
    pub fn set_amount(&self, reference: &str, amount: i64) {
        if let Some(t) = self.inner.lock().unwrap().transactions.get_mut(reference) {
            t.amount = amount;
        }
    }

    /// The buyer pays on the checkout page: the transaction succeeds and `charge.success` is
    /// delivered as the delivery mode says. Returns the delivery statuses.
    pub async fn pay(&self, reference: &str) -> Vec<u16> {
        let (body, url, delivery) = {
            let mut inner = self.inner.lock().unwrap();
            let t = inner
                .transactions
                .get_mut(reference)
                .expect("a known reference");
            t.status = "success".into();
            t.fees = Some(fee(t.amount));
            t.paid_at = Some("2026-11-26T10:00:00.000Z".into());
            let body = charge_success(t);
            (body, inner.webhook_url.clone(), inner.delivery)
        };
        self.deliver(body, url, delivery).await
    }

    /// Sends `charge.success` for an already paid transaction again (a late redelivery).
    pub async fn redeliver(&self, reference: &str) -> Vec<u16> {
        let (body, url) = {
            let inner = self.inner.lock().unwrap();
            let t = inner
                .transactions
                .get(reference)
                .expect("a known reference");
            (charge_success(t), inner.webhook_url.clone())
        };
        self.deliver(body, url, Delivery::Once).await
    }

    /// A `charge.success` delivery for a transaction that was never paid (verify says
    /// `abandoned`): what a forged-but-signed or confused delivery looks like.
    pub async fn deliver_without_paying(&self, reference: &str) -> Vec<u16> {
        let (body, url) = {
            let inner = self.inner.lock().unwrap();
            let t = inner
                .transactions
                .get(reference)
                .expect("a known reference");
            let mut t = t.clone();
            t.status = "success".into();
            (charge_success(&t), inner.webhook_url.clone())
        };
        self.deliver(body, url, Delivery::Once).await
    }

    pub fn decline(&self, reference: &str) {
        if let Some(t) = self.inner.lock().unwrap().transactions.get_mut(reference) {
            t.status = "failed".into();
        }
    }

    async fn deliver(&self, body: Vec<u8>, url: Option<String>, delivery: Delivery) -> Vec<u16> {
        let Some(url) = url else { return vec![] };
        let key = if delivery == Delivery::BadSignature {
            "sk_test_wrong"
        } else {
            SECRET_KEY
        };
        let signature = sign(key, &body);
        let times = match delivery {
            Delivery::Never => 0,
            Delivery::Twice => 2,
            _ => 1,
        };
        let client = reqwest::Client::new();
        let sends = (0..times).map(|_| {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-paystack-signature", &signature)
                .body(body.clone())
                .send()
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.map(|r| r.status().as_u16()).unwrap_or(0))
            .collect()
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

/// HMAC-SHA512 hex of the body under `key` (external-apis.md §1.4), written for the fake.
pub fn sign(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Paystack's fee: 1.5 %, plus ₦100 from ₦2,500, capped at ₦2,000 (in kobo).
pub fn fee(amount: i64) -> i64 {
    let mut f = amount * 15 / 1000;
    if amount >= 250_000 {
        f += 10_000;
    }
    f.min(200_000)
}

fn verify_data(t: &Transaction) -> Value {
    json!({
        "id": t.id, "domain": "test", "status": t.status, "reference": t.reference,
        "amount": t.amount, "requested_amount": t.amount, "currency": t.currency,
        "gateway_response": "Successful", "channel": "card",
        "paid_at": t.paid_at, "paidAt": t.paid_at, "created_at": "2026-11-26T09:59:00.000Z",
        "fees": t.fees, "fees_split": null, "metadata": "",
        "customer": { "id": 1, "email": t.email, "customer_code": "CUS_fake" },
        "authorization": {}, "subaccount": {}, "split": {}, "plan": null,
    })
}

fn charge_success(t: &Transaction) -> Vec<u8> {
    // Compact JSON, as Paystack sends it.
    serde_json::to_vec(&json!({ "event": "charge.success", "data": verify_data(t) })).unwrap()
}

async fn initialize(State(fake): State<FakePaystack>, Json(body): Json<Value>) -> Response {
    let email = body["email"].as_str().unwrap_or_default().to_owned();
    if !email.contains('@') {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Email Address Passed",
            "validation_error",
            Some("invalid_email_address"),
        );
    }
    let amount = body["amount"]
        .as_i64()
        .or_else(|| body["amount"].as_str().and_then(|s| s.parse().ok()));
    let Some(amount) = amount.filter(|a| *a >= 5000) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Amount Sent",
            "validation_error",
            None,
        );
    };
    let reference = body["reference"].as_str().unwrap_or_default().to_owned();
    if reference.is_empty()
        || !reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.=".contains(c))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid reference",
            "validation_error",
            None,
        );
    }
    let mut inner = fake.inner.lock().unwrap();
    if inner.transactions.contains_key(&reference) {
        return error(
            StatusCode::BAD_REQUEST,
            "Duplicate Transaction Reference",
            "validation_error",
            Some("duplicate_reference"),
        );
    }
    inner.next_id += 1;
    let access_code = format!("ac{}", uuid::Uuid::new_v4().simple());
    let tx = Transaction {
        id: 4_099_000_000 + inner.next_id,
        reference: reference.clone(),
        email,
        amount,
        currency: body["currency"].as_str().unwrap_or("NGN").to_owned(),
        status: "abandoned".into(),
        access_code: access_code.clone(),
        fees: None,
        paid_at: None,
    };
    inner.transactions.insert(reference.clone(), tx);
    ok(
        "Authorization URL created",
        json!({ "authorization_url": format!("{}/checkout/{access_code}", fake.base_url),
                "access_code": access_code, "reference": reference }),
    )
}

async fn verify(
    State(fake): State<FakePaystack>,
    axum::extract::Path(reference): axum::extract::Path<String>,
) -> Response {
    match fake.inner.lock().unwrap().transactions.get(&reference) {
        Some(t) => ok("Verification successful", verify_data(t)),
        None => error(
            StatusCode::NOT_FOUND,
            "Transaction reference not found",
            "validation_error",
            Some("transaction_not_found"),
        ),
    }
}

/// Auth and fault injection in front of every route, as Paystack's edge does.
async fn gate(State(fake): State<FakePaystack>, req: Request, next: Next) -> Response {
    let fault = {
        let mut inner = fake.inner.lock().unwrap();
        let call = format!("{} {}", req.method(), req.uri().path());
        inner.requests.push(call.clone());
        let route_fault = inner
            .route_faults
            .iter_mut()
            .find(|(route, _)| call.starts_with(route.as_str()))
            .and_then(|(_, q)| q.pop_front());
        route_fault.or_else(|| inner.faults.pop_front())
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
