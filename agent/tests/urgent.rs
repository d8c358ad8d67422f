//! An urgent kernel event (an XID in the followed kernel log) makes the agent collect and publish a
//! report at once, long before its next tick.

use std::io::Write;
use std::process::Command;

mod support;

use support::{Agent, healthz, wait_for};

#[test]
fn an_xid_in_the_kernel_log_triggers_an_immediate_report() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kern.log");
    std::fs::write(&kmsg, "[    1.000000] Linux version 6.8.0\n").unwrap();
    let (agent, url) = Agent::start(
        Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .args(["--interval", "1h", "--no-gpu", "--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
            .arg("--kmsg")
            .arg(&kmsg)
            .arg("--spool-dir")
            .arg(dir.path().join("spool")),
    );
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
