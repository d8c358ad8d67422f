//! What the GPU collector reports for diagnosis on real machines, through the real agent on the fake
//! NVML library (nvml-wrapper's real code path): NVML's error words with the GPU's PCI presence from
//! sysfs (a GPU answering `Unknown Error` is neither lost nor hung in the agent's words), cumulative
//! clocks-event time from the `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` field values, and the expected GPU
//! count (configured, or kept from the first start).

use std::path::Path;
use std::process::Command;

use faultline_proto::{GpuState, NodeReport};
use serde_json::json;

/// `--once` on the fake NVML with `state`, sysfs under `sysfs`, and the agent's state in `spool`.
fn once(state: serde_json::Value, sysfs: &Path, spool: &Path, config: Option<&str>) -> NodeReport {
    let path = spool.join("nvml.json");
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline-agent"));
    cmd.args(["--once", "--node-name", "gpu-node-1", "--kmsg", "/nonexistent"])
        .arg("--nvml-lib")
        .arg(faultline_tests::fake_nvml_lib())
        .arg("--sysfs-root")
        .arg(sysfs)
        .arg("--spool-dir")
        .arg(spool)
        .env("FAKE_NVML_STATE", &path);
    if let Some(c) = config {
        let cfg = spool.join("agent.toml");
        std::fs::write(&cfg, c).unwrap();
        cmd.arg("--config").arg(cfg);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "agent failed: {stderr}");
    let r: NodeReport =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not a NodeReport ({e}): {stderr}"));
    r.validate().unwrap_or_else(|e| panic!("invalid report: {e}"));
    r
}

#[test]
fn unknown_error_is_reported_as_said_not_as_lost_or_hung() {
    let sysfs = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let r = once(
        json!({"gpus": [{}, {"error": "unknown"}, {"handle_error": "unknown"}, {"lost": true}]}),
        sysfs.path(),
        spool.path(),
        None,
    );
    assert_eq!(r.gpus.len(), 4);
    let g = |i: usize| &r.gpus[i];
    assert_eq!((g(0).state, g(0).nvml_error.as_deref(), g(0).pci_present), (GpuState::Ok, None, None));
    assert_eq!(g(1).state, GpuState::Ok, "Unknown Error on every query: said, not judged");
    assert_eq!(g(1).nvml_error.as_deref(), Some("Unknown Error"));
    assert_eq!(g(2).state, GpuState::Ok, "Unknown Error on the handle itself");
    assert_eq!(g(2).nvml_error.as_deref(), Some("Unknown Error"));
    // First sighting in this process: the PCI address was never learned, so presence is unknown
    // (the in-process test `gpu_fallen.rs` covers a GPU seen healthy first).
    assert_eq!((g(1).pci_present, g(2).pci_present), (None, None));
    assert_eq!(g(3).state, GpuState::Lost, "GPU_IS_LOST is NVML's own word for lost");
    assert_eq!(g(3).nvml_error.as_deref(), Some("GPU is lost"));
}

#[test]
fn clock_event_time_comes_from_the_field_values() {
    let sysfs = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let r = once(
        json!({"gpus": [
            {"clock_event_ns": {"sw_power_cap": 1_500_000_000u64, "hw_power_brake_slowdown": 42}},
            {"not_supported": ["clock_events"]}
        ]}),
        sysfs.path(),
        spool.path(),
        None,
    );
    let c = &r.gpus[0].clock_event_ns;
    assert_eq!(c.get("sw_power_cap"), Some(&1_500_000_000));
    assert_eq!(c.get("hw_power_brake_slowdown"), Some(&42));
    assert_eq!(c.get("hw_thermal_slowdown"), Some(&0), "a reason that never held the clocks reads 0");
    assert_eq!(c.len(), 5);
    assert!(r.gpus[1].clock_event_ns.is_empty(), "not supported: unknown, not zero");
    assert!(r.gpus[1].not_supported.iter().any(|n| n == "clock_events"));
}

#[test]
fn expected_gpus_is_configured_or_kept_from_the_first_start() {
    let sysfs = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let eight = json!({"gpus": [{}, {}, {}, {}, {}, {}, {}, {}]});
    let seven = json!({"gpus": [{}, {}, {}, {}, {}, {}, {}]});
    // Nothing kept yet (--once writes nothing): what NVML lists.
    assert_eq!(once(eight, sysfs.path(), spool.path(), None).expected_gpus, Some(8));
    // The daemon kept 8 at its first start; after a reboot with a GPU missing, 8 is still expected.
    std::fs::write(spool.path().join("expected-gpus"), "8\n").unwrap();
    let r = once(seven.clone(), sysfs.path(), spool.path(), None);
    assert_eq!((r.gpus.len(), r.expected_gpus), (7, Some(8)));
    // The config wins.
    let r = once(seven, sysfs.path(), spool.path(), Some("expected_gpus = 4\n"));
    assert_eq!(r.expected_gpus, Some(4));
}
