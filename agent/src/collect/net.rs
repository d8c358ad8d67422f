//! Collector: network interfaces under `<sysfs-root>/class/net` — operstate, carrier, carrier changes,
//! speed, MTU and every `statistics/*` counter. Which netdevs are reported and which are fabric NICs
//! follows `[nics]` (see `fabric`): by default a plain netdev is not fabric and is not reported, and
//! netdevs matching `netdev_exclude` (`lo`, `docker*`, `veth*`, …) never are. A netdev that backs an IB/RoCE port
//! (the infiniband collector, which runs first, names it in `NicSample::netdev`) is merged into that
//! port's sample instead of being reported twice; on a name clash the IB counter wins (its `rx_bytes`
//! counts RDMA traffic too, the netdev's does not).

use std::collections::BTreeSet;
use std::path::PathBuf;

use faultline_proto::limits::{MAX_COUNTERS_PER_NIC, MAX_NICS};
use faultline_proto::{NicKind, NicSample, NodeReport};

use crate::collect::fabric::{NicsConfig, default_route_netdevs};
use crate::collect::infiniband::add_ethtool_stats;
use crate::collect::{CollectError, Collector, CounterWatch, list_dir, parse_u64, pci_address_of, read_trimmed};

pub struct NetCollector {
    root: PathBuf,
    watch: CounterWatch,
    cfg: NicsConfig,
    /// Where `net/route` is read for the management NIC.
    procfs: PathBuf,
    /// Reading the live host's `/sys` (ethtool statistics are asked only then).
    live: bool,
}

impl NetCollector {
    pub fn new(sysfs_root: PathBuf) -> Self {
        let live = sysfs_root == std::path::Path::new("/sys");
        Self {
            root: sysfs_root.join("class/net"),
            watch: CounterWatch::default(),
            cfg: NicsConfig::default(),
            procfs: PathBuf::from("/proc"),
            live,
        }
    }

    /// Use these `[nics]` settings, and `procfs` for the routing table.
    pub fn with_config(mut self, cfg: NicsConfig, procfs: PathBuf) -> Self {
        self.cfg = cfg;
        self.procfs = procfs;
        self
    }

    /// Whether a plain netdev is a fabric NIC. A virtual device, a bridge, a bond and the management
    /// NIC (default route) are fabric only when `fabric_include` names them exactly; another physical
    /// netdev when a `fabric_include` glob matches it.
    fn plain_is_fabric(&self, name: &str, management: &BTreeSet<String>) -> bool {
        let dir = self.root.join(name);
        let structural = management.contains(name)
            || !dir.join("device").exists()
            || dir.join("bridge").exists()
            || dir.join("bonding").exists();
        if structural {
            let named = self.cfg.fabric_include.iter().any(|p| p == name);
            return named && self.cfg.is_fabric(&[name], false);
        }
        self.cfg.is_fabric(&[name], false)
    }
}

/// What one netdev shows in sysfs.
#[derive(Debug, Default)]
struct Netdev {
    operstate: Option<String>,
    carrier: Option<bool>,
    carrier_changes: Option<u64>,
    speed_mbps: Option<u64>,
    mtu: Option<u32>,
    pci_bus_id: Option<String>,
    physical: bool,
    counters: std::collections::BTreeMap<String, u64>,
}

impl Collector for NetCollector {
    fn name(&self) -> &'static str {
        "net"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let mut errs = Vec::new();
        let names = match list_dir(&self.root) {
            Ok(n) => n,
            Err(e) => return Err(CollectError::io(self.root.display().to_string(), e)),
        };
        let management = default_route_netdevs(&self.procfs);
        // Physical interfaces first, so that on a host with more netdevs than a report may carry
        // (hundreds of container veths) the ones that matter are the ones kept.
        let mut plain = Vec::new();
        for name in names {
            if !faultline_proto::id::valid_name(&name) || self.cfg.netdev_excluded(&name) {
                continue;
            }
            if let Some(ib) =
                report.nics.iter_mut().find(|n| n.kind == NicKind::Infiniband && n.netdev.as_deref() == Some(&name))
            {
                let nd = self.read_netdev(&name, &mut errs);
                merge_into(ib, nd);
                continue;
            }
            let fabric = self.plain_is_fabric(&name, &management);
            if !fabric && !self.cfg.collect_nonfabric_netdevs {
                continue;
            }
            let nd = self.read_netdev(&name, &mut errs);
            plain.push((name, nd, fabric));
        }
        plain.sort_by_key(|(name, nd, fabric)| (!fabric, !nd.physical, name.clone()));
        for (name, nd, fabric) in plain {
            if report.nics.len() >= MAX_NICS {
                errs.push(CollectError::Other(format!(
                    "more than {MAX_NICS} NICs; virtual netdevs past the limit are not reported"
                )));
                break;
            }
            let mut nic = NicSample { name, kind: NicKind::Netdev, fabric: Some(fabric), ..Default::default() };
            merge_into(&mut nic, nd);
            if fabric && self.live {
                add_ethtool_stats(&mut nic, &self.cfg, &mut self.watch, &mut errs);
            }
            report.nics.push(nic);
        }
        self.watch.end_cycle();
        CollectError::from_list(errs)
    }
}

impl NetCollector {
    fn read_netdev(&mut self, name: &str, errs: &mut Vec<CollectError>) -> Netdev {
        let dir = self.root.join(name);
        let mut nd = Netdev::default();
        match read_trimmed(&dir.join("operstate")) {
            Ok(s) => nd.operstate = Some(s),
            Err(e) => errs.push(CollectError::io(dir.join("operstate").display().to_string(), e)),
        }
        // `carrier` and `speed` answer EINVAL while the interface is down: that is "unknown", not an error.
        nd.carrier = read_trimmed(&dir.join("carrier")).ok().and_then(|s| parse_u64(&s)).map(|v| v != 0);
        nd.carrier_changes = read_trimmed(&dir.join("carrier_changes")).ok().and_then(|s| parse_u64(&s));
        // -1 (SPEED_UNKNOWN) parses as None.
        nd.speed_mbps = read_trimmed(&dir.join("speed"))
            .ok()
            .and_then(|s| parse_u64(&s))
            .filter(|v| *v > 0 && *v < u64::from(u32::MAX));
        nd.mtu = read_trimmed(&dir.join("mtu")).ok().and_then(|s| s.parse().ok());
        let device = dir.join("device");
        nd.physical = device.exists();
        if nd.physical {
            nd.pci_bus_id = pci_address_of(&device);
        }
        if let Some(c) = nd.carrier_changes {
            self.watch.observe(name, "carrier_changes", c, errs);
        }
        let sdir = dir.join("statistics");
        match list_dir(&sdir) {
            Ok(files) if files.is_empty() => errs.push(CollectError::io(
                sdir.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
            )),
            Ok(files) => {
                for f in files.into_iter().take(MAX_COUNTERS_PER_NIC) {
                    let path = sdir.join(&f);
                    match read_trimmed(&path).map(|s| parse_u64(&s)) {
                        Ok(Some(v)) => {
                            self.watch.observe(name, &f, v, errs);
                            nd.counters.insert(f, v);
                        }
                        Ok(None) => errs.push(CollectError::Other(format!("{}: not a counter", path.display()))),
                        Err(e) => errs.push(CollectError::io(path.display().to_string(), e)),
                    }
                }
            }
            Err(e) => errs.push(CollectError::io(sdir.display().to_string(), e)),
        }
        nd
    }
}

fn merge_into(nic: &mut NicSample, nd: Netdev) {
    nic.operstate = nd.operstate;
    nic.carrier = nd.carrier;
    nic.carrier_changes = nd.carrier_changes;
    nic.speed_mbps = nd.speed_mbps;
    nic.mtu = nd.mtu;
    if nic.pci_bus_id.is_none() {
        nic.pci_bus_id = nd.pci_bus_id;
    }
    for (k, v) in nd.counters {
        if nic.counters.len() >= MAX_COUNTERS_PER_NIC {
            break;
        }
        nic.counters.entry(faultline_proto::counter_name(&k)).or_insert(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    }

    #[test]
    fn netdevs_are_read_lo_is_skipped_and_an_ib_netdev_is_merged_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        for (rel, v) in [
            ("lo/operstate", "unknown"),
            ("lo/statistics/rx_bytes", "5"),
            ("eth0/operstate", "up"),
            ("eth0/carrier", "1"),
            ("eth0/carrier_changes", "4"),
            ("eth0/speed", "25000"),
            ("eth0/mtu", "9000"),
            ("eth0/statistics/rx_bytes", "1000"),
            ("eth0/statistics/rx_packets", "10"),
            ("eth0/statistics/tx_bytes", "2000"),
            ("ib0/operstate", "up"),
            ("ib0/speed", "-1"),
            ("ib0/mtu", "4092"),
            ("ib0/statistics/rx_bytes", "7"),
            ("ib0/statistics/rx_dropped", "3"),
        ] {
            write(&net, rel, v);
        }
        let mut r = crate::collect::blank_report("n", 1, 1000);
        let mut ib_counters = faultline_proto::CounterMap::new();
        ib_counters.insert("rx_bytes".into(), 4000u64);
        r.nics.push(NicSample {
            name: "mlx5_0".into(),
            netdev: Some("ib0".into()),
            counters: ib_counters,
            ..Default::default()
        });
        let mut c = NetCollector::new(dir.path().to_path_buf()).with_config(all(), dir.path().join("proc"));
        c.collect(&mut r).unwrap();
        assert_eq!(r.nics.len(), 2, "{:?}", r.nics);
        let ib = &r.nics[0];
        assert_eq!(ib.mtu, Some(4092));
        assert_eq!(ib.speed_mbps, None, "speed -1 is unknown");
        assert_eq!(ib.counters["rx_bytes"], 4000, "the IB port counter wins");
        assert_eq!(ib.counters["rx_dropped"], 3);
        let eth = &r.nics[1];
        assert_eq!(eth.name, "eth0");
        assert_eq!(eth.kind, NicKind::Netdev);
        assert_eq!(eth.carrier, Some(true));
        assert_eq!(eth.carrier_changes, Some(4));
        assert_eq!(eth.speed_mbps, Some(25000));
        assert_eq!(eth.counters["rx_packets"], 10);
        assert_eq!(eth.fabric, Some(false), "a plain netdev is data, not fabric");
    }

    fn all() -> NicsConfig {
        NicsConfig { collect_nonfabric_netdevs: true, ..Default::default() }
    }

    /// A node's usual netdevs: loopback, container plumbing, a bridge, the management NIC (default
    /// route), a spare physical port, and the IPoIB netdev of an IB port.
    fn busy_host() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        for n in ["lo", "docker0", "veth1a2b", "ifb0", "br0", "eno1", "ens1f0", "ib0"] {
            write(&net, &format!("{n}/operstate"), "up");
            write(&net, &format!("{n}/statistics/rx_bytes"), "1");
        }
        for n in ["eno1", "ens1f0", "ib0"] {
            std::fs::create_dir_all(net.join(n).join("device")).unwrap();
        }
        std::fs::create_dir_all(net.join("br0/bridge")).unwrap();
        write(
            &dir.path().join("proc"),
            "net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
             eno1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000",
        );
        dir
    }

    fn run(dir: &Path, cfg: NicsConfig) -> Vec<(String, Option<bool>)> {
        let mut r = crate::collect::blank_report("n", 1, 1000);
        r.nics.push(NicSample {
            name: "mlx5_0".into(),
            netdev: Some("ib0".into()),
            fabric: Some(true),
            ..Default::default()
        });
        let mut c = NetCollector::new(dir.to_path_buf()).with_config(cfg, dir.join("proc"));
        c.collect(&mut r).unwrap();
        r.nics.into_iter().map(|n| (n.name, n.fabric)).collect()
    }

    #[test]
    fn only_fabric_nics_are_reported_by_default() {
        let dir = busy_host();
        assert_eq!(run(dir.path(), NicsConfig::default()), vec![("mlx5_0".to_string(), Some(true))]);
    }

    #[test]
    fn nonfabric_netdevs_come_as_data_when_asked_and_excluded_ones_never() {
        let dir = busy_host();
        let got = run(dir.path(), all());
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mlx5_0", "eno1", "ens1f0", "br0"], "physical first; lo, docker0, veth, ifb never");
        assert!(got[1..].iter().all(|(_, f)| *f == Some(false)), "{got:?}");
    }

    #[test]
    fn fabric_include_makes_a_physical_netdev_fabric_but_a_glob_never_the_management_nic() {
        let dir = busy_host();
        let cfg = NicsConfig { fabric_include: vec!["e*".into()], ..Default::default() };
        assert_eq!(
            run(dir.path(), cfg),
            vec![("mlx5_0".to_string(), Some(true)), ("ens1f0".to_string(), Some(true))],
            "eno1 holds the default route: only naming it exactly makes it fabric"
        );
        let cfg = NicsConfig { fabric_include: vec!["eno1".into()], ..Default::default() };
        assert_eq!(run(dir.path(), cfg)[1], ("eno1".to_string(), Some(true)));
    }

    #[test]
    fn a_counter_that_goes_backwards_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        write(&net, "eth0/operstate", "up");
        write(&net, "eth0/statistics/rx_bytes", "1000");
        let mut c = NetCollector::new(dir.path().to_path_buf()).with_config(all(), dir.path().join("proc"));
        let mut r = crate::collect::blank_report("n", 1, 1000);
        c.collect(&mut r).unwrap();
        write(&net, "eth0/statistics/rx_bytes", "10");
        let mut r = crate::collect::blank_report("n", 2, 1000);
        assert!(matches!(c.collect(&mut r), Err(CollectError::Counter { .. })));
        assert_eq!(r.nics[0].counters["rx_bytes"], 10, "the value is still reported");
    }
}
