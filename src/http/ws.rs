//! `GET /ws?token=`: live order status (API.md "Realtime"). The hub (`crate::hub`) says which
//! order changed; this connection reads it and pushes it as `GET /payments/transactions/:ref`
//! would answer it.
//!
//! One task per connection, one `select!` loop: client messages, hub events, pings, the
//! token's expiry and shutdown. A send that cannot complete (the client does not read) also
//! watches the hub's lag signal, so a stuck socket is closed with 1008 rather than holding
//! the loop and an unbounded backlog.

use std::time::Duration;

use axum::{
    extract::{
        RawQuery, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{AppError, AppResult},
    http::{extract::query_pairs, responses::order_response},
    hub::{Event, Registration},
    security::jwt::Claims,
    service::{auth, purchase},
    state::AppState,
};

/// Subscriptions one connection may hold (API.md).
const MAX_SUBSCRIPTIONS: usize = 50;
/// A ping every 20 s; no pong within 20 s more closes the connection (API.md).
const PING_EVERY: Duration = Duration::from_secs(20);
const PONG_WITHIN: Duration = Duration::from_secs(20);
/// Tokens are checked again this often even without a revocation message (pub/sub can drop
/// one), bounding how long a revoked token's socket can live.
const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// How long a closing handshake may take on a socket the client is not reading.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(websocket))
}

fn closed(reason: &'static str) {
    metrics::counter!("ticketing_websocket_closed_total", "reason" => reason).increment(1);
}

/// Upgrades to a websocket carrying live order status. Send
/// `{"type":"subscribe","reference":"..."}` for your own orders; the current status comes
/// at once, then every change as `{"type":"transaction.status","reference","status","order"}`.
/// Errors: `{"type":"error","code":"forbidden"|"too_many_subscriptions"|"bad_message"|"unavailable"}`.
/// Closed with 1008 when more than 256 messages wait unread, 4001 when the token expires or
/// is revoked, 1001 at shutdown; pinged every 20 s.
#[utoipa::path(get, path = "/ws", tag = "payments",
    params(("token" = String, Query, description = "an access token")),
    responses(
        (status = 101, description = "Switching to the websocket protocol"),
        (status = 400, description = "`invalid_query`"),
        (status = 401, description = "`not_authenticated`: no valid token (answered before the upgrade)"),
        (status = 426, description = "`upgrade_required`: not a websocket handshake"),
    ))]
async fn websocket(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> AppResult<Response> {
    let token = query_pairs(query.as_deref(), &["token"])?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (claims, _) = auth::authenticate(&state, &token).await?;
    let upgrade = upgrade.map_err(|_| AppError::UpgradeRequired)?;
    // Clients send small subscribe messages; nothing bigger is read.
    Ok(upgrade
        .max_message_size(4 * 1024)
        .max_frame_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            metrics::gauge!("ticketing_websocket_connections").increment(1.0);
            let reason = Connection::new(&state, token, claims).run(socket).await;
            metrics::gauge!("ticketing_websocket_connections").decrement(1.0);
            if let Some(reason) = reason {
                closed(reason);
            }
        })
        .into_response())
}

struct Connection<'a> {
    state: &'a AppState,
    token: String,
    claims: Claims,
    registration: Registration,
    /// What was last pushed per reference (status and link), so a resync pushes changes only.
    pushed: std::collections::HashMap<String, (String, Option<String>)>,
    /// Subscribed orders whose last change could not be read or rendered: retried at the
    /// next re-check, so a busy database delays a push instead of losing it.
    unpushed: std::collections::HashSet<String>,
}

/// Why the loop ended; each is a `reason` label of `ticketing_websocket_closed_total`.
type Reason = &'static str;

/// The socket could not take a message: the client is gone, or (with `Lagged`) too slow.
enum SendError {
    Gone,
    Lagged,
}

impl<'a> Connection<'a> {
    fn new(state: &'a AppState, token: String, claims: Claims) -> Self {
        Self {
            registration: state.hub.register(claims.sub),
            state,
            token,
            claims,
            pushed: Default::default(),
            unpushed: Default::default(),
        }
    }

    /// Serves the connection to its end; the reason it closed (`None`: already counted).
    async fn run(mut self, socket: WebSocket) -> Option<Reason> {
        let (mut sink, mut stream) = socket.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.tick().await;
        // When the last ping went unanswered since (API.md: closed 20 s after a ping that
        // gets no pong).
        let mut awaiting_pong: Option<Instant> = None;
        let expires = Instant::now()
            + Duration::from_secs(
                (self.claims.exp - time::OffsetDateTime::now_utc().unix_timestamp()).max(0) as u64,
            );
        let shutdown = self.state.hub.shutdown.clone();
        let lagged = self.registration.lagged.clone();

        let outcome: Result<Reason, SendError> = async {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        return close(&mut sink, 1001, "going_away").await.map(|_| "shutdown");
                    }
                    _ = lagged.notified() => return Err(SendError::Lagged),
                    _ = tokio::time::sleep_until(expires) => {
                        return close(&mut sink, 4001, "token_expired").await.map(|_| "token_expired");
                    }
                    _ = ping.tick() => {
                        send(&mut sink, Message::Ping(Vec::new().into()), &lagged).await?;
                        awaiting_pong.get_or_insert_with(Instant::now);
                    }
                    _ = sleep_until_or_never(awaiting_pong.map(|at| at + PONG_WITHIN)) => {
                        // A peer that does not answer may not read a close frame either.
                        let _ = close(&mut sink, 1008, "ping_timeout").await;
                        return Ok("ping_timeout");
                    }
                    _ = recheck.tick() => {
                        if let Some(reason) = self.revoked().await {
                            return close(&mut sink, 4001, reason).await.map(|_| reason);
                        }
                        // Orders whose push failed (the database busy) are pushed now.
                        for reference in std::mem::take(&mut self.unpushed) {
                            self.push(&mut sink, &reference, false, &lagged).await?;
                        }
                    }
                    event = self.registration.events.recv() => match event {
                        Some(Event::Auth) => {
                            if let Some(reason) = self.revoked().await {
                                return close(&mut sink, 4001, reason).await.map(|_| reason);
                            }
                        }
                        Some(Event::Status { reference }) => {
                            self.push(&mut sink, &reference, true, &lagged).await?;
                        }
                        Some(Event::Resync) => {
                            for reference in self.registration.references() {
                                self.push(&mut sink, &reference, false, &lagged).await?;
                            }
                        }
                        None => return Ok("hub_gone"),
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Text(text))) => {
                            self.on_text(&mut sink, text.as_str(), &lagged).await?;
                        }
                        Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok("client_closed"),
                        Some(Ok(_)) => {}
                    },
                }
            }
        }
        .await;
        match outcome {
            Ok(reason) => Some(reason),
            Err(SendError::Gone) => Some("client_gone"),
            Err(SendError::Lagged) => {
                // Counted now: the close below waits for a client that may never read again.
                closed("slow_consumer");
                tracing::info!(user_id = %self.claims.sub, "websocket closed: slow consumer");
                let _ = tokio::time::timeout(CLOSE_WITHIN, async {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: "slow_consumer".into(),
                        })))
                        .await;
                })
                .await;
                None
            }
        }
    }

    /// `Some(reason)` when the token no longer authenticates.
    async fn revoked(&self) -> Option<Reason> {
        match auth::authenticate(self.state, &self.token).await {
            Ok(_) => None,
            // Redis or PostgreSQL down: not a revocation; the next check decides.
            Err(AppError::Unavailable(_)) => None,
            Err(_) if self.claims.exp <= time::OffsetDateTime::now_utc().unix_timestamp() => {
                Some("token_expired")
            }
            Err(_) => Some("token_revoked"),
        }
    }

    async fn on_text(
        &mut self,
        sink: &mut Sink,
        text: &str,
        lagged: &tokio::sync::Notify,
    ) -> Result<(), SendError> {
        let message: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let reference = message["reference"].as_str().unwrap_or_default().to_owned();
        if message["type"] != "subscribe" {
            return send_json(sink, error_message("bad_message", None), lagged).await;
        }
        // Someone else's order and an unknown one get the same answer; a database that
        // cannot answer is not a refusal.
        let order = match purchase::order_for_buyer(self.state, self.claims.sub, &reference).await {
            Ok(order) => order,
            Err(AppError::Unavailable(_) | AppError::Timeout | AppError::Internal(_)) => {
                let error = error_message("unavailable", Some(&reference));
                return send_json(sink, error, lagged).await;
            }
            Err(_) => {
                let error = error_message("forbidden", Some(&reference));
                return send_json(sink, error, lagged).await;
            }
        };
        if !self
            .registration
            .subscribe(&order.reference, MAX_SUBSCRIPTIONS)
        {
            let error = error_message("too_many_subscriptions", Some(&reference));
            return send_json(sink, error, lagged).await;
        }
        // The current status at once (a payment made before subscribing is not missed).
        self.push(sink, &order.reference, true, lagged).await
    }

    /// Reads the order and pushes it; `always: false` pushes only what changed since the
    /// last push (a resync).
    async fn push(
        &mut self,
        sink: &mut Sink,
        reference: &str,
        always: bool,
        lagged: &tokio::sync::Notify,
    ) -> Result<(), SendError> {
        let order = match purchase::order_for_buyer(self.state, self.claims.sub, reference).await {
            Ok(order) => order,
            Err(e) => {
                tracing::debug!(error = %e, reference, "order not pushed yet");
                self.unpushed.insert(reference.to_owned());
                return Ok(());
            }
        };
        let seen = (
            order.status.as_str().to_owned(),
            order.authorization_url.clone(),
        );
        if !always && self.pushed.get(reference) == Some(&seen) {
            return Ok(());
        }
        let status = order.status.as_str();
        let rendered = match order_response(self.state, order).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, reference, "order not rendered for a push yet");
                self.unpushed.insert(reference.to_owned());
                return Ok(());
            }
        };
        let message = json!({
            "type": "transaction.status",
            "reference": reference,
            "status": status,
            "order": rendered,
        });
        self.pushed.insert(reference.to_owned(), seen);
        send_json(sink, message, lagged).await?;
        metrics::counter!("ticketing_websocket_messages_total").increment(1);
        Ok(())
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// Sleeps until `at`, or forever without one (a `select!` branch that is off).
async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn error_message(code: &str, reference: Option<&str>) -> Value {
    let mut m = json!({ "type": "error", "code": code });
    if let Some(r) = reference {
        m["reference"] = json!(r);
    }
    m
}

async fn send_json(
    sink: &mut Sink,
    message: Value,
    lagged: &tokio::sync::Notify,
) -> Result<(), SendError> {
    send(sink, Message::Text(message.to_string().into()), lagged).await
}

/// Sends one message unless the hub says this connection is lagging meanwhile.
async fn send(
    sink: &mut Sink,
    message: Message,
    lagged: &tokio::sync::Notify,
) -> Result<(), SendError> {
    tokio::select! {
        sent = sink.send(message) => sent.map_err(|_| SendError::Gone),
        _ = lagged.notified() => Err(SendError::Lagged),
    }
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) -> Result<(), SendError> {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    match tokio::time::timeout(CLOSE_WITHIN, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(SendError::Gone),
    }
}
