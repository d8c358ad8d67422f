//! Scenarios through the real analyzer engine, in-process (`ingest::ingest_body`, the path HTTP takes):
//! the smoke and two-faults scenarios are diagnosed, the run report has the fields of
//! spec/scenario.md, and its raw incidents score the same again.

use std::path::Path;

use faultline_sim::runner::{self, RunOptions};
use faultline_sim::score::{self, RunFacts};
use faultline_sim::{Scenario, World};

fn load(name: &str) -> Scenario {
    Scenario::from_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap()
}

#[test]
fn smoke_is_diagnosed_exactly() {
    let sc = load("smoke.toml");
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    print!("{}", r.table());
    assert_eq!(r.analyzer.rejected, 0, "{:?}", r.analyzer.first_rejection);
    assert!(r.analyzer.reports > 700);
    for f in &r.faults {
        assert!(f.detected && f.correct, "{} on {} not diagnosed: {:?}", f.kind, f.target, f.diagnosed_root);
        assert_eq!(f.reported_jobs, f.expected_jobs, "{}", f.kind);
    }
    assert_eq!(r.summary.coverage, 1.0);
    // No assertion on false incidents here: in the realistic world (idle netdevs, saturated
    // counters, late reports) the current analyzer opens some; the fuzz campaign measures them.
}

#[test]
fn two_simultaneous_faults_give_two_incidents() {
    let sc = load("two-faults.toml");
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    print!("{}", r.table());
    assert_eq!(r.analyzer.rejected, 0);
    let first_two: Vec<_> = r.faults.iter().filter(|f| f.at_s == 300.0).collect();
    assert_eq!(first_two.len(), 2);
    assert!(first_two.iter().all(|f| f.correct), "{first_two:#?}");
    assert_ne!(first_two[0].incident, first_two[1].incident, "one incident per root");
    assert!(r.summary.correct >= 3, "{}", r.table());
}

#[test]
fn the_run_report_has_the_spec_fields_and_rescores_the_same() {
    let sc = load("smoke.toml");
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    for k in ["scenario", "seed", "cluster", "virtual_s", "wall_s", "peak_rss_bytes", "faults", "incidents", "summary"]
    {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in ["nodes", "gpus", "nics", "switches", "jobs"] {
        assert!(v["cluster"].get(k).is_some(), "missing cluster.{k}");
    }
    assert_eq!(v["cluster"]["gpus"], 64);
    assert_eq!(v["cluster"]["switches"], 4);
    assert_eq!(v["cluster"]["jobs"][0]["hosts"][2], "node-0004");
    for k in [
        "kind",
        "target",
        "at_s",
        "detected",
        "correct",
        "diagnosed_root",
        "time_to_detect_s",
        "time_to_diagnose_s",
        "expected_jobs",
        "reported_jobs",
        "incident",
    ] {
        assert!(v["faults"][0].get(k).is_some(), "missing faults[].{k}");
    }
    for k in ["id", "root", "class", "confidence", "opened_s", "resolved_s", "affected_jobs", "paths"] {
        assert!(v["incidents"][0].get(k).is_some(), "missing incidents[].{k}");
    }
    for k in [
        "faults",
        "detected",
        "correct",
        "coverage",
        "weighted_coverage",
        "ttd_p50_s",
        "ttd_p95_s",
        "ttd_max_s",
        "job_precision",
        "job_recall",
        "false_incidents",
        "false_per_1000_node_days",
    ] {
        assert!(v["summary"].get(k).is_some(), "missing summary.{k}");
    }
    assert!(r.peak_rss_bytes > 0);
    // Anyone can score it again from the raw incidents.
    let back: faultline_sim::RunReport = serde_json::from_value(v).unwrap();
    let world = World::new(&sc, 0);
    let truth = runner::truth(&world, &sc);
    let facts = RunFacts { duration_s: sc.duration_s, interval_s: sc.interval_s, nodes: back.cluster.nodes };
    let (faults, summary) = score::score(&truth, &back.incidents, facts);
    assert_eq!(faults, r.faults);
    assert_eq!(summary, r.summary);
}
