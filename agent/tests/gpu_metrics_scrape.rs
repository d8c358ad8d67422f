//! The real agent on the fake NVML library serves GPU metrics under dcgm-exporter's names and labels,
//! plus `faultline_gpu_*`: scraped over HTTP from a running agent whose state file changes under it
//! (a queued XID, a throttled GPU, a lost one, an NVLink down).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

fn fake_nvml() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join("libnvidia_ml.so");
    assert!(p.exists(), "{} is not built", p.display());
    p
}

fn write_state(path: &Path, v: serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

mod support;

use support::Agent;

/// The value of the series written exactly as `series` (name and full label set).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(url: &str) -> String {
    reqwest::blocking::get(format!("{url}/metrics")).and_then(|r| r.text()).unwrap_or_default()
}

/// Scrape until `f` holds (generous deadline), returning the last body.
fn scrape_until(url: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = scrape(url);
        if f(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last scrape:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dcgm_and_faultline_gpu_metrics_from_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({"gpus": [{}, {}, {}, {}]}));
    let (_agent, url) = Agent::start(
        Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .args(["--node-name", "scrape-node", "--interval", "200ms", "--kmsg", "/nonexistent/kmsg"])
            .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
            .arg("--nvml-lib")
            .arg(fake_nvml())
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .env("FAKE_NVML_STATE", &state),
    );

    let l3 = r#"gpu="3",UUID="GPU-fa0e0000-0000-4000-8000-000000000003",pci_bus_id="00000000:5D:00.0",device="nvidia3",modelName="NVIDIA H100 80GB HBM3",Hostname="scrape-node",DCGM_FI_DRIVER_VERSION="550.54.15""#;
    let body = scrape_until(&url, "GPU metrics", |b| b.contains("DCGM_FI_DEV_GPU_TEMP{"));
    for (series, want) in [
        (format!("DCGM_FI_DEV_GPU_TEMP{{{l3}}}"), 32.0),
        (format!("DCGM_FI_DEV_FB_TOTAL{{{l3}}}"), 81559.0),
        (format!("DCGM_FI_DEV_POWER_USAGE{{{l3}}}"), 71.0),
        (format!("DCGM_FI_DEV_XID_ERRORS{{{l3}}}"), 0.0),
        (format!("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{l3}}}"), 0.0),
        (format!("faultline_gpu_lost{{{l3}}}"), 0.0),
        (format!("faultline_gpu_nvlink_up{{{l3},link=\"17\"}}"), 1.0),
    ] {
        assert_eq!(value(&body, &series), Some(want), "{series}\n{body}");
    }

    // Faults: an XID 79 on gpu3, gpu1 throttled by HW thermal slowdown with CRC errors on link 2,
    // gpu2 lost.
    let mut links: Vec<_> = (0..18).map(|_| json!({})).collect();
    links[2] = json!({"active": false, "crc_flit": 7, "crc_data": 2});
    write_state(
        &state,
        json!({"gpus": [{}, {"throttle_mask": 0x40, "nvlinks": links}, {"lost": true}, {}],
               "events": [{"id": 1, "gpu": 3, "type": "xid", "xid": 79}]}),
    );
    let l1 = l3
        .replace("nvidia3", "nvidia1")
        .replace(r#"gpu="3""#, r#"gpu="1""#)
        .replace("00000003", "00000001")
        .replace("5D", "2A");
    let l2 = l3
        .replace("nvidia3", "nvidia2")
        .replace(r#"gpu="3""#, r#"gpu="2""#)
        .replace("00000003", "00000002")
        .replace("5D", "3A");
    let body = scrape_until(&url, "the XID, the throttle and the lost GPU", |b| {
        value(b, &format!("faultline_gpu_xid_errors_total{{{l3},xid=\"79\"}}")) == Some(1.0)
            && value(b, &format!("faultline_gpu_lost{{{l2}}}")) == Some(1.0)
            && value(b, &format!("faultline_gpu_throttle_reason{{{l1},reason=\"hw_thermal_slowdown\"}}")) == Some(1.0)
    });
    assert_eq!(value(&body, &format!("DCGM_FI_DEV_XID_ERRORS{{{l3}}}")), Some(79.0));
    assert_eq!(value(&body, &format!("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{l1}}}")), Some(7.0));
    assert_eq!(value(&body, &format!("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL{{{l1}}}")), Some(2.0));
    assert_eq!(value(&body, &format!("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{l1}}}")), Some(64.0));
    assert_eq!(value(&body, &format!("faultline_gpu_nvlink_up{{{l1},link=\"2\"}}")), Some(0.0));
    assert_eq!(value(&body, &format!("faultline_gpu_nvlink_crc_errors_total{{{l1},link=\"2\"}}")), Some(9.0));
    assert!(!body.contains(r#"DCGM_FI_DEV_GPU_TEMP{gpu="2""#), "a lost GPU has no readings");
    // The DCGM counters keep their exact names (no `_total` appended).
    assert!(!body.contains("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total"));
    assert!(body.contains("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{"));

    // MIG on gpu3 with two instances: its framebuffer series split by GPU_I_ID and GPU_I_PROFILE
    // (read through nvmlDeviceGetMigDeviceHandleByIndex and the MIG handles' own memory), and no
    // whole-GPU framebuffer series beside them.
    write_state(
        &state,
        json!({"gpus": [{}, {}, {}, {"mig": [
            {"gpu_instance_id": 9, "profile": "1g.10gb", "mem_total": 10_485_760_000u64, "mem_used": 104_857_600},
            {"gpu_instance_id": 1, "compute_instance_id": 0, "profile": "3g.40gb", "mem_total": 41_943_040_000u64, "mem_used": 0}
        ]}]}),
    );
    let body = scrape_until(&url, "MIG instances on gpu3", |b| {
        value(b, &format!("DCGM_FI_DEV_FB_USED{{{l3},GPU_I_PROFILE=\"1g.10gb\",GPU_I_ID=\"9\"}}")) == Some(100.0)
    });
    assert_eq!(
        value(&body, &format!("DCGM_FI_DEV_FB_TOTAL{{{l3},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"1\"}}")),
        Some(40000.0)
    );
    assert_eq!(value(&body, &format!("DCGM_FI_DEV_FB_USED{{{l3}}}")), None, "whole-GPU framebuffer beside MIG");
    assert!(value(&body, &format!("DCGM_FI_DEV_FB_USED{{{l1}}}")).is_some(), "a GPU without MIG keeps its own");
}
