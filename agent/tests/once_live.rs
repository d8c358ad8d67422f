//! `faultline-agent --once` on this very machine: asked for every netdev, the NIC counters it reports
//! agree with `/proc/net/dev` (read just before and just after, since the counters keep moving); by
//! default it reports only fabric NICs, never a virtual one or the management NIC.

use std::collections::BTreeMap;
use std::process::Command;

use faultline_proto::NodeReport;

/// `/proc/net/dev` → interface → (rx_bytes, rx_packets, tx_bytes, tx_packets).
fn proc_net_dev() -> BTreeMap<String, [u64; 4]> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap()).collect();
            Some((name.trim().to_string(), [f[0], f[1], f[8], f[9]]))
        })
        .collect()
}

#[test]
fn once_agrees_with_proc_net_dev() {
    let spool = tempfile::tempdir().unwrap();
    let config = spool.path().join("agent.toml");
    std::fs::write(&config, "[nics]\ncollect_nonfabric_netdevs = true\nnetdev_exclude = [\"lo\"]\n").unwrap();
    let before = proc_net_dev();
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["--once", "--no-gpu", "--kmsg", "/nonexistent"])
        .arg("--config")
        .arg(&config)
        .arg("--spool-dir")
        .arg(spool.path())
        .output()
        .unwrap();
    let after = proc_net_dev();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let r: NodeReport = serde_json::from_slice(&out.stdout).expect("stdout is one NodeReport");
    r.validate().expect("valid report");
    assert!(r.host.as_ref().and_then(|h| h.mem_total_bytes).is_some_and(|m| m > 0));
    let mut checked = 0;
    for (name, b) in &before {
        if name == "lo" {
            continue;
        }
        let Some(a) = after.get(name) else { continue }; // vanished meanwhile
        let nic = r.nics.iter().find(|n| &n.name == name || n.netdev.as_deref() == Some(name.as_str()));
        let nic = nic.unwrap_or_else(|| panic!("interface {name} from /proc/net/dev is missing: {:?}", r.nics));
        for (i, key) in ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"].iter().enumerate() {
            if nic.netdev.is_some() && key.ends_with("bytes") {
                continue; // merged into an IB port: its byte counters are the port's
            }
            let v = nic.counters[*key];
            assert!(b[i] <= v && v <= a[i], "{name} {key}: agent says {v}, /proc/net/dev went {} → {}", b[i], a[i]);
        }
        checked += 1;
    }
    assert!(checked > 0, "no interface besides lo to compare");
    assert!(!r.nics.iter().any(|n| n.name == "lo"));
}

#[test]
fn by_default_only_fabric_nics_are_reported() {
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["--once", "--no-gpu", "--kmsg", "/nonexistent"])
        .arg("--spool-dir")
        .arg(spool.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let r: NodeReport = serde_json::from_slice(&out.stdout).expect("stdout is one NodeReport");
    // Whatever this host has: every NIC reported is a fabric NIC, and none is virtual.
    for n in &r.nics {
        assert_eq!(n.fabric, Some(true), "{n:?}");
        let virt = !std::path::Path::new("/sys/class/net").join(&n.name).join("device").exists()
            && n.kind == faultline_proto::NicKind::Netdev;
        assert!(!virt, "a virtual netdev is never fabric by default: {n:?}");
    }
}
