//! The real binary as a process (`CARGO_BIN_EXE_ticketing`): what only a process can show.
//! Its logs, captured whole, carry no secret; killed with SIGKILL in the middle of a sale, a
//! mass refund and a payout run and started again, it loses nothing and moves no kobo twice.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::{
    auth::{current_step, totp_at_step},
    fakes::Fault,
    helpers::*,
};

/// One run of the binary, its stdout and stderr captured.
struct AppProcess {
    child: tokio::process::Child,
    address: String,
}

impl AppProcess {
    /// Starts the binary with exactly `env` (and PATH) on `port`, waits until it is live.
    async fn start(env: &HashMap<String, String>, port: u16, logs: Arc<Mutex<Vec<u8>>>) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketing"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("PORT", port.to_string())
            // Production's level for everything, our own crate one level more talkative.
            .env("RUST_LOG", "info,ticketing=debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the ticketing binary starts");
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    logs.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let live = format!("{address}/health/live");
        eventually(Duration::from_secs(60), || async {
            client
                .get(&live)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
        AppProcess { child, address }
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn stop(mut self) {
        // SIGTERM, the graceful path.
        let pid = self.child.id().unwrap() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().await.unwrap();
    }
}

/// Whether `secret` is in `logs`. A six-digit code counts only as a number of its own (not
/// inside a longer number, not the fraction of a timestamp), or every log line's clock would
/// be a suspect.
fn leaks(logs: &str, secret: &str) -> bool {
    if secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit()) {
        let bytes = logs.as_bytes();
        return logs.match_indices(secret).any(|(at, _)| {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(at + 6).copied();
            !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
                && !after.is_some_and(|b| b.is_ascii_digit())
        });
    }
    logs.contains(secret)
}

/// A client of a process: JSON in, status and JSON out.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if path.ends_with("/purchase") {
            req = req.header("idempotency-key", uuid::Uuid::now_v7().to_string());
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                let body = res.json().await.unwrap_or(Value::Null);
                (status, body)
            }
            // The process was killed under it.
            Err(_) => (StatusCode::BAD_GATEWAY, Value::Null),
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }
}

async fn organizer_with_event(
    api: &Api,
    email: &str,
    quantity: i32,
    price: i64,
) -> (String, String) {
    let (status, body) = api
        .post("/auth/signup", None, json!({ "email": email, "password": PASSWORD, "first_name": "Org", "last_name": "Test" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = api
        .post("/users/organizer", Some(&token), json!({ "name": "Org", "email": email, "phone": "+2348012345678", "bank_code": "058", "account_number": "0123456789" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, event) = api
        .post(
            "/events/create",
            Some(&token),
            event_body("Process Night", 6.45, 3.4, 7),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let event_id = event["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .post(
            &format!("/events/{event_id}/tickets/add"),
            Some(&token),
            json!({ "name": "Regular", "price": price, "quantity": quantity }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    (token, event_id)
}

#[tokio::test]
async fn the_logs_of_a_full_flow_carry_no_secret() {
    // With the development mailer (no Resend key): the one that once logged mail bodies.
    let prepared = TestApp::builder()
        .without("RESEND_API_KEY")
        .env("JWT_SECRET", "a-jwt-secret-that-must-never-be-logged-0001")
        .env("TOTP_ENCRYPTION_KEY", "7f".repeat(32))
        .env("METRICS_TOKEN", "a-metrics-token-never-logged")
        .prepare()
        .await;
    let port = free_port();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let process = AppProcess::start(&prepared.env, port, logs.clone()).await;
    let api = Api::new(&process.address);
    prepared
        .paystack
        .set_webhook_url(&format!("{}/payments/callback", process.address));

    // An account with a password, 2FA, a password reset by OTP, a login with a code.
    let email = "secretive@example.com";
    let (status, body) = api
        .post("/auth/signup", None, json!({ "email": email, "password": PASSWORD, "first_name": "Sec", "last_name": "Ret" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let first_token = body["access_token"].as_str().unwrap().to_owned();
    let (_, enrol) = api
        .post("/auth/2fa/enable", Some(&first_token), json!({}))
        .await;
    let totp_secret = enrol["secret"].as_str().unwrap().to_owned();
    let step = current_step();
    let first_code = totp_at_step(&totp_secret, step);
    let (status, confirmed) = api
        .post(
            "/auth/2fa/verify",
            Some(&first_token),
            json!({ "code": first_code }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let (status, _) = api
        .post("/auth/password/reset", None, json!({ "email": email }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The development outbox (GET /dev/outbox) holds the mail.
    let otp = eventually(Duration::from_secs(30), || async {
        let outbox: Value = api
            .http
            .get(format!("{}/dev/outbox", api.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        outbox["items"].as_array()?.iter().find_map(|m| {
            (m["to"] == email && m["subject"].as_str()?.contains("reset")).then_some(())?;
            m["text"]
                .as_str()?
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .map(str::to_owned)
        })
    })
    .await;
    let (status, body) = api
        .post(
            "/auth/password/verify-otp",
            None,
            json!({ "email": email, "otp": otp }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reset_token = body["reset_token"].as_str().unwrap().to_owned();
    let new_password = "a brand new passphrase 42";
    let (status, _) = api
        .post(
            "/auth/password/new",
            None,
            json!({ "reset_token": reset_token, "new_password": new_password }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, challenge) = api
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": new_password }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let login_code = totp_at_step(&totp_secret, step + 1);
    let (status, session) = api
        .post(
            "/auth/2fa/verify",
            None,
            json!({ "challenge_token": challenge["challenge_token"], "code": login_code }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["access_token"].as_str().unwrap().to_owned();

    // An organizer with a bank account, a sale, a payment, a check-in, a refund.
    let (owner, event_id) = organizer_with_event(&api, "payee@example.com", 10, 500_000).await;
    let (status, order) = api
        .post(
            &format!("/events/{event_id}/tickets/purchase"),
            Some(&token),
            json!({ "tier": "Regular", "quantity": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reference = order["reference"].as_str().unwrap().to_owned();
    prepared.paystack.pay(&reference).await;
    let paid = eventually(Duration::from_secs(30), || async {
        let (_, order) = api
            .get(&format!("/payments/transactions/{reference}"), &token)
            .await;
        (order["status"] == "paid").then_some(order)
    })
    .await;
    let access_key = paid["tickets"][0]["access_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = api
        .post(
            &format!("/events/{event_id}/tickets/validate"),
            Some(&owner),
            json!({ "access_key": access_key }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let order_id = paid["id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .post(
            &format!("/events/{event_id}/orders/{order_id}/refund"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(Duration::from_secs(30), || async {
        let (_, order) = api
            .get(&format!("/payments/transactions/{reference}"), &token)
            .await;
        (order["status"] == "refunded").then_some(())
    })
    .await;
    let (status, _) = api.post("/auth/logout", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    process.stop().await;

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines = logs.lines().count();
    assert!(lines > 20, "the process logged: {logs}");
    let env = &prepared.env;
    let mut secrets: Vec<(&str, String)> = vec![
        ("the password", PASSWORD.to_owned()),
        ("the new password", new_password.to_owned()),
        ("the TOTP secret", totp_secret.clone()),
        ("a TOTP code", first_code.clone()),
        ("a TOTP code", login_code.clone()),
        ("the reset OTP", otp.clone()),
        ("the reset token", reset_token.clone()),
        ("an access token", first_token.clone()),
        ("an access token", token.clone()),
        ("an access token", owner.clone()),
        (
            "the challenge token",
            challenge["challenge_token"].as_str().unwrap().to_owned(),
        ),
        ("a ticket access key", access_key.clone()),
        ("a password hash", "$argon2".to_owned()),
        ("a bank account number", "0123456789".to_owned()),
        ("a recipient code", "RCP_fake".to_owned()),
    ];
    for code in &recovery {
        secrets.push(("a recovery code", code.clone()));
    }
    for key in [
        "JWT_SECRET",
        "TOTP_ENCRYPTION_KEY",
        "METRICS_TOKEN",
        "PAYSTACK_SECRET_KEY",
        "CLOUDINARY_API_SECRET",
    ] {
        secrets.push((key, env[key].clone()));
    }
    for (what, secret) in &secrets {
        assert!(
            !leaks(&logs, secret),
            "the logs contain {what}: {}",
            logs.lines().find(|l| leaks(l, secret)).unwrap_or_default()
        );
    }
    println!(
        "SECRETS logs: lines={lines} bytes={} secrets_checked={} found=0",
        logs.len(),
        secrets.len()
    );
}

/// The order statuses of these references, from the database.
async fn statuses(db: &sqlx::PgPool, references: &[String]) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT reference, status FROM orders WHERE reference = ANY($1)",
    )
    .bind(references)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn sigkill_mid_sale_mid_refund_and_mid_payout_loses_nothing_and_moves_no_kobo_twice() {
    let secret = "a-jwt-secret-for-the-sigkill-scenario-0001";
    let prepared = TestApp::builder()
        .env("JWT_SECRET", secret)
        .env("SWEEP_INTERVAL_SECONDS", "1")
        .env("REDRIVE_AFTER_SECONDS", "1")
        .env("PAYOUT_DELAY_SECONDS", "0")
        .env("PAYOUT_ACCOUNT_COOLDOWN_SECONDS", "0")
        .env("PAYSTACK_TIMEOUT_MILLIS", "5000")
        .env("PAYSTACK_REFUNDS_PER_SECOND", "100")
        .env("PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", "100000")
        .env("DATABASE_MAX_CONNECTIONS", "8")
        .prepare()
        .await;
    let paystack = prepared.paystack.clone();
    let port = free_port();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let start = || AppProcess::start(&prepared.env, port, logs.clone());
    let process = start().await;
    let api = Api::new(&process.address);
    paystack.set_webhook_url(&format!("{}/payments/callback", process.address));
    let db = sqlx::PgPool::connect(&prepared.env["DATABASE_URL"])
        .await
        .unwrap();
    let (owner_a, event_a) = organizer_with_event(&api, "cancelled@example.com", 30, 500_000).await;

    // ---- a flash sale: 40 buyers for 30 seats, killed half-way ----
    let keys = ticketing::security::jwt::JwtKeys::new(secret.as_bytes(), Duration::from_secs(3600));
    let ids: Vec<uuid::Uuid> = (0..40).map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, first_name, last_name)
         SELECT id, 'kill-' || id || '@example.com', '!', 'Buyer', 'Test' FROM UNNEST($1::uuid[]) AS t(id)",
    )
    .bind(&ids)
    .execute(&db)
    .await
    .unwrap();
    let tokens: Vec<String> = ids.iter().map(|id| keys.issue(*id, 0).unwrap().0).collect();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut buyers = Vec::new();
    for token in tokens.clone() {
        let (api, paystack, event, finished) = (
            api.clone(),
            paystack.clone(),
            event_a.clone(),
            finished.clone(),
        );
        buyers.push(tokio::spawn(async move {
            let (status, order) = api
                .post(
                    &format!("/events/{event}/tickets/purchase"),
                    Some(&token),
                    json!({ "tier": "Regular", "quantity": 1 }),
                )
                .await;
            let reference = (status == StatusCode::CREATED)
                .then(|| order["reference"].as_str().unwrap().to_owned());
            // Whether the app acknowledged the charge.success (200): then it is its job.
            let mut acknowledged = false;
            if let Some(reference) = &reference {
                acknowledged = paystack.pay(reference).await.contains(&200);
            }
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            reference.map(|r| (r, acknowledged))
        }));
    }
    eventually(Duration::from_secs(60), || async {
        (finished.load(std::sync::atomic::Ordering::SeqCst) >= 12).then_some(())
    })
    .await;
    process.kill9().await;
    let paid_at_kill: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(&db)
        .await
        .unwrap();
    let mut references = Vec::new();
    let mut unacknowledged = Vec::new();
    for buyer in buyers {
        if let Some((reference, acknowledged)) = buyer.await.unwrap() {
            if !acknowledged {
                unacknowledged.push(reference.clone());
            }
            references.push(reference);
        }
    }
    let process = start().await;
    // Paystack retries only the webhooks the dead process never acknowledged; one it
    // acknowledged is the app's to finish (recorded in PostgreSQL before the 200).
    let taken: Vec<String> = references
        .iter()
        .filter(|r| {
            paystack
                .transaction(r)
                .is_some_and(|t| t.status == "success")
        })
        .cloned()
        .collect();
    for reference in taken.iter().filter(|r| unacknowledged.contains(r)) {
        paystack.redeliver(reference).await;
    }
    let sold = eventually(Duration::from_secs(60), || async {
        let now = statuses(&db, &taken).await;
        taken
            .iter()
            .all(|r| now.get(r).is_some_and(|s| s == "paid"))
            .then_some(now.len())
    })
    .await;
    assert_invariants_on(&db).await;

    // ---- a mass refund, killed while Paystack holds three refunds' answers ----
    paystack.fail_route(
        "POST /refund",
        &[
            Fault::HangAfterAccept(Duration::from_secs(4)),
            Fault::HangAfterAccept(Duration::from_secs(4)),
            Fault::HangAfterAccept(Duration::from_secs(4)),
        ],
    );
    let (status, _) = api
        .post(
            &format!("/events/{event_a}/cancel"),
            Some(&owner_a),
            json!({ "reason": "power cut" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(Duration::from_secs(30), || async {
        (paystack.all_refunds().len() >= 3).then_some(())
    })
    .await;
    process.kill9().await;
    let process = start().await;
    eventually(Duration::from_secs(90), || async {
        let now = statuses(&db, &taken).await;
        taken
            .iter()
            .all(|r| now.get(r).is_some_and(|s| s == "refunded"))
            .then_some(())
    })
    .await;
    for reference in &taken {
        let live: Vec<_> = paystack
            .refunds(reference)
            .into_iter()
            .filter(|r| r.status != "failed")
            .collect();
        assert_eq!(live.len(), 1, "{reference} refunded once: {live:?}");
        assert_eq!(live[0].amount, 500_000);
    }
    assert_invariants_on(&db).await;

    // ---- a payout run, killed while Paystack holds the transfer's answer ----
    let (owner_b, event_b) = organizer_with_event(&api, "payee-b@example.com", 5, 500_000).await;
    let mut kept = Vec::new();
    for token in &tokens[..3] {
        let (status, order) = api
            .post(
                &format!("/events/{event_b}/tickets/purchase"),
                Some(token),
                json!({ "tier": "Regular", "quantity": 1 }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let reference = order["reference"].as_str().unwrap().to_owned();
        paystack.pay(&reference).await;
        kept.push(reference);
    }
    eventually(Duration::from_secs(60), || async {
        let now = statuses(&db, &kept).await;
        kept.iter()
            .all(|r| now.get(r).is_some_and(|s| s == "paid"))
            .then_some(())
    })
    .await;
    paystack.fail_route(
        "POST /transfer",
        &[Fault::HangAfterAccept(Duration::from_secs(4))],
    );
    // The event is over (the API refuses past dates, so the fixture moves it).
    sqlx::query(
        "UPDATE events SET starts_at = now() - interval '2 days', ends_at = now() - interval '1 day' WHERE id = $1::uuid",
    )
    .bind(&event_b)
    .execute(&db)
    .await
    .unwrap();
    eventually(Duration::from_secs(60), || async {
        (!paystack.transfers().is_empty()).then_some(())
    })
    .await;
    process.kill9().await;
    let process = start().await;
    let api = Api::new(&process.address);
    let payouts = eventually(Duration::from_secs(90), || async {
        let (_, body) = api.get("/users/organizer/payouts", &owner_b).await;
        (body["items"][0]["status"] == "success").then_some(body)
    })
    .await;
    let net = payouts["items"][0]["amount"].as_i64().unwrap();
    assert_eq!(payouts["items"].as_array().unwrap().len(), 1);
    let transfers = paystack.transfers();
    assert_eq!(
        transfers.len(),
        1,
        "one transfer, never a second: {transfers:?}"
    );
    assert_eq!(transfers[0].amount, net);
    assert_eq!(paystack.successful_transfers().len(), 1);
    assert_invariants_on(&db).await;
    process.stop().await;
    println!(
        "FAULT sigkill: kills=3 sale_orders={} paid_at_kill={paid_at_kill} webhooks_redelivered={} paid={sold} refunds={} refunded_once={} payouts=1 transfers=1 paid_out={net} invariants=ok",
        references.len(),
        unacknowledged.len(),
        taken.len(),
        taken.len()
    );
}
