//! `faultline demo` as a user runs it: the real binary, `--short`, must find every fault it injects
//! (read from its `--json` run report and its live lines), and `--serve` must leave a real analyzer
//! on loopback that the CLI, the API and `/metrics` can read.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, get_json, http, wait_for};
use serde_json::Value;

/// The faults `--short` injects, in order (the first three of cli/src/demo_scenario.toml).
const SHORT_FAULTS: [(&str, &str); 3] =
    [("gpu_lost", "node-0003/gpu3"), ("nic_down", "node-0037/nic:mlx5_2"), ("node_down", "node-0021")];

/// Generous: a debug build of the short demo takes tens of seconds on a shared 2-core machine.
const DEADLINE: Duration = Duration::from_secs(300);

fn faultline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.env_remove("FAULTLINE_ANALYZER").env_remove("FAULTLINE_TOKEN").env("NO_COLOR", "1");
    cmd
}

#[test]
fn demo_short_diagnoses_every_fault_it_injects() {
    let out = faultline().args(["demo", "--short", "--json"]).output().expect("run faultline demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));

    assert_eq!(report["cluster"]["nodes"], 64);
    assert_eq!(report["cluster"]["gpus"], 512);
    assert_eq!(report["analyzer"]["mode"], "in_process");
    assert_eq!(report["analyzer"]["rejected"], 0, "{}", report["analyzer"]["first_rejection"]);
    let faults = report["faults"].as_array().expect("faults");
    let got: Vec<(&str, &str)> =
        faults.iter().map(|f| (f["kind"].as_str().unwrap_or("?"), f["target"].as_str().unwrap_or("?"))).collect();
    assert_eq!(got, SHORT_FAULTS);
    for f in faults {
        assert_eq!(f["correct"], true, "not diagnosed with the exact root: {f:#}");
        assert_eq!(f["diagnosed_root"], f["target"], "{f:#}");
        let expected: Vec<&Value> = f["expected_jobs"].as_array().expect("expected_jobs").iter().collect();
        let reported: Vec<&Value> = f["reported_jobs"].as_array().expect("reported_jobs").iter().collect();
        assert!(!expected.is_empty(), "every short fault hits a job: {f:#}");
        assert_eq!(reported, expected, "{f:#}");
    }
    let s = &report["summary"];
    assert_eq!((s["faults"].as_u64(), s["correct"].as_u64()), (Some(3), Some(3)), "{s:#}");
    assert_eq!(s["coverage"], 1.0);
    // The simulated nodes have the netdevs and counters real nodes have (virtual NICs, ports never
    // up, saturated counters): none of that may open an incident.
    assert_eq!(s["false_incidents"], 0, "{s:#}");

    // The live lines (on stderr with --json): each fault injected, then diagnosed, in that order.
    let lines: Vec<&str> = stderr.lines().collect();
    let at = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    for (kind, target) in SHORT_FAULTS {
        let inject = at(&|l| l.contains(&format!("inject   {kind} on {target}")))
            .unwrap_or_else(|| panic!("no inject line for {kind} on {target}:\n{stderr}"));
        let opened = at(&|l| l.contains("OPENED") && l.contains(&format!(" {target} [{kind}]")))
            .unwrap_or_else(|| panic!("no OPENED line for {kind} on {target}:\n{stderr}"));
        assert!(inject < opened, "diagnosed before it was injected?\n{stderr}");
    }
    assert_eq!(stderr.matches("-> correct:").count(), 3, "{stderr}");
    let stored = stderr
        .split("store: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(stored.is_some_and(|n| n >= 3), "the store must hold every incident:\n{stderr}");
}

#[test]
fn demo_serve_leaves_an_analyzer_the_cli_and_prometheus_can_read() {
    let mut cmd = faultline();
    cmd.args(["demo", "--short", "--serve", "--no-live", "--listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn_plain(cmd);
    let url = wait_for(DEADLINE, "the demo's `listening on` line", || {
        let line = p.next_line(Duration::from_secs(1))?;
        line.strip_prefix("listening on ").map(|u| u.trim().to_string())
    });
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // The API: every incident of the run, from the store, with the roots the demo injected.
    let all = get_json(&format!("{url}/api/v1/incidents?status=all"), None).expect("GET incidents");
    let roots: Vec<&str> = all.as_array().expect("a list").iter().filter_map(|i| i["root"].as_str()).collect();
    for (_, t) in SHORT_FAULTS {
        assert!(roots.contains(&t), "no incident rooted at {t}: {all:#}");
    }
    // The engine itself was handed over: nodes, jobs and topology are there, not just incidents.
    let nodes = get_json(&format!("{url}/api/v1/nodes"), None).expect("GET nodes");
    assert_eq!(nodes.as_array().map(Vec::len), Some(64));
    let jobs = get_json(&format!("{url}/api/v1/jobs"), None).expect("GET jobs");
    assert!(jobs.as_array().is_some_and(|j| j.iter().any(|j| j["id"] == "llm-70b")), "{jobs:#}");

    // The CLI against it: node_down is still open at the end of the short run, so exit code 1.
    let out = faultline().args(["--analyzer", &url, "incidents", "--all", "--json"]).output().expect("run incidents");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("incidents --json");
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed:#}");
    let out = faultline().args(["--analyzer", &url, "status"]).output().expect("run status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("64 known") && text.contains("node-0021"), "{text}");

    // Prometheus: the open incident and the node count.
    let metrics = http().get(format!("{url}/metrics")).send().and_then(|r| r.text()).expect("GET /metrics");
    assert!(metrics.contains("faultline_nodes 64"), "{metrics}");
    assert!(metrics.contains(r#"faultline_incidents_open{class="node_down""#), "{metrics}");
    // Every switch of the topology has a health series, the healthy ones too (the switch panel).
    assert!(
        metrics.contains(r#"faultline_component_healthy{component="switch:spine-00",kind="switch",node=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"faultline_component_healthy{component="switch:leaf-03",kind="switch",node=""} 1"#),
        "{metrics}"
    );

    let status = p.terminate(Duration::from_secs(30)).expect("the demo stops on SIGTERM");
    assert!(status.success(), "{status:?}; stderr:\n{}", p.stderr());
}
