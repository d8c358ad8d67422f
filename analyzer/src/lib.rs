//! faultline-analyzer: joins agent reports on a dependency graph, detects symptoms, names root
//! causes, and serves incidents. `engine` is the clock-free core the simulator drives too.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod store;

pub use engine::{Analyzer, EngineConfig, IncidentChange, IngestError, IngestOutcome};
