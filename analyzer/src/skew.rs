//! Agent clock skew: how far a node's report timestamps sit from the analyzer's clock at arrival.
//!
//! The engine never trusts report time for liveness (heartbeats use the analyzer's receive time),
//! but detectors line up evidence by report time, so a node whose clock is off is named: a field in
//! `/api/v1/nodes`, a metric, and a log line when it starts and stops.
//!
//! The estimate is the largest `timestamp − arrival` among recent reports that arrived at the
//! agent's own pace. A spool replay (reports arriving back to back) is left out, and any report that
//! waited somewhere only makes `timestamp − arrival` smaller, so the largest one is the clock offset
//! plus the shortest delivery delay.

use std::collections::VecDeque;

/// Above this many milliseconds either way a node's clock is called skewed. NTP or chrony keep
/// servers within milliseconds of each other, and a report crosses a cluster network in well under a
/// second, so 5 s is far outside both; it is also five of the engine's one-second ticks, enough to
/// misorder evidence across nodes.
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// Recent paced reports kept per node.
const WINDOW: usize = 16;

/// Paced reports needed before there is an estimate (one stale report after an outage must not be
/// mistaken for a clock running behind).
const MIN_SAMPLES: usize = 3;

/// One node's clock-offset estimate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockSkew {
    samples: VecDeque<i64>,
    last_arrival_ms: Option<i64>,
    skewed: bool,
}

impl ClockSkew {
    /// Accounts for one report taken at `timestamp_ms` (agent clock) that arrived at `arrival_ms`
    /// (analyzer clock) from an agent reporting every `interval_ms`. Returns `Some(now_skewed)` when
    /// the verdict changed.
    pub fn observe(&mut self, timestamp_ms: i64, arrival_ms: i64, interval_ms: u64) -> Option<bool> {
        let paced = self
            .last_arrival_ms
            .is_none_or(|last| arrival_ms.saturating_sub(last) >= i64::try_from(interval_ms / 2).unwrap_or(i64::MAX));
        self.last_arrival_ms = Some(self.last_arrival_ms.map_or(arrival_ms, |l| l.max(arrival_ms)));
        if !paced {
            return None;
        }
        self.samples.push_back(timestamp_ms.saturating_sub(arrival_ms));
        while self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        let now = self.estimate_ms().is_some_and(|s| s.saturating_abs() > MAX_CLOCK_SKEW_MS);
        (now != self.skewed).then(|| {
            self.skewed = now;
            now
        })
    }

    /// Agent clock minus analyzer clock, milliseconds (positive: the agent runs ahead). `None`
    /// until enough reports arrived at the agent's pace.
    pub fn estimate_ms(&self) -> Option<i64> {
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        self.samples.iter().copied().max()
    }

    /// The clock is off by more than `MAX_CLOCK_SKEW_MS`.
    pub fn skewed(&self) -> bool {
        self.skewed
    }
}

/// How far ahead of the analyzer's clock a report may be stamped and still be taken at its own
/// time. Beyond this the report is taken at arrival time: a node whose clock was an hour ahead at
/// boot (a wrong RTC, corrected by NTP a moment later) would otherwise make every later, correctly
/// stamped report look older than the last one, and the engine would file them as history until
/// the wall clock caught up. Equal to `MAX_CLOCK_SKEW_MS`: anything inside it is ordinary skew.
pub const MAX_FUTURE_MS: i64 = MAX_CLOCK_SKEW_MS;

/// Re-stamps a report taken more than `MAX_FUTURE_MS` ahead of `now_ms` at `now_ms`, shifting its
/// events by the same amount (and clamping any event still ahead to `now_ms`). Returns how far
/// ahead it was. The clock-skew estimate is made from the original stamp, before this.
pub fn restamp_future(r: &mut faultline_proto::NodeReport, now_ms: i64) -> Option<i64> {
    let ahead = r.timestamp_ms.saturating_sub(now_ms);
    let shift = if ahead > MAX_FUTURE_MS {
        r.timestamp_ms = now_ms;
        ahead
    } else {
        0
    };
    let mut clamped = false;
    for e in &mut r.events {
        e.ts_ms = e.ts_ms.saturating_sub(shift).max(1);
        if e.ts_ms.saturating_sub(now_ms) > MAX_FUTURE_MS {
            e.ts_ms = now_ms;
            clamped = true;
        }
    }
    (shift > 0 || clamped).then_some(ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports every `interval` ms from an agent whose clock is `offset` ms off, each delivered
    /// after `delay` ms.
    fn feed(c: &mut ClockSkew, n: usize, start: i64, interval: i64, offset: i64, delay: i64) -> Vec<Option<bool>> {
        (0..n)
            .map(|i| {
                let taken = start + i as i64 * interval;
                c.observe(taken + offset, taken + delay, interval as u64)
            })
            .collect()
    }

    #[test]
    fn a_good_clock_is_not_skewed() {
        let mut c = ClockSkew::default();
        feed(&mut c, 20, 1_000_000, 10_000, 0, 3);
        assert_eq!(c.estimate_ms(), Some(-3));
        assert!(!c.skewed());
    }

    #[test]
    fn clocks_ahead_and_behind_are_named_once() {
        let mut c = ClockSkew::default();
        let flips = feed(&mut c, 5, 0, 1_000, 60_000, 5);
        assert_eq!(flips, [None, None, Some(true), None, None], "named at the third report");
        assert_eq!(c.estimate_ms(), Some(59_995));
        let mut c = ClockSkew::default();
        feed(&mut c, 5, 0, 1_000, -30_000, 5);
        assert!(c.skewed());
        assert_eq!(c.estimate_ms(), Some(-30_005));
        // Fixed (NTP stepped the clock): the window forgets the old offset and the flag clears.
        let flips = feed(&mut c, 20, 10_000, 1_000, 0, 5);
        assert!(flips.contains(&Some(false)));
        assert!(!c.skewed());
    }

    #[test]
    fn a_spool_replay_is_not_mistaken_for_a_slow_clock() {
        let mut c = ClockSkew::default();
        feed(&mut c, 5, 0, 10_000, 0, 5);
        // An hour-long outage, then 300 old reports arrive 2 ms apart, then live ones again.
        let back = 3_600_000;
        for i in 0..300 {
            assert_eq!(c.observe(40_000 + i * 10_000, back + i * 2, 10_000), None);
        }
        feed(&mut c, 5, back + 10_000, 10_000, 0, 5);
        assert!(!c.skewed(), "{:?}", c.estimate_ms());
    }

    #[test]
    fn a_report_from_the_future_is_taken_at_arrival_with_its_events() {
        let mut r = faultline_proto::NodeReport::empty("n1");
        r.timestamp_ms = 1_000 + 3_600_000;
        r.events.push(faultline_proto::Event::new(
            900 + 3_600_000,
            Default::default(),
            faultline_proto::EventClass::Xid,
        ));
        r.events.push(faultline_proto::Event::new(i64::MAX, Default::default(), faultline_proto::EventClass::Xid));
        assert_eq!(restamp_future(&mut r, 1_000), Some(3_600_000));
        assert_eq!(r.timestamp_ms, 1_000);
        assert_eq!(r.events[0].ts_ms, 900);
        assert_eq!(r.events[1].ts_ms, 1_000, "an event still in the future is clamped");
        let mut ok = faultline_proto::NodeReport::empty("n1");
        ok.timestamp_ms = 1_000 + MAX_FUTURE_MS;
        assert_eq!(restamp_future(&mut ok, 1_000), None);
        assert_eq!(ok.timestamp_ms, 1_000 + MAX_FUTURE_MS);
    }
}
