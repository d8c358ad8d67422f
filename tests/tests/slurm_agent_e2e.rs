//! A job's end and exit code from a REAL Slurm, through the real agent: the test starts its own
//! munged, slurmctld and slurmd on loopback, runs the agent (real `/proc`, `scontrol` pointed at the
//! test's slurm.conf) pushing to a recording receiver, and submits two batch jobs whose one task each
//! is the job's only rank.
//!
//! 1. A task that exits 1: the agent's report says `sched_state: failed`, `sched_exit_code: 1`, and
//!    the rank's `exit_code: 1` (from the scheduler: the vanished process itself says nothing).
//! 2. A task that exits 0: `completed`, 0.

#[path = "notify_support/mod.rs"]
#[allow(unused_imports)] // the report builder it re-exports is not used here
mod notify_support;
#[path = "slurm_support/mod.rs"]
mod slurm_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use faultline_proto::{NodeReport, SchedState};
use faultline_tests::{Proc, bin, wait_for};
use notify_support::{Mode, Receiver};
use slurm_support::{DEADLINE, Slurm, programs};

/// The last report that carries `job` (any of its ranks), as the receiver got it.
fn job_in(rx: &Receiver, job: &str) -> Option<faultline_proto::JobSample> {
    rx.requests()
        .iter()
        .rev()
        .filter(|r| r.path == "/api/v1/reports")
        .filter_map(|r| NodeReport::from_json(&r.body).ok())
        .find_map(|rep| rep.jobs.into_iter().find(|j| j.job_id == job))
}

fn script(dir: &std::path::Path, name: &str, exit: i32) -> std::path::PathBuf {
    let p = dir.join(name);
    // The task lives long enough for the agent (500 ms interval) to see it as the job's rank.
    std::fs::write(&p, format!("#!/bin/sh\nsrun sh -c 'sleep 5; exit {exit}'\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn slurm_job_state_and_exit_code_reach_the_agents_report() {
    let Some(p) = programs("slurm_agent_e2e") else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::start(&p, dir.path());
    let rx = Receiver::start(0, Mode::Ok);

    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[jobs.scheduler]\nscontrol = {:?}\nsacct = {:?}\n",
            p.scontrol.display().to_string(),
            p.sacct.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", "slurm-e2e", "--interval", "500ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--analyzer")
        .arg(&rx.url)
        .arg("--spool-dir")
        .arg(dir.path().join("agent-spool"))
        .env("SLURM_CONF", &slurm.conf)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let agent = Proc::spawn(cmd);

    for (name, exit, state) in [("fail.sh", 1, SchedState::Failed), ("ok.sh", 0, SchedState::Completed)] {
        let job = slurm.sbatch(&script(dir.path(), name, exit), &dir.path().join("out").join(format!("{name}.out")));
        // Seen alive first, with its rank: the report knows the job before it ends.
        wait_for(DEADLINE, &format!("job {job} with a live rank in a report"), || {
            job_in(&rx, &job).filter(|j| j.ranks.iter().any(|r| r.pid.is_some())).map(|_| ())
        });
        let j = wait_for(DEADLINE, &format!("job {job} ended in a report"), || {
            job_in(&rx, &job).filter(|j| j.sched_state.is_some_and(|s| s.is_ended()))
        });
        assert_eq!(j.sched_state, Some(state), "job {job}: {j:?}\nagent: {}", agent.stderr());
        assert_eq!(j.sched_exit_code, Some(exit), "job {job}: {j:?}");
        assert_eq!(j.ranks.len(), 1, "{j:?}");
        assert_eq!(j.ranks[0].exit_code, Some(exit), "the only rank's code comes from the scheduler: {j:?}");
    }
}
