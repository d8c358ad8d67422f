//! An XID queued in the fake NVML library reaches a real analyzer through a real agent at once:
//! NVML event set → agent event queue (urgent) → early push → analyzer diagnosis. The agent's report
//! interval is 60 s, so only the urgent path can deliver it within the poll deadline below; the
//! latency is measured and printed, not asserted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::{Proc, bin, fake_nvml_lib, get_json, start_analyzer, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "gpu-xid-push-token";
const NODE: &str = "gpu-xid-node";
/// Far longer than any push path but the urgent one could take; shorter than the agent interval.
const DEADLINE: Duration = Duration::from_secs(30);

fn write_state(path: &Path, v: Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start_agent(analyzer: &str, dir: &Path, state: &Path) -> Proc {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", NODE, "--interval", "60s", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .arg("--analyzer")
        .arg(analyzer)
        .arg("--token")
        .arg(TOKEN)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("FAKE_NVML_STATE", state)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd)
}

/// True once the analyzer shows XID 79 on `gpu3`: a symptom on the component or an incident rooted there.
fn analyzer_has_xid79(url: &str) -> bool {
    let gpu = format!("{NODE}/gpu3");
    let comp = get_json(&format!("{url}/api/v1/components/{gpu}"), Some(TOKEN));
    let symptom =
        comp.as_ref().and_then(|c| c["symptoms"].as_array().cloned()).is_some_and(|s| s.iter().any(|s| s["xid"] == 79));
    let incident = get_json(&format!("{url}/api/v1/incidents?status=open"), Some(TOKEN))
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|list| list.iter().any(|i| i["root"] == gpu.as_str()));
    symptom || incident
}

#[test]
fn queued_xid79_reaches_the_analyzer_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({"gpus": [{}, {}, {}, {}, {}, {}, {}, {}]}));
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let agent = start_agent(&analyzer.url, dir.path(), &state);

    // The first (startup) report is in; the next regular one is 60 s away.
    wait_for(Duration::from_secs(60), "the agent's first report", || {
        let nodes = get_json(&format!("{}/api/v1/nodes", analyzer.url), Some(TOKEN))?;
        nodes.as_array()?.iter().any(|n| n["node"] == NODE).then_some(())
    });
    assert!(!analyzer_has_xid79(&analyzer.url), "XID 79 before it was queued");

    let queued = Instant::now();
    write_state(
        &state,
        json!({"gpus": [{}, {}, {}, {}, {}, {}, {}, {}], "events": [{"id": 1, "gpu": 3, "type": "xid", "xid": 79}]}),
    );
    let deadline = queued + DEADLINE;
    while !analyzer_has_xid79(&analyzer.url) {
        assert!(
            Instant::now() < deadline,
            "XID 79 did not reach the analyzer within {DEADLINE:?}; agent stderr:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let latency = queued.elapsed();
    println!("XID 79 from the fake NVML event set to the analyzer's diagnosis: {latency:?}");
    eprintln!("XID 79 from the fake NVML event set to the analyzer's diagnosis: {latency:?}");
}
