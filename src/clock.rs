//! The injected source of time.
//!
//! Nothing in the crate reads the system clock except [`SystemClock`]; the pure core takes `now`
//! as an argument, and the broker asks its [`Clock`]. Time is kept to whole seconds, the
//! resolution of JWT numeric dates, so that what the broker decided and what a token says agree.

use std::sync::atomic::{AtomicI64, Ordering};

use time::{Duration, OffsetDateTime, UtcOffset};

/// A source of the current time (UTC, whole seconds).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock, truncated to whole seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(0).unwrap_or(now)
    }
}

/// A clock that moves only when told to: for tests, examples and simulations.
#[derive(Debug)]
pub struct ManualClock {
    unix_seconds: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start` (sub-second precision is dropped).
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            unix_seconds: AtomicI64::new(start.unix_timestamp()),
        }
    }

    /// Moves the clock by `by` (which may be negative), in whole seconds.
    pub fn advance(&self, by: Duration) {
        self.unix_seconds
            .fetch_add(by.whole_seconds(), Ordering::SeqCst);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        self.unix_seconds
            .store(to.unix_timestamp(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let seconds = self.unix_seconds.load(Ordering::SeqCst);
        // Out-of-range values cannot be stored through `new`/`set`; `advance` by absurd amounts
        // saturates to the epoch rather than panicking.
        OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// `time` at offset UTC. The broker reads its clock through this, so that whatever offset an
/// injected clock returns, dates (the day of a frequency limit above all) are UTC dates.
pub(crate) fn utc(time: OffsetDateTime) -> OffsetDateTime {
    // Only a time within a day of the representable range can fail to convert; such a clock is
    // broken, and the nearest representable UTC time is the only sensible reading.
    time.checked_to_offset(UtcOffset::UTC).unwrap_or_else(|| {
        if time.year() < 0 {
            time::PrimitiveDateTime::MIN.assume_utc()
        } else {
            time::PrimitiveDateTime::MAX.assume_utc()
        }
    })
}

/// `time + by`, saturating at the largest representable time instead of panicking: a deadline
/// that far away means "never", which is the only sensible reading of such input.
pub(crate) fn saturating_add(time: OffsetDateTime, by: Duration) -> OffsetDateTime {
    time.checked_add(by).unwrap_or_else(|| {
        if by.is_negative() {
            time::PrimitiveDateTime::MIN.assume_utc()
        } else {
            time::PrimitiveDateTime::MAX.assume_utc()
        }
    })
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> OffsetDateTime {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_add_never_panics() {
        let far = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(saturating_add(far, Duration::days(1)), far);
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            saturating_add(now, Duration::MIN),
            time::PrimitiveDateTime::MIN.assume_utc()
        );
        assert_eq!(
            saturating_add(now, Duration::days(1)).unix_timestamp(),
            86_400
        );
    }

    #[test]
    fn utc_keeps_the_instant_and_moves_the_date() {
        let late_evening = time::macros::datetime!(2026-11-21 23:30 -05:00);
        let at_utc = utc(late_evening);
        assert_eq!(at_utc, late_evening);
        assert_eq!(at_utc.offset(), UtcOffset::UTC);
        assert_eq!(at_utc.date(), time::macros::date!(2026 - 11 - 22));
    }
}
