//! Money out: cancellations and single-order refunds refunded exactly once at Paystack,
//! payouts sent once for exactly the organizer's share, the bank-account cooldown, the races
//! review found, and the reconciliation check. Every scenario ends with the invariants.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::{
        Fault,
        paystack::{Delivery, RefundOutcome},
    },
    helpers::{
        PASSWORD, TestApp, TestAppBuilder, add_tier, assert_invariants, attendees, create_event,
        event_body, event_with_tier, eventually, hold, order_status, organizer, problem, signup,
        wait_for_status,
    },
};

const PRICE: i64 = 500_000; // ₦5,000.00: 7.5 % platform fee by the default schedule

/// Fast sweeps, refunds and payouts due at once, Paystack calls that time out after a second.
pub(crate) fn money_app() -> TestAppBuilder {
    TestApp::builder()
        .env("SWEEP_INTERVAL_SECONDS", "1")
        .env("REDRIVE_AFTER_SECONDS", "1")
        .env("PAYOUT_DELAY_SECONDS", "0")
        .env("PAYSTACK_TIMEOUT_MILLIS", "1000")
        .env("PAYSTACK_REFUNDS_PER_SECOND", "100")
}

/// Holds and pays one order: its reference.
async fn paid_order(app: &TestApp, token: &str, event_id: &str, tier: &str, qty: i32) -> String {
    let order = hold(app, token, event_id, tier, qty).await;
    let reference = order["reference"].as_str().unwrap().to_owned();
    app.paystack.pay(&reference).await;
    wait_for_status(app, token, &reference, "paid").await;
    reference
}

async fn reconcile_mismatches(app: &TestApp) -> Vec<String> {
    let report = ticketing::service::reconcile::check(&app.state.db, Default::default())
        .await
        .unwrap();
    report
        .mismatches
        .iter()
        .map(ticketing::service::reconcile::line)
        .collect()
}

#[tokio::test]
async fn cancelling_refunds_every_paid_order_exactly_once_through_faults_and_disorder() {
    let app = money_app().spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 100).await;
    let buyers = attendees(&app, 30).await;
    let mut orders = Vec::new();
    for buyer in &buyers {
        orders.push(paid_order(&app, buyer, &event_id, "Regular", 1).await);
    }
    // Paystack misbehaves: the first refund calls fail, one succeeds but its answer is lost
    // to a timeout, one succeeds and answers 500; some refunds fail once at the processor;
    // every webhook arrives twice and the final one before `refund.pending`.
    app.paystack.fail_route(
        "POST /refund",
        &[
            Fault::ServerError,
            Fault::HangAfterAccept(Duration::from_millis(1500)),
            Fault::ServerErrorAfterAccept,
            Fault::HtmlUnavailable,
        ],
    );
    for reference in &orders[..3] {
        app.paystack
            .set_refund_outcome(reference, RefundOutcome::FailOnce);
    }
    app.paystack.set_delivery(Delivery::Twice);
    app.paystack.set_refund_webhooks_reversed(true);

    let cancel = format!("/events/{event_id}/cancel");
    let res = app
        .post_json_auth(&cancel, &owner, &json!({ "reason": "flood" }))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    problem(
        app.post_json_auth(&cancel, &owner, &json!({})).await,
        StatusCode::CONFLICT,
        "event_cancelled",
    )
    .await;

    for (buyer, reference) in buyers.iter().zip(&orders) {
        let order = wait_for_status(&app, buyer, reference, "refunded").await;
        assert!(order.get("tickets").is_none());
        let at_paystack = app.paystack.refunds(reference);
        let processed: Vec<_> = at_paystack
            .iter()
            .filter(|r| r.status == "processed")
            .collect();
        assert_eq!(processed.len(), 1, "{reference}: {at_paystack:?}");
        assert_eq!(processed[0].amount, PRICE);
        assert!(
            at_paystack
                .iter()
                .all(|r| r.status == "processed" || r.status == "failed"),
            "{reference}: a second live refund: {at_paystack:?}"
        );
    }
    // Not one refund was sent twice: 30 first calls, a resend for each call that never
    // reached Paystack (the 500 and the 503 page) and for each refund that failed at the
    // processor; the two whose answers were lost were looked up, not resent.
    assert_eq!(app.paystack.count("POST /refund"), 30 + 2 + 3);
    // Redelivered webhooks and a second sweep add nothing.
    app.paystack.wait_for_webhooks().await;
    assert_eq!(
        app.paystack
            .all_refunds()
            .iter()
            .filter(|r| r.status == "processed")
            .count(),
        30
    );
    problem(
        app.post_json_auth(&cancel, &owner, &json!({})).await,
        StatusCode::CONFLICT,
        "event_cancelled",
    )
    .await;
    // Every holder was told.
    // Every holder's mail is queued (the mail queue drains at Resend's pace; the first ones
    // are in the outbox already).
    let mailed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refunds WHERE holder_mailed_at IS NOT NULL")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(mailed, 30);
    eventually(Duration::from_secs(30), || async {
        app.resend
            .outbox()
            .iter()
            .any(|m| m.subject.starts_with("Your refund for"))
            .then_some(())
    })
    .await;

    let sales: Value = app
        .get_json_auth(&format!("/events/{event_id}/sales"), &owner)
        .await;
    assert_eq!(sales["gross_amount"], 30 * PRICE);
    assert_eq!(sales["refunded_amount"], 30 * PRICE);
    assert_eq!(sales["platform_fee_amount"], 0);
    assert_eq!(sales["net_amount"], 0);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_late_payment_for_a_cancelled_event_is_refunded() {
    let app = money_app().spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "late@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap();
    let res = app
        .post_json_auth(&format!("/events/{event_id}/cancel"), &owner, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        order_status(&app, &buyer, reference).await["status"],
        "cancelled"
    );

    app.paystack.pay(reference).await;
    wait_for_status(&app, &buyer, reference, "refunded").await;
    let refunds = app.paystack.refunds(reference);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, 2 * PRICE);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn one_refund_then_one_payout_of_exactly_the_net_even_after_a_lost_answer() {
    let app = money_app().spawn().await;
    let owner = organizer(&app, "payee@example.com").await;
    let event = create_event(&app, &owner, &event_body("Payout Night", 6.45, 3.4, 7)).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    // Two tiers on either side of the fee schedule's first limit (₦20,000 inclusive: 7.5 %).
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "Regular", "price": 2_000_000, "quantity": 50 }),
    )
    .await;
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "VIP", "price": 2_500_000, "quantity": 10 }),
    )
    .await;
    let buyers = attendees(&app, 3).await;
    let kept_a = paid_order(&app, &buyers[0], &event_id, "Regular", 3).await;
    let kept_b = paid_order(&app, &buyers[1], &event_id, "VIP", 2).await;
    let refunded = paid_order(&app, &buyers[2], &event_id, "VIP", 1).await;

    // The organizer refunds one order: 202, refund_pending, tickets void at once.
    let order_id = order_status(&app, &buyers[2], &refunded).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refund_path = format!("/events/{event_id}/orders/{order_id}/refund");
    let stranger = organizer(&app, "stranger@example.com").await;
    problem(
        app.post_json_auth(&refund_path, &stranger, &json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "not_event_owner",
    )
    .await;
    let res = app
        .post_json_auth(&refund_path, &owner, &json!({ "reason": "asked nicely" }))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "refund_pending");
    let void: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tickets WHERE order_id = $1::uuid AND status = 'void'",
    )
    .bind(&order_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(void, 1);
    wait_for_status(&app, &buyers[2], &refunded, "refunded").await;
    problem(
        app.post_json_auth(&refund_path, &owner, &json!({})).await,
        StatusCode::CONFLICT,
        "order_not_refundable",
    )
    .await;

    // Sales, computed here from the prices: gross counts every payment, the fee only the
    // orders kept (floor(price × bps / 10000) per ticket).
    let gross = 3 * 2_000_000 + 2 * 2_500_000 + 2_500_000;
    let fee = 3 * (2_000_000 * 750 / 10_000) + 2 * (2_500_000 * 500 / 10_000);
    let net = gross - 2_500_000 - fee;
    let sales: Value = app
        .get_json_auth(&format!("/events/{event_id}/sales"), &owner)
        .await;
    assert_eq!(sales["gross_amount"], gross);
    assert_eq!(sales["refunded_amount"], 2_500_000);
    assert_eq!(sales["platform_fee_amount"], fee);
    assert_eq!(sales["net_amount"], net);
    let tier_gross: i64 = sales["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["gross_amount"].as_i64().unwrap())
        .sum();
    assert_eq!(tier_gross, gross);
    let balance: Value = app.get_json_auth("/users/organizer/payouts", &owner).await;
    assert_eq!(balance["balance"]["held_amount"], net);

    // The event ends; the first transfer goes through but its answer is lost.
    app.paystack.fail_route(
        "POST /transfer",
        &[Fault::HangAfterAccept(Duration::from_millis(1500))],
    );
    // The event ends: time moves through the app's clock (the event ends in 7 days).
    app.state.clock.advance(Duration::from_secs(8 * 86_400));
    let payouts = eventually(Duration::from_secs(30), || async {
        let body: Value = app.get_json_auth("/users/organizer/payouts", &owner).await;
        (body["items"][0]["status"] == "success").then_some(body)
    })
    .await;
    assert_eq!(payouts["items"].as_array().unwrap().len(), 1);
    assert_eq!(payouts["items"][0]["amount"], net);
    assert_eq!(payouts["balance"]["paid_out_amount"], net);
    assert_eq!(payouts["balance"]["payable_amount"], 0);
    assert_eq!(payouts["balance"]["held_amount"], 0);
    let transfers = app.paystack.transfers();
    assert_eq!(transfers.len(), 1, "{transfers:?}");
    assert_eq!(transfers[0].amount, net);
    assert_eq!(app.paystack.successful_transfers().len(), 1);

    // Once the payout started: no refund, no cancel.
    let kept_id = order_status(&app, &buyers[0], &kept_a).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    problem(
        app.post_json_auth(
            &format!("/events/{event_id}/orders/{kept_id}/refund"),
            &owner,
            &json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "payout_started",
    )
    .await;
    problem(
        app.post_json_auth(&format!("/events/{event_id}/cancel"), &owner, &json!({}))
            .await,
        StatusCode::CONFLICT,
        "payout_started",
    )
    .await;
    let _ = kept_b;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_changed_bank_account_needs_the_password_and_waits_out_the_cooldown() {
    let app = money_app()
        // 30 days: longer than the week until the event is over.
        .env("PAYOUT_ACCOUNT_COOLDOWN_SECONDS", "2592000")
        .spawn()
        .await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "fan@example.com").await;
    paid_order(&app, &buyer, &event_id, "Regular", 2).await;
    let before: Value = app.get_json_auth("/users/organizer", &owner).await;
    let old_email = before["email"].as_str().unwrap().to_owned();
    let change = json!({ "bank_code": "044", "account_number": "0987654321",
                         "email": "new-inbox@example.com" });

    let res = app
        .patch_json_auth("/users/organizer", &owner, &change)
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let mut wrong = change.clone();
    wrong["password"] = json!("not the password");
    let res = app
        .patch_json_auth("/users/organizer", &owner, &wrong)
        .await;
    problem(res, StatusCode::FORBIDDEN, "invalid_password").await;
    let mut right = change.clone();
    right["password"] = json!(PASSWORD);
    let res = app
        .patch_json_auth("/users/organizer", &owner, &right)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let after: Value = res.json().await.unwrap();
    assert_eq!(after["account_number_last4"], "4321");
    // The notice goes to the organizer email as it was, not only to the new one (mail leaves
    // at Resend's pace behind the welcome and ticket mails).
    eventually(Duration::from_secs(40), || async {
        (!app.resend.sent_to(&old_email).is_empty()
            && app
                .resend
                .outbox()
                .iter()
                .filter(|m| m.subject.contains("payout bank account"))
                .count()
                >= 1)
            .then_some(())
    })
    .await;

    // The event ends: the payout starts but waits for the cooldown; nothing is sent.
    // The event ends: time moves through the app's clock (the event ends in 7 days).
    app.state.clock.advance(Duration::from_secs(8 * 86_400));
    eventually(Duration::from_secs(30), || async {
        let waiting: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM payouts WHERE event_id = $1::uuid")
                .bind(&event_id)
                .fetch_optional(&app.state.db)
                .await
                .unwrap()
                .flatten();
        waiting.filter(|w| w.contains("cooldown")).map(|_| ())
    })
    .await;
    let payouts: Value = app.get_json_auth("/users/organizer/payouts", &owner).await;
    assert_eq!(payouts["items"][0]["status"], "pending");
    assert_eq!(
        payouts["balance"]["payable_amount"],
        payouts["items"][0]["amount"]
    );
    assert!(app.paystack.transfers().is_empty());

    // Once the cooldown is over, the payout goes to the new account, once.
    app.state.clock.advance(Duration::from_secs(31 * 86_400));
    eventually(Duration::from_secs(30), || async {
        let body: Value = app.get_json_auth("/users/organizer/payouts", &owner).await;
        (body["items"][0]["status"] == "success").then_some(())
    })
    .await;
    let transfers = app.paystack.transfers();
    assert_eq!(transfers.len(), 1);
    let new_recipient: String = sqlx::query_scalar("SELECT recipient_code FROM organizers")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(transfers[0].recipient_code, new_recipient);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_cancel_racing_a_settlement_never_leaves_a_paid_order_on_a_cancelled_event() {
    let app = money_app().spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "racer@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap().to_owned();
    let order_id = order["id"].as_str().unwrap().to_owned();

    // A second connection holds the order row, so the payment job stops right before its
    // guarded write, after it has read the event.
    let mut blocker = app.state.db.begin().await.unwrap();
    sqlx::query("SELECT id FROM orders WHERE id = $1::uuid FOR UPDATE")
        .bind(&order_id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap()
    };
    app.paystack.pay(&reference).await;
    eventually(Duration::from_secs(10), || async {
        (waiting().await >= 1).then_some(())
    })
    .await;

    // The cancel runs meanwhile; it may block too (and must, once settlement holds the event).
    let cancel = {
        let (client, url, owner) = (
            app.client.clone(),
            app.url(&format!("/events/{event_id}/cancel")),
            owner.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(owner)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    eventually(Duration::from_secs(10), || async {
        (waiting().await >= 2 || cancel.is_finished()).then_some(())
    })
    .await;
    blocker.rollback().await.unwrap();
    assert_eq!(cancel.await.unwrap(), StatusCode::ACCEPTED);

    // Whatever the order: no paid order with valid tickets on a cancelled event.
    let order = eventually(Duration::from_secs(20), || async {
        let o = order_status(&app, &buyer, &reference).await;
        matches!(o["status"].as_str(), Some("refund_pending" | "refunded")).then_some(o)
    })
    .await;
    assert!(order.get("tickets").is_none());
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tickets WHERE event_id = $1::uuid AND status <> 'void'",
    )
    .bind(&event_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(live, 0);
    wait_for_status(&app, &buyer, &reference, "refunded").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_charge_whose_job_gave_up_is_redriven_by_the_sweeper() {
    let app = money_app()
        .env("HOLD_TTL_SECONDS", "1")
        .env("JOB_MAX_ATTEMPTS", "1")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 5).await;
    let buyer = signup(&app, "patient@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap();
    wait_for_status(&app, &buyer, reference, "expired").await;

    // The payment job's only attempt cannot verify (and its quick retry neither): aborted.
    app.paystack.fail_route(
        "GET /transaction/verify",
        &[Fault::ServerError, Fault::ServerError],
    );
    app.paystack.pay(reference).await;
    let paid = wait_for_status(&app, &buyer, reference, "paid").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    // The delivery is marked settled right after the settlement commits.
    eventually(Duration::from_secs(10), || async {
        let unprocessed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payment_events WHERE reference = $1 AND processed_at IS NULL",
        )
        .bind(reference)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        (unprocessed == 0).then_some(())
    })
    .await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_late_payment_cannot_retake_a_discount_seat_given_back() {
    let app = money_app().env("HOLD_TTL_SECONDS", "1").spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "Early", "price": PRICE, "quantity": 5,
                 "discount": { "price": 300_000, "quantity": 1, "expires_at": expires } }),
    )
    .await;
    let (a, b) = (
        signup(&app, "first@example.com").await,
        signup(&app, "second@example.com").await,
    );
    let first = hold(&app, &a, &event_id, "Early", 1).await;
    assert_eq!(first["unit_price"], 300_000);
    let first_ref = first["reference"].as_str().unwrap();
    wait_for_status(&app, &a, first_ref, "expired").await;
    // The discount seat went back, and the next buyer takes it (and pays at once).
    let second = hold(&app, &b, &event_id, "Early", 1).await;
    assert_eq!(second["unit_price"], 300_000);
    app.paystack
        .pay(second["reference"].as_str().unwrap())
        .await;
    wait_for_status(&app, &b, second["reference"].as_str().unwrap(), "paid").await;

    // The first buyer's late payment at the discounted price cannot be honoured.
    app.paystack.pay(first_ref).await;
    wait_for_status(&app, &a, first_ref, "refunded").await;
    let discounted_sales: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::bigint FROM orders WHERE discounted AND status = 'paid'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(discounted_sales, 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn ends_at_cannot_be_moved_into_the_past() {
    let app = TestApp::spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    // A running event: it started two hours ago (the API refuses past dates, so the fixture
    // writes the row), and its owner tries to end it an hour ago.
    sqlx::query("UPDATE events SET starts_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&event_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let past = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = app
        .client
        .patch(app.url(&format!("/events/{event_id}")))
        .bearer_auth(&owner)
        .json(&json!({ "ends_at": past }))
        .send()
        .await
        .unwrap();
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "ends_at");
}

#[tokio::test]
async fn refunds_that_fail_or_need_attention_keep_retrying_and_are_listed() {
    let app = money_app().spawn().await;
    let (owner, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyers = attendees(&app, 2).await;
    let broke = paid_order(&app, &buyers[0], &event_id, "Regular", 1).await;
    let attention = paid_order(&app, &buyers[1], &event_id, "Regular", 1).await;
    app.paystack
        .set_refund_outcome(&attention, RefundOutcome::NeedsAttention);
    app.paystack.set_insufficient_balance(true);
    let res = app
        .post_json_auth(&format!("/events/{event_id}/cancel"), &owner, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // Insufficient balance: nothing created at Paystack, the refund is listed as stuck.
    let stuck = eventually(Duration::from_secs(20), || async {
        let report = ticketing::service::reconcile::check(&app.state.db, Default::default())
            .await
            .unwrap();
        (report.stuck.len() == 2).then_some(report.stuck)
    })
    .await;
    assert!(stuck.iter().all(|f| f.check == "refund_stuck"), "{stuck:?}");
    assert!(app.paystack.refunds(&broke).is_empty());

    // Money arrives: the retry goes through; needs-attention stays listed, the order owed.
    app.paystack.set_insufficient_balance(false);
    wait_for_status(&app, &buyers[0], &broke, "refunded").await;
    let refunds = eventually(Duration::from_secs(20), || async {
        let r = app.paystack.refunds(&attention);
        (r.iter().any(|r| r.status == "needs-attention")).then_some(r)
    })
    .await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        order_status(&app, &buyers[1], &attention).await["status"],
        "refund_pending"
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn reconcile_passes_on_real_sales_and_fails_on_a_corrupted_ledger_row() {
    let app = money_app().spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "audit@example.com").await;
    paid_order(&app, &buyer, &event_id, "Regular", 2).await;
    assert!(reconcile_mismatches(&app).await.is_empty());

    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ticketing"))
            .arg("reconcile")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.env["DATABASE_URL"])
            .output()
            .unwrap()
    };
    let ok = cli(&["--event", &event_id]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    sqlx::query(
        "UPDATE ledger_entries SET amount = amount + 1
         WHERE id = (SELECT id FROM ledger_entries WHERE kind = 'organizer_share' LIMIT 1)",
    )
    .execute(&app.state.db)
    .await
    .unwrap();
    let mismatches = reconcile_mismatches(&app).await;
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert!(mismatches[0].contains("ledger_sale"));
    let bad = cli(&["--event", &event_id]);
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("MISMATCH ledger_sale")),
        "{out}"
    );
}
