//! Monitoring, proven on a real Prometheus (Debian's `prometheus` package; `scripts/test`
//! installs it when missing and then requires this test to run). Prometheus runs the
//! project's own `monitoring/prometheus.yml` and `monitoring/alerts.yml`, with only the
//! target, the rule path and the intervals changed for a test; a flow with a failed purchase,
//! a paid one, a failed refund attempt, a refund, a failed and a good payout, a forged webhook
//! and a failing mail runs against the app; then every query of the Grafana dashboard must
//! return data and every alert must fire.

use std::{path::PathBuf, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::{
        Fault,
        paystack::{RefundOutcome, TransferOutcome},
    },
    helpers::*,
};

fn prometheus() -> Option<PathBuf> {
    [
        std::env::var("PROMETHEUS").ok(),
        Some("/usr/bin/prometheus".to_owned()),
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `text` with `from` replaced by `to`, which must be there: the test's copy differs from the
/// project's file only where it says.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is no longer in the file");
    text.replace(from, to)
}

async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let res: Value = client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["status"], "success", "{expr}: {res}");
    res["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Prometheus's alerts, as its HTTP API lists them.
async fn alerts(client: &reqwest::Client, prometheus: &str) -> Value {
    client
        .get(format!("{prometheus}/api/v1/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Purchases that fail while Paystack cannot start a checkout (the route's faults are set).
async fn failed_purchases(app: &TestApp, buyers: &[String], event_id: &str) {
    for buyer in buyers {
        let res = purchase(app, buyer, event_id, "Regular", 1).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn a_real_prometheus_answers_every_dashboard_query_and_fires_every_alert() {
    let Some(binary) = prometheus() else {
        assert!(
            std::env::var_os("REQUIRE_PROMETHEUS").is_none(),
            "REQUIRE_PROMETHEUS is set (scripts/test found Prometheus) but none is here"
        );
        eprintln!(
            "SKIPPED a_real_prometheus_answers_every_dashboard_query_and_fires_every_alert: no \
             prometheus (scripts/test installs Debian's package; set PROMETHEUS to another binary)"
        );
        return;
    };
    let app = TestApp::builder()
        .env("SWEEP_INTERVAL_SECONDS", "1")
        .env("REDRIVE_AFTER_SECONDS", "1")
        .env("PAYOUT_DELAY_SECONDS", "0")
        .env("PAYSTACK_TIMEOUT_MILLIS", "1000")
        .env("PAYSTACK_REFUNDS_PER_SECOND", "100")
        .spawn()
        .await;

    // Prometheus with the project's configuration, aimed at this app, every second.
    let dir = std::env::temp_dir().join(format!("prometheus-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rules = swap(&repo_file("monitoring/alerts.yml"), "for: 5m", "for: 0s");
    std::fs::write(dir.join("alerts.yml"), rules).unwrap();
    let target = app.address.trim_start_matches("http://");
    let mut config = repo_file("monitoring/prometheus.yml");
    config = swap(
        &config,
        "targets: [\"app:3000\"]",
        &format!("targets: [\"{target}\"]"),
    );
    config = swap(
        &config,
        "/etc/prometheus/alerts.yml",
        dir.join("alerts.yml").to_str().unwrap(),
    );
    config = swap(&config, "scrape_interval: 5s", "scrape_interval: 1s");
    config = swap(
        &config,
        "evaluation_interval: 5s",
        "evaluation_interval: 1s",
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let _prometheus = tokio::process::Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prom = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), || async {
        let up = client.get(format!("{prom}/-/ready")).send().await.ok()?;
        up.status().is_success().then_some(())
    })
    .await;

    // Scraping, and quiet: nothing has gone wrong yet, so no alert fires.
    eventually(Duration::from_secs(60), || async {
        let up = query(&client, &prom, "up{job=\"ticketing\"} == 1").await;
        (!up.is_empty()).then_some(())
    })
    .await;
    let quiet = alerts(&client, &prom).await;
    assert_eq!(quiet["data"]["alerts"], json!([]), "alerts before the flow");

    // ---- the flow ----
    let (owner, event_id, _) = event_with_tier(&app, 500_000, 50).await;
    let (payee, ended_event, _) = event_with_tier(&app, 500_000, 50).await;
    let buyers = attendees(&app, 16).await;
    // Failed purchases: Paystack cannot start the checkout (503s, the 5xx alert's food).
    app.paystack
        .fail_route("POST /transaction/initialize", &[Fault::ServerError; 32]);
    // Three bursts, each scraped before the next: a rate needs samples that differ.
    for burst in 1..=3 {
        failed_purchases(&app, &buyers[..8], &event_id).await;
        eventually(Duration::from_secs(30), || async {
            let seen = query(
                &client,
                &prom,
                "sum(ticketing_http_requests_total{status=\"503\"})",
            )
            .await;
            let count: f64 = seen.first()?["value"][1].as_str()?.parse().ok()?;
            (count >= f64::from(8 * burst)).then_some(())
        })
        .await;
    }
    app.paystack
        .clear_route_faults("POST /transaction/initialize");
    // A payment for the wrong amount: a failed payment, refunded.
    let wrong = hold(&app, &buyers[8], &event_id, "Regular", 1).await;
    let wrong_ref = wrong["reference"].as_str().unwrap().to_owned();
    app.paystack.set_amount(&wrong_ref, 1_000);
    app.paystack.pay(&wrong_ref).await;
    // Paid orders on both events; the first mail attempt fails.
    app.resend.fail_next(&[Fault::ServerError]);
    let mut paid = Vec::new();
    for (i, buyer) in buyers[9..].iter().enumerate() {
        let event = if i < 4 { &event_id } else { &ended_event };
        let order = hold(&app, buyer, event, "Regular", 1).await;
        let reference = order["reference"].as_str().unwrap().to_owned();
        app.paystack.pay(&reference).await;
        paid.push((buyer.clone(), reference));
    }
    for (buyer, reference) in &paid {
        wait_for_status(&app, buyer, reference, "paid").await;
    }
    // A check-in and a live websocket.
    let order = order_status(&app, &paid[0].0, &paid[0].1).await;
    let key = order["tickets"][0]["access_key"].as_str().unwrap();
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate"),
            &owner,
            &json!({ "access_key": key }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_socket, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?token={}",
        app.address.replace("http://", "ws://"),
        paid[0].0
    ))
    .await
    .unwrap();
    // A refund whose first attempt fails at the processor, then goes through.
    app.paystack
        .set_refund_outcome(&paid[1].1, RefundOutcome::FailOnce);
    let order_id = order_status(&app, &paid[1].0, &paid[1].1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/orders/{order_id}/refund"),
            &owner,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    wait_for_status(&app, &paid[1].0, &paid[1].1, "refunded").await;
    // A forged webhook: a charge.success signed with a key that is not ours.
    let forged = serde_json::to_vec(&json!({ "event": "charge.success",
        "data": { "id": 1, "reference": paid[2].1, "status": "success", "amount": 500_000, "currency": "NGN" } }))
    .unwrap();
    let res = app
        .client
        .post(app.url("/payments/callback"))
        .header("content-type", "application/json")
        .header(
            "x-paystack-signature",
            crate::fakes::paystack::sign("sk_test_forger", &forged),
        )
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A login.
    signup(&app, "watched@example.com").await;
    let res = app
        .post_json(
            "/auth/login",
            &json!({ "email": "watched@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // A payout whose first transfer fails, then goes through.
    app.paystack.set_transfer_outcome(TransferOutcome::FailOnce);
    end_event(&app, &ended_event).await;
    eventually(Duration::from_secs(60), || async {
        let body: Value = app.get_json_auth("/users/organizer/payouts", &payee).await;
        (body["items"][0]["status"] == "success").then_some(())
    })
    .await;

    // A hold left unpaid (the active-holds gauge).
    hold(&app, &buyers[0], &event_id, "Regular", 1).await;

    // ---- what Prometheus sees ----
    let dashboard: Value =
        serde_json::from_str(&repo_file("monitoring/grafana/dashboards/ticketing.json")).unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                map.values().for_each(|v| collect(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 15,
        "the dashboard has {} queries?",
        exprs.len()
    );
    // Grafana's interval, as it would pick it for a short range.
    let exprs: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$__rate_interval", "1m"))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut empty = exprs.clone();
    while !empty.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for expr in empty {
            if query(&client, &prom, &expr).await.is_empty() {
                still.push(expr);
            }
        }
        empty = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    // Data, and not only the zeros registered at start: every panel shows the flow.
    // (The sweeper refreshes the holds gauge each pass: allow a few scrapes.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut flat = exprs.clone();
    while !flat.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for expr in flat {
            let result = query(&client, &prom, &expr).await;
            let moved = result.iter().any(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0 && v.is_finite())
            });
            if !moved {
                still.push(expr);
            }
        }
        flat = still;
        if !flat.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        flat.is_empty(),
        "dashboard queries that stayed at zero: {flat:#?}"
    );
    // A last burst of 503s, so the 5xx rate is over its threshold however long the flow took.
    app.paystack
        .fail_route("POST /transaction/initialize", &[Fault::ServerError; 16]);
    failed_purchases(&app, &buyers[..8], &event_id).await;
    app.paystack
        .clear_route_faults("POST /transaction/initialize");
    let expected = [
        "RefundsFailing",
        "PayoutsFailing",
        "WebhookSignatureFailures",
        "ServerErrorRate",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let firing = loop {
        let res = alerts(&client, &prom).await;
        let firing: Vec<String> = res["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect();
        if expected
            .iter()
            .all(|name| firing.contains(&name.to_string()))
        {
            break firing;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts firing: {firing:?}, expected {expected:?}; all: {}",
            res["data"]["alerts"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_invariants(&app).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "PROMETHEUS dashboard_queries={} with_data={} nonzero={} alerts_firing={firing:?}",
        exprs.len(),
        exprs.len() - empty.len(),
        exprs.len() - flat.len()
    );
}
