//! Load generator for the ticketing API: the flash sale, check-in at the door, and public
//! reads. It starts the release server itself (one or two instances sharing PostgreSQL and
//! Redis), a cheap in-process Paystack fake, seeds through the public API, measures, checks
//! the invariants, and prints a human table and one JSON line.
//!
//!   cargo run --release -p bench -- [--capacity 5000] [--buyers 20000] [--concurrency 64]
//!        [--users 200] [--instances 1,2] [--checkin-tickets 50000] [--gates 8]
//!        [--read-seconds 10] [--scenarios flash,checkin,read] [--paystack live|unlimited]
//!
//! By default the Paystack fake keeps Paystack's live limits (initialize 20 and verify 50 a
//! second, 429 past them) and the sale runs on one instance, then on two.

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

/// The webhook burst's pace: 1,000 paid webhooks a second.
const WEBHOOKS_PER_S: u64 = 1_000;

/// Before the burst, this many webhooks come at an ordinary pace (`ORDINARY_PER_S`, well
/// inside Paystack's verify limit), and their webhook → tickets time is reported on its own:
/// the figure a buyer sees on a normal day.
const ORDINARY_WEBHOOKS: usize = 100;
const ORDINARY_PER_S: f64 = 20.0;

/// When the `i`th webhook is due after the payments begin: the ordinary ones first, then
/// the burst.
fn webhook_due(i: usize) -> Duration {
    let ordinary = i.min(ORDINARY_WEBHOOKS) as f64 / ORDINARY_PER_S;
    let burst = i.saturating_sub(ORDINARY_WEBHOOKS) as f64 / WEBHOOKS_PER_S as f64;
    Duration::from_secs_f64(ordinary + burst)
}

/// The longest any phase waits for the servers (links, payments, refunds) before it counts
/// what is missing as a violation instead of hanging the run.
const LONGEST_WAIT: Duration = Duration::from_secs(1_800);

// ---------------------------------------------------------------- arguments

struct Args {
    capacity: i64,
    buyers: usize,
    concurrency: usize,
    users: usize,
    /// Each figure is measured once per instance count listed.
    instances: Vec<usize>,
    /// Paystack's live per-second limits in the fake (`--paystack unlimited` lifts them).
    live_limits: bool,
    checkin_tickets: usize,
    gates: usize,
    read_seconds: u64,
    scenarios: Vec<String>,
    /// Stop the flash scenario after the sale (for profiling the holds alone).
    holds_only: bool,
    server_bin: String,
    server_env: Vec<(String, String)>,
    database_admin_url: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        // A contested period of several seconds even at several thousand holds a second.
        capacity: 5000,
        buyers: 20_000,
        concurrency: 64,
        users: 200,
        instances: vec![1, 2],
        live_limits: true,
        checkin_tickets: 50_000,
        gates: 8,
        read_seconds: 10,
        scenarios: vec!["flash".into(), "checkin".into(), "read".into()],
        holds_only: false,
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
            "--instances" => {
                a.instances = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--paystack" => {
                a.live_limits = match value()?.as_str() {
                    "live" => true,
                    "unlimited" => false,
                    other => bail!("--paystack live|unlimited, not {other}"),
                }
            }
            "--checkin-tickets" => a.checkin_tickets = value()?.parse()?,
            "--gates" => a.gates = value()?.parse()?,
            "--read-seconds" => a.read_seconds = value()?.parse()?,
            "--scenarios" => a.scenarios = value()?.split(',').map(str::to_owned).collect(),
            "--holds-only" => a.holds_only = true,
            "--server-bin" => a.server_bin = value()?,
            "--server-env" => {
                let v = value()?;
                let (k, val) = v.split_once('=').context("--server-env KEY=VALUE")?;
                a.server_env.push((k.to_owned(), val.to_owned()));
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.instances.is_empty() || a.instances.iter().any(|n| !(1..=2).contains(n)) {
        bail!("--instances lists 1 and/or 2");
    }
    Ok(a)
}

// ---------------------------------------------------------------- the Paystack fake

/// Just what the flash sale needs, kept cheap (a mutex around a map) so that it is never
/// what limits the figures — except for Paystack's own live limits, which it keeps unless
/// told not to.
#[derive(Clone, Default)]
struct Fake {
    txs: Arc<Mutex<HashMap<String, (i64, String)>>>,
    /// Paystack's live per-second limits (`limit`), or none.
    live_limits: bool,
    /// Calls of the current second per limited route, and the calls refused with 429.
    windows: Arc<Mutex<HashMap<&'static str, (u64, u32)>>>,
    refused: Arc<Mutex<HashMap<&'static str, usize>>>,
    /// Refunds asked for, by transaction reference (each processed at once).
    refunds: Arc<Mutex<HashMap<String, usize>>>,
}

/// Paystack live: initialize 1,200 and verify 3,000 per 60 s (external-apis.md), kept here
/// per second (20 and 50) as our shared budget paces them.
fn live_limit(route: &str) -> u32 {
    match route {
        "initialize" => 20,
        _ => 50,
    }
}

impl Fake {
    /// `Some(429)` past the route's live limit in the current second.
    fn limit(&self, route: &'static str) -> Option<axum::response::Response> {
        if !self.live_limits {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let second = now.as_secs();
        let mut windows = self.windows.lock().unwrap();
        let w = windows.entry(route).or_insert((second, 0));
        if w.0 != second {
            *w = (second, 0);
        }
        if w.1 < live_limit(route) {
            w.1 += 1;
            return None;
        }
        drop(windows);
        *self.refused.lock().unwrap().entry(route).or_default() += 1;
        use axum::response::IntoResponse;
        Some(
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [
                    ("x-ratelimit-limit", live_limit(route).to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", "1".to_owned()),
                ],
                Json(json!({ "status": false, "message": "Rate limit exceeded!",
                             "code": "rate_limited", "type": "api_error" })),
            )
                .into_response(),
        )
    }
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

async fn fake_initialize(
    State(f): State<Fake>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(refused) = f.limit("initialize") {
        return refused;
    }
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
    .into_response()
}

async fn fake_verify(
    State(f): State<Fake>,
    Path(reference): Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(refused) = f.limit("verify") {
        return refused;
    }
    let found = f.txs.lock().unwrap().get(&reference).cloned();
    match found {
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
    .into_response()
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

async fn start_fake(live_limits: bool) -> anyhow::Result<(Fake, String)> {
    let fake = Fake {
        live_limits,
        ..Fake::default()
    };
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

async fn start_servers(
    a: &Args,
    instances: usize,
    paystack_url: &str,
    tag: &str,
) -> anyhow::Result<Vec<Server>> {
    let base = a
        .database_admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    let mut servers = Vec::new();
    // At live limits the server keeps Paystack's budgets (its defaults); unlimited, they
    // are lifted so every link is made inline.
    let budget = if a.live_limits { None } else { Some("1000000") };
    for i in 0..instances {
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
            .env("PAYSTACK_INITIALIZES_PER_SECOND", budget.unwrap_or("20"))
            .env("PAYSTACK_VERIFIES_PER_SECOND", budget.unwrap_or("50"))
            // The fake processes refunds at once and has no refund limit; 100 a second keeps
            // the cancel-and-refund-everything step of a 5,000-seat sale under a minute.
            .env("PAYSTACK_REFUNDS_PER_SECOND", "100")
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

/// The servers' hold-batch histogram so far: (holds asked, batches).
async fn batch_stats(api: &Api, servers: &[Server]) -> (f64, f64) {
    let (mut sum, mut count) = (0.0, 0.0);
    for s in servers {
        let Ok(res) = api.client.get(format!("{}/metrics", s.url)).send().await else {
            continue;
        };
        let text = res.text().await.unwrap_or_default();
        for line in text.lines() {
            let value = || line.rsplit(' ').next()?.parse::<f64>().ok();
            if line.starts_with("ticketing_hold_batch_size_sum") {
                sum += value().unwrap_or(0.0);
            } else if line.starts_with("ticketing_hold_batch_size_count") {
                count += value().unwrap_or(0.0);
            }
        }
    }
    (sum, count)
}

/// CPU time so far: the machine's (busy, all) jiffies from /proc/stat, and each server's
/// (user + system) jiffies from /proc/<pid>/stat (the latter as this kernel reports it; the
/// machine's share is the figure to read).
fn cpu_ticks(servers: &[Server]) -> CpuTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        // user … steal; guest time is already counted in user.
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = fields.iter().sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let per_server = servers
        .iter()
        .map(|s| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap_or_default();
            // After the command: state, ppid, pgrp, session, tty, tpgid (may be -1), flags,
            // four fault counts, then utime and stime.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let t: Vec<&str> = rest.split_whitespace().collect();
            let at = |i: usize| t.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            at(11) + at(12)
        })
        .collect();
    (all - idle, all, per_server)
}

/// The machine's busy share and each server's cores used between two `cpu_ticks`.
type CpuTicks = (u64, u64, Vec<u64>);

fn cpu_use(before: &CpuTicks, after: &CpuTicks, wall: Duration) -> Value {
    let busy =
        after.0.saturating_sub(before.0) as f64 / after.1.saturating_sub(before.1).max(1) as f64;
    let hz = 100.0; // USER_HZ
    let servers: Vec<f64> = after
        .2
        .iter()
        .zip(&before.2)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / hz / wall.as_secs_f64().max(1e-9))
        .collect();
    json!({ "machine_busy": busy, "server_cores": servers })
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
    // Up to an hour: at live limits a webhook can wait minutes for its verify slot.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
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

/// Reads every hold not `lost` through `GET /payments/transactions/:ref` every `poll` until
/// `done` holds for it, for at most `LONGEST_WAIT`: how many never got there.
async fn wait_for_orders(
    api: &Arc<Api>,
    holds: &Arc<Vec<(String, usize)>>,
    tokens: &Arc<Vec<String>>,
    lost: &Arc<Vec<bool>>,
    concurrency: usize,
    poll: Duration,
    done: fn(&Value) -> bool,
) -> usize {
    let missing = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + LONGEST_WAIT;
    let (api, holds, tokens, lost, counted) = (
        api.clone(),
        holds.clone(),
        tokens.clone(),
        lost.clone(),
        missing.clone(),
    );
    run_pool(holds.len(), concurrency, move |i| {
        let (api, holds, tokens, lost, counted) = (
            api.clone(),
            holds.clone(),
            tokens.clone(),
            lost.clone(),
            counted.clone(),
        );
        async move {
            if lost[i] {
                return;
            }
            let (reference, token) = &holds[i];
            loop {
                let (_, order) = api
                    .get(
                        &format!("/payments/transactions/{reference}"),
                        Some(&tokens[*token]),
                    )
                    .await
                    .unwrap_or((0, Value::Null));
                if done(&order) {
                    break;
                }
                if Instant::now() > deadline {
                    counted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(poll).await;
            }
        }
    })
    .await;
    missing.load(Ordering::Relaxed)
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
    let batches_before = batch_stats(&api, servers).await;
    let cpu_before = cpu_ticks(servers);
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
    let cpu_sale = cpu_use(&cpu_before, &cpu_ticks(servers), total);
    // How many attempts shared a commit during the sale (asks per batch: refused ones too).
    let batches_after = batch_stats(&api, servers).await;
    let (asked, batches) = (
        batches_after.0 - batches_before.0,
        batches_after.1 - batches_before.1,
    );
    let hold_batches =
        json!({ "batches": batches, "mean_asks_per_batch": asked / batches.max(1.0) });
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
    let webhook_url = Arc::new(
        servers
            .iter()
            .map(|s| format!("{}/payments/callback", s.url))
            .collect::<Vec<_>>(),
    );
    if a.holds_only {
        eprintln!(
            "flash: {} holds/s, p50 {:.1} ms, p99 {:.1} ms, {} errors {:?}, {:.1} asks per commit, machine {:.0} % busy",
            holds_per_s as u64,
            ms(&held_h, 0.5),
            ms(&held_h, 0.99),
            other_h.len(),
            errors,
            hold_batches["mean_asks_per_batch"].as_f64().unwrap_or(0.0),
            cpu_sale["machine_busy"].as_f64().unwrap_or(0.0) * 100.0
        );
        return Ok(
            json!({ "holds_per_s": holds_per_s, "latency_hold": summary(&held_h), "violations": [] }),
        );
    }
    let holds = Arc::new(holds);
    // Every hold gets its checkout link — inline, or from the paced initializer at
    // Paystack's initialize limit — and keeps its seat meanwhile.
    eprintln!("flash: waiting for {} checkout links…", holds.len());
    // Holds that ended without a link (or never showed one in time): left out of the
    // payment and refund phases, and a violation.
    let lost = Arc::new(Mutex::new(vec![false; holds.len()]));
    let links_deadline = Instant::now() + LONGEST_WAIT;
    {
        let (api, holds, tokens, lost) = (api.clone(), holds.clone(), tokens.clone(), lost.clone());
        run_pool(holds.len(), 32, move |i| {
            let (api, holds, tokens, lost) =
                (api.clone(), holds.clone(), tokens.clone(), lost.clone());
            async move {
                let (reference, token) = &holds[i];
                loop {
                    if Instant::now() > links_deadline {
                        lost.lock().unwrap()[i] = true;
                        break;
                    }
                    let (_, order) = api
                        .get(
                            &format!("/payments/transactions/{reference}"),
                            Some(&tokens[*token]),
                        )
                        .await
                        .unwrap_or((0, Value::Null));
                    if order["authorization_url"].is_string() {
                        break;
                    }
                    if order["status"].is_string() && order["status"] != "pending" {
                        lost.lock().unwrap()[i] = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
        .await;
    }
    let last_link_s = start.elapsed().as_secs_f64();
    let lost: Arc<Vec<bool>> = Arc::new(lost.lock().unwrap().clone());
    let lost_holds = lost.iter().filter(|l| **l).count();
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
                if !matches!(socket.next().await, Some(Ok(_))) {
                    return;
                }
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
    // The webhook burst: every paid webhook sent at up to WEBHOOKS_PER_S (Paystack delivers
    // a sale's payments as fast as buyers pay), then every order watched until it is paid
    // with its ticket. With verify at the live limit, settlement runs at Paystack's pace.
    let pay_start = Instant::now();
    eprintln!(
        "flash: {} paid webhooks at up to {WEBHOOKS_PER_S}/s…",
        holds.len()
    );
    {
        let (api, fake, holds, webhook_url, webhook_sent, lost) = (
            api.clone(),
            fake.clone(),
            holds.clone(),
            webhook_url.clone(),
            webhook_sent.clone(),
            lost.clone(),
        );
        run_pool(holds.len(), 64, move |i| {
            let (api, fake, holds, webhook_url, webhook_sent, lost) = (
                api.clone(),
                fake.clone(),
                holds.clone(),
                webhook_url.clone(),
                webhook_sent.clone(),
                lost.clone(),
            );
            async move {
                if lost[i] {
                    return;
                }
                let due = pay_start + webhook_due(i);
                tokio::time::sleep_until(due.into()).await;
                let (reference, _) = &holds[i];
                let amount = {
                    let mut txs = fake.txs.lock().unwrap();
                    let Some(tx) = txs.get_mut(reference) else {
                        return;
                    };
                    tx.1 = "success".into();
                    tx.0
                };
                let body = serde_json::to_vec(&json!({ "event": "charge.success",
                    "data": { "id": i, "status": "success", "reference": reference, "amount": amount, "currency": "NGN" } }))
                .unwrap();
                webhook_sent.lock().unwrap()[i] = Some(Instant::now());
                // Paystack redelivers until it gets a 200; so does the bench, a few times.
                for _ in 0..5 {
                    let sent = api
                        .client
                        .post(&webhook_url[i % webhook_url.len()])
                        .header("x-paystack-signature", sign(&body))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
    }
    let webhooks_sent_s = pay_start.elapsed().as_secs_f64();
    // Paid pushes arrive on the websockets as orders settle; then each order is read once
    // through the API (paid, one ticket), waiting for any whose push was missed.
    let settle_wait = Instant::now();
    while pushed
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.is_some())
        .count()
        < subscribed.load(Ordering::Relaxed)
        && settle_wait.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unpaid = wait_for_orders(
        &api,
        &holds,
        &tokens,
        &lost,
        32,
        Duration::from_millis(50),
        |o| o["status"] == "paid" && o["tickets"].as_array().map(Vec::len) == Some(1),
    )
    .await;
    let latencies = Arc::new(Mutex::new(hist()));
    for (sent, got) in webhook_sent
        .lock()
        .unwrap()
        .iter()
        .zip(pushed.lock().unwrap().iter())
    {
        if let (Some(sent), Some(got)) = (sent, got) {
            latencies
                .lock()
                .unwrap()
                .record(got.saturating_duration_since(*sent).as_micros().max(1) as u64)?;
        }
    }
    // Settled: the last `paid` push when every subscriber got one, else when the API showed
    // the last order paid.
    let last_push = pushed.lock().unwrap().iter().flatten().max().copied();
    let every_push =
        pushed.lock().unwrap().iter().flatten().count() >= subscribed.load(Ordering::Relaxed);
    let all_paid_s = match last_push {
        Some(at) if every_push => at.saturating_duration_since(pay_start).as_secs_f64(),
        _ => pay_start.elapsed().as_secs_f64(),
    };
    let all_paid_at = Instant::now();
    // The burst: the webhooks sent within the burst's first second (WEBHOOKS_PER_S of
    // them), settled when the last of them was pushed paid. The later webhooks compete with
    // them for verify slots, so a lone burst of that size would settle no later.
    let burst_start = pay_start + webhook_due(ORDINARY_WEBHOOKS);
    let first_second_settled_s = {
        let (sent, pushed) = (webhook_sent.lock().unwrap(), pushed.lock().unwrap());
        let first: Vec<Option<Instant>> = sent
            .iter()
            .zip(pushed.iter())
            // By position (the webhooks due in the burst's first second), not by when each
            // left: one sent a millisecond late still belongs to that second.
            .skip(ORDINARY_WEBHOOKS)
            .take(WEBHOOKS_PER_S as usize)
            .filter(|(s, _)| s.is_some())
            .map(|(_, p)| *p)
            .collect();
        match first.iter().flatten().max() {
            Some(last) if first.iter().all(Option::is_some) => json!({
                "webhooks": first.len(),
                "all_settled_seconds": last.saturating_duration_since(burst_start).as_secs_f64()
            }),
            _ => json!({ "webhooks": first.len(), "all_settled_seconds": null }),
        }
    };
    // Webhook → tickets (the paid push) at the ordinary pace.
    let mut ordinary_h = hist();
    for (sent, got) in webhook_sent
        .lock()
        .unwrap()
        .iter()
        .zip(pushed.lock().unwrap().iter())
        .take(ORDINARY_WEBHOOKS)
    {
        if let (Some(sent), Some(got)) = (sent, got) {
            ordinary_h.record(got.saturating_duration_since(*sent).as_micros().max(1) as u64)?;
        }
    }

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
    // 409 is the sold-out answer; anything else (a 503 because Paystack was busy, a lost
    // connection) means a buyer was failed.
    for (status, n) in &errors {
        violations.push(format!("{n} purchase attempts answered {status}"));
    }
    if unpaid > 0 {
        violations.push(format!(
            "{unpaid} orders not paid with their ticket after their webhook"
        ));
    }
    if lost_holds > 0 {
        violations.push(format!("{lost_holds} holds ended without a checkout link"));
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
    let unrefunded = wait_for_orders(
        &api,
        &holds,
        &tokens,
        &lost,
        16,
        Duration::from_millis(200),
        |o| o["status"] == "refunded",
    )
    .await;
    if unrefunded > 0 {
        violations.push(format!(
            "{unrefunded} paid orders not refunded after the cancel"
        ));
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
        "last_link_seconds": last_link_s, "holds_without_link": lost_holds,
        "webhooks_sent_seconds": webhooks_sent_s, "first_second_burst": first_second_settled_s,
        "webhook_to_ticket_ordinary": summary(&ordinary_h),
        "settled_per_s": holds.len() as f64 / all_paid_s.max(1e-9),
        "paystack_live_limits": a.live_limits, "cpu_during_sale": cpu_sale, "hold_batches": hold_batches,
        "paystack_refused": fake.refused.lock().unwrap().iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
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

/// The machine's own ceilings, measured with pgbench on a scratch database, so that every
/// figure reads as a fraction of a limit: `SELECT 1` round trips a second at 64 clients (no
/// API call can beat one database round trip per request), and guarded single-row updates
/// committed one at a time at 4 clients (the one-commit-per-hold wall the batcher gets past).
async fn ceilings(a: &Args) -> Value {
    let base = a
        .database_admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    let db = "ticketing_bench_ceiling";
    let admin = |sql: String| {
        tokio::process::Command::new("psql")
            .arg(&a.database_admin_url)
            .args(["-qc", &sql])
            .output()
    };
    let url = format!("{base}/{db}");
    let setup = async {
        admin(format!("DROP DATABASE IF EXISTS {db}")).await?;
        admin(format!("CREATE DATABASE {db}")).await?;
        tokio::process::Command::new("psql")
            .arg(&url)
            .args([
                "-qc",
                "CREATE TABLE tier (id int PRIMARY KEY, taken int NOT NULL, quantity int NOT NULL);
                 INSERT INTO tier VALUES (1, 0, 2000000000);",
            ])
            .output()
            .await
    };
    if setup.await.is_err() {
        return json!({ "note": "psql/pgbench not available" });
    }
    let dir = std::env::temp_dir();
    let select = dir.join("bench-select1.sql");
    let hold = dir.join("bench-hold.sql");
    let written = std::fs::write(&select, "SELECT 1;\n").and_then(|_| {
        std::fs::write(
            &hold,
            "UPDATE tier SET taken = taken + 1 WHERE id = 1 AND taken + 1 <= quantity;\n",
        )
    });
    if written.is_err() {
        return json!({ "note": "cannot write pgbench scripts" });
    }
    let tps = |clients: &'static str, script: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let out = tokio::process::Command::new("pgbench")
                .args(["-n", "-c", clients, "-j", "2", "-T", "5", "-f"])
                .arg(&script)
                .arg(&url)
                .output()
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("tps = "))
                .and_then(|l| l[6..].split_whitespace().next()?.parse::<f64>().ok())
        }
    };
    eprintln!(
        "ceilings: pgbench SELECT 1 (64 clients) and one guarded update per commit (4 clients), 5 s each…"
    );
    let select_1 = tps("64", select).await;
    let commit_per_hold = tps("4", hold).await;
    let _ = admin(format!("DROP DATABASE IF EXISTS {db}")).await;
    json!({ "select_1_per_s": select_1, "one_commit_per_hold_per_s": commit_per_hold })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let ceilings = ceilings(&a).await;
    let mut reports = Vec::new();
    for &instances in &a.instances {
        let report = run(&a, instances).await?;
        print_report(&a, instances, &report, &ceilings);
        reports.push(report);
    }
    println!(
        "{}",
        json!({ "ceilings": ceilings, "runs": reports, "capacity": a.capacity, "buyers": a.buyers,
                "concurrency": a.concurrency, "users": a.users, "paystack_live_limits": a.live_limits })
    );
    let violations: Vec<&Value> = reports
        .iter()
        .flat_map(|r| ["flash", "checkin"].map(|k| &r[k]["violations"]))
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    if !violations.is_empty() {
        eprintln!("INVARIANTS VIOLATED: {violations:?}");
        std::process::exit(1);
    }
    Ok(())
}

/// One measurement at `instances` servers: a fresh database, the scenarios, the report.
async fn run(a: &Args, instances: usize) -> anyhow::Result<Value> {
    let tag = format!(
        "{}_{instances}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let (fake, fake_url) = start_fake(a.live_limits).await?;
    let mut servers = start_servers(a, instances, &fake_url, &tag).await?;
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        urls: servers.iter().map(|s| s.url.clone()).collect(),
        next: AtomicUsize::new(0),
    });
    let mut report = json!({ "instances": instances });
    if a.scenarios.iter().any(|s| s == "flash") {
        report["flash"] = flash_sale(a, api.clone(), &fake, &servers, &tag).await?;
    }
    if a.scenarios.iter().any(|s| s == "checkin") {
        report["checkin"] = checkin(a, api.clone(), &tag).await?;
    }
    if a.scenarios.iter().any(|s| s == "read") {
        report["read"] = public_read(a, api.clone(), &tag).await?;
    }
    for s in &mut servers {
        let _ = s.child.kill().await;
    }
    Ok(report)
}

fn print_report(a: &Args, instances: usize, report: &Value, ceilings: &Value) {
    let f = &report["flash"];
    if !f.is_null() {
        println!(
            "\n== flash sale: {} buyers, {} seats, concurrency {}, {instances} instance(s), Paystack fake {}",
            a.buyers,
            a.capacity,
            a.concurrency,
            if a.live_limits {
                "at Paystack's live limits (initialize 1,200 and verify 3,000 per 60 s, enforced as 20 and 50 per clock second)"
            } else {
                "unlimited"
            }
        );
        println!(
            "   the bench's servers run with the per-user limits raised out of reach ({} attempts by {} \
             accounts from one address): MAX_ACTIVE_HOLDS_PER_USER, MAX_FREE_TICKETS_PER_USER, \
             PURCHASE_RATE_LIMIT_PER_MINUTE, PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE, \
             AUTH_RATE_LIMIT_PER_MINUTE (unless --server-env sets them)",
            a.buyers, a.users
        );
    }
    let ceiling = |k: &str| {
        ceilings[k]
            .as_f64()
            .map_or("n/a".to_owned(), |v| format!("{v:.0}/s"))
    };
    if !f.is_null() {
        println!(
            "holds/s (contested)      {:>10.0}   ({} holds in {:.3} s; one commit per hold caps at ≤ {}, pgbench of a bare guarded update)",
            f["holds_per_s"].as_f64().unwrap_or(0.0),
            f["holds"],
            f["contested_seconds"].as_f64().unwrap_or(0.0),
            ceiling("one_commit_per_hold_per_s")
        );
        println!(
            "CPU during the sale      machine {:.0} % busy (server, PostgreSQL, Redis and this load generator share it)",
            f["cpu_during_sale"]["machine_busy"].as_f64().unwrap_or(0.0) * 100.0
        );
        println!(
            "hold batches             {} commits during the sale, {:.1} attempts per commit on average",
            f["hold_batches"]["batches"],
            f["hold_batches"]["mean_asks_per_batch"]
                .as_f64()
                .unwrap_or(0.0)
        );
        println!(
            "checkout links           last one {:.1} s after the sale began (at 20 initializes/s, {} links take ≥ {:.0} s); {} holds lost their seat without a link",
            f["last_link_seconds"].as_f64().unwrap_or(0.0),
            f["holds"],
            f["holds"].as_f64().unwrap_or(0.0) / 20.0,
            f["holds_without_link"]
        );
        println!(
            "Paystack 429s            {} (by route; the servers' budgets should keep this empty)",
            f["paystack_refused"]
        );
        println!(
            "webhook burst            {} webhooks sent in {:.2} s; all settled {:.1} s after the first ({:.0}/s{})",
            f["holds"],
            f["webhooks_sent_seconds"].as_f64().unwrap_or(0.0),
            f["all_paid_seconds"].as_f64().unwrap_or(0.0),
            f["settled_per_s"].as_f64().unwrap_or(0.0),
            if a.live_limits {
                "; verify at 50/s bounds it"
            } else {
                ""
            }
        );
        let o = &f["webhook_to_ticket_ordinary"];
        println!(
            "webhook→tickets, ordinary {} webhooks at {ORDINARY_PER_S}/s first: p50 {:.2} ms  p99 {:.2} ms (goal: p99 ≤ 500 ms)",
            o["count"],
            o["p50_ms"].as_f64().unwrap_or(0.0),
            o["p99_ms"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  burst's first second   {} webhooks, all settled {} s after the burst began (goal: 1,000 within 25 s)",
            f["first_second_burst"]["webhooks"],
            f["first_second_burst"]["all_settled_seconds"]
                .as_f64()
                .map_or("—".to_owned(), |s| format!("{s:.1}"))
        );
        println!(
            "sold-out answers/s after {:>10.0}   (PostgreSQL SELECT 1 at 64 clients: {})",
            f["sold_out_per_s"].as_f64().unwrap_or(0.0),
            ceiling("select_1_per_s")
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
            "webhook→tickets (push)   p50 {:.2} ms  p99 {:.2} ms; all paid in {:.2} s",
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
            "== public event read, 64 clients: {:.0} req/s, p99 {:.2} ms (PostgreSQL SELECT 1: {})",
            r["req_per_s"].as_f64().unwrap_or(0.0),
            r["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            ceiling("select_1_per_s")
        );
    }
}
