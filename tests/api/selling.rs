//! Selling tickets: tiers, holds that never oversell, Paystack checkout, signed webhooks,
//! issuance, late payments, and the sweeper's healing. Every scenario ends with the
//! invariants of DESIGN.md.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::{
        Fault,
        paystack::{Delivery, RefundOutcome, SECRET_KEY, fee, sign},
    },
    helpers::{
        TestApp, add_tier, assert_invariants, attendees, event_with_tier, eventually, hold,
        order_status, problem, purchase, signup, wait_for_status,
    },
};

const PRICE: i64 = 500_000; // ₦5,000.00

#[tokio::test]
async fn tiers_are_added_by_the_owner_with_unique_names_and_valid_discounts() {
    let app = TestApp::spawn().await;
    let (owner, event_id, tier) = event_with_tier(&app, PRICE, 100).await;
    assert_eq!(tier["available"], 100);
    assert_eq!(tier["currency"], "NGN");
    assert!(tier["discount"].is_null());

    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/add"),
            &owner,
            &json!({ "name": "Regular", "price": 1, "quantity": 1 }),
        )
        .await;
    problem(res, StatusCode::CONFLICT, "tier_name_taken").await;

    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/add"),
            &owner,
            &json!({ "name": "VIP", "price": 100_000, "quantity": 5,
                     "discount": { "price": 200_000, "quantity": 6, "expires_at": "2020-01-01T00:00:00Z" } }),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 3);

    let stranger = crate::helpers::organizer(&app, "stranger@example.com").await;
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/add"),
            &stranger,
            &json!({ "name": "Mine", "price": 0, "quantity": 1 }),
        )
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_event_owner").await;
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/remove-discount?tier=Regular"),
            &stranger,
            &json!({}),
        )
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_event_owner").await;

    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn two_hundred_buyers_on_fifty_tickets_across_two_instances_get_fifty_holds() {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 50).await;
    let buyers = attendees(&app, 200).await;

    let attempts = buyers.iter().enumerate().map(|(i, token)| {
        let target = if i % 2 == 0 { &app } else { &sibling };
        let event_id = event_id.clone();
        async move { purchase(target, token, &event_id, "Regular", 1).await }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut held = Vec::new();
    let mut sold_out = 0;
    for (res, token) in responses.into_iter().zip(&buyers) {
        match res.status() {
            StatusCode::CREATED => {
                let order: Value = res.json().await.unwrap();
                assert_eq!(order["status"], "pending");
                assert!(
                    order["authorization_url"]
                        .as_str()
                        .unwrap()
                        .contains("/checkout/")
                );
                held.push((
                    token.clone(),
                    order["reference"].as_str().unwrap().to_owned(),
                ));
            }
            StatusCode::CONFLICT => {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["code"], "sold_out");
                sold_out += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(held.len(), 50);
    assert_eq!(sold_out, 150);
    assert_invariants(&app).await;

    // Everyone pays: exactly fifty tickets.
    for (_, reference) in &held {
        app.paystack.pay(reference).await;
    }
    for (token, reference) in &held {
        let order = wait_for_status(&app, token, reference, "paid").await;
        assert_eq!(order["tickets"].as_array().unwrap().len(), 1);
    }
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(issued, 50);
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 0);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_paid_order_issues_tickets_mail_ledger_and_sales() {
    let app = TestApp::spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "ngozi@example.com").await;
    let res = purchase(&app, &buyer, &event_id, "Regular", 3).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    let reference = order["reference"].as_str().unwrap();
    assert!(
        reference.starts_with("ord-")
            && reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
    );
    assert_eq!(order["total_amount"], 3 * PRICE);
    let tx = app.paystack.transaction(reference).unwrap();
    assert_eq!(tx.amount, 3 * PRICE);
    assert_eq!(tx.email, "ngozi@example.com");

    app.paystack.pay(reference).await;
    let paid = wait_for_status(&app, &buyer, reference, "paid").await;
    let tickets = paid["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 3);
    for t in tickets {
        assert!(t["access_key"].as_str().unwrap().len() >= 22, "≥ 128 bits");
        assert_eq!(t["status"], "valid");
        assert!(!t["qr_code_png"].as_str().unwrap().is_empty());
    }
    let mine: Value = app
        .get_auth("/users/tickets", &buyer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 3);
    let attending: Value = app
        .get_auth("/users/events?role=attendee", &buyer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attending["items"][0]["id"], event_id.as_str());

    eventually(Duration::from_secs(10), || async {
        (app.resend
            .sent_to("ngozi@example.com")
            .iter()
            .any(|m| m.subject.starts_with("Your tickets")))
        .then_some(())
    })
    .await;

    let sales: Value = app
        .get_auth(&format!("/events/{event_id}/sales"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sales["gross_amount"], 3 * PRICE);
    // 7.5 % of ₦5,000 per ticket, rounded down: 37,500 kobo each.
    assert_eq!(sales["platform_fee_amount"], 3 * 37_500);
    assert_eq!(sales["net_amount"], 3 * PRICE - 3 * 37_500);
    assert_eq!(sales["tiers"][0]["sold"], 3);
    assert_eq!(sales["tiers"][0]["available"], 7);
    let fee_recorded: i64 =
        sqlx::query_scalar("SELECT amount FROM ledger_entries WHERE kind = 'paystack_fee'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(fee_recorded, fee(3 * PRICE));
    let res = app
        .get_auth(&format!("/events/{event_id}/sales"), &buyer)
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_organizer").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_same_order_and_one_paystack_transaction() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "obi@example.com").await;
    let send = |body: Value| {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(&buyer)
            .header("idempotency-key", "checkout-42")
            .json(&body)
            .send()
    };
    let body = json!({ "tier": "Regular", "quantity": 2 });
    let (a, b) = tokio::join!(send(body.clone()), send(body.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.status(), b.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["id"], b["id"]);
    let again: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(again["id"], a["id"]);
    assert!(again["authorization_url"].is_string());
    assert_eq!(app.paystack.count("POST /transaction/initialize"), 1);

    let res = send(json!({ "tier": "Regular", "quantity": 3 }))
        .await
        .unwrap();
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .client
        .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
        .bearer_auth(&buyer)
        .header("idempotency-key", "")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn purchase_rules_quantity_tier_discount_and_closed_events() {
    // One buyer holds three orders here (the cap has its own tests in security.rs).
    let app = TestApp::builder()
        .env("MAX_ACTIVE_HOLDS_PER_USER", "5")
        .spawn()
        .await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "Early", "price": 1_000_000, "quantity": 10,
                 "discount": { "price": 800_000, "quantity": 3, "expires_at": expires } }),
    )
    .await;
    let buyer = signup(&app, "pelumi@example.com").await;

    let res = purchase(&app, &buyer, &event_id, "Regular", 11).await;
    problem(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "quantity_out_of_range",
    )
    .await;
    let res = purchase(&app, &buyer, &event_id, "Regular", 0).await;
    problem(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "quantity_out_of_range",
    )
    .await;
    let res = purchase(&app, &buyer, &event_id, "Nope", 1).await;
    problem(res, StatusCode::NOT_FOUND, "tier_not_found").await;

    // Discount while it lasts; an order that does not fit in it pays full price, never mixed.
    let a: Value = hold(&app, &buyer, &event_id, "Early", 2).await;
    assert_eq!(a["unit_price"], 800_000);
    let b: Value = hold(&app, &buyer, &event_id, "Early", 2).await;
    assert_eq!(b["unit_price"], 1_000_000);
    assert_eq!(b["total_amount"], 2_000_000);
    let c: Value = hold(&app, &buyer, &event_id, "Early", 1).await;
    assert_eq!(c["unit_price"], 800_000);
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][1]["discount"]["remaining"], 0);
    assert_eq!(event["tiers"][1]["available"], 5);
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/remove-discount?tier=Early"),
            &owner,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.json::<Value>().await.unwrap()["discount"].is_null());

    // Free tiers are issued at once.
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "Free", "price": 0, "quantity": 5 }),
    )
    .await;
    let res = purchase(&app, &buyer, &event_id, "Free", 2).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let free: Value = res.json().await.unwrap();
    assert_eq!(free["status"], "paid");
    assert_eq!(free["tickets"].as_array().unwrap().len(), 2);

    // Closed events sell nothing.
    app.post_json_auth(&format!("/events/{event_id}/cancel"), &owner, &json!({}))
        .await;
    let res = purchase(&app, &buyer, &event_id, "Regular", 1).await;
    problem(res, StatusCode::CONFLICT, "event_cancelled").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_paystack_failure_releases_the_hold() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 1).await;
    let buyer = signup(&app, "quadri@example.com").await;
    app.paystack
        .fail_route("POST /transaction/initialize", &[Fault::ServerError]);
    let res = purchase(&app, &buyer, &event_id, "Regular", 1).await;
    problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
    // The seat is back: the next buyer gets it.
    let res = purchase(&app, &buyer, &event_id, "Regular", 1).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // A lost answer after Paystack created the transaction: the buyer has no link to pay
    // it with, so the hold is released too (never a hold without a way to pay it).
    let (_, event2, _) = event_with_tier(&app, PRICE, 1).await;
    app.paystack.fail_route(
        "POST /transaction/initialize",
        &[Fault::ServerErrorAfterAccept],
    );
    let res = purchase(&app, &buyer, &event2, "Regular", 1).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let order = hold(&app, &buyer, &event2, "Regular", 1).await;
    assert!(order["authorization_url"].is_string());
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_retry_while_the_first_request_starts_its_checkout_never_gets_a_hold_without_a_link() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "eager@example.com").await;
    // Paystack takes a while to answer the first initialize.
    app.paystack.fail_route(
        "POST /transaction/initialize",
        &[Fault::Hang(Duration::from_millis(1500))],
    );
    let send = || {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(&buyer)
            .header("idempotency-key", "impatient")
            .json(&json!({ "tier": "Regular", "quantity": 1 }))
            .send()
    };
    let first = tokio::spawn(send());
    eventually(Duration::from_secs(10), || async {
        (app.paystack.count("POST /transaction/initialize") == 1).then_some(())
    })
    .await;
    // The hold exists, its link does not yet: the retry waits for it and answers the first
    // answer again (same order, 201), with its link, never the linkless hold.
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    let retry: Value = retry.json().await.unwrap();
    assert!(retry["authorization_url"].is_string(), "{retry}");
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(retry["reference"], first["reference"]);
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(again["reference"], first["reference"]);
    assert_eq!(app.paystack.count("POST /transaction/initialize"), 1);
    assert!(again["authorization_url"].is_string());
}

#[tokio::test]
async fn a_hanging_paystack_is_answered_inside_the_request_timeout_and_a_retry_can_pay() {
    // Paystack's own timeout (10 s) is longer than the request's (3 s here): the purchase
    // answers 503 itself, in time, releasing the hold; a retry with the same key is a new
    // attempt with a checkout link, not the old order without one.
    let app = TestApp::builder()
        .env("REQUEST_TIMEOUT_SECONDS", "3")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 1).await;
    let buyer = signup(&app, "hang@example.com").await;
    app.paystack.fail_route(
        "POST /transaction/initialize",
        &[Fault::HangAfterAccept(Duration::from_secs(20))],
    );
    let send = || {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(&buyer)
            .header("idempotency-key", "one-purchase")
            .json(&json!({ "tier": "Regular", "quantity": 1 }))
            .send()
    };
    let started = std::time::Instant::now();
    let res = send().await.unwrap();
    let took = started.elapsed();
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 1, "the seat is back");

    let res = send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    assert!(order["authorization_url"].is_string(), "{order}");
    assert_invariants(&app).await;
}

#[tokio::test]
async fn forged_or_reserialised_signatures_are_401_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "rukky@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap();

    app.paystack.set_delivery(Delivery::BadSignature);
    let statuses = app.paystack.pay(reference).await;
    assert_eq!(statuses, [401]);

    // A correct signature of the compact body, sent with the body re-serialised.
    let compact = serde_json::to_vec(&json!({ "event": "charge.success",
        "data": { "id": 1, "reference": reference, "status": "success", "amount": PRICE, "currency": "NGN" } }))
    .unwrap();
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&compact).unwrap()).unwrap();
    let res = app
        .client
        .post(app.url("/payments/callback"))
        .header("content-type", "application/json")
        .header("x-paystack-signature", sign(SECRET_KEY, &compact))
        .body(pretty)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let res = app
        .client
        .post(app.url("/payments/callback"))
        .body(compact)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(recorded, 0);
    assert_eq!(
        order_status(&app, &buyer, reference).await["status"],
        "pending"
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_webhook_whose_verify_disagrees_pays_nothing() {
    let app = TestApp::spawn().await;
    // Refunds stay at Paystack until told: this test looks at orders while they are owed.
    app.paystack
        .set_default_refund_outcome(RefundOutcome::Manual);
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "sade@example.com").await;
    let abandoned: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let short: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let (abandoned, short) = (
        abandoned["reference"].as_str().unwrap(),
        short["reference"].as_str().unwrap(),
    );
    // A signed charge.success, but verify says abandoned.
    assert_eq!(app.paystack.deliver_without_paying(abandoned).await, [200]);
    // Paid, but not the order's amount.
    app.paystack.set_amount(short, PRICE - 100);
    assert_eq!(app.paystack.pay(short).await, [200]);

    // Both deliveries are processed (recorded, job run) without paying anything.
    eventually(Duration::from_secs(10), || async {
        let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        (processed == 2
            && app
                .paystack
                .count(&format!("GET /transaction/verify/{short}"))
                >= 1
            && app
                .paystack
                .count(&format!("GET /transaction/verify/{abandoned}"))
                >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        order_status(&app, &buyer, abandoned).await["status"],
        "pending"
    );
    // The short payment is not honoured: its seat is given back and the money is owed back.
    let short_order = wait_for_status(&app, &buyer, short, "refund_pending").await;
    assert!(short_order.get("tickets").is_none());
    let reason: String =
        sqlx::query_scalar("SELECT refund_reason FROM orders WHERE reference = $1")
            .bind(short)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(reason, "amount_mismatch");
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        event["tiers"][0]["available"], 4,
        "only the abandoned hold keeps its seat"
    );
    let tickets: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(tickets, 0);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn duplicate_and_concurrent_webhooks_issue_one_ticket_set_and_one_mail() {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "tolu@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap();

    app.paystack.set_delivery(Delivery::Twice);
    assert_eq!(app.paystack.pay(reference).await, [200, 200]);
    wait_for_status(&app, &buyer, reference, "paid").await;
    // A late redelivery to the other instance.
    app.paystack
        .set_webhook_url(&sibling.url("/payments/callback"));
    assert_eq!(app.paystack.redeliver(reference).await, [200]);

    eventually(Duration::from_secs(10), || async {
        let mails = app
            .resend
            .sent_to("tolu@example.com")
            .into_iter()
            .filter(|m| m.subject.starts_with("Your tickets"))
            .count();
        (mails >= 1).then_some(())
    })
    .await;
    let tickets: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(tickets, 2);
    let ticket_mails = app
        .resend
        .sent_to("tolu@example.com")
        .into_iter()
        .filter(|m| m.subject.starts_with("Your tickets"))
        .count();
    assert_eq!(ticket_mails, 1);
    assert_invariants(&app).await;
}

fn fast_sweeps() -> crate::helpers::TestAppBuilder {
    TestApp::builder()
        .env("HOLD_TTL_SECONDS", "1")
        .env("SWEEP_INTERVAL_SECONDS", "1")
}

#[tokio::test]
async fn two_sweepers_never_verify_the_same_hold() {
    // Long sweep intervals: the test runs the passes itself, on two instances.
    let app = TestApp::builder()
        .env("HOLD_TTL_SECONDS", "1")
        .env("SWEEP_INTERVAL_SECONDS", "3600")
        .env("MAX_ACTIVE_HOLDS_PER_USER", "0")
        .spawn()
        .await;
    let sibling = app.spawn_sibling().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 20).await;
    let buyer = signup(&app, "twice@example.com").await;
    let mut references = Vec::new();
    for _ in 0..12 {
        let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
        references.push(order["reference"].as_str().unwrap().to_owned());
    }
    eventually(Duration::from_secs(10), || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE status = 'pending' AND expires_at >= now()",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        (left == 0).then_some(())
    })
    .await;

    // Paystack answers slowly: the second instance sweeps while the first is still asking
    // about the holds it claimed (the claims are committed before any call to Paystack).
    app.paystack.fail_route(
        "GET /transaction/verify",
        &[Fault::Hang(Duration::from_millis(400)); 12],
    );
    let first = tokio::spawn({
        let state = app.state.clone();
        async move { ticketing::service::sweeper::sweep(&state).await }
    });
    eventually(Duration::from_secs(10), || async {
        app.paystack
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /transaction/verify"))
            .then_some(())
    })
    .await;
    let b = ticketing::service::sweeper::sweep(&sibling.state).await;
    let a = first.await.unwrap();
    assert_eq!(a.unwrap().expired + b.unwrap().expired, 12);
    for reference in &references {
        let asked = app
            .paystack
            .count(&format!("GET /transaction/verify/{reference}"));
        assert_eq!(asked, 1, "{reference} verified {asked} times");
        assert_eq!(
            order_status(&app, &buyer, reference).await["status"],
            "expired"
        );
    }
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_hold_paystack_cannot_verify_is_released_after_hold_ttl_and_settled_once_it_answers() {
    let app = fast_sweeps().spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 1).await;
    let buyer = signup(&app, "unsure@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.fail_route(
        "GET /transaction/verify",
        &vec![Fault::ServerError; 100_000],
    );
    // The buyer pays, but the webhook is lost, and Paystack cannot be asked: after
    // HOLD_TTL_SECONDS past expiry the seat is given back anyway.
    app.paystack.set_delivery(Delivery::Never);
    app.paystack.pay(reference).await;
    wait_for_status(&app, &buyer, reference, "expired").await;
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 1);

    // Paystack answers again: the payment that did happen is found and honoured (the seat
    // is still free, so the late payment takes it).
    app.paystack.clear_route_faults("GET /transaction/verify");
    let paid = wait_for_status(&app, &buyer, reference, "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn an_expired_hold_gives_its_tickets_back() {
    let app = fast_sweeps().spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 2).await;
    let first = signup(&app, "uche@example.com").await;
    let second = signup(&app, "vera@example.com").await;
    let order: Value = hold(&app, &first, &event_id, "Regular", 2).await;
    let res = purchase(&app, &second, &event_id, "Regular", 1).await;
    problem(res, StatusCode::CONFLICT, "sold_out").await;

    wait_for_status(
        &app,
        &first,
        order["reference"].as_str().unwrap(),
        "expired",
    )
    .await;
    let res = purchase(&app, &second, &event_id, "Regular", 2).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_late_payment_is_honoured_with_seats_left_and_owed_back_without() {
    let app = fast_sweeps().spawn().await;
    // Refunds stay at Paystack until told: this test looks at orders while they are owed.
    app.paystack
        .set_default_refund_outcome(RefundOutcome::Manual);
    let (_, event_id, _) = event_with_tier(&app, PRICE, 1).await;
    let (a, b) = (
        signup(&app, "wale@example.com").await,
        signup(&app, "xena@example.com").await,
    );

    // Seats left: the late payment takes the seat again.
    let first: Value = hold(&app, &a, &event_id, "Regular", 1).await;
    let first_ref = first["reference"].as_str().unwrap();
    wait_for_status(&app, &a, first_ref, "expired").await;
    app.paystack.pay(first_ref).await;
    let paid = wait_for_status(&app, &a, first_ref, "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    assert_invariants(&app).await;

    // No seats left: the payment is owed back.
    let (_, event2, _) = event_with_tier(&app, PRICE, 1).await;
    let late: Value = hold(&app, &a, &event2, "Regular", 1).await;
    let late_ref = late["reference"].as_str().unwrap();
    wait_for_status(&app, &a, late_ref, "expired").await;
    let res = purchase(&app, &b, &event2, "Regular", 1).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.paystack.pay(late_ref).await;
    wait_for_status(&app, &a, late_ref, "refund_pending").await;
    let reason: String =
        sqlx::query_scalar("SELECT refund_reason FROM orders WHERE reference = $1")
            .bind(late_ref)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(reason, "late_payment_sold_out");
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_lost_webhook_heals_through_the_sweeper() {
    let app = fast_sweeps().spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 3).await;
    let buyer = signup(&app, "yemi@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 3).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.set_delivery(Delivery::Never);
    assert!(app.paystack.pay(reference).await.is_empty());
    // The hold runs out; the sweeper asks Paystack before expiring it, and finds it paid.
    let paid = wait_for_status(&app, &buyer, reference, "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 3);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_paid_order_left_without_tickets_by_a_crash_heals_through_the_sweeper() {
    // The payment worker is "killed" between marking the order paid and issuing: the order
    // is paid, its tickets and mail are missing. Simulated on the database, since the real
    // code does both in one transaction; the sweeper must finish the job.
    let app = fast_sweeps().spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 2).await;
    let buyer = signup(&app, "zainab@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.pay(reference).await;
    wait_for_status(&app, &buyer, reference, "paid").await;
    sqlx::query("DELETE FROM tickets WHERE order_id = $1::uuid")
        .bind(order["id"].as_str().unwrap())
        .execute(&app.state.db)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET mail_queued_at = NULL, paid_at = now() - interval '1 minute' WHERE reference = $1")
        .bind(reference)
        .execute(&app.state.db)
        .await
        .unwrap();

    let healed = eventually(Duration::from_secs(15), || async {
        let order = order_status(&app, &buyer, reference).await;
        (order["tickets"].as_array().map(Vec::len) == Some(2)).then_some(order)
    })
    .await;
    assert_eq!(healed["status"], "paid");
    assert_invariants(&app).await;
}

#[tokio::test]
async fn unknown_references_and_other_events_are_200_and_change_nothing() {
    let app = TestApp::spawn().await;
    for body in [
        json!({ "event": "charge.success", "data": { "id": 9, "reference": "ord-nothing", "status": "success" } }),
        json!({ "event": "subscription.create", "data": { "id": 10 } }),
    ] {
        let raw = serde_json::to_vec(&body).unwrap();
        let res = app
            .client
            .post(app.url("/payments/callback"))
            .header("x-paystack-signature", sign(SECRET_KEY, &raw))
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn another_users_transaction_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "abe@example.com").await;
    let other = signup(&app, "bisi@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let res = app
        .get_auth(
            &format!(
                "/payments/transactions/{}",
                order["reference"].as_str().unwrap()
            ),
            &other,
        )
        .await;
    problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn two_gates_scanning_one_ticket_admit_it_once() {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    let (owner, event_id, _) = event_with_tier(&app, 0, 10).await;
    let buyer = signup(&app, "gate@example.com").await;
    let order: Value = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let keys: Vec<String> = order["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["access_key"].as_str().unwrap().to_owned())
        .collect();
    let path = format!("/events/{event_id}/tickets/validate");
    let scan = |target: &'static str, key: String| {
        let (app, sibling, owner, path) = (&app, &sibling, owner.clone(), path.clone());
        async move {
            let gate = if target == "a" { app } else { sibling };
            gate.post_json_auth(&path, &owner, &json!({ "access_key": key }))
                .await
        }
    };
    // The same ticket at two gates (two instances) at the same instant.
    let (a, b) = tokio::join!(scan("a", keys[0].clone()), scan("b", keys[0].clone()));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let (ok, dup) = if a.status() == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["ticket"]["status"], "used");
    let dup = problem(dup, StatusCode::CONFLICT, "ticket_already_used").await;
    assert_eq!(dup["checked_in_at"], ok["checked_in_at"]);

    // Other outcomes.
    let res = scan("a", "no-such-key".into()).await;
    problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let (_, other_event, _) = event_with_tier(&app, 0, 10).await;
    let res = app
        .post_json_auth(
            &format!("/events/{other_event}/tickets/validate"),
            &owner,
            &json!({ "access_key": keys[1] }),
        )
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_event_owner").await;
    let res = app
        .post_json_auth(&path, &buyer, &json!({ "access_key": keys[1] }))
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_organizer").await;

    let sales: Value = app
        .get_auth(&format!("/events/{event_id}/sales"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sales["checked_in"], 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_ticket_for_another_event_of_the_same_organizer_is_refused() {
    let app = TestApp::spawn().await;
    let (owner, event_a, _) = event_with_tier(&app, 0, 10).await;
    let event_b =
        crate::helpers::create_event(&app, &owner, &crate::helpers::event_body("B", 6.4, 3.4, 3))
            .await;
    let event_b = event_b["id"].as_str().unwrap();
    let buyer = signup(&app, "hopper@example.com").await;
    let order: Value = hold(&app, &buyer, &event_a, "Regular", 1).await;
    let key = order["tickets"][0]["access_key"].as_str().unwrap();
    let res = app
        .post_json_auth(
            &format!("/events/{event_b}/tickets/validate"),
            &owner,
            &json!({ "access_key": key }),
        )
        .await;
    problem(res, StatusCode::CONFLICT, "ticket_not_for_event").await;
}

#[tokio::test]
async fn cancelling_an_event_voids_its_holds_and_tickets() {
    let app = TestApp::spawn().await;
    // Refunds stay at Paystack until told: this test looks at orders while they are owed.
    app.paystack
        .set_default_refund_outcome(RefundOutcome::Manual);
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "cancel@example.com").await;
    let paid: Value = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let paid_ref = paid["reference"].as_str().unwrap();
    app.paystack.pay(paid_ref).await;
    let paid = wait_for_status(&app, &buyer, paid_ref, "paid").await;
    let key = paid["tickets"][0]["access_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let held: Value = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let held_ref = held["reference"].as_str().unwrap();

    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/cancel"),
            &owner,
            &json!({ "reason": "storm" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        order_status(&app, &buyer, held_ref).await["status"],
        "cancelled"
    );
    assert_eq!(
        order_status(&app, &buyer, paid_ref).await["status"],
        "refund_pending"
    );
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate"),
            &owner,
            &json!({ "access_key": key }),
        )
        .await;
    problem(res, StatusCode::CONFLICT, "ticket_void").await;
    // A payment for the voided hold arriving now is owed back, not honoured.
    app.paystack.pay(held_ref).await;
    wait_for_status(&app, &buyer, held_ref, "refund_pending").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn nul_characters_and_forged_cursors_are_client_errors() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/auth/signup",
            &json!({ "email": "nul@example.com", "password": "password1", "first_name": "A\u{0}B", "last_name": "C" }),
        )
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app.get("/events?q=a%00b").await;
    problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
    // A well-formed cursor for the year -4000.
    use base64::Engine;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("-188395401600000000000_{}", uuid::Uuid::nil()));
    let res = app.get(&format!("/events?cursor={cursor}")).await;
    problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
}

// ---- the organizer's attendee list ----

#[tokio::test]
async fn the_organizer_lists_orders_with_buyers_and_streams_a_formula_safe_csv() {
    let app = TestApp::builder()
        .env("MAX_FREE_TICKETS_PER_USER", "0")
        .env("MAX_ACTIVE_HOLDS_PER_USER", "0")
        .spawn()
        .await;
    let (owner, event_id, _) = event_with_tier(&app, 0, 20_000).await;
    // A buyer whose name a spreadsheet would run as a formula.
    let res = app
        .post_json(
            "/auth/signup",
            &json!({ "email": "csv@example.com", "password": crate::helpers::PASSWORD,
                     "first_name": "=HYPERLINK(\"http://x\")", "last_name": "Obi" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let buyer = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut references = Vec::new();
    for _ in 0..3 {
        let order = hold(&app, &buyer, &event_id, "Regular", 2).await;
        references.push(order["reference"].as_str().unwrap().to_owned());
    }
    // Ten thousand more tickets, issued the quick way (the CSV is what is tested here).
    sqlx::query(
        "WITH o AS (
             INSERT INTO orders (id, reference, user_id, event_id, tier_id, quantity, unit_price,
                                 total_amount, discounted, currency, status, holds_seats,
                                 expires_at, paid_at)
             SELECT gen_random_uuid(), 'ord-bulk' || n, u.id, $1, t.id, 1, 0, 0, false, 'NGN',
                    'paid', true, now(), now()
             FROM generate_series(1, 10000) n, (SELECT id FROM users WHERE email = 'csv@example.com') u,
                  (SELECT id FROM ticket_tiers WHERE event_id = $1) t
             RETURNING id, user_id, tier_id)
         INSERT INTO tickets (id, order_id, event_id, tier_id, user_id, seat, access_key)
         SELECT gen_random_uuid(), o.id, $1, o.tier_id, o.user_id, 1, 'bulk-' || o.id FROM o",
    )
    .bind(uuid::Uuid::parse_str(&event_id).unwrap())
    .execute(&app.state.db)
    .await
    .unwrap();

    let list = app
        .get_json_auth(
            &format!("/events/{event_id}/orders?limit=2&status=paid"),
            &owner,
        )
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["buyer"]["email"], "csv@example.com");
    assert!(items[0].get("tickets").is_none());
    assert!(list["next_cursor"].is_string());
    let bad = app
        .get_auth(
            &format!("/events/{event_id}/orders?status=nonsense"),
            &owner,
        )
        .await;
    problem(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
    let stranger = crate::helpers::organizer(&app, "other-org@example.com").await;
    let res = app
        .get_auth(&format!("/events/{event_id}/attendees.csv"), &stranger)
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_event_owner").await;
    let res = app
        .get_auth(&format!("/events/{event_id}/orders"), &buyer)
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_organizer").await;

    let res = app
        .get_auth(&format!("/events/{event_id}/attendees.csv"), &owner)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "ticket_id,tier,buyer_name,buyer_email,status,checked_in_at,order_reference"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 10_006, "every ticket once");
    let ids: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), 10_006);
    let ours = rows.iter().find(|r| r.ends_with(&references[0])).unwrap();
    assert!(
        ours.contains("\"'=HYPERLINK(\"\"http://x\"\") Obi\""),
        "the formula is neutralised: {ours}"
    );
    assert!(ours.contains(",valid,"));
}

// ---- the sandbox checkout (no Paystack key) ----

#[tokio::test]
async fn the_sandbox_checkout_shows_the_order_and_pay_or_decline_settle_it() {
    let app = crate::helpers::sandbox_app().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 2).await;
    let buyer = signup(&app, "sandbox@example.com").await;

    let declined = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = declined["reference"].as_str().unwrap();
    let url = declined["authorization_url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/sandbox/checkout/{reference}")),
        "{url}"
    );
    let page = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Flash Sale") && page.contains("Regular"),
        "{page}"
    );
    assert!(page.contains("NGN 10000.00"), "{page}");
    assert!(!page.contains("abandoned"), "{page}");
    let res = app
        .client
        .post(format!("{url}/decline"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let result = res.text().await.unwrap();
    assert!(
        result.contains("declined") && result.contains("href="),
        "{result}"
    );
    // At once, not at the hold's expiry: failed, and the seats are back.
    assert_eq!(
        order_status(&app, &buyer, reference).await["status"],
        "failed"
    );
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 2);

    let paid = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = paid["reference"].as_str().unwrap();
    let url = paid["authorization_url"].as_str().unwrap();
    let res = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let order = wait_for_status(&app, &buyer, reference, "paid").await;
    assert_eq!(order["tickets"].as_array().unwrap().len(), 1);
    assert_invariants(&app).await;
}
