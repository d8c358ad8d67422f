//! The analyzer's HTTP server: report ingest (HTTP concerns only: auth, body limits, node caps and
//! rate limits; decoding, validation and the ledger are `ingest.rs`), the read API, `/metrics` and
//! `/healthz`. The tick that runs the engine and records what changed is `pipeline.rs`.
//!
//! **Architecture Invariant:** the engine sits behind one std `Mutex` and every critical section is
//! short: reports are decoded and validated before the lock is taken, and store writes happen after
//! it is released.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use faultline_proto::{Incident, ReportError, TopologyFile};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::api;
use crate::auth::{Auth, AuthError};
use crate::clock::Clock;
use crate::config::Settings;
use crate::engine::{Analyzer, IncidentChange};
use crate::ingest::{self, Encoding, NodeLedger};
use crate::metrics::{IngestResult, Metrics};
pub use crate::pipeline::{OutboxPlanner, TickReport};
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};

/// An oversized body up to this size is read and discarded before the 413 goes out, so a client
/// that writes its whole body before reading sees the answer; bigger ones get the connection cut.
/// Four times the default report limit: a client that far off is misconfigured, not a real agent.
const MAX_DRAIN_BYTES: usize = 4 * faultline_proto::report::limits::MAX_BODY_BYTES;

/// A JSON error answer: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (seconds) with a 429.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_s: None }
    }
    /// 401 for a missing or unknown token, 403 for a known token used for something it may not do.
    pub fn auth(e: &AuthError) -> Self {
        let status = if e.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        Self::new(status, e.to_string())
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(ErrorBody { error: &self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store read failed");
        Self::internal(format!("store: {e}"))
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything the handlers and the tick share.
pub struct AppState {
    pub engine: Mutex<Analyzer>,
    /// Ingest bookkeeping per node (seq gaps, duplicates). Lock order: engine, then ledger.
    pub ledger: Mutex<NodeLedger>,
    pub store: Mutex<Store>,
    /// Open incidents as last recorded, for metrics and summaries without a database read.
    pub open: RwLock<BTreeMap<String, Incident>>,
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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.auth)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, carrying on with the data if a previous holder panicked: the state is plain data
/// and a half-finished update is better than a dead server.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// The whole HTTP app.
pub fn router(state: Arc<AppState>) -> Router {
    let read = Router::new()
        .route("/api/v1/nodes", get(api::list_nodes))
        .route("/api/v1/incidents", get(api::list_incidents))
        .route("/api/v1/incidents/{id}", get(api::get_incident))
        .route("/api/v1/components/{*id}", get(api::get_component))
        .route("/api/v1/jobs", get(api::list_jobs))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .route("/api/v1/topology", get(api::topology))
        .route("/api/v1/summary", get(api::summary))
        .route("/api/v1/actions", get(crate::remediate::http::list_actions))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/api/v1/reports", post(post_report).layer(DefaultBodyLimit::disable()))
        // Writes: the handlers check the token themselves.
        .route("/api/v1/actions/drain", post(crate::remediate::http::post_drain))
        .route("/api/v1/actions/resume", post(crate::remediate::http::post_resume))
        .merge(read)
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(healthz))
        .fallback(|req: Request| async move {
            ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn(crate::conn::json_errors))
        .with_state(state)
}

/// `GET /healthz`: `ok`, or 503 with a JSON body naming what is failing (the store).
async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.store_failing() {
        None => "ok".into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "degraded", "store": format!("failing: {why}") })),
        )
            .into_response(),
    }
}

async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match st.authorize_read(req.headers()) {
        Ok(()) => {
            let mut resp = next.run(req).await;
            // Every read answer says when the store is failing, so no client mistakes what it
            // got for the whole truth (the CLI warns and exits 3).
            if let Some(why) = st.store_failing() {
                let clean: String =
                    why.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { ' ' }).collect();
                if let Ok(v) = HeaderValue::from_str(&format!("failing: {clean}")) {
                    resp.headers_mut().insert(crate::api::STORE_HEADER, v);
                }
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct Accepted {
    node: String,
    seq: u64,
    duplicate: bool,
}

/// `POST /api/v1/reports`.
async fn post_report(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let t0 = Instant::now();
    let span_start = crate::otel::enabled().then(crate::otel::now_ns);
    let declared_bytes =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let (result, resp) = match ingest(&st, &headers, body).await {
        Ok((accepted, result)) => {
            if let Some(start) = span_start {
                crate::otel::ingest_span(
                    start,
                    Some(&accepted.node),
                    Some(accepted.seq),
                    declared_bytes,
                    result.as_str(),
                );
            }
            (result, (StatusCode::OK, axum::Json(accepted)).into_response())
        }
        Err((result, e)) => {
            debug!(status = e.status.as_u16(), error = %e.message, "report refused");
            if let Some(start) = span_start {
                crate::otel::ingest_span(start, None, None, declared_bytes, result.as_str());
            }
            (result, e.into_response())
        }
    };
    st.metrics.ingest_result(result);
    st.metrics.ingest_duration(t0.elapsed().as_secs_f64());
    resp
}

type Refusal = (IngestResult, ApiError);

async fn ingest(st: &AppState, headers: &HeaderMap, body: Body) -> Result<(Accepted, IngestResult), Refusal> {
    let grant = st.auth.check_ingest(headers).map_err(|e| {
        let result = if e.is_forbidden() { IngestResult::Forbidden } else { IngestResult::Unauthorized };
        (result, ApiError::auth(&e))
    })?;
    let encoding = check_content_type(headers).map_err(|e| (IngestResult::UnsupportedMediaType, e))?;
    let too_large = |n: String| {
        (
            IngestResult::TooLarge,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("report body is {n} bytes, more than the limit of {} bytes", st.max_body_bytes),
            ),
        )
    };
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared
        && len > st.max_body_bytes as u64
        && len > MAX_DRAIN_BYTES as u64
    {
        // Too big to be worth draining: answer at once and let the connection drop.
        return Err(too_large(len.to_string()));
    }
    let body_timeout = st.limits.cfg.body_timeout;
    let read = tokio::time::timeout(body_timeout, read_limited(body, st.max_body_bytes)).await;
    let read = read.unwrap_or_else(|_| {
        Err(ReadError::Io(format!("the body did not arrive within {} s (limits.body_timeout)", body_timeout.as_secs())))
    });
    let bytes = match read {
        Ok(b) => b,
        Err(ReadError::TooLarge(seen)) => {
            return Err(too_large(declared.map(|d| d.to_string()).unwrap_or_else(|| format!("at least {seen}"))));
        }
        Err(ReadError::Io(e)) => {
            return Err((
                IngestResult::Malformed,
                ApiError::bad_request(format!("could not read the request body: {e}")),
            ));
        }
    };
    st.metrics.ingest_bytes(bytes.len());
    if bytes.is_empty() {
        return Err((IngestResult::Malformed, ApiError::bad_request("empty body: expected one NodeReport")));
    }
    // Decode and validate, once, outside the engine lock.
    let mut decoded = ingest::decode(&bytes, encoding).map_err(|e| report_refusal(&e))?;
    let node = decoded.report().node.clone();
    grant.allows(&node).map_err(|e| (IngestResult::Forbidden, ApiError::auth(&e)))?;
    let now_ms = st.clock.now_ms();
    match st.limits.admit(decoded.report_mut()) {
        Ok(t) if t.components > 0 => {
            st.metrics.limit_hit("components_per_node", t.components as u64);
            if st.limits.should_log() {
                warn!(node = %node, dropped = t.components, max = st.limits.cfg.max_components_per_node, "node names more components than limits.max_components_per_node; new names dropped");
            }
        }
        Ok(_) => {}
        Err(why) => {
            st.metrics.limit_hit(
                match why {
                    crate::limits::NodeRefusal::NotAllowed => "allowed_nodes",
                    crate::limits::NodeRefusal::TooManyNodes { .. } => "max_nodes",
                },
                1,
            );
            if st.limits.should_log() {
                warn!(node = %node, reason = %why, "report refused: node not admitted (logged at the 1st, 2nd, 4th… time)");
            }
            return Err((
                IngestResult::Forbidden,
                ApiError::new(StatusCode::FORBIDDEN, format!("node {node:?} {why}")),
            ));
        }
    }
    if let Err(wait_s) = st.rate.check(&node, now_ms) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "node {node:?} is over its rate limit ({} reports/s, burst {}); retry in {wait_s} s",
                st.rate.rate_per_s(),
                st.rate.burst()
            ),
        );
        e.retry_after_s = Some(wait_s);
        return Err((IngestResult::RateLimited, e));
    }
    let applied = {
        let mut engine = lock(&st.engine);
        let mut ledger = lock(&st.ledger);
        ingest::apply(&mut engine, &mut ledger, decoded, now_ms)
    };
    if let Some(ahead_ms) = applied.restamped_ahead_ms {
        st.metrics.limit_hit("future_timestamp", 1);
        debug!(node = %node, ahead_ms, "report stamped in the future; taken at arrival time");
    }
    st.metrics.report_age(applied.age_ms as f64 / 1000.0);
    st.metrics.report_applied();
    let outcome = applied.outcome;
    let result = if outcome.duplicate { IngestResult::Duplicate } else { IngestResult::Accepted };
    debug!(node = %outcome.node, seq = outcome.seq, duplicate = outcome.duplicate, bytes = applied.bytes, "report applied");
    Ok((Accepted { node: outcome.node, seq: outcome.seq, duplicate: outcome.duplicate }, result))
}

fn report_refusal(e: &ReportError) -> Refusal {
    match e {
        ReportError::Decode { .. } => (IngestResult::Malformed, ApiError::bad_request(e.to_string())),
        ReportError::Invalid { .. } => {
            (IngestResult::Invalid, ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
        }
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let v = match headers.get(CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type is not readable text"))?,
        ),
    };
    Encoding::from_content_type(v).map_err(|m| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m))
}

enum ReadError {
    /// Over the limit; how many bytes were seen before giving up.
    TooLarge(usize),
    Io(String),
}

/// Reads a body frame by frame, keeping at most `limit` bytes. Past the limit the rest is read and
/// thrown away (up to `MAX_DRAIN_BYTES`) so that the client, still sending, reads our 413 instead of
/// a reset connection.
async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| ReadError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                buf = Vec::new();
                if seen > MAX_DRAIN_BYTES {
                    return Err(ReadError::TooLarge(seen));
                }
            } else {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > limit { Err(ReadError::TooLarge(seen)) } else { Ok(buf) }
}

/// Whether the metrics request asks for OpenMetrics.
pub(crate) fn accept_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(ACCEPT).and_then(|v| v.to_str().ok())
}

/// Serves on `listener` (plain TCP, or `tls::TlsListener`) until `shutdown` resolves, ticking the
/// engine every `tick_interval`.
pub async fn serve<L>(
    listener: L,
    state: Arc<AppState>,
    tick_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let ticker = tokio::spawn(crate::pipeline::tick_loop(state.clone(), tick_interval));
    let remediator = tokio::spawn(crate::remediate::runner::run_loop(state.clone(), tick_interval));
    let limits = state.limits.cfg.clone();
    let result = crate::conn::serve(listener, router(state.clone()), &limits, shutdown).await;
    ticker.abort();
    remediator.abort();
    // Give unrecorded changes one last chance to reach the store.
    let st = state.clone();
    let left = tokio::task::spawn_blocking(move || st.flush_pending()).await.unwrap_or(0);
    if left > 0 {
        warn!(pending = left, "shutting down with incident changes the store did not accept");
    }
    result
}
