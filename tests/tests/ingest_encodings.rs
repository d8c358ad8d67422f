//! The compact encoding (`faultline_proto::wire`, `application/x-protobuf`) against JSON, through the
//! analyzer's one ingest path:
//! - every report a simulated cluster sends survives the compact round trip unchanged;
//! - the same scenario gives the same incidents whichever encoding carries its reports, deltas
//!   (`wire::delta`, what agents send) included;
//! - a delta rebuilds exactly the report it was made from;
//! - what a healthy 8-GPU, 8-NIC node's report costs in each (printed; run with `--nocapture`).

use std::path::Path;

use faultline_analyzer::ingest::Encoding;
use faultline_proto::{NodeReport, wire};
use faultline_sim::{RunOptions, Scenario, World};

fn scenario(name: &str) -> Scenario {
    Scenario::from_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/scenarios").join(name)).unwrap()
}

/// A healthy cluster: 8 H100 nodes with 8 GPUs and 8 NICs each, one job over all of them, the
/// realistic world's noise, no fault.
const HEALTHY: &str = r#"
name = "healthy-8x8"
seed = 3
duration_s = 120
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = 8
nodes_per_leaf = 4
spines = 2
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"

[[job]]
id = "train"
nodes = 8
step_time_s = 2.0
"#;

#[test]
fn every_simulated_report_survives_the_compact_round_trip() {
    for sc in [Scenario::parse(HEALTHY, "healthy").unwrap(), scenario("smoke.toml")] {
        let mut w = World::new(&sc, 1_700_000_000_000);
        let mut n = 0;
        while w.t_ms < 300_000 {
            for o in w.step() {
                let back = wire::decode(&wire::encode(&o.report)).unwrap();
                assert_eq!(back, o.report, "{} seq {}", o.report.node, o.report.seq);
                n += 1;
            }
        }
        assert!(n > 50, "{n} reports");
    }
}

#[test]
fn the_same_reports_give_the_same_incidents_in_json_and_compact() {
    let sc = scenario("smoke.toml");
    let run =
        |encoding| faultline_sim::run(&sc, RunOptions { encoding: Some(encoding), ..Default::default() }).unwrap();
    let json = run(Encoding::Json);
    let compact = run(Encoding::Protobuf);
    let delta = run(Encoding::Delta);
    assert_eq!(delta.analyzer.rejected, 0, "{:?}", delta.analyzer.first_rejection);
    assert_eq!(json.incidents, delta.incidents);
    assert_eq!(json.faults, delta.faults);
    assert!(
        delta.analyzer.report_bytes * 2 < compact.analyzer.report_bytes,
        "deltas {} B against full compact {} B",
        delta.analyzer.report_bytes,
        compact.analyzer.report_bytes
    );
    assert_eq!(json.analyzer.rejected, 0, "{:?}", json.analyzer.first_rejection);
    assert_eq!(compact.analyzer.rejected, 0, "{:?}", compact.analyzer.first_rejection);
    assert_eq!(json.analyzer.reports, compact.analyzer.reports);
    assert!(!json.incidents.is_empty(), "smoke.toml injects faults; the run should find them");
    assert_eq!(json.incidents, compact.incidents);
    assert_eq!(json.faults, compact.faults);
    println!(
        "smoke.toml: {} reports, {} incidents each way; {:.0} B/report JSON, {:.0} B/report compact, {:.0} B/report as deltas",
        json.analyzer.reports,
        json.incidents.len(),
        json.analyzer.report_bytes as f64 / json.analyzer.reports as f64,
        compact.analyzer.report_bytes as f64 / compact.analyzer.reports as f64,
        delta.analyzer.report_bytes as f64 / delta.analyzer.reports as f64
    );
}

#[test]
fn bytes_per_report_of_a_healthy_8_gpu_8_nic_node() {
    let sc = Scenario::parse(HEALTHY, "healthy").unwrap();
    let mut w = World::new(&sc, 1_700_000_000_000);
    let mut reports: Vec<NodeReport> = Vec::new();
    while w.t_ms < 120_000 {
        // Past the first minute: jobs running, counters moving.
        let out = w.step();
        if w.t_ms > 60_000 {
            reports.extend(out.into_iter().map(|o| o.report));
        }
    }
    let reports: Vec<NodeReport> = reports.into_iter().filter(|r| r.gpus.len() == 8 && r.nics.len() >= 8).collect();
    assert!(!reports.is_empty());
    let n = reports.len() as f64;
    let json: usize = reports.iter().map(|r| serde_json::to_vec(r).unwrap().len()).sum();
    let compact: usize = reports.iter().map(|r| wire::encode(r).len()).sum();
    let max = reports.iter().map(|r| wire::encode(r).len()).max().unwrap_or(0);
    // As agents send them: each report a delta against its node's previous one, rebuilt exactly.
    let (mut delta, mut delta_max, mut deltas) = (0usize, 0usize, 0usize);
    let mut last: std::collections::HashMap<&str, (u64, Vec<u8>)> = Default::default();
    for r in &reports {
        let full = wire::encode(r);
        if let Some((base_seq, base)) = last.get(r.node.as_str()) {
            let body = wire::delta::encode(&r.node, *base_seq, base, r.seq, &full);
            let env = wire::delta::envelope(&body).unwrap();
            assert_eq!(wire::delta::rebuild(&env, base).unwrap(), full, "{} seq {}", r.node, r.seq);
            delta += body.len();
            delta_max = delta_max.max(body.len());
            deltas += 1;
        }
        last.insert(&r.node, (r.seq, full));
    }
    assert!(deltas > 0);
    println!(
        "healthy 8-GPU 8-NIC node, {} reports: JSON {:.0} B avg, compact {:.0} B avg (max {max} B), {:.1}x smaller; \
         as deltas {:.0} B avg (max {delta_max} B) over {deltas}",
        reports.len(),
        json as f64 / n,
        compact as f64 / n,
        json as f64 / compact as f64,
        delta as f64 / deltas as f64
    );
    assert!(compact < json, "the compact encoding is larger than JSON");
    assert!(delta / deltas < 4096, "a healthy node's delta averages {} B, over 4 KiB", delta / deltas);
}
