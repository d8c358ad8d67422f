//! Acting on a diagnosis: which nodes an incident takes out of service, the per-class/severity
//! policy (`off`, `suggest`, `act`), the blast-radius guard, and the scheduler adapter trait
//! (`Remediator`) with its Slurm implementation in `slurm`. `runner` ties them to the server.
//!
//! The `Planner` here is pure: it is handed incidents, node health and the time, and answers with
//! `Step`s for the runner to carry out. It never calls the scheduler and never reads a clock.
//!
//! **Architecture Invariant:** faultline only ever undoes its own drains: a node is resumed only when
//! the scheduler's current drain reason still starts with `faultline:` (`owned_by_faultline`), and a
//! drain someone else set is never overwritten.

pub mod http;
pub mod runner;
pub mod slurm;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use faultline_proto::remediation::{
    ActionOrigin, ActionRecord, ActionResult, NodeAction, PendingAction, PendingState, RemediationMode,
};
use faultline_proto::{ComponentId, FaultClass, Incident, Severity, rfc3339};
use serde::Deserialize;

pub use runner::Remediation;

/// Every drain reason faultline writes starts with this; a drain whose reason does not is someone
/// else's and is never resumed or overwritten.
pub const DRAIN_REASON_PREFIX: &str = "faultline:";

/// Reason prefix of drains a person asked for through the API (`faultline drain`): faultline's, but
/// never resumed on its own.
pub const MANUAL_REASON_PREFIX: &str = "faultline: manual:";

/// Default most share of the known nodes faultline drains on its own within one window. One node in
/// ten: a real hardware wave (a bad PDU, a firmware push) rarely takes more at once, while a
/// misdiagnosis storm that drained more would idle a tenth of the cluster before a person looked.
pub const DEFAULT_MAX_DRAIN_SHARE: f64 = 0.10;

/// Default guard window: one hour, the time an on-call person needs to notice, look and decide.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Default time a drained node must stay healthy after its incident resolved before it is resumed.
/// Ten minutes: five times the analyzer's two-minute resolve hysteresis and sixty 10 s report
/// intervals, so a part that fails again within minutes is seen before jobs land on it.
pub const DEFAULT_HEALTHY_HOLD: Duration = Duration::from_secs(600);

/// A failed scheduler call is tried again after this long (a restarting slurmctld is back within
/// seconds to a minute).
pub const RETRY_AFTER_S: f64 = 30.0;

/// A drain that failed this many times is given up (and stays a pending action for a person).
pub const MAX_DRAIN_ATTEMPTS: u32 = 5;

/// Default time one `scontrol` call may take. Slurm's own `MessageTimeout` defaults to 10 s and
/// scontrol may retry once before it gives up.
pub const DEFAULT_SCONTROL_TIMEOUT: Duration = Duration::from_secs(25);

/// Longest drain reason written to the scheduler; Slurm shows reasons in one line of `sinfo -R`.
pub const MAX_REASON_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Configuration

/// Which scheduler adapter carries out drains and resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// No scheduler: actions can only be suggested (or dry-run).
    #[default]
    None,
    /// Slurm through `scontrol`.
    Slurm,
}

/// One policy rule: the mode for incidents of a class, a severity, or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Fault class (`gpu_lost`, `leaf_switch_down`, …); any class when absent.
    #[serde(default)]
    pub class: Option<FaultClass>,
    /// Incident severity (`info`, `warning`, `critical`); any severity when absent.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// `off`, `suggest` or `act`.
    pub mode: RemediationMode,
}

/// `[remediation.slurm]`: how to reach Slurm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// The `scontrol` program: a path, or a name looked up on `PATH`.
    pub scontrol: PathBuf,
    /// Extra environment for every scontrol call, e.g. `{ SLURM_CONF = "/etc/slurm/slurm.conf" }`.
    pub env: BTreeMap<String, String>,
    /// Longest one scontrol call may take, e.g. `25s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Cluster node name (as agents report it) → Slurm NodeName, where they differ.
    pub node_map: BTreeMap<String, String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            scontrol: PathBuf::from("scontrol"),
            env: BTreeMap::new(),
            timeout: DEFAULT_SCONTROL_TIMEOUT,
            node_map: BTreeMap::new(),
        }
    }
}

/// `[remediation]` in the analyzer's config file. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// Mode for incidents no rule names: `off`, `suggest` (record what would be done) or `act`.
    pub default: RemediationMode,
    /// Log and record what would be done (`would drain …`) without calling the scheduler.
    pub dry_run: bool,
    /// Scheduler adapter: `none` or `slurm`.
    pub adapter: AdapterKind,
    /// How long a node faultline drained must stay healthy after its incident resolved before it is
    /// resumed, e.g. `10m`.
    #[serde(deserialize_with = "de_duration")]
    pub healthy_hold: Duration,
    /// Most share (0..=1) of the nodes known to the analyzer that faultline drains on its own
    /// within `window`. Above it nothing more is drained and a person is paged.
    pub max_drain_share: f64,
    /// The guard's sliding window, e.g. `1h`.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// Policy rules; the most specific match wins (class and severity, then class, then severity).
    pub rule: Vec<RuleConfig>,
    /// Slurm adapter settings (used when `adapter = "slurm"`).
    pub slurm: SlurmConfig,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            default: RemediationMode::Suggest,
            dry_run: false,
            adapter: AdapterKind::None,
            healthy_hold: DEFAULT_HEALTHY_HOLD,
            max_drain_share: DEFAULT_MAX_DRAIN_SHARE,
            window: DEFAULT_WINDOW,
            rule: Vec::new(),
            slurm: SlurmConfig::default(),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 30s or 10m: {e}")))
}

/// Why the `[remediation]` settings cannot be used; each message names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemediationConfigError {
    #[error("remediation.max_drain_share = {0}: must be a number from 0 to 1")]
    Share(f64),
    #[error("remediation.{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("remediation.rule[{index}] repeats rule[{first}] (same class and severity)")]
    DuplicateRule { index: usize, first: usize },
    #[error(
        "remediation: mode `act` ({what}) needs a scheduler adapter: set adapter = \"slurm\" (or dry_run = true to only log)"
    )]
    ActWithoutAdapter { what: String },
    #[error("remediation.slurm.scontrol: {0}")]
    Scontrol(String),
    #[error("remediation.slurm.node_map: {0:?} is not a valid node name for Slurm")]
    NodeMap(String),
    #[error("remediation.slurm.env: {0:?} is not a valid environment variable name")]
    Env(String),
}

/// The checked remediation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationSettings {
    pub policy: Policy,
    pub dry_run: bool,
    pub adapter: AdapterKind,
    pub healthy_hold_s: f64,
    pub max_drain_share: f64,
    pub window_s: f64,
    /// Resolved scontrol path (when the adapter is Slurm).
    pub slurm: SlurmConfig,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        // The defaults are valid by construction.
        let c = RemediationConfig::default();
        Self {
            policy: Policy { default: c.default, rules: Vec::new() },
            dry_run: c.dry_run,
            adapter: c.adapter,
            healthy_hold_s: c.healthy_hold.as_secs_f64(),
            max_drain_share: c.max_drain_share,
            window_s: c.window.as_secs_f64(),
            slurm: c.slurm,
        }
    }
}

impl RemediationConfig {
    /// Checks every value; resolves `scontrol` on `PATH` when the Slurm adapter is chosen.
    pub fn build(&self) -> Result<RemediationSettings, RemediationConfigError> {
        if !(self.max_drain_share.is_finite() && (0.0..=1.0).contains(&self.max_drain_share)) {
            return Err(RemediationConfigError::Share(self.max_drain_share));
        }
        if self.window.is_zero() {
            return Err(RemediationConfigError::ZeroDuration("window"));
        }
        if self.slurm.timeout.is_zero() {
            return Err(RemediationConfigError::ZeroDuration("slurm.timeout"));
        }
        for (i, r) in self.rule.iter().enumerate() {
            if let Some(first) = self.rule[..i].iter().position(|o| o.class == r.class && o.severity == r.severity) {
                return Err(RemediationConfigError::DuplicateRule { index: i, first });
            }
        }
        if self.adapter == AdapterKind::None && !self.dry_run {
            let acting = if self.default == RemediationMode::Act {
                Some("the default".to_string())
            } else {
                self.rule.iter().position(|r| r.mode == RemediationMode::Act).map(|i| format!("rule[{i}]"))
            };
            if let Some(what) = acting {
                return Err(RemediationConfigError::ActWithoutAdapter { what });
            }
        }
        let mut slurm = self.slurm.clone();
        if self.adapter == AdapterKind::Slurm {
            slurm.scontrol = resolve_program(&self.slurm.scontrol).map_err(RemediationConfigError::Scontrol)?;
            for (k, v) in &self.slurm.node_map {
                for name in [k, v] {
                    if !slurm::valid_node_name(name) {
                        return Err(RemediationConfigError::NodeMap(name.clone()));
                    }
                }
            }
            for k in self.slurm.env.keys() {
                let ok = !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err(RemediationConfigError::Env(k.clone()));
                }
            }
        }
        Ok(RemediationSettings {
            policy: Policy { default: self.default, rules: self.rule.clone() },
            dry_run: self.dry_run,
            adapter: self.adapter,
            healthy_hold_s: self.healthy_hold.as_secs_f64(),
            max_drain_share: self.max_drain_share,
            window_s: self.window.as_secs_f64(),
            slurm,
        })
    }
}

/// A program path as given, or found on `PATH` when it is a bare name.
fn resolve_program(p: &std::path::Path) -> Result<PathBuf, String> {
    if p.components().count() > 1 || p.is_absolute() {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(format!("{} does not exist", p.display())) };
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(p)).find(|c| c.is_file()))
        .ok_or_else(|| format!("{:?} is not on PATH; give its full path", p.display().to_string()))
}

// ---------------------------------------------------------------------------------------------
// Policy and targets

/// The mode for each class and severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: RemediationMode,
    pub rules: Vec<RuleConfig>,
}

impl Policy {
    /// The most specific matching rule's mode: class and severity, then class alone, then severity
    /// alone, then the default.
    pub fn mode_for(&self, class: FaultClass, severity: Severity) -> RemediationMode {
        self.rules
            .iter()
            .filter(|r| r.class.is_none_or(|c| c == class) && r.severity.is_none_or(|s| s == severity))
            .max_by_key(|r| (r.class.is_some(), r.severity.is_some()))
            .map(|r| r.mode)
            .unwrap_or(self.default)
    }
}

/// Whether an incident of this class should take its node(s) out of scheduling until it is fixed.
///
/// Yes for broken or failing hardware, where new jobs would crash or crawl. No where the node still
/// works and the remedy lies elsewhere: a congested (not broken) leaf, a silent agent on a computing
/// node, memory or CPU pressure from processes, and software faults of a job.
pub fn drains(class: FaultClass) -> bool {
    use FaultClass::*;
    match class {
        GpuLost | GpuHbmUncorrectable | GpuSramUncorrectable | GpuGspHang | GpuThermalThrottle | GpuPowerBrake
        | GpuSlow | GpuEccSbeStorm | GpuRowRemapFailure | GpuSdc | NvlinkDown | NvlinkCrcStorm | PcieDowntrained
        | NicDown | NicFlap | CableBitErrors | NicSpeedDegraded | LeafSwitchDown | NodeDown | HostFanFailure
        | HostMce | DiskFailure => true,
        LeafCongestion | AgentDown | HostOom | HostCpuContention | JobHang | JobCrash => false,
    }
}

/// Cluster nodes an incident takes out of service: the root's host, or for a switch every node
/// whose NICs hang off it (`behind_switch`). Empty when the class does not drain, or when its
/// recommended action needs no person (a contained memory error only restarts the job).
pub fn targets(inc: &Incident, behind_switch: impl Fn(&str) -> BTreeSet<String>) -> Vec<String> {
    if !drains(inc.class) || !inc.action.needs_person() {
        return Vec::new();
    }
    match &inc.root {
        ComponentId::Switch { name } => behind_switch(name).into_iter().collect(),
        ComponentId::Job { .. } | ComponentId::Rank { .. } => Vec::new(),
        other => other.host().map(|h| vec![h.to_string()]).unwrap_or_default(),
    }
}

/// The drain reason for an incident: `faultline: <class> <root> <incident id>`.
pub fn drain_reason(inc: &Incident) -> String {
    clean_reason(&format!("{DRAIN_REASON_PREFIX} {} {} {}", inc.class, inc.root, inc.id))
}

/// The drain reason for a person's drain through the API.
pub fn manual_reason(text: Option<&str>) -> String {
    let text = text.map(str::trim).filter(|t| !t.is_empty()).unwrap_or("drained by hand with faultline");
    clean_reason(&format!("{MANUAL_REASON_PREFIX} {text}"))
}

/// One line, no control characters or double quotes, at most `MAX_REASON_CHARS`.
fn clean_reason(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '"' { ' ' } else { c }).take(MAX_REASON_CHARS).collect()
}

/// Whether a drain reason is faultline's (so faultline may resume it).
pub fn owned_by_faultline(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.trim_start().starts_with(DRAIN_REASON_PREFIX))
}

/// Whether a drain reason is a person's drain made through faultline (never resumed on its own).
pub fn manual_drain(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.trim_start().starts_with(MANUAL_REASON_PREFIX))
}

// ---------------------------------------------------------------------------------------------
// The adapter

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The scheduler's state words, e.g. `IDLE+DRAIN`, `ALLOCATED`, `DOWN+DRAIN+NOT_RESPONDING`.
    pub state: String,
    /// Drained or draining: no new jobs go there.
    pub drained: bool,
    /// The reason set with the drain (or down), without the scheduler's `[user@time]` suffix.
    pub reason: Option<String>,
}

/// Why a scheduler call failed.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    #[error("{node:?} is not a node name the scheduler accepts (letters, digits, '-', '_', '.')")]
    BadNodeName { node: String },
    #[error("the scheduler does not know node {node}")]
    UnknownNode { node: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} {args} did not finish within {timeout_s} s; killed")]
    Timeout { program: String, args: String, timeout_s: f64 },
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed { program: String, args: String, status: String, stderr: String },
    #[error("cannot read the answer of {program}: {message}")]
    Parse { program: String, message: String },
    #[error("no scheduler adapter is configured (set [remediation] adapter = \"slurm\")")]
    NoAdapter,
}

/// A scheduler that can take nodes out of service and put them back. Calls block (they run a
/// program or talk to a server); callers run them off the async runtime. Node names are cluster
/// names; the adapter maps them to its own (`target`).
///
/// Slurm implements it (`slurm::SlurmRemediator`). A Kubernetes adapter (cordon, taint, a
/// NodeCondition) would implement the same three calls.
pub trait Remediator: Send + Sync + std::fmt::Debug + 'static {
    /// Short name for logs and the API (`slurm`).
    fn name(&self) -> &'static str;
    /// The scheduler's name for a cluster node.
    fn target(&self, node: &str) -> String;
    /// Take the node out of scheduling with this reason.
    fn drain(&self, node: &str, reason: &str) -> Result<(), RemediateError>;
    /// Put the node back into scheduling.
    fn resume(&self, node: &str) -> Result<(), RemediateError>;
    /// The node's state and drain reason.
    fn node_state(&self, node: &str) -> Result<NodeState, RemediateError>;
}

// ---------------------------------------------------------------------------------------------
// The planner

/// Something for the runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Only record this (a suggestion, a block, a note).
    Record(ActionRecord),
    /// Drain `node` for `incident` (or log that it would, when `dry_run`).
    Drain { node: String, incident: String, reason: String, dry_run: bool },
    /// Resume `node`, drained for `incidents` (or log that it would, when `dry_run`).
    Resume { node: String, incidents: Vec<String>, dry_run: bool },
    /// The guard stopped an incident's drains: page a person with this sentence.
    Page { incident: String, detail: String },
}

/// A node faultline drained (or, in a dry run, would have drained) and will resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Incidents that drained it; all must resolve before it is resumed.
    pub incidents: BTreeSet<String>,
    pub drained_s: f64,
    /// Drained only on paper (dry run).
    pub dry_run: bool,
    /// Since when every incident is resolved and the node healthy.
    pub healthy_since: Option<f64>,
    /// A failed resume is not tried again before this time.
    pub retry_at: Option<f64>,
}

/// A drain that failed and is tried again.
#[derive(Debug, Clone, PartialEq)]
struct Retry {
    reason: String,
    attempts: u32,
    at_s: f64,
}

/// Pure remediation state: what was considered, what faultline holds drained, the guard's window.
#[derive(Debug, Clone)]
pub struct Planner {
    pub settings: RemediationSettings,
    has_adapter: bool,
    considered: BTreeSet<String>,
    held: BTreeMap<String, Held>,
    /// Nodes faultline drained on its own (or would have, in a dry run), with when.
    window: VecDeque<(f64, String)>,
    /// Suggested and blocked drains, by (incident, node).
    pending: BTreeMap<(String, String), PendingAction>,
    retries: BTreeMap<(String, String), Retry>,
}

/// An action record for `node` at `now_s`.
#[allow(clippy::too_many_arguments)]
pub fn record(
    now_s: f64,
    action: NodeAction,
    node: &str,
    target: &str,
    incident: Option<&str>,
    origin: ActionOrigin,
    result: ActionResult,
    reason: Option<&str>,
    detail: String,
) -> ActionRecord {
    ActionRecord {
        id: 0,
        at_s: now_s,
        at: rfc3339(now_s),
        action,
        node: node.to_string(),
        target: target.to_string(),
        incident: incident.map(str::to_string),
        origin,
        result,
        reason: reason.map(str::to_string),
        detail,
    }
}

fn human_duration(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0).round() as u64)).to_string()
}

impl Planner {
    pub fn new(settings: RemediationSettings, has_adapter: bool) -> Self {
        Self {
            settings,
            has_adapter,
            considered: BTreeSet::new(),
            held: BTreeMap::new(),
            window: VecDeque::new(),
            pending: BTreeMap::new(),
            retries: BTreeMap::new(),
        }
    }

    /// Most nodes faultline may drain on its own within the window, for `known` nodes.
    pub fn limit(&self, known: usize) -> usize {
        (self.settings.max_drain_share * known as f64 + 1e-9).floor() as usize
    }

    fn prune(&mut self, now_s: f64) {
        let horizon = now_s - self.settings.window_s;
        while self.window.front().is_some_and(|(t, _)| *t <= horizon) {
            self.window.pop_front();
        }
    }

    /// Distinct nodes drained on faultline's own within the window ending now.
    pub fn drained_in_window(&mut self, now_s: f64) -> usize {
        self.prune(now_s);
        self.window.iter().map(|(_, n)| n.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// Whether an incident still needs a decision.
    pub fn wants(&self, incident: &str) -> bool {
        !self.considered.contains(incident)
    }

    /// Whether failed drains wait for another attempt.
    pub fn has_retries(&self) -> bool {
        !self.retries.is_empty()
    }

    /// Nodes held drained by faultline.
    pub fn held(&self) -> &BTreeMap<String, Held> {
        &self.held
    }

    /// Keeps a drain of `node` for `inc` pending (suggested or blocked) and returns the step that
    /// records it in the incident's timeline.
    #[allow(clippy::too_many_arguments)]
    fn pend_drain(
        &mut self,
        inc: &Incident,
        node: &str,
        (state, result): (PendingState, ActionResult),
        reason: &str,
        detail: String,
        target_name: &dyn Fn(&str) -> String,
        now_s: f64,
    ) -> Step {
        self.pending.insert(
            (inc.id.clone(), node.to_string()),
            PendingAction {
                action: NodeAction::Drain,
                node: node.to_string(),
                incident: Some(inc.id.clone()),
                state,
                since_s: now_s,
                due_s: None,
                detail: detail.clone(),
            },
        );
        Step::Record(record(
            now_s,
            NodeAction::Drain,
            node,
            &target_name(node),
            Some(&inc.id),
            ActionOrigin::Auto,
            result,
            Some(reason),
            detail,
        ))
    }

    /// Decides once what to do about an open incident whose drain targets are `targets`.
    pub fn plan_incident(
        &mut self,
        inc: &Incident,
        targets: &[String],
        known_nodes: usize,
        target_name: &dyn Fn(&str) -> String,
        now_s: f64,
    ) -> Vec<Step> {
        if !self.considered.insert(inc.id.clone()) || targets.is_empty() {
            return Vec::new();
        }
        let mode = self.settings.policy.mode_for(inc.class, inc.severity);
        let reason = drain_reason(inc);
        let mut steps = Vec::new();
        match mode {
            RemediationMode::Off => {}
            RemediationMode::Suggest => {
                for node in targets {
                    // `faultline drain` goes through the scheduler adapter: only name it when there is one.
                    let how = if self.has_adapter {
                        format!("`faultline drain {node}` does it")
                    } else {
                        "drain it with your scheduler: no scheduler adapter is configured, so `faultline drain` cannot"
                            .to_string()
                    };
                    let detail =
                        format!("suggest: drain {node} ({} for {} is `suggest`; {how})", policy_words(inc), inc.id);
                    let pending = (PendingState::Suggested, ActionResult::Suggested);
                    steps.push(self.pend_drain(inc, node, pending, &reason, detail, target_name, now_s));
                }
            }
            RemediationMode::Act => {
                let dry_run = self.settings.dry_run || !self.has_adapter;
                let mut new = Vec::new();
                for node in targets {
                    if let Some(h) = self.held.get_mut(node) {
                        h.incidents.insert(inc.id.clone());
                        h.healthy_since = None;
                        steps.push(Step::Record(record(
                            now_s,
                            NodeAction::Drain,
                            node,
                            &target_name(node),
                            Some(&inc.id),
                            ActionOrigin::Auto,
                            ActionResult::Skipped,
                            None,
                            format!("{node} is already drained by faultline; it now also waits for {}", inc.id),
                        )));
                    } else {
                        new.push(node.clone());
                    }
                }
                if new.is_empty() {
                    return steps;
                }
                let used = self.drained_in_window(now_s);
                let limit = self.limit(known_nodes);
                if used + new.len() > limit {
                    let detail = format!(
                        "blocked: draining {} node(s) ({}) for {} would make {} drained by faultline within {}, \
                         more than the limit of {limit} ({}% of {known_nodes} known nodes); nothing drained, a person must decide",
                        new.len(),
                        list_nodes(&new),
                        inc.id,
                        used + new.len(),
                        human_duration(self.settings.window_s),
                        (self.settings.max_drain_share * 100.0 * 100.0).round() / 100.0,
                    );
                    for node in &new {
                        let pending = (PendingState::Blocked, ActionResult::Blocked);
                        steps.push(self.pend_drain(inc, node, pending, &reason, detail.clone(), target_name, now_s));
                    }
                    steps.push(Step::Page { incident: inc.id.clone(), detail });
                    return steps;
                }
                for node in new {
                    self.window.push_back((now_s, node.clone()));
                    steps.push(Step::Drain { node, incident: inc.id.clone(), reason: reason.clone(), dry_run });
                }
            }
        }
        steps
    }

    /// A drain was carried out (`Ok`/`DryRun`), found someone else's drain (`Skipped`, `adopt` false),
    /// found faultline's own drain (`Skipped`, `adopt` true), or failed.
    pub fn drain_done(
        &mut self,
        node: &str,
        incident: &str,
        reason: &str,
        result: ActionResult,
        adopt: bool,
        now_s: f64,
    ) {
        let key = (incident.to_string(), node.to_string());
        match result {
            ActionResult::Ok | ActionResult::DryRun => {
                self.retries.remove(&key);
                self.pending.remove(&key);
                let h = self.held.entry(node.to_string()).or_insert_with(|| Held {
                    incidents: BTreeSet::new(),
                    drained_s: now_s,
                    dry_run: result == ActionResult::DryRun,
                    healthy_since: None,
                    retry_at: None,
                });
                h.incidents.insert(incident.to_string());
            }
            ActionResult::Skipped => {
                self.unreserve(node);
                self.already_drained(node, incident, adopt, now_s);
            }
            ActionResult::Failed => {
                self.unreserve(node);
                let r = self.retries.entry(key.clone()).or_insert(Retry {
                    reason: reason.to_string(),
                    attempts: 0,
                    at_s: now_s,
                });
                r.attempts += 1;
                r.at_s = now_s + RETRY_AFTER_S;
                let attempts = r.attempts;
                let (state, due, detail) = if attempts >= MAX_DRAIN_ATTEMPTS {
                    self.retries.remove(&key);
                    (
                        PendingState::Blocked,
                        None,
                        format!("drain of {node} failed {attempts} times; given up, a person must do it"),
                    )
                } else {
                    (
                        PendingState::Retry,
                        Some(now_s + RETRY_AFTER_S),
                        format!("drain of {node} failed ({attempts} of {MAX_DRAIN_ATTEMPTS} attempts); trying again"),
                    )
                };
                self.pending.insert(
                    key,
                    PendingAction {
                        action: NodeAction::Drain,
                        node: node.to_string(),
                        incident: Some(incident.to_string()),
                        state,
                        since_s: now_s,
                        due_s: due,
                        detail,
                    },
                );
            }
            ActionResult::Suggested | ActionResult::Blocked => {}
        }
    }

    /// `node` was found drained before faultline planned to drain it: nothing to do, and nothing
    /// counted against the guard. Faultline's own automatic drain (`adopt`) is held for `incident`
    /// too, so it is resumed only when every incident on it resolved.
    pub fn already_drained(&mut self, node: &str, incident: &str, adopt: bool, now_s: f64) {
        let key = (incident.to_string(), node.to_string());
        self.retries.remove(&key);
        self.pending.remove(&key);
        if adopt {
            let h = self.held.entry(node.to_string()).or_insert_with(|| Held {
                incidents: BTreeSet::new(),
                drained_s: now_s,
                dry_run: false,
                healthy_since: None,
                retry_at: None,
            });
            h.incidents.insert(incident.to_string());
            h.healthy_since = None;
        }
    }

    /// Removes the latest window entry for `node` (a reserved drain that did not happen).
    fn unreserve(&mut self, node: &str) {
        if let Some(i) = self.window.iter().rposition(|(_, n)| n == node) {
            self.window.remove(i);
        }
    }

    /// Failed drains whose retry time has come, for incidents still open, within the guard.
    pub fn due_retries(&mut self, open: &BTreeSet<String>, known_nodes: usize, now_s: f64) -> Vec<Step> {
        self.retries.retain(|(inc, _), _| open.contains(inc));
        let due: Vec<(String, String, String)> = self
            .retries
            .iter()
            .filter(|(_, r)| r.at_s <= now_s)
            .map(|((i, n), r)| (i.clone(), n.clone(), r.reason.clone()))
            .collect();
        let mut steps = Vec::new();
        for (incident, node, reason) in due {
            if self.held.contains_key(&node) {
                self.retries.remove(&(incident.clone(), node.clone()));
                continue;
            }
            let used = self.drained_in_window(now_s);
            if used + 1 > self.limit(known_nodes) {
                // Stays in `retries` and is looked at again next round; the guard may have room later.
                continue;
            }
            if let Some(r) = self.retries.get_mut(&(incident.clone(), node.clone())) {
                r.at_s = now_s + RETRY_AFTER_S;
            }
            self.window.push_back((now_s, node.clone()));
            steps.push(Step::Drain { node, incident, reason, dry_run: self.settings.dry_run || !self.has_adapter });
        }
        steps
    }

    /// Resumes that are due: every incident of the node resolved (not in `open`) and the node healthy
    /// (`healthy(node) == Some(true)`) for the hold time.
    pub fn plan_resumes(
        &mut self,
        open: &BTreeSet<String>,
        healthy: &dyn Fn(&str) -> Option<bool>,
        now_s: f64,
    ) -> Vec<Step> {
        // Suggestions and blocks of resolved incidents are no longer pending.
        self.pending.retain(|(inc, _), _| open.contains(inc));
        let hold = self.settings.healthy_hold_s;
        let mut steps = Vec::new();
        for (node, h) in self.held.iter_mut() {
            if h.incidents.iter().any(|i| open.contains(i)) || healthy(node) != Some(true) {
                h.healthy_since = None;
                continue;
            }
            let since = *h.healthy_since.get_or_insert(now_s);
            if now_s - since >= hold && h.retry_at.is_none_or(|t| t <= now_s) {
                steps.push(Step::Resume {
                    node: node.clone(),
                    incidents: h.incidents.iter().cloned().collect(),
                    dry_run: h.dry_run,
                });
            }
        }
        steps
    }

    /// A resume was carried out or is moot (`Ok`, `DryRun`, `Skipped`): forget the node. Failed: try
    /// again later.
    pub fn resume_done(&mut self, node: &str, result: ActionResult, now_s: f64) {
        match result {
            ActionResult::Failed => {
                if let Some(h) = self.held.get_mut(node) {
                    h.retry_at = Some(now_s + RETRY_AFTER_S);
                }
            }
            _ => {
                self.held.remove(node);
            }
        }
    }

    /// A person resumed the node by hand: faultline no longer holds it.
    pub fn forget(&mut self, node: &str) {
        self.held.remove(node);
        self.retries.retain(|(_, n), _| n != node);
        self.pending.retain(|(_, n), _| n != node);
    }

    /// Rebuilds the state from recorded actions (oldest first) after a restart.
    pub fn restore(&mut self, records: &[ActionRecord], now_s: f64) {
        for r in records {
            if let Some(inc) = &r.incident {
                self.considered.insert(inc.clone());
            }
            match (r.action, r.origin, r.result) {
                (NodeAction::Drain, ActionOrigin::Auto, ActionResult::Ok | ActionResult::DryRun) => {
                    if let Some(inc) = &r.incident {
                        let h = self.held.entry(r.node.clone()).or_insert_with(|| Held {
                            incidents: BTreeSet::new(),
                            drained_s: r.at_s,
                            dry_run: r.result == ActionResult::DryRun,
                            healthy_since: None,
                            retry_at: None,
                        });
                        h.incidents.insert(inc.clone());
                    }
                    if r.at_s > now_s - self.settings.window_s {
                        self.window.push_back((r.at_s, r.node.clone()));
                    }
                }
                (NodeAction::Resume, _, ActionResult::Ok | ActionResult::DryRun | ActionResult::Skipped) => {
                    self.held.remove(&r.node);
                }
                _ => {}
            }
        }
    }

    /// What waits: suggestions, blocks, retries, and held nodes waiting to be resumed.
    pub fn pending_view(&self, open: &BTreeSet<String>) -> Vec<PendingAction> {
        let mut out: Vec<PendingAction> =
            self.pending.iter().filter(|((i, _), _)| open.contains(i)).map(|(_, p)| p.clone()).collect();
        for (node, h) in &self.held {
            let waiting: Vec<&String> = h.incidents.iter().filter(|i| open.contains(*i)).collect();
            let (state, due, detail) = if !waiting.is_empty() {
                (
                    PendingState::AwaitingResolve,
                    None,
                    format!(
                        "resume {node} once {} resolved",
                        waiting.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
            } else {
                match h.healthy_since {
                    Some(s) => (
                        PendingState::AwaitingHealthy,
                        Some(s + self.settings.healthy_hold_s),
                        format!(
                            "resume {node} after it stays healthy for {}",
                            human_duration(self.settings.healthy_hold_s)
                        ),
                    ),
                    None => (
                        PendingState::AwaitingHealthy,
                        None,
                        format!("resume {node} once it reports healthy (its incidents resolved)"),
                    ),
                }
            };
            out.push(PendingAction {
                action: NodeAction::Resume,
                node: node.clone(),
                incident: h.incidents.iter().next_back().cloned(),
                state,
                since_s: h.drained_s,
                due_s: due,
                detail: if h.dry_run { format!("{detail} (dry run)") } else { detail },
            });
        }
        out
    }
}

fn policy_words(inc: &Incident) -> String {
    format!("policy for {}/{}", inc.class, inc.severity)
}

/// `a, b, c` or `a, b, c and 7 more`.
fn list_nodes(nodes: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = nodes.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if nodes.len() > SHOWN {
        s.push_str(&format!(" and {} more", nodes.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests;
