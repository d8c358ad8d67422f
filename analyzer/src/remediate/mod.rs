//! Acting on a diagnosis: which nodes an incident takes out of service, the per-class/severity
//! policy (`off`, `suggest`, `act`), the blast-radius guard, and the scheduler adapter trait
//! (`Remediator`) with its Slurm implementation in `slurm`. `runner` ties them to the analyzer through the narrow `Host` handle.
//!
//! The `Planner` (in `planner`) is pure: it is handed incidents, node health and the time, and
//! answers with `Step`s for the runner to carry out. It never calls the scheduler and never reads a
//! clock.
//!
//! **Architecture Invariant:** faultline only ever undoes its own drains: a node is resumed only when
//! the scheduler's current drain reason still starts with `faultline:` (`owned_by_faultline`), and a
//! drain someone else set is never overwritten.
//!
//! Files along their seams: `config` (the `[remediation]` settings), `policy` (modes, targets, drain
//! reasons), `adapter` (the scheduler trait), `planner` (pure decisions), `runner` (carries them
//! out), `cluster` (which nodes are known and which hang off a switch), `validate` (the checks
//! before a resume), `slurm` (the Slurm adapter), `host` (what remediation may touch of the running analyzer; the
//! actions API over HTTP is `crate::api_actions`).

pub mod adapter;
pub mod cluster;
pub mod config;
pub mod host;
pub mod planner;
pub mod policy;
pub mod runner;
pub mod slurm;
pub mod validate;

pub use adapter::{NodeState, RemediateError, Remediator};
pub use config::*;
pub use host::Host;
pub use planner::*;
pub use policy::*;
pub use runner::Remediation;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;
