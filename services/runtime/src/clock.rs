//! The wall clock as the services stamp things with it: milliseconds since the Unix epoch
//! (record timestamps, segment ages, registration times). Durations and timeouts use
//! `Instant`, never this.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
