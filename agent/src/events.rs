//! The event queue: XIDs, ECC events and kernel lines arrive here from their watcher threads and go
//! out with the next report; an urgent event wakes the pusher at once. Bounded: it never blocks the
//! watcher, and counts what it had to drop. Floods are thinned before they reach it by the
//! `Coalescer`, which the kernel-log and NVML watchers both use.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faultline_proto::Event;

use crate::observe::{MAX_MESSAGE, truncate};

pub struct EventQueue {
    inner: Mutex<VecDeque<Event>>,
    cap: usize,
    dropped: AtomicU64,
    urgent: tokio::sync::Notify,
}

impl EventQueue {
    pub fn new(cap: usize) -> Self {
        Self { inner: Mutex::new(VecDeque::new()), cap, dropped: AtomicU64::new(0), urgent: tokio::sync::Notify::new() }
    }

    /// Queue an event. When full, the oldest is dropped and counted. `urgent` wakes the pusher so the
    /// analyzer has it within a second.
    pub fn push(&self, ev: Event, urgent: bool) {
        {
            let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= self.cap {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(ev);
        }
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Wake the pusher for an urgent report without queueing an event: a collector (a rank's process
    /// exit) has news that the next collection cycle will find and report itself.
    pub fn wake(&self) {
        self.urgent.notify_one();
    }

    /// Take every queued event.
    pub fn drain(&self) -> Vec<Event> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves when an urgent event was pushed.
    pub async fn urgent(&self) {
        self.urgent.notified().await
    }
}

/// Identical events (class, XID, component) within this window become one event with a count: one
/// default report interval, so a storm costs at most one extra event per interval.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(10);
type Key = (faultline_proto::EventClass, Option<u32>, Option<String>);

#[derive(Debug)]
struct Open {
    started: Instant,
    suppressed: u64,
    last: Option<Event>,
}

/// Rate limiter for event floods that never loses a count.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    open: HashMap<Key, Open>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::with_window(COALESCE_WINDOW)
    }
}

impl Coalescer {
    pub fn with_window(window: Duration) -> Self {
        Coalescer { window, open: HashMap::new() }
    }

    /// Offer an event. Returns what to send now: the event itself when it opens a window (plus the
    /// summary of an expired window of the same kind), nothing when it is a repeat being counted.
    pub fn offer(&mut self, ev: Event, now: Instant) -> Vec<Event> {
        let key: Key = (ev.class, ev.xid, ev.component.clone());
        let mut out = Vec::new();
        if let Some(o) = self.open.get_mut(&key) {
            if now.duration_since(o.started) < self.window {
                o.suppressed += ev.count.max(1);
                o.last = Some(ev);
                return out;
            }
            if let Some(summary) = Self::summary(o) {
                out.push(summary);
            }
        }
        self.open.insert(key, Open { started: now, suppressed: 0, last: None });
        out.push(ev);
        out
    }

    /// Summaries of windows that have ended with repeats in them. Call periodically.
    pub fn flush_due(&mut self, now: Instant) -> Vec<Event> {
        let window = self.window;
        let mut out = Vec::new();
        self.open.retain(|_, o| {
            if now.duration_since(o.started) < window {
                return true;
            }
            if let Some(s) = Self::summary(o) {
                out.push(s);
            }
            false
        });
        out
    }

    /// No window is open: nothing will come due until the next event.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty()
    }

    /// Everything still counted, at shutdown.
    pub fn flush_all(&mut self) -> Vec<Event> {
        let out = self.open.values_mut().filter_map(Self::summary).collect();
        self.open.clear();
        out
    }

    fn summary(o: &mut Open) -> Option<Event> {
        if o.suppressed == 0 {
            return None;
        }
        let mut ev = o.last.take()?;
        ev.count = o.suppressed;
        ev.message = truncate(&format!("{} more like this: {}", o.suppressed, ev.message), MAX_MESSAGE);
        o.suppressed = 0;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(class: &str, xid: Option<u32>, comp: &str) -> Event {
        Event {
            ts_ms: 1,
            class: faultline_proto::EventClass::parse(class).expect("a known event class"),
            xid,
            component: Some(comp.to_string()),
            count: 1,
            message: "m".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn a_storm_becomes_one_event_plus_one_count() {
        let mut c = Coalescer::with_window(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(c.is_idle(), "nothing can come due before the first event");
        assert_eq!(c.offer(ev("xid", Some(45), "gpu1"), t0).len(), 1);
        assert!(!c.is_idle(), "an open window has a summary to send when it ends");
        for i in 1..=500u64 {
            assert!(c.offer(ev("xid", Some(45), "gpu1"), t0 + Duration::from_millis(i)).is_empty());
        }
        // Another GPU or another code is not part of the storm.
        assert_eq!(c.offer(ev("xid", Some(45), "gpu2"), t0).len(), 1);
        assert_eq!(c.offer(ev("xid", Some(13), "gpu1"), t0).len(), 1);
        assert!(c.flush_due(t0 + Duration::from_secs(5)).is_empty());
        let out = c.flush_due(t0 + Duration::from_secs(11));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 500);
        assert!(c.is_idle(), "every window ended and was flushed");
        // The next one opens a fresh window.
        assert_eq!(c.offer(ev("xid", Some(45), "gpu1"), t0 + Duration::from_secs(12)).len(), 1);
    }

    #[test]
    fn counts_survive_a_late_repeat_and_shutdown() {
        let mut c = Coalescer::with_window(Duration::from_secs(1));
        let t0 = Instant::now();
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0);
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_millis(10));
        // Arrives after the window without a flush in between: summary plus the new one.
        let out = c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_secs(2));
        assert_eq!(out.iter().map(|e| e.count).sum::<u64>(), 2);
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_millis(2100));
        assert_eq!(c.flush_all().iter().map(|e| e.count).sum::<u64>(), 1);
    }
}
