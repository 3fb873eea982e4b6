//! Outgoing mail: the `Mailer` trait, the Resend client and the development outbox.
//!
//! Mail is always sent from a job (`workers::mail`), never inside a request. Every message
//! carries a deterministic idempotency key (`password-otp/<id>`, `ticket-mail/<order>`…):
//! Resend answers a repeat of the same key with the first result and sends nothing, so a job
//! retried after a lost answer never mails twice. The outbox honours the same rule.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::{config::ResendConfig, kv::Redis};

/// A rendered message, ready to send. Its `Debug` leaves out the bodies: they carry OTPs
/// and access keys, and a `{:?}` in a log line must not print them.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// What kind of mail this is (`welcome`, `password_reset`…), for metrics and tags.
    pub kind: String,
    /// Stable per message: the same message always has the same key.
    pub idempotency_key: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("kind", &self.kind)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying later (network, 5xx, rate limit, a concurrent duplicate).
    #[error("temporary mail failure: {message}")]
    Temporary {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help this message (Resend refused it, or refused the whole batch as
    /// invalid: nothing was sent).
    #[error("permanent mail failure: {0}")]
    Permanent(String),
    /// Resend already holds a different request under this idempotency key: resending
    /// under other keys could deliver twice, so this needs a person.
    #[error("idempotency key conflict: {0}")]
    KeyConflict(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the message and returns the provider's id for it.
    async fn send(&self, email: &Email) -> Result<String, MailError>;

    /// Sends up to 100 messages in one request under one idempotency key (the batch's):
    /// all or nothing, the ids in order. A `Permanent` error means the request as a whole was
    /// refused and nothing went out. Without a batch endpoint, one send each.
    async fn send_batch(&self, _key: &str, emails: &[Email]) -> Result<Vec<String>, MailError> {
        let mut ids = Vec::with_capacity(emails.len());
        for email in emails {
            ids.push(self.send(email).await?);
        }
        Ok(ids)
    }
}

/// Resend. The messages are the `resend-rs` SDK's own types, but they are sent with our
/// reqwest client rather than through the SDK's `Resend` client: that client paces every
/// request with a built-in, per-process limiter of about 0.9 requests a second (configurable
/// only through a process-wide environment variable) which cannot be shared between
/// instances and would hold a sale's ticket mail for many minutes. Our pace is the shared
/// Redis budget of `service::mail` (`MAIL_REQUESTS_PER_SECOND`).
pub struct ResendMailer {
    http: reqwest::Client,
    base_url: String,
    api_key: secrecy::SecretString,
    from: String,
}

impl ResendMailer {
    pub fn new(config: &ResendConfig, from: String, http: reqwest::Client) -> anyhow::Result<Self> {
        reqwest::Url::parse(&config.base_url)
            .map_err(|e| anyhow::anyhow!("RESEND_BASE_URL is not a URL: {e}"))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
            from,
        })
    }

    fn message(&self, email: &Email) -> resend_rs::types::CreateEmailBaseOptions {
        use resend_rs::types::{CreateEmailBaseOptions, Tag};
        CreateEmailBaseOptions::new(&self.from, [email.to.as_str()], &email.subject)
            .with_html(&email.html)
            .with_text(&email.text)
            .with_tag(Tag::new("kind", &email.kind))
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        body: &impl Serialize,
    ) -> Result<serde_json::Value, MailError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .map_err(|e| MailError::Temporary {
                message: format!("http: {e}"),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status.is_success() {
            return Ok(json);
        }
        // §2.1: `{statusCode, name, message}`; a gateway page is not JSON.
        let name = json["name"].as_str().unwrap_or_default();
        let message = format!(
            "{} {}: {}",
            status.as_u16(),
            name,
            json["message"]
                .as_str()
                .unwrap_or_else(|| truncate(&text, 200))
        );
        if name == "invalid_idempotent_request" {
            return Err(MailError::KeyConflict(message));
        }
        // Our key or domain refused: not this message's fault, so no message is failed for
        // it; the outbox waits (and the logs say why) until the configuration is fixed.
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            tracing::error!(%message, "Resend refuses our credentials or sending domain");
            return Err(MailError::Temporary {
                message,
                retry_after: Some(Duration::from_secs(60)),
            });
        }
        let temporary = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || name == "concurrent_idempotent_requests"
            || json.is_null();
        Err(if temporary {
            MailError::Temporary {
                message,
                retry_after,
            }
        } else {
            MailError::Permanent(message)
        })
    }
}

/// `retry-after` (seconds), else `ratelimit-reset` (seconds until the window resets).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    ["retry-after", "ratelimit-reset"].iter().find_map(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

fn unreadable(what: &str) -> MailError {
    MailError::Temporary {
        message: format!("Resend answered without {what}"),
        retry_after: None,
    }
}

#[async_trait]
impl Mailer for ResendMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        let answer = self
            .post("/emails", &email.idempotency_key, &self.message(email))
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| unreadable("an id"))
    }

    async fn send_batch(&self, key: &str, emails: &[Email]) -> Result<Vec<String>, MailError> {
        let messages: Vec<_> = emails.iter().map(|e| self.message(e)).collect();
        let answer = self.post("/emails/batch", key, &messages).await?;
        let ids: Vec<String> = answer["data"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() != emails.len() {
            return Err(unreadable("one id per message"));
        }
        Ok(ids)
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Development stand-in: logs the message and keeps the last 100 in Redis, where
/// `GET /dev/outbox` shows them (shared by every instance and worker of the deployment).
pub struct OutboxMailer {
    redis: Redis,
}

/// How many messages the development outbox keeps.
const OUTBOX_LEN: isize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    #[serde(flatten)]
    pub email: Email,
}

impl OutboxMailer {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    pub async fn list(redis: &Redis) -> redis::RedisResult<Vec<OutboxEntry>> {
        let mut conn = redis.conn();
        let raw: Vec<String> = conn.lrange(redis.key("dev:outbox"), 0, OUTBOX_LEN).await?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        let temporary = |e: redis::RedisError| MailError::Temporary {
            message: format!("outbox: {e}"),
            retry_after: None,
        };
        let mut conn = self.redis.conn();
        let id = uuid::Uuid::now_v7().to_string();
        // Same idempotency rule as Resend: a key seen in the last 24 h answers its first id.
        let key = self
            .redis
            .key(format!("dev:outbox:key:{}", email.idempotency_key));
        let first: bool = redis::cmd("SET")
            .arg(&key)
            .arg(&id)
            .arg("NX")
            .arg("EX")
            .arg(86_400)
            .query_async::<Option<String>>(&mut conn)
            .await
            .map_err(temporary)?
            .is_some();
        if !first {
            let existing: Option<String> = conn.get(&key).await.map_err(temporary)?;
            return Ok(existing.unwrap_or(id));
        }
        tracing::info!(
            to = %email.to,
            subject = %email.subject,
            kind = %email.kind,
            // Never the body: it carries OTPs and access keys (the outbox page shows it).
            "development mail (not sent; see GET /dev/outbox)"
        );
        let entry = OutboxEntry {
            id: id.clone(),
            email: email.clone(),
        };
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let list = self.redis.key("dev:outbox");
        redis::pipe()
            .lpush(&list, json)
            .ltrim(&list, 0, OUTBOX_LEN - 1)
            .query_async::<()>(&mut conn)
            .await
            .map_err(temporary)?;
        Ok(id)
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::Email;

    #[test]
    fn debug_leaves_out_the_bodies() {
        let email = Email {
            to: "a@b.ng".into(),
            subject: "Your code".into(),
            html: "<p>123456</p>".into(),
            text: "123456".into(),
            kind: "password_reset".into(),
            idempotency_key: "k".into(),
        };
        let shown = format!("{email:?}");
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("password_reset"));
    }
}
