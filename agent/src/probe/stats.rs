//! Per-path counts between two reports, and the probe sequence numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use faultline_proto::ProbeSample;

/// Most round-trip times kept per path between two reports (for the median); the count goes on.
const MAX_RTTS: usize = 4096;

#[derive(Debug, Default, Clone)]
pub(super) struct PathStats {
    pub sent: u32,
    pub received: u32,
    pub rtts_us: Vec<u32>,
}

pub(super) fn entry<K: Ord>(m: &mut BTreeMap<K, PathStats>, k: K) -> &mut PathStats {
    m.entry(k).or_default()
}

impl PathStats {
    /// A reply came back after `rtt_us`.
    pub fn answered(&mut self, rtt_us: u32) {
        self.sent = self.sent.saturating_add(1);
        self.received = self.received.saturating_add(1);
        if self.rtts_us.len() < MAX_RTTS {
            self.rtts_us.push(rtt_us);
        }
    }

    pub fn sample(mut self, peer: String, iface: String, local_addr: String, peer_addr: String) -> ProbeSample {
        self.rtts_us.sort_unstable();
        let cap = faultline_proto::probe::MAX_SENT;
        let sent = self.sent.min(cap);
        ProbeSample {
            peer,
            iface,
            local_addr,
            peer_addr,
            sent,
            received: self.received.min(sent),
            rtt_p50_us: self.rtts_us.get(self.rtts_us.len() / 2).map(|r| (*r).min(faultline_proto::probe::MAX_RTT_US)),
            rtt_max_us: self.rtts_us.last().map(|r| (*r).min(faultline_proto::probe::MAX_RTT_US)),
        }
    }
}

/// Sequence numbers: start from the clock so that a restarted agent does not take a late reply to
/// its previous life's probe for one of its own.
pub(super) fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let _ = SEQ.compare_exchange(
        0,
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    SEQ.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_the_median_and_the_max() {
        let mut s = PathStats { sent: 2, ..Default::default() };
        for r in [30, 10, 20] {
            s.answered(r);
        }
        let p = s.sample("b".into(), "eth1".into(), "10.0.0.1".into(), "10.0.0.2".into());
        assert_eq!((p.sent, p.received, p.rtt_p50_us, p.rtt_max_us), (5, 3, Some(20), Some(30)));
    }
}
