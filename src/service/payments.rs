//! Payments after the checkout: signed webhooks, settlement (verify → paid → tickets →
//! ledger → mail → status), releasing holds, and the sweeper's healing passes.
//!
//! Settlement is idempotent: every step is a guarded statement or an insert that skips what
//! exists, so running it twice (two webhooks, a retried job, the sweeper) changes nothing the
//! second time. DESIGN.md steps 3–6.

use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use redis::AsyncCommands;
use serde::Deserialize;
use sha2::Sha512;
use uuid::Uuid;

use crate::{
    app::AppState,
    clients::paystack::TxStatus,
    error::{AppError, AppResult},
    repo::{self, orders::OrderRow},
    security::crypto,
    service::notifications,
};

/// Checks `x-paystack-signature`: HMAC-SHA512 of the exact raw body under the secret key,
/// compared in constant time (hmac's `verify_slice`).
pub fn signature_is_valid(secret: &str, raw_body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(raw_body);
    mac.verify_slice(&signature).is_ok()
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

fn webhook_metric(event: &str, result: &'static str) {
    let event = match event {
        "charge.success" => "charge.success",
        e if e.starts_with("refund.") => "refund",
        e if e.starts_with("transfer.") => "transfer",
        _ => "other",
    };
    metrics::counter!("ticketing_webhooks_total", "event" => event, "result" => result)
        .increment(1);
}

/// `POST /payments/callback`: verify the signature, record the delivery once, queue the work.
/// Duplicates, unknown events and unknown references answer 200 and change nothing.
pub async fn receive_webhook(
    state: &AppState,
    raw: &[u8],
    signature: Option<&str>,
) -> AppResult<()> {
    let valid =
        signature.is_some_and(|s| signature_is_valid(state.config.webhook_secret(), raw, s));
    if !valid {
        webhook_metric("unknown", "invalid_signature");
        return Err(AppError::unauthorized(
            "invalid_signature",
            "The x-paystack-signature header does not match the body.",
        ));
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(raw) else {
        webhook_metric("unknown", "unreadable");
        tracing::warn!("signed webhook with an unreadable body; ignored");
        return Ok(());
    };
    let data = &envelope.data;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let reference = match envelope.event.as_str() {
        e if e.starts_with("refund.") => text(&data["transaction_reference"]),
        _ => text(&data["reference"]),
    };
    // Paystack events carry no id: identity as in external-apis.md §1.4.
    let identity = match envelope.event.as_str() {
        "charge.success" => format!("charge.success:{}:{reference}", text(&data["id"])),
        e if e.starts_with("refund.") => format!(
            "{e}:{reference}:{}:{}",
            text(&data["status"]),
            text(&data["amount"])
        ),
        e if e.starts_with("transfer.") => format!(
            "{e}:{}",
            if data["transfer_code"].is_null() {
                text(&data["reference"])
            } else {
                text(&data["transfer_code"])
            }
        ),
        e => format!("{e}:{}", crypto::token_hash(&String::from_utf8_lossy(raw))),
    };
    let payload: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    let first = repo::orders::record_payment_event(
        &state.db,
        &identity,
        &envelope.event,
        (!reference.is_empty()).then_some(reference.as_str()),
        &payload,
    )
    .await?;
    if !first {
        webhook_metric(&envelope.event, "duplicate");
        return Ok(());
    }
    match envelope.event.as_str() {
        "charge.success" if !reference.is_empty() => {
            // If Redis refuses the job the delivery is still recorded; the sweeper's verify
            // of the expiring hold settles the payment anyway.
            if let Err(e) = state.queues.settle_payment(&reference).await {
                tracing::error!(error = %e, %reference, "payment job not queued; the sweeper will settle");
            }
            webhook_metric(&envelope.event, "queued");
        }
        other => {
            // Refunds and transfers are settled by their own features; recorded meanwhile.
            tracing::info!(event = other, %reference, "webhook recorded");
            webhook_metric(other, "recorded");
        }
    }
    Ok(())
}

/// What one settlement did.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No order has this reference.
    UnknownReference,
    /// Paystack does not (yet) say `success` for the order's amount and currency.
    NotPaid,
    Paid {
        tickets_issued: u64,
    },
    /// Paid, but no seats were left (late payment): owed back.
    RefundPending,
}

/// The payment job: asks Paystack (never trusting the webhook body), then moves the order to
/// paid (or back to paid for a late payment with seats left, or to refund_pending without),
/// issues the tickets, writes the ledger, queues the mail and publishes the status.
#[tracing::instrument(skip(state))]
pub async fn settle(state: &AppState, reference: &str) -> AppResult<Settled> {
    let started = Instant::now();
    let Some(order) = repo::orders::find_by_reference(&state.db, reference).await? else {
        tracing::info!("payment for an unknown reference; nothing to do");
        return Ok(Settled::UnknownReference);
    };
    if matches!(order.status.as_str(), "refund_pending" | "refunded") {
        return Ok(Settled::RefundPending);
    }
    if order.status == "paid" {
        // Already paid: only finish what a crash may have left undone.
        let issued = finish_paid_order(state, &order).await?;
        return Ok(Settled::Paid {
            tickets_issued: issued,
        });
    }
    let verification = state
        .gateway
        .verify(reference)
        .await
        .map_err(|e| AppError::Upstream {
            provider: "Paystack",
            cause: e.to_string(),
        })?;
    if verification.status != TxStatus::Success {
        if verification.status == TxStatus::Failed {
            metrics::counter!("ticketing_payments_failed_total").increment(1);
        }
        return Ok(Settled::NotPaid);
    }
    let mismatch =
        verification.amount != order.total_amount || verification.currency != order.currency;
    if mismatch {
        metrics::counter!("ticketing_payments_failed_total").increment(1);
        tracing::error!(
            paid = verification.amount,
            expected = order.total_amount,
            currency = %verification.currency,
            "payment amount or currency does not match the order; not paid, owed back"
        );
    }
    let fee = verification.fees.unwrap_or(0);
    // Each pass applies the payment to the order's state as read; if another worker moved
    // the order in between (the guarded update matched nothing), re-read and apply again.
    let mut order = order;
    for _ in 0..3 {
        match apply_payment(state, &order, verification.amount, fee, mismatch).await? {
            Applied::Paid {
                issued,
                event_title,
            } => {
                metrics::counter!("ticketing_tickets_issued_total").increment(issued);
                metrics::histogram!("ticketing_payment_to_ticket_seconds")
                    .record(started.elapsed().as_secs_f64());
                queue_ticket_mail(state, &order, &event_title).await;
                publish_status(state, &order.reference, "paid").await;
                tracing::info!(tickets = issued, "order paid");
                return Ok(Settled::Paid {
                    tickets_issued: issued,
                });
            }
            Applied::RefundPending(reason) => {
                tracing::warn!(reason, "payment cannot be honoured; refund pending");
                publish_status(state, &order.reference, "refund_pending").await;
                return Ok(Settled::RefundPending);
            }
            Applied::Raced => {
                order = repo::orders::find(&state.db, order.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
                match order.status.as_str() {
                    "paid" => {
                        let issued = finish_paid_order(state, &order).await?;
                        return Ok(Settled::Paid {
                            tickets_issued: issued,
                        });
                    }
                    "refund_pending" | "refunded" => return Ok(Settled::RefundPending),
                    _ => continue,
                }
            }
        }
    }
    Err(anyhow::anyhow!("order {} kept changing during settlement", order.id).into())
}

enum Applied {
    Paid {
        issued: u64,
        event_title: String,
    },
    RefundPending(&'static str),
    /// Another worker changed the order between our read and our guarded write.
    Raced,
}

/// One transaction applying a verified payment to the order in the state `order` shows:
/// pending (open event) → paid; a late payment → paid again if seats are left; anything
/// that cannot be honoured (closed event, no seats, wrong amount) → refund_pending, with the
/// seats given back where the order still held them.
async fn apply_payment(
    state: &AppState,
    order: &OrderRow,
    amount: i64,
    fee: i64,
    mismatch: bool,
) -> AppResult<Applied> {
    let mut tx = state.db.begin().await?;
    let event = repo::events::find(&mut *tx, order.event_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order without its event"))?;
    let now = time::OffsetDateTime::now_utc();
    let closed_reason = if event.status == "cancelled" {
        Some("event_cancelled")
    } else if event.ends_at <= now {
        Some("event_ended")
    } else {
        None
    };
    let refusal = if mismatch {
        Some("amount_mismatch")
    } else {
        closed_reason
    };
    let from = order.status.as_str();
    if !matches!(from, "pending" | "expired" | "failed" | "cancelled") {
        return Ok(Applied::Raced);
    }

    if let Some(reason) = refusal {
        // Owed back. A pending order first gives its seats back (pending → failed).
        let from = if from == "pending" {
            match repo::orders::end_hold(&mut *tx, order.id, "failed").await? {
                Some(held) => {
                    crate::service::purchase::seats_released(state, held.tier_id).await;
                    repo::tiers::release_seats(
                        &mut *tx,
                        held.tier_id,
                        held.quantity,
                        held.discounted,
                    )
                    .await?;
                    "failed"
                }
                None => return Ok(Applied::Raced),
            }
        } else {
            from
        };
        if !repo::orders::mark_refund_pending(&mut *tx, order.id, from, amount, reason).await? {
            return Ok(Applied::Raced);
        }
        tx.commit().await?;
        return Ok(Applied::RefundPending(reason));
    }

    let paid = if from == "pending" {
        repo::orders::mark_paid(&mut *tx, order.id, "pending", amount, fee).await?
    } else if repo::tiers::retake_seats(&mut *tx, order.tier_id, order.quantity).await? {
        // A late payment with seats left: honoured at the price already paid.
        repo::orders::mark_paid(&mut *tx, order.id, from, amount, fee).await?
    } else {
        if !repo::orders::mark_refund_pending(
            &mut *tx,
            order.id,
            from,
            amount,
            "late_payment_sold_out",
        )
        .await?
        {
            return Ok(Applied::Raced);
        }
        tx.commit().await?;
        return Ok(Applied::RefundPending("late_payment_sold_out"));
    };
    if !paid {
        return Ok(Applied::Raced);
    }
    let platform_fee = state
        .config
        .platform_fee_schedule
        .fee_per_ticket(order.unit_price)
        * i64::from(order.quantity);
    repo::orders::record_sale(
        &mut *tx,
        order,
        event.organizer_id,
        amount,
        fee,
        platform_fee,
    )
    .await?;
    let issued = repo::orders::issue_tickets(&mut *tx, order, &access_keys(order.quantity)).await?;
    tx.commit().await?;
    Ok(Applied::Paid {
        issued,
        event_title: event.title,
    })
}

/// Free tiers: paid at once, tickets issued, mail queued.
pub async fn complete_free_order(state: &AppState, order: &OrderRow) -> AppResult<()> {
    let mut tx = state.db.begin().await?;
    let event = repo::events::find(&mut *tx, order.event_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order without its event"))?;
    if repo::orders::mark_paid(&mut *tx, order.id, "pending", 0, 0).await? {
        repo::orders::record_sale(&mut *tx, order, event.organizer_id, 0, 0, 0).await?;
        let issued =
            repo::orders::issue_tickets(&mut *tx, order, &access_keys(order.quantity)).await?;
        metrics::counter!("ticketing_tickets_issued_total").increment(issued);
    }
    tx.commit().await?;
    queue_ticket_mail(state, order, &event.title).await;
    Ok(())
}

/// Issues missing tickets and queues a missing mail for a paid order.
async fn finish_paid_order(state: &AppState, order: &OrderRow) -> AppResult<u64> {
    let issued =
        repo::orders::issue_tickets(&state.db, order, &access_keys(order.quantity)).await?;
    if issued > 0 {
        metrics::counter!("ticketing_tickets_issued_total").increment(issued);
        tracing::warn!(
            tickets = issued,
            "re-issued tickets missing from a paid order"
        );
    }
    if order.mail_queued_at.is_none() {
        let title = repo::events::find(&state.db, order.event_id)
            .await?
            .map(|e| e.title)
            .unwrap_or_default();
        queue_ticket_mail(state, order, &title).await;
    }
    Ok(issued)
}

/// 128 bits of randomness per ticket (more than the 128 asked: 192 bits, base64url).
fn access_keys(n: i32) -> Vec<String> {
    (0..n).map(|_| crypto::random_token(24)).collect()
}

async fn queue_ticket_mail(state: &AppState, order: &OrderRow, event_title: &str) {
    let result = async {
        let user = repo::users::find_by_id(&state.db, order.user_id).await?;
        let Some(user) = user else {
            return Ok::<_, AppError>(());
        };
        let tickets = repo::tickets::for_order(&state.db, order.id).await?;
        let keys: Vec<String> = tickets.iter().map(|t| t.access_key.clone()).collect();
        state
            .queues
            .send_mail(notifications::tickets_issued(
                order.id,
                &user.email,
                &user.first_name,
                event_title,
                &keys,
            ))
            .await?;
        repo::orders::mark_mail_queued(&state.db, order.id).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, order_id = %order.id, "ticket mail not queued; the sweeper will retry");
    }
}

/// Tells every instance's websocket subscribers about a status change.
pub async fn publish_status(state: &AppState, reference: &str, status: &str) {
    let mut conn = state.redis.conn();
    let message = serde_json::json!({ "reference": reference, "status": status }).to_string();
    let channel = state.redis.key("orders:status");
    if let Err(e) = conn.publish::<_, _, ()>(channel, message).await {
        tracing::debug!(error = %e, "status not published");
    }
}

/// pending → `to`, giving the seats back in the same transaction. False when the order was
/// no longer pending (paid or released by someone else).
pub async fn end_hold(state: &AppState, order_id: Uuid, to: &str) -> AppResult<bool> {
    let mut tx = state.db.begin().await?;
    let Some(order) = repo::orders::end_hold(&mut *tx, order_id, to).await? else {
        return Ok(false);
    };
    // Before the commit, so no attempt is shed once the seats are free (see purchase.rs).
    crate::service::purchase::seats_released(state, order.tier_id).await;
    repo::tiers::release_seats(&mut *tx, order.tier_id, order.quantity, order.discounted).await?;
    tx.commit().await?;
    if to == "expired" {
        metrics::counter!("ticketing_holds_expired_total").increment(1);
    }
    publish_status(state, &order.reference, to).await;
    Ok(true)
}

/// One sweeper pass, safe on every instance at once (each transition is guarded):
/// expires holds past `expires_at` after asking Paystack whether they were paid, and
/// re-drives paid orders whose tickets or mail are missing.
pub async fn sweep(state: &AppState) -> AppResult<(usize, usize)> {
    let mut expired = 0;
    for (order_id, reference) in repo::orders::expired_holds(&state.db, 200).await? {
        match state.gateway.verify(&reference).await {
            Ok(v) if v.status == TxStatus::Success => {
                // Paid after all (a lost webhook): settle instead of expiring.
                if let Err(e) = settle(state, &reference).await {
                    tracing::warn!(error = %e, %reference, "settling a paid hold failed; next pass retries");
                }
            }
            Ok(_) => match end_hold(state, order_id, "expired").await {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, %reference, "expiring a hold failed"),
            },
            // Paystack unreachable: keep the hold; the next pass asks again.
            Err(e) => tracing::warn!(error = %e, %reference, "cannot verify an expired hold yet"),
        }
    }
    let stuck = repo::orders::incomplete_paid(&state.db, 30.0, 100).await?;
    for reference in &stuck {
        if let Err(e) = settle(state, reference).await {
            tracing::warn!(error = %e, %reference, "re-driving a paid order failed");
        }
    }
    // A gauge from the database, not from increments: holds are made on one instance and
    // released on another, so only the shared count is true.
    if let Ok(n) = repo::orders::count_pending(&state.db).await {
        metrics::gauge!("ticketing_holds_active").set(n as f64);
    }
    Ok((expired, stuck.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_vector() {
        let key = "sk_test_0000000000000000000000000000000000000000";
        let body = br#"{"event":"charge.success","data":{"id":5001,"status":"success","reference":"ord_01J9ZK3","amount":1050000,"currency":"NGN"}}"#;
        let sig = "459f08a395da5117c0baa32eb1cf629d685783f82df8ea3573812394b6fd4813e0d979ac7bff880d88c461b3cf1c0413842b0a886f1e2454aa9a803f61f376bc";
        assert_eq!(body.len(), 124);
        assert!(signature_is_valid(key, body, sig));
        assert!(!signature_is_valid(key, &body[..123], sig));
        assert!(!signature_is_valid("sk_test_other", body, sig));
        assert!(!signature_is_valid(key, body, "zz"));
    }
}
