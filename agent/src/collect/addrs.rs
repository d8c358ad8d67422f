//! Collector: NIC addresses. Fills `NicSample::addrs` with the IPv4 and IPv6 addresses of the netdev
//! behind each NIC (an IB port's IPoIB or RoCE netdev, or the netdev itself), read with
//! `getifaddrs(3)`. A collective library names its peer by such an address (`Got completion from
//! peer 10.1.2.3<43116>`, a RoCE GID `::ffff:10.1.2.3`); the analyzer traces it back to the node and
//! NIC through these. The host sample gets every non-loopback address, also of interfaces no NIC
//! sample lists (NCCL's sockets often use the management network). Registered only on a live host (`sysfs_root` = `/sys`): fixture trees have no
//! addresses to match the host's interfaces.

use std::collections::BTreeMap;
use std::net::IpAddr;

use faultline_proto::{NicKind, NodeReport};

use super::{CollectError, Collector};

/// Most addresses kept per NIC (a netdev with hundreds of secondary addresses is not a fabric port).
const MAX_ADDRS_PER_NIC: usize = 16;

/// Every interface's addresses, by interface name, from `getifaddrs(3)`. Link-local IPv6 addresses
/// are kept: NCCL prints them when the OOB interface has nothing else (`fe80::…%ib0`).
pub fn interface_addrs() -> std::io::Result<BTreeMap<String, Vec<IpAddr>>> {
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        out.entry(name).or_default().push(addr);
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Most addresses listed for the whole host.
const MAX_HOST_ADDRS: usize = 64;

/// Puts `addrs` (interface → addresses) on the NICs of `report`, and every non-loopback one on its
/// host sample.
pub fn fill(report: &mut NodeReport, addrs: &BTreeMap<String, Vec<IpAddr>>) {
    if let Some(h) = &mut report.host {
        h.addrs =
            addrs.values().flatten().filter(|a| !a.is_loopback()).take(MAX_HOST_ADDRS).map(|a| a.to_string()).collect();
    }
    for nic in &mut report.nics {
        let ifname = match nic.kind {
            NicKind::Infiniband => nic.netdev.as_deref(),
            _ => Some(nic.name.as_str()),
        };
        let Some(list) = ifname.and_then(|n| addrs.get(n)) else { continue };
        nic.addrs = list.iter().take(MAX_ADDRS_PER_NIC).map(|a| a.to_string()).collect();
    }
}

/// The collector.
#[derive(Debug, Default)]
pub struct AddrCollector;

impl Collector for AddrCollector {
    fn name(&self) -> &'static str {
        "addrs"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let addrs = interface_addrs().map_err(|e| CollectError::io("getifaddrs", e))?;
        fill(report, &addrs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::NicSample;

    #[test]
    fn the_loopback_has_its_address() {
        let a = interface_addrs().unwrap();
        let lo = a.get("lo").expect("every Linux host has lo");
        assert!(lo.contains(&IpAddr::from([127, 0, 0, 1])), "{lo:?}");
    }

    #[test]
    fn an_ib_port_gets_its_netdevs_addresses_and_a_netdev_its_own() {
        let mut r = NodeReport::empty("n1");
        r.nics.push(NicSample {
            name: "mlx5_0".into(),
            kind: NicKind::Infiniband,
            netdev: Some("ib0".into()),
            ..Default::default()
        });
        r.nics.push(NicSample { name: "eth0".into(), kind: NicKind::Netdev, ..Default::default() });
        r.nics.push(NicSample { name: "mlx5_1".into(), kind: NicKind::Infiniband, ..Default::default() });
        r.host = Some(Default::default());
        let mut a = BTreeMap::new();
        a.insert("lo".to_string(), vec![IpAddr::from([127, 0, 0, 1])]);
        a.insert("bond0".to_string(), vec![IpAddr::from([172, 16, 0, 7])]);
        a.insert("ib0".to_string(), vec![IpAddr::from([10, 1, 0, 7]), "fe80::1".parse().unwrap()]);
        a.insert("eth0".to_string(), vec![IpAddr::from([192, 168, 1, 7])]);
        fill(&mut r, &a);
        assert_eq!(r.nics[0].addrs, ["10.1.0.7", "fe80::1"]);
        assert_eq!(r.nics[1].addrs, ["192.168.1.7"]);
        assert!(r.nics[2].addrs.is_empty(), "no netdev, no address");
        let host = &r.host.as_ref().unwrap().addrs;
        assert!(host.contains(&"172.16.0.7".to_string()), "an unlisted interface still names the host: {host:?}");
        assert!(!host.contains(&"127.0.0.1".to_string()), "{host:?}");
    }
}
