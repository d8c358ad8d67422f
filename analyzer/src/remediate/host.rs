//! What remediation may read and write of the running analyzer: a narrow handle instead of the
//! whole server state. `app::AppState` implements it (taking its locks there); tests can too.

use std::collections::BTreeSet;

use faultline_proto::api::{ComponentView, NodeSummary};
use faultline_proto::remediation::ActionRecord;
use faultline_proto::{ComponentId, Incident, TopologyFile};

use super::validate::NodeFacts;
use crate::engine::IncidentChange;
use crate::metrics::Metrics;
use crate::store::StoreError;

/// The analyzer as remediation sees it.
pub trait Host: Sync {
    /// The analyzer's clock, Unix seconds.
    fn now_s(&self) -> f64;
    /// A copy of the open incidents as last recorded.
    fn open_incidents(&self) -> Vec<Incident>;
    /// One open incident, by id.
    fn open_incident(&self, id: &str) -> Option<Incident>;
    /// The ids of the open incidents.
    fn open_ids(&self) -> BTreeSet<String>;
    /// Every node the engine knows, with its health.
    fn node_summaries(&self) -> Vec<NodeSummary>;
    /// What the validation checks read of a node's latest reports (None: never reported).
    fn node_facts(&self, node: &str) -> Option<NodeFacts>;
    /// The engine's view of a component (a switch's dependents).
    fn component(&self, id: &ComponentId) -> Option<ComponentView>;
    /// Every node that has reported.
    fn reported_nodes(&self) -> BTreeSet<String>;
    /// The topology file as configured.
    fn topology(&self) -> &TopologyFile;
    fn metrics(&self) -> &Metrics;
    /// Records a remediation action in the store.
    fn record_action(&self, rec: &ActionRecord) -> Result<(), StoreError>;
    /// The newest `limit` actions, oldest first.
    fn actions_recent(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError>;
    /// Plans and queues the notifications of an incident change without recording the change;
    /// `None` when no notifier is configured.
    fn page(&self, change: &IncidentChange, now_s: f64) -> Option<Result<(), StoreError>>;
}
