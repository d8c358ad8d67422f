//! The agent's `/metrics` is gzip-compressed when the scraper asks for it (Prometheus sends
//! `Accept-Encoding: gzip`), and plain when it does not.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, http, wait_for};

#[test]
fn agent_metrics_are_gzipped_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--no-gpu", "--kmsg", "/nonexistent/kmsg", "--interval", "200ms"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--spool-dir"])
        .arg(dir.path().join("spool"));
    let agent = Proc::spawn(cmd);
    let url = format!("{}/metrics", agent.url);
    let plain = wait_for(Duration::from_secs(30), "the agent's first report", || {
        let t = http().get(&url).send().ok()?.text().ok()?;
        t.contains("faultline_node_cpus").then_some(t)
    });
    assert!(plain.starts_with('#'), "{plain:.200}");
    let r = http().get(&url).header("Accept-Encoding", "gzip").send().unwrap();
    assert_eq!(r.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
    let body = r.bytes().unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "not a gzip stream");
    assert!(body.len() < plain.len(), "{} compressed bytes for {} plain", body.len(), plain.len());
    let r = http().get(&url).send().unwrap();
    assert!(r.headers().get("content-encoding").is_none(), "compressed without being asked");
}
