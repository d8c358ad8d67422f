//! The progress store: the latest state per (job, rank), read by the jobs collector and `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use faultline_proto::{Event, EventSource, Progress, ProgressStatus, Severity};

use super::*;
use crate::events::EventQueue;

/// Most (job, rank) entries tracked. A node runs at most a few dozen ranks; 65,536 bounds memory to a
/// few tens of MiB even when a client posts garbage ids.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;
/// An entry with no post and no live process for this long is forgotten. One hour: far longer than any
/// checkpoint or evaluation pause, short enough that ids of finished jobs do not pile up.
pub const STALE_AFTER_MS: i64 = 60 * 60 * 1000;
/// An `exited` entry is kept this long after its last post (the same 5 minutes the jobs collector
/// keeps a vanished rank), so the analyzer sees the exit in several reports.
pub const EXITED_RETAIN_MS: i64 = 5 * 60 * 1000;
/// Weight of the newest sample in the step-time moving average. 0.2 averages over roughly the last
/// 5–10 steps: smooth enough to hide ±2% jitter, quick enough to show a slowdown within ~10 steps.
pub const STEP_TIME_EWMA_ALPHA: f64 = 0.2;
/// How long `nonfinite_loss` stays set after the last non-finite value: 60 s is several report
/// intervals (default 10 s), so no report in between can miss it.
pub const NONFINITE_HOLD_MS: i64 = 60 * 1000;

/// Unix time now, milliseconds (the agent's clock).
pub use faultline_proto::time::now_ms;

#[derive(Debug, Clone)]
struct Entry {
    step: u64,
    last_progress_ms: i64,
    last_post_ms: i64,
    /// Last time the jobs collector saw this rank's process alive.
    last_alive_ms: i64,
    step_time_ms: Option<f64>,
    step_time_avg_ms: Option<f64>,
    compute_ms: Option<f64>,
    loss: Option<f64>,
    grad_norm: Option<f64>,
    nonfinite_at_ms: Option<i64>,
    status: ProgressStatus,
    exit_code: Option<i32>,
}

impl Entry {
    fn progress(&self, now_ms: i64) -> Progress {
        Progress {
            step: self.step,
            last_progress_ms: self.last_progress_ms,
            step_time_ms: self.step_time_ms,
            step_time_avg_ms: self.step_time_avg_ms,
            compute_ms: self.compute_ms,
            loss: self.loss,
            loss_step: self.loss.map(|_| self.step),
            grad_norm: self.grad_norm,
            nonfinite_loss: self.nonfinite_at_ms.is_some_and(|t| now_ms - t < NONFINITE_HOLD_MS),
            status: self.status,
            exit_code: self.exit_code,
        }
    }

    fn expired(&self, now_ms: i64) -> bool {
        let seen = self.last_post_ms.max(self.last_alive_ms);
        let keep = if self.status == ProgressStatus::Exited { EXITED_RETAIN_MS } else { STALE_AFTER_MS };
        now_ms - seen > keep
    }
}

struct Inner {
    entries: HashMap<(String, u32), Entry>,
    max_entries: usize,
}

/// What a post brought that should not wait for the next report.
struct News {
    /// The rank's first non-finite loss or gradient norm (none latched before this post).
    nonfinite: bool,
    /// A posted non-zero exit code, not posted before.
    bad_exit: Option<i32>,
}

fn progress_event(now_ms: i64, class: faultline_proto::EventClass, message: String) -> Event {
    Event {
        ts_ms: now_ms,
        source: EventSource::Agent,
        class,
        severity: Severity::Warning,
        // The news concerns the rank, not a GPU: naming one would read as GPU evidence.
        component: None,
        count: 1,
        message,
        ..Default::default()
    }
}

/// Latest progress per (job, rank). Cheap to clone (an `Arc`), safe to share between the HTTP
/// handlers, the jobs collector and `/metrics`.
#[derive(Clone)]
pub struct ProgressStore {
    inner: Arc<Mutex<Inner>>,
    pub(super) accepted: Arc<AtomicU64>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) rejected: Arc<AtomicU64>,
    /// Where news that should not wait for the next interval goes (a rank's first non-finite loss, a
    /// posted non-zero exit); the jobs collector also wakes it when a rank's process exits.
    events: Option<Arc<EventQueue>>,
}

impl Default for ProgressStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProgressStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStore").field("entries", &self.len()).field("dropped", &self.dropped()).finish()
    }
}

impl ProgressStore {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_ENTRIES)
    }

    /// A store that tracks at most `max_entries` (job, rank) pairs.
    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner { entries: HashMap::new(), max_entries: max_entries.max(1) })),
            accepted: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
            events: None,
        }
    }

    /// Push an urgent event to `events` when a rank first posts a non-finite loss or gradient norm,
    /// or posts `exited` with a non-zero code, so the analyzer hears of it within a second instead of
    /// at the next report. Set before the store is cloned into the listeners and collectors.
    pub fn with_events(mut self, events: Arc<EventQueue>) -> Self {
        self.events = Some(events);
        self
    }

    /// The event queue given to [`ProgressStore::with_events`], if any.
    pub fn events(&self) -> Option<&Arc<EventQueue>> {
        self.events.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parse, validate and apply one post body at the current time.
    pub fn post_json(&self, body: &[u8]) -> Result<(), PostError> {
        self.post_json_at(body, now_ms())
    }

    /// Parse, validate and apply one post body as of `now_ms`.
    pub fn post_json_at(&self, body: &[u8], now_ms: i64) -> Result<(), PostError> {
        let res = ProgressPost::from_json(body).and_then(|p| self.apply(p, now_ms));
        match &res {
            Ok(()) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(PostError::Full(_)) => {}
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    /// Apply a validated post as of `now_ms`.
    pub fn apply(&self, p: ProgressPost, now_ms: i64) -> Result<(), PostError> {
        // The job name is only copied when someone listens for the news.
        let who = self.events.as_ref().map(|_| (p.job.clone(), p.rank, p.step));
        let news = self.apply_locked(p, now_ms)?;
        if let (Some(q), Some((job, rank, step))) = (&self.events, who) {
            if news.nonfinite {
                q.push(
                    progress_event(
                        now_ms,
                        faultline_proto::EventClass::NonfiniteLoss,
                        format!("rank {rank} of job {job} posted a non-finite loss or gradient norm at step {step}"),
                    ),
                    true,
                );
            }
            if let Some(c) = news.bad_exit {
                let how = if c < 0 { format!("was killed by signal {}", -c) } else { format!("exited with code {c}") };
                q.push(
                    progress_event(
                        now_ms,
                        faultline_proto::EventClass::RankExit,
                        format!("rank {rank} of job {job} {how} (posted)"),
                    ),
                    true,
                );
            }
        }
        Ok(())
    }

    /// Apply a post; says what news it carries (pushed by the caller after the lock is released).
    fn apply_locked(&self, p: ProgressPost, now_ms: i64) -> Result<News, PostError> {
        let mut inner = self.lock();
        let key = (p.job, p.rank);
        if !inner.entries.contains_key(&key) && inner.entries.len() >= inner.max_entries {
            inner.entries.retain(|_, e| !e.expired(now_ms));
            if inner.entries.len() >= inner.max_entries {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(PostError::Full(inner.max_entries));
            }
        }
        let e = inner.entries.entry(key).or_insert_with(|| Entry {
            step: p.step,
            last_progress_ms: now_ms,
            last_post_ms: now_ms,
            last_alive_ms: i64::MIN / 2,
            step_time_ms: None,
            step_time_avg_ms: None,
            compute_ms: None,
            loss: None,
            grad_norm: None,
            nonfinite_at_ms: None,
            status: p.status,
            exit_code: None,
        });
        // How long the step(s) since the previous post took, when the loop did not say.
        let derived = if p.step > e.step && e.status == ProgressStatus::Running && now_ms > e.last_progress_ms {
            Some((now_ms - e.last_progress_ms) as f64 / (p.step - e.step) as f64)
        } else {
            None
        };
        if p.step != e.step {
            let restarted = p.step < e.step;
            if restarted {
                e.step_time_avg_ms = None;
            }
            let sample = p.step_time_ms.or(if restarted { None } else { derived });
            if let Some(st) = sample {
                let st = st.min(MAX_DURATION_MS);
                e.step_time_ms = Some(st);
                e.step_time_avg_ms = Some(match e.step_time_avg_ms {
                    Some(avg) => avg + STEP_TIME_EWMA_ALPHA * (st - avg),
                    None => st,
                });
            }
            e.step = p.step;
            e.last_progress_ms = now_ms;
        } else if let Some(st) = p.step_time_ms {
            // First post of an entry, or a repeat of the same step that carries its time.
            e.step_time_ms = Some(st);
            e.step_time_avg_ms.get_or_insert(st);
        }
        if p.compute_ms.is_some() {
            e.compute_ms = p.compute_ms;
        }
        let was_latched = e.nonfinite_at_ms.is_some_and(|t| now_ms - t < NONFINITE_HOLD_MS);
        let was_exited = e.status == ProgressStatus::Exited;
        for (m, slot) in [(p.loss, &mut e.loss), (p.grad_norm, &mut e.grad_norm)] {
            match m {
                Some(Metric::Finite(v)) => *slot = Some(v),
                Some(Metric::NonFinite) => e.nonfinite_at_ms = Some(now_ms),
                None => {}
            }
        }
        let bad_exit = p.exit_code.filter(|&c| p.status == ProgressStatus::Exited && c != 0);
        let news = News {
            nonfinite: !was_latched && e.nonfinite_at_ms == Some(now_ms),
            bad_exit: bad_exit.filter(|_| !(was_exited && e.exit_code == bad_exit)),
        };
        e.status = p.status;
        e.exit_code = p.exit_code;
        e.last_post_ms = now_ms;
        Ok(news)
    }

    /// The progress of one rank as of `now_ms`.
    pub fn get(&self, job: &str, rank: u32, now_ms: i64) -> Option<Progress> {
        self.lock().entries.get(&(job.to_string(), rank)).map(|e| e.progress(now_ms))
    }

    /// Every tracked (job, rank) with its progress as of `now_ms`, sorted.
    pub fn snapshot(&self, now_ms: i64) -> Vec<(String, u32, Progress)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner.entries.iter().map(|((j, r), e)| (j.clone(), *r, e.progress(now_ms))).collect();
        drop(inner);
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// Mark ranks whose process the jobs collector saw alive at `now_ms`: their entries do not expire
    /// while the process lives, even when the loop stopped posting (a hang must stay visible).
    pub fn touch<'a>(&self, alive: impl IntoIterator<Item = (&'a str, u32)>, now_ms: i64) {
        let mut inner = self.lock();
        for (job, rank) in alive {
            if let Some(e) = inner.entries.get_mut(&(job.to_string(), rank)) {
                e.last_alive_ms = now_ms;
            }
        }
    }

    /// Forget stale entries (see the module docs). Returns how many were removed.
    pub fn expire(&self, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| !e.expired(now_ms));
        before - inner.entries.len()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Posts lost (monotonic): refused because the store was full, or datagrams the kernel dropped
    /// because the agent's receive buffer was full. `NodeReport.dropped.progress`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Posts stored (monotonic), over every transport.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Posts refused as invalid or too large (monotonic), over every transport.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}
