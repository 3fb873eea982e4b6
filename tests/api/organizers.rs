//! Profiles, organizer accounts (Paystack resolve + transfer recipient) and the bank list.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::{Fault, paystack},
    helpers::{PASSWORD, TestApp, create_event, event_body, organizer, problem, signup},
};

#[tokio::test]
async fn becoming_an_organizer_resolves_the_account_with_paystack() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "ada@example.com").await;
    problem(
        app.get_auth("/users/organizer", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let res = app
        .post_json_auth(
            "/users/organizer",
            &token,
            &json!({ "name": "Lagos Live", "email": "Hello@LagosLive.ng", "phone": "+234 801 234 5678",
                     "bank_code": "058", "account_number": "0123456789",
                     "website": "https://lagoslive.ng" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["account_name"], "LAGOS LIVE LTD",
        "the name is Paystack's"
    );
    assert_eq!(body["bank_name"], "Guaranty Trust Bank");
    assert_eq!(body["account_number_last4"], "6789");
    assert_eq!(body["email"], "hello@lagoslive.ng");
    let text = body.to_string();
    assert!(
        !text.contains("0123456789") && !text.contains("RCP_"),
        "{text}"
    );
    assert_eq!(app.paystack.count("POST /transferrecipient"), 1);

    let me: Value = app
        .get_auth("/users/profile", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["is_organizer"], true);

    // A second profile is refused without calling Paystack again.
    let res = app
        .post_json_auth(
            "/users/organizer",
            &token,
            &json!({ "name": "Again", "email": "a@b.ng", "phone": "08012345678",
                     "bank_code": "058", "account_number": "0123456789" }),
        )
        .await;
    problem(res, StatusCode::CONFLICT, "organizer_exists").await;
    assert_eq!(app.paystack.count("POST /transferrecipient"), 1);
}

#[tokio::test]
async fn an_unresolvable_account_or_unknown_bank_is_422() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "bayo@example.com").await;
    let base = json!({ "name": "X", "email": "x@y.ng", "phone": "08012345678" });
    let with = |bank: &str, account: &str| {
        let mut b = base.clone();
        b["bank_code"] = json!(bank);
        b["account_number"] = json!(account);
        b
    };
    let res = app
        .post_json_auth("/users/organizer", &token, &with("058", "9999999999"))
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "account_number");
    let res = app
        .post_json_auth("/users/organizer", &token, &with("998", "0123456789"))
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "bank_code");
    let res = app
        .post_json_auth("/users/organizer", &token, &with("058", "12345"))
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    problem(
        app.get_auth("/users/organizer", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_changed_account_is_resolved_again_with_a_new_recipient() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "chidi@example.com").await;
    // Changing only the name does not touch the bank.
    let res = app
        .client
        .patch(app.url("/users/organizer"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Chidi Shows", "description": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.paystack.count("GET /bank/resolve"), 1);

    let res = app
        .client
        .patch(app.url("/users/organizer"))
        .bearer_auth(&token)
        // API.md: a bank change needs the account password.
        .json(&json!({ "bank_code": "044", "account_number": "0987654321", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Chidi Shows");
    assert_eq!(body["account_name"], "IBADAN SHOWS ENTERPRISES");
    assert_eq!(body["bank_name"], "Access Bank");
    assert_eq!(body["account_number_last4"], "4321");
    assert_eq!(app.paystack.count("GET /bank/resolve"), 2);
    assert_eq!(app.paystack.count("POST /transferrecipient"), 2);
    let stored: String = sqlx::query_scalar("SELECT recipient_code FROM organizers")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(stored, "RCP_fake000001");
}

#[tokio::test]
async fn bank_numbers_appear_in_no_public_response() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "dayo@example.com").await;
    let event = create_event(&app, &token, &event_body("Show", 6.45, 3.4, 3)).await;
    let id = event["id"].as_str().unwrap();
    let stranger = signup(&app, "eve@example.com").await;
    for text in [
        app.get(&format!("/events/{id}"))
            .await
            .text()
            .await
            .unwrap(),
        app.get("/events").await.text().await.unwrap(),
        app.post_json(
            "/events/nearby",
            &json!({ "latitude": 6.45, "longitude": 3.4 }),
        )
        .await
        .text()
        .await
        .unwrap(),
        app.get_auth("/users/organizer", &stranger)
            .await
            .text()
            .await
            .unwrap(),
        app.get_auth("/users/profile", &token)
            .await
            .text()
            .await
            .unwrap(),
        app.get_auth("/users/events?role=organizer", &token)
            .await
            .text()
            .await
            .unwrap(),
    ] {
        assert!(!text.contains("0123456789"), "{text}");
        assert!(!text.contains("RCP_"), "{text}");
        assert!(!text.contains("recipient"), "{text}");
    }
}

#[tokio::test]
async fn the_bank_list_follows_cursor_pages_filters_and_is_cached() {
    let app = TestApp::spawn().await;
    let body: Value = app.get("/payments/banks").await.json().await.unwrap();
    let codes: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "044", "023", "050", "070", "011", "058", "50211", "033", "057"
        ]
    );
    assert_eq!(body["items"][6]["slug"], "kuda-bank");
    let pages = app.paystack.count("GET /bank");
    assert_eq!(pages, 3, "12 banks at 4 per page");
    // Served from the cache: Paystack is not asked again.
    app.get("/payments/banks").await;
    assert_eq!(app.paystack.count("GET /bank"), pages);
    let _ = paystack::banks();
}

#[tokio::test]
async fn a_paystack_outage_serves_the_cached_bank_list() {
    let app = TestApp::builder()
        .env("BANKS_REFRESH_SECONDS", "0")
        .spawn()
        .await;
    let first: Value = app.get("/payments/banks").await.json().await.unwrap();
    // Every later refresh fails; answers keep coming from the cache.
    app.paystack.fail_next(&[Fault::ServerError; 8]);
    for _ in 0..3 {
        let res = app.get("/payments/banks").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap(), first);
    }
}

#[tokio::test]
async fn a_cold_bank_list_during_an_outage_is_a_502_problem() {
    let app = TestApp::spawn().await;
    app.paystack.fail_next(&[Fault::HtmlUnavailable; 4]);
    problem(
        app.get("/payments/banks").await,
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
    )
    .await;
}

#[tokio::test]
async fn profile_names_can_be_changed() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "femi@example.com").await;
    let res = app
        .client
        .patch(app.url("/users/profile"))
        .bearer_auth(&token)
        .json(&json!({ "first_name": " Femi " }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["first_name"], "Femi");
    assert_eq!(body["last_name"], "User");
}

#[tokio::test]
async fn deleting_an_account_needs_the_password_and_no_active_events() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "gbenga@example.com").await;
    let event = create_event(&app, &token, &event_body("Show", 6.45, 3.4, 3)).await;
    let delete = |password: &str| {
        app.client
            .delete(app.url("/users/profile"))
            .bearer_auth(&token)
            .json(&json!({ "password": password }))
            .send()
    };
    problem(
        delete("wrong one").await.unwrap(),
        StatusCode::FORBIDDEN,
        "invalid_password",
    )
    .await;
    problem(
        delete(PASSWORD).await.unwrap(),
        StatusCode::CONFLICT,
        "organizer_has_active_events",
    )
    .await;

    let res = app
        .post_json_auth(
            &format!("/events/{}/cancel", event["id"].as_str().unwrap()),
            &token,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        delete(PASSWORD).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // The token is dead (401, never 500), the email is free again, the event still shows
    // its organizer's name.
    problem(
        app.get_auth("/users/profile", &token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    signup(&app, "gbenga@example.com").await;
    let shown: Value = app
        .get(&format!("/events/{}", event["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["organizer"]["name"], "Org gbenga@example.com");
    let left: (String, String) = sqlx::query_as("SELECT account_number, phone FROM organizers")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        left,
        (String::new(), String::new()),
        "bank and contact data erased"
    );
}
