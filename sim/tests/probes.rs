//! Simulated active fabric probes (`[probes]`) through the real analyzer: a leaf that drops packets
//! silently (no port counter moves) is found by the pingmesh detector alone, a healthy fabric with
//! probes on opens no probe incident, a node that goes down is node_down's (not the probes'), and a
//! scenario without `[probes]` sends none.

use faultline_proto::FaultClass;
use faultline_sim::runner::RunOptions;
use faultline_sim::{Scenario, World};

/// Every report the world sends in its first `until_ms`.
fn reports(sc: &Scenario, until_ms: i64) -> Vec<faultline_proto::NodeReport> {
    World::new(sc, 1_700_000_000_000).run_until(until_ms).into_iter().map(|o| o.report).collect()
}

fn scenario(probes: &str, faults: &str) -> Scenario {
    let text = format!(
        r#"
name = "probes"
seed = 11
duration_s = 900
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = 16
nodes_per_leaf = 4
spines = 2
gpus_per_node = 8
nics_per_node = 2
gpu_model = "H100"

{probes}

{faults}
"#
    );
    Scenario::parse(&text, "probes.toml").unwrap()
}

fn probe_incidents(r: &faultline_sim::RunReport) -> Vec<String> {
    r.incidents
        .iter()
        .filter(|i| matches!(i.class, FaultClass::SwitchSilentDrop | FaultClass::NicConnectionResets))
        .map(|i| format!("{} {}", i.class, i.root))
        .collect()
}

#[test]
fn a_silent_drop_on_a_leaf_is_found_by_the_probes_alone() {
    let sc = scenario(
        "[probes]\nenabled = true",
        "[[fault]]\nkind = \"switch_silent_drop\"\ntarget = \"switch:leaf-01\"\nat_s = 300\nduration_s = 400",
    );
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    print!("{}", r.table());
    assert_eq!(r.analyzer.rejected, 0, "{:?}", r.analyzer.first_rejection);
    let f = &r.faults[0];
    assert!(f.detected && f.correct, "{f:#?}\n{:#?}", r.incidents);
    assert_eq!(probe_incidents(&r), ["switch_silent_drop switch:leaf-01"], "{:#?}", r.incidents);
}

#[test]
fn a_healthy_fabric_and_a_node_down_open_no_probe_incident() {
    let sc = scenario(
        "[probes]\nenabled = true",
        "[[fault]]\nkind = \"node_down\"\ntarget = \"node-0005\"\nat_s = 300\nduration_s = 300",
    );
    let r = faultline_sim::run(&sc, RunOptions::default()).unwrap();
    assert_eq!(r.analyzer.rejected, 0, "{:?}", r.analyzer.first_rejection);
    assert!(r.faults[0].correct, "node_down is still node_down: {:#?}", r.faults[0]);
    assert_eq!(probe_incidents(&r), Vec::<String>::new(), "{:#?}", r.incidents);
}

#[test]
fn probes_are_off_unless_the_scenario_turns_them_on() {
    let sc = scenario("", "");
    assert!(!sc.probes.enabled);
    let out = reports(&sc, 120_000);
    assert!(!out.is_empty());
    assert!(out.iter().all(|r| r.probes.is_empty()));
    let sc = scenario("[probes]\nenabled = true\nrate_pps = 40", "");
    let out = reports(&sc, 120_000);
    let r = out.iter().rev().find(|r| !r.probes.is_empty()).expect("reports with probes");
    assert_eq!(r.probes.len(), 8 * 2, "8 peers on each of 2 rails: {:?}", r.probes);
    assert!(r.validate().is_ok());
}
