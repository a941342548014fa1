//! Time as the collector reads and writes it: the wall clock in Unix
//! milliseconds, and RFC 3339 text (whole seconds, `Z`) for the JSON API,
//! alerts and notifications. One of each, so every output agrees.

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `ms` as RFC 3339 in UTC to the second (`2026-11-28T12:00:00Z`); empty
/// for a time chrono cannot represent.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

/// `ms` as an RFC 3339 UTC time with milliseconds (when something was
/// computed, where whole seconds would hide the order of two events).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds_in_utc() {
        assert_eq!(rfc3339(1_764_331_200_999), "2025-11-28T12:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "");
        assert!(now_ms() > 1_700_000_000_000);
    }
}
