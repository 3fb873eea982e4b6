//! Mail out: the outbox in PostgreSQL and the sender that drains it (one per instance).
//!
//! - **Nothing lost.** `enqueue` writes the message to `mail_outbox`; Redis holds none of it.
//!   A mail counts as sent only when Resend accepted it (`status = 'sent'`).
//! - **Most urgent first.** Reset codes, then tickets and money, then everything else
//!   (`priority`): a reset code never waits behind a wave of welcome mails.
//! - **A sale's pace.** Up to 100 messages go in one `POST /emails/batch` (links, never
//!   attachments, which the batch endpoint drops), and every instance shares one budget of
//!   `MAIL_REQUESTS_PER_SECOND` requests (Resend allows 5 per team), counted in Redis. A
//!   1,000-order sale's ticket mail is ten requests: two seconds at the default pace.
//! - **Exactly one send per message, crash or not.** A batch is written down (`batch_id`)
//!   before it is sent and is sent under its own idempotency key; a batch left behind by a
//!   crash or a failure is sent again, the same rows under the same key, so Resend
//!   deduplicates it. A batch Resend refuses as a whole is split into single sends.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    clients::mail::{Email, MailError},
    error::AppResult,
    repo::{self, mail::OutboxRow},
    state::AppState,
};

/// Messages per Resend batch request (the endpoint's maximum).
pub const BATCH: i64 = 100;

/// How long a claimed batch is a sender's before another may send it again.
const LEASE_SECONDS: f64 = 60.0;

fn priority(kind: &str) -> i16 {
    match kind {
        "password_reset" => 0,
        "tickets_issued"
        | "purchase_failed"
        | "refund_started"
        | "refund_processed"
        | "payout_account_changed" => 1,
        _ => 2,
    }
}

/// Queues a message (once per idempotency key) and wakes this instance's sender.
pub async fn enqueue(state: &AppState, email: &Email) -> AppResult<()> {
    enqueue_in(&state.db, email).await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// Queues a message inside the caller's transaction: it exists exactly when the change that
/// called for it does. The sender finds it on its next poll.
pub async fn enqueue_in(db: impl sqlx::PgExecutor<'_>, email: &Email) -> sqlx::Result<bool> {
    repo::mail::enqueue(
        db,
        repo::mail::NewMail {
            kind: &email.kind,
            priority: priority(&email.kind),
            to_address: &email.to,
            subject: &email.subject,
            html: &email.html,
            body_text: &email.text,
            idempotency_key: &email.idempotency_key,
        },
    )
    .await
}

fn email_of(row: &OutboxRow) -> Email {
    Email {
        to: row.to_address.clone(),
        subject: row.subject.clone(),
        html: row.html.clone(),
        text: row.body_text.clone(),
        kind: row.kind.clone(),
        idempotency_key: row.idempotency_key.clone(),
    }
}

/// Drains the outbox until `shutdown`: the sender of this instance.
pub async fn run(state: AppState, wake: Arc<Notify>, shutdown: CancellationToken) {
    let poll = state
        .config
        .job_poll_interval
        .max(Duration::from_millis(20));
    let mut last_gauge = std::time::Instant::now();
    while !shutdown.is_cancelled() {
        let worked = match send_one_batch(&state, &shutdown).await {
            Ok(worked) => worked,
            Err(e) => {
                tracing::warn!(error = %e, "mail sender: outbox unavailable");
                false
            }
        };
        if last_gauge.elapsed() > Duration::from_secs(5) {
            last_gauge = std::time::Instant::now();
            if let Ok(n) = repo::mail::backlog(&state.db).await {
                metrics::gauge!("ticketing_mail_backlog").set(n as f64);
            }
        }
        if !worked {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Claims one batch (a due retry first, else a new one), waits for the shared budget, sends
/// it and records the outcome. False when there was nothing to send.
async fn send_one_batch(state: &AppState, shutdown: &CancellationToken) -> AppResult<bool> {
    let (batch_id, rows) = match repo::mail::claim_due_batch(&state.db, LEASE_SECONDS).await? {
        Some(batch) => batch,
        None => {
            let batch_id = Uuid::now_v7();
            let rows =
                repo::mail::claim_new_batch(&state.db, batch_id, BATCH, LEASE_SECONDS).await?;
            if rows.is_empty() {
                return Ok(false);
            }
            (batch_id, rows)
        }
    };
    if !take_budget(state, shutdown).await {
        // Shutting down: the batch is claimed and is sent again when its lease runs out.
        return Ok(false);
    }
    let emails: Vec<Email> = rows.iter().map(email_of).collect();
    let key = format!("batch-{batch_id}");
    let sent = if emails.len() == 1 {
        state.mailer.send(&emails[0]).await.map(|id| vec![id])
    } else {
        state.mailer.send_batch(&key, &emails).await
    };
    metrics::histogram!("ticketing_mail_batch_size").record(emails.len() as f64);
    match sent {
        Ok(provider_ids) => {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            repo::mail::mark_sent(&state.db, &ids, &provider_ids).await?;
            let now = time::OffsetDateTime::now_utc();
            for row in &rows {
                metrics::counter!("ticketing_mail_total", "kind" => row.kind.clone(), "outcome" => "sent")
                    .increment(1);
                metrics::histogram!("ticketing_mail_queue_seconds", "kind" => row.kind.clone())
                    .record((now - row.created_at).as_seconds_f64().max(0.0));
            }
            tracing::info!(messages = rows.len(), %batch_id, "mail sent");
        }
        Err(MailError::Temporary {
            message,
            retry_after,
        }) => {
            // Given up by age, never by count: a day of 429s or an outage is waited out
            // (Resend keeps idempotency keys for 24 hours, so a resend stays safe that long).
            let oldest = rows.iter().map(|r| r.created_at).min();
            let age = oldest.map(|t| time::OffsetDateTime::now_utc() - t);
            if age.is_some_and(|a| a > time::Duration::hours(23)) {
                give_up(state, batch_id, &rows, &message).await?;
            } else {
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                let backoff = retry_after.unwrap_or_else(|| {
                    (state.config.job_retry_base * 2u32.saturating_pow(attempts.min(12) as u32))
                        .min(Duration::from_secs(300))
                });
                tracing::warn!(error = %message, attempts, %batch_id, "mail not sent; the same batch goes again");
                // The dashboard's "mail failing" panel counts retries too.
                for row in &rows {
                    metrics::counter!("ticketing_mail_total", "kind" => row.kind.clone(), "outcome" => "retry")
                        .increment(1);
                }
                repo::mail::retry_batch(&state.db, batch_id, backoff.as_secs_f64(), &message)
                    .await?;
            }
        }
        Err(MailError::KeyConflict(message)) => {
            give_up(state, batch_id, &rows, &message).await?;
        }
        Err(MailError::Permanent(message)) if rows.len() > 1 => {
            tracing::warn!(error = %message, %batch_id, "batch refused; its messages go one by one");
            repo::mail::split_batch(&state.db, batch_id, &message).await?;
        }
        Err(MailError::Permanent(message)) => give_up(state, batch_id, &rows, &message).await?,
    }
    Ok(true)
}

async fn give_up(
    state: &AppState,
    batch_id: Uuid,
    rows: &[OutboxRow],
    message: &str,
) -> AppResult<()> {
    for row in rows {
        metrics::counter!("ticketing_mail_total", "kind" => row.kind.clone(), "outcome" => "failed")
            .increment(1);
    }
    tracing::error!(error = %message, %batch_id, "mail given up");
    repo::mail::fail_batch(&state.db, batch_id, message).await?;
    Ok(())
}

/// One request's worth of the budget every instance shares: `MAIL_REQUESTS_PER_SECOND` in a
/// one-second window in Redis. Without Redis, this instance keeps to the rate alone (the
/// fallback cannot see other instances; Resend's 429 and the retry cover the rest).
async fn take_budget(state: &AppState, shutdown: &CancellationToken) -> bool {
    let per_second = state.config.mail_requests_per_second.max(1);
    loop {
        let (wait, then_go) = match crate::service::budget::window_slot(
            state,
            "mail:budget",
            per_second,
        )
        .await
        {
            Ok(None) => return true,
            Ok(Some(wait)) => (wait, false),
            Err(e) => {
                tracing::warn!(error = %e, "mail budget unavailable; pacing this instance alone");
                (Duration::from_millis(1_000 / u64::from(per_second)), true)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        if then_go {
            return true;
        }
    }
}
