//! `ProbeSample`: what one agent's active fabric probes (pingmesh) measured toward one peer over one
//! report interval, and the bounds a report's probe list must keep (checked in `validate.rs`).
//!
//! One sample is one (local NIC, peer address) path: how many probes went out, how many came back,
//! and the round-trip times of those that came back. The analyzer builds the loss and latency matrix
//! from these; a path the agent did not probe this interval is absent, never zero.

use serde::{Deserialize, Serialize};

/// Most probe samples in one report: a node probes a small rotating set of peers (tens), on each of
/// its fabric NICs (at most 16 on any current host), so 4096 is far beyond a real report.
pub const MAX_PROBES: usize = 4096;
/// Most probes counted toward one path in one interval: 100,000 probes per interval is beyond any
/// sane rate limit (the agent's default sends a few per peer).
pub const MAX_SENT: u32 = 100_000;
/// Longest round trip a sample may carry, µs: a probe is given up long before one minute.
pub const MAX_RTT_US: u32 = 60_000_000;
/// Longest address text: an IPv6 address with a zone is under 64 bytes.
pub const MAX_ADDR: usize = 64;

/// One path's probe results over one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// The peer node's name (as in its own reports).
    pub peer: String,
    /// The local fabric NIC the probes left from, as in `NicSample.name` (`mlx5_0`, `eth1`).
    pub iface: String,
    /// The local address the probes were sent from.
    pub local_addr: String,
    /// The peer's address the probes were sent to.
    pub peer_addr: String,
    /// Probes sent this interval.
    pub sent: u32,
    /// Replies received this interval (late replies to this interval's probes included, duplicates
    /// not).
    pub received: u32,
    /// Median round-trip time of the replies, µs; `None` when none came back.
    #[serde(default)]
    pub rtt_p50_us: Option<u32>,
    /// Largest round-trip time of the replies, µs; `None` when none came back.
    #[serde(default)]
    pub rtt_max_us: Option<u32>,
}

impl ProbeSample {
    /// Share of this interval's probes that did not come back, 0–1; `None` when none were sent.
    pub fn loss(&self) -> Option<f64> {
        (self.sent > 0).then(|| f64::from(self.sent - self.received.min(self.sent)) / f64::from(self.sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_share_of_what_was_sent() {
        let p = ProbeSample { sent: 10, received: 9, ..Default::default() };
        assert_eq!(p.loss(), Some(0.1));
        assert_eq!(ProbeSample::default().loss(), None);
    }
}
