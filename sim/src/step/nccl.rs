//! What the ranks of a multi-node job write to their logs when the fabric under them fails, in NCCL's
//! and PyTorch's own formats (the forms `faultline_agent::classify::nccl` reads, taken from public
//! issue reports): IB completion errors naming the peer, socket resets, `ncclRemoteError` /
//! `ncclSystemError`, the watchdog's timeout with the collective's sequence number, and PyTorch's
//! NaN check. The lines go through the agent's classifier like every other line (`Obs::TrainLog`).
//!
//! Who talks to whom: NCCL's rings and trees connect each rank to the rank with the same local rank
//! on the previous and next node of the job (rail-aligned: NIC k to NIC k), so a failing NIC or
//! leaf shows on the edges of the ranks that use it and those ring peers. The peer address NCCL
//! prints for a completion is the peer's out-of-band socket (its host's management address); the
//! remote GID is the peer port's own (an IPv4-mapped address on RoCE, a link-local GUID on IB).
//!
//! Timing is physical: a queue pair gives up only after its retries are exhausted
//! (`IB_RETRY_EXHAUSTED_MS`), so a NIC flap shorter than that breaks no connection and shows in
//! counters only.

use faultline_proto::FaultClass as K;

use crate::addrs;
use crate::cluster::Job;
use crate::faults::{Fault, Obs, Seen, nan_check};
use crate::noise::{self, what};
use crate::world::{RankView, World};

/// A queue pair gives up after `NCCL_IB_RETRY_CNT` = 7 retries of 4.096 µs × 2^`NCCL_IB_TIMEOUT`
/// each (18 by default since NCCL 2.14: 1.07 s): about 8 s after its path stopped delivering.
pub const IB_RETRY_EXHAUSTED_MS: i64 = 8_000;
/// Collectives one training step issues (gradient buckets, FSDP gathers); PyTorch's `SeqNum` counts
/// them per process group.
pub const COLLECTIVES_PER_STEP: u64 = 12;
/// cable_bit_errors: a rank pair over the NIC sees one queue pair exhaust its retries about this
/// often (most corrupted packets are retransmitted in time; now and then one is not), ms.
pub const BIT_ERROR_COMPLETION_EVERY_MS: f64 = 600_000.0;
/// The NCCL release the simulated jobs print in their errors.
const NCCL_VERSION: &str = "2.21.5";
/// Where PyTorch's sources sit in the NGC containers, as their errors print it.
const TORCH_SRC: &str = "/opt/pytorch/pytorch/torch/csrc/distributed/c10d";

/// A work completion's status as NCCL ≥ 2.20 prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wc {
    /// The sender's retries ran out (`IBV_WC_RETRY_EXC_ERR`, 12).
    RetryExc,
    /// The queue pair went to error and flushed a posted receive (`IBV_WC_WR_FLUSH_ERR`, 5).
    Flush,
}

/// The ranks ring collectives connect rank `r` to on other nodes: the rank with the same local rank
/// (else the first) on the previous and the next node of the job.
pub fn ring_peers(job: &Job, r: usize) -> Vec<usize> {
    let me = &job.ranks[r];
    let m = job.hosts.len();
    let Some(pos) = job.hosts.iter().position(|h| *h == me.node) else { return Vec::new() };
    let mut out = Vec::new();
    if m < 2 {
        return out;
    }
    for h in [job.hosts[(pos + m - 1) % m], job.hosts[(pos + 1) % m]] {
        if h == me.node {
            continue;
        }
        let mut on = (0..job.ranks.len()).filter(|&i| job.ranks[i].node == h);
        let first = on.clone().next();
        if let Some(p) = on.find(|&i| job.ranks[i].local_rank == me.local_rank).or(first)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// The ring edges (a, b) of `job` with `hit(a)`: the end on the faulty element first, each
/// unordered pair once. Visits only the ranks `hit` accepts.
fn pairs(job: &Job, hit: &dyn Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for a in (0..job.ranks.len()).filter(|&a| hit(a)) {
        for b in ring_peers(job, a) {
            if seen.insert((a.min(b), a.max(b))) {
                out.push((a, b));
            }
        }
    }
    out
}

/// Civil date and time of a Unix time in ms: (month, day, hour, minute, second, ns).
fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (m, d, rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000 * 1_000_000)
}

impl World {
    /// torchrun's tag in front of every line of rank `r` (PyTorch jobs start their processes with
    /// torchrun under Slurm and Kubernetes alike).
    fn tag(&self, j: usize, r: usize) -> String {
        format!("[rank{}]:", self.cluster.jobs[j].ranks[r].rank)
    }

    /// NCCL's own prefix: `host:pid:tid [cudaDev]`.
    fn nccl_prefix(&self, j: usize, r: usize) -> String {
        let job = &self.cluster.jobs[j];
        let rk = &job.ranks[r];
        let pid = self.pid(j, r);
        format!("{}{}:{pid}:{} [{}]", self.tag(j, r), self.cluster.nodes[rk.node].name, pid + 211, rk.gpu)
    }

    /// PyTorch's glog prefix at `ts`: `[E1206 18:44:12.755262105 ProcessGroupNCCL.cpp:607]`.
    fn glog(&self, ts: i64, line: u32) -> String {
        let (mo, d, h, mi, s, ns) = civil(self.epoch_ms + ts);
        format!("[E{mo}{d:02} {h:02}:{mi:02}:{s:02}.{ns:09} ProcessGroupNCCL.cpp:{line}]")
    }

    fn oob_port(&self, j: usize, r: usize) -> u64 {
        30_000 + noise::hash(&[self.seed, self.cluster.jobs[j].tag, r as u64, 0x9017]) % 30_000
    }

    fn say(&self, j: usize, r: usize, ts: i64, line: String, out: &mut Vec<Seen>) {
        let job = &self.cluster.jobs[j];
        out.push(Seen { node: job.ranks[r].node, ts_ms: ts, obs: Obs::TrainLog { job: job.id.clone(), line } });
    }

    /// `NET/IB: Got completion from peer …` on rank `me` about its queue pair to `peer`.
    fn completion(&self, j: usize, me: usize, peer: usize, wc: Wc, ts: i64, out: &mut Vec<Seen>) {
        let job = &self.cluster.jobs[j];
        let (a, b) = (&job.ranks[me], &job.ranks[peer]);
        let (status, opcode, vendor) = match wc {
            Wc::RetryExc => ("IBV_WC_RETRY_EXC_ERR(12)", "IBV_WC_SEND(0)", 129),
            Wc::Flush => ("IBV_WC_WR_FLUSH_ERR(5)", "IBV_WC_RECV(128)", 249),
        };
        let line = format!(
            "{} transport/net_ib.cc:2411 NCCL WARN NET/IB: Got completion from peer {}<{}> with status={status} opcode={opcode} vendor_err={vendor}  localGid {} remoteGids{} hca {}",
            self.nccl_prefix(j, me),
            addrs::host(b.node),
            self.oob_port(j, peer),
            addrs::gid(self.cluster.spec.link_layer, a.node, a.nic),
            addrs::gid(self.cluster.spec.link_layer, b.node, b.nic),
            self.cluster.nodes[a.node].nics[a.nic as usize].name,
        );
        self.say(j, me, ts, line, out);
    }

    /// NCCL's socket reset towards `peer`'s out-of-band address.
    fn socket_reset(&self, j: usize, me: usize, peer: usize, ts: i64, out: &mut Vec<Seen>) {
        let b = &self.cluster.jobs[j].ranks[peer];
        let line = format!(
            "{} misc/socket.cc:46 NCCL WARN socketProgressOpt: Call to recv from {}<{}> failed : Connection reset by peer",
            self.nccl_prefix(j, me),
            addrs::host(b.node),
            self.oob_port(j, peer)
        );
        self.say(j, me, ts, line, out);
    }

    /// PyTorch's error for an NCCL result: `remote` = `ncclRemoteError`, else `ncclSystemError`.
    fn result_error(&self, j: usize, me: usize, remote: bool, ts: i64, out: &mut Vec<Seen>) {
        let tag = self.tag(j, me);
        let text = if remote {
            "remote process exited or there was a network error"
        } else {
            "unhandled system error (run with NCCL_DEBUG=INFO for details)"
        };
        let line = format!(
            "{tag} torch.distributed.DistBackendError: NCCL error in: {TORCH_SRC}/ProcessGroupNCCL.cpp:3763, {text}, NCCL version {NCCL_VERSION}"
        );
        self.say(j, me, ts, line, out);
        if remote {
            let line = format!(
                "{tag} ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely."
            );
            self.say(j, me, ts, line, out);
        }
    }

    /// The watchdog's two lines for rank `me` stuck in collective `seq`.
    fn watchdog(&self, j: usize, me: usize, seq: u64, ts: i64, out: &mut Vec<Seen>) {
        let job = &self.cluster.jobs[j];
        let rank = job.ranks[me].rank;
        let tag = self.tag(j, me);
        let timeout = (self.behaviour.nccl_timeout_s * 1000.0) as u64;
        let ran = timeout + 20 + noise::hash(&[self.seed, job.tag, me as u64, 0x3d]) % 120;
        let numel = 1u64 << (20 + job.tag % 9);
        let line = format!(
            "{tag}{} [Rank {rank}] Watchdog caught collective operation timeout: WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn={numel}, NumelOut={numel}, Timeout(ms)={timeout}) ran for {ran} milliseconds before timing out.",
            self.glog(ts, 607)
        );
        self.say(j, me, ts, line, out);
        let line = format!(
            "{tag}{} [PG 0 Rank {rank}] Exception (either an error or timeout) detected by watchdog at work: {seq}, last enqueued NCCL work: {seq}, last completed NCCL work: {}.",
            self.glog(ts + 2, 1664),
            seq.saturating_sub(1)
        );
        self.say(j, me, ts + 2, line, out);
    }

    fn running(&self, j: usize, r: usize, ts: i64) -> bool {
        self.rank_view(j, r, ts) == RankView::Running
    }

    /// Both ends of edge (a, b) report it: `a` with `wa`, `b` with `wb`; then PyTorch's error
    /// (`a` local: system error; `b` sees the remote one).
    fn broken_edge(&self, j: usize, (a, b): (usize, usize), wa: Wc, wb: Wc, ts: i64, out: &mut Vec<Seen>) {
        if self.running(j, a, ts) {
            self.completion(j, a, b, wa, ts, out);
            self.result_error(j, a, false, ts + 40, out);
        }
        if self.running(j, b, ts) {
            self.completion(j, b, a, wb, ts + 3, out);
            self.result_error(j, b, true, ts + 45, out);
        }
    }

    /// The ring edges of job `j` that fault `f` breaks, the end on the faulty element first.
    fn edges_of(&self, f: &Fault, j: usize) -> Vec<(usize, usize)> {
        let c = &self.cluster;
        let job = &c.jobs[j];
        match (f.node, f.nic, f.leaf) {
            (Some(n), Some(k), _) => pairs(job, &|a| job.ranks[a].node == n && job.ranks[a].nic == k),
            (_, _, Some(l)) => pairs(job, &|a| c.leaf_of(job.ranks[a].node, job.ranks[a].nic) == l),
            _ => Vec::new(),
        }
    }

    /// The training-log lines of (t0, t].
    pub(crate) fn nccl_lines(&self, t0: i64, t: i64, out: &mut Vec<Seen>) {
        let in_win = |x: i64| t0 < x && x <= t;
        for j in 0..self.cluster.jobs.len() {
            let job = &self.cluster.jobs[j];
            if !job.active_at(t) && !job.active_at(t0) {
                continue;
            }
            for (fi, _) in &self.job_fx[j] {
                let f = &self.faults[*fi];
                if !f.touches(t0, t) {
                    continue;
                }
                self.fault_lines(f, j, t0, t, &in_win, out);
            }
            // The watchdog: every rank still in the collective when the timeout fires says so.
            if let Some(kt) = self.jobs[j].killed_at.filter(|k| in_win(*k)) {
                let step = self.jobs[j].step;
                let s =
                    step * COLLECTIVES_PER_STEP + 1 + noise::hash(&[self.seed, job.tag, step]) % COLLECTIVES_PER_STEP;
                // A hang with no hardware cause: one rank never entered the collective the others
                // wait in (a desync); it sits in the one before.
                let hang = self.job_fx[j].iter().any(|(fi, fx)| fx.hang && self.faults[*fi].active(kt));
                let lag = (noise::hash(&[self.seed, job.tag, 0x1a6]) % job.ranks.len().max(1) as u64) as usize;
                for r in 0..job.ranks.len() {
                    if self.running(j, r, kt - 1) {
                        let seq = if hang && r == lag { s - 1 } else { s };
                        self.watchdog(j, r, seq, kt, out);
                    }
                }
            }
        }
    }

    fn fault_lines(&self, f: &Fault, j: usize, t0: i64, t: i64, in_win: &dyn Fn(i64) -> bool, out: &mut Vec<Seen>) {
        let job = &self.cluster.jobs[j];
        let key = |a: usize, b: usize, sec: i64| {
            noise::unit(&[self.seed, what::FAULT, f.idx as u64, job.tag, a as u64, b as u64, sec as u64])
        };
        let onset = f.at_ms + f.p.offset_ms;
        match f.kind() {
            K::NicDown | K::LeafSwitchDown => {
                let at = onset + IB_RETRY_EXHAUSTED_MS;
                if in_win(at) && f.active(at) {
                    for e in self.edges_of(f, j) {
                        self.broken_edge(j, e, Wc::RetryExc, Wc::RetryExc, at, out);
                    }
                }
            }
            K::NicFlap if f.p.down_ms > IB_RETRY_EXHAUSTED_MS => {
                let first = ((t0 - onset) / f.p.period_ms.max(1) - 1).max(0);
                for k in first..=first + 2 {
                    let at = f.flap_start(k) + IB_RETRY_EXHAUSTED_MS;
                    if in_win(at) && f.flap_down(at) {
                        for e in self.edges_of(f, j) {
                            self.broken_edge(j, e, Wc::RetryExc, Wc::RetryExc, at, out);
                        }
                    }
                }
            }
            K::CableBitErrors | K::SwitchSilentDrop => {
                // Now and then one queue pair runs out of retries: the sender says so; on a silent
                // drop the receiver's queue pair is torn down with it.
                let every =
                    if f.kind() == K::CableBitErrors { BIT_ERROR_COMPLETION_EVERY_MS } else { f.p.period_ms as f64 };
                let p = 1000.0 / every.max(1000.0);
                let edges = self.edges_of(f, j);
                for sec in (t0 / 1000 + 1)..=(t / 1000) {
                    let ts = sec * 1000;
                    if !f.active(ts) {
                        continue;
                    }
                    for &(a, b) in &edges {
                        if key(a, b, sec) >= p {
                            continue;
                        }
                        let (snd, rcv) = if key(b, a, sec) < 0.5 { (a, b) } else { (b, a) };
                        let ts = ts - 1000 + (key(a, a, sec) * 900.0) as i64;
                        if self.running(j, snd, ts) {
                            self.completion(j, snd, rcv, Wc::RetryExc, ts, out);
                        }
                        if f.kind() == K::SwitchSilentDrop && self.running(j, rcv, ts) {
                            self.completion(j, rcv, snd, Wc::Flush, ts + 5, out);
                        }
                    }
                }
            }
            K::NicConnectionResets => {
                // Episodes every period while it lasts: the NIC's queue pairs fail, its ranks' sockets
                // to their peers are reset, the peers see the remote error.
                let period = f.p.period_ms.max(1000);
                let first = ((t0 - onset) / period - 1).max(0);
                for k in first..=first + 2 {
                    let at = onset + IB_RETRY_EXHAUSTED_MS + k * period;
                    if !(in_win(at) && f.active(at)) {
                        continue;
                    }
                    for (a, b) in self.edges_of(f, j) {
                        if self.running(j, a, at) {
                            self.completion(j, a, b, Wc::RetryExc, at, out);
                            self.socket_reset(j, a, b, at + 30, out);
                        }
                        if self.running(j, b, at) {
                            self.completion(j, b, a, Wc::RetryExc, at + 4, out);
                            self.result_error(j, b, true, at + 50, out);
                        }
                    }
                }
            }
            K::GpuCollectiveCorruption
                if in_win(f.at_ms) && nan_check(self.seed, self.behaviour.nan_check_share, job) =>
            {
                // PyTorch's NaN check trips on the rank whose shard the GPU poisoned, at the next
                // collective that takes it as input; the CUDA runtime prints the device assertion.
                let (n, g) = (f.node, f.gpu);
                for r in (0..job.ranks.len()).filter(|&r| Some(job.ranks[r].node) == n && Some(job.ranks[r].gpu) == g) {
                    let b = noise::hash(&[self.seed, f.idx as u64, r as u64]) % 1024;
                    let line = format!(
                        "{}{TORCH_SRC}/NanCheck.cu:26: checkForNaN: block: [{b},0,0], thread: [{},0,0] Assertion `!isnan(data[i])` failed.",
                        self.tag(j, r),
                        (b * 37) % 512
                    );
                    self.say(j, r, f.at_ms, line, out);
                    let line = format!("{} RuntimeError: CUDA error: device-side assert triggered", self.tag(j, r));
                    self.say(j, r, f.at_ms + 1, line, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::civil;

    #[test]
    fn civil_time_of_a_known_instant() {
        // 2023-11-14T22:13:20Z
        assert_eq!(civil(1_700_000_000_000), (11, 14, 22, 13, 20, 0));
        assert_eq!(civil(951_782_400_123), (2, 29, 0, 0, 0, 123_000_000));
    }
}
