//! Fault physics: for every kind of spec/fault-catalog.md, its parameters (drawn from the seed), what
//! it does to the jobs that use it, the kernel/NVML events it emits, and the signals it puts in the
//! reports of the node(s) it touches. Only the signals the catalog lists, plus consequences.

use faultline_proto::{ComponentId, FaultClass};

use crate::cluster::{Cluster, Job};
use crate::noise::{self, what};
use crate::scenario::FaultSpec;

pub mod lines;
mod signals;

pub use lines::{Obs, Seen};

/// Compute share of a healthy step: the rest is communication (collectives). Multi-node LLM
/// training spends roughly 15–30% of a step in exposed communication.
pub const COMPUTE_FRAC_MULTI: f64 = 0.8;
/// One-node jobs talk over NVLink only and wait less.
pub const COMPUTE_FRAC_SINGLE: f64 = 0.9;
/// GPUs of a node with a failed fan take this long to heat up to throttling, ms.
pub const FAN_HEAT_UP_MS: i64 = 60_000;
/// How often a disk with I/O errors logs another one while it is being used, ms.
pub(crate) const IO_ERROR_EVERY_MS: i64 = 15_000;
/// EDAC corrected-error lines of a node with an MCE problem, every this many ms.
pub(crate) const EDAC_EVERY_MS: i64 = 60_000;
/// The agent coalesces repeated NVML ECC events within this window into one with a count
/// (agent/src/events.rs: 10 s).
pub const ECC_COALESCE_MS: i64 = 10_000;
/// XID 92 repeats while the SBE storm lasts, every this many ms.
pub(crate) const XID92_EVERY_MS: i64 = 300_000;

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
    /// gpu_lost: NVML answers GPU_IS_LOST (else `Unknown Error`, which many fallen-off GPUs give).
    pub nvml_lost: bool,
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
    pub(crate) seed: u64,
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
                p.nvml_lost = d(6) < 0.4;
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
            K::SwitchSilentDrop => {
                // A black-holed share of the leaf's forwarding (one bad ECMP bucket or buffer): the
                // flows that hash onto it lose their packets with no port counter moving. The
                // transport retransmits (slower steps); now and then a queue pair runs out of
                // retries, on average once per `period_ms` per rank pair crossing the leaf.
                p.slow = between(2, 0.05, 0.25);
                p.period_ms = between(3, 60_000.0, 240_000.0) as i64;
            }
            K::NicConnectionResets => {
                // A NIC (firmware, a marginal optic under the symbol-error threshold) that resets
                // its connections every `period_ms`; the job recovers each time, losing the steps
                // since (modelled as a slower average step).
                p.slow = between(2, 0.05, 0.20);
                p.period_ms = between(3, 30_000.0, 120_000.0) as i64;
            }
            // NVML sees nothing; the loss goes non-finite (variant) or diverges.
            K::GpuCollectiveCorruption => p.variant = d(1) < 0.7,
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
    pub(crate) fn flap_start(&self, k: i64) -> i64 {
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
    /// `nan_check_share`: the scenario's share of jobs running PyTorch's NaN check.
    pub fn job_fx(&self, cluster: &Cluster, ji: usize, nan_check_share: f64) -> Option<JobFx> {
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
            K::GpuCollectiveCorruption => {
                let ranks = on_gpu(job);
                // A one-rank job runs no collective.
                if ranks.is_empty() || job.ranks.len() < 2 {
                    return None;
                }
                if nan_check(self.seed, nan_check_share, job) {
                    // PyTorch's NaN check stops the rank at the first poisoned collective input;
                    // the others wait in the collective until the watchdog.
                    return with(Stall::WhileActive, ranks, RankFx::Exit(1));
                }
                // The reduced result every rank receives is corrupt: every rank's loss shows it.
                let mut f = JobFx::new(Stall::No);
                f.ranks = (0..job.ranks.len()).map(|r| (r, RankFx::Sdc)).collect();
                Some(f)
            }
            K::NvlinkDown | K::NvlinkCrcStorm => {
                let mut f = with(Stall::No, on_gpu(job), RankFx::Extra(0.0))?;
                f.ranks.clear();
                f.comm_slow = self.p.slow;
                Some(f)
            }
            K::NicDown | K::NicFlap | K::CableBitErrors | K::NicSpeedDegraded | K::NicConnectionResets => {
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
            K::LeafSwitchDown | K::LeafCongestion | K::SwitchSilentDrop => {
                let leaf = self.leaf?;
                if !job.multi_node || !job.ranks.iter().any(|r| cluster.leaf_of(r.node, r.nic) == leaf) {
                    return None;
                }
                let mut f = JobFx::new(if self.kind() == K::LeafSwitchDown { Stall::WhileActive } else { Stall::No });
                if self.kind() != K::LeafSwitchDown {
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
}

/// Whether `job` runs with PyTorch's NaN check (`TORCH_NCCL_NAN_CHECK=1`): a share `share`
/// (`[behaviour] nan_check_share`) of jobs do.
pub fn nan_check(seed: u64, share: f64, job: &Job) -> bool {
    noise::unit(&[seed, what::FAULT, job.tag, 0x004e_414e]) < share
}
