//! Wall-clock time as Unix nanoseconds: how expiry times are kept in entries and sent to
//! peers (mailgun/groupcache's `expire`, so copies on every node expire at the same instant).
//!
//! Unit tests read tokio's clock instead, anchored at the wall clock, so `tokio::time::pause`
//! and `advance` move expiry deterministically.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An expiry time in Unix nanoseconds; [`NEVER`] for none.
pub(crate) type Expire = i64;

/// The expiry of a value that never expires (mailgun/groupcache's zero `expire`).
pub(crate) const NEVER: Expire = 0;

/// Now, on the clock expiry is measured with.
#[cfg(not(test))]
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// Now, on tokio's (pausable) clock, anchored at the wall clock when first read.
#[cfg(test)]
pub(crate) fn now() -> SystemTime {
    use std::sync::OnceLock;
    static ANCHOR: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
    let (wall, mono) = *ANCHOR.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let t = tokio::time::Instant::now().into_std();
    match t.checked_duration_since(mono) {
        Some(d) => wall + d,
        None => wall - mono.duration_since(t),
    }
}

/// Now in Unix nanoseconds.
pub(crate) fn now_nanos() -> Expire {
    to_nanos(now())
}

/// `t` in Unix nanoseconds: at or before the epoch is 1 (long expired, never [`NEVER`]);
/// past the year 2262 is `i64::MAX`.
pub(crate) fn to_nanos(t: SystemTime) -> Expire {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX).max(1),
        Err(_) => 1,
    }
}

/// The time of an expiry; `None` for [`NEVER`] (or a negative value, as Go reads it: zero
/// and negatives from `time.Time{}` mean no expiry only for zero, but a negative expiry
/// is long past, so it is 1 ns after the epoch).
pub(crate) fn from_nanos(n: Expire) -> Option<SystemTime> {
    match n {
        NEVER => None,
        n if n < 0 => Some(UNIX_EPOCH + Duration::from_nanos(1)),
        n => Some(UNIX_EPOCH + Duration::from_nanos(n as u64)),
    }
}

/// Whether an entry expiring at `expire` is expired at `now`.
#[inline]
pub(crate) fn expired(expire: Expire, now: Expire) -> bool {
    expire != NEVER && expire <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(to_nanos(t), 1_700_000_000_123_456_789);
        assert_eq!(from_nanos(to_nanos(t)), Some(t));
        assert_eq!(from_nanos(NEVER), None);
        assert_eq!(to_nanos(UNIX_EPOCH), 1);
        assert!(expired(1, now_nanos()));
        assert!(!expired(NEVER, i64::MAX));
        assert!(!expired(now_nanos() + 1_000_000_000, now_nanos()));
    }
}
