//! Typed configuration read from the environment (and `.env` when present).
//!
//! Every variable of API.md's configuration table lives here, with the development default
//! that lets `cargo run` work with no file at all. `APP_ENV=production` refuses the
//! development stand-ins and secrets, naming the first variable that is missing.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::domain::fees::FeeSchedule;

/// The key the development sandbox signs its webhooks with (no Paystack key set). Kept here,
/// with the other development secrets, so configuration imports nothing above it.
pub const SANDBOX_SECRET_KEY: &str = "sk_sandbox_development_only_not_a_real_key";
/// The signing key used when `JWT_SECRET` is unset. Only acceptable in development.
const DEV_JWT_SECRET: &str = "development-only-jwt-secret-change-me-in-production";
/// 32 bytes (hex) used to encrypt TOTP secrets at rest in development.
const DEV_TOTP_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[derive(Debug, thiserror::Error)]
#[error("configuration variable {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Which halves of the process run: the HTTP server, the job workers, or both (default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    All,
    Http,
    Worker,
}

impl RunMode {
    pub fn runs_http(self) -> bool {
        matches!(self, RunMode::All | RunMode::Http)
    }
    pub fn runs_workers(self) -> bool {
        matches!(self, RunMode::All | RunMode::Worker)
    }
}

impl FromStr for RunMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" | "both" => Ok(RunMode::All),
            "http" | "api" | "server" => Ok(RunMode::Http),
            "worker" | "workers" => Ok(RunMode::Worker),
            other => Err(format!("expected all, http or worker, got {other:?}")),
        }
    }
}

#[derive(Clone)]
pub struct ResendConfig {
    pub api_key: SecretString,
    pub base_url: String,
}

#[derive(Clone)]
pub struct PaystackConfig {
    pub secret_key: SecretString,
    pub base_url: String,
}

#[derive(Clone)]
pub struct CloudinaryConfig {
    pub cloud_name: String,
    pub api_key: String,
    pub api_secret: SecretString,
    pub base_url: String,
}

#[derive(Clone)]
pub struct Config {
    pub app_env: AppEnv,
    /// Who may open the development pages (`/dev/outbox`, the sandbox checkout).
    pub dev_pages: DevPages,
    pub run_mode: RunMode,
    pub bind_address: IpAddr,
    pub port: u16,
    /// Public origin of this service (links in mails, sandbox checkout, local posters).
    pub public_base_url: String,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before 503 `service_unavailable`.
    pub database_acquire_timeout: Duration,
    pub redis_url: SecretString,
    /// Every Redis key and queue name starts with this, so tests (or tenants) never collide.
    pub redis_prefix: String,
    pub jwt_secret: SecretString,
    pub access_token_ttl: Duration,
    pub totp_encryption_key: [u8; 32],
    /// `None`: the built-in sandbox gateway.
    pub paystack: Option<PaystackConfig>,
    /// Base URL of Paystack used by the real client (kept even when the sandbox is in use).
    pub paystack_base_url: String,
    pub platform_fee_schedule: FeeSchedule,
    pub payout_delay: Duration,
    /// After a bank account change, how long payouts to the new account wait.
    pub payout_account_cooldown: Duration,
    /// Per Paystack call; a timeout on a write is an unknown outcome, looked up before resending.
    pub paystack_timeout: Duration,
    /// The shared Paystack budget (all instances, a Redis window per second) for
    /// `POST /refund`; transfers have their own (`paystack_transfers_per_second`).
    pub paystack_refunds_per_second: u32,
    /// The shared budget for `POST /transaction/initialize` (Paystack live: ~20 a second).
    /// Past it a purchase keeps its seats and its link follows (`service::checkout`).
    pub paystack_initializes_per_second: u32,
    /// The shared budget for `GET /transaction/verify` (Paystack live: ~50 a second): the
    /// payment job and the sweeper wait for a slot, so a burst of webhooks is settled at
    /// Paystack's pace instead of being refused by it.
    pub paystack_verifies_per_second: u32,
    pub paystack_transfers_per_second: u32,
    /// How old an unsettled webhook or an unfinished paid order must be before the sweeper
    /// re-drives it (younger ones are still in their job's hands).
    pub redrive_after: Duration,
    pub sweep_interval: Duration,
    pub hold_ttl: Duration,
    /// Age at which the cached Paystack bank list is refreshed in the background.
    pub banks_refresh_after: Duration,
    pub auth_rate_limit_per_minute: u32,
    /// The window of that limit (60 s; shorter only in tests).
    pub auth_rate_limit_window: Duration,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// `None`: mail goes to the log and the development outbox.
    pub resend: Option<ResendConfig>,
    /// Requests to Resend per second, shared by every instance (Resend allows 5 per team).
    pub mail_requests_per_second: u32,
    pub mail_from: String,
    /// `None`: posters go to `upload_dir` and are served by the app.
    pub cloudinary: Option<CloudinaryConfig>,
    pub upload_dir: PathBuf,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub job_poll_interval: Duration,
    pub job_retry_base: Duration,
    pub job_max_attempts: usize,
    pub log_json: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    pub limits: Limits,
}

/// The development pages show OTPs and access keys (`/dev/outbox`) and settle payments
/// (the sandbox checkout). With `APP_ENV` unset they answer loopback clients only, so a
/// server started without configuration on a reachable address does not publish them; an
/// explicit `APP_ENV=development` opens them to every client; production has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevPages {
    Off,
    LoopbackOnly,
    Open,
}

/// What one client may ask of the service (the security review's limits). A zero turns a
/// limit off. Every one is a variable in the README and `.env.example`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Unpaid holds one user may have on one event at once (429 `too_many_holds`).
    pub max_active_holds_per_user: u32,
    /// Free tickets one user may take on one event (409 `free_ticket_limit`).
    pub max_free_tickets_per_user: u32,
    /// Purchase attempts per user per minute (429 `rate_limited`).
    pub purchases_per_user_per_minute: u32,
    /// Purchase attempts per client address per minute. Many mobile buyers can share one
    /// carrier-grade NAT address, so this is far above the per-user limit.
    pub purchases_per_address_per_minute: u32,
    /// Argon2 computations at once on this instance (each takes 19 MiB and a core).
    pub password_hash_slots: usize,
    /// How long a request waits for an argon2 slot before 503 `service_unavailable`.
    pub password_hash_wait: Duration,
    /// Password checks of a signed-in user (account deletion, bank account change) per hour.
    pub password_checks_per_user_per_hour: u32,
    /// Bank account resolutions (Paystack account-name lookups) per user per day.
    pub bank_lookups_per_user_per_day: u32,
    /// Password-reset mails per email per day (the resend gap applies as well).
    pub reset_mails_per_day: u32,
    /// The least time between two reset mails to one email (60 s; 0 only in tests).
    pub reset_resend_gap: Duration,
    /// Wrong reset codes per email per day, across every code mailed; past it none is
    /// accepted until the day is over.
    pub reset_wrong_codes_per_day: u32,
}

impl fmt::Debug for Config {
    // Secrets stay out of logs: only non-secret fields are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("app_env", &self.app_env)
            .field("run_mode", &self.run_mode)
            .field("port", &self.port)
            .field("redis_prefix", &self.redis_prefix)
            .field("paystack", &self.paystack.as_ref().map(|p| &p.base_url))
            .field("resend", &self.resend.as_ref().map(|r| &r.base_url))
            .field("cloudinary", &self.cloudinary.as_ref().map(|c| &c.base_url))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `.env` (when present) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the variables it breaks.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from explicit values (tests pass a map, never the process env).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let app_env = app_env(&get)?;
        let vars = Vars {
            get: &get,
            production: app_env == AppEnv::Production,
        };
        let port: u16 = parse_or(&get, "PORT", 3000)?;
        let (jwt_secret, totp_encryption_key) = vars.secrets()?;
        let paystack_base_url = vars.base_url("PAYSTACK_BASE_URL", "https://api.paystack.co");
        if vars.production && get("PAYSTACK_SECRET_KEY").as_deref() == Some(SANDBOX_SECRET_KEY) {
            return Err(ConfigError::new(
                "PAYSTACK_SECRET_KEY",
                "is the sandbox's development key; set the live key",
            ));
        }
        let paystack = vars
            .required("PAYSTACK_SECRET_KEY")?
            .map(|key| PaystackConfig {
                secret_key: key.into(),
                base_url: paystack_base_url.clone(),
            });
        let resend = vars.required("RESEND_API_KEY")?.map(|key| ResendConfig {
            api_key: key.into(),
            base_url: vars.base_url("RESEND_BASE_URL", "https://api.resend.com"),
        });
        let mail_from = vars
            .required("MAIL_FROM")?
            .unwrap_or_else(|| "Tickets <tickets@localhost>".to_owned());
        let cloudinary = vars.cloudinary()?;

        let platform_fee_schedule = get("PLATFORM_FEE_SCHEDULE")
            .unwrap_or_else(|| "2000000:750,10000000:500,*:250".to_owned())
            .parse::<FeeSchedule>()
            .map_err(|e| ConfigError::new("PLATFORM_FEE_SCHEDULE", e))?;

        let run_mode = get("RUN_MODE")
            .map(|v| v.parse::<RunMode>())
            .transpose()
            .map_err(|e| ConfigError::new("RUN_MODE", e))?
            .unwrap_or(RunMode::All);

        if vars.production
            && get("RESET_OTP_RESEND_GAP_SECONDS")
                .as_deref()
                .map(str::trim)
                == Some("0")
        {
            return Err(ConfigError::new(
                "RESET_OTP_RESEND_GAP_SECONDS",
                "may be 0 only outside production (tests)",
            ));
        }
        Ok(Config {
            dev_pages: match (app_env, get("APP_ENV").is_some()) {
                (AppEnv::Production, _) => DevPages::Off,
                (AppEnv::Development, true) => DevPages::Open,
                (AppEnv::Development, false) => DevPages::LoopbackOnly,
            },
            app_env,
            run_mode,
            bind_address: parse_or(&get, "BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?,
            port,
            public_base_url: get("PUBLIC_BASE_URL")
                .unwrap_or_else(|| format!("http://localhost:{port}"))
                .trim_end_matches('/')
                .to_owned(),
            database_url: get("DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@localhost:5432/ticketing".to_owned())
                .into(),
            database_max_connections: parse_or(&get, "DATABASE_MAX_CONNECTIONS", 10)?,
            database_acquire_timeout: millis(&get, "DATABASE_ACQUIRE_TIMEOUT_MILLIS", 1000)?,
            redis_url: get("REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
                .into(),
            redis_prefix: get("REDIS_PREFIX").unwrap_or_else(|| "ticketing".to_owned()),
            jwt_secret: jwt_secret.into(),
            access_token_ttl: seconds(&get, "ACCESS_TOKEN_TTL_SECONDS", 3600)?,
            totp_encryption_key,
            paystack,
            paystack_base_url,
            platform_fee_schedule,
            payout_delay: seconds(&get, "PAYOUT_DELAY_SECONDS", 172_800)?,
            payout_account_cooldown: seconds(&get, "PAYOUT_ACCOUNT_COOLDOWN_SECONDS", 86_400)?,
            paystack_timeout: millis(&get, "PAYSTACK_TIMEOUT_MILLIS", 10_000)?,
            paystack_refunds_per_second: parse_or(&get, "PAYSTACK_REFUNDS_PER_SECOND", 10)?,
            paystack_initializes_per_second: parse_or(&get, "PAYSTACK_INITIALIZES_PER_SECOND", 20)?,
            paystack_verifies_per_second: parse_or(&get, "PAYSTACK_VERIFIES_PER_SECOND", 50)?,
            paystack_transfers_per_second: parse_or(&get, "PAYSTACK_TRANSFERS_PER_SECOND", 15)?,
            redrive_after: seconds(&get, "REDRIVE_AFTER_SECONDS", 30)?,
            sweep_interval: seconds(&get, "SWEEP_INTERVAL_SECONDS", 30)?,
            hold_ttl: seconds(&get, "HOLD_TTL_SECONDS", 900)?,
            banks_refresh_after: seconds(&get, "BANKS_REFRESH_SECONDS", 6 * 3600)?,
            auth_rate_limit_per_minute: parse_or(&get, "AUTH_RATE_LIMIT_PER_MINUTE", 30)?,
            auth_rate_limit_window: seconds(&get, "AUTH_RATE_LIMIT_WINDOW_SECONDS", 60)?,
            trust_forwarded_for: parse_or(&get, "TRUST_FORWARDED_FOR", false)?,
            resend,
            mail_requests_per_second: parse_or(&get, "MAIL_REQUESTS_PER_SECOND", 5)?,
            mail_from,
            cloudinary,
            upload_dir: get("UPLOAD_DIR")
                .unwrap_or_else(|| "./uploads".to_owned())
                .into(),
            request_timeout: seconds(&get, "REQUEST_TIMEOUT_SECONDS", 30)?,
            shutdown_grace: seconds(&get, "SHUTDOWN_GRACE_SECONDS", 30)?,
            job_poll_interval: millis(&get, "JOB_POLL_INTERVAL_MILLIS", 200)?,
            job_retry_base: millis(&get, "JOB_RETRY_BASE_MILLIS", 1000)?,
            job_max_attempts: parse_or(&get, "JOB_MAX_ATTEMPTS", 8)?,
            log_json: parse_or(&get, "LOG_JSON", vars.production)?,
            metrics_token: get("METRICS_TOKEN").map(SecretString::from),
            limits: Limits {
                max_active_holds_per_user: parse_or(&get, "MAX_ACTIVE_HOLDS_PER_USER", 2)?,
                max_free_tickets_per_user: parse_or(&get, "MAX_FREE_TICKETS_PER_USER", 10)?,
                purchases_per_user_per_minute: parse_or(
                    &get,
                    "PURCHASE_RATE_LIMIT_PER_MINUTE",
                    30,
                )?,
                purchases_per_address_per_minute: parse_or(
                    &get,
                    "PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE",
                    600,
                )?,
                password_hash_slots: parse_or(
                    &get,
                    "PASSWORD_HASH_CONCURRENCY",
                    2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
                )?,
                password_hash_wait: millis(&get, "PASSWORD_HASH_WAIT_MILLIS", 500)?,
                password_checks_per_user_per_hour: parse_or(
                    &get,
                    "PASSWORD_CHECKS_PER_USER_PER_HOUR",
                    10,
                )?,
                bank_lookups_per_user_per_day: parse_or(
                    &get,
                    "BANK_ACCOUNT_LOOKUPS_PER_USER_PER_DAY",
                    10,
                )?,
                reset_mails_per_day: parse_or(&get, "RESET_OTP_MAILS_PER_DAY", 5)?,
                reset_resend_gap: seconds(&get, "RESET_OTP_RESEND_GAP_SECONDS", 60)?,
                reset_wrong_codes_per_day: parse_or(&get, "RESET_OTP_WRONG_CODES_PER_DAY", 15)?,
            },
        })
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    /// The key webhooks are signed with: the Paystack secret key, or the sandbox's own.
    pub fn webhook_secret(&self) -> &str {
        match &self.paystack {
            Some(p) => p.secret_key.expose_secret(),
            None => SANDBOX_SECRET_KEY,
        }
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

/// `APP_ENV`: development (the default) or production.
fn app_env(get: &impl Fn(&str) -> Option<String>) -> Result<AppEnv, ConfigError> {
    match get("APP_ENV").as_deref().map(str::trim) {
        None | Some("development") | Some("dev") | Some("test") => Ok(AppEnv::Development),
        Some("production") | Some("prod") => Ok(AppEnv::Production),
        Some(other) => Err(ConfigError::new(
            "APP_ENV",
            format!("expected development or production, got {other:?}"),
        )),
    }
}

/// The variables, and whether production rules apply to them.
struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    production: bool,
}

impl Vars<'_> {
    /// In production a secret must be given; in development its default is used.
    fn required(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.get)(var) {
            Some(v) => Ok(Some(v)),
            None if self.production => {
                Err(ConfigError::new(var, "is required when APP_ENV=production"))
            }
            None => Ok(None),
        }
    }

    /// A provider's origin, without a trailing slash.
    fn base_url(&self, var: &str, default: &str) -> String {
        (self.get)(var)
            .unwrap_or_else(|| default.to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    /// `JWT_SECRET` and `TOTP_ENCRYPTION_KEY`, never the development values in production.
    fn secrets(&self) -> Result<(String, [u8; 32]), ConfigError> {
        let jwt_secret = self
            .required("JWT_SECRET")?
            .unwrap_or_else(|| DEV_JWT_SECRET.to_owned());
        if jwt_secret.len() < 32 {
            return Err(ConfigError::new(
                "JWT_SECRET",
                "must be at least 32 characters",
            ));
        }
        if self.production && jwt_secret == DEV_JWT_SECRET {
            return Err(ConfigError::new(
                "JWT_SECRET",
                "is the development value; set a real secret",
            ));
        }
        let totp_hex = self
            .required("TOTP_ENCRYPTION_KEY")?
            .unwrap_or_else(|| DEV_TOTP_KEY.to_owned());
        if self.production && totp_hex.trim().eq_ignore_ascii_case(DEV_TOTP_KEY) {
            return Err(ConfigError::new(
                "TOTP_ENCRYPTION_KEY",
                "is the development value; set a real key",
            ));
        }
        let totp_key = parse_key32(&totp_hex)
            .ok_or_else(|| ConfigError::new("TOTP_ENCRYPTION_KEY", "must be 64 hex characters"))?;
        Ok((jwt_secret, totp_key))
    }

    /// Cloudinary: all three credentials, or none (local posters).
    fn cloudinary(&self) -> Result<Option<CloudinaryConfig>, ConfigError> {
        let Some(cloud_name) = self.required("CLOUDINARY_CLOUD_NAME")? else {
            return Ok(None);
        };
        let with_name = |var: &'static str| {
            (self.get)(var)
                .ok_or_else(|| ConfigError::new(var, "is required with CLOUDINARY_CLOUD_NAME"))
        };
        Ok(Some(CloudinaryConfig {
            cloud_name,
            api_key: with_name("CLOUDINARY_API_KEY")?,
            api_secret: with_name("CLOUDINARY_API_SECRET")?.into(),
            base_url: self.base_url("CLOUDINARY_BASE_URL", "https://api.cloudinary.com"),
        }))
    }
}

fn parse_or<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match get(var) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| ConfigError::new(var, format!("cannot parse {raw:?}: {e}"))),
    }
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    parse_or(get, var, default).map(Duration::from_secs)
}

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    parse_or(get, var, default).map(Duration::from_millis)
}

fn parse_key32(hex_key: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_needs_no_variables() {
        let config = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(config.port, 3000);
        assert!(config.paystack.is_none());
        assert!(config.resend.is_none());
        assert_eq!(config.run_mode, RunMode::All);
    }

    #[test]
    fn production_refuses_every_development_secret() {
        let real_jwt = ("JWT_SECRET", "a-real-secret-that-is-long-enough-0123456789");
        let err = Config::from_map(&vars(&[
            ("APP_ENV", "production"),
            real_jwt,
            ("TOTP_ENCRYPTION_KEY", DEV_TOTP_KEY),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "TOTP_ENCRYPTION_KEY");
        let err = Config::from_map(&vars(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", DEV_JWT_SECRET),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let err = Config::from_map(&vars(&[
            ("APP_ENV", "production"),
            real_jwt,
            ("TOTP_ENCRYPTION_KEY", &"ab".repeat(32)),
            ("PAYSTACK_SECRET_KEY", SANDBOX_SECRET_KEY),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "PAYSTACK_SECRET_KEY");
    }

    #[test]
    fn development_pages_are_loopback_only_unless_app_env_says_development() {
        let unset = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(unset.dev_pages, DevPages::LoopbackOnly);
        let explicit = Config::from_map(&vars(&[("APP_ENV", "development")])).unwrap();
        assert_eq!(explicit.dev_pages, DevPages::Open);
    }

    #[test]
    fn production_names_the_missing_secret() {
        let err = Config::from_map(&vars(&[("APP_ENV", "production")])).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let err = Config::from_map(&vars(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "a-real-secret-that-is-long-enough-0123456789"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "TOTP_ENCRYPTION_KEY");
    }

    #[test]
    fn bad_numbers_name_their_variable() {
        let err = Config::from_map(&vars(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(err.var, "PORT");
        let err = Config::from_map(&vars(&[("RUN_MODE", "sideways")])).unwrap_err();
        assert_eq!(err.var, "RUN_MODE");
    }
}
