//! Instants on the command line (`--since 1h`, `--until
//! 2026-12-06T03:12:00Z`, `--at 1764990720`), parsed in one place so every
//! command accepts the same forms and refuses the rest with the same words.

use crate::duration::parse_duration;

/// Why a time argument does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    #[error("is empty: {FORMS}")]
    Empty,
    #[error("`{0}` is not a time: {FORMS}")]
    Unrecognised(String),
    #[error("`{input}`: the duration {reason}")]
    Duration { input: String, reason: String },
    #[error(
        "`{0}` is after 2100 as unix seconds (milliseconds given where seconds are expected?)"
    )]
    TooLate(String),
    #[error("`{input}`: RFC 3339 time {reason}")]
    Rfc3339 { input: String, reason: String },
}

/// The forms accepted, for error messages and `--help`.
const FORMS: &str = "use a duration ago (`90s`, `15m`, `1h`, `2h30m`, `7d`), an RFC 3339 time (`2026-12-06T03:12:00Z`), unix seconds, or `now`";

/// 2100-01-01T00:00:00Z in unix seconds: a larger bare number is taken for
/// milliseconds typed where seconds belong, not for a far-future instant.
const MAX_UNIX_SECS: i64 = 4_102_444_800;

/// Parses an instant, in unix milliseconds: `now`, a duration before
/// `now_ms` (`1h`), unix seconds (`1764990720`, `1764990720.25`), or RFC 3339
/// (`2026-12-06T03:12:00Z`, `2026-12-06T04:12:00.5+01:00`).
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, InstantError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(InstantError::Empty);
    }
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(ms) = unix_seconds(s) {
        return ms;
    }
    // RFC 3339 always has a date (`-`) and a time (`:`); a duration has
    // neither.
    if s.contains('-') && s.contains(':') {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| InstantError::Rfc3339 {
                input: s.to_string(),
                reason: e.to_string(),
            })?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return i64::try_from(ms).map_err(|_| InstantError::Unrecognised(s.to_string()));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        let d = parse_duration(s).map_err(|e| InstantError::Duration {
            input: s.to_string(),
            reason: e.to_string(),
        })?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ms));
    }
    Err(InstantError::Unrecognised(s.to_string()))
}

/// Unix seconds with an optional fraction (`1764990720`, `1764990720.25`),
/// rounded to the millisecond; `None` when `s` is not of that form.
fn unix_seconds(s: &str) -> Option<Result<i64, InstantError>> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let too_late = || InstantError::TooLate(s.to_string());
    let secs: i64 = match whole.parse() {
        Ok(n) if n <= MAX_UNIX_SECS => n,
        _ => return Some(Err(too_late())),
    };
    // Milliseconds from the first three fraction digits, rounded by the
    // fourth.
    let mut ms = 0i64;
    for i in 0..3 {
        ms = ms * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    if frac.as_bytes().get(3).is_some_and(|b| *b >= b'5') {
        ms += 1;
    }
    Some(Ok(secs * 1000 + ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, i64)] = &[
            ("now", NOW),
            ("1h", NOW - 3_600_000),
            ("2h30m", NOW - 9_000_000),
            ("90s", NOW - 90_000),
            ("7d", NOW - 7 * 86_400_000),
            ("1764990720", 1_764_990_720_000),
            ("1764990720.25", 1_764_990_720_250),
            ("1764990720.1229999", 1_764_990_720_123),
            ("1764990720.0005", 1_764_990_720_001),
            ("2026-12-06T03:12:00Z", 1_796_526_720_000),
            ("2026-12-06T04:12:00.250+01:00", 1_796_526_720_250),
            (" 1h ", NOW - 3_600_000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_instant(input, NOW), Ok(*want), "{input}");
        }
    }

    #[test]
    fn refusals_name_the_rule() {
        for (input, needle) in [
            ("", "is empty"),
            ("yesterday", "is not a time: use a duration ago"),
            ("5x", "unknown unit `x`"),
            ("0s", "must be positive"),
            ("1765000000000", "milliseconds given where seconds"),
            ("2026-13-06T03:12:00Z", "RFC 3339"),
            ("2026-12-06 03:12", "RFC 3339"),
            ("-1h", "is not a time"),
            ("1764990720.", "is not a time"),
            ("1764990720.5.1", "is not a time"),
        ] {
            let e = parse_instant(input, NOW).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
