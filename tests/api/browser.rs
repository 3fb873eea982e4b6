//! The sandbox checkout in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/test` installs when missing) driven over the DevTools protocol, with the order's
//! status followed on the websocket as a client app would. Screenshots go to
//! `target/browser/`. Without Chromium the test says so and passes (only where none can be
//! installed).

use std::{collections::VecDeque, path::PathBuf, process::Stdio, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use crate::helpers::{event_with_tier, hold, signup};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CHROMIUM").ok(),
        Some("/usr/bin/chromium".to_owned()),
        Some("/usr/bin/chromium-browser".to_owned()),
        Some("/usr/bin/google-chrome".to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A minimal DevTools client: commands by id, events kept until asked for.
struct DevTools {
    socket: Socket,
    next_id: u64,
    events: VecDeque<Value>,
    session: Option<String>,
}

impl DevTools {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        loop {
            let reply = self.read().await;
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
            self.events.push_back(reply);
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("DevTools answers within 30 s")
                .expect("DevTools connection open")
                .unwrap();
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    async fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i).unwrap();
        }
        loop {
            let event = self.read().await;
            if event["method"] == method {
                return event;
            }
            self.events.push_back(event);
        }
    }

    /// Opens `url` and waits for its load event.
    async fn open(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_event("Page.loadEventFired").await;
    }

    async fn text(&mut self) -> String {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": "document.body.innerText", "returnByValue": true }),
            )
            .await;
        result["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the element and waits for the page it submits to.
    async fn click(&mut self, selector: &str) {
        self.events.clear();
        let expression = format!("document.querySelector('{selector}').click()");
        self.call("Runtime.evaluate", json!({ "expression": expression }))
            .await;
        self.wait_event("Page.loadEventFired").await;
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Starts headless Chromium and attaches to a fresh page.
async fn launch(binary: &PathBuf) -> (tokio::process::Child, DevTools) {
    let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::now_v7()));
    let mut child = tokio::process::Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=800,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ws_url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools address");
    })
    .await
    .expect("chromium is ready within 30 s");
    // Keep draining its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (socket, _) = connect_async(ws_url).await.unwrap();
    let mut devtools = DevTools {
        socket,
        next_id: 0,
        events: VecDeque::new(),
        session: None,
    };
    let target = devtools
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let attached = devtools
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    devtools.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    devtools.call("Page.enable", json!({})).await;
    devtools.call("Runtime.enable", json!({})).await;
    (child, devtools)
}

/// Subscribes to an order on the websocket (as a client app would) and waits for `status`.
async fn websocket_status(
    address: String,
    token: String,
    reference: String,
    status: &str,
) -> Value {
    let url = format!("{}/ws?token={token}", address.replace("http://", "ws://"));
    let (mut socket, _) = connect_async(url).await.unwrap();
    let subscribe = json!({ "type": "subscribe", "reference": reference }).to_string();
    socket.send(Message::Text(subscribe.into())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("the websocket ended: {other:?}"),
            };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["status"] == status {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{reference} did not become {status} on the websocket"))
}

#[tokio::test]
async fn the_sandbox_checkout_pays_and_declines_in_a_real_browser() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("REQUIRE_CHROMIUM").is_none(),
            "REQUIRE_CHROMIUM is set (scripts/test found a Chromium) but none is here"
        );
        eprintln!(
            "SKIPPED the_sandbox_checkout_pays_and_declines_in_a_real_browser: no Chromium \
             (scripts/test installs Debian's chromium package; set CHROMIUM to another binary)"
        );
        return;
    };
    let app = crate::helpers::sandbox_app().await;
    let (_, event_id, _) = event_with_tier(&app, 750_000, 10).await;
    let buyer = signup(&app, "browser@example.com").await;
    let (_chromium, mut page) = launch(&binary).await;

    // Pay.
    let order = hold(&app, &buyer, &event_id, "Regular", 2).await;
    let reference = order["reference"].as_str().unwrap().to_owned();
    let paid = tokio::spawn(websocket_status(
        app.address.clone(),
        buyer.clone(),
        reference.clone(),
        "paid",
    ));
    page.open(order["authorization_url"].as_str().unwrap())
        .await;
    let shown = page.text().await;
    assert!(
        shown.contains("Flash Sale") && shown.contains("Regular") && shown.contains("15000.00"),
        "{shown}"
    );
    assert!(!shown.contains("abandoned"), "{shown}");
    let shot = page.screenshot("checkout.png").await;
    println!("screenshot: {}", shot.display());
    page.click("#pay").await;
    assert!(page.text().await.contains("Payment made"));
    page.click("#back").await;
    let message = paid.await.unwrap();
    assert_eq!(message["order"]["tickets"].as_array().unwrap().len(), 2);
    page.screenshot("checkout-paid.png").await;

    // Decline.
    let order = hold(&app, &buyer, &event_id, "Regular", 1).await;
    let reference = order["reference"].as_str().unwrap().to_owned();
    page.open(order["authorization_url"].as_str().unwrap())
        .await;
    page.click("#decline").await;
    assert!(page.text().await.contains("declined"));
    page.screenshot("checkout-declined.png").await;
    websocket_status(app.address.clone(), buyer.clone(), reference, "failed").await;
}
