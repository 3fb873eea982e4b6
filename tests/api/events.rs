//! Events: lifecycle and ownership, posters, browsing and nearby search.

use std::{collections::HashSet, time::Duration};

use reqwest::{StatusCode, multipart};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::{
    fakes::{
        Fault,
        cloudinary::{API_SECRET, string_to_sign},
    },
    helpers::{
        TestApp, create_event, end_event, event_body, event_with_tier, hold, organizer, problem,
        signup,
    },
};

const LAGOS: (f64, f64) = (6.5244, 3.3792);

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&[0u8; 64]);
    v
}

#[tokio::test]
async fn an_organizer_creates_an_event_that_anyone_can_read() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "ada@example.com").await;
    let event = create_event(
        &app,
        &token,
        &event_body("Afrobeats Night", 6.4267, 3.4281, 5),
    )
    .await;
    assert_eq!(event["status"], "scheduled");
    assert_eq!(event["organizer"]["name"], "Org ada@example.com");
    assert_eq!(event["timezone"], "Africa/Lagos");
    assert_eq!(event["max_per_order"], 10);
    assert!(event["poster_url"].is_null());

    let res = app
        .get(&format!("/events/{}", event["id"].as_str().unwrap()))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let read: Value = res.json().await.unwrap();
    assert_eq!(read["title"], "Afrobeats Night");
    assert_eq!(read["tiers"], json!([]));
    assert_eq!(read["starts_at"], event["starts_at"]);

    problem(
        app.get("/events/not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        app.get(&format!("/events/{}", uuid::Uuid::now_v7())).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_non_organizer_cannot_create_events() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "bola@example.com").await;
    let res = app
        .post_json_auth("/events/create", &token, &event_body("X", 6.4, 3.4, 2))
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_organizer").await;
    let res = app
        .post_json("/events/create", &event_body("X", 6.4, 3.4, 2))
        .await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn event_input_is_validated() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "chi@example.com").await;
    let mut body = event_body("X", 95.0, 3.4, -1);
    body["category"] = json!("karaoke");
    body["ends_at"] = body["starts_at"].clone();
    let res = app.post_json_auth("/events/create", &token, &body).await;
    let problem_body = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: HashSet<&str> = problem_body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        HashSet::from(["category", "latitude", "starts_at", "ends_at"])
    );
}

#[tokio::test]
async fn only_the_owner_changes_or_cancels_an_event() {
    let app = TestApp::spawn().await;
    let owner = organizer(&app, "dele@example.com").await;
    let other = organizer(&app, "efe@example.com").await;
    let attendee = signup(&app, "funke@example.com").await;
    let event = create_event(&app, &owner, &event_body("Mine", 6.4, 3.4, 4)).await;
    let path = format!("/events/{}", event["id"].as_str().unwrap());
    let patch = |token: &str| {
        app.client
            .patch(app.url(&path))
            .bearer_auth(token.to_owned())
            .json(&json!({ "title": "Hijacked" }))
            .send()
    };
    problem(
        patch(&other).await.unwrap(),
        StatusCode::FORBIDDEN,
        "not_event_owner",
    )
    .await;
    problem(
        patch(&attendee).await.unwrap(),
        StatusCode::FORBIDDEN,
        "not_organizer",
    )
    .await;
    let res = app
        .post_json_auth(&format!("{path}/cancel"), &other, &json!({}))
        .await;
    problem(res, StatusCode::FORBIDDEN, "not_event_owner").await;

    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&owner)
        .json(&json!({ "title": "Mine, renamed", "max_per_order": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["title"], "Mine, renamed");
    assert_eq!(body["max_per_order"], 4);

    // ends_at before the (unchanged) starts_at is refused.
    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&owner)
        .json(&json!({ "ends_at": "2020-01-01T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn cancelled_and_ended_events_are_read_only() {
    let app = TestApp::spawn().await;
    let owner = organizer(&app, "gozie@example.com").await;
    let a = create_event(&app, &owner, &event_body("A", 6.4, 3.4, 4)).await;
    let b = create_event(&app, &owner, &event_body("B", 6.4, 3.4, 4)).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let res = app
        .post_json_auth(
            &format!("/events/{a}/cancel"),
            &owner,
            &json!({ "reason": "rain" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "cancelled");
    let res = app
        .post_json_auth(&format!("/events/{a}/cancel"), &owner, &json!({}))
        .await;
    problem(res, StatusCode::CONFLICT, "event_cancelled").await;
    let res = app
        .client
        .patch(app.url(&format!("/events/{a}")))
        .bearer_auth(&owner)
        .json(&json!({ "title": "Back on" }))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT, "event_cancelled").await;

    end_event(&app, b).await;
    let read: Value = app.get(&format!("/events/{b}")).await.json().await.unwrap();
    assert_eq!(read["status"], "ended");
    let res = app
        .client
        .patch(app.url(&format!("/events/{b}")))
        .bearer_auth(&owner)
        .json(&json!({ "title": "Again" }))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::CONFLICT, "event_ended").await;
}

// ---- posters ----

fn multipart_event(body: &Value, poster: Option<Vec<u8>>) -> multipart::Form {
    let form = multipart::Form::new().part(
        "data",
        multipart::Part::text(body.to_string())
            .mime_str("application/json")
            .unwrap(),
    );
    match poster {
        Some(bytes) => form.part(
            "poster",
            multipart::Part::bytes(bytes)
                .file_name("poster.png")
                .mime_str("image/png")
                .unwrap(),
        ),
        None => form,
    }
}

#[tokio::test]
async fn a_poster_goes_to_cloudinary_with_a_valid_signature() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "halima@example.com").await;
    let res = app
        .client
        .post(app.url("/events/create"))
        .bearer_auth(&token)
        .multipart(multipart_event(
            &event_body("With poster", 6.4, 3.4, 3),
            Some(png()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let event: Value = res.json().await.unwrap();
    let id = event["id"].as_str().unwrap();

    let assets = app.cloudinary.assets();
    assert_eq!(assets.len(), 1);
    let asset = &assets[0];
    assert_eq!(asset.public_id, format!("events/{id}/poster"));
    // The fake accepted it only with a correct signature; check it independently too.
    let mut params = std::collections::HashMap::new();
    params.insert("public_id".to_owned(), asset.public_id.clone());
    params.insert("overwrite".to_owned(), "true".to_owned());
    params.insert("invalidate".to_owned(), "true".to_owned());
    let signed_ts = (time::OffsetDateTime::now_utc().unix_timestamp() - 120
        ..=time::OffsetDateTime::now_utc().unix_timestamp())
        .find(|ts| {
            params.insert("timestamp".to_owned(), ts.to_string());
            hex::encode(Sha1::digest(
                format!("{}{API_SECRET}", string_to_sign(&params)).as_bytes(),
            )) == asset.signature
        });
    assert!(
        signed_ts.is_some(),
        "signature matches §3.2 with a seconds timestamp"
    );

    assert_eq!(event["poster_url"].as_str().unwrap(), asset.secure_url);
    let image = app.client.get(&asset.secure_url).send().await.unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.bytes().await.unwrap().to_vec(), png());

    // A replacement overwrites this event's poster only, with a new version in the URL.
    let other = create_event(&app, &token, &event_body("Other", 6.4, 3.4, 3)).await;
    let res = app
        .client
        .patch(app.url(&format!("/events/{id}")))
        .bearer_auth(&token)
        .multipart(multipart_event(
            &json!({ "title": "New look" }),
            Some(png()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_ne!(updated["poster_url"], event["poster_url"]);
    assert_eq!(app.cloudinary.assets().len(), 1);
    assert!(other["poster_url"].is_null());
}

#[tokio::test]
async fn a_poster_must_be_an_image_and_unknown_parts_are_refused() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "ike@example.com").await;
    let send = |form: multipart::Form| {
        app.client
            .post(app.url("/events/create"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
    };
    let body = event_body("X", 6.4, 3.4, 3);
    let res = send(multipart_event(&body, Some(b"GIF89a not allowed".to_vec())))
        .await
        .unwrap();
    let p = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "poster");
    let res = send(multipart_event(&body, None).text("extra", "x"))
        .await
        .unwrap();
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let mut big = png();
    big.resize(5 * 1024 * 1024 + 1, 0);
    let res = send(multipart_event(&body, Some(big))).await.unwrap();
    let p = problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "poster");
    assert_eq!(app.cloudinary.uploads(), 0);
}

#[tokio::test]
async fn a_failed_upload_leaves_no_event_behind() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "jumoke@example.com").await;
    app.cloudinary.fail_next(&[Fault::ServerError]);
    let res = app
        .client
        .post(app.url("/events/create"))
        .bearer_auth(&token)
        .multipart(multipart_event(
            &event_body("Doomed", 6.4, 3.4, 3),
            Some(png()),
        ))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::BAD_GATEWAY, "upstream_unavailable").await;
    let mine: Value = app
        .get_auth("/users/events?role=organizer", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"], json!([]));
}

#[tokio::test]
async fn without_cloudinary_posters_are_stored_and_served_locally() {
    let dir = std::env::temp_dir().join(format!("ticketing-uploads-{}", uuid::Uuid::now_v7()));
    let app = TestApp::builder()
        .without("CLOUDINARY_CLOUD_NAME")
        .env("UPLOAD_DIR", dir.to_string_lossy())
        .spawn()
        .await;
    let token = organizer(&app, "kunle@example.com").await;
    let res = app
        .client
        .post(app.url("/events/create"))
        .bearer_auth(&token)
        .multipart(multipart_event(
            &event_body("Local", 6.4, 3.4, 3),
            Some(png()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let event: Value = res.json().await.unwrap();
    let url = event["poster_url"].as_str().unwrap();
    let path = url.split_once("/uploads/").unwrap().1;
    let res = app.get(&format!("/uploads/{path}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), png());
    let _ = std::fs::remove_dir_all(dir);
}

// ---- nearby ----

fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

#[tokio::test]
async fn nearby_search_orders_by_distance_and_respects_radius_and_status() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "lola@example.com").await;
    let places = [
        ("Ibadan", (7.3775, 3.9470)),
        ("Eko Hotel", (6.4267, 3.4281)),
        ("Ikeja", (6.6018, 3.3515)),
        ("Cancelled Lekki", (6.4698, 3.5852)),
        ("Past Yaba", (6.5095, 3.3711)),
        ("Abuja", (9.0765, 7.3986)),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, (lat, lon)) in places {
        let e = create_event(&app, &token, &event_body(name, lat, lon, 2)).await;
        ids.insert(name, e["id"].as_str().unwrap().to_owned());
    }
    app.post_json_auth(
        &format!("/events/{}/cancel", ids["Cancelled Lekki"]),
        &token,
        &json!({}),
    )
    .await;
    end_event(&app, &ids["Past Yaba"]).await;

    let res = app
        .post_json(
            "/events/nearby",
            &json!({ "latitude": LAGOS.0, "longitude": LAGOS.1, "radius_km": 200 }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let titles: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Ikeja", "Eko Hotel", "Ibadan"]);
    for item in body["items"].as_array().unwrap() {
        let (_, point) = places.iter().find(|(n, _)| *n == item["title"]).unwrap();
        let truth = great_circle_km(LAGOS, *point);
        let got = item["distance_km"].as_f64().unwrap();
        assert!(
            (got - truth).abs() < 1.0,
            "{}: {got} vs {truth}",
            item["title"]
        );
    }

    let body: Value = app
        .post_json(
            "/events/nearby",
            &json!({ "latitude": LAGOS.0, "longitude": LAGOS.1, "radius_km": 50 }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        2,
        "Ibadan is ~113 km away"
    );

    let res = app
        .post_json(
            "/events/nearby",
            &json!({ "latitude": LAGOS.0, "longitude": LAGOS.1, "radius_km": 501 }),
        )
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

// ---- browsing ----

#[tokio::test]
async fn browsing_filters_and_paginates_without_duplicates_or_gaps() {
    let app = TestApp::spawn().await;
    let token = organizer(&app, "musa@example.com").await;
    let categories = ["music", "tech", "comedy"];
    let mut all = Vec::new();
    for i in 0..11 {
        let mut body = event_body(&format!("Event {i:02}"), 6.4, 3.4, 1 + (i % 5));
        body["category"] = json!(categories[i as usize % 3]);
        if i == 4 {
            body["venue"] = json!("Terra Kulture");
        }
        all.push(create_event(&app, &token, &body).await);
    }
    let cancelled = all[10]["id"].as_str().unwrap().to_owned();
    app.post_json_auth(&format!("/events/{cancelled}/cancel"), &token, &json!({}))
        .await;

    // Walk every page of 3.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/events?limit=3&cursor={c}"),
            None => "/events?limit=3".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        for e in page["items"].as_array().unwrap() {
            seen.push((
                e["starts_at"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let ids: HashSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(seen.len(), 10, "every scheduled event once");
    assert_eq!(ids.len(), 10);
    assert!(!ids.contains(cancelled.as_str()));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "soonest first");

    let page: Value = app
        .get("/events?category=tech&category=comedy&limit=100")
        .await
        .json()
        .await
        .unwrap();
    let cats: HashSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["category"].as_str().unwrap())
        .collect();
    assert_eq!(cats, HashSet::from(["tech", "comedy"]));
    assert_eq!(page["items"].as_array().unwrap().len(), 6);

    let page: Value = app.get("/events?q=KULTURE").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["title"], "Event 04");
    let page: Value = app.get("/events?q=event%2003").await.json().await.unwrap();
    assert_eq!(page["items"][0]["title"], "Event 03");
    let page: Value = app.get("/events?q=100%25").await.json().await.unwrap();
    assert_eq!(page["items"], json!([]), "% is literal");

    // [from, to): only events starting on day 2.
    let day2 = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let fmt = &time::format_description::well_known::Rfc3339;
    let from = (day2 - time::Duration::hours(1)).format(fmt).unwrap();
    let to = (day2 + time::Duration::hours(1)).format(fmt).unwrap();
    let page: Value = app
        .client
        .get(app.url("/events"))
        .query(&[("from", from.as_str()), ("to", to.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let titles: HashSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, HashSet::from(["Event 01", "Event 06"]));

    problem(
        app.get("/events?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    problem(
        app.get("/events?cursor=zzz").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    problem(
        app.get("/events?category=karaoke").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn an_event_read_carries_an_etag_that_answers_304_until_availability_changes() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, 5_000, 10).await;
    let path = format!("/events/{event_id}");
    let first = app.get(&path).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["tiers"][0]["available"], 10);

    // The same representation: 304, no body, the same tag.
    let again = app.get_if_none_match(&path, &etag).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    // A list of tags, weak or strong, matches too.
    let listed = app
        .get_if_none_match(&path, &format!("\"nope\", W/{etag}"))
        .await;
    assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);

    // A sale changes availability: within the second API.md lets it lag (the instance's
    // memo), a new tag and the full answer.
    let buyer = signup(&app, "etag@example.com").await;
    hold(&app, &buyer, &event_id, "Regular", 2).await;
    let body: Value = crate::helpers::eventually(Duration::from_secs(2), || async {
        let changed = app.get_if_none_match(&path, &etag).await;
        if changed.status() == StatusCode::NOT_MODIFIED {
            return None;
        }
        assert_eq!(changed.status(), StatusCode::OK);
        assert_ne!(changed.headers()["etag"], etag.as_str());
        Some(changed.json().await.unwrap())
    })
    .await;
    assert_eq!(body["tiers"][0]["available"], 8);
}
