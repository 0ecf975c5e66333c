//! Time as the services use it: the wall clock they stamp things with (milliseconds since the
//! Unix epoch: record timestamps, segment ages, registration times; durations and timeouts
//! use `Instant`, never this), and the beat of their periodic background tasks ([`Every`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The beat of a background task that runs every `period` until shutdown:
/// `while every.tick().await { ... }`. The first tick is at once; after a late tick (a stopped
/// process, a long run of the task) the next comes a whole period later, never in a burst.
pub struct Every {
    interval: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Every {
    pub fn new(period: Duration, shutdown: &CancellationToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval,
            shutdown: shutdown.clone(),
        }
    }

    /// Waits for the next beat: true then, false once shutdown began.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => !self.shutdown.is_cancelled(),
            () = self.shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn beats_every_period_and_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut every = Every::new(Duration::from_millis(100), &shutdown);
        let start = tokio::time::Instant::now();
        assert!(every.tick().await);
        assert!(every.tick().await);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // A task that ran late: the next beat is a period after the late one.
        tokio::time::advance(Duration::from_millis(350)).await;
        assert!(every.tick().await);
        let late = tokio::time::Instant::now();
        assert!(every.tick().await);
        assert_eq!(late.elapsed(), Duration::from_millis(100));
        shutdown.cancel();
        assert!(!every.tick().await);
    }
}
