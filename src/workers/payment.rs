//! The payment worker: settles one order (see `service::payments::settle`).

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    error::AppError, queue::PaymentJob, service::payments, state::AppState, workers::job_error,
};

pub async fn settle_payment(
    job: PaymentJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    match payments::settle(&state, &job.reference).await {
        Ok(outcome) => {
            tracing::debug!(reference = %job.reference, ?outcome, "payment job done");
            Ok(())
        }
        Err(e) => {
            // Paystack or the database may be back soon; a bug will not be.
            let permanent = matches!(e, AppError::Internal(_));
            tracing::warn!(reference = %job.reference, attempt = attempt.current(), error = %e, "payment job failed");
            Err(job_error(
                anyhow::anyhow!("{e}"),
                permanent,
                &attempt,
                state.config.job_max_attempts,
            ))
        }
    }
}
