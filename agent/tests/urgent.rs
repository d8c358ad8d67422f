//! An urgent kernel event (an XID in the followed kernel log) makes the agent collect and publish a
//! report at once, long before its next tick.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthz(url: &str) -> Option<serde_json::Value> {
    let body = reqwest::blocking::get(format!("{url}/healthz")).ok()?.text().ok()?;
    serde_json::from_str(&body).ok()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_xid_in_the_kernel_log_triggers_an_immediate_report() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kern.log");
    std::fs::write(&kmsg, "[    1.000000] Linux version 6.8.0\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["--interval", "1h", "--no-gpu", "--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--kmsg")
        .arg(&kmsg)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let agent = Agent(child);
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {line:?}")).to_string();
    let first = wait_for("the first report", || healthz(&url).filter(|h| h["last_seq"] == 1));
    assert_eq!(first["last_urgent"], false);

    let mut f = std::fs::OpenOptions::new().append(true).open(&kmsg).unwrap();
    writeln!(
        f,
        "[ 2345.678901] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    )
    .unwrap();
    drop(f);

    // The interval is an hour: only the urgent path can produce report 2.
    let h = wait_for("an urgent report", || healthz(&url).filter(|h| h["last_seq"] == 2));
    assert_eq!(h["last_urgent"], true, "{h}");
    assert!(h["last_events"].as_u64().unwrap() >= 1, "the XID event rides in the urgent report: {h}");
    drop(agent);
}
