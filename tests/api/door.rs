//! The door, online and offline (API.md: validate, the door list, batch uploads).

use std::{collections::HashSet, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use ticketing::service::admission::IN_FLIGHT;

use crate::helpers::{
    RowLock, TestApp, event_with_tier, eventually, hold, lock_waiters, problem, refuse_writes,
    signup,
};

/// A door app: free tickets without the per-account cap, so tests get keys fast; a pool
/// with room beside a lane's batches held at a locked row (the tests stall them on purpose).
async fn door_app() -> TestApp {
    TestApp::builder()
        .env("MAX_FREE_TICKETS_PER_USER", "0")
        .env("MAX_ACTIVE_HOLDS_PER_USER", "0")
        .env("DATABASE_MAX_CONNECTIONS", (IN_FLIGHT + 4).to_string())
        .spawn()
        .await
}

/// (organizer token, event id, access keys of `n` free tickets).
async fn event_with_tickets(app: &TestApp, n: i32) -> (String, String, Vec<String>) {
    let (owner, event_id, _) = event_with_tier(app, 0, 10_000).await;
    let buyer = signup(app, &format!("door-{}@example.com", uuid::Uuid::now_v7())).await;
    let mut keys = Vec::new();
    let mut left = n;
    while left > 0 {
        let q = left.min(10);
        let order = hold(app, &buyer, &event_id, "Regular", q).await;
        for t in order["tickets"].as_array().unwrap() {
            keys.push(t["access_key"].as_str().unwrap().to_owned());
        }
        left -= q;
    }
    (owner, event_id, keys)
}

async fn upload(app: &TestApp, owner: &str, event_id: &str, scans: Value) -> Vec<Value> {
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate/batch"),
            owner,
            &json!({ "scans": scans }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

#[tokio::test]
async fn fifty_concurrent_validations_of_one_ticket_admit_exactly_one() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 1).await;
    let path = format!("/events/{event_id}/tickets/validate");
    let bodies: Vec<Value> = (0..50)
        .map(|i| json!({ "access_key": keys[0], "gate": format!("gate-{}", i % 5) }))
        .collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|b| app.post_json_auth(&path, &owner, b)))
            .await;
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        49
    );
}

#[tokio::test]
async fn offline_gates_upload_in_either_order_and_the_earliest_scan_stands() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 2).await;
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let hour_ago = hour_ago.replace_nanosecond(123_456_000).unwrap();
    let early = fmt(hour_ago);
    let late = fmt(hour_ago + time::Duration::minutes(5));
    let (early, late) = (early.as_str(), late.as_str());
    for (key, first_upload, second_upload) in [
        // The later scan arrives first, then the earlier one takes its place.
        (&keys[0], ("gate-b", late), ("gate-a", early)),
        // The earlier scan arrives first; the later one is a duplicate.
        (&keys[1], ("gate-a", early), ("gate-b", late)),
    ] {
        let first = upload(
            &app,
            &owner,
            &event_id,
            json!([{ "access_key": key, "gate": first_upload.0, "scanned_at": first_upload.1 }]),
        )
        .await;
        assert_eq!(first[0]["result"], "admitted");
        let second = upload(
            &app,
            &owner,
            &event_id,
            json!([{ "access_key": key, "gate": second_upload.0, "scanned_at": second_upload.1 }]),
        )
        .await;
        // Whichever came second: the earliest scan is the admission.
        let (b_scan, a_scan) = if first_upload.0 == "gate-b" {
            (&first, &second)
        } else {
            (&second, &first)
        };
        assert_eq!(a_scan[0]["result"], "admitted");
        if first_upload.0 == "gate-a" {
            assert_eq!(b_scan[0]["result"], "duplicate");
        }
        // Uploading gate B's scan again reports it as a duplicate of gate A's.
        let again = upload(
            &app,
            &owner,
            &event_id,
            json!([{ "access_key": key, "gate": "gate-b", "scanned_at": late }]),
        )
        .await;
        assert_eq!(again[0]["result"], "duplicate", "{again:?}");
        assert_eq!(again[0]["first_gate"], "gate-a");
        assert_eq!(again[0]["first_checked_in_at"], early);
        // And gate A's, again, is still the admission.
        let again = upload(
            &app,
            &owner,
            &event_id,
            json!([{ "access_key": key, "gate": "gate-a", "scanned_at": early }]),
        )
        .await;
        assert_eq!(again[0]["result"], "admitted");
    }
    // Online, the ticket is used, with the earliest time.
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate"),
            &owner,
            &json!({ "access_key": keys[0] }),
        )
        .await;
    let body = problem(res, StatusCode::CONFLICT, "ticket_already_used").await;
    assert_eq!(body["checked_in_at"], early);
}

#[tokio::test]
async fn a_batch_reports_every_kind_of_scan_and_refuses_bad_ones() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 2).await;
    let (_, other_event, other_keys) = event_with_tickets(&app, 1).await;
    let _ = other_event;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let results = upload(
        &app,
        &owner,
        &event_id,
        json!([
            { "access_key": keys[0], "gate": "g1", "scanned_at": now },
            { "access_key": "no-such-key", "gate": "g1", "scanned_at": now },
            { "access_key": other_keys[0], "gate": "g1", "scanned_at": now },
        ]),
    )
    .await;
    let got: Vec<&str> = results
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["admitted", "unknown", "not_for_event"]);

    let future = (time::OffsetDateTime::now_utc() + time::Duration::minutes(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate/batch"),
            &owner,
            &json!({ "scans": [{ "access_key": keys[1], "gate": "g1", "scanned_at": future }] }),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "scans[0].scanned_at");
    let too_many: Vec<Value> = (0..501)
        .map(|_| json!({ "access_key": "k", "gate": "g", "scanned_at": now }))
        .collect();
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate/batch"),
            &owner,
            &json!({ "scans": too_many }),
        )
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let stranger = signup(&app, "not-org@example.com").await;
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate/batch"),
            &stranger,
            &json!({ "scans": [{ "access_key": "k", "gate": "g", "scanned_at": now }] }),
        )
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_organizer").await;
}

#[tokio::test]
async fn the_door_list_pages_hashes_keys_and_syncs_only_changes() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 5).await;
    // Fifteen hundred more tickets, issued the quick way.
    sqlx::query(
        "INSERT INTO tickets (id, order_id, event_id, tier_id, user_id, seat, access_key)
         SELECT gen_random_uuid(), t.order_id, t.event_id, t.tier_id, t.user_id, 100 + n,
                'bulk-' || n
         FROM generate_series(1, 1500) n, (SELECT * FROM tickets LIMIT 1) t",
    )
    .execute(&app.state.db)
    .await
    .unwrap();
    let path = format!("/events/{event_id}/door");
    let first = app.get_json_auth(&path, &owner).await;
    assert_eq!(first["key_hash_alg"], "sha256");
    assert_eq!(first["items"].as_array().unwrap().len(), 1000);
    assert!(first["sync_token"].is_null());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json_auth(&format!("{path}?cursor={cursor}"), &owner)
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 505);
    assert!(second["next_cursor"].is_null());
    let token = second["sync_token"].as_str().unwrap().to_owned();
    let all: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .collect();
    let ids: HashSet<&str> = all
        .iter()
        .map(|e| e["ticket_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1505, "every ticket once");
    let hash = hex::encode(Sha256::digest(keys[0].as_bytes()));
    let entry = all.iter().find(|e| e["key_hash"] == hash.as_str()).unwrap();
    assert_eq!(entry["status"], "valid");
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&keys[0]), "never the key itself");

    // Everything so far changed "an hour ago"; a token taken now reaches back only a few
    // seconds, so what comes after it is exactly what changes next.
    sqlx::query("UPDATE tickets SET changed_at = now() - interval '1 hour'")
        .execute(&app.state.db)
        .await
        .unwrap();
    let walk = app
        .get_json_auth(&format!("{path}?since={token}"), &owner)
        .await;
    assert_eq!(walk["items"].as_array().unwrap().len(), 0, "{walk}");
    let token = walk["sync_token"].as_str().unwrap().to_owned();
    let res = app
        .post_json_auth(
            &format!("/events/{event_id}/tickets/validate"),
            &owner,
            &json!({ "access_key": keys[1], "gate": "main" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let changes = app
        .get_json_auth(&format!("{path}?since={token}"), &owner)
        .await;
    let changed = changes["items"].as_array().unwrap();
    let hash1 = hex::encode(Sha256::digest(keys[1].as_bytes()));
    assert_eq!(changed.len(), 1, "only the change: {changes}");
    assert_eq!(changed[0]["key_hash"], hash1.as_str());
    assert_eq!(changed[0]["status"], "used");
    // A token this server did not issue (or one far out of range) is a client error.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        "-240000000000000000000",
    );
    let bad = app
        .get_auth(&format!("{path}?since={forged}"), &owner)
        .await;
    problem(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
    let bad = app.get_auth(&format!("{path}?since=garbage"), &owner).await;
    problem(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
}

/// The lock of the ticket behind `key`, held by the test as a slow scan elsewhere would.
async fn lock_ticket(app: &TestApp, key: &str) -> RowLock {
    RowLock::take(
        app,
        "SELECT 1 FROM tickets WHERE access_key = $1 FOR UPDATE",
        key,
    )
    .await
}

/// An online scan on a task of its own, so the test can go on while it waits in its lane.
fn spawn_scan(
    app: &TestApp,
    token: &str,
    event_id: &str,
    key: &str,
    gate: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let (address, client) = (app.address.clone(), app.client.clone());
    let (token, path) = (
        token.to_owned(),
        format!("/events/{event_id}/tickets/validate"),
    );
    let body = json!({ "access_key": key, "gate": gate });
    tokio::spawn(async move {
        client
            .post(format!("{address}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap()
    })
}

/// Scans of `key` on `app`, one per batch its lane runs at once (`IN_FLIGHT`), each seen
/// waiting at the ticket's locked row before the next is sent: the lane is then full, and
/// what is scanned next queues behind them.
async fn stall_lane(
    app: &TestApp,
    owner: &str,
    event_id: &str,
    key: &str,
) -> Vec<tokio::task::JoinHandle<reqwest::Response>> {
    let mut stalled = Vec::new();
    for i in 0..IN_FLIGHT {
        stalled.push(spawn_scan(app, owner, event_id, key, &format!("stall-{i}")));
        eventually(Duration::from_secs(10), || async {
            (lock_waiters(app).await > i as i64).then_some(())
        })
        .await;
    }
    stalled
}

/// Answers of the scans of the ticket behind `key`: one admission, of that very ticket, and
/// refusals, each checked to name the admission's time.
async fn one_admission(key: &str, scans: Vec<tokio::task::JoinHandle<reqwest::Response>>) -> Value {
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for scan in scans {
        let res = scan.await.unwrap();
        match res.status() {
            StatusCode::OK => admitted.push(res.json::<Value>().await.unwrap()),
            _ => refused.push(problem(res, StatusCode::CONFLICT, "ticket_already_used").await),
        }
    }
    assert_eq!(
        admitted.len(),
        1,
        "admitted {admitted:?}, refused {refused:?}"
    );
    assert_eq!(admitted[0]["ticket"]["access_key"], key);
    for r in &refused {
        assert_eq!(r["checked_in_at"], admitted[0]["checked_in_at"]);
    }
    admitted.remove(0)
}

#[tokio::test]
async fn scans_arriving_together_share_one_commit_and_two_instances_admit_a_ticket_once() {
    let app = door_app().await;
    let sibling = app.spawn_sibling().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 5).await;
    let (other_owner, other_event, other_keys) = event_with_tickets(&app, 1).await;
    let stranger = signup(&app, "not-the-owner@example.com").await;
    let event: uuid::Uuid = event_id.parse().unwrap();

    // Ticket 0 is held by a slow transaction elsewhere: the first scans of it on both
    // instances wait at its row, as many batches as this instance's lane runs at once and
    // one on the other, so everything scanned here next queues behind them.
    let lock = lock_ticket(&app, &keys[0]).await;
    let mut first = stall_lane(&app, &owner, &event_id, &keys[0]).await;
    first.push(spawn_scan(&sibling, &owner, &event_id, &keys[0], "b-1"));
    eventually(Duration::from_secs(10), || async {
        (lock_waiters(&app).await > IN_FLIGHT as i64).then_some(())
    })
    .await;
    let scan = |token: &str, key: &str, gate: &str| spawn_scan(&app, token, &event_id, key, gate);
    let repeated = vec![scan(&owner, &keys[1], "a-3"), scan(&owner, &keys[1], "a-4")];
    let others = [
        scan(&owner, &keys[2], "a-5"),
        scan(&owner, &keys[3], "a-6"),
        scan(&stranger, &keys[4], "a-7"),
        scan(&owner, "no-such-key", "a-8"),
        scan(&owner, &other_keys[0], "a-9"),
    ];
    eventually(Duration::from_secs(10), || async {
        (app.state.admissions.pending(&event) == IN_FLIGHT + 7).then_some(())
    })
    .await;
    lock.release().await;

    // Three gates, two instances, one admission.
    one_admission(&keys[0], first).await;
    // The same ticket twice in one batch: applied once, the second told when.
    let batch = one_admission(&keys[1], repeated).await;
    let [two, three, stranger_scan, unknown, elsewhere] = others;
    for (scan, key) in [(two, &keys[2]), (three, &keys[3])] {
        let res = scan.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let admitted: Value = res.json().await.unwrap();
        assert_eq!(admitted["ticket"]["status"], "used");
        assert_eq!(admitted["ticket"]["access_key"], key.as_str());
        // One transaction: its `now()` is every admission's time.
        assert_eq!(admitted["checked_in_at"], batch["checked_in_at"]);
    }
    problem(
        stranger_scan.await.unwrap(),
        StatusCode::FORBIDDEN,
        "not_organizer",
    )
    .await;
    problem(unknown.await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    problem(
        elsewhere.await.unwrap(),
        StatusCode::CONFLICT,
        "ticket_not_for_event",
    )
    .await;

    // The stranger's scan rode in the batch and admitted nothing; the other event's ticket
    // is still valid at its own door.
    for (token, event, key) in [
        (&owner, &event_id, &keys[4]),
        (&other_owner, &other_event, &other_keys[0]),
    ] {
        let res = app
            .post_json_auth(
                &format!("/events/{event}/tickets/validate"),
                token,
                &json!({ "access_key": key }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_batch_whose_statement_fails_admits_nothing_and_answers_its_own_gates_503() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 4).await;
    let event: uuid::Uuid = event_id.parse().unwrap();
    // Ticket 3 cannot be written (as a full disk or a broken constraint would): any
    // statement updating it fails.
    let poison: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tickets WHERE access_key = $1")
        .bind(&keys[3])
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    refuse_writes(&app, "refuse_scan", "UPDATE", "tickets", "id", poison).await;

    // The lane's batches wait at ticket 0's row; the next three scans queue and leave
    // together.
    let lock = lock_ticket(&app, &keys[0]).await;
    let first = stall_lane(&app, &owner, &event_id, &keys[0]).await;
    let rest: Vec<_> = keys[1..]
        .iter()
        .map(|key| spawn_scan(&app, &owner, &event_id, key, "g-3"))
        .collect();
    eventually(Duration::from_secs(10), || async {
        (app.state.admissions.pending(&event) == IN_FLIGHT + 3).then_some(())
    })
    .await;
    lock.release().await;

    one_admission(&keys[0], first).await;
    for scan in rest {
        let res = scan.await.unwrap();
        let retry_after = res.headers().get("retry-after").cloned();
        problem(res, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
        assert_eq!(retry_after.unwrap(), "1");
    }
    // Nothing of the failed batch was admitted: with the fault gone, its tickets are
    // admitted now, once.
    sqlx::raw_sql("DROP TRIGGER refuse_scan ON tickets")
        .execute(&app.state.db)
        .await
        .unwrap();
    let path = format!("/events/{event_id}/tickets/validate");
    for key in &keys[1..] {
        let res = app
            .post_json_auth(&path, &owner, &json!({ "access_key": key }))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_batch_caught_in_a_deadlock_is_tried_again_and_admits_its_scans() {
    let app = door_app().await;
    let (owner, event_id, keys) = event_with_tickets(&app, 3).await;
    let event: uuid::Uuid = event_id.parse().unwrap();
    let stall = &keys[0];
    // A batch locks its tickets in key order: it takes `low`, then waits for `high`.
    let (low, high) = if keys[1] < keys[2] {
        (&keys[1], &keys[2])
    } else {
        (&keys[2], &keys[1])
    };
    // Another writer of many tickets (as a refund voiding an order's tickets) holds `high`
    // and will reach for `low`. It waits long before looking for a deadlock, so PostgreSQL
    // breaks the cycle by cancelling the batch's statement.
    let mut writer = lock_ticket(&app, high).await;
    writer.execute("SET LOCAL deadlock_timeout = '30s'").await;

    // The lane's batches wait at `stall`, so `low` and `high` queue and leave together.
    let stalled = lock_ticket(&app, stall).await;
    let first = stall_lane(&app, &owner, &event_id, stall).await;
    let both = [
        spawn_scan(&app, &owner, &event_id, low, "g-3"),
        spawn_scan(&app, &owner, &event_id, high, "g-4"),
    ];
    eventually(Duration::from_secs(10), || async {
        (app.state.admissions.pending(&event) == IN_FLIGHT + 2).then_some(())
    })
    .await;
    stalled.release().await;
    one_admission(stall, first).await;
    // The batch of the two holds `low` and waits for `high`.
    eventually(Duration::from_secs(10), || async {
        (lock_waiters(&app).await == 1).then_some(())
    })
    .await;
    // The writer reaches for `low`: a cycle. PostgreSQL cancels the batch (after its own
    // deadlock_timeout, a second), the writer gets `low`, and the batch, tried again, waits
    // for the writer to finish.
    writer
        .also(
            "SELECT 1 FROM tickets WHERE access_key = $1 FOR UPDATE",
            low,
        )
        .await;
    writer.release().await;
    for (scan, key) in both.into_iter().zip([low, high]) {
        let res = scan.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{key}");
        let admitted: Value = res.json().await.unwrap();
        assert_eq!(admitted["ticket"]["access_key"], key.as_str());
    }
}
