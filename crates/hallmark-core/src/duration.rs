//! Human durations for TTLs and intervals in flags and config: `90s`, `15m`,
//! `1h`, `2h30m`, `7d`, or a bare number of seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty")]
    Empty,
    #[error(
        "has a number with no unit or a unit with no number (use e.g. `90s`, `15m`, `1h`, `2h30m`)"
    )]
    Malformed,
    #[error("has an unknown unit `{0}` (use ms, s, m, h or d)")]
    UnknownUnit(String),
    #[error("is zero; a duration must be positive")]
    Zero,
    #[error("is too large")]
    Overflow,
}

/// Parses a positive duration.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return if secs == 0 {
            Err(DurationError::Zero)
        } else {
            Ok(Duration::from_secs(secs))
        };
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed);
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow)?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(DurationError::Malformed);
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or(DurationError::Overflow)?;
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration::from_millis(total))
}

/// Prints a duration in the shortest form [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
    }

    #[test]
    fn rejects() {
        assert_eq!(parse_duration("").unwrap_err(), DurationError::Empty);
        assert_eq!(parse_duration("0").unwrap_err(), DurationError::Zero);
        assert_eq!(parse_duration("0s").unwrap_err(), DurationError::Zero);
        assert_eq!(parse_duration("h").unwrap_err(), DurationError::Malformed);
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            DurationError::UnknownUnit("x".into())
        );
        assert_eq!(parse_duration("-5s").unwrap_err(), DurationError::Malformed);
        assert_eq!(
            parse_duration("99999999999999999999d").unwrap_err(),
            DurationError::Overflow
        );
    }

    #[test]
    fn round_trips() {
        for s in [1u64, 59, 60, 3600, 9000, 86400 + 61] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
