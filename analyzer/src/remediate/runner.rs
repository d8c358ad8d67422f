//! Carries out the planner's steps against the analyzer (through `Host`): finds drain targets in
//! the graph and topology file, asks the scheduler adapter, records every action in the store (the
//! incident timeline shows it) and in `/metrics`, logs, and serves the manual drain/resume of the
//! API.
//!
//! Every scheduler call happens on a blocking thread: the server's remediation loop runs each round
//! in `spawn_blocking`, and the HTTP handlers do the same. One round or manual action runs at a
//! time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use faultline_proto::remediation::{
    ActionOrigin, ActionRecord, ActionResult, ActionsView, DrainRequest, NodeAction, RemediationMode, ResumeRequest,
};
use faultline_proto::{Incident, TimelineEntry};
use tracing::{error, info, warn};

use super::cluster::{busy_nodes, known_nodes, nodes_behind};
use super::host::Host;
use super::slurm::SlurmRemediator;
use super::validate::{self, CheckOutcome};
use super::{
    AdapterKind, NodeState, Planner, RemediateError, RemediationSettings, Remediator, Step, drain_reason, drains,
    manual_drain, manual_reason, owned_by_faultline, record, targets,
};
use crate::engine::IncidentChange;
use crate::store::{Store, StoreError};
use crate::sync::lock;

/// Most recent actions `GET /api/v1/actions` lists.
pub const MAX_ACTIONS_LISTED: usize = 500;

/// Remediation as the server holds it: settings, the adapter, the planner's state.
pub struct Remediation {
    settings: RemediationSettings,
    adapter: Option<Arc<dyn Remediator>>,
    planner: Mutex<Planner>,
    /// One round or one manual action at a time, so two never race on the same node.
    ops: Mutex<()>,
    /// Validations that ended since the last round; their threads put them here.
    finished: Arc<Mutex<Vec<Finished>>>,
}

/// One validation of a node, ended.
#[derive(Debug)]
struct Finished {
    node: String,
    target: String,
    incidents: Vec<String>,
    started_s: f64,
    outcomes: Vec<CheckOutcome>,
}

impl std::fmt::Debug for Remediation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remediation")
            .field("adapter", &self.adapter.as_ref().map(|a| a.name()))
            .field("dry_run", &self.settings.dry_run)
            .finish_non_exhaustive()
    }
}

/// Why a manual drain or resume was refused; the HTTP layer turns it into a status.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// 400
    #[error("{0}")]
    BadRequest(String),
    /// 503
    #[error("no scheduler adapter is configured: set [remediation] adapter = \"slurm\" in the analyzer's config")]
    NoAdapter,
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 502
    #[error("{0}")]
    Scheduler(String),
}

impl Remediation {
    /// Builds the configured adapter (none, or Slurm).
    pub fn new(settings: &RemediationSettings) -> Self {
        let adapter: Option<Arc<dyn Remediator>> = match settings.adapter {
            AdapterKind::None => None,
            AdapterKind::Slurm => Some(Arc::new(SlurmRemediator::new(&settings.slurm))),
        };
        Self::with_adapter(settings, adapter)
    }

    /// With an adapter the caller built (another scheduler).
    pub fn with_adapter(settings: &RemediationSettings, adapter: Option<Arc<dyn Remediator>>) -> Self {
        Self {
            planner: Mutex::new(Planner::new(settings.clone(), adapter.is_some())),
            settings: settings.clone(),
            adapter,
            ops: Mutex::new(()),
            finished: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn settings(&self) -> &RemediationSettings {
        &self.settings
    }

    pub fn adapter_name(&self) -> Option<&'static str> {
        self.adapter.as_ref().map(|a| a.name())
    }

    /// Rebuilds what faultline holds drained, the guard's window and which incidents were decided,
    /// from the actions the store recorded.
    pub fn restore(&self, store: &Store, now_s: f64) -> Result<(), StoreError> {
        let records = store.actions_all()?;
        let mut p = lock(&self.planner);
        p.restore(&records, now_s);
        if !p.held().is_empty() {
            info!(
                nodes = p.held().len(),
                "remediation: nodes faultline drained are held until their incidents resolve"
            );
        }
        Ok(())
    }

    fn target(&self, node: &str) -> String {
        self.adapter.as_ref().map(|a| a.target(node)).unwrap_or_else(|| node.to_string())
    }

    /// One round: decide about new open incidents, retry failed drains, resume what is due, and
    /// carry it all out. Blocks on the scheduler; call it from a blocking thread.
    pub fn round(&self, st: &dyn Host) {
        let _ops = lock(&self.ops);
        let now_s = st.now_s();
        let open: Vec<Incident> = st.open_incidents();
        let open_ids: BTreeSet<String> = open.iter().map(|i| i.id.clone()).collect();
        let fresh: Vec<&Incident> = {
            let p = lock(&self.planner);
            open.iter().filter(|i| drains(i.class) && p.wants(&i.id)).collect()
        };
        let mut known: Option<usize> = None;
        let mut steps = Vec::new();
        for inc in fresh {
            let k = *known.get_or_insert_with(|| known_nodes(st));
            let mut t = targets(inc, |sw| nodes_behind(st, sw));
            // Nodes already out of scheduling are not drained again and do not count against the
            // guard: look before planning when this incident will really be acted on.
            let mut already = Vec::new();
            let acts = self.settings.policy.mode_for(inc.class, inc.severity) == RemediationMode::Act;
            if let (true, false, Some(a)) = (acts, self.settings.dry_run, &self.adapter) {
                t.retain(|n| match a.node_state(n) {
                    Ok(s) if s.drained => {
                        already.push((n.clone(), s));
                        false
                    }
                    _ => true,
                });
            }
            let target = |n: &str| self.target(n);
            steps.extend(lock(&self.planner).plan_incident(inc, &t, k, &target, now_s));
            let reason = drain_reason(inc);
            for (n, s) in already {
                let (result, adopt, detail) = already_drained(&n, &s, &inc.id);
                lock(&self.planner).already_drained(&n, &inc.id, adopt, now_s);
                steps.push(Step::Record(record(
                    now_s,
                    NodeAction::Drain,
                    &n,
                    &self.target(&n),
                    Some(&inc.id),
                    ActionOrigin::Auto,
                    result,
                    Some(&reason),
                    detail,
                )));
            }
        }
        let has_retries = lock(&self.planner).has_retries();
        if has_retries {
            let k = *known.get_or_insert_with(|| known_nodes(st));
            steps.extend(lock(&self.planner).due_retries(&open_ids, k, now_s));
        }
        let held = !lock(&self.planner).held().is_empty();
        let health: BTreeMap<String, bool> = if held {
            let busy = busy_nodes(st, &open);
            st.node_summaries().into_iter().map(|n| (n.node.clone(), n.healthy && !busy.contains(&n.node))).collect()
        } else {
            BTreeMap::new()
        };
        let finished = std::mem::take(&mut *lock(&self.finished));
        for f in finished {
            steps.extend(self.validation_finished(st, f, now_s));
        }
        steps.extend(lock(&self.planner).plan_resumes(&open_ids, &|n| health.get(n).copied(), now_s));
        for step in steps {
            self.execute(st, step, now_s);
        }
    }

    fn execute(&self, st: &dyn Host, step: Step, now_s: f64) {
        match step {
            Step::Record(rec) => self.commit(st, rec),
            Step::Page { incident, detail } => {
                st.metrics().remediation_blocked();
                error!(
                    incident = %incident,
                    detail = %detail,
                    "REMEDIATION BLOCKED by the blast-radius guard: a person must decide"
                );
                page(st, &incident, &detail, now_s);
            }
            Step::Drain { node, incident, reason, dry_run } => {
                let target = self.target(&node);
                let (result, adopt, detail) = if dry_run {
                    (
                        ActionResult::DryRun,
                        false,
                        format!(
                            "would drain {node} (scheduler node {target}) for {incident} with reason {reason:?} (dry run)"
                        ),
                    )
                } else if let Some(a) = &self.adapter {
                    drain_with(a.as_ref(), &node, &target, &incident, &reason)
                } else {
                    (ActionResult::Failed, false, RemediateError::NoAdapter.to_string())
                };
                lock(&self.planner).drain_done(&node, &incident, &reason, result, adopt, now_s);
                let rec = record(
                    now_s,
                    NodeAction::Drain,
                    &node,
                    &target,
                    Some(&incident),
                    ActionOrigin::Auto,
                    result,
                    Some(&reason),
                    detail,
                );
                self.commit(st, rec);
            }
            Step::Resume { node, incidents, dry_run } => {
                let target = self.target(&node);
                let after = incidents.join(", ");
                let (result, detail) = if dry_run {
                    (
                        ActionResult::DryRun,
                        format!(
                            "would resume {node} (scheduler node {target}): {after} resolved and the node stayed healthy (dry run)"
                        ),
                    )
                } else if let Some(a) = &self.adapter {
                    let checked = if self.settings.validation.enabled() {
                        format!(" and passed validation ({})", self.settings.validation.names())
                    } else {
                        String::new()
                    };
                    resume_with(a.as_ref(), &node, &target, &after, &checked)
                } else {
                    (ActionResult::Failed, RemediateError::NoAdapter.to_string())
                };
                lock(&self.planner).resume_done(&node, result, now_s);
                self.record_each(st, NodeAction::Resume, &node, &target, &incidents, result, detail, now_s);
            }
            Step::Validate { node, incidents } => self.start_validation(st, node, incidents, now_s),
            Step::KeepDrained { node, incidents, reason, detail } => {
                let target = self.target(&node);
                let detail = match &self.adapter {
                    Some(a) => keep_drained(a.as_ref(), &node, &reason, &detail),
                    None => detail,
                };
                for inc in &incidents {
                    let rec = record(
                        now_s,
                        NodeAction::Validate,
                        &node,
                        &target,
                        Some(inc),
                        ActionOrigin::Auto,
                        ActionResult::Failed,
                        Some(&reason),
                        detail.clone(),
                    );
                    // The checks were counted one by one; this is their verdict.
                    if inc == &incidents[0] {
                        log_action(&rec);
                    }
                    self.store_only(st, &rec);
                }
            }
        }
    }

    /// A resume (or one validation check) belongs to every incident that drained the node: one
    /// record each, counted and logged once (one scheduler call, one check).
    #[allow(clippy::too_many_arguments)]
    fn record_each(
        &self,
        st: &dyn Host,
        action: NodeAction,
        node: &str,
        target: &str,
        incidents: &[String],
        result: ActionResult,
        detail: String,
        now_s: f64,
    ) {
        for (i, inc) in incidents.iter().enumerate() {
            let rec = record(now_s, action, node, target, Some(inc), ActionOrigin::Auto, result, None, detail.clone());
            if i > 0 {
                self.store_only(st, &rec);
            } else {
                self.commit(st, rec);
            }
        }
    }

    /// Starts the validation of a held node whose resume is due: the drain must still be
    /// faultline's (else this ends as the resume would), built-in checks are judged now, and
    /// command checks run on a thread of their own when those passed. The outcome is picked up by
    /// the next round.
    fn start_validation(&self, st: &dyn Host, node: String, incidents: Vec<String>, now_s: f64) {
        let target = self.target(&node);
        if let Some(a) = &self.adapter
            && let Err((result, detail)) = still_ours(a.as_ref(), &node)
        {
            let mut p = lock(&self.planner);
            p.validation_cancelled(&node);
            p.resume_done(&node, result, now_s);
            drop(p);
            self.record_each(st, NodeAction::Resume, &node, &target, &incidents, result, detail, now_s);
            return;
        }
        let checks = self.settings.validation.checks.clone();
        let facts = st.node_facts(&node);
        let outcomes: Vec<CheckOutcome> = checks.iter().filter_map(|c| validate::builtin(c, facts.as_ref())).collect();
        let commands: Vec<_> = checks.into_iter().filter(|c| !c.is_builtin()).collect();
        info!(node = %node, checks = %self.settings.validation.names(), "remediation: validating before resuming");
        let mut done = Finished { node, target, incidents, started_s: now_s, outcomes };
        // Commands run only on a node whose own report already looks right.
        if commands.is_empty() || done.outcomes.iter().any(|o| !o.passed) {
            lock(&self.finished).push(done);
            return;
        }
        let finished = self.finished.clone();
        let node = done.node.clone();
        let spawned = std::thread::Builder::new().name("faultline-validate".into()).spawn(move || {
            for c in &commands {
                done.outcomes.push(validate::run_command(c, &done.node, &done.target));
            }
            lock(&finished).push(done);
        });
        if let Err(e) = spawned {
            error!(node = %node, error = %e, "cannot start a validation thread; the node is validated again later");
            lock(&self.planner).validation_cancelled(&node);
        }
    }

    /// Records each check of an ended validation in the incidents' timelines and tells the planner.
    fn validation_finished(&self, st: &dyn Host, f: Finished, now_s: f64) -> Option<Step> {
        for o in &f.outcomes {
            let word = if o.passed { "passed" } else { "FAILED" };
            let mut detail = format!("validation of {}: {} {word}: {}", f.node, o.name, o.summary);
            if !o.output.is_empty() {
                detail.push('\n');
                detail.push_str(&o.output);
            }
            let result = if o.passed { ActionResult::Ok } else { ActionResult::Failed };
            self.record_each(st, NodeAction::Validate, &f.node, &f.target, &f.incidents, result, detail, now_s);
        }
        lock(&self.planner).validation_done(&f.node, f.started_s, &validate::failure_words(&f.outcomes), now_s)
    }

    /// Records an action in the store and the metrics, and logs it.
    fn commit(&self, st: &dyn Host, rec: ActionRecord) {
        st.metrics().remediation_action(rec.action, rec.result);
        log_action(&rec);
        self.store_only(st, &rec);
    }

    fn store_only(&self, st: &dyn Host, rec: &ActionRecord) {
        if let Err(e) = st.record_action(rec) {
            st.metrics().store_error();
            error!(node = %rec.node, action = %rec.action, result = %rec.result, error = %e, "cannot record a remediation action");
        }
    }

    /// `POST /api/v1/actions/drain`: a person drains a node. Blocks on the scheduler.
    pub fn manual_drain(&self, st: &dyn Host, req: &DrainRequest) -> Result<ActionRecord, ManualError> {
        let _ops = lock(&self.ops);
        let node = checked_node(&req.node)?;
        let a = self.adapter.as_ref().ok_or(ManualError::NoAdapter)?;
        let target = a.target(node);
        let reason = manual_reason(req.reason.as_deref());
        let now_s = st.now_s();
        let state = a.node_state(node).map_err(scheduler_error)?;
        let (result, detail) = if state.drained && owned_by_faultline(state.reason.as_deref()) {
            (
                ActionResult::Skipped,
                format!(
                    "{node} is already drained by faultline (reason {:?}); nothing changed",
                    state.reason.unwrap_or_default()
                ),
            )
        } else if state.drained {
            return Err(ManualError::Conflict(format!(
                "{node} is already drained by someone else (reason {:?}); faultline does not overwrite another drain",
                state.reason.unwrap_or_default()
            )));
        } else if self.settings.dry_run {
            (
                ActionResult::DryRun,
                format!("would drain {node} (scheduler node {target}) by hand with reason {reason:?} (dry run)"),
            )
        } else {
            match a.drain(node, &reason) {
                Ok(()) => (
                    ActionResult::Ok,
                    format!("drained {node} by hand (scheduler node {target}) with reason {reason:?}"),
                ),
                Err(e) => {
                    let rec = record(
                        now_s,
                        NodeAction::Drain,
                        node,
                        &target,
                        None,
                        ActionOrigin::Manual,
                        ActionResult::Failed,
                        Some(&reason),
                        format!("drain of {node} by hand failed: {e}"),
                    );
                    self.commit(st, rec);
                    return Err(scheduler_error(e));
                }
            }
        };
        let rec =
            record(now_s, NodeAction::Drain, node, &target, None, ActionOrigin::Manual, result, Some(&reason), detail);
        self.commit(st, rec.clone());
        Ok(rec)
    }

    /// `POST /api/v1/actions/resume`: a person resumes a node; only a `faultline:` drain unless
    /// `force`. Blocks on the scheduler.
    pub fn manual_resume(&self, st: &dyn Host, req: &ResumeRequest) -> Result<ActionRecord, ManualError> {
        let _ops = lock(&self.ops);
        let node = checked_node(&req.node)?;
        let a = self.adapter.as_ref().ok_or(ManualError::NoAdapter)?;
        let target = a.target(node);
        let now_s = st.now_s();
        let state = a.node_state(node).map_err(scheduler_error)?;
        if !state.drained {
            return Err(ManualError::Conflict(format!(
                "{node} is not drained (state {}); nothing to resume",
                state.state
            )));
        }
        let reason = state.reason.clone().unwrap_or_default();
        if !owned_by_faultline(state.reason.as_deref()) && !req.force {
            return Err(ManualError::Conflict(format!(
                "{node} was drained by someone else (reason {reason:?}); faultline resumes only its own drains; pass --force to resume it anyway"
            )));
        }
        let forced = if owned_by_faultline(state.reason.as_deref()) { "" } else { " (forced: someone else's drain)" };
        let (result, detail) = if self.settings.dry_run {
            (ActionResult::DryRun, format!("would resume {node} by hand (drain reason {reason:?}){forced} (dry run)"))
        } else {
            match a.resume(node) {
                Ok(()) => {
                    lock(&self.planner).forget(node);
                    (ActionResult::Ok, format!("resumed {node} by hand (drain reason was {reason:?}){forced}"))
                }
                Err(e) => {
                    let rec = record(
                        now_s,
                        NodeAction::Resume,
                        node,
                        &target,
                        None,
                        ActionOrigin::Manual,
                        ActionResult::Failed,
                        None,
                        format!("resume of {node} by hand failed: {e}"),
                    );
                    self.commit(st, rec);
                    return Err(scheduler_error(e));
                }
            }
        };
        let rec = record(now_s, NodeAction::Resume, node, &target, None, ActionOrigin::Manual, result, None, detail);
        self.commit(st, rec.clone());
        Ok(rec)
    }

    /// `GET /api/v1/actions`: pending and taken actions.
    pub fn view(&self, st: &dyn Host) -> Result<ActionsView, StoreError> {
        let now_s = st.now_s();
        let open_ids: BTreeSet<String> = st.open_ids();
        let known = known_nodes(st);
        let (pending, drained, limit) = {
            let mut p = lock(&self.planner);
            let drained = p.drained_in_window(now_s);
            (p.pending_view(&open_ids), drained, p.limit(known))
        };
        let taken = st.actions_recent(MAX_ACTIONS_LISTED)?;
        Ok(ActionsView {
            adapter: self.adapter_name().map(str::to_string),
            dry_run: self.settings.dry_run,
            default_mode: self.settings.policy.default,
            drain_limit: u32::try_from(limit).unwrap_or(u32::MAX),
            drained_in_window: u32::try_from(drained).unwrap_or(u32::MAX),
            window_s: self.settings.window_s,
            pending,
            taken,
        })
    }
}

/// Pages through the configured notifiers: an `updated` notification of the incident, critical,
/// whose summary and last timeline entry say that remediation was blocked and why. Only the outbox
/// gets it; the incident itself is not changed (its timeline shows the `blocked` actions anyway).
fn page(st: &dyn Host, incident: &str, detail: &str, now_s: f64) {
    let Some(mut inc) = st.open_incident(incident) else { return };
    inc.severity = faultline_proto::Severity::Critical;
    inc.summary = format!("REMEDIATION BLOCKED, a person must decide: {}", inc.summary);
    inc.updated_s = now_s;
    inc.timeline.push(TimelineEntry { at_s: now_s, what: "action".into(), detail: detail.to_string() });
    if let Some(Err(e)) = st.page(&IncidentChange::Updated(inc), now_s) {
        st.metrics().store_error();
        error!(incident = %incident, error = %e, "cannot queue the remediation-blocked page");
    }
}

/// What to record for a node found already drained: always skipped; adopted (held for resume)
/// only when the drain is faultline's own automatic one.
fn already_drained(node: &str, s: &NodeState, incident: &str) -> (ActionResult, bool, String) {
    let reason = s.reason.clone().unwrap_or_default();
    if manual_drain(s.reason.as_deref()) {
        (
            ActionResult::Skipped,
            false,
            format!(
                "{node} is already drained by hand through faultline (reason {reason:?}); left for a person to resume"
            ),
        )
    } else if owned_by_faultline(s.reason.as_deref()) {
        (
            ActionResult::Skipped,
            true,
            format!("{node} is already drained by faultline (reason {reason:?}); it now also waits for {incident}"),
        )
    } else {
        (
            ActionResult::Skipped,
            false,
            format!(
                "{node} is already drained by someone else (reason {reason:?}); left as it is, and faultline will not resume it"
            ),
        )
    }
}

/// Drains `node` unless it is already drained; never overwrites another drain.
fn drain_with(
    a: &dyn Remediator,
    node: &str,
    target: &str,
    incident: &str,
    reason: &str,
) -> (ActionResult, bool, String) {
    match a.node_state(node) {
        Err(e) => (
            ActionResult::Failed,
            false,
            format!("cannot read the state of {node} before draining it for {incident}: {e}"),
        ),
        Ok(s) if s.drained => already_drained(node, &s, incident),
        Ok(_) => match a.drain(node, reason) {
            Ok(()) => (
                ActionResult::Ok,
                false,
                format!("drained {node} in {} (node {target}) with reason {reason:?}", a.name()),
            ),
            Err(e) => (ActionResult::Failed, false, format!("drain of {node} for {incident} failed: {e}")),
        },
    }
}

/// `Ok` while `node` is drained with faultline's reason; otherwise what a resume would record:
/// `Failed` when the scheduler cannot say, `Skipped` when the node is back or someone else's.
fn still_ours(a: &dyn Remediator, node: &str) -> Result<(), (ActionResult, String)> {
    match a.node_state(node) {
        Err(e) => Err((ActionResult::Failed, format!("cannot read the state of {node} before resuming it: {e}"))),
        Ok(s) if !s.drained => Err((
            ActionResult::Skipped,
            format!("{node} is no longer drained (state {}); someone resumed it already", s.state),
        )),
        Ok(s) if !owned_by_faultline(s.reason.as_deref()) => Err((
            ActionResult::Skipped,
            format!(
                "{node} is now drained by someone else (reason {:?}); faultline leaves it drained",
                s.reason.unwrap_or_default()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Resumes `node` only if its drain reason is still faultline's.
fn resume_with(a: &dyn Remediator, node: &str, target: &str, after: &str, checked: &str) -> (ActionResult, String) {
    if let Err(skip) = still_ours(a, node) {
        return skip;
    }
    match a.resume(node) {
        Ok(()) => (
            ActionResult::Ok,
            format!(
                "resumed {node} in {} (node {target}): {after} resolved, the node stayed healthy{checked}",
                a.name()
            ),
        ),
        Err(e) => (ActionResult::Failed, format!("resume of {node} failed: {e}")),
    }
}

/// Rewrites the drain reason of a node that failed validation, when the drain is still
/// faultline's automatic one; `detail` with what was done.
fn keep_drained(a: &dyn Remediator, node: &str, reason: &str, detail: &str) -> String {
    match a.node_state(node) {
        Err(e) => format!("{detail}; cannot read its state to update the drain reason: {e}"),
        Ok(s) if !s.drained => format!("{detail}; it is no longer drained (state {}), someone resumed it", s.state),
        Ok(s) if !owned_by_faultline(s.reason.as_deref()) || manual_drain(s.reason.as_deref()) => format!(
            "{detail}; its drain is now someone else's (reason {:?}), left as it is",
            s.reason.unwrap_or_default()
        ),
        Ok(s) if s.reason.as_deref() == Some(reason) => detail.to_string(),
        Ok(_) => match a.drain(node, reason) {
            Ok(()) => format!("{detail}; drain reason in {} now {reason:?}", a.name()),
            Err(e) => format!("{detail}; updating the drain reason failed: {e}"),
        },
    }
}

fn log_action(r: &ActionRecord) {
    let inc = r.incident.as_deref().unwrap_or("-");
    match r.result {
        ActionResult::Ok | ActionResult::Suggested | ActionResult::DryRun | ActionResult::Skipped => {
            info!(action = %r.action, node = %r.node, incident = %inc, result = %r.result, detail = %r.detail, "remediation")
        }
        ActionResult::Failed => {
            warn!(action = %r.action, node = %r.node, incident = %inc, detail = %r.detail, "remediation failed")
        }
        ActionResult::Blocked => {
            warn!(action = %r.action, node = %r.node, incident = %inc, detail = %r.detail, "remediation blocked")
        }
    }
}

fn checked_node(node: &str) -> Result<&str, ManualError> {
    let n = node.trim();
    if !faultline_proto::id::valid_name(n) {
        return Err(ManualError::BadRequest(format!(
            "node {node:?} is not a node name (non-empty, at most 128 bytes, no '/', spaces or control characters)"
        )));
    }
    Ok(n)
}

fn scheduler_error(e: RemediateError) -> ManualError {
    match e {
        // The error already names the node ("the scheduler does not know node X"): say it once.
        RemediateError::UnknownNode { .. } => ManualError::NotFound(e.to_string()),
        RemediateError::BadNodeName { .. } => ManualError::BadRequest(e.to_string()),
        RemediateError::NoAdapter => ManualError::NoAdapter,
        other => ManualError::Scheduler(other.to_string()),
    }
}

#[cfg(test)]
mod not_found_wording {
    use super::*;

    #[test]
    fn an_unknown_node_is_named_once() {
        let e = scheduler_error(RemediateError::UnknownNode { node: "node-0099".into() });
        assert!(matches!(e, ManualError::NotFound(_)));
        let text = e.to_string();
        assert_eq!(text.matches("node-0099").count(), 1, "{text}");
    }
}
