//! `GET /api/v1/pinglist?node=…`: the peers a node's agent probes (pingmesh). Each node gets a small
//! set that rotates every `ROTATE_MS`: half from its own leaf (paths through one leaf), half from
//! other leaves (paths through the spine), chosen by a hash of (node, peer, rotation) so that over a
//! few rotations every pair is covered and no node is everyone's target at once. NICs are paired by
//! rail: a node's n-th fabric NIC probes the peer's n-th, from address to address of one family.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use faultline_proto::ComponentId;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::IngestGrant;
use crate::engine::Analyzer;
use crate::http_error::ApiError;

/// Peers per node and rotation: 8 peers on each of up to 8 rails is 64 paths, which the agent's
/// default 40 probes/s covers with about 37 probes a minute each (the detector needs 20), and
/// rotations of 5 minutes cover a 64-node leaf pair in under an hour.
pub const PEERS_PER_NODE: usize = 8;
/// How long one rotation lasts, ms; agents fetch every 5 minutes by default.
pub const ROTATE_MS: i64 = 300_000;

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pinglist {
    pub node: String,
    /// Which rotation this is (changes every `ROTATE_MS`).
    pub rotation: i64,
    pub targets: Vec<PingTarget>,
}

/// One path to probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingTarget {
    pub peer: String,
    pub peer_addr: String,
    pub local_addr: String,
    /// The local NIC the probes leave from.
    pub iface: String,
}

#[derive(Debug, Deserialize)]
pub struct PinglistQuery {
    pub node: String,
}

/// A node's fabric NICs in rail order, each with one address per family.
fn fabric_addrs(e: &Analyzer, node: &str) -> Vec<(String, Vec<IpAddr>)> {
    let Some(n) = e.state().nodes.get(node) else { return Vec::new() };
    n.nics
        .iter()
        .filter(|(_, st)| st.fabric)
        .map(|(name, _)| {
            let mut addrs: Vec<IpAddr> = n
                .nic_addrs
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .filter(|a| !a.is_loopback() && !matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80))
                .collect();
            addrs.sort();
            let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
            let v6 = addrs.iter().find(|a| a.is_ipv6()).copied();
            (name.clone(), v4.into_iter().chain(v6).collect())
        })
        .filter(|(_, a): &(String, Vec<IpAddr>)| !a.is_empty())
        .collect()
}

/// FNV-1a of the parts, for a stable per-rotation order.
fn mix(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The pinglist of `node` at `now_ms`.
pub fn pinglist(e: &Analyzer, node: &str, now_ms: i64) -> Pinglist {
    let rotation = now_ms.div_euclid(ROTATE_MS);
    let mine = fabric_addrs(e, node);
    let leaf = |h: &str, nic: &str| {
        e.topo().leaf_of_nic(&ComponentId::Nic { host: h.into(), name: nic.into() }).map(str::to_string)
    };
    let my_leaf = mine.first().and_then(|(nic, _)| leaf(node, nic));
    let mut same: Vec<(u64, String)> = Vec::new();
    let mut other: Vec<(u64, String)> = Vec::new();
    for (name, n) in &e.state().nodes {
        // Shut-down and silent nodes are left out: probing them only measures that they are gone.
        if name == node
            || n.shutdown
            || n.reports == 0
            || crate::silence::silent(n.last_recv_ms, n.interval_ms, now_ms, e.cfg().heartbeat_intervals)
        {
            continue;
        }
        let first = n.nics.iter().find(|(_, st)| st.fabric).map(|(nic, _)| nic.clone());
        let their_leaf = first.and_then(|nic| leaf(name, &nic));
        let key = mix(&[node.as_bytes(), name.as_bytes(), &rotation.to_le_bytes()]);
        if my_leaf.is_none() || their_leaf == my_leaf {
            same.push((key, name.clone()))
        } else {
            other.push((key, name.clone()))
        }
    }
    same.sort();
    other.sort();
    let half = PEERS_PER_NODE / 2;
    // Half each way; the side with fewer candidates leaves its share to the other.
    let take_same = same.len().min(PEERS_PER_NODE - other.len().min(half));
    let take_other = other.len().min(PEERS_PER_NODE - take_same);
    let chosen = same.into_iter().take(take_same).chain(other.into_iter().take(take_other)).map(|(_, n)| n);
    let mut targets = Vec::new();
    for peer in chosen {
        let theirs = fabric_addrs(e, &peer);
        for ((iface, my), (_, their)) in mine.iter().zip(&theirs) {
            for l in my {
                if let Some(p) = their.iter().find(|p| p.is_ipv4() == l.is_ipv4()) {
                    targets.push(PingTarget {
                        peer: peer.clone(),
                        peer_addr: p.to_string(),
                        local_addr: l.to_string(),
                        iface: iface.clone(),
                    });
                    break;
                }
            }
        }
    }
    Pinglist { node: node.to_string(), rotation, targets }
}

/// `GET /api/v1/pinglist?node=…`, with an agent's token (a node token only for its own node).
pub async fn get_pinglist(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<PinglistQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return ApiError::bad_request(format!("bad query string: {}", e.body_text())).into_response(),
    };
    match st.auth.check_ingest(&headers) {
        Ok(IngestGrant::AnyNode) => {}
        Ok(IngestGrant::Node(n)) if n == q.node => {}
        Ok(IngestGrant::Node(n)) => {
            return ApiError::auth(&crate::auth::AuthError::Forbidden(format!(
                "this is node {n:?}'s token: it may fetch that node's pinglist only"
            )))
            .into_response();
        }
        Err(e) => return ApiError::auth(&e).into_response(),
    }
    let now = st.clock.now_ms();
    Json(st.with_engine(|e| pinglist(e, &q.node, now))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{NicSample, NodeReport, TopologyFile};

    fn report(node: &str, addr: &str, ts: i64) -> NodeReport {
        let mut r = NodeReport::empty(node);
        r.timestamp_ms = ts;
        r.seq = (ts / 1000).max(1) as u64;
        r.nics = vec![NicSample {
            name: "eth1".into(),
            fabric: Some(true),
            operstate: Some("up".into()),
            carrier: Some(true),
            addrs: vec![addr.into(), "fe80::1".into()],
            ..Default::default()
        }];
        r
    }

    fn engine(n: usize) -> Analyzer {
        let topo: TopologyFile = toml::from_str(
            r#"
            [[switch]]
            name = "leaf-0"
            tier = "leaf"
            uplinks = ["spine-0"]
            [[switch]]
            name = "leaf-1"
            tier = "leaf"
            uplinks = ["spine-0"]
            [[switch]]
            name = "spine-0"
            tier = "spine"
            [[rack]]
            leaf = "leaf-0"
            nodes = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"]
            [[rack]]
            leaf = "leaf-1"
            nodes = ["n10", "n11", "n12", "n13", "n14", "n15", "n16", "n17", "n18", "n19"]
            "#,
        )
        .unwrap();
        let mut e = Analyzer::new(Default::default(), topo);
        for i in 0..n {
            e.ingest(report(&format!("n{i}"), &format!("10.0.0.{}", i + 1), 1_000), 1_000).unwrap();
        }
        e
    }

    #[test]
    fn a_small_fleet_probes_everyone_rail_to_rail() {
        let e = engine(4);
        let l = pinglist(&e, "n0", 1_000);
        let peers: Vec<&str> = l.targets.iter().map(|t| t.peer.as_str()).collect();
        assert_eq!(peers.len(), 3);
        assert!(!peers.contains(&"n0"));
        assert!(l.targets.iter().all(|t| t.local_addr == "10.0.0.1" && t.iface == "eth1"), "{l:?}");
        assert!(l.targets.iter().all(|t| !t.peer_addr.starts_with("fe80")), "link-local is never a target");
    }

    #[test]
    fn a_large_fleet_gets_a_bounded_rotating_mix_of_same_leaf_and_cross_leaf_peers() {
        let mut e = engine(20);
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..12 {
            let now = r * ROTATE_MS + 2_000;
            for i in 0..20 {
                e.ingest(report(&format!("n{i}"), &format!("10.0.0.{}", i + 1), now), now).unwrap();
            }
            let l = pinglist(&e, "n3", now);
            assert_eq!(l.targets.len(), PEERS_PER_NODE);
            let cross = l.targets.iter().filter(|t| t.peer[1..].parse::<usize>().unwrap() >= 10).count();
            assert_eq!(cross, PEERS_PER_NODE / 2, "half the peers are behind the spine");
            seen.extend(l.targets.into_iter().map(|t| t.peer));
        }
        assert!(seen.len() >= 17, "rotations cover most of the fleet: {seen:?}");
    }

    #[test]
    fn silent_nodes_are_not_probed() {
        let mut e = engine(4);
        e.ingest(report("n0", "10.0.0.1", 60_000), 60_000).unwrap();
        e.ingest(report("n1", "10.0.0.2", 60_000), 60_000).unwrap();
        let peers: Vec<String> = pinglist(&e, "n0", 61_000).targets.into_iter().map(|t| t.peer).collect();
        assert_eq!(peers, ["n1"], "n2 and n3 have been silent for a minute");
    }
}
