//! Captures real CLI output for the README into `cli/EXAMPLES.md`: a real analyzer on loopback, fed
//! by `faultline sim run --analyzer` (the simulator's agents over HTTP) for an 8-node H100 cluster with
//! two jobs, then a GPU that falls off the bus. Not a check (it asserts only that the fault was
//! diagnosed), so it is ignored by default:
//!
//! `cargo build -p faultline-analyzer && cargo test -p faultline --test examples -- --ignored`

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use faultline_sim::Scenario;
use faultline_sim::cluster::Cluster;
use faultline_tests::{Proc, free_port, start_analyzer, wait_for};

const TOKEN: &str = "example-token";
/// Virtual seconds per real second. Real time, so report times (the simulated agents' clocks) and
/// the analyzer's clock agree, as they would on a real cluster.
const SPEED: &str = "1";

const SCENARIO: &str = r#"
name = "readme"
seed = 7
duration_s = 900
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = 8
nodes_per_leaf = 4
spines = 2
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"

[[job]]
id = "llm-70b"
hosts = ["node-0000", "node-0001", "node-0004", "node-0005"]
step_time_s = 2.0

[[job]]
id = "vision-ft"
hosts = ["node-0002"]
step_time_s = 1.0

[[fault]]
kind = "gpu_lost"
target = "node-0004/gpu3"
at_s = 60
duration_s = 600
"#;

struct Shot {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli(url: &str, token: &str, args: &[&str]) -> Shot {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("HOME", home.path())
        .env("FAULTLINE_ANALYZER", url)
        .env("FAULTLINE_TOKEN", token)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    Shot {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn section(md: &mut String, title: &str, s: &Shot) {
    let _ = write!(md, "### {title}\n\n```console\n$ faultline {}\n{}{}```\n", s.args.join(" "), s.stdout, s.stderr);
    let _ = writeln!(md, "exit code {}\n", s.code);
}

fn json(s: &Shot) -> Option<serde_json::Value> {
    serde_json::from_str(&s.stdout).ok()
}

#[test]
#[ignore = "writes cli/EXAMPLES.md; run by hand"]
fn capture_examples() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("readme.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    // The analyzer gets the same switch wiring the simulated operators would write.
    let sc = Scenario::parse(SCENARIO, "readme.toml").unwrap();
    let topo = dir.path().join("topology.json");
    std::fs::write(&topo, serde_json::to_string_pretty(&Cluster::build(&sc).topology()).unwrap()).unwrap();
    let a = start_analyzer(dir.path(), Some(TOKEN), &["--topology", topo.to_str().unwrap()]);
    let url = a.url.clone();

    let mut sim = Command::new(env!("CARGO_BIN_EXE_faultline"));
    sim.args(["sim", "run", scenario.to_str().unwrap(), "--speed", SPEED, "--analyzer", &url, "--token", TOKEN]);
    let sim = Proc::spawn_plain(sim);

    let run = |args: &[&str]| cli(&url, TOKEN, args);
    wait_for(Duration::from_secs(120), "both jobs wired across their nodes", || {
        let v = json(&run(&["jobs", "--json"]))?;
        let llm = v.as_array()?.iter().find(|j| j["id"] == "llm-70b")?.clone();
        let ranks = llm["ranks"].as_array()?;
        (ranks.len() == 32 && ranks.iter().all(|r| r["nic"].is_string())).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));

    let mut md = String::from(
        "# faultline CLI: real output\n\n\
         Captured by `cli/tests/examples.rs` (`cargo test -p faultline --test examples -- --ignored`): a real\n\
         `faultline-analyzer` on loopback, fed by `faultline sim run --analyzer URL --speed 1` (simulated\n\
         agents pushing NodeReports over HTTP every 10 s of virtual time) for an 8-node H100 cluster: 8\n\
         GPUs and 8 NICs per node, two racks of four nodes on leaf-00/leaf-01, two spines; `llm-70b` on\n\
         node-0000/0001/0004/0005 (32 ranks) and `vision-ft` on node-0002 (8 ranks). At 60 s\n\
         node-0004's GPU 3 falls off the bus.\n\n\
         ## Healthy\n\n",
    );
    section(&mut md, "status", &run(&["status"]));
    section(&mut md, "incidents", &run(&["incidents"]));
    section(&mut md, "topology", &run(&["topology"]));
    section(&mut md, "jobs", &run(&["jobs"]));
    section(&mut md, "path (a single-node job: no NICs or switches on its path)", &run(&["path", "vision-ft"]));
    section(&mut md, "explain a node", &run(&["explain", "node-0004"]));

    let id = wait_for(Duration::from_secs(180), "an incident for the lost GPU", || {
        let v = json(&run(&["incidents", "--json"]))?;
        v.as_array()?.iter().find(|i| i["root"] == "node-0004/gpu3")?["id"].as_str().map(str::to_string)
    });
    std::thread::sleep(Duration::from_secs(8));
    md.push_str("## After node-0004/gpu3 fell off the bus\n\n");
    section(&mut md, "status", &run(&["status"]));
    section(&mut md, "incidents", &run(&["incidents"]));
    section(&mut md, "incidents --all", &run(&["incidents", "--all"]));
    section(&mut md, "incident", &run(&["incident", &id]));
    section(&mut md, "explain a GPU", &run(&["explain", "node-0004/gpu3"]));
    section(&mut md, "explain a job", &run(&["explain", "job:llm-70b"]));
    section(&mut md, "jobs", &run(&["jobs"]));
    section(
        &mut md,
        "path --faulty (only the paths through something unhealthy)",
        &run(&["path", "llm-70b", "--faulty"]),
    );
    section(
        &mut md,
        "watch (on a pipe: snapshots separated by a blank line)",
        &run(&["watch", "--count", "2", "--interval", "2s"]),
    );
    if let Some(v) = json(&run(&["incident", &id, "--json"])) {
        let short = serde_json::json!({
            "id": v["id"], "root": v["root"], "class": v["class"], "severity": v["severity"],
            "confidence": v["confidence"], "status": v["status"], "action": v["action"],
            "affected_jobs": v["affected_jobs"], "summary": v["summary"],
        });
        let _ = write!(
            md,
            "### incident --json (selected fields)\n\n```console\n$ faultline incident {id} --json | jq '{{id, root, class, severity, confidence, status, action, affected_jobs, summary}}'\n{}\n```\n\n",
            serde_json::to_string_pretty(&short).unwrap()
        );
    }

    md.push_str("## Errors (stderr, exit 2)\n\n");
    let closed = format!("http://127.0.0.1:{}", free_port());
    section(&mut md, "analyzer unreachable", &cli(&closed, TOKEN, &["status"]));
    section(&mut md, "wrong token", &cli(&url, "not-the-token", &["status"]));
    section(&mut md, "unknown id", &run(&["incident", "inc-000099"]));
    section(&mut md, "malformed id", &run(&["explain", "node-0004/gpu"]));

    md.push_str("## The whole tree of the faulty job\n\n");
    section(&mut md, "path", &run(&["path", "llm-70b"]));

    drop(sim);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("EXAMPLES.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("wrote {}", out.display());
}
