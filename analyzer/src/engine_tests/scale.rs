//! Engine load and heartbeat cases: a 12,500-report round, short and mass silences.

use super::*;

/// One report of a 100k-GPU cluster node: 8 GPUs with 18 NVLinks each, 8 NICs with a full counter
/// set, and 8 ranks of a 64-node job.
fn big_report(n: usize, seq: u64, t: i64) -> NodeReport {
    let h = format!("node-{n:05}");
    let job = n / 64;
    let step = ((t - START) / 2000) as u64;
    let counters: faultline_proto::CounterMap = crate::state::NIC_COUNTERS
        .iter()
        .chain(["port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets", "VL15_dropped"].iter())
        .enumerate()
        .map(|(i, c)| (faultline_proto::counter_name(c), (t - START) as u64 * i as u64))
        .collect();
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: h.clone(),
        agent_version: "bench".into(),
        seq,
        timestamp_ms: t,
        interval_ms: INTERVAL as u64,
        shutdown: false,
        urgent: false,
        host: Some(HostSample { cpu_util_pct: Some(30.0), cpu_non_job_pct: Some(2.0), ..Default::default() }),
        gpus: (0..8)
            .map(|g| GpuSample {
                index: g,
                uuid: format!("GPU-{n}-{g}"),
                util_gpu_pct: Some(97.0),
                temp_c: Some(66.0),
                sm_clock_mhz: Some(1980),
                sm_clock_max_mhz: Some(1980),
                ecc: EccCounts { sbe_volatile: Some(1), dbe_volatile: Some(0), ..Default::default() },
                pcie: Some(PcieLink {
                    generation: Some(5),
                    max_generation: Some(5),
                    width: Some(16),
                    max_width: Some(16),
                    replay_count: Some(3),
                }),
                nvlinks: (0..18)
                    .map(|l| NvLinkSample {
                        link: l,
                        active: true,
                        crc_errors: Some(0),
                        replay_errors: Some(0),
                        recovery_errors: Some(0),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        nics: (0..8)
            .map(|k| NicSample {
                name: format!("mlx5_{k}"),
                operstate: Some("up".into()),
                carrier: Some(true),
                ib_state: Some("ACTIVE".into()),
                rate_gbps: Some(400.0),
                max_rate_gbps: Some(400.0),
                link_layer: Some("InfiniBand".into()),
                counters: counters.clone(),
                ..Default::default()
            })
            .collect(),
        disks: vec![],
        jobs: vec![JobSample {
            job_id: format!("job{job}"),
            world_size: Some(512),
            ranks: (0..8)
                .map(|g| RankSample {
                    rank: (n % 64) as u32 * 8 + g,
                    pid: Some(1000 + g),
                    gpus: vec![g],
                    nic: Some(format!("mlx5_{g}")),
                    state: ProcState::Running,
                    progress: Some(Progress {
                        step,
                        last_progress_ms: START + step as i64 * 2000,
                        step_time_ms: Some(2000.0),
                        compute_ms: Some(1600.0 + g as f64),
                        grad_norm: Some(1.0),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        events: vec![],
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
        driver_version: None,
        probes: Vec::new(),
    }
}

/// Measures one 10 s round of 12,500 node reports (100k GPUs): JSON decode, ingest and ticks.
/// Run with `cargo test --release -p faultline-analyzer --lib scale_round -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale_round_of_12500_reports() {
    const NODES: usize = 12_500;
    let racks = (0..NODES / 32)
        .map(|l| RackDef {
            leaf: format!("leaf-{l:03}"),
            nodes: (l * 32..(l + 1) * 32).map(|n| format!("node-{n:05}")).collect(),
        })
        .collect();
    let mut switches: Vec<SwitchDef> = (0..NODES / 32)
        .map(|l| SwitchDef { name: format!("leaf-{l:03}"), tier: SwitchTier::Leaf, uplinks: vec!["spine-0".into()] })
        .collect();
    switches.push(SwitchDef { name: "spine-0".into(), tier: SwitchTier::Spine, uplinks: vec![] });
    let mut a = Analyzer::new(EngineConfig::default(), TopologyFile { switches, racks, ..Default::default() });
    for round in 0..3i64 {
        let t0 = START + round * INTERVAL;
        let bodies: Vec<Vec<u8>> = (0..NODES)
            .map(|n| serde_json::to_vec(&big_report(n, round as u64 + 1, t0 + n as i64 / 2)).unwrap())
            .collect();
        let bytes: usize = bodies.iter().map(|b| b.len()).sum();
        let start = std::time::Instant::now();
        let reports: Vec<NodeReport> = bodies.iter().map(|b| crate::ingest::decode_json(b).unwrap()).collect();
        let parsed = start.elapsed();
        let mut ticks = std::time::Duration::ZERO;
        for (n, r) in reports.into_iter().enumerate() {
            let now = t0 + n as i64 / 2;
            a.apply(&r, now);
            if n % 500 == 0 {
                let s = std::time::Instant::now();
                a.tick(now);
                ticks += s.elapsed();
            }
        }
        let s = std::time::Instant::now();
        a.tick(t0 + 9_000);
        ticks += s.elapsed();
        let took = start.elapsed();
        eprintln!(
            "round {round}: {NODES} reports ({:.0} MB JSON) in {:.3} s: decode+validate {:.3} s, apply {:.3} s, ticks {:.3} s; graph {} vertices; {} incidents",
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            parsed.as_secs_f64(),
            (took - parsed - ticks).as_secs_f64(),
            ticks.as_secs_f64(),
            a.graph_size(),
            a.incidents().len()
        );
    }
    assert!(a.incidents().is_empty());
}

/// A bare report at a 1 s interval: enough for heartbeats.
fn heartbeat_report(node: &str, seq: u64, t: i64) -> NodeReport {
    NodeReport {
        schema_version: faultline_proto::SCHEMA_VERSION,
        node: node.into(),
        agent_version: "test".into(),
        seq,
        timestamp_ms: t,
        interval_ms: 1_000,
        shutdown: false,
        urgent: false,
        host: None,
        gpus: vec![],
        nics: vec![],
        disks: vec![],
        jobs: vec![],
        events: vec![],
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
        driver_version: None,
        probes: Vec::new(),
    }
}

/// Drive `nodes` agents at 1 s for `secs` seconds; those in `silent` send nothing.
fn drive_heartbeats(a: &mut Analyzer, nodes: &[String], silent: &[String], t: &mut i64, seq: &mut u64, secs: i64) {
    for _ in 0..secs {
        *t += 1_000;
        *seq += 1;
        for n in nodes.iter().filter(|n| !silent.contains(n)) {
            a.ingest(heartbeat_report(n, *seq, *t), *t).unwrap();
        }
        a.tick(*t);
    }
}

#[test]
fn short_silence_at_a_fast_interval_is_not_a_dead_node() {
    // Regression for the 2,000-agent load test: at a 1 s interval, a report held up a few seconds in
    // the analyzer's own queue opened node_down. Silence under HEARTBEAT_MIN_SILENCE_MS never does.
    let nodes: Vec<String> = (0..4).map(host).collect();
    let mut a = Analyzer::new(EngineConfig::default(), topology());
    let (mut t, mut seq) = (START, 0);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    drive_heartbeats(&mut a, &nodes, &nodes[1..2], &mut t, &mut seq, 6);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    assert!(a.incidents().is_empty(), "{:?}", a.incidents());
    // A real death still opens node_down once the allowance (2 s + the transit 20 s) has passed.
    drive_heartbeats(&mut a, &nodes, &nodes[1..2], &mut t, &mut seq, 30);
    let inc = a.incidents();
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0].root.to_string(), host(1));
    assert_eq!(inc[0].class, FaultClass::NodeDown);
}

#[test]
fn mass_silence_is_the_analyzer_behind_not_many_dead_nodes() {
    let nodes: Vec<String> = (0..40).map(host).collect();
    let mut a = Analyzer::new(EngineConfig::default(), TopologyFile::default());
    let (mut t, mut seq) = (START, 0);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    // Half the cluster goes quiet in the same second (analyzer overloaded, management network cut).
    drive_heartbeats(&mut a, &nodes, &nodes[..20], &mut t, &mut seq, 60);
    assert!(a.mass_silence());
    assert!(a.incidents().is_empty(), "{:?}", a.incidents());
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    assert!(!a.mass_silence());
    // One node dying among many healthy ones is still found.
    drive_heartbeats(&mut a, &nodes, &nodes[7..8], &mut t, &mut seq, 30);
    let inc = a.incidents();
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0].root.to_string(), host(7));
}
