//! Byte sizes on the command line (`64m`, `512k`, `1g`, or bytes), for clap's `value_parser`.

/// Parses `64m`, `512K`, `1g` or a number of bytes; zero is refused. The error names what was
/// expected, so clap can show it.
pub fn parse(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix(['k', 'm', 'g']) {
        Some(digits) => (digits, &lower[digits.len()..]),
        None => (lower.as_str(), ""),
    };
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with k, m or g)"))?;
    let scale = match unit {
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => 1,
    };
    number
        .checked_mul(scale)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} must be above zero and fit in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse("64m"), Ok(64 << 20));
        assert_eq!(parse("512K"), Ok(512 << 10));
        assert_eq!(parse("1000"), Ok(1000));
        assert!(parse("0").is_err());
        assert!(parse("lots").unwrap_err().contains("lots"));
        assert!(parse("99999999999999999g").is_err());
    }
}
