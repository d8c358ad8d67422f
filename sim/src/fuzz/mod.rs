//! `faultline sim fuzz`: a campaign of randomized worlds against the real analyzer. Each world is
//! drawn from the campaign seed (`draw`), run in-process, and judged on two properties: no incident
//! without a fault, and every fault detected and localized to its exact component. Faults no
//! diagnosis could localize, for a physical reason (`judge`), are counted apart and never as passes.

use std::collections::BTreeMap;

use faultline_proto::FaultClass;
use serde::{Deserialize, Serialize};

use crate::runner::RunOptions;
use crate::scenario::Scenario;

pub mod draw;
pub mod judge;
mod judge_collective;

/// Whether job `j` is stopped by another fault from (about) the start of `f` to its end: one of
/// its nodes down, or a GPU of one of its ranks lost or hit by an uncorrectable error (the job
/// crashes and cannot restart on it while that lasts). A stopped job shows nothing of `f`.
pub(crate) fn stopped_throughout(
    sc: &Scenario,
    c: &crate::cluster::Cluster,
    j: usize,
    f: &crate::scenario::FaultSpec,
    run_s: f64,
) -> bool {
    let end = f.clear_s(run_s).unwrap_or(run_s);
    let job = &c.jobs[j];
    sc.faults.iter().any(|o| {
        // Stopped before `f` could show (a minute's grace) and for as long as `f` lasts.
        if o.at_s > f.at_s + 60.0 || o.clear_s(run_s).unwrap_or(run_s) < end {
            return false;
        }
        let on_node = |h: &str| c.host_index.get(h).is_some_and(|n| job.ranks.iter().any(|r| r.node == *n));
        match (&o.kind, &o.target) {
            (FaultClass::NodeDown, t) => t.host().is_some_and(on_node),
            (
                FaultClass::GpuLost
                | FaultClass::GpuHbmUncorrectable
                | FaultClass::GpuSramUncorrectable
                | FaultClass::GpuGspHang,
                faultline_proto::ComponentId::Gpu { host, index },
            ) => c.host_index.get(host).is_some_and(|n| job.ranks.iter().any(|r| r.node == *n && r.gpu == *index)),
            _ => false,
        }
    })
}

/// Per fault kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindStats {
    /// Diagnosable faults of the kind.
    pub faults: usize,
    pub detected: usize,
    pub localized: usize,
    /// Faults of the kind no diagnosis could localize (not in `faults`).
    pub undiagnosable: usize,
}

/// A world that broke a property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The world's seed (`seed` in its scenario).
    pub seed: u64,
    pub reason: String,
    /// The scenario TOML that reproduces it (`faultline sim run`).
    pub scenario: String,
}

/// A fault counted apart, with its physical reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undiagnosable {
    pub seed: u64,
    pub kind: String,
    pub target: String,
    pub reason: String,
}

/// The campaign's result (the `--json` report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FuzzReport {
    pub seed: u64,
    pub worlds: usize,
    /// Worlds where every property held.
    pub passed: usize,
    /// Diagnosable faults injected.
    pub faults: usize,
    pub faults_detected: usize,
    /// Diagnosable faults whose incident root was exactly the target.
    pub faults_localized: usize,
    /// Incidents that matched no fault, over all worlds.
    pub false_incidents: usize,
    /// Worlds with at least one false incident.
    pub worlds_with_false_incidents: usize,
    pub fault_free_worlds: usize,
    /// Fault-free worlds with no incident at all.
    pub fault_free_worlds_clean: usize,
    pub per_kind: BTreeMap<String, KindStats>,
    pub undiagnosable: Vec<Undiagnosable>,
    pub failures: Vec<Failure>,
    /// Worlds whose scenario or run failed (a bug in the campaign, not a score).
    pub errors: Vec<Failure>,
    /// `node_down` incidents on the node of an agent that stopped where nothing could tell a silent
    /// agent from a dead node (an undiagnosable `agent_down`): the only reading the data allows, so
    /// neither credited nor counted false, but listed here because an operator was still paged.
    #[serde(default)]
    pub silent_agents_read_as_node_down: usize,
}

/// What one world gave.
#[derive(Debug, Clone)]
pub struct WorldOutcome {
    pub seed: u64,
    pub passed: bool,
    pub reason: String,
}

/// The seed of world `i` of a campaign seeded `seed`.
pub fn world_seed(seed: u64, i: u64) -> u64 {
    crate::noise::hash(&[seed, 0xf022, i]) % 1_000_000_000
}

/// `root [class]` with the node number blanked, so causes group across worlds.
fn cause(root: &str, class: &str) -> String {
    format!("{root} [{class}]")
}

/// Run one world and add it to the report.
pub fn run_world(seed: u64, report: &mut FuzzReport) -> WorldOutcome {
    let toml = draw::world_toml(seed);
    report.worlds += 1;
    let sc = match Scenario::parse(&toml, &format!("fuzz-{seed}.toml")) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("the drawn world does not parse: {e}");
            report.errors.push(Failure { seed, reason: reason.clone(), scenario: toml });
            return WorldOutcome { seed, passed: false, reason };
        }
    };
    let verdicts = judge::all(&sc);
    let run = match crate::run(&sc, RunOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("the run failed: {e}");
            report.errors.push(Failure { seed, reason: reason.clone(), scenario: toml });
            return WorldOutcome { seed, passed: false, reason };
        }
    };
    let mut reasons = Vec::new();
    if sc.faults.is_empty() {
        report.fault_free_worlds += 1;
        if run.incidents.is_empty() {
            report.fault_free_worlds_clean += 1;
        }
    }
    for (f, why) in run.faults.iter().zip(&verdicts) {
        let k = report.per_kind.entry(f.kind.to_string()).or_default();
        if let Some(why) = why {
            k.undiagnosable += 1;
            report.undiagnosable.push(Undiagnosable {
                seed,
                kind: f.kind.to_string(),
                target: f.target.clone(),
                reason: why.clone(),
            });
            continue;
        }
        k.faults += 1;
        report.faults += 1;
        if f.detected {
            k.detected += 1;
            report.faults_detected += 1;
        }
        if f.correct {
            k.localized += 1;
            report.faults_localized += 1;
        } else if f.detected {
            let got = f.diagnosed_root.as_deref().unwrap_or("?");
            reasons.push(format!("{} on {} at {} s localized to {got}", f.kind, f.target, f.at_s));
        } else {
            reasons.push(format!("{} on {} at {} s not detected", f.kind, f.target, f.at_s));
        }
    }
    // A silent agent nothing can tell from a dead node is read as the node: not a false alarm.
    let read_as_node = |i: &crate::score::RunIncident| {
        i.class == FaultClass::NodeDown
            && sc.faults.iter().zip(&verdicts).any(|(f, why)| {
                why.is_some()
                    && f.kind == FaultClass::AgentDown
                    && f.target.host() == Some(i.root.as_str())
                    && i.opened_s >= f.at_s
            })
    };
    let mut false_ids = run.summary.false_incident_ids.clone();
    false_ids.retain(|id| {
        let unavoidable = run.incidents.iter().find(|i| &i.id == id).is_some_and(read_as_node);
        report.silent_agents_read_as_node_down += usize::from(unavoidable);
        !unavoidable
    });
    let false_ids = &false_ids;
    if !false_ids.is_empty() {
        report.false_incidents += false_ids.len();
        report.worlds_with_false_incidents += 1;
        let mut causes: BTreeMap<String, usize> = BTreeMap::new();
        for i in run.incidents.iter().filter(|i| false_ids.contains(&i.id)) {
            *causes.entry(cause(&i.root, i.class.as_str())).or_default() += 1;
        }
        let list: Vec<String> =
            causes.iter().map(|(c, n)| if *n > 1 { format!("{c} ×{n}") } else { c.clone() }).collect();
        reasons.push(format!("{} false incidents: {}", false_ids.len(), list.join(", ")));
    }
    let passed = reasons.is_empty();
    let reason = reasons.join("; ");
    if passed {
        report.passed += 1;
    } else {
        report.failures.push(Failure { seed, reason: reason.clone(), scenario: toml });
    }
    WorldOutcome { seed, passed, reason }
}

/// Run `worlds` worlds from campaign seed `seed`; `each` sees every world's outcome as it ends.
pub fn campaign(worlds: usize, seed: u64, each: &mut dyn FnMut(usize, &WorldOutcome)) -> FuzzReport {
    let mut report = FuzzReport { seed, ..Default::default() };
    for i in 0..worlds {
        let out = run_world(world_seed(seed, i as u64), &mut report);
        each(i, &out);
    }
    report
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 { "-".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) }
}

impl FuzzReport {
    /// The human summary: pass rates per property and per fault kind.
    pub fn table(&self) -> String {
        let mut t = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            t,
            "campaign seed {}: {} worlds, {} passed ({})",
            self.seed,
            self.worlds,
            self.passed,
            pct(self.passed, self.worlds)
        );
        let _ = writeln!(t, "\nPROPERTIES");
        let clean = self.worlds - self.worlds_with_false_incidents;
        let _ = writeln!(
            t,
            "no incident without a fault   {clean}/{} worlds ({}); {} false incidents in all",
            self.worlds,
            pct(clean, self.worlds),
            self.false_incidents
        );
        let _ = writeln!(
            t,
            "  fault-free worlds clean     {}/{} ({})",
            self.fault_free_worlds_clean,
            self.fault_free_worlds,
            pct(self.fault_free_worlds_clean, self.fault_free_worlds)
        );
        let _ = writeln!(
            t,
            "every fault detected          {}/{} faults ({})",
            self.faults_detected,
            self.faults,
            pct(self.faults_detected, self.faults)
        );
        let _ = writeln!(
            t,
            "every fault localized         {}/{} faults ({})",
            self.faults_localized,
            self.faults,
            pct(self.faults_localized, self.faults)
        );
        let _ = writeln!(t, "undiagnosable (counted apart) {}", self.undiagnosable.len());
        let _ = writeln!(
            t,
            "  silent agents read as node_down (paged, not counted false) {}",
            self.silent_agents_read_as_node_down
        );
        if !self.errors.is_empty() {
            let _ = writeln!(t, "ERRORS (campaign bugs)        {}", self.errors.len());
        }
        let _ =
            writeln!(t, "\nPER KIND\n{:<26} {:>4} {:>9} {:>10} {:>7}", "kind", "n", "detected", "localized", "undiag");
        for (k, s) in &self.per_kind {
            let _ = writeln!(
                t,
                "{k:<26} {:>4} {:>9} {:>10} {:>7}",
                s.faults,
                pct(s.detected, s.faults),
                pct(s.localized, s.faults),
                s.undiagnosable
            );
        }
        if !self.failures.is_empty() {
            let _ =
                writeln!(t, "\nFAILING WORLDS (reproduce: the `scenario` of each in --json, with `faultline sim run`)");
            for f in self.failures.iter().take(20) {
                let _ = writeln!(t, "seed {:>9}: {}", f.seed, f.reason.chars().take(300).collect::<String>());
            }
            if self.failures.len() > 20 {
                let _ = writeln!(t, "… and {} more", self.failures.len() - 20);
            }
        }
        t
    }
}
