//! NIC detectors: link down (carrier, operstate, IB state), flapping, physical-layer error rates
//! (symbol errors, receive errors, link integrity), link trained below its rating or its peers, and
//! congestion (transmit wait, ECN/CNP, retransmits) against the port's own recent baseline.
//! Leaf-level judgement (how many NICs of one leaf suffer) is the localizer's.

use faultline_proto::{ComponentId, FaultClass};

use super::{SOFT_SAMPLES, Symptom, SymptomKind as K};
use crate::state::{Counter, NicState};

/// Link-down transitions within this window that make a flap: two downs in five minutes is not a
/// cable pulled once (that stays down) nor a switch reboot (one down, one up).
pub const FLAP_WINDOW_MS: i64 = 300_000;
pub const FLAP_MIN_DOWNS: usize = 2;
/// A link that went down and came back stays a symptom this long: long enough to open an incident
/// and to see whether it goes down again (a flap), short enough to resolve a one-off bounce.
pub const LINK_BOUNCE_HOLD_MS: i64 = 60_000;
/// Physical-layer errors (symbol, receive, link integrity) summed over the last `SOFT_SAMPLES` deltas,
/// every delta increasing, that make a bad cable. Healthy ports tick once now and then (the H100
/// sample in our reference data has a few on healthy ports), which this rules out.
pub const NIC_ERR_MIN: u64 = 10;
/// Physical-layer error counters.
pub const ERROR_COUNTERS: &[&str] = &["symbol_error", "port_rcv_errors", "local_link_integrity_errors"];
/// Congestion and retransmit counters, judged against the port's own baseline.
pub const CONGESTION_COUNTERS: &[&str] =
    &["port_xmit_wait", "np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled"];
pub const RETRANSMIT_COUNTERS: &[&str] =
    &["out_of_sequence", "packet_seq_err", "roce_adp_retrans", "local_ack_timeout_err"];
/// A congestion counter whose every recent delta exceeds this multiple of its own median baseline
/// (plus `CONGESTION_FLOOR`) is elevated. Congested leaves in the catalog multiply transmit wait
/// several-fold; normal load varies by tens of percent.
pub const CONGESTION_FACTOR: f64 = 2.0;
/// Minimum increase per sample for a congestion counter to count at all (absolute noise floor).
pub const CONGESTION_FLOOR: f64 = 50.0;
/// Baseline deltas needed before congestion is judged.
pub const BASELINE_MIN: usize = 3;
/// A link rate below this fraction of its rating or of the node's best peer is degraded
/// (400 → 200 Gb/s is 0.5; ordinary readings are exact).
pub const SPEED_LOW_FRACTION: f64 = 0.8;
/// Rate samples in a row that must be low.
pub const SPEED_SAMPLES: usize = 2;

/// What the node's other NICs look like.
#[derive(Debug, Clone, Default)]
pub struct NicPeers {
    /// Highest current rate among the node's other NICs of the same link layer, Gb/s.
    pub best_rate: Option<f64>,
}

/// Whether a counter is elevated against its own baseline: returns (recent min delta, baseline).
pub fn elevated(c: &Counter) -> Option<(f64, f64)> {
    let n = c.deltas.len();
    let observed = c.observed();
    if observed < SOFT_SAMPLES + BASELINE_MIN || n < SOFT_SAMPLES {
        return None;
    }
    // Deltas not stored were zeros before the counter first moved.
    let mut base: Vec<f64> = std::iter::repeat_n(0.0, observed - n)
        .chain(c.deltas.iter().take(n - SOFT_SAMPLES).map(|x| x.1 as f64))
        .collect();
    let b = super::median(&mut base)?;
    let recent_min = c.last_n(SOFT_SAMPLES).min()? as f64;
    (recent_min > CONGESTION_FACTOR * b + CONGESTION_FLOOR).then_some((recent_min, b))
}

/// Check one NIC. Pure: reads `n`, appends to `out`.
pub fn check(host: &str, name: &str, n: &NicState, peers: &NicPeers, now: i64, out: &mut Vec<Symptom>) {
    let id = ComponentId::nic(host, name);
    let downs = n.downs.iter().filter(|t| **t > now - FLAP_WINDOW_MS).count();
    let downed_deltas = n.counter("link_downed").map(|c| c.increases_since(now - FLAP_WINDOW_MS)).unwrap_or(0);
    let carrier = n.carrier_changes.sum_since(now - FLAP_WINDOW_MS);
    let flapping = downs >= FLAP_MIN_DOWNS || downed_deltas >= FLAP_MIN_DOWNS || carrier >= 2 * FLAP_MIN_DOWNS as u64;
    if let Some(t) = n.down_since {
        let class = if flapping { FaultClass::NicFlap } else { FaultClass::NicDown };
        let state = n.state_word.clone().unwrap_or("down".into());
        out.push(
            Symptom::new(id.clone(), K::NicDown, t, format!("{id} link is down (state {state})"))
                .class(class)
                .critical(),
        );
    } else if let Some(t) = n.downs.back().copied().filter(|t| *t > now - LINK_BOUNCE_HOLD_MS && !flapping) {
        // Down and back up within seconds (a report may never have seen it down): still a fault of
        // this NIC for a while, so the incident opens and a flap can grow out of it.
        out.push(
            Symptom::new(id.clone(), K::NicDown, t, format!("{id} link went down and came back up"))
                .class(FaultClass::NicDown)
                .critical(),
        );
    } else if flapping {
        let onset = n.downs.iter().find(|t| **t > now - FLAP_WINDOW_MS).copied().unwrap_or(now);
        out.push(
            Symptom::new(
                id.clone(),
                K::NicFlap,
                onset,
                format!(
                    "{id} link went down {} times in 5 minutes ({carrier} carrier changes)",
                    downs.max(downed_deltas)
                ),
            )
            .class(FaultClass::NicFlap)
            .critical(),
        );
    }
    // Physical-layer errors rising every sample.
    let mut per_sample = [0u64; SOFT_SAMPLES];
    let mut have = 0usize;
    for name in ERROR_COUNTERS {
        if let Some(c) = n.counter(name) {
            let v: Vec<u64> = c.last_n(SOFT_SAMPLES).collect();
            if v.len() == SOFT_SAMPLES {
                have += 1;
                for (i, d) in v.iter().enumerate() {
                    per_sample[i] += d;
                }
            }
        }
    }
    let total: u64 = per_sample.iter().sum();
    if have > 0 && per_sample.iter().all(|d| *d > 0) && total >= NIC_ERR_MIN {
        let onset = n
            .counter(ERROR_COUNTERS[0])
            .and_then(|c| c.deltas.iter().rev().nth(SOFT_SAMPLES - 1).map(|x| x.0))
            .unwrap_or(now);
        let retrans: u64 =
            RETRANSMIT_COUNTERS.iter().filter_map(|c| n.counter(c)).map(|c| c.last_n(SOFT_SAMPLES).sum::<u64>()).sum();
        out.push(
            Symptom::new(
                id.clone(),
                K::NicErrors,
                onset,
                format!("{id} counted {total} symbol/receive/integrity errors and {retrans} retransmits over the last {SOFT_SAMPLES} samples"),
            )
            .class(FaultClass::CableBitErrors)
            .value(total as f64),
        );
    }
    // Trained below rating or below its peers.
    if n.down_since.is_none() && n.rates.len() >= SPEED_SAMPLES {
        let max = n.max_rate_gbps;
        let reference = match (max, peers.best_rate) {
            (Some(m), Some(p)) => Some(m.max(p)),
            (a, b) => a.or(b),
        };
        if let Some(r) = reference.filter(|r| *r > 0.0) {
            let recent: Vec<f64> = n.rates.iter().rev().take(SPEED_SAMPLES).map(|x| x.1).collect();
            if recent.iter().all(|x| *x < SPEED_LOW_FRACTION * r) {
                let onset = n.rates.iter().rev().nth(SPEED_SAMPLES - 1).map(|x| x.0).unwrap_or(now);
                out.push(
                    Symptom::new(
                        id.clone(),
                        K::NicSpeedLow,
                        onset,
                        format!(
                            "{id} link runs at {:.0} Gb/s, below the {r:.0} Gb/s it or its peers run at",
                            recent[0]
                        ),
                    )
                    .class(FaultClass::NicSpeedDegraded)
                    .value(recent[0]),
                );
            }
        }
    }
    // Congestion against its own baseline: evidence for a leaf-level verdict.
    for name in CONGESTION_COUNTERS.iter().chain(RETRANSMIT_COUNTERS) {
        if let Some((recent, base)) = n.counter(name).and_then(elevated) {
            let onset = n.counter(name).and_then(|c| c.deltas.iter().rev().nth(SOFT_SAMPLES - 1).map(|x| x.0));
            out.push(
                Symptom::new(
                    id.clone(),
                    K::NicCongested,
                    onset.unwrap_or(now),
                    format!("{id} {name} rises {recent:.0} per sample against a baseline of {base:.0}"),
                )
                .class(FaultClass::LeafCongestion)
                .value(recent),
            );
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn with_counter(name: &'static str, values: &[u64]) -> NicState {
        let mut n = NicState::default();
        let c = n.counters.entry(name).or_default();
        for (i, v) in values.iter().enumerate() {
            c.update(NOW - (values.len() - i) as i64 * 10_000, *v);
        }
        n
    }

    fn check_case(name: &str, n: NicState, peers: NicPeers, want: &[(K, Option<FaultClass>)]) {
        let mut out = Vec::new();
        check("h", "mlx5_0", &n, &peers, NOW, &mut out);
        let got: Vec<_> = out.iter().map(|s| (s.kind, s.class)).collect();
        assert_eq!(got, want, "case {name}: {out:?}");
    }

    #[test]
    fn nic_detector_table() {
        use FaultClass::*;
        check_case("healthy", NicState::default(), NicPeers::default(), &[]);
        check_case(
            "down",
            NicState { down_since: Some(NOW - 1000), downs: [NOW - 1000].into(), ..Default::default() },
            NicPeers::default(),
            &[(K::NicDown, Some(NicDown))],
        );
        check_case(
            "down twice in 5 min is a flap",
            NicState { down_since: Some(NOW - 1000), downs: [NOW - 60_000, NOW - 1000].into(), ..Default::default() },
            NicPeers::default(),
            &[(K::NicDown, Some(NicFlap))],
        );
        check_case(
            "up again after two downs",
            with_counter("link_downed", &[3, 4, 4, 5, 5]),
            NicPeers::default(),
            &[(K::NicFlap, Some(NicFlap))],
        );
        check_case("one link_downed is no flap", with_counter("link_downed", &[3, 4, 4, 4]), NicPeers::default(), &[]);
        check_case(
            "symbol errors rising",
            with_counter("symbol_error", &[100, 110, 125, 140]),
            NicPeers::default(),
            &[(K::NicErrors, Some(CableBitErrors))],
        );
        check_case(
            "single symbol error tick",
            with_counter("symbol_error", &[100, 100, 101, 101]),
            NicPeers::default(),
            &[],
        );
        check_case(
            "three single ticks are too few",
            with_counter("symbol_error", &[100, 101, 102, 103]),
            NicPeers::default(),
            &[],
        );
        let mut slow = NicState::default();
        slow.rates = [(NOW - 20_000, 200.0), (NOW - 10_000, 200.0)].into();
        slow.max_rate_gbps = Some(400.0);
        check_case("rate below rating", slow, NicPeers::default(), &[(K::NicSpeedLow, Some(NicSpeedDegraded))]);
        let mut peer = NicState::default();
        peer.rates = [(NOW - 20_000, 200.0), (NOW - 10_000, 200.0)].into();
        check_case(
            "rate below peers",
            peer.clone(),
            NicPeers { best_rate: Some(400.0) },
            &[(K::NicSpeedLow, Some(NicSpeedDegraded))],
        );
        check_case("rate like peers", peer, NicPeers { best_rate: Some(200.0) }, &[]);
        check_case(
            "xmit wait several-fold its baseline",
            with_counter("port_xmit_wait", &[0, 1000, 2000, 3000, 4000, 9000, 14000, 19000]),
            NicPeers::default(),
            &[(K::NicCongested, Some(LeafCongestion))],
        );
        check_case(
            "ECN marks from a zero baseline",
            with_counter("np_ecn_marked_roce_packets", &[0, 0, 0, 0, 0, 0, 30000, 60000, 90000]),
            NicPeers::default(),
            &[(K::NicCongested, Some(LeafCongestion))],
        );
        check_case(
            "xmit wait at its usual rate",
            with_counter("port_xmit_wait", &[0, 1000, 2000, 3000, 4000, 5100, 6100, 7000]),
            NicPeers::default(),
            &[],
        );
    }
}
