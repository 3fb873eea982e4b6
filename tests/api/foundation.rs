//! The service foundation: problem+json everywhere, request ids, metrics, readiness, the mail
//! job's idempotent retries, panics, timeouts and graceful shutdown.

use std::time::Duration;

use axum::{Router, routing::get};
use reqwest::StatusCode;
use serde_json::Value;
use ticketing::clients::mail::Email;

use crate::{
    fakes::{Fault, serve},
    helpers::{TestApp, eventually, problem},
};

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    let app = TestApp::spawn().await;
    let res = app.get("/no/such/route").await;
    problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .delete(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "client-chosen-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-chosen-id-42");

    let res = app.get("/health/live").await;
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    // Error answers carry it too.
    let res = app.get("/nowhere").await;
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn metrics_expose_http_series_after_a_request() {
    let app = TestApp::spawn().await;
    app.get("/health/live").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("ticketing_http_requests_total{")
                && l.contains(r#"route="/health/live""#)
                && l.contains(r#"status="200""#)
                && l.contains(r#"method="GET""#)),
        "{text}"
    );
    assert!(text.contains("ticketing_http_request_duration_seconds_bucket{"));
}

#[tokio::test]
async fn ready_when_postgres_and_redis_answer() {
    let app = TestApp::spawn().await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(body["checks"]["postgres"], "ok");
}

#[tokio::test]
async fn not_ready_when_redis_is_unreachable() {
    // A port nobody listens on: bind one, note it, close it.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = TestApp::builder()
        .env("REDIS_URL", format!("redis://127.0.0.1:{closed_port}"))
        .spawn()
        .await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_ne!(body["checks"]["redis"], "ok", "{body}");
    // Liveness is unaffected: the process runs.
    assert_eq!(app.get("/health/live").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn openapi_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/health/ready"]["get"]["responses"]["503"].is_object());
    let res = app.get("/docs").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("api-reference"));
}

fn email(to: &str, key: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Hello".to_owned(),
        html: "<p>Hello</p>".to_owned(),
        text: "Hello".to_owned(),
        kind: "test".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

#[tokio::test]
async fn mail_retried_after_a_lost_answer_arrives_once() {
    let app = TestApp::spawn().await;
    // Resend takes the message but the answer is lost as a 500: the job must retry, and the
    // retry must not send a second copy.
    app.resend.fail_next(&[Fault::ServerErrorAfterAccept]);
    app.state
        .queues
        .send_mail(email("ada@example.com", "test/lost-answer"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        (app.resend.requests() >= 2).then_some(())
    })
    .await;
    let sent = app.resend.sent_to("ada@example.com");
    assert_eq!(sent.len(), 1, "exactly one message: {sent:?}");
    assert_eq!(sent[0].idempotency_key.as_deref(), Some("test/lost-answer"));
}

#[tokio::test]
async fn mail_retried_after_a_server_error_arrives_once() {
    let app = TestApp::spawn().await;
    app.resend
        .fail_next(&[Fault::ServerError, Fault::HtmlUnavailable]);
    app.state
        .queues
        .send_mail(email("bola@example.com", "test/server-error"))
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(10), || async {
        let sent = app.resend.sent_to("bola@example.com");
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(app.resend.requests(), 3, "two failures, then the send");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_problem_and_keeps_the_connection() {
    let router = ticketing::app::with_middleware(
        Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("deliberate");
                    }
                    "unreachable"
                }),
            )
            .route("/fine", get(|| async { "fine" })),
        Duration::from_secs(5),
    );
    let base = serve(router).await;
    // One client, one pooled connection: the second request reuses it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let res = client.get(format!("{base}/boom")).send().await.unwrap();
    problem(res, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    let res = client.get(format!("{base}/fine")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_a_503_problem() {
    let router = ticketing::app::with_middleware(
        Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        ),
        Duration::from_millis(100),
    );
    let base = serve(router).await;
    let res = reqwest::get(format!("{base}/slow")).await.unwrap();
    problem(res, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
}
