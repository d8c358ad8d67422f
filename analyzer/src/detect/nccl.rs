//! Collective-communication evidence: what NCCL and PyTorch distributed said in the training logs
//! (the agent's `training_log` events with `CollectiveInfo`), turned into failing edges between
//! ranks, the element those edges share, and the rank the job waits on.
//!
//! - **Edges.** Each IB completion error or peer connection error is an edge from the reporting
//!   node (and its NIC: the line's `hca`, its local GID, or the rank's NIC) to the peer. The peer is
//!   found through the inventory: the remote GID of a RoCE line is the peer NIC's own address; the
//!   peer address is the peer's socket, which names its node (for IB completions it is NCCL's
//!   out-of-band interface, so it does not name the NIC that carried the data).
//! - **Common element.** A NIC, a node, a leaf (through the topology) or a rail (the same NIC name
//!   on several nodes) that most edges touch. A single edge cannot tell its two ends apart: both are
//!   suspected, weakly, and the symptom says so.
//! - **Laggard.** Within one process group, the rank whose collective sequence number is lowest while
//!   others are further on is the one the job waits on.
//!
//! Which fault class a culprit is, from the counters of the element, and the GPU PyTorch's NaN check
//! names: `nccl/class.rs`.
//!
//! Pure: the engine hands in the job, the nodes and a leaf lookup; `check` adds symptoms.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use faultline_proto::{ComponentId, EventClass};

use super::{EVENT_HOLD_MS, Symptom, SymptomKind};
pub use crate::state::comm::{CommObs, MAX_COMM_PER_NODE};
use crate::state::{JobState, NodeState};

pub mod class;

/// Collective evidence older than this no longer counts: the hold of any instant event.
pub const COMM_HOLD_MS: i64 = EVENT_HOLD_MS;
/// An element is the common one when it touches at least this share of the failing edges. Not all:
/// once a queue pair fails NCCL tears down others, and a few collateral edges must not hide it.
pub const COMMON_FRACTION: f64 = 0.75;
/// Evidence more than this older than the job's newest line belongs to an earlier burst and is left
/// out of the edges: NCCL's errors come in bursts (a broken queue pair tears the communicator down
/// within seconds; recurring faults fail again within minutes), and two faults a few minutes apart
/// in one job must not be read as one element.
pub const COMM_BURST_MS: i64 = 120_000;
/// What a single failing edge is worth for each of its ends: it cannot tell them apart.
pub const SINGLE_EDGE_CONFIDENCE: f64 = 0.3;

/// One end of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct End {
    pub node: String,
    pub nic: Option<String>,
}

impl End {
    fn component(&self) -> ComponentId {
        match &self.nic {
            Some(n) => ComponentId::Nic { host: self.node.clone(), name: n.clone() },
            None => ComponentId::Node { host: self.node.clone() },
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.nic {
            Some(n) => write!(f, "{}/{n}", self.node),
            None => f.write_str(&self.node),
        }
    }
}

/// Address → node and NIC, from what every node reported about its NICs.
#[derive(Debug, Default)]
pub struct AddrBook {
    addrs: HashMap<String, End>,
    nodes: BTreeSet<String>,
}

/// An address in one canonical form (`::ffff:a.b.c.d` is `a.b.c.d`, scope dropped); host names as
/// given, lower-case.
fn canonical(a: &str) -> String {
    let a = a.split('%').next().unwrap_or(a).trim_matches(['[', ']']);
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_else(|| v6.to_string()),
        Ok(ip) => ip.to_string(),
        Err(_) => a.to_ascii_lowercase(),
    }
}

/// The address book of the whole fleet, built when a job first has collective evidence to resolve
/// and kept until some node's addresses change (`State::addr_gen`). Building it walks every node's
/// addresses: at 12,500 nodes, doing that for each check of each affected job every second of a
/// fault was most of the analyzer's tick time.
#[derive(Default)]
pub struct BookCache(Mutex<Option<(u64, Arc<AddrBook>)>>);

impl BookCache {
    /// The book for `nodes` as of address generation `generation`, rebuilt only when that moved.
    pub fn get(&self, nodes: &BTreeMap<String, NodeState>, generation: u64) -> Arc<AddrBook> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, b)) = held.as_ref()
            && *g == generation
        {
            return Arc::clone(b);
        }
        let b = Arc::new(AddrBook::of_nodes(nodes));
        *held = Some((generation, Arc::clone(&b)));
        b
    }
}

impl AddrBook {
    /// The book of every node in the state: its NICs' and its host's addresses.
    pub fn of_nodes(nodes: &BTreeMap<String, NodeState>) -> Self {
        AddrBook::new(nodes.iter().map(|(k, n)| (k.as_str(), &n.nic_addrs, host_addrs(n))))
    }

    /// From each node's NIC addresses and its host's addresses (which name the node only; a NIC's
    /// own address names the NIC too).
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, Vec<String>>, &'a [String])>,
    ) -> Self {
        let mut b = AddrBook::default();
        // An address more than one node reports (docker0's 172.17.0.1 on every host) names none.
        let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (node, nics, host) in nodes {
            b.nodes.insert(node.to_string());
            for a in host {
                let c = canonical(a);
                owners.entry(c.clone()).or_default().insert(node.to_string());
                b.addrs.entry(c).or_insert(End { node: node.to_string(), nic: None });
            }
            for (nic, addrs) in nics {
                for a in addrs {
                    let c = canonical(a);
                    owners.entry(c.clone()).or_default().insert(node.to_string());
                    b.addrs.insert(c, End { node: node.to_string(), nic: Some(nic.clone()) });
                }
            }
        }
        b.addrs.retain(|a, _| owners.get(a).is_none_or(|o| o.len() == 1));
        b
    }

    /// The node and NIC an address belongs to; a host name gives the node (its first label may be
    /// the node's name, `node2.cluster` → `node2`).
    pub fn resolve(&self, peer: &str) -> Option<End> {
        let c = canonical(peer);
        if let Some(e) = self.addrs.get(&c) {
            return Some(e.clone());
        }
        if c.parse::<IpAddr>().is_ok() {
            return None;
        }
        let first = c.split('.').next().unwrap_or(&c);
        self.nodes
            .iter()
            .find(|n| n.eq_ignore_ascii_case(&c) || n.eq_ignore_ascii_case(first) || n.split('.').next() == Some(first))
            .map(|n| End { node: n.clone(), nic: None })
    }
}

/// A failing edge: two ends, how many lines showed it, and who reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub a: End,
    pub b: End,
    pub lines: u64,
    /// Ranks that reported it (when their lines named them).
    pub ranks: BTreeSet<u32>,
}

/// What the edges say.
#[derive(Debug, Clone, PartialEq)]
pub enum Culprit {
    Nic {
        host: String,
        name: String,
    },
    Node {
        host: String,
    },
    Leaf {
        name: String,
    },
    /// The same NIC name on several nodes: a rail (its plane of the fabric).
    Rail {
        nic: String,
    },
    /// One edge only: either end.
    Edge {
        a: End,
        b: End,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Localized {
    pub culprit: Culprit,
    /// 0–1: the share of edges it explains, weighed by how many distinct peers saw it.
    pub confidence: f64,
    pub edges: usize,
    pub covered: usize,
    pub reason: String,
}

/// The rank the others wait on.
#[derive(Debug, Clone, PartialEq)]
pub struct Laggard {
    pub pg: Option<String>,
    pub rank: u32,
    pub node: Option<String>,
    /// The collective it is in (or the next it has to complete).
    pub seq: u64,
    /// The furthest any other rank of the group got.
    pub ahead: u64,
    /// Ranks compared.
    pub ranks: usize,
}

/// Is `o` an error between two parties (it names a peer)?
fn is_edge_evidence(o: &CommObs) -> bool {
    matches!(o.class, EventClass::IbCompletionError | EventClass::NcclPeerConnection)
        && (o.info.peer.is_some() || o.info.remote_addr.is_some())
}

/// A node's host-level addresses, as last reported.
pub fn host_addrs(n: &NodeState) -> &[String] {
    n.host.as_ref().map(|h| h.addrs.as_slice()).unwrap_or_default()
}

/// The failing edges in `obs` (node, observation), through `book`; `rank_nic` gives a rank's NIC
/// where a line names its rank but not its NIC. Peers that resolve to nothing are returned apart.
pub fn edges(
    obs: &[(&str, &CommObs)],
    book: &AddrBook,
    rank_nic: &dyn Fn(u32) -> Option<String>,
) -> (Vec<Edge>, BTreeSet<String>) {
    let mut out: BTreeMap<(End, End), Edge> = BTreeMap::new();
    let mut unresolved = BTreeSet::new();
    for (node, o) in obs.iter().filter(|(_, o)| is_edge_evidence(o)) {
        let i = &o.info;
        let local_nic = i
            .hca
            .clone()
            .or_else(|| i.local_addr.as_deref().and_then(|a| book.resolve(a)).filter(|e| e.node == *node)?.nic)
            .or_else(|| i.rank.and_then(rank_nic));
        let local = End { node: node.to_string(), nic: local_nic };
        let by_gid = i.remote_addr.as_deref().and_then(|a| book.resolve(a));
        let remote = by_gid.or_else(|| {
            let e = book.resolve(i.peer.as_deref()?)?;
            // An IB completion's peer address is NCCL's out-of-band socket: the node, not the NIC.
            let socket_path = i.kind.as_deref().is_some_and(|k| k == "peer_reset" || k == "connect_failed");
            Some(if socket_path { e } else { End { node: e.node, nic: None } })
        });
        let Some(remote) = remote else {
            unresolved.insert(i.peer.clone().or(i.remote_addr.clone()).unwrap_or_default());
            continue;
        };
        if remote.node == local.node {
            continue;
        }
        let (a, b) = if local <= remote { (local, remote) } else { (remote, local) };
        let e = out.entry((a.clone(), b.clone())).or_insert(Edge { a, b, lines: 0, ranks: BTreeSet::new() });
        e.lines += o.count;
        e.ranks.extend(i.rank);
    }
    // The same pair seen with and without a NIC on one end is one edge: keep the precise one.
    let mut merged: Vec<Edge> = Vec::new();
    for e in out.into_values() {
        let same_nodes = |m: &Edge| m.a.node == e.a.node && m.b.node == e.b.node;
        let compatible = |x: &End, y: &End| x.nic.is_none() || y.nic.is_none() || x.nic == y.nic;
        match merged.iter_mut().find(|m| same_nodes(m) && compatible(&m.a, &e.a) && compatible(&m.b, &e.b)) {
            Some(m) => {
                m.lines += e.lines;
                m.ranks.extend(e.ranks.iter().copied());
                if m.a.nic.is_none() {
                    m.a.nic = e.a.nic.clone();
                }
                if m.b.nic.is_none() {
                    m.b.nic = e.b.nic.clone();
                }
            }
            None => merged.push(e),
        }
    }
    (merged, unresolved)
}

/// Confidence that an element touching `covered` of `n` edges, towards `peers` distinct other
/// nodes, is the fault: more distinct peers that all fail through it make the others' innocence
/// likelier (two peers 0.7, three 0.8, four or more 0.85), scaled by the share explained.
fn confidence(covered: usize, n: usize, peers: usize) -> f64 {
    let base = match peers {
        0 | 1 => SINGLE_EDGE_CONFIDENCE,
        2 => 0.7,
        3 => 0.8,
        _ => 0.85,
    };
    base * covered as f64 / n.max(1) as f64
}

/// The element the failing edges share. `leaf_of(node, nic)` is the leaf a NIC is cabled to (`nic` empty:
/// the leaf of the whole node, where it has one).
pub fn localize(edges: &[Edge], leaf_of: &dyn Fn(&str, &str) -> Option<String>) -> Option<Localized> {
    let n = edges.len();
    if n == 0 {
        return None;
    }
    if n == 1 {
        let e = &edges[0];
        return Some(Localized {
            culprit: Culprit::Edge { a: e.a.clone(), b: e.b.clone() },
            confidence: SINGLE_EDGE_CONFIDENCE,
            edges: 1,
            covered: 1,
            reason: format!(
                "one failing edge only ({} ↔ {}): either end, or the path between them, may be at fault",
                e.a, e.b
            ),
        });
    }
    let need = (COMMON_FRACTION * n as f64).ceil() as usize;
    // A node (and within it, a NIC) on most edges, towards several peers.
    let mut per_node: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for e in edges {
        for (me, other) in [(&e.a, &e.b), (&e.b, &e.a)] {
            let s = per_node.entry(me.node.as_str()).or_default();
            s.0 += 1;
            s.1.insert(other.node.as_str());
        }
    }
    let best = per_node.iter().max_by_key(|(name, (c, peers))| (*c, peers.len(), std::cmp::Reverse(**name)));
    if let Some((&host, (c, peers))) = best
        && *c >= need
        && peers.len() >= 2
    {
        let mut per_nic: BTreeMap<&str, usize> = BTreeMap::new();
        for e in edges {
            for end in [&e.a, &e.b] {
                if end.node == host
                    && let Some(nic) = &end.nic
                {
                    *per_nic.entry(nic.as_str()).or_default() += 1;
                }
            }
        }
        let conf = confidence(*c, n, peers.len());
        let peer_list = peers.iter().copied().collect::<Vec<_>>().join(", ");
        if let Some((nic, k)) = per_nic.iter().max_by_key(|(_, k)| **k)
            && *k >= (COMMON_FRACTION * *c as f64).ceil() as usize
        {
            return Some(Localized {
                culprit: Culprit::Nic { host: host.to_string(), name: nic.to_string() },
                confidence: conf,
                edges: n,
                covered: *k,
                reason: format!(
                    "{k} of {n} failing edges go through {host}/{nic}, towards {} peers ({peer_list})",
                    peers.len()
                ),
            });
        }
        return Some(Localized {
            culprit: Culprit::Node { host: host.to_string() },
            confidence: conf * 0.9,
            edges: n,
            covered: *c,
            reason: format!(
                "{c} of {n} failing edges touch {host}, towards {} peers ({peer_list}), over no one NIC of it",
                peers.len()
            ),
        });
    }
    // A leaf: edges from several of its nodes, to peers elsewhere.
    let mut per_leaf: BTreeMap<String, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for e in edges {
        let mut leaves = BTreeSet::new();
        for end in [&e.a, &e.b] {
            // An end whose NIC no line named is asked with an empty NIC name (see `check`).
            if let Some(l) = leaf_of(&end.node, end.nic.as_deref().unwrap_or("")) {
                leaves.insert((l, end.node.as_str()));
            }
        }
        let mut counted = BTreeSet::new();
        for (l, node) in leaves {
            let s = per_leaf.entry(l.clone()).or_default();
            s.1.insert(node);
            if counted.insert(l) {
                s.0 += 1;
            }
        }
    }
    // The leaf must be the only one that explains this many: edges between two leaves cross both,
    // and until an edge within one of them fails the two cannot be told apart.
    let key = |(c, nodes): &(usize, BTreeSet<&str>)| (*c, nodes.len());
    let best_leaf = per_leaf.iter().max_by_key(|(_, v)| key(v));
    let tied = best_leaf.is_some_and(|(l, v)| per_leaf.iter().any(|(o, w)| o != l && key(w) == key(v)));
    if let Some((leaf, (c, nodes))) = best_leaf
        && !tied
        && *c >= need
        && nodes.len() >= 2
    {
        return Some(Localized {
            culprit: Culprit::Leaf { name: leaf.clone() },
            confidence: confidence(*c, n, nodes.len()),
            edges: n,
            covered: *c,
            reason: format!(
                "{c} of {n} failing edges pass through leaf {leaf}, from {} of its nodes ({}), and no one node explains them",
                nodes.len(),
                nodes.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    // A rail: the same NIC name on most edges, on several nodes.
    let mut per_rail: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for e in edges {
        let mut names = BTreeSet::new();
        for end in [&e.a, &e.b] {
            if let Some(nic) = &end.nic {
                names.insert((nic.as_str(), end.node.as_str()));
            }
        }
        let mut counted = BTreeSet::new();
        for (nic, node) in names {
            let s = per_rail.entry(nic).or_default();
            s.1.insert(node);
            if counted.insert(nic) {
                s.0 += 1;
            }
        }
    }
    if let Some((nic, (c, nodes))) = per_rail.iter().max_by_key(|(_, (c, nodes))| (*c, nodes.len()))
        && *c >= need
        && nodes.len() >= 3
    {
        return Some(Localized {
            culprit: Culprit::Rail { nic: nic.to_string() },
            confidence: confidence(*c, n, nodes.len()) * 0.8,
            edges: n,
            covered: *c,
            reason: format!(
                "{c} of {n} failing edges use {nic} on {} nodes and no one node or leaf explains them: the {nic} rail",
                nodes.len()
            ),
        });
    }
    None
}

/// The lagging rank of each process group: lowest position (the collective a rank is in, or the
/// one after its last completed) while another rank of the group is further on.
pub fn laggards(obs: &[(&str, &CommObs)]) -> Vec<Laggard> {
    // (pg) → rank → (position, node)
    let mut groups: BTreeMap<Option<String>, BTreeMap<u32, (u64, String)>> = BTreeMap::new();
    for (node, o) in obs {
        let i = &o.info;
        let Some(rank) = i.rank else { continue };
        let pos = match (i.seq, i.last_completed) {
            (_, Some(done)) => done.saturating_add(1),
            (Some(s), None) if o.class == EventClass::NcclTimeout => s,
            _ => continue,
        };
        let g = groups.entry(i.pg.clone()).or_default();
        let slot = g.entry(rank).or_insert((pos, node.to_string()));
        if pos > slot.0 {
            *slot = (pos, node.to_string());
        }
    }
    let mut out = Vec::new();
    for (pg, ranks) in groups {
        if ranks.len() < 2 {
            continue;
        }
        let ahead = ranks.values().map(|(p, _)| *p).max().unwrap_or(0);
        let Some((&rank, (pos, node))) = ranks.iter().min_by_key(|(r, (p, _))| (*p, **r)) else { continue };
        if *pos < ahead {
            out.push(Laggard { pg, rank, node: Some(node.clone()), seq: *pos, ahead, ranks: ranks.len() });
        }
    }
    out
}

/// The job's collective evidence, from the nodes it runs on (its logs are read there): observations
/// tagged with this job, or with no job. Only those newer than `COMM_HOLD_MS`. Visits the job's
/// nodes only, so a check costs what the job is, not what the cluster is.
pub fn job_obs<'a>(job: &JobState, nodes: &'a BTreeMap<String, NodeState>, now_ms: i64) -> Vec<(&'a str, &'a CommObs)> {
    let mut names: BTreeSet<&str> = job.by_node.keys().map(String::as_str).collect();
    names.extend(job.ranks.values().map(|r| r.node.as_str()));
    let mut out = Vec::new();
    for (name, n) in names.into_iter().filter_map(|k| nodes.get_key_value(k)) {
        for o in n.comm.iter().filter(|o| now_ms - o.ts <= COMM_HOLD_MS) {
            if o.info.job.as_deref().is_none_or(|j| j == job.id) {
                out.push((name.as_str(), o));
            }
        }
    }
    out
}

/// Symptoms from the job's collective evidence: the common element of its failing edges (or both
/// ends of a lone edge, weakly), and its lagging rank.
pub fn check(
    job: &JobState,
    nodes: &BTreeMap<String, NodeState>,
    leaf_of: &dyn Fn(&str, &str) -> Option<String>,
    book: &dyn Fn() -> Arc<AddrBook>,
    now_ms: i64,
    out: &mut Vec<Symptom>,
) {
    let mut obs = job_obs(job, nodes, now_ms);
    if obs.is_empty() {
        return;
    }
    // The current burst only: an earlier fault's edges, quiet for longer than a burst, would blur
    // the element the new ones share.
    let newest = obs.iter().map(|(_, o)| o.ts).max().unwrap_or(now_ms);
    obs.retain(|(_, o)| newest - o.ts <= COMM_BURST_MS);
    let onset = obs.iter().map(|(_, o)| o.ts).min().unwrap_or(now_ms);
    let book = book();
    let rank_nic = |r: u32| job.ranks.get(&r).and_then(|s| s.nic.clone());
    let (edges, unresolved) = edges(&obs, &book, &rank_nic);
    let unresolved_note = if unresolved.is_empty() {
        String::new()
    } else {
        format!(
            "; {} peer address(es) not in the inventory ({})",
            unresolved.len(),
            unresolved.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        )
    };
    // A node's leaf when the line did not say which of its NICs: the one leaf all its NICs share
    // (a rack's top-of-rack switch); none on a rail fabric.
    let leaf_of_end = |h: &str, nic: &str| -> Option<String> {
        if !nic.is_empty() {
            return leaf_of(h, nic);
        }
        let n = nodes.get(h)?;
        let mut leaves = n.nics.keys().filter_map(|k| leaf_of(h, k));
        let first = leaves.next()?;
        leaves.all(|l| l == first).then_some(first)
    };
    if let Some(l) = localize(&edges, &leaf_of_end) {
        let job_nodes: BTreeSet<&str> = obs.iter().map(|(n, _)| *n).collect();
        let class = class::culprit_class(&l.culprit, nodes, &job_nodes, &obs, &edges, leaf_of, now_ms);
        match &l.culprit {
            Culprit::Edge { a, b } => {
                for end in [a, b] {
                    out.push(
                        Symptom::new(
                            end.component(),
                            SymptomKind::CommEdgeSuspect,
                            onset,
                            format!("job {}: {} (confidence {:.2}){unresolved_note}", job.id, l.reason, l.confidence),
                        )
                        .value(l.confidence),
                    );
                }
            }
            c => {
                let component = match c {
                    Culprit::Nic { host, name } => ComponentId::Nic { host: host.clone(), name: name.clone() },
                    Culprit::Node { host } => ComponentId::Node { host: host.clone() },
                    Culprit::Leaf { name } => ComponentId::Switch { name: name.clone() },
                    _ => ComponentId::Job { id: job.id.clone() },
                };
                let mut s = Symptom::new(
                    component,
                    SymptomKind::CommErrors,
                    onset,
                    format!("job {}: {} (confidence {:.2}){unresolved_note}", job.id, l.reason, l.confidence),
                )
                .value(l.confidence);
                s.class = class;
                out.push(s);
            }
        }
    }
    class::nan_checks(job, &obs, out);
    for lag in laggards(&obs) {
        let pg = lag.pg.as_deref().map(|p| format!(" of process group {p}")).unwrap_or_default();
        out.push(
            Symptom::new(
                ComponentId::Rank { job: job.id.clone(), rank: lag.rank },
                SymptomKind::CollectiveLaggard,
                onset,
                format!(
                    "rank {}{pg} is at collective {} while another of {} ranks reached {}: the job waits on it{}",
                    lag.rank,
                    lag.seq,
                    lag.ranks,
                    lag.ahead,
                    lag.node.as_deref().map(|n| format!(" (on {n})")).unwrap_or_default()
                ),
            )
            .value((lag.ahead - lag.seq) as f64),
        );
    }
}

/// Observations of one node, newest last (for tests and views).
pub fn node_obs(n: &NodeState) -> &VecDeque<CommObs> {
    &n.comm
}

#[cfg(test)]
#[path = "nccl_tests.rs"]
mod tests;
