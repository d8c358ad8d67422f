//! Fault physics: for every kind of spec/fault-catalog.md, its parameters (drawn from the seed), what
//! it does to the jobs that use it, the kernel/NVML events it emits, and the signals it puts in the
//! reports of the node(s) it touches. Only the signals the catalog lists, plus consequences.

use faultline_proto::{ComponentId, Event, EventClass, EventSource, FaultClass, GpuState, Severity};

use crate::cluster::{Cluster, Job};
use crate::noise::{self, what};
use crate::scenario::FaultSpec;
use crate::telemetry::{self, NicCounter as C, ReportCtx, throttle};

/// Compute share of a healthy step: the rest is communication (collectives). Multi-node LLM
/// training spends roughly 15–30% of a step in exposed communication.
pub const COMPUTE_FRAC_MULTI: f64 = 0.8;
/// One-node jobs talk over NVLink only and wait less.
pub const COMPUTE_FRAC_SINGLE: f64 = 0.9;
/// GPUs of a node with a failed fan take this long to heat up to throttling, ms.
pub const FAN_HEAT_UP_MS: i64 = 60_000;
/// How often a disk with I/O errors logs another one while it is being used, ms.
const IO_ERROR_EVERY_MS: i64 = 15_000;
/// EDAC corrected-error lines of a node with an MCE problem, every this many ms.
const EDAC_EVERY_MS: i64 = 60_000;
/// The agent coalesces repeated NVML ECC events within this window into one with a count
/// (agent/src/events.rs: 10 s).
pub const ECC_COALESCE_MS: i64 = 10_000;
/// XID 92 repeats while the SBE storm lasts, every this many ms.
const XID92_EVERY_MS: i64 = 300_000;

/// What a fault does to one rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankFx {
    /// Extra compute time per step, as a fraction of the healthy step time (a straggler).
    Extra(f64),
    /// The process exits with this code (negative: killed by signal).
    Exit(i32),
    /// The process hangs in uninterruptible sleep (stuck in the driver).
    HangD,
    /// The node is gone with it.
    Gone,
    /// Silent data corruption shows in this rank's loss / gradient norm.
    Sdc,
}

/// When a fault stops a job's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    No,
    /// While the fault is active.
    WhileActive,
    /// While the NIC is down during a flap.
    WhileFlapDown,
    /// From the job's next checkpoint until the fault clears.
    AtCheckpoint,
}

/// What one fault does to one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFx {
    pub stall: Stall,
    /// Extra communication time per step, as a fraction of the healthy step.
    pub comm_slow: f64,
    /// The effect starts this long after the fault (GPUs heating up), ms.
    pub ramp_ms: i64,
    pub ranks: Vec<(usize, RankFx)>,
    /// Every rank exits non-zero together.
    pub crash: bool,
    /// Every rank stops progressing with no hardware cause.
    pub hang: bool,
}

impl JobFx {
    fn new(stall: Stall) -> Self {
        Self { stall, comm_slow: 0.0, ramp_ms: 0, ranks: Vec::new(), crash: false, hang: false }
    }
}

/// Parameters of one fault instance, drawn from the seed.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Job step-time increase, fraction of the healthy step.
    pub slow: f64,
    /// The XID this instance logs.
    pub xid: u32,
    /// gpu_lost: the rank process dies (else it hangs); gpu_sdc: non-finite loss (else grad-norm
    /// mismatch); disk_failure: read-only (else full); pcie: width drop (else generation drop).
    pub variant: bool,
    /// Error counter rate, per second.
    pub rate: f64,
    /// Second counter rate, per second.
    pub rate2: f64,
    /// nic_flap: period and down time, ms.
    pub period_ms: i64,
    pub down_ms: i64,
    /// Offset of the first signal after at_s, ms.
    pub offset_ms: i64,
    /// nic_speed_degraded: trained rate, Gb/s.
    pub gbps: f64,
    /// leaf_congestion: share of the leaf's NICs that show it.
    pub frac: f64,
    /// host_fan_failure: GPUs that overheat.
    pub gpus: Vec<u32>,
    /// Target temperature, °C.
    pub temp_c: f64,
    /// host_oom: the killed rank (job index, rank index), if a rank was on the node.
    pub victim: Option<(usize, usize)>,
    /// host_oom: pid killed when no rank was there.
    pub pid: u32,
}

/// One injected fault, resolved against the cluster.
#[derive(Debug, Clone)]
pub struct Fault {
    pub idx: usize,
    pub spec: FaultSpec,
    pub at_ms: i64,
    /// When it clears; `i64::MAX` when it lasts to the end.
    pub end_ms: i64,
    /// The host of the target, if it is on one.
    pub node: Option<usize>,
    pub gpu: Option<u32>,
    pub link: Option<u32>,
    pub nic: Option<u32>,
    pub leaf: Option<usize>,
    pub job: Option<usize>,
    pub p: Params,
    seed: u64,
}

fn nic_index(name: &str) -> Option<u32> {
    name.strip_prefix("mlx5_").and_then(|i| i.parse().ok())
}

impl Fault {
    pub fn new(idx: usize, spec: &FaultSpec, cluster: &Cluster, seed: u64) -> Self {
        let at_ms = (spec.at_s * 1000.0).round() as i64;
        let end_ms = if spec.duration_s > 0.0 { at_ms + (spec.duration_s * 1000.0).round() as i64 } else { i64::MAX };
        let node = spec.target.host().and_then(|h| cluster.host_index.get(h).copied());
        let (mut gpu, mut link, mut nic, mut leaf, mut job) = (None, None, None, None, None);
        match &spec.target {
            ComponentId::Gpu { index, .. } => gpu = Some(*index),
            ComponentId::NvLink { gpu: g, link: l, .. } => {
                gpu = Some(*g);
                link = Some(*l);
            }
            ComponentId::Nic { name, .. } => nic = nic_index(name),
            ComponentId::Switch { name } => leaf = cluster.leaf_index(name),
            ComponentId::Job { id } => job = cluster.job_index.get(id).copied(),
            _ => {}
        }
        let d = |k: u64| noise::unit(&[seed, what::FAULT, idx as u64, k]);
        let between = |k: u64, lo: f64, hi: f64| lo + d(k) * (hi - lo);
        let mut p = Params { offset_ms: (d(0) * 500.0) as i64, ..Default::default() };
        use FaultClass as K;
        match spec.kind {
            K::GpuLost => {
                p.xid = 79;
                p.variant = d(1) < 0.6;
            }
            K::GpuHbmUncorrectable => p.xid = [48, 48, 48, 94, 95][(d(1) * 5.0) as usize % 5],
            K::GpuSramUncorrectable => p.xid = if d(1) < 0.6 { 95 } else { 94 },
            K::GpuGspHang => p.xid = if d(1) < 0.7 { 119 } else { 120 },
            K::GpuThermalThrottle => {
                p.slow = between(2, 0.20, 0.30);
                p.temp_c = between(3, 87.5, 92.0);
            }
            K::GpuPowerBrake => {
                p.slow = between(2, 0.20, 0.30);
                p.rate = between(3, 0.30, 0.45); // power as a share of the limit
            }
            K::GpuSlow => p.slow = between(2, 0.15, 0.25), // compute ratio; step gets ratio × compute share
            K::GpuEccSbeStorm => {
                p.xid = 92;
                p.rate = between(2, 200.0, 800.0) / 60.0;
            }
            K::GpuRowRemapFailure => p.xid = 64,
            K::GpuSdc => p.variant = d(1) < 0.5,
            K::NvlinkDown => {
                p.xid = 74;
                p.slow = between(2, 0.30, 0.50);
            }
            K::NvlinkCrcStorm => {
                p.slow = between(2, 0.05, 0.15);
                p.rate = between(3, 500.0, 5000.0) / 60.0;
                p.rate2 = p.rate * between(4, 0.05, 0.2);
            }
            K::PcieDowntrained => {
                p.slow = between(2, 0.05, 0.15);
                p.variant = d(1) < 0.6;
                p.rate = between(3, 10.0, 60.0) / 60.0;
                p.period_ms = between(5, 20_000.0, 40_000.0) as i64;
            }
            K::NicDown => {}
            K::NicFlap => {
                p.slow = between(2, 0.05, 0.20);
                p.period_ms = between(3, 20_000.0, 45_000.0) as i64;
                p.down_ms = between(4, 2_000.0, 6_000.0) as i64;
            }
            K::CableBitErrors => {
                p.slow = between(2, 0.15, 0.30);
                p.rate = between(3, 20.0, 200.0);
                p.rate2 = between(4, 10.0, 50.0);
                p.frac = between(5, 0.6, 0.8); // throughput share left
            }
            K::NicSpeedDegraded => {
                p.slow = between(2, 0.10, 0.40);
                p.gbps = if d(3) < 0.75 { 200.0 } else { 100.0 };
            }
            K::LeafSwitchDown => {}
            K::LeafCongestion => {
                p.slow = between(2, 0.10, 0.30);
                p.frac = between(3, 0.75, 0.95);
                p.rate = between(4, 20.0, 50.0); // port_xmit_wait multiplier
            }
            K::NodeDown | K::AgentDown | K::HostMce | K::JobHang | K::JobCrash => {}
            K::HostFanFailure => {
                p.slow = between(2, 0.20, 0.30);
                p.temp_c = between(3, 88.0, 93.0);
                let n = 3 + (d(4) * 4.0) as u32; // 3..=6 GPUs
                let gpn = cluster.spec.gpus_per_node;
                let first = (d(5) * f64::from(gpn)) as u32;
                let mut g: Vec<u32> = (0..n.min(gpn)).map(|k| (first + k * 2) % gpn).collect();
                g.sort_unstable();
                g.dedup();
                p.gpus = g;
            }
            K::HostOom => {
                p.pid = 200_000 + (d(1) * 3_000_000.0) as u32;
                if let Some(n) = node {
                    p.victim = cluster.node_jobs[n]
                        .iter()
                        .find(|(j, _)| cluster.jobs[*j].active_at(at_ms))
                        .and_then(|(j, ranks)| ranks.first().map(|r| (*j, *r)));
                }
            }
            K::HostCpuContention => {
                p.slow = between(2, 0.10, 0.30);
                p.frac = between(3, 0.60, 0.85); // non-job CPU share
            }
            K::DiskFailure => p.variant = d(1) < 0.7,
        }
        Self { idx, spec: spec.clone(), at_ms, end_ms, node, gpu, link, nic, leaf, job, p, seed }
    }

    pub fn kind(&self) -> FaultClass {
        self.spec.kind
    }

    pub fn active(&self, t_ms: i64) -> bool {
        self.at_ms <= t_ms && t_ms < self.end_ms
    }

    /// Seconds of (t0, t1] during which the fault was active.
    pub fn overlap_s(&self, t0: i64, t1: i64) -> f64 {
        let lo = t0.max(self.at_ms);
        let hi = t1.min(self.end_ms);
        if hi > lo { (hi - lo) as f64 / 1000.0 } else { 0.0 }
    }

    /// Whether the fault was active at any time in (t0, t1].
    pub fn touches(&self, t0: i64, t1: i64) -> bool {
        self.at_ms <= t1 && t0 < self.end_ms
    }

    /// nic_flap: start of the k-th down (k ≥ 0).
    fn flap_start(&self, k: i64) -> i64 {
        self.at_ms + self.p.offset_ms + k * self.p.period_ms
    }

    /// nic_flap: is the link down at `t`?
    pub fn flap_down(&self, t: i64) -> bool {
        if !self.active(t) || self.p.period_ms <= 0 {
            return false;
        }
        let since = t - self.at_ms - self.p.offset_ms;
        since >= 0 && since % self.p.period_ms < self.p.down_ms
    }

    /// nic_flap: how many downs had started by `t`.
    pub fn flaps_by(&self, t: i64) -> u64 {
        let t = t.min(self.end_ms - 1);
        let since = t - self.at_ms - self.p.offset_ms;
        if since < 0 || self.p.period_ms <= 0 { 0 } else { (since / self.p.period_ms + 1) as u64 }
    }

    /// Effect ramp 0..1 (GPUs heating up after a fan failure).
    pub fn ramp(&self, t: i64) -> f64 {
        match self.kind() {
            FaultClass::HostFanFailure => ((t - self.at_ms) as f64 / FAN_HEAT_UP_MS as f64).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }

    /// Whether NIC `k` of node `n` shows this leaf fault.
    pub fn leaf_touches(&self, cluster: &Cluster, n: usize, k: u32) -> bool {
        match self.leaf {
            Some(l) if cluster.leaf_of(n, k) == l => match self.kind() {
                FaultClass::LeafCongestion => {
                    noise::unit(&[self.seed, what::FAULT, self.idx as u64, 100 + n as u64, u64::from(k)]) < self.p.frac
                }
                _ => true,
            },
            _ => false,
        }
    }

    /// What this fault does to a job, or None when it does not touch it. Static per (fault, job).
    pub fn job_fx(&self, cluster: &Cluster, ji: usize) -> Option<JobFx> {
        let job = &cluster.jobs[ji];
        if !(job.start_ms < self.end_ms && self.at_ms < job.end_ms) {
            return None;
        }
        let on_gpu = |j: &Job| -> Vec<usize> {
            j.ranks
                .iter()
                .enumerate()
                .filter(|(_, r)| Some(r.node) == self.node && Some(r.gpu) == self.gpu)
                .map(|(i, _)| i)
                .collect()
        };
        let on_node = |j: &Job| -> Vec<usize> {
            j.ranks.iter().enumerate().filter(|(_, r)| Some(r.node) == self.node).map(|(i, _)| i).collect()
        };
        let cfrac = if job.multi_node { COMPUTE_FRAC_MULTI } else { COMPUTE_FRAC_SINGLE };
        let with = |stall: Stall, ranks: Vec<usize>, fx: RankFx| -> Option<JobFx> {
            if ranks.is_empty() {
                return None;
            }
            let mut f = JobFx::new(stall);
            f.ranks = ranks.into_iter().map(|r| (r, fx)).collect();
            Some(f)
        };
        use FaultClass as K;
        match self.kind() {
            K::GpuLost => {
                let fx = if self.p.variant { RankFx::Exit(1) } else { RankFx::HangD };
                with(Stall::WhileActive, on_gpu(job), fx)
            }
            K::GpuHbmUncorrectable | K::GpuSramUncorrectable => with(Stall::WhileActive, on_gpu(job), RankFx::Exit(1)),
            K::GpuGspHang => with(Stall::WhileActive, on_gpu(job), RankFx::HangD),
            K::GpuThermalThrottle | K::GpuPowerBrake | K::PcieDowntrained => {
                with(Stall::No, on_gpu(job), RankFx::Extra(self.p.slow))
            }
            K::GpuSlow => with(Stall::No, on_gpu(job), RankFx::Extra(self.p.slow * cfrac)),
            K::GpuSdc => with(Stall::No, on_gpu(job), RankFx::Sdc),
            K::GpuEccSbeStorm | K::GpuRowRemapFailure | K::HostMce | K::AgentDown => None,
            K::NvlinkDown | K::NvlinkCrcStorm => {
                let mut f = with(Stall::No, on_gpu(job), RankFx::Extra(0.0))?;
                f.ranks.clear();
                f.comm_slow = self.p.slow;
                Some(f)
            }
            K::NicDown | K::NicFlap | K::CableBitErrors | K::NicSpeedDegraded => {
                if !job.multi_node {
                    return None;
                }
                let uses = job.ranks.iter().any(|r| Some(r.node) == self.node && Some(r.nic) == self.nic);
                if !uses {
                    return None;
                }
                let mut f = JobFx::new(match self.kind() {
                    K::NicDown => Stall::WhileActive,
                    K::NicFlap => Stall::WhileFlapDown,
                    _ => Stall::No,
                });
                if self.kind() != K::NicDown {
                    f.comm_slow = self.p.slow;
                }
                Some(f)
            }
            K::LeafSwitchDown | K::LeafCongestion => {
                let leaf = self.leaf?;
                if !job.multi_node || !job.ranks.iter().any(|r| cluster.leaf_of(r.node, r.nic) == leaf) {
                    return None;
                }
                let mut f = JobFx::new(if self.kind() == K::LeafSwitchDown { Stall::WhileActive } else { Stall::No });
                if self.kind() == K::LeafCongestion {
                    f.comm_slow = self.p.slow;
                }
                Some(f)
            }
            K::NodeDown => with(Stall::WhileActive, on_node(job), RankFx::Gone),
            K::HostFanFailure => {
                let ranks: Vec<usize> =
                    on_node(job).into_iter().filter(|&r| self.p.gpus.contains(&job.ranks[r].gpu)).collect();
                let mut f = with(Stall::No, ranks, RankFx::Extra(self.p.slow))?;
                f.ramp_ms = FAN_HEAT_UP_MS;
                Some(f)
            }
            K::HostOom => match self.p.victim {
                Some((vj, vr)) if vj == ji => with(Stall::WhileActive, vec![vr], RankFx::Exit(-9)),
                _ => None,
            },
            K::HostCpuContention => with(Stall::No, on_node(job), RankFx::Extra(self.p.slow)),
            K::DiskFailure => {
                let ranks = on_node(job);
                if ranks.is_empty() { None } else { Some(JobFx::new(Stall::AtCheckpoint)) }
            }
            K::JobHang => (self.job == Some(ji)).then(|| {
                let mut f = JobFx::new(Stall::WhileActive);
                f.hang = true;
                f
            }),
            K::JobCrash => (self.job == Some(ji)).then(|| {
                let mut f = JobFx::new(Stall::WhileActive);
                f.crash = true;
                f
            }),
        }
    }

    /// Kernel and NVML events this fault emits in (t0, t1], with the node each comes from.
    pub fn events(
        &self,
        cluster: &Cluster,
        t0: i64,
        t1: i64,
        boot_ms: &dyn Fn(usize) -> i64,
        rank_pid: &dyn Fn(usize, usize) -> u32,
    ) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        if !self.touches(t0, t1 + 1000) {
            return out;
        }
        let onset = self.at_ms + self.p.offset_ms;
        let in_win = |t: i64| t0 < t && t <= t1 && t < self.end_ms.saturating_add(1000);
        let clear = self.end_ms.saturating_add(self.p.offset_ms);
        let clear_in_win = self.end_ms != i64::MAX && t0 < clear && clear <= t1;
        // Recurring events: every `every` ms after onset while active.
        let recurring = |every: i64| -> Vec<i64> {
            if every <= 0 {
                return Vec::new();
            }
            let first_k = ((t0 - onset) / every).max(0);
            (first_k..=first_k + (t1 - t0) / every + 1)
                .map(|k| onset + k * every)
                .filter(|&t| in_win(t) && t < self.end_ms)
                .collect()
        };
        let Some(n) = self.node else {
            // Leaf faults: every NIC cabled to the leaf goes down in the same second.
            if let (FaultClass::LeafSwitchDown, Some(l)) = (self.kind(), self.leaf) {
                let up = clear_in_win;
                if in_win(onset) || up {
                    for (n, k) in cluster.nics_of_leaf(l) {
                        let jitter = (noise::unit(&[self.seed, what::FAULT, self.idx as u64, n as u64, u64::from(k)])
                            * 300.0) as i64;
                        if in_win(onset) {
                            out.push((n, nic_link_event(cluster, n, k, onset + jitter, boot_ms(n), false)));
                        }
                        if up {
                            out.push((n, nic_link_event(cluster, n, k, clear + jitter, boot_ms(n), true)));
                        }
                    }
                }
            }
            return out;
        };
        let boot = boot_ms(n);
        let node = &cluster.nodes[n];
        let gpu_ev = |t: i64, xid: u32, text: String, pid: Option<u32>| -> Event {
            let g = self.gpu.unwrap_or(0);
            xid_event(&node.gpus[g as usize].kmsg_dev, g, xid, t, boot, pid, &text)
        };
        let g = self.gpu.unwrap_or(0);
        let dev = node.gpus[g as usize].kmsg_dev.clone();
        use FaultClass as K;
        match self.kind() {
            K::GpuLost if in_win(onset) => {
                out.push((n, gpu_ev(onset, 79, "GPU has fallen off the bus.".into(), None)));
                // The agent's next NVML query fails: it reports the GPU lost, once, at once.
                out.push((n, agent_gpu_lost_event(&dev, g, onset + 200, &node.gpus[g as usize].uuid)));
            }
            K::GpuHbmUncorrectable if in_win(onset) => {
                let addr = noise::hash(&[self.seed, self.idx as u64]) % 0x14_0000_0000;
                let text = match self.p.xid {
                    48 => format!(
                        "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at physAddr 0x{addr:x} partition {}, subpartition {}.",
                        addr % 8,
                        addr % 2
                    ),
                    94 => "Contained: FBHUB (0x1). RST: Yes, D-RST: No".into(),
                    _ => "Uncontained: FBHUB. RST: Yes, D-RST: No".into(),
                };
                out.push((n, gpu_ev(onset, self.p.xid, text, None)));
                if self.p.xid != 94 {
                    out.push((n, nvml_ecc_event(&dev, g, onset + 3, EventClass::EccDbe, 1)));
                }
            }
            K::GpuSramUncorrectable if in_win(onset) => {
                let text = if self.p.xid == 94 {
                    "Contained: SM (0x1). RST: No, D-RST: No"
                } else {
                    "Uncontained: LTC TAG (0x2,0x0). RST: Yes, D-RST: No"
                };
                out.push((n, gpu_ev(onset, self.p.xid, text.into(), None)));
            }
            K::GpuGspHang if in_win(onset) => {
                let text = if self.p.xid == 119 {
                    format!(
                        "Timeout after 6s of waiting for RPC response from GPU{g} GSP! Expected function 76 (GSP_RM_CONTROL) (0x20803032 0x58c)."
                    )
                } else {
                    "GSP task exception: store access page fault (cause:0xf) @ pc:0x13ebd80, partition:2#0, task:3"
                        .into()
                };
                out.push((n, gpu_ev(onset, self.p.xid, text, None)));
            }
            K::GpuEccSbeStorm => {
                for t in recurring(XID92_EVERY_MS) {
                    out.push((n, gpu_ev(t, 92, "High single-bit ECC error rate".into(), None)));
                }
                // NVML raises an event per corrected error; the agent coalesces them per window.
                for t in recurring(ECC_COALESCE_MS) {
                    let count = (self.p.rate * ECC_COALESCE_MS as f64 / 1000.0).round().max(1.0) as u64;
                    out.push((n, nvml_ecc_event(&dev, g, t + 7, EventClass::EccSbe, count)));
                }
            }
            K::GpuRowRemapFailure if in_win(onset) => {
                let row = noise::hash(&[self.seed, self.idx as u64, 9]) % 0x10_0000_0000;
                out.push((
                    n,
                    gpu_ev(onset, 64, format!("Row Remapper Error: failed to remap row (0x{row:016x})."), None),
                ));
            }
            K::NvlinkDown if in_win(onset) => {
                let l = self.link.unwrap_or(0);
                out.push((
                    n,
                    gpu_ev(
                        onset,
                        74,
                        format!("NVLink: fatal error detected on link {l}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)"),
                        None,
                    ),
                ));
            }
            K::PcieDowntrained => {
                for t in recurring(self.p.period_ms) {
                    let gs = &node.gpus[g as usize];
                    let msg = format!("pcieport {}: AER: Corrected error received: {}", gs.root_port, &gs.bus_id[4..]);
                    out.push((
                        n,
                        kmsg_event(
                            t,
                            boot,
                            EventClass::PcieAerCorrected,
                            Severity::Info,
                            Some(format!("gpu{g}")),
                            Some(pci_device(&gs.bus_id[4..])),
                            None,
                            msg,
                        ),
                    ));
                }
            }
            K::NicDown => {
                let k = self.nic.unwrap_or(0);
                if in_win(onset) {
                    out.push((n, nic_link_event(cluster, n, k, onset, boot, false)));
                }
                if clear_in_win {
                    out.push((n, nic_link_event(cluster, n, k, clear, boot, true)));
                }
            }
            K::NicFlap => {
                let k = self.nic.unwrap_or(0);
                let first = ((t0 - onset) / self.p.period_ms.max(1) - 1).max(0);
                let last = (t1 - onset) / self.p.period_ms.max(1) + 1;
                for i in first..=last.max(first) {
                    let down = self.flap_start(i);
                    let up = down + self.p.down_ms;
                    if down < self.end_ms && in_win(down) {
                        out.push((n, nic_link_event(cluster, n, k, down, boot, false)));
                    }
                    if down < self.end_ms && t0 < up && up <= t1 {
                        out.push((n, nic_link_event(cluster, n, k, up, boot, true)));
                    }
                }
            }
            K::HostOom if in_win(onset) => {
                let pid = self.p.victim.map_or(self.p.pid, |(j, r)| rank_pid(j, r));
                // The leaking rank holds most of the host's memory when the killer picks it.
                let rss_kb = telemetry::HOST_MEM_BYTES / 1024 * 9 / 10;
                let msg = format!(
                    "Out of memory: Killed process {pid} (python) total-vm:{}kB, anon-rss:{rss_kb}kB, file-rss:0kB, shmem-rss:2097152kB, UID:1000 pgtables:3915520kB oom_score_adj:0",
                    rss_kb + 60_000_000
                );
                out.push((
                    n,
                    kmsg_event(onset, boot, EventClass::OomKill, Severity::Warning, None, None, Some(pid), msg),
                ));
            }
            K::HostMce => {
                if in_win(onset) {
                    out.push((
                        n,
                        kmsg_event(
                            onset,
                            boot,
                            EventClass::Mce,
                            Severity::Warning,
                            None,
                            None,
                            None,
                            "mce: [Hardware Error]: Machine check events logged".into(),
                        ),
                    ));
                }
                for t in recurring(EDAC_EVERY_MS).into_iter().filter(|&t| t > onset) {
                    let page = noise::hash(&[self.seed, self.idx as u64, t as u64]) % 0xfff_ffff;
                    let msg = format!(
                        "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#2_DIMM#0 (channel:2 slot:0 page:0x{page:x} offset:0x0 grain:32 syndrome:0x0 -  err_code:0101:0092 socket:0 imc:0 rank:0 bg:1 ba:2 row:1a1e8 col:180)"
                    );
                    out.push((n, kmsg_event(t, boot, EventClass::EdacCe, Severity::Info, None, None, None, msg)));
                }
            }
            K::DiskFailure => {
                for t in recurring(IO_ERROR_EVERY_MS) {
                    let sector = noise::hash(&[self.seed, self.idx as u64, t as u64]) % 7_500_000_000;
                    let msg = format!(
                        "blk_update_request: I/O error, dev nvme0n1, sector {sector} op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0"
                    );
                    out.push((
                        n,
                        kmsg_event(
                            t,
                            boot,
                            EventClass::IoError,
                            Severity::Warning,
                            Some(format!("disk:{}", crate::cluster::naming::DISK)),
                            None,
                            None,
                            msg,
                        ),
                    ));
                }
            }
            _ => {}
        }
        // The NVML event set delivers every XID too (the kernel line is the complete record);
        // a GPU that fell off the bus answers nothing, so XID 79 comes from the kernel log alone.
        let nvml: Vec<(usize, Event)> = out
            .iter()
            .filter(|(_, e)| e.source == EventSource::Kmsg && e.class == EventClass::Xid && e.xid != Some(79))
            .map(|(n, e)| (*n, nvml_xid_event(e)))
            .collect();
        out.extend(nvml);
        out
    }

    /// Put this fault's signals into the report being built for node `ctx.node` (everything the
    /// catalog says an agent sees, and nothing else). Counter increments cover only the part of the
    /// report window during which the fault was active.
    pub fn apply(&self, cluster: &Cluster, ctx: &mut ReportCtx<'_>) {
        let (t0, t1) = (ctx.last_ts, ctx.ts);
        let on = self.active(t1);
        let dt = self.overlap_s(t0, t1);
        if !on && dt == 0.0 {
            return;
        }
        use FaultClass as K;
        let g = self.gpu.unwrap_or(0) as usize;
        if self.gpu.is_some() && ctx.crossed(self.end_ms) {
            // A GPU fault that clears was dealt with by a reset (or a new GPU).
            ctx.dynamic.gpus[g].reset();
        }
        match self.kind() {
            K::GpuLost if on => ctx.gpu_state[g] = GpuState::Lost,
            K::GpuGspHang if on => ctx.gpu_state[g] = GpuState::Unresponsive,
            K::GpuHbmUncorrectable => {
                if ctx.crossed(self.at_ms) {
                    let d = &mut ctx.dynamic.gpus[g];
                    if self.p.xid == 48 || self.p.xid == 95 {
                        d.dbe_vol += 1;
                        d.dbe_agg += 1;
                    }
                    d.remap_unc += 1;
                    d.remap_pending = true;
                }
            }
            K::GpuSramUncorrectable => {
                if ctx.crossed(self.at_ms) {
                    ctx.dynamic.gpus[g].sram_unc += 1;
                }
            }
            K::GpuThermalThrottle if on => {
                let s = &mut ctx.report.gpus[g];
                s.temp_c = Some(self.p.temp_c + ctx.noise.plus(what::TEMP, ctx.node as u64, t1 as u64 ^ 77, 0.7));
                s.mem_temp_c = s.temp_c.map(|t| t + 4.0);
                throttle(s, &[("sw_thermal_slowdown", 0x20), ("hw_thermal_slowdown", 0x40)], 0.70);
            }
            K::GpuPowerBrake if on => {
                let s = &mut ctx.report.gpus[g];
                throttle(s, &[("hw_power_brake_slowdown", 0x80)], 0.60);
                if let Some(l) = s.power_limit_w {
                    s.power_w = Some(l * self.p.rate);
                }
            }
            K::GpuSlow if on => {
                // Nothing on the GPU itself: only tensor activity above its waiting peers'.
                if let Some(t) = ctx.report.gpus[g].tensor_active_pct.as_mut() {
                    *t = (*t * (1.0 + self.p.slow * 0.5)).min(100.0);
                }
            }
            K::GpuEccSbeStorm => {
                let d = &mut ctx.dynamic.gpus[g];
                let n = (self.p.rate * dt).round() as u64;
                d.sbe_vol += n;
                d.sbe_agg += n;
            }
            K::GpuRowRemapFailure if on => ctx.dynamic.gpus[g].remap_failure = true,
            K::NvlinkDown => {
                let l = self.link.unwrap_or(0) as usize;
                let first = ctx.crossed(self.at_ms);
                let d = &mut ctx.dynamic.gpus[g];
                if first {
                    if let Some(c) = d.nvl.get_mut(l) {
                        c[0] += 40 + (noise::unit(&[self.seed, self.idx as u64, 1]) * 400.0) as u64;
                        c[1] += 200 + (noise::unit(&[self.seed, self.idx as u64, 2]) * 2000.0) as u64;
                        c[2] += 5 + (noise::unit(&[self.seed, self.idx as u64, 3]) * 40.0) as u64;
                    }
                }
                if on {
                    ctx.nvlink_down.push((g, l));
                }
            }
            K::NvlinkCrcStorm => {
                let l = self.link.unwrap_or(0) as usize;
                if let Some(c) = ctx.dynamic.gpus[g].nvl.get_mut(l) {
                    c[0] += (self.p.rate * dt).round() as u64;
                    c[1] += (self.p.rate2 * dt).round() as u64;
                }
            }
            K::PcieDowntrained => {
                ctx.dynamic.gpus[g].pcie_replay += (self.p.rate * dt).round() as u64;
                if on {
                    if let Some(p) = ctx.report.gpus[g].pcie.as_mut() {
                        if self.p.variant {
                            p.width = Some(8);
                        } else {
                            p.generation = Some(3);
                        }
                    }
                }
            }
            K::NicDown => {
                let k = self.nic.unwrap_or(0) as usize;
                if ctx.crossed(self.at_ms) {
                    ctx.dynamic.nics[k].c[C::LinkDowned as usize] += 1;
                    ctx.dynamic.nics[k].carrier_changes += 1;
                }
                if ctx.crossed(self.end_ms) {
                    ctx.dynamic.nics[k].carrier_changes += 1;
                }
                if on {
                    ctx.nic_down[k] = true;
                }
            }
            K::NicFlap => {
                let k = self.nic.unwrap_or(0) as usize;
                let (a, b) = (self.flaps_by(t0), self.flaps_by(t1));
                let d = &mut ctx.dynamic.nics[k];
                d.c[C::LinkDowned as usize] += b - a;
                d.c[C::LinkErrorRecovery as usize] += (b - a) * 2;
                d.carrier_changes += 2 * (b - a);
                if self.flap_down(t1) {
                    ctx.nic_down[k] = true;
                }
                ctx.nic_tput[k] *= 1.0 - self.p.slow;
            }
            K::CableBitErrors => {
                let k = self.nic.unwrap_or(0) as usize;
                let d = &mut ctx.dynamic.nics[k];
                let n = |r: f64| (r * dt).round() as u64;
                d.c[C::SymbolError as usize] += n(self.p.rate);
                d.c[C::PortRcvErrors as usize] += n(self.p.rate * 0.5);
                d.c[C::LocalLinkIntegrityErrors as usize] += n(self.p.rate * 0.05).max(u64::from(dt > 0.0));
                d.c[C::RoceAdpRetrans as usize] += n(self.p.rate2);
                d.c[C::OutOfSequence as usize] += n(self.p.rate2 * 0.7);
                if on {
                    ctx.nic_tput[k] *= self.p.frac;
                }
            }
            K::NicSpeedDegraded if on => {
                let k = self.nic.unwrap_or(0) as usize;
                ctx.nic_rate[k] = self.p.gbps;
            }
            K::LeafSwitchDown | K::LeafCongestion => {
                let n = ctx.node;
                for k in 0..cluster.spec.nics_per_node {
                    if !self.leaf_touches(cluster, n, k) {
                        continue;
                    }
                    let ku = k as usize;
                    if self.kind() == K::LeafSwitchDown {
                        if ctx.crossed(self.at_ms) {
                            ctx.dynamic.nics[ku].c[C::LinkDowned as usize] += 1;
                            ctx.dynamic.nics[ku].carrier_changes += 1;
                        }
                        if ctx.crossed(self.end_ms) {
                            ctx.dynamic.nics[ku].carrier_changes += 1;
                        }
                        if on {
                            ctx.nic_down[ku] = true;
                        }
                    } else {
                        ctx.nic_congested[ku] = self.p.rate;
                        let d = &mut ctx.dynamic.nics[ku];
                        let r = |x: f64| (x * dt).round() as u64;
                        d.c[C::NpEcnMarkedRocePackets as usize] += r(3000.0);
                        d.c[C::RpCnpHandled as usize] += r(2500.0);
                        d.c[C::NpCnpSent as usize] += r(2800.0);
                        d.c[C::RoceAdpRetrans as usize] += r(15.0);
                        if on {
                            ctx.nic_tput[ku] *= 1.0 - self.p.slow;
                        }
                    }
                }
            }
            K::HostFanFailure if on => {
                let r = self.ramp(t1);
                ctx.fan_failed = true;
                for &gi in &self.p.gpus {
                    let s = &mut ctx.report.gpus[gi as usize];
                    if let Some(t) = s.temp_c {
                        let hot = t + (self.p.temp_c - t) * r;
                        s.temp_c = Some(hot);
                        s.mem_temp_c = Some(hot + 4.0);
                        if hot >= 87.0 {
                            throttle(s, &[("sw_thermal_slowdown", 0x20), ("hw_thermal_slowdown", 0x40)], 0.72);
                        }
                    }
                }
            }
            K::HostOom if on => ctx.mem_full = true,
            K::HostMce => {}
            K::HostCpuContention if on => ctx.cpu_non_job = Some(self.p.frac * 100.0),
            K::DiskFailure if on => {
                if self.p.variant {
                    ctx.disk_read_only = true;
                } else {
                    ctx.disk_full = true;
                }
            }
            _ => {}
        }
    }
}

/// A PCI address as the classifier reports it: domain:bus:device, function dropped (`0000:3b:00`).
fn pci_device(bdf: &str) -> String {
    bdf.rsplit_once('.').map_or(bdf, |(d, _)| d).to_string()
}

/// The kmsg timestamp prefix `[ 1843.308145]` for a time since boot.
fn kmsg_prefix(t: i64, boot_ms: i64) -> String {
    let up = (t - boot_ms).max(0);
    format!("[{:>5}.{:06}]", up / 1000, (up % 1000) * 1000 + (t.rem_euclid(997)))
}

#[allow(clippy::too_many_arguments)]
fn kmsg_event(
    t: i64,
    boot_ms: i64,
    class: EventClass,
    severity: Severity,
    component: Option<String>,
    device: Option<String>,
    pid: Option<u32>,
    msg: String,
) -> Event {
    Event {
        ts_ms: t,
        source: EventSource::Kmsg,
        class,
        severity,
        component,
        xid: None,
        caused_by_xid: None,
        device,
        pid,
        count: 1,
        message: format!("{} {msg}", kmsg_prefix(t, boot_ms)),
    }
}

/// Severity of an XID as the one catalog maps it (`faultline_proto::xid`).
pub fn xid_severity(xid: u32) -> Severity {
    faultline_proto::xid::severity(xid)
}

/// An XID event as the classifier emits it for a `NVRM: Xid (PCI:…): N, …` kernel line.
pub fn xid_event(dev: &str, gpu: u32, xid: u32, t: i64, boot_ms: i64, pid: Option<u32>, text: &str) -> Event {
    let who = match pid {
        Some(p) => format!("pid={p}, name=python"),
        None => "pid='<unknown>', name=<unknown>".to_string(),
    };
    let line = format!("NVRM: Xid (PCI:{dev}): {xid}, {who}, {text}");
    let mut e = kmsg_event(
        t,
        boot_ms,
        EventClass::Xid,
        xid_severity(xid),
        Some(format!("gpu{gpu}")),
        Some(dev.to_string()),
        pid,
        line,
    );
    e.xid = Some(xid);
    e
}

/// The catalog name of an XID (`faultline_proto::xid`).
fn xid_name(xid: u32) -> &'static str {
    faultline_proto::xid::lookup(xid).map_or("", |i| i.name.as_str())
}

/// The NVML event-set twin of a kernel XID line, a few ms later.
pub fn nvml_xid_event(k: &Event) -> Event {
    let xid = k.xid.unwrap_or(0);
    Event {
        ts_ms: k.ts_ms + 3,
        source: EventSource::Nvml,
        class: EventClass::Xid,
        severity: k.severity,
        component: k.component.clone(),
        xid: k.xid,
        caused_by_xid: None,
        device: k.device.clone(),
        pid: None,
        count: 1,
        message: format!("XID {xid} {} from NVML", xid_name(xid)),
    }
}

/// An NVML ECC event (`ecc_sbe` info, `ecc_dbe` critical), `count` coalesced.
pub fn nvml_ecc_event(dev: &str, gpu: u32, t: i64, class: EventClass, count: u64) -> Event {
    let (severity, what) = if class == EventClass::EccDbe {
        (Severity::Critical, "double-bit (uncorrectable)")
    } else {
        (Severity::Info, "single-bit (corrected)")
    };
    Event {
        ts_ms: t,
        source: EventSource::Nvml,
        class,
        severity,
        component: Some(format!("gpu{gpu}")),
        xid: None,
        caused_by_xid: None,
        device: Some(dev.to_string()),
        pid: None,
        count,
        message: format!("{what} ECC error from NVML"),
    }
}

/// The agent's own event when NVML says a GPU is lost.
fn agent_gpu_lost_event(dev: &str, gpu: u32, t: i64, uuid: &str) -> Event {
    Event {
        ts_ms: t,
        source: EventSource::Agent,
        class: EventClass::GpuLost,
        severity: Severity::Critical,
        component: Some(format!("gpu{gpu}")),
        xid: None,
        caused_by_xid: None,
        device: Some(dev.to_string()),
        pid: None,
        count: 1,
        message: format!("GPU {gpu} ({uuid}) NVML answers GPU_IS_LOST"),
    }
}

/// `mlx5_core 0000:19:00.0 mlx5_3: Port: 1 Link DOWN` / `Link ACTIVE`.
pub fn nic_link_event(cluster: &Cluster, n: usize, k: u32, t: i64, boot_ms: i64, up: bool) -> Event {
    let nic = &cluster.nodes[n].nics[k as usize];
    let (class, sev, word) = if up {
        (EventClass::NicLinkUp, Severity::Info, "ACTIVE")
    } else {
        (EventClass::NicLinkDown, Severity::Critical, "DOWN")
    };
    kmsg_event(
        t,
        boot_ms,
        class,
        sev,
        Some(format!("nic:{}", nic.name)),
        Some(pci_device(&nic.bus_id)),
        None,
        format!("mlx5_core {} {}: Port: 1 Link {word}", nic.bus_id, nic.name),
    )
}

/// Application XIDs of the noise model (13, 31, 43): a kernel line naming the rank's pid.
pub fn app_xid_event(dev: &str, gpu: u32, xid: u32, t: i64, boot_ms: i64, pid: u32) -> Event {
    let text = match xid {
        13 => "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
        31 => {
            "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_8 faulted @ 0x73ac_1c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_WRITE"
        }
        _ => "Ch 00000010",
    };
    xid_event(dev, gpu, xid, t, boot_ms, Some(pid), text)
}
