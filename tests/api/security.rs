//! Security review findings (issue 13), each shown by a test through the public API. This
//! file grows with that issue; see `docs/security.md`.

use reqwest::StatusCode;

use crate::helpers::{TestApp, problem, signup};

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
