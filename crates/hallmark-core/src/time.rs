//! Unix time conversions, written once.
//!
//! Pure functions of a `SystemTime`: this crate reads no clock, so callers
//! pass `SystemTime::now()` (or a test's instant) in. Instants before the
//! epoch map to negative numbers rather than failing: a broken clock then
//! makes every "not yet expired" comparison false instead of true.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, negative for earlier instants, saturating at
/// the ends of `i64`.
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Milliseconds since the Unix epoch, negative for earlier instants,
/// saturating at the ends of `i64`.
pub fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |s| -s),
    }
}

/// The instant `secs` seconds after (or, when negative, before) the epoch.
pub fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The instant `ms` milliseconds after (or, when negative, before) the epoch.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn round_trips_on_both_sides_of_the_epoch() {
        for secs in [0i64, 1, 1_700_000_000, -1, -86_400] {
            assert_eq!(unix_secs(from_unix_secs(secs)), secs);
            assert_eq!(unix_millis(from_unix_secs(secs)), secs * 1000);
        }
        for ms in [0i64, 1, 1_700_000_000_123, -1, -86_400_001] {
            assert_eq!(unix_millis(from_unix_millis(ms)), ms);
        }
    }

    #[test]
    fn whole_seconds_round_toward_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_millis(1_999);
        assert_eq!(unix_secs(t), 1);
        assert_eq!(unix_millis(t), 1_999);
    }
}
