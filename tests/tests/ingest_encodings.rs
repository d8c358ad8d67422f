//! The compact encoding (`faultline_proto::wire`, `application/x-protobuf`) against JSON, through the
//! analyzer's one ingest path:
//! - every report a simulated cluster sends survives the compact round trip unchanged;
//! - the same scenario gives the same incidents whichever encoding carries its reports;
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
    assert_eq!(json.analyzer.rejected, 0, "{:?}", json.analyzer.first_rejection);
    assert_eq!(compact.analyzer.rejected, 0, "{:?}", compact.analyzer.first_rejection);
    assert_eq!(json.analyzer.reports, compact.analyzer.reports);
    assert!(!json.incidents.is_empty(), "smoke.toml injects faults; the run should find them");
    assert_eq!(json.incidents, compact.incidents);
    assert_eq!(json.faults, compact.faults);
    println!(
        "smoke.toml: {} reports, {} incidents either way; {:.0} B/report JSON, {:.0} B/report compact",
        json.analyzer.reports,
        json.incidents.len(),
        json.analyzer.report_bytes as f64 / json.analyzer.reports as f64,
        compact.analyzer.report_bytes as f64 / compact.analyzer.reports as f64
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
    println!(
        "healthy 8-GPU 8-NIC node, {} reports: JSON {:.0} B avg, compact {:.0} B avg (max {max} B), {:.1}x smaller",
        reports.len(),
        json as f64 / n,
        compact as f64 / n,
        json as f64 / compact as f64
    );
    assert!(compact < json, "the compact encoding is larger than JSON");
}
