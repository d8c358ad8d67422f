//! API view types: what the analyzer's HTTP API returns and the CLI renders (nodes, components, jobs,
//! topology, summary). The engine builds them; the server serialises them; nothing here is stored.
//!
//! Times are Unix seconds (report clock), like `Incident`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ComponentId, ComponentKind, FaultClass, Severity};

/// One node as the analyzer knows it from its agent's reports (`GET /api/v1/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node: String,
    /// Report time of the last report, Unix seconds.
    pub last_seen_s: f64,
    /// Highest `seq` applied.
    pub last_seq: u64,
    /// Reports applied (duplicates not counted).
    pub reports: u64,
    /// GPUs the last report listed (plus GPUs that went missing since).
    pub gpus: u32,
    /// GPUs with a current symptom or lost.
    pub gpus_faulty: u32,
    pub nics: u32,
    /// No current symptom on the node or anything on it, and its agent is heard.
    pub healthy: bool,
    /// The last report said the agent stopped cleanly; silence since is expected.
    pub shutdown: bool,
}

/// One row of `GET /api/v1/nodes`: the engine's summary plus the analyzer's ingest ledger. The
/// ledger fields default when absent, so a client reads an older analyzer's rows too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    #[serde(flatten)]
    pub summary: NodeSummary,
    /// RFC 3339 form of `last_seen_s`.
    #[serde(default)]
    pub last_seen_at: String,
    /// Analyzer clock when the last report arrived, Unix seconds.
    #[serde(default)]
    pub last_heard_s: f64,
    /// Times `seq` jumped by more than one.
    #[serde(default)]
    pub gaps: u64,
    /// Seqs skipped and not filled since.
    #[serde(default)]
    pub seqs_missing: u64,
    /// Reports that repeated a seq already applied.
    #[serde(default)]
    pub duplicates: u64,
    /// Reports that arrived late and filled a hole.
    #[serde(default)]
    pub late: u64,
    /// The node's report interval, ms.
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default)]
    pub agent_version: String,
    /// Heard within its heartbeat allowance and not shut down (None: an older analyzer that does
    /// not say).
    #[serde(default)]
    pub reporting: Option<bool>,
    /// Body bytes received from this node.
    #[serde(default)]
    pub bytes: u64,
    /// The node's clock minus the analyzer's, seconds (from reports arriving at the agent's pace);
    /// null until known.
    #[serde(default)]
    pub clock_skew_s: Option<f64>,
    /// The clock is off by more than 5 s: report times from this node are suspect.
    #[serde(default)]
    pub clock_skewed: bool,
}

/// A symptom as the API shows it: one detector finding on one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymptomView {
    /// Detector kind, e.g. `xid_critical`, `link_down`, `heartbeat_lost`, `straggler`.
    pub kind: String,
    pub severity: Severity,
    /// Earliest time this symptom was seen, Unix seconds.
    pub onset_s: f64,
    /// One sentence with the number in it.
    pub detail: String,
    /// Until when (Unix seconds) the symptom is held live even if the part looks healthy again (a
    /// fatal XID), so its incident cannot resolve before then plus `resolve_after_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until_s: Option<f64>,
    /// Why it is held, naming the setting that decides how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_because: Option<String>,
}

/// One component and its neighbourhood in the dependency graph (`GET /api/v1/components/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentView {
    pub id: ComponentId,
    pub kind: ComponentKind,
    pub healthy: bool,
    pub symptoms: Vec<SymptomView>,
    /// What this component depends on (edges out).
    pub depends_on: Vec<ComponentId>,
    /// What depends on it (edges in).
    pub dependents: Vec<ComponentId>,
    /// Incidents (open or resolved) rooted here or listing it in a path.
    pub incidents: Vec<String>,
}

/// One rank of a job with where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankView {
    pub rank: u32,
    pub node: String,
    /// GPU component ids (`node-0003/gpu5`).
    pub gpus: Vec<String>,
    /// NIC component id, only for a job spanning more than one node.
    pub nic: Option<String>,
    /// Leaf switch id, only for a job spanning more than one node.
    pub leaf: Option<String>,
    pub healthy: bool,
    /// Last reported progress step, when the job reports progress.
    pub step: Option<u64>,
    pub state: String,
}

/// One job (`GET /api/v1/jobs/{id}`; the list endpoint returns these too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub ranks: Vec<RankView>,
    /// Dependency path of every rank: `job → rank → gpu → node → nic → leaf`.
    pub paths: Vec<Vec<String>>,
    pub healthy: bool,
    /// Incidents (open or resolved) that list this job as affected.
    pub incidents: Vec<String>,
    /// Median step time of the last samples, ms, when known.
    pub step_time_ms: Option<f64>,
}

/// A job and how many open incidents touch it, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedJob {
    pub job: String,
    pub open_incidents: u32,
    pub ranks: u32,
}

/// The cluster at a glance (`GET /api/v1/summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub nodes: u32,
    pub nodes_healthy: u32,
    pub gpus: u32,
    pub gpus_faulty: u32,
    pub jobs: u32,
    pub open_incidents: u32,
    pub open_by_class: BTreeMap<FaultClass, u32>,
    pub open_by_severity: BTreeMap<Severity, u32>,
    /// Jobs with the most open incidents, most first.
    pub most_affected_jobs: Vec<AffectedJob>,
}

/// One switch and what hangs off it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchView {
    pub id: String,
    /// `leaf` or `spine`.
    pub tier: String,
    pub uplinks: Vec<String>,
    /// NIC component ids cabled to it (leaves), as reported so far.
    pub nics: Vec<String>,
    pub healthy: bool,
}

/// The fabric as the analyzer knows it (`GET /api/v1/topology`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyView {
    pub switches: Vec<SwitchView>,
    pub nodes: Vec<String>,
}

/// One row of the component-health metric (`faultline_component_healthy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRow {
    pub id: ComponentId,
    pub kind: ComponentKind,
    pub node: Option<String>,
    pub healthy: bool,
}
