//! The instance's memo (`ticketing::memo`): event documents, sold-out flags and tokens kept in
//! process for at most a second, dropped on every instance when they change. What clients
//! must see: a change shows on every instance at once when its announcement arrives, and
//! within a second even when the announcement is lost; a released seat is never refused; a
//! revoked token stops passing on every instance.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// How stale the memo may be (API.md: availability may lag by up to a second).
const MAX_AGE: Duration = Duration::from_secs(1);

/// Two instances whose subscriptions are live (before that the memo keeps nothing).
async fn two_instances() -> (TestApp, TestApp) {
    let app = TestApp::spawn().await;
    let sibling = app.spawn_sibling().await;
    for instance in [&app, &sibling] {
        eventually(Duration::from_secs(10), || async {
            instance.state.hub.memo.events.is_live().then_some(())
        })
        .await;
    }
    (app, sibling)
}

/// Polls `read` on the instance until `shows` holds, and fails if any answer that did not
/// show the change was asked for more than `MAX_AGE` after `changed_at`: the staleness bound,
/// checked on every read rather than after a sleep.
async fn shows_within_max_age(
    changed_at: Instant,
    what: &str,
    mut read: impl AsyncFnMut() -> Value,
    shows: impl Fn(&Value) -> bool,
) {
    loop {
        let asked = Instant::now();
        let answer = read().await;
        if shows(&answer) {
            return;
        }
        assert!(
            asked.duration_since(changed_at) <= MAX_AGE,
            "{what}: still not shown {:?} after the change: {answer}",
            asked.duration_since(changed_at)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_doc(app: &TestApp, event_id: &str) -> Value {
    let res = app.get(&format!("/events/{event_id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn tier_names(event: &Value) -> Vec<String> {
    event["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_cached_event_read_shows_a_new_tier_a_sale_and_a_cancellation_within_a_second() {
    let (app, sibling) = two_instances().await;
    let (owner, event_id, _) = event_with_tier(&app, 250_000, 10).await;
    // The sibling serves the document from its memo from here on.
    assert_eq!(
        tier_names(&event_doc(&sibling, &event_id).await),
        ["Regular"]
    );

    // A tier added on one instance: announced, so the other shows it at once.
    add_tier(
        &app,
        &owner,
        &event_id,
        &json!({ "name": "VIP", "price": 900_000, "quantity": 5 }),
    )
    .await;
    let added = Instant::now();
    assert_eq!(
        tier_names(&event_doc(&sibling, &event_id).await),
        ["Regular", "VIP"],
        "a change announced is shown at once"
    );
    shows_within_max_age(
        added,
        "tier added",
        async || event_doc(&sibling, &event_id).await,
        |e| tier_names(e).len() == 2,
    )
    .await;

    // A sale is not announced: availability lags by at most a second.
    let buyer = attendees(&app, 1).await.remove(0);
    event_doc(&sibling, &event_id).await;
    hold(&app, &buyer, &event_id, "VIP", 2).await;
    let sold = Instant::now();
    shows_within_max_age(
        sold,
        "availability after a sale",
        async || event_doc(&sibling, &event_id).await,
        |e| e["tiers"][1]["available"] == 3,
    )
    .await;

    // A change whose announcement is lost (made behind the API's back, so nothing is
    // published) still shows within a second.
    event_doc(&sibling, &event_id).await;
    sqlx::query("UPDATE events SET title = 'Renamed quietly' WHERE id = $1::uuid")
        .bind(&event_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let renamed = Instant::now();
    shows_within_max_age(
        renamed,
        "a change never announced",
        async || event_doc(&sibling, &event_id).await,
        |e| e["title"] == "Renamed quietly",
    )
    .await;

    // Cancelled on one instance: the other shows it at once.
    event_doc(&sibling, &event_id).await;
    let res = app
        .post_json_auth(&format!("/events/{event_id}/cancel"), &owner, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(event_doc(&sibling, &event_id).await["status"], "cancelled");
}

#[tokio::test]
async fn an_unchanged_cached_event_still_answers_304_with_its_etag() {
    let (app, sibling) = two_instances().await;
    let (_, event_id, _) = event_with_tier(&app, 250_000, 10).await;
    let first = sibling.get(&format!("/events/{event_id}")).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    for instance in [&sibling, &app] {
        let res = instance
            .get_if_none_match(&format!("/events/{event_id}"), &etag)
            .await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()["etag"], etag.as_str());
    }
}

/// The memo's sold-out flag must never refuse a seat that was given back: a release
/// announces itself, and every instance forgets the flag before the seat is free.
#[tokio::test]
async fn a_seat_given_back_is_sold_at_once_on_an_instance_that_remembered_the_tier_sold_out() {
    let (app, sibling) = two_instances().await;
    let (owner, event_id, _) = event_with_tier(&app, 250_000, 1).await;
    let buyers = attendees(&app, 3).await;
    let order = hold(&app, &buyers[0], &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.pay(reference).await;
    wait_for_status(&app, &buyers[0], reference, "paid").await;

    // The first refusal raises the shared flag; the second finds it and remembers it.
    for _ in 0..2 {
        let res = purchase(&sibling, &buyers[1], &event_id, "Regular", 1).await;
        problem(res, StatusCode::CONFLICT, "sold_out").await;
    }
    let remembered = sibling
        .state
        .hub
        .memo
        .sold_out
        .get(&uuid(&order["tier_id"]));
    assert!(
        remembered.is_some(),
        "the sibling remembers the tier sold out"
    );

    // The organizer refunds the only sale: the seat is free, and the sibling sells it.
    let res = app
        .post_json_auth(
            &format!(
                "/events/{event_id}/orders/{}/refund",
                order["id"].as_str().unwrap()
            ),
            &owner,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = purchase(&sibling, &buyers[2], &event_id, "Regular", 1).await;
    assert_eq!(res.status(), StatusCode::CREATED, "the seat given back");
    assert_invariants(&app).await;
}

fn uuid(v: &Value) -> uuid::Uuid {
    v.as_str().unwrap().parse().unwrap()
}

/// The jti of an access token, the way a logout names it.
fn token_id(app: &TestApp, token: &str) -> (uuid::Uuid, uuid::Uuid) {
    let claims = app.state.jwt.verify(token).unwrap();
    (claims.jti, claims.sub)
}

#[tokio::test]
async fn a_revoked_token_stops_passing_on_another_instance_within_a_second() {
    let (app, sibling) = two_instances().await;
    let tokens = attendees(&app, 1).await;
    let token = &tokens[0];
    let profile = async |instance: &TestApp, token: &str| {
        instance.get_auth("/users/profile", token).await.status()
    };
    assert_eq!(profile(&sibling, token).await, StatusCode::OK);

    // Revoked the way a logout does, but its announcement lost: the row and the Redis key,
    // nothing published. The sibling remembered the token; it may pass for a second, no more.
    let (jti, user_id) = token_id(&app, token);
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at, in_redis)
         VALUES ($1, $2, now() + interval '1 hour', true)",
    )
    .bind(jti)
    .bind(user_id)
    .execute(&app.state.db)
    .await
    .unwrap();
    let mut conn = app.state.redis.conn();
    let _: () = redis::cmd("SET")
        .arg(app.state.redis.key(format!("revoked:{jti}")))
        .arg(1)
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();
    let revoked = Instant::now();
    loop {
        let asked = Instant::now();
        let status = profile(&sibling, token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            asked.duration_since(revoked) <= MAX_AGE,
            "a revoked token still passed {:?} after its revocation",
            asked.duration_since(revoked)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A logout: refused on the other instance by the time it is answered, though that
    // instance remembered the token a moment before (the logout waits out the memo's age).
    let second = attendees(&app, 1).await.remove(0);
    assert_eq!(profile(&sibling, &second).await, StatusCode::OK);
    assert!(
        sibling
            .state
            .hub
            .memo
            .tokens
            .get(&token_id(&app, &second).0)
            .is_some()
    );
    let res = app
        .post_json_auth("/auth/logout", &second, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(profile(&sibling, &second).await, StatusCode::UNAUTHORIZED);
}
