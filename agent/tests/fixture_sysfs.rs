//! The InfiniBand collector against a real H100 node's `/sys/class/infiniband` (8× ConnectX-7 NDR plus
//! a RoCE bond), materialized from the text dump in `fixtures/`, both through the library and through
//! `faultline-agent --once --sysfs-root`.

use std::path::Path;
use std::process::Command;

use faultline_agent::collect::infiniband::InfinibandCollector;
use faultline_agent::collect::{Registry, blank_report};
use faultline_proto::{NicKind, NodeReport};

const H100_SAMPLE: &str = include_str!("fixtures/sysfs-infiniband-h100-sample.txt");

/// Write a `path = value` dump (lines starting with `#` are comments) as files under `root`.
fn materialize(dump: &str, root: &Path) {
    for line in dump.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (path, value) = line.split_once(" = ").unwrap_or_else(|| panic!("fixture line without ` = `: {line}"));
        let p = root.join(path.trim());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("{}\n", value.trim())).unwrap();
    }
}

fn h100_sysfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    materialize(H100_SAMPLE, &dir.path().join("class/infiniband"));
    dir
}

fn nic<'a>(r: &'a NodeReport, name: &str) -> &'a faultline_proto::NicSample {
    r.nics.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no NIC {name} in {:?}", r.nics))
}

#[test]
fn h100_snapshot_parses_to_the_right_counters() {
    let sys = h100_sysfs();
    let mut reg = Registry::empty();
    reg.push(Box::new(InfinibandCollector::new(sys.path().to_path_buf())));
    let mut r = blank_report("h100", 1, 10_000);
    reg.collect(&mut r);

    let names: Vec<&str> = r.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_9", "mlx5_bond_0"]);
    let m0 = nic(&r, "mlx5_0");
    assert_eq!(m0.kind, NicKind::Infiniband);
    assert_eq!(m0.port, Some(1));
    assert_eq!(m0.ib_state.as_deref(), Some("ACTIVE"));
    assert_eq!(m0.ib_phys_state.as_deref(), Some("LinkUp"));
    assert_eq!(m0.rate_gbps, Some(400.0));
    assert_eq!(m0.link_layer.as_deref(), Some("InfiniBand"));
    // Data counters count 4-byte words: ×4 into bytes, and mirrored as rx_bytes/tx_bytes.
    assert_eq!(m0.counters["port_rcv_data"], 230_539_874_932_483 * 4);
    assert_eq!(m0.counters["rx_bytes"], 230_539_874_932_483 * 4);
    assert_eq!(m0.counters["port_xmit_data"], 230_442_669_431_839 * 4);
    assert_eq!(m0.counters["tx_bytes"], 230_442_669_431_839 * 4);
    // Other counters are taken as they are.
    assert_eq!(m0.counters["port_rcv_packets"], 317_548_853_677);
    assert_eq!(m0.counters["port_xmit_wait"], 2_489_603_687);
    assert_eq!(m0.counters["port_rcv_errors"], 14);
    assert_eq!(m0.counters["port_rcv_switch_relay_errors"], 1);
    assert_eq!(m0.counters["excessive_buffer_overrun_errors"], 15);
    assert_eq!(m0.counters["symbol_error"], 0);
    assert_eq!(m0.counters["link_downed"], 0);
    // hw_counters too.
    assert_eq!(m0.counters["roce_adp_retrans"], 3);
    assert_eq!(m0.counters["rx_write_requests"], 3_809_045_607);
    assert_eq!(m0.counters["lifespan"], 12);
    assert_eq!(m0.counters.len(), 21 + 26 + 2, "21 counters, 26 hw_counters, rx_bytes and tx_bytes");

    let bond = nic(&r, "mlx5_bond_0");
    assert_eq!(bond.link_layer.as_deref(), Some("Ethernet"));
    assert_eq!(bond.rate_gbps, Some(200.0));

    let m1 = nic(&r, "mlx5_1");
    assert_eq!(m1.ib_state.as_deref(), Some("ACTIVE"));
    assert!(m1.counters.is_empty());
    // Errors are data: the 7 ports whose snapshot has no `counters/` directory.
    assert_eq!(r.collector_errors.get("infiniband"), Some(&7), "{:?}", r.collector_errors);
    // The 4-bit excessive_buffer_overrun_errors sits at its maximum (15) on mlx5_0 and mlx5_bond_0:
    // saturated, so its rate is unknown. The 16-bit port_rcv_errors at 14 is not.
    assert_eq!(m0.saturated, vec!["excessive_buffer_overrun_errors".to_string()]);
    assert_eq!(bond.saturated, vec!["excessive_buffer_overrun_errors".to_string()]);
    assert!(m1.saturated.is_empty());
    assert!(r.nics.iter().all(|n| n.fabric == Some(true)), "IB and RoCE ports are fabric");
    r.validate().expect("the report is valid for the analyzer");
}

#[test]
fn once_with_a_fixture_sysfs_merges_the_ib_netdev_and_reports_everything() {
    let sys = h100_sysfs();
    // mlx5_0's PCI function carries the IPoIB netdev ibp12s0; a plain eth0 sits next to it.
    std::fs::create_dir_all(sys.path().join("class/infiniband/mlx5_0/device/net/ibp12s0")).unwrap();
    materialize(
        "ibp12s0/operstate = up\nibp12s0/mtu = 4092\nibp12s0/carrier = 1\nibp12s0/carrier_changes = 6\n\
         ibp12s0/statistics/rx_bytes = 11\nibp12s0/statistics/rx_dropped = 5\n\
         eth0/operstate = down\neth0/statistics/rx_bytes = 123\nlo/operstate = unknown\n",
        &sys.path().join("class/net"),
    );
    let spool = tempfile::tempdir().unwrap();
    // eth0 is a plain netdev: reported only when non-fabric netdevs are asked for.
    let config = spool.path().join("agent.toml");
    std::fs::write(&config, "[nics]\ncollect_nonfabric_netdevs = true\nfabric_exclude = [\"mlx5_9\"]\n").unwrap();
    let run = |config: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline-agent"));
        cmd.args(["--once", "--no-gpu", "--node-name", "fixture-node", "--kmsg", "/nonexistent"])
            .arg("--sysfs-root")
            .arg(sys.path())
            .arg("--spool-dir")
            .arg(spool.path());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<NodeReport>(&out.stdout).expect("stdout is one NodeReport")
    };
    let default = run(None);
    let names: Vec<&str> = default.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), 9, "by default only the fabric NICs: {names:?}");
    assert!(default.nics.iter().all(|n| n.is_fabric()));
    let r = run(Some(&config));
    assert_eq!(r.node, "fixture-node");
    let names: Vec<&str> = r.nics.iter().map(|n| n.name.as_str()).collect();
    assert!(!names.contains(&"ibp12s0"), "the IB netdev is merged, not listed twice: {names:?}");
    assert!(!names.contains(&"lo"));
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(nic(&r, "mlx5_9").fabric, Some(false), "excluded from the fabric, reported as data");
    let m0 = nic(&r, "mlx5_0");
    assert_eq!(m0.netdev.as_deref(), Some("ibp12s0"));
    assert_eq!(m0.operstate.as_deref(), Some("up"));
    assert_eq!(m0.carrier_changes, Some(6));
    assert_eq!(m0.mtu, Some(4092));
    assert_eq!(m0.counters["rx_dropped"], 5, "netdev counters join the port's");
    assert_eq!(m0.counters["rx_bytes"], 230_539_874_932_483 * 4, "the IB port byte counter wins");
    let eth0 = nic(&r, "eth0");
    assert_eq!(eth0.kind, NicKind::Netdev);
    assert_eq!(eth0.counters["rx_bytes"], 123);
    assert_eq!(eth0.fabric, Some(false));
    assert_eq!(r.collector_errors.get("infiniband"), Some(&7));
    assert_eq!(r.collector_errors.get("net"), Some(&0));
    assert!(r.host.is_some());
}
