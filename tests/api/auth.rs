//! Accounts through the HTTP API: signup, login, logout, two-factor, password reset, limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{TestApp, eventually, problem};

// ---- an independent TOTP (RFC 6238) for the tests, sharing no code with the server ----

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out
}

pub(crate) fn totp_at_step(secret_b32: &str, step: u64) -> String {
    let key = base32_decode(secret_b32);
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

pub(crate) fn current_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

// ---- helpers ----

pub async fn signup(app: &TestApp, email: &str, password: &str) -> (Value, String) {
    let res = app
        .post_json(
            "/auth/signup",
            &json!({ "email": email, "password": password, "first_name": "Ada", "last_name": "Obi" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    (body["user"].clone(), token)
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/auth/login",
        &json!({ "email": email, "password": password }),
    )
    .await
}

async fn profile_status(app: &TestApp, token: &str) -> StatusCode {
    app.get_auth("/users/profile", token).await.status()
}

fn otp_from_mail(app: &TestApp, to: &str) -> Vec<String> {
    app.resend
        .sent_to(to)
        .iter()
        .filter(|m| m.subject.contains("reset"))
        .map(|m| {
            let text = m.text.clone().unwrap_or_default();
            text.split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .expect("a 6-digit code in the mail")
                .to_owned()
        })
        .collect()
}

async fn wait_for_otps(app: &TestApp, to: &str, n: usize) -> Vec<String> {
    eventually(Duration::from_secs(10), || async {
        let otps = otp_from_mail(app, to);
        (otps.len() >= n).then_some(otps)
    })
    .await
}

// ---- signup and login ----

#[tokio::test]
async fn signup_normalises_email_and_returns_a_working_token() {
    let app = TestApp::spawn().await;
    let (user, token) = signup(&app, "  Ada@Example.COM ", "correct horse").await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["two_factor_enabled"], false);
    assert_eq!(user["is_organizer"], false);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let res = app.get_auth("/users/profile", &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], user["id"]);
    // The welcome mail goes out through the job.
    eventually(Duration::from_secs(10), || async {
        (!app.resend.sent_to("ada@example.com").is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn duplicate_email_in_another_case_is_email_taken() {
    let app = TestApp::spawn().await;
    signup(&app, "bola@example.com", "password1").await;
    let res = app
        .post_json(
            "/auth/signup",
            &json!({ "email": "BOLA@example.com", "password": "password2", "first_name": "B", "last_name": "C" }),
        )
        .await;
    problem(res, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn signup_validation_names_each_bad_field() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/auth/signup",
            &json!({ "email": "nope", "password": "short", "first_name": "", "last_name": "X" }),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "first_name"]);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_identical_answers() {
    let app = TestApp::spawn().await;
    signup(&app, "chi@example.com", "right password").await;
    let a = login(&app, "chi@example.com", "wrong password").await;
    let b = login(&app, "nobody@example.com", "wrong password").await;
    assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(b.status(), StatusCode::UNAUTHORIZED);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(a["code"], "invalid_credentials");

    let ok = login(&app, "CHI@example.com", "right password").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn missing_malformed_and_foreign_tokens_are_401() {
    let app = TestApp::spawn().await;
    let res = app.get("/users/profile").await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app.get_auth("/users/profile", "garbage").await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // A token signed with another key.
    let other = TestApp::builder()
        .env("JWT_SECRET", "another-secret-of-at-least-32-characters!!")
        .spawn()
        .await;
    let (_, token) = signup(&other, "dan@example.com", "password1").await;
    assert_eq!(profile_status(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_revokes_the_token_on_every_instance_and_only_that_token() {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    let (_, first) = signup(&app, "eze@example.com", "password1").await;
    let second: Value = login(&app, "eze@example.com", "password1")
        .await
        .json()
        .await
        .unwrap();
    let second = second["access_token"].as_str().unwrap();
    assert_eq!(profile_status(&sibling, &first).await, StatusCode::OK);

    let res = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        profile_status(&sibling, &first).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(profile_status(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(profile_status(&sibling, second).await, StatusCode::OK);
}

// ---- two-factor ----

async fn enable_2fa(app: &TestApp, token: &str) -> (String, Vec<String>, u64) {
    let res = app
        .post_json_auth("/auth/2fa/enable", token, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap().to_owned();
    // Shown once, here; no later response of this app may carry it (the leak guard).
    app.forbidden.add("a TOTP secret", &secret);
    assert!(
        body["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    assert!(body["otpauth_url"].as_str().unwrap().contains(&secret));
    let png = base64_decode(body["qr_code_png"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Not on until confirmed: login still answers a session.
    let step = current_step();
    let res = app
        .post_json_auth(
            "/auth/2fa/verify",
            token,
            &json!({ "code": totp_at_step(&secret, step) }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["two_factor_enabled"], true);
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes, step)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

async fn challenge(app: &TestApp, email: &str, password: &str) -> String {
    let res = login(app, email, password).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["two_factor_required"], true);
    assert!(body.get("access_token").is_none());
    body["challenge_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn totp_login_accepts_a_code_once_and_recovery_codes_once() {
    let app = TestApp::spawn().await;
    let (_, token) = signup(&app, "funmi@example.com", "password1").await;
    let (secret, recovery, step) = enable_2fa(&app, &token).await;

    // The code that confirmed enrolment cannot be used again.
    let ch = challenge(&app, "funmi@example.com", "password1").await;
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch, "code": totp_at_step(&secret, step) }),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;

    // The next step's code (within the ±1 window) logs in, once.
    let next = totp_at_step(&secret, step + 1);
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch, "code": next }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["two_factor_enabled"], true);
    assert_eq!(
        profile_status(&app, body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    // The challenge is spent, and so is the code.
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch, "code": next }),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let ch2 = challenge(&app, "funmi@example.com", "password1").await;
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch2, "code": next }),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;

    // A recovery code works in place of a code, once.
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch2, "code": recovery[0].to_uppercase() }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ch3 = challenge(&app, "funmi@example.com", "password1").await;
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch3, "code": recovery[0] }),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;
}

#[tokio::test]
async fn disabling_two_factor_needs_a_valid_code() {
    let app = TestApp::spawn().await;
    let (_, token) = signup(&app, "gozie@example.com", "password1").await;
    let (_, recovery, _) = enable_2fa(&app, &token).await;
    let res = app
        .post_json_auth("/auth/2fa/disable", &token, &json!({ "code": "000000" }))
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_code").await;
    let res = app
        .post_json_auth("/auth/2fa/disable", &token, &json!({ "code": recovery[3] }))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap()["two_factor_enabled"],
        false
    );
    // Login no longer asks for a code.
    let body: Value = login(&app, "gozie@example.com", "password1")
        .await
        .json()
        .await
        .unwrap();
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn a_wrong_confirmation_code_is_422() {
    let app = TestApp::spawn().await;
    let (_, token) = signup(&app, "hauwa@example.com", "password1").await;
    app.post_json_auth("/auth/2fa/enable", &token, &json!({}))
        .await;
    let res = app
        .post_json_auth("/auth/2fa/verify", &token, &json!({ "code": "12345" }))
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_code").await;
}

// ---- password reset ----

#[tokio::test]
async fn mailed_otp_resets_the_password_and_revokes_every_session() {
    let app = TestApp::spawn().await;
    let (_, old_token) = signup(&app, "ife@example.com", "old password").await;
    let res = app
        .post_json(
            "/auth/password/reset",
            &json!({ "email": "IFE@example.com" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let otp = wait_for_otps(&app, "ife@example.com", 1).await.remove(0);

    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "ife@example.com", "otp": otp }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let reset_token = res.json::<Value>().await.unwrap()["reset_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The OTP is single use.
    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "ife@example.com", "otp": otp }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = app
        .post_json(
            "/auth/password/new",
            &json!({ "reset_token": reset_token, "new_password": "new password" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        profile_status(&app, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "ife@example.com", "old password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "ife@example.com", "new password")
            .await
            .status(),
        StatusCode::OK
    );

    let res = app
        .post_json(
            "/auth/password/new",
            &json!({ "reset_token": reset_token, "new_password": "third password" }),
        )
        .await;
    problem(res, StatusCode::BAD_REQUEST, "invalid_reset_token").await;
}

#[tokio::test]
async fn five_wrong_otps_void_the_code() {
    let app = TestApp::spawn().await;
    signup(&app, "jide@example.com", "password1").await;
    app.post_json(
        "/auth/password/reset",
        &json!({ "email": "jide@example.com" }),
    )
    .await;
    let otp = wait_for_otps(&app, "jide@example.com", 1).await.remove(0);
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        let res = app
            .post_json(
                "/auth/password/verify-otp",
                &json!({ "email": "jide@example.com", "otp": wrong }),
            )
            .await;
        problem(res, StatusCode::BAD_REQUEST, "invalid_otp").await;
    }
    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "jide@example.com", "otp": wrong }),
        )
        .await;
    problem(res, StatusCode::BAD_REQUEST, "otp_expired").await;
    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "jide@example.com", "otp": otp }),
        )
        .await;
    problem(res, StatusCode::BAD_REQUEST, "otp_expired").await;
}

#[tokio::test]
async fn reset_answers_202_for_unknown_emails_and_resend_is_limited_to_one_a_minute() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/auth/password/reset",
            &json!({ "email": "ghost@example.com" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    signup(&app, "kemi@example.com", "password1").await;
    app.post_json(
        "/auth/password/reset",
        &json!({ "email": "kemi@example.com" }),
    )
    .await;
    let res = app
        .post_json(
            "/auth/password/resend-otp",
            &json!({ "email": "kemi@example.com" }),
        )
        .await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Only the first request mailed.
    wait_for_otps(&app, "kemi@example.com", 1).await;
    assert_eq!(otp_from_mail(&app, "kemi@example.com").len(), 1);
    assert!(app.resend.sent_to("ghost@example.com").is_empty());
}

// ---- limits ----

#[tokio::test]
async fn auth_rate_limit_answers_429_and_recovers_after_the_window() {
    let app = TestApp::builder()
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "3")
        .env("AUTH_RATE_LIMIT_WINDOW_SECONDS", "2")
        // Three password checks at once, however few cores the runner has.
        .env("PASSWORD_HASH_CONCURRENCY", "4")
        .env("PASSWORD_HASH_WAIT_MILLIS", "5000")
        .spawn()
        .await;
    // Start at the beginning of a window so three requests fit in it.
    eventually(Duration::from_secs(5), || async {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 2000;
        (ms < 500).then_some(())
    })
    .await;
    // Four at once: each is counted as it arrives, before the password check, so the
    // window does not depend on how long four argon2 checks take on a loaded machine.
    let mut answers =
        futures::future::join_all((0..4).map(|_| login(&app, "x@example.com", "whatever1"))).await;
    answers.sort_by_key(|res| res.status());
    let refused = answers.pop().unwrap();
    let statuses: Vec<_> = answers.iter().map(|res| res.status()).collect();
    assert_eq!(statuses, [StatusCode::UNAUTHORIZED; 3]);
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The next window lets requests through again.
    eventually(Duration::from_secs(5), || async {
        (login(&app, "x@example.com", "whatever1").await.status() == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn ten_failed_logins_lock_the_account() {
    let app = TestApp::spawn().await;
    signup(&app, "lola@example.com", "the password").await;
    for _ in 0..10 {
        let res = login(&app, "lola@example.com", "not it at all").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login(&app, "lola@example.com", "the password").await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 800 && retry_after <= 900, "{retry_after}");
    problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
}

#[tokio::test]
async fn openapi_documents_every_auth_route_with_its_errors() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, codes) in [
        ("/auth/signup", &["201", "409", "422", "429"][..]),
        ("/auth/login", &["200", "401", "429"]),
        ("/auth/logout", &["204", "401"]),
        ("/auth/2fa/enable", &["200", "401", "409"]),
        ("/auth/2fa/verify", &["200", "401", "422"]),
        ("/auth/2fa/disable", &["200", "401", "422"]),
        ("/auth/password/reset", &["202"]),
        ("/auth/password/resend-otp", &["202", "429"]),
        ("/auth/password/verify-otp", &["200", "400"]),
        ("/auth/password/new", &["204", "400"]),
    ] {
        let responses = &doc["paths"][path]["post"]["responses"];
        for code in codes {
            assert!(responses[code].is_object(), "{path} documents {code}");
        }
    }
}

// ---- the security review's findings on accounts (docs/security.md) ----

#[tokio::test]
async fn wrong_second_factor_codes_lock_the_account_across_challenges() {
    let app = TestApp::spawn().await;
    let (_, token) = signup(&app, "tobi@example.com", "password1").await;
    let (secret, _, step) = enable_2fa(&app, &token).await;
    // A code that is never valid now: from far in the past.
    let wrong = totp_at_step(&secret, step - 1000);
    // Each correct password gives a fresh challenge, which tolerates five wrong codes; the
    // account counts them all.
    for _ in 0..2 {
        let ch = challenge(&app, "tobi@example.com", "password1").await;
        for _ in 0..5 {
            let res = app
                .post_json(
                    "/auth/2fa/verify",
                    &json!({ "challenge_token": ch, "code": wrong }),
                )
                .await;
            problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;
        }
    }
    let res = login(&app, "tobi@example.com", "password1").await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
}

#[tokio::test]
async fn reset_mails_are_capped_per_day_and_so_are_wrong_codes() {
    let app = TestApp::builder()
        .env("RESET_OTP_RESEND_GAP_SECONDS", "0")
        .env("RESET_OTP_MAILS_PER_DAY", "3")
        .env("RESET_OTP_WRONG_CODES_PER_DAY", "3")
        .spawn()
        .await;
    signup(&app, "yemi@example.com", "password1").await;
    let email = json!({ "email": "yemi@example.com" });
    let res = app.post_json("/auth/password/reset", &email).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    for _ in 0..2 {
        let res = app.post_json("/auth/password/resend-otp", &email).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let res = app.post_json("/auth/password/resend-otp", &email).await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The first endpoint still answers 202, and mails nothing either.
    let res = app.post_json("/auth/password/reset", &email).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let otps = wait_for_otps(&app, "yemi@example.com", 3).await;
    assert_eq!(otps.len(), 3);

    // Three wrong codes in a day (here all on the latest code), then even the right one is
    // refused until the day is over.
    let otp = otps.last().unwrap().clone();
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        let res = app
            .post_json(
                "/auth/password/verify-otp",
                &json!({ "email": "yemi@example.com", "otp": wrong }),
            )
            .await;
        problem(res, StatusCode::BAD_REQUEST, "invalid_otp").await;
    }
    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "yemi@example.com", "otp": otp }),
        )
        .await;
    problem(res, StatusCode::BAD_REQUEST, "otp_expired").await;
}

/// The answers of seven wrong tries at the reset code of `email`, after a reset request.
async fn wrong_otp_answers(app: &TestApp, email: &str) -> Vec<String> {
    let res = app
        .post_json("/auth/password/reset", &json!({ "email": email }))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mut answers = Vec::new();
    for _ in 0..7 {
        let res = app
            .post_json(
                "/auth/password/verify-otp",
                // Six digits no code is: the server's codes are random, and this one is
                // checked against the mail below.
                &json!({ "email": email, "otp": "000000" }),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        answers.push(format!("{status} {}", body["code"]));
    }
    answers
}

#[tokio::test]
async fn verify_otp_answers_an_unknown_email_exactly_like_a_known_one() {
    let app = TestApp::builder()
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    signup(&app, "known@example.com", "password1").await;
    let known = wrong_otp_answers(&app, "known@example.com").await;
    let otp = wait_for_otps(&app, "known@example.com", 1).await.remove(0);
    if otp == "000000" {
        return; // one run in a million: the "wrong" code was the right one
    }
    let unknown = wrong_otp_answers(&app, "nobody-here@example.com").await;
    assert_eq!(known[..4], vec!["400 Bad Request \"invalid_otp\""; 4]);
    assert_eq!(known[4..], vec!["400 Bad Request \"otp_expired\""; 3]);
    assert_eq!(unknown, known);
}

#[tokio::test]
async fn recovery_codes_are_stored_under_a_key() {
    let app = TestApp::spawn().await;
    let (user, token) = signup(&app, "kunle@example.com", "password1").await;
    let (_, codes, _) = enable_2fa(&app, &token).await;
    let user_id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT code_hash FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 10);
    for code in &codes {
        let plain: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        let unkeyed = hex::encode(sha2::Sha256::digest(plain.as_bytes()));
        assert!(
            !stored.contains(&unkeyed),
            "a recovery code is stored as its plain SHA-256"
        );
    }
    // And they still work, once each.
    let ch = challenge(&app, "kunle@example.com", "password1").await;
    let res = app
        .post_json(
            "/auth/2fa/verify",
            &json!({ "challenge_token": ch, "code": codes[3] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_saturated_password_hasher_answers_503_at_once_and_recovers() {
    let app = TestApp::builder()
        .env("PASSWORD_HASH_CONCURRENCY", "1")
        .env("PASSWORD_HASH_WAIT_MILLIS", "0")
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    signup(&app, "busy@example.com", "password1").await;
    let logins = (0..12).map(|_| login(&app, "busy@example.com", "password1"));
    let answers = futures::future::join_all(logins).await;
    let mut refused = 0;
    for res in answers {
        match res.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(res.headers()["retry-after"], "1");
                problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "twelve logins at once on one hashing slot");
    // Once the burst is over, logins work again.
    assert_eq!(
        login(&app, "busy@example.com", "password1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn password_checks_of_a_signed_in_user_are_limited() {
    let app = TestApp::builder()
        .env("PASSWORD_CHECKS_PER_USER_PER_HOUR", "3")
        .spawn()
        .await;
    let (_, token) = signup(&app, "del@example.com", "password1").await;
    let delete = |password: &'static str| {
        app.client
            .delete(app.url("/users/profile"))
            .bearer_auth(&token)
            .json(&json!({ "password": password }))
            .send()
    };
    for _ in 0..3 {
        let res = delete("not my password").await.unwrap();
        problem(res, StatusCode::FORBIDDEN, "invalid_password").await;
    }
    let res = delete("password1").await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(profile_status(&app, &token).await, StatusCode::OK);
}

#[tokio::test]
async fn a_version_read_before_a_reset_is_never_cached_after_it() {
    // The race, made to happen: a request misses the cache and reads the token version from
    // PostgreSQL; the password reset commits and drops the cache; only then does the first
    // request write what it read. The stolen token must not live on.
    let app = TestApp::spawn().await;
    let (user, old_token) = signup(&app, "race@example.com", "old password").await;
    let user_id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let before = ticketing::service::auth::read_version(&app.state, user_id)
        .await
        .unwrap();

    app.post_json(
        "/auth/password/reset",
        &json!({ "email": "race@example.com" }),
    )
    .await;
    let otp = wait_for_otps(&app, "race@example.com", 1).await.remove(0);
    let res = app
        .post_json(
            "/auth/password/verify-otp",
            &json!({ "email": "race@example.com", "otp": otp }),
        )
        .await;
    let reset_token = res.json::<Value>().await.unwrap()["reset_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post_json(
            "/auth/password/new",
            &json!({ "reset_token": reset_token, "new_password": "new password" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // The late write of the old version.
    ticketing::service::auth::fill_version_cache(&app.state, &before).await;
    assert_eq!(
        profile_status(&app, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn parallel_second_factor_guesses_get_ten_checks_at_most() {
    let app = TestApp::builder()
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    let (_, token) = signup(&app, "burst@example.com", "password1").await;
    let (secret, _, step) = enable_2fa(&app, &token).await;
    let wrong = totp_at_step(&secret, step - 1000);
    // Thirty fresh challenges (a correct password each), then one wrong code on each, all
    // at once: the attempts are counted before the codes are checked, so exactly ten are
    // checked and the rest are refused with the lock.
    let mut challenges = Vec::new();
    for _ in 0..30 {
        challenges.push(challenge(&app, "burst@example.com", "password1").await);
    }
    let bodies: Vec<Value> = challenges
        .iter()
        .map(|ch| json!({ "challenge_token": ch, "code": wrong }))
        .collect();
    let guesses = bodies.iter().map(|b| app.post_json("/auth/2fa/verify", b));
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    let locked = answers
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, locked), (10, 20));
}

#[tokio::test]
async fn wrong_codes_to_disable_two_factor_lock_the_account_too() {
    let app = TestApp::spawn().await;
    let (_, token) = signup(&app, "disable@example.com", "password1").await;
    let (secret, _, step) = enable_2fa(&app, &token).await;
    let wrong = totp_at_step(&secret, step - 1000);
    for _ in 0..10 {
        let res = app
            .post_json_auth("/auth/2fa/disable", &token, &json!({ "code": wrong }))
            .await;
        problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_code").await;
    }
    // Even the right code is not checked while the account is locked.
    let right = totp_at_step(&secret, step + 1);
    let res = app
        .post_json_auth("/auth/2fa/disable", &token, &json!({ "code": right }))
        .await;
    problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
}
