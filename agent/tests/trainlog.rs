//! The real agent follows a training log named by a glob in its config: an NCCL completion error
//! appended to it reaches the next report as an event; lines that were there before it started, and
//! ordinary lines, do not.

use std::io::Write;
use std::process::Command;

mod support;

use support::{Agent, healthz, wait_for};

const IB: &str = "gpu-a17:2211:2390 [3] transport/net_ib.cc:2411 NCCL WARN NET/IB: Got completion from peer 10.0.8.21<41327> with status=IBV_WC_RETRY_EXC_ERR(12) opcode=IBV_WC_SEND(0) vendor_err=129 hca mlx5_3";

#[test]
fn an_nccl_error_in_a_followed_log_becomes_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs/r1");
    std::fs::create_dir_all(&runs).unwrap();
    let log = runs.join("rank3.log");
    std::fs::write(&log, format!("{IB}\n")).unwrap(); // before the agent: history, not news
    let kmsg = dir.path().join("kern.log");
    std::fs::write(&kmsg, "").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[jobs.logs]\nslurm = false\npod_log_dir = \"\"\nglobs = [\"{}/runs/*/rank*.log\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (agent, url) = Agent::start(
        Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .arg("--config")
            .arg(&cfg)
            .args(["--interval", "1s", "--no-gpu", "--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
            .arg("--kmsg")
            .arg(&kmsg)
            .arg("--spool-dir")
            .arg(dir.path().join("spool")),
    );
    // Three reports in, the old line has had every chance to be sent: it was not.
    let h = wait_for("three reports", || healthz(&url).filter(|h| h["last_seq"].as_u64() >= Some(3)));
    assert_eq!(h["last_events"], 0, "what was in the log before the agent started is not news: {h}");

    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "step 100 loss 1.9").unwrap();
    writeln!(f, "{IB}").unwrap();
    drop(f);
    let h = wait_for("a report with the event", || healthz(&url).filter(|h| h["last_events"].as_u64() >= Some(1)));
    assert_eq!(h["last_events"], 1, "one event for the one NCCL line, none for the loss line: {h}");
    drop(agent);
}
