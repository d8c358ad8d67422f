//! The collective-library evidence on events (`Event::collective`) and the NIC addresses
//! (`NicSample::addrs`, `HostSample::addrs`) survive both encodings, and an older report without them still reads.

use faultline_proto::{
    CollectiveInfo, Event, EventClass, EventSource, HostSample, NicKind, NicSample, NodeReport, wire,
};

fn report() -> NodeReport {
    let mut r = NodeReport::empty("node-7");
    r.timestamp_ms = 1_700_000_000_000;
    r.host = Some(HostSample { addrs: vec!["172.16.0.7".into(), "fe80::7".into()], ..Default::default() });
    r.nics.push(NicSample {
        name: "mlx5_3".into(),
        kind: NicKind::Infiniband,
        netdev: Some("ib3".into()),
        addrs: vec!["10.1.3.17".into(), "fe80::1".into()],
        ..Default::default()
    });
    let mut e = Event::new(1_700_000_000_000, EventSource::TrainingLog, EventClass::IbCompletionError);
    e.component = Some("nic:mlx5_3".into());
    e.message = "NET/IB: Got completion from peer 10.0.8.21<41327> with status=12".into();
    e.collective = Some(CollectiveInfo {
        kind: Some("ib_completion".into()),
        job: Some("4242".into()),
        rank: Some(3),
        local_rank: Some(3),
        device: Some(3),
        hostname: Some("node-7".into()),
        peer: Some("10.0.8.21".into()),
        peer_port: Some(41327),
        local_addr: Some("10.1.3.17".into()),
        remote_addr: Some("10.1.3.21".into()),
        hca: Some("mlx5_3".into()),
        seq: Some(1580),
        op: Some("ALLREDUCE".into()),
        timeout_ms: Some(600_000),
        last_completed: Some(1579),
        error: Some("IBV_WC_RETRY_EXC_ERR".into()),
        pg: Some("0".into()),
    });
    r.events.push(e);
    let mut plain = Event::new(1_700_000_000_001, EventSource::TrainingLog, EventClass::NcclPeerConnection);
    plain.collective = Some(CollectiveInfo { peer: Some("node2".into()), ..Default::default() });
    r.events.push(plain);
    r
}

#[test]
fn collective_evidence_survives_protobuf_and_json() {
    let r = report();
    r.validate().unwrap();
    assert_eq!(wire::decode(&wire::encode(&r)).unwrap(), r);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"training_log\"") && json.contains("\"nccl_peer_connection\""), "{json}");
    assert_eq!(serde_json::from_str::<NodeReport>(&json).unwrap(), r);
}

#[test]
fn reports_without_the_new_fields_still_read() {
    let json = r#"{"schema_version":1,"node":"n","agent_version":"x","seq":1,"timestamp_ms":5,"interval_ms":10000,
        "nics":[{"name":"mlx5_0","netdev":null,"port":1,"operstate":"up","carrier":true,"carrier_changes":0,
                 "speed_mbps":null,"mtu":null,"link_layer":null,"ib_state":null,"ib_phys_state":null,"rate_gbps":null}],
        "events":[{"ts_ms":5,"class":"nccl_error","message":"x"}]}"#;
    let r: NodeReport = serde_json::from_str(json).unwrap();
    assert!(r.nics[0].addrs.is_empty());
    assert_eq!(r.events[0].collective, None);
}

#[test]
fn an_over_long_collective_string_is_refused_with_its_field() {
    let mut r = report();
    r.events[0].collective.as_mut().unwrap().error = Some("x".repeat(100_000));
    let e = r.validate().unwrap_err();
    assert!(e.to_string().contains("events[0].collective.error"), "{e}");
}
