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

/// The whole document validates as OpenAPI 3.1 (openapi-spec-validator, the reference
/// validator; `scripts/test` installs it when missing), and every operation documents the
/// answers its kind of route gives: 401 when it needs a token, 404 when its path has an id,
/// 422 when it takes a body, 503 always — each error with the problem schema.
#[tokio::test]
async fn the_openapi_document_is_valid_and_documents_every_error() {
    let app = TestApp::spawn().await;
    let raw = app.get("/openapi.json").await.text().await.unwrap();
    let file = std::env::temp_dir().join(format!("openapi-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&file, &raw).unwrap();
    let check = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/test installs openapi-spec-validator)");
    let _ = std::fs::remove_file(&file);
    assert!(
        check.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let doc: Value = serde_json::from_str(&raw).unwrap();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let expected = [
                ("401", secured),
                ("404", path.contains('{')),
                ("422", op.get("requestBody").is_some()),
                ("503", true),
            ];
            for (status, applies) in expected {
                if applies && !responses.contains_key(status) {
                    missing.push(format!("{method} {path}: {status}"));
                }
            }
            for (status, response) in responses {
                if response["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(format!("{method} {path}: {status} has no description"));
                }
                let problem = &response["content"]["application/problem+json"];
                if status.starts_with('4') && problem.is_null() {
                    missing.push(format!("{method} {path}: {status} without problem+json"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
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
    ticketing::service::mail::enqueue(&app.state, &email("ada@example.com", "test/lost-answer"))
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
    ticketing::service::mail::enqueue(&app.state, &email("bola@example.com", "test/server-error"))
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

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/auth/signup"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b.co", "#)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_REQUEST, "malformed_json").await;
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_422_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/auth/login",
            &serde_json::json!({ "email": "a@b.co", "password": "x", "admin": true }),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "admin");

    let res = app
        .post_json(
            "/auth/login",
            &serde_json::json!({ "email": "a@b.co", "password": 12345678 }),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "password");
}

#[tokio::test]
async fn oversized_bodies_are_413_problems() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(ticketing::app::JSON_BODY_LIMIT + 1);
    let res = app
        .post_json(
            "/auth/login",
            &serde_json::json!({ "email": "a@b.co", "password": huge }),
        )
        .await;
    problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "text/plain")
        .body("email=a")
        .send()
        .await
        .unwrap();
    problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

/// A stand-in Redis that answers every command with +OK, except PING, which it holds until
/// released — so a readiness check is deterministically in flight while the test acts.
async fn held_ping_redis() -> (
    u16,
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ping_seen = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (seen, rel) = (ping_seen.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (seen, rel) = (seen.clone(), rel.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    // One RESP array: *N, then N bulk strings ($len, bytes).
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        line.clear();
                        reader.read_line(&mut line).await.unwrap();
                        let len: usize = line.trim_start_matches('$').trim().parse().unwrap();
                        let mut buf = vec![0; len + 2];
                        reader.read_exact(&mut buf).await.unwrap();
                        args.push(String::from_utf8_lossy(&buf[..len]).to_uppercase());
                    }
                    let reply: &[u8] = if args.first().map(String::as_str) == Some("PING") {
                        seen.notify_one();
                        rel.notified().await;
                        b"+PONG\r\n"
                    } else {
                        b"+OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, ping_seen, release)
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_request() {
    let (redis_port, ping_seen, release) = held_ping_redis().await;
    let mut app = TestApp::builder()
        .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("RUN_MODE", "http")
        .spawn()
        .await;
    let in_flight = {
        let (client, url) = (app.client.clone(), app.url("/health/ready"));
        tokio::spawn(async move { client.get(url).send().await })
    };
    // The readiness handler is now waiting on Redis: the request is in flight.
    ping_seen.notified().await;
    app.begin_shutdown();
    // The listener closes: new connections are refused…
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", app.port()))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    // …while the request in flight still gets its full answer.
    release.notify_one();
    let res = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["checks"]["redis"], "ok");
    app.wait_stopped().await;
}
