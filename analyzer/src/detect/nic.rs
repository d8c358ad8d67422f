//! NIC detectors: link down (carrier, operstate, IB state), flapping, physical-layer error rates
//! (symbol errors, receive errors, link integrity), link trained below its rating or its peers, and
//! congestion (transmit wait, ECN/CNP, retransmits) against the port's own recent baseline.
//! Leaf-level judgement (how many NICs of one leaf suffer) is the localizer's.
//!
//! Only fabric NICs that were seen up at least once are judged: a management NIC, `docker0`, `veth*`,
//! `ifb*` or a port down since boot says nothing about training traffic. A counter stuck at its
//! maximum gives no deltas (unknown: never a burst, never proof of health); the component view notes
//! it (`Analyzer::component`), without a symptom that would keep the node under watch forever.

use faultline_proto::{ComponentId, FaultClass};

use super::{SOFT_SAMPLES, Symptom, SymptomKind as K};
use crate::state::{CongestionPoint, NicState, nic_counter_at};

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
/// Where `ERROR_COUNTERS` and `link_downed` sit in the node state's counters (`NIC_COUNTERS`),
/// worked out at compile time: the detector runs on every report of every fabric NIC.
const ERROR_COUNTERS_AT: [usize; 3] =
    [nic_counter_at(ERROR_COUNTERS[0]), nic_counter_at(ERROR_COUNTERS[1]), nic_counter_at(ERROR_COUNTERS[2])];
const LINK_DOWNED_AT: usize = nic_counter_at("link_downed");
pub const RETRANSMIT_COUNTERS: &[&str] =
    &["out_of_sequence", "packet_seq_err", "roce_adp_retrans", "local_ack_timeout_err"];
/// A congestion counter whose every recent delta exceeds this multiple of its own median baseline
/// (plus `CONGESTION_FLOOR`) is elevated. Congested leaves in the catalog multiply transmit wait
/// several-fold; normal load varies by tens of percent.
pub const CONGESTION_FACTOR: f64 = 2.0;
/// ECN/CNP marks per sample below this never count (absolute noise floor).
pub const CONGESTION_FLOOR: f64 = 50.0;
/// A port whose newest busy sample is older than this is idle now and judged on nothing.
pub const BUSY_RECENT_MS: i64 = 35_000;
/// Baseline deltas needed before congestion is judged.
pub const BASELINE_MIN: usize = 3;
/// A link rate below this fraction of the rate it should train at is degraded (400 → 200 Gb/s is
/// 0.5; ordinary readings are exact).
pub const SPEED_LOW_FRACTION: f64 = 0.8;
/// Rate samples in a row that must be low.
pub const SPEED_SAMPLES: usize = 2;

/// Driver-level kernel lines (mlx5 health, command timeouts, NETDEV WATCHDOG, IB completion errors)
/// on one port within this window are noted as supporting evidence.
pub const DRIVER_EVENT_HOLD_MS: i64 = super::EVENT_HOLD_MS;

/// What the NIC is judged against.
#[derive(Debug, Clone, Default)]
pub struct NicPeers {
    /// The rate it should train at, Gb/s: the topology file's or the config's, else the fleet's
    /// majority among fabric NICs. `None`: nothing to judge speed against.
    pub expected_rate: Option<f64>,
}

/// Check one NIC. Pure: reads `n`, appends to `out`.
pub fn check(host: &str, name: &str, n: &NicState, peers: &NicPeers, now: i64, out: &mut Vec<Symptom>) {
    if !n.fabric || !n.ever_up {
        return;
    }
    let id = ComponentId::nic(host, name);
    let downs = n.downs.iter().filter(|t| **t > now - FLAP_WINDOW_MS).count();
    let downed_deltas = n.counter_at(LINK_DOWNED_AT).map(|c| c.increases_since(now - FLAP_WINDOW_MS)).unwrap_or(0);
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
    for at in ERROR_COUNTERS_AT {
        if let Some(c) = n.counter_at(at)
            && c.deltas.len() >= SOFT_SAMPLES
        {
            have += 1;
            for (i, d) in c.last_n(SOFT_SAMPLES).enumerate() {
                per_sample[i] += d;
            }
        }
    }
    let total: u64 = per_sample.iter().sum();
    if have > 0 && per_sample.iter().all(|d| *d > 0) && total >= NIC_ERR_MIN {
        let onset = n
            .counter_at(ERROR_COUNTERS_AT[0])
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
        if let Some(r) = peers.expected_rate.filter(|r| *r > 0.0) {
            let recent: Vec<f64> = n.rates.iter().rev().take(SPEED_SAMPLES).map(|x| x.1).collect();
            if recent.iter().all(|x| *x < SPEED_LOW_FRACTION * r) {
                let onset = n.rates.iter().rev().nth(SPEED_SAMPLES - 1).map(|x| x.0).unwrap_or(now);
                out.push(
                    Symptom::new(
                        id.clone(),
                        K::NicSpeedLow,
                        onset,
                        format!("{id} link runs at {:.0} Gb/s, below the {r:.0} Gb/s it should train at", recent[0]),
                    )
                    .class(FaultClass::NicSpeedDegraded)
                    .value(recent[0]),
                );
            }
        }
    }
    let recent: Vec<&(i64, faultline_proto::EventClass)> =
        n.driver_events.iter().filter(|(t, _)| *t > now - DRIVER_EVENT_HOLD_MS).collect();
    if let Some((t, _)) = recent.first() {
        let mut classes: Vec<&str> = recent.iter().map(|(_, c)| c.as_str()).collect();
        classes.dedup();
        out.push(Symptom::new(
            id.clone(),
            K::NicDriver,
            *t,
            format!("{id} driver trouble in the kernel log: {} ({} lines)", classes.join(", "), recent.len()),
        ));
    }
    // Congestion against its own baseline, per byte sent: evidence for a leaf-level verdict.
    if let Some((what, recent, base)) = congested(&n.congestion, now) {
        let onset = n.congestion.iter().rev().nth(SOFT_SAMPLES - 1).map(|p| p.ts).unwrap_or(now);
        out.push(
            Symptom::new(
                id.clone(),
                K::NicCongested,
                onset,
                format!("{id} {what} is {recent:.1} per MB sent against a baseline of {base:.1}"),
            )
            .class(FaultClass::LeafCongestion)
            .value(recent),
        );
    }
}

/// A busy port's congestion signals are up against its own busy baseline: the last `SOFT_SAMPLES`
/// busy samples (the newest no older than `BUSY_RECENT_MS`) all above `CONGESTION_FACTOR` × the median
/// of the earlier ones. Returns (signal, recent minimum, baseline).
pub fn congested(c: &std::collections::VecDeque<CongestionPoint>, now: i64) -> Option<(&'static str, f64, f64)> {
    let n = c.len();
    if n < SOFT_SAMPLES + BASELINE_MIN || c.back().is_none_or(|p| p.ts < now - BUSY_RECENT_MS) {
        return None;
    }
    let recent: Vec<&CongestionPoint> = c.iter().skip(n - SOFT_SAMPLES).collect();
    let base = |f: fn(&CongestionPoint) -> f64| {
        let mut v: Vec<f64> = c.iter().take(n - SOFT_SAMPLES).map(f).collect();
        super::median(&mut v).unwrap_or(0.0)
    };
    // Transmit wait only where it is known in every recent sample and in enough of the baseline (a
    // saturated counter gives none).
    let mut wait_earlier: Vec<f64> = c.iter().take(n - SOFT_SAMPLES).filter_map(|p| p.wait_per_mb).collect();
    let wait_recent: Option<Vec<f64>> = recent.iter().map(|p| p.wait_per_mb).collect();
    if let Some(wait_recent) = wait_recent.filter(|_| wait_earlier.len() >= BASELINE_MIN) {
        let wait_base = super::median(&mut wait_earlier).unwrap_or(0.0);
        let wait_min = wait_recent.iter().copied().fold(f64::INFINITY, f64::min);
        if wait_min > CONGESTION_FACTOR * wait_base && wait_min > 0.0 && wait_base > 0.0 {
            return Some(("port_xmit_wait", wait_min, wait_base));
        }
    }
    let marks_base = base(|p| p.marks_per_mb);
    let marks_min = recent.iter().map(|p| p.marks_per_mb).fold(f64::INFINITY, f64::min);
    let marks_abs = recent.iter().map(|p| p.marks).min().unwrap_or(0);
    if marks_abs as f64 >= CONGESTION_FLOOR && marks_min > CONGESTION_FACTOR * marks_base {
        return Some(("ECN/CNP marks", marks_min, marks_base));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn up() -> NicState {
        NicState { fabric: true, ever_up: true, ..Default::default() }
    }

    fn with_counter(name: &'static str, values: &[u64]) -> NicState {
        let mut n = up();
        let c = n.counters.at(name).expect("a counter the detectors read");
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
        check_case("healthy", up(), NicPeers::default(), &[]);
        check_case(
            "down",
            NicState { down_since: Some(NOW - 1000), downs: [NOW - 1000].into(), ..up() },
            NicPeers::default(),
            &[(K::NicDown, Some(NicDown))],
        );
        check_case(
            "down twice in 5 min is a flap",
            NicState { down_since: Some(NOW - 1000), downs: [NOW - 60_000, NOW - 1000].into(), ..up() },
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
        let mut slow = up();
        slow.rates = [(NOW - 20_000, 200.0), (NOW - 10_000, 200.0)].into();
        slow.max_rate_gbps = Some(400.0);
        check_case("a rating sysfs never gives is not needed nor used", slow.clone(), NicPeers::default(), &[]);
        check_case(
            "rate below the expected rate",
            slow.clone(),
            NicPeers { expected_rate: Some(400.0) },
            &[(K::NicSpeedLow, Some(NicSpeedDegraded))],
        );
        check_case("rate as expected", slow, NicPeers { expected_rate: Some(200.0) }, &[]);
        let busy = |wait: &[f64], marks: &[u64]| NicState {
            fabric: true,
            ever_up: true,
            congestion: wait
                .iter()
                .zip(marks)
                .enumerate()
                .map(|(i, (w, m))| CongestionPoint {
                    ts: NOW - (wait.len() - i) as i64 * 10_000,
                    wait_per_mb: (*w >= 0.0).then_some(*w),
                    marks: *m,
                    marks_per_mb: *m as f64 / 220_000.0,
                })
                .collect(),
            ..Default::default()
        };
        check_case(
            "xmit wait per byte several-fold its baseline",
            busy(&[1.0, 1.1, 0.9, 1.0, 30.0, 28.0, 31.0], &[0; 7]),
            NicPeers::default(),
            &[(K::NicCongested, Some(LeafCongestion))],
        );
        check_case(
            "ECN marks from a zero baseline",
            busy(&[1.0; 7], &[0, 0, 0, 0, 30000, 30000, 30000]),
            NicPeers::default(),
            &[(K::NicCongested, Some(LeafCongestion))],
        );
        check_case(
            "xmit wait per byte as usual",
            busy(&[1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 1.1], &[0; 7]),
            NicPeers::default(),
            &[],
        );
        // -1: `port_xmit_wait` saturated in that sample (unknown).
        check_case(
            "ECN marks rise while the wait counter sits at its maximum",
            busy(&[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0], &[0, 0, 0, 0, 30000, 30000, 30000]),
            NicPeers::default(),
            &[(K::NicCongested, Some(LeafCongestion))],
        );
        check_case(
            "a wait counter that saturated is no rise",
            busy(&[1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 30.0], &[0; 7]),
            NicPeers::default(),
            &[],
        );
        let mut idle = busy(&[1.0, 1.1, 0.9, 1.0, 30.0, 28.0, 31.0], &[0; 7]);
        for p in idle.congestion.iter_mut() {
            p.ts -= 60_000;
        }
        check_case("a port idle now is not judged", idle, NicPeers::default(), &[]);
    }

    #[test]
    fn only_fabric_ports_seen_up_are_judged() {
        let down = || NicState { down_since: Some(NOW - 1000), downs: [NOW - 1000].into(), ..up() };
        check_case("fabric, was up", down(), NicPeers::default(), &[(K::NicDown, Some(FaultClass::NicDown))]);
        check_case("management or virtual NIC", NicState { fabric: false, ..down() }, NicPeers::default(), &[]);
        check_case("never seen up", NicState { ever_up: false, ..down() }, NicPeers::default(), &[]);
    }

    /// The state a series of samples leaves, through the real ingest path.
    fn ingest(samples: &[faultline_proto::NicSample]) -> NicState {
        let mut st = crate::state::State::default();
        for (i, n) in samples.iter().enumerate() {
            let mut r = faultline_proto::NodeReport::empty("h");
            r.seq = i as u64 + 1;
            r.timestamp_ms = NOW - (samples.len() - i) as i64 * 10_000;
            r.nics = vec![n.clone()];
            st.apply(&r, r.timestamp_ms);
        }
        st.nodes["h"].nics["mlx5_0"].clone()
    }

    fn sample(operstate: &str, symbol_error: u64) -> faultline_proto::NicSample {
        faultline_proto::NicSample {
            name: "mlx5_0".into(),
            operstate: Some(operstate.into()),
            counters: [("symbol_error".into(), symbol_error)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_port_down_since_boot_is_silence_and_a_saturated_counter_is_unknown() {
        let never = ingest(&[sample("down", 0), sample("down", 0), sample("down", 0)]);
        assert!(!never.ever_up && never.down_since.is_none());
        check_case("down since boot", never, NicPeers::default(), &[]);
        let fell = ingest(&[sample("up", 0), sample("down", 0)]);
        check_case("up, then down", fell, NicPeers::default(), &[(K::NicDown, Some(FaultClass::NicDown))]);
        // symbol_error is 16 bits: at 65535 it stops; from there on no delta is a burst or health.
        let stuck = ingest(&[sample("up", 65_000), sample("up", 65_535), sample("up", 65_535), sample("up", 65_535)]);
        assert!(stuck.counter("symbol_error").unwrap().saturated);
        assert_eq!(stuck.saturated, ["symbol_error"]);
        check_case("saturated: no burst, noted on the component view", stuck, NicPeers::default(), &[]);
        // The agent's own flag says the same.
        let mut flagged = sample("up", 10);
        flagged.saturated = vec!["symbol_error".into()];
        let st = ingest(&[sample("up", 5), flagged.clone(), flagged]);
        assert!(st.counter("symbol_error").unwrap().deltas.is_empty());
        assert_eq!(st.saturated, ["symbol_error"]);
    }
}
