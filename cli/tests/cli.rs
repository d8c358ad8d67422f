//! End-to-end tests of the `faultline` CLI against a real `faultline-analyzer` process on loopback:
//! every command, the `--json` shapes, the exit codes (0 healthy, 1 findings, 2 error), the error
//! messages, config precedence, and the `--help` snapshots.
//!
//! Build the analyzer first when running only this crate's tests:
//! `cargo build -p faultline-analyzer && cargo test -p faultline --test cli`.
//! `UPDATE_SNAPSHOTS=1` rewrites `tests/snapshots/*.txt` from the current `--help` output.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_proto::time::now_ms;
use faultline_proto::{
    Event, EventSource, GpuSample, GpuState, JobSample, NicSample, NodeReport, ProcState, Progress, RankSample,
    SCHEMA_VERSION, Scheduler, Severity,
};
use faultline_tests::{Proc, free_port, http, start_analyzer, wait_for};
use serde_json::Value;

const TOKEN: &str = "cli-test-token";
const JOB: &str = "llm-test";
const NODES: [&str; 2] = ["node-0001", "node-0002"];
/// Generous: the analyzer ticks once a second, and CI machines are slow and shared.
const DEADLINE: Duration = Duration::from_secs(90);

const TOPOLOGY: &str = r#"
[[switch]]
name = "leaf-00"
tier = "leaf"
uplinks = ["spine-00"]

[[switch]]
name = "leaf-01"
tier = "leaf"
uplinks = ["spine-00"]

[[switch]]
name = "spine-00"
tier = "spine"

[[rail]]
leaf = "leaf-00"
nic = "mlx5_0"

[[rail]]
leaf = "leaf-01"
nic = "mlx5_1"
"#;

/// What one CLI run did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A scratch HOME (so no real config file leaks in) and the analyzer the CLI talks to.
struct Env {
    home: tempfile::TempDir,
    url: String,
    token: Option<String>,
}

impl Env {
    fn new(url: &str, token: Option<&str>) -> Self {
        Self { home: tempfile::tempdir().unwrap(), url: url.to_string(), token: token.map(str::to_string) }
    }

    /// Runs `faultline` with `--analyzer`/`--token` from this env and no FAULTLINE_* variables.
    fn run(&self, args: &[&str]) -> Out {
        let mut full: Vec<String> = vec!["--analyzer".into(), self.url.clone()];
        if let Some(t) = &self.token {
            full.push("--token".into());
            full.push(t.clone());
        }
        full.extend(args.iter().map(|s| s.to_string()));
        self.raw(&full, &[])
    }

    /// Runs `faultline` with exactly `args` and `envs` (plus the scratch HOME).
    fn raw<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], envs: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.args(args)
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("FAULTLINE_ANALYZER")
            .env_remove("FAULTLINE_TOKEN")
            .env_remove("NO_COLOR");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run faultline");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

#[track_caller]
fn expect_code(o: &Out, code: i32, what: &str) {
    assert_eq!(o.code, code, "{what}: exit {} (wanted {code})\nstdout:\n{}\nstderr:\n{}", o.code, o.stdout, o.stderr);
}

/// A node of the test cluster: 2 GPUs, 2 InfiniBand NICs, ranks `2i` and `2i+1` of the job.
fn report(node_index: usize, seq: u64, xid79_on_gpu1: bool) -> NodeReport {
    let node = NODES[node_index];
    let ts = now_ms();
    let gpus = (0..2u32)
        .map(|g| {
            let lost = xid79_on_gpu1 && g == 1;
            GpuSample {
                index: g,
                uuid: format!("GPU-{node}-{g}"),
                name: "NVIDIA H100 80GB HBM3".into(),
                state: if lost { GpuState::Lost } else { GpuState::Ok },
                util_gpu_pct: (!lost).then_some(95.0),
                temp_c: (!lost).then_some(60.0),
                power_w: (!lost).then_some(550.0),
                power_limit_w: Some(700.0),
                mem_total_bytes: Some(80 << 30),
                mem_used_bytes: (!lost).then_some(60 << 30),
                ..Default::default()
            }
        })
        .collect();
    let nics = (0..2)
        .map(|n| NicSample {
            name: format!("mlx5_{n}"),
            operstate: Some("up".into()),
            carrier: Some(true),
            carrier_changes: Some(2),
            ib_state: Some("ACTIVE".into()),
            ib_phys_state: Some("LinkUp".into()),
            rate_gbps: Some(400.0),
            max_rate_gbps: Some(400.0),
            counters: [("symbol_error".into(), 0u64), ("link_downed".into(), 0)].into_iter().collect(),
            ..Default::default()
        })
        .collect();
    let ranks = (0..2u32)
        .map(|g| RankSample {
            rank: node_index as u32 * 2 + g,
            local_rank: Some(g),
            pid: Some(1000 + g),
            gpus: vec![g],
            nic: Some(format!("mlx5_{g}")),
            state: ProcState::Running,
            progress: Some(Progress {
                step: seq * 10,
                last_progress_ms: ts,
                step_time_ms: Some(1000.0),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let events = if xid79_on_gpu1 {
        vec![Event {
            ts_ms: ts,
            source: EventSource::Nvml,
            class: faultline_proto::EventClass::Xid,
            severity: Severity::Critical,
            component: Some("gpu1".into()),
            xid: Some(79),
            count: 1,
            message: "NVRM: Xid (PCI:0000:1b:00): 79, GPU has fallen off the bus.".into(),
            ..Default::default()
        }]
    } else {
        vec![]
    };
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: node.into(),
        agent_version: "0.1.0".into(),
        seq,
        timestamp_ms: ts,
        interval_ms: 10_000,
        shutdown: false,
        urgent: xid79_on_gpu1,
        host: None,
        gpus,
        nics,
        disks: vec![],
        jobs: vec![JobSample {
            job_id: JOB.into(),
            scheduler: Scheduler::Slurm,
            world_size: Some(4),
            sched_state: None,
            sched_exit_code: None,
            ranks,
        }],
        events,
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
        driver_version: None,
        probes: Vec::new(),
    }
}

fn post(url: &str, r: &NodeReport) {
    let resp = http().post(format!("{url}/api/v1/reports")).bearer_auth(TOKEN).json(r).send().expect("post report");
    let status = resp.status();
    assert!(status.is_success(), "report refused: {status} {}", resp.text().unwrap_or_default());
}

/// A real analyzer with the test topology and a token.
fn analyzer(dir: &Path) -> Proc {
    let topo = dir.join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    start_analyzer(dir, Some(TOKEN), &["--topology", topo.to_str().unwrap()])
}

/// Both nodes report once, and the CLI sees the job.
fn healthy_cluster(env: &Env, url: &str) {
    for i in 0..NODES.len() {
        post(url, &report(i, 1, false));
    }
    // The analyzer wires jobs on its tick: wait until all four ranks are placed on both nodes, with
    // their NICs (a job spanning nodes depends on its NICs and leaves).
    wait_for(DEADLINE, "the 2-node job with its NICs in `faultline jobs --json`", || {
        let o = env.run(&["jobs", "--json"]);
        let v = o.json();
        let job = v.as_array()?.iter().find(|j| j["id"] == JOB)?.clone();
        let ranks = job["ranks"].as_array()?;
        (o.code == 0 && ranks.len() == 4 && ranks.iter().all(|r| r["nic"].is_string())).then_some(())
    });
}

#[test]
fn errors_say_what_went_wrong_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(dir.path());

    // Unreachable: a closed port, by flag and by environment.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = Env::new(&closed, None);
    for o in [env.run(&["status"]), env.raw(&["incidents"], &[("FAULTLINE_ANALYZER", closed.as_str())])] {
        expect_code(&o, 2, "closed port");
        assert!(
            o.stderr.contains(&format!("cannot reach the analyzer at {closed}: connection refused"))
                && o.stderr.contains("Is faultline-analyzer running?")
                && o.stderr.contains("--analyzer or FAULTLINE_ANALYZER"),
            "{}",
            o.stderr
        );
        assert!(o.stdout.is_empty(), "{}", o.stdout);
    }

    // Wrong token, and none at all.
    for token in [Some("wrong"), None] {
        let o = Env::new(&a.url, token).run(&["status"]);
        expect_code(&o, 2, "bad token");
        assert!(
            o.stderr.contains("the analyzer refused the token") && o.stderr.contains("set --token or FAULTLINE_TOKEN"),
            "{}",
            o.stderr
        );
    }

    // Unknown ids, each with the command that lists the real ones.
    let env = Env::new(&a.url, Some(TOKEN));
    let cases: [(&[&str], &str); 4] = [
        (&["incident", "inc-000099"], "no incident inc-000099; list them with `faultline incidents --all`"),
        (&["explain", "node-9999/gpu7"], "no component node-9999/gpu7;"),
        (&["explain", "job:no-such-job"], "no job no-such-job; list running jobs with `faultline jobs`"),
        (&["path", "no-such-job"], "no job no-such-job; list running jobs with `faultline jobs`"),
    ];
    for (args, want) in cases {
        let o = env.run(args);
        expect_code(&o, 2, &format!("{args:?}"));
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }

    // Malformed input is refused before any request, with the format to use.
    let o = env.run(&["explain", "node-1/gpuX"]);
    expect_code(&o, 2, "bad component id");
    assert!(o.stderr.contains("invalid component id") && o.stderr.contains("switch:leaf-02"), "{}", o.stderr);
    let o = env.run(&["incidents", "--since", "yesterday"]);
    expect_code(&o, 2, "bad --since");
    assert!(o.stderr.contains("--since \"yesterday\""), "{}", o.stderr);
    let o = env.run(&["watch", "--interval", "1ms", "--count", "1"]);
    expect_code(&o, 2, "tiny interval");
}

#[test]
fn analyzer_and_token_come_from_flag_then_env_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(dir.path());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = Env::new("unused", None);
    let cfg_dir = env.home.path().join(".config/faultline");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("cli.toml"), format!("analyzer = \"{}\"\ntoken = \"{TOKEN}\"\n", a.url)).unwrap();

    let o = env.raw(&["status"], &[]);
    expect_code(&o, 0, "config file alone");
    let o = env.raw(&["status"], &[("FAULTLINE_ANALYZER", closed.as_str())]);
    expect_code(&o, 2, "env beats file");
    assert!(o.stderr.contains(&closed), "{}", o.stderr);
    let o = env.raw(&["--analyzer", a.url.as_str(), "status"], &[("FAULTLINE_ANALYZER", closed.as_str())]);
    expect_code(&o, 0, "flag beats env");
    let o = env.raw(&["status"], &[("FAULTLINE_TOKEN", "wrong")]);
    expect_code(&o, 2, "env token beats file token");
    let o = env.raw(&["status", "--token", TOKEN], &[("FAULTLINE_TOKEN", "wrong")]);
    expect_code(&o, 0, "flag token beats env token (flag after the subcommand)");

    std::fs::write(cfg_dir.join("cli.toml"), "analyser = \"http://x\"\n").unwrap();
    let o = env.raw(&["status"], &[]);
    expect_code(&o, 2, "misspelt config key");
    assert!(o.stderr.contains("cli.toml") && o.stderr.contains("analyser"), "{}", o.stderr);
}

#[test]
fn healthy_cluster_every_command_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(dir.path());
    let env = Env::new(&a.url, Some(TOKEN));
    healthy_cluster(&env, &a.url);

    let o = env.run(&["status"]);
    expect_code(&o, 0, "status");
    assert!(o.stdout.contains("2 reporting") && o.stdout.contains("none open"), "{}", o.stdout);
    let o = env.run(&["status", "--json"]);
    expect_code(&o, 0, "status --json");
    let v = o.json();
    assert_eq!(v["summary"]["nodes"], 2, "{v:#}");
    assert_eq!(v["summary"]["open_incidents"], 0, "{v:#}");
    let names: BTreeSet<&str> = v["nodes"].as_array().unwrap().iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, NODES.into_iter().collect());
    assert_eq!(v["open_incidents"], Value::Array(vec![]));

    let o = env.run(&["incidents"]);
    expect_code(&o, 0, "incidents");
    assert_eq!(o.stdout, "no open incidents\n");
    for args in [&["incidents", "--json"][..], &["incidents", "--all", "--since", "1h", "--json"]] {
        let o = env.run(args);
        expect_code(&o, 0, &format!("{args:?}"));
        assert_eq!(o.json(), Value::Array(vec![]), "{args:?}");
    }

    let o = env.run(&["topology"]);
    expect_code(&o, 0, "topology");
    assert!(o.stdout.contains("switch:leaf-00") && o.stdout.contains("switch:spine-00"), "{}", o.stdout);
    let v = env.run(&["topology", "--json"]).json();
    let tiers: BTreeSet<(&str, &str)> = v["switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["tier"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tiers,
        [("switch:leaf-00", "leaf"), ("switch:leaf-01", "leaf"), ("switch:spine-00", "spine")].into_iter().collect()
    );
    assert!(v["nodes"].is_array());

    let o = env.run(&["jobs"]);
    expect_code(&o, 0, "jobs");
    assert!(o.stdout.contains(JOB), "{}", o.stdout);
    let v = env.run(&["jobs", "--json"]).json();
    let job = v.as_array().unwrap().iter().find(|j| j["id"] == JOB).unwrap();
    assert_eq!(job["ranks"].as_array().unwrap().len(), 4, "{job:#}");
    assert_eq!(job["healthy"], true);

    let o = env.run(&["path", JOB]);
    expect_code(&o, 0, "path");
    assert!(o.stdout.starts_with(&format!("✓ job:{JOB}\n")), "{}", o.stdout);
    for want in ["├── ✓ job:llm-test/rank0", "✓ node-0002/gpu1", "✓ switch:leaf-01", "uplinks: ✓ switch:spine-00"]
    {
        assert!(o.stdout.contains(want), "{want:?} not in\n{}", o.stdout);
    }
    assert!(!o.stdout.contains('✗'), "{}", o.stdout);
    let o = env.run(&["path", JOB, "--faulty"]);
    expect_code(&o, 0, "path --faulty on a healthy job");
    assert!(o.stdout.starts_with("no path of job:llm-test passes through an unhealthy component"), "{}", o.stdout);
    let v = env.run(&["path", &format!("job:{JOB}"), "--json"]).json();
    assert_eq!(v["job"]["id"], JOB);
    assert_eq!(v["health"]["node-0001/gpu1"], true, "{v:#}");

    for target in ["node-0001", "node-0001/gpu0", "node-0002/nic:mlx5_1", "switch:leaf-00"] {
        let o = env.run(&["explain", target]);
        expect_code(&o, 0, &format!("explain {target}"));
        assert!(o.stdout.starts_with(target) && o.stdout.contains("healthy ✓"), "{}", o.stdout);
    }
    let v = env.run(&["explain", "node-0001/gpu0", "--json"]).json();
    assert_eq!(
        (v["id"].as_str(), v["kind"].as_str(), v["healthy"].as_bool()),
        (Some("node-0001/gpu0"), Some("gpu"), Some(true))
    );
    assert!(v["depends_on"].as_array().unwrap().iter().any(|d| d == "node-0001"), "{v:#}");
    let o = env.run(&["explain", &format!("job:{JOB}")]);
    expect_code(&o, 0, "explain job");
    assert!(o.stdout.contains("4 ranks on 2 nodes"), "{}", o.stdout);

    // watch on a pipe: successive snapshots separated by a blank line.
    let o = env.run(&["watch", "--interval", "200ms", "--count", "2"]);
    expect_code(&o, 0, "watch");
    assert_eq!(o.stdout.matches("refresh ").count(), 2, "{}", o.stdout);
    assert!(o.stdout.contains("\n\nevery 200ms"), "{}", o.stdout);
    let o = env.run(&["watch", "--json", "--interval", "200ms", "--count", "2"]);
    expect_code(&o, 0, "watch --json");
    let lines: Vec<Value> = o.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|v| v["summary"]["nodes"] == 2));
}

#[test]
fn an_open_incident_turns_exit_codes_to_1() {
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(dir.path());
    let env = Env::new(&a.url, Some(TOKEN));
    healthy_cluster(&env, &a.url);
    expect_code(&env.run(&["status"]), 0, "status before the fault");

    // node-0001's GPU 1 falls off the bus: XID 79 and NVML says it is lost.
    post(&a.url, &report(0, 2, true));
    post(&a.url, &report(1, 2, false));
    let mut seq = 3;
    let incident = wait_for(DEADLINE, "an open incident after XID 79", || {
        // Keep both agents heard while the engine works.
        post(&a.url, &report(0, seq, true));
        post(&a.url, &report(1, seq, false));
        seq += 1;
        let o = env.run(&["incidents", "--json"]);
        let list = o.json();
        let first = list.as_array()?.first()?.clone();
        (o.code == 1).then_some(first)
    });
    assert_eq!(incident["root"], "node-0001/gpu1", "{incident:#}");
    assert_eq!(incident["class"], "gpu_lost", "{incident:#}");
    assert_eq!(incident["status"], "open");
    let id = incident["id"].as_str().unwrap().to_string();

    let o = env.run(&["status"]);
    expect_code(&o, 1, "status with an open incident");
    assert!(o.stdout.contains(&id) && o.stdout.contains("node-0001/gpu1"), "{}", o.stdout);
    let v = env.run(&["status", "--json"]).json();
    assert!(v["summary"]["open_incidents"].as_u64() >= Some(1), "{v:#}");
    assert!(v["open_incidents"].as_array().unwrap().iter().any(|i| i["id"] == id.as_str()));

    let o = env.run(&["incidents"]);
    expect_code(&o, 1, "incidents");
    assert!(o.stdout.starts_with("ID") && o.stdout.contains(&id) && o.stdout.contains("gpu_lost"), "{}", o.stdout);

    let o = env.run(&["incident", &id]);
    expect_code(&o, 1, "incident ID of an open incident");
    for want in ["root cause", "node-0001/gpu1", "confidence", "action", "evidence"] {
        assert!(o.stdout.contains(want), "{want:?} not in\n{}", o.stdout);
    }
    let v = env.run(&["incident", &id, "--json"]).json();
    assert_eq!(v["id"], id.as_str());
    if v["affected_jobs"].as_array().is_some_and(|a| !a.is_empty()) {
        assert!(o.stdout.contains("affected paths") && o.stdout.contains("└── "), "{}", o.stdout);
        assert!(o.stdout.contains("node-0001/gpu1 ✗ root cause"), "{}", o.stdout);
    }

    let o = env.run(&["explain", "node-0001/gpu1"]);
    expect_code(&o, 1, "explain the lost GPU");
    assert!(o.stdout.contains("UNHEALTHY") && o.stdout.contains(&id), "{}", o.stdout);
    assert_eq!(env.run(&["explain", "node-0001/gpu1", "--json"]).json()["healthy"], false);
    expect_code(&env.run(&["explain", "node-0002/gpu0"]), 0, "explain a healthy GPU on the other node");

    let o = env.run(&["path", JOB]);
    expect_code(&o, 1, "path through the lost GPU");
    assert!(o.stdout.contains("✗ node-0001/gpu1"), "{}", o.stdout);
    assert!(o.stdout.contains("✓ node-0002/gpu0"), "{}", o.stdout);
    let o = env.run(&["path", JOB, "--faulty"]);
    expect_code(&o, 1, "path --faulty");
    assert!(o.stdout.contains("✗ node-0001/gpu1") && !o.stdout.contains("node-0002/gpu0"), "{}", o.stdout);
}

// ---------------------------------------------------------------------------------------------
// --help snapshots

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Subcommand names from the `Commands:` section of the top-level help.
fn subcommands(top: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in top.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next().filter(|n| *n != "help") {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn help_matches_the_snapshots() {
    let env = Env::new("http://127.0.0.1:1", None);
    let help = |args: &[&str]| {
        let o = env.raw(args, &[]);
        expect_code(&o, 0, &format!("{args:?}"));
        o.stdout
    };
    let top = help(&["--help"]);
    let mut cases = vec![("faultline".to_string(), top.clone())];
    let subs = subcommands(&top);
    let diagnosis = ["status", "incidents", "incident", "explain", "path", "topology", "jobs", "watch"];
    for want in diagnosis {
        assert!(subs.iter().any(|s| s == want), "{want} missing from --help:\n{top}");
    }
    for s in &subs {
        cases.push((format!("faultline-{s}"), help(&[s.as_str(), "--help"])));
    }
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let dir = snapshot_dir();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut mismatched = Vec::new();
    for (name, text) in &cases {
        let documents_exit_codes =
            name == "faultline" || diagnosis.iter().any(|d| name.strip_prefix("faultline-") == Some(*d));
        if documents_exit_codes {
            assert!(text.contains("Exit codes:"), "{name} --help does not document the exit codes:\n{text}");
        }
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::write(&path, text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == *text => {}
            Ok(want) => mismatched
                .push(format!("{name}: differs from {}\n--- snapshot\n{want}\n--- now\n{text}", path.display())),
            Err(_) => mismatched.push(format!("{name}: no snapshot at {}", path.display())),
        }
    }
    // A snapshot for a command that no longer exists is stale.
    let known: BTreeSet<String> = cases.iter().map(|(n, _)| format!("{n}.txt")).collect();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if f.ends_with(".txt") && !known.contains(&f) {
            if update {
                std::fs::remove_file(e.path()).unwrap();
            } else {
                mismatched.push(format!("{f}: snapshot of a command that no longer exists"));
            }
        }
    }
    assert!(mismatched.is_empty(), "{}\n\nrun with UPDATE_SNAPSHOTS=1 to accept the new help", mismatched.join("\n\n"));
}
