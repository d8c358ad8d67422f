//! `promtool check metrics` on both `/metrics` endpoints, as node_exporter and dcgm-exporter users
//! run it: names with base units, `_total` on counters only, no `_count`/`_sum`/`_bucket` on what is
//! not a histogram or summary, no type in a name. The analyzer's endpoint must be entirely clean.
//! The agent's has exactly one known kind of complaint left, and the test fails on any other: the
//! per-GPU families carry dcgm-exporter's `modelName` label (camelCase, which promtool lints), and the
//! `DCGM_FI_*` families keep dcgm-exporter's exact names (`DCGM_FI_DEV_PCIE_REPLAY_COUNTER`) so that
//! dashboards written for dcgm-exporter work. Both are kept on purpose for that compatibility; see
//! agent/src/export/gpu_metrics.rs. The agent runs
//! with fake NVML GPUs (one throttled, an XID queued), the fixture sysfs tree (InfiniBand ports, fans)
//! and a job reporting progress, so that every family has samples; the analyzer has an incident.
//!
//! Needs `promtool`; under CI a missing one fails the test, elsewhere it says loudly it did not run.

mod dash_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use dash_support::*;
use serde_json::json;

/// promtool's complaints about `text` (empty when clean).
fn promtool_check(promtool: &std::path::Path, text: &str) -> String {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && s.trim().is_empty() {
        s = format!("promtool exited {}", out.status);
    }
    s.trim().to_string()
}

#[test]
fn promtool_accepts_both_endpoints() {
    let Some(promtool) = faultline_tests::external("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_test_analyzer(dir.path(), &["node-p"]);
    let mut state = nvml_state(4, &[], json!([{"id": 1, "gpu": 1, "type": "xid", "xid": 79}]));
    state["gpus"][0]["throttle_mask"] = json!(0x40 | 0x20);
    let agent = start_agent(dir.path(), "node-p", &analyzer.url, &state);
    for step in 1..=3 {
        for rank in 0..2 {
            post_progress(&agent, "promtool-job", rank, step, 100.0 + rank as f64);
        }
    }
    // Wait until the families that need data are there: GPUs, IB ports, ranks, an incident.
    let agent_text = poll(Duration::from_secs(45), || {
        let t = get_text(&format!("{}/metrics", agent.url))?;
        (t.contains("DCGM_FI_DEV_GPU_TEMP{") && t.contains("faultline_nic_up{") && t.contains("faultline_rank_step{"))
            .then_some(t)
    })
    .expect("the agent's /metrics never had GPU, NIC and rank series");
    let analyzer_text = poll(Duration::from_secs(45), || {
        let t = get_text(&format!("{}/metrics", analyzer.url))?;
        t.contains("faultline_component_healthy{").then_some(t)
    })
    .expect("the analyzer's /metrics never had component series");
    for (who, text) in [("agent", &agent_text), ("analyzer", &analyzer_text)] {
        for family in
            ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "faultline_build_info"]
        {
            assert!(text.lines().any(|l| l.starts_with(family)), "the {who}'s /metrics has no {family}");
        }
    }
    let a = promtool_check(&promtool, &agent_text);
    let b = promtool_check(&promtool, &analyzer_text);
    assert!(b.is_empty(), "promtool check metrics on the analyzer:\n{b}");
    let unexpected: Vec<&str> = a.lines().filter(|l| !known_dcgm_compat_complaint(l)).collect();
    assert!(unexpected.is_empty(), "promtool check metrics on the agent:\n{}", unexpected.join("\n"));
}

/// The complaints the dcgm-exporter-compatible GPU families earn on purpose (see the module doc).
fn known_dcgm_compat_complaint(line: &str) -> bool {
    let family = line.split_whitespace().next().unwrap_or_default();
    let gpu_family = family.starts_with("DCGM_FI_") || family.starts_with("faultline_gpu_");
    (gpu_family && line.ends_with("label names should be written in 'snake_case' not 'camelCase'"))
        || line == "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'"
}

#[test]
fn the_filter_lets_nothing_else_through() {
    assert!(known_dcgm_compat_complaint(
        "DCGM_FI_DEV_GPU_TEMP label names should be written in 'snake_case' not 'camelCase'"
    ));
    assert!(!known_dcgm_compat_complaint(
        "faultline_node_cpu_count non-histogram and non-summary metrics should not have \"_count\" suffix"
    ));
    assert!(!known_dcgm_compat_complaint("faultline_nic_counter_total metric name should not include type 'counter'"));
    assert!(!known_dcgm_compat_complaint(
        "faultline_node_x label names should be written in 'snake_case' not 'camelCase'"
    ));
}
