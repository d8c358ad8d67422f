//! faultline-sim: a simulated GPU training cluster. It generates exactly what faultline agents would
//! report (spec/fault-catalog.md), injects the faults of a scenario file (spec/scenario.md), feeds
//! the real analyzer in virtual time, and scores what the analyzer said against what was injected.
//!
//! **Architecture Invariant:** the analyzer gets only NodeReports and the topology file, never the
//! ground truth; ground truth (`cluster::Cluster::affected_jobs`, `blast_radius`) is used by the
//! scorer alone.

pub mod addrs;
pub mod agent;
pub mod cluster;
pub mod cputime;
pub mod faults;
pub mod fuzz;
pub mod jobs;
pub mod naming;
pub mod node_state;
pub mod noise;
pub mod realism;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod score;
pub mod step;
pub mod telemetry;
pub mod validation;
pub mod world;

pub use report::RunReport;
pub use runner::{RunError, RunOptions, WireTarget, run};
pub use scenario::{Scenario, ScenarioError};
pub use world::World;
