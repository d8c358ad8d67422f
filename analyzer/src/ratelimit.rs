//! Per-node ingest rate limit: a token bucket per node name, refilled at `rate` reports per second
//! up to `burst`. A report that finds the bucket empty is refused with 429 and told when to retry.
//!
//! Time comes from the caller (the server passes its injected `Clock`), so tests drive it exactly.

use std::collections::HashMap;
use std::sync::Mutex;

/// Past this many buckets, full ones (nodes that have not sent for a while) are forgotten. A
/// forgotten node starts again with a full bucket, which is exactly what a full one holds, so
/// pruning changes no decision. 200k is far above the 12,500 nodes a large cluster has.
const MAX_BUCKETS: usize = 200_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Token buckets by node.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_ms: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate_per_s` must be positive and `burst` at least 1 (the config checks both).
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        Self { rate_per_ms: rate_per_s / 1000.0, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `node` at `now_ms`. `Err(seconds)` when the bucket is empty: whole
    /// seconds (at least 1) until a token will be there, for `Retry-After`.
    pub fn check(&self, node: &str, now_ms: i64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(node) {
            let (rate, burst) = (self.rate_per_ms, self.burst);
            buckets.retain(|_, b| b.tokens + (now_ms - b.last_ms).max(0) as f64 * rate < burst);
        }
        let b = buckets.entry(node.to_string()).or_insert(Bucket { tokens: self.burst, last_ms: now_ms });
        // A clock that went back refills nothing (and takes nothing away).
        let elapsed = (now_ms - b.last_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * self.rate_per_ms).min(self.burst);
        b.last_ms = b.last_ms.max(now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - b.tokens) / self.rate_per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }

    /// The configured rate, reports per second.
    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_ms * 1000.0
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Nodes with a bucket (for tests and the curious).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
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
}
