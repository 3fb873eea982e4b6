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
    /// Retrying cannot help (bad address, bad key, unverified domain).
    #[error("permanent mail failure: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the message and returns the provider's id for it.
    async fn send(&self, email: &Email) -> Result<String, MailError>;
}

/// Resend through the official `resend-rs` SDK, pointed at `RESEND_BASE_URL` and using our
/// shared reqwest client (so our timeouts apply).
pub struct ResendMailer {
    client: resend_rs::Resend,
    from: String,
}

impl ResendMailer {
    pub fn new(config: &ResendConfig, from: String, http: reqwest::Client) -> anyhow::Result<Self> {
        let base_url = config
            .base_url
            .parse()
            .map_err(|e| anyhow::anyhow!("RESEND_BASE_URL is not a URL: {e}"))?;
        let sdk_config = resend_rs::ConfigBuilder::new(config.api_key.expose_secret())
            .base_url(base_url)
            .client(http)
            .build();
        Ok(Self {
            client: resend_rs::Resend::with_config(sdk_config),
            from,
        })
    }
}

#[async_trait]
impl Mailer for ResendMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        use resend_rs::types::{CreateEmailBaseOptions, Tag};
        let message = CreateEmailBaseOptions::new(&self.from, [email.to.as_str()], &email.subject)
            .with_html(&email.html)
            .with_text(&email.text)
            .with_tag(Tag::new("kind", &email.kind))
            .with_idempotency_key(&email.idempotency_key);
        match self.client.emails.send(message).await {
            Ok(sent) => Ok(sent.id.to_string()),
            Err(err) => Err(classify_resend_error(err)),
        }
    }
}

fn classify_resend_error(err: resend_rs::Error) -> MailError {
    use resend_rs::Error as E;
    match err {
        E::Resend(resp) => {
            let temporary = resp.status_code >= 500
                || resp.status_code == 429
                || resp.name == "concurrent_idempotent_requests";
            let message = format!("{} {}: {}", resp.status_code, resp.name, resp.message);
            if temporary {
                MailError::Temporary {
                    message,
                    retry_after: None,
                }
            } else {
                MailError::Permanent(message)
            }
        }
        E::RateLimit {
            ratelimit_reset, ..
        } => MailError::Temporary {
            message: "rate limited by Resend".into(),
            retry_after: ratelimit_reset.map(Duration::from_secs),
        },
        // A gateway page instead of JSON, a reset connection, a timeout: try again later.
        E::Http(e) => MailError::Temporary {
            message: format!("http: {e}"),
            retry_after: None,
        },
        E::Parse { message, .. } => MailError::Temporary {
            message: format!("unparseable answer: {}", truncate(&message, 200)),
            retry_after: None,
        },
        E::Other(message) => MailError::Temporary {
            message,
            retry_after: None,
        },
        // The SDK's error enum is non-exhaustive: treat anything new as temporary.
        #[allow(unreachable_patterns)]
        other => MailError::Temporary {
            message: other.to_string(),
            retry_after: None,
        },
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
