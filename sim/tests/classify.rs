//! Every kernel line the simulator emits, fed to the real agent's classifier
//! (`faultline-agent classify-log`, a real process), gives back the class, XID, device, pid, NIC,
//! disk and severity the simulator put in the event: the analyzer sees exactly what a real agent
//! would send. Needs the binary: `cargo build -p faultline-agent` first.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use faultline_proto::{Event, EventSource};
use faultline_sim::{Scenario, World};

const SCENARIO: &str = r#"
name = "events"
seed = 9
duration_s = 3000
noise = 10
[cluster]
nodes = 8
nodes_per_leaf = 4
[[job]]
id = "a"
hosts = ["node-0000", "node-0004"]
step_time_s = 1.0
[[job]]
id = "b"
hosts = ["node-0001", "node-0002", "node-0003", "node-0005"]
step_time_s = 2.0
[[fault]]
kind = "gpu_lost"
target = "node-0000/gpu1"
at_s = 100
duration_s = 60
[[fault]]
kind = "gpu_hbm_uncorrectable"
target = "node-0001/gpu2"
at_s = 200
duration_s = 60
[[fault]]
kind = "gpu_sram_uncorrectable"
target = "node-0002/gpu3"
at_s = 300
duration_s = 60
[[fault]]
kind = "gpu_gsp_hang"
target = "node-0003/gpu4"
at_s = 400
duration_s = 60
[[fault]]
kind = "gpu_ecc_sbe_storm"
target = "node-0004/gpu5"
at_s = 500
duration_s = 700
[[fault]]
kind = "gpu_row_remap_failure"
target = "node-0005/gpu6"
at_s = 600
duration_s = 60
[[fault]]
kind = "nvlink_down"
target = "node-0000/gpu7/nvlink4"
at_s = 700
duration_s = 60
[[fault]]
kind = "pcie_downtrained"
target = "node-0001/gpu0"
at_s = 800
duration_s = 120
[[fault]]
kind = "nic_down"
target = "node-0002/nic:mlx5_2"
at_s = 900
duration_s = 60
[[fault]]
kind = "nic_flap"
target = "node-0003/nic:mlx5_3"
at_s = 1000
duration_s = 120
[[fault]]
kind = "leaf_switch_down"
target = "switch:leaf-01"
at_s = 1200
duration_s = 60
[[fault]]
kind = "host_oom"
target = "node-0001"
at_s = 1400
duration_s = 60
[[fault]]
kind = "host_mce"
target = "node-0002"
at_s = 1500
duration_s = 200
[[fault]]
kind = "disk_failure"
target = "node-0003/disk:nvme0n1"
at_s = 1800
duration_s = 60
[[fault]]
kind = "gpu_hbm_uncorrectable"
target = "node-0005/gpu1"
at_s = 2000
duration_s = 60
[[fault]]
kind = "gpu_hbm_uncorrectable"
target = "node-0004/gpu2"
at_s = 2100
duration_s = 60
[[fault]]
kind = "gpu_sram_uncorrectable"
target = "node-0004/gpu3"
at_s = 2200
duration_s = 60
"#;

fn agent_bin() -> std::path::PathBuf {
    faultline_tests::bin("faultline-agent")
}

#[test]
fn the_agent_classifier_agrees_with_every_simulated_kernel_line() {
    let sc = Scenario::parse(SCENARIO, "events.toml").unwrap();
    let mut w = World::new(&sc, 1_700_000_000_000);
    let mut events: Vec<Event> = Vec::new();
    let mut all: Vec<Event> = Vec::new();
    while w.t_ms < 3_000_000 {
        for o in w.step() {
            all.extend(o.report.events.iter().cloned());
            events.extend(o.report.events.into_iter().filter(|e| e.source == EventSource::Kmsg));
        }
    }
    let classes: BTreeSet<&str> = events.iter().map(|e| e.class.as_str()).collect();
    for c in ["xid", "nic_link_down", "nic_link_up", "oom_kill", "mce", "edac_ce", "io_error", "pcie_aer_corrected"] {
        assert!(classes.contains(c), "no {c} event among {classes:?}");
    }
    let xids: BTreeSet<u32> = events.iter().filter_map(|e| e.xid).collect();
    assert!(xids.is_superset(&[79, 92, 64, 74].into()), "{xids:?}");
    assert!(xids.iter().any(|x| [13, 31, 43].contains(x)), "noise XIDs at noise 10: {xids:?}");

    // The NVML twins: an event per XID (but 79), ECC events, and the agent's own gpu_lost.
    let nvml_xids =
        all.iter().filter(|e| e.source == EventSource::Nvml && e.class == faultline_proto::EventClass::Xid).count();
    let kmsg_xids = events.iter().filter(|e| e.class == faultline_proto::EventClass::Xid && e.xid != Some(79)).count();
    assert_eq!(nvml_xids, kmsg_xids);
    for c in [faultline_proto::EventClass::EccSbe, faultline_proto::EventClass::EccDbe] {
        assert!(all.iter().any(|e| e.source == EventSource::Nvml && e.class == c), "no NVML {c}");
    }
    assert!(all.iter().any(|e| e.source == EventSource::Agent && e.class == faultline_proto::EventClass::GpuLost));

    let mut child = Command::new(agent_bin())
        .arg("classify-log")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for e in &events {
            writeln!(stdin, "{}", e.message).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), events.len());
    let mut bad = Vec::new();
    for (e, c) in events.iter().zip(&lines) {
        let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let u = |k: &str| c.get(k).and_then(serde_json::Value::as_u64).map(|v| v as u32);
        let component = match (s("nic"), s("disk")) {
            (Some(n), _) => Some(format!("nic:{n}")),
            (_, Some(d)) => Some(format!("disk:{d}")),
            _ => None,
        };
        let mut diffs = Vec::new();
        if s("class").as_deref() != Some(e.class.as_str()) {
            diffs.push(format!("class {:?}", s("class")));
        }
        if u("xid") != e.xid {
            diffs.push(format!("xid {:?}", u("xid")));
        }
        if u("pid") != e.pid {
            diffs.push(format!("pid {:?}", u("pid")));
        }
        if s("device") != e.device {
            diffs.push(format!("device {:?}", s("device")));
        }
        if s("severity").as_deref() != Some(e.severity.as_str()) {
            diffs.push(format!("severity {:?}", s("severity")));
        }
        if component.is_some() && component != e.component {
            diffs.push(format!("component {component:?}"));
        }
        if !diffs.is_empty() {
            bad.push(format!(
                "{}\n   sim: {} {:?} {:?} {:?} {:?}\n   agent: {}",
                e.message,
                e.class,
                e.xid,
                e.device,
                e.component,
                e.severity,
                diffs.join(", ")
            ));
        }
    }
    bad.dedup();
    assert!(
        bad.is_empty(),
        "{} of {} lines disagree:\n{}",
        bad.len(),
        events.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
