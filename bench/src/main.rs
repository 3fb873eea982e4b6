//! Load generator for the ticketing API: the flash sale, check-in at the door, and public
//! reads. It starts the release server itself (one or two instances sharing PostgreSQL and
//! Redis), a cheap in-process Paystack fake, seeds through the public API, measures, checks
//! the invariants, and prints a human table and one JSON line.
//!
//!   cargo run --release -p bench -- [--capacity 1000] [--buyers 5000] [--concurrency 64]
//!        [--users 200] [--instances 1|2] [--checkin-tickets 50000] [--gates 8]
//!        [--read-seconds 10] [--scenarios flash,checkin,read]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use hdrhistogram::Histogram;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

const SECRET: &str = "sk_test_bench_paystack_key";

// ---------------------------------------------------------------- arguments

struct Args {
    capacity: i64,
    buyers: usize,
    concurrency: usize,
    users: usize,
    instances: usize,
    checkin_tickets: usize,
    gates: usize,
    read_seconds: u64,
    scenarios: Vec<String>,
    server_bin: String,
    server_env: Vec<(String, String)>,
    database_admin_url: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        capacity: 1000,
        buyers: 5000,
        concurrency: 64,
        users: 200,
        instances: 1,
        checkin_tickets: 50_000,
        gates: 8,
        read_seconds: 10,
        scenarios: vec!["flash".into(), "checkin".into(), "read".into()],
        server_bin: "target/release/ticketing".into(),
        server_env: Vec::new(),
        database_admin_url: std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--capacity" => a.capacity = value()?.parse()?,
            "--buyers" => a.buyers = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--users" => a.users = value()?.parse()?,
            "--instances" => a.instances = value()?.parse()?,
            "--checkin-tickets" => a.checkin_tickets = value()?.parse()?,
            "--gates" => a.gates = value()?.parse()?,
            "--read-seconds" => a.read_seconds = value()?.parse()?,
            "--scenarios" => a.scenarios = value()?.split(',').map(str::to_owned).collect(),
            "--server-bin" => a.server_bin = value()?,
            "--server-env" => {
                let v = value()?;
                let (k, val) = v.split_once('=').context("--server-env KEY=VALUE")?;
                a.server_env.push((k.to_owned(), val.to_owned()));
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if !(1..=2).contains(&a.instances) {
        bail!("--instances is 1 or 2");
    }
    Ok(a)
}

// ---------------------------------------------------------------- the Paystack fake

/// Just what the flash sale needs, kept cheap (a mutex around a map) so that it is never
/// what limits the figures.
#[derive(Clone, Default)]
struct Fake {
    txs: Arc<Mutex<HashMap<String, (i64, String)>>>,
    /// Refunds asked for, by transaction reference (each processed at once).
    refunds: Arc<Mutex<HashMap<String, usize>>>,
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({ "status": true, "message": "ok", "data": data }))
}

async fn fake_banks() -> Json<Value> {
    Json(json!({ "status": true, "message": "Banks retrieved",
        "data": [{ "name": "Guaranty Trust Bank", "code": "058", "slug": "guaranty-trust-bank", "active": true }],
        "meta": { "next": null } }))
}

async fn fake_resolve() -> Json<Value> {
    ok(json!({ "account_number": "0123456789", "account_name": "BENCH EVENTS LTD" }))
}

async fn fake_recipient() -> Json<Value> {
    ok(json!({ "recipient_code": "RCP_bench" }))
}

async fn fake_initialize(State(f): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    let reference = body["reference"].as_str().unwrap_or_default().to_owned();
    let amount = body["amount"].as_i64().unwrap_or(0);
    f.txs
        .lock()
        .unwrap()
        .insert(reference.clone(), (amount, "abandoned".into()));
    ok(
        json!({ "authorization_url": format!("https://checkout.bench/{reference}"),
               "access_code": reference, "reference": reference }),
    )
}

async fn fake_verify(
    State(f): State<Fake>,
    Path(reference): Path<String>,
) -> (axum::http::StatusCode, Json<Value>) {
    match f.txs.lock().unwrap().get(&reference) {
        Some((amount, status)) => (
            axum::http::StatusCode::OK,
            ok(
                json!({ "id": 1, "status": status, "reference": reference, "amount": amount,
                       "currency": "NGN", "fees": amount * 15 / 1000 }),
            ),
        ),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({ "status": false, "message": "Transaction reference not found" })),
        ),
    }
}

/// `POST /refund`: processed at once (the bench measures our pacing, not Paystack's).
async fn fake_refund(State(f): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    let reference = body["transaction"].as_str().unwrap_or_default().to_owned();
    let n = {
        let mut refunds = f.refunds.lock().unwrap();
        let n = refunds.entry(reference).or_default();
        *n += 1;
        refunds.values().sum::<usize>()
    };
    ok(json!({ "id": n, "amount": body["amount"], "currency": "NGN", "status": "processed" }))
}

async fn fake_refund_get(Path(id): Path<u64>) -> Json<Value> {
    ok(json!({ "id": id, "status": "processed" }))
}

async fn start_fake() -> anyhow::Result<(Fake, String)> {
    let fake = Fake::default();
    let router = Router::new()
        .route("/bank", get(fake_banks))
        .route("/bank/resolve", get(fake_resolve))
        .route("/transferrecipient", post(fake_recipient))
        .route("/transaction/initialize", post(fake_initialize))
        .route("/transaction/verify/{reference}", get(fake_verify))
        .route("/refund", post(fake_refund))
        .route("/refund/{id}", get(fake_refund_get))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((fake, url))
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------- servers

struct Server {
    child: tokio::process::Child,
    url: String,
    pid: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(3999)
}

async fn start_servers(a: &Args, paystack_url: &str, tag: &str) -> anyhow::Result<Vec<Server>> {
    let base = a
        .database_admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    let mut servers = Vec::new();
    for i in 0..a.instances {
        let port = free_port();
        let child = tokio::process::Command::new(&a.server_bin)
            .env("APP_ENV", "development")
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("DATABASE_URL", format!("{base}/ticketing_bench_{tag}"))
            .env("REDIS_PREFIX", format!("bench:{tag}"))
            .env("PAYSTACK_SECRET_KEY", SECRET)
            .env("PAYSTACK_BASE_URL", paystack_url)
            .env("AUTH_RATE_LIMIT_PER_MINUTE", "100000000")
            // The bench plays thousands of buyers with a few hundred accounts from one
            // address, so the per-account and per-address purchase limits are raised out of
            // reach; raised, not off (0 skips them), so their cost (the per-buyer lock and
            // count, the Redis counters) stays in the figures.
            .env("MAX_ACTIVE_HOLDS_PER_USER", "1000000000")
            .env("MAX_FREE_TICKETS_PER_USER", "1000000000")
            .env("PURCHASE_RATE_LIMIT_PER_MINUTE", "1000000000")
            .env("PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", "1000000000")
            // The bench's Paystack fake has no initialize limit, and its figures so far are of
            // inline links: the paced checkout (a budget of ~20 a second in live mode) is
            // lifted here until the bench's fake enforces Paystack's live limits.
            .env("PAYSTACK_INITIALIZES_PER_SECOND", "1000000")
            // Resend's default pace for a team, shared by the instances.
            .env("MAIL_REQUESTS_PER_SECOND", "5")
            .env("JOB_POLL_INTERVAL_MILLIS", "20")
            .env("RUST_LOG", "warn")
            .envs(a.server_env.iter().cloned())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with cargo build --release)",
                    a.server_bin
                )
            })?;
        let pid = child.id().unwrap_or(0);
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{url}/health/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("server {i} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        servers.push(Server { child, url, pid });
    }
    Ok(servers)
}

/// A memory figure of a process from /proc (`VmRSS` now, `VmHWM` peak), in MiB.
fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Samples the servers' resident memory every 20 ms until stopped; returns the peaks.
fn sample_rss(
    pids: Vec<u32>,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<Vec<f64>>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut peaks = vec![0.0f64; pids.len()];
        while !flag.load(Ordering::Relaxed) {
            for (i, pid) in pids.iter().enumerate() {
                peaks[i] = peaks[i].max(proc_mib(*pid, "VmRSS:"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peaks
    });
    (stop, handle)
}

// ---------------------------------------------------------------- API helpers

struct Api {
    client: reqwest::Client,
    urls: Vec<String>,
    next: AtomicUsize,
}

impl Api {
    /// Round robin over the instances.
    fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
        format!("{}{path}", self.urls[i])
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }
}

async fn signup(api: &Api, email: &str) -> anyhow::Result<String> {
    let (status, body) = api
        .post(
            "/auth/signup",
            None,
            &json!({ "email": email, "password": "bench password", "first_name": "B", "last_name": "U" }),
        )
        .await?;
    if status != 201 {
        bail!("signup {email}: {status} {body}");
    }
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

async fn seed_event(
    api: &Api,
    tag: &str,
    tier_price: i64,
    capacity: i64,
    max_per_order: i64,
) -> anyhow::Result<(String, String)> {
    let owner = signup(
        api,
        &format!("organizer-{tag}-{}@bench.test", uuid::Uuid::new_v4()),
    )
    .await?;
    let (status, body) = api
        .post(
            "/users/organizer",
            Some(&owner),
            &json!({ "name": "Bench Events", "email": "org@bench.test", "phone": "08012345678",
                     "bank_code": "058", "account_number": "0123456789" }),
        )
        .await?;
    if status != 201 && status != 409 {
        bail!("organizer: {status} {body}");
    }
    let starts = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    let fmt = &time::format_description::well_known::Rfc3339;
    let (status, event) = api
        .post(
            "/events/create",
            Some(&owner),
            &json!({ "title": "Flash Sale", "description": "Bench", "category": "music",
                     "venue": "Eko Hotel", "address": "1 Bench Rd", "city": "Lagos", "country": "NG",
                     "latitude": 6.43, "longitude": 3.42, "max_per_order": max_per_order,
                     "starts_at": starts.format(fmt)?, "ends_at": (starts + time::Duration::hours(5)).format(fmt)? }),
        )
        .await?;
    if status != 201 {
        bail!("event: {status} {event}");
    }
    let id = event["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = api
        .post(
            &format!("/events/{id}/tickets/add"),
            Some(&owner),
            &json!({ "name": "GA", "price": tier_price, "quantity": capacity }),
        )
        .await?;
    if status != 201 {
        bail!("tier: {status} {body}");
    }
    Ok((owner, id))
}

// ---------------------------------------------------------------- measuring

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({ "count": h.len(), "p50_ms": ms(h, 0.5), "p95_ms": ms(h, 0.95), "p99_ms": ms(h, 0.99),
            "max_ms": h.max() as f64 / 1000.0 })
}

/// Runs `n` jobs with at most `concurrency` in flight.
async fn run_pool<F, Fut>(n: usize, concurrency: usize, f: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (f, next) = (f.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    f(i).await;
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;
}

// ---------------------------------------------------------------- scenarios

struct Outcome {
    status: u16,
    at: Duration,
    latency_us: u64,
    reference: Option<String>,
    token: usize,
}

async fn flash_sale(
    a: &Args,
    api: Arc<Api>,
    fake: &Fake,
    servers: &[Server],
    tag: &str,
) -> anyhow::Result<Value> {
    let price = 500_000;
    let (owner, event_id) = seed_event(&api, tag, price, a.capacity, 10).await?;
    eprintln!("flash: seeding {} buyers through /auth/signup…", a.users);
    let tokens = Arc::new(Mutex::new(vec![String::new(); a.users]));
    {
        let (api, tokens, tag) = (api.clone(), tokens.clone(), tag.to_owned());
        run_pool(a.users, 8, move |i| {
            let (api, tokens, tag) = (api.clone(), tokens.clone(), tag.clone());
            async move {
                let t = signup(&api, &format!("buyer-{tag}-{i}@bench.test"))
                    .await
                    .unwrap();
                tokens.lock().unwrap()[i] = t;
            }
        })
        .await;
    }
    let tokens = Arc::new(tokens.lock().unwrap().clone());
    eprintln!(
        "flash: {} purchase attempts at concurrency {}…",
        a.buyers, a.concurrency
    );
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(a.buyers)));
    let (stop_sampling, sampler) = sample_rss(servers.iter().map(|s| s.pid).collect());
    let start = Instant::now();
    {
        let (api, tokens, outcomes, event_id) = (
            api.clone(),
            tokens.clone(),
            outcomes.clone(),
            event_id.clone(),
        );
        let users = a.users;
        run_pool(a.buyers, a.concurrency, move |i| {
            let (api, tokens, outcomes, event_id) = (
                api.clone(),
                tokens.clone(),
                outcomes.clone(),
                event_id.clone(),
            );
            async move {
                let token = i % users;
                let t0 = Instant::now();
                let res = api
                    .client
                    .post(api.url(&format!("/events/{event_id}/tickets/purchase")))
                    .bearer_auth(&tokens[token])
                    .header("idempotency-key", format!("bench-{i}"))
                    .json(&json!({ "tier": "GA", "quantity": 1 }))
                    .send()
                    .await;
                let (status, reference) = match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        (status, body["reference"].as_str().map(str::to_owned))
                    }
                    Err(_) => (0, None),
                };
                outcomes.lock().unwrap().push(Outcome {
                    status,
                    at: start.elapsed(),
                    latency_us: t0.elapsed().as_micros() as u64,
                    reference,
                    token,
                });
            }
        })
        .await;
    }
    let total = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let rss_during_sale = sampler.await?;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let (mut held_h, mut sold_h, mut other_h) = (hist(), hist(), hist());
    let mut errors: HashMap<u16, usize> = HashMap::new();
    let mut last_hold = Duration::ZERO;
    let mut holds = Vec::new();
    for o in &outcomes {
        match o.status {
            201 => {
                held_h.record(o.latency_us.max(1))?;
                last_hold = last_hold.max(o.at);
                holds.push((o.reference.clone().unwrap_or_default(), o.token));
            }
            409 => sold_h.record(o.latency_us.max(1))?,
            s => {
                other_h.record(o.latency_us.max(1))?;
                *errors.entry(s).or_default() += 1;
            }
        }
    }
    let sold_after: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == 409 && o.at > last_hold)
        .collect();
    let sold_out_period = total.saturating_sub(last_hold).as_secs_f64();
    let holds_per_s = holds.len() as f64 / last_hold.as_secs_f64().max(1e-9);
    let sold_out_per_s = sold_after.len() as f64 / sold_out_period.max(1e-9);
    let rss_process_peak: Vec<f64> = servers.iter().map(|s| proc_mib(s.pid, "VmHWM:")).collect();

    // Pay every hold through the fake's webhook, and time webhook → tickets.
    eprintln!("flash: paying {} holds…", holds.len());
    let webhook_url = Arc::new(
        servers
            .iter()
            .map(|s| format!("{}/payments/callback", s.url))
            .collect::<Vec<_>>(),
    );
    let holds = Arc::new(holds);
    // Every buyer follows their order on the websocket (alternating instances), as the app
    // would: the push of `paid` is timed from the webhook.
    eprintln!("flash: {} websocket subscribers…", holds.len());
    let webhook_sent: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; holds.len()]));
    let pushed: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; holds.len()]));
    let subscribed = Arc::new(AtomicUsize::new(0));
    {
        let ws_urls: Arc<Vec<String>> = Arc::new(
            servers
                .iter()
                .map(|s| s.url.replace("http://", "ws://"))
                .collect(),
        );
        let (holds, tokens, pushed, subscribed) = (
            holds.clone(),
            tokens.clone(),
            pushed.clone(),
            subscribed.clone(),
        );
        run_pool(holds.len(), 32, move |i| {
            let (holds, tokens, pushed, subscribed, ws_urls) = (
                holds.clone(),
                tokens.clone(),
                pushed.clone(),
                subscribed.clone(),
                ws_urls.clone(),
            );
            async move {
                let (reference, token) = &holds[i];
                let url = format!("{}/ws?token={}", ws_urls[i % ws_urls.len()], tokens[*token]);
                let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
                    return;
                };
                use futures::{SinkExt, StreamExt};
                use tokio_tungstenite::tungstenite::Message;
                let subscribe = json!({ "type": "subscribe", "reference": reference }).to_string();
                if socket.send(Message::Text(subscribe.into())).await.is_err() {
                    return;
                }
                // The current status comes first.
                let _ = socket.next().await;
                subscribed.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    while let Some(Ok(message)) = socket.next().await {
                        if let Message::Text(text) = message
                            && text.as_str().contains("\"status\":\"paid\"")
                        {
                            pushed.lock().unwrap()[i] = Some(Instant::now());
                            break;
                        }
                    }
                });
            }
        })
        .await;
    }
    let pay_start = Instant::now();
    let latencies = Arc::new(Mutex::new(hist()));
    {
        let (api, fake, holds, latencies, webhook_url, tokens, webhook_sent) = (
            api.clone(),
            fake.clone(),
            holds.clone(),
            latencies.clone(),
            webhook_url.clone(),
            tokens.clone(),
            webhook_sent.clone(),
        );
        run_pool(holds.len(), 32, move |i| {
            let (api, fake, holds, latencies, webhook_url, tokens, webhook_sent) = (
                api.clone(),
                fake.clone(),
                holds.clone(),
                latencies.clone(),
                webhook_url.clone(),
                tokens.clone(),
                webhook_sent.clone(),
            );
            async move {
                let (reference, token) = &holds[i];
                let amount = {
                    let mut txs = fake.txs.lock().unwrap();
                    let tx = txs.get_mut(reference).unwrap();
                    tx.1 = "success".into();
                    tx.0
                };
                let body = serde_json::to_vec(&json!({ "event": "charge.success",
                    "data": { "id": i, "status": "success", "reference": reference, "amount": amount, "currency": "NGN" } }))
                .unwrap();
                let sent = Instant::now();
                webhook_sent.lock().unwrap()[i] = Some(sent);
                let _ = api
                    .client
                    .post(&webhook_url[i % webhook_url.len()])
                    .header("x-paystack-signature", sign(&body))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                loop {
                    let (_, order) = api
                        .get(&format!("/payments/transactions/{reference}"), Some(&tokens[*token]))
                        .await
                        .unwrap_or((0, Value::Null));
                    if order["status"] == "paid" && order["tickets"].as_array().map(Vec::len) == Some(1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies.lock().unwrap().record(sent.elapsed().as_micros() as u64).unwrap();
            }
        })
        .await;
    }
    let all_paid_s = pay_start.elapsed().as_secs_f64();
    let all_paid_at = Instant::now();

    // Ticket mail: every paid order's mail accepted by the mailer, at the shared pace of
    // MAIL_REQUESTS_PER_SECOND (5, Resend's default), counted on the servers' metrics.
    let mail_wait = Instant::now();
    let mut mailed = 0.0;
    while mail_wait.elapsed() < Duration::from_secs(120) {
        mailed = 0.0;
        for server in servers.iter() {
            let text = api
                .client
                .get(format!("{}/metrics", server.url))
                .send()
                .await?
                .text()
                .await?;
            mailed += text
                .lines()
                .filter(|l| {
                    l.starts_with("ticketing_mail_total{")
                        && l.contains("kind=\"tickets_issued\"")
                        && l.contains("outcome=\"sent\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        if mailed >= holds.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mail = json!({
        "ticket_mails_sent": mailed,
        "last_mail_after_last_payment_s": all_paid_at.elapsed().as_secs_f64(),
    });
    // The websocket pushes: how many, how fast after their webhook, at what rate.
    let wait_pushes = Instant::now();
    while pushed
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.is_some())
        .count()
        < subscribed.load(Ordering::Relaxed)
        && wait_pushes.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut push_h = hist();
    let (mut first_push, mut last_push) = (None::<Instant>, None::<Instant>);
    for (sent, got) in webhook_sent
        .lock()
        .unwrap()
        .iter()
        .zip(pushed.lock().unwrap().iter())
    {
        if let (Some(sent), Some(got)) = (sent, got) {
            push_h.record(got.saturating_duration_since(*sent).as_micros().max(1) as u64)?;
            first_push = Some(first_push.map_or(*got, |f| f.min(*got)));
            last_push = Some(last_push.map_or(*got, |l| l.max(*got)));
        }
    }
    let push_window = match (first_push, last_push) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let websocket = json!({
        "subscribers": subscribed.load(Ordering::Relaxed),
        "paid_pushes": push_h.len(),
        "pushes_per_s": push_h.len() as f64 / push_window.max(1e-3),
        "webhook_to_push": summary(&push_h),
    });

    // Invariants through the API.
    let (_, sales) = api
        .get(&format!("/events/{event_id}/sales"), Some(&owner))
        .await?;
    let tier = &sales["tiers"][0];
    let (sold, held, available) = (
        tier["sold"].as_i64().unwrap_or(-1),
        tier["held"].as_i64().unwrap_or(-1),
        tier["available"].as_i64().unwrap_or(-1),
    );
    let mut violations = Vec::new();
    if sold != a.capacity.min(a.buyers as i64) {
        violations.push(format!(
            "sold {sold}, expected {}",
            a.capacity.min(a.buyers as i64)
        ));
    }
    if sold + held + available != a.capacity {
        violations.push(format!(
            "taken = held + sold broken: {sold} + {held} + {available} != {}",
            a.capacity
        ));
    }
    if holds.len() as i64 > a.capacity {
        violations.push(format!(
            "oversold: {} holds for {} seats",
            holds.len(),
            a.capacity
        ));
    }
    let latencies = latencies.lock().unwrap().clone();

    // The ledger after the sale, then cancel the event and refund every order: the
    // reconciliation check must pass both times.
    let reconcile_after_sale = reconcile(a, tag, &event_id).await?;
    eprintln!(
        "flash: cancelling the event and refunding {} orders…",
        holds.len()
    );
    let cancel_start = Instant::now();
    let (status, body) = api
        .post(
            &format!("/events/{event_id}/cancel"),
            Some(&owner),
            &json!({ "reason": "bench" }),
        )
        .await?;
    if status != 202 {
        violations.push(format!("cancel answered {status}: {body}"));
    }
    {
        let (api, holds, tokens) = (api.clone(), holds.clone(), tokens.clone());
        run_pool(holds.len(), 16, move |i| {
            let (api, holds, tokens) = (api.clone(), holds.clone(), tokens.clone());
            async move {
                let (reference, token) = &holds[i];
                loop {
                    let (_, order) = api
                        .get(
                            &format!("/payments/transactions/{reference}"),
                            Some(&tokens[*token]),
                        )
                        .await
                        .unwrap_or((0, Value::Null));
                    if order["status"] == "refunded" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
    }
    let all_refunded_s = cancel_start.elapsed().as_secs_f64();
    let refund_calls: usize = fake.refunds.lock().unwrap().values().sum();
    let refunded_twice = fake
        .refunds
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 1)
        .count();
    if refunded_twice > 0 {
        violations.push(format!("{refunded_twice} orders refunded more than once"));
    }
    let reconcile_after_cancel = reconcile(a, tag, &event_id).await?;
    for (when, r) in [
        ("sale", &reconcile_after_sale),
        ("cancel", &reconcile_after_cancel),
    ] {
        if r["exit"] != 0 {
            violations.push(format!("reconcile after the {when}: {}", r["output"]));
        }
    }
    Ok(json!({
        "reconcile_after_sale": reconcile_after_sale, "reconcile_after_cancel": reconcile_after_cancel,
        "all_refunded_seconds": all_refunded_s, "refund_calls": refund_calls,
        "holds": holds.len(), "sold_out": sold_h.len(), "errors": errors.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        "contested_seconds": last_hold.as_secs_f64(), "holds_per_s": holds_per_s,
        "sold_out_per_s": sold_out_per_s, "sold_out_after_sellout": sold_after.len(),
        "latency_hold": summary(&held_h), "latency_sold_out": summary(&sold_h), "latency_other": summary(&other_h),
        "peak_rss_mib_during_sale": rss_during_sale, "peak_rss_mib_process": rss_process_peak,
        "webhook_to_ticket": summary(&latencies), "all_paid_seconds": all_paid_s,
        "websocket": websocket, "mail": mail,
        "oversold": (holds.len() as i64 - a.capacity).max(0),
        "violations": violations,
    }))
}

/// `ticketing reconcile --event ID` against the bench's database: its output and exit code.
async fn reconcile(a: &Args, tag: &str, event_id: &str) -> anyhow::Result<Value> {
    let base = a
        .database_admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    let out = tokio::process::Command::new(&a.server_bin)
        .args(["reconcile", "--event", event_id])
        .env("DATABASE_URL", format!("{base}/ticketing_bench_{tag}"))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .context("running ticketing reconcile")?;
    let output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("$ ticketing reconcile --event {event_id}\n{output}");
    Ok(json!({ "exit": out.status.code(), "output": output }))
}

async fn checkin(a: &Args, api: Arc<Api>, tag: &str) -> anyhow::Result<Value> {
    let per_order = 100usize;
    let (owner, event_id) = seed_event(
        &api,
        &format!("{tag}-door"),
        0,
        a.checkin_tickets as i64,
        per_order as i64,
    )
    .await?;
    let holder = signup(&api, &format!("holder-{tag}@bench.test")).await?;
    eprintln!("checkin: issuing {} free tickets…", a.checkin_tickets);
    let keys = Arc::new(Mutex::new(Vec::with_capacity(a.checkin_tickets)));
    {
        let orders = a.checkin_tickets.div_ceil(per_order);
        let (api, keys, event_id, holder) =
            (api.clone(), keys.clone(), event_id.clone(), holder.clone());
        let total = a.checkin_tickets;
        run_pool(orders, 8, move |i| {
            let (api, keys, event_id, holder) =
                (api.clone(), keys.clone(), event_id.clone(), holder.clone());
            async move {
                let q = per_order.min(total - i * per_order);
                let (status, order) = api
                    .post(
                        &format!("/events/{event_id}/tickets/purchase"),
                        Some(&holder),
                        &json!({ "tier": "GA", "quantity": q }),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, 201, "{order}");
                let mut k = keys.lock().unwrap();
                for t in order["tickets"].as_array().unwrap() {
                    k.push(t["access_key"].as_str().unwrap().to_owned());
                }
            }
        })
        .await;
    }
    let mut keys = std::mem::take(&mut *keys.lock().unwrap());
    // One scan in ten is a duplicate (a second gate, a second try).
    let dups: Vec<String> = keys.iter().step_by(10).cloned().collect();
    keys.extend(dups);
    let keys = Arc::new(keys);
    eprintln!("checkin: {} scans at {} gates…", keys.len(), a.gates);
    let results = Arc::new(Mutex::new((hist(), 0usize, 0usize, 0usize)));
    let start = Instant::now();
    {
        let (api, keys, results, event_id, owner) = (
            api.clone(),
            keys.clone(),
            results.clone(),
            event_id.clone(),
            owner.clone(),
        );
        run_pool(keys.len(), a.gates, move |i| {
            let (api, keys, results, event_id, owner) = (
                api.clone(),
                keys.clone(),
                results.clone(),
                event_id.clone(),
                owner.clone(),
            );
            async move {
                let t0 = Instant::now();
                let (status, _) = api
                    .post(
                        &format!("/events/{event_id}/tickets/validate"),
                        Some(&owner),
                        &json!({ "access_key": keys[i] }),
                    )
                    .await
                    .unwrap_or((0, Value::Null));
                let mut r = results.lock().unwrap();
                r.0.record(t0.elapsed().as_micros() as u64).unwrap();
                match status {
                    200 => r.1 += 1,
                    409 => r.2 += 1,
                    _ => r.3 += 1,
                }
            }
        })
        .await;
    }
    let secs = start.elapsed().as_secs_f64();
    let r = results.lock().unwrap();
    let mut violations = Vec::new();
    if r.1 != a.checkin_tickets {
        violations.push(format!("admitted {} of {} tickets", r.1, a.checkin_tickets));
    }
    Ok(
        json!({ "scans": keys.len(), "admitted": r.1, "already_used": r.2, "errors": r.3,
               "validations_per_s": keys.len() as f64 / secs, "latency": summary(&r.0), "violations": violations }),
    )
}

async fn public_read(a: &Args, api: Arc<Api>, tag: &str) -> anyhow::Result<Value> {
    let (_, event_id) = seed_event(&api, &format!("{tag}-read"), 500_000, 100, 10).await?;
    let path = Arc::new(format!("/events/{event_id}"));
    let stop = Instant::now() + Duration::from_secs(a.read_seconds);
    let h = Arc::new(Mutex::new((hist(), 0usize)));
    let start = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (api, path, h) = (api.clone(), path.clone(), h.clone());
            tokio::spawn(async move {
                let mut local = hist();
                let mut errors = 0;
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    match api.client.get(api.url(&path)).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            local.record(t0.elapsed().as_micros() as u64).unwrap();
                        }
                        _ => errors += 1,
                    }
                }
                let mut g = h.lock().unwrap();
                g.0.add(&local).unwrap();
                g.1 += errors;
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    let secs = start.elapsed().as_secs_f64();
    let g = h.lock().unwrap();
    Ok(
        json!({ "requests": g.0.len(), "errors": g.1, "req_per_s": g.0.len() as f64 / secs, "latency": summary(&g.0) }),
    )
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let tag = format!("{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let (fake, fake_url) = start_fake().await?;
    let mut servers = start_servers(&a, &fake_url, &tag).await?;
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        urls: servers.iter().map(|s| s.url.clone()).collect(),
        next: AtomicUsize::new(0),
    });
    let mut report = json!({ "instances": a.instances, "capacity": a.capacity, "buyers": a.buyers,
                             "concurrency": a.concurrency, "users": a.users });
    if a.scenarios.iter().any(|s| s == "flash") {
        report["flash"] = flash_sale(&a, api.clone(), &fake, &servers, &tag).await?;
    }
    if a.scenarios.iter().any(|s| s == "checkin") {
        report["checkin"] = checkin(&a, api.clone(), &tag).await?;
    }
    if a.scenarios.iter().any(|s| s == "read") {
        report["read"] = public_read(&a, api.clone(), &tag).await?;
    }
    for s in &mut servers {
        let _ = s.child.kill().await;
    }

    let f = &report["flash"];
    println!(
        "\n== flash sale: {} buyers, {} seats, concurrency {}, {} instance(s)",
        a.buyers, a.capacity, a.concurrency, a.instances
    );
    if !f.is_null() {
        println!(
            "holds/s (contested)      {:>10.0}   ({} holds in {:.3} s)",
            f["holds_per_s"].as_f64().unwrap_or(0.0),
            f["holds"],
            f["contested_seconds"].as_f64().unwrap_or(0.0)
        );
        println!(
            "sold-out answers/s after {:>10.0}",
            f["sold_out_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "cancel → all refunded    {:>10.1} s   ({} refund calls; paced by PAYSTACK_REFUNDS_PER_SECOND)",
            f["all_refunded_seconds"].as_f64().unwrap_or(0.0),
            f["refund_calls"]
        );
        for key in ["reconcile_after_sale", "reconcile_after_cancel"] {
            println!(
                "{key}: exit {}, {}",
                f[key]["exit"],
                f[key]["output"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        for (name, key) in [("hold", "latency_hold"), ("sold_out", "latency_sold_out")] {
            let l = &f[key];
            println!(
                "latency {name:<9} p50 {:>7.2} ms  p95 {:>7.2}  p99 {:>7.2}  max {:>7.2}",
                l["p50_ms"].as_f64().unwrap_or(0.0),
                l["p95_ms"].as_f64().unwrap_or(0.0),
                l["p99_ms"].as_f64().unwrap_or(0.0),
                l["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
        println!("errors                   {}", f["errors"]);
        println!(
            "RSS during the sale (MiB) {}  (process peak incl. seeding {})",
            f["peak_rss_mib_during_sale"], f["peak_rss_mib_process"]
        );
        let w = &f["webhook_to_ticket"];
        println!(
            "webhook→tickets          p50 {:.2} ms  p99 {:.2} ms; all paid in {:.2} s",
            w["p50_ms"].as_f64().unwrap_or(0.0),
            w["p99_ms"].as_f64().unwrap_or(0.0),
            f["all_paid_seconds"].as_f64().unwrap_or(0.0)
        );
        let ws = &f["websocket"];
        println!(
            "websocket                {} subscribers, {} paid pushes at {:.0}/s; webhook→push p50 {:.2} ms  p99 {:.2} ms",
            ws["subscribers"],
            ws["paid_pushes"],
            ws["pushes_per_s"].as_f64().unwrap_or(0.0),
            ws["webhook_to_push"]["p50_ms"].as_f64().unwrap_or(0.0),
            ws["webhook_to_push"]["p99_ms"].as_f64().unwrap_or(0.0)
        );
        println!(
            "ticket mail              {} sent; the last {:.2} s after the last payment (5 requests/s)",
            f["mail"]["ticket_mails_sent"],
            f["mail"]["last_mail_after_last_payment_s"]
                .as_f64()
                .unwrap_or(0.0)
        );
        println!("oversold                 {}", f["oversold"]);
    }
    let c = &report["checkin"];
    if !c.is_null() {
        println!(
            "== check-in: {} scans at {} gates: {:.0} validations/s, p99 {:.2} ms (admitted {}, duplicates {})",
            c["scans"],
            a.gates,
            c["validations_per_s"].as_f64().unwrap_or(0.0),
            c["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            c["admitted"],
            c["already_used"]
        );
    }
    let r = &report["read"];
    if !r.is_null() {
        println!(
            "== public event read, 64 clients: {:.0} req/s, p99 {:.2} ms",
            r["req_per_s"].as_f64().unwrap_or(0.0),
            r["latency"]["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!("{report}");
    let violations: Vec<&Value> = ["flash", "checkin"]
        .iter()
        .filter_map(|k| report[k]["violations"].as_array())
        .flatten()
        .collect();
    if !violations.is_empty() {
        eprintln!("INVARIANTS VIOLATED: {violations:?}");
        std::process::exit(1);
    }
    Ok(())
}
