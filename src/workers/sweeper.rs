//! The sweeper: every `SWEEP_INTERVAL_SECONDS`, on every instance that runs workers. Safe to
//! run concurrently — each transition it makes is a guarded statement — so there is no
//! leader election; what one instance does, another's attempt finds already done.

use tokio_util::sync::CancellationToken;

use crate::{app::AppState, service::payments};

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match payments::sweep(&state).await {
            Ok((0, 0)) => {}
            Ok((expired, redriven)) => {
                tracing::info!(
                    expired,
                    redriven,
                    "sweep: holds expired, paid orders re-driven"
                );
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; next pass retries"),
        }
    }
    tracing::info!("sweeper stopped");
}
