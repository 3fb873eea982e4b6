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
    /// Where clients reach the app: through the leak guard (`guard_responses`).
    pub address: String,
    /// The app's own listener, for the few tests about the connection itself.
    pub direct_address: String,
    /// What no response may contain; tests add secrets they learn (a TOTP secret).
    pub forbidden: Forbidden,
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
        let Prepared {
            env,
            resend,
            paystack,
            cloudinary,
        } = self.prepare().await;
        let app = TestApp::start(env, resend, paystack, cloudinary).await;
        app.paystack.set_webhook_url(&app.url("/payments/callback"));
        app
    }

    /// The fakes and the configuration, without starting the app (a test that runs the
    /// real binary as a process starts it from these).
    pub async fn prepare(self) -> Prepared {
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
            // The fake Paystack has no initialize limit: links inline, as most tests expect
            // (the paced checkout's own tests set a live-like budget).
            ("PAYSTACK_INITIALIZES_PER_SECOND", "100000".to_owned()),
            ("PAYSTACK_VERIFIES_PER_SECOND", "100000".to_owned()),
            ("SHUTDOWN_GRACE_SECONDS", "10".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(self.env);
        for key in &self.without {
            env.remove(key);
        }
        Prepared {
            env,
            resend,
            paystack,
            cloudinary,
        }
    }
}

/// What `TestAppBuilder::prepare` made: the configuration and the fakes it points at.
pub struct Prepared {
    pub env: HashMap<String, String>,
    pub resend: FakeResend,
    pub paystack: FakePaystack,
    pub cloudinary: FakeCloudinary,
}

/// A port free right now on the loopback (for a server the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An app on the built-in sandbox checkout (no Paystack key). Its webhook goes to
/// `PUBLIC_BASE_URL`, so the port is chosen before the app starts.
pub async fn sandbox_app() -> TestApp {
    let port = free_port();
    TestApp::builder()
        .without("PAYSTACK_SECRET_KEY")
        .env("PORT", port.to_string())
        .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .spawn()
        .await
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
        let forbidden = Forbidden::from_config(&config);
        let app = Application::build(config).await.expect("the app starts");
        let port = app.port().expect("the app serves HTTP");
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let guarded = guard_responses(port, forbidden.clone(), shutdown.clone()).await;
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp {
            address: format!("http://127.0.0.1:{guarded}"),
            direct_address: format!("http://127.0.0.1:{port}"),
            forbidden,
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

    /// A conditional GET: `If-None-Match` with `tags`.
    pub async fn get_if_none_match(&self, path: &str, tags: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("if-none-match", tags)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// A GET with a token whose JSON body the test wants.
    pub async fn get_json_auth(&self, path: &str, token: &str) -> Value {
        self.get_auth(path, token).await.json().await.unwrap()
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

    pub async fn patch_json_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
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
        // A leak fails the test even when the cut request's error was swallowed (a retry
        // loop, an `.ok()`).
        let leaks = self.forbidden.take_leaks();
        if !leaks.is_empty() && !std::thread::panicking() {
            panic!("responses carried secrets (see LEAK above): {leaks:?}");
        }
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

/// A connection of the test's own holding one row's lock until `release`, as a slow
/// transaction of another instance would: the app's statements that need the row wait
/// behind it, so batches form on purpose.
pub struct RowLock(sqlx::PgConnection);

impl RowLock {
    /// Locks the rows `select` (`SELECT … FOR UPDATE`, one text parameter) finds.
    pub async fn take(app: &TestApp, select: &'static str, param: &str) -> Self {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&app.env["DATABASE_URL"])
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        let locked = sqlx::query(select)
            .bind(param)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(locked.rows_affected(), 1, "{select} locked no row");
        Self(conn)
    }

    /// Locks more rows in the same transaction (waiting for them if need be).
    pub async fn also(&mut self, select: &'static str, param: &str) {
        sqlx::query(select)
            .bind(param)
            .execute(&mut self.0)
            .await
            .unwrap();
    }

    /// Runs `sql` in the lock's transaction (a `SET LOCAL`, say).
    pub async fn execute(&mut self, sql: &'static str) {
        sqlx::raw_sql(sql).execute(&mut self.0).await.unwrap();
    }

    pub async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
    }

    /// Commits what the transaction wrote, and lets go.
    pub async fn commit(mut self) {
        sqlx::query("COMMIT").execute(&mut self.0).await.unwrap();
    }
}

/// Makes every `event` (`INSERT`, `UPDATE`) on `table` fail for the rows whose `column` is
/// `id`, as a full disk or a broken constraint would, through a trigger called `name` (gone
/// with `DROP TRIGGER name ON table`). The id is a UUID: safe to place in the trigger's text.
pub async fn refuse_writes(
    app: &TestApp,
    name: &str,
    event: &str,
    table: &str,
    column: &str,
    id: uuid::Uuid,
) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'cannot store this row'; END $$;
         CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW
         WHEN (NEW.{column} = '{id}') EXECUTE FUNCTION {name}();"
    )))
    .execute(&app.state.db)
    .await
    .unwrap();
}

/// Transactions of the app waiting for a lock. On a connection of its own: the app's small
/// pool is busy with the very statements being counted, and a CI run timed out waiting for
/// it.
pub async fn lock_waiters(app: &TestApp) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&app.env["DATABASE_URL"])
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
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

/// `n` attendees for load-shaped tests, created in one statement with a shared password hash
/// and given tokens by the app's own key — signing up 200 users through argon2 would test
/// nothing but the CPU. Everything they do afterwards goes through the API.
pub async fn attendees(app: &TestApp, n: usize) -> Vec<String> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let emails: Vec<String> = ids
        .iter()
        .map(|id| format!("buyer-{id}@example.com"))
        .collect();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, first_name, last_name)
         SELECT id, email, '!', 'Buyer', 'Test' FROM UNNEST($1::uuid[], $2::text[]) AS t(id, email)",
    )
    .bind(&ids)
    .bind(&emails)
    .execute(&app.state.db)
    .await
    .unwrap();
    ids.iter()
        .map(|id| app.state.jwt.issue(*id, 0).unwrap().0)
        .collect()
}

/// Adds a tier and returns it.
pub async fn add_tier(app: &TestApp, token: &str, event_id: &str, body: &Value) -> Value {
    let res = app
        .post_json_auth(&format!("/events/{event_id}/tickets/add"), token, body)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "add tier");
    res.json().await.unwrap()
}

/// An organizer, an event and one tier; returns (organizer token, event id, tier).
pub async fn event_with_tier(app: &TestApp, price: i64, quantity: i32) -> (String, String, Value) {
    let owner = organizer(app, &format!("org-{}@example.com", uuid::Uuid::now_v7())).await;
    let event = create_event(app, &owner, &event_body("Flash Sale", 6.45, 3.4, 7)).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let tier = add_tier(
        app,
        &owner,
        &id,
        &serde_json::json!({ "name": "Regular", "price": price, "quantity": quantity }),
    )
    .await;
    (owner, id, tier)
}

pub async fn purchase(
    app: &TestApp,
    token: &str,
    event_id: &str,
    tier: &str,
    quantity: i32,
) -> Response {
    app.client
        .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&serde_json::json!({ "tier": tier, "quantity": quantity }))
        .send()
        .await
        .unwrap()
}

/// A purchase that must succeed (201): the order.
pub async fn hold(app: &TestApp, token: &str, event_id: &str, tier: &str, quantity: i32) -> Value {
    let res = purchase(app, token, event_id, tier, quantity).await;
    assert_eq!(res.status(), StatusCode::CREATED, "purchase");
    res.json().await.unwrap()
}

/// The invariants of DESIGN.md, checked on the database after a scenario:
/// taken = seats of orders holding seats ≤ quantity; non-void tickets = seats of paid orders;
/// every paid order has exactly `quantity` tickets; gross = platform fee + organizer share and
/// gross = the amount paid, for every paid order.
pub async fn assert_invariants(app: &TestApp) {
    assert_invariants_on(&app.state.db).await;
}

/// `assert_invariants` for a database the test reaches on its own (an app run as a process).
pub async fn assert_invariants_on(db: &sqlx::PgPool) {
    let tiers: Vec<(uuid::Uuid, i32, i32, i64, i64, i32, i64)> = sqlx::query_as(
        "SELECT t.id, t.quantity, t.taken,
                COALESCE((SELECT SUM(o.quantity) FROM orders o WHERE o.tier_id = t.id AND o.holds_seats), 0)::bigint,
                (SELECT count(*) FROM tickets k WHERE k.tier_id = t.id AND k.status <> 'void'),
                t.discount_taken,
                COALESCE((SELECT SUM(o.quantity) FROM orders o
                          WHERE o.tier_id = t.id AND o.holds_seats AND o.discounted), 0)::bigint
         FROM ticket_tiers t",
    )
    .fetch_all(db)
    .await
    .unwrap();
    for (id, quantity, taken, holding, tickets, discount_taken, discounted) in tiers {
        assert!(
            taken <= quantity,
            "tier {id}: taken {taken} > quantity {quantity}"
        );
        assert_eq!(i64::from(taken), holding, "tier {id}: taken = held + sold");
        assert_eq!(
            i64::from(discount_taken),
            discounted,
            "tier {id}: discount_taken = discounted seats held or sold"
        );
        let paid: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(quantity), 0)::bigint FROM orders WHERE tier_id = $1 AND status = 'paid'",
        )
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
        assert_eq!(tickets, paid, "tier {id}: tickets = seats of paid orders");
    }
    let bad_orders: Vec<(uuid::Uuid, i32, i64)> = sqlx::query_as(
        "SELECT o.id, o.quantity, (SELECT count(*) FROM tickets t WHERE t.order_id = o.id)
         FROM orders o WHERE o.status = 'paid'
           AND o.quantity <> (SELECT count(*) FROM tickets t WHERE t.order_id = o.id)",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(
        bad_orders.is_empty(),
        "paid orders without exactly quantity tickets: {bad_orders:?}"
    );
    let ledger: Vec<(uuid::Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT o.id, o.paid_amount,
                COALESCE(SUM(l.amount) FILTER (WHERE l.kind = 'gross'), -1)::bigint,
                COALESCE(SUM(l.amount) FILTER (WHERE l.kind = 'platform_fee'), -1)::bigint,
                COALESCE(SUM(l.amount) FILTER (WHERE l.kind = 'organizer_share'), -1)::bigint
         FROM orders o LEFT JOIN ledger_entries l ON l.order_id = o.id
         WHERE o.status = 'paid' GROUP BY o.id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    for (id, paid, gross, platform, share) in ledger {
        assert_eq!(gross, paid, "order {id}: ledger gross = amount paid");
        assert_eq!(
            gross,
            platform + share,
            "order {id}: gross = platform fee + organizer share"
        );
    }
    // And the reconciliation check the operators run (ledger reversals, refunds, payouts).
    let report = ticketing::service::reconcile::check(db, Default::default())
        .await
        .unwrap();
    let lines: Vec<String> = report
        .mismatches
        .iter()
        .map(ticketing::service::reconcile::line)
        .collect();
    assert!(lines.is_empty(), "reconcile: {lines:#?}");
}

/// The buyer's view of an order (`GET /payments/transactions/:reference`).
pub async fn order_status(app: &TestApp, token: &str, reference: &str) -> Value {
    let res = app
        .get_auth(&format!("/payments/transactions/{reference}"), token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Waits until the order reaches `status` (jobs, webhooks and the sweeper move it). Generous:
/// it returns as soon as the status shows, and a full parallel run on two cores is slow.
pub async fn wait_for_status(app: &TestApp, token: &str, reference: &str, status: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        let order = order_status(app, token, reference).await;
        (order["status"] == status).then_some(order)
    })
    .await
}

// ---- the leak guard ----

/// Strings no response of the whole test run may contain: the configured secrets, any
/// password hash, any Paystack recipient code, the full number of any bank account the
/// fakes know, and secrets tests add (a TOTP secret, once its one enrolment answer is read).
#[derive(Clone)]
pub struct Forbidden {
    secrets: std::sync::Arc<std::sync::RwLock<Vec<Secret>>>,
    /// What the relay cut, for the test's end (`TestApp`'s drop fails the test on any).
    leaks: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// What it is (for the report) and its bytes.
type Secret = (String, Vec<u8>);

impl Forbidden {
    fn from_config(config: &Config) -> Forbidden {
        use secrecy::ExposeSecret;
        let mut list: Vec<(String, String)> = vec![
            (
                "JWT_SECRET".into(),
                config.jwt_secret.expose_secret().to_owned(),
            ),
            (
                "TOTP_ENCRYPTION_KEY".into(),
                hex::encode(config.totp_encryption_key),
            ),
        ];
        for (what, value) in [
            (
                "PAYSTACK_SECRET_KEY",
                config
                    .paystack
                    .as_ref()
                    .map(|p| p.secret_key.expose_secret()),
            ),
            (
                "RESEND_API_KEY",
                config.resend.as_ref().map(|r| r.api_key.expose_secret()),
            ),
            (
                "CLOUDINARY_API_SECRET",
                config
                    .cloudinary
                    .as_ref()
                    .map(|c| c.api_secret.expose_secret()),
            ),
            (
                "METRICS_TOKEN",
                config.metrics_token.as_ref().map(|t| t.expose_secret()),
            ),
        ] {
            if let Some(v) = value.filter(|v| v.len() >= 8) {
                list.push((what.into(), v.to_owned()));
            }
        }
        list.push(("a password hash".into(), "$argon2".into()));
        list.push(("a Paystack recipient code".into(), "RCP_fake".into()));
        for (account, _, _) in crate::fakes::paystack::KNOWN_ACCOUNTS {
            list.push(("a bank account number".into(), account.into()));
        }
        Forbidden {
            secrets: std::sync::Arc::new(std::sync::RwLock::new(
                list.into_iter()
                    .map(|(what, v)| (what, v.into_bytes()))
                    .collect(),
            )),
            leaks: Default::default(),
        }
    }

    /// The leaks cut so far, forgotten (for the test that makes one on purpose).
    pub fn take_leaks(&self) -> Vec<String> {
        std::mem::take(&mut *self.leaks.lock().unwrap())
    }

    /// From now on, no response may contain `secret`.
    pub fn add(&self, what: &str, secret: &str) {
        self.secrets
            .write()
            .unwrap()
            .push((what.to_owned(), secret.as_bytes().to_vec()));
    }

    fn found_in(&self, bytes: &[u8]) -> Option<String> {
        self.secrets
            .read()
            .unwrap()
            .iter()
            .find(|(_, secret)| bytes.windows(secret.len()).any(|w| w == secret.as_slice()))
            .map(|(what, _)| what.clone())
    }

    fn longest(&self) -> usize {
        self.secrets
            .read()
            .unwrap()
            .iter()
            .map(|(_, s)| s.len())
            .max()
            .unwrap_or(0)
    }
}

/// A TCP relay in front of the app that reads every byte the app sends back (HTTP answers,
/// websocket frames, pages) before the client gets it. A forbidden string cuts the connection
/// (so the request fails, whatever the test asserts) and is reported on stderr: every test of
/// the run is a leak test. The app sends no compressed bodies, so plain text is what flows.
async fn guard_responses(app_port: u16, forbidden: Forbidden, shutdown: CancellationToken) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            // The relay stops taking connections when the app begins to shut down, as the
            // app's own listener does.
            let client = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, _)) => client,
                    Err(_) => continue,
                },
                _ = shutdown.cancelled() => return,
            };
            let forbidden = forbidden.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", app_port)).await
                else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_app, mut to_app) = server.into_split();
                let upstream = async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_app).await;
                    let _ = to_app.shutdown().await;
                };
                let downstream = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    // The end of what came before, so a secret split across reads is seen.
                    let mut window: Vec<u8> = Vec::new();
                    loop {
                        let n = match from_app.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        window.extend_from_slice(&buf[..n]);
                        if let Some(what) = forbidden.found_in(&window) {
                            forbidden.leaks.lock().unwrap().push(what.clone());
                            eprintln!(
                                "LEAK: a response contained {what}:\n{}",
                                String::from_utf8_lossy(&window)
                            );
                            return;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        let keep = forbidden.longest().saturating_sub(1);
                        if window.len() > keep {
                            window.drain(..window.len() - keep);
                        }
                    }
                    let _ = to_client.shutdown().await;
                };
                tokio::join!(upstream, downstream);
            });
        }
    });
    port
}
