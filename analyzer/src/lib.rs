//! faultline-analyzer: joins agent reports on a dependency graph, detects symptoms, names root
//! causes, and serves incidents. `engine` is the clock-free core the simulator drives too.

pub mod engine;

pub use engine::{Analyzer, EngineConfig, IncidentChange, IngestError, IngestOutcome};
