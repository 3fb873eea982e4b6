//! Paystack: the `PaymentGateway` trait, the real HTTP client and the built-in sandbox used
//! when no `PAYSTACK_SECRET_KEY` is set.
//!
//! Contract: `shared/contracts/external-apis.md` §1. Every call goes to
//! `PAYSTACK_BASE_URL` with the secret key as a bearer token; answers are the
//! `{status, message, data, meta}` envelope. The client retries once, quickly, on connection
//! errors, 429 and 5xx of idempotent reads only; long retries belong to jobs.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bank {
    pub name: String,
    pub code: String,
    pub slug: String,
}

#[derive(Clone)]
pub struct ResolvedAccount {
    pub account_number: String,
    pub account_name: String,
}

#[derive(Clone)]
pub struct NewRecipient<'a> {
    pub name: &'a str,
    pub account_number: &'a str,
    pub bank_code: &'a str,
}

/// An account number as logs may show it: its last four digits.
fn last4(account_number: &str) -> String {
    let tail = account_number.len().saturating_sub(4);
    format!("…{}", account_number.get(tail..).unwrap_or_default())
}

impl std::fmt::Debug for ResolvedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedAccount")
            .field("account_number", &last4(&self.account_number))
            .field("account_name", &self.account_name)
            .finish()
    }
}

impl std::fmt::Debug for NewRecipient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRecipient")
            .field("name", &self.name)
            .field("account_number", &last4(self.account_number))
            .field("bank_code", &self.bank_code)
            .finish()
    }
}

/// What we ask Paystack to charge.
#[derive(Debug, Clone)]
pub struct NewTransaction<'a> {
    pub email: &'a str,
    /// Kobo.
    pub amount: i64,
    pub currency: &'a str,
    pub reference: &'a str,
    pub order_id: uuid::Uuid,
    pub event_id: uuid::Uuid,
}

#[derive(Debug, Clone)]
pub struct Checkout {
    pub authorization_url: String,
    pub access_code: String,
}

/// Verify's `data.status`, reduced to what we act on (external-apis.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    Success,
    Failed,
    /// Refunded in full or charged back.
    Reversed,
    /// `abandoned`, `ongoing`, `pending`, `processing`, `queued`, or anything new: not final.
    NotFinal(String),
    /// Paystack has no transaction with this reference.
    NotFound,
}

#[derive(Debug, Clone)]
pub struct Verification {
    /// Paystack's numeric transaction id (what `GET /refund?transaction=` takes).
    pub transaction_id: Option<i64>,
    pub status: TxStatus,
    pub amount: i64,
    pub currency: String,
    /// Paystack's fee in kobo.
    pub fees: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Paystack refused the request (4xx other than 429): retrying will not help.
    #[error("paystack rejected the request ({status}): {message}")]
    Rejected {
        status: u16,
        message: String,
        code: Option<String>,
    },
    /// Not reachable, timed out, 5xx, or an answer we cannot read.
    #[error("paystack unavailable: {0}")]
    Unavailable(String),
    /// 429: over Paystack's rate limit until its window ends (`x-ratelimit-reset`).
    #[error("paystack rate limit reached; retry in {}s", retry_after.as_secs())]
    Limited { retry_after: Duration },
}

impl Verification {
    fn not_found() -> Self {
        Self {
            transaction_id: None,
            status: TxStatus::NotFound,
            amount: 0,
            currency: String::new(),
            fees: None,
        }
    }
}

impl GatewayError {
    /// Paystack's structured error code, when it refused with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GatewayError::Rejected { code, .. } => code.as_deref(),
            GatewayError::Unavailable(_) | GatewayError::Limited { .. } => None,
        }
    }

    /// "Insufficient balance" on a refund or transfer: our balance, not the request, is
    /// wrong — keep the item and retry later (DESIGN.md "Money details").
    pub fn is_insufficient_balance(&self) -> bool {
        match self {
            GatewayError::Rejected { message, code, .. } => {
                code.as_deref() == Some("insufficient_balance")
                    || message.to_ascii_lowercase().contains("balance")
            }
            GatewayError::Unavailable(_) | GatewayError::Limited { .. } => false,
        }
    }
}

/// What we ask Paystack to refund: always the whole transaction (`amount` = what was paid).
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    /// Our order reference (Paystack accepts the reference or its numeric id).
    pub transaction: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub customer_note: &'a str,
    pub merchant_note: &'a str,
}

/// A refund's status (external-apis.md §1.5). Unknown values are not final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    Processing,
    Processed,
    Failed,
    NeedsAttention,
    Unknown(String),
}

impl RefundStatus {
    fn parse(raw: &str) -> Self {
        match raw {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "processed" => Self::Processed,
            "failed" => Self::Failed,
            "needs-attention" | "needs_attention" => Self::NeedsAttention,
            other => {
                tracing::warn!(
                    status = other,
                    "unknown Paystack refund status; treated as not final"
                );
                Self::Unknown(other.to_owned())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RefundInfo {
    pub id: i64,
    pub amount: i64,
    pub status: RefundStatus,
}

/// A transfer to an organizer's recipient (§1.9). `reference` is Paystack's dedupe key.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    pub amount: i64,
    pub recipient: &'a str,
    pub reference: &'a str,
    pub reason: &'a str,
}

/// A transfer's status: `success` and the failures are final; everything else is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferStatus {
    Success,
    /// `failed`, `abandoned`, `blocked`, `rejected`: no money left; a new attempt may start.
    Failed(String),
    /// Paid, then returned to our balance: a new attempt may start.
    Reversed,
    /// `pending`, `otp`, `received`, `processing` or anything new.
    NotFinal(String),
}

impl TransferStatus {
    fn parse(raw: &str) -> Self {
        match raw {
            "success" => Self::Success,
            "reversed" => Self::Reversed,
            "failed" | "abandoned" | "blocked" | "rejected" => Self::Failed(raw.to_owned()),
            other => Self::NotFinal(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TransferInfo {
    pub transfer_code: Option<String>,
    pub status: TransferStatus,
}

#[derive(Deserialize)]
struct RawRefund {
    #[serde(deserialize_with = "flexible_i64")]
    id: Option<i64>,
    #[serde(default, deserialize_with = "flexible_i64")]
    amount: Option<i64>,
    status: String,
}

impl RawRefund {
    fn into_info(self) -> Result<RefundInfo, GatewayError> {
        Ok(RefundInfo {
            id: self
                .id
                .ok_or_else(|| GatewayError::Unavailable("refund without an id".into()))?,
            amount: self.amount.unwrap_or(0),
            status: RefundStatus::parse(&self.status),
        })
    }
}

#[derive(Deserialize)]
struct RawTransfer {
    #[serde(default)]
    transfer_code: Option<String>,
    status: String,
}

impl From<RawTransfer> for TransferInfo {
    fn from(r: RawTransfer) -> Self {
        Self {
            transfer_code: r.transfer_code,
            status: TransferStatus::parse(&r.status),
        }
    }
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Every active Nigerian bank, all cursor pages, deduplicated by code.
    async fn list_banks(&self) -> Result<Vec<Bank>, GatewayError>;
    /// The account holder's name as the bank knows it.
    async fn resolve_account(
        &self,
        account_number: &str,
        bank_code: &str,
    ) -> Result<ResolvedAccount, GatewayError>;
    /// A transfer recipient (`RCP_...`) for payouts.
    async fn create_recipient(&self, recipient: NewRecipient<'_>) -> Result<String, GatewayError>;
    /// Starts a checkout. Not retried: a lost answer is reconciled with `verify`.
    async fn initialize(&self, tx: NewTransaction<'_>) -> Result<Checkout, GatewayError>;
    /// The state of a transaction: the only source of truth for payments.
    async fn verify(&self, reference: &str) -> Result<Verification, GatewayError>;
    /// `POST /refund`. Not retried here: a lost answer is reconciled with `list_refunds`.
    async fn refund(&self, refund: NewRefund<'_>) -> Result<RefundInfo, GatewayError>;
    /// `GET /refund/:id`.
    async fn fetch_refund(&self, id: i64) -> Result<RefundInfo, GatewayError>;
    /// `GET /refund?transaction=<id>`: every refund of one transaction.
    async fn list_refunds(&self, transaction_id: i64) -> Result<Vec<RefundInfo>, GatewayError>;
    /// `POST /transfer`. Not retried here: a lost answer is looked up by its reference.
    async fn transfer(&self, transfer: NewTransfer<'_>) -> Result<TransferInfo, GatewayError>;
    /// `GET /transfer/verify/:reference`; `None` when Paystack has no such transfer.
    async fn verify_transfer(&self, reference: &str) -> Result<Option<TransferInfo>, GatewayError>;
}

/// Money fields arrive as numbers or as strings (external-apis.md §0.1); accept both.
fn flexible_i64<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Text(String),
        Null,
    }
    Ok(match Raw::deserialize(de)? {
        Raw::Int(n) => Some(n),
        Raw::Text(s) => s.trim().parse().ok(),
        Raw::Null => None,
    })
}

#[derive(Deserialize)]
struct RawVerification {
    #[serde(default, deserialize_with = "flexible_i64")]
    id: Option<i64>,
    status: String,
    #[serde(default, deserialize_with = "flexible_i64")]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, deserialize_with = "flexible_i64")]
    fees: Option<i64>,
}

fn tx_status(raw: &str) -> TxStatus {
    match raw {
        "success" => TxStatus::Success,
        "failed" => TxStatus::Failed,
        "reversed" => TxStatus::Reversed,
        other => {
            if !matches!(
                other,
                "abandoned" | "ongoing" | "pending" | "processing" | "queued"
            ) {
                tracing::warn!(
                    status = other,
                    "unknown Paystack transaction status; treated as not final"
                );
            }
            TxStatus::NotFinal(other.to_owned())
        }
    }
}

pub struct PaystackClient {
    http: reqwest::Client,
    base_url: String,
    secret_key: SecretString,
    /// Per call (PAYSTACK_TIMEOUT_MILLIS): a timeout on a write is an unknown outcome.
    timeout: Duration,
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: bool,
    #[serde(default)]
    message: String,
    data: Option<T>,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct RawBank {
    name: String,
    code: String,
    #[serde(default)]
    slug: String,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    is_deleted: Option<bool>,
}

fn yes() -> bool {
    true
}

impl PaystackClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        secret_key: SecretString,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key,
            timeout,
        }
    }

    /// Sends a request and opens the envelope. `idempotent` requests get one quick retry.
    async fn call<T: DeserializeOwned>(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        idempotent: bool,
    ) -> Result<(T, Option<Meta>), GatewayError> {
        let attempts = if idempotent { 2 } else { 1 };
        let mut last = GatewayError::Unavailable("not attempted".into());
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match self.once(&build).await {
                Err(e @ GatewayError::Unavailable(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    async fn once<T: DeserializeOwned>(
        &self,
        build: &impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(T, Option<Meta>), GatewayError> {
        // without_url: the URL may carry an account number (/bank/resolve?account_number=…).
        let res = build()
            .timeout(self.timeout)
            .bearer_auth(self.secret_key.expose_secret())
            .send()
            .await
            .map_err(|e| {
                GatewayError::Unavailable(format!("request failed: {}", e.without_url()))
            })?;
        let status = res.status();
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Seconds until the window ends: Paystack's `x-ratelimit-reset`, else a standard
        // `Retry-After` in seconds.
        let seconds = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let res_headers_reset = seconds("x-ratelimit-reset").or_else(|| seconds("retry-after"));
        let bytes = res.bytes().await.map_err(|e| {
            GatewayError::Unavailable(format!("reading the answer: {}", e.without_url()))
        })?;
        if status.as_u16() == 429 {
            // Paystack says when its window ends; 1 to 60 s, whatever it sends.
            let reset = res_headers_reset.unwrap_or(1).clamp(1, 60);
            tracing::warn!(?request_id, reset, "paystack rate limit reached");
            return Err(GatewayError::Limited {
                retry_after: Duration::from_secs(reset),
            });
        }
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ?request_id,
                "paystack unavailable"
            );
            return Err(GatewayError::Unavailable(format!("HTTP {status}")));
        }
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| {
            if status.is_success() {
                GatewayError::Unavailable(format!("unreadable answer: {e}"))
            } else {
                GatewayError::Rejected {
                    status: status.as_u16(),
                    message: format!("unreadable error body (HTTP {status})"),
                    code: None,
                }
            }
        })?;
        match (status.is_success() && envelope.status, envelope.data) {
            (true, Some(data)) => Ok((data, envelope.meta)),
            (true, None) => Err(GatewayError::Unavailable("answer without data".into())),
            (false, _) => {
                tracing::info!(status = status.as_u16(), ?request_id, message = %envelope.message, "paystack refused");
                Err(GatewayError::Rejected {
                    status: status.as_u16(),
                    message: envelope.message,
                    code: envelope.code,
                })
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

#[async_trait]
impl PaymentGateway for PaystackClient {
    async fn list_banks(&self) -> Result<Vec<Bank>, GatewayError> {
        let mut banks: Vec<Bank> = Vec::new();
        let mut next: Option<String> = None;
        // A bound on pages, so a provider bug cannot loop us forever.
        for _ in 0..50 {
            let mut query = vec![
                ("country", "nigeria".to_owned()),
                ("currency", "NGN".to_owned()),
                ("use_cursor", "true".to_owned()),
                ("perPage", "100".to_owned()),
            ];
            if let Some(cursor) = &next {
                query.push(("next", cursor.clone()));
            }
            let (page, meta): (Vec<RawBank>, _) = self
                .call(|| self.http.get(self.url("/bank")).query(&query), true)
                .await?;
            for b in page {
                if b.active
                    && !b.is_deleted.unwrap_or(false)
                    && !banks.iter().any(|x| x.code == b.code)
                {
                    banks.push(Bank {
                        name: b.name,
                        code: b.code,
                        slug: b.slug,
                    });
                }
            }
            next = meta
                .and_then(|m| m.next)
                .filter(|n| !n.is_empty() && n != "null");
            if next.is_none() {
                return Ok(banks);
            }
        }
        Ok(banks)
    }

    async fn resolve_account(
        &self,
        account_number: &str,
        bank_code: &str,
    ) -> Result<ResolvedAccount, GatewayError> {
        #[derive(Deserialize)]
        struct Resolved {
            account_number: String,
            account_name: String,
        }
        let (r, _): (Resolved, _) = self
            .call(
                || {
                    self.http
                        .get(self.url("/bank/resolve"))
                        .query(&[("account_number", account_number), ("bank_code", bank_code)])
                },
                true,
            )
            .await?;
        Ok(ResolvedAccount {
            account_number: r.account_number,
            account_name: r.account_name,
        })
    }

    async fn create_recipient(&self, r: NewRecipient<'_>) -> Result<String, GatewayError> {
        #[derive(Deserialize)]
        struct Recipient {
            recipient_code: String,
        }
        let body = serde_json::json!({
            "type": "nuban",
            "name": r.name,
            "account_number": r.account_number,
            "bank_code": r.bank_code,
            "currency": "NGN",
        });
        // Paystack answers an existing recipient for the same account, so a retry is safe.
        let (rec, _): (Recipient, _) = self
            .call(
                || self.http.post(self.url("/transferrecipient")).json(&body),
                true,
            )
            .await?;
        Ok(rec.recipient_code)
    }

    async fn initialize(&self, tx: NewTransaction<'_>) -> Result<Checkout, GatewayError> {
        #[derive(Deserialize)]
        struct Raw {
            authorization_url: String,
            access_code: String,
        }
        let body = serde_json::json!({
            "email": tx.email,
            "amount": tx.amount,
            "currency": tx.currency,
            "reference": tx.reference,
            "metadata": { "order_id": tx.order_id, "event_id": tx.event_id },
        });
        let (raw, _): (Raw, _) = self
            .call(
                || {
                    self.http
                        .post(self.url("/transaction/initialize"))
                        .json(&body)
                },
                false,
            )
            .await?;
        Ok(Checkout {
            authorization_url: raw.authorization_url,
            access_code: raw.access_code,
        })
    }

    async fn verify(&self, reference: &str) -> Result<Verification, GatewayError> {
        let path = format!("/transaction/verify/{}", urlencode(reference));
        match self
            .call::<RawVerification>(|| self.http.get(self.url(&path)), true)
            .await
        {
            Ok((raw, _)) => Ok(Verification {
                transaction_id: raw.id,
                status: tx_status(&raw.status),
                amount: raw.amount.unwrap_or(0),
                currency: raw.currency.unwrap_or_default(),
                fees: raw.fees,
            }),
            // Unknown references answer 404 (current) or 400 (older) — both mean "none".
            Err(GatewayError::Rejected {
                status,
                message,
                code,
            }) if status == 404
                || code.as_deref() == Some("transaction_not_found")
                || (status == 400 && message.to_ascii_lowercase().contains("not found")) =>
            {
                Ok(Verification::not_found())
            }
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, r: NewRefund<'_>) -> Result<RefundInfo, GatewayError> {
        let body = serde_json::json!({
            "transaction": r.transaction,
            "amount": r.amount,
            "currency": r.currency,
            "customer_note": r.customer_note,
            "merchant_note": r.merchant_note,
        });
        let (raw, _): (RawRefund, _) = self
            .call(|| self.http.post(self.url("/refund")).json(&body), false)
            .await?;
        raw.into_info()
    }

    async fn fetch_refund(&self, id: i64) -> Result<RefundInfo, GatewayError> {
        let path = format!("/refund/{id}");
        let (raw, _): (RawRefund, _) = self.call(|| self.http.get(self.url(&path)), true).await?;
        raw.into_info()
    }

    async fn list_refunds(&self, transaction_id: i64) -> Result<Vec<RefundInfo>, GatewayError> {
        let query = [
            ("transaction", transaction_id.to_string()),
            ("perPage", "100".to_owned()),
        ];
        let (raw, _): (Vec<RawRefund>, _) = self
            .call(|| self.http.get(self.url("/refund")).query(&query), true)
            .await?;
        raw.into_iter().map(RawRefund::into_info).collect()
    }

    async fn transfer(&self, t: NewTransfer<'_>) -> Result<TransferInfo, GatewayError> {
        let body = serde_json::json!({
            "source": "balance",
            "amount": t.amount,
            "recipient": t.recipient,
            "reference": t.reference,
            "reason": t.reason,
            "currency": "NGN",
        });
        let (raw, _): (RawTransfer, _) = self
            .call(|| self.http.post(self.url("/transfer")).json(&body), false)
            .await?;
        Ok(raw.into())
    }

    async fn verify_transfer(&self, reference: &str) -> Result<Option<TransferInfo>, GatewayError> {
        let path = format!("/transfer/verify/{}", urlencode(reference));
        match self
            .call::<RawTransfer>(|| self.http.get(self.url(&path)), true)
            .await
        {
            Ok((raw, _)) => Ok(Some(raw.into())),
            Err(GatewayError::Rejected { status, code, .. })
                if status == 404 || code.as_deref() == Some("transfer_not_found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The development stand-in: a few real banks, any 10-digit account resolves, recipients are
/// made up, and checkouts are served by the app itself (`/sandbox/checkout/{reference}`),
/// with transactions kept in Redis. Never used in production (configuration refuses it).
pub struct SandboxGateway {
    redis: crate::kv::Redis,
    public_base_url: String,
}

#[derive(Serialize, Deserialize)]
pub struct SandboxTransaction {
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub status: String,
}

impl SandboxGateway {
    pub fn new(redis: crate::kv::Redis, public_base_url: String) -> Self {
        Self {
            redis,
            public_base_url,
        }
    }

    fn key(redis: &crate::kv::Redis, reference: &str) -> String {
        redis.key(format!("sandbox:tx:{reference}"))
    }

    pub async fn load(
        redis: &crate::kv::Redis,
        reference: &str,
    ) -> Result<Option<SandboxTransaction>, GatewayError> {
        use redis::AsyncCommands;
        let mut conn = redis.conn();
        let raw: Option<String> = conn
            .get(Self::key(redis, reference))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Settles a sandbox checkout as paid (`success`) or declined (`failed`).
    pub async fn settle(
        redis: &crate::kv::Redis,
        reference: &str,
        status: &str,
    ) -> Result<Option<SandboxTransaction>, GatewayError> {
        use redis::AsyncCommands;
        let Some(mut tx) = Self::load(redis, reference).await? else {
            return Ok(None);
        };
        tx.status = status.to_owned();
        let mut conn = redis.conn();
        let _: () = conn
            .set_ex(
                Self::key(redis, reference),
                serde_json::to_string(&tx).unwrap_or_default(),
                7 * 24 * 3600,
            )
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Some(tx))
    }
}

pub fn sandbox_banks() -> Vec<Bank> {
    [
        ("Access Bank", "044", "access-bank"),
        ("First Bank of Nigeria", "011", "first-bank-of-nigeria"),
        ("Guaranty Trust Bank", "058", "guaranty-trust-bank"),
        ("Kuda Bank", "50211", "kuda-bank"),
        ("United Bank For Africa", "033", "united-bank-for-africa"),
        ("Zenith Bank", "057", "zenith-bank"),
    ]
    .into_iter()
    .map(|(name, code, slug)| Bank {
        name: name.into(),
        code: code.into(),
        slug: slug.into(),
    })
    .collect()
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    async fn list_banks(&self) -> Result<Vec<Bank>, GatewayError> {
        Ok(sandbox_banks())
    }

    async fn resolve_account(
        &self,
        account_number: &str,
        bank_code: &str,
    ) -> Result<ResolvedAccount, GatewayError> {
        let known_bank = sandbox_banks().iter().any(|b| b.code == bank_code);
        if !known_bank || account_number.len() != 10 {
            return Err(GatewayError::Rejected {
                status: 422,
                message: "Could not resolve account name. Check parameters or try again.".into(),
                code: None,
            });
        }
        Ok(ResolvedAccount {
            account_number: account_number.into(),
            account_name: "SANDBOX ACCOUNT HOLDER".into(),
        })
    }

    async fn create_recipient(&self, r: NewRecipient<'_>) -> Result<String, GatewayError> {
        Ok(format!("RCP_sandbox_{}{}", r.bank_code, r.account_number))
    }

    async fn initialize(&self, tx: NewTransaction<'_>) -> Result<Checkout, GatewayError> {
        use redis::AsyncCommands;
        let record = SandboxTransaction {
            amount: tx.amount,
            currency: tx.currency.to_owned(),
            email: tx.email.to_owned(),
            status: "abandoned".to_owned(),
        };
        let mut conn = self.redis.conn();
        let _: () = conn
            .set_ex(
                Self::key(&self.redis, tx.reference),
                serde_json::to_string(&record).unwrap_or_default(),
                7 * 24 * 3600,
            )
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Checkout {
            authorization_url: format!(
                "{}/sandbox/checkout/{}",
                self.public_base_url, tx.reference
            ),
            access_code: tx.reference.to_owned(),
        })
    }

    async fn verify(&self, reference: &str) -> Result<Verification, GatewayError> {
        Ok(match Self::load(&self.redis, reference).await? {
            Some(tx) => Verification {
                transaction_id: None,
                status: tx_status(&tx.status),
                amount: tx.amount,
                currency: tx.currency,
                fees: Some(tx.amount * 15 / 1000),
            },
            None => Verification::not_found(),
        })
    }

    /// The sandbox refunds at once: there is no money to move.
    async fn refund(&self, r: NewRefund<'_>) -> Result<RefundInfo, GatewayError> {
        Ok(RefundInfo {
            id: sandbox_id(r.transaction),
            amount: r.amount,
            status: RefundStatus::Processed,
        })
    }

    async fn fetch_refund(&self, id: i64) -> Result<RefundInfo, GatewayError> {
        Ok(RefundInfo {
            id,
            amount: 0,
            status: RefundStatus::Processed,
        })
    }

    async fn list_refunds(&self, _transaction_id: i64) -> Result<Vec<RefundInfo>, GatewayError> {
        Ok(Vec::new())
    }

    async fn transfer(&self, t: NewTransfer<'_>) -> Result<TransferInfo, GatewayError> {
        Ok(TransferInfo {
            transfer_code: Some(format!("TRF_sandbox_{}", sandbox_id(t.reference))),
            status: TransferStatus::Success,
        })
    }

    async fn verify_transfer(&self, reference: &str) -> Result<Option<TransferInfo>, GatewayError> {
        Ok(Some(TransferInfo {
            transfer_code: Some(format!("TRF_sandbox_{}", sandbox_id(reference))),
            status: TransferStatus::Success,
        }))
    }
}

/// A stable made-up numeric id for a sandbox object.
fn sandbox_id(key: &str) -> i64 {
    key.bytes()
        .fold(7_i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)))
        .rem_euclid(1 << 40)
}

// ---- webhooks (external-apis.md §1.4) ----

/// Checks `x-paystack-signature`: HMAC-SHA512 of the exact raw body under the secret key,
/// compared in constant time.
pub fn signature_is_valid(secret: &str, raw_body: &[u8], signature_hex: &str) -> bool {
    crate::security::signing::hmac_sha512_matches(secret.as_bytes(), raw_body, signature_hex)
}

/// A signed delivery, read: its event name, the reference it is about (our order reference
/// for charges and refunds, our transfer reference for transfers) and its identity.
#[derive(Debug)]
pub struct WebhookEvent {
    pub event: String,
    pub reference: String,
    /// Paystack events carry no id: the dedupe key of §1.4.
    pub identity: String,
    pub payload: serde_json::Value,
}

/// Reads a delivery whose signature was already checked; `None` when it is not JSON.
pub fn parse_webhook(raw: &[u8]) -> Option<WebhookEvent> {
    #[derive(Deserialize)]
    struct Envelope {
        event: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    let payload: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let envelope: Envelope = serde_json::from_value(payload.clone()).ok()?;
    let data = &envelope.data;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let event = envelope.event;
    let reference = if event.starts_with("refund.") {
        text(&data["transaction_reference"])
    } else {
        text(&data["reference"])
    };
    let identity = match event.as_str() {
        "charge.success" => format!("charge.success:{}:{reference}", text(&data["id"])),
        e if e.starts_with("refund.") => format!(
            "{e}:{reference}:{}:{}:{}",
            text(&data["id"]),
            text(&data["status"]),
            text(&data["amount"])
        ),
        e if e.starts_with("transfer.") => {
            let code = if data["transfer_code"].is_null() {
                text(&data["reference"])
            } else {
                text(&data["transfer_code"])
            };
            format!("{e}:{code}:{}", text(&data["reference"]))
        }
        e => format!(
            "{e}:{}",
            crate::security::crypto::token_hash(&String::from_utf8_lossy(raw))
        ),
    };
    Some(WebhookEvent {
        event,
        reference,
        identity,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_show_only_their_last_four_digits() {
        let resolved = ResolvedAccount {
            account_number: "0123456789".into(),
            account_name: "ADA OBI".into(),
        };
        let recipient = NewRecipient {
            name: "Ada",
            account_number: "0123456789",
            bank_code: "058",
        };
        for shown in [format!("{resolved:?}"), format!("{recipient:?}")] {
            assert!(!shown.contains("0123456789"), "{shown}");
            assert!(shown.contains("6789"));
        }
    }

    #[test]
    fn signature_matches_the_documented_vector() {
        let key = "sk_test_0000000000000000000000000000000000000000";
        let body = br#"{"event":"charge.success","data":{"id":5001,"status":"success","reference":"ord_01J9ZK3","amount":1050000,"currency":"NGN"}}"#;
        let sig = "459f08a395da5117c0baa32eb1cf629d685783f82df8ea3573812394b6fd4813e0d979ac7bff880d88c461b3cf1c0413842b0a886f1e2454aa9a803f61f376bc";
        assert_eq!(body.len(), 124);
        assert!(signature_is_valid(key, body, sig));
        assert!(!signature_is_valid(key, &body[..123], sig));
        assert!(!signature_is_valid("sk_test_other", body, sig));
        assert!(!signature_is_valid(key, body, "zz"));
    }

    #[test]
    fn refund_identities_tell_attempts_and_statuses_apart() {
        let a = parse_webhook(br#"{"event":"refund.processed","data":{"id":"9","status":"processed","transaction_reference":"ord-1","amount":"500"}}"#).unwrap();
        let b = parse_webhook(br#"{"event":"refund.processed","data":{"id":"10","status":"processed","transaction_reference":"ord-1","amount":500}}"#).unwrap();
        assert_eq!(a.reference, "ord-1");
        assert_ne!(a.identity, b.identity);
        let t = parse_webhook(br#"{"event":"transfer.success","data":{"reference":"payout-x-1","transfer_code":"TRF_1"}}"#).unwrap();
        assert_eq!(t.reference, "payout-x-1");
    }
}
