//! Hangs without the progress API. A rank stuck in an NCCL collective spins: its GPU stays busy
//! (NVML utilisation is the share of time any kernel ran) while the bytes its job moves over the
//! fabric NICs and NVLinks stop. When that holds on every node of a job for `quiet_ms`, the job
//! hangs; the node whose counters went flat while the others still moved data is named first.
//!
//! Pauses are not hangs: a rank that says it is checkpointing or evaluating, disk or process writes
//! (a checkpoint being written), a job still in its warm-up (compilation, NCCL setup), and a job
//! that never moved data yet are left alone.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::{ComponentId, FaultClass, ProgressStatus};

use super::{Symptom, SymptomKind as K};
use crate::state::{JobState, NodeState, RankState, Traffic};

/// GPU utilisation at or above which a GPU whose job moves no data is spinning, not idle: NCCL's
/// wait kernels keep it near 100%; a job paused on the CPU side drops it near 0.
pub const HANG_GPU_BUSY_PCT: f64 = 80.0;

/// How long a job's traffic must be flat, and how long after its start it is not judged.
#[derive(Debug, Clone, Copy)]
pub struct HangRules {
    pub quiet_ms: i64,
    pub warmup_ms: i64,
    /// How long a job may go without a step while something says it pauses (`DEFAULT_PAUSE_MAX_MS`).
    pub pause_max_ms: i64,
}

impl Default for HangRules {
    fn default() -> Self {
        Self { quiet_ms: DEFAULT_QUIET_MS, warmup_ms: DEFAULT_WARMUP_MS, pause_max_ms: DEFAULT_PAUSE_MAX_MS }
    }
}

/// Default pause allowance: a job that says it checkpoints or evaluates, or whose writes, traffic or
/// lone busy GPU say it is doing something other than waiting in a collective, may go this long
/// without a step. It is PyTorch's NCCL watchdog default (`TORCH_NCCL_TIMEOUT`, 10 min): a collective
/// really stuck that long is killed by the watchdog anyway, while evaluation passes and checkpoints
/// of large models run for minutes. Operators set it with `job_pause_max_s`.
pub const DEFAULT_PAUSE_MAX_MS: i64 = 600_000;
/// Default flat time: three 10 s intervals, so the hang is named within a minute of its start (the
/// first flat interval is only seen one interval after the hang) and far before PyTorch's watchdog
/// (`TORCH_NCCL_TIMEOUT`, 10 minutes by default).
pub const DEFAULT_QUIET_MS: i64 = 30_000;
/// Flat time required when no node of the job has NVLink counters to judge by (one GPU per node, or
/// an agent without NVML's throughput fields): the NIC floor sits above the loss/metric all-reduce
/// an evaluation pass still sends, so a pass looks flat for as long as it lasts. Evaluation passes
/// run one to five minutes; this is longer, and still under PyTorch's 10-minute NCCL watchdog.
pub const NIC_ONLY_QUIET_MS: i64 = 330_000;
/// Default warm-up: two minutes covers NCCL setup and most `torch.compile` warm-ups; a job that has
/// never moved data is not judged at all.
pub const DEFAULT_WARMUP_MS: i64 = 120_000;

/// One node's view of the job.
struct NodeQuiet<'a> {
    node: &'a str,
    /// When its sources last moved data, and the start of that interval.
    active_at: i64,
    active_from: i64,
    quiet_ms: i64,
}

fn newest<'a>(it: impl Iterator<Item = &'a Traffic>) -> Option<(i64, i64)> {
    it.filter_map(|t| Some((t.active_at?, t.active_from.unwrap_or(t.active_at?)))).max()
}

/// Whether `r`'s GPUs' NVLinks or its fabric NIC moved data in its node's newest report: a rank
/// that stopped posting steps but still talks is paused (evaluating, warming up), not hung; a hung
/// collective leaves them flat from the next report on.
pub fn still_moving(r: &RankState, nodes: &BTreeMap<String, NodeState>) -> bool {
    let Some(n) = nodes.get(&r.node) else { return false };
    let newest = |t: &Traffic| t.active_at == Some(n.last_report_ms);
    r.gpus.iter().filter_map(|g| n.gpus.get(g)).any(|g| newest(&g.nvlink_traffic))
        || r.nic.as_ref().and_then(|k| n.nics.get(k)).is_some_and(|s| s.fabric && newest(&s.traffic))
}

/// The hang symptom for `job`, if its counters say it hangs.
pub fn check(job: &JobState, nodes: &BTreeMap<String, NodeState>, rules: &HangRules, now: i64) -> Option<Symptom> {
    if now - job.first_seen_ms < rules.warmup_ms {
        return None;
    }
    let alive: Vec<_> = job.ranks.values().filter(|r| r.alive()).collect();
    if alive.is_empty() || alive.len() < job.ranks.len() {
        return None; // ranks gone or exiting: the crash and end rules speak
    }
    if alive.iter().any(|r| matches!(r.status, ProgressStatus::Checkpointing | ProgressStatus::Evaluating)) {
        return None;
    }
    let hosts: BTreeSet<&str> = alive.iter().map(|r| r.node.as_str()).collect();
    let multi = hosts.len() > 1;
    let mut quiet: Vec<NodeQuiet> = Vec::new();
    let mut any_nvlink = false;
    for host in &hosts {
        let n = nodes.get(*host)?;
        let ranks: Vec<_> = alive.iter().filter(|r| r.node == *host).collect();
        let gpus: BTreeSet<u32> = ranks.iter().flat_map(|r| r.gpus.iter().copied()).collect();
        let named: BTreeSet<&str> = ranks.iter().filter_map(|r| r.nic.as_deref()).collect();
        // Sources still reported in the node's newest report.
        let fresh = |t: &&Traffic| t.seen_at == Some(n.last_report_ms);
        let nics = n
            .nics
            .iter()
            .filter(|(name, st)| multi && st.fabric && (named.is_empty() || named.contains(name.as_str())))
            .map(|(_, st)| &st.traffic)
            .filter(fresh);
        let nvl = gpus.iter().filter_map(|g| n.gpus.get(g)).map(|g| &g.nvlink_traffic).filter(fresh);
        let nvl: Vec<&Traffic> = nvl.collect();
        any_nvlink |= !nvl.is_empty();
        let sources: Vec<&Traffic> = nics.chain(nvl).collect();
        if sources.is_empty() {
            return None; // nothing to judge by on this node
        }
        let (active_at, active_from) = newest(sources.into_iter())?;
        // Busy GPUs throughout the flat time.
        for g in &gpus {
            let st = n.gpus.get(g)?;
            let after: Vec<f64> =
                st.points.iter().filter(|p| p.ts > active_at).map(|p| p.util).collect::<Option<_>>()?;
            if after.is_empty() || after.iter().any(|u| *u < HANG_GPU_BUSY_PCT) {
                return None;
            }
        }
        // Writing a checkpoint is a pause, not a hang.
        let writing = n.disk_writes.active_at.is_some_and(|t| t > active_at)
            || ranks.iter().any(|r| r.io.active_at.is_some_and(|t| t > active_at));
        if writing {
            return None;
        }
        quiet.push(NodeQuiet { node: host, active_at, active_from, quiet_ms: n.last_report_ms - active_at });
    }
    let need = if any_nvlink { rules.quiet_ms } else { rules.quiet_ms.max(NIC_ONLY_QUIET_MS) };
    if quiet.iter().any(|q| q.quiet_ms < need) {
        return None;
    }
    let onset = quiet.iter().map(|q| q.active_at).min()?;
    // Ranks that report progress and advanced after the traffic stopped are not hung.
    if alive.iter().any(|r| r.last_progress_ms.is_some_and(|lp| lp > onset)) {
        return None;
    }
    let first = quiet.iter().find(|x| quiet.iter().all(|y| y.node == x.node || y.active_from >= x.active_at));
    let first_words = match first {
        Some(f) if quiet.len() > 1 => format!("; {} went quiet first, while the others still moved data", f.node),
        _ => String::new(),
    };
    let flat = quiet.iter().map(|q| q.quiet_ms).min().unwrap_or(0);
    let jid = ComponentId::job(&job.id);
    Some(
        Symptom::new(
            jid.clone(),
            K::JobStalled,
            onset,
            format!(
                "{jid}'s GPUs are busy (≥{HANG_GPU_BUSY_PCT:.0}%) while its NIC and NVLink bytes have been flat for {:.0} s on all {} node(s): a hung collective{first_words}",
                flat as f64 / 1000.0,
                quiet.len()
            ),
        )
        .class(FaultClass::JobHang)
        .critical()
        .value(1.0),
    )
}

#[cfg(test)]
#[path = "hang_tests.rs"]
mod tests;
