//! Per-node ingest rate limit: `rate` reports per second per node name, with bursts up to `burst`.
//! A report over it is refused with 429 and told when to retry.
//!
//! The limiter is `governor`'s keyed GCRA (the token bucket's equivalent, one `u64` of state per node
//! in a concurrent map). Time comes from the caller (the server passes its injected `Clock`), so tests
//! drive it exactly: each check moves the limiter's clock forward to the caller's time and never back,
//! so a clock that steps back neither refills a bucket nor takes from one.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};

/// Past this many tracked nodes, those whose bucket is full again (nodes that have not sent for a
/// while) are forgotten. A forgotten node starts again with a full bucket, which is exactly what a
/// full one holds, so pruning changes no decision. 200k is far above the 12,500 nodes a large
/// cluster has.
const MAX_BUCKETS: usize = 200_000;
/// At the cap, pruning (a scan of every bucket) runs at most once per this much caller time, so a
/// flood of invented node names cannot make every report pay for a full scan.
const PRUNE_EVERY_NS: u64 = 1_000_000_000;

/// The caller's time, nanoseconds since the Unix epoch, only ever moved forward.
#[derive(Debug, Clone, Default)]
struct CallerClock(Arc<AtomicU64>);

impl CallerClock {
    fn advance_to(&self, now_ms: i64) {
        let ns = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000_000);
        self.0.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Clock for CallerClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

/// Rate limits by node.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: u32,
    clock: CallerClock,
    /// Caller time of the last prune, ns.
    last_prune_ns: AtomicU64,
    limiter: Gcra<String, DashMapStateStore<String>, CallerClock, NoOpMiddleware<Nanos>>,
}

impl RateLimiter {
    /// `rate_per_s` must be positive and `burst` at least 1 (the config checks both; out-of-range
    /// values are clamped, not a panic).
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        let burst = burst.max(1);
        let rate = if rate_per_s.is_finite() && rate_per_s > 0.0 { rate_per_s } else { f64::MIN_POSITIVE };
        // One report per this long; at least 1 ns (governor's resolution), at most a year.
        let period = Duration::from_secs_f64((1.0 / rate).min(365.0 * 86_400.0)).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let clock = CallerClock::default();
        Self {
            rate_per_s,
            burst,
            limiter: Gcra::dashmap_with_clock(quota, clock.clone()),
            clock,
            last_prune_ns: AtomicU64::new(0),
        }
    }

    /// Takes one report's allowance for `node` at `now_ms`. `Err(seconds)` when the node is over its
    /// rate: whole seconds (at least 1) until a report will pass, for `Retry-After`.
    pub fn check(&self, node: &str, now_ms: i64) -> Result<(), u64> {
        self.clock.advance_to(now_ms);
        let now_ns = self.clock.now().as_u64();
        let last = self.last_prune_ns.load(Ordering::Relaxed);
        if self.limiter.len() >= MAX_BUCKETS
            && now_ns.saturating_sub(last) >= PRUNE_EVERY_NS
            && self.last_prune_ns.compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(&node.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err((wait.as_secs_f64().ceil() as u64).max(1))
            }
        }
    }

    /// The configured rate, reports per second.
    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nodes with a bucket (for tests and the curious).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_rules() {
        let r = RateLimiter::new(20.0, 40);
        for i in 0..40 {
            assert_eq!(r.check("n1", 1_000), Ok(()), "report {i} of the burst");
        }
        assert_eq!(r.check("n1", 1_000), Err(1));
        // 50 ms later one token (20/s) has come back, and only one.
        assert_eq!(r.check("n1", 1_050), Ok(()));
        assert_eq!(r.check("n1", 1_050), Err(1));
        // Another node has its own bucket.
        assert_eq!(r.check("n2", 1_050), Ok(()));
    }

    #[test]
    fn retry_after_says_when_a_token_will_be_there() {
        let r = RateLimiter::new(0.1, 1); // one report per 10 s
        assert_eq!(r.check("n", 0), Ok(()));
        assert_eq!(r.check("n", 0), Err(10));
        assert_eq!(r.check("n", 5_000), Err(5));
        assert_eq!(r.check("n", 10_000), Ok(()));
    }

    #[test]
    fn a_clock_going_back_neither_refills_nor_panics() {
        let r = RateLimiter::new(1.0, 1);
        assert_eq!(r.check("n", 10_000), Ok(()));
        assert!(r.check("n", 0).is_err());
        assert!(r.check("n", 10_500).is_err());
        assert_eq!(r.check("n", 11_000), Ok(()));
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let r = RateLimiter::new(1000.0, 3);
        assert_eq!(r.check("n", 0), Ok(()));
        for _ in 0..3 {
            assert_eq!(r.check("n", 1_000_000), Ok(()));
        }
        assert!(r.check("n", 1_000_000).is_err());
    }

    #[test]
    fn idle_nodes_are_forgotten_past_the_cap_and_busy_ones_kept() {
        let r = RateLimiter::new(1.0, 1);
        assert_eq!(r.check("busy", 0), Ok(()));
        for i in 0..MAX_BUCKETS {
            let _ = r.check(&format!("n{i}"), 0);
        }
        // Still inside their second: every bucket is spent, none can be forgotten.
        assert_eq!(r.check("late", 500), Ok(()));
        assert!(r.len() > MAX_BUCKETS);
        // Much later every old bucket is full again: the next new node prunes them.
        assert_eq!(r.check("later", 100_000), Ok(()));
        assert!(r.len() < 10, "{} buckets kept", r.len());
    }
}
