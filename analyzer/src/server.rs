//! The analyzer's HTTP server: report ingest (HTTP concerns only: auth, body limits, node caps and
//! rate limits; decoding, validation and the ledger are `ingest.rs`), the read API, `/metrics` and
//! `/healthz`. The tick that runs the engine and records what changed is `pipeline.rs`.
//!
//! **Architecture Invariant:** the engine sits behind one std `Mutex` and every critical section is
//! short: reports are decoded and validated before the lock is taken, and store writes happen after
//! it is released.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use faultline_proto::ReportError;
use serde::Serialize;
use tracing::{debug, error, warn};

use crate::api;
pub use crate::app::{AppState, StartError};
pub use crate::http_error::ApiError;
use crate::ingest::{self, Encoding};
use crate::metrics::IngestResult;
pub use crate::pipeline::{OutboxPlanner, TickReport};
pub(crate) use crate::sync::lock;

/// An oversized body up to this size is read and discarded before the 413 goes out, so a client
/// that writes its whole body before reading sees the answer; bigger ones get the connection cut.
/// Four times the default report limit: a client that far off is misconfigured, not a real agent.
const MAX_DRAIN_BYTES: usize = 4 * faultline_proto::report::limits::MAX_BODY_BYTES;

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
        .route("/api/v1/actions", get(crate::api_actions::list_actions))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/api/v1/reports", post(post_report).layer(DefaultBodyLimit::disable()))
        // Agents' probe peers (pingmesh): the handler checks the agent's token itself.
        .route("/api/v1/pinglist", get(crate::pinglist::get_pinglist))
        // Writes: the handlers check the token themselves.
        .route("/api/v1/actions/drain", post(crate::api_actions::post_drain))
        .route("/api/v1/actions/resume", post(crate::api_actions::post_resume))
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
    // Decode and validate, once, outside the engine lock. A delta names its node before it is
    // rebuilt: a token that may not push for that node learns nothing of the node's base (which seq
    // the analyzer holds).
    let decoded = if encoding == ingest::Encoding::Delta {
        let env = faultline_proto::wire::delta::envelope(&bytes).map_err(|e| decode_refusal(&e.into()))?;
        grant.allows(&env.node).map_err(|e| (IngestResult::Forbidden, ApiError::auth(&e)))?;
        ingest::decode_delta(env, bytes.len(), &st.bases)
    } else {
        ingest::decode_any(&bytes, encoding, &st.bases)
    };
    let mut decoded = decoded.map_err(|e| decode_refusal(&e))?;
    let node = decoded.report().node.clone();
    let compact = decoded.take_compact();
    st.metrics.ingest_encoding(encoding.as_str());
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
    // The applied report comes back in `applied` and is freed when this function returns, after
    // the locks are let go.
    let applied = {
        let mut engine = lock(&st.engine);
        let mut ledger = lock(&st.ledger);
        ingest::apply(&mut engine, &mut ledger, decoded, now_ms)
    };
    if let Some(ahead_ms) = applied.restamped_ahead_ms {
        st.metrics.limit_hit("future_timestamp", 1);
        debug!(node = %node, ahead_ms, "report stamped in the future; taken at arrival time");
    }
    if let Some(c) = compact
        && !applied.outcome.duplicate
    {
        // What this node's next delta patches (kept once the report is in, never for a refused one).
        st.bases.keep(&node, applied.outcome.seq, c);
    }
    st.metrics.report_age(applied.age_ms as f64 / 1000.0);
    st.metrics.report_applied();
    let outcome = applied.outcome;
    let result = if outcome.duplicate { IngestResult::Duplicate } else { IngestResult::Accepted };
    debug!(node = %outcome.node, seq = outcome.seq, duplicate = outcome.duplicate, bytes = applied.bytes, "report applied");
    Ok((Accepted { node: outcome.node, seq: outcome.seq, duplicate: outcome.duplicate }, result))
}

fn decode_refusal(e: &ingest::DecodeError) -> Refusal {
    use faultline_proto::wire::delta::DeltaError;
    match e {
        ingest::DecodeError::Report(r) => report_refusal(r),
        // The agent keeps the report and sends it in full: nothing in it is wrong.
        ingest::DecodeError::Delta(d @ (DeltaError::BaseMismatch { .. } | DeltaError::Corrupt { .. })) if !matches!(d, DeltaError::Corrupt { node, .. } if node.is_empty()) => {
            (IngestResult::DeltaBaseMismatch, ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        ingest::DecodeError::Delta(_) => (IngestResult::Malformed, ApiError::bad_request(e.to_string())),
    }
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
    let remediator = tokio::spawn(remediation_loop(state.clone(), tick_interval));
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

/// Runs a remediation round every `every` until the task is aborted.
async fn remediation_loop(state: Arc<AppState>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.remediation.round(&*st)).await {
            Ok(()) => debug!("remediation round"),
            Err(e) => error!(error = %e, "remediation round panicked; continuing"),
        }
    }
}
