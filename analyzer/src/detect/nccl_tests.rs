//! Tests of the collective-evidence detector: a bad NIC seen by several peers, a bad leaf, a lone
//! edge, a lagging rank, and address lookup.

use std::collections::BTreeMap;

use faultline_proto::{CollectiveInfo, ComponentId, EventClass, FaultClass};

use super::*;
use crate::state::{JobState, NodeState, RankState};

const NOW: i64 = 1_700_000_000_000;

/// Node `i` has `mlx5_0`..`mlx5_3`, NIC k at 10.1.k.i (its RoCE address) and the OOB address
/// 10.0.0.i on `eth0`.
fn nodes(n: usize) -> BTreeMap<String, NodeState> {
    (0..n)
        .map(|i| {
            let mut s = NodeState { name: format!("n{i}"), ..Default::default() };
            for k in 0..4 {
                s.nic_addrs.insert(format!("mlx5_{k}"), vec![format!("10.1.{k}.{i}")]);
            }
            s.nic_addrs.insert("eth0".into(), vec![format!("10.0.0.{i}"), format!("fe80::{i}")]);
            // The management network, on no reported NIC: names the node only.
            s.host = Some(faultline_proto::HostSample {
                addrs: vec![format!("172.16.0.{i}"), "172.17.0.1".into()],
                ..Default::default()
            });
            (s.name.clone(), s)
        })
        .collect()
}

fn job(n: usize) -> JobState {
    let mut j = JobState { id: "j1".into(), ..Default::default() };
    for r in 0..(n as u32 * 4) {
        let node = format!("n{}", r / 4);
        j.ranks.insert(r, RankState { node: node.clone(), nic: Some(format!("mlx5_{}", r % 4)), ..Default::default() });
        j.by_node.entry(node).or_default().push(r);
    }
    j
}

fn obs(nodes: &mut BTreeMap<String, NodeState>, node: &str, class: EventClass, info: CollectiveInfo) {
    let n = nodes.get_mut(node).unwrap();
    n.comm.push_back(CommObs {
        ts: NOW - 1000,
        class,
        count: 3,
        info: CollectiveInfo { job: Some("j1".into()), ..info },
    });
}

/// An IB completion error reported on `from` (its `hca`) naming the peer by OOB address and RoCE GID.
fn ib(from_nic: usize, to_node: usize, to_nic: usize, rank: u32) -> CollectiveInfo {
    CollectiveInfo {
        kind: Some("ib_completion".into()),
        rank: Some(rank),
        peer: Some(format!("10.0.0.{to_node}")),
        peer_port: Some(40000),
        remote_addr: Some(format!("10.1.{to_nic}.{to_node}")),
        hca: Some(format!("mlx5_{from_nic}")),
        error: Some("IBV_WC_RETRY_EXC_ERR".into()),
        ..Default::default()
    }
}

fn no_leaves(_: &str, _: &str) -> Option<String> {
    None
}

fn run(
    nodes: &BTreeMap<String, NodeState>,
    job: &JobState,
    leaf_of: &dyn Fn(&str, &str) -> Option<String>,
) -> Vec<Symptom> {
    let mut out = Vec::new();
    let book = || std::sync::Arc::new(AddrBook::of_nodes(nodes));
    check(job, nodes, leaf_of, &book, NOW, &mut out);
    out
}

#[test]
fn one_bad_nic_seen_by_several_peers_is_that_nic() {
    let mut ns = nodes(5);
    // n0's mlx5_1 is bad: its peers on rail 1 see completion errors naming it, and n0 sees them too.
    for peer in 1..4 {
        let r = peer as u32 * 4 + 1;
        obs(&mut ns, &format!("n{peer}"), EventClass::IbCompletionError, ib(1, 0, 1, r));
        obs(&mut ns, "n0", EventClass::IbCompletionError, ib(1, peer, 1, 1));
    }
    let j = job(5);
    let o = job_obs(&j, &ns, NOW);
    let (edges, unresolved) = edges(&o, &AddrBook::of_nodes(&ns), &|_| None);
    assert!(unresolved.is_empty());
    assert_eq!(edges.len(), 3, "the same pair seen from both ends is one edge: {edges:#?}");
    let l = localize(&edges, &no_leaves).unwrap();
    assert_eq!(l.culprit, Culprit::Nic { host: "n0".into(), name: "mlx5_1".into() });
    assert!(l.confidence >= 0.75, "{l:?}");
    let out = run(&ns, &j, &no_leaves);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).expect("a symptom on the NIC");
    assert_eq!(s.component, ComponentId::Nic { host: "n0".into(), name: "mlx5_1".into() });
    // No counter of the NIC moved: it resets its connections without a symbol error.
    assert_eq!(s.class, Some(FaultClass::NicConnectionResets));
    assert!(s.detail.contains("3 of 3") && s.detail.contains("n1, n2, n3"), "{}", s.detail);
}

/// `one_bad_nic_seen_by_several_peers_is_that_nic`'s evidence, with the NIC's counters as given.
fn bad_nic_class(nic: crate::state::NicState) -> Option<FaultClass> {
    let mut ns = nodes(5);
    for peer in 1..3 {
        let r = peer as u32 * 4 + 1;
        obs(&mut ns, &format!("n{peer}"), EventClass::IbCompletionError, ib(1, 0, 1, r));
        obs(&mut ns, "n0", EventClass::IbCompletionError, ib(1, peer, 1, 1));
        ns.get_mut("n0").unwrap().comm.back_mut().unwrap().ts = NOW - 1000 - 60_000 * peer as i64;
    }
    ns.get_mut("n0").unwrap().nics.insert("mlx5_1".into(), nic);
    let out = run(&ns, &job(5), &no_leaves);
    out.iter().find(|s| s.kind == SymptomKind::CommErrors).and_then(|s| s.class)
}

#[test]
fn a_nic_whose_counters_explain_the_edges_keeps_the_counters_class() {
    use crate::state::NicState;
    let down = NicState { down_since: Some(NOW - 20_000), downs: [NOW - 20_000].into(), ..Default::default() };
    assert_eq!(bad_nic_class(down), Some(FaultClass::NicDown));
    let flapping = NicState { downs: [NOW - 90_000, NOW - 40_000].into(), ..Default::default() };
    assert_eq!(bad_nic_class(flapping), Some(FaultClass::NicFlap));
    let mut errors = NicState::default();
    let mut c = crate::state::Counter::default();
    for (i, v) in [0u64, 400, 900].iter().enumerate() {
        c.update(NOW - 30_000 + i as i64 * 10_000, *v);
    }
    *errors.counters.at("symbol_error").unwrap() = c;
    assert_eq!(bad_nic_class(errors), Some(FaultClass::CableBitErrors));
    // A healthy port (counters flat), two peers failing once: the NIC or the path, not told apart.
    assert_eq!(bad_nic_class(NicState::default()), None);
}

#[test]
fn a_nic_that_breaks_several_connections_at_once_resets_them() {
    let mut ns = nodes(5);
    for peer in 1..3 {
        obs(&mut ns, &format!("n{peer}"), EventClass::IbCompletionError, ib(1, 0, 1, peer as u32 * 4 + 1));
        obs(&mut ns, "n0", EventClass::IbCompletionError, ib(1, peer, 1, 1));
    }
    // Its own lines towards both peers in the same second: one episode tore both down. (In
    // `bad_nic_class` they are a minute apart: one connection at a time, as a dropping path breaks them.)
    for c in ns.get_mut("n0").unwrap().comm.iter_mut() {
        c.ts = NOW - 30_000;
    }
    let out = run(&ns, &job(5), &no_leaves);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).expect("a symptom on the NIC");
    assert_eq!(s.class, Some(FaultClass::NicConnectionResets));
}

#[test]
fn a_nan_check_failure_names_the_ranks_gpu() {
    let mut ns = nodes(3);
    let mut j = job(3);
    for (r, s) in j.ranks.iter_mut() {
        s.gpus = vec![r % 4];
    }
    let info = CollectiveInfo {
        kind: Some("comm_error".into()),
        rank: Some(6),
        error: Some(super::class::NAN_CHECK_FAILED.into()),
        ..Default::default()
    };
    obs(&mut ns, "n1", EventClass::NcclError, info);
    let out = run(&ns, &j, &no_leaves);
    let s = out.iter().find(|s| s.kind == SymptomKind::CollectiveNanCheck).expect("a NaN-check symptom");
    assert_eq!(s.component, ComponentId::Gpu { host: "n1".into(), index: 2 });
    assert_eq!(s.class, Some(FaultClass::GpuCollectiveCorruption));
    // Another error names no GPU.
    let mut ns = nodes(3);
    let info = CollectiveInfo {
        kind: Some("comm_error".into()),
        rank: Some(6),
        error: Some("ncclRemoteError".into()),
        ..Default::default()
    };
    obs(&mut ns, "n1", EventClass::NcclError, info);
    assert!(run(&ns, &j, &no_leaves).iter().all(|s| s.kind != SymptomKind::CollectiveNanCheck));
}

#[test]
fn socket_resets_from_several_peers_name_the_node_when_no_nic_is_known() {
    let mut ns = nodes(4);
    for peer in 1..4 {
        let info = CollectiveInfo {
            kind: Some("peer_reset".into()),
            peer: Some("n0.cluster.local".into()),
            error: Some("Connection reset by peer".into()),
            ..Default::default()
        };
        obs(&mut ns, &format!("n{peer}"), EventClass::NcclPeerConnection, info);
    }
    let l = {
        let j = job(4);
        let o = job_obs(&j, &ns, NOW);
        let book = AddrBook::of_nodes(&ns);
        localize(&edges(&o, &book, &|_| None).0, &no_leaves).unwrap()
    };
    assert_eq!(l.culprit, Culprit::Node { host: "n0".into() });
}

#[test]
fn one_bad_leaf_is_the_leaf_not_a_node() {
    let mut ns = nodes(4);
    // n0 and n1 hang off leaf-a, n2 off leaf-b, n3 off leaf-c; leaf-a drops traffic: every pair
    // leaving it fails, from both of its nodes, and no one node is on most edges.
    for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        obs(&mut ns, &format!("n{a}"), EventClass::IbCompletionError, ib(0, b, 0, a as u32 * 4));
    }
    let leaf_of = |h: &str, _nic: &str| {
        Some(
            match h {
                "n0" | "n1" => "leaf-a",
                "n2" => "leaf-b",
                _ => "leaf-c",
            }
            .to_string(),
        )
    };
    let j = job(4);
    let out = run(&ns, &j, &leaf_of);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).expect("a leaf symptom");
    assert_eq!(s.component, ComponentId::Switch { name: "leaf-a".into() }, "{}", s.detail);
    // No port of the leaf went down: it drops silently.
    assert_eq!(s.class, Some(FaultClass::SwitchSilentDrop));
    assert!(s.detail.contains("no one node"), "{}", s.detail);
    // The same edges with the leaf's ports down are the leaf going down.
    for h in ["n0", "n1"] {
        let st = crate::state::NicState {
            down_since: Some(NOW - 15_000),
            downs: [NOW - 15_000].into(),
            ..Default::default()
        };
        ns.get_mut(h).unwrap().nics.insert("mlx5_0".into(), st);
    }
    let out = run(&ns, &j, &leaf_of);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).expect("a leaf symptom");
    assert_eq!(s.class, Some(FaultClass::LeafSwitchDown));
}

#[test]
fn a_single_edge_suspects_both_ends_weakly_and_says_so() {
    let mut ns = nodes(3);
    obs(&mut ns, "n1", EventClass::IbCompletionError, ib(2, 2, 2, 6));
    let j = job(3);
    let out = run(&ns, &j, &no_leaves);
    let suspects: Vec<&Symptom> = out.iter().filter(|s| s.kind == SymptomKind::CommEdgeSuspect).collect();
    assert_eq!(suspects.len(), 2, "{out:#?}");
    let comps: Vec<String> = suspects.iter().map(|s| s.component.to_string()).collect();
    assert!(comps.contains(&"n1/nic:mlx5_2".to_string()) && comps.contains(&"n2/nic:mlx5_2".to_string()), "{comps:?}");
    for s in &suspects {
        assert_eq!(s.value, SINGLE_EDGE_CONFIDENCE);
        assert!(s.detail.contains("either end"), "{}", s.detail);
        assert!(s.kind.is_supporting(), "a lone edge never opens an incident by itself");
    }
    assert!(!out.iter().any(|s| s.kind == SymptomKind::CommErrors));
}

#[test]
fn the_lagging_rank_is_named() {
    let mut ns = nodes(2);
    for r in 0..8u32 {
        let behind = r == 5;
        let info = CollectiveInfo {
            kind: Some("watchdog_progress".into()),
            rank: Some(r),
            pg: Some("0".into()),
            seq: Some(if behind { 1580 } else { 1581 }),
            last_completed: Some(if behind { 1579 } else { 1580 }),
            ..Default::default()
        };
        obs(&mut ns, &format!("n{}", r / 4), EventClass::NcclTimeout, info);
    }
    // Another process group whose numbers are far apart must not be compared with group 0.
    for (r, seq) in [(0u32, 9u64), (1, 9)] {
        let info = CollectiveInfo { rank: Some(r), pg: Some("3".into()), seq: Some(seq), ..Default::default() };
        obs(&mut ns, "n0", EventClass::NcclTimeout, info);
    }
    let j = job(2);
    let lags = laggards(&job_obs(&j, &ns, NOW));
    assert_eq!(lags.len(), 1, "{lags:?}");
    assert_eq!((lags[0].rank, lags[0].seq, lags[0].ahead), (5, 1580, 1581));
    assert_eq!(lags[0].node.as_deref(), Some("n1"));
    let out = run(&ns, &j, &no_leaves);
    let s = out.iter().find(|s| s.kind == SymptomKind::CollectiveLaggard).unwrap();
    assert_eq!(s.component, ComponentId::Rank { job: "j1".into(), rank: 5 });
    assert!(s.detail.contains("waits on it"), "{}", s.detail);
}

#[test]
fn watchdog_timeouts_in_step_name_no_laggard() {
    let mut ns = nodes(1);
    for r in 0..4u32 {
        let info =
            CollectiveInfo { rank: Some(r), seq: Some(80078), op: Some("ALLREDUCE".into()), ..Default::default() };
        obs(&mut ns, "n0", EventClass::NcclTimeout, info);
    }
    assert!(laggards(&job_obs(&job(1), &ns, NOW)).is_empty());
}

#[test]
fn old_and_other_jobs_evidence_does_not_count() {
    let mut ns = nodes(3);
    obs(&mut ns, "n1", EventClass::IbCompletionError, ib(0, 2, 0, 4));
    ns.get_mut("n1").unwrap().comm.back_mut().unwrap().ts = NOW - COMM_HOLD_MS - 1;
    let mut other = ib(0, 2, 0, 4);
    other.job = Some("j2".into());
    ns.get_mut("n1").unwrap().comm.push_back(CommObs {
        ts: NOW,
        class: EventClass::IbCompletionError,
        count: 1,
        info: other,
    });
    assert!(run(&ns, &job(3), &no_leaves).is_empty());
}

#[test]
fn addresses_resolve_in_every_form_and_unknown_peers_are_noted() {
    let ns = nodes(3);
    let book = AddrBook::of_nodes(&ns);
    let nic = |node: &str, nic: &str| Some(End { node: node.into(), nic: Some(nic.into()) });
    assert_eq!(book.resolve("10.1.2.1"), nic("n1", "mlx5_2"));
    assert_eq!(book.resolve("::ffff:10.1.2.1"), nic("n1", "mlx5_2"));
    assert_eq!(book.resolve("fe80::2%ib0"), nic("n2", "eth0"));
    assert_eq!(book.resolve("n2.cluster"), Some(End { node: "n2".into(), nic: None }));
    assert_eq!(book.resolve("192.0.2.1"), None);
    assert_eq!(book.resolve("172.16.0.1"), Some(End { node: "n1".into(), nic: None }), "a host address names the node");
    assert_eq!(book.resolve("172.17.0.1"), None, "an address every node has (docker0) names none");

    let mut ns = nodes(3);
    let mut info = ib(0, 1, 0, 0);
    info.peer = Some("192.0.2.1".into());
    info.remote_addr = None;
    obs(&mut ns, "n0", EventClass::IbCompletionError, info);
    obs(&mut ns, "n0", EventClass::IbCompletionError, ib(0, 2, 0, 0));
    let out = run(&ns, &job(3), &no_leaves);
    assert!(out.iter().all(|s| s.detail.contains("192.0.2.1")), "{out:#?}");
}

#[test]
fn the_same_nic_failing_on_many_nodes_across_leaves_is_a_rail() {
    let mut ns = nodes(6);
    // mlx5_3 fails between pairs of different nodes on different leaves: no node, no leaf is common.
    for (a, b) in [(0, 1), (2, 3), (4, 5), (1, 2)] {
        obs(&mut ns, &format!("n{a}"), EventClass::IbCompletionError, ib(3, b, 3, a as u32 * 4 + 3));
    }
    let leaf_of = |h: &str, _nic: &str| Some(format!("leaf-{h}"));
    let j = job(6);
    let o = job_obs(&j, &ns, NOW);
    let book = AddrBook::of_nodes(&ns);
    let l = localize(&edges(&o, &book, &|_| None).0, &leaf_of).unwrap();
    assert_eq!(l.culprit, Culprit::Rail { nic: "mlx5_3".into() }, "{}", l.reason);
    let out = run(&ns, &j, &leaf_of);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).unwrap();
    assert_eq!(s.component, ComponentId::Job { id: "j1".into() });
    assert_eq!(s.class, None, "a rail is no catalog root; the symptom says which one");
    assert!(s.detail.contains("mlx5_3 rail"), "{}", s.detail);
}

#[test]
fn an_earlier_burst_does_not_blur_the_element_of_the_current_one() {
    let mut ns = nodes(5);
    // Four minutes ago: failing edges all over the job (another fault, now quiet).
    for (a, b) in [(1, 2), (2, 3), (3, 4), (4, 1)] {
        obs(&mut ns, &format!("n{a}"), EventClass::IbCompletionError, ib(0, b, 0, a as u32 * 4));
        ns.get_mut(&format!("n{a}")).unwrap().comm.back_mut().unwrap().ts = NOW - 240_000;
    }
    // Now: n0's mlx5_1 fails towards two peers.
    for peer in [1, 2] {
        obs(&mut ns, "n0", EventClass::IbCompletionError, ib(1, peer, 1, 1));
    }
    let out = run(&ns, &job(5), &no_leaves);
    let s = out.iter().find(|s| s.kind == SymptomKind::CommErrors).expect("a symptom on the NIC");
    assert_eq!(s.component, ComponentId::Nic { host: "n0".into(), name: "mlx5_1".into() }, "{}", s.detail);
}

#[test]
fn edges_that_cross_two_leaves_alike_name_neither() {
    let mut ns = nodes(4);
    // n0, n1 on leaf-a; n2, n3 on leaf-b; only edges between the leaves fail: either leaf may drop.
    for (a, b) in [(0, 2), (1, 3)] {
        obs(&mut ns, &format!("n{a}"), EventClass::IbCompletionError, ib(0, b, 0, a as u32 * 4));
        obs(&mut ns, &format!("n{b}"), EventClass::IbCompletionError, ib(0, a, 0, b as u32 * 4));
    }
    let leaf_of = |h: &str, _nic: &str| Some(if matches!(h, "n0" | "n1") { "leaf-a" } else { "leaf-b" }.to_string());
    let out = run(&ns, &job(4), &leaf_of);
    assert!(out.iter().all(|s| !matches!(s.component, ComponentId::Switch { .. }) && s.class.is_none()), "{out:#?}");
}
