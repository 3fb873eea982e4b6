//! The mail worker: sends one message through the configured `Mailer`.

use apalis::prelude::{Attempt, BoxDynError, Data};

use crate::{
    queue::MailJob,
    service::notifications::{self, MailError},
    state::AppState,
    workers::job_error,
};

pub async fn send_mail(
    job: MailJob,
    state: Data<AppState>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let email = &job.email;
    match notifications::deliver(&state, email).await {
        Ok(id) => {
            metrics::counter!("ticketing_mail_total", "kind" => email.kind.clone(), "outcome" => "sent")
                .increment(1);
            tracing::info!(kind = %email.kind, provider_id = %id, attempt = attempt.current(), "mail sent");
            Ok(())
        }
        Err(err) => {
            let permanent = matches!(err, MailError::Permanent(_));
            let outcome = if permanent || attempt.current() >= state.config.job_max_attempts {
                "failed"
            } else {
                "retry"
            };
            metrics::counter!("ticketing_mail_total", "kind" => email.kind.clone(), "outcome" => outcome)
                .increment(1);
            tracing::warn!(kind = %email.kind, attempt = attempt.current(), error = %err, outcome, "mail not sent");
            Err(job_error(
                err,
                permanent,
                &attempt,
                state.config.job_max_attempts,
            ))
        }
    }
}
