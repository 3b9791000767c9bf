//! Times as the file keeps them: microseconds since the Unix epoch, UTC.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `at` in microseconds since the epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// `after` past `now`, in microseconds since the epoch (saturating).
pub(crate) fn micros_after(now: DateTime<Utc>, after: Duration) -> i64 {
    micros(now).saturating_add(i64::try_from(after.as_micros()).unwrap_or(i64::MAX))
}

/// Microseconds since the epoch as a time (out of range: the epoch's far end).
pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long from `now` until `until` (microseconds), none if it has passed.
pub(crate) fn until(now: DateTime<Utc>, until: i64) -> Option<Duration> {
    u64::try_from(until.saturating_sub(micros(now)))
        .ok()
        .map(Duration::from_micros)
}
