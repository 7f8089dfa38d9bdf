//! Time as Herald stores it: milliseconds since the Unix epoch, UTC.
//!
//! Both backends keep timestamps as `BIGINT` milliseconds so that one SQL text
//! (comparisons, window arithmetic) serves SQLite and PostgreSQL alike.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// The current time in milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Parses an RFC 3339 timestamp (`2026-11-23T09:00:00Z`, `…+01:00`) into milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats milliseconds as RFC 3339 in UTC (`2026-11-23T09:00:00.000Z`).
pub fn format_rfc3339(millis: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}

/// Serde helpers writing [`Millis`] as RFC 3339 text, for documents people
/// read (`#[serde(serialize_with = "rfc3339::millis")]`).
pub mod rfc3339 {
    use super::{Millis, format_rfc3339};

    pub fn millis<S: serde::Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*t))
    }

    pub fn optional<S: serde::Serializer>(t: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}

/// Where "now" comes from: the system clock in production, a clock the test
/// moves in tests (no sleeping on the wall clock).
pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_millis()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    pub fn at(millis: Millis) -> ManualClock {
        ManualClock(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            millis,
        )))
    }
    pub fn set(&self, millis: Millis) {
        self.0.store(millis, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, millis: Millis) {
        self.0
            .fetch_add(millis, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let ms = parse_rfc3339("2026-11-23T09:00:00+01:00").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-11-23T08:00:00.000Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
