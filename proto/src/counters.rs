//! Facts about NIC counters that the agent (saturation), the analyzer (rates) and the simulator (what
//! the kernel shows) must agree on.
//!
//! The InfiniBand PortCounters in `/sys/class/infiniband/<dev>/ports/<n>/counters/` have the widths the
//! IBA spec gives them, and the kernel (`drivers/infiniband/core/sysfs.c`) shows the MAD field as is:
//! the port stops counting at the maximum instead of wrapping. A healthy long-running port often sits
//! there (`excessive_buffer_overrun_errors` = 15 in the H100 sample). Such a counter says nothing about
//! the present: its rate is unknown, not zero.

/// Width in bits of an IB PortCounters field, by its sysfs name; `None` for counters that are 64-bit
/// (the `*_data`/`*_packets` that extended counters back, netdev and `hw_counters` statistics).
pub fn ib_counter_width(name: &str) -> Option<u32> {
    match name {
        "symbol_error"
        | "port_rcv_errors"
        | "port_rcv_remote_physical_errors"
        | "port_rcv_switch_relay_errors"
        | "port_xmit_discards" => Some(16),
        "link_error_recovery" | "link_downed" | "port_xmit_constraint_errors" | "port_rcv_constraint_errors" => Some(8),
        "local_link_integrity_errors" | "excessive_buffer_overrun_errors" => Some(4),
        "VL15_dropped" => Some(16),
        "port_xmit_wait" => Some(32),
        _ => None,
    }
}

/// The value a counter of `name` saturates at, if it has a fixed width.
pub fn ib_counter_max(name: &str) -> Option<u64> {
    ib_counter_width(name).map(|w| (1u64 << w) - 1)
}

/// True when `value` sits at `name`'s maximum: the counter no longer moves.
pub fn is_saturated(name: &str, value: u64) -> bool {
    ib_counter_max(name).is_some_and(|m| value >= m)
}

/// What a counter of `name` shows after `true_total` events: the total, held at the maximum.
pub fn saturate(name: &str, true_total: u64) -> u64 {
    ib_counter_max(name).map_or(true_total, |m| true_total.min(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_iba_port_counters() {
        assert_eq!(ib_counter_max("symbol_error"), Some(65_535));
        assert_eq!(ib_counter_max("port_rcv_errors"), Some(65_535));
        assert_eq!(ib_counter_max("link_downed"), Some(255));
        assert_eq!(ib_counter_max("local_link_integrity_errors"), Some(15));
        assert_eq!(ib_counter_max("excessive_buffer_overrun_errors"), Some(15));
        assert_eq!(ib_counter_max("port_xmit_wait"), Some(4_294_967_295));
        assert_eq!(ib_counter_max("port_xmit_data"), None);
        assert!(is_saturated("excessive_buffer_overrun_errors", 15));
        assert!(!is_saturated("port_rcv_errors", 14));
        assert_eq!(saturate("link_downed", 300), 255);
        assert_eq!(saturate("rx_bytes", 1 << 40), 1 << 40);
    }
}

/// A counter's name as reports carry it: short names (every netdev statistic) held inline, the
/// kernel's known long names as `&'static str`, so building, decoding and dropping a report's counter
/// map allocates nothing per name. Compares, hashes and serializes as the plain string.
pub type CounterName = smol_str::SmolStr;

/// `name` as a [`CounterName`]: a known IB or RDMA counter is taken from a static table, anything
/// else is copied (inline when it is 23 bytes or shorter, which every netdev statistic is).
pub fn counter_name(name: &str) -> CounterName {
    match known(name) {
        Some(s) => CounterName::new_static(s),
        None => CounterName::new(name),
    }
}

/// The static copy of a counter name longer than `CounterName` holds inline.
fn known(name: &str) -> Option<&'static str> {
    if name.len() <= 23 {
        return None;
    }
    Some(match name {
        "excessive_buffer_overrun_errors" => "excessive_buffer_overrun_errors",
        "local_link_integrity_errors" => "local_link_integrity_errors",
        "port_rcv_remote_physical_errors" => "port_rcv_remote_physical_errors",
        "port_rcv_switch_relay_errors" => "port_rcv_switch_relay_errors",
        "port_rcv_constraint_errors" => "port_rcv_constraint_errors",
        "port_xmit_constraint_errors" => "port_xmit_constraint_errors",
        "port_unicast_xmit_packets" => "port_unicast_xmit_packets",
        "port_unicast_rcv_packets" => "port_unicast_rcv_packets",
        "port_multicast_xmit_packets" => "port_multicast_xmit_packets",
        "port_multicast_rcv_packets" => "port_multicast_rcv_packets",
        "np_ecn_marked_roce_packets" => "np_ecn_marked_roce_packets",
        "resp_remote_access_errors" => "resp_remote_access_errors",
        "req_remote_invalid_request" => "req_remote_invalid_request",
        "req_remote_access_errors" => "req_remote_access_errors",
        _ => return None,
    })
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn counter_names_compare_as_their_strings_however_they_are_held() {
        for n in ["symbol_error", "port_rcv_remote_physical_errors", "some_vendor_counter_with_a_long_name", ""] {
            let c = counter_name(n);
            assert_eq!(c.as_str(), n);
            assert_eq!(c, CounterName::from(n.to_string()));
            assert_eq!(serde_json::to_string(&c).unwrap(), serde_json::to_string(n).unwrap());
        }
        // Known long names are static: no heap behind them.
        assert!(!counter_name("excessive_buffer_overrun_errors").is_heap_allocated());
        assert!(!counter_name("rx_bytes").is_heap_allocated());
        assert!(counter_name("some_vendor_counter_with_a_long_name").is_heap_allocated());
    }
}
