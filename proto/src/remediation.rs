//! Remediation actions as the API shows them (`GET /api/v1/actions`, `POST /api/v1/actions/drain`,
//! `/resume`): what the analyzer did, or would do, to the scheduler about an incident, and what is
//! still waiting. The analyzer's `remediate` module produces them; the CLI renders them.
//!
//! Times are Unix seconds on the analyzer's clock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the analyzer does about incidents of a fault class and severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemediationMode {
    /// Nothing, not even a suggestion.
    Off,
    /// Record what would be done; do nothing.
    #[default]
    Suggest,
    /// Do it through the scheduler adapter (within the blast-radius guard).
    Act,
}

impl RemediationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Suggest => "suggest",
            Self::Act => "act",
        }
    }
}

impl fmt::Display for RemediationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheduler operation on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    /// Take the node out of scheduling (Slurm `State=DRAIN`).
    Drain,
    /// Put it back (Slurm `State=RESUME`).
    Resume,
    /// Check it before putting it back (`[remediation.validation]`): one record per check, and one
    /// for a failed validation that keeps the node drained.
    Validate,
}

impl NodeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Resume => "resume",
            Self::Validate => "validate",
        }
    }
}

impl fmt::Display for NodeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOrigin {
    /// The analyzer, following its policy for an incident.
    Auto,
    /// A person, through `POST /api/v1/actions/{drain,resume}` (`faultline drain`/`resume`).
    Manual,
}

/// How an action ended. Also the `result` label of `faultline_remediation_actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Done in the scheduler.
    Ok,
    /// The scheduler refused, failed or did not answer in time.
    Failed,
    /// Policy `suggest`: recorded, not done.
    Suggested,
    /// Dry run: what would have been done.
    DryRun,
    /// The blast-radius guard stopped it; a person must decide.
    Blocked,
    /// Nothing done: the node was already in that state, or someone else owns its drain.
    Skipped,
}

impl ActionResult {
    pub const ALL: &'static [ActionResult] =
        &[Self::Ok, Self::Failed, Self::Suggested, Self::DryRun, Self::Blocked, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Suggested => "suggested",
            Self::DryRun => "dry_run",
            Self::Blocked => "blocked",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for ActionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action taken, suggested, blocked or skipped. Recorded in the store, shown in the incident's
/// timeline (as `what: "action"`) and in `GET /api/v1/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Store row id; 0 before it is stored.
    #[serde(default)]
    pub id: u64,
    pub at_s: f64,
    /// RFC 3339 form of `at_s`.
    pub at: String,
    pub action: NodeAction,
    /// Cluster node name (as agents report it).
    pub node: String,
    /// The node's name in the scheduler (the same unless the adapter maps it).
    pub target: String,
    /// The incident that caused it; `None` for manual actions.
    #[serde(default)]
    pub incident: Option<String>,
    pub origin: ActionOrigin,
    pub result: ActionResult,
    /// The drain reason written (or that would be written) to the scheduler.
    #[serde(default)]
    pub reason: Option<String>,
    /// One sentence: what happened and why.
    pub detail: String,
}

/// Why an action is still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// Policy `suggest`: a person may do it (`faultline drain NODE`).
    Suggested,
    /// Stopped by the blast-radius guard: a person must decide.
    Blocked,
    /// Failed; tried again at `due_s`.
    Retry,
    /// Drained by faultline; its incident is still open.
    AwaitingResolve,
    /// Drained by faultline; its incident resolved and the node must stay healthy until `due_s`.
    AwaitingHealthy,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suggested => "suggested",
            Self::Blocked => "blocked",
            Self::Retry => "retry",
            Self::AwaitingResolve => "awaiting_resolve",
            Self::AwaitingHealthy => "awaiting_healthy",
        }
    }
}

/// An action not (yet) taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    pub action: NodeAction,
    pub node: String,
    #[serde(default)]
    pub incident: Option<String>,
    pub state: PendingState,
    /// Since when it waits.
    pub since_s: f64,
    /// When it will be done or tried again, if that is known.
    #[serde(default)]
    pub due_s: Option<f64>,
    pub detail: String,
}

/// `GET /api/v1/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionsView {
    /// The scheduler adapter (`slurm`), or `None` when none is configured.
    pub adapter: Option<String>,
    pub dry_run: bool,
    /// Mode for incidents no policy rule names.
    pub default_mode: RemediationMode,
    /// Most nodes faultline drains on its own within `window_s` (share × nodes known).
    pub drain_limit: u32,
    /// Nodes faultline drained on its own within the window so far.
    pub drained_in_window: u32,
    pub window_s: f64,
    pub pending: Vec<PendingAction>,
    /// Recent actions, oldest first.
    pub taken: Vec<ActionRecord>,
}

/// `POST /api/v1/actions/drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub node: String,
    /// Why; written into the scheduler's drain reason after `faultline: manual:`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/actions/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub node: String,
    /// Resume even a drain someone else set (its reason does not start with `faultline:`).
    #[serde(default)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for r in ActionResult::ALL {
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        for m in [RemediationMode::Off, RemediationMode::Suggest, RemediationMode::Act] {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(serde_json::to_string(&PendingState::AwaitingHealthy).unwrap(), "\"awaiting_healthy\"");
        let r: ResumeRequest = serde_json::from_str(r#"{"node":"n1"}"#).unwrap();
        assert!(!r.force);
        assert!(serde_json::from_str::<DrainRequest>(r#"{"node":"n1","nope":1}"#).is_err());
    }
}
