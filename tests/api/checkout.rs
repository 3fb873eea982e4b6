//! The paced checkout (issue "Flash-sale scale", DESIGN.md "Paystack's limits shape the flash
//! sale"): past Paystack's initialize budget, or on a Paystack 429, a purchase keeps its seats
//! and answers 201 with `authorization_url: null`; the link follows within the budget, on the
//! websocket and on `GET /payments/transactions/:reference`, and `expires_at` counts from it.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{fakes::Fault, helpers::*};

fn expires_at(order: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        order["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn a_sale_past_the_initialize_budget_answers_every_buyer_201_and_every_link_follows() {
    let app = TestApp::builder()
        .env("PAYSTACK_INITIALIZES_PER_SECOND", "4")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 30).await;
    let buyers = attendees(&app, 20).await;
    let started = Instant::now();
    let answers = futures::future::join_all(
        buyers
            .iter()
            .map(|buyer| purchase(&app, buyer, &event_id, "Regular", 1)),
    )
    .await;
    let mut orders = Vec::new();
    for res in answers {
        assert_eq!(res.status(), StatusCode::CREATED, "no buyer is turned away");
        orders.push(res.json::<Value>().await.unwrap());
    }
    let deferred = orders
        .iter()
        .filter(|o| o["authorization_url"].is_null())
        .count();
    assert!(
        deferred > 0,
        "20 purchases at once within a budget of 4 a second"
    );
    // Every link follows; a deferred hold runs its full time from its link.
    for (buyer, order) in buyers.iter().zip(&orders) {
        let reference = order["reference"].as_str().unwrap();
        let linked = eventually(Duration::from_secs(30), || async {
            let now = order_status(&app, buyer, reference).await;
            now["authorization_url"].is_string().then_some(now)
        })
        .await;
        assert_eq!(linked["status"], "pending");
        assert!(expires_at(&linked) >= expires_at(order));
    }
    // Paced: 20 links at 4 a second (1.1 s windows) cannot all exist sooner than this.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "20 links in {:?}: the budget was not kept",
        started.elapsed()
    );
    // One initialize per order, never two.
    assert_eq!(app.paystack.count("POST /transaction/initialize"), 20);
    for (buyer, order) in buyers.iter().zip(&orders) {
        let reference = order["reference"].as_str().unwrap();
        app.paystack.pay(reference).await;
        wait_for_status(&app, buyer, reference, "paid").await;
    }
    assert_invariants(&app).await;
    println!(
        "CHECKOUT paced: buyers=20 budget_per_s=4 answered_201=20 deferred={deferred} links=20 in {:?} initializes=20 paid=20",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_paystack_429_keeps_the_seats_and_the_link_is_pushed_when_it_exists() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 5).await;
    let buyer = signup(&app, "patient@example.com").await;
    app.paystack
        .fail_route("POST /transaction/initialize", &[Fault::RateLimited(1)]);
    let key = uuid::Uuid::now_v7().to_string();
    let buy = || {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(&buyer)
            .header("idempotency-key", &key)
            .json(&json!({ "tier": "Regular", "quantity": 2 }))
            .send()
    };
    let res = buy().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    assert!(order["authorization_url"].is_null());
    let reference = order["reference"].as_str().unwrap().to_owned();
    // The seats are held meanwhile.
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 3);
    // A subscriber hears the link as soon as it exists.
    let url = format!(
        "{}/ws?token={buyer}",
        app.address.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let subscribe = json!({ "type": "subscribe", "reference": reference }).to_string();
    socket.send(Message::Text(subscribe.into())).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                continue;
            };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["order"]["authorization_url"].is_string() {
                return message;
            }
        }
    })
    .await
    .expect("the link is pushed");
    assert_eq!(pushed["status"], "pending");
    // The same request again: the same order, now with its link.
    let again = buy().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], order["id"]);
    assert_eq!(
        again["authorization_url"],
        pushed["order"]["authorization_url"]
    );
    assert_eq!(
        app.paystack.count("POST /transaction/initialize"),
        2,
        "the 429 and the link"
    );
    app.paystack.pay(&reference).await;
    wait_for_status(&app, &buyer, &reference, "paid").await;
    assert_invariants(&app).await;
}

/// A deferred link whose initialize reached Paystack but whose answer was lost: the next try
/// is a duplicate reference, and Paystack never gives an existing transaction's link back.
/// The hold ends (seats back) and the buyer sees `failed`, never a hold that waits forever.
#[tokio::test]
async fn a_deferred_link_lost_at_paystack_ends_the_hold_instead_of_waiting_forever() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 5).await;
    let buyer = signup(&app, "unlucky@example.com").await;
    app.paystack.fail_route(
        "POST /transaction/initialize",
        &[Fault::RateLimited(1), Fault::ServerErrorAfterAccept],
    );
    let order = hold(&app, &buyer, &event_id, "Regular", 2).await;
    assert!(order["authorization_url"].is_null());
    let reference = order["reference"].as_str().unwrap();
    wait_for_status(&app, &buyer, reference, "failed").await;
    let event: Value = app
        .get(&format!("/events/{event_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(event["tiers"][0]["available"], 5, "the seats are back");
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_burst_of_paid_webhooks_is_verified_at_the_budgets_pace_and_all_settle() {
    let app = TestApp::builder()
        .env("PAYSTACK_VERIFIES_PER_SECOND", "5")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 20).await;
    let buyers = attendees(&app, 20).await;
    let mut orders = Vec::new();
    for buyer in &buyers {
        let res = purchase(&app, buyer, &event_id, "Regular", 1).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        orders.push(res.json::<Value>().await.unwrap());
    }
    let started = Instant::now();
    // Twenty webhooks at once: twenty verifies wanted, five a second allowed.
    futures::future::join_all(
        orders
            .iter()
            .map(|o| app.paystack.pay(o["reference"].as_str().unwrap())),
    )
    .await;
    for (buyer, order) in buyers.iter().zip(&orders) {
        let reference = order["reference"].as_str().unwrap();
        let paid = wait_for_status(&app, buyer, reference, "paid").await;
        assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    }
    let busiest = app
        .paystack
        .most_within("GET /transaction/verify", Duration::from_secs(1));
    assert!(busiest <= 5, "{busiest} verifies within one second");
    assert_invariants(&app).await;
    println!(
        "CHECKOUT verify budget 5/s: 20 webhooks at once, 20 paid in {:?}, at most {busiest} verifies in any second",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_attempt_that_takes_no_seats_gives_its_initialize_slot_back() {
    // One initialize a second: a refused attempt that kept its slot would leave the next
    // buyer (within the same second) without an inline link.
    let app = TestApp::builder()
        .env("PAYSTACK_INITIALIZES_PER_SECOND", "1")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 30).await;
    let buyers = attendees(&app, 2).await;
    // Over the event's per-order limit (10): refused after the slot was taken.
    let res = purchase(&app, &buyers[0], &event_id, "Regular", 11).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let order: Value = purchase(&app, &buyers[1], &event_id, "Regular", 1)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        order["authorization_url"].is_string(),
        "the refused attempt kept the only slot: {order}"
    );
    assert_eq!(app.paystack.count("POST /transaction/initialize"), 1);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_deferred_hold_waiting_past_its_hold_time_for_its_link_keeps_its_seats() {
    // A hold of one second, swept every second; the link comes later than that.
    let app = TestApp::builder()
        .env("HOLD_TTL_SECONDS", "1")
        .env("SWEEP_INTERVAL_SECONDS", "1")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 1).await;
    let buyer = signup(&app, "queued-for-a-link@example.com").await;
    // Paystack refuses the inline initialize and the initializer's first try, each for three
    // seconds: the link exists three seconds or more after the purchase, past the hold's
    // one second (as for the last of 20,000 links at 20 a second against 15 minutes).
    app.paystack.fail_route(
        "POST /transaction/initialize",
        &[Fault::RateLimited(3), Fault::RateLimited(3)],
    );
    let res = purchase(&app, &buyer, &event_id, "Regular", 1).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    assert!(order["authorization_url"].is_null());
    let reference = order["reference"].as_str().unwrap();
    let settled = eventually(Duration::from_secs(30), || async {
        let now = order_status(&app, &buyer, reference).await;
        (now["status"] != "pending" || now["authorization_url"].is_string()).then_some(now)
    })
    .await;
    assert_eq!(
        settled["status"], "pending",
        "the hold ended while it waited for its link: {settled}"
    );
    assert!(settled["authorization_url"].is_string());
    // Its time runs from the link.
    assert!(expires_at(&settled) > expires_at(&order));
    // The seat was kept all along: the buyer pays and gets the ticket.
    app.paystack.pay(reference).await;
    wait_for_status(&app, &buyer, reference, "paid").await;
    assert_invariants(&app).await;
}
