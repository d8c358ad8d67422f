//! Which NICs are fabric NICs (the data plane training traffic uses) and which netdevs are reported
//! at all (`[nics]` in the agent's config).
//!
//! Rules, in order:
//! 1. A netdev matching `netdev_exclude` (default: loopback, container, bridge and tunnel devices) is
//!    never reported and never fabric.
//! 2. A NIC matching `fabric_exclude` is not fabric.
//! 3. A NIC matching `fabric_include` is fabric.
//! 4. Otherwise IB and RoCE ports (`/sys/class/infiniband`) are fabric; a plain netdev is not, and
//!    neither is a bridge, a virtual device (no `device` link in sysfs) or the management NIC (the one
//!    holding the default route).
//!
//! Non-fabric NICs are reported (with `fabric: false`) only when `collect_nonfabric_netdevs` is set.
//! Patterns are globs (`*` any run, `?` one character) matched against the NIC's name and against the
//! netdev behind an IB/RoCE port.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

/// Netdevs never reported: loopback, Docker/CNI/Calico/Flannel container plumbing, veth pairs,
/// traffic-shaping `ifb`, libvirt and Docker bridges, tunnels. None carries training traffic.
pub const DEFAULT_NETDEV_EXCLUDE: &[&str] = &[
    "lo", "docker*", "veth*", "cni*", "flannel*", "cali*", "ifb*", "virbr*", "br-*", "tunl*", "vxlan*", "kube-*",
    "cilium_*", "lxc*", "tap*", "tun*", "wg*", "dummy*", "gre*", "gretap*", "erspan*", "ip6tnl*", "sit*",
];

/// Which NICs are collected and which count as fabric (`[nics]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicsConfig {
    /// Globs of NICs (IB device such as `mlx5_*`, or netdev such as `ens*f*np*`) that are fabric NICs
    /// besides the IB/RoCE ports, e.g. the Ethernet ports NCCL uses over TCP. Default: none.
    pub fabric_include: Vec<String>,
    /// Globs of NICs that are never fabric, even IB/RoCE ones (a storage HCA, a RoCE port used for
    /// management). Default: none.
    pub fabric_exclude: Vec<String>,
    /// Globs of netdevs that are never reported at all. Default: `lo`, `docker*`, `veth*`, `cni*`,
    /// `flannel*`, `cali*`, `ifb*`, `virbr*`, `br-*` and other tunnel and container devices.
    pub netdev_exclude: Vec<String>,
    /// Also report non-fabric netdevs (management NIC, bridges, virtual devices not excluded above),
    /// with `fabric: false`, as data only: they are never a fault root. Default false.
    pub collect_nonfabric_netdevs: bool,
    /// Globs of ethtool statistics (`ethtool -S` names) read through the SIOCETHTOOL ioctl from the
    /// netdev behind each RoCE port and added to its counters. Default `["*_phy"]`: the 64-bit
    /// physical-layer counters (`rx_symbol_err_phy`, `rx_corrected_bits_phy`, `link_down_events_phy`,
    /// …). Empty: no ethtool query.
    pub ethtool_stats: Vec<String>,
}

impl Default for NicsConfig {
    fn default() -> Self {
        Self {
            fabric_include: Vec::new(),
            fabric_exclude: Vec::new(),
            netdev_exclude: DEFAULT_NETDEV_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            collect_nonfabric_netdevs: false,
            ethtool_stats: vec!["*_phy".to_string()],
        }
    }
}

impl NicsConfig {
    /// Whether `netdev` is left out of reports entirely.
    pub fn netdev_excluded(&self, netdev: &str) -> bool {
        any_match(&self.netdev_exclude, netdev)
    }

    /// The fabric verdict for a NIC known by `names` (its name, and the netdev behind it).
    /// `default` is what rule 4 says.
    pub fn is_fabric(&self, names: &[&str], default: bool) -> bool {
        if names.iter().any(|n| self.netdev_excluded(n)) {
            return false;
        }
        if names.iter().any(|n| any_match(&self.fabric_exclude, n)) {
            return false;
        }
        if names.iter().any(|n| any_match(&self.fabric_include, n)) {
            return true;
        }
        default
    }

    /// Whether an ethtool statistic of this name is wanted.
    pub fn wants_ethtool_stat(&self, name: &str) -> bool {
        any_match(&self.ethtool_stats, name)
    }
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_match(p.as_bytes(), name.as_bytes()))
}

/// Glob match with `*` (any run, also empty) and `?` (one byte).
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Netdevs holding a default route (IPv4 `net/route`, IPv6 `net/ipv6_route`): the management NIC(s).
/// Read in the host's network namespace where it can be seen (`<procfs>/1/net`, the init process's,
/// which is the host's when the agent runs in a container with the host's PID namespace), else in
/// the agent's own (`<procfs>/net`). Unreadable files give an empty set.
pub fn default_route_netdevs(procfs: &Path) -> BTreeSet<String> {
    let host = procfs.join("1/net");
    let net = if host.join("route").exists() { host } else { procfs.join("net") };
    let mut out = BTreeSet::new();
    if let Ok(text) = std::fs::read_to_string(net.join("route")) {
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
                out.insert(f[0].to_string());
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(net.join("ipv6_route")) {
        // dest dest_plen src src_plen next_hop metric refcnt use flags iface
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
                out.insert(f[9].to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match(b"veth*", b"veth1a2b"));
        assert!(glob_match(b"lo", b"lo"));
        assert!(!glob_match(b"lo", b"lo0"));
        assert!(glob_match(b"br-*", b"br-3f2a"));
        assert!(!glob_match(b"br-*", b"bridge0"));
        assert!(glob_match(b"mlx5_?", b"mlx5_3"));
        assert!(!glob_match(b"mlx5_?", b"mlx5_10"));
        assert!(glob_match(b"*_phy", b"rx_symbol_err_phy"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn include_and_exclude_override_the_kind_default() {
        let cfg = NicsConfig {
            fabric_include: vec!["ens1f*".into()],
            fabric_exclude: vec!["mlx5_4".into()],
            ..Default::default()
        };
        assert!(cfg.is_fabric(&["mlx5_0", "ibp12s0"], true));
        assert!(!cfg.is_fabric(&["mlx5_4", "ibp13s0"], true), "excluded IB port");
        assert!(cfg.is_fabric(&["ens1f0"], false), "included netdev");
        assert!(!cfg.is_fabric(&["eth0"], false));
        assert!(cfg.netdev_excluded("docker0") && cfg.netdev_excluded("veth12") && cfg.netdev_excluded("lo"));
        assert!(!cfg.netdev_excluded("eth0"));
        // A broad include never makes a virtual device fabric.
        let broad = NicsConfig { fabric_include: vec!["*".into()], ..Default::default() };
        assert!(!broad.is_fabric(&["veth9"], false));
        assert!(broad.is_fabric(&["eth3"], false));
    }

    #[test]
    fn the_default_route_names_the_management_nic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        std::fs::write(
            dir.path().join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eno1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eno1\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
             ib0\t0000100A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("net/ipv6_route"),
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eno2\n\
             00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n",
        )
        .unwrap();
        let set = default_route_netdevs(dir.path());
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec!["eno1".to_string(), "eno2".to_string()]);
        // In a container with the host's PID namespace, init's view (the host's) wins over its own.
        std::fs::create_dir_all(dir.path().join("1/net")).unwrap();
        std::fs::write(dir.path().join("1/net/route"), "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nbond0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n").unwrap();
        assert_eq!(default_route_netdevs(dir.path()).into_iter().collect::<Vec<_>>(), vec!["bond0".to_string()]);
    }
}
