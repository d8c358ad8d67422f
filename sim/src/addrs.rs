//! The simulated nodes' IP addresses, deterministic from the cluster: each host's management
//! address (the interface NCCL's bootstrap and out-of-band sockets use), each fabric NIC's own
//! address on a per-rail subnet (NIC k of every node is on rail k's subnet, as rail-optimized
//! clusters number them), and the GID a RoCE or InfiniBand port prints in NCCL's completion errors.
//!
//! - Hosts: `172.16.0.0/12`, node `n` is `172.16.0.0 + n + 1` (a million nodes fit).
//! - Fabric NICs: `10.0.0.0/8` cut into /15 rail subnets, `10.(2k + (n+1) >> 16).x.y`: NIC `k` of
//!   node `n` is host `n + 1` of rail `k`'s subnet (131 071 nodes and 64 rails fit; beyond that an
//!   address repeats, and the analyzer ignores an address more than one node reports).
//! - GIDs: on RoCE the port's GID is its IPv4 address mapped into IPv6 (`::ffff:10.2.0.5`), which is
//!   what NCCL prints; on InfiniBand it is the link-local GID `fe80::<port GUID>`, which no IP
//!   inventory knows.

use std::net::Ipv4Addr;

use crate::realism::LinkLayer;

/// First address of the hosts' management network.
const HOST_BASE: u32 = u32::from_be_bytes([172, 16, 0, 0]);
/// First address of the fabric.
const FABRIC_BASE: u32 = u32::from_be_bytes([10, 0, 0, 0]);
/// Host bits of one rail's subnet (/15).
const RAIL_BITS: u32 = 17;

/// The management address of node `n`.
pub fn host(n: usize) -> String {
    host_ip(n).to_string()
}

fn host_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(HOST_BASE.wrapping_add(n as u32 + 1))
}

/// `host(n)`, written into `out` (its old text replaced), without allocating when it has room.
pub fn write_host(n: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    write!(out, "{}", host_ip(n)).expect("writing to a String cannot fail");
}

/// The address of NIC `k` of node `n` on its rail's subnet.
pub fn nic(n: usize, k: u32) -> String {
    let hostpart = (n as u32 + 1) & ((1 << RAIL_BITS) - 1);
    let subnet = (k & 0x3f) << RAIL_BITS;
    Ipv4Addr::from(FABRIC_BASE | subnet | hostpart).to_string()
}

/// The GID NCCL prints for NIC `k` of node `n` on a fabric of `link_layer`.
pub fn gid(link_layer: LinkLayer, n: usize, k: u32) -> String {
    match link_layer {
        LinkLayer::Ethernet => format!("::ffff:{}", nic(n, k)),
        LinkLayer::Infiniband => {
            // The port GUID: a vendor prefix, then the node and port.
            let g = 0xb8ce_f603_0000_0000u64 | ((n as u64) << 8) | u64::from(k);
            format!("fe80::{:x}:{:x}:{:x}:{:x}", (g >> 48) & 0xffff, (g >> 32) & 0xffff, (g >> 16) & 0xffff, g & 0xffff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_per_node_and_rail() {
        assert_eq!(host(0), "172.16.0.1");
        let mut reused = "255.255.255.255 and more".to_string();
        write_host(0, &mut reused);
        assert_eq!(reused, host(0));
        assert_eq!(host(300), "172.16.1.45");
        assert_eq!(nic(0, 0), "10.0.0.1");
        assert_eq!(nic(0, 3), "10.6.0.1");
        assert_eq!(nic(70_000, 1), "10.3.17.113");
        let mut all = std::collections::BTreeSet::new();
        for n in 0..600 {
            assert!(all.insert(host(n)));
            for k in 0..8 {
                assert!(all.insert(nic(n, k)));
            }
        }
    }
}
