//! Wire mode against a real `faultline-analyzer` process on 127.0.0.1:0: the reports go over HTTP
//! with the bearer token, and the incidents come back from `GET /api/v1/incidents?status=all`.
//! Needs the binary: `cargo build -p faultline-analyzer` first (cargo test --workspace does it).

use faultline_sim::cluster::Cluster;
use faultline_sim::runner::RunOptions;
use faultline_sim::{Scenario, WireTarget};
use faultline_tests::start_analyzer;

const TOKEN: &str = "sim-wire-token";

const SCENARIO: &str = r#"
name = "wire"
seed = 3
duration_s = 60
interval_s = 5
noise = 0.5
[cluster]
nodes = 4
nodes_per_leaf = 2
[[job]]
id = "pair"
hosts = ["node-0000", "node-0002"]
step_time_s = 1.0
[[fault]]
kind = "gpu_hbm_uncorrectable"
target = "node-0002/gpu4"
at_s = 20
"#;

#[test]
fn reports_over_http_are_diagnosed_by_a_real_analyzer() {
    let sc = Scenario::parse(SCENARIO, "wire.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, Cluster::build(&sc).topology_toml().unwrap()).unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--topology", topo.to_str().unwrap()]);
    let opts = RunOptions {
        speed: Some(4.0),
        wire: Some(WireTarget { url: analyzer.url.clone(), token: Some(TOKEN.to_string()) }),
        ..Default::default()
    };
    let r = faultline_sim::run(&sc, opts).unwrap();
    print!("{}", r.table());
    assert_eq!(r.analyzer.mode, "wire");
    assert!(r.analyzer.reports >= 48, "{} reports", r.analyzer.reports);
    assert_eq!(r.analyzer.rejected, 0, "{:?}", r.analyzer.first_rejection);
    let f = &r.faults[0];
    assert!(f.detected && f.correct, "{f:#?}\nanalyzer stderr:\n{}", analyzer.stderr());
    assert_eq!(f.reported_jobs, ["pair"]);
    assert!(f.time_to_detect_s.unwrap() >= 0.0);

    // A wrong token is refused, and the run says so instead of pretending.
    let sc2 = Scenario::parse(
        &SCENARIO.replace("duration_s = 60", "duration_s = 5").replace("at_s = 20", "at_s = 1"),
        "wire.toml",
    )
    .unwrap();
    let opts = RunOptions {
        speed: Some(10.0),
        wire: Some(WireTarget { url: analyzer.url.clone(), token: Some("wrong".into()) }),
        ..Default::default()
    };
    match faultline_sim::run(&sc2, opts) {
        Ok(r) => {
            assert!(r.analyzer.rejected > 0);
            assert!(r.analyzer.first_rejection.unwrap().contains("401"));
        }
        Err(e) => assert!(e.to_string().contains("401"), "{e}"),
    }
}
