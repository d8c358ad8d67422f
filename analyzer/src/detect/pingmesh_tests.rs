//! The pingmesh detector on hand-built matrices: 2 leaves × 3 nodes under one spine, one fabric NIC
//! per node, every node probing every other for a minute.

use std::collections::BTreeMap;

use faultline_proto::{ComponentId, FaultClass, ProbeSample};

use super::*;
use crate::state::NodeState;
use crate::state::probes::record;

const NOW: i64 = 1_000_000;

fn addr(n: usize) -> String {
    format!("10.0.{}.{}", n / 3, n % 3 + 1)
}

fn name(n: usize) -> String {
    format!("n{n}")
}

/// Six nodes; `loss(src, dst, interval)` says how many of the 10 probes of that interval are lost.
fn cluster(loss: &dyn Fn(usize, usize, usize) -> u32) -> BTreeMap<String, NodeState> {
    let mut nodes = BTreeMap::new();
    for a in 0..6 {
        let mut n = NodeState { name: name(a), last_report_ms: NOW, reports: 10, ..Default::default() };
        n.nic_addrs.insert("eth1".into(), vec![addr(a)]);
        n.nics.insert("eth1".into(), crate::state::NicState { fabric: true, ..Default::default() });
        for t in 0..6 {
            let ts = NOW - 50_000 + t as i64 * 10_000;
            let probes: Vec<ProbeSample> = (0..6)
                .filter(|&b| b != a)
                .map(|b| {
                    let lost = loss(a, b, t).min(10);
                    ProbeSample {
                        peer: name(b),
                        iface: "eth1".into(),
                        local_addr: addr(a),
                        peer_addr: addr(b),
                        sent: 10,
                        received: 10 - lost,
                        // Ordinary jitter: 40–110 µs.
                        rtt_p50_us: (lost < 10).then_some(40 + ((a * 7 + b * 13 + t * 3) % 8) as u32 * 10),
                        rtt_max_us: (lost < 10).then_some(300),
                    }
                })
                .collect();
            record(&mut n, &probes, ts);
        }
        nodes.insert(name(a), n);
    }
    nodes
}

fn run(nodes: &BTreeMap<String, NodeState>, down: Option<&str>) -> Vec<Symptom> {
    let live = |n: &NodeState| Some(n.name.as_str()) != down;
    let leaf_of = |h: &str, _: &str| h[1..].parse::<usize>().ok().map(|i| format!("leaf-{}", i / 3));
    let uplinks = |_: &str| vec!["spine-0".to_string()];
    let fab = Fabric { live: &live, leaf_of: &leaf_of, uplinks: &uplinks };
    let mut out = Vec::new();
    check(nodes, &fab, &mut out);
    out
}

fn leaf(n: usize) -> usize {
    n / 3
}

#[test]
fn a_healthy_matrix_with_jitter_and_single_losses_is_quiet() {
    // One probe lost now and then on a few paths: far under 5% and under 3 per minute.
    let nodes = cluster(&|a, b, t| u32::from((a * 5 + b * 3 + t) % 11 == 0));
    assert_eq!(run(&nodes, None), vec![]);
}

#[test]
fn one_bad_nodes_links_name_its_nic_and_nothing_else() {
    let nodes = cluster(&|a, b, _| if a == 4 || b == 4 { 3 } else { 0 });
    let out = run(&nodes, None);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].component, ComponentId::Nic { host: "n4".into(), name: "eth1".into() });
    assert_eq!(out[0].class, Some(FaultClass::NicConnectionResets));
    assert_eq!(out[0].kind, SymptomKind::ProbeLoss);
    assert!(out[0].detail.contains("30.0%"), "{}", out[0].detail);
}

#[test]
fn one_bad_leaf_is_a_silent_drop_on_that_leaf() {
    let nodes = cluster(&|a, b, _| if leaf(a) == 0 || leaf(b) == 0 { 2 } else { 0 });
    let out = run(&nodes, None);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].component, ComponentId::switch("leaf-0"));
    assert_eq!(out[0].class, Some(FaultClass::SwitchSilentDrop));
}

#[test]
fn one_bad_spine_path_names_the_spine_between_the_leaves() {
    let nodes = cluster(&|a, b, _| if leaf(a) != leaf(b) { 4 } else { 0 });
    let out = run(&nodes, None);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].component, ComponentId::switch("spine-0"));
    assert_eq!(out[0].class, Some(FaultClass::SwitchSilentDrop));
}

#[test]
fn a_node_that_is_simply_down_is_node_downs_job() {
    // n2 stopped answering and reporting: every probe to it is lost.
    let nodes = cluster(&|_, b, _| if b == 2 { 10 } else { 0 });
    assert_eq!(run(&nodes, Some("n2")), vec![]);
    // Even before the heartbeat says so: its own probes were fine, so loss is one-directional.
    assert_eq!(run(&nodes, None), vec![]);
}

#[test]
fn a_lone_bad_pair_blames_neither_end() {
    let nodes = cluster(&|a, b, _| if (a, b) == (0, 4) || (a, b) == (4, 0) { 5 } else { 0 });
    assert_eq!(run(&nodes, None), vec![]);
}

#[test]
fn a_fabric_where_most_paths_lose_names_nothing() {
    let nodes = cluster(&|a, b, _| if (a + b) % 5 != 0 { 5 } else { 0 });
    assert_eq!(run(&nodes, None), vec![]);
}

#[test]
fn a_slow_nic_counts_like_a_lossy_one() {
    let mut nodes = cluster(&|_, _, _| 0);
    for (name, n) in nodes.iter_mut() {
        for (k, q) in n.probes.paths.iter_mut() {
            if name == "n1" || k.peer == "n1" {
                for p in q.iter_mut() {
                    p.rtt_p50_us = Some(20_000);
                }
            }
        }
    }
    let out = run(&nodes, None);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].component, ComponentId::Nic { host: "n1".into(), name: "eth1".into() });
}

#[test]
fn a_leaf_recovering_path_by_path_never_reads_as_one_of_its_nics() {
    // Leaf 0 has stopped dropping on most paths: n1's still lose, and one path between its
    // leaf-mates n0 and n2 does too. Loss between the mates says the leaf, not n1's NIC.
    let nodes = cluster(&|a, b, _| {
        let on_leaf0 = leaf(a) == 0 && leaf(b) == 0;
        if on_leaf0 && (a == 1 || b == 1 || (a, b) == (0, 2)) { 3 } else { 0 }
    });
    let out = run(&nodes, None);
    assert!(out.iter().all(|s| !matches!(s.component, ComponentId::Nic { .. })), "{out:#?}");
}

#[test]
fn a_verdict_waits_until_every_node_has_reported_after_its_onset() {
    // n4's link went bad 5 s before the newest reports: the rest of its leaf may not have reported
    // since, so nothing is named yet.
    let mut nodes = cluster(&|_, _, _| 0);
    for (name, n) in nodes.iter_mut() {
        for (k, q) in n.probes.paths.iter_mut() {
            if name == "n4" || k.peer == "n4" {
                if let Some(p) = q.back_mut() {
                    p.ts = NOW - 5_000;
                    p.received = 0;
                }
                for p in q.iter_mut().rev().skip(1).take(2) {
                    p.received = 0;
                    p.ts = NOW - 5_000;
                }
            }
        }
    }
    assert_eq!(run(&nodes, None), vec![]);
}
