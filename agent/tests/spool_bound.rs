//! The spool while the analyzer is unreachable: bounded by `--spool-max-bytes` (oldest dropped and
//! counted), kept on disk across an agent restart, and `seq` keeps growing across it.

use std::path::Path;
use std::process::Command;

mod support;
use support::{Agent, wait_for};

fn start(spool: &Path, analyzer_port: u16, max_bytes: u64) -> (Agent, String) {
    Agent::start(
        Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .args(["--interval", "100ms", "--no-gpu", "--kmsg", "/nonexistent"])
            .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--node-name", "spool-node"])
            .arg("--analyzer")
            .arg(format!("http://127.0.0.1:{analyzer_port}"))
            .arg("--spool-max-bytes")
            .arg(max_bytes.to_string())
            .arg("--spool-dir")
            .arg(spool),
    )
}

fn metric(url: &str, name: &str) -> Option<f64> {
    let body = reqwest::blocking::get(format!("{url}/metrics")).ok()?.text().ok()?;
    body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Spooled report files: (seqs, total bytes).
fn spooled(spool: &Path) -> (Vec<u64>, u64) {
    let mut seqs = Vec::new();
    let mut bytes = 0;
    for e in std::fs::read_dir(spool.join("reports")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(seq) = name.strip_suffix(".json").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
            bytes += e.metadata().unwrap().len();
        }
    }
    seqs.sort_unstable();
    (seqs, bytes)
}

#[test]
fn spool_is_bounded_drops_the_oldest_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // A port nobody listens on: every push fails with "connection refused".
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let max: u64 = 16 * 1024;
    let (agent, url) = start(&spool, port, max);
    wait_for("the spool to overflow", || metric(&url, "faultline_agent_dropped_reports_total").filter(|n| *n >= 3.0));
    drop(agent); // SIGKILL: no goodbye, the spool must survive anyway

    let (seqs, bytes) = spooled(&spool);
    assert!(bytes <= max, "spool holds {bytes} bytes, more than --spool-max-bytes {max}");
    assert!(seqs.len() >= 2, "{seqs:?}");
    assert!(seqs[0] > 1, "the oldest reports were the ones dropped: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "what is kept is contiguous: {seqs:?}");
    let newest_before = *seqs.last().unwrap();

    let (_agent, url) = start(&spool, port, max);
    let kept = wait_for("the restarted agent to index its spool", || metric(&url, "faultline_agent_spool_reports"));
    assert!(kept >= seqs.len() as f64, "restart kept the spool: {kept} vs {} files", seqs.len());
    wait_for("new reports after the restart", || {
        let (now, _) = spooled(&spool);
        (now.last().copied()? > newest_before).then_some(())
    });
    let (after, bytes) = spooled(&spool);
    assert!(bytes <= max);
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "seq continued across the restart: {after:?}");
}
