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
