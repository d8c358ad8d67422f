//! The planner: pure remediation state and decisions. It is handed incidents, node health and the
//! time, and answers with `Step`s for the runner to carry out. It never calls the scheduler and never
//! reads a clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use faultline_proto::remediation::{
    ActionOrigin, ActionRecord, ActionResult, NodeAction, PendingAction, PendingState, RemediationMode,
};
use faultline_proto::{Incident, rfc3339};

use super::config::RemediationSettings;
use super::policy::{DRAIN_REASON_PREFIX, clean_reason, drain_reason};

/// A failed scheduler call is tried again after this long (a restarting slurmctld is back within
/// seconds to a minute).
pub const RETRY_AFTER_S: f64 = 30.0;

/// A drain that failed this many times is given up (and stays a pending action for a person).
pub const MAX_DRAIN_ATTEMPTS: u32 = 5;

/// Something for the runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Only record this (a suggestion, a block, a note).
    Record(ActionRecord),
    /// Drain `node` for `incident` (or log that it would, when `dry_run`).
    Drain { node: String, incident: String, reason: String, dry_run: bool },
    /// Resume `node`, drained for `incidents` (or log that it would, when `dry_run`).
    Resume { node: String, incidents: Vec<String>, dry_run: bool },
    /// Run the configured validation of `node` before resuming it; the runner reports the outcome
    /// back with `Planner::validation_done`.
    Validate { node: String, incidents: Vec<String> },
    /// `node` failed validation: keep it drained and say why in its drain reason (when the drain is
    /// still faultline's).
    KeepDrained { node: String, incidents: Vec<String>, reason: String, detail: String },
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
    /// Validation before the resume (when checks are configured).
    pub check: CheckState,
}

/// Where a held node's validation stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckState {
    /// A validation started at this time and has not reported back.
    pub running_since: Option<f64>,
    /// The start time of the last validation that passed; it counts only while the node has been
    /// healthy since before it started.
    pub passed_at: Option<f64>,
    /// Validations failed in a row.
    pub failures: u32,
    /// No new validation before this time (backoff after a failure).
    pub next_at: Option<f64>,
    /// The failed checks of the last failure, `gpu-count: 7 of 8 GPUs`.
    pub last_failure: Option<String>,
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
                        // A new fault: earlier validations say nothing about it.
                        h.check = CheckState { running_since: h.check.running_since, ..CheckState::default() };
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
                    check: CheckState::default(),
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
                check: CheckState::default(),
            });
            if h.incidents.insert(incident.to_string()) {
                h.check = CheckState { running_since: h.check.running_since, ..CheckState::default() };
            }
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
        let validation = &self.settings.validation;
        let mut steps = Vec::new();
        for (node, h) in self.held.iter_mut() {
            if h.incidents.iter().any(|i| open.contains(i)) || healthy(node) != Some(true) {
                h.healthy_since = None;
                h.check.passed_at = None;
                continue;
            }
            let since = *h.healthy_since.get_or_insert(now_s);
            if now_s - since < hold || h.retry_at.is_some_and(|t| t > now_s) {
                continue;
            }
            let incidents: Vec<String> = h.incidents.iter().cloned().collect();
            // A dry run drained nothing, so it validates nothing either (the node may be running jobs).
            if !validation.enabled() || h.dry_run || h.check.passed_at.is_some_and(|p| p >= since) {
                steps.push(Step::Resume { node: node.clone(), incidents, dry_run: h.dry_run });
            } else if h.check.running_since.is_none()
                && h.check.failures < validation.max_attempts
                && h.check.next_at.is_none_or(|t| t <= now_s)
            {
                h.check.running_since = Some(now_s);
                steps.push(Step::Validate { node: node.clone(), incidents });
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

    /// A validation of `node` that started at `started_s` ended; `failed` names the failed checks
    /// with their numbers (`gpu-count: 7 of 8 GPUs`), empty when every check passed. A pass lets the
    /// next `plan_resumes` resume the node (if it is still healthy); a failure keeps it drained,
    /// with the step that says so, and waits `backoff_s` before the next try.
    pub fn validation_done(&mut self, node: &str, started_s: f64, failed: &str, now_s: f64) -> Option<Step> {
        let v = &self.settings.validation;
        let h = self.held.get_mut(node)?;
        if h.check.running_since == Some(started_s) {
            h.check.running_since = None;
        }
        if failed.is_empty() {
            h.check.passed_at = Some(started_s);
            h.check.failures = 0;
            h.check.next_at = None;
            h.check.last_failure = None;
            return None;
        }
        h.check.passed_at = None;
        h.check.failures += 1;
        h.check.last_failure = Some(failed.to_string());
        let n = h.check.failures;
        let max = v.max_attempts;
        let then = if n >= max {
            h.check.next_at = None;
            format!(
                "gave up after {n} failed validations: a person must check it and resume it (`faultline resume {node}`)"
            )
        } else {
            let wait = v.backoff_s(n);
            h.check.next_at = Some(now_s + wait);
            format!("validating again in {} (attempt {} of {max})", human_duration(wait), n + 1)
        };
        Some(Step::KeepDrained {
            node: node.to_string(),
            incidents: h.incidents.iter().cloned().collect(),
            reason: validation_reason(failed),
            detail: format!("{node} failed validation and stays drained: {failed}; {then}"),
        })
    }

    /// A validation could not start (the scheduler did not answer): it is no longer running.
    pub fn validation_cancelled(&mut self, node: &str) {
        if let Some(h) = self.held.get_mut(node) {
            h.check.running_since = None;
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
                            check: CheckState::default(),
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
            } else if self.settings.validation.enabled() && !h.dry_run && h.check.last_failure.is_some() {
                let failed = h.check.last_failure.as_deref().unwrap_or_default();
                if h.check.failures >= self.settings.validation.max_attempts {
                    (
                        PendingState::Blocked,
                        None,
                        format!(
                            "{node} failed validation {} times ({failed}); a person must check it and resume it",
                            h.check.failures
                        ),
                    )
                } else if h.check.running_since.is_some() {
                    (PendingState::AwaitingHealthy, None, format!("validating {node} again (last time: {failed})"))
                } else {
                    (
                        PendingState::AwaitingHealthy,
                        h.check.next_at,
                        format!("{node} failed validation ({failed}); validating it again before resuming it"),
                    )
                }
            } else if h.check.running_since.is_some() {
                (
                    PendingState::AwaitingHealthy,
                    None,
                    format!("validating {node} ({}) before resuming it", self.settings.validation.names()),
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

/// The drain reason of a node that failed validation: `faultline: validation failed: <checks>`.
pub fn validation_reason(failed: &str) -> String {
    clean_reason(&format!("{DRAIN_REASON_PREFIX} validation failed: {failed}"))
}
