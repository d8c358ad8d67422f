//! `agent/python/faultline_progress.py`, the single-file Python progress module, from real Python
//! processes against a real agent:
//! - over UDP, a process the agent discovers as a rank (by its environment in /proc) posts steps
//!   with no job or rank given: the steps land on the rank the agent found (`faultline_rank_step`
//!   of that job and rank), and `exited(1)` carries its exit code;
//! - over the agent's Unix socket (the Kubernetes path), with the job id from a variable named in
//!   `FAULTLINE_JOB_ID_ENV` (the agent's `[jobs] job_id_env`) and an MPI rank; a record the agent
//!   refuses raises with the agent's reason in strict mode;
//! - the cgroup parsing gives the job ids the agent's own parser gives for the same lines.
//!
//! Needs python3 (installed by scripts/install-test-deps.sh; fails under CI when missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_tests::{Proc, bin, external, get_json, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/python")
}

fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

fn scrape(url: &str) -> String {
    faultline_tests::http().get(format!("{url}/metrics")).send().and_then(|r| r.text()).unwrap_or_default()
}

/// An agent on 127.0.0.1:0 with a progress socket; (agent, progress URL, socket path).
fn agent(dir: &Path, node: &str) -> (Proc, String, PathBuf) {
    let sock = dir.join("progress.sock");
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--interval", "300ms", "--no-gpu"])
        .args(["--node-name", node, "--kmsg", "/nonexistent/kmsg"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--progress-socket")
        .arg(&sock);
    let mut p = Proc::spawn(cmd);
    let line = p.next_line(DEADLINE).expect("progress line");
    let purl = line.strip_prefix("progress on ").expect("`progress on http://ADDR`").trim().to_string();
    (p, purl, sock)
}

fn python(py: &Path, script: &str) -> Command {
    let mut c = Command::new(py);
    c.arg("-c").arg(script).env("PYTHONPATH", module_dir()).env("PYTHONDONTWRITEBYTECODE", "1");
    for k in [
        "SLURM_JOB_ID",
        "SLURM_JOBID",
        "TORCHELASTIC_RUN_ID",
        "RANK",
        "SLURM_PROCID",
        "MASTER_ADDR",
        "FAULTLINE_JOB_ID_ENV",
    ] {
        c.env_remove(k);
    }
    c
}

#[test]
fn udp_steps_land_on_the_rank_the_agent_discovered() {
    let Some(py) = external("python3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (agent, purl, _) = agent(dir.path(), "py-udp");
    let port = purl.rsplit(':').next().unwrap().to_string();
    let job = format!("py-run-{}", std::process::id());
    // The training process itself: the agent finds it in /proc (TORCHELASTIC_RUN_ID, RANK) and the
    // module finds the same identity in its environment. It posts, then waits to be told to exit.
    let script = format!(
        "import sys\nfrom faultline_progress import Reporter\n\
         r = Reporter(udp=('127.0.0.1', {port}), strict=True)\n\
         print(r.job, r.rank, flush=True)\n\
         for s in range(1, 6):\n    r.step(s, step_time_ms=100.0, compute_ms=80.0, loss=float('nan') if s == 5 else 2.0)\n\
         sys.stdin.readline()\n\
         r.exited(1)\n"
    );
    let mut child = python(&py, &script)
        .env("TORCHELASTIC_RUN_ID", &job)
        .env("RANK", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let labels = format!(r#"Hostname="py-udp",job_id="{job}",rank="3""#);
    wait_for(DEADLINE, "step 5 on the discovered rank in the agent's /metrics", || {
        (sample(&scrape(&agent.url), "faultline_rank_step", &labels) == Some(5.0)).then_some(())
    });
    let e = wait_for(DEADLINE, "the records in GET /progress", || {
        let list = get_json(&format!("{purl}/progress"), None)?;
        list.as_array()?.iter().find(|e| e["job"] == job.as_str() && e["rank"] == 3).cloned()
    });
    assert_eq!(e["progress"]["nonfinite_loss"], true, "{e:#}");
    // Exit: the record carries the code.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{job} 3"));
    let e = wait_for(DEADLINE, "the exited record in GET /progress", || {
        let list = get_json(&format!("{purl}/progress"), None)?;
        let e = list.as_array()?.iter().find(|e| e["job"] == job.as_str() && e["rank"] == 3).cloned()?;
        e.to_string().contains("exited").then_some(e)
    });
    assert!(e.to_string().contains("\"exit_code\":1"), "{e:#}");
    let m = scrape(&agent.url);
    assert_eq!(sample(&m, "faultline_agent_progress_rejected_total", r#"Hostname="py-udp""#), Some(0.0), "{m}");
}

#[test]
fn unix_socket_posts_with_a_configured_job_variable_and_refusals_raise() {
    let Some(py) = external("python3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_agent, purl, sock) = agent(dir.path(), "py-sock");
    let job = format!("py-sock-{}", std::process::id());
    let script = format!(
        "from faultline_progress import Reporter, AgentRefused\n\
         r = Reporter(socket_path={sock:?}, strict=True)\n\
         assert (r.job, r.rank) == ({job:?}, 7), (r.job, r.rank)\n\
         assert r.step(12, step_time_ms=250.0, loss=1.5)\n\
         assert r.checkpointing(12)\n\
         try:\n    r.post(dict(r.record(13), step=-1))\n    raise SystemExit('a negative step was taken')\n\
         except AgentRefused as e:\n    print('refused:', e)\n\
         quiet = Reporter(socket_path={sock:?})\n\
         assert quiet.post(dict(quiet.record(14), bogus=1)) is False\n",
        sock = sock.display().to_string()
    );
    let out = python(&py, &script)
        .env("FAULTLINE_JOB_ID_ENV", "MY_LAUNCHER_JOB")
        .env("MY_LAUNCHER_JOB", &job)
        .env("OMPI_COMM_WORLD_RANK", "7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refused: agent answered 400") && stdout.contains("step"), "{stdout}");
    let e = wait_for(DEADLINE, "the socket's record in GET /progress", || {
        let list = get_json(&format!("{purl}/progress"), None)?;
        list.as_array()?.iter().find(|e| e["job"] == job.as_str()).cloned()
    });
    assert_eq!(e["rank"], 7);
    assert_eq!(e["progress"]["step"], 12, "{e:#}");

    // An oversized post gets the same JSON error form as every other refusal.
    let resp = faultline_tests::http()
        .post(format!("{purl}/progress"))
        .header("content-type", "application/json")
        .body(vec![b' '; 20 * 1024])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: serde_json::Value = resp.json().expect("a JSON body with the 413");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("limit")), "{v}");
}

#[test]
fn cgroup_job_ids_match_the_agents_parser() {
    let Some(py) = external("python3") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The same lines as the agent's own parse_cgroup tests (agent/src/collect/jobs/tests.rs).
    let cases = [
        ("0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0", "4242"),
        (
            "0::/kubepods/burstable/pod1b2c3d4e-0000-1111-2222-333344445555/abcdef0123",
            "1b2c3d4e-0000-1111-2222-333344445555",
        ),
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-ab.scope",
            "1b2c3d4e-0000-1111-2222-333344445555",
        ),
        ("0::/user.slice/user-1000.slice/session-3.scope", "None"),
    ];
    for (i, (line, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("cgroup{i}"));
        std::fs::write(&f, format!("{line}\n")).unwrap();
        let script = format!(
            "from faultline_progress import discover_job\nprint(discover_job(env={{}}, cgroup_path={:?}))",
            f.display().to_string()
        );
        let out = python(&py, &script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), *want, "{line}");
    }
}
