//! What the agent sends out: Prometheus `/metrics`, the push client and its disk spool.

pub mod gpu_metrics;
pub mod job_metrics;

/// The latest complete report, read by `/metrics` at scrape time.
pub type Snapshot = std::sync::Arc<std::sync::RwLock<Option<faultline_proto::NodeReport>>>;
