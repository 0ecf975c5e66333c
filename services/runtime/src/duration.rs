//! Human durations on the command line (`250ms`, `2s`, `10m`), for clap's `value_parser`.

use std::time::Duration;

/// Parses `250ms`, `2s`, `1m30s`... The error names what was expected, so clap can show it.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration such as 250ms, 2s or 1m"))
}

/// Formats a duration the way [`parse`] reads it back, as one word in the largest unit that
/// holds it whole, the way a person writes it in a flag or a scenario: `2s`, `1500ms`, `5m`
/// (humantime's own `1s 500ms` read as two steps in a scenario's list).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if nanos == 0 {
        return "0s".to_string();
    }
    let (size, unit) = UNITS
        .iter()
        .find(|(size, _)| nanos.is_multiple_of(*size))
        .copied()
        .unwrap_or((1, "ns"));
    format!("{}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_one_word_that_parses_back() {
        for (d, text) in [
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_micros(250), "250us"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text).unwrap(), d);
        }
    }
}
