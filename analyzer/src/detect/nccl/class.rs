//! Which fault a localized collective-communication culprit is, given what the counters say about
//! it, and the GPU PyTorch's NaN check names.
//!
//! - A NIC at the centre of the failing edges: if its port went down (link-down transitions,
//!   `link_downed`, carrier), it is the link (`nic_down`, or `nic_flap` when it went down more than
//!   once); if its error counters count (symbol errors, receive errors), it is the cable
//!   (`cable_bit_errors`); with nothing in the counters, the NIC resets its connections without a
//!   symbol error (`nic_connection_resets`).
//! - A leaf: if ports cabled to it went down, the leaf went down (`leaf_switch_down`); with no
//!   counter on any of them moving, it drops packets silently (`switch_silent_drop`).
//! - A node or a rail: no class (the node's own detectors or the rail's leaf say which).
//! - PyTorch's NaN check (`TORCH_NCCL_NAN_CHECK=1`) failing on a rank: the GPU of that rank poisoned
//!   a collective's input (`gpu_collective_corruption`), whatever NVML says.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::{ComponentId, EventClass, FaultClass};

use super::{COMM_HOLD_MS, CommObs, Culprit, Edge};
use crate::detect::nic::{ERROR_COUNTERS, FLAP_MIN_DOWNS, FLAP_WINDOW_MS, NIC_ERR_MIN};
use crate::detect::{Symptom, SymptomKind};
use crate::state::{JobState, NicState, NodeState};

/// The `error` the agent's NCCL classifier gives a failed NaN-check assertion (agent
/// `classify::nccl::NAN_CHECK_FAILED`).
pub const NAN_CHECK_FAILED: &str = "nan_check_failed";

/// What a NIC's counters say over the evidence's window: the link-level class they explain, if any.
pub fn nic_counter_class(n: &NicState, now: i64) -> Option<FaultClass> {
    let since = now - COMM_HOLD_MS.max(FLAP_WINDOW_MS);
    let downs = n.downs.iter().filter(|t| **t > now - FLAP_WINDOW_MS).count();
    let downed = n.counter("link_downed").map(|c| c.increases_since(since)).unwrap_or(0);
    if downs >= FLAP_MIN_DOWNS || downed >= FLAP_MIN_DOWNS {
        return Some(FaultClass::NicFlap);
    }
    if n.down_since.is_some() || downs > 0 || downed > 0 || n.carrier_changes.sum_since(since) > 0 {
        return Some(FaultClass::NicDown);
    }
    let errors: u64 = ERROR_COUNTERS.iter().filter_map(|c| n.counter(c)).map(|c| c.sum_since(since)).sum();
    (errors >= NIC_ERR_MIN).then_some(FaultClass::CableBitErrors)
}

/// Distinct peer nodes whose edges through one NIC fail that name it without a simultaneous episode.
pub const MIN_PEERS_AT_ONCE: usize = 3;

/// Distinct other nodes of the edges with an end at NIC `name` of `host`.
fn nic_peers(edges: &[Edge], host: &str, name: &str) -> usize {
    let at = |e: &super::End| e.node == host && e.nic.as_deref() == Some(name);
    let peers: BTreeSet<&str> = edges
        .iter()
        .filter_map(|e| {
            if at(&e.a) {
                Some(e.b.node.as_str())
            } else if at(&e.b) {
                Some(e.a.node.as_str())
            } else {
                None
            }
        })
        .collect();
    peers.len()
}

/// Lines of one NIC this close together belong to one episode.
pub const EPISODE_WINDOW_MS: i64 = 1_000;

/// Whether NIC `name` of `host` broke its connections to several peers at once: its own lines
/// towards two or more peers within `EPISODE_WINDOW_MS`. A NIC that resets tears down every queue
/// pair it carries together; a path that drops silently breaks whichever flow hashes onto it, one
/// at a time, so two failing edges that merely share a NIC do not tell it from its leaf.
pub fn at_once(obs: &[(&str, &CommObs)], host: &str, name: &str) -> bool {
    let mut lines: Vec<(i64, &str)> = obs
        .iter()
        .filter(|(node, o)| *node == host && o.info.hca.as_deref() == Some(name))
        .filter_map(|(_, o)| Some((o.ts, o.info.peer.as_deref().or(o.info.remote_addr.as_deref())?)))
        .collect();
    lines.sort_unstable();
    lines.iter().enumerate().any(|(k, (t, peer))| {
        lines[k + 1..].iter().take_while(|(u, _)| u - t <= EPISODE_WINDOW_MS).any(|(_, p)| p != peer)
    })
}

/// The fault class of a localized culprit. `job_nodes`: the nodes of the job whose edges these are
/// (a leaf's ports are looked at there); `obs`: the evidence the edges came from; `edges`: the
/// failing edges.
pub fn culprit_class(
    c: &Culprit,
    nodes: &BTreeMap<String, NodeState>,
    job_nodes: &BTreeSet<&str>,
    obs: &[(&str, &CommObs)],
    edges: &[Edge],
    leaf_of: &dyn Fn(&str, &str) -> Option<String>,
    now: i64,
) -> Option<FaultClass> {
    match c {
        Culprit::Nic { host, name } => {
            let counters = nodes.get(host).and_then(|n| n.nics.get(name)).and_then(|n| nic_counter_class(n, now));
            match counters {
                Some(c) => Some(c),
                // No counter explains it: the NIC resets its connections, when it broke several at
                // once or peers on three nodes fail through it.
                None => (at_once(obs, host, name) || nic_peers(edges, host, name) >= MIN_PEERS_AT_ONCE)
                    .then_some(FaultClass::NicConnectionResets),
            }
        }
        Culprit::Leaf { name } => {
            let went_down = job_nodes.iter().filter_map(|h| nodes.get_key_value(*h)).any(|(h, n)| {
                n.nics.iter().any(|(nic, s)| {
                    leaf_of(h, nic).as_deref() == Some(name.as_str())
                        && matches!(nic_counter_class(s, now), Some(FaultClass::NicDown | FaultClass::NicFlap))
                })
            });
            Some(if went_down { FaultClass::LeafSwitchDown } else { FaultClass::SwitchSilentDrop })
        }
        Culprit::Node { .. } | Culprit::Rail { .. } | Culprit::Edge { .. } => None,
    }
}

/// The GPUs PyTorch's NaN check named in `obs` (node, observation): the rank's GPU, through the
/// job's placement. A line that names no rank names no GPU.
pub fn nan_checks(job: &JobState, obs: &[(&str, &CommObs)], out: &mut Vec<Symptom>) {
    let mut seen: BTreeMap<ComponentId, (i64, u64, u32)> = BTreeMap::new();
    for (node, o) in obs {
        if o.class != EventClass::NcclError || o.info.error.as_deref() != Some(NAN_CHECK_FAILED) {
            continue;
        }
        let Some(rank) = o.info.rank else { continue };
        let Some(r) = job.ranks.get(&rank) else { continue };
        let Some(&gpu) = r.gpus.first() else { continue };
        let host = if r.node.is_empty() { node.to_string() } else { r.node.clone() };
        let e = seen.entry(ComponentId::Gpu { host, index: gpu }).or_insert((o.ts, 0, rank));
        e.0 = e.0.min(o.ts);
        e.1 += o.count;
    }
    for (gpu, (onset, lines, rank)) in seen {
        out.push(
            Symptom::new(
                gpu.clone(),
                SymptomKind::CollectiveNanCheck,
                onset,
                format!(
                    "job {}: PyTorch's NaN check failed on rank {rank} ({lines} line(s)): a collective's input on {gpu} held NaN while NVML reports nothing",
                    job.id
                ),
            )
            .class(FaultClass::GpuCollectiveCorruption)
            .critical()
            .value(lines as f64),
        );
    }
}
