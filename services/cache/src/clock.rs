//! The hybrid clock every write version comes from: wall-clock microseconds since the Unix
//! epoch, never behind the last stamp (so two stamps in one microsecond, or a clock stepped
//! back, still give increasing versions). Stores, the client library and the sidecar each
//! keep one; a store also moves its clock past versions it receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::Version;

#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

impl HybridClock {
    /// A new version: the wall clock in microseconds, or one past the last stamp.
    pub fn stamp(&self) -> Version {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let previous = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(wall.max(last + 1))
            })
            .expect("the update always gives a value");
        wall.max(previous + 1)
    }

    /// Moves the clock past a version seen from elsewhere, so a later stamp here wins.
    pub fn observe(&self, version: Version) {
        self.last.fetch_max(version, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_pass_what_was_observed() {
        let clock = HybridClock::default();
        let a = clock.stamp();
        let b = clock.stamp();
        assert!(b > a);
        clock.observe(b + 1_000_000_000);
        assert!(clock.stamp() > b + 1_000_000_000);
    }
}
