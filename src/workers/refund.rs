//! The refund worker: one step of an order's refund (see `service::refunds::drive`).

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    queue::RefundJob,
    service::refunds::{self, Driven},
    state::AppState,
    workers::job_error,
};

pub async fn drive_refund(
    job: RefundJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let max = state.config.job_max_attempts;
    match refunds::drive(&state, job.order_id).await {
        // Another driver holds it (a webhook raced the first send): try again shortly, so
        // what the webhook announced is looked at; the sweeper catches it otherwise.
        Ok(Driven::NotClaimed | Driven::Throttled) => Err(job_error(
            anyhow::anyhow!("refund busy or throttled; retried"),
            false,
            &attempt,
            max,
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(order_id = %job.order_id, attempt = attempt.current(), error = %e, "refund step failed");
            Err(job_error(anyhow::anyhow!("{e}"), false, &attempt, max))
        }
    }
}
