//! Job workers (apalis on Redis), run in the same process as the HTTP server unless
//! `RUN_MODE` says otherwise. Handlers are thin: they call services and decide only whether a
//! failure is worth retrying.
//!
//! Retries: a failed job is retried in place with exponential backoff from
//! `JOB_RETRY_BASE_MILLIS`; after `JOB_MAX_ATTEMPTS` it is aborted (apalis moves it to the
//! dead set) so that apalis-redis's own rescheduling, which ignores our policy, stops too.

pub mod payment;
pub mod payout;
pub mod refund;
pub mod sweeper;

use std::time::Duration;

use apalis::{
    layers::retry::{
        HasherRng, RetryPolicy,
        backoff::{ExponentialBackoffMaker, MakeBackoff},
    },
    prelude::*,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Starts every worker; the returned task ends once `shutdown` is cancelled and the jobs in
/// flight have finished.
pub fn start(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    // Worker names are leases in Redis: unique per process start, so a restart never waits
    // for its previous lease to lapse.
    let instance = uuid::Uuid::now_v7().simple().to_string();
    let grace = state.config.shutdown_grace;
    let poll = state.config.job_poll_interval;
    let concurrency = 8;

    let pay_state = state.clone();
    let pay_name = format!("{}:payments:{instance}", state.redis.prefix());
    let refund_state = state.clone();
    let refund_name = format!("{}:refunds:{instance}", state.redis.prefix());
    let payout_state = state.clone();
    let payout_name = format!("{}:payouts:{instance}", state.redis.prefix());
    let monitor = Monitor::new()
        .register(move |_run| {
            WorkerBuilder::new(pay_name.clone())
                .backend(pay_state.queues.payments().poll_with_interval(poll))
                .data(pay_state.clone())
                .concurrency(concurrency)
                .retry(retry_policy(&pay_state))
                .build(payment::settle_payment)
        })
        .register(move |_run| {
            WorkerBuilder::new(refund_name.clone())
                .backend(refund_state.queues.refunds().poll_with_interval(poll))
                .data(refund_state.clone())
                .concurrency(concurrency)
                .retry(retry_policy(&refund_state))
                .build(refund::drive_refund)
        })
        .register(move |_run| {
            WorkerBuilder::new(payout_name.clone())
                .backend(payout_state.queues.payouts().poll_with_interval(poll))
                .data(payout_state.clone())
                .concurrency(concurrency)
                .retry(retry_policy(&payout_state))
                .build(payout::drive_payout)
        });
    let sweeper = tokio::spawn(sweeper::run(state.clone(), shutdown.clone()));
    // Checkout links the purchase could not make within Paystack's budget (`service::checkout`).
    let checkout = tokio::spawn(crate::service::checkout::run(
        state.clone(),
        shutdown.clone(),
    ));
    // Mail leaves from the PostgreSQL outbox, not a Redis queue (`service::mail`).
    let mail = tokio::spawn(crate::service::mail::run(
        state.clone(),
        state.mail_wake.clone(),
        shutdown.clone(),
    ));

    tokio::spawn(async move {
        let signal = async move {
            shutdown.cancelled().await;
            Ok::<(), std::io::Error>(())
        };
        if let Err(e) = monitor
            .shutdown_timeout(grace)
            .run_with_signal(signal)
            .await
        {
            tracing::error!(error = %e, "job workers stopped with an error");
        } else {
            tracing::info!("job workers stopped");
        }
        // The sweeper and the mail sender stop on the same token; wait for their current step.
        let _ = sweeper.await;
        let _ = mail.await;
        let _ = checkout.await;
    })
}

fn retry_policy(
    state: &AppState,
) -> apalis::layers::retry::BackoffRetryPolicy<apalis::layers::retry::backoff::ExponentialBackoff> {
    let base = state.config.job_retry_base.max(Duration::from_millis(1));
    let backoff = ExponentialBackoffMaker::new(base, base * 64, 0.25, HasherRng::default())
        .unwrap_or_else(|_| {
            ExponentialBackoffMaker::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                0.25,
                HasherRng::default(),
            )
            .expect("constant backoff parameters are valid")
        })
        .make_backoff();
    RetryPolicy::retries(state.config.job_max_attempts.saturating_sub(1)).with_backoff(backoff)
}

/// The outcome of a refund or payout step as apalis needs it: done, or "try again shortly"
/// (another driver holds the item, or the Paystack budget is spent — what a webhook
/// announced is then looked at again; the sweeper catches it otherwise).
pub(crate) fn step_result(
    outcome: crate::error::AppResult<bool>,
    what: &str,
    attempt: &Attempt,
    max_attempts: usize,
) -> Result<(), BoxDynError> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(job_error(
            anyhow::anyhow!("{what} busy or throttled; retried"),
            false,
            attempt,
            max_attempts,
        )),
        Err(e) => {
            tracing::warn!(what, attempt = attempt.current(), error = %e, "step failed");
            Err(job_error(
                anyhow::anyhow!("{e}"),
                false,
                attempt,
                max_attempts,
            ))
        }
    }
}

/// Turns a handler failure into what apalis needs: retry, or abort once attempts are spent.
pub(crate) fn job_error(
    err: impl Into<BoxDynError>,
    permanent: bool,
    attempt: &Attempt,
    max_attempts: usize,
) -> BoxDynError {
    if permanent || attempt.current() >= max_attempts {
        AbortError::new(err).into()
    } else {
        err.into()
    }
}
