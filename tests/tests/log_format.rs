//! `--log-format json` makes the agent and the analyzer log one JSON object per line on stderr
//! (timestamp, level, fields), for log shippers; the default stays text.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, wait_for};

/// Waits for stderr to hold at least one complete line, and returns every complete line.
fn log_lines(p: &Proc) -> Vec<String> {
    wait_for(Duration::from_secs(30), "a log line", || {
        let s = p.stderr();
        let lines: Vec<String> = s.lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect();
        (s.ends_with('\n') && !lines.is_empty()).then_some(lines)
    })
}

fn assert_json(lines: &[String], who: &str) {
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{who}: not a JSON log line ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{who}: {l}");
        assert!(v["fields"].is_object(), "{who}: {l}");
    }
}

#[test]
fn analyzer_and_agent_log_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json", "--db"]).arg(dir.path().join("f.db"));
    cmd.env("RUST_LOG", "info");
    let analyzer = Proc::spawn(cmd);
    assert_json(&log_lines(&analyzer), "analyzer");

    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--log-format", "json", "--no-gpu", "--kmsg", "/nonexistent/kmsg", "--interval", "200ms"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--spool-dir"])
        .arg(dir.path().join("spool"))
        .env("RUST_LOG", "info");
    let agent = Proc::spawn(cmd);
    assert_json(&log_lines(&agent), "agent");

    // The default is text: the same analyzer start logs lines that are not JSON.
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "127.0.0.1:0", "--db"]).arg(dir.path().join("g.db")).env("RUST_LOG", "info");
    let text = Proc::spawn(cmd);
    assert!(log_lines(&text).iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()));
}
