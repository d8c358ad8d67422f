//! The physical limits of collective-communication evidence, for the faults only it shows
//! (switch_silent_drop, nic_connection_resets, gpu_collective_corruption): NCCL logs failing
//! edges, never healthy ones, so an element is told from its neighbours only when the failing
//! edges outnumber what any one of them explains, and a NaN check names a GPU only where a job runs
//! it.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::{ComponentId, FaultClass};

use crate::cluster::{Cluster, Job};
use crate::faults::Fault;
use crate::faults::nan_check;
use crate::scenario::{FaultSpec, Scenario};
use crate::step::ring_peers;
use crate::world::World;

/// Failures a silent drop must be expected to cause while it lasts for two distinct failing edges
/// to show (Poisson with this mean: at least two events with probability 0.91).
const MIN_EXPECTED_FAILURES: f64 = 4.0;
/// The analyzer's share of failing edges an element must touch to be the common one
/// (`detect::nccl::COMMON_FRACTION`).
const COMMON_FRACTION: f64 = 0.75;

/// Whether job `j` runs (and is not stopped by another fault) for two minutes inside `f`'s window.
fn runs_through(sc: &Scenario, c: &Cluster, j: usize, f: &FaultSpec, run_s: f64) -> bool {
    let job = &c.jobs[j];
    let end = f.clear_s(run_s).unwrap_or(run_s);
    let from = (job.start_ms as f64 / 1000.0).max(f.at_s);
    let to = (job.end_ms as f64 / 1000.0).min(end);
    to - from >= 120.0 && !super::stopped_throughout(sc, c, j, f, run_s)
}

/// The rank-level ring edges of `job` for which `hit(rank)` holds at one end, as node pairs.
fn edges(job: &Job, hit: &dyn Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for a in 0..job.ranks.len() {
        for b in ring_peers(job, a) {
            if (hit(a) || hit(b)) && seen.insert((a.min(b), a.max(b))) {
                out.push((job.ranks[a].node, job.ranks[b].node));
            }
        }
    }
    out
}

/// Whether one node is on so many of `edges` that the analyzer would blame it (or its NIC).
fn node_dominates(edges: &[(usize, usize)]) -> bool {
    let need = (COMMON_FRACTION * edges.len() as f64).ceil() as usize;
    let mut per: BTreeMap<usize, (usize, BTreeSet<usize>)> = BTreeMap::new();
    for &(a, b) in edges {
        for (me, other) in [(a, b), (b, a)] {
            let s = per.entry(me).or_default();
            s.0 += 1;
            s.1.insert(other);
        }
    }
    per.values().any(|(c, peers)| *c >= need && peers.len() >= 2)
}

/// Why fault `i` (one of the three kinds) cannot be localized, if it cannot; `None` for other kinds.
pub fn undiagnosable(sc: &Scenario, world: &World, i: usize) -> Option<String> {
    let c = &world.cluster;
    let f = &sc.faults[i];
    let run_s = sc.duration_s;
    match (f.kind, &f.target) {
        (FaultClass::SwitchSilentDrop, ComponentId::Switch { name }) => {
            let Some(leaf) = c.leaf_index(name) else { return Some(format!("{name} is no leaf")) };
            let mut best = None;
            for (j, job) in c.jobs.iter().enumerate() {
                if !job.multi_node || !runs_through(sc, c, j, f, run_s) {
                    continue;
                }
                let on_leaf = |r: usize| c.leaf_of(job.ranks[r].node, job.ranks[r].nic) == leaf;
                let es = edges(job, &on_leaf);
                let leaf_nodes: BTreeSet<usize> =
                    job.ranks.iter().enumerate().filter(|(r, _)| on_leaf(*r)).map(|(_, x)| x.node).collect();
                // Queue pairs fail now and then (once per `period_ms` per rank pair): the window
                // must hold a few failures for two distinct edges to show.
                let fo = Fault::new(i, f, c, sc.seed);
                let end = f.clear_s(run_s).unwrap_or(run_s).min(job.end_ms as f64 / 1000.0);
                let lasts_ms = (end - f.at_s.max(job.start_ms as f64 / 1000.0)) * 1000.0;
                let expected = es.len() as f64 * lasts_ms / fo.p.period_ms.max(1) as f64;
                if es.len() >= 2 && leaf_nodes.len() >= 2 && !node_dominates(&es) {
                    if expected >= MIN_EXPECTED_FAILURES {
                        return None;
                    }
                    best = Some(true);
                } else {
                    best = best.or(Some(false));
                }
            }
            Some(match best {
                None => format!("no multi-node job's traffic crosses {name} while it drops: nothing fails"),
                Some(true) => format!(
                    "too few queue pairs through {name} fail while it lasts (fewer than {MIN_EXPECTED_FAILURES} expected): NCCL logs only failing edges"
                ),
                Some(false) => format!(
                    "the failing edges through {name} all touch one node of it, or one edge only: NCCL logs only failing edges, so the leaf cannot be told from that node"
                ),
            })
        }
        (FaultClass::NicConnectionResets, ComponentId::Nic { host, name }) => {
            let n = *c.host_index.get(host)?;
            let k: u32 = name.strip_prefix("mlx5_")?.parse().ok()?;
            let mut used = false;
            for (j, job) in c.jobs.iter().enumerate() {
                let uses = |r: usize| job.ranks[r].node == n && job.ranks[r].nic == k;
                if !job.multi_node || !(0..job.ranks.len()).any(uses) || !runs_through(sc, c, j, f, run_s) {
                    continue;
                }
                used = true;
                let peers: BTreeSet<usize> = (0..job.ranks.len())
                    .filter(|&r| uses(r))
                    .flat_map(|r| ring_peers(job, r))
                    .map(|p| job.ranks[p].node)
                    .collect();
                if peers.len() >= 2 {
                    return None;
                }
            }
            Some(if used {
                format!(
                    "{host}/{name} talks to one peer node only: a single failing edge cannot tell its two ends apart"
                )
            } else {
                format!("no multi-node job's traffic uses {host}/{name}: no connection to reset")
            })
        }
        (FaultClass::GpuCollectiveCorruption, ComponentId::Gpu { host, index }) => {
            let n = *c.host_index.get(host)?;
            let mut runs = false;
            for (j, job) in c.jobs.iter().enumerate() {
                // A one-rank job runs no collective to corrupt or check.
                if job.ranks.len() < 2
                    || !job.ranks.iter().any(|r| r.node == n && r.gpu == *index)
                    || !runs_through(sc, c, j, f, run_s)
                {
                    continue;
                }
                runs = true;
                if nan_check(sc.seed, world.behaviour.nan_check_share, job) {
                    return None;
                }
            }
            Some(if runs {
                "no job on it runs PyTorch's NaN check: the corrupted sum reaches every rank alike and names no GPU (only a check-before-delivery test would)".to_string()
            } else {
                format!("no job of several ranks runs on {host}/gpu{index} while it lasts: no collective to corrupt")
            })
        }
        _ => None,
    }
}
