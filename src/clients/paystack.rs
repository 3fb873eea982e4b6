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

#[derive(Debug, Clone)]
pub struct ResolvedAccount {
    pub account_number: String,
    pub account_name: String,
}

#[derive(Debug, Clone)]
pub struct NewRecipient<'a> {
    pub name: &'a str,
    pub account_number: &'a str,
    pub bank_code: &'a str,
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
    /// Not reachable, timed out, 429, 5xx, or an answer we cannot read.
    #[error("paystack unavailable: {0}")]
    Unavailable(String),
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
    pub fn new(http: reqwest::Client, base_url: &str, secret_key: SecretString) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key,
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
        let bytes = res.bytes().await.map_err(|e| {
            GatewayError::Unavailable(format!("reading the answer: {}", e.without_url()))
        })?;
        if status.as_u16() == 429 || status.is_server_error() {
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
                Ok(Verification {
                    status: TxStatus::NotFound,
                    amount: 0,
                    currency: String::new(),
                    fees: None,
                })
            }
            Err(e) => Err(e),
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The key the sandbox signs its webhooks with (no Paystack key in development).
pub const SANDBOX_SECRET_KEY: &str = "sk_sandbox_development_only_not_a_real_key";

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
                status: tx_status(&tx.status),
                amount: tx.amount,
                currency: tx.currency,
                fees: Some(tx.amount * 15 / 1000),
            },
            None => Verification {
                status: TxStatus::NotFound,
                amount: 0,
                currency: String::new(),
                fees: None,
            },
        })
    }
}
