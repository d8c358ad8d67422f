//! One virtual second of the running cluster: jobs advance (`jobs.rs`), reports fall due on their
//! schedules, kernel lines and urgent news turn into pushes, planned reboots send their last report,
//! and the reports leave the agents in arrival order. The top of the simulator: it reads the world
//! (`world.rs`), asks `telemetry` for each report and writes back what changed.

mod jobs;
mod nccl;

pub use nccl::ring_peers;

use std::collections::BTreeMap;

use crate::faults::{Obs, RankFx, Seen, lines};
use crate::noise::{self, what};
use crate::telemetry;
use crate::world::{HUNG_TASK_TIMEOUT_MS, Outgoing, RETRY_MS, RankView, Silence, World};
use faultline_proto::NodeReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ReqKind {
    Shutdown,
    Regular,
    Urgent,
    /// An urgent report for news the node's agent sees without a kernel or NVML event: a rank's
    /// process exit (pidfd) or its first non-finite loss posted to the progress API.
    News,
}

impl World {
    /// Every report sent from now until virtual time `until_ms`, one `step` at a time.
    pub fn run_until(&mut self, until_ms: i64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while self.t_ms < until_ms {
            out.extend(self.step());
        }
        out
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
        self.nccl_lines(t0, t, &mut seen);
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
            if matches!(s.obs, Obs::TrainLog { .. }) {
                // The training-log collector reads on the agent's cycle: its events ride in the next
                // regular report, never an urgent push.
                self.nodes[n].pending.push(ev);
                continue;
            }
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
            let spare = self.spares.pop().unwrap_or_else(|| NodeReport::empty(""));
            let report = telemetry::build(
                self,
                &mut d,
                n,
                ts,
                matches!(kind, ReqKind::Urgent | ReqKind::News),
                kind == ReqKind::Shutdown,
                spare,
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
            let (report, compact) = if self.encode_compact {
                // The report leaves as its bytes. Its buffers, still in the CPU's cache, build the
                // next node's report; what goes on is its heading.
                let bytes = faultline_proto::wire::encode(&report);
                let heading = heading(&report);
                self.spares.push(report);
                (heading, Some(bytes))
            } else {
                (report, None)
            };
            self.in_flight.push(Outgoing { sent_ms: ts, arrival_ms: ts + lat as i64 + late, report, compact });
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

/// A report's heading without its samples and events: who sent it, its seq, times and flags.
fn heading(r: &NodeReport) -> NodeReport {
    NodeReport {
        seq: r.seq,
        timestamp_ms: r.timestamp_ms,
        interval_ms: r.interval_ms,
        shutdown: r.shutdown,
        urgent: r.urgent,
        ..NodeReport::empty(r.node.clone())
    }
}
