//! Human durations on the command line (`250ms`, `2s`, `10m`), for clap's `value_parser`.

use std::time::Duration;

/// Parses `250ms`, `2s`, `1m30s`... The error names what was expected, so clap can show it.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration such as 250ms, 2s or 1m"))
}

/// Formats a duration the way [`parse`] reads it back.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
