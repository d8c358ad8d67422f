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
    at_max(ib_counter_max(name), value)
}

/// What a counter of `name` shows after `true_total` events: the total, held at the maximum.
pub fn saturate(name: &str, true_total: u64) -> u64 {
    held_at(ib_counter_max(name), true_total)
}

/// `is_saturated` for a counter whose maximum (`ib_counter_max`) was looked up already.
pub fn at_max(max: Option<u64>, value: u64) -> bool {
    max.is_some_and(|m| value >= m)
}

/// `saturate` for a counter whose maximum (`ib_counter_max`) was looked up already.
pub fn held_at(max: Option<u64>, true_total: u64) -> u64 {
    max.map_or(true_total, |m| true_total.min(m))
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

/// Counters by name, in name order: what a report's counter maps (a NIC's counters, a GPU's
/// clock-event times, the collector errors) are. A sorted vector, not a `BTreeMap`: a map of 20-odd
/// counters is one allocation instead of four B-tree nodes, it is built in one pass from keys that
/// come sorted (a decoder's, a collector's), and it is read as often as it is looked into. Its
/// behaviour is the map's: one value per name, a later insert replacing an earlier one, iteration
/// in byte order of the names, and serde as a plain map.
#[derive(Default, PartialEq, Eq)]
pub struct CounterMap(Vec<(CounterName, u64)>);

impl Clone for CounterMap {
    fn clone(&self) -> Self {
        CounterMap(self.0.clone())
    }
    /// Into `self`'s buffer: a report built in the buffers of an earlier one allocates nothing.
    fn clone_from(&mut self, source: &Self) {
        self.0.clone_from(&source.0);
    }
}

/// Iterator over a [`CounterMap`]'s entries, in name order.
pub type CounterIter<'a> =
    std::iter::Map<std::slice::Iter<'a, (CounterName, u64)>, fn(&'a (CounterName, u64)) -> (&'a CounterName, &'a u64)>;

impl CounterMap {
    pub const fn new() -> Self {
        CounterMap(Vec::new())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Replaces every entry with `entries`, which must come in strictly increasing name order (a
    /// collector's fixed list), in the buffer it has. Checked in debug builds only: a hot path.
    pub fn refill_sorted(&mut self, entries: impl IntoIterator<Item = (CounterName, u64)>) {
        self.0.clear();
        self.0.extend(entries);
        debug_assert!(self.0.windows(2).all(|w| w[0].0 < w[1].0), "refill_sorted: names out of order");
    }
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
    pub fn get(&self, name: &str) -> Option<&u64> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }
    /// Sets `name` to `value`; the value it had, if any. A name past the last one (keys inserted in
    /// order, as collectors and decoders do) is appended without a search.
    pub fn insert(&mut self, name: CounterName, value: u64) -> Option<u64> {
        if self.0.last().is_none_or(|(k, _)| *k < name) {
            self.0.push((name, value));
            return None;
        }
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }
    pub fn remove(&mut self, name: &str) -> Option<u64> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }
    pub fn retain(&mut self, mut keep: impl FnMut(&CounterName, &mut u64) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }
    /// The entry of `name`, as a map's: `or_insert` and `or_default` give its value.
    pub fn entry(&mut self, name: CounterName) -> CounterEntry<'_> {
        CounterEntry { map: self, name }
    }
    pub fn iter(&self) -> CounterIter<'_> {
        fn pair(e: &(CounterName, u64)) -> (&CounterName, &u64) {
            (&e.0, &e.1)
        }
        self.0.iter().map(pair as fn(&(CounterName, u64)) -> (&CounterName, &u64))
    }
    /// The entries in name order, values writable (names are not: the order holds).
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&CounterName, &mut u64)> + ExactSizeIterator {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &CounterName> + ExactSizeIterator + Clone {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &u64> + ExactSizeIterator + Clone {
        self.0.iter().map(|(_, v)| v)
    }
    /// From entries in strictly increasing name order (checked in debug builds only: a hot path).
    pub fn from_sorted(v: Vec<(CounterName, u64)>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "counter names out of order");
        CounterMap(v)
    }
    /// From entries in any order: sorted by name (stably), a later entry of a name replacing an
    /// earlier one, as inserting them one by one into a map would.
    pub fn from_entries(mut v: Vec<(CounterName, u64)>) -> Self {
        if !v.windows(2).all(|w| w[0].0 < w[1].0) {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            // Keep the last of each run of equal names.
            let mut out: Vec<(CounterName, u64)> = Vec::with_capacity(v.len());
            for e in v {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            v = out;
        }
        CounterMap(v)
    }
}

/// A place in a [`CounterMap`], filled or not.
pub struct CounterEntry<'a> {
    map: &'a mut CounterMap,
    name: CounterName,
}

impl<'a> CounterEntry<'a> {
    /// The value, `default` inserted first when the name is not there.
    pub fn or_insert(self, default: u64) -> &'a mut u64 {
        let i = match self.map.find(&self.name) {
            Ok(i) => i,
            Err(i) => {
                self.map.0.insert(i, (self.name, default));
                i
            }
        };
        &mut self.map.0[i].1
    }
    pub fn or_default(self) -> &'a mut u64 {
        self.or_insert(0)
    }
}

impl std::ops::Index<&str> for CounterMap {
    type Output = u64;
    /// The value of `name`; panics when there is none, as a map's index does.
    fn index(&self, name: &str) -> &u64 {
        self.get(name).unwrap_or_else(|| panic!("no counter named {name:?}"))
    }
}

impl std::fmt::Debug for CounterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(CounterName, u64)> for CounterMap {
    fn from_iter<I: IntoIterator<Item = (CounterName, u64)>>(it: I) -> Self {
        Self::from_entries(it.into_iter().collect())
    }
}

impl<const N: usize> From<[(CounterName, u64); N]> for CounterMap {
    fn from(a: [(CounterName, u64); N]) -> Self {
        a.into_iter().collect()
    }
}

impl Extend<(CounterName, u64)> for CounterMap {
    fn extend<I: IntoIterator<Item = (CounterName, u64)>>(&mut self, it: I) {
        for (k, v) in it {
            self.insert(k, v);
        }
    }
}

impl<'a> IntoIterator for &'a CounterMap {
    type Item = (&'a CounterName, &'a u64);
    type IntoIter = CounterIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for CounterMap {
    type Item = (CounterName, u64);
    type IntoIter = std::vec::IntoIter<(CounterName, u64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl serde::Serialize for CounterMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for CounterMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CounterMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of counter names to unsigned integers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<CounterMap, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0).min(256));
                while let Some((k, x)) = m.next_entry::<CounterName, u64>()? {
                    v.push((k, x));
                }
                Ok(CounterMap::from_entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod map_tests {
    use super::*;

    #[test]
    fn a_counter_map_behaves_as_the_btreemap_it_replaces() {
        let entries = [("tx_bytes", 5u64), ("rx_bytes", 1), ("symbol_error", 2), ("rx_bytes", 3), ("a", 0)];
        let ours: CounterMap = entries.iter().map(|&(k, v)| (k.into(), v)).collect();
        let theirs: std::collections::BTreeMap<&str, u64> = entries.iter().copied().collect();
        let flat = |m: &CounterMap| m.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>();
        let want: Vec<(String, u64)> = theirs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(flat(&ours), want, "sorted, the later of two equal names kept");
        // Inserting one by one, in any order, gives the same map.
        let mut one = CounterMap::new();
        for &(k, v) in entries.iter().rev() {
            one.insert(k.into(), v);
        }
        one.insert("rx_bytes".into(), 3);
        assert_eq!(flat(&one), want);
        assert_eq!(one.insert("rx_bytes".into(), 4), Some(3));
        assert_eq!((one.get("rx_bytes"), one.get("nope"), one.contains_key("a")), (Some(&4), None, true));
        *one.entry("zz".into()).or_insert(7) += 1;
        *one.entry("a".into()).or_default() += 1;
        assert_eq!((one.get("zz"), one.get("a")), (Some(&8), Some(&1)));
        assert_eq!(one.remove("zz"), Some(8));
        one.retain(|k, _| k != "a");
        assert_eq!(one.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["rx_bytes", "symbol_error", "tx_bytes"]);
        // JSON: a plain object, as before; a repeated key keeps its last value, as a map's does.
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&theirs).unwrap());
        let back: CounterMap = serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(flat(&back), [("a".to_string(), 2), ("b".to_string(), 3)]);
        assert!(serde_json::from_str::<CounterMap>(r#"{"a": -1}"#).is_err());
        // Refilled and cloned into, in place: the same map as one built anew.
        let mut again = one.clone();
        again.refill_sorted([("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(flat(&again), [("a".to_string(), 1), ("b".to_string(), 2)]);
        again.clone_from(&ours);
        assert!(again == ours);
        again.iter_mut().filter(|(k, _)| *k == "rx_bytes").for_each(|(_, v)| *v += 10);
        assert_eq!(again.get("rx_bytes"), Some(&13));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "names out of order")]
    fn refill_sorted_refuses_names_out_of_order_in_debug_builds() {
        CounterMap::new().refill_sorted([("b".into(), 1), ("a".into(), 2)]);
    }
}
