//! Active fabric probe results (pingmesh) as the state keeps them: per node, per probed path (local
//! NIC and address, peer and its address), the samples of the last `PROBE_WINDOW_MS`, bounded in
//! paths and samples. `detect::pingmesh` builds the loss and latency matrix from them.

use std::collections::{BTreeMap, VecDeque};

use faultline_proto::ProbeSample;

use super::NodeState;

/// How long probe samples are kept: 3 minutes, three times the detector's 1-minute view, so a
/// path probed once per pinglist rotation still has its last minute when the detector looks.
pub const PROBE_WINDOW_MS: i64 = 180_000;
/// Most paths kept per node: its pinglist holds a few peers per fabric NIC (8 × 8 on the largest
/// hosts); a node claiming thousands of paths is not probing a pinglist.
pub const MAX_PATHS_PER_NODE: usize = 512;
/// Most samples kept per path: one per report, 3 minutes at a 1 s interval.
pub const MAX_SAMPLES_PER_PATH: usize = 180;

/// One path as the reporting node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub iface: String,
    pub local_addr: String,
    pub peer: String,
    pub peer_addr: String,
}

/// One interval's counts on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePoint {
    pub ts: i64,
    pub sent: u32,
    pub received: u32,
    pub rtt_p50_us: Option<u32>,
}

/// A node's probe paths.
#[derive(Debug, Clone, Default)]
pub struct ProbePaths {
    pub paths: BTreeMap<PathKey, VecDeque<ProbePoint>>,
}

/// Keep one report's probe samples on its node and forget what fell out of the window.
pub fn record(node: &mut NodeState, probes: &[ProbeSample], ts: i64) {
    let paths = &mut node.probes.paths;
    for p in probes {
        let key = PathKey {
            iface: p.iface.clone(),
            local_addr: p.local_addr.clone(),
            peer: p.peer.clone(),
            peer_addr: p.peer_addr.clone(),
        };
        if !paths.contains_key(&key) && paths.len() >= MAX_PATHS_PER_NODE {
            continue;
        }
        let q = paths.entry(key).or_default();
        q.push_back(ProbePoint { ts, sent: p.sent, received: p.received.min(p.sent), rtt_p50_us: p.rtt_p50_us });
        while q.len() > MAX_SAMPLES_PER_PATH {
            q.pop_front();
        }
    }
    if !probes.is_empty() || !paths.is_empty() {
        for q in paths.values_mut() {
            while q.front().is_some_and(|p| ts - p.ts > PROBE_WINDOW_MS) {
                q.pop_front();
            }
        }
        paths.retain(|_, q| !q.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(peer: &str, sent: u32, received: u32) -> ProbeSample {
        ProbeSample {
            peer: peer.into(),
            iface: "eth1".into(),
            local_addr: "10.0.0.1".into(),
            peer_addr: format!("10.0.0.{}", peer.len()),
            sent,
            received,
            rtt_p50_us: Some(50),
            rtt_max_us: Some(90),
        }
    }

    #[test]
    fn samples_age_out_of_the_window_and_paths_are_bounded() {
        let mut n = NodeState::default();
        record(&mut n, &[s("b", 10, 10)], 1_000);
        record(&mut n, &[s("b", 10, 9)], 2_000);
        assert_eq!(n.probes.paths.values().next().unwrap().len(), 2);
        record(&mut n, &[], 2_000 + PROBE_WINDOW_MS + 1);
        assert!(n.probes.paths.is_empty(), "everything is older than the window");
        let many: Vec<ProbeSample> = (0..MAX_PATHS_PER_NODE + 10)
            .map(|i| ProbeSample { peer_addr: format!("10.1.{}.{}", i / 250, i % 250), ..s("c", 1, 1) })
            .collect();
        record(&mut n, &many, 500_000);
        assert_eq!(n.probes.paths.len(), MAX_PATHS_PER_NODE);
    }
}
