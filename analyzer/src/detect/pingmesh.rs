//! Active fabric probes (pingmesh): localize loss and latency from the matrix of probed paths, a
//! pure function of the nodes' probe windows and the topology's leaves.
//!
//! A probe is a round trip, so a path's loss is the loss of both directions through every element
//! it crosses: the sending NIC, its leaf, the spine between leaves, the peer's leaf and NIC. The
//! verdicts, tried from the widest element to the narrowest, each needing most of its paths bad and
//! the rest of the fabric mostly fine:
//! - **a leaf**: most paths between two of its own NICs are bad, and not all of them touch one NIC →
//!   `SwitchSilentDrop` on the leaf (a port counter that explains it is `detect::nic`'s, and
//!   outranks this in the localizer);
//! - **a spine path**: most paths between two leaves are bad while each leaf's own paths are fine →
//!   `SwitchSilentDrop` on the one spine both leaves uplink to (none named when the topology names
//!   no single common spine);
//! - **a NIC** (or a node's only fabric NIC: one bad node's links): most of its paths bad, toward at
//!   least two peers, in both directions (its own probes and its peers' probes to it) →
//!   `NicConnectionResets` on the NIC.
//!
//! Never a verdict for: a node that is silent or shut down, or a NIC that is down (`node_down` and
//! `nic_down` say those; their paths are left out), a lone bad path (either end may be at fault),
//! or loss spread over the fabric (every verdict needs the paths outside its element mostly fine).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use faultline_proto::{ComponentId, FaultClass};

use super::{Symptom, SymptomKind};
use crate::state::NodeState;

/// How much of each path's history a verdict reads: the last minute, so a fault shows within a
/// minute of starting and the window still holds dozens of probes per path at the agent's default
/// 10 probes/s over a handful of peers.
pub const VIEW_MS: i64 = 60_000;
/// Fewest probes a path needs in the view to be judged: at 20 the loss share resolves to 5%.
pub const MIN_SENT: u32 = 20;
/// Loss share that makes a path bad. Healthy data-centre fabrics lose about 1e-5 to 1e-4 of
/// packets (Microsoft's Pingmesh, SIGCOMM 2015); 5% is hundreds of times that, while a single lost
/// probe in a minute stays far below it.
pub const LOSS_BAD: f64 = 0.05;
/// Fewest lost probes that make a path bad, so that one or two unlucky probes never do.
pub const LOST_MIN: u32 = 3;
/// Median round trip that makes a path bad: this many times the fleet's median path...
pub const SLOW_FACTOR: f64 = 10.0;
/// ...and at least this much (µs): intra-fabric round trips are tens of µs over RDMA NICs and
/// hundreds through the kernel's UDP stack, so 5 ms is congestion or a failing element, not jitter.
pub const SLOW_FLOOR_US: f64 = 5_000.0;
/// Share of an element's judged paths that must be bad to blame it: three in four, so that one bad
/// NIC among four on a leaf (half of the leaf's paths touch it) never reads as the leaf.
pub const ELEMENT_BAD_SHARE: f64 = 0.75;
/// Share of the paths outside an element that may be bad when blaming it: the rest of the fabric must
/// be mostly fine for the verdict to be specific (loss everywhere names nothing).
pub const OTHERS_FINE_SHARE: f64 = 0.25;
/// How long after a verdict's onset every live node must have reported before it is given: two
/// report intervals at the default 10 s. Reports are phased across the interval, so right after a
/// leaf starts dropping, the first of its nodes to report looks like a lone bad NIC until the others
/// report too; waiting until all have reported twice lets the wider verdict form first.
pub const SETTLE_MS: i64 = 20_000;
/// Distinct peers a NIC's bad paths must reach: one bad pair cannot say which end is at fault.
pub const MIN_PEERS: usize = 2;

/// One end of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct End {
    node: String,
    nic: Option<String>,
    leaf: Option<String>,
}

/// One judged path (reporter → peer) over the view.
#[derive(Debug, Clone)]
struct Path {
    src: End,
    dst: End,
    sent: u32,
    lost: u32,
    p50_us: Option<f64>,
    bad: bool,
    /// Report time of the first lossy interval in the view.
    onset: i64,
}

/// What the detector needs besides the nodes: which are alive (silent and shut-down nodes are
/// `node_down`'s), which leaf a NIC is cabled to, and a leaf's spine uplinks.
pub struct Fabric<'a> {
    pub live: &'a dyn Fn(&NodeState) -> bool,
    pub leaf_of: &'a dyn Fn(&str, &str) -> Option<String>,
    pub uplinks: &'a dyn Fn(&str) -> Vec<String>,
}

/// Every pingmesh verdict over the whole fabric.
pub fn check(nodes: &BTreeMap<String, NodeState>, fab: &Fabric<'_>, out: &mut Vec<Symptom>) {
    let paths = matrix(nodes, fab);
    if paths.is_empty() {
        return;
    }
    if !paths.iter().any(|p| p.bad) {
        return;
    }
    // Verdicts whose onset is newer than this wait (their paths stay explained meanwhile).
    let settled = nodes.values().filter(|n| (fab.live)(n)).map(|n| n.last_report_ms).min().unwrap_or(0) - SETTLE_MS;
    let mut found = Vec::new();
    let mut explained = vec![false; paths.len()];
    leaves(&paths, &mut explained, &mut found);
    spines(&paths, fab, &mut explained, &mut found);
    nics(&paths, &mut explained, &mut found);
    out.extend(found.into_iter().filter(|s| s.onset_ms <= settled));
}

/// The judged paths: each live node's probes toward live peers, peer addresses traced to NICs.
fn matrix(nodes: &BTreeMap<String, NodeState>, fab: &Fabric<'_>) -> Vec<Path> {
    // No node probes (pingmesh off): nothing to judge, and no address book to build.
    if nodes.values().all(|n| n.probes.paths.is_empty()) {
        return Vec::new();
    }
    // Address → (node, NIC); an address more than one node reports names nothing.
    let addrs = nodes.values().flat_map(|n| n.nic_addrs.values()).map(Vec::len).sum();
    let mut owner: HashMap<&str, Option<(&str, &str)>> = HashMap::with_capacity(addrs);
    for (name, n) in nodes {
        for (nic, addrs) in &n.nic_addrs {
            for a in addrs {
                owner
                    .entry(a.as_str())
                    .and_modify(|o| {
                        if o.is_some_and(|(h, _)| h != name) {
                            *o = None;
                        }
                    })
                    .or_insert(Some((name.as_str(), nic.as_str())));
            }
        }
    }
    let usable = |node: &str, nic: Option<&str>| -> bool {
        let Some(n) = nodes.get(node) else { return false };
        (fab.live)(n) && nic.is_none_or(|nic| n.nics.get(nic).is_none_or(|s| s.down_since.is_none()))
    };
    let mut out = Vec::new();
    for (name, n) in nodes {
        if !usable(name, None) {
            continue;
        }
        let since = n.last_report_ms - VIEW_MS;
        for (k, points) in &n.probes.paths {
            if !usable(name, Some(&k.iface)) || k.peer == *name {
                continue;
            }
            let peer_nic = owner.get(k.peer_addr.as_str()).copied().flatten().filter(|(h, _)| *h == k.peer);
            if !usable(&k.peer, peer_nic.map(|(_, nic)| nic)) {
                continue;
            }
            let recent = n.last_report_ms - VIEW_MS / 2;
            let (mut sent, mut received, mut onset, mut first) = (0u32, 0u32, None, None);
            let (mut sent_recent, mut received_recent) = (0u32, 0u32);
            let mut rtts = Vec::new();
            for p in points.iter().filter(|p| p.ts >= since) {
                let got = p.received.min(p.sent);
                sent = sent.saturating_add(p.sent);
                received = received.saturating_add(got);
                if p.ts >= recent {
                    sent_recent = sent_recent.saturating_add(p.sent);
                    received_recent = received_recent.saturating_add(got);
                }
                first.get_or_insert(p.ts);
                if got < p.sent && onset.is_none() {
                    onset = Some(p.ts);
                }
                rtts.extend(p.rtt_p50_us.map(f64::from));
            }
            if sent < MIN_SENT {
                continue;
            }
            let end = |node: &str, nic: Option<&str>| End {
                node: node.to_string(),
                nic: nic.map(str::to_string),
                leaf: nic.and_then(|nic| (fab.leaf_of)(node, nic)),
            };
            let lost = sent - received;
            // Bad over the whole view and still bad in its newer half: a path that has recovered
            // (loss only in the older half) no longer counts, so as a leaf recovers path by path
            // none of its NICs is left looking like the culprit.
            let lost_recent = sent_recent - received_recent;
            let still = sent_recent >= MIN_SENT / 2
                && lost_recent >= 1
                && f64::from(lost_recent) >= LOSS_BAD * f64::from(sent_recent);
            out.push(Path {
                src: end(name, Some(&k.iface)),
                dst: end(&k.peer, peer_nic.map(|(_, nic)| nic)),
                sent,
                lost,
                p50_us: super::median(&mut rtts),
                bad: still && lost >= LOST_MIN && f64::from(lost) >= LOSS_BAD * f64::from(sent),
                onset: onset.or(first).unwrap_or(n.last_report_ms),
            });
        }
    }
    // Slow paths: far above the fleet's median round trip.
    let mut all: Vec<f64> = out.iter().filter_map(|p| p.p50_us).collect();
    if let Some(m) = super::median(&mut all) {
        let limit = (m * SLOW_FACTOR).max(SLOW_FLOOR_US);
        for p in out.iter_mut().filter(|p| p.p50_us.is_some_and(|r| r > limit)) {
            p.bad = true;
        }
    }
    out
}

fn share(bad: usize, all: usize) -> f64 {
    if all == 0 { 0.0 } else { bad as f64 / all as f64 }
}

fn loss_text(ps: &[&Path]) -> (f64, String) {
    let sent: u64 = ps.iter().map(|p| u64::from(p.sent)).sum();
    let lost: u64 = ps.iter().map(|p| u64::from(p.lost)).sum();
    let pct = 100.0 * lost as f64 / sent.max(1) as f64;
    (pct, format!("{lost} of {sent} probes lost ({pct:.1}%)"))
}

/// Whether every path in `ps` touches one NIC (then that NIC, not what they share, is the suspect).
fn one_nic_touches_all(ps: &[&Path]) -> bool {
    let nic = |e: &End| (e.node.clone(), e.nic.clone());
    let Some(first) = ps.first() else { return false };
    [nic(&first.src), nic(&first.dst)].iter().any(|c| ps.iter().all(|p| nic(&p.src) == *c || nic(&p.dst) == *c))
}

fn leaves(paths: &[Path], explained: &mut [bool], out: &mut Vec<Symptom>) {
    let leaf_set: BTreeSet<&str> =
        paths.iter().flat_map(|p| [p.src.leaf.as_deref(), p.dst.leaf.as_deref()]).flatten().collect();
    for leaf in leaf_set {
        let intra: Vec<usize> = (0..paths.len())
            .filter(|&i| paths[i].src.leaf.as_deref() == Some(leaf) && paths[i].dst.leaf.as_deref() == Some(leaf))
            .collect();
        let bad: Vec<&Path> = intra.iter().map(|&i| &paths[i]).filter(|p| p.bad).collect();
        if intra.len() < 2 || share(bad.len(), intra.len()) < ELEMENT_BAD_SHARE || one_nic_touches_all(&bad) {
            continue;
        }
        let others: Vec<&Path> = paths
            .iter()
            .filter(|p| p.src.leaf.as_deref() != Some(leaf) && p.dst.leaf.as_deref() != Some(leaf))
            .collect();
        if share(others.iter().filter(|p| p.bad).count(), others.len()) > OTHERS_FINE_SHARE {
            continue;
        }
        let (pct, text) = loss_text(&bad);
        let onset = bad.iter().map(|p| p.onset).min().unwrap_or(0);
        out.push(
            Symptom::new(
                ComponentId::switch(leaf),
                SymptomKind::ProbeLoss,
                onset,
                format!(
                    "fabric probes between nodes on leaf {leaf}: {} of {} paths bad, {text}, while paths elsewhere are fine and no single NIC is on all of them: the leaf drops packets",
                    bad.len(),
                    intra.len()
                ),
            )
            .class(FaultClass::SwitchSilentDrop)
            .value(pct),
        );
        for (i, p) in paths.iter().enumerate() {
            if p.src.leaf.as_deref() == Some(leaf) || p.dst.leaf.as_deref() == Some(leaf) {
                explained[i] = true;
            }
        }
    }
}

fn spines(paths: &[Path], fab: &Fabric<'_>, explained: &mut [bool], out: &mut Vec<Symptom>) {
    let mut pairs: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        if explained[i] {
            continue;
        }
        if let (Some(a), Some(b)) = (&p.src.leaf, &p.dst.leaf)
            && a != b
        {
            let k = if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
            pairs.entry(k).or_default().push(i);
        }
    }
    for ((a, b), idx) in pairs {
        let cross: Vec<&Path> = idx.iter().map(|&i| &paths[i]).collect();
        let bad: Vec<&Path> = cross.iter().copied().filter(|p| p.bad).collect();
        if cross.len() < 2 || share(bad.len(), cross.len()) < ELEMENT_BAD_SHARE || one_nic_touches_all(&bad) {
            continue;
        }
        let intra: Vec<&Path> = paths
            .iter()
            .filter(|p| p.src.leaf == p.dst.leaf && matches!(p.src.leaf.as_deref(), Some(l) if l == a || l == b))
            .collect();
        if share(intra.iter().filter(|p| p.bad).count(), intra.len()) > OTHERS_FINE_SHARE {
            continue;
        }
        let ua: BTreeSet<String> = (fab.uplinks)(&a).into_iter().collect();
        let common: Vec<String> = (fab.uplinks)(&b).into_iter().filter(|s| ua.contains(s)).collect();
        let [spine] = common.as_slice() else {
            tracing::debug!(leaf_a = %a, leaf_b = %b, common = common.len(), "probes lose between two leaves but the topology names no single spine between them");
            continue;
        };
        let (pct, text) = loss_text(&bad);
        let onset = bad.iter().map(|p| p.onset).min().unwrap_or(0);
        out.push(
            Symptom::new(
                ComponentId::switch(spine),
                SymptomKind::ProbeLoss,
                onset,
                format!(
                    "fabric probes between leaves {a} and {b}: {} of {} paths bad, {text}, while paths inside each leaf are fine: the spine path through {spine} drops packets",
                    bad.len(),
                    cross.len()
                ),
            )
            .class(FaultClass::SwitchSilentDrop)
            .value(pct),
        );
        for &i in &idx {
            explained[i] = true;
        }
    }
}

fn nics(paths: &[Path], explained: &mut [bool], out: &mut Vec<Symptom>) {
    type Nic = (String, String);
    let mut by_nic: BTreeMap<Nic, Vec<usize>> = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        for e in [&p.src, &p.dst] {
            if let Some(nic) = &e.nic {
                by_nic.entry((e.node.clone(), nic.clone())).or_default().push(i);
            }
        }
    }
    // Greedy: the NIC with the most bad paths first; its paths are then explained, so its peers'
    // one bad path each toward it blames nobody else.
    loop {
        let mut best: Option<(usize, &Nic)> = None;
        for (nic, idx) in &by_nic {
            let open: Vec<usize> = idx.iter().copied().filter(|&i| !explained[i]).collect();
            let bad: Vec<usize> = open.iter().copied().filter(|&i| paths[i].bad).collect();
            let from_it = bad.iter().any(|&i| paths[i].src.node == nic.0 && paths[i].src.nic.as_ref() == Some(&nic.1));
            let to_it = bad.iter().any(|&i| paths[i].dst.node == nic.0 && paths[i].dst.nic.as_ref() == Some(&nic.1));
            let peers: BTreeSet<&str> =
                bad.iter()
                    .map(|&i| {
                        if paths[i].src.node == nic.0 { paths[i].dst.node.as_str() } else { paths[i].src.node.as_str() }
                    })
                    .collect();
            let touches = |p: &Path| [&p.src, &p.dst].iter().any(|e| e.node == nic.0 && e.nic.as_ref() == Some(&nic.1));
            let rest: Vec<&Path> =
                paths.iter().enumerate().filter(|(i, p)| !explained[*i] && !touches(p)).map(|(_, p)| p).collect();
            // Its leaf-mates' paths among themselves must be fine too: loss there as well is the
            // leaf's (forming, or fading path by path as it recovers), not this NIC's.
            let leaf = idx.iter().find_map(|&i| {
                [&paths[i].src, &paths[i].dst]
                    .into_iter()
                    .find(|e| e.node == nic.0 && e.nic.as_ref() == Some(&nic.1))
                    .and_then(|e| e.leaf.clone())
            });
            let mates: Vec<&Path> = match &leaf {
                Some(l) => paths
                    .iter()
                    .filter(|p| !touches(p) && p.src.leaf.as_ref() == Some(l) && p.dst.leaf.as_ref() == Some(l))
                    .collect(),
                None => Vec::new(),
            };
            if share(bad.len(), open.len()) >= ELEMENT_BAD_SHARE
                && share(rest.iter().filter(|p| p.bad).count(), rest.len()) <= OTHERS_FINE_SHARE
                && share(mates.iter().filter(|p| p.bad).count(), mates.len()) <= OTHERS_FINE_SHARE
                && from_it
                && to_it
                && peers.len() >= MIN_PEERS
                && best.is_none_or(|(n, _)| bad.len() > n)
            {
                best = Some((bad.len(), nic));
            }
        }
        let Some((_, nic)) = best else { return };
        let nic = nic.clone();
        let idx = by_nic.remove(&nic).unwrap_or_default();
        let open: Vec<usize> = idx.iter().copied().filter(|&i| !explained[i]).collect();
        let bad: Vec<&Path> = open.iter().map(|&i| &paths[i]).filter(|p| p.bad).collect();
        let peers: BTreeSet<&str> =
            bad.iter().map(|p| if p.src.node == nic.0 { p.dst.node.as_str() } else { p.src.node.as_str() }).collect();
        let (pct, text) = loss_text(&bad);
        let onset = bad.iter().map(|p| p.onset).min().unwrap_or(0);
        out.push(
            Symptom::new(
                ComponentId::Nic { host: nic.0.clone(), name: nic.1.clone() },
                SymptomKind::ProbeLoss,
                onset,
                format!(
                    "fabric probes to and from {}/{}: {} of {} paths bad in both directions, toward {} peers, {text}, while the peers' other paths are fine",
                    nic.0,
                    nic.1,
                    bad.len(),
                    open.len(),
                    peers.len()
                ),
            )
            .class(FaultClass::NicConnectionResets)
            .value(pct),
        );
        for i in idx {
            explained[i] = true;
        }
    }
}

#[cfg(test)]
#[path = "pingmesh_tests.rs"]
mod tests;
