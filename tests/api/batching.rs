//! Holds decided in batches (`service::batcher`): many holds share one commit, on one or two
//! instances, and the rules of the one-by-one hold still stand. Batches are formed on
//! purpose: the test holds the tier row's lock (as a slow commit of another instance would),
//! so the lanes fill up behind it, and lets go once they have.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    RowLock, TestApp, add_tier, assert_invariants, attendees, event_with_tier, eventually,
    lock_waiters, problem, purchase, refuse_writes,
};

const PRICE: i64 = 500_000;

/// The tier row's lock, held by the test as a slow commit of another instance would.
async fn lock_tier(app: &TestApp, tier_id: Uuid) -> RowLock {
    RowLock::take(
        app,
        "SELECT 1 FROM ticket_tiers WHERE id = $1::uuid FOR UPDATE",
        &tier_id.to_string(),
    )
    .await
}

fn ids(event_id: &str, tier: &Value) -> (Uuid, Uuid) {
    (
        event_id.parse().unwrap(),
        tier["id"].as_str().unwrap().parse().unwrap(),
    )
}

/// `helpers::purchase` (one ticket of "Regular") on a task of its own, so the test can go on
/// while the purchase waits in its lane.
fn spawn_purchase(
    app: &TestApp,
    token: &str,
    event_id: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let (address, client) = (app.address.clone(), app.client.clone());
    let (token, event_id) = (token.to_owned(), event_id.to_owned());
    tokio::spawn(async move {
        client
            .post(format!("{address}/events/{event_id}/tickets/purchase"))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&serde_json::json!({ "tier": "Regular", "quantity": 1 }))
            .send()
            .await
            .unwrap()
    })
}

#[tokio::test]
async fn two_hundred_buyers_batched_on_two_instances_take_exactly_the_seats_that_exist() {
    // The first buyers wait in their lanes while the queues fill (up to 40 s on a loaded
    // machine): their requests must not time out first.
    let app = TestApp::builder()
        .env("REQUEST_TIMEOUT_SECONDS", "90")
        .spawn()
        .await;
    let sibling = app.spawn_sibling().await;
    let (_, event_id, tier) = event_with_tier(&app, PRICE, 50).await;
    let (event, tier_id) = ids(&event_id, &tier);
    let buyers = attendees(&app, 200).await;

    // Each instance's first batch (one buyer, sent one at a time) stops at the locked tier
    // row, as behind another instance's commit; everyone else queues behind it on their
    // instance's lane.
    let lock = lock_tier(&app, tier_id).await;
    let target = |i: usize| if i.is_multiple_of(2) { &app } else { &sibling };
    let mut attempts = Vec::new();
    for (i, token) in buyers[..2].iter().enumerate() {
        attempts.push(spawn_purchase(target(i), token, &event_id));
        eventually(Duration::from_secs(10), || async {
            (lock_waiters(&app).await > i as i64).then_some(())
        })
        .await;
    }
    for (i, token) in buyers.iter().enumerate().skip(2) {
        attempts.push(spawn_purchase(target(i), token, &event_id));
    }
    eventually(Duration::from_secs(40), || async {
        let queued = app.state.batcher.pending(&(event, tier_id))
            + sibling.state.batcher.pending(&(event, tier_id));
        (queued == 200).then_some(())
    })
    .await;
    lock.release().await;

    let mut held = 0;
    let mut sold_out = 0;
    for attempt in attempts {
        let res = attempt.await.unwrap();
        match res.status() {
            StatusCode::CREATED => {
                let order: Value = res.json().await.unwrap();
                assert_eq!(order["status"], "pending");
                assert!(order["authorization_url"].is_string());
                held += 1;
            }
            StatusCode::CONFLICT => {
                problem(res, StatusCode::CONFLICT, "sold_out").await;
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!((held, sold_out), (50, 150));
    // The holds shared commits: far fewer transactions than orders. An order's created_at
    // is its inserting transaction's start (`now()`), the same for a whole batch.
    let commits: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT created_at) FROM orders WHERE event_id = $1::uuid",
    )
    .bind(&event_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    // The first batch to get the row gathered everyone its instance queued meanwhile (99
    // buyers), so all 50 seats went in its one commit; without gathering, the two batches of
    // one formed before the row was free would each have committed first.
    assert_eq!(commits, 1, "50 holds in {commits} transactions");
    println!("BATCH 200 buyers, 2 instances: 50 held in {commits} commits, 150 sold out");
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
async fn a_batch_whose_transaction_fails_answers_its_own_buyers_503_and_takes_no_seat() {
    let app = TestApp::spawn().await;
    let (_, event_id, tier) = event_with_tier(&app, PRICE, 10).await;
    let (event, tier_id) = ids(&event_id, &tier);
    let buyers = attendees(&app, 5).await;
    // The last buyer's order cannot be stored (as a full disk or a broken constraint
    // would): any transaction inserting it fails.
    let poison = app.get_json_auth("/users/profile", &buyers[4]).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    refuse_writes(&app, "refuse_order", "INSERT", "orders", "user_id", poison).await;

    let send = |token: &String| spawn_purchase(&app, token, &event_id);
    // A batch of `tokens`: the first buyer's batch waits at the locked tier row, the others
    // queue behind it and are gathered once it has the row.
    let batch = |tokens: &'static [usize]| {
        let (app, buyers) = (&app, &buyers);
        async move {
            let lock = lock_tier(app, tier_id).await;
            let mut sent = vec![send(&buyers[tokens[0]])];
            eventually(Duration::from_secs(10), || async {
                (lock_waiters(app).await == 1).then_some(())
            })
            .await;
            sent.extend(tokens[1..].iter().map(|&i| send(&buyers[i])));
            eventually(Duration::from_secs(10), || async {
                (app.state.batcher.pending(&(event, tier_id)) == tokens.len()).then_some(())
            })
            .await;
            lock.release().await;
            let mut answers = Vec::new();
            for attempt in sent {
                answers.push(attempt.await.unwrap());
            }
            answers
        }
    };
    for res in batch(&[0, 1]).await {
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    // The next batch carries the poisoned order: its three buyers hear 503, nothing taken.
    for res in batch(&[2, 3, 4]).await {
        let retry_after = res.headers().get("retry-after").cloned();
        problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
        assert_eq!(retry_after.unwrap(), "1");
    }
    let (taken, orders): (i32, i64) = sqlx::query_as(
        "SELECT taken, (SELECT count(*) FROM orders WHERE tier_id = $1) FROM ticket_tiers WHERE id = $1",
    )
    .bind(tier_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!((taken, orders), (2, 2), "the failed batch took nothing");

    // Its buyers try again and, the fault gone, get their seats.
    sqlx::raw_sql("DROP TRIGGER refuse_order ON orders")
        .execute(&app.state.db)
        .await
        .unwrap();
    for token in &buyers[2..] {
        let res = purchase(&app, token, &event_id, "Regular", 1).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_buyer_whose_lock_another_batch_holds_is_given_back_and_leads_the_next_batch() {
    let app = TestApp::spawn().await;
    let (_, event_id, tier) = event_with_tier(&app, PRICE, 10).await;
    let (event, tier_id) = ids(&event_id, &tier);
    let buyers = attendees(&app, 2).await;
    let busy = app.get_json_auth("/users/profile", &buyers[1]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Buyer 0's batch waits at the tier row; buyer 1 queues behind it.
    let row = lock_tier(&app, tier_id).await;
    let first = spawn_purchase(&app, &buyers[0], &event_id);
    eventually(Duration::from_secs(10), || async {
        (lock_waiters(&app).await == 1).then_some(())
    })
    .await;
    // Buyer 1's lock (one per buyer and event) is held elsewhere, as by a batch of another
    // tier of this event until it commits.
    let buyer_lock = RowLock::take(
        &app,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &format!("{busy}{event}"),
    )
    .await;
    let second = spawn_purchase(&app, &buyers[1], &event_id);
    eventually(Duration::from_secs(10), || async {
        (app.state.batcher.pending(&(event, tier_id)) == 2).then_some(())
    })
    .await;
    row.release().await;

    // The batch gathers buyer 1 at the row, cannot take their lock at once and gives them
    // back: buyer 0 is answered while that lock is still held (a deadline, not a pause:
    // waiting for the lock under the row would never answer).
    let res = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("buyer 0 answered while buyer 1's lock is held elsewhere")
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(!second.is_finished());
    // Buyer 1 now leads the next batch, which waits for their lock before the row: the row
    // is free meanwhile.
    eventually(Duration::from_secs(10), || async {
        (lock_waiters(&app).await == 1).then_some(())
    })
    .await;
    let row = RowLock::take(
        &app,
        "SELECT 1 FROM ticket_tiers WHERE id = $1::uuid FOR UPDATE NOWAIT",
        &tier_id.to_string(),
    )
    .await;
    row.release().await;
    buyer_lock.release().await;
    assert_eq!(second.await.unwrap().status(), StatusCode::CREATED);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_buyer_at_the_hold_cap_in_another_tier_is_refused_after_that_batch_commits() {
    let app = TestApp::builder()
        .env("MAX_ACTIVE_HOLDS_PER_USER", "1")
        .spawn()
        .await;
    let (owner, event_id, tier) = event_with_tier(&app, PRICE, 10).await;
    let (event, tier_id) = ids(&event_id, &tier);
    let balcony = add_tier(
        &app,
        &owner,
        &event_id,
        &serde_json::json!({ "name": "Balcony", "price": PRICE, "quantity": 10 }),
    )
    .await;
    let buyer = &attendees(&app, 1).await[0];
    let user = app.get_json_auth("/users/profile", buyer).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A batch of the other tier, mid-commit: it holds the buyer's lock (per buyer and event)
    // and has written the buyer's one allowed hold there, not yet committed.
    let mut other = RowLock::take(
        &app,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &format!("{user}{event}"),
    )
    .await;
    other
        .also(
            "WITH p AS (SELECT split_part($1, ' ', 1)::uuid AS u, split_part($1, ' ', 2)::uuid AS e,
                               split_part($1, ' ', 3)::uuid AS t),
                  seat AS (UPDATE ticket_tiers SET taken = taken + 1 FROM p WHERE id = p.t)
             INSERT INTO orders (id, reference, user_id, event_id, tier_id, quantity, unit_price,
                                 total_amount, status, expires_at)
             SELECT gen_random_uuid(), 'ord-other-tier', u, e, t, 1, 500000, 500000, 'pending',
                    now() + interval '15 minutes'
             FROM p",
            &format!("{user} {event} {}", balcony["id"].as_str().unwrap()),
        )
        .await;

    // The buyer asks for a seat of the first tier: its batch finds the lock busy under the
    // row, gives the hold back, and the next batch waits for the lock before the row.
    let res = spawn_purchase(&app, buyer, &event_id);
    eventually(Duration::from_secs(10), || async {
        (lock_waiters(&app).await == 1).then_some(())
    })
    .await;
    assert_eq!(app.state.batcher.pending(&(event, tier_id)), 1);
    other.commit().await;

    // Counted after the lock: the other tier's hold is seen, and the cap refuses this one.
    let res = res.await.unwrap();
    problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_holds").await;
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_retry_the_shedding_cache_does_not_know_still_takes_its_seats_once() {
    // No hold cap, so the retry reaches the batch itself (at the cap it would be answered
    // before): its key, already stored, is skipped and its new order taken back.
    let app = TestApp::builder()
        .env("MAX_ACTIVE_HOLDS_PER_USER", "0")
        .spawn()
        .await;
    let (_, event_id, tier) = event_with_tier(&app, PRICE, 10).await;
    let (_, tier_id) = ids(&event_id, &tier);
    let buyer = &attendees(&app, 1).await[0];
    let user = app.get_json_auth("/users/profile", buyer).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let buy = || {
        app.client
            .post(app.url(&format!("/events/{event_id}/tickets/purchase")))
            .bearer_auth(buyer)
            .header("idempotency-key", "retry-me")
            .json(&serde_json::json!({ "tier": "Regular", "quantity": 2 }))
            .send()
    };
    let first: Value = buy().await.unwrap().json().await.unwrap();
    // Redis forgets the key (a restart): only PostgreSQL knows it now.
    let mut redis = app.state.redis.conn();
    let mirrored: Vec<String> = redis::cmd("KEYS")
        .arg(app.state.redis.key(format!("idem:{user}:*")))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(mirrored.len(), 1);
    let _: () = redis::cmd("DEL")
        .arg(&mirrored)
        .query_async(&mut redis)
        .await
        .unwrap();

    let res = buy().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["reference"], first["reference"]);
    let (taken, orders): (i32, i64) = sqlx::query_as(
        "SELECT taken, (SELECT count(*) FROM orders WHERE tier_id = $1) FROM ticket_tiers WHERE id = $1",
    )
    .bind(tier_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!((taken, orders), (2, 1));
    assert_invariants(&app).await;
}
