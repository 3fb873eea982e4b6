//! The service's "now". Business rules (is the event over, is the payout due, has the bank
//! account's cooldown passed, is a date in the future) read it from here, never from the
//! wall clock directly, so tests move time by advancing the clock instead of editing rows.
//!
//! In production the offset is zero and `now` is the wall clock. What stays on other clocks,
//! on purpose: TOTP codes and token expiry (defined on wall time, shared with phones and
//! other instances), and the database's `now()` for a hold's expiry and for leases (shared
//! by every instance, so they must agree on one clock).

use std::sync::atomic::{AtomicI64, Ordering};

use time::{Duration, OffsetDateTime};

#[derive(Debug, Default)]
pub struct Clock {
    /// Added to the wall clock: only ever non-zero in tests.
    offset_nanos: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::nanoseconds(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// Moves "now" forward (tests: an event ends, a cooldown passes).
    pub fn advance(&self, by: std::time::Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Whatever can tell the time: the app's state, or (for code without one) the wall clock.
pub trait Now {
    fn now(&self) -> OffsetDateTime;
}

impl Now for () {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!(clock.now() - before >= Duration::hours(1));
    }
}
