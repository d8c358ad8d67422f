//! End to end, job telemetry through the real `faultline-agent` binary: a torchrun-style group of real
//! processes is mapped to GPUs by the fake NVML library in `--once` output; a running agent takes
//! progress from `report-progress` (a separate process), from plain HTTP, and from a Unix socket,
//! refuses bad posts with 4xx, and its `/metrics` follow a rank from alive to exited.
//!
//! Build first when running this target alone: `cargo build -p faultline-agent`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faultline_proto::{NodeReport, ProcState, Scheduler};
use faultline_tests::{Proc, bin, children, fake_nvml_lib, http, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// A child process group leader killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    String::from_utf8_lossy(&env).split('\0').find_map(|kv| kv.strip_prefix(prefix.as_str()).map(str::to_string))
}

fn run_once(args: &[&str], envs: &[(&str, String)]) -> NodeReport {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.arg("--once").arg("--node-name").arg("e2e-jobs").args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run faultline-agent --once");
    assert!(out.status.success(), "agent --once failed: {}", String::from_utf8_lossy(&out.stderr));
    NodeReport::from_json(&out.stdout)
        .unwrap_or_else(|e| panic!("--once printed an invalid report ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn once_maps_a_torchrun_group_to_gpus_through_fake_nvml() {
    let run = format!("e2e-tr-{}", std::process::id());
    let launcher = Kid(Command::new("sh")
        .arg("-c")
        .arg("for r in 0 1 2 3; do RANK=$r LOCAL_RANK=$r sh -c 'sleep 60 & wait' & done; wait")
        .env("TORCHELASTIC_RUN_ID", &run)
        .env("WORLD_SIZE", "4")
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    // Wait until the four workers run with their own environment.
    let workers: Vec<(u32, u32)> = wait_for(DEADLINE, "four workers", || {
        let w = children(launcher.0.id());
        let ranks: Vec<(u32, u32)> =
            w.iter().filter_map(|p| env_of(*p, "RANK").and_then(|r| r.parse().ok()).map(|r| (r, *p))).collect();
        (ranks.len() == 4 && w.iter().all(|p| !children(*p).is_empty())).then_some(ranks)
    });
    // The fake NVML state: rank r's process on GPU 3 - r.
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = Vec::new();
    for slot in 0..4u32 {
        let pid = workers.iter().find(|(r, _)| 3 - r == slot).map(|(_, p)| *p).unwrap();
        gpus.push(serde_json::json!({ "processes": [ { "pid": pid, "used_mem": 1073741824u64 } ] }));
    }
    let state = dir.path().join("nvml.json");
    std::fs::write(&state, serde_json::json!({ "gpus": gpus }).to_string()).unwrap();

    let lib = fake_nvml_lib();
    let report = run_once(&["--nvml-lib", lib.to_str().unwrap()], &[("FAKE_NVML_STATE", state.display().to_string())]);
    assert_eq!(report.gpus.len(), 4, "fake NVML shows four GPUs");
    let job =
        report.jobs.iter().find(|j| j.job_id == run).unwrap_or_else(|| panic!("no job {run}: {:#?}", report.jobs));
    assert_eq!(job.scheduler, Scheduler::Torchrun);
    assert_eq!(job.world_size, Some(4));
    let got: Vec<(u32, Option<u32>, Vec<u32>)> = job.ranks.iter().map(|s| (s.rank, s.pid, s.gpus.clone())).collect();
    let mut want: Vec<(u32, Option<u32>, Vec<u32>)> =
        workers.iter().map(|(r, p)| (*r, Some(*p), vec![3 - r])).collect();
    want.sort();
    assert_eq!(got, want, "ranks are the workers (not the launcher or loaders), on the GPUs NVML names");
    assert!(job.ranks.iter().all(|s| s.state == ProcState::Sleeping));
}

fn scrape(url: &str) -> String {
    http().get(format!("{url}/metrics")).send().and_then(|r| r.text()).unwrap_or_default()
}

/// The value of the sample with exactly these labels, if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

#[test]
fn running_agent_takes_progress_refuses_bad_posts_and_sees_the_rank_exit() {
    let job = format!("e2e-slurm-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("progress.sock");
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--interval", "300ms", "--no-gpu"])
        .args(["--node-name", "e2e-jobs"])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--progress-socket")
        .arg(&sock);
    let mut agent = Proc::spawn(cmd);
    let progress_line = agent.next_line(DEADLINE).expect("progress line");
    let purl = progress_line.strip_prefix("progress on ").expect("`progress on http://ADDR`").trim().to_string();

    let mut rank = Kid(Command::new("sleep")
        .arg("60")
        .env("SLURM_JOB_ID", &job)
        .env("SLURM_PROCID", "0")
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_LOCALID", "0")
        .env("SLURM_NTASKS", "2")
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    let labels = format!(r#"Hostname="e2e-jobs",job_id="{job}",rank="0""#);
    wait_for(DEADLINE, "rank 0 up in /metrics", || {
        (sample(&scrape(&agent.url), "faultline_rank_up", &labels) == Some(1.0)).then_some(())
    });

    // report-progress as its own process, over HTTP and over the Unix socket.
    let post = |args: &[&str]| {
        let out = Command::new(bin("faultline-agent")).arg("report-progress").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let url = format!("{purl}/progress");
    let udp = purl.trim_start_matches("http://").to_string();
    let (code, err) = post(&["--job", &job, "--rank", "0", "--step", "40", "--step-time-ms", "400", "--udp", &udp]);
    assert_eq!(code, Some(0), "a datagram (the default transport): {err}");
    wait_for(DEADLINE, "step 40 (sent as a datagram) in /metrics", || {
        (sample(&scrape(&agent.url), "faultline_rank_step", &labels) == Some(40.0)).then_some(())
    });
    let (code, err) = post(&["--job", &job, "--rank", "0", "--step", "41", "--step-time-ms", "500", "--url", &url]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = post(&[
        "--job",
        &job,
        "--rank",
        "0",
        "--step",
        "42",
        "--step-time-ms",
        "750",
        "--compute-ms",
        "600",
        "--loss",
        "2.5",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    wait_for(DEADLINE, "step 42 in /metrics", || {
        let m = scrape(&agent.url);
        (sample(&m, "faultline_rank_step", &labels) == Some(42.0)
            && sample(&m, "faultline_rank_step_time_seconds", &labels) == Some(0.75)
            && sample(&m, "faultline_rank_compute_seconds", &labels) == Some(0.6))
        .then_some(())
    });
    let jobs_line = format!(r#"Hostname="e2e-jobs",job_id="{job}""#);
    assert_eq!(sample(&scrape(&agent.url), "faultline_job_ranks", &jobs_line), Some(1.0));

    // Bad posts: refused with the reason, and nothing changes.
    let (code, err) = post(&["--job", &job, "--rank", "0", "--step", "43", "--status", "paused", "--url", &url]);
    assert_eq!(code, Some(2), "refused on the command line: {err}");
    assert!(err.contains("paused"), "{err}");
    let resp = http().post(&url).body(format!(r#"{{"job":"{job}","rank":0,"step":-1}}"#)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().unwrap().contains("step"));
    let resp = http().post(&url).body("{not json").send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // The loop says it exits, the process is killed and reaped: the rank goes down with the code.
    let (code, err) =
        post(&["--job", &job, "--rank", "0", "--step", "42", "--status", "exited", "--exit-code", "1", "--url", &url]);
    assert_eq!(code, Some(0), "{err}");
    rank.0.kill().unwrap();
    rank.0.wait().unwrap();
    wait_for(DEADLINE, "rank 0 down in /metrics", || {
        (sample(&scrape(&agent.url), "faultline_rank_up", &labels) == Some(0.0)).then_some(())
    });
    assert_eq!(sample(&scrape(&agent.url), "faultline_rank_step", &labels), Some(42.0), "nothing moved the step");
}

/// The Python snippet in `agent/PROGRESS.md`, run as written (only the port points at this agent), must
/// reach the agent as a datagram, including a NaN loss.
#[test]
fn progress_md_python_snippet_posts_to_a_real_agent() {
    let Some(python) = faultline_tests::external("python3") else { return };
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/PROGRESS.md")).unwrap();
    // The plain standard-library snippet (the module's own usage block comes first).
    let snippet = doc
        .split("```python\n")
        .skip(1)
        .filter_map(|s| s.split("```").next())
        .find(|s| s.contains("AGENT = ("))
        .expect("the python snippet with AGENT = (...)");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--interval", "300ms", "--no-gpu"])
        .args(["--node-name", "e2e-py"])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"));
    let mut agent = Proc::spawn(cmd);
    let purl = agent.next_line(DEADLINE).expect("progress line").replace("progress on ", "");
    let purl = purl.trim();
    let port = purl.rsplit(':').next().unwrap();
    let default = r#"AGENT = ("127.0.0.1", 9431)"#;
    assert!(snippet.contains(default), "the snippet names the default address");
    let script = format!(
        "{}\nreport_progress(7, step_time_ms=120.0, compute_ms=90.0, loss=float('nan'))\n",
        snippet.replace(default, &format!(r#"AGENT = ("127.0.0.1", {port})"#))
    );
    let job = format!("py-{}", std::process::id());
    let out = Command::new(python).arg("-c").arg(&script).env("SLURM_JOB_ID", &job).env("RANK", "2").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A datagram has no answer: poll until the agent has read it.
    let e = wait_for(DEADLINE, "the snippet's datagram in GET /progress", || {
        let list = faultline_tests::get_json(&format!("{purl}/progress"), None)?;
        list.as_array()?.iter().find(|e| e["job"] == job.as_str()).cloned()
    });
    assert_eq!(e["rank"], 2);
    assert_eq!(e["progress"]["step"], 7);
    assert_eq!(e["progress"]["nonfinite_loss"], true);
    assert_eq!(e["progress"]["compute_ms"], 90.0);
    let m = scrape(&agent.url);
    assert_eq!(sample(&m, "faultline_agent_progress_posts_total", r#"Hostname="e2e-py""#), Some(1.0), "{m}");
    assert_eq!(sample(&m, "faultline_agent_progress_rejected_total", r#"Hostname="e2e-py""#), Some(0.0));
}
