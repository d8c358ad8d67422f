//! Where the server gets "now": a `Clock` trait with the system clock and a manual fake for tests.
//!
//! **Architecture Invariant:** only the server reads the wall clock (through `SystemClock`); the
//! engine is handed `now_ms` by its caller and never looks at a clock itself.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in Unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_ms(&self) -> i64;

    /// The same instant in Unix seconds.
    fn now_s(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 is broken; report the epoch rather than a negative time.
            Err(_) => 0,
        }
    }
}

/// A clock that moves only when told to. Shared between a test and the server it drives.
#[derive(Debug, Default)]
pub struct FakeClock {
    ms: AtomicI64,
}

impl FakeClock {
    pub fn new(start_ms: i64) -> Self {
        Self { ms: AtomicI64::new(start_ms) }
    }

    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, by: i64) {
        self.ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        assert_eq!(c.now_s(), 1.5);
        c.set_ms(10);
        assert_eq!(c.now_ms(), 10);
    }

    #[test]
    fn system_clock_is_after_2020() {
        // 2020-01-01T00:00:00Z; a sanity check that the unit is milliseconds.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
