//! The real agent process on the fake NVML library (`tests/fake-nvml`) through nvml-wrapper:
//! `faultline-agent --once --nvml-lib <libnvidia_ml.so>` with `FAKE_NVML_STATE` naming a state file.
//! Each test writes its own state file, so they run in parallel without sharing anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use faultline_proto::{GpuState, NodeReport};
use serde_json::json;

/// `target/<profile>/deps/libnvidia_ml.so`, built because fake-nvml is a dev-dependency.
fn fake_nvml() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for p in [deps.join("libnvidia_ml.so"), deps.parent().unwrap().join("deps/libnvidia_ml.so")] {
        if p.exists() {
            return p;
        }
    }
    panic!("libnvidia_ml.so is not built next to {}", deps.display());
}

/// Run `--once` with the given state (None: no state file, the fake's 8 healthy H100s).
fn once(state: Option<serde_json::Value>) -> (NodeReport, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline-agent"));
    cmd.args(["--once", "--node-name", "gpu-node-1", "--kmsg", "/nonexistent"])
        .arg("--nvml-lib")
        .arg(fake_nvml())
        .arg("--spool-dir")
        .arg(dir.path())
        .env_remove("FAKE_NVML_STATE");
    if let Some(s) = state {
        let path = dir.path().join("nvml.json");
        std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
        cmd.env("FAKE_NVML_STATE", &path);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "agent failed: {stderr}");
    let r: NodeReport =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not a NodeReport ({e}): {stderr}"));
    r.validate().unwrap_or_else(|e| panic!("invalid report: {e}"));
    (r, stderr)
}

#[test]
fn healthy_h100s_are_read_through_nvml() {
    let (r, stderr) = once(None);
    assert_eq!(r.gpus.len(), 8, "{stderr}");
    for (i, g) in r.gpus.iter().enumerate() {
        assert_eq!(g.index, i as u32);
        assert_eq!(g.state, GpuState::Ok);
        assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
        assert!(g.uuid.starts_with("GPU-"), "{}", g.uuid);
        assert!(g.serial.is_some());
        assert_eq!(g.mem_total_bytes, Some(85_520_809_984));
        assert_eq!(g.mem_used_bytes, Some(566_755_328));
        assert_eq!(g.mem_free_bytes, Some(85_520_809_984 - 566_755_328));
        assert_eq!(g.temp_c, Some(32.0));
        assert_eq!(g.mem_temp_c, Some(30.0));
        assert_eq!(g.power_w, Some(71.0));
        assert_eq!(g.power_limit_w, Some(700.0));
        assert_eq!(g.energy_mj, Some(123_456_789));
        assert_eq!((g.sm_clock_mhz, g.sm_clock_max_mhz), (Some(345), Some(1980)));
        assert_eq!((g.mem_clock_mhz, g.mem_clock_max_mhz), (Some(2619), Some(2619)));
        assert_eq!(g.throttle_mask, Some(1));
        assert_eq!(g.throttle_reasons, vec!["gpu_idle"]);
        assert_eq!(g.ecc.sbe_volatile, Some(0));
        assert_eq!(g.ecc.dbe_aggregate, Some(0));
        assert_eq!(g.ecc.sram_uncorrectable, Some(0));
        let rr = g.row_remap.as_ref().expect("row remap");
        assert!(!rr.failure && !rr.pending);
        let p = g.pcie.as_ref().expect("pcie");
        assert_eq!((p.generation, p.max_generation, p.width, p.max_width), (Some(5), Some(5), Some(16), Some(16)));
        assert_eq!(p.replay_count, Some(0));
        assert_eq!(g.nvlinks.len(), 18);
        assert!(g.nvlinks.iter().all(|l| l.active && l.crc_errors == Some(0)));
        assert!(g.not_supported.is_empty(), "{:?}", g.not_supported);
    }
    assert_eq!(r.gpus[3].pci_bus_id.as_deref(), Some("00000000:5D:00.0"));
    assert!(r.events.is_empty(), "{:?}", r.events);
}

#[test]
fn faulty_readings_come_through_unchanged() {
    let (r, _) = once(Some(json!({
        "gpus": [
            {},
            {
                "util_gpu": 97, "util_mem": 41, "temp": 88, "mem_temp": 95, "power_mw": 699_500,
                "throttle_mask": 0x4 | 0x40 | 0x8,
                "ecc": {"sbe_volatile": 12, "dbe_volatile": 1, "sbe_aggregate": 40, "dbe_aggregate": 2, "sram_uncorrectable": 3},
                "retired_pages": {"sbe": 2, "dbe": 1, "pending": true},
                "row_remap": {"correctable": 4, "uncorrectable": 1, "pending": true, "failure": true},
                "pcie": {"generation": 3, "width": 8, "replay": 77},
                "nvlinks": [{"active": true, "crc_flit": 5, "crc_data": 6, "replay": 7, "recovery": 8, "tx_kib": 3, "rx_kib": 4}, {"active": false}],
                "processes": [{"pid": 4242, "used_mem": 1_000_000_000}, {"pid": 4243, "used_mem": 5}]
            }
        ]
    })));
    assert_eq!(r.gpus.len(), 2);
    let g = &r.gpus[1];
    assert_eq!((g.util_gpu_pct, g.util_mem_pct), (Some(97.0), Some(41.0)));
    assert_eq!((g.temp_c, g.mem_temp_c), (Some(88.0), Some(95.0)));
    assert_eq!(g.power_w, Some(699.5));
    assert_eq!(g.throttle_reasons, vec!["sw_power_cap", "hw_slowdown", "hw_thermal_slowdown"]);
    assert_eq!(g.ecc.sbe_volatile, Some(12));
    assert_eq!(g.ecc.dbe_volatile, Some(1));
    assert_eq!(g.ecc.sbe_aggregate, Some(40));
    assert_eq!(g.ecc.dbe_aggregate, Some(2));
    assert_eq!(g.ecc.sram_uncorrectable, Some(3));
    let rp = g.retired_pages.as_ref().unwrap();
    assert_eq!((rp.sbe, rp.dbe, rp.pending), (2, 1, true));
    let rr = g.row_remap.as_ref().unwrap();
    assert_eq!((rr.correctable, rr.uncorrectable, rr.pending, rr.failure), (4, 1, true, true));
    let p = g.pcie.as_ref().unwrap();
    assert_eq!(
        (p.generation, p.max_generation, p.width, p.max_width, p.replay_count),
        (Some(3), Some(5), Some(8), Some(16), Some(77))
    );
    assert_eq!(g.nvlinks.len(), 2);
    assert_eq!(g.nvlinks[0].crc_errors, Some(11));
    // The split travels in the report too (dcgm-exporter exports flit and data errors apart).
    assert_eq!((g.nvlinks[0].crc_flit_errors, g.nvlinks[0].crc_data_errors), (Some(5), Some(6)));
    assert_eq!((g.nvlinks[0].replay_errors, g.nvlinks[0].recovery_errors), (Some(7), Some(8)));
    assert!(!g.nvlinks[1].active);
    // NVLink data bytes: NVML's throughput fields in KiB, asked per link through the scope id.
    assert_eq!((g.nvlinks[0].tx_bytes, g.nvlinks[0].rx_bytes), (Some(3 * 1024), Some(4 * 1024)));
    assert_eq!((g.nvlinks[1].tx_bytes, g.nvlinks[1].rx_bytes), (Some(0), Some(0)));
    assert_eq!(g.processes.len(), 2);
    assert_eq!((g.processes[0].pid, g.processes[0].used_mem_bytes), (4242, Some(1_000_000_000)));
}

#[test]
fn a_lost_gpu_is_reported_lost_not_dropped() {
    let (r, stderr) = once(Some(json!({"gpus": [{}, {}, {"lost": true}, {}]})));
    assert_eq!(r.gpus.len(), 4, "{stderr}");
    let g = &r.gpus[2];
    assert_eq!(g.index, 2);
    assert_eq!(g.state, GpuState::Lost);
    assert_eq!(g.temp_c, None);
    assert!(r.gpus.iter().filter(|g| g.index != 2).all(|g| g.state == GpuState::Ok));
    let lost: Vec<_> = r.events.iter().filter(|e| e.class == faultline_proto::EventClass::GpuLost).collect();
    assert_eq!(lost.len(), 1, "{:?}", r.events);
    assert_eq!(lost[0].component.as_deref(), Some("gpu2"));
    assert_eq!(lost[0].severity, faultline_proto::Severity::Critical);
}

#[test]
fn not_supported_queries_are_none_and_listed() {
    let (r, _) = once(Some(json!({"gpus": [
        {"not_supported": ["ecc", "memory_temperature", "row_remap", "nvlink", "pcie_replay", "energy"], "nvlinks": []},
        {}
    ]})));
    let g = &r.gpus[0];
    assert_eq!(g.state, GpuState::Ok);
    assert_eq!(g.ecc.sbe_volatile, None);
    assert_eq!(g.ecc.dbe_aggregate, None);
    assert_eq!(g.mem_temp_c, None);
    assert_eq!(g.row_remap, None);
    assert!(g.nvlinks.is_empty());
    assert_eq!(g.energy_mj, None);
    assert_eq!(g.pcie.as_ref().unwrap().replay_count, None);
    assert_eq!(g.temp_c, Some(32.0), "other readings still come");
    for q in ["ecc", "memory_temperature", "row_remap", "nvlink", "pcie_replay", "energy"] {
        assert!(g.not_supported.iter().any(|n| n == q), "{q} missing from {:?}", g.not_supported);
    }
    assert!(r.gpus[1].not_supported.is_empty());
    assert_eq!(r.gpus[1].ecc.sbe_volatile, Some(0));
}

#[test]
fn a_hung_gpu_is_unresponsive_and_does_not_stall_the_others() {
    let start = Instant::now();
    let (r, stderr) =
        once(Some(json!({"gpus": [{}, {"delay_ms": 30_000}, {"error": "timeout"}, {"error": "unknown"}, {}]})));
    let took = start.elapsed();
    println!("--once with one GPU hanging 30 s per call took {took:?}");
    assert_eq!(r.gpus.len(), 5, "{stderr}");
    assert_eq!(r.gpus[0].state, GpuState::Ok);
    assert_eq!(r.gpus[1].state, GpuState::Unresponsive);
    assert_eq!(r.gpus[2].state, GpuState::Unresponsive);
    assert_eq!(r.gpus[2].nvml_error.as_deref(), Some("Timeout"));
    // Unknown Error is what a fallen-off GPU often answers: reported as said, not called hung.
    assert_eq!(r.gpus[3].state, GpuState::Ok);
    assert_eq!(r.gpus[3].nvml_error.as_deref(), Some("Unknown Error"));
    assert_eq!(r.gpus[4].state, GpuState::Ok);
    assert_eq!(r.gpus[4].temp_c, Some(32.0));
    // The 30 s hang must not have been waited out (a bound on correctness, not a timing assertion:
    // the poll deadline is 2 s; anything under the hang itself proves the collector did not block).
    assert!(took.as_secs() < 30, "collector waited for the hung GPU: {took:?}");
}

#[test]
fn a_gpu_gone_from_the_device_list_keeps_its_index_and_is_lost() {
    // Without a first sighting in this process there is nothing to compare against, so this is done
    // in-process by `gpu_collector.rs`; here: a state where the GPU is absent reports only what NVML
    // lists, and validates.
    let (r, _) = once(Some(json!({"gpus": [{}, {"present": false}, {}]})));
    assert_eq!(r.gpus.len(), 2);
    assert!(r.gpus.iter().all(|g| g.state == GpuState::Ok));
}

#[test]
fn fake_library_path_exists() {
    assert!(Path::new(&fake_nvml()).exists());
}
