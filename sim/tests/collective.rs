//! The faults only collective-communication evidence shows: the training-log lines the simulator
//! writes reach the analyzer through the agent's NCCL classifier (with the peer's address, the
//! local NIC, the rank), no counter of a silently dropping leaf moves, and the real analyzer names
//! the element each of them hits.

use faultline_proto::{EventClass, EventSource, NodeReport};
use faultline_sim::runner::RunOptions;
use faultline_sim::world::{Outgoing, World};
use faultline_sim::{Scenario, addrs};

const EPOCH: i64 = 1_700_000_000_000;

/// 8 nodes on two leaves (tor), one 6-node job across both leaves, one 2-node job; `rest` adds
/// behaviour and faults.
fn scenario(link_layer: &str, rest: &str) -> Scenario {
    let src = format!(
        r#"
name = "collective"
seed = 11
duration_s = 2400
noise = 1.0
[cluster]
nodes = 8
nodes_per_leaf = 4
gpus_per_node = 8
nics_per_node = 8
link_layer = "{link_layer}"
[[job]]
id = "big"
hosts = ["node-0000", "node-0001", "node-0002", "node-0004", "node-0005", "node-0006"]
step_time_s = 2.0
progress_api = true
[[job]]
id = "pair"
hosts = ["node-0003", "node-0007"]
step_time_s = 1.0
{rest}
"#
    );
    Scenario::parse(&src, "collective.toml").unwrap()
}

fn run(sc: &Scenario, until_s: i64) -> Vec<Outgoing> {
    World::new(sc, EPOCH).run_until(until_s * 1000)
}

fn log_events(rs: &[Outgoing]) -> Vec<(&NodeReport, &faultline_proto::Event)> {
    rs.iter()
        .flat_map(|o| o.report.events.iter().map(move |e| (&o.report, e)))
        .filter(|(_, e)| e.source == EventSource::TrainingLog)
        .collect()
}

#[test]
fn connection_resets_reach_the_analyzer_as_classified_lines_naming_peers_by_address() {
    let sc = scenario(
        "ethernet",
        "[[fault]]\nkind = \"nic_connection_resets\"\ntarget = \"node-0001/nic:mlx5_3\"\nat_s = 600\nduration_s = 300\n",
    );
    let rs = run(&sc, 960);
    let evs = log_events(&rs);
    assert!(!evs.is_empty(), "no training-log event arrived");
    // Nothing before the fault.
    assert!(evs.iter().all(|(_, e)| e.ts_ms >= EPOCH + 600_000 - 5_000), "{evs:#?}");
    // The NIC's own ranks: completions on hca mlx5_3, peers by their hosts' addresses.
    let own: Vec<_> = evs
        .iter()
        .filter(|(r, e)| r.node == "node-0001" && e.class == EventClass::IbCompletionError)
        .map(|(_, e)| e.collective.clone().unwrap())
        .collect();
    assert!(!own.is_empty());
    for c in &own {
        assert_eq!(c.hca.as_deref(), Some("mlx5_3"));
        assert_eq!(c.job.as_deref(), Some("big"));
        let peer = c.peer.as_deref().unwrap();
        assert!(peer == addrs::host(0) || peer == addrs::host(2), "ring peers of node-0001 are 0000 and 0002: {peer}");
        assert!(c.rank.is_some());
    }
    // The peers' lines name the NIC by its RoCE GID, and its host's socket resets.
    let ip = addrs::nic(1, 3);
    let names_it = |a: Option<&str>| a.is_some_and(|a| a.trim_start_matches("::ffff:") == ip);
    assert!(
        evs.iter()
            .any(|(r, e)| r.node == "node-0000" && names_it(e.collective.as_ref().unwrap().remote_addr.as_deref())),
        "a peer's completion names the NIC by its GID"
    );
    assert!(evs.iter().any(|(_, e)| e.class == EventClass::NcclPeerConnection));
    assert!(evs.iter().any(|(_, e)| e.collective.as_ref().and_then(|c| c.error.as_deref()) == Some("ncclRemoteError")));
    // The job `pair` shares no NIC with it: its logs stay quiet.
    assert!(evs.iter().all(|(_, e)| e.collective.as_ref().unwrap().job.as_deref() == Some("big")));
    // The reports carry the addresses the lines use.
    let r1 = rs.iter().map(|o| &o.report).find(|r| r.node == "node-0001").unwrap();
    assert_eq!(r1.host.as_ref().unwrap().addrs, vec![addrs::host(1)]);
    assert_eq!(r1.nics.iter().find(|n| n.name == "mlx5_3").unwrap().addrs, vec![addrs::nic(1, 3)]);
}

#[test]
fn a_silently_dropping_leaf_moves_no_counter_and_its_edges_fail_now_and_then() {
    let clean = scenario("infiniband", "");
    let faulty = scenario(
        "infiniband",
        "[[fault]]\nkind = \"switch_silent_drop\"\ntarget = \"switch:leaf-01\"\nat_s = 300\nduration_s = 600\n",
    );
    let (a, b) = (run(&clean, 900), run(&faulty, 900));
    // The port counters a drop would move on a switch that reported it (IB port counters of the
    // hosts' ports: discards, receive and relay errors, link events), as each node last reported them.
    const ERRORS: [&str; 7] = [
        "symbol_error",
        "port_rcv_errors",
        "port_xmit_discards",
        "port_rcv_switch_relay_errors",
        "link_downed",
        "local_link_integrity_errors",
        "excessive_buffer_overrun_errors",
    ];
    let errors = |rs: &[Outgoing]| -> std::collections::BTreeMap<(String, String), u64> {
        let mut v = std::collections::BTreeMap::new();
        for r in rs.iter().map(|o| &o.report) {
            for n in r.nics.iter().filter(|n| n.is_fabric()) {
                for k in ERRORS {
                    if let Some(x) = n.counters.get(k) {
                        v.insert((r.node.clone(), format!("{}/{k}", n.name)), *x);
                    }
                }
            }
        }
        v
    };
    let (ea, eb) = (errors(&a), errors(&b));
    let differ: Vec<_> = ea.iter().filter(|(k, x)| eb.get(*k) != Some(*x)).take(5).collect();
    assert!(differ.is_empty(), "a silent drop moves no error counter: {differ:?}");
    let evs = log_events(&b);
    assert!(evs.iter().any(|(_, e)| e.class == EventClass::IbCompletionError), "sporadic completion errors");
    for (r, e) in &evs {
        let c = e.collective.as_ref().unwrap();
        if e.class == EventClass::IbCompletionError {
            // The edge crosses leaf-01 (nodes 4..7): one of its ends is there.
            let here = ["node-0004", "node-0005", "node-0006", "node-0007"].contains(&r.node.as_str());
            let peer_there = (4..8).any(|n| c.peer.as_deref() == Some(addrs::host(n).as_str()));
            assert!(here || peer_there, "{} {:?}", r.node, c);
        }
    }
}

#[test]
fn a_hung_job_times_out_with_one_rank_behind() {
    let sc = scenario(
        "infiniband",
        "[behaviour]\nnccl_timeout_s = 300\n[[fault]]\nkind = \"job_hang\"\ntarget = \"job:big\"\nat_s = 600\nduration_s = 600\n",
    );
    let rs = run(&sc, 1150);
    let seqs: Vec<u64> = log_events(&rs)
        .iter()
        .filter_map(|(_, e)| e.collective.as_ref())
        .filter(|c| c.kind.as_deref() == Some("watchdog_timeout"))
        .filter_map(|c| c.seq)
        .collect();
    assert_eq!(seqs.len(), 48, "every rank of the 6-node job times out once: {seqs:?}");
    let max = *seqs.iter().max().unwrap();
    assert_eq!(seqs.iter().filter(|s| **s == max - 1).count(), 1, "{seqs:?}");
    assert_eq!(seqs.iter().filter(|s| **s == max).count(), 47);
}

#[test]
fn the_analyzer_names_what_only_collective_evidence_shows() {
    let sc = scenario(
        "ethernet",
        r#"[behaviour]
nan_check_share = 1.0
[[fault]]
kind = "nic_connection_resets"
target = "node-0005/nic:mlx5_2"
at_s = 600
duration_s = 300
[[fault]]
kind = "switch_silent_drop"
target = "switch:leaf-00"
at_s = 1200
duration_s = 300
[[fault]]
kind = "gpu_collective_corruption"
target = "node-0002/gpu4"
at_s = 1800
duration_s = 300
"#,
    );
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    print!("{}", r.table());
    for f in &r.faults {
        assert!(f.detected && f.correct, "{} on {} not diagnosed: {:?}", f.kind, f.target, f.diagnosed_root);
    }
    // Check before delivery: the all-reduce test keeps the corrupting GPU's node drained while it
    // corrupts (its #wrong column is not 0) and passes once it stopped.
    let v: Vec<_> =
        r.validation.iter().filter(|v| v.kind == faultline_proto::FaultClass::GpuCollectiveCorruption).collect();
    assert_eq!(v.len(), 2, "{:?}", r.validation);
    let (during, after) = (v[0], v[1]);
    assert_eq!((during.phase.as_str(), during.passed), ("during", false), "{during:?}");
    let nccl = during.checks.iter().find(|c| c.name == "nccl_allreduce").unwrap();
    assert!(!nccl.passed && nccl.summary.contains("FAILED"), "{nccl:?}");
    assert_eq!((after.phase.as_str(), after.passed), ("after", true), "{after:?}");
}

#[test]
fn the_judge_knows_where_collective_evidence_cannot_exist() {
    let sc = scenario(
        "infiniband",
        r#"[behaviour]
nan_check_share = 0.0
[[fault]]
kind = "nic_connection_resets"
target = "node-0001/nic:mlx5_3"
at_s = 600
duration_s = 300
[[fault]]
kind = "nic_connection_resets"
target = "node-0003/nic:mlx5_3"
at_s = 600
duration_s = 300
[[fault]]
kind = "switch_silent_drop"
target = "switch:leaf-01"
at_s = 1000
duration_s = 300
[[fault]]
kind = "gpu_collective_corruption"
target = "node-0002/gpu4"
at_s = 1400
duration_s = 300
"#,
    );
    let why = faultline_sim::fuzz::judge::all(&sc);
    assert_eq!(why[0], None, "node-0001 has two ring peers in `big`");
    assert!(why[1].as_deref().is_some_and(|w| w.contains("one peer")), "{:?}", why[1]);
    assert_eq!(why[2], None, "`big` crosses leaf-01 from three of its nodes");
    assert!(why[3].as_deref().is_some_and(|w| w.contains("NaN check")), "{:?}", why[3]);
}
