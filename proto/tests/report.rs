//! Round-trip and validation tests for `NodeReport`: every refusal names the field.

use faultline_proto::*;

fn good() -> NodeReport {
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: "node-0001".into(),
        agent_version: "0.1.0".into(),
        seq: 7,
        timestamp_ms: 1_700_000_000_000,
        interval_ms: 10_000,
        shutdown: false,
        urgent: false,
        host: Some(HostSample {
            cpu_count: Some(64),
            cpu_util_pct: Some(12.5),
            mem_total_bytes: Some(1 << 40),
            mem_used_bytes: Some(1 << 30),
            fans: vec![FanSample { name: "fan1".into(), rpm: Some(9000.0), min_rpm: Some(1000.0), alarm: false }],
            temps: vec![TempSample { name: "cpu0".into(), celsius: 45.0, crit_celsius: Some(95.0) }],
            ..Default::default()
        }),
        gpus: vec![GpuSample {
            index: 0,
            uuid: "GPU-1".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            util_gpu_pct: Some(97.0),
            temp_c: Some(61.0),
            mem_total_bytes: Some(80 << 30),
            mem_used_bytes: Some(70 << 30),
            pcie: Some(PcieLink {
                generation: Some(5),
                max_generation: Some(5),
                width: Some(16),
                max_width: Some(16),
                replay_count: Some(0),
            }),
            nvlinks: vec![NvLinkSample { link: 0, active: true, crc_errors: Some(0), ..Default::default() }],
            ..Default::default()
        }],
        nics: vec![NicSample {
            name: "mlx5_0".into(),
            counters: [("symbol_error".into(), 3u64)].into_iter().collect(),
            rate_gbps: Some(400.0),
            ..Default::default()
        }],
        disks: vec![DiskSample {
            device: "nvme0n1".into(),
            total_bytes: Some(100),
            available_bytes: Some(50),
            ..Default::default()
        }],
        jobs: vec![JobSample {
            sched_state: None,
            sched_exit_code: None,
            job_id: "llm-70b".into(),
            scheduler: Scheduler::Slurm,
            world_size: Some(8),
            ranks: vec![RankSample {
                rank: 3,
                local_rank: Some(3),
                pid: Some(4242),
                gpus: vec![0],
                progress: Some(Progress {
                    step: 10,
                    step_time_ms: Some(2000.0),
                    loss: Some(1.5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }],
        events: vec![Event {
            ts_ms: 1_700_000_000_000,
            class: faultline_proto::EventClass::Xid,
            severity: Severity::Critical,
            component: Some("gpu0".into()),
            xid: Some(79),
            count: 1,
            ..Default::default()
        }],
        dropped: Dropped::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
        driver_version: None,
        probes: Vec::new(),
    }
}

#[test]
fn a_full_report_round_trips_through_json() {
    let r = good();
    let json = serde_json::to_vec(&r).unwrap();
    let back = NodeReport::from_json(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn the_public_field_names_are_the_documented_ones() {
    let v = serde_json::to_value(good()).unwrap();
    for k in [
        "schema_version",
        "node",
        "agent_version",
        "seq",
        "timestamp_ms",
        "interval_ms",
        "host",
        "gpus",
        "nics",
        "disks",
        "jobs",
        "events",
        "dropped",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let rank = &v["jobs"][0]["ranks"][0];
    for k in ["rank", "local_rank", "pid", "gpus"] {
        assert!(rank.get(k).is_some(), "rank is missing {k}");
    }
    assert_eq!(v["jobs"][0]["job_id"], "llm-70b");
    assert_eq!(v["jobs"][0]["scheduler"], "slurm");
}

/// One row per refusal: how to break a good report, and the field the error must name.
fn check(case: &str, mutate: impl Fn(&mut serde_json::Value), field: &str) {
    let mut v = serde_json::to_value(good()).unwrap();
    mutate(&mut v);
    let body = serde_json::to_vec(&v).unwrap();
    let err = NodeReport::from_json(&body).expect_err(case);
    assert!(err.to_string().contains(field), "{case}: error {err} does not name {field}");
}

#[test]
fn refusals_name_the_field() {
    use serde_json::json;
    check("unknown schema", |v| v["schema_version"] = json!(99), "schema_version");
    check("empty node", |v| v["node"] = json!(""), "node");
    check("node with slash", |v| v["node"] = json!("a/b"), "node");
    check("zero interval", |v| v["interval_ms"] = json!(0), "interval_ms");
    check("negative seq", |v| v["seq"] = json!(-1), "seq");
    check("string seq", |v| v["seq"] = json!("seven"), "seq");
    check("util over 100", |v| v["gpus"][0]["util_gpu_pct"] = json!(180.0), "gpus[0].util_gpu_pct");
    check("temperature absurd", |v| v["gpus"][0]["temp_c"] = json!(9000.0), "gpus[0].temp_c");
    check("memory used above total", |v| v["gpus"][0]["mem_used_bytes"] = json!(1u64 << 50), "gpus[0].mem_used_bytes");
    check("negative counter", |v| v["nics"][0]["counters"]["symbol_error"] = json!(-5), "nics[0].counters");
    check(
        "duplicate gpu",
        |v| {
            let g = v["gpus"][0].clone();
            v["gpus"].as_array_mut().unwrap().push(g);
        },
        "gpus[1].index",
    );
    check(
        "too many gpus",
        |v| {
            let g = v["gpus"][0].clone();
            v["gpus"] = json!(
                (0..65)
                    .map(|i| {
                        let mut g = g.clone();
                        g["index"] = json!(i);
                        g
                    })
                    .collect::<Vec<_>>()
            );
        },
        "gpus",
    );
    check("cpu over 100", |v| v["host"]["cpu_util_pct"] = json!(101.0), "host.cpu_util_pct");
    check("negative step time", |v| v["jobs"][0]["ranks"][0]["progress"]["step_time_ms"] = json!(-3.0), "step_time_ms");
    check("event count zero", |v| v["events"][0]["count"] = json!(0), "events[0].count");
    check("bad job id", |v| v["jobs"][0]["job_id"] = json!("a b"), "jobs[0].job_id");
    check("pcie width absurd", |v| v["gpus"][0]["pcie"]["width"] = json!(512), "gpus[0].pcie.width");
}

#[test]
fn non_finite_numbers_cannot_sneak_in() {
    // JSON has no NaN; a Rust caller that builds one is refused by validate().
    let mut r = good();
    r.gpus[0].power_w = Some(f64::NAN);
    let e = r.validate().unwrap_err();
    assert!(e.to_string().contains("gpus[0].power_w"), "{e}");
    let mut r = good();
    r.jobs[0].ranks[0].progress.as_mut().unwrap().loss = Some(f64::INFINITY);
    assert!(r.validate().unwrap_err().to_string().contains("loss"));
}

#[test]
fn malformed_json_is_a_decode_error() {
    let e = NodeReport::from_json(b"{\"node\": ").unwrap_err();
    assert!(matches!(e, ReportError::Decode { .. }), "{e}");
    let e = NodeReport::from_json(b"[]").unwrap_err();
    assert!(matches!(e, ReportError::Decode { .. }), "{e}");
}
