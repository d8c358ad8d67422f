//! Collector: InfiniBand and RoCE ports under `<sysfs-root>/class/infiniband` — state, physical state,
//! rate, link layer, every `counters/*`, `counters_ext/*` and `hw_counters/*`, and the netdev behind
//! each port (so the net collector merges it here instead of reporting it twice).
//!
//! Units: `port_rcv_data`/`port_xmit_data` count 4-byte words (IBA PortCounters); they are reported ×4
//! as bytes and also as `rx_bytes`/`tx_bytes`. Legacy error counters are 4 to 32 bits wide and stop at
//! their maximum (`faultline_proto::counters`); one found there is listed in `NicSample::saturated`
//! (its value is still sent, but its rate is unknown).
//!
//! Wider sources join the same counters map under their own names: `hw_counters/*` (64-bit, mlx5),
//! `counters_ext/*`, and for a RoCE port on the live host the `ethtool -S` statistics of its netdev
//! chosen by `[nics] ethtool_stats` (default `*_phy`, the 64-bit physical-layer counters).
//!
//! Every port is fabric unless `[nics] fabric_exclude` names it; a non-fabric port is reported (with
//! `fabric: false`) only with `collect_nonfabric_netdevs`.

use std::path::{Path, PathBuf};

use faultline_proto::limits::{MAX_COUNTERS_PER_NIC, MAX_NICS};
use faultline_proto::{NicKind, NicSample, NodeReport};

use crate::collect::fabric::NicsConfig;
use crate::collect::{CollectError, Collector, CounterWatch, list_dir, parse_u64, pci_address_of, read_trimmed};

/// IBA PortCounters data counters count 4-octet words (IBA spec vol. 1, PortXmitData/PortRcvData).
const DATA_WORD_BYTES: u64 = 4;

/// Counters that count 4-byte words and are reported ×4 in bytes.
fn is_data_words(name: &str) -> bool {
    matches!(name, "port_rcv_data" | "port_xmit_data" | "port_rcv_data_64" | "port_xmit_data_64")
}

pub struct InfinibandCollector {
    root: PathBuf,
    watch: CounterWatch,
    cfg: NicsConfig,
    /// Reading the live host's `/sys`: only then are netdevs asked for ethtool statistics (a fixture
    /// tree's netdev names mean nothing to this host's kernel).
    live: bool,
}

impl InfinibandCollector {
    pub fn new(sysfs_root: PathBuf) -> Self {
        let live = sysfs_root == Path::new("/sys");
        Self {
            root: sysfs_root.join("class/infiniband"),
            watch: CounterWatch::default(),
            cfg: NicsConfig::default(),
            live,
        }
    }

    /// Use these `[nics]` settings instead of the defaults.
    pub fn with_config(mut self, cfg: NicsConfig) -> Self {
        self.cfg = cfg;
        self
    }
}

impl Collector for InfinibandCollector {
    fn name(&self) -> &'static str {
        "infiniband"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let mut errs = Vec::new();
        let devices = match list_dir(&self.root) {
            Ok(d) => d,
            Err(e) => return Err(CollectError::io(self.root.display().to_string(), e)),
        };
        for dev in devices {
            let ddir = self.root.join(&dev);
            let ports = match list_dir(&ddir.join("ports")) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(CollectError::io(ddir.join("ports").display().to_string(), e));
                    continue;
                }
            };
            let mut ports: Vec<u32> = ports.iter().filter_map(|p| p.parse().ok()).collect();
            ports.sort_unstable();
            for port in ports {
                if report.nics.len() >= MAX_NICS {
                    errs.push(CollectError::Other(format!("more than {MAX_NICS} NICs; the rest are not reported")));
                    break;
                }
                let mut nic = read_port(&ddir, &dev, port, &mut self.watch, &mut errs);
                let names = [nic.name.as_str(), nic.netdev.as_deref().unwrap_or("")];
                let fabric = self.cfg.is_fabric(&names, true);
                nic.fabric = Some(fabric);
                if !fabric && !self.cfg.collect_nonfabric_netdevs {
                    continue;
                }
                if self.live && nic.link_layer.as_deref() == Some("Ethernet") {
                    add_ethtool_stats(&mut nic, &self.cfg, &mut self.watch, &mut errs);
                }
                report.nics.push(nic);
            }
        }
        self.watch.end_cycle();
        CollectError::from_list(errs)
    }
}

/// `mlx5_0` for port 1, `mlx5_0p2` for port 2 and up.
pub fn port_nic_name(dev: &str, port: u32) -> String {
    if port <= 1 { dev.to_string() } else { format!("{dev}p{port}") }
}

fn read_port(ddir: &Path, dev: &str, port: u32, watch: &mut CounterWatch, errs: &mut Vec<CollectError>) -> NicSample {
    let pdir = ddir.join("ports").join(port.to_string());
    let name = port_nic_name(dev, port);
    let mut attr = |file: &str| match read_trimmed(&pdir.join(file)) {
        Ok(s) => Some(s),
        Err(e) => {
            errs.push(CollectError::io(pdir.join(file).display().to_string(), e));
            None
        }
    };
    let ib_state = attr("state").map(|s| strip_number(&s));
    let ib_phys_state = attr("phys_state").map(|s| strip_number(&s));
    let rate_gbps = attr("rate").and_then(|s| parse_rate_gbps(&s));
    let link_layer = attr("link_layer");
    let mut nic = NicSample {
        name: name.clone(),
        kind: NicKind::Infiniband,
        netdev: netdev_for_port(ddir, port),
        port: Some(port),
        pci_bus_id: pci_address_of(&ddir.join("device")),
        link_layer,
        ib_state,
        ib_phys_state,
        rate_gbps,
        ..Default::default()
    };

    // `counters/` is part of every IB port; `counters_ext/` (older kernels) and `hw_counters/`
    // (vendor, mlx5) are optional.
    for (sub, required) in [("counters", true), ("counters_ext", false), ("hw_counters", false)] {
        let cdir = pdir.join(sub);
        if !cdir.is_dir() {
            if required {
                errs.push(CollectError::io(
                    cdir.display().to_string(),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
                ));
            }
            continue;
        }
        let files = match list_dir(&cdir) {
            Ok(f) => f,
            Err(e) => {
                errs.push(CollectError::io(cdir.display().to_string(), e));
                continue;
            }
        };
        for f in files {
            let path = cdir.join(&f);
            let raw = match read_trimmed(&path) {
                Ok(s) => s,
                Err(e) => {
                    errs.push(CollectError::io(path.display().to_string(), e));
                    continue;
                }
            };
            let Some(v) = parse_u64(&raw) else {
                errs.push(CollectError::Other(format!("{}: not a counter", path.display())));
                continue;
            };
            watch.observe(&name, &f, v, errs);
            // Only the IBA PortCounters in `counters/` have narrow widths; `hw_counters` and
            // `counters_ext` are 64-bit.
            if sub == "counters" && faultline_proto::counters::is_saturated(&f, v) {
                nic.saturated.push(f.clone());
            }
            let v = if is_data_words(&f) {
                v.checked_mul(DATA_WORD_BYTES).unwrap_or_else(|| {
                    errs.push(CollectError::Counter {
                        nic: name.clone(),
                        counter: f.clone(),
                        problem: "overflows u64 in bytes",
                    });
                    u64::MAX
                })
            } else {
                v
            };
            if nic.counters.len() < MAX_COUNTERS_PER_NIC - 2 {
                nic.counters.insert(faultline_proto::counter_name(&f), v);
            }
        }
    }
    // Prefer the 64-bit extended data counters when both exist.
    let bytes = |a: &str, b: &str| nic.counters.get(a).or_else(|| nic.counters.get(b)).copied();
    let rx = bytes("port_rcv_data_64", "port_rcv_data");
    let tx = bytes("port_xmit_data_64", "port_xmit_data");
    if let Some(rx) = rx {
        nic.counters.insert("rx_bytes".into(), rx);
    }
    if let Some(tx) = tx {
        nic.counters.insert("tx_bytes".into(), tx);
    }
    nic
}

/// Add the wanted `ethtool -S` statistics of the netdev behind a RoCE port to its counters (an
/// existing sysfs counter of the same name wins).
pub fn add_ethtool_stats(
    nic: &mut NicSample,
    cfg: &NicsConfig,
    watch: &mut CounterWatch,
    errs: &mut Vec<CollectError>,
) {
    let Some(netdev) = nic.netdev.clone().or_else(|| (nic.kind == NicKind::Netdev).then(|| nic.name.clone())) else {
        return;
    };
    if cfg.ethtool_stats.is_empty() {
        return;
    }
    match crate::collect::ethtool::stats(&netdev) {
        Ok(list) => {
            for (k, v) in list {
                if !cfg.wants_ethtool_stat(&k) || nic.counters.len() >= MAX_COUNTERS_PER_NIC {
                    continue;
                }
                watch.observe(&nic.name, &k, v, errs);
                nic.counters.entry(faultline_proto::counter_name(&k)).or_insert(v);
            }
        }
        Err(e) => errs.push(CollectError::io(format!("ethtool statistics of {netdev}"), e)),
    }
}

/// `4: ACTIVE` → `ACTIVE`, `5: LinkUp` → `LinkUp`.
fn strip_number(s: &str) -> String {
    match s.split_once(':') {
        Some((n, rest)) if n.trim().bytes().all(|b| b.is_ascii_digit()) => rest.trim().to_string(),
        _ => s.trim().to_string(),
    }
}

/// `400 Gb/sec (4X NDR)` → 400.0, `2.5 Gb/sec (1X SDR)` → 2.5.
pub fn parse_rate_gbps(s: &str) -> Option<f64> {
    let mut f = s.split_whitespace();
    let v: f64 = f.next()?.parse().ok()?;
    let unit = f.next().unwrap_or("Gb/sec");
    let v = match unit {
        u if u.starts_with("Gb") => v,
        u if u.starts_with("Mb") => v / 1000.0,
        u if u.starts_with("Tb") => v * 1000.0,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// The netdev behind an IB/RoCE port: the RoCE GID table names it (`ports/N/gid_attrs/ndevs/<idx>`);
/// otherwise the PCI function's `device/net/*` (several there: the one whose `dev_port` is N-1).
fn netdev_for_port(ddir: &Path, port: u32) -> Option<String> {
    let ndevs = ddir.join("ports").join(port.to_string()).join("gid_attrs/ndevs");
    let mut idx: Vec<u32> = list_dir(&ndevs).unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
    idx.sort_unstable();
    for i in idx.iter().take(16) {
        if let Ok(n) = read_trimmed(&ndevs.join(i.to_string()))
            && faultline_proto::id::valid_name(&n)
        {
            return Some(n);
        }
    }
    let net = ddir.join("device/net");
    let names = list_dir(&net).unwrap_or_default();
    match names.len() {
        0 => None,
        1 => Some(names[0].clone()),
        _ => names
            .iter()
            .find(|n| {
                read_trimmed(&net.join(n).join("dev_port")).ok().and_then(|s| parse_u64(&s))
                    == Some(u64::from(port) - 1)
            })
            .or(names.first())
            .cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_rate_strings_parse() {
        assert_eq!(strip_number("4: ACTIVE"), "ACTIVE");
        assert_eq!(strip_number("5: LinkUp"), "LinkUp");
        assert_eq!(strip_number("DOWN"), "DOWN");
        assert_eq!(parse_rate_gbps("400 Gb/sec (4X NDR)"), Some(400.0));
        assert_eq!(parse_rate_gbps("2.5 Gb/sec (1X SDR)"), Some(2.5));
        assert_eq!(parse_rate_gbps("200 Gb/sec (2X NDR)"), Some(200.0));
        assert_eq!(parse_rate_gbps("garbage"), None);
    }

    #[test]
    fn port_names() {
        assert_eq!(port_nic_name("mlx5_0", 1), "mlx5_0");
        assert_eq!(port_nic_name("mlx5_0", 2), "mlx5_0p2");
    }

    fn write(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    }

    #[test]
    fn roce_port_names_its_netdev_and_a_missing_counters_dir_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ib = dir.path().join("class/infiniband");
        write(&ib, "mlx5_2/ports/1/state", "1: DOWN");
        write(&ib, "mlx5_2/ports/1/phys_state", "3: Disabled");
        write(&ib, "mlx5_2/ports/1/rate", "100 Gb/sec (4X EDR)");
        write(&ib, "mlx5_2/ports/1/link_layer", "Ethernet");
        write(&ib, "mlx5_2/ports/1/gid_attrs/ndevs/0", "ens1f0np0");
        write(&ib, "mlx5_2/ports/1/counters/link_downed", "255");
        write(&ib, "mlx5_2/ports/1/counters/port_xmit_data", "10");
        write(&ib, "mlx5_2/ports/2/state", "4: ACTIVE");
        let mut c = InfinibandCollector::new(dir.path().to_path_buf());
        let mut r = crate::collect::blank_report("n", 1, 1000);
        let err = c.collect(&mut r).unwrap_err();
        let CollectError::Many(list) = err else { panic!("expected several problems") };
        // port 2: phys_state, rate, link_layer, counters missing. A saturated counter is no error.
        assert_eq!(list.len(), 4, "{list:?}");
        assert_eq!(r.nics.len(), 2);
        let p1 = &r.nics[0];
        assert_eq!(p1.name, "mlx5_2");
        assert_eq!(p1.netdev.as_deref(), Some("ens1f0np0"));
        assert_eq!(p1.ib_state.as_deref(), Some("DOWN"));
        assert_eq!(p1.counters["port_xmit_data"], 40);
        assert_eq!(p1.counters["tx_bytes"], 40);
        assert_eq!(p1.saturated, vec!["link_downed".to_string()], "8-bit link_downed at 255");
        assert_eq!(p1.fabric, Some(true), "IB and RoCE ports are fabric by default");
        assert_eq!(r.nics[1].name, "mlx5_2p2");
        assert_eq!(r.nics[1].ib_state.as_deref(), Some("ACTIVE"));
    }
}
