//! The payout worker: one step of a payout (see `service::payouts::drive`).

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    queue::PayoutJob,
    service::{drive::Driven, payouts},
    state::AppState,
    workers::step_result,
};

pub async fn drive_payout(
    job: PayoutJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    // Jobs come from a new payout or a transfer.* webhook: verify even a success again.
    let done = payouts::drive(&state, job.payout_id, true)
        .await
        .map(|d| d != Driven::NotClaimed);
    step_result(done, "payout", &attempt, state.config.job_max_attempts)
}
