//! `ProbeSample`: what one agent's active fabric probes (pingmesh) measured toward one peer over one
//! report interval, and the bounds a report's probe list must keep.
//!
//! One sample is one (local NIC, peer address) path: how many probes went out, how many came back,
//! and the round-trip times of those that came back. The analyzer builds the loss and latency matrix
//! from these; a path the agent did not probe this interval is absent, never zero.

use serde::{Deserialize, Serialize};

use crate::id::{valid_host, valid_name};
use crate::validate::ReportError;

/// Most probe samples in one report: a node probes a small rotating set of peers (tens), on each of
/// its fabric NICs (at most 16 on any current host), so 4096 is far beyond a real report.
pub const MAX_PROBES: usize = 4096;
/// Most probes counted toward one path in one interval: 100,000 probes per interval is beyond any
/// sane rate limit (the agent's default sends a few per peer).
pub const MAX_SENT: u32 = 100_000;
/// Longest round trip a sample may carry, µs: a probe is given up long before one minute.
pub const MAX_RTT_US: u32 = 60_000_000;
/// Longest address text: an IPv6 address with a zone is under 64 bytes.
const MAX_ADDR: usize = 64;

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

fn invalid(field: String, message: impl Into<String>) -> ReportError {
    ReportError::Invalid { field, message: message.into() }
}

/// Checks a report's probe list: size, names, addresses, counts (`received <= sent`) and times.
pub fn validate_probes(probes: &[ProbeSample]) -> Result<(), ReportError> {
    if probes.len() > MAX_PROBES {
        return Err(invalid(
            "probes".into(),
            format!("has {} entries, more than the limit of {MAX_PROBES}", probes.len()),
        ));
    }
    for (i, p) in probes.iter().enumerate() {
        let f = |k: &str| format!("probes[{i}].{k}");
        if !valid_host(&p.peer) {
            return Err(invalid(f("peer"), "must be a node name"));
        }
        if !valid_name(&p.iface) {
            return Err(invalid(f("iface"), "must be a non-empty NIC name without '/' or spaces"));
        }
        for (k, a) in [("local_addr", &p.local_addr), ("peer_addr", &p.peer_addr)] {
            if a.is_empty() || a.len() > MAX_ADDR || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(f(k), "must be an address of at most 64 bytes without spaces"));
            }
        }
        if p.sent > MAX_SENT {
            return Err(invalid(f("sent"), format!("{} is more than the limit of {MAX_SENT}", p.sent)));
        }
        if p.received > p.sent {
            return Err(invalid(f("received"), format!("{} replies to {} probes", p.received, p.sent)));
        }
        for (k, v) in [("rtt_p50_us", p.rtt_p50_us), ("rtt_max_us", p.rtt_max_us)] {
            if v.is_some_and(|v| v > MAX_RTT_US) {
                return Err(invalid(f(k), format!("is more than {MAX_RTT_US} µs")));
            }
        }
        if let (Some(a), Some(b)) = (p.rtt_p50_us, p.rtt_max_us)
            && a > b
        {
            return Err(invalid(f("rtt_p50_us"), "is larger than rtt_max_us"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ProbeSample {
        ProbeSample {
            peer: "node-2".into(),
            iface: "mlx5_0".into(),
            local_addr: "10.0.0.1".into(),
            peer_addr: "10.0.0.2".into(),
            sent: 10,
            received: 9,
            rtt_p50_us: Some(40),
            rtt_max_us: Some(90),
        }
    }

    #[test]
    fn sane_samples_pass_and_loss_is_a_share() {
        assert!(validate_probes(&[ok()]).is_ok());
        assert_eq!(ok().loss(), Some(0.1));
        assert_eq!(ProbeSample { sent: 0, received: 0, ..ok() }.loss(), None);
    }

    #[test]
    fn impossible_samples_are_refused_with_the_field() {
        let e = validate_probes(&[ok(), ProbeSample { received: 11, ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[1].received");
        let e = validate_probes(&[ProbeSample { peer: "a:b".into(), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].peer");
        let e = validate_probes(&[ProbeSample { peer_addr: "".into(), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].peer_addr");
        let e = validate_probes(&[ProbeSample { rtt_p50_us: Some(100), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].rtt_p50_us");
        let e = validate_probes(&vec![ok(); MAX_PROBES + 1]).unwrap_err();
        assert_eq!(e.field(), "probes");
    }
}
