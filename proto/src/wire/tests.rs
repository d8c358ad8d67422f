//! Round-trip and refusal tests of the compact encoding.

use super::encode::to_wire;
use super::*;
use crate::report::*;

/// One of everything, with absent values among present ones.
fn sample() -> NodeReport {
    let link = |l: u32, crc: Option<u64>| NvLinkSample {
        link: l,
        active: l != 3,
        crc_errors: crc,
        replay_errors: Some(0),
        recovery_errors: None,
        tx_bytes: Some(u64::MAX),
        rx_bytes: Some(1 << 40),
        crc_flit_errors: crc.map(|c| c / 2),
        crc_data_errors: None,
    };
    let json = r#"{
        "schema_version": 1, "node": "node-7", "agent_version": "0.1.0", "seq": 42,
        "timestamp_ms": 1700000000123, "interval_ms": 10000, "urgent": true,
        "host": {"cpu_count": 64, "cpu_util_pct": 12.5, "load1": 3.0, "load5": null, "load15": 1.0,
                 "mem_total_bytes": 1099511627776, "mem_used_bytes": null, "mem_available_bytes": 7,
                 "swap_total_bytes": 0, "swap_used_bytes": 0, "uptime_s": 1000,
                 "fans": [{"name": "fan1", "rpm": 9000.0, "min_rpm": null, "alarm": true}],
                 "temps": [{"name": "cpu", "celsius": 55.5, "crit_celsius": 95.0}]},
        "gpus": [{"index": 0, "uuid": "GPU-1", "name": "H100", "serial": null, "pci_bus_id": "0000:17:00.0",
                  "state": "ok", "util_gpu_pct": 99.0, "util_mem_pct": null, "mem_total_bytes": 80,
                  "mem_used_bytes": 1, "mem_free_bytes": 79, "temp_c": 61.25, "mem_temp_c": null,
                  "power_w": 700.1, "power_limit_w": 700.0, "energy_mj": 123, "sm_clock_mhz": 1980,
                  "sm_clock_max_mhz": 1980, "mem_clock_mhz": null, "mem_clock_max_mhz": 2619,
                  "throttle_mask": 4, "throttle_reasons": ["sw_power_cap"], "ecc": {"sbe_volatile": 1,
                  "dbe_volatile": 0, "sbe_aggregate": null, "dbe_aggregate": 0},
                  "retired_pages": {"sbe": 1, "dbe": 0, "pending": false},
                  "row_remap": {"correctable": 0, "uncorrectable": 1, "pending": true, "failure": false},
                  "pcie": {"generation": 5, "max_generation": 5, "width": 16, "max_width": 16, "replay_count": null},
                  "processes": [{"pid": 10, "used_mem_bytes": null}], "not_supported": ["fan"],
                  "clock_event_ns": {"sw_thermal": 5}, "nvml_error": "timeout", "pci_present": true,
                      "mig": [{"gpu_instance_id": 7, "compute_instance_id": 0, "profile": "1g.10gb",
                               "uuid": "MIG-1", "mem_total_bytes": 10, "mem_used_bytes": null}]}],
        "nics": [{"name": "mlx5_0", "kind": "infiniband", "netdev": "ib0", "port": 1, "operstate": "up",
                  "carrier": true, "carrier_changes": 2, "speed_mbps": null, "mtu": 4096,
                  "link_layer": "InfiniBand", "ib_state": "ACTIVE", "ib_phys_state": "LinkUp",
                  "rate_gbps": 400.0, "counters": {"port_xmit_data": 99, "symbol_error": 0},
                  "fabric": true, "saturated": ["port_xmit_wait"]}],
        "disks": [{"device": "nvme0n1", "mount": "/", "total_bytes": 1, "available_bytes": null,
                   "read_only": true, "write_bytes": 5}],
        "jobs": [{"job_id": "j1", "scheduler": "slurm", "world_size": 16, "sched_state": "running",
                  "sched_exit_code": -9, "ranks": [{"rank": 3, "local_rank": 3, "pid": 77, "gpus": [3],
                  "nic": "mlx5_0", "state": "running", "cpu_seconds": 1.5, "rss_bytes": null,
                  "exit_code": -1, "io_write_bytes": 8,
                  "progress": {"step": 100, "last_progress_ms": 1700000000000, "step_time_ms": 2.5,
                               "step_time_avg_ms": null, "compute_ms": 1.0, "loss": 2.25, "loss_step": 99,
                               "grad_norm": null, "nonfinite_loss": false, "status": "checkpointing",
                               "exit_code": null}}]}],
        "events": [{"ts_ms": 1700000000000, "source": "kmsg", "class": "xid", "severity": "critical",
                    "component": "gpu0", "xid": 79, "device": "0000:17:00.0", "pid": null, "count": 2,
                    "message": "NVRM: Xid 79"}],
        "dropped": {"reports": 1, "events": 2, "progress": 3},
        "collector_errors": {"nvml": 4},
        "driver_version": "550.54.15",
        "expected_gpus": 8
}"#;
    let mut r: NodeReport = serde_json::from_str(json).unwrap();
    r.gpus[0].nvlinks = vec![link(0, Some(5)), link(1, None), link(3, Some(0))];
    r
}

#[test]
fn a_report_survives_the_round_trip() {
    let r = sample();
    let bytes = encode(&r);
    assert_eq!(decode(&bytes).unwrap(), r);
}

#[test]
fn garbage_and_bad_indices_are_refused_with_the_field() {
    let e = decode(b"\xff\xff\xff").unwrap_err();
    assert!(e.to_string().contains("protobuf"), "{e}");
    let mut w = to_wire(&sample());
    w.node = 10_000;
    let e = decode(&prost::Message::encode_to_vec(&w)).unwrap_err();
    assert_eq!(e.field(), "node");
    let mut w = to_wire(&sample());
    if let Some(n) = w.nics.first_mut() {
        n.counter_values.push(1);
        let e = decode(&prost::Message::encode_to_vec(&w)).unwrap_err();
        assert_eq!(e.field(), "nics[0].counters", "{e}");
    }
}

#[test]
fn probe_samples_survive_the_round_trip_and_bad_indices_name_the_probe() {
    let mut r = sample();
    let p = |peer: &str, rtt: Option<u32>| crate::probe::ProbeSample {
        peer: peer.into(),
        iface: "mlx5_0".into(),
        local_addr: "10.0.0.7".into(),
        peer_addr: "10.0.1.2".into(),
        sent: 8,
        received: if rtt.is_some() { 7 } else { 0 },
        rtt_p50_us: rtt,
        rtt_max_us: rtt.map(|r| r * 3),
    };
    r.probes = vec![p("node-2", Some(45)), p("node-3", None)];
    assert_eq!(decode(&encode(&r)).unwrap(), r);
    assert!(decode(&encode(&r)).unwrap().validate().is_ok());
    let mut w = to_wire(&r);
    w.probes[1].peer_addr = 99_999;
    let e = decode(&prost::Message::encode_to_vec(&w)).unwrap_err();
    assert_eq!(e.field(), "probes[1].peer_addr", "{e}");
}

/// The bytes of `sample()` as the encoder before the string table was written straight from the
/// report (prost over `to_wire`) wrote them: what goes on the wire must not change, since deployed
/// analyzers read it and the delta encoding compresses against the previous report's bytes.
const SAMPLE_BYTES: &[u8] = include_bytes!("testdata/sample.pb");

#[test]
fn the_bytes_are_those_of_the_messages_and_do_not_change() {
    let r = sample();
    assert_eq!(encode(&r), prost::Message::encode_to_vec(&to_wire(&r)));
    assert_eq!(encode(&r), SAMPLE_BYTES);
}

#[test]
fn a_healthy_nodes_report_keeps_its_bytes_and_its_trip() {
    let r: NodeReport = serde_json::from_str(include_str!("testdata/healthy-node.json")).unwrap();
    assert_eq!(r.gpus.len(), 8);
    let bytes = encode(&r);
    assert_eq!(bytes, include_bytes!("testdata/healthy-node.pb"));
    let back = decode(&bytes).unwrap();
    assert!(back.validate().is_ok());
    assert_eq!(back, r);
}

/// Bodies outside the form `encode` writes (fields out of order, repeated, unknown, numbers not
/// packed) are valid protobuf all the same: they decode as `prost` reads them.
#[test]
fn bodies_in_another_valid_form_decode_as_prost_reads_them() {
    let r = sample();
    let bytes = encode(&r);
    assert!(super::read::report(&bytes).is_some());
    let general = |b: &[u8]| super::decode::from_wire(<Report as prost::Message>::decode(b).unwrap()).unwrap();
    // `node` again at the end (tag 3, index 0): the last one counts.
    let mut again = bytes.clone();
    again.extend_from_slice(&[3 << 3, 0]);
    assert!(super::read::report(&again).is_none());
    assert_eq!(decode(&again).unwrap(), general(&again));
    assert_eq!(decode(&again).unwrap().node, to_wire(&r).strings[0]);
    // A field from a newer agent (tag 99, a number): skipped.
    let mut newer = bytes.clone();
    newer.extend_from_slice(&[0x98, 0x06, 7]);
    assert!(super::read::report(&newer).is_none());
    assert_eq!(decode(&newer).unwrap(), r);
    // Collector-error names not packed (one key per field) and the fields in reverse order.
    let mut w = to_wire(&r);
    w.collector_error_keys.clear();
    w.collector_error_values.clear();
    let mut unpacked = prost::Message::encode_to_vec(&w);
    let mut tail = Vec::new();
    prost::encoding::uint64::encode(20, &4, &mut tail);
    prost::encoding::uint32::encode(19, &to_wire(&r).collector_error_keys[0], &mut tail);
    unpacked.extend_from_slice(&tail);
    assert!(super::read::report(&unpacked).is_none());
    assert_eq!(decode(&unpacked).unwrap(), r);
}

/// The NVLink columns' bitsets of absent values take a word per 64 links: a GPU with more links than
/// one word holds, absent values on both sides of the boundary, reads back the same through the
/// in-place reader and through `prost`. With 2,100 links the GPU's message is over 16 KiB, so its
/// length takes three bytes, not the two the writer keeps for it.
#[test]
fn nvlink_columns_past_one_bitset_word_survive_the_trip() {
    for n in [130u32, 2_100] {
        nvlinks_survive_the_trip(n);
    }
}

fn nvlinks_survive_the_trip(n: u32) {
    let mut r = sample();
    r.gpus[0].nvlinks = (0..n)
        .map(|l| NvLinkSample {
            link: l,
            active: l % 5 != 0,
            crc_errors: (l % 7 != 3).then_some(u64::from(l) << 20),
            replay_errors: (l != 64 && l != 129).then_some(1),
            recovery_errors: None,
            tx_bytes: Some(u64::MAX - u64::from(l)),
            rx_bytes: (l < 70).then_some(u64::from(l)),
            crc_flit_errors: (l == 63).then_some(9),
            crc_data_errors: Some(0),
        })
        .collect();
    let bytes = encode(&r);
    assert_eq!(bytes, prost::Message::encode_to_vec(&to_wire(&r)));
    let general = super::decode::from_wire(<Report as prost::Message>::decode(&bytes[..]).unwrap()).unwrap();
    assert_eq!(super::read::report(&bytes).as_ref(), Some(&general));
    assert_eq!(general, r);
}
