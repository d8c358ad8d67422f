//! The rate fabric NICs should train at when nobody said: the fleet's majority. sysfs gives a port's
//! current rate, never a "maximum" to compare a degraded link with, so a 200 Gb/s link among 400 Gb/s
//! ones is judged against the rate most of the fleet's fabric NICs run at. Kept incrementally (one
//! entry per NIC, a count per rate) so a 100k-GPU cluster costs nothing per check.

use std::collections::{BTreeMap, HashMap};

use faultline_proto::NodeReport;

/// Fabric NICs that must agree before a majority means anything.
pub const MIN_AGREEING: usize = 2;

#[derive(Debug, Default)]
pub struct FleetRates {
    /// Each fabric NIC's current rate, Mb/s, by node then NIC (looked up without allocating).
    by_nic: HashMap<String, BTreeMap<String, u64>>,
    /// How many NICs run at each rate.
    counts: BTreeMap<u64, usize>,
}

impl FleetRates {
    /// Note the rates of one report's fabric NICs (a port that is down has none).
    pub fn learn(&mut self, r: &NodeReport) {
        if !self.by_nic.contains_key(&r.node) {
            self.by_nic.insert(r.node.clone(), BTreeMap::new());
        }
        let Some(node) = self.by_nic.get_mut(&r.node) else { return };
        for n in r.nics.iter().filter(|n| n.is_fabric()) {
            let up = n.carrier != Some(false) && n.operstate.as_deref().is_none_or(|s| s.eq_ignore_ascii_case("up"));
            let rate = n.rate_gbps.or(n.speed_mbps.map(|m| m as f64 / 1000.0)).filter(|r| *r > 0.0 && up);
            let new = rate.map(|g| (g * 1000.0).round() as u64);
            let old = node.get(&n.name).copied();
            if old == new {
                continue;
            }
            match new {
                Some(v) => node.insert(n.name.clone(), v),
                None => node.remove(&n.name),
            };
            if let Some(c) = old.and_then(|o| self.counts.get_mut(&o)) {
                *c -= 1;
            }
            self.counts.retain(|_, c| *c > 0);
            if let Some(v) = new {
                *self.counts.entry(v).or_default() += 1;
            }
        }
    }

    /// The rate more than half of the fabric NICs run at, Gb/s.
    pub fn majority_gbps(&self) -> Option<f64> {
        let total: usize = self.counts.values().sum();
        let (rate, n) = self.counts.iter().max_by_key(|(_, n)| **n)?;
        (*n * 2 > total && *n >= MIN_AGREEING).then_some(*rate as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{NicKind, NicSample};

    fn report(node: &str, rates: &[(f64, bool)]) -> NodeReport {
        let mut r = NodeReport::empty(node);
        r.nics = rates
            .iter()
            .enumerate()
            .map(|(i, (rate, fabric))| NicSample {
                name: format!("mlx5_{i}"),
                kind: if *fabric { NicKind::Infiniband } else { NicKind::Netdev },
                rate_gbps: Some(*rate),
                operstate: Some("up".into()),
                ..Default::default()
            })
            .collect();
        r
    }

    #[test]
    fn the_majority_of_fabric_nics_sets_the_rate() {
        let mut f = FleetRates::default();
        assert_eq!(f.majority_gbps(), None);
        f.learn(&report("a", &[(400.0, true), (400.0, true), (1.0, false)]));
        f.learn(&report("b", &[(400.0, true), (200.0, true)]));
        assert_eq!(f.majority_gbps(), Some(400.0));
        // NICs that retrain move their votes.
        f.learn(&report("a", &[(200.0, true), (200.0, true)]));
        assert_eq!(f.majority_gbps(), Some(200.0));
        // Three rates, none held by more than half: nothing to judge against.
        f.learn(&report("c", &[(100.0, true), (100.0, true)]));
        assert_eq!(f.majority_gbps(), None);
    }
}
