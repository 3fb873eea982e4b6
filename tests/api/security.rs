//! Security review findings (issue 13), each shown by a test through the public API. This
//! file grows with that issue; see `docs/security.md`.

use reqwest::StatusCode;

use crate::helpers::{
    TestApp, assert_invariants, attendees, event_with_tier, hold, problem, purchase, signup,
};

#[tokio::test]
async fn a_nul_in_a_transaction_reference_is_a_404_not_a_500() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "nul@example.com").await;
    for reference in ["ord-abc%00def", "%00", "ord-%E2%80%AE"] {
        let res = app
            .get_auth(&format!("/payments/transactions/{reference}"), &token)
            .await;
        problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn readiness_names_what_is_down_without_its_error_text() {
    let app = TestApp::builder()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .spawn()
        .await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["postgres"], "ok");
}

#[tokio::test]
async fn unknown_http_methods_share_one_metric_label() {
    let app = TestApp::spawn().await;
    for method in ["FOOBAR", "QWERTY1", "ZZZ"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let _ = app
            .client
            .request(m, app.url("/health/live"))
            .send()
            .await
            .unwrap();
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for method in ["FOOBAR", "QWERTY1", "ZZZ"] {
        assert!(
            !metrics.contains(&format!("method=\"{method}\"")),
            "a client-chosen method became a label: {method}"
        );
    }
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
}

#[tokio::test]
async fn local_uploads_are_served_nosniff_and_not_at_all_with_cloudinary() {
    // With Cloudinary configured, nothing is served from local disk.
    let app = TestApp::spawn().await;
    let res = app.get("/uploads/anything.png").await;
    problem(res, StatusCode::NOT_FOUND, "not_found").await;

    // Without it, posters come from disk, never to be sniffed into another type.
    let local = TestApp::builder()
        .without("CLOUDINARY_CLOUD_NAME")
        .env(
            "UPLOAD_DIR",
            std::env::temp_dir().to_string_lossy().to_string(),
        )
        .spawn()
        .await;
    let name = format!("poster-{}.png", uuid::Uuid::now_v7());
    std::fs::write(std::env::temp_dir().join(&name), b"\x89PNG\r\n\x1a\nfake").unwrap();
    let res = local.get(&format!("/uploads/{name}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let _ = std::fs::remove_file(std::env::temp_dir().join(&name));
}

#[tokio::test]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let app = TestApp::builder()
        .env("METRICS_TOKEN", "a-metrics-token-for-prometheus")
        .spawn()
        .await;
    problem(
        app.get("/metrics").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let res = app.get_auth("/metrics", "not-the-token").await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .get_auth("/metrics", "a-metrics-token-for-prometheus")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("ticketing_"));
}

// ---- hold hoarding (High) ----

#[tokio::test]
async fn one_account_cannot_hold_more_than_the_cap_while_others_still_buy() {
    let app = TestApp::builder()
        .env("MAX_ACTIVE_HOLDS_PER_USER", "2")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 50).await;
    let hoarder = signup(&app, "hoarder@example.com").await;

    // Ten purchases at once, racing each other: the cap is checked under a lock per buyer,
    // so exactly two holds come out of it.
    let attempts = (0..10).map(|_| purchase(&app, &hoarder, &event_id, "Regular", 5));
    let answers = futures::future::join_all(attempts).await;
    let mut held = 0;
    for res in answers {
        match res.status() {
            StatusCode::CREATED => held += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // When the first hold expires: HOLD_TTL_SECONDS (900 by default), rounded up.
                assert!((1..=901).contains(&retry), "Retry-After {retry}");
                problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_holds").await;
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!(
        held, 2,
        "the hoarder holds exactly MAX_ACTIVE_HOLDS_PER_USER orders"
    );

    // Everyone else still gets seats: 10 taken, 40 left.
    for buyer in attendees(&app, 4).await {
        hold(&app, &buyer, &event_id, "Regular", 10).await;
    }
    problem(
        purchase(&app, &hoarder, &event_id, "Regular", 1).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_holds",
    )
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_retry_of_a_held_order_is_answered_even_at_the_cap() {
    let app = TestApp::builder()
        .env("MAX_ACTIVE_HOLDS_PER_USER", "1")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    let buyer = signup(&app, "retry@example.com").await;
    let send = || {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(&buyer)
            .header("idempotency-key", "same-key")
            .json(&serde_json::json!({ "tier": "Regular", "quantity": 1 }))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    // Without the Redis mirror of the key (e.g. after a Redis restart) the retry reaches the
    // capped hold path, which must still answer the first order.
    let mut redis = app.state.redis.conn();
    let mirrors: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:idem:*", app.state.redis.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(mirrors.len(), 1);
    let _: () = redis::cmd("DEL")
        .arg(&mirrors)
        .query_async(&mut redis)
        .await
        .unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["reference"], again["reference"]);
}

#[tokio::test]
async fn free_tickets_per_account_are_capped_per_event() {
    let app = TestApp::builder()
        .env("MAX_FREE_TICKETS_PER_USER", "3")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 0, 100).await;
    let taker = signup(&app, "free@example.com").await;
    let order = hold(&app, &taker, &event_id, "Regular", 2).await;
    assert_eq!(order["status"], "paid");
    // 2 + 2 > 3: refused, and nothing is taken.
    problem(
        purchase(&app, &taker, &event_id, "Regular", 2).await,
        StatusCode::CONFLICT,
        "free_ticket_limit",
    )
    .await;
    hold(&app, &taker, &event_id, "Regular", 1).await;
    problem(
        purchase(&app, &taker, &event_id, "Regular", 1).await,
        StatusCode::CONFLICT,
        "free_ticket_limit",
    )
    .await;
    // Another account is not affected.
    let other = signup(&app, "free2@example.com").await;
    hold(&app, &other, &event_id, "Regular", 3).await;
    let tickets = app.get_json_auth("/users/tickets", &taker).await;
    assert_eq!(tickets["items"].as_array().unwrap().len(), 3, "{tickets}");
    assert_invariants(&app).await;
}

#[tokio::test]
async fn purchases_are_rate_limited_per_address() {
    let app = TestApp::builder()
        .env("PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", "3")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    let buyers = attendees(&app, 2).await;
    for _ in 0..3 {
        let res = purchase(&app, &buyers[0], &event_id, "No such tier", 1).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    // Another account from the same address is refused too.
    let res = purchase(&app, &buyers[1], &event_id, "Regular", 1).await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn purchases_are_rate_limited_per_user() {
    let app = TestApp::builder()
        .env("PURCHASE_RATE_LIMIT_PER_MINUTE", "3")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    let buyer = signup(&app, "fast@example.com").await;
    // Attempts count whatever their answer (here: an unknown tier).
    for _ in 0..3 {
        let res = purchase(&app, &buyer, &event_id, "No such tier", 1).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let res = purchase(&app, &buyer, &event_id, "Regular", 1).await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The limit is per user: another buyer is served.
    let other = signup(&app, "slow@example.com").await;
    hold(&app, &other, &event_id, "Regular", 1).await;
}

// ---- the development pages ----

#[tokio::test]
async fn development_pages_answer_only_loopback_clients_when_app_env_is_unset() {
    // Behind a trusted proxy the client is the forwarded address.
    let app = TestApp::builder()
        .without("APP_ENV")
        .without("PAYSTACK_SECRET_KEY")
        .without("RESEND_API_KEY")
        .env("TRUST_FORWARDED_FOR", "true")
        .spawn()
        .await;
    let remote = app
        .client
        .get(app.url("/dev/outbox"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    problem(remote, StatusCode::NOT_FOUND, "not_found").await;
    let remote_pay = app
        .client
        .post(app.url("/sandbox/checkout/ord-x/pay"))
        .header("x-forwarded-for", "2001:db8::9")
        .send()
        .await
        .unwrap();
    assert_eq!(remote_pay.status(), StatusCode::NOT_FOUND);
    let local = app.get("/dev/outbox").await;
    assert_eq!(local.status(), StatusCode::OK);

    // An explicit APP_ENV=development opens them to everyone.
    let open = TestApp::builder()
        .without("RESEND_API_KEY")
        .env("TRUST_FORWARDED_FOR", "true")
        .spawn()
        .await;
    let remote = open
        .client
        .get(open.url("/dev/outbox"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(remote.status(), StatusCode::OK);
}

// ---- bank account lookups ----

#[tokio::test]
async fn bank_account_lookups_are_limited_per_user() {
    let app = TestApp::builder()
        .env("BANK_ACCOUNT_LOOKUPS_PER_USER_PER_DAY", "2")
        .spawn()
        .await;
    let token = signup(&app, "lookup@example.com").await;
    let body = |account: &str| {
        serde_json::json!({ "name": "X", "email": "x@y.ng", "phone": "08012345678",
                            "bank_code": "058", "account_number": account })
    };
    // Two lookups of accounts that do not resolve (422 each, the holder name is the oracle).
    for _ in 0..2 {
        let res = app
            .post_json_auth("/users/organizer", &token, &body("9999999999"))
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let res = app
        .post_json_auth("/users/organizer", &token, &body("0123456789"))
        .await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(app.paystack.count("GET /bank/resolve"), 2);
}

// ---- overload ----

#[tokio::test]
async fn an_exhausted_database_pool_is_a_fast_503_and_the_service_recovers() {
    let app = TestApp::builder()
        .env("DATABASE_MAX_CONNECTIONS", "2")
        .env("DATABASE_ACQUIRE_TIMEOUT_MILLIS", "300")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    // Slow requests hold every connection of the pool.
    let held = futures::future::join_all((0..2).map(|_| app.state.db.acquire())).await;
    let held: Vec<_> = held.into_iter().map(Result::unwrap).collect();
    let started = std::time::Instant::now();
    let res = app.get(&format!("/events/{event_id}")).await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(2),
        "answered after {waited:?}"
    );
    assert_eq!(res.headers()["retry-after"], "1");
    problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
    drop(held);
    let res = app.get(&format!("/events/{event_id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_invariants(&app).await;
    println!(
        "FAULT pool-exhausted: pool=2 held=2 answer=503 retry_after=1 waited_ms={} recovered=200 invariants=ok",
        waited.as_millis()
    );
}
