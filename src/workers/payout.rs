//! The payout worker: one step of a payout (see `service::payouts::drive`).

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    queue::PayoutJob,
    service::payouts::{self, Driven},
    state::AppState,
    workers::job_error,
};

pub async fn drive_payout(
    job: PayoutJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let max = state.config.job_max_attempts;
    // Jobs come from a new payout or a transfer.* webhook: verify even a success again.
    match payouts::drive(&state, job.payout_id, true).await {
        Ok(Driven::NotClaimed) => Err(job_error(
            anyhow::anyhow!("payout busy"),
            false,
            &attempt,
            max,
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(payout_id = %job.payout_id, attempt = attempt.current(), error = %e, "payout step failed");
            Err(job_error(anyhow::anyhow!("{e}"), false, &attempt, max))
        }
    }
}
