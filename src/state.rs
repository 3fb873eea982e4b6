//! `AppState`: what every layer shares — configuration, the pools, the provider clients, the
//! queue handle, the clock. Built once at start; `app.rs` (the shell on top) assembles it with
//! the router and the workers, and nothing below `app.rs` imports `app.rs`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    clients::{
        mail::{Mailer, OutboxMailer, ResendMailer},
        media::{CloudinaryStore, LocalStore, MediaStore},
        paystack::{PaymentGateway, PaystackClient, SandboxGateway},
    },
    config::Config,
    db,
    kv::Redis,
    queue::Queues,
    security::jwt::JwtKeys,
    telemetry,
};

/// A hold waiting on its tier's lane (`service::batcher`), with where to answer it.
pub type HoldQueued = (
    crate::repo::orders::HoldAsk,
    tokio::sync::oneshot::Sender<crate::repo::orders::HoldOutcome>,
);

/// A scan waiting on its event's admission lane (`service::admission`), with where to
/// answer it.
pub type ScanQueued = (
    crate::repo::tickets::ScanAsk,
    tokio::sync::oneshot::Sender<crate::repo::tickets::ScanOutcome>,
);

/// Largest JSON body any route accepts. Poster uploads raise it on their own route.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler or job needs. One `Arc`: axum clones the state for every extractor
/// of every request, and a clone of the fields themselves (queue configs, the Redis client's
/// connection info) allocated — 20 % of the server's CPU on the sold-out path was malloc/free.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: Redis,
    pub queues: Queues,
    pub mailer: Arc<dyn Mailer>,
    pub http_client: reqwest::Client,
    pub metrics: PrometheusHandle,
    pub jwt: JwtKeys,
    /// Wakes this instance's mail sender when a message is queued here.
    pub mail_wake: Arc<tokio::sync::Notify>,
    /// This instance's websocket connections and what they subscribed to (`hub`).
    pub hub: Arc<crate::hub::Hub>,
    /// This instance's argon2 slots (`security::password::Passwords`).
    pub passwords: crate::security::password::Passwords,
    pub gateway: Arc<dyn PaymentGateway>,
    pub media: Arc<dyn MediaStore>,
    /// "Now" for business rules (`domain::clock`).
    pub clock: crate::domain::clock::Clock,
    /// Tier ids by (event, name or id): see `service::purchase`.
    pub tier_ids:
        Arc<std::sync::Mutex<std::collections::HashMap<(uuid::Uuid, String), uuid::Uuid>>>,
    /// This instance's hold lanes, one per busy tier (`service::batcher`).
    pub batcher: crate::lanes::Lanes<(uuid::Uuid, uuid::Uuid), HoldQueued>,
    /// This instance's admission lanes, one per event with scans waiting
    /// (`service::admission`).
    pub admissions: crate::lanes::Lanes<uuid::Uuid, ScanQueued>,
}

impl AppState {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::connect_and_migrate(
            config.database_url(),
            config.database_max_connections,
            config.database_acquire_timeout,
        )
        .await?;
        let redis = Redis::connect_lazy(
            secrecy::ExposeSecret::expose_secret(&config.redis_url),
            &config.redis_prefix,
        )?;
        // One HTTP client for every provider: connection pooling, rustls, our timeouts.
        let http_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("ticketing/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let mailer: Arc<dyn Mailer> = match &config.resend {
            Some(resend) => Arc::new(ResendMailer::new(
                resend,
                config.mail_from.clone(),
                http_client.clone(),
            )?),
            None => Arc::new(OutboxMailer::new(redis.clone())),
        };
        let queues = Queues::new(&redis);
        let jwt = JwtKeys::new(
            secrecy::ExposeSecret::expose_secret(&config.jwt_secret).as_bytes(),
            config.access_token_ttl,
        );
        let gateway: Arc<dyn PaymentGateway> = match &config.paystack {
            Some(p) => Arc::new(PaystackClient::new(
                http_client.clone(),
                &p.base_url,
                p.secret_key.clone(),
                config.paystack_timeout,
            )),
            None => Arc::new(SandboxGateway::new(
                redis.clone(),
                config.public_base_url.clone(),
            )),
        };
        let media: Arc<dyn MediaStore> = match &config.cloudinary {
            Some(c) => Arc::new(CloudinaryStore::new(http_client.clone(), c.clone())),
            None => Arc::new(LocalStore::new(
                config.upload_dir.clone(),
                config.public_base_url.clone(),
            )),
        };
        let passwords = crate::security::password::Passwords::new(
            config.limits.password_hash_slots,
            config.limits.password_hash_wait,
        );
        Ok(Self(Arc::new(Shared {
            hub: Arc::default(),
            mail_wake: Arc::default(),
            passwords,
            clock: Default::default(),
            tier_ids: Arc::default(),
            batcher: Default::default(),
            admissions: Default::default(),
            gateway,
            media,
            jwt,
            config: Arc::new(config),
            db,
            redis,
            queues,
            mailer,
            http_client,
            metrics: telemetry::prometheus(),
        })))
    }
}

impl crate::domain::clock::Now for AppState {
    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
