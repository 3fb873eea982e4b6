//! Payments after the checkout: signed webhooks (recorded once, then handed to the job that
//! owns them) and settlement (verify → paid → tickets → ledger → mail → status).
//!
//! Settlement is idempotent: every step is a guarded statement or an insert that skips what
//! exists, so running it twice (two webhooks, a retried job, the sweeper) changes nothing the
//! second time. DESIGN.md steps 3–6.

use std::time::{Duration, Instant};

use crate::{
    clients::paystack::{self, TxStatus},
    domain::{
        ids::OrderId,
        money::Money,
        status::{EventStatus, OrderStatus, RefundReason},
    },
    error::{AppError, AppResult},
    repo::{self, orders::OrderRow},
    security::crypto,
    service::{
        budget::{self, Call},
        holds, notifications,
    },
    state::AppState,
};

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

/// `POST /payments/callback`: verify the signature, record the delivery once, queue the work
/// (each job asks Paystack for the truth; the body is only a hint). Duplicates, unknown
/// events and unknown references answer 200 and change nothing.
pub async fn receive_webhook(
    state: &AppState,
    raw: &[u8],
    signature: Option<&str>,
) -> AppResult<()> {
    let valid = signature
        .is_some_and(|s| paystack::signature_is_valid(state.config.webhook_secret(), raw, s));
    if !valid {
        webhook_metric("unknown", "invalid_signature");
        return Err(AppError::unauthorized(
            "invalid_signature",
            "The x-paystack-signature header does not match the body.",
        ));
    }
    let Some(hook) = paystack::parse_webhook(raw) else {
        webhook_metric("unknown", "unreadable");
        tracing::warn!("signed webhook with an unreadable body; ignored");
        return Ok(());
    };
    let reference = hook.reference.as_str();
    let first = repo::payment_events::record_payment_event(
        &state.db,
        &hook.identity,
        &hook.event,
        (!reference.is_empty()).then_some(reference),
        &hook.payload,
    )
    .await?;
    if !first {
        webhook_metric(&hook.event, "duplicate");
        return Ok(());
    }
    let queued = dispatch(state, &hook.event, reference).await?;
    match queued {
        Ok(true) => webhook_metric(&hook.event, "queued"),
        Ok(false) => {
            tracing::info!(event = %hook.event, %reference, "webhook recorded; nothing to do");
            webhook_metric(&hook.event, "recorded");
        }
        Err(e) => {
            tracing::error!(error = %e, %reference, "webhook job not queued; the sweeper will re-drive");
            webhook_metric(&hook.event, "not_queued");
        }
    }
    Ok(())
}

/// Hands a recorded delivery to the job that owns it: `Ok(false)` when there is none.
/// If Redis refuses a job, the delivery is still recorded and the sweeper re-drives it
/// (charges by their unprocessed delivery, refunds and payouts by their due time).
async fn dispatch(
    state: &AppState,
    event: &str,
    reference: &str,
) -> AppResult<anyhow::Result<bool>> {
    Ok(match event {
        "charge.success" if !reference.is_empty() => {
            state.queues.settle_payment(reference).await.map(|_| true)
        }
        e if e.starts_with("refund.") => {
            match repo::orders::find_by_reference(&state.db, reference).await? {
                Some(order) => state.queues.refund(OrderId(order.id)).await.map(|_| true),
                None => Ok(false),
            }
        }
        e if e.starts_with("transfer.") => match crate::service::payouts::payout_of(reference) {
            Some(payout_id) => state.queues.payout(payout_id).await.map(|_| true),
            None => Ok(false),
        },
        _ => Ok(false),
    })
}

/// How long a verify waits for a slot of Paystack's shared verify budget before its caller
/// is told to come back: long enough for a burst of webhooks (1,000 at 50 a second is 20 s)
/// to queue at Paystack's pace instead of failing and backing off.
const VERIFY_QUEUE: Duration = Duration::from_secs(30);

/// `GET /transaction/verify` within Paystack's shared verify budget (`PAYSTACK_VERIFIES_PER_SECOND`,
/// all instances): every verify of ours — the payment job's and the sweeper's — goes through
/// here, so a burst is paced, never refused by Paystack.
pub async fn verify(
    state: &AppState,
    reference: &str,
) -> Result<paystack::Verification, paystack::GatewayError> {
    verify_within(state, reference, VERIFY_QUEUE).await
}

/// `verify`, waiting at most `queue` for a budget slot (the sweeper, whose claims are short,
/// does not wait: a hold it cannot verify now is looked at again on its next pass).
pub async fn verify_within(
    state: &AppState,
    reference: &str,
    queue: Duration,
) -> Result<paystack::Verification, paystack::GatewayError> {
    if let Some(retry_after) = budget::wait(state, Call::Verify, queue).await {
        return Err(paystack::GatewayError::Limited { retry_after });
    }
    state.gateway.verify(reference).await
}

/// What one settlement did.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// No order has this reference.
    UnknownReference,
    /// Paystack does not (yet) say `success` for the order's amount and currency.
    NotPaid {
        /// The order is still a hold: its expiry verifies again.
        still_pending: bool,
    },
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
    let settled = settle_once(state, reference).await?;
    // Done with the delivery unless verify did not (yet) say paid for an order that no hold
    // expiry will ask about again (expired, failed, cancelled): the sweeper re-drives those.
    let final_outcome = match &settled {
        Settled::NotPaid { still_pending } => *still_pending,
        _ => true,
    };
    if final_outcome {
        repo::payment_events::mark_charge_processed(&state.db, reference).await?;
    }
    Ok(settled)
}

async fn settle_once(state: &AppState, reference: &str) -> AppResult<Settled> {
    let started = Instant::now();
    let Some(order) = repo::orders::find_by_reference(&state.db, reference).await? else {
        tracing::info!("payment for an unknown reference; nothing to do");
        return Ok(Settled::UnknownReference);
    };
    if order.status.is_owed_back() {
        return Ok(Settled::RefundPending);
    }
    if order.status == OrderStatus::Paid {
        // Already paid: only finish what a crash may have left undone.
        let issued = finish_paid_order(state, &order).await?;
        return Ok(Settled::Paid {
            tickets_issued: issued,
        });
    }
    let verification = verify(state, reference)
        .await
        .map_err(|e| AppError::Upstream {
            provider: "Paystack",
            cause: e.to_string(),
        })?;
    if verification.status != TxStatus::Success {
        if verification.status == TxStatus::Failed {
            metrics::counter!("ticketing_payments_failed_total").increment(1);
        }
        return Ok(Settled::NotPaid {
            still_pending: order.status == OrderStatus::Pending,
        });
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
    apply_until_settled(state, order, verification.amount, fee, mismatch, started).await
}

/// Applies the verified payment to the order's state as read; if another worker moved the
/// order in between (the guarded update matched nothing), re-reads it and applies again.
async fn apply_until_settled(
    state: &AppState,
    mut order: OrderRow,
    amount: i64,
    fee: i64,
    mismatch: bool,
    started: Instant,
) -> AppResult<Settled> {
    for _ in 0..3 {
        match apply_payment(state, &order, amount, fee, mismatch).await? {
            Applied::Paid {
                issued,
                event_title,
            } => {
                metrics::counter!("ticketing_tickets_issued_total").increment(issued);
                metrics::histogram!("ticketing_payment_to_ticket_seconds")
                    .record(started.elapsed().as_secs_f64());
                queue_ticket_mail(state, &order, &event_title).await;
                holds::publish_status(state, &order.reference, OrderStatus::Paid).await;
                tracing::info!(tickets = issued, "order paid");
                return Ok(Settled::Paid {
                    tickets_issued: issued,
                });
            }
            Applied::RefundPending(reason) => {
                tracing::warn!(%reason, "payment cannot be honoured; refund pending");
                state.queues.refunds_best_effort(&[OrderId(order.id)]).await;
                holds::publish_status(state, &order.reference, OrderStatus::RefundPending).await;
                return Ok(Settled::RefundPending);
            }
            Applied::Raced => {
                order = repo::orders::find(&state.db, order.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("order vanished"))?;
                match order.status {
                    OrderStatus::Paid => {
                        let issued = finish_paid_order(state, &order).await?;
                        return Ok(Settled::Paid {
                            tickets_issued: issued,
                        });
                    }
                    s if s.is_owed_back() => return Ok(Settled::RefundPending),
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
    RefundPending(RefundReason),
    /// Another worker changed the order between our read and our guarded write.
    Raced,
}

/// One transaction applying a verified payment to the order in the state `order` shows:
/// pending (open event) → paid; a late payment → paid again if its seats (and discount
/// allowance) are still there; anything that cannot be honoured (closed event, no seats,
/// wrong amount) → refund_pending, with the money received in the ledger and reversed, and a
/// refund created.
///
/// The event row is read `FOR SHARE`: a cancel (which takes `FOR NO KEY UPDATE`) either
/// commits before this read — and the payment is refunded here — or waits for this commit —
/// and then refunds the paid order itself. Without the lock, a cancel committing between the
/// read and the write left a paid order with valid tickets on a cancelled event. A payout
/// start waits the same way, so no sale lands after its amount was fixed.
async fn apply_payment(
    state: &AppState,
    order: &OrderRow,
    amount: i64,
    fee: i64,
    mismatch: bool,
) -> AppResult<Applied> {
    let from = order.status;
    if !(from == OrderStatus::Pending || from.is_ended_hold()) {
        return Ok(Applied::Raced);
    }
    let mut tx = state.db.begin().await?;
    let event = repo::events::lock_shared(&mut *tx, order.event_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order without its event"))?;
    let now = state.clock.now();
    let refusal = if mismatch {
        Some(RefundReason::AmountMismatch)
    } else if event.status == EventStatus::Cancelled {
        Some(RefundReason::EventCancelled)
    } else if event.ends_at <= now {
        Some(RefundReason::EventEnded)
    } else if from == OrderStatus::Pending {
        None
    } else if repo::tiers::retake_seats(&mut *tx, order.tier_id, order.quantity, order.discounted)
        .await?
    {
        // A late payment with seats left: honoured at the price already paid.
        None
    } else {
        Some(RefundReason::LatePaymentSoldOut)
    };

    match refusal {
        Some(reason) => owe_back(state, tx, order, &event, amount, fee, reason).await,
        None => honour(state, tx, order, event, amount, fee).await,
    }
}

/// A verified payment that cannot be honoured: the order is owed back. A pending order first
/// gives its seats back (pending → failed).
async fn owe_back(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    order: &OrderRow,
    event: &repo::events::EventLock,
    amount: i64,
    fee: i64,
    reason: RefundReason,
) -> AppResult<Applied> {
    let from = if order.status == OrderStatus::Pending {
        match holds::end_in(state, &mut tx, order.id, OrderStatus::Failed).await? {
            Some(_) => OrderStatus::Failed,
            None => return Ok(Applied::Raced),
        }
    } else {
        order.status
    };
    if !repo::orders::mark_refund_pending(&mut *tx, order.id, from, amount, fee, reason).await? {
        return Ok(Applied::Raced);
    }
    // Every kobo received is accounted for: a payment that never became a sale has its own
    // entries (no platform fee), reversed at once, and its refund.
    repo::ledger::record_sale(
        &mut *tx,
        order,
        event.organizer_id,
        Money::kobo(amount),
        Money::kobo(fee),
        Money::ZERO,
    )
    .await?;
    repo::ledger::reverse_and_refund(&mut tx, &[order.id], None).await?;
    tx.commit().await?;
    Ok(Applied::RefundPending(reason))
}

/// A verified payment honoured: paid, the sale in the ledger, one ticket per seat.
async fn honour(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    order: &OrderRow,
    event: repo::events::EventLock,
    amount: i64,
    fee: i64,
) -> AppResult<Applied> {
    if !repo::orders::mark_paid(&mut *tx, order.id, order.status, amount, fee).await? {
        return Ok(Applied::Raced);
    }
    let platform_fee = state
        .config
        .platform_fee_schedule
        .fee_per_ticket(Money::kobo(order.unit_price))
        .times(order.quantity);
    repo::ledger::record_sale(
        &mut *tx,
        order,
        event.organizer_id,
        Money::kobo(amount),
        Money::kobo(fee),
        platform_fee,
    )
    .await?;
    let issued = repo::tickets::issue(&mut *tx, order, &access_keys(order.quantity)).await?;
    tx.commit().await?;
    Ok(Applied::Paid {
        issued,
        event_title: event.title,
    })
}

/// Free tiers: paid at once, tickets issued, mail queued.
/// Under the settlement lock, like a paid order: a free hold whose event was cancelled
/// meanwhile is voided instead.
pub async fn complete_free_order(state: &AppState, order: &OrderRow) -> AppResult<()> {
    let mut tx = state.db.begin().await?;
    let event = repo::events::lock_shared(&mut *tx, order.event_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order without its event"))?;
    if event.status == EventStatus::Cancelled {
        holds::end_in(state, &mut tx, order.id, OrderStatus::Cancelled).await?;
        tx.commit().await?;
        return Ok(());
    }
    if repo::orders::mark_paid(&mut *tx, order.id, OrderStatus::Pending, 0, 0).await? {
        repo::ledger::record_sale(
            &mut *tx,
            order,
            event.organizer_id,
            Money::ZERO,
            Money::ZERO,
            Money::ZERO,
        )
        .await?;
        let issued = repo::tickets::issue(&mut *tx, order, &access_keys(order.quantity)).await?;
        metrics::counter!("ticketing_tickets_issued_total").increment(issued);
    }
    tx.commit().await?;
    queue_ticket_mail(state, order, &event.title).await;
    Ok(())
}

/// Issues missing tickets and queues a missing mail for a paid order.
async fn finish_paid_order(state: &AppState, order: &OrderRow) -> AppResult<u64> {
    let issued = repo::tickets::issue(&state.db, order, &access_keys(order.quantity)).await?;
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
        let Some(first) = tickets.first() else {
            return Ok(());
        };
        let event = notifications::MailedEvent {
            title: event_title,
            venue: &first.event_venue,
            starts_at: first.event_starts_at,
        };
        let mailed: Vec<notifications::MailedTicket> = tickets
            .iter()
            .map(|t| notifications::MailedTicket {
                tier: t.tier_name.clone(),
                access_key: t.access_key.clone(),
                qr_url: crate::service::tickets::qr_url(state, t.id),
            })
            .collect();
        let mail =
            notifications::tickets_issued(order.id, &user.email, &user.first_name, &event, &mailed);
        // Queued and marked in one transaction: the mark means the mail is in the outbox.
        let mut tx = state.db.begin().await?;
        crate::service::mail::enqueue_in(&mut *tx, &mail).await?;
        repo::orders::mark_mail_queued(&mut *tx, order.id).await?;
        tx.commit().await?;
        state.mail_wake.notify_one();
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, order_id = %order.id, "ticket mail not queued; the sweeper will retry");
    }
}
