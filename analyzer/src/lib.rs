//! faultline-analyzer: joins agent reports on a dependency graph, detects symptoms, names root
//! causes, and serves incidents. `engine` is the clock-free core the simulator drives too.

pub mod alloc;
pub mod api;
pub mod api_actions;
pub mod app;
pub mod auth;
pub mod cert;
pub mod clock;
pub mod config;
pub mod conn;
pub mod detect;
pub mod engine;
pub mod fleet_rate;
pub mod http_error;
pub mod incident;
pub mod ingest;
pub mod limits;
pub mod localize;
pub mod metrics;
pub mod notify;
pub mod otel;
pub mod pinglist;
pub mod pipeline;
pub mod ratelimit;
pub mod remediate;
pub mod server;
pub mod silence;
pub mod skew;
pub mod state;
pub mod store;
pub mod store_guard;
mod sync;
pub mod tls;
pub mod topology;
pub mod views;

pub use engine::{Analyzer, EngineConfig, IncidentChange, IngestError, IngestOutcome};
