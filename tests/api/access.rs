//! Access control as a matrix, from the app's own OpenAPI document: every route that needs a
//! token refuses every kind of bad token, and every owner-only route refuses another
//! organizer (and changes nothing). A route added later is covered without editing this file,
//! or (for owner-only routes, which need a valid body) fails it until it is.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// (method, path template) of every operation in `/openapi.json`, with the operation.
async fn operations(app: &TestApp) -> Vec<(Method, String, Value)> {
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Ok(method) = method.to_uppercase().parse::<Method>() {
                out.push((method, path.clone(), op.clone()));
            }
        }
    }
    out
}

fn needs_token(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|s| !s.is_empty())
}

/// The template with every `{param}` filled: ids that exist nowhere (auth comes first).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut path = template.to_owned();
    for (name, value) in values {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    while let (Some(start), Some(end)) = (path.find('{'), path.find('}')) {
        path.replace_range(start..=end, &unknown);
    }
    path
}

/// A token for `user` signed with `secret`, expiring at `exp` (seconds since the epoch).
fn token(secret: &[u8], user: uuid::Uuid, exp: i64) -> String {
    let claims = json!({ "sub": user, "jti": uuid::Uuid::now_v7(), "iat": exp - 3600, "exp": exp, "ver": 0 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn every_route_that_needs_a_token_refuses_missing_expired_foreign_revoked_and_forged_ones() {
    use secrecy::ExposeSecret;
    let app = TestApp::spawn().await;
    let user = signup(&app, "matrix@example.com").await;
    let claims = app.state.jwt.verify(&user).unwrap();
    let secret = app
        .state
        .config
        .jwt_secret
        .expose_secret()
        .as_bytes()
        .to_vec();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let revoked = signup(&app, "gone@example.com").await;
    let res = app
        .post_json_auth("/auth/logout", &revoked, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // An unsigned token ("alg": "none") naming the real user.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT" })),
        b64(
            json!({ "sub": claims.sub, "jti": uuid::Uuid::now_v7(), "iat": now, "exp": now + 3600, "ver": 0 })
        )
    );
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(token(&secret, claims.sub, now - 600))),
        (
            "signed with another key",
            Some(token(
                b"another-key-another-key-another-key!",
                claims.sub,
                now + 3600,
            )),
        ),
        ("revoked by logout", Some(revoked)),
        ("unsigned (alg none)", Some(unsigned)),
        ("malformed", Some("not.a.token".to_owned())),
    ];

    let secured: Vec<_> = operations(&app)
        .await
        .into_iter()
        .filter(|(_, _, op)| needs_token(op))
        .collect();
    assert!(
        secured.len() >= 25,
        "only {} secured routes?",
        secured.len()
    );
    let mut checked = 0;
    for (method, template, _) in &secured {
        let path = fill(template, &[]);
        for (what, token) in &bad {
            let mut req = app
                .client
                .request(method.clone(), app.url(&path))
                .json(&json!({}));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let res = req.send().await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {template} with a token that is {what}"
            );
            problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
            checked += 1;
        }
    }
    // The websocket takes its token in the query (browsers cannot set headers on it): the
    // same refusals, before the upgrade.
    let ws = app.address.replace("http://", "ws://");
    for (what, token) in &bad {
        let url = match token {
            Some(token) => format!("{ws}/ws?token={token}"),
            None => format!("{ws}/ws"),
        };
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(
                    res.status().as_u16(),
                    401,
                    "/ws with a token that is {what}"
                )
            }
            other => panic!("/ws with a token that is {what}: {:?}", other.map(|_| ())),
        }
        checked += 1;
    }
    // The good token still works (the matrix did not lock the account or the address out).
    let res = app.get_auth("/users/profile", &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    println!(
        "ACCESS bad tokens: routes={} (and /ws) kinds={} requests={checked} all=401",
        secured.len(),
        bad.len()
    );
}

#[tokio::test]
async fn every_owner_only_route_refuses_another_organizer_and_an_attendee_and_changes_nothing() {
    let app = TestApp::builder()
        .env("PURCHASE_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    let (owner, event_id, _) = event_with_tier(&app, 5_000, 10).await;
    let buyer = signup(&app, "owned@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap().to_owned();
    app.paystack.pay(&reference).await;
    let paid = wait_for_status(&app, &buyer, &reference, "paid").await;
    let order_id = paid["id"].as_str().unwrap().to_owned();
    let key = paid["tickets"][0]["access_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = organizer(&app, "rival@example.com").await;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    // A valid request for each owner-only route, as the owner would send it.
    let cases: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::PATCH,
            "/events/{event_id}",
            Some(json!({ "title": "Hijacked" })),
        ),
        (Method::GET, "/events/{event_id}/attendees.csv", None),
        (
            Method::POST,
            "/events/{event_id}/cancel",
            Some(json!({ "reason": "mine now" })),
        ),
        (Method::GET, "/events/{event_id}/door", None),
        (Method::GET, "/events/{event_id}/orders", None),
        (
            Method::POST,
            "/events/{event_id}/orders/{order_id}/refund",
            Some(json!({})),
        ),
        (Method::GET, "/events/{event_id}/sales", None),
        (
            Method::POST,
            "/events/{event_id}/tickets/add",
            Some(json!({ "name": "VIP", "price": 1_000, "quantity": 5 })),
        ),
        (
            Method::POST,
            "/events/{event_id}/tickets/remove-discount",
            None,
        ),
        (
            Method::POST,
            "/events/{event_id}/tickets/validate",
            Some(json!({ "access_key": key })),
        ),
        (
            Method::POST,
            "/events/{event_id}/tickets/validate/batch",
            Some(json!({ "scans": [{ "access_key": key, "scanned_at": now, "gate": "east" }] })),
        ),
    ];
    // Every route whose document names `not_event_owner` has a case here.
    let documented: BTreeSet<(String, String)> = operations(&app)
        .await
        .into_iter()
        .filter(|(_, _, op)| {
            op["responses"]["403"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("not_event_owner"))
        })
        .map(|(m, p, _)| (m.to_string(), p))
        .collect();
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|(m, p, _)| (m.to_string(), (*p).to_owned()))
        .collect();
    assert_eq!(covered, documented, "every owner-only route has a case");

    for (caller, token, code) in [
        ("another organizer", &other, "not_event_owner"),
        ("an attendee", &buyer, "not_organizer"),
    ] {
        for (method, template, body) in &cases {
            let mut path = fill(
                template,
                &[("event_id", &event_id), ("order_id", &order_id)],
            );
            if template.ends_with("remove-discount") {
                path.push_str("?tier=Regular");
            }
            let mut req = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let res = req.send().await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::FORBIDDEN,
                "{method} {template} by {caller}"
            );
            problem(res, StatusCode::FORBIDDEN, code).await;
        }
    }
    // Nothing changed: same title, not cancelled, one tier, the order paid, the ticket unused.
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["title"], "Flash Sale");
    assert_ne!(event["status"], "cancelled");
    assert_eq!(event["tiers"].as_array().unwrap().len(), 1);
    let after = order_status(&app, &buyer, &reference).await;
    assert_eq!(after["status"], "paid");
    assert!(after["tickets"][0]["checked_in_at"].is_null());
    // And the owner can (so the cases above were refused for the caller, not the request).
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate"),
            &owner,
            &json!({ "access_key": key }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    println!(
        "ACCESS other organizers: owner_routes={} callers=2 all=403 changed=nothing",
        cases.len()
    );
}

#[tokio::test]
async fn the_leak_guard_cuts_a_response_that_carries_a_forbidden_string() {
    let app = TestApp::spawn().await;
    let marker = "leak-guard-marker-7f3a";
    app.forbidden.add("the test's marker", marker);
    // The profile answer carries the first name back: the guard must cut it.
    let token = signup(&app, "guarded@example.com").await;
    let sent = app
        .client
        .patch(app.url("/users/profile"))
        .bearer_auth(&token)
        .json(&json!({ "first_name": marker }))
        .send()
        .await;
    // Not a good answer: the connection was cut before the headers (the request fails) or
    // before the body (the body fails to read).
    let leaked = match sent {
        Ok(res) => res.text().await.ok(),
        Err(_) => None,
    };
    assert!(
        leaked.is_none(),
        "the guard let the marker through: {leaked:?}"
    );
    assert_eq!(
        app.forbidden.take_leaks(),
        vec!["the test's marker".to_owned()]
    );
    // The app itself is fine: a response without the marker passes.
    let res = app.get_auth("/users/tickets", &token).await;
    assert_eq!(res.status(), StatusCode::OK);
}
