//! Refunds: an organizer's refund of one order, and the driver that takes every refund from
//! `pending` to `processed` at Paystack (DESIGN.md "Refunds and revenue", "Money details").
//!
//! An order enters refund_pending in one transaction with its ledger reversal and its refund
//! row (`repo::ledger::reverse_and_refund`); from then on only `drive` changes the refund,
//! holding its lease. The rules that keep one refund per order at Paystack:
//! - the state is `sending` from just before `POST /refund` until the answer is known, so a
//!   timeout, a crash or a 5xx is looked up (`GET /refund?transaction=`) before any resend;
//! - `transaction_reversed` ("already fully refunded") is looked up the same way;
//! - a webhook never changes a refund by itself: it queues a drive, which asks Paystack.
//!
//! Paystack keeps its fee on a refund; the buyer gets the whole amount back, so the cost is
//! the platform's (the paystack_fee entry is never reversed).

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    clients::paystack::{GatewayError, NewRefund, RefundInfo, RefundStatus, TxStatus},
    domain::{
        ids::{EventId, OrderId, UserId},
        status::{OrderStatus, RefundReason, RefundState},
    },
    error::{AppError, AppResult},
    repo::{
        self,
        orders::OrderRow,
        refunds::{RefundRow, RefundUpdate},
    },
    service::{
        budget::{self, Call},
        drive::{self, Driven, Leased, backoff, lease_seconds},
        events, holds,
    },
    state::AppState,
};

/// How long after an unknown outcome before we conclude from an empty list that the call
/// never arrived: a request Paystack received late would otherwise be sent twice.
fn lookup_delay(state: &AppState, attempts: i32) -> f64 {
    backoff(state, attempts).max(60.0 * state.config.job_retry_base.as_secs_f64())
}

/// `POST /events/:eventId/orders/:orderId/refund`: the owner refunds one paid order in full,
/// before the event's payout has started. Tickets are void at once.
pub async fn refund_order(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    order_id: OrderId,
    note: Option<&str>,
) -> AppResult<OrderRow> {
    let (user_id, event_id, order_id): (Uuid, Uuid, Uuid) =
        (user_id.into(), event_id.into(), order_id.into());
    let event = events::load(state, event_id).await?;
    events::ensure_owner(&event, user_id)?;
    let order = repo::orders::find(&state.db, order_id)
        .await?
        .filter(|o| o.event_id == event_id)
        .ok_or_else(|| AppError::not_found("Order"))?;
    let mut tx = state.db.begin().await?;
    // Under the event's lock: the payout (which takes it too) cannot start in between.
    let locked = repo::events::lock_exclusive(&mut *tx, event_id)
        .await?
        .ok_or_else(|| AppError::not_found("Event"))?;
    if locked.payout_started_at.is_some() {
        return Err(AppError::payout_started());
    }
    let moved =
        repo::orders::owe_back_paid(&mut *tx, &[order_id], RefundReason::OrganizerRefund).await?;
    if moved.is_empty() {
        return Err(AppError::order_not_refundable());
    }
    for (_, tier_id, _) in &moved {
        // Its seats are free again: shedding must not refuse them.
        holds::seats_released(state, *tier_id).await;
    }
    repo::ledger::reverse_and_refund(&mut tx, &[order_id], note).await?;
    tx.commit().await?;
    tracing::info!(%order_id, "order refunded by the organizer");
    holds::publish_status(state, &order.reference, OrderStatus::RefundPending).await;
    state.queues.refunds_best_effort(&[OrderId(order_id)]).await;
    repo::orders::find(&state.db, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order vanished").into())
}

/// Takes the order's refund one or more steps forward, holding its lease.
#[tracing::instrument(skip(state))]
pub async fn drive(state: &AppState, order_id: OrderId) -> AppResult<Driven> {
    let order_id = order_id.0;
    let lease = Uuid::now_v7();
    let Some(refund) =
        repo::refunds::claim(&state.db, order_id, lease, lease_seconds(state)).await?
    else {
        // Finished (a late duplicate webhook) or held by another driver.
        return Ok(match repo::refunds::status_of(&state.db, order_id).await? {
            Some(s) if s != RefundState::Processed => Driven::NotClaimed,
            _ => Driven::Done,
        });
    };
    let _renewal = drive::keep_renewed(state, Leased::Refund(order_id), lease);
    let mut driver = Driver {
        state,
        lease,
        refund,
    };
    let result = driver.run().await;
    if result.is_err() {
        // Let the next job or sweep try at once rather than after the lease runs out.
        let _ = repo::refunds::release(&state.db, driver.refund.id, lease).await;
    }
    result
}

struct Driver<'a> {
    state: &'a AppState,
    lease: Uuid,
    refund: RefundRow,
}

fn metric(outcome: &'static str, reason: RefundReason) {
    metrics::counter!("ticketing_refunds_total", "outcome" => outcome, "reason" => reason.as_str())
        .increment(1);
}

impl Driver<'_> {
    async fn run(&mut self) -> AppResult<Driven> {
        // Each pass either finishes, defers, or moves to a state whose next pass needs no
        // new send; a few passes are always enough.
        for _ in 0..4 {
            let step = match self.refund.status {
                RefundState::Processed => return self.finish(self.refund.paystack_refund_id).await,
                RefundState::Pending | RefundState::Failed => self.send().await?,
                RefundState::Sending => self.look_up().await?,
                RefundState::Processing | RefundState::NeedsAttention => self.check().await?,
            };
            if let Some(done) = step {
                return Ok(done);
            }
        }
        self.defer(self.refund.status, None, 1.0).await
    }

    /// Writes the state back and lets go: try again in `seconds`.
    async fn defer(
        &mut self,
        status: RefundState,
        error: Option<&str>,
        seconds: f64,
    ) -> AppResult<Driven> {
        repo::refunds::set_status(
            &self.state.db,
            self.refund.id,
            self.lease,
            &RefundUpdate {
                status,
                paystack_refund_id: self.refund.paystack_refund_id,
                last_error: error,
                retry_in_seconds: seconds,
                now: self.state.clock.now(),
            },
            true,
        )
        .await?;
        Ok(Driven::Later)
    }

    /// pending/failed → a new `POST /refund`, once due.
    async fn send(&mut self) -> AppResult<Option<Driven>> {
        let state = self.state;
        let r = &self.refund;
        if r.next_attempt_at > state.clock.now() {
            repo::refunds::release(&state.db, r.id, self.lease).await?;
            return Ok(Some(Driven::Later));
        }
        if r.holder_mailed_at.is_none() {
            self.mail_holder(false).await;
        }
        if self.refund.amount == 0 {
            // A free order: nothing to send back (DESIGN.md "Money details").
            return self.finish(None).await.map(Some);
        }
        if !budget::take(state, Call::Refund).await {
            let status = self.refund.status;
            self.defer(status, None, 1.0).await?;
            return Ok(Some(Driven::Throttled));
        }
        let timeout = state.config.paystack_timeout.as_secs_f64();
        let sending = repo::refunds::start_sending(
            &state.db,
            self.refund.id,
            self.lease,
            timeout,
            state.clock.now(),
            timeout + lookup_delay(state, self.refund.attempts),
        )
        .await?;
        if !sending {
            // The lease is gone, or too short to cover the call: the next drive sends.
            let _ = repo::refunds::release(&state.db, self.refund.id, self.lease).await;
            return Ok(Some(Driven::NotClaimed));
        }
        self.refund.status = RefundState::Sending;
        self.refund.attempts += 1;
        let note = format!("{} {}", self.refund.reason, self.refund.order_id);
        let customer_note = self
            .refund
            .note
            .clone()
            .unwrap_or_else(|| "Refund of your ticket order".to_owned());
        let sent = state
            .gateway
            .refund(NewRefund {
                transaction: &self.refund.reference,
                amount: self.refund.amount,
                currency: &self.refund.currency,
                customer_note: &customer_note,
                merchant_note: &note,
            })
            .await;
        match sent {
            Ok(info) => self.apply(info).await.map(Some),
            // Already fully refunded (our earlier call went through): look it up.
            Err(e) if e.code() == Some("transaction_reversed") => Ok(None),
            Err(e) if e.is_insufficient_balance() => {
                // Nothing was created: retried when due, visible until it goes through.
                metric("retry", self.refund.reason);
                let wait = backoff(state, self.refund.attempts);
                self.defer(RefundState::Failed, Some(&e.to_string()), wait)
                    .await
                    .map(Some)
            }
            // Over Paystack's rate limit: nothing was created; back to `pending` until
            // Paystack's window ends (no look-up needed).
            // The attempt `start_sending` counted is taken back: nothing reached Paystack,
            // and the count drives the backoff of real failures.
            Err(GatewayError::Limited { retry_after }) => {
                repo::refunds::uncount_attempt(&state.db, self.refund.id, self.lease).await?;
                self.refund.attempts -= 1;
                self.defer(
                    RefundState::Pending,
                    Some("paystack rate limit"),
                    retry_after.as_secs_f64(),
                )
                .await
                .map(Some)
            }
            Err(e) => {
                // Any other answer (a refusal we cannot be sure of, a 5xx, a timeout) is an
                // unknown outcome: stay `sending`, and look it up before anything is resent.
                if matches!(e, GatewayError::Rejected { .. }) {
                    metric("retry", self.refund.reason);
                }
                let wait = lookup_delay(state, self.refund.attempts);
                self.defer(RefundState::Sending, Some(&e.to_string()), wait)
                    .await
                    .map(Some)
            }
        }
    }

    /// `sending`: did an earlier call create a refund? Adopt it, or send again.
    async fn look_up(&mut self) -> AppResult<Option<Driven>> {
        let state = self.state;
        // Not before the delay, whatever woke us (a webhook of another refund, a duplicate):
        // a lost request that Paystack has not processed yet would not be listed, and a
        // resend would then make two refunds.
        if self.refund.next_attempt_at > state.clock.now() {
            repo::refunds::release(&state.db, self.refund.id, self.lease).await?;
            return Ok(Some(Driven::Later));
        }
        let wait = lookup_delay(state, self.refund.attempts);
        // Within the shared verify budget, without waiting (the lease is short): when it is
        // spent, look again once a slot frees — not an error.
        if let Some(retry_after) = budget::try_now(state, Call::Verify).await {
            return self
                .defer(RefundState::Sending, None, retry_after.as_secs_f64())
                .await
                .map(Some);
        }
        let verified = match state.gateway.verify(&self.refund.reference).await {
            Ok(v) => v,
            Err(e) => {
                return self
                    .defer(RefundState::Sending, Some(&e.to_string()), wait)
                    .await
                    .map(Some);
            }
        };
        let Some(transaction_id) = verified.transaction_id else {
            if verified.status == TxStatus::NotFound {
                return self
                    .defer(
                        RefundState::Failed,
                        Some("Paystack has no such transaction"),
                        wait,
                    )
                    .await
                    .map(Some);
            }
            // A gateway that lists no refunds (the sandbox) refunds at once.
            return self.resend_now().await;
        };
        let found = match state.gateway.list_refunds(transaction_id).await {
            Ok(found) => found,
            Err(e) => {
                return self
                    .defer(RefundState::Sending, Some(&e.to_string()), wait)
                    .await
                    .map(Some);
            }
        };
        let adopt = found
            .iter()
            .find(|f| f.status == RefundStatus::Processed)
            .or_else(|| found.iter().find(|f| f.status != RefundStatus::Failed));
        match adopt {
            Some(info) => self.apply(info.clone()).await.map(Some),
            // No live refund at Paystack: the earlier call never arrived. Send now.
            None => self.resend_now().await,
        }
    }

    /// Back to `pending`, due now, keeping the lease: the next pass sends.
    async fn resend_now(&mut self) -> AppResult<Option<Driven>> {
        repo::refunds::set_status(
            &self.state.db,
            self.refund.id,
            self.lease,
            &RefundUpdate {
                status: RefundState::Pending,
                paystack_refund_id: None,
                last_error: None,
                retry_in_seconds: 0.0,
                now: self.state.clock.now(),
            },
            false,
        )
        .await?;
        self.refund.status = RefundState::Pending;
        self.refund.next_attempt_at = self.state.clock.now();
        Ok(None)
    }

    /// processing/needs_attention: ask Paystack how the refund stands.
    async fn check(&mut self) -> AppResult<Option<Driven>> {
        let Some(id) = self.refund.paystack_refund_id else {
            self.refund.status = RefundState::Sending;
            return Ok(None);
        };
        match self.state.gateway.fetch_refund(id).await {
            Ok(info) => self.apply(info).await.map(Some),
            Err(e) => {
                let wait = backoff(self.state, self.refund.attempts);
                let status = self.refund.status;
                self.defer(status, Some(&e.to_string()), wait)
                    .await
                    .map(Some)
            }
        }
    }

    /// Records what Paystack says of our refund.
    async fn apply(&mut self, info: RefundInfo) -> AppResult<Driven> {
        self.refund.paystack_refund_id = Some(info.id);
        let base = self.state.config.job_retry_base.as_secs_f64();
        match info.status {
            RefundStatus::Processed => self.finish(Some(info.id)).await,
            RefundStatus::Failed => {
                // The money is back in our balance: a new refund when due.
                metric("failed", self.refund.reason);
                let wait = backoff(self.state, self.refund.attempts);
                self.defer(
                    RefundState::Failed,
                    Some("Paystack reported the refund failed"),
                    wait,
                )
                .await
            }
            RefundStatus::NeedsAttention => {
                metric("needs_attention", self.refund.reason);
                self.defer(
                    RefundState::NeedsAttention,
                    Some("Paystack needs the buyer's bank details"),
                    base * 3600.0,
                )
                .await
            }
            RefundStatus::Pending | RefundStatus::Processing | RefundStatus::Unknown(_) => {
                self.defer(RefundState::Processing, None, base * 60.0).await
            }
        }
    }

    /// processed: the refund and the order's `refunded` in one transaction, then the mail.
    async fn finish(&mut self, paystack_refund_id: Option<i64>) -> AppResult<Driven> {
        let state = self.state;
        let mut tx = state.db.begin().await?;
        let updated = repo::refunds::set_status(
            &mut *tx,
            self.refund.id,
            self.lease,
            &RefundUpdate {
                status: RefundState::Processed,
                paystack_refund_id,
                last_error: None,
                retry_in_seconds: 0.0,
                now: self.state.clock.now(),
            },
            true,
        )
        .await?;
        if !updated {
            return Ok(Driven::NotClaimed);
        }
        let refunded = repo::refunds::mark_order_refunded(&mut *tx, self.refund.order_id).await?;
        tx.commit().await?;
        if refunded {
            metric("processed", self.refund.reason);
            metrics::counter!("ticketing_refunded_kobo_total").increment(self.refund.amount as u64);
            tracing::info!(order_id = %self.refund.order_id, amount = self.refund.amount, "refund processed");
            holds::publish_status(state, &self.refund.reference, OrderStatus::Refunded).await;
            self.mail_holder(true).await;
        }
        Ok(Driven::Done)
    }

    /// The holder hears that the refund started (once) and that it was processed.
    async fn mail_holder(&mut self, processed: bool) {
        let state = self.state;
        let r = &self.refund;
        let sent = async {
            let Some(user) = repo::users::find_by_id(&state.db, r.user_id).await? else {
                return Ok::<_, AppError>(());
            };
            let title = repo::events::find(&state.db, r.event_id)
                .await?
                .map(|e| e.title)
                .unwrap_or_default();
            let mail = if processed {
                crate::service::notifications::refund_processed(
                    r.id,
                    &user.email,
                    &user.first_name,
                    &title,
                    r.amount,
                )
            } else {
                crate::service::notifications::refund_started(
                    r.id,
                    &user.email,
                    &user.first_name,
                    &title,
                    r.amount,
                    r.reason,
                )
            };
            crate::service::mail::enqueue(state, &mail).await?;
            if !processed {
                repo::refunds::mark_holder_mailed(&state.db, r.id).await?;
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) if !processed => self.refund.holder_mailed_at = Some(OffsetDateTime::now_utc()),
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "refund mail not queued"),
        }
    }
}
