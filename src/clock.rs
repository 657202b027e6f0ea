//! Timestamps as the API shows them: RFC 3339, UTC, `Z` suffix, microseconds.
//!
//! Microseconds because both databases keep exactly that much (PostgreSQL's
//! `timestamptz` resolution), so a value reads back the same on either, and an
//! update a few milliseconds after a create still moves `updated_at`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The current time, cut to whole microseconds (what the databases store).
pub fn now() -> SystemTime {
    truncate_to_micros(SystemTime::now())
}

/// `t` without its sub-microsecond part.
pub fn truncate_to_micros(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_micros(d.as_micros() as u64),
        Err(_) => UNIX_EPOCH,
    }
}

/// Formats `t` as `2025-11-10T12:34:56.123456Z`. The string sorts in time order,
/// which is why SQLite stores timestamps in exactly this form.
pub fn format(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(RFC3339_MICROS).unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
}

/// Reads a timestamp written by [`format`] (or any RFC 3339 text).
pub fn parse(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(SystemTime::from)
}

/// Seconds since the Unix epoch (JWT `iat`/`exp`).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The instant `seconds` after the Unix epoch.
pub fn from_unix_seconds(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_762_778_096_123_456_789);
        assert_eq!(format(truncate_to_micros(t)), "2025-11-10T12:34:56.123456Z");
    }

    #[test]
    fn a_formatted_timestamp_parses_back_to_the_same_instant() {
        let t = truncate_to_micros(UNIX_EPOCH + Duration::from_nanos(1_762_778_096_123_456_789));
        assert_eq!(parse(&format(t)), Some(t));
        assert_eq!(parse("not a time"), None);
    }

    #[test]
    fn whole_seconds_keep_their_fraction_digits() {
        assert_eq!(format(UNIX_EPOCH + Duration::from_secs(1)), "1970-01-01T00:00:01.000000Z");
    }
}
