//! A GPU seen healthy, then answering `Unknown Error` (as real fallen-off GPUs often do), in-process
//! on the fake NVML library across polls of one collector: the report carries NVML's words and
//! whether the GPU's PCI function is still in sysfs, and the agent calls it neither lost nor hung.
//!
//! The fake library keeps its state per process and reads `FAKE_NVML_STATE` from the environment, so
//! this binary holds one test.

use std::path::Path;
use std::sync::Arc;

use faultline_agent::collect::gpu::GpuCollector;
use faultline_agent::collect::{Collector, PciMap};
use faultline_agent::events::EventQueue;
use faultline_proto::{GpuState, NodeReport};
use serde_json::json;

fn write_state(path: &Path, v: serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn poll(c: &mut GpuCollector) -> NodeReport {
    let mut r = NodeReport::empty("n1");
    c.collect(&mut r).expect("collect");
    r
}

#[test]
fn a_gpu_answering_unknown_error_is_reported_with_its_pci_presence() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({"gpus": [{}, {}, {}]}));
    // SAFETY: the only test in this binary; set before any thread reads the environment.
    unsafe { std::env::set_var("FAKE_NVML_STATE", &state) };
    // Slot 0 (0000:18:00.0) stays on the PCI bus; slot 1 (0000:2a:00.0) falls off it.
    let sysfs = dir.path().join("sys");
    std::fs::create_dir_all(sysfs.join("bus/pci/devices/0000:18:00.0")).unwrap();
    std::fs::create_dir_all(sysfs.join("bus/pci/devices/0000:3a:00.0")).unwrap();
    let q = Arc::new(EventQueue::new(100));
    let mut c = GpuCollector::new(Some(&faultline_tests::fake_nvml_lib()), q, PciMap::default())
        .expect("fake NVML loads")
        .with_sysfs_root(sysfs.clone())
        .with_expected(None, Some(dir.path()), true);

    let r = poll(&mut c);
    assert!(r.gpus.iter().all(|g| g.state == GpuState::Ok && g.nvml_error.is_none() && g.pci_present.is_none()));
    assert_eq!(r.expected_gpus, Some(3));
    assert_eq!(std::fs::read_to_string(dir.path().join("expected-gpus")).unwrap().trim(), "3");

    write_state(&state, json!({"gpus": [{"error": "unknown"}, {"handle_error": "unknown"}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus.len(), 3);
    let g0 = &r.gpus[0];
    assert_eq!((g0.state, g0.nvml_error.as_deref(), g0.pci_present), (GpuState::Ok, Some("Unknown Error"), Some(true)));
    assert_eq!(g0.pci_bus_id.as_deref(), Some("00000000:18:00.0"), "identity kept from when it answered");
    let g1 = &r.gpus[1];
    assert_eq!(
        (g1.state, g1.nvml_error.as_deref(), g1.pci_present),
        (GpuState::Ok, Some("Unknown Error"), Some(false))
    );
    assert_eq!(g1.uuid, r.gpus[1].uuid);
    assert!(!g1.uuid.is_empty(), "identity kept from when it answered");
    assert_eq!((r.gpus[2].nvml_error.as_deref(), r.gpus[2].pci_present), (None, None));
    assert_eq!(r.expected_gpus, Some(3));
}
