//! The running cluster: job progress second by second, report schedules, urgent pushes, planned
//! reboots, and the order in which reports leave the agents. Deterministic from the scenario seed.

use std::collections::BTreeMap;

use faultline_agent::export::push;
use faultline_proto::{FaultClass, NodeReport};

use crate::agent::NodeAgent;
use crate::cluster::{Cluster, Job};
use crate::faults::{Fault, JobFx, Obs, RankFx, Seen, lines};
pub use crate::jobs::JobDyn;
use crate::noise::{self, Noise, what};
use crate::realism::{Behaviour, Network};
use crate::scenario::Scenario;
use crate::telemetry::{self, NodeDyn};

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
    pub report: NodeReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ReqKind {
    Shutdown,
    Regular,
    Urgent,
    /// An urgent report for news the node's agent sees without a kernel or NVML event: a rank's
    /// process exit (pidfd) or its first non-finite loss posted to the progress API.
    News,
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
    app_xid_p: f64,
    cgroup_oom_p: f64,
    pub behaviour: Behaviour,
    pub network: Network,
    /// Per node: its agent (maps, XID workflows, clock skew).
    pub agents: Vec<NodeAgent>,
    /// Reports sent but not yet arrived (late ones).
    in_flight: Vec<Outgoing>,
}

impl World {
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
            .map(|j| faults.iter().filter_map(|f| f.job_fx(&cluster, j).map(|fx| (f.idx, fx))).collect())
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
            agents,
            in_flight: Vec::new(),
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

    /// Advance one virtual second and return the reports sent in it, in arrival order.
    pub fn step(&mut self) -> Vec<Outgoing> {
        let t = self.t_ms + 1000;
        self.t_ms = t;
        let t0 = t - 1000;
        self.update_jobs(t);

        let mut reqs: Vec<(i64, usize, ReqKind)> = Vec::new();
        let jit = |n: usize, at: i64| {
            (noise::sym(&[self.seed, what::LATENCY, n as u64, at as u64 ^ 0x71]) * self.network.jitter_ms) as i64
        };
        for (n, d) in self.nodes.iter_mut().enumerate() {
            while d.next_ms + jit(n, d.next_ms) <= t {
                let due = (d.next_ms + jit(n, d.next_ms)).max(d.last_ts + 1);
                reqs.push((due, n, ReqKind::Regular));
                d.next_ms += self.interval_ms;
            }
        }
        for r in &self.reboots {
            if t0 < r.start_ms && r.start_ms <= t {
                reqs.push((r.start_ms, r.node, ReqKind::Shutdown));
            }
        }
        // Events of this second.
        let mut urgent_at: BTreeMap<usize, i64> = BTreeMap::new();
        let mut seen: Vec<Seen> = Vec::new();
        {
            let pid = |j: usize, r: usize| self.pid(j, r);
            for f in &self.faults {
                seen.extend(f.events(&self.cluster, t0, t, &pid));
            }
        }
        self.noise_lines(t, &mut seen);
        self.hung_task_lines(t0, t, &mut seen);
        seen.sort_by_key(|s| (s.node, s.ts_ms));
        for s in seen {
            let n = s.node;
            if self.silence(n, s.ts_ms).is_some() {
                continue; // nobody is there to read the kernel log
            }
            let boot = self.nodes[n].boot_ms;
            let cluster = &self.cluster;
            let uuid = |g: u32| cluster.nodes[n].gpus.get(g as usize).map(|x| x.uuid.clone()).unwrap_or_default();
            let Some(ev) = self.agents[n].observe(&s, boot, &uuid) else { continue };
            // The agent pushes every XID, ECC event and classified kernel line at once, Info ones
            // (XID 92, corrected errors) too; its coalescer and one-per-second gap keep storms cheap.
            let e = urgent_at.entry(n).or_insert(s.ts_ms);
            *e = (*e).max(s.ts_ms);
            self.nodes[n].pending.push(ev);
        }
        let news_at = self.rank_news(t0, t);
        for (n, te) in urgent_at {
            let lat = noise::range(
                &[self.seed, what::LATENCY, n as u64, te as u64],
                noise::URGENT_PUSH_LATENCY_MS.0,
                noise::URGENT_PUSH_LATENCY_MS.1,
            );
            reqs.push(((te + lat as i64).min(t), n, ReqKind::Urgent));
        }
        for (n, te) in news_at {
            if self.silence(n, te).is_some() {
                continue;
            }
            let lat = noise::range(
                &[self.seed, what::LATENCY, n as u64, te as u64 ^ 0x4e],
                noise::URGENT_PUSH_LATENCY_MS.0,
                noise::URGENT_PUSH_LATENCY_MS.1,
            );
            reqs.push(((te + lat as i64).min(t), n, ReqKind::News));
        }
        reqs.sort_unstable();

        for (ts, n, kind) in reqs {
            if kind != ReqKind::Shutdown {
                if let Some(s) = self.silence(n, ts) {
                    if s != Silence::AgentDown {
                        self.nodes[n].rebooting = true;
                    }
                    continue;
                }
            }
            if ts <= self.nodes[n].last_ts {
                continue;
            }
            let d = &self.nodes[n];
            if kind == ReqKind::Urgent && !d.pending.iter().any(|e| e.ts_ms <= ts) {
                continue; // an earlier report already carried the events
            }
            // A push that fails on the way (connection reset, request deadline) is not lost: the
            // agent spools it and re-sends it after its back-off, so it arrives late, events and all.
            let key = [self.seed, what::LATENCY, n as u64, ts as u64 ^ 0x10];
            let failed = kind == ReqKind::Regular && !d.rebooting && noise::unit(&key) < self.network.lost_share;
            let mut d = std::mem::take(&mut self.nodes[n]);
            if d.rebooting {
                // Back from a reboot or a crash: fresh boot, counters from zero, same persisted seq.
                d.reboot(&self.cluster, n, self.seed, ts - 60_000);
            }
            let report = telemetry::build(
                self,
                &mut d,
                n,
                ts,
                matches!(kind, ReqKind::Urgent | ReqKind::News),
                kind == ReqKind::Shutdown,
            );
            if kind == ReqKind::Shutdown {
                d.rebooting = true;
            }
            self.nodes[n] = d;
            let lat = noise::range(
                &[self.seed, what::LATENCY, n as u64, ts as u64 ^ 0x55],
                noise::NET_LATENCY_MS.0,
                noise::NET_LATENCY_MS.1,
            );
            let late_key = [self.seed, what::LATENCY, n as u64, ts as u64 ^ 0x1a7e];
            let late = if failed {
                noise::range(&[self.seed, what::LATENCY, n as u64, ts as u64 ^ 0x1a80], RETRY_MS.0, RETRY_MS.1) as i64
            } else if noise::unit(&late_key) < self.network.late_share {
                let (lo, hi) = self.network.late_ms;
                noise::range(&[self.seed, what::LATENCY, n as u64, ts as u64 ^ 0x1a7f], lo, hi) as i64
            } else {
                0
            };
            self.in_flight.push(Outgoing { sent_ms: ts, arrival_ms: ts + lat as i64 + late, report });
        }
        let (mut reports, later): (Vec<Outgoing>, Vec<Outgoing>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|o| o.arrival_ms <= t);
        self.in_flight = later;
        reports.sort_by_key(|o| (o.arrival_ms, o.sent_ms));
        reports
    }

    /// Per node, the latest instant in `(t0, t]` at which its agent learns, without any kernel or
    /// NVML event, something it pushes at once: a rank process that was alive at `t0` exited or
    /// vanished (the agent watches rank pids), or a rank posted its first non-finite loss.
    fn rank_news(&self, t0: i64, t: i64) -> BTreeMap<usize, i64> {
        let mut out: BTreeMap<usize, i64> = BTreeMap::new();
        for (n, jobs) in self.cluster.node_jobs.iter().enumerate() {
            for (j, rs) in jobs {
                for &r in rs {
                    let before = self.rank_view(*j, r, t0);
                    let alive = |v: &RankView| matches!(v, RankView::Running | RankView::HangD);
                    let mut at = None;
                    if alive(&before) {
                        match self.rank_view(*j, r, t) {
                            RankView::Exited { at_ms, .. } => at = Some(at_ms.clamp(t0 + 1, t)),
                            RankView::Hidden => at = Some(t),
                            _ => {}
                        }
                    }
                    if let Some((since, true)) = self.sdc(*j, r, t) {
                        // The first post after the onset carries the non-finite loss.
                        let first = (since + self.cluster.jobs[*j].step_ms as i64).max(since);
                        if t0 < first && first <= t && self.sdc(*j, r, t0).is_none_or(|(s0, _)| s0 != since) {
                            at = Some(at.map_or(first, |a: i64| a.max(first)));
                        }
                    }
                    if let Some(a) = at {
                        let e = out.entry(n).or_insert(a);
                        *e = (*e).max(a);
                    }
                }
            }
        }
        out
    }

    /// Noise lines: application XIDs (13, 31, 43) from running ranks, and cgroup OOM kills of
    /// helper processes (not ranks) that must not look like a host out of memory.
    fn noise_lines(&self, t: i64, out: &mut Vec<Seen>) {
        let sec = (t / 1000) as u64;
        for n in 0..self.cluster.nodes.len() {
            if self.cgroup_oom_p > 0.0
                && noise::unit(&[self.seed, what::APP_XID, n as u64, sec ^ 0xc6]) < self.cgroup_oom_p
            {
                let pid = 40_000 + (noise::hash(&[self.seed, what::PID, n as u64, sec]) % 900_000) as u32;
                out.push(Seen {
                    node: n,
                    ts_ms: t - 500,
                    obs: Obs::Kmsg(format!(
                        "Memory cgroup out of memory: Killed process {pid} (pt_data_worker) total-vm:9123456kB, anon-rss:4194304kB, file-rss:1024kB, shmem-rss:0kB, UID:1000 pgtables:9000kB oom_score_adj:0"
                    )),
                });
            }
            if self.app_xid_p <= 0.0 || noise::unit(&[self.seed, what::APP_XID, n as u64, sec]) >= self.app_xid_p {
                continue;
            }
            // The XID comes from an application: pick a running rank on this node.
            let running: Vec<(usize, usize)> = self.cluster.node_jobs[n]
                .iter()
                .flat_map(|(j, rs)| rs.iter().map(move |r| (*j, *r)))
                .filter(|&(j, r)| self.rank_view(j, r, t) == RankView::Running)
                .collect();
            if running.is_empty() {
                continue;
            }
            let pick = noise::hash(&[self.seed, what::APP_XID_KIND, n as u64, sec]);
            let (j, r) = running[(pick % running.len() as u64) as usize];
            let g = self.cluster.jobs[j].ranks[r].gpu;
            let xid = [13, 31, 43][((pick >> 20) % 3) as usize];
            let ts = t - 1000 + ((pick >> 40) % 1000) as i64;
            let dev = &self.cluster.nodes[n].gpus[g as usize].kmsg_dev;
            out.push(Seen { node: n, ts_ms: ts, obs: Obs::Kmsg(lines::app_xid_line(dev, xid, self.pid(j, r))) });
            out.push(Seen { node: n, ts_ms: ts + 3, obs: Obs::NvmlXid { gpu: g, code: xid } });
        }
    }

    /// The kernel's hung-task warning for a rank stuck in the driver (D state) for 120 s.
    fn hung_task_lines(&self, t0: i64, t: i64, out: &mut Vec<Seen>) {
        for (j, fxs) in self.job_fx.iter().enumerate() {
            for (fi, fx) in fxs {
                let f = &self.faults[*fi];
                let at = f.at_ms + HUNG_TASK_TIMEOUT_MS + 1_500;
                if !(t0 < at && at <= t && f.active(at)) {
                    continue;
                }
                for (r, x) in &fx.ranks {
                    if *x == RankFx::HangD {
                        let node = self.cluster.jobs[j].ranks[*r].node;
                        let pid = self.pid(j, *r);
                        let line = format!("INFO: task python:{pid} blocked for more than 120 seconds.");
                        out.push(Seen { node, ts_ms: at, obs: Obs::Kmsg(line) });
                    }
                }
            }
        }
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
