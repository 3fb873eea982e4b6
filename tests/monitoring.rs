//! The real-Prometheus test (tests/api/monitoring.rs) in a test binary of its own. The metrics
//! recorder is global to a process: in the shared `api` binary every other test's counters
//! would show on this app's /metrics and could fire its alerts for it.

#[allow(dead_code)]
#[path = "api/fakes/mod.rs"]
mod fakes;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/monitoring.rs"]
mod monitoring;
