//! The running cluster's state: the faults and where they show, each job's and node's dynamic
//! state, each node's agent, the planned reboots, and what a rank looks like at a given instant
//! (`rank_view`, `sdc`, `pid`). `step/` advances it one second at a time. Deterministic from the
//! scenario seed.

use faultline_agent::export::push;
use faultline_proto::{FaultClass, NodeReport};

use crate::agent::NodeAgent;
use crate::cluster::{Cluster, Job};
use crate::faults::{Fault, JobFx, RankFx};
pub use crate::jobs::JobDyn;
use crate::node_state::NodeDyn;
use crate::noise::{self, Noise, what};
use crate::realism::{Behaviour, Network};
use crate::scenario::Scenario;

/// A rank process that is gone stays in the agent's report, `state: exited`, this long (ms).
pub const EXITED_VISIBLE_MS: i64 = 300_000;
/// When a push fails the agent learns it between at once (connection refused or reset) and its
/// request deadline, then re-sends the report from its spool after its first back-off: how long
/// after its send a failed regular report arrives (min, max ms).
pub const RETRY_MS: (f64, f64) = (
    push::INITIAL_BACKOFF.as_millis() as f64,
    (push::REQUEST_TIMEOUT.as_millis() + push::INITIAL_BACKOFF.as_millis()) as f64,
);
/// The kernel's `hung_task_timeout_secs` default, ms.
pub const HUNG_TASK_TIMEOUT_MS: i64 = 120_000;
/// Unix ms of virtual time 0 in in-process runs (2023-11-14T22:13:20Z).
pub const DEFAULT_EPOCH_MS: i64 = 1_700_000_000_000;

/// The pid of a rank process in a given incarnation of its job.
pub fn rank_pid(seed: u64, job: &Job, rank: usize, incarnation: u32) -> u32 {
    10_000 + (noise::hash(&[seed, what::PID, job.tag, rank as u64, u64::from(incarnation)]) % 3_900_000) as u32
}

/// What a rank looks like to the agent on its node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankView {
    Hidden,
    Running,
    /// Stuck in the driver (D state).
    HangD,
    Exited {
        code: i32,
        at_ms: i64,
    },
}

/// Why a node is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    NodeDown,
    AgentDown,
    Reboot,
}

/// One report on its way to the analyzer.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Virtual ms when the agent sent it.
    pub sent_ms: i64,
    /// Virtual ms when it reaches the analyzer.
    pub arrival_ms: i64,
    /// The report; when the world makes compact bytes (`encode_compact`), only its heading:
    /// node, seq, times and flags.
    pub report: NodeReport,
    /// The report's compact bytes (`wire::encode`), made as the agent built it, when the world was
    /// asked for them (`encode_compact`). Made there, the report is still in the CPU's cache, and
    /// its buffers go straight to build the next report, so they are too. Made when it arrived,
    /// after the second's other reports were built, it had to be read back from memory (a second
    /// at 100,000 GPUs is about 40 MB of reports), and so did the buffers the next ones reused.
    pub compact: Option<Vec<u8>>,
}

/// A planned reboot: the node sends a last report at `start` and is back at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reboot {
    pub node: usize,
    pub start_ms: i64,
    pub end_ms: i64,
}

pub struct World {
    pub seed: u64,
    pub noise: Noise,
    pub epoch_ms: i64,
    pub interval_ms: i64,
    pub duration_ms: i64,
    pub cluster: Cluster,
    pub faults: Vec<Fault>,
    /// Per node: faults whose signals show in its reports.
    pub node_faults: Vec<Vec<usize>>,
    /// Per job: (fault, effect).
    pub job_fx: Vec<Vec<(usize, JobFx)>>,
    pub jobs: Vec<JobDyn>,
    pub nodes: Vec<NodeDyn>,
    pub reboots: Vec<Reboot>,
    node_reboots: Vec<Vec<usize>>,
    /// Virtual ms of the end of the last step (-1000 before the first).
    pub t_ms: i64,
    pub(crate) app_xid_p: f64,
    pub(crate) cgroup_oom_p: f64,
    pub behaviour: Behaviour,
    pub network: Network,
    /// Active fabric probes (`[probes]`); off unless the scenario turns them on.
    pub probes: crate::realism::ProbeSpec,
    /// Per node: its agent (maps, XID workflows, clock skew).
    pub agents: Vec<NodeAgent>,
    /// Reports sent but not yet arrived (late ones).
    pub(crate) in_flight: Vec<Outgoing>,
    /// Reports handed back after sending (`recycle`), whose buffers the next reports are built in.
    pub(crate) spares: Vec<NodeReport>,
    /// Whether each report leaves with its compact bytes (`Outgoing::compact`). Off by default.
    pub encode_compact: bool,
}

/// At most this many reports are kept for `World::recycle`: a second's worth at 100,000 GPUs.
const SPARES_MAX: usize = 2_048;

impl World {
    /// Hands back a report `step` gave out, once it is sent: the next report is built in its
    /// buffers instead of new ones (`telemetry::reuse`). Its content does not matter.
    /// With `encode_compact` on, the world reused the report as soon as its bytes were made, and
    /// what comes back is only its heading: it is dropped.
    pub fn recycle(&mut self, report: NodeReport) {
        if !self.encode_compact && self.spares.len() < SPARES_MAX {
            self.spares.push(report);
        }
    }

    pub fn new(sc: &Scenario, epoch_ms: i64) -> Self {
        let cluster = Cluster::build(sc);
        let noise = Noise::new(sc.seed, sc.noise);
        let faults: Vec<Fault> =
            sc.faults.iter().enumerate().map(|(i, f)| Fault::new(i, f, &cluster, sc.seed)).collect();
        let mut node_faults = vec![Vec::new(); cluster.nodes.len()];
        for f in &faults {
            if let Some(n) = f.node {
                node_faults[n].push(f.idx);
            } else if let Some(l) = f.leaf {
                let mut seen = std::collections::BTreeSet::new();
                for (n, _) in cluster.nics_of_leaf(l) {
                    if seen.insert(n) {
                        node_faults[n].push(f.idx);
                    }
                }
            }
        }
        let job_fx = (0..cluster.jobs.len())
            .map(|j| {
                faults
                    .iter()
                    .filter_map(|f| f.job_fx(&cluster, j, sc.behaviour.nan_check_share).map(|fx| (f.idx, fx)))
                    .collect()
            })
            .collect();
        let interval_ms = (sc.interval_s * 1000.0).round() as i64;
        let duration_ms = (sc.duration_s * 1000.0).round() as i64;
        let nodes: Vec<NodeDyn> = (0..cluster.nodes.len())
            .map(|n| {
                let phase = (noise.draw(what::PHASE, n as u64, 0) * interval_ms as f64) as i64;
                NodeDyn::new(&cluster, n, sc.seed, phase, interval_ms)
            })
            .collect();
        let reboots = plan_reboots(sc, &cluster, &faults, noise);
        let mut node_reboots = vec![Vec::new(); cluster.nodes.len()];
        for (i, r) in reboots.iter().enumerate() {
            node_reboots[r.node].push(i);
        }
        let jobs = vec![JobDyn::new(); cluster.jobs.len()];
        let agents = (0..cluster.nodes.len())
            .map(|n| {
                let skew = noise::sym(&[sc.seed, what::LATENCY, n as u64, 0x5c]) * sc.network.clock_skew_ms;
                NodeAgent::new(&cluster, n, skew.round() as i64)
            })
            .collect();
        let cgroup_oom_p = 1.0 - (-sc.noise * noise::CGROUP_OOMS_PER_NODE_DAY / 86_400.0).exp();
        // Application XIDs: per node-second probability at this noise level.
        let app_xid_p = 1.0 - (-sc.noise * noise::APP_XIDS_PER_NODE_DAY / 86_400.0).exp();
        Self {
            seed: sc.seed,
            noise,
            epoch_ms,
            interval_ms,
            duration_ms,
            cluster,
            faults,
            node_faults,
            job_fx,
            jobs,
            nodes,
            reboots,
            node_reboots,
            t_ms: -1000,
            app_xid_p,
            cgroup_oom_p,
            behaviour: sc.behaviour.clone(),
            network: sc.network.clone(),
            probes: sc.probes.clone(),
            agents,
            in_flight: Vec::new(),
            spares: Vec::new(),
            encode_compact: false,
        }
    }

    /// Why node `n` is silent at `t`, if it is.
    pub fn silence(&self, n: usize, t: i64) -> Option<Silence> {
        for &f in &self.node_faults[n] {
            let f = &self.faults[f];
            if f.node == Some(n) && f.active(t) {
                match f.kind() {
                    FaultClass::NodeDown => return Some(Silence::NodeDown),
                    FaultClass::AgentDown => return Some(Silence::AgentDown),
                    _ => {}
                }
            }
        }
        for &r in &self.node_reboots[n] {
            let r = &self.reboots[r];
            if r.start_ms < t && t < r.end_ms {
                return Some(Silence::Reboot);
            }
        }
        None
    }

    /// How a rank looks at `t`.
    pub fn rank_view(&self, j: usize, r: usize, t: i64) -> RankView {
        let job = &self.cluster.jobs[j];
        if t < job.start_ms {
            return RankView::Hidden;
        }
        if t >= job.end_ms {
            return if t < job.end_ms + EXITED_VISIBLE_MS {
                RankView::Exited { code: 0, at_ms: job.end_ms }
            } else {
                RankView::Hidden
            };
        }
        let mut view = RankView::Running;
        for (fi, fx) in &self.job_fx[j] {
            let f = &self.faults[*fi];
            if !f.active(t) {
                continue;
            }
            if fx.crash {
                return exited(1, f.at_ms, t);
            }
            for (ri, rfx) in &fx.ranks {
                if *ri != r {
                    continue;
                }
                match rfx {
                    RankFx::Exit(code) => return exited(*code, f.at_ms, t),
                    RankFx::Gone => return RankView::Hidden,
                    RankFx::HangD => view = RankView::HangD,
                    RankFx::Extra(_) | RankFx::Sdc => {}
                }
            }
        }
        // PyTorch's NCCL watchdog aborts every rank still running (SIGABRT); one stuck in the
        // driver (D state) cannot be killed.
        if view == RankView::Running {
            if let Some(k) = self.jobs[j].killed_at.filter(|k| *k <= t) {
                return exited(-6, k, t);
            }
        }
        view
    }

    /// Extra compute (fraction of the healthy step) of one rank at `t`, from active faults.
    pub fn rank_extra(&self, j: usize, r: usize, t: i64) -> f64 {
        let mut extra: f64 = 0.0;
        for (fi, fx) in &self.job_fx[j] {
            let f = &self.faults[*fi];
            if !f.active(t) {
                continue;
            }
            for (ri, rfx) in &fx.ranks {
                if *ri == r {
                    if let RankFx::Extra(x) = rfx {
                        extra += x * f.ramp(t);
                    }
                }
            }
        }
        extra
    }

    /// The rank of `j` with silent data corruption at `t`, and the fault's variant.
    pub fn sdc(&self, j: usize, r: usize, t: i64) -> Option<(i64, bool)> {
        self.job_fx[j].iter().find_map(|(fi, fx)| {
            let f = &self.faults[*fi];
            (f.active(t) && fx.ranks.iter().any(|(ri, x)| *ri == r && *x == RankFx::Sdc))
                .then_some((f.at_ms, f.p.variant))
        })
    }

    /// The pid of a rank now.
    pub fn pid(&self, j: usize, r: usize) -> u32 {
        rank_pid(self.seed, &self.cluster.jobs[j], r, self.jobs[j].incarnation)
    }
}

fn exited(code: i32, at_ms: i64, t: i64) -> RankView {
    if t < at_ms + EXITED_VISIBLE_MS { RankView::Exited { code, at_ms } } else { RankView::Hidden }
}

/// Planned reboots of idle nodes (noise): the node's jobs left, no fault touches it, and none will
/// run there until it is back.
fn plan_reboots(sc: &Scenario, cluster: &Cluster, faults: &[Fault], noise: Noise) -> Vec<Reboot> {
    let mut out = Vec::new();
    if noise.level <= 0.0 {
        return out;
    }
    let days = sc.duration_s / 86_400.0;
    let p = 1.0 - (-noise.level * noise::PLANNED_REBOOTS_PER_NODE_DAY * days).exp();
    let dur_ms = (sc.duration_s * 1000.0) as i64;
    for n in 0..cluster.nodes.len() {
        if noise.draw(what::REBOOT, n as u64, 0) >= p {
            continue;
        }
        let down = noise::PLANNED_REBOOT_DOWN_S.0
            + noise.draw(what::REBOOT, n as u64, 1) * (noise::PLANNED_REBOOT_DOWN_S.1 - noise::PLANNED_REBOOT_DOWN_S.0);
        let down_ms = (down * 1000.0) as i64;
        let lo = 120_000;
        let hi = dur_ms - down_ms - 600_000;
        if hi <= lo {
            continue;
        }
        let start = lo + (noise.draw(what::REBOOT, n as u64, 2) * (hi - lo) as f64) as i64;
        let end = start + down_ms;
        let (quiet_lo, quiet_hi) = (start - EXITED_VISIBLE_MS - 60_000, end + 120_000);
        let busy = cluster.node_jobs[n].iter().any(|(j, _)| {
            let job = &cluster.jobs[*j];
            job.start_ms < quiet_hi && quiet_lo < job.end_ms
        });
        let touched = faults.iter().any(|f| {
            let near = f.at_ms < quiet_hi && quiet_lo < f.end_ms;
            near && (f.node == Some(n)
                || f.leaf.is_some_and(|l| (0..cluster.spec.nics_per_node).any(|k| cluster.leaf_of(n, k) == l)))
        });
        if !busy && !touched {
            out.push(Reboot { node: n, start_ms: start, end_ms: end });
        }
    }
    out
}
