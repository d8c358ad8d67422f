//! Which faults of a world no diagnosis could localize, for a physical reason only: two faults on
//! one component, a target whose node or switch is already silent, or a fault that has no
//! observable consequence in this world (nothing runs where it would show). "The detector misses
//! it" is never a reason here.

use faultline_proto::{ComponentId, FaultClass};

use crate::cluster::Cluster;
use crate::faults::Fault;
use crate::node_state::NicCounter as C;
use crate::scenario::{FaultSpec, Scenario};
use crate::world::{DEFAULT_EPOCH_MS, World};

use super::stopped_throughout;

fn overlap(a: &FaultSpec, b: &FaultSpec, run_s: f64) -> bool {
    let end = |f: &FaultSpec| f.clear_s(run_s).unwrap_or(run_s);
    a.at_s < end(b) && b.at_s < end(a)
}

/// Ranks (job index, rank index) on `host`'s GPU `gpu` that run while the fault is active.
fn ranks_on_gpu(c: &Cluster, f: &FaultSpec, host: &str, gpu: u32, run_s: f64) -> Vec<(usize, usize)> {
    let end = f.clear_s(run_s).unwrap_or(run_s);
    let Some(&n) = c.host_index.get(host) else { return Vec::new() };
    let mut out = Vec::new();
    for (j, rs) in &c.node_jobs[n] {
        let job = &c.jobs[*j];
        // It must run for a while (two minutes) inside the fault's window to show anything.
        let from = (job.start_ms as f64 / 1000.0).max(f.at_s);
        let to = (job.end_ms as f64 / 1000.0).min(end);
        if to - from < 120.0 {
            continue;
        }
        out.extend(rs.iter().filter(|&&r| job.ranks[r].gpu == gpu).map(|&r| (*j, r)));
    }
    out
}

/// Why fault `i` of `sc` cannot be localized in principle, if it cannot.
pub fn undiagnosable(sc: &Scenario, world: &World, i: usize) -> Option<String> {
    let c = &world.cluster;
    let f = &sc.faults[i];
    let run_s = sc.duration_s;
    let host = f.target.host().map(str::to_string);
    for (k, o) in sc.faults.iter().enumerate() {
        if k == i || !overlap(f, o, run_s) {
            continue;
        }
        if o.target == f.target {
            return Some(format!("two faults on one component ({} and {} on {})", f.kind, o.kind, f.target));
        }
        let same_host = host.is_some() && o.target.host() == host.as_deref();
        match o.kind {
            FaultClass::NodeDown if same_host && f.kind != FaultClass::NodeDown => {
                return Some(format!("its node {} is down ({} at {} s)", o.target, o.kind, o.at_s));
            }
            FaultClass::AgentDown if same_host && f.kind != FaultClass::AgentDown => {
                return Some(format!("the agent of {} is down (at {} s): nothing reports it", o.target, o.at_s));
            }
            FaultClass::LeafSwitchDown => {
                if let (ComponentId::Nic { host: h, name }, ComponentId::Switch { name: leaf }) = (&f.target, &o.target)
                {
                    let n = c.host_index.get(h).copied();
                    let k = name.strip_prefix("mlx5_").and_then(|x| x.parse::<u32>().ok());
                    if let (Some(n), Some(k)) = (n, k) {
                        if c.leaf_index(leaf) == Some(c.leaf_of(n, k)) {
                            return Some(format!("its leaf {leaf} is down: the port is dark either way"));
                        }
                    }
                }
            }
            FaultClass::HostFanFailure if same_host && f.kind == FaultClass::GpuThermalThrottle => {
                let fo = Fault::new(k, o, c, sc.seed);
                if let ComponentId::Gpu { index, .. } = &f.target {
                    if fo.p.gpus.contains(index) {
                        return Some(format!(
                            "the fan failure of {} overheats this GPU too: the same symptom",
                            o.target
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let stopped_by_node_down = |j: usize| stopped_throughout(sc, c, j, f, run_s);
    let faults_target_gpu = |what: &str| -> Option<String> {
        let ComponentId::Gpu { host, index } = &f.target else { return None };
        let ranks = ranks_on_gpu(c, f, host, *index, run_s);
        if ranks.is_empty() {
            return Some(format!("no job runs on {} while it lasts: {what}", f.target));
        }
        if ranks.iter().all(|(j, _)| stopped_by_node_down(*j)) {
            return Some(format!("the job on {} is stopped by a node down for as long as it lasts: {what}", f.target));
        }
        None
    };
    match f.kind {
        FaultClass::GpuSlow => {
            if let Some(r) = faults_target_gpu("a slow GPU shows only in a job's steps") {
                return Some(r);
            }
            let ComponentId::Gpu { host, index } = &f.target else { return None };
            let posts = ranks_on_gpu(c, f, host, *index, run_s).iter().any(|(j, _)| c.jobs[*j].progress_api);
            (!posts).then(|| "the job on it posts no step times (no progress API)".to_string())
        }
        FaultClass::GpuSdc => {
            if let Some(r) = faults_target_gpu("corrupted results show only in a job's loss") {
                return Some(r);
            }
            let ComponentId::Gpu { host, index } = &f.target else { return None };
            let posts = ranks_on_gpu(c, f, host, *index, run_s).iter().any(|(j, _)| c.jobs[*j].progress_api);
            (!posts).then(|| "the job on it posts no loss or gradient norm (no progress API)".to_string())
        }
        FaultClass::LeafCongestion => {
            let ComponentId::Switch { name } = &f.target else { return None };
            let leaf = c.leaf_index(name)?;
            let busy = c.jobs.iter().enumerate().any(|(ji, j)| {
                !stopped_throughout(sc, c, ji, f, run_s)
                    && j.multi_node
                    && (j.start_ms as f64 / 1000.0) < f.clear_s(run_s).unwrap_or(run_s)
                    && f.at_s + 120.0 < j.end_ms as f64 / 1000.0
                    && j.ranks.iter().any(|r| c.leaf_of(r.node, r.nic) == leaf)
            });
            (!busy).then(|| format!("no multi-node job's traffic crosses {name}: congestion needs traffic"))
        }
        FaultClass::JobHang => {
            let ComponentId::Job { id } = &f.target else { return None };
            let j = &c.jobs[*c.job_index.get(id)?];
            let lasts = f.clear_s(run_s).unwrap_or(run_s) - f.at_s;
            // Its NVLink bytes go flat when it spans several GPUs; a one-GPU job has no peer to stop
            // talking to.
            (!j.multi_node && j.ranks.len() < 2 && !j.progress_api && lasts < world.behaviour.nccl_timeout_s).then(
                || {
                    "a hung one-GPU job without progress reports only lets its GPU go idle, as a job that \
                 computes on the CPU does; it ends before the NCCL watchdog would kill it"
                        .to_string()
                },
            )
        }
        FaultClass::HostCpuContention => {
            // Contention is a fault only where a job's ranks starve for CPU: a busy host with no job
            // on it is just a busy host.
            let n = *c.host_index.get(host.as_deref()?)?;
            let end = f.clear_s(run_s).unwrap_or(run_s);
            let runs = c.node_jobs[n].iter().any(|(j, _)| {
                let job = &c.jobs[*j];
                let from = (job.start_ms as f64 / 1000.0).max(f.at_s);
                (job.end_ms as f64 / 1000.0).min(end) - from >= 120.0
            });
            (!runs).then(|| "no job runs on the node while it lasts: nothing to contend with".into())
        }
        FaultClass::AgentDown => {
            // Silence alone cannot tell a dead agent from a dead node: only a job that spans this node
            // and others (its peers keep moving bytes, or posting steps) shows the node still works.
            let n = *c.host_index.get(host.as_deref()?)?;
            let end = f.clear_s(run_s).unwrap_or(run_s);
            let spans = c.node_jobs[n].iter().any(|(j, _)| {
                let job = &c.jobs[*j];
                job.multi_node && (job.start_ms as f64 / 1000.0) < end && f.at_s + 60.0 < job.end_ms as f64 / 1000.0
            });
            (!spans).then(|| "no multi-node job spans the node: a silent agent looks exactly like a dead node".into())
        }
        FaultClass::JobCrash => {
            let ComponentId::Job { id } = &f.target else { return None };
            let j = &c.jobs[*c.job_index.get(id)?];
            (j.launcher == crate::realism::Launcher::Torchrun && !j.progress_api).then(|| {
                "a torchrun job without progress reports: no scheduler state, no exit code, its processes                  just end as a finished job's do"
                    .to_string()
            })
        }
        FaultClass::CableBitErrors => {
            let ComponentId::Nic { host, name } = &f.target else { return None };
            let n = *c.host_index.get(host)?;
            let k: usize = name.strip_prefix("mlx5_")?.parse().ok()?;
            let nd = world.nodes[n].nics.get(k)?;
            let stuck = |x: C, name: &str| faultline_proto::counters::is_saturated(name, nd.c[x as usize]);
            let used =
                c.jobs.iter().any(|j| j.multi_node && j.ranks.iter().any(|r| r.node == n && r.nic as usize == k));
            let blind = stuck(C::SymbolError, "symbol_error")
                && stuck(C::PortRcvErrors, "port_rcv_errors")
                && stuck(C::LocalLinkIntegrityErrors, "local_link_integrity_errors");
            (blind && !used)
                .then(|| "its error counters already sit at their maximum and no job's traffic uses it".into())
        }
        FaultClass::SwitchSilentDrop | FaultClass::NicConnectionResets | FaultClass::GpuCollectiveCorruption => {
            super::judge_collective::undiagnosable(sc, world, i)
        }
        _ => None,
    }
}

/// Undiagnosable reasons for every fault of a scenario (None: diagnosable).
pub fn all(sc: &Scenario) -> Vec<Option<String>> {
    let world = World::new(sc, DEFAULT_EPOCH_MS);
    (0..sc.faults.len()).map(|i| undiagnosable(sc, &world, i)).collect()
}
