//! Hostile input, as a table: what a fuzzer or an attacker sends, and the 4xx problem each
//! must get. Never a 5xx, never a hang, never a dropped connection; after the table the app
//! still answers. Schemathesis (scripts/schemathesis) generates more of the same from the
//! OpenAPI document; this table keeps the cases it cannot generate (bytes that are not JSON,
//! headers and URLs past the limits).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// One hostile request.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    /// The statuses that are right for it.
    expect: &'static [u16],
    authenticated: bool,
}

fn case(what: &'static str, method: Method, path: &str, expect: &'static [u16]) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        content_type: None,
        body: Vec::new(),
        headers: Vec::new(),
        expect,
        authenticated: false,
    }
}

impl Case {
    fn json(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = Some("application/json");
        self.body = body.into();
        self
    }

    fn header(mut self, name: &str, value: String) -> Case {
        self.headers.push((name.to_owned(), value));
        self
    }

    fn authenticated(mut self) -> Case {
        self.authenticated = true;
        self
    }
}

#[tokio::test]
async fn hostile_requests_get_a_4xx_problem_and_the_app_keeps_answering() {
    let app = TestApp::builder()
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000")
        .env("PURCHASE_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    let (owner, event_id, _) = event_with_tier(&app, 5_000, 10).await;
    let buyer = signup(&app, "fuzzed@example.com").await;
    let purchase_path = format!("/events/{event_id}/tickets/purchase");
    let tier_path = format!("/events/{event_id}/tickets/add");

    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let nested_object = |depth: usize| {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str("{\"a\":");
        }
        s.push('1');
        s.push_str(&"}".repeat(depth));
        s.into_bytes()
    };
    let cases = vec![
        case("deeply nested arrays", Method::POST, "/auth/signup", &[400, 422]).json(nested(30_000)),
        case("deeply nested objects", Method::POST, "/auth/login", &[400, 422]).json(nested_object(5_000)),
        case("invalid UTF-8 in a JSON body", Method::POST, "/auth/login", &[400])
            .json(b"{\"email\":\"\xff\xfe@example.com\",\"password\":\"x\"}".to_vec()),
        case("a lone surrogate escape", Method::POST, "/auth/login", &[400, 422])
            .json(br#"{"email":"\ud800@example.com","password":"x"}"#.to_vec()),
        case("a NUL in a stored string", Method::POST, "/auth/signup", &[422]).json(
            json!({ "email": "nul@example.com", "password": PASSWORD, "first_name": "a\u{0}b", "last_name": "c" })
                .to_string(),
        ),
        case("a NUL in an event title", Method::POST, "/events/create", &[422])
            .json({
                let mut body = event_body("x", 6.4, 3.4, 7);
                body["title"] = json!("Night\u{0}Out");
                body.to_string()
            })
            .authenticated(),
        case("a quantity past i64", Method::POST, &purchase_path, &[400, 422])
            .json(r#"{"tier":"Regular","quantity":99999999999999999999999}"#)
            .authenticated(),
        case("a quantity as a huge float", Method::POST, &purchase_path, &[400, 422])
            .json(r#"{"tier":"Regular","quantity":1e308}"#)
            .authenticated(),
        case("a negative quantity", Method::POST, &purchase_path, &[422])
            .json(r#"{"tier":"Regular","quantity":-1}"#)
            .authenticated(),
        case("a price past i64", Method::POST, &tier_path, &[400, 422])
            .json(r#"{"name":"Big","price":9223372036854775808,"quantity":1}"#)
            .authenticated(),
        case("a price at i64::MAX", Method::POST, &tier_path, &[422])
            .json(r#"{"name":"Big","price":9223372036854775807,"quantity":2147483647}"#)
            .authenticated(),
        case("latitude as infinity-sized number", Method::POST, "/events/nearby", &[400, 422])
            .json(r#"{"latitude":1e400,"longitude":3.4,"radius_km":10}"#),
        case("a subnormal longitude (ll_to_earth underflows)", Method::POST, "/events/nearby", &[200])
            .json(r#"{"latitude":0,"longitude":5e-324}"#),
        case("a subnormal radius", Method::POST, "/events/nearby", &[200])
            .json(r#"{"latitude":6.4,"longitude":3.4,"radius_km":1e-320}"#),
        case("an event at a subnormal latitude", Method::POST, "/events/create", &[201])
            .json({
                let mut body = event_body("Tiny", 6.4, 3.4, 7);
                body["latitude"] = json!(5e-324);
                body.to_string()
            })
            .authenticated(),
        case("an array where the body is an object", Method::POST, "/auth/login", &[422])
            .json(r#"["fuzzed@example.com","a good password"]"#),
        case("a number where the body is an object", Method::PATCH, "/users/profile", &[422])
            .json("1")
            .authenticated(),
        case("a NaN spelled out", Method::POST, "/events/nearby", &[400, 422])
            .json(r#"{"latitude":NaN,"longitude":3.4}"#),
        case("invalid UTF-8 in the query", Method::GET, "/events?q=%FF%FE%FD", &[400]),
        case("two thousand repeated query parameters", Method::GET, &format!("/events?{}", "category=music&".repeat(2_000)), &[400, 414, 422, 431]),
        case("a page size of a billion", Method::GET, "/events?limit=1000000000", &[400, 422]),
        case("a cursor that is not one", Method::GET, "/events?cursor=%00%00%00", &[400, 422]),
        case("a 512 KiB header (past the server's header buffer)", Method::GET, "/events", &[400, 431]).header("x-filler", "a".repeat(512 * 1024)),
        case("a bearer token of 64 KiB", Method::GET, "/users/profile", &[400, 401, 431])
            .header("authorization", format!("Bearer {}", "a".repeat(64 * 1024))),
        case("a path segment of 8 KiB", Method::GET, &format!("/events/{}", "a".repeat(8 * 1024)), &[404, 414]),
        case("a transaction reference with a NUL", Method::GET, "/payments/transactions/ab%00cd", &[404]).authenticated(),
        case("an idempotency key of 10 KiB", Method::POST, &purchase_path, &[400, 422])
            .json(r#"{"tier":"Regular","quantity":1}"#)
            .header("idempotency-key", "k".repeat(10 * 1024))
            .authenticated(),
        case("a webhook that is not JSON", Method::POST, "/payments/callback", &[400, 401])
            .json(b"\x00\x01\x02".to_vec())
            .header("x-paystack-signature", "0".repeat(128)),
        case("a multipart body with no boundary", Method::POST, "/events/create", &[400, 415, 422])
            .header("content-type", "multipart/form-data".into())
            .authenticated(),
    ];

    let mut statuses = Vec::new();
    for case in &cases {
        let mut req = app.client.request(case.method.clone(), app.url(&case.path));
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in &case.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if case.authenticated {
            let token = if case.path.contains("/tickets/add") || case.path == "/events/create" {
                &owner
            } else {
                &buyer
            };
            req = req.bearer_auth(token);
        }
        if !case.body.is_empty() {
            req = req.body(case.body.clone());
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.what));
        let status = res.status().as_u16();
        assert!(
            case.expect.contains(&status),
            "{}: {status} (expected one of {:?}): {}",
            case.what,
            case.expect,
            res.text().await.unwrap_or_default()
        );
        statuses.push(status);
    }
    // Still healthy, and nothing was sold to the fuzz.
    assert_eq!(app.get("/health/ready").await.status(), StatusCode::OK);
    let event: serde_json::Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 10);
    println!(
        "HOSTILE cases={} statuses={statuses:?} no_5xx=true",
        cases.len()
    );
}
