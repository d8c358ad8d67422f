//! What happens after ingest: the engine's tick, recording each incident change in the store with
//! the notifications it plans (the outbox), in one transaction, and holding changes in memory while
//! the store refuses writes. `server.rs` runs `tick_loop` beside the HTTP listener; the HTTP layer
//! itself only receives reports (through `ingest.rs`) and serves reads.
//!
//! **Architecture Invariant:** the engine lock is held for the tick only; store writes happen after
//! it is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::{Incident, IncidentStatus};
use tracing::{debug, error, info, warn};

use crate::app::AppState;
pub use crate::app::OutboxPlanner;
use crate::engine::IncidentChange;
use crate::store::{NewOutbox, StoreError};
use crate::sync::lock;

/// Most incident changes kept in memory while the store refuses writes (disk full, I/O error).
/// Incident changes are rare (a handful per fault), so this covers hours of a broken disk.
const MAX_PENDING_CHANGES: usize = 10_000;

/// A tick that holds the engine longer than this is logged with where its time went: every report
/// that arrives meanwhile waits for it, so a slow tick shows up as report age.
const SLOW_TICK: Duration = Duration::from_millis(500);

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickReport {
    pub changes: usize,
    /// Changes still waiting for the store after this tick (0 when all is written).
    pub pending: usize,
}

impl AppState {
    /// Runs the engine once at the clock's time and records every change (with its notifications)
    /// in one transaction. If the store refuses, the changes wait in memory for the next tick.
    pub fn tick_once(&self) -> TickReport {
        let t0 = Instant::now();
        let report = self.tick_inner();
        self.metrics.tick(t0.elapsed().as_secs_f64());
        self.metrics.tick_finished(self.clock.now_ms());
        report
    }

    fn tick_inner(&self) -> TickReport {
        let now_ms = self.clock.now_ms();
        let span_start = crate::otel::enabled().then(crate::otel::now_ns);
        self.metrics.tick_started();
        let t_lock = Instant::now();
        let mut engine = lock(&self.engine);
        let waited = t_lock.elapsed();
        let t_run = Instant::now();
        let changes = engine.tick(now_ms);
        let ran = t_run.elapsed();
        drop(engine);
        let n = changes.len();
        if waited + ran > SLOW_TICK {
            warn!(
                waited_for_engine_ms = waited.as_millis() as u64,
                engine_tick_ms = ran.as_millis() as u64,
                changes = n,
                "slow tick: reports arriving meanwhile wait for it"
            );
        }
        if n > 0 {
            let mut counts = crate::otel::TickCounts::default();
            let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
            for c in &changes {
                match c {
                    IncidentChange::Opened(_) => counts.opened += 1,
                    IncidentChange::Updated(_) => counts.updated += 1,
                    IncidentChange::Resolved(_) => counts.resolved += 1,
                }
                if let (IncidentChange::Opened(i), Some(_)) = (c, span_start) {
                    if !counts.roots.is_empty() {
                        counts.roots.push(',');
                    }
                    counts.roots.push_str(&i.root.to_string());
                }
                match c {
                    IncidentChange::Opened(i) => {
                        self.metrics.incident_opened(i);
                        info!(incident = %i.id, root = %i.root, class = %i.class, confidence = i.confidence, "incident opened");
                    }
                    IncidentChange::Updated(i) => debug!(incident = %i.id, "incident updated"),
                    IncidentChange::Resolved(i) => info!(incident = %i.id, root = %i.root, "incident resolved"),
                }
                let inc = change_incident(c);
                if inc.status == IncidentStatus::Open && !matches!(c, IncidentChange::Resolved(_)) {
                    open.insert(inc.id.clone(), inc.clone());
                } else {
                    open.remove(&inc.id);
                }
            }
            if let Some(start) = span_start {
                counts.open_after = open.len() as u64;
                crate::otel::diagnosis_span(start, &counts);
            }
        }
        let mut pending = lock(&self.pending);
        pending.extend(changes);
        if pending.is_empty() {
            return TickReport::default();
        }
        if let Err(e) = self.record_pending(&mut pending, now_ms as f64 / 1000.0) {
            if pending.len() > MAX_PENDING_CHANGES {
                let drop_n = pending.len() - MAX_PENDING_CHANGES;
                pending.drain(..drop_n);
                error!(dropped = drop_n, "store unavailable too long; oldest unrecorded incident changes dropped");
            }
            error!(error = %e, pending = pending.len(), "cannot record incident changes; retrying next tick");
        }
        TickReport { changes: n, pending: pending.len() }
    }

    /// Why the store is failing, while incident changes wait in memory for it (disk full, I/O
    /// error). Readers then serve open incidents from memory and `/healthz` answers 503.
    pub fn store_failing(&self) -> Option<String> {
        let failure = lock(&self.store_failure).clone();
        match failure {
            Some(f) => Some(f),
            // `try_lock`: the tick holds `pending` while it writes, and a read must never wait on
            // a slow disk; a write in progress is not a failure.
            None => match self.pending.try_lock() {
                Ok(p) if !p.is_empty() => Some("incident changes are waiting to be written".into()),
                _ => None,
            },
        }
    }

    /// Record `pending` with the outbox rows the planner makes of it: cleared and the store marked
    /// healthy on success; on failure counted, the store marked failing, and `pending` kept.
    fn record_pending(&self, pending: &mut Vec<IncidentChange>, now_s: f64) -> Result<(), StoreError> {
        let outbox: Vec<NewOutbox> = match &self.planner {
            Some(p) => pending.iter().flat_map(|c| p.plan(c, now_s)).collect(),
            None => Vec::new(),
        };
        let recorded = lock(&self.store).record(pending, &outbox, now_s);
        match &recorded {
            Ok(()) => {
                pending.clear();
                self.store_ok();
            }
            Err(e) => {
                self.metrics.store_error();
                self.store_failed(e);
            }
        }
        recorded
    }

    fn store_failed(&self, e: &StoreError) {
        let mut f = lock(&self.store_failure);
        if f.is_none() {
            error!(error = %e, "STORE FAILING: incident changes are kept in memory and served from there until it recovers");
        }
        *f = Some(e.to_string());
        self.metrics.store_failing(true);
    }

    fn store_ok(&self) {
        if lock(&self.store_failure).take().is_some() {
            info!("store writes succeed again");
        }
        self.metrics.store_failing(false);
    }
}

fn change_incident(c: &IncidentChange) -> &Incident {
    match c {
        IncidentChange::Opened(i) | IncidentChange::Updated(i) | IncidentChange::Resolved(i) => i,
    }
}

impl AppState {
    /// Retries recording pending changes without ticking; returns how many are still pending.
    pub fn flush_pending(&self) -> usize {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return 0;
        }
        if let Err(e) = self.record_pending(&mut pending, self.clock.now_s()) {
            error!(error = %e, "cannot record incident changes");
        }
        pending.len()
    }
}

pub async fn tick_loop(state: Arc<AppState>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.tick_once()).await {
            Ok(r) if r.changes > 0 => debug!(changes = r.changes, pending = r.pending, "tick"),
            Ok(_) => {}
            Err(e) => error!(error = %e, "engine tick panicked; continuing"),
        }
    }
}
