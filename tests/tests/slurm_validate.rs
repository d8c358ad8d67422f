//! Check before delivery against a REAL Slurm on loopback (munged, slurmctld, slurmd started by the
//! test, as in `slurm_e2e.rs`): a node faultline drained is resumed only when every configured
//! validator passes.
//!
//! Validators: the built-in `gpu-count` and `fabric` checks, judged from the node's latest report,
//! and a `diag` command run with `{node}` substituted, standing in for `srun -w {node} dcgmi diag
//! -r 1`: it fails while a marker file for the node exists.
//!
//! 1. XID 79 on node-0001 and node-0002 drains both through scontrol.
//! 2. The XIDs age out, the incidents resolve, the hold passes: node-0002 passes every check and is
//!    resumed; node-0001's `diag` fails, so it stays drained and its Slurm drain reason says why.
//! 3. node-0001 is validated again on the configured backoff, not in a loop; each check with its
//!    output is in the incident's timeline and in `faultline incident`.
//! 4. The fault is fixed (the marker goes): the next validation passes and node-0001 is resumed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "slurm_support/mod.rs"]
mod slurm_support;

use faultline_tests::{bin, get_json, now_ms, start_analyzer, wait_for};
use serde_json::{Value, json};
use slurm_support::{Reporter, Slurm, node, programs};

const TOKEN: &str = "slurm-validate-token";
const NODES: usize = 4;
/// The analyzer's `EVENT_HOLD_MS` in seconds; XIDs are backdated to age out `XID_LIVE_S` after
/// they are sent (see `slurm_e2e.rs`).
const XID_HOLD_S: i64 = 300;
const XID_LIVE_S: i64 = 15;
/// `[remediation.validation] retry`: the shortest wait between two validations of a node.
const RETRY_S: f64 = 2.0;
/// Generous: Slurm, the analyzer and the reporter share two cores.
const DEADLINE: Duration = Duration::from_secs(120);

fn report(n: &str, seq: u64, xid79: bool) -> Value {
    let now = now_ms();
    let gpu = |i: u32| {
        json!({"index": i, "uuid": format!("GPU-{n}-{i}"), "name": "H100", "state": "ok",
               "util_gpu_pct": 90.0, "temp_c": 60.0, "power_w": 600.0, "power_limit_w": 700.0,
               "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "throttle_mask": 0})
    };
    let mut events = Vec::new();
    if xid79 {
        let ts = now - (XID_HOLD_S - XID_LIVE_S) * 1000;
        events.push(json!({"ts_ms": ts, "source": "kmsg", "class": "xid", "severity": "critical",
                           "component": "gpu1", "xid": 79,
                           "message": "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus."}));
    }
    json!({
        "schema_version": 1, "node": n, "agent_version": "slurm-validate", "seq": seq,
        "timestamp_ms": now, "interval_ms": 1000, "expected_gpus": 2,
        "gpus": [gpu(0), gpu(1)],
        "nics": [{"name": "mlx5_0", "kind": "infiniband", "netdev": "ib0", "port": 1, "operstate": "up",
                  "carrier": true, "link_layer": "InfiniBand", "ib_state": "ACTIVE",
                  "ib_phys_state": "LinkUp", "rate_gbps": 400.0}],
        "events": events,
    })
}

/// The `diag` stand-in: prints what it checks, fails while `fail-<node>` exists in `dir`.
fn diag_script(dir: &Path) -> PathBuf {
    let script = dir.join("diag.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"diag: checking $1\"\n\
             if [ -e '{d}/fail-'\"$1\" ]; then\n\
             \x20 echo 'GPU 1: memory test FAILED (stand-in for dcgmi diag)'\n\
             \x20 exit 1\n\
             fi\n\
             echo 'all tests PASS'\n",
            d = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn analyzer_config(dir: &Path, slurm: &Slurm) -> (PathBuf, PathBuf) {
    let topo = dir.join("topology.toml");
    let rack = (0..NODES).map(|i| format!("\"{}\"", node(i))).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &topo,
        format!(
            "expected_rate_gbps = 400\n\
             [[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\n\
             [[rack]]\nleaf = \"leaf-00\"\nnodes = [{rack}]\n"
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
             healthy_hold = \"2s\"\n\
             max_drain_share = 0.5\n\
             [[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"act\"\n\
             [remediation.slurm]\n\
             scontrol = \"{scontrol}\"\n\
             timeout = \"30s\"\n\
             env = {{ SLURM_CONF = \"{conf}\" }}\n\
             [remediation.validation]\n\
             retry = \"{RETRY_S}s\"\n\
             retry_max = \"4s\"\n\
             max_attempts = 50\n\
             [[remediation.validation.check]]\nname = \"gpu-count\"\nkind = \"gpu_count\"\n\
             [[remediation.validation.check]]\nname = \"fabric\"\nkind = \"fabric_ports\"\n\
             [[remediation.validation.check]]\nname = \"diag\"\nkind = \"command\"\n\
             command = [\"{diag}\", \"{{node}}\"]\ntimeout = \"20s\"\n",
            scontrol = slurm.scontrol.display(),
            conf = slurm.conf.display(),
            diag = diag_script(dir).display(),
        ),
    )
    .unwrap();
    (cfg, topo)
}

fn api(url: &str, path: &str) -> Option<Value> {
    get_json(&format!("{url}{path}"), Some(TOKEN))
}

fn incident_for(url: &str, root: &str) -> Option<Value> {
    api(url, "/api/v1/incidents?status=all")?
        .as_array()?
        .iter()
        .find(|i| i["class"] == "gpu_lost" && i["root"] == root)
        .cloned()
}

/// Actions taken on `node` with `action`, oldest first.
fn taken(url: &str, node: &str, action: &str) -> Vec<Value> {
    api(url, "/api/v1/actions")
        .and_then(|v| v["taken"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["node"] == node && r["action"] == action)
        .collect()
}

fn detail(r: &Value) -> &str {
    r["detail"].as_str().unwrap_or("")
}

/// The `diag` verdicts of `node`: (time, passed).
fn diag_runs(url: &str, n: &str) -> Vec<(f64, bool)> {
    taken(url, n, "validate")
        .iter()
        .filter(|r| r["reason"].is_null() && detail(r).starts_with(&format!("validation of {n}: diag ")))
        .map(|r| (r["at_s"].as_f64().unwrap(), r["result"] == "ok"))
        .collect()
}

#[test]
fn a_drained_node_is_resumed_only_after_its_validators_pass() {
    let Some(progs) = programs("slurm_validate") else { return };
    let dir = tempfile::tempdir().unwrap();
    let slurm = Slurm::start_nodes(&progs, dir.path(), NODES);
    let (cfg, topo) = analyzer_config(dir.path(), &slurm);
    let analyzer = start_analyzer(
        dir.path(),
        Some(TOKEN),
        &["--config", cfg.to_str().unwrap(), "--topology", topo.to_str().unwrap()],
    );
    let url = analyzer.url.clone();
    let xid79 = Arc::new(Mutex::new(BTreeSet::new()));
    // The stand-in agents: XID 79 once for the nodes in `xid79`.
    let pending = xid79.clone();
    let _reporter = Reporter::start(url.clone(), TOKEN, NODES, move |n, seq| {
        let xid = pending.lock().unwrap().remove(n);
        report(n, seq, xid)
    });
    wait_for(DEADLINE, "all nodes reporting", || {
        (api(&url, "/api/v1/nodes")?.as_array()?.len() == NODES).then_some(())
    });

    // 1. node-0001's diag will fail; both nodes lose a GPU and are drained.
    let (bad, good) = ("node-0001", "node-0002");
    let marker = dir.path().join(format!("fail-{bad}"));
    std::fs::write(&marker, "").unwrap();
    xid79.lock().unwrap().extend([bad, good].map(String::from));
    let mut ids = Vec::new();
    for n in [bad, good] {
        let inc = wait_for(DEADLINE, &format!("a gpu_lost incident on {n}/gpu1"), || {
            incident_for(&url, &format!("{n}/gpu1"))
        });
        let id = inc["id"].as_str().unwrap().to_string();
        let want = format!("faultline: gpu_lost {n}/gpu1 {id}");
        wait_for(DEADLINE, &format!("{n} drained in Slurm with reason {want:?}"), || {
            (slurm.drained(n) && slurm.reason(n).as_deref() == Some(want.as_str())).then_some(())
        });
        ids.push(id);
    }
    let (bad_id, good_id) = (ids[0].clone(), ids[1].clone());

    // 2. The good node passes every check and comes back; its resume says so.
    wait_for(DEADLINE, &format!("{good} resumed in Slurm"), || (!slurm.drained(good)).then_some(()));
    let checks = taken(&url, good, "validate");
    for name in ["gpu-count", "fabric", "diag"] {
        assert!(
            checks
                .iter()
                .any(|r| r["result"] == "ok" && detail(r).starts_with(&format!("validation of {good}: {name} passed"))),
            "{name} must have passed on {good}: {checks:#?}"
        );
    }
    assert!(checks.iter().any(|r| detail(r).contains("gpu-count passed: 2 of 2 GPUs")), "{checks:#?}");
    assert!(checks.iter().any(|r| detail(r).contains("fabric passed: 1 fabric ports active at the expected rate")));
    let resumed = taken(&url, good, "resume");
    assert_eq!(resumed.len(), 1, "{resumed:#?}");
    assert_eq!(resumed[0]["result"], "ok");
    assert!(detail(&resumed[0]).contains("passed validation (gpu-count, fabric, diag)"), "{resumed:#?}");
    let last_check_s = checks.iter().map(|r| r["at_s"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(resumed[0]["at_s"].as_f64().unwrap() >= last_check_s, "resumed after its checks");
    let good_inc = api(&url, &format!("/api/v1/incidents/{good_id}")).unwrap();
    let resolved_s = good_inc["resolved_s"].as_f64().unwrap();
    let resume_s = resumed[0]["at_s"].as_f64().unwrap();
    assert!(resume_s >= resolved_s + 2.0 - 0.01, "the 2 s hold came first: resolved {resolved_s}, resumed {resume_s}");
    eprintln!(
        "measured: {good} resolved -> resumed {:.2} s (2 s hold, then gpu-count, fabric and diag)",
        resume_s - resolved_s
    );

    // The bad node fails `diag`, stays drained, and Slurm's reason says why.
    let want = "faultline: validation failed: diag: exit status: 1";
    wait_for(DEADLINE, &format!("{bad}'s drain reason to start with {want:?}"), || {
        slurm.reason(bad).filter(|r| r.starts_with(want)).map(|_| ())
    });
    assert!(slurm.drained(bad));
    assert!(taken(&url, bad, "resume").is_empty(), "{bad} must not be resumed while it fails validation");
    let inc = api(&url, &format!("/api/v1/incidents/{bad_id}")).unwrap();
    assert_eq!(inc["status"], "resolved", "validation runs once the incident resolved: {inc:#}");

    // 3. Validated again on the backoff (2 s, then 4 s), never in a loop.
    wait_for(DEADLINE, &format!("a second failed validation of {bad}"), || {
        let runs = diag_runs(&url, bad);
        (runs.iter().filter(|(_, ok)| !ok).count() >= 2).then_some(())
    });
    let runs = diag_runs(&url, bad);
    for w in runs.windows(2) {
        assert!(w[1].0 - w[0].0 >= RETRY_S - 0.01, "validations of {bad} closer than the retry: {runs:?}");
    }
    // The built-in checks passed on it, so the commands ran; the failure and its output are on record.
    let timeline: Vec<String> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "action")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(timeline.iter().any(|d| d.starts_with(&format!("validation of {bad}: gpu-count passed: 2 of 2 GPUs"))));
    assert!(
        timeline.iter().any(|d| d.starts_with(&format!("validation of {bad}: diag FAILED: exit status: 1"))
            && d.contains(&format!("\ndiag: checking {bad}\nGPU 1: memory test FAILED"))),
        "{timeline:#?}"
    );
    assert!(
        timeline
            .iter()
            .any(|d| d.starts_with(&format!("{bad} failed validation and stays drained: diag: exit status: 1"))
                && d.contains("validating again in")),
        "{timeline:#?}"
    );
    let out = Command::new(bin("faultline"))
        .args(["incident", &bad_id])
        .env("FAULTLINE_ANALYZER", &url)
        .env("FAULTLINE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("validation of {bad}: diag FAILED: exit status: 1")), "{text}");
    assert!(text.contains("check output") && text.contains("| GPU 1: memory test FAILED"), "{text}");
    let pending = api(&url, "/api/v1/actions").unwrap()["pending"].clone();
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node"] == bad && p["detail"].as_str().unwrap().contains("failed validation")),
        "{pending:#}"
    );

    // 4. The node is repaired: the next validation passes and it is resumed.
    std::fs::remove_file(&marker).unwrap();
    wait_for(DEADLINE, &format!("{bad} resumed in Slurm after passing validation"), || {
        (!slurm.drained(bad)).then_some(())
    });
    let resumed = taken(&url, bad, "resume");
    assert_eq!(resumed.len(), 1, "{resumed:#?}");
    assert_eq!(resumed[0]["result"], "ok");
    let runs = diag_runs(&url, bad);
    assert!(runs.last().is_some_and(|(_, ok)| *ok), "the last diag passed: {runs:?}");
    assert!(resumed[0]["at_s"].as_f64().unwrap() >= runs.last().unwrap().0);
    eprintln!("measured: {bad} diag runs (analyzer time, passed): {runs:?}");

    drop(analyzer);
    drop(slurm);
}
