//! The analyzer's shared state (`AppState`): the engine, the ingest ledger, the store, the open
//! incidents, and the settings the handlers read. Handlers, the tick and remediation reach the
//! locked parts through the methods here, which take the locks in the one order (engine, then
//! ledger; the store and the open map alone) and release them before returning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::HeaderMap;
use faultline_proto::api::{ComponentView, NodeSummary};
use faultline_proto::remediation::ActionRecord;
use faultline_proto::{ComponentId, Incident, TopologyFile};
use tracing::info;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::{Analyzer, IncidentChange};
use crate::http_error::ApiError;
use crate::ingest::NodeLedger;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::remediate::validate::NodeFacts;
use crate::store::{Store, StoreError};
use crate::sync::{lock, read, write};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything the handlers and the tick share.
pub struct AppState {
    pub(crate) engine: Mutex<Analyzer>,
    /// Ingest bookkeeping per node (seq gaps, duplicates). Lock order: engine, then ledger.
    pub(crate) ledger: Mutex<NodeLedger>,
    pub(crate) store: Mutex<Store>,
    /// Open incidents as last recorded, for metrics and summaries without a database read.
    pub(crate) open: RwLock<BTreeMap<String, Incident>>,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// Every accepted token, by kind (`auth.rs`).
    pub auth: Auth,
    /// Per-node ingest rate limit.
    pub rate: RateLimiter,
    pub topology: TopologyFile,
    pub max_body_bytes: usize,
    pub list_limit: usize,
    pub heartbeat_intervals: f64,
    pub started_s: f64,
    pub(crate) planner: Option<Arc<dyn OutboxPlanner>>,
    /// Drains and resumes through the scheduler (`remediate`); its own task runs the rounds.
    pub remediation: crate::remediate::Remediation,
    /// Changes the store has not accepted yet; retried on the next tick.
    pub(crate) pending: Mutex<Vec<IncidentChange>>,
    /// Node, component and connection caps (`limits.rs`).
    pub limits: crate::limits::Limits,
    /// The last store write error, while writes keep failing (None once one succeeds).
    pub(crate) store_failure: Mutex<Option<String>>,
    /// Per node, the compact bytes of its last accepted report: what its next delta patches.
    pub(crate) bases: crate::ingest::Bases,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.auth)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens the store, restores the open incidents into a fresh engine, and logs how long that took.
    pub fn open(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        planner: Option<Arc<dyn OutboxPlanner>>,
    ) -> Result<Arc<Self>, StartError> {
        let t0 = Instant::now();
        let store = Store::open_checked(&settings.db, settings.allow_empty_store)?;
        Self::with_store(settings, store, clock, planner, t0)
    }

    /// Like `open`, with a store the caller opened (an in-memory one in tests).
    pub fn with_store(
        settings: &Settings,
        store: Store,
        clock: Arc<dyn Clock>,
        planner: Option<Arc<dyn OutboxPlanner>>,
        t0: Instant,
    ) -> Result<Arc<Self>, StartError> {
        let open = store.load_open()?;
        let next_id = store.next_incident_id()?;
        let counts = store.counts()?;
        let mut engine = Analyzer::new(settings.engine.clone(), settings.topology.clone());
        let open_map: BTreeMap<String, Incident> = open.iter().map(|i| (i.id.clone(), i.clone())).collect();
        // The engine numbers new incidents after the highest id used (`inc-{last + 1}`); the store
        // says which number comes next.
        engine.restore(open, next_id.saturating_sub(1));
        info!(
            db = %settings.db.display(),
            incidents = counts.incidents,
            open = open_map.len(),
            outbox_pending = counts.outbox_pending,
            next_id,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "store loaded; open incidents continue"
        );
        let started_s = clock.now_s();
        let remediation = crate::remediate::Remediation::new(&settings.remediation);
        remediation.restore(&store, started_s)?;
        Ok(Arc::new(Self {
            engine: Mutex::new(engine),
            ledger: Mutex::new(NodeLedger::default()),
            store: Mutex::new(store),
            open: RwLock::new(open_map),
            metrics: Metrics::new(settings.metrics_max_components),
            clock,
            auth: settings.auth.clone(),
            rate: RateLimiter::new(settings.node_rate_per_s, settings.node_rate_burst),
            topology: settings.topology.clone(),
            max_body_bytes: settings.max_body_bytes,
            list_limit: settings.list_limit,
            heartbeat_intervals: settings.engine.heartbeat_intervals,
            started_s,
            planner,
            remediation,
            pending: Mutex::new(Vec::new()),
            limits: crate::limits::Limits::new(&settings.limits, &settings.topology),
            store_failure: Mutex::new(None),
            bases: crate::ingest::Bases::default(),
        }))
    }

    /// Checks that a request may change things (the write actions): the shared token only.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.auth.check_admin(headers).map_err(|e| ApiError::auth(&e))
    }

    /// Checks that a request may read the API: a read token or the shared one.
    pub fn authorize_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.auth.check_read(headers).map_err(|e| ApiError::auth(&e))
    }
}

pub use crate::store::OutboxPlanner;

/// The locked parts, each behind a method that takes its lock, runs the caller's closure and lets
/// go. The order when two are held is fixed here: the engine, then the ledger. No method holds the
/// store or the open map together with anything else, and a closure must not call back into these.
impl AppState {
    /// Runs `f` on the engine.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Analyzer) -> R) -> R {
        f(&mut lock(&self.engine))
    }

    /// Runs `f` on the ingest ledger.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&mut NodeLedger) -> R) -> R {
        f(&mut lock(&self.ledger))
    }

    /// Runs `f` on the engine and the ledger, locked in that order (the only order both are held in).
    pub fn with_engine_and_ledger<R>(&self, f: impl FnOnce(&mut Analyzer, &mut NodeLedger) -> R) -> R {
        let mut engine = lock(&self.engine);
        let mut ledger = lock(&self.ledger);
        f(&mut engine, &mut ledger)
    }

    /// Runs `f` on the store (SQLite: blocking I/O, so call it off the async threads).
    pub fn with_db<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut lock(&self.store))
    }

    /// Runs `f` on the open incidents as last recorded, by id.
    pub fn with_open<R>(&self, f: impl FnOnce(&BTreeMap<String, Incident>) -> R) -> R {
        f(&read(&self.open))
    }

    /// A copy of the open incidents as last recorded.
    pub fn open_incidents(&self) -> Vec<Incident> {
        self.with_open(|open| open.values().cloned().collect())
    }

    /// Keeps the open map current with an incident's latest state: in it while open, out once not.
    pub fn note_incident(&self, inc: &Incident) {
        let mut open = write(&self.open);
        if inc.status == faultline_proto::IncidentStatus::Open {
            open.insert(inc.id.clone(), inc.clone());
        } else {
            open.remove(&inc.id);
        }
    }

    /// The notification planner, when notifications are configured (remediation pages through it).
    pub fn outbox_planner(&self) -> Option<&Arc<dyn OutboxPlanner>> {
        self.planner.as_ref()
    }

    /// Replaces the engine and the ledger with ones that already ran (the demo feeds a simulated
    /// cluster in-process before it serves).
    pub fn replace_engine(&self, engine: Analyzer, ledger: NodeLedger) {
        self.with_engine_and_ledger(|e, l| {
            *e = engine;
            *l = ledger;
        });
    }
}

/// The notification workers' narrow handle on the analyzer: each method takes the one lock it needs.
impl crate::notify::Host for AppState {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut lock(&self.store))
    }
    fn open_incidents(&self, keep: &dyn Fn(&Incident) -> bool) -> Vec<Incident> {
        read(&self.open).values().filter(|i| keep(i)).cloned().collect()
    }
}

/// Remediation's narrow handle on the analyzer: each method takes the one lock it needs.
impl crate::remediate::Host for AppState {
    fn now_s(&self) -> f64 {
        self.clock.now_s()
    }
    fn open_incidents(&self) -> Vec<Incident> {
        AppState::open_incidents(self)
    }
    fn open_incident(&self, id: &str) -> Option<Incident> {
        self.with_open(|open| open.get(id).cloned())
    }
    fn open_ids(&self) -> BTreeSet<String> {
        self.with_open(|open| open.keys().cloned().collect())
    }
    fn node_summaries(&self) -> Vec<NodeSummary> {
        self.with_engine(|e| e.nodes())
    }
    fn node_facts(&self, node: &str) -> Option<NodeFacts> {
        self.with_engine(|e| e.node_state(node).map(|n| NodeFacts::from_state(n, |nic| e.expected_rate(node, nic))))
    }
    fn component(&self, id: &ComponentId) -> Option<ComponentView> {
        self.with_engine(|e| e.component(id))
    }
    fn reported_nodes(&self) -> BTreeSet<String> {
        self.with_ledger(|l| l.iter().map(|(n, _)| n.clone()).collect())
    }
    fn topology(&self) -> &TopologyFile {
        &self.topology
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn record_action(&self, rec: &ActionRecord) -> Result<(), StoreError> {
        self.with_db(|s| s.record_action(rec)).map(|_| ())
    }
    fn actions_recent(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        self.with_db(|s| s.actions_recent(limit))
    }
    fn page(&self, change: &IncidentChange, now_s: f64) -> Option<Result<(), StoreError>> {
        let rows = self.planner.as_ref()?.plan(change, now_s);
        if rows.is_empty() {
            return Some(Ok(()));
        }
        Some(self.with_db(|s| s.record(&[], &rows, now_s)))
    }
}
