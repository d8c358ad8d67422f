//! Collector: training logs. Follows the logs of the training processes on this node where their
//! scheduler puts them (a Slurm job's `StdOut`/`StdErr`, the kubelet's pod logs) and any configured
//! globs, from their end at start, a bounded number of bytes per cycle. NCCL and PyTorch-distributed
//! lines (`classify::nccl`) become events carrying what the line said (`CollectiveInfo`: peer,
//! collective sequence number and op, ranks, device), so the analyzer can find the failing edges.
//!
//! Repeats within a cycle (NCCL prints a completion error per queue pair and channel) become one event
//! with a count; what makes two lines different (peer, rank, sequence number, NIC, error) keeps them
//! apart. Files: `tail.rs` follows one file, `discover.rs` finds them.

pub mod discover;
pub mod pod_ips;
pub mod tail;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::{CollectiveInfo, Event, EventSource, NodeReport, Scheduler};
use serde::Deserialize;

use super::{CollectError, Collector};
use crate::classify::nccl::{self, NcclLine};
use crate::events::EventQueue;
use crate::observe::{MAX_MESSAGE, truncate};

/// Most events one cycle sends from training logs. A job falling apart prints thousands of distinct
/// lines (every rank, every peer); 256 distinct ones per 10 s cycle keep every failing edge of a
/// 32-node job while leaving the event queue (4096) room for kernel events.
pub const MAX_EVENTS_PER_CYCLE: usize = 256;
/// A Slurm job whose `scontrol` answer had no log paths (or failed) is asked again after this long.
const SLURM_RETRY: Duration = Duration::from_secs(60);
/// `scontrol` queries per cycle: each may take up to 2 s and the collector's deadline is 3 s, so a
/// node that starts eight jobs at once learns their logs over eight cycles rather than stalling one.
const SLURM_QUERIES_PER_CYCLE: usize = 1;

/// Training-log settings (`[jobs.logs]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainLogConfig {
    /// Read training logs at all. Default true.
    pub enabled: bool,
    /// Follow each Slurm job's `StdOut` and `StdErr`, as `scontrol show job -o` names them (the
    /// `scontrol` of `[jobs.scheduler]`). Default true.
    pub slurm: bool,
    /// The kubelet's container-log directory (`<ns>_<pod>_<uid>/<container>/<n>.log`, CRI format).
    /// Every pod's log on the node is followed; only collective-library lines become events. Empty:
    /// off. Default `/var/log/pods`.
    pub pod_log_dir: Option<PathBuf>,
    /// More files to follow: absolute glob patterns (`*` and `?` in any component), e.g.
    /// `/scratch/runs/*/logs/rank*.log`. Default none.
    pub globs: Vec<String>,
    /// Most bytes read from one file per cycle; the rest waits for the next cycle. Default 1 MiB.
    pub max_bytes_per_file: u64,
    /// Most bytes read from all files per cycle. Default 8 MiB.
    pub max_bytes_per_cycle: u64,
    /// Most files followed at once. Default 256.
    pub max_files: usize,
}

impl Default for TrainLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            slurm: true,
            pod_log_dir: Some(PathBuf::from("/var/log/pods")),
            globs: Vec::new(),
            max_bytes_per_file: 1024 * 1024,
            max_bytes_per_cycle: 8 * 1024 * 1024,
            max_files: 256,
        }
    }
}

/// Where one followed file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    job: Option<String>,
    /// Kubelet log: lines carry the CRI prefix.
    cri: bool,
}

/// What the collector asked Slurm about a job.
#[derive(Debug)]
struct SlurmPaths {
    paths: Vec<PathBuf>,
    asked: Instant,
}

/// The training-log collector.
pub struct TrainLogCollector {
    cfg: TrainLogConfig,
    sched: crate::collect::sched::SchedConfig,
    events: Arc<EventQueue>,
    tails: BTreeMap<PathBuf, (tail::Tail, Origin)>,
    slurm: HashMap<String, SlurmPaths>,
    /// Where the next cycle starts reading, so a chatty file cannot starve the others.
    next_first: usize,
    /// A CRI partial line (`P`) waiting for its end, per file.
    cri_partial: HashMap<PathBuf, String>,
    /// This node's pod addresses, from the kubelet's pod list.
    pod_ips: pod_ips::PodIps,
}

impl TrainLogCollector {
    pub fn new(cfg: TrainLogConfig, sched: crate::collect::sched::SchedConfig, events: Arc<EventQueue>) -> Self {
        Self {
            cfg,
            sched,
            events,
            tails: BTreeMap::new(),
            slurm: HashMap::new(),
            next_first: 0,
            cri_partial: HashMap::new(),
            pod_ips: pod_ips::PodIps::default(),
        }
    }

    /// The files to follow now, from the jobs of this cycle's report and the configuration.
    fn wanted(&mut self, report: &NodeReport) -> BTreeMap<PathBuf, Origin> {
        let mut want = BTreeMap::new();
        let max = self.cfg.max_files;
        if self.cfg.slurm && self.sched.slurm {
            let timeout = humantime::parse_duration(&self.sched.timeout)
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(2));
            let mut queries = 0;
            for j in report.jobs.iter().filter(|j| j.scheduler == Scheduler::Slurm) {
                let stale =
                    self.slurm.get(&j.job_id).is_none_or(|s| s.paths.is_empty() && s.asked.elapsed() >= SLURM_RETRY);
                if stale && queries < SLURM_QUERIES_PER_CYCLE {
                    queries += 1;
                    let paths =
                        crate::collect::sched::run(&self.sched.scontrol, &["show", "job", "-o", &j.job_id], timeout)
                            .map(|out| discover::slurm_log_paths(&out, &j.job_id))
                            .unwrap_or_default();
                    self.slurm.insert(j.job_id.clone(), SlurmPaths { paths, asked: Instant::now() });
                }
                for p in self.slurm.get(&j.job_id).map(|s| s.paths.as_slice()).unwrap_or_default() {
                    want.insert(p.clone(), Origin { job: Some(j.job_id.clone()), cri: false });
                }
            }
            self.slurm.retain(|id, _| report.jobs.iter().any(|j| &j.job_id == id));
        }
        if let Some(dir) = self.cfg.pod_log_dir.as_deref().filter(|d| !d.as_os_str().is_empty()) {
            for (p, uid) in discover::pod_logs(dir, max) {
                let job = report.jobs.iter().find(|j| j.job_id == uid).map(|j| j.job_id.clone());
                want.insert(p, Origin { job, cri: true });
            }
        }
        for g in &self.cfg.globs {
            for p in discover::glob(g, max) {
                want.entry(p).or_insert(Origin { job: None, cri: false });
            }
        }
        while want.len() > max {
            want.pop_last();
        }
        want
    }
}

/// What makes two lines different evidence.
type Key = (
    faultline_proto::EventClass,
    Option<String>,
    Option<u32>,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Collector for TrainLogCollector {
    fn name(&self) -> &'static str {
        "trainlog"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        if !self.cfg.enabled {
            return Ok(());
        }
        // Pod IPs name this node too: NCCL on Kubernetes prints them as its peers' addresses.
        if let Some(h) = &mut report.host {
            for ip in self.pod_ips.get(&self.sched) {
                if !h.addrs.contains(ip) {
                    h.addrs.push(ip.clone());
                }
            }
        }
        let want = self.wanted(report);
        self.tails.retain(|p, _| want.contains_key(p));
        self.cri_partial.retain(|p, _| want.contains_key(p));
        for (p, origin) in want {
            match self.tails.get_mut(&p) {
                Some((_, o)) => *o = origin,
                None => {
                    self.tails.insert(p.clone(), (tail::Tail::at_end(&p), origin));
                }
            }
        }
        let now = faultline_proto::time::now_ms();
        let mut budget = self.cfg.max_bytes_per_cycle as usize;
        let per_file = self.cfg.max_bytes_per_file as usize;
        let n = self.tails.len();
        let start = if n == 0 { 0 } else { self.next_first % n };
        self.next_first = self.next_first.wrapping_add(1);
        let mut found: Vec<(Key, Event)> = Vec::new();
        let mut index: HashMap<Key, usize> = HashMap::new();
        let mut errors = Vec::new();
        let keys: Vec<PathBuf> = self.tails.keys().cloned().collect();
        for k in keys.iter().cycle().skip(start).take(n) {
            if budget == 0 {
                break;
            }
            let Some((t, origin)) = self.tails.get_mut(k) else { continue };
            let partial = self.cri_partial.entry(k.clone()).or_default();
            let mut on_line = |raw: &str| {
                let line: std::borrow::Cow<'_, str> = if origin.cri {
                    match nccl::strip_cri(raw) {
                        Some((l, true)) => std::borrow::Cow::Owned(std::mem::take(partial) + l),
                        Some((l, false)) => {
                            if partial.len() < tail::MAX_LINE_BYTES {
                                partial.push_str(l);
                            }
                            return;
                        }
                        None => std::borrow::Cow::Borrowed(raw),
                    }
                } else {
                    std::borrow::Cow::Borrowed(raw)
                };
                let Some(l) = nccl::parse(&line) else { return };
                let ev = line_event(&l, origin.job.as_deref(), &line, now);
                let key: Key = (
                    ev.class,
                    l.peer.clone(),
                    l.rank,
                    l.seq.or(l.last_completed),
                    l.hca.clone(),
                    l.error.clone(),
                    origin.job.clone(),
                );
                match index.get(&key) {
                    Some(&i) => found[i].1.count += 1,
                    None if found.len() < MAX_EVENTS_PER_CYCLE => {
                        index.insert(key.clone(), found.len());
                        found.push((key, ev));
                    }
                    None => {}
                }
            };
            match t.poll(per_file.min(budget), &mut on_line) {
                Ok(read) => budget = budget.saturating_sub(read),
                Err(e) => errors.push(CollectError::io(format!("reading {}", k.display()), e)),
            }
        }
        for (_, ev) in found {
            // Not urgent: they ride in the report this cycle is building (an urgent wake would only
            // send a second, empty one).
            self.events.push(ev, false);
        }
        CollectError::from_list(errors)
    }
}

/// The event an NCCL/distributed line becomes. The component is the local NIC when the line names
/// it (`hca mlx5_3`); otherwise the node (the analyzer places the edge).
pub fn line_event(l: &NcclLine, job: Option<&str>, line: &str, ts_ms: i64) -> Event {
    let mut ev = Event::new(ts_ms, EventSource::TrainingLog, l.class());
    ev.component = l.hca.as_ref().filter(|h| crate::classify::nccl::is_device_name(h)).map(|h| format!("nic:{h}"));
    ev.pid = l.pid;
    ev.message = truncate(line.trim(), MAX_MESSAGE);
    ev.collective = Some(CollectiveInfo {
        kind: Some(l.kind.as_str().to_string()),
        job: job.map(str::to_string),
        rank: l.rank,
        local_rank: l.local_rank,
        device: l.device,
        hostname: l.hostname.clone(),
        peer: l.peer.clone(),
        peer_port: l.peer_port.map(u32::from),
        local_addr: l.local_gid.clone(),
        remote_addr: l.remote_gid.clone(),
        hca: l.hca.clone(),
        seq: l.seq,
        op: l.op.clone(),
        timeout_ms: l.timeout_ms,
        last_completed: l.last_completed,
        error: l.error.clone(),
        pg: l.pg.clone(),
    });
    ev
}

#[cfg(test)]
mod tests;
