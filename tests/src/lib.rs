//! Helpers for faultline's end-to-end tests: find the built binaries, start real processes on
//! `127.0.0.1:0`, learn their address from the `listening on http://ADDR` line, and kill them on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Path of a workspace binary built next to the running test (`target/<profile>/<name>`).
///
/// `cargo test --workspace` builds every binary before any test runs. When running a single test
/// target, build the binaries first (`cargo build -p faultline-agent -p faultline-analyzer`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// Path of the fake NVML library (`libnvidia_ml.so` from `tests/fake-nvml`), built as a dependency.
pub fn fake_nvml_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    for cand in [deps.join("libnvidia_ml.so"), deps.parent().unwrap().join("libnvidia_ml.so")] {
        if cand.exists() {
            return cand;
        }
    }
    panic!("libnvidia_ml.so (tests/fake-nvml) is not built next to {}", deps.display());
}

/// True when running under CI (`CI=true`): a test that needs an external binary must fail there if it
/// is missing, never skip silently.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Where system daemons live when they are not on a user's PATH (munged, slurmctld, slurmd).
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin"];

/// Find an external program (prometheus, alertmanager, promtool, slurmctld…) on PATH, then in the
/// system directories. Under CI a missing one panics; elsewhere the caller gets `None` and must say
/// loudly that the test was not run. The one place the tests decide what CI requires.
pub fn external(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
        .or_else(|| SYSTEM_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file()));
    if found.is_none() {
        if in_ci() {
            panic!("{name} is required under CI but is not installed (.ci/run should install it)");
        }
        eprintln!("NOT RUN: {name} is not installed on this machine; install it to run this test");
    }
    found
}

/// A running child process. Killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    /// `http://127.0.0.1:PORT` from the first `listening on` line, when the process prints one.
    pub url: String,
    /// Further stdout lines, in order (after the `listening on` line).
    lines: mpsc::Receiver<String>,
    /// Everything the process wrote to stderr so far (for failure messages).
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Start `cmd` and wait (up to 60 s) for its `listening on http://ADDR` line.
    pub fn spawn(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, true)
    }

    /// Start `cmd` without waiting for a listening line (one-shot commands, agents without listeners).
    pub fn spawn_plain(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, false)
    }

    fn spawn_inner(mut cmd: Command, wait_listen: bool) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let s2 = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if std::env::var_os("FAULTLINE_TEST_STDERR").is_some() {
                    eprint!("{text}");
                }
                let mut s = s2.lock().unwrap();
                if s.len() < 1 << 20 {
                    s.push_str(&text);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc { child, url: String::new(), lines: rx, stderr };
        if wait_listen {
            let line = p
                .next_line(Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{desc} printed no `listening on` line; stderr:\n{}", p.stderr()));
            let url = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("first stdout line of {desc} was {line:?}, not `listening on …`"));
            p.url = url.trim().to_string();
        }
        p
    }

    /// The next stdout line, waiting up to `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status if it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP client for tests (loopback only, short timeouts).
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// GET `url` with an optional bearer token and parse JSON; `None` on any error or non-2xx.
pub fn get_json(url: &str, token: Option<&str>) -> Option<serde_json::Value> {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().ok()
}

/// Start a real analyzer on `127.0.0.1:0` with its database in `dir`, and `extra` arguments.
pub fn start_analyzer(dir: &Path, token: Option<&str>, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--listen").arg("127.0.0.1:0").arg("--db").arg(dir.join("faultline.db"));
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    cmd.args(extra).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd)
}

/// A free loopback port (bound then released; fine for tests that must restart a server on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Unix milliseconds now (for report and event timestamps in tests).
pub use faultline_proto::time::now_ms;

/// A `NodeReport` JSON body of `node` with `gpus` GPUs and one rank of job `job` on each; GPUs in `lost` are lost.
pub fn report_json(
    node: &str,
    job: &str,
    gpus: u32,
    seq: u64,
    lost: &[u32],
    events: Vec<serde_json::Value>,
) -> serde_json::Value {
    let ts = now_ms();
    let gpu_list: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            let is_lost = lost.contains(&i);
            serde_json::json!({
                "index": i, "uuid": format!("GPU-{node}-{i:04}"), "name": "NVIDIA H100 80GB HBM3", "serial": null,
                "pci_bus_id": format!("00000000:{:02X}:00.0", 0x18 + i * 16),
                "state": if is_lost { "lost" } else { "ok" },
                "util_gpu_pct": if is_lost { serde_json::Value::Null } else { serde_json::json!(97.0) }, "util_mem_pct": null,
                "mem_total_bytes": null, "mem_used_bytes": null, "mem_free_bytes": null,
                "temp_c": if is_lost { serde_json::Value::Null } else { serde_json::json!(61.0) }, "mem_temp_c": null,
                "power_w": if is_lost { serde_json::Value::Null } else { serde_json::json!(640.0) }, "power_limit_w": 700.0,
                "energy_mj": null, "sm_clock_mhz": if is_lost { serde_json::Value::Null } else { serde_json::json!(1980) },
                "sm_clock_max_mhz": 1980, "mem_clock_mhz": null, "mem_clock_max_mhz": null, "throttle_mask": null,
            })
        })
        .collect();
    let ranks: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            serde_json::json!({"rank": i, "local_rank": i, "pid": 2000 + i, "gpus": [i], "state": "running",
                   "cpu_seconds": 10.0 * seq as f64, "rss_bytes": 1_000_000_000u64})
        })
        .collect();
    serde_json::json!({
        "schema_version": 1, "node": node, "agent_version": "0.1.0", "seq": seq, "timestamp_ms": ts,
        "interval_ms": 1000, "urgent": !events.is_empty(),
        "gpus": gpu_list,
        "jobs": [{"job_id": job, "scheduler": "torchrun", "world_size": gpus, "ranks": ranks}],
        "events": events,
    })
}

/// Child pids of `pid`, sorted, from `/proc/*/stat` (field 4 is the parent pid).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if rest.split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out.sort_unstable();
    out
}
