//! The GPU collector in-process on the fake NVML library, across several polls of one collector:
//! a GPU that vanishes from the device list, NotSupported remembered between polls, `gpu_lost` sent
//! once, a hung GPU recovering, and XID/ECC events from the NVML event set reaching the event queue.
//!
//! The fake library keeps its state per process and reads `FAKE_NVML_STATE` from the environment, so
//! everything here is one test that rewrites its state file step by step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::collect::gpu::GpuCollector;
use faultline_agent::collect::{Collector, PciMap};
use faultline_agent::events::EventQueue;
use faultline_proto::{Event, GpuState, NodeReport, Severity};
use serde_json::json;

fn fake_nvml() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join("libnvidia_ml.so");
    assert!(p.exists(), "{} is not built", p.display());
    p
}

/// Write the state atomically (the fake re-reads it on change; a half-written file would be skipped).
fn write_state(path: &Path, v: serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn poll(c: &mut GpuCollector) -> NodeReport {
    let mut r: NodeReport = serde_json::from_value(json!({
        "schema_version": 1, "node": "n1", "agent_version": "t", "seq": 1, "timestamp_ms": 1, "interval_ms": 1000
    }))
    .unwrap();
    c.collect(&mut r).expect("collect");
    r
}

/// Wait (up to `limit`) for events matching `f` in the queue; returns everything drained.
fn wait_events(q: &EventQueue, limit: Duration, f: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got.extend(q.drain());
        if f(&got) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

#[test]
fn one_collector_across_faults() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({"gpus": [{}, {}, {}, {"not_supported": ["ecc"]}]}));
    // SAFETY: the only test in this binary; set before any thread reads the environment.
    unsafe { std::env::set_var("FAKE_NVML_STATE", &state) };

    let q = Arc::new(EventQueue::new(1000));
    let pci: PciMap = Arc::default();
    let mut c = GpuCollector::new(Some(&fake_nvml()), q.clone(), pci.clone())
        .expect("NVML loads from the fake library")
        // Well under the 3 s hang of step 6, with room for a loaded 2-core machine.
        .with_poll_deadline(Duration::from_millis(2500));

    // 1. Healthy; the PCI map is filled for the kernel-log watcher.
    let r = poll(&mut c);
    assert_eq!(r.gpus.len(), 4);
    assert!(r.gpus.iter().all(|g| g.state == GpuState::Ok));
    assert_eq!(pci.read().unwrap().get("0000:2a:00"), Some(&1));
    assert_eq!(r.gpus[3].ecc.sbe_volatile, None);
    let uuid2 = r.gpus[2].uuid.clone();

    // 2. NotSupported is remembered: even when the GPU would now answer, it is not asked again.
    write_state(&state, json!({"gpus": [{}, {}, {}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus[3].ecc.sbe_volatile, None);
    assert!(r.gpus[3].not_supported.iter().any(|n| n == "ecc"));

    // 3. GPU 2 vanishes from the list (NVML renumbers: the old gpu3 is now NVML index 2). It stays
    //    in the report as lost under index 2 with its identity, and gpu3 keeps its index.
    write_state(&state, json!({"gpus": [{}, {}, {"present": false}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus.len(), 4, "{:?}", r.gpus.iter().map(|g| (g.index, g.state)).collect::<Vec<_>>());
    assert_eq!(r.gpus[2].state, GpuState::Lost);
    assert_eq!(r.gpus[2].uuid, uuid2);
    assert_eq!(r.gpus[2].pci_bus_id.as_deref(), Some("00000000:3A:00.0"));
    assert_eq!(r.gpus[3].state, GpuState::Ok);
    assert!(r.gpus[3].not_supported.iter().any(|n| n == "ecc"), "NotSupported follows the GPU to its new NVML index");
    assert_eq!(r.gpus[3].ecc.sbe_volatile, None);
    // The collector pushes `gpu_lost` while it collects, so the queue already holds it: no waiting.
    let evs = q.drain();
    let lost: Vec<_> = evs.iter().filter(|e| e.class == faultline_proto::EventClass::GpuLost).collect();
    assert_eq!(lost.len(), 1, "{evs:?}");
    assert_eq!(lost[0].component.as_deref(), Some("gpu2"));
    assert_eq!(lost[0].severity, Severity::Critical);

    // 4. Still gone: still reported, but no second gpu_lost event.
    let r = poll(&mut c);
    assert_eq!(r.gpus[2].state, GpuState::Lost);
    assert!(q.drain().iter().all(|e| e.class != faultline_proto::EventClass::GpuLost));

    // 5. Back, then lost through GPU_IS_LOST: a new loss, a new event.
    write_state(&state, json!({"gpus": [{}, {}, {}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus[2].state, GpuState::Ok);
    write_state(&state, json!({"gpus": [{}, {"lost": true}, {}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus[1].state, GpuState::Lost);
    assert_eq!(r.gpus[1].name, "NVIDIA H100 80GB HBM3", "identity kept from the last sighting");
    let evs = q.drain();
    assert_eq!(
        evs.iter()
            .filter(|e| e.class == faultline_proto::EventClass::GpuLost && e.component.as_deref() == Some("gpu1"))
            .count(),
        1
    );

    // 6. A GPU hangs for 3 s per call: unresponsive while its worker is stuck, fine once it returns.
    write_state(&state, json!({"gpus": [{}, {}, {"delay_ms": 3000}, {}]}));
    let r = poll(&mut c);
    assert_eq!(r.gpus[2].state, GpuState::Unresponsive);
    assert_eq!(r.gpus[2].uuid, uuid2);
    assert_eq!(r.gpus[0].state, GpuState::Ok);
    write_state(&state, json!({"gpus": [{}, {}, {}, {}]}));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = poll(&mut c);
        if r.gpus[2].state == GpuState::Ok {
            break;
        }
        assert_eq!(r.gpus[2].state, GpuState::Unresponsive);
        assert!(Instant::now() < deadline, "GPU 2 never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 7. Events queued in the state file reach the queue through the NVML event set, once each.
    q.drain();
    write_state(
        &state,
        json!({"gpus": [{}, {}, {}, {}], "events": [
            {"id": 1, "gpu": 3, "type": "xid", "xid": 79},
            {"id": 2, "gpu": 1, "type": "ecc_dbe"},
            {"id": 3, "gpu": 0, "type": "xid", "xid": 13}
        ]}),
    );
    let evs = wait_events(&q, Duration::from_secs(30), |e| e.len() >= 3);
    let x79 = evs.iter().find(|e| e.xid == Some(79)).unwrap_or_else(|| panic!("no XID 79 in {evs:?}"));
    assert_eq!(x79.component.as_deref(), Some("gpu3"));
    assert_eq!(x79.severity, Severity::Critical);
    assert_eq!(x79.device.as_deref(), Some("0000:5d:00"));
    let dbe = evs.iter().find(|e| e.class == faultline_proto::EventClass::EccDbe).expect("DBE event");
    assert_eq!(dbe.component.as_deref(), Some("gpu1"));
    let x13 = evs.iter().find(|e| e.xid == Some(13)).expect("XID 13 event");
    assert_eq!(x13.severity, Severity::Warning);
    // Re-reading the state must not deliver them again: the event set goes on in id order, so once a
    // later event (XID 31 on gpu0) has arrived, a second XID 79 would have come before it.
    write_state(
        &state,
        json!({"gpus": [{}, {}, {}, {"temp": 40}], "events": [
            {"id": 1, "gpu": 3, "type": "xid", "xid": 79},
            {"id": 4, "gpu": 0, "type": "xid", "xid": 31}
        ]}),
    );
    poll(&mut c);
    let evs = wait_events(&q, Duration::from_secs(30), |e| e.iter().any(|e| e.xid == Some(31)));
    assert!(evs.iter().any(|e| e.xid == Some(31)), "the later event never arrived: {evs:?}");
    assert!(evs.iter().all(|e| e.xid != Some(79)), "XID 79 delivered twice: {evs:?}");

    // 8. A flood of XID 45 on one GPU becomes one event now plus one carrying the rest of the count.
    let storm: Vec<_> = (100..150).map(|id| json!({"id": id, "gpu": 0, "type": "xid", "xid": 45})).collect();
    write_state(&state, json!({"gpus": [{}, {}, {}, {}], "events": storm}));
    let evs = wait_events(&q, Duration::from_secs(60), |e| {
        e.iter().filter(|e| e.xid == Some(45)).map(|e| e.count).sum::<u64>() >= 50
    });
    let x45: Vec<_> = evs.iter().filter(|e| e.xid == Some(45)).collect();
    assert_eq!(x45.iter().map(|e| e.count).sum::<u64>(), 50, "{x45:?}");
    assert!(x45.len() <= 3, "the storm was not coalesced: {} events", x45.len());
}
