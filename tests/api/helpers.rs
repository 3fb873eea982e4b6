//! `TestApp`: the real application on a random port, with its own database, its own Redis
//! prefix (and so its own queues), and fake Paystack, Resend and Cloudinary servers.

use std::{collections::HashMap, time::Duration};

use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ticketing::{
    app::{AppState, Application},
    config::Config,
};

use crate::fakes::{
    cloudinary::{self, FakeCloudinary},
    paystack::{self, FakePaystack},
    resend::{self, FakeResend},
};

/// Where the per-test databases are created: `TEST_DATABASE_URL`, or local trust auth.
fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub resend: FakeResend,
    pub paystack: FakePaystack,
    pub cloudinary: FakeCloudinary,
    pub state: AppState,
    /// The variables this instance was configured with (a sibling reuses them).
    pub env: HashMap<String, String>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub struct TestAppBuilder {
    env: HashMap<String, String>,
    without: Vec<String>,
}

impl TestAppBuilder {
    /// Overrides one configuration variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    /// Leaves a variable unset (e.g. `CLOUDINARY_CLOUD_NAME` for local poster storage).
    pub fn without(mut self, key: &str) -> Self {
        self.without.push(key.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let resend = FakeResend::spawn().await;
        let paystack = FakePaystack::spawn().await;
        let cloudinary = FakeCloudinary::spawn().await;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let admin = admin_database_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let mut env: HashMap<String, String> = [
            ("APP_ENV", "development".to_owned()),
            ("BIND_ADDRESS", "127.0.0.1".to_owned()),
            ("PORT", "0".to_owned()),
            ("DATABASE_URL", format!("{base}/ticketing_test_{id}")),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
            ("REDIS_PREFIX", format!("test:{id}")),
            ("RESEND_API_KEY", resend::API_KEY.to_owned()),
            ("RESEND_BASE_URL", resend.base_url.clone()),
            (
                "MAIL_FROM",
                format!("Tickets <tickets@{}>", resend::VERIFIED_DOMAIN),
            ),
            ("PAYSTACK_SECRET_KEY", paystack::SECRET_KEY.to_owned()),
            ("PAYSTACK_BASE_URL", paystack.base_url.clone()),
            ("CLOUDINARY_CLOUD_NAME", cloudinary::CLOUD_NAME.to_owned()),
            ("CLOUDINARY_API_KEY", cloudinary::API_KEY.to_owned()),
            ("CLOUDINARY_API_SECRET", cloudinary::API_SECRET.to_owned()),
            ("CLOUDINARY_BASE_URL", cloudinary.base_url.clone()),
            ("JOB_POLL_INTERVAL_MILLIS", "50".to_owned()),
            ("JOB_RETRY_BASE_MILLIS", "50".to_owned()),
            ("SHUTDOWN_GRACE_SECONDS", "10".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(self.env);
        for key in &self.without {
            env.remove(key);
        }
        TestApp::start(env, resend, paystack, cloudinary).await
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            env: HashMap::new(),
            without: Vec::new(),
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    async fn start(
        env: HashMap<String, String>,
        resend: FakeResend,
        paystack: FakePaystack,
        cloudinary: FakeCloudinary,
    ) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            ticketing::telemetry::init_tracing(false);
        }
        let config = Config::from_map(&env).expect("test configuration is valid");
        let app = Application::build(config).await.expect("the app starts");
        let port = app.port().expect("the app serves HTTP");
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            resend,
            paystack,
            cloudinary,
            state,
            env,
            shutdown,
            server: Some(server),
        }
    }

    /// A second instance sharing this one's database, Redis prefix, queues and fakes — as two
    /// replicas behind a load balancer would.
    pub async fn spawn_sibling(&self) -> TestApp {
        TestApp::start(
            self.env.clone(),
            self.resend.clone(),
            self.paystack.clone(),
            self.cloudinary.clone(),
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Starts the graceful shutdown and returns once the app has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("app task")
                .expect("app stopped cleanly");
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn wait_stopped(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("app task")
                .expect("app stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads a problem+json answer, checking its shape and status on the way.
pub async fn problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "problem body: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

/// Polls `check` until it returns `Some`, for effects of background jobs. Not a sleep: it
/// returns as soon as the effect is visible, and fails loudly after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- common calls ----

pub const PASSWORD: &str = "a good password";

/// Signs up `email` and returns its access token.
pub async fn signup(app: &TestApp, email: &str) -> String {
    let res = app
        .post_json(
            "/auth/signup",
            &serde_json::json!({ "email": email, "password": PASSWORD, "first_name": "Test", "last_name": "User" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "signup {email}");
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Signs up `email` and makes it an organizer with a bank account the fake Paystack knows.
pub async fn organizer(app: &TestApp, email: &str) -> String {
    let token = signup(app, email).await;
    let res = app
        .post_json_auth(
            "/users/organizer",
            &token,
            &serde_json::json!({ "name": format!("Org {email}"), "email": email, "phone": "+2348012345678",
                                 "bank_code": "058", "account_number": "0123456789" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "organizer {email}");
    token
}

/// An `event input` starting `days` from now, lasting 4 hours.
pub fn event_body(title: &str, latitude: f64, longitude: f64, days: i64) -> Value {
    let starts = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let ends = starts + time::Duration::hours(4);
    let fmt = &time::format_description::well_known::Rfc3339;
    serde_json::json!({
        "title": title, "description": "A night to remember", "category": "music",
        "venue": "Eko Hotel", "address": "Adetokunbo Ademola St", "city": "Lagos", "country": "NG",
        "latitude": latitude, "longitude": longitude,
        "starts_at": starts.format(fmt).unwrap(), "ends_at": ends.format(fmt).unwrap(),
    })
}

pub async fn create_event(app: &TestApp, token: &str, body: &Value) -> Value {
    let res = app.post_json_auth("/events/create", token, body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "create event");
    res.json().await.unwrap()
}

/// Moves an event into the past. The API refuses past dates by design, so this fixture
/// writes the database directly; assertions still go through the API.
pub async fn end_event(app: &TestApp, event_id: &str) {
    sqlx::query(
        "UPDATE events SET starts_at = now() - interval '2 days', ends_at = now() - interval '1 day' WHERE id = $1::uuid",
    )
    .bind(event_id)
    .execute(&app.state.db)
    .await
    .unwrap();
}
