//! Remediation against a REAL Slurm on loopback: the test starts its own munged (generated key, own
//! socket), slurmctld and one slurmd for ten nodes `node-[0000-0009]`, and a real analyzer whose
//! Slurm adapter runs the real `scontrol` with `SLURM_CONF` pointing at the test's slurm.conf.
//!
//! What it shows, in order:
//! 1. a leaf switch with 5 of the 10 nodes behind it fails; the guard (20% of 10 = 2 drains per hour)
//!    blocks it: none of the 5 is drained, `faultline_remediation_blocked_total` counts it, and the
//!    incident's timeline says why;
//! 2. XID 79 on node-0002 and node-0004 drains both with reason
//!    `faultline: gpu_lost <gpu> <incident>`; node-0007, drained by hand for maintenance, gets the
//!    same XID and is left alone;
//! 3. a person takes node-0004's drain over (new reason); when the faults are gone, the incidents
//!    resolve and the nodes stay healthy for the hold time, node-0002 is resumed and node-0004 and
//!    node-0007 stay drained with their people's reasons;
//! 4. `faultline drain/resume/actions` through the API, with the same ownership rule (`--force`).
//!
//! The adapter's timeout against a controller that is gone is in `tests/tests/remediate_slurm.rs`.
//!
//! Every daemon is killed when the test ends (also on failure).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "slurm_support/mod.rs"]
mod slurm_support;

use faultline_proto::time::now_ms;
use faultline_tests::{bin, get_json, http, start_analyzer, wait_for};
use serde_json::{Value, json};
use slurm_support::{Reporter, Slurm, node, programs};

const TOKEN: &str = "slurm-e2e-token";
const NODES: usize = 10;
/// How long an XID stays a symptom in the analyzer (its `EVENT_HOLD_MS`); the test backdates XIDs
/// so that they age out `XID_LIVE_S` seconds after they are sent.
const XID_HOLD_S: i64 = 300;
const XID_LIVE_S: i64 = 20;
/// Generous: Slurm, the analyzer and the agents' stand-in all run on two shared cores.
const DEADLINE: Duration = Duration::from_secs(120);

/// What the stand-in agents report beyond a healthy node.
#[derive(Default)]
struct Faults {
    nic_down: BTreeSet<String>,
    /// XID 79 to send once, per node (on gpu1).
    xid79: BTreeSet<String>,
}

fn report(n: &str, seq: u64, nic_down: bool, xid79: bool) -> Value {
    let now = now_ms();
    let gpu = |i: u32| {
        json!({"index": i, "uuid": format!("GPU-{n}-{i}"), "name": "H100", "state": "ok",
               "util_gpu_pct": 90.0, "temp_c": 60.0, "power_w": 600.0, "power_limit_w": 700.0,
               "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "throttle_mask": 0})
    };
    let (oper, ib) = if nic_down { ("down", "DOWN") } else { ("up", "ACTIVE") };
    let mut events = Vec::new();
    if xid79 {
        // Backdated so that the XID ages out of the analyzer's window `XID_LIVE_S` from now.
        let ts = now - (XID_HOLD_S - XID_LIVE_S) * 1000;
        events.push(json!({"ts_ms": ts, "source": "kmsg", "class": "xid", "severity": "critical",
                           "component": "gpu1", "xid": 79,
                           "message": "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."}));
    }
    json!({
        "schema_version": 1, "node": n, "agent_version": "slurm-e2e", "seq": seq,
        "timestamp_ms": now, "interval_ms": 1000,
        "gpus": [gpu(0), gpu(1)],
        "nics": [{"name": "mlx5_0", "kind": "infiniband", "netdev": "ib0", "port": 1, "operstate": oper,
                  "carrier": !nic_down, "link_layer": "InfiniBand", "ib_state": ib,
                  "ib_phys_state": if nic_down { "Polling" } else { "LinkUp" }, "rate_gbps": 400.0}],
        "events": events,
    })
}

fn analyzer_config(dir: &Path, slurm: &Slurm) -> (PathBuf, PathBuf) {
    let topo = dir.join("topology.toml");
    let rack = |from: usize| (from..from + 5).map(|i| format!("\"{}\"", node(i))).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &topo,
        format!(
            "[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\
             [[switch]]\nname = \"leaf-01\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\
             [[switch]]\nname = \"spine-00\"\ntier = \"spine\"\n\
             [[rack]]\nleaf = \"leaf-00\"\nnodes = [{}]\n\
             [[rack]]\nleaf = \"leaf-01\"\nnodes = [{}]\n",
            rack(0),
            rack(5)
        ),
    )
    .unwrap();
    let cfg = dir.join("analyzer.toml");
    std::fs::write(
        &cfg,
        format!(
            "tick_interval = \"250ms\"\n\
             resolve_after_s = 2.0\n\
             heartbeat_intervals = 10.0\n\
             [remediation]\n\
             default = \"suggest\"\n\
             adapter = \"slurm\"\n\
             healthy_hold = \"3s\"\n\
             max_drain_share = 0.2\n\
             window = \"1h\"\n\
             [[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"act\"\n\
             [[remediation.rule]]\nclass = \"leaf_switch_down\"\nmode = \"act\"\n\
             [remediation.slurm]\n\
             scontrol = \"{}\"\n\
             timeout = \"30s\"\n\
             env = {{ SLURM_CONF = \"{}\" }}\n",
            slurm.scontrol.display(),
            slurm.conf.display()
        ),
    )
    .unwrap();
    (cfg, topo)
}

fn api(url: &str, path: &str) -> Option<Value> {
    get_json(&format!("{url}{path}"), Some(TOKEN))
}

fn incidents(url: &str) -> Vec<Value> {
    api(url, "/api/v1/incidents?status=all").and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

fn incident_for(url: &str, class: &str, root: &str) -> Option<Value> {
    incidents(url).into_iter().find(|i| i["class"] == class && i["root"] == root)
}

fn actions(url: &str) -> Value {
    api(url, "/api/v1/actions").unwrap_or(Value::Null)
}

fn taken<'a>(v: &'a Value, node: &str, action: &str, result: &str) -> Vec<&'a Value> {
    v["taken"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["node"] == node && r["action"] == action && r["result"] == result).collect())
        .unwrap_or_default()
}

fn metric(url: &str, line_prefix: &str) -> Option<f64> {
    let text = http().get(format!("{url}/metrics")).send().ok()?.text().ok()?;
    text.lines().find(|l| l.starts_with(line_prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn timeline_details(inc: &Value) -> Vec<String> {
    inc["timeline"]
        .as_array()
        .map(|t| {
            t.iter().filter(|e| e["what"] == "action").map(|e| e["detail"].as_str().unwrap_or("").to_string()).collect()
        })
        .unwrap_or_default()
}

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("faultline"))
        .args(args)
        .env("FAULTLINE_ANALYZER", url)
        .env("FAULTLINE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

#[test]
fn drains_for_real_faults_resumes_only_its_own_and_stops_at_the_blast_radius() {
    let Some(progs) = programs("slurm_e2e") else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::start_nodes(&progs, dir.path(), NODES);
    let (cfg, topo) = analyzer_config(dir.path(), &slurm);
    let analyzer = start_analyzer(
        dir.path(),
        Some(TOKEN),
        &["--config", cfg.to_str().unwrap(), "--topology", topo.to_str().unwrap()],
    );
    let url = analyzer.url.clone();
    let faults = Arc::new(Mutex::new(Faults::default()));
    // The stand-in agents, with `faults` applied.
    let applied = faults.clone();
    let _reporter = Reporter::start(url.clone(), TOKEN, NODES, move |n, seq| {
        let (down, xid) = {
            let mut f = applied.lock().unwrap();
            (f.nic_down.contains(n), f.xid79.remove(n))
        };
        report(n, seq, down, xid)
    });
    wait_for(DEADLINE, "all ten nodes reporting", || {
        let n = api(&url, "/api/v1/nodes")?.as_array()?.len();
        (n == NODES).then_some(())
    });

    // 1. Leaf-01 fails: its five nodes lose link. 5 drains > 2 allowed → blocked, nothing drained.
    let behind: Vec<String> = (5..10).map(node).collect();
    faults.lock().unwrap().nic_down.extend(behind.iter().cloned());
    let leaf = wait_for(DEADLINE, "a leaf_switch_down incident on switch:leaf-01", || {
        incident_for(&url, "leaf_switch_down", "switch:leaf-01")
    });
    let leaf_id = leaf["id"].as_str().unwrap().to_string();
    wait_for(DEADLINE, "the guard to block all five drains", || {
        let a = actions(&url);
        behind.iter().all(|n| !taken(&a, n, "drain", "blocked").is_empty()).then_some(())
    });
    let blocked = wait_for(DEADLINE, "faultline_remediation_blocked_total", || {
        metric(&url, "faultline_remediation_blocked_total").filter(|v| *v >= 1.0)
    });
    assert_eq!(blocked, 1.0);
    for n in &behind {
        assert!(!slurm.drained(n), "{n} was drained past the blast-radius limit: {:?}", slurm.state(n));
    }
    let inc = api(&url, &format!("/api/v1/incidents/{leaf_id}")).unwrap();
    let why = timeline_details(&inc);
    assert!(
        why.iter()
            .any(|d| d.starts_with("blocked:") && d.contains("limit of 2") && d.contains("20% of 10 known nodes")),
        "the leaf incident's timeline must say why nothing was drained: {why:#?}"
    );
    let a = actions(&url);
    assert_eq!(a["drain_limit"], 2, "{a:#}");
    let pending_blocked =
        a["pending"].as_array().unwrap().iter().filter(|p| p["state"] == "blocked" && p["incident"] == leaf_id).count();
    assert_eq!(pending_blocked, 5, "{a:#}");
    faults.lock().unwrap().nic_down.clear();

    // 2. A person drains node-0007 for maintenance; then XID 79 on node-0002, node-0004 and node-0007.
    slurm.drain_by_hand("node-0007", "maintenance by alice");
    faults.lock().unwrap().xid79.extend(["node-0002", "node-0004", "node-0007"].map(String::from));
    let mut inc_ids = BTreeMap::new();
    for n in ["node-0002", "node-0004"] {
        let inc = wait_for(DEADLINE, &format!("a gpu_lost incident on {n}/gpu1"), || {
            incident_for(&url, "gpu_lost", &format!("{n}/gpu1"))
        });
        let id = inc["id"].as_str().unwrap().to_string();
        let want = format!("faultline: gpu_lost {n}/gpu1 {id}");
        wait_for(DEADLINE, &format!("{n} drained in Slurm with reason {want:?}"), || {
            (slurm.drained(n) && slurm.reason(n).as_deref() == Some(want.as_str())).then_some(())
        });
        inc_ids.insert(n, id);
    }
    let inc7 = wait_for(DEADLINE, "a gpu_lost incident on node-0007/gpu1", || {
        incident_for(&url, "gpu_lost", "node-0007/gpu1")
    });
    wait_for(DEADLINE, "node-0007's drain to be recognised as someone else's", || {
        let a = actions(&url);
        (!taken(&a, "node-0007", "drain", "skipped").is_empty()).then_some(())
    });
    assert_eq!(
        slurm.reason("node-0007").as_deref(),
        Some("maintenance by alice"),
        "a person's reason is never overwritten"
    );
    let ok_drains = metric(&url, r#"faultline_remediation_actions_total{action="drain",result="ok"}"#).unwrap();
    assert_eq!(ok_drains, 2.0);
    let inc2 = api(&url, &format!("/api/v1/incidents/{}", inc_ids["node-0002"])).unwrap();
    let tl = timeline_details(&inc2);
    assert!(tl.iter().any(|d| d.starts_with("drained node-0002 in slurm")), "{tl:#?}");
    // The CLI shows the recommended action and the drain in the incident's timeline.
    let out = cli(&url, &["incident", inc_ids["node-0002"].as_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reboot_node") && text.contains("drained node-0002 in slurm"), "{text}");

    // 3. A person takes node-0004's drain over before its incident resolves.
    slurm.drain_by_hand("node-0004", "alice: RMA ticket 42");

    // The XIDs age out, the incidents resolve, the nodes stay healthy for the hold: node-0002 comes back.
    wait_for(DEADLINE, "node-0002 resumed in Slurm", || (!slurm.drained("node-0002")).then_some(()));
    let a = actions(&url);
    assert_eq!(taken(&a, "node-0002", "resume", "ok").len(), 1, "{a:#}");
    let inc2 = api(&url, &format!("/api/v1/incidents/{}", inc_ids["node-0002"])).unwrap();
    assert_eq!(inc2["status"], "resolved", "resumed only after its incident resolved: {inc2:#}");
    let resolved_s = inc2["resolved_s"].as_f64().unwrap();
    let resume_s = taken(&a, "node-0002", "resume", "ok")[0]["at_s"].as_f64().unwrap();
    assert!(
        resume_s >= resolved_s + 3.0 - 0.01,
        "the 3 s healthy hold was kept: resolved {resolved_s}, resumed {resume_s}"
    );
    let tl = timeline_details(&inc2);
    assert!(tl.iter().any(|d| d.starts_with("resumed node-0002 in slurm")), "{tl:#?}");
    wait_for(DEADLINE, "node-0004's taken-over drain to be left alone", || {
        let a = actions(&url);
        (!taken(&a, "node-0004", "resume", "skipped").is_empty()).then_some(())
    });
    assert!(slurm.drained("node-0004"));
    assert_eq!(slurm.reason("node-0004").as_deref(), Some("alice: RMA ticket 42"));
    assert!(slurm.drained("node-0007"));
    assert_eq!(slurm.reason("node-0007").as_deref(), Some("maintenance by alice"));
    let inc7 = api(&url, &format!("/api/v1/incidents/{}", inc7["id"].as_str().unwrap())).unwrap();
    assert!(
        timeline_details(&inc7)
            .iter()
            .any(|d| d.contains("already drained by someone else") && d.contains("maintenance by alice")),
        "{inc7:#}"
    );
    let resumes = metric(&url, r#"faultline_remediation_actions_total{action="resume",result="ok"}"#).unwrap();
    assert_eq!(resumes, 1.0);

    // 4. By hand through the CLI: the same ownership rule.
    let out = cli(&url, &["drain", "node-0001", "--reason", "bad fan, ticket 7"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(slurm.reason("node-0001").as_deref(), Some("faultline: manual: bad fan, ticket 7"));
    let out = cli(&url, &["drain", "node-0007"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("someone else") && err.contains("maintenance by alice"), "{err}");
    assert_eq!(slurm.reason("node-0007").as_deref(), Some("maintenance by alice"));
    let out = cli(&url, &["resume", "node-0007"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force") && err.contains("maintenance by alice"), "{err}");
    assert!(slurm.drained("node-0007"));
    let out = cli(&url, &["resume", "node-0001"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!slurm.drained("node-0001"));
    let out = cli(&url, &["resume", "node-0001"]);
    assert_eq!(out.status.code(), Some(2), "not drained any more");
    let out = cli(&url, &["drain", "node-0099"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node-0099"));
    let out = cli(&url, &["resume", "node-0007", "--force", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((rec["result"].as_str(), rec["origin"].as_str()), (Some("ok"), Some("manual")));
    assert!(!slurm.drained("node-0007"));
    // Writes need the token.
    let r = http()
        .post(format!("{url}/api/v1/actions/drain"))
        .header("content-type", "application/json")
        .body(r#"{"node":"node-0003"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(!slurm.drained("node-0003"));
    let out = cli(&url, &["actions", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["adapter"], "slurm");
    assert!(v["taken"].as_array().unwrap().iter().any(|r| r["origin"] == "manual" && r["node"] == "node-0001"));
    let out = cli(&url, &["actions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("guard: 2 of 2 drains used"), "{text}");

    // Daemons and the analyzer are killed here, in reverse order of start.
    drop(analyzer);
    drop(slurm);
}
