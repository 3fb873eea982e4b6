//! `GET /ws` (API.md "Realtime"): live order status across instances, with its limits.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

use crate::helpers::{TestApp, event_with_tier, eventually, hold, signup};

const PRICE: i64 = 500_000;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, token: &str) -> Socket {
    let url = format!(
        "{}/ws?token={token}",
        app.address.replace("http://", "ws://")
    );
    connect_async(url).await.expect("the upgrade").0
}

/// The next JSON message (pings answered by the library), within 20 s.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn subscribe(socket: &mut Socket, reference: &str) {
    let message = json!({ "type": "subscribe", "reference": reference }).to_string();
    socket.send(Message::Text(message.into())).await.unwrap();
}

/// Reads until the server's close frame: its code.
async fn close_code(socket: &mut Socket) -> CloseCode {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("closed within 30 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => continue,
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_subscriber_on_one_instance_hears_a_payment_that_reached_another() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling().await;
    let (_, event_id, _) = event_with_tier(&a, PRICE, 10).await;
    let buyer = signup(&a, "live@example.com").await;
    let order = hold(&a, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap();

    let mut socket = connect(&b, &buyer).await;
    subscribe(&mut socket, reference).await;
    let now = next_json(&mut socket).await;
    assert_eq!(now["type"], "transaction.status");
    assert_eq!(now["status"], "pending");
    assert_eq!(now["order"]["reference"], reference);
    assert!(now["order"]["authorization_url"].is_string());

    // The webhook reaches instance A (the fake's callback URL); B's subscriber hears it.
    a.paystack.pay(reference).await;
    let paid = next_json(&mut socket).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["order"]["status"], "paid");
    assert_eq!(paid["order"]["tickets"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn subscribing_after_the_payment_answers_paid_and_others_orders_are_forbidden() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "late-sub@example.com").await;
    let other = signup(&app, "nosy@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap();
    app.paystack.pay(reference).await;
    crate::helpers::wait_for_status(&app, &buyer, reference, "paid").await;

    let mut socket = connect(&app, &buyer).await;
    subscribe(&mut socket, reference).await;
    let now = next_json(&mut socket).await;
    assert_eq!(now["status"], "paid");

    let mut nosy = connect(&app, &other).await;
    for r in [reference, "ord-00000000000000000000000000000000", ""] {
        subscribe(&mut nosy, r).await;
        let answer = next_json(&mut nosy).await;
        assert_eq!(answer["type"], "error");
        assert_eq!(answer["code"], "forbidden", "{r}");
    }
    nosy.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_json(&mut nosy).await["code"], "bad_message");
}

#[tokio::test]
async fn no_token_is_401_before_the_upgrade_and_a_plain_get_is_426() {
    let app = TestApp::spawn().await;
    let url = format!("{}/ws?token=nope", app.address.replace("http://", "ws://"));
    match connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 401)
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let token = signup(&app, "plain@example.com").await;
    let res = app.get(&format!("/ws?token={token}")).await;
    assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn a_revoked_tokens_socket_is_closed_with_4001() {
    let app = TestApp::spawn().await;
    let token = signup(&app, "revoked@example.com").await;
    let mut socket = connect(&app, &token).await;
    let res = app.post_json_auth("/auth/logout", &token, &json!({})).await;
    assert!(res.status().is_success());
    assert_eq!(close_code(&mut socket).await, CloseCode::from(4001));
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_1008() {
    let app = TestApp::spawn().await;
    let (_, event_id, _) = event_with_tier(&app, PRICE, 10).await;
    let buyer = signup(&app, "slow@example.com").await;
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap().to_owned();

    // A client with a small receive window that subscribes and then stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(
            app.direct_address
                .trim_start_matches("http://")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let url = format!(
        "{}/ws?token={buyer}",
        app.address.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    subscribe(&mut socket, &reference).await;

    // Another instance announces changes of that order, far faster than anyone reads.
    let mut redis = app.state.redis.conn();
    let channel = format!("{}:orders:status", app.state.redis.prefix());
    let message = json!({ "reference": reference, "status": "pending" }).to_string();
    let closed_for_lag = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find(|l| l.starts_with("ticketing_websocket_closed_total{reason=\"slow_consumer\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = closed_for_lag().await;
    for _ in 0..20 {
        let mut pipe = redis::pipe();
        for _ in 0..500 {
            pipe.publish(&channel, &message).ignore();
        }
        pipe.query_async::<()>(&mut redis).await.unwrap();
        if closed_for_lag().await > before {
            break;
        }
    }
    eventually(Duration::from_secs(20), || async {
        (closed_for_lag().await > before).then_some(())
    })
    .await;
    // Reading again, the client finds what was sent before and then the 1008 close.
    assert_eq!(close_code(&mut socket).await, CloseCode::Policy);
}
