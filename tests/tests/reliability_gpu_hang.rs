//! No silent blind spot when a GPU hangs: a real agent on the fake NVML, pushing to a real analyzer
//! every 500 ms. Then GPU 2's every NVML call starts to block for two minutes (a hung GSP). While
//! that call is stuck:
//! - reports keep arriving at the analyzer at the agent's pace (a stalled collector would send
//!   nothing for two minutes), each with the host sample and the other GPUs' readings;
//! - the agent marks GPU 2 unresponsive (`faultline_gpu_unresponsive` = 1) and the other seven keep
//!   their readings;
//! - the analyzer sees the unresponsive GPU as a symptom on `node/gpu2`.
//!
//! What is not promised: the first report after the hang starts waits up to the agent's poll
//! deadline (2 s) before it calls the GPU unresponsive; later ones do not wait at all.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, fake_nvml_lib, get_json, http, start_analyzer, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "gpu-hang-token";
const NODE: &str = "gpu-hang-node";

fn write_state(path: &Path, v: Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn node_reports(analyzer: &str) -> Option<u64> {
    let nodes = get_json(&format!("{analyzer}/api/v1/nodes"), Some(TOKEN))?;
    nodes.as_array()?.iter().find(|n| n["node"] == NODE)?["reports"].as_u64()
}

/// `name{...gpu="i"...} value` from the agent's /metrics.
fn gpu_metric(text: &str, name: &str, gpu: u32) -> Option<f64> {
    let want = format!("gpu=\"{gpu}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_hung_gpu_is_marked_unresponsive_and_the_rest_of_the_report_still_flows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({"gpus": [{}, {}, {}, {}, {}, {}, {}, {}]}));
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", NODE, "--interval", "500ms", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .args(["--analyzer", &analyzer.url, "--token", TOKEN])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .env("FAKE_NVML_STATE", &state)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let agent = Proc::spawn(cmd);

    let before = wait_for(Duration::from_secs(60), "the agent's first reports", || {
        node_reports(&analyzer.url).filter(|n| *n >= 3)
    });

    // GPU 2's driver hangs: every NVML call for it blocks for two minutes.
    write_state(&state, json!({"gpus": [{}, {}, {"delay_ms": 120_000}, {}, {}, {}, {}, {}]}));

    // Reports keep coming while the call is stuck: 20 more (10 s of 500 ms reports) well inside the
    // two minutes. A collector that waited for the GPU would deliver at most one.
    let during = wait_for(Duration::from_secs(90), "reports to keep flowing while GPU 2 hangs", || {
        node_reports(&analyzer.url).filter(|n| *n >= before + 20)
    });
    println!("{} reports arrived while GPU 2 was hung", during - before);

    let metrics = wait_for(Duration::from_secs(30), "GPU 2 marked unresponsive", || {
        let text = http().get(format!("{}/metrics", agent.url)).send().ok()?.text().ok()?;
        (gpu_metric(&text, "faultline_gpu_unresponsive", 2) == Some(1.0)).then_some(text)
    });
    for g in [0u32, 1, 3, 7] {
        assert_eq!(gpu_metric(&metrics, "faultline_gpu_unresponsive", g), Some(0.0), "gpu{g}");
        assert!(gpu_metric(&metrics, "DCGM_FI_DEV_GPU_TEMP", g).is_some(), "gpu{g} lost its readings");
    }
    assert!(metrics.contains("faultline_node_cpus"), "the host part of the report is missing");

    // The analyzer sees it too: a symptom on the GPU, or an incident rooted there.
    let gpu = format!("{NODE}/gpu2");
    wait_for(Duration::from_secs(60), "the analyzer to see gpu2 unresponsive", || {
        let comp = get_json(&format!("{}/api/v1/components/{gpu}", analyzer.url), Some(TOKEN))?;
        let symptom = comp["symptoms"].as_array().is_some_and(|s| !s.is_empty());
        let incident = get_json(&format!("{}/api/v1/incidents?status=open", analyzer.url), Some(TOKEN))?
            .as_array()?
            .iter()
            .any(|i| i["root"] == gpu.as_str());
        (symptom || incident).then_some(())
    });
    // And still the reports flow.
    let later = node_reports(&analyzer.url).unwrap();
    wait_for(Duration::from_secs(30), "more reports after the diagnosis", || {
        node_reports(&analyzer.url).filter(|n| *n >= later + 4)
    });
}
