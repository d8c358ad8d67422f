//! Incidents: one per root cause. Opens them from the localizer's diagnoses, attaches consequences
//! (affected jobs with their dependency paths, evidence, timeline), upgrades their class when
//! stronger evidence arrives, recommends an action, and resolves them with hysteresis once their
//! symptoms have been gone for `resolve_after_s`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use faultline_proto::{
    Action, ComponentId, Evidence, FaultClass, Incident, IncidentStatus, Severity, TimelineEntry, rfc3339,
};

use crate::detect::Symptom;
use crate::localize::{Active, Diagnosis, class_rank};
use crate::state::State;
use crate::topology::Topology;

/// Evidence entries kept per incident (the first ones convinced it; later ones add little).
pub const MAX_EVIDENCE: usize = 32;
/// Timeline entries kept per incident.
pub const MAX_TIMELINE: usize = 64;

/// The recommended action for a class, refined by the XID catalog's action when an XID is behind it.
///
/// From the class: a lost GPU, a degraded link that needs retraining (NVLink CRC storm, PCIe
/// downtrained) or a dead node needs the node rebooted; a hung or memory-faulted GPU (or a downed
/// NVLink) a GPU reset; a failing part (row-remap failure, SBE storm, SDC, slow, thermal or power
/// braked GPU, fan, MCE, disk) replacing, with the vendor; anything on the fabric (NIC, cable, leaf)
/// a look at the cable or switch; an OOM kill or a software hang/crash a job restart; a silent agent
/// on a computing node or CPU contention nothing a person must do at once.
///
/// From the XID catalog (NVIDIA's immediate action) for GPU faults: a reset or bare-metal restart
/// wins over the class's words, and a contained memory error (XID 94, `RESTART_APP`: the bad row is
/// already fenced off) needs only the job restarted.
pub fn action_for(class: FaultClass, xid: Option<u32>) -> Action {
    use FaultClass::*;
    let base = match class {
        GpuLost => Action::RebootNode,
        GpuHbmUncorrectable | GpuSramUncorrectable | GpuGspHang | NvlinkDown => Action::ResetGpu,
        GpuRowRemapFailure
        | GpuEccSbeStorm
        | GpuSdc
        | GpuSlow
        | GpuThermalThrottle
        | GpuPowerBrake
        | GpuCollectiveCorruption => Action::ReplacePart,
        NvlinkCrcStorm | PcieDowntrained => Action::RebootNode,
        NicDown | NicFlap | CableBitErrors | NicSpeedDegraded | LeafSwitchDown | LeafCongestion | SwitchSilentDrop
        | NicConnectionResets => Action::InspectCableOrSwitch,
        NodeDown => Action::RebootNode,
        AgentDown | HostCpuContention => Action::None,
        HostFanFailure | HostMce | DiskFailure => Action::ReplacePart,
        HostOom | JobHang | JobCrash => Action::RestartJob,
    };
    match xid.map(faultline_proto::xid::action) {
        // The catalog's own word for a GPU fault wins where it asks for more than a job restart.
        Some(a @ (Action::ResetGpu | Action::RebootNode))
            if class.target_kind() == faultline_proto::ComponentKind::Gpu =>
        {
            a
        }
        Some(Action::RestartJob) if class == GpuHbmUncorrectable || class == GpuSramUncorrectable => Action::RestartJob,
        _ => base,
    }
}

/// How bad a class is: critical when jobs stop, warning when they slow or a part is failing.
pub fn severity_for(class: FaultClass) -> Severity {
    use FaultClass::*;
    match class {
        GpuLost
        | GpuHbmUncorrectable
        | GpuSramUncorrectable
        | GpuGspHang
        | NvlinkDown
        | NicDown
        | LeafSwitchDown
        | NodeDown
        | HostOom
        | DiskFailure
        | JobHang
        | JobCrash
        | GpuSdc
        | GpuCollectiveCorruption => Severity::Critical,
        AgentDown => Severity::Info,
        _ => Severity::Warning,
    }
}

/// Severity refined by the XID behind it: a memory error the driver contained (XID 94, NVIDIA's
/// `RESTART_APP`) needs the job restarted, not a person paged at night.
pub fn severity_of(class: FaultClass, xid: Option<u32>) -> Severity {
    match (class, xid) {
        (FaultClass::GpuHbmUncorrectable | FaultClass::GpuSramUncorrectable, Some(94)) => Severity::Warning,
        _ => severity_for(class),
    }
}

fn what(class: FaultClass) -> &'static str {
    use FaultClass::*;
    match class {
        GpuLost => "fell off the bus",
        GpuHbmUncorrectable => "has an uncorrectable HBM memory error",
        GpuSramUncorrectable => "has an uncorrectable SRAM error",
        GpuGspHang => "is hung (GSP/firmware not answering)",
        GpuThermalThrottle => "is thermally throttled",
        GpuPowerBrake => "is held by the power brake",
        GpuSlow => "computes slower than its peers",
        GpuEccSbeStorm => "logs a storm of correctable ECC errors (failing)",
        GpuRowRemapFailure => "failed to remap a memory row (needs replacement)",
        GpuSdc => "corrupts data silently",
        NvlinkDown => "is down",
        NvlinkCrcStorm => "has a CRC/replay error storm",
        PcieDowntrained => "PCIe link trained below its maximum",
        NicDown => "link is down",
        NicFlap => "link is flapping",
        CableBitErrors => "has bit errors on its cable",
        NicSpeedDegraded => "link trained below its rated speed",
        LeafSwitchDown => "is down: every NIC cabled to it lost link",
        LeafCongestion => "is congested",
        SwitchSilentDrop => "drops packets silently (no port counter shows it)",
        NicConnectionResets => "resets its connections (no symbol error shows it)",
        GpuCollectiveCorruption => "corrupts collective results while NVML reports it healthy",
        NodeDown => "is down",
        AgentDown => "agent stopped reporting; the node still computes",
        HostFanFailure => "fan failed; its GPUs overheat",
        HostOom => "ran out of memory and killed a rank",
        HostMce => "reports hardware memory/CPU errors",
        HostCpuContention => "CPU is saturated by processes outside the job",
        DiskFailure => "has I/O errors",
        JobHang => "hangs: every rank stopped with no hardware fault under it",
        JobCrash => "crashed: every rank exited non-zero with no hardware fault under it",
    }
}

fn evidence_of(s: &Symptom) -> Evidence {
    Evidence {
        at_s: s.onset_ms as f64 / 1000.0,
        component: s.component.clone(),
        kind: s.kind.as_str().into(),
        detail: s.detail.clone(),
    }
}

/// Jobs and rank paths whose dependency path contains `root` (for `job_*` the job itself; none for
/// an agent).
pub fn affected(topo: &Topology, root: &ComponentId, class: FaultClass) -> (Vec<String>, Vec<Vec<String>>) {
    let mut jobs = BTreeSet::new();
    let mut paths = Vec::new();
    match (class, root) {
        (FaultClass::AgentDown, _) => {}
        (_, ComponentId::Job { id }) => {
            jobs.insert(id.clone());
            if let Some(ranks) = topo.job_ranks(id) {
                for r in ranks.keys() {
                    paths.extend(topo.rank_path(id, *r));
                }
            }
        }
        (_, ComponentId::Disk { host, .. }) => {
            // Ranks checkpoint to their node's local disk: they depend on it as on the node.
            for (job, rank) in topo.ranks_depending_on(&ComponentId::node(host)) {
                paths.extend(topo.rank_path(&job, rank));
                jobs.insert(job);
            }
        }
        _ => {
            for (job, rank) in topo.ranks_depending_on(root) {
                paths.extend(topo.rank_path(&job, rank));
                jobs.insert(job);
            }
        }
    }
    (jobs.into_iter().collect(), paths)
}

/// Every incident, and which are open.
#[derive(Debug, Default)]
pub struct Book {
    pub incidents: Vec<Incident>,
    open: HashMap<ComponentId, usize>,
    /// Analyzer time a diagnosis last confirmed each open incident.
    last_confirmed: HashMap<usize, i64>,
    /// Symptoms already written into each incident's evidence.
    seen: HashMap<usize, BTreeSet<(ComponentId, &'static str)>>,
    next_id: u64,
}

/// One change for the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Opened(usize),
    Updated(usize),
    Resolved(usize),
}

impl Book {
    pub fn open_roots(&self) -> Vec<(ComponentId, FaultClass)> {
        let mut v: Vec<_> = self.open.iter().map(|(r, i)| (r.clone(), self.incidents[*i].class)).collect();
        v.sort();
        v
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Continue open incidents after a restart; new ids follow `next_id`.
    pub fn restore(&mut self, incidents: Vec<Incident>, next_id: u64, now_ms: i64) {
        for inc in incidents {
            let i = self.incidents.len();
            if inc.status == IncidentStatus::Open {
                self.open.insert(inc.root.clone(), i);
                self.last_confirmed.insert(i, now_ms);
            }
            let seen =
                inc.evidence.iter().filter_map(|e| kind_static(&e.kind).map(|k| (e.component.clone(), k))).collect();
            self.seen.insert(i, seen);
            self.incidents.push(inc);
        }
        let max_seen = self
            .incidents
            .iter()
            .filter_map(|i| i.id.strip_prefix("inc-").and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        self.next_id = next_id.max(max_seen);
    }

    /// Apply one round of diagnoses.
    pub fn apply(
        &mut self,
        diags: &[Diagnosis],
        symptoms: &[Active],
        topo: &Topology,
        state: &State,
        now_ms: i64,
        resolve_after_ms: i64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let now_s = now_ms as f64 / 1000.0;
        for d in diags {
            if let Some(&i) = self.open.get(&d.root) {
                self.last_confirmed.insert(i, now_ms);
                let mut changed = false;
                let inc = &mut self.incidents[i];
                if class_rank(d.class) > class_rank(inc.class) && d.class.target_kind() == inc.class.target_kind() {
                    inc.timeline.push(TimelineEntry {
                        at_s: now_s,
                        what: "updated".into(),
                        detail: format!("class {} → {} on new evidence", inc.class, d.class),
                    });
                    inc.class = d.class;
                    inc.severity = severity_of(d.class, d.xid);
                    inc.action = action_for(d.class, d.xid);
                    inc.summary = summary(&inc.root, d.class, inc.affected_jobs.len());
                    changed = true;
                }
                let seen = self.seen.entry(i).or_default();
                for k in &d.explains {
                    let s = &symptoms[*k].s;
                    if seen.insert((s.component.clone(), s.kind.as_str())) {
                        if inc.evidence.len() < MAX_EVIDENCE {
                            inc.evidence.push(evidence_of(s));
                        }
                        if let ComponentId::Job { id } = &s.component {
                            if !inc.affected_jobs.contains(id)
                                && state.jobs.get(id).is_some_and(|j| j.first_seen_ms as f64 / 1000.0 <= inc.onset_s)
                            {
                                inc.affected_jobs.push(id.clone());
                                inc.affected_jobs.sort();
                            }
                        }
                        let what = if s.kind.is_consequence() { "job_affected" } else { "evidence" };
                        if inc.timeline.len() < MAX_TIMELINE {
                            inc.timeline.push(TimelineEntry {
                                at_s: now_s,
                                what: what.into(),
                                detail: s.detail.clone(),
                            });
                        }
                        changed = true;
                    }
                }
                if changed {
                    inc.updated_s = now_s;
                    changes.push(Change::Updated(i));
                }
                continue;
            }
            if !d.ready {
                continue;
            }
            self.next_id += 1;
            let id = format!("inc-{:06}", self.next_id);
            let (jobs, paths) = affected(topo, &d.root, d.class);
            let mut evidence: Vec<Evidence> = Vec::new();
            let mut seen = BTreeSet::new();
            let mut ordered: Vec<&Symptom> = d.explains.iter().map(|k| &symptoms[*k].s).collect();
            ordered.sort_by_key(|s| (s.kind.is_consequence(), s.onset_ms));
            for s in ordered {
                if seen.insert((s.component.clone(), s.kind.as_str())) && evidence.len() < MAX_EVIDENCE {
                    evidence.push(evidence_of(s));
                }
            }
            let onset_s = d.onset_ms as f64 / 1000.0;
            let inc = Incident {
                id: id.clone(),
                root: d.root.clone(),
                class: d.class,
                severity: severity_of(d.class, d.xid),
                confidence: (d.confidence * 100.0).round() / 100.0,
                status: IncidentStatus::Open,
                summary: summary(&d.root, d.class, jobs.len()),
                onset_s,
                opened_s: now_s,
                opened_at: rfc3339(now_s),
                updated_s: now_s,
                resolved_s: None,
                affected_jobs: jobs,
                paths,
                timeline: vec![TimelineEntry {
                    at_s: now_s,
                    what: "opened".into(),
                    detail: evidence.first().map(|e| e.detail.clone()).unwrap_or_default(),
                }],
                evidence,
                action: action_for(d.class, d.xid),
            };
            let i = self.incidents.len();
            tracing::info!(incident = %id, root = %inc.root, class = %inc.class, "incident opened");
            self.incidents.push(inc);
            self.open.insert(d.root.clone(), i);
            self.last_confirmed.insert(i, now_ms);
            self.seen.insert(i, seen);
            changes.push(Change::Opened(i));
        }
        // Hysteresis: resolve what no diagnosis confirmed for `resolve_after`.
        let mut resolved: Vec<(ComponentId, usize)> = Vec::new();
        for (root, &i) in &self.open {
            let last = self.last_confirmed.get(&i).copied().unwrap_or(now_ms);
            if now_ms - last >= resolve_after_ms {
                resolved.push((root.clone(), i));
            }
        }
        resolved.sort_by_key(|x| x.1);
        for (root, i) in resolved {
            self.open.remove(&root);
            let inc = &mut self.incidents[i];
            inc.status = IncidentStatus::Resolved;
            inc.resolved_s = Some(now_s);
            inc.updated_s = now_s;
            inc.timeline.push(TimelineEntry {
                at_s: now_s,
                what: "resolved".into(),
                detail: format!("no symptom for {:.0} s", resolve_after_ms as f64 / 1000.0),
            });
            tracing::info!(incident = %inc.id, root = %inc.root, "incident resolved");
            changes.push(Change::Resolved(i));
        }
        changes
    }

    /// Open incidents per job, for the summary.
    pub fn open_by_job(&self) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for &i in self.open.values() {
            for j in &self.incidents[i].affected_jobs {
                *m.entry(j.clone()).or_default() += 1;
            }
        }
        m
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values().map(|i| &self.incidents[*i])
    }
}

fn summary(root: &ComponentId, class: FaultClass, jobs: usize) -> String {
    let j = match jobs {
        0 => "no job affected".to_string(),
        1 => "1 job affected".to_string(),
        n => format!("{n} jobs affected"),
    };
    format!("{root} {} ({class}); {j}", what(class))
}

fn kind_static(k: &str) -> Option<&'static str> {
    use crate::detect::SymptomKind as K;
    const ALL: &[K] = &[
        K::GpuLost,
        K::GpuUnresponsive,
        K::XidFatal,
        K::XidAppRepeated,
        K::EccDbe,
        K::SramUncorrectable,
        K::RowRemapFailure,
        K::RowRemapPending,
        K::SbeStorm,
        K::ThermalThrottle,
        K::PowerBrake,
        K::ClockLow,
        K::PcieDegraded,
        K::NvlinkDown,
        K::NvlinkErrors,
        K::NicDown,
        K::NicFlap,
        K::NicErrors,
        K::NicSpeedLow,
        K::NicCongested,
        K::HeartbeatLost,
        K::OomKill,
        K::Mce,
        K::FanFailure,
        K::CpuContention,
        K::MemoryPressure,
        K::DiskError,
        K::JobStalled,
        K::JobCrashed,
        K::JobSlow,
        K::RankExited,
        K::Straggler,
        K::NonFinite,
        K::CounterSaturated,
        K::NicDriver,
        K::PcieAer,
        K::HungTask,
        K::SdcSuspect,
        K::GradMismatch,
    ];
    ALL.iter().map(|x| x.as_str()).find(|s| *s == k)
}

// ---------------------------------------------------------------------------------------------------
// Fatal-XID hold, as `faultline explain` shows it (added for the first-hour issue; self-contained).

/// Marks a fatal-XID symptom view with how long it is held live and why: the GPU raised an XID that
/// leaves it suspect for `fatal_xid_hold_s` even when it answers again, and the incident resolves
/// `resolve_after_s` after that (a Slurm resume of the node waits for it too).
pub fn fatal_xid_hold(
    v: &mut faultline_proto::api::SymptomView,
    kind: crate::detect::SymptomKind,
    fatal_xid_hold_s: f64,
    resolve_after_s: f64,
) {
    if kind != crate::detect::SymptomKind::XidFatal {
        return;
    }
    v.held_until_s = Some(v.onset_s + fatal_xid_hold_s);
    v.held_because = Some(format!(
        "a fatal XID keeps the GPU suspect for {:.0} s after it is raised (fatal_xid_hold_s), even if it answers \
         again; the incident resolves {:.0} s after that (resolve_after_s)",
        fatal_xid_hold_s, resolve_after_s
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_class_and_xid() {
        assert_eq!(action_for(FaultClass::GpuLost, Some(79)), Action::RebootNode);
        assert_eq!(action_for(FaultClass::GpuHbmUncorrectable, Some(48)), Action::ResetGpu);
        assert_eq!(action_for(FaultClass::LeafSwitchDown, None), Action::InspectCableOrSwitch);
        assert_eq!(action_for(FaultClass::JobCrash, None), Action::RestartJob);
        assert_eq!(action_for(FaultClass::AgentDown, None), Action::None);
        assert_eq!(action_for(FaultClass::GpuRowRemapFailure, Some(64)), Action::ResetGpu);
    }

    /// The recommended action of every class without an XID, and whether it pages a person.
    #[test]
    fn every_class_has_its_action() {
        use Action::*;
        use FaultClass::*;
        let table = [
            (GpuLost, RebootNode),
            (GpuHbmUncorrectable, ResetGpu),
            (GpuSramUncorrectable, ResetGpu),
            (GpuGspHang, ResetGpu),
            (GpuThermalThrottle, ReplacePart),
            (GpuPowerBrake, ReplacePart),
            (GpuSlow, ReplacePart),
            (GpuEccSbeStorm, ReplacePart),
            (GpuRowRemapFailure, ReplacePart),
            (GpuSdc, ReplacePart),
            (NvlinkDown, ResetGpu),
            (NvlinkCrcStorm, RebootNode),
            (PcieDowntrained, RebootNode),
            (NicDown, InspectCableOrSwitch),
            (NicFlap, InspectCableOrSwitch),
            (CableBitErrors, InspectCableOrSwitch),
            (NicSpeedDegraded, InspectCableOrSwitch),
            (LeafSwitchDown, InspectCableOrSwitch),
            (LeafCongestion, InspectCableOrSwitch),
            (SwitchSilentDrop, InspectCableOrSwitch),
            (NicConnectionResets, InspectCableOrSwitch),
            (GpuCollectiveCorruption, ReplacePart),
            (NodeDown, RebootNode),
            (AgentDown, None),
            (HostFanFailure, ReplacePart),
            (HostOom, RestartJob),
            (HostMce, ReplacePart),
            (HostCpuContention, None),
            (DiskFailure, ReplacePart),
            (JobHang, RestartJob),
            (JobCrash, RestartJob),
        ];
        assert_eq!(table.len(), FaultClass::ALL.len(), "every class is pinned");
        for (class, want) in table {
            assert_eq!(action_for(class, Option::None), want, "{class}");
        }
        // Only hardware actions page a person.
        assert!(!RestartJob.needs_person() && !None.needs_person());
        for a in [ResetGpu, RebootNode, ReplacePart, InspectCableOrSwitch] {
            assert!(a.needs_person(), "{a:?}");
        }
    }

    /// NVIDIA's immediate action for the XID behind a GPU incident refines the class's action.
    #[test]
    fn the_xid_catalog_refines_gpu_actions() {
        use Action::*;
        use FaultClass::*;
        for (class, xid, want) in [
            (GpuLost, 79, RebootNode),
            (GpuHbmUncorrectable, 48, ResetGpu),
            (GpuHbmUncorrectable, 95, ResetGpu),
            (GpuHbmUncorrectable, 94, RestartJob),
            (GpuSramUncorrectable, 94, RestartJob),
            (GpuHbmUncorrectable, 171, ResetGpu),
            (GpuGspHang, 119, ResetGpu),
            (GpuGspHang, 169, ResetGpu),
            (NvlinkDown, 74, ResetGpu),
            (GpuRowRemapFailure, 64, ResetGpu),
            (GpuEccSbeStorm, 92, ReplacePart),
        ] {
            assert_eq!(action_for(class, Some(xid)), want, "{class} with XID {xid}");
        }
        // The catalog's words never turn a non-GPU fault into a GPU action.
        assert_eq!(action_for(NodeDown, Some(79)), RebootNode);
        assert_eq!(action_for(LeafSwitchDown, Some(119)), InspectCableOrSwitch);
    }

    #[test]
    fn a_contained_xid_94_is_a_warning_with_a_job_restart() {
        assert_eq!(severity_of(FaultClass::GpuHbmUncorrectable, Some(94)), Severity::Warning);
        assert_eq!(severity_of(FaultClass::GpuHbmUncorrectable, Some(95)), Severity::Critical);
        assert_eq!(action_for(FaultClass::GpuHbmUncorrectable, Some(94)), Action::RestartJob);
    }

    #[test]
    fn every_class_has_words_and_a_severity() {
        for c in FaultClass::ALL {
            assert!(!what(*c).is_empty());
            let _ = severity_for(*c);
            assert!(class_rank(*c) > 0);
        }
        assert_eq!(kind_static("link_down"), Some("link_down"));
    }

    #[test]
    fn fatal_xid_views_say_until_when_and_why_they_are_held() {
        let cfg = crate::engine::EngineConfig { fatal_xid_hold_s: 90.0, ..Default::default() };
        let mut v = faultline_proto::api::SymptomView {
            kind: "xid_critical".into(),
            severity: Severity::Critical,
            onset_s: 1000.0,
            detail: String::new(),
            held_until_s: None,
            held_because: None,
        };
        fatal_xid_hold(&mut v, crate::detect::SymptomKind::NicDown, cfg.fatal_xid_hold_s, cfg.resolve_after_s);
        assert_eq!(v.held_until_s, None);
        fatal_xid_hold(&mut v, crate::detect::SymptomKind::XidFatal, cfg.fatal_xid_hold_s, cfg.resolve_after_s);
        assert_eq!(v.held_until_s, Some(1090.0));
        assert!(v.held_because.as_deref().unwrap().contains("fatal_xid_hold_s"), "{v:?}");
    }
}
