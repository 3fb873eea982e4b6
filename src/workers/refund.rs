//! The refund worker: one step of an order's refund (see `service::refunds::drive`).

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    queue::RefundJob,
    service::{drive::Driven, refunds},
    state::AppState,
    workers::step_result,
};

pub async fn drive_refund(
    job: RefundJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let done = refunds::drive(&state, job.order_id)
        .await
        .map(|d| !matches!(d, Driven::NotClaimed | Driven::Throttled));
    step_result(done, "refund", &attempt, state.config.job_max_attempts)
}
