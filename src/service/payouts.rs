//! Payouts: `PAYOUT_DELAY_SECONDS` after an event ends, one transfer of the organizer's share
//! (sales − reversals − platform fees, from the ledger) to the organizer's recipient.
//!
//! Creating the payout marks the event's payout as started under the event row's lock, the
//! same lock cancelling and refunding take, so no refund can start after the amount was
//! fixed. Sending follows DESIGN.md "Money details": attempt n pays `payout-<id>-<n>`; the
//! state is `sent` from just before `POST /transfer` until the answer is known, and a `sent`
//! attempt is looked up by its reference (`GET /transfer/verify`) before anything is resent;
//! attempt n+1 starts only once attempt n is final (failed or reversed). Paystack dedupes on
//! the reference too, so even a lost lease cannot pay twice.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    clients::paystack::{GatewayError, NewTransfer, TransferInfo, TransferStatus},
    domain::{
        ids::PayoutId,
        status::{PayoutStatus, TransferState},
    },
    error::{AppError, AppResult},
    repo::{
        self,
        payouts::{NewPayout, PayoutRow, PayoutUpdate},
    },
    service::{
        budget::{self, Call},
        drive::{self, Driven, Leased, backoff, lease_seconds},
    },
    state::AppState,
};

/// The payout a transfer reference belongs to (`payout-<id>-<attempt>`).
pub fn payout_of(reference: &str) -> Option<PayoutId> {
    let rest = reference.strip_prefix("payout-")?;
    let (id, attempt) = rest.rsplit_once('-')?;
    attempt.parse::<u32>().ok()?;
    Uuid::parse_str(id).ok().map(PayoutId)
}

/// Starts the payout of every event that is due; returns how many were started.
pub async fn start_due(state: &AppState) -> AppResult<usize> {
    let delay = state.config.payout_delay.as_secs_f64();
    let mut started = 0;
    for event_id in repo::payouts::due_events(&state.db, state.clock.now(), delay, 100).await? {
        match start(state, event_id).await {
            Ok(Some(payout_id)) => {
                started += 1;
                if let Err(e) = state.queues.payout(payout_id).await {
                    tracing::warn!(error = %e, %payout_id, "payout job not queued; the sweeper will drive it");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, %event_id, "payout not started; next pass retries")
            }
        }
    }
    Ok(started)
}

/// One event's payout: marked started, amount fixed from the ledger, drawn down, in one
/// transaction. `Some(id)` when there is a transfer to send.
async fn start(state: &AppState, event_id: Uuid) -> AppResult<Option<PayoutId>> {
    let delay = state.config.payout_delay.as_secs_f64();
    let mut tx = state.db.begin().await?;
    let Some((organizer_id, recipient, changed_at)) =
        repo::payouts::start_for_event(&mut *tx, event_id, state.clock.now(), delay).await?
    else {
        return Ok(None);
    };
    let amount = repo::ledger::event_share(&mut *tx, event_id).await?;
    let id = Uuid::now_v7();
    let now = state.clock.now();
    repo::payouts::insert(
        &mut *tx,
        NewPayout {
            id,
            event_id,
            organizer_id,
            amount,
            recipient_code: &recipient,
            settled: amount == 0,
            not_before: cooldown_end(state, changed_at).unwrap_or(now),
        },
    )
    .await?;
    if amount > 0 {
        repo::ledger::record_payout(&mut *tx, id, event_id, organizer_id, amount).await?;
    }
    tx.commit().await?;
    tracing::info!(%event_id, payout_id = %id, amount, "payout started");
    Ok((amount > 0).then_some(PayoutId(id)))
}

/// When payouts to an account changed at `changed_at` may start.
fn cooldown_end(state: &AppState, changed_at: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    changed_at.map(|c| c + state.config.payout_account_cooldown)
}

fn metric(outcome: &'static str, amount: i64) {
    metrics::counter!("ticketing_payouts_total", "outcome" => outcome).increment(1);
    if outcome == "success" {
        metrics::counter!("ticketing_paid_out_kobo_total").increment(amount.max(0) as u64);
    }
}

/// Takes a payout one or more steps forward, holding its lease. `recheck`: asked by a
/// `transfer.*` webhook, so even a successful payout is verified again (it may be reversed).
#[tracing::instrument(skip(state))]
pub async fn drive(state: &AppState, payout_id: PayoutId, recheck: bool) -> AppResult<Driven> {
    let payout_id = payout_id.0;
    let lease = Uuid::now_v7();
    let Some(payout) =
        repo::payouts::claim(&state.db, payout_id, lease, lease_seconds(state)).await?
    else {
        return Ok(Driven::NotClaimed);
    };
    let _renewal = drive::keep_renewed(state, Leased::Payout(payout_id), lease);
    let mut driver = Driver {
        state,
        lease,
        p: payout,
    };
    let result = driver.run(recheck).await;
    if result.is_err() {
        let _ = repo::payouts::release(&state.db, payout_id, lease).await;
    }
    result
}

struct Driver<'a> {
    state: &'a AppState,
    lease: Uuid,
    p: PayoutRow,
}

impl Driver<'_> {
    async fn run(&mut self, recheck: bool) -> AppResult<Driven> {
        if self.p.status == PayoutStatus::Success && !recheck {
            repo::payouts::release(&self.state.db, self.p.id, self.lease).await?;
            return Ok(Driven::Done);
        }
        for _ in 0..4 {
            let step = match self.p.transfer_state {
                TransferState::New => self.send().await?,
                _ => self.look_up().await?,
            };
            if let Some(done) = step {
                return Ok(done);
            }
        }
        self.write(None, 1.0, true).await
    }

    fn backoff(&self) -> f64 {
        backoff(self.state, self.p.attempt)
    }

    /// Writes the payout back; with `release`, lets go of it until `seconds` from now.
    async fn write(
        &mut self,
        error: Option<&str>,
        seconds: f64,
        release: bool,
    ) -> AppResult<Driven> {
        repo::payouts::update(
            &self.state.db,
            self.p.id,
            self.lease,
            &PayoutUpdate {
                status: self.p.status,
                transfer_state: self.p.transfer_state,
                attempt: self.p.attempt,
                recipient_code: &self.p.recipient_code,
                transfer_code: self.p.transfer_code.as_deref(),
                last_error: error,
                retry_in_seconds: seconds,
                now: self.state.clock.now(),
                release,
            },
        )
        .await?;
        Ok(if self.p.status == PayoutStatus::Success {
            Driven::Done
        } else {
            Driven::Later
        })
    }

    /// A new attempt (or the same attempt again, when Paystack never got it).
    async fn send(&mut self) -> AppResult<Option<Driven>> {
        let state = self.state;
        let now = state.clock.now();
        // An attempt pays the organizer's current account, unless it changed within the
        // cooldown: then it waits (a stolen session cannot redirect the money at once).
        let (recipient, changed_at) =
            repo::payouts::organizer_account(&state.db, self.p.organizer_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("payout without its organizer"))?;
        if let Some(end) = cooldown_end(state, changed_at)
            && end > now
        {
            let wait = (end - now).as_seconds_f64();
            return self
                .write(Some("waiting for the bank account cooldown"), wait, true)
                .await
                .map(Some);
        }
        if self.p.next_attempt_at > now {
            repo::payouts::release(&state.db, self.p.id, self.lease).await?;
            return Ok(Some(Driven::Later));
        }
        if !budget::take(state, Call::Transfer).await {
            return self.write(None, 1.0, true).await.map(Some);
        }
        self.p.recipient_code = recipient;
        self.p.transfer_state = TransferState::Sent;
        self.p.status = PayoutStatus::Pending;
        self.write(None, 0.0, false).await?;
        let reference = self.p.reference();
        let sent = state
            .gateway
            .transfer(NewTransfer {
                amount: self.p.amount,
                recipient: &self.p.recipient_code,
                reference: &reference,
                reason: "Ticket sales payout",
            })
            .await;
        match sent {
            Ok(info) => self.apply(info).await.map(Some),
            // Paystack has this reference already: look it up.
            Err(e) if e.code() == Some("duplicate_reference") => Ok(None),
            Err(e @ GatewayError::Rejected { .. }) => {
                // Refused (insufficient balance, a bad recipient): nothing was created, so the
                // same attempt is sent again when due; visible as failed meanwhile.
                metric("retry", self.p.amount);
                self.p.status = PayoutStatus::Failed;
                self.p.transfer_state = TransferState::New;
                let wait = self.backoff();
                self.write(Some(&e.to_string()), wait, true).await.map(Some)
            }
            // Over Paystack's rate limit: nothing was created; the same attempt goes again
            // when Paystack's window ends (no look-up needed).
            Err(GatewayError::Limited { retry_after }) => {
                self.p.transfer_state = TransferState::New;
                self.write(Some("paystack rate limit"), retry_after.as_secs_f64(), true)
                    .await
                    .map(Some)
            }
            Err(e) => {
                // Unknown outcome: stays `sent`; looked up before anything is resent.
                let wait = self.backoff();
                self.write(Some(&e.to_string()), wait, true).await.map(Some)
            }
        }
    }

    /// `sent` or `queued`: what does Paystack say of this attempt's reference?
    async fn look_up(&mut self) -> AppResult<Option<Driven>> {
        match self
            .state
            .gateway
            .verify_transfer(&self.p.reference())
            .await
        {
            Ok(Some(info)) => self.apply(info).await.map(Some),
            Ok(None) => {
                // Never arrived: the same attempt, the same reference, sent now.
                self.p.transfer_state = TransferState::New;
                self.p.next_attempt_at = self.state.clock.now();
                Ok(None)
            }
            Err(e) => {
                let wait = self.backoff();
                self.write(Some(&e.to_string()), wait, true).await.map(Some)
            }
        }
    }

    async fn apply(&mut self, info: TransferInfo) -> AppResult<Driven> {
        if info.transfer_code.is_some() {
            self.p.transfer_code = info.transfer_code;
        }
        let base = self.state.config.job_retry_base.as_secs_f64();
        match info.status {
            TransferStatus::Success => {
                let first = self.p.status != PayoutStatus::Success;
                self.p.status = PayoutStatus::Success;
                self.p.transfer_state = TransferState::Queued;
                let done = self.write(None, 0.0, true).await?;
                if first {
                    metric("success", self.p.amount);
                    tracing::info!(payout_id = %self.p.id, amount = self.p.amount, "payout sent");
                }
                Ok(done)
            }
            TransferStatus::Failed(_) | TransferStatus::Reversed => {
                // Final: this attempt moved no money. The next attempt gets a new reference.
                let reversed = info.status == TransferStatus::Reversed;
                metric(if reversed { "reversed" } else { "failed" }, self.p.amount);
                self.p.status = if reversed {
                    PayoutStatus::Reversed
                } else {
                    PayoutStatus::Failed
                };
                self.p.transfer_state = TransferState::New;
                self.p.attempt += 1;
                let wait = self.backoff();
                let why = format!("transfer {:?}", info.status);
                self.write(Some(&why), wait, true).await
            }
            TransferStatus::NotFinal(_) => {
                self.p.transfer_state = TransferState::Queued;
                self.write(None, base * 60.0, true).await
            }
        }
    }
}

/// `GET /users/organizer/payouts`.
pub struct Balance {
    pub held_amount: i64,
    pub payable_amount: i64,
    pub paid_out_amount: i64,
    pub items: Vec<PayoutRow>,
}

pub async fn balance(state: &AppState, user_id: Uuid) -> AppResult<Balance> {
    let organizer_id = repo::organizers::id_for_user(&state.db, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("Organizer profile"))?;
    let delay = state.config.payout_delay.as_secs_f64();
    let mut b = Balance {
        held_amount: 0,
        payable_amount: 0,
        paid_out_amount: 0,
        items: repo::payouts::for_organizer(&state.db, organizer_id, 100).await?,
    };
    for e in
        repo::ledger::organizer_balances(&state.db, organizer_id, state.clock.now(), delay).await?
    {
        if e.paid_out > 0 {
            b.paid_out_amount += e.paid_out;
        } else if e.payable {
            b.payable_amount += e.share;
        } else {
            b.held_amount += e.share;
        }
    }
    Ok(b)
}
