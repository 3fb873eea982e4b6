//! The sweeper task: every `SWEEP_INTERVAL_SECONDS`, on every instance that runs workers
//! (see `service::sweeper` for why that is safe).

use tokio_util::sync::CancellationToken;

use crate::{service::sweeper, state::AppState};

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match sweeper::sweep(&state).await {
            Ok(done) if done == sweeper::Sweep::default() => {}
            Ok(done) => tracing::info!(?done, "sweep"),
            Err(e) => tracing::warn!(error = %e, "sweep failed; next pass retries"),
        }
    }
    tracing::info!("sweeper stopped");
}
