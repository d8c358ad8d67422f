//! The analyzer engine: ingest → state → detectors → localizer → incidents, all in one synchronous,
//! clock-free object. Time is what callers pass as `now_ms` (the HTTP server passes the system clock,
//! the simulator passes virtual time), so the whole diagnosis runs deterministically in tests.
//!
//! (Interface fixed here; the implementation is being written.)

use faultline_proto::api::{ComponentView, HealthRow, JobView, NodeSummary, Summary, TopologyView};
use faultline_proto::{ComponentId, Incident, NodeReport, ReportError, TopologyFile};

/// Tunables of the engine. Every field has a default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Symptoms must be gone this long before an incident resolves (hysteresis), seconds.
    pub resolve_after_s: f64,
    /// An agent silent for this many of its own intervals is lost.
    pub heartbeat_intervals: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { resolve_after_s: 120.0, heartbeat_intervals: 3.0 }
    }
}

/// Why a report was refused. Nothing in the state changed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] ReportError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    pub node: String,
    pub seq: u64,
    /// The report repeated a `seq` already applied (a spool replay after a lost answer): accepted,
    /// not applied twice.
    pub duplicate: bool,
}

/// What changed in an incident during a `tick`: the store and notifiers act on these.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    Opened(Incident),
    Updated(Incident),
    Resolved(Incident),
}

pub struct Analyzer {
    _cfg: EngineConfig,
    _topology: TopologyFile,
}

impl Analyzer {
    pub fn new(cfg: EngineConfig, topology: TopologyFile) -> Self {
        Self { _cfg: cfg, _topology: topology }
    }

    /// Decode, validate and apply one report body, exactly as `POST /api/v1/reports` does.
    pub fn ingest_json(&mut self, body: &[u8], now_ms: i64) -> Result<IngestOutcome, IngestError> {
        let report = NodeReport::from_json(body)?;
        self.ingest(report, now_ms)
    }

    /// Apply one already-decoded report (validated again here).
    pub fn ingest(&mut self, report: NodeReport, _now_ms: i64) -> Result<IngestOutcome, IngestError> {
        report.validate()?;
        Ok(IngestOutcome { node: report.node, seq: report.seq, duplicate: false })
    }

    /// Run detectors and the localizer at `now_ms`; return what changed.
    pub fn tick(&mut self, _now_ms: i64) -> Vec<IncidentChange> {
        Vec::new()
    }

    /// Every incident, open and resolved, oldest first.
    pub fn incidents(&self) -> Vec<Incident> {
        Vec::new()
    }

    /// After a restart: continue the open incidents the store kept, and number new ones after `next_id`.
    pub fn restore(&mut self, _incidents: Vec<Incident>, _next_id: u64) {}

    /// Every node heard from, by name.
    pub fn nodes(&self) -> Vec<NodeSummary> {
        Vec::new()
    }

    /// One component with its symptoms and graph neighbours; `None` when unknown.
    pub fn component(&self, _id: &ComponentId) -> Option<ComponentView> {
        None
    }

    /// Every running job.
    pub fn jobs(&self) -> Vec<JobView> {
        Vec::new()
    }

    /// One job by id (without the `job:` prefix); `None` when unknown.
    pub fn job(&self, _id: &str) -> Option<JobView> {
        None
    }

    /// Switches, the NICs cabled to them, and nodes.
    pub fn topology_view(&self) -> TopologyView {
        TopologyView { switches: Vec::new(), nodes: Vec::new() }
    }

    /// The cluster at a glance.
    pub fn summary(&self) -> Summary {
        Summary {
            nodes: 0,
            nodes_healthy: 0,
            gpus: 0,
            gpus_faulty: 0,
            jobs: 0,
            open_incidents: 0,
            open_by_class: Default::default(),
            open_by_severity: Default::default(),
            most_affected_jobs: Vec::new(),
        }
    }

    /// Health of every hardware component and agent (for `faultline_component_healthy`).
    pub fn health(&self) -> impl Iterator<Item = HealthRow> + '_ {
        std::iter::empty()
    }
}
