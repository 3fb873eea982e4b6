//! Mail that keeps up with a sale: the outbox, Resend batches, the shared pace, priorities.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, attendees, event_with_tier, eventually, signup};

#[tokio::test]
async fn a_thousand_orders_on_two_instances_get_their_ticket_mail_within_a_minute() {
    let app = TestApp::builder()
        .env("MAX_FREE_TICKETS_PER_USER", "0")
        .env("MAX_ACTIVE_HOLDS_PER_USER", "0")
        .env("MAIL_REQUESTS_PER_SECOND", "5")
        // A thousand buyers from one test address.
        .env("PURCHASE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE", "0")
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000")
        .spawn()
        .await;
    let sibling = app.spawn_sibling().await;
    // Resend's default limit for a team: 5 requests a second, more is refused with 429.
    app.resend.set_rate_limit(5);
    let (_, event_id, _) = event_with_tier(&app, 0, 2_000).await;
    // Welcome mails already waiting: the tickets and the reset code go ahead of them.
    for i in 0..20 {
        signup(&app, &format!("early-{i}@example.com")).await;
    }
    let buyers = attendees(&app, 1_000).await;
    // Each buyer's address, from their token (`attendees` names them by id).
    let emails: Vec<String> = buyers
        .iter()
        .map(|t| {
            let claims = app.state.jwt.verify(t).unwrap();
            format!("buyer-{}@example.com", claims.sub)
        })
        .collect();

    let instances = [&app, &sibling];
    let paid_at: HashMap<usize, Instant> = futures::stream::iter(buyers.iter().enumerate())
        .map(|(i, token)| {
            let (instance, event_id) = (instances[i % 2], event_id.clone());
            async move {
                let res = instance
                    .client
                    .post(instance.url(&format!("/events/{event_id}/tickets/purchase")))
                    .bearer_auth(token)
                    .json(&json!({ "tier": "Regular", "quantity": 1 }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
                (i, Instant::now())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // A reset code asked for while the ticket mail is going out.
    let otp_asked = Instant::now();
    let res = sibling
        .post_json(
            "/auth/password/reset",
            &json!({ "email": "early-7@example.com" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let otp_sent = eventually(Duration::from_secs(30), || async {
        app.resend
            .sent_to("early-7@example.com")
            .into_iter()
            .find(|m| m.subject.contains("reset"))
            .map(|m| m.accepted_at)
    })
    .await;
    let otp_wait = otp_sent.saturating_duration_since(otp_asked);
    assert!(
        otp_wait <= Duration::from_secs(5),
        "reset code after {otp_wait:?}"
    );

    let accepted = eventually(Duration::from_secs(90), || async {
        let ticket_mails: HashMap<String, Instant> = app
            .resend
            .outbox()
            .into_iter()
            .filter(|m| m.subject.contains("tickets"))
            .map(|m| (m.to[0].to_lowercase(), m.accepted_at))
            .collect();
        (ticket_mails.len() >= 1_000).then_some(ticket_mails)
    })
    .await;
    let mut slowest = Duration::ZERO;
    for (i, email) in emails.iter().enumerate() {
        let at = accepted[&email.to_lowercase()];
        slowest = slowest.max(at.saturating_duration_since(paid_at[&i]));
    }
    assert!(
        slowest <= Duration::from_secs(60),
        "slowest ticket mail {slowest:?}"
    );
    assert_eq!(
        app.resend.rate_limited(),
        0,
        "no request over Resend's limit"
    );
    assert!(
        app.resend.batch_requests() >= 10,
        "ticket mail goes out in batches"
    );
    let duplicates = app.resend.outbox().len() - {
        let mut keys: Vec<String> = app
            .resend
            .outbox()
            .iter()
            .map(|m| format!("{}|{}", m.to[0], m.subject))
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    assert_eq!(duplicates, 0, "every message once");
    println!(
        "mail burst: 1,000 ticket mails, slowest {slowest:?} after payment; reset code {otp_wait:?}; {} batch requests",
        app.resend.batch_requests()
    );
}

/// The text a QR code in a PNG decodes to.
fn decode_qr(png: &[u8]) -> String {
    let image = qrcodegen_image::image::load_from_memory(png)
        .expect("a PNG")
        .to_luma8();
    let (w, h) = image.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            image.get_pixel(x as u32, y as u32)[0]
        });
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

#[tokio::test]
async fn the_ticket_mail_links_a_qr_code_that_decodes_to_each_access_key() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    let buyer = signup(&app, "qr@example.com").await;
    let order = crate::helpers::hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.pay(reference).await;
    let paid = crate::helpers::wait_for_status(&app, &buyer, reference, "paid").await;
    let keys: Vec<String> = paid["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["access_key"].as_str().unwrap().to_owned())
        .collect();

    let mail = eventually(Duration::from_secs(20), || async {
        app.resend
            .sent_to("qr@example.com")
            .into_iter()
            .find(|m| m.subject.starts_with("Your tickets"))
    })
    .await;
    let html = mail.html.unwrap();
    let text = mail.text.unwrap();
    // The event's details: its title, venue and start.
    for part in ["Flash Sale", "Eko Hotel", "Regular"] {
        assert!(
            html.contains(part) && text.contains(part),
            "{part} in the mail"
        );
    }
    let links: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "one QR image per ticket");
    let mut decoded = Vec::new();
    for link in links {
        assert!(!link.starts_with("data:"), "mail clients drop data: images");
        let path = &link[link.find("/tickets/qr/").unwrap()..];
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "image/png");
        decoded.push(decode_qr(&res.bytes().await.unwrap()));
    }
    decoded.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(decoded, expected, "each QR code decodes to its access key");
    for key in &keys {
        assert!(html.contains(key.as_str()) && text.contains(key.as_str()));
    }
    // A token we did not issue shows nothing.
    let forged = format!("/tickets/qr/{}.png", "0".repeat(64));
    assert_eq!(app.get(&forged).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_hold_that_expires_is_mailed_to_its_buyer() {
    let app = TestApp::builder()
        .env("HOLD_TTL_SECONDS", "1")
        .env("SWEEP_INTERVAL_SECONDS", "1")
        .spawn()
        .await;
    let (_, event_id, _) = event_with_tier(&app, 500_000, 10).await;
    let buyer = signup(&app, "too-late@example.com").await;
    let order = crate::helpers::hold(&app, &buyer, &event_id, "Regular", 1).await;
    crate::helpers::wait_for_status(
        &app,
        &buyer,
        order["reference"].as_str().unwrap(),
        "expired",
    )
    .await;
    let mail = eventually(Duration::from_secs(20), || async {
        app.resend
            .sent_to("too-late@example.com")
            .into_iter()
            .find(|m| m.subject.contains("was not completed"))
    })
    .await;
    assert!(mail.text.unwrap().contains("ran out"));
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_sent_again_under_its_key_and_arrives_once() {
    let app = TestApp::spawn().await;
    // Resend takes the batch, then the answer is lost as a 500.
    app.resend
        .fail_next(&[crate::fakes::Fault::ServerErrorAfterAccept]);
    let mut tx = app.state.db.begin().await.unwrap();
    for i in 0..3 {
        let email = ticketing::clients::mail::Email {
            to: format!("batch-{i}@example.com"),
            subject: "Hello".into(),
            html: "<p>Hello</p>".into(),
            text: "Hello".into(),
            kind: "tickets_issued".into(),
            idempotency_key: format!("test/batch/{i}"),
        };
        ticketing::service::mail::enqueue_in(&mut *tx, &email)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    eventually(Duration::from_secs(20), || async {
        (app.resend.batch_requests() >= 2
            && (0..3).all(|i| {
                !app.resend
                    .sent_to(&format!("batch-{i}@example.com"))
                    .is_empty()
            }))
        .then_some(())
    })
    .await;
    for i in 0..3 {
        let sent = app.resend.sent_to(&format!("batch-{i}@example.com"));
        assert_eq!(sent.len(), 1, "batch-{i} once: {sent:?}");
    }
    // Recorded as sent (once Resend's answer is in), and its body no longer kept.
    eventually(Duration::from_secs(20), || async {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mail_outbox
             WHERE status = 'sent' AND body_text = '' AND html = '' AND to_address LIKE 'batch-%'",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        (sent == 3).then_some(())
    })
    .await;
}
