//! Collective-communication evidence through the whole engine: training-log events from several
//! nodes whose NCCL lines name the same peer NIC (by its RoCE address) open one incident on that NIC,
//! with no counter moving anywhere; a lone edge opens none by itself.

use super::*;

/// Every NIC reports an address: node i's mlx5_k is 10.1.k.i, its OOB eth0 address 10.0.0.i.
fn with_addrs(w: &mut World) {
    w.mutate(|r, _| {
        let i: u32 = r.node[5..].parse().unwrap();
        for n in &mut r.nics {
            let k: u32 = n.name[5..].parse().unwrap();
            n.addrs = vec![format!("10.1.{k}.{i}")];
        }
    });
}

/// Node `from` (rank `rank`, NIC mlx5_`nic`) logs a completion error naming node `to`'s mlx5_`nic`.
fn ib_error(w: &mut World, from: usize, to: usize, nic: u32, rank: u32) {
    let mut e = Event::new(w.t, EventSource::TrainingLog, EventClass::IbCompletionError);
    e.component = Some(format!("nic:mlx5_{nic}"));
    e.count = 4;
    e.message = format!("NET/IB: Got completion from peer 10.0.0.{to}<40000> with status=12 … hca mlx5_{nic}");
    e.collective = Some(CollectiveInfo {
        kind: Some("ib_completion".into()),
        job: Some("big".into()),
        rank: Some(rank),
        peer: Some(format!("10.0.0.{to}")),
        remote_addr: Some(format!("10.1.{nic}.{to}")),
        hca: Some(format!("mlx5_{nic}")),
        error: Some("IBV_WC_RETRY_EXC_ERR".into()),
        ..Default::default()
    });
    let r = w.report(&host(from), vec![e]);
    w.a.ingest(r, w.t).unwrap();
}

#[test]
fn completion_errors_from_three_peers_open_one_incident_on_the_nic_they_name() {
    let (mut w, at) = case(60, 0, with_addrs);
    // node-0004's mlx5_2 silently drops: its rail-2 peers in job `big` time out on it. Ranks on
    // node-0000, 0001 and 0005 using mlx5_2 are 2, 6 and 14.
    w.stalled.insert("big".into());
    for (from, rank) in [(0, 2), (1, 6), (5, 14)] {
        ib_error(&mut w, from, 4, 2, rank);
    }
    w.run(60);
    let (i, ttd) = w.expect_one("node-0004/nic:mlx5_2", &["big"], at);
    assert!(ttd < 60.0, "diagnosed in {ttd} s");
    assert!(
        i.evidence.iter().any(|e| e.detail.contains("3 of 3 failing edges")),
        "the evidence says how many edges: {:#?}",
        i.evidence
    );
}

#[test]
fn a_lone_edge_opens_nothing_by_itself() {
    let (mut w, _) = case(60, 0, with_addrs);
    ib_error(&mut w, 0, 4, 1, 1);
    w.run(60);
    assert!(w.opened().is_empty(), "{:?}", w.opened().iter().map(|i| i.root.to_string()).collect::<Vec<_>>());
    let sym = w.a.job_symptoms.get("big").cloned().unwrap_or_default();
    assert_eq!(sym.iter().filter(|s| s.kind == SymptomKind::CommEdgeSuspect).count(), 2, "{sym:#?}");
}
