//! faultline-proto: the types that cross a process boundary (agent → analyzer reports, API objects,
//! the topology file). Pure data, serde and validation: no I/O, no async, no clock.
//!
//! **Architecture Invariant:** `proto` knows nothing of HTTP, SQLite or the agent's collectors.

pub mod api;
pub mod collective;
pub mod counters;
pub mod event;
pub mod id;
pub mod incident;
pub mod probe;
pub mod process;
pub mod progress;
pub mod remediation;
pub mod report;
pub mod time;
pub mod topology;
pub mod validate;
pub mod wire;
pub mod xid;
pub mod xid_nvlink5;

pub use collective::CollectiveInfo;
pub use event::EventClass;
pub use id::{ComponentId, ComponentKind, IdError};
pub use incident::{
    Action, Evidence, FaultClass, Incident, IncidentStatus, Severity, TimelineEntry, parse_rfc3339, rfc3339,
};
pub use probe::ProbeSample;
pub use report::*;
pub use topology::{TopologyError, TopologyFile};
pub use validate::ReportError;
