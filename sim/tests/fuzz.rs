//! The CI-sized campaign: a fixed seed runs a few randomized worlds through the real analyzer, and its
//! report is complete and well-formed, every failing world carrying a scenario that parses back to
//! the same world. It asserts no pass rate: the scores are what the campaign measures.

use faultline_sim::Scenario;
use faultline_sim::fuzz::{self, draw};

#[test]
fn a_small_campaign_runs_and_reports_well_formed_json() {
    let mut seen = Vec::new();
    let report = fuzz::campaign(2, 20_260_101, &mut |i, o| seen.push((i, o.seed)));
    assert_eq!(report.worlds, 2);
    assert_eq!(seen.len(), 2);
    assert!(report.errors.is_empty(), "the campaign itself broke: {:#?}", report.errors);
    assert_eq!(report.passed + report.failures.len(), 2);
    let per_kind: usize = report.per_kind.values().map(|k| k.faults).sum();
    assert_eq!(per_kind, report.faults);
    assert!(report.faults_localized <= report.faults_detected && report.faults_detected <= report.faults);
    let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    for k in ["worlds", "passed", "faults", "faults_localized", "false_incidents", "fault_free_worlds", "failures"] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for f in &report.failures {
        assert!(!f.reason.is_empty());
        let sc = Scenario::parse(&f.scenario, "failure.toml").expect("a failing world's scenario parses");
        assert_eq!(sc.seed, f.seed);
    }
    assert!(report.table().contains("PER KIND"));
}

#[test]
fn worlds_are_drawn_deterministically_and_always_parse() {
    for i in 0..200 {
        let seed = fuzz::world_seed(7, i);
        let a = draw::world_toml(seed);
        assert_eq!(a, draw::world_toml(seed));
        let sc = Scenario::parse(&a, "w.toml").unwrap_or_else(|e| panic!("world {seed}: {e}\n{a}"));
        assert!(sc.faults.len() <= 3);
        assert!((1..=8).contains(&sc.cluster.gpus_per_node) && (1..=8).contains(&sc.cluster.nics_per_node));
        assert!((0.5..=3.0).contains(&sc.noise));
    }
}
