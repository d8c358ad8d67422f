//! The real agent on this very machine (no GPU: `--no-gpu`; real `/sys`, real `/proc`, the real
//! kernel log when it can be read) pushes to a real analyzer on loopback for 60 seconds, and the
//! analyzer opens no incident: a healthy host with its management NIC, virtual netdevs (`ifb*`,
//! `docker0`, `veth*`, bridges, …), ports that were never up and whatever its kernel log holds since
//! boot is not a fault.
//!
//! Absence is checked after a sentinel: the analyzer has taken a report sent after the 60 s and run
//! engine ticks since.

use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::{Proc, bin, get_json, http, start_analyzer, wait_for};
use serde_json::Value;

const TOKEN: &str = "real-host-token";
const NODE: &str = "real-host";
/// How long the agent reports: six analyzer windows of the usual 10 s, thirty reports at 2 s.
const SOAK: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);

fn node_seq(url: &str) -> Option<u64> {
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN))?;
    let list = nodes.as_array().cloned().or_else(|| nodes["nodes"].as_array().cloned())?;
    list.iter()
        .find(|n| n["node"] == NODE || n["name"] == NODE)
        .and_then(|n| n["last_seq"].as_u64().or(n["seq"].as_u64()))
}

fn ticks(url: &str) -> u64 {
    let text = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("faultline_engine_tick_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tick count in /metrics")
}

#[test]
fn a_quiet_real_host_raises_no_incident() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = analyzer.url.clone();
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", NODE, "--interval", "2s", "--no-gpu"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--analyzer")
        .arg(&url)
        .arg("--token")
        .arg(TOKEN)
        .arg("--spool-dir")
        .arg(dir.path().join("agent-spool"))
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let agent = Proc::spawn(cmd);
    wait_for(DEADLINE, "the first report at the analyzer", || node_seq(&url));

    let start = Instant::now();
    while start.elapsed() < SOAK {
        std::thread::sleep(Duration::from_secs(1));
    }
    // Sentinel: a report sent after the soak is in, and the engine ran over it.
    let after = node_seq(&url).expect("node known");
    wait_for(DEADLINE, "a report sent after the soak", || node_seq(&url).filter(|s| *s > after + 1));
    let t = ticks(&url);
    wait_for(DEADLINE, "engine ticks after it", || (ticks(&url) >= t + 3).then_some(()));

    let incidents: Vec<Value> = get_json(&format!("{url}/api/v1/incidents?status=all"), Some(TOKEN))
        .and_then(|v| v.as_array().cloned())
        .expect("incident list");
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap_or_default();
    assert!(
        incidents.is_empty(),
        "a quiet host raised {} incident(s):\n{}\nnodes: {nodes:#}\nagent log:\n{}",
        incidents.len(),
        serde_json::to_string_pretty(&incidents).unwrap(),
        agent.stderr()
    );
}
