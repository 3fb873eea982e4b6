//! Fake Paystack (§1): Bearer auth with `Invalid key` (401), the `{status, message, data}`
//! envelopes, fault injection. Endpoints are added with the features that call them:
//! banks, resolve, recipients, initialize/verify, refunds (§1.5) and transfers (§1.9), with
//! their webhooks (§1.4) sent in the background after the answer.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use time::{OffsetDateTime, macros::format_description};

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

/// A refund as the fake holds it (§1.5).
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: u64,
    pub transaction_id: u64,
    /// The refunded transaction's reference (ours).
    pub reference: String,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `processing`, `processed`, `failed` or `needs-attention`.
    pub status: String,
    pub customer_note: Option<String>,
    pub merchant_note: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub refunded_at: Option<String>,
    pub expected_at: String,
}

/// What happens to a refund after `POST /refund` queued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefundOutcome {
    /// `refund.pending`, then `refund.processed`.
    #[default]
    Process,
    /// `refund.pending`, then `refund.failed`; the amount can be refunded again.
    Fail,
    /// Like `Fail` for the next refund only; later refunds get the default outcome.
    FailOnce,
    /// `refund.pending`, then `refund.needs-attention`.
    NeedsAttention,
    /// Only `refund.pending`; the test moves it on with `advance_refund`.
    Manual,
}

impl RefundOutcome {
    /// The status the fake moves the refund to by itself after `pending`, if any.
    fn final_status(self) -> Option<&'static str> {
        match self {
            Self::Process => Some("processed"),
            Self::Fail | Self::FailOnce => Some("failed"),
            Self::NeedsAttention => Some("needs-attention"),
            Self::Manual => None,
        }
    }
}

/// A transfer as the fake holds it (§1.9).
#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: u64,
    pub transfer_code: String,
    pub reference: String,
    pub amount: i64,
    pub currency: String,
    pub recipient_code: String,
    pub recipient_id: u64,
    pub reason: Option<String>,
    /// `pending`, `success`, `failed` or `reversed`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// What happens to a transfer after `POST /transfer` queued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferOutcome {
    /// `success` and `transfer.success`.
    #[default]
    Success,
    /// `failed` and `transfer.failed`.
    Fail,
    /// Like `Fail` for the next transfer only; later transfers succeed.
    FailOnce,
    /// `transfer.success`, then `transfer.reversed`.
    Reverse,
    /// Stays `pending` until the test calls `advance_transfer`.
    Manual,
}

impl TransferOutcome {
    /// The statuses the fake moves the transfer through by itself, in order.
    fn statuses(self) -> &'static [&'static str] {
        match self {
            Self::Success => &["success"],
            Self::Fail | Self::FailOnce => &["failed"],
            Self::Reverse => &["success", "reversed"],
            Self::Manual => &[],
        }
    }
}

/// One webhook event the fake sent, with the app's answer to each copy (0: no answer).
#[derive(Debug, Clone)]
pub struct SentWebhook {
    pub event: String,
    /// The exact signed body.
    pub body: Vec<u8>,
    /// Empty when the delivery mode is `Never`.
    pub statuses: Vec<u16>,
}

/// Refund ids count up from here, apart from transaction ids (and above 2^31, as real ones).
const REFUND_ID_BASE: u64 = 3_018_000_000;
const TRANSFER_ID_BASE: u64 = 5_700_000_000;
const RECIPIENT_ID_BASE: u64 = 88_000_000;
/// The integration id Paystack puts in webhook bodies.
const INTEGRATION: u64 = 412_829;
/// Pause before background webhooks, so that the answer which queued them goes out first.
const AFTER_ANSWER: Duration = Duration::from_millis(50);
/// Longest wait for background webhooks in `advance_*` and `wait_for_webhooks`.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const REFUND_STATUSES: [&str; 5] = [
    "pending",
    "processing",
    "processed",
    "failed",
    "needs-attention",
];
const TRANSFER_STATUSES: [&str; 3] = ["success", "failed", "reversed"];

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
    /// When each of `requests` arrived.
    arrivals: Vec<std::time::Instant>,
    /// account_number → recipient code, so a second create returns the same recipient.
    recipients: HashMap<String, Value>,
    /// Every refund, oldest first.
    refunds: Vec<Refund>,
    /// Outcome of the next refunds of one transaction reference.
    refund_outcomes: HashMap<String, RefundOutcome>,
    default_refund_outcome: RefundOutcome,
    /// Send a refund's final event before `refund.pending`.
    refund_webhooks_reversed: bool,
    /// Refunds and transfers fail with `insufficient_balance`.
    insufficient_balance: bool,
    /// Every transfer, oldest first.
    transfers: Vec<Transfer>,
    transfer_outcome: TransferOutcome,
    /// Refund and transfer ids whose background webhooks are still being sent.
    in_flight: HashSet<u64>,
    /// Every webhook the fake sent (or, with `Delivery::Never`, would have sent).
    webhooks: Vec<SentWebhook>,
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
            .route("/refund", post(create_refund).get(list_refunds))
            .route("/refund/{id}", get(fetch_refund))
            .route("/transfer", post(create_transfer))
            .route("/transfer/verify/{reference}", get(verify_transfer))
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

    /// Drops the faults still queued for one route (the provider recovers).
    pub fn clear_route_faults(&self, route: &str) {
        self.inner.lock().unwrap().route_faults.remove(route);
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
        let statuses: Vec<u16> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.map(|r| r.status().as_u16()).unwrap_or(0))
            .collect();
        let event = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["event"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.inner.lock().unwrap().webhooks.push(SentWebhook {
            event,
            body,
            statuses: statuses.clone(),
        });
        statuses
    }

    /// Refunds and transfers fail with `insufficient_balance` while on; nothing is created.
    pub fn set_insufficient_balance(&self, on: bool) {
        self.inner.lock().unwrap().insufficient_balance = on;
    }

    /// Outcome of the next refunds of transaction `reference`. `FailOnce` applies to the next
    /// refund only; the one after gets the default outcome.
    pub fn set_refund_outcome(&self, reference: &str, outcome: RefundOutcome) {
        self.inner
            .lock()
            .unwrap()
            .refund_outcomes
            .insert(reference.to_owned(), outcome);
    }

    /// Outcome of refunds without their own (initially `Process`). `FailOnce` applies to the
    /// next such refund only, then the default is `Process` again.
    pub fn set_default_refund_outcome(&self, outcome: RefundOutcome) {
        self.inner.lock().unwrap().default_refund_outcome = outcome;
    }

    /// While on, a refund's final event is sent before its `refund.pending` (out of order).
    pub fn set_refund_webhooks_reversed(&self, on: bool) {
        self.inner.lock().unwrap().refund_webhooks_reversed = on;
    }

    /// Moves the latest refund of transaction `reference` to `status` (`processing`,
    /// `processed`, `failed`, `needs-attention`; `pending` only re-announces it) and sends
    /// `refund.<status>` as the delivery mode says, after the refund's own background
    /// webhooks. Returns the delivery statuses. Panics on an unknown reference or status.
    pub async fn advance_refund(&self, reference: &str, status: &str) -> Vec<u16> {
        assert!(
            REFUND_STATUSES.contains(&status),
            "unknown refund status {status}"
        );
        let latest = self
            .refunds(reference)
            .last()
            .map(|r| r.id)
            .unwrap_or_else(|| panic!("no refund for {reference}"));
        self.wait_until_sent(Some(latest)).await;
        self.refund_step(latest, status).await
    }

    /// Refunds of transaction `reference`, oldest first.
    pub fn refunds(&self, reference: &str) -> Vec<Refund> {
        self.all_refunds()
            .into_iter()
            .filter(|r| r.reference == reference)
            .collect()
    }

    /// Every refund, oldest first.
    pub fn all_refunds(&self) -> Vec<Refund> {
        self.inner.lock().unwrap().refunds.clone()
    }

    /// Outcome of the next transfers (initially `Success`; `FailOnce` for the next one only).
    pub fn set_transfer_outcome(&self, outcome: TransferOutcome) {
        self.inner.lock().unwrap().transfer_outcome = outcome;
    }

    /// Moves transfer `reference` to `status` (`success`, `failed`, `reversed`) and sends
    /// `transfer.<status>` as the delivery mode says, after the transfer's own background
    /// webhooks. Returns the delivery statuses. Panics on an unknown reference or status.
    pub async fn advance_transfer(&self, reference: &str, status: &str) -> Vec<u16> {
        assert!(
            TRANSFER_STATUSES.contains(&status),
            "unknown transfer status {status}"
        );
        let id = self
            .transfers()
            .iter()
            .find(|t| t.reference == reference)
            .map(|t| t.id)
            .unwrap_or_else(|| panic!("no transfer {reference}"));
        self.wait_until_sent(Some(id)).await;
        self.transfer_step(id, status).await
    }

    /// Every transfer, oldest first.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.inner.lock().unwrap().transfers.clone()
    }

    /// Transfers whose status is `success` (not failed, reversed or still pending).
    pub fn successful_transfers(&self) -> Vec<Transfer> {
        self.transfers()
            .into_iter()
            .filter(|t| t.status == "success")
            .collect()
    }

    /// Every webhook sent so far, in the order their deliveries finished.
    pub fn webhooks(&self) -> Vec<SentWebhook> {
        self.inner.lock().unwrap().webhooks.clone()
    }

    /// Waits (up to 10 s) until every background refund and transfer webhook has been sent.
    pub async fn wait_for_webhooks(&self) {
        self.wait_until_sent(None).await;
    }

    /// Waits (up to 10 s) until the background webhooks of `id` (or of everything) are sent.
    async fn wait_until_sent(&self, id: Option<u64>) {
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        while tokio::time::Instant::now() < deadline {
            let busy = {
                let inner = self.inner.lock().unwrap();
                match id {
                    Some(id) => inner.in_flight.contains(&id),
                    None => !inner.in_flight.is_empty(),
                }
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a new refund's webhooks in order, one after the other, after the answer.
    fn spawn_refund_webhooks(&self, refund_id: u64, outcome: RefundOutcome) {
        let fake = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(AFTER_ANSWER).await;
            let mut steps = vec!["pending"];
            steps.extend(outcome.final_status());
            if fake.inner.lock().unwrap().refund_webhooks_reversed {
                steps.reverse();
            }
            for status in steps {
                fake.refund_step(refund_id, status).await;
            }
            fake.inner.lock().unwrap().in_flight.remove(&refund_id);
        });
    }

    /// Moves a refund to `status` (`pending` changes nothing, so a late `refund.pending`
    /// never undoes a final status) and sends `refund.<status>`.
    async fn refund_step(&self, refund_id: u64, status: &str) -> Vec<u16> {
        let (body, url, delivery) = {
            let mut inner = self.inner.lock().unwrap();
            if status != "pending" {
                inner.set_refund_status(refund_id, status);
            }
            (
                inner.refund_event(refund_id, status),
                inner.webhook_url.clone(),
                inner.delivery,
            )
        };
        match body {
            Some(body) => self.deliver(body, url, delivery).await,
            None => vec![],
        }
    }

    /// Moves a new transfer through `statuses`, one webhook each, after the answer.
    fn spawn_transfer_webhooks(&self, transfer_id: u64, statuses: &'static [&'static str]) {
        let fake = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(AFTER_ANSWER).await;
            for status in statuses {
                fake.transfer_step(transfer_id, status).await;
            }
            fake.inner.lock().unwrap().in_flight.remove(&transfer_id);
        });
    }

    /// Moves a transfer to `status` and sends `transfer.<status>`.
    async fn transfer_step(&self, transfer_id: u64, status: &str) -> Vec<u16> {
        let (body, url, delivery) = {
            let mut inner = self.inner.lock().unwrap();
            inner.set_transfer_status(transfer_id, status);
            (
                inner.transfer_event(transfer_id),
                inner.webhook_url.clone(),
                inner.delivery,
            )
        };
        match body {
            Some(body) => self.deliver(body, url, delivery).await,
            None => vec![],
        }
    }

    /// How many calls for `METHOD path` arrived.
    pub fn count(&self, call: &str) -> usize {
        self.requests().iter().filter(|r| *r == call).count()
    }

    /// The most calls starting with `prefix` that arrived within any `window`.
    pub fn most_within(&self, prefix: &str, window: Duration) -> usize {
        let inner = self.inner.lock().unwrap();
        let times: Vec<std::time::Instant> = inner
            .requests
            .iter()
            .zip(&inner.arrivals)
            .filter(|(r, _)| r.starts_with(prefix))
            .map(|(_, t)| *t)
            .collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t - times[i] < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
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

async fn verify(State(fake): State<FakePaystack>, Path(reference): Path<String>) -> Response {
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
        inner.arrivals.push(std::time::Instant::now());
        inner.take_fault(&call)
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
        Some(Fault::BadGatewayHtml) => {
            return (
                StatusCode::BAD_GATEWAY,
                Html("<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"),
            )
                .into_response();
        }
        Some(Fault::RateLimited(reset)) => {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded!",
                "api_error",
                Some("rate_limited"),
            );
            let headers = res.headers_mut();
            headers.insert("x-ratelimit-limit", 100.into());
            headers.insert("x-ratelimit-remaining", 0.into());
            headers.insert("x-ratelimit-reset", reset.into());
            return res;
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
    match fault {
        Some(Fault::ServerErrorAfterAccept) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error",
            "api_error",
            None,
        ),
        Some(Fault::HangAfterAccept(d)) => {
            tokio::time::sleep(d).await;
            res
        }
        _ => res,
    }
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
            json!({ "id": RECIPIENT_ID_BASE + n as u64 + 1,
                    "recipient_code": format!("RCP_fake{n:06}"), "type": "nuban",
                    "name": body["name"], "currency": "NGN",
                    "details": { "account_number": account, "bank_code": bank } })
        })
        .clone();
    ok("Transfer recipient created successfully", recipient)
}

/// Whether fault `route` (`METHOD path`) covers `call`: the same path, or one below it.
fn route_matches(route: &str, call: &str) -> bool {
    call.strip_prefix(route)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || route.ends_with('/'))
}

impl Inner {
    /// The next fault for `call`: from the most specific route queue that covers it and still
    /// holds one, else from the queue for every call.
    fn take_fault(&mut self, call: &str) -> Option<Fault> {
        let route = self
            .route_faults
            .iter()
            .filter(|(route, q)| !q.is_empty() && route_matches(route, call))
            .map(|(route, _)| route.clone())
            .max_by_key(String::len);
        match route {
            Some(route) => self
                .route_faults
                .get_mut(&route)
                .and_then(VecDeque::pop_front),
            None => self.faults.pop_front(),
        }
    }

    /// A transaction by our reference, or by Paystack's numeric id (a number or a string).
    fn find_transaction(&self, key: &Value) -> Option<&Transaction> {
        let by_reference = key.as_str().and_then(|r| self.transactions.get(r));
        let id = key
            .as_u64()
            .or_else(|| key.as_str().and_then(|s| s.parse().ok()));
        by_reference.or_else(|| id.and_then(|id| self.transactions.values().find(|t| t.id == id)))
    }

    /// Sum of the refunds of `reference` whose status passes `counts`.
    fn refunded(&self, reference: &str, counts: impl Fn(&str) -> bool) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.reference == reference && counts(&r.status))
            .map(|r| r.amount)
            .sum()
    }

    /// Validates a `POST /refund` body: the transaction's reference and the amount to refund.
    fn check_refund(&self, body: &Value) -> Result<(String, i64), Rejection> {
        let Some(t) = self.find_transaction(&body["transaction"]) else {
            return Err(Rejection(
                StatusCode::NOT_FOUND,
                "Transaction not found",
                "validation_error",
                Some("transaction_not_found"),
            ));
        };
        if t.status != "success" && t.status != "reversed" {
            return Err(Rejection::bad_request("Transaction has not been paid"));
        }
        let left = t.amount - self.refunded(&t.reference, |s| s != "failed");
        if left <= 0 {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "Transaction has been fully reversed",
                "api_error",
                Some("transaction_reversed"),
            ));
        }
        if body["currency"].as_str().is_some_and(|c| c != t.currency) {
            return Err(Rejection::bad_request(
                "Currency does not match the transaction",
            ));
        }
        let amount = match &body["amount"] {
            Value::Null => left,
            v => v
                .as_i64()
                .filter(|a| *a > 0)
                .ok_or_else(|| Rejection::bad_request("Invalid Amount Sent"))?,
        };
        if amount > left {
            return Err(Rejection::bad_request(
                "Refund amount cannot be more than what is left to refund",
            ));
        }
        if self.insufficient_balance {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "Insufficient balance to fulfill this refund",
                "api_error",
                Some("insufficient_balance"),
            ));
        }
        Ok((t.reference.clone(), amount))
    }

    /// The outcome of the next refund of `reference`, using up a `FailOnce`.
    fn take_refund_outcome(&mut self, reference: &str) -> RefundOutcome {
        match self.refund_outcomes.get(reference).copied() {
            Some(RefundOutcome::FailOnce) => {
                self.refund_outcomes.remove(reference);
                RefundOutcome::FailOnce
            }
            Some(outcome) => outcome,
            None => {
                let outcome = self.default_refund_outcome;
                if outcome == RefundOutcome::FailOnce {
                    self.default_refund_outcome = RefundOutcome::Process;
                }
                outcome
            }
        }
    }

    /// Creates a `pending` refund for a valid `POST /refund` body. Returns the answer's data,
    /// the refund id and what happens to it next.
    fn queue_refund(&mut self, body: &Value) -> Result<(Value, u64, RefundOutcome), Rejection> {
        let (reference, amount) = self.check_refund(body)?;
        let t = self.transactions[&reference].clone();
        let now = OffsetDateTime::now_utc();
        let refund = Refund {
            id: REFUND_ID_BASE + self.refunds.len() as u64 + 1,
            transaction_id: t.id,
            reference: reference.clone(),
            amount,
            currency: t.currency.clone(),
            status: "pending".into(),
            customer_note: body["customer_note"].as_str().map(str::to_owned),
            merchant_note: body["merchant_note"].as_str().map(str::to_owned),
            created_at: stamp(now),
            updated_at: stamp(now),
            refunded_at: None,
            expected_at: stamp(now + time::Duration::days(9)),
        };
        let data = queued_refund_json(&refund, &t);
        let id = refund.id;
        self.refunds.push(refund);
        self.in_flight.insert(id);
        Ok((data, id, self.take_refund_outcome(&reference)))
    }

    /// Sets a refund's status, then the transaction's: `reversed` once its processed refunds
    /// cover the amount, `success` otherwise.
    fn set_refund_status(&mut self, refund_id: u64, status: &str) {
        let Some(r) = self.refunds.iter_mut().find(|r| r.id == refund_id) else {
            return;
        };
        r.status = status.to_owned();
        r.updated_at = now();
        r.refunded_at = (status == "processed").then(now);
        let reference = r.reference.clone();
        let processed = self.refunded(&reference, |s| s == "processed");
        if let Some(t) = self.transactions.get_mut(&reference)
            && (t.status == "success" || t.status == "reversed")
        {
            let reversed = processed >= t.amount;
            t.status = if reversed { "reversed" } else { "success" }.into();
        }
    }

    /// The `refund.<status>` webhook body for a refund.
    fn refund_event(&self, refund_id: u64, status: &str) -> Option<Vec<u8>> {
        let r = self.refunds.iter().find(|r| r.id == refund_id)?;
        let t = self.transactions.get(&r.reference)?;
        let body = json!({
            "event": format!("refund.{status}"),
            "data": {
                "id": r.id.to_string(), "status": status, "transaction_reference": r.reference,
                "refund_reference": null, "amount": r.amount.to_string(), "currency": r.currency,
                "customer": { "first_name": "Test", "last_name": "Buyer", "email": t.email },
                "integration": INTEGRATION, "domain": "test",
            },
        });
        serde_json::to_vec(&body).ok()
    }

    /// A recipient by its `RCP_...` code.
    fn recipient(&self, code: &str) -> Option<&Value> {
        self.recipients
            .values()
            .find(|r| r["recipient_code"] == code)
    }

    /// Validates a `POST /transfer` body and returns the recipient's code and numeric id.
    fn check_transfer(&self, body: &Value) -> Result<(String, u64), Rejection> {
        if body["source"] != "balance" {
            return Err(Rejection::bad_request("Invalid balance source"));
        }
        if body["amount"].as_i64().is_none_or(|a| a < 100) {
            return Err(Rejection::bad_request("Invalid Amount Sent"));
        }
        if !body["reference"]
            .as_str()
            .is_some_and(valid_transfer_reference)
        {
            return Err(Rejection::bad_request("Invalid transfer reference"));
        }
        let code = body["recipient"].as_str().unwrap_or_default();
        let Some(recipient_id) = self.recipient(code).and_then(|r| r["id"].as_u64()) else {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "Invalid transfer recipient",
                "validation_error",
                Some("invalid_transfer_recipient"),
            ));
        };
        let reference = body["reference"].as_str().unwrap_or_default();
        if self.transfers.iter().any(|t| t.reference == reference) {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "Transfer reference already exists",
                "validation_error",
                Some("duplicate_reference"),
            ));
        }
        if self.insufficient_balance {
            return Err(Rejection(
                StatusCode::BAD_REQUEST,
                "Your balance is not enough to fulfil this request",
                "api_error",
                Some("insufficient_balance"),
            ));
        }
        Ok((code.to_owned(), recipient_id))
    }

    /// The outcome of the next transfer, using up a `FailOnce`.
    fn take_transfer_outcome(&mut self) -> TransferOutcome {
        let outcome = self.transfer_outcome;
        if outcome == TransferOutcome::FailOnce {
            self.transfer_outcome = TransferOutcome::Success;
        }
        outcome
    }

    /// Creates a `pending` transfer for a valid `POST /transfer` body, with what happens next.
    fn queue_transfer(&mut self, body: &Value) -> Result<(Transfer, TransferOutcome), Rejection> {
        let (recipient_code, recipient_id) = self.check_transfer(body)?;
        let n = self.transfers.len() + 1;
        let created = now();
        let transfer = Transfer {
            id: TRANSFER_ID_BASE + n as u64,
            transfer_code: format!("TRF_fake{n:06}"),
            reference: body["reference"].as_str().unwrap_or_default().to_owned(),
            amount: body["amount"].as_i64().unwrap_or_default(),
            currency: body["currency"].as_str().unwrap_or("NGN").to_owned(),
            recipient_code,
            recipient_id,
            reason: body["reason"].as_str().map(str::to_owned),
            status: "pending".into(),
            created_at: created.clone(),
            updated_at: created,
        };
        self.transfers.push(transfer.clone());
        self.in_flight.insert(transfer.id);
        Ok((transfer, self.take_transfer_outcome()))
    }

    fn set_transfer_status(&mut self, transfer_id: u64, status: &str) {
        if let Some(t) = self.transfers.iter_mut().find(|t| t.id == transfer_id) {
            t.status = status.to_owned();
            t.updated_at = now();
        }
    }

    /// The `transfer.<status>` webhook body for a transfer, from its current status.
    fn transfer_event(&self, transfer_id: u64) -> Option<Vec<u8>> {
        let t = self.transfers.iter().find(|t| t.id == transfer_id)?;
        let r = self.recipient(&t.recipient_code)?;
        let body = json!({
            "event": format!("transfer.{}", t.status),
            "data": {
                "amount": t.amount, "currency": t.currency, "reference": t.reference,
                "transfer_code": t.transfer_code, "status": t.status, "reason": t.reason,
                "recipient": { "recipient_code": t.recipient_code, "details": {
                    "account_number": r["details"]["account_number"],
                    "bank_code": r["details"]["bank_code"] } },
                "integration": { "id": INTEGRATION, "is_live": false, "business_name": "Fake" },
                "createdAt": t.created_at,
            },
        });
        serde_json::to_vec(&body).ok()
    }
}

/// An error answer (status, message, type, code), kept small until it is sent.
struct Rejection(StatusCode, &'static str, &'static str, Option<&'static str>);

impl Rejection {
    /// 400 `validation_error` without a code.
    fn bad_request(message: &'static str) -> Self {
        Rejection(StatusCode::BAD_REQUEST, message, "validation_error", None)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2, self.3)
    }
}

/// ISO 8601 with milliseconds and `Z`, as Paystack writes dates.
fn stamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

fn now() -> String {
    stamp(OffsetDateTime::now_utc())
}

/// §1.9: 16–50 characters of lowercase `a-z`, digits, `-` and `_`.
fn valid_transfer_reference(reference: &str) -> bool {
    (16..=50).contains(&reference.len())
        && reference
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Paystack's NGN transfer fee in kobo: ₦10 up to ₦5,000, ₦25 up to ₦50,000, else ₦50.
pub fn transfer_fee(amount: i64) -> i64 {
    if amount <= 500_000 {
        1_000
    } else if amount <= 5_000_000 {
        2_500
    } else {
        5_000
    }
}

/// A refund as `GET /refund/:id` and the list show it: `transaction` is the numeric id.
fn refund_json(r: &Refund) -> Value {
    let deducted = matches!(r.status.as_str(), "processing" | "processed");
    json!({
        "id": r.id, "integration": INTEGRATION, "domain": "test", "transaction": r.transaction_id,
        "amount": r.amount, "currency": r.currency, "status": r.status,
        "deducted_amount": if deducted { r.amount } else { 0 }, "fully_deducted": deducted,
        "refunded_at": r.refunded_at, "expected_at": r.expected_at,
        "customer_note": r.customer_note, "merchant_note": r.merchant_note,
        "createdAt": r.created_at, "updatedAt": r.updated_at,
    })
}

/// A refund as `POST /refund` answers it: `transaction` is an object.
fn queued_refund_json(r: &Refund, t: &Transaction) -> Value {
    let mut data = refund_json(r);
    data["transaction"] = json!({ "id": t.id, "reference": t.reference, "amount": t.amount,
                                  "currency": t.currency });
    data["refunded_by"] = json!("fake@paystack.test");
    let kind = if r.amount == t.amount {
        "Full"
    } else {
        "Partial"
    };
    data["refund_type"] = json!(kind);
    data
}

/// A transfer as `POST /transfer` answers it: `recipient` is the numeric id.
fn transfer_json(t: &Transfer) -> Value {
    json!({
        "id": t.id, "integration": INTEGRATION, "domain": "test", "source": "balance",
        "transfer_code": t.transfer_code, "reference": t.reference, "amount": t.amount,
        "currency": t.currency, "status": t.status, "recipient": t.recipient_id,
        "reason": t.reason, "createdAt": t.created_at, "updatedAt": t.updated_at,
    })
}

/// A transfer as verify shows it: `recipient` expanded, with `fee_charged`.
fn verified_transfer_json(t: &Transfer, recipient: &Value) -> Value {
    let mut data = transfer_json(t);
    data["recipient"] = json!({
        "recipient_code": t.recipient_code, "name": recipient["name"],
        "details": { "account_number": recipient["details"]["account_number"],
                     "bank_code": recipient["details"]["bank_code"] },
    });
    data["fee_charged"] = json!(transfer_fee(t.amount));
    data
}

async fn create_refund(State(fake): State<FakePaystack>, Json(body): Json<Value>) -> Response {
    let queued = fake.inner.lock().unwrap().queue_refund(&body);
    match queued {
        Ok((data, id, outcome)) => {
            fake.spawn_refund_webhooks(id, outcome);
            ok("Refund has been queued for processing", data)
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn fetch_refund(State(fake): State<FakePaystack>, Path(id): Path<String>) -> Response {
    let inner = fake.inner.lock().unwrap();
    let refund = id
        .parse::<u64>()
        .ok()
        .and_then(|id| inner.refunds.iter().find(|r| r.id == id));
    match refund {
        Some(r) => ok("Refund retrieved", refund_json(r)),
        None => error(
            StatusCode::NOT_FOUND,
            "Refund not found",
            "validation_error",
            None,
        ),
    }
}

/// Offset-paged refunds, newest first, of one transaction (by numeric id) or of all.
async fn list_refunds(
    State(fake): State<FakePaystack>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let transaction = match q.get("transaction").map(|t| t.parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return Rejection::bad_request("transaction must be a numeric transaction id")
                .into_response();
        }
    };
    let param = |name: &str, default: usize| {
        q.get(name)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let per_page = param("perPage", 50).clamp(1, 100);
    let page = param("page", 1).max(1);
    let inner = fake.inner.lock().unwrap();
    let rows: Vec<&Refund> = inner
        .refunds
        .iter()
        .rev()
        .filter(|r| transaction.is_none_or(|id| r.transaction_id == id))
        .collect();
    let skipped = (page - 1) * per_page;
    let data: Vec<Value> = rows
        .iter()
        .skip(skipped)
        .take(per_page)
        .map(|r| refund_json(r))
        .collect();
    Json(json!({
        "status": true, "message": "Refunds retrieved", "data": data,
        "meta": { "total": rows.len(), "skipped": skipped, "perPage": per_page, "page": page,
                  "pageCount": rows.len().div_ceil(per_page) },
    }))
    .into_response()
}

async fn create_transfer(State(fake): State<FakePaystack>, Json(body): Json<Value>) -> Response {
    let queued = fake.inner.lock().unwrap().queue_transfer(&body);
    match queued {
        Ok((transfer, outcome)) => {
            fake.spawn_transfer_webhooks(transfer.id, outcome.statuses());
            ok("Transfer has been queued", transfer_json(&transfer))
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn verify_transfer(
    State(fake): State<FakePaystack>,
    Path(reference): Path<String>,
) -> Response {
    let inner = fake.inner.lock().unwrap();
    let found = inner
        .transfers
        .iter()
        .find(|t| t.reference == reference)
        .and_then(|t| Some((t, inner.recipient(&t.recipient_code)?)));
    match found {
        Some((t, r)) => ok("Transfer retrieved", verified_transfer_json(t, r)),
        None => error(
            StatusCode::NOT_FOUND,
            "Transfer not found",
            "validation_error",
            Some("transfer_not_found"),
        ),
    }
}
