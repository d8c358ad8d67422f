//! The event queue: XIDs, ECC events and kernel lines arrive here from their watcher threads and go
//! out with the next report; an urgent event wakes the pusher at once. Bounded: it never blocks the
//! watcher, and counts what it had to drop.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use faultline_proto::Event;

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
