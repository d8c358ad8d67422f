//! Scoring per spec/scenario.md: was each injected fault detected (an incident rooted in its blast
//! radius opened after `at_s` and before it cleared plus two intervals), was it correct (root exactly
//! the target), how fast, which jobs were reported, and which incidents matched no fault at all.

use std::collections::BTreeSet;

use faultline_proto::FaultClass;
use serde::{Deserialize, Serialize};

/// What was really injected, with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthFault {
    pub kind: FaultClass,
    pub target: String,
    pub at_s: f64,
    /// When it cleared, if before the end of the run.
    pub clear_s: Option<f64>,
    /// The target and everything depending on it at `at_s`.
    pub blast: BTreeSet<String>,
    pub expected_jobs: Vec<String>,
}

/// An incident as the run report lists it (times in virtual seconds since the run started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIncident {
    pub id: String,
    pub root: String,
    pub class: FaultClass,
    pub confidence: f64,
    pub opened_s: f64,
    pub resolved_s: Option<f64>,
    pub affected_jobs: Vec<String>,
    pub paths: Vec<Vec<String>>,
    /// The incident's evidence as the analyzer gave it (`component kind: detail`), so that a false
    /// incident can be read without rerunning the world.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Per-fault result, exactly the fields of scenario.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultResult {
    pub kind: FaultClass,
    pub target: String,
    pub at_s: f64,
    pub detected: bool,
    pub correct: bool,
    pub diagnosed_root: Option<String>,
    pub time_to_detect_s: Option<f64>,
    pub time_to_diagnose_s: Option<f64>,
    pub expected_jobs: Vec<String>,
    pub reported_jobs: Vec<String>,
    pub incident: Option<String>,
}

/// How a fault is expected to be found, which sets its time target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Hard evidence at once (XID, link down, kernel line, process exit): target p95 ≤ 5 s.
    Hard,
    /// Only silence tells (node_down, agent_down): bounded by the heartbeat (3 intervals).
    Silence,
    /// Slowdowns and hangs that must persist before they count: target p95 ≤ 60 s.
    Slow,
}

impl Group {
    pub fn of(kind: FaultClass) -> Self {
        use FaultClass as K;
        match kind {
            K::NodeDown | K::AgentDown => Group::Silence,
            K::GpuThermalThrottle
            | K::GpuPowerBrake
            | K::GpuSlow
            | K::NvlinkCrcStorm
            | K::PcieDowntrained
            | K::NicFlap
            | K::CableBitErrors
            | K::NicSpeedDegraded
            | K::LeafCongestion
            | K::HostFanFailure
            | K::HostCpuContention
            // Evidence that accumulates: sporadic failing edges, resets every half minute or more.
            | K::SwitchSilentDrop
            | K::NicConnectionResets
            | K::JobHang => Group::Slow,
            _ => Group::Hard,
        }
    }

    /// The p95 time-to-diagnose target, seconds.
    pub fn target_p95_s(self) -> Option<f64> {
        match self {
            Group::Hard => Some(5.0),
            Group::Slow => Some(60.0),
            Group::Silence => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Hard => "hard",
            Group::Silence => "silence",
            Group::Slow => "slow",
        }
    }
}

/// Counts and times for a set of faults (one kind, one group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub name: String,
    pub faults: usize,
    pub detected: usize,
    pub correct: usize,
    pub ttd_p50_s: Option<f64>,
    pub ttd_p95_s: Option<f64>,
    pub ttd_max_s: Option<f64>,
    /// Time to the correct diagnosis.
    pub diagnose_p50_s: Option<f64>,
    pub diagnose_p95_s: Option<f64>,
    pub diagnose_max_s: Option<f64>,
}

/// The summary of scenario.md (first block of fields), plus breakdowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub faults: usize,
    pub detected: usize,
    pub correct: usize,
    /// Share of faults diagnosed with exactly the right root.
    pub coverage: f64,
    /// `coverage` with every fault weighted by its kind's catalog weight.
    pub weighted_coverage: f64,
    pub ttd_p50_s: Option<f64>,
    pub ttd_p95_s: Option<f64>,
    pub ttd_max_s: Option<f64>,
    pub job_precision: f64,
    pub job_recall: f64,
    pub false_incidents: usize,
    pub false_per_1000_node_days: f64,
    /// By expectation group (hard / silence / slow).
    pub groups: Vec<Tally>,
    /// By fault kind.
    pub kinds: Vec<Tally>,
    /// Ids of the false incidents.
    pub false_incident_ids: Vec<String>,
}

/// Nearest-rank percentile of an unsorted list.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The run parameters scoring needs.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts {
    pub duration_s: f64,
    pub interval_s: f64,
    pub nodes: usize,
}

impl TruthFault {
    /// Whether `inc` counts for this fault: opened in its window, rooted in its blast radius.
    pub fn matches(&self, inc: &RunIncident, run: RunFacts) -> bool {
        let until = self.clear_s.unwrap_or(run.duration_s) + 2.0 * run.interval_s;
        inc.opened_s >= self.at_s && inc.opened_s <= until && self.blast.contains(&inc.root)
    }
}

/// Score the incidents against the faults.
pub fn score(faults: &[TruthFault], incidents: &[RunIncident], run: RunFacts) -> (Vec<FaultResult>, Summary) {
    let mut by_time: Vec<&RunIncident> = incidents.iter().collect();
    by_time.sort_by(|a, b| a.opened_s.total_cmp(&b.opened_s).then(a.id.cmp(&b.id)));
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    let mut results = Vec::with_capacity(faults.len());
    for f in faults {
        let hits: Vec<&&RunIncident> = by_time.iter().filter(|i| f.matches(i, run)).collect();
        for h in &hits {
            matched.insert(h.id.as_str());
        }
        let first = hits.first();
        let first_correct = hits.iter().find(|i| i.root == f.target);
        let cited = first_correct.or(first);
        let mut reported: Vec<String> = cited.map(|i| i.affected_jobs.clone()).unwrap_or_default();
        reported.sort();
        reported.dedup();
        results.push(FaultResult {
            kind: f.kind,
            target: f.target.clone(),
            at_s: f.at_s,
            detected: first.is_some(),
            correct: first_correct.is_some(),
            diagnosed_root: cited.map(|i| i.root.clone()),
            time_to_detect_s: first.map(|i| r3(i.opened_s - f.at_s)),
            time_to_diagnose_s: first_correct.map(|i| r3(i.opened_s - f.at_s)),
            expected_jobs: f.expected_jobs.clone(),
            reported_jobs: reported,
            incident: cited.map(|i| i.id.clone()),
        });
    }
    let false_ids: Vec<String> =
        by_time.iter().filter(|i| !matched.contains(i.id.as_str())).map(|i| i.id.clone()).collect();

    let (mut tp, mut reported_n, mut expected_n) = (0usize, 0usize, 0usize);
    for r in &results {
        let exp: BTreeSet<&String> = r.expected_jobs.iter().collect();
        tp += r.reported_jobs.iter().filter(|j| exp.contains(j)).count();
        reported_n += r.reported_jobs.len();
        expected_n += exp.len();
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { r3(a as f64 / b as f64) };
    let wsum: f64 = results.iter().map(|r| f64::from(r.kind.weight())).sum();
    let wcorrect: f64 = results.iter().filter(|r| r.correct).map(|r| f64::from(r.kind.weight())).sum();
    let node_days = run.nodes as f64 * run.duration_s / 86_400.0;
    let all = tally("all", results.iter());
    let mut groups = Vec::new();
    for g in [Group::Hard, Group::Silence, Group::Slow] {
        let t = tally(g.as_str(), results.iter().filter(|r| Group::of(r.kind) == g));
        if t.faults > 0 {
            groups.push(t);
        }
    }
    let mut kinds = Vec::new();
    for k in FaultClass::ALL {
        let t = tally(k.as_str(), results.iter().filter(|r| r.kind == *k));
        if t.faults > 0 {
            kinds.push(t);
        }
    }
    let summary = Summary {
        faults: results.len(),
        detected: all.detected,
        correct: all.correct,
        coverage: ratio(all.correct, results.len()),
        weighted_coverage: if wsum > 0.0 { r3(wcorrect / wsum) } else { 1.0 },
        ttd_p50_s: all.ttd_p50_s,
        ttd_p95_s: all.ttd_p95_s,
        ttd_max_s: all.ttd_max_s,
        job_precision: ratio(tp, reported_n),
        job_recall: ratio(tp, expected_n),
        false_incidents: false_ids.len(),
        false_per_1000_node_days: if node_days > 0.0 { r3(false_ids.len() as f64 / node_days * 1000.0) } else { 0.0 },
        groups,
        kinds,
        false_incident_ids: false_ids,
    };
    (results, summary)
}

fn tally<'a>(name: &str, rs: impl Iterator<Item = &'a FaultResult>) -> Tally {
    let rs: Vec<&FaultResult> = rs.collect();
    let ttd: Vec<f64> = rs.iter().filter_map(|r| r.time_to_detect_s).collect();
    let ttdiag: Vec<f64> = rs.iter().filter_map(|r| r.time_to_diagnose_s).collect();
    Tally {
        name: name.to_string(),
        faults: rs.len(),
        detected: rs.iter().filter(|r| r.detected).count(),
        correct: rs.iter().filter(|r| r.correct).count(),
        ttd_p50_s: percentile(&ttd, 50.0),
        ttd_p95_s: percentile(&ttd, 95.0),
        ttd_max_s: percentile(&ttd, 100.0),
        diagnose_p50_s: percentile(&ttdiag, 50.0),
        diagnose_p95_s: percentile(&ttdiag, 95.0),
        diagnose_max_s: percentile(&ttdiag, 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: RunFacts = RunFacts { duration_s: 1800.0, interval_s: 10.0, nodes: 32 };

    fn fault(
        kind: FaultClass,
        target: &str,
        at_s: f64,
        clear_s: Option<f64>,
        blast: &[&str],
        jobs: &[&str],
    ) -> TruthFault {
        let mut b: BTreeSet<String> = blast.iter().map(|s| s.to_string()).collect();
        b.insert(target.to_string());
        TruthFault {
            kind,
            target: target.into(),
            at_s,
            clear_s,
            blast: b,
            expected_jobs: jobs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn inc(id: &str, root: &str, opened_s: f64, jobs: &[&str]) -> RunIncident {
        RunIncident {
            evidence: vec![],
            id: id.into(),
            root: root.into(),
            class: FaultClass::GpuLost,
            confidence: 0.9,
            opened_s,
            resolved_s: None,
            affected_jobs: jobs.iter().map(|s| s.to_string()).collect(),
            paths: vec![],
        }
    }

    #[test]
    fn exact_root_is_correct_and_timed() {
        let f = [fault(FaultClass::GpuLost, "node-0008/gpu3", 600.0, None, &["job:a"], &["a"])];
        let (r, s) = score(&f, &[inc("inc-000001", "node-0008/gpu3", 600.4, &["a"])], RUN);
        assert!(r[0].detected && r[0].correct);
        assert_eq!(r[0].time_to_detect_s, Some(0.4));
        assert_eq!(r[0].time_to_diagnose_s, Some(0.4));
        assert_eq!(r[0].incident.as_deref(), Some("inc-000001"));
        assert_eq!((s.coverage, s.weighted_coverage, s.job_precision, s.job_recall), (1.0, 1.0, 1.0, 1.0));
        assert_eq!(s.false_incidents, 0);
    }

    #[test]
    fn a_dependent_root_detects_but_is_not_correct() {
        let f = [fault(FaultClass::GpuLost, "node-0008/gpu3", 600.0, None, &["job:a", "job:a/rank3"], &["a"])];
        let incs = [inc("inc-000001", "job:a", 601.0, &["a"]), inc("inc-000002", "node-0008/gpu3", 640.0, &["a", "b"])];
        let (r, s) = score(&f, &incs, RUN);
        assert!(r[0].detected && r[0].correct);
        assert_eq!(r[0].time_to_detect_s, Some(1.0));
        assert_eq!(r[0].time_to_diagnose_s, Some(40.0));
        // The correct incident is the one cited, with its jobs.
        assert_eq!(r[0].reported_jobs, ["a", "b"]);
        assert_eq!(s.job_precision, 0.5);
        assert_eq!(s.job_recall, 1.0);
        assert_eq!(s.false_incidents, 0, "both incidents matched the fault");
    }

    #[test]
    fn upstream_roots_and_late_incidents_do_not_count() {
        let f = [fault(FaultClass::NicDown, "node-0001/nic:mlx5_2", 100.0, Some(200.0), &["job:a"], &["a"])];
        let incs = [
            inc("inc-000001", "switch:leaf-00", 101.0, &["a"]), // upstream: not in the blast radius
            inc("inc-000002", "node-0001/nic:mlx5_2", 99.0, &[]), // before the fault
            inc("inc-000003", "node-0001/nic:mlx5_2", 221.0, &[]), // after clear + 2 intervals
        ];
        let (r, s) = score(&f, &incs, RUN);
        assert!(!r[0].detected && !r[0].correct);
        assert_eq!(r[0].diagnosed_root, None);
        assert_eq!(s.false_incidents, 3);
        assert_eq!(s.job_recall, 0.0);
        assert_eq!(s.job_precision, 1.0, "nothing reported, nothing wrong");
        // 3 false incidents over 32 nodes × 1800 s.
        assert!((s.false_per_1000_node_days - 3.0 / (32.0 * 1800.0 / 86_400.0) * 1000.0).abs() < 0.01);
        let (r, _) = score(&f, &[inc("inc-000004", "node-0001/nic:mlx5_2", 219.0, &["a"])], RUN);
        assert!(r[0].correct, "within clear + 2 intervals");
    }

    #[test]
    fn weighted_coverage_uses_catalog_weights() {
        let f = [
            fault(FaultClass::GpuLost, "n/gpu0", 10.0, None, &[], &[]), // weight 100
            fault(FaultClass::GpuPowerBrake, "n/gpu1", 10.0, None, &[], &[]), // weight 4
        ];
        let (_, s) = score(&f, &[inc("inc-000001", "n/gpu0", 11.0, &[])], RUN);
        assert_eq!(s.coverage, 0.5);
        assert_eq!(s.weighted_coverage, r3(100.0 / 104.0));
        assert_eq!(s.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["hard", "slow"]);
        assert_eq!(s.kinds.len(), 2);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), Some(10.0));
        assert_eq!(percentile(&xs, 95.0), Some(19.0));
        assert_eq!(percentile(&xs, 100.0), Some(20.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
    }
}
