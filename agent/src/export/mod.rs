//! What the agent sends out: Prometheus `/metrics`, OTLP metrics, the push client and its disk spool.

pub mod gpu_metrics;
pub mod job_metrics;
pub mod metrics;
pub mod otlp;
pub mod otlp_points;
pub mod push;
pub mod spool;
pub mod xids;

use std::sync::atomic::{AtomicU64, Ordering};

/// The latest complete report, read by `/metrics` at scrape time.
pub type Snapshot = std::sync::Arc<std::sync::RwLock<Option<faultline_proto::NodeReport>>>;

/// The agent's own counters, shared by the collection loop, the pusher and `/metrics`. All monotonic
/// since start except the `spool_*` and `collect_duration` gauges.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Reports built by the collection loop.
    pub reports: AtomicU64,
    /// Reports the analyzer accepted (2xx).
    pub pushed: AtomicU64,
    /// Push attempts that failed (connection error, timeout, 5xx, 4xx).
    pub push_errors: AtomicU64,
    /// Reports the analyzer refused for their content (400, 413, 422: dropped, never retried).
    pub refused: AtomicU64,
    /// 1 while the analyzer refuses reports for a reason outside them (401, 403, 404): they are
    /// kept in the spool, not dropped.
    pub push_held: AtomicU64,
    /// Reports lost: the push queue was full, the spool was full (oldest dropped), or a spooled
    /// file could not be written or read back.
    pub dropped_reports: AtomicU64,
    /// Reports waiting in the spool right now.
    pub spool_reports: AtomicU64,
    /// Bytes in the spool right now.
    pub spool_bytes: AtomicU64,
    /// How long the last collection cycle took, in microseconds.
    pub collect_duration_us: AtomicU64,
    /// Each collector's last cycle, copied from the registry after every cycle.
    pub collectors: std::sync::Mutex<std::collections::BTreeMap<&'static str, crate::collect::CollectorStatus>>,
}

impl AgentStats {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    pub fn add(v: &AtomicU64, n: u64) {
        v.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(v: &AtomicU64, n: u64) {
        v.store(n, Ordering::Relaxed);
    }
}
