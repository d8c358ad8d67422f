//! The read side of the HTTP API (nodes, incidents, components, jobs, topology, summary, metrics)
//! with the per-node ingest ledger (`ingest.rs`) behind `GET /api/v1/nodes`.
//!
//! Lists are JSON arrays of the `proto::api` view types (plus a few ledger fields on nodes); errors
//! are `{"error": "..."}`. Incidents are read from the store, so resolved incidents from before a
//! restart are still served.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use faultline_proto::api::{
    ComponentView, HealthRow, JobView, NodeEntry, NodeSummary, Summary, SwitchView, TopologyView,
};
use faultline_proto::{ComponentId, ComponentKind, Incident, IncidentStatus, rfc3339};
use serde::Serialize;

use crate::app::AppState;
use crate::http_error::{ApiError, accept_header};
pub use crate::ingest::{Arrival, NodeLedger, NodeRecord, ReportMeta, skewed_nodes};
use crate::metrics::{Snapshot, wants_openmetrics};
use crate::store::IncidentQuery;

fn json_error(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query string: {}", e.body_text()))
}

/// `GET /api/v1/nodes`
pub async fn list_nodes(State(st): State<Arc<AppState>>) -> Response {
    let now_ms = st.clock.now_ms();
    let engine_nodes: BTreeMap<String, NodeSummary> =
        st.with_engine(|e| e.nodes()).into_iter().map(|n| (n.node.clone(), n)).collect();
    let open_roots = open_root_hosts(&st);
    let out: Vec<NodeEntry> = st.with_ledger(|ledger| {
        ledger
            .iter()
            .map(|(name, rec)| {
                let last_seen_s = rec.last_report_ms as f64 / 1000.0;
                let summary = match engine_nodes.get(name) {
                    Some(s) => NodeSummary { last_seq: rec.last_seq, reports: rec.reports, ..s.clone() },
                    None => NodeSummary {
                        node: name.clone(),
                        last_seen_s,
                        last_seq: rec.last_seq,
                        reports: rec.reports,
                        gpus: rec.gpus,
                        gpus_faulty: 0,
                        nics: rec.nics,
                        healthy: !open_roots.contains(name.as_str()),
                        shutdown: rec.shutdown,
                    },
                };
                let reporting = rec.alive(now_ms, st.heartbeat_intervals);
                NodeEntry {
                    last_seen_at: rfc3339(summary.last_seen_s),
                    summary,
                    last_heard_s: rec.last_heard_ms as f64 / 1000.0,
                    gaps: rec.gaps,
                    seqs_missing: rec.seqs_missing,
                    duplicates: rec.duplicates,
                    late: rec.late,
                    interval_ms: rec.interval_ms,
                    agent_version: rec.agent_version.clone(),
                    reporting: Some(reporting),
                    bytes: rec.bytes,
                    clock_skew_s: rec.clock.estimate_ms().map(|ms| ms as f64 / 1000.0),
                    clock_skewed: rec.clock.skewed(),
                }
            })
            .collect()
    });
    Json(out).into_response()
}

/// Hosts with an open incident rooted on them or on something of theirs.
fn open_root_hosts(st: &AppState) -> BTreeSet<String> {
    st.with_open(|open| open.values().filter_map(|i| i.root.host().map(str::to_string)).collect())
}

/// `GET /api/v1/incidents?status=open|resolved|all&since=<RFC 3339 or Unix s>&limit=N`
pub async fn list_incidents(
    State(st): State<Arc<AppState>>,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = q.map_err(json_error)?;
    let mut query = IncidentQuery { status: None, since_s: None, limit: st.list_limit };
    for (k, v) in &params {
        match k.as_str() {
            "status" => {
                query.status = match v.as_str() {
                    "open" => Some(IncidentStatus::Open),
                    "resolved" => Some(IncidentStatus::Resolved),
                    "all" | "" => None,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "status={other:?} is not one of open, resolved, all"
                        )));
                    }
                }
            }
            "since" => {
                query.since_s = Some(parse_since(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "since={v:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor Unix seconds"
                    ))
                })?);
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::bad_request(format!("limit={v:?} is not a positive whole number")))?;
                query.limit = n.min(st.list_limit);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (known: status, since, limit)"
                )));
            }
        }
    }
    let st2 = st.clone();
    let q2 = query.clone();
    let listed = tokio::task::spawn_blocking(move || st2.with_db(|s| s.list_skipping(&q2)))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?;
    let failing = st.store_failing();
    let (mut list, skipped) = match listed {
        Ok(v) => v,
        // The store cannot even be read: what is open is still known in memory.
        Err(e) if query.status != Some(IncidentStatus::Resolved) => {
            tracing::error!(error = %e, "store read failed; serving open incidents from memory");
            (Vec::new(), Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    if query.status != Some(IncidentStatus::Resolved) {
        // Open incidents the store has not recorded (it lags: disk full, I/O errors) come from
        // memory; while it is failing memory's copy wins for the others too, since it is newer.
        st.with_open(|open| {
            if failing.is_some() {
                list.retain(|i| !open.contains_key(&i.id));
            }
            let have: BTreeSet<String> = list.iter().map(|i| i.id.clone()).collect();
            list.extend(open.values().filter(|i| !have.contains(&i.id)).cloned());
        });
        list.sort_by(|a, b| a.opened_s.total_cmp(&b.opened_s).then_with(|| a.id.cmp(&b.id)));
        if list.len() > query.limit {
            list.drain(..list.len() - query.limit);
        }
    }
    if !skipped.is_empty() {
        st.metrics.store_rows_skipped(skipped.len() as u64);
    }
    let mut resp = Json(list).into_response();
    if !skipped.is_empty()
        && let Ok(v) = HeaderValue::from_str(&skipped.join(","))
    {
        resp.headers_mut().insert(SKIPPED_HEADER, v);
    }
    Ok(resp)
}

/// Response header on incident listings while the store is failing: `failing: <why>`. The CLI
/// prints it as a warning and exits non-zero.
pub const STORE_HEADER: &str = "x-faultline-store";
/// Response header naming stored incidents left out of a listing because they no longer decode.
pub const SKIPPED_HEADER: &str = "x-faultline-skipped";

/// `GET /api/v1/incidents/{id}`
pub async fn get_incident(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let st2 = st.clone();
    let id2 = id.clone();
    let found = tokio::task::spawn_blocking(move || st2.with_db(|s| s.get(&id2)))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?;
    // An open incident the store has not recorded (or cannot read) is served from memory.
    let memory = || st.with_open(|o| o.get(&id).cloned());
    let found = match found {
        Ok(Some(i)) => Some(i),
        Ok(None) => memory(),
        Err(e) => Some(memory().ok_or(e)?),
    };
    match found {
        Some(i) => Ok(Json(i).into_response()),
        None => Err(ApiError::not_found(format!("no incident {id}"))),
    }
}

/// `GET /api/v1/components/{id}`; the id may be sent URL-encoded or with its `/` as path segments.
pub async fn get_component(State(st): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let raw = raw.trim_start_matches('/');
    let id: ComponentId = raw.parse().map_err(|e: faultline_proto::IdError| ApiError::bad_request(e.to_string()))?;
    let engine_view = st.with_engine(|e| e.component(&id));
    let id_str = id.to_string();
    let st2 = st.clone();
    let root_str = id_str.clone();
    let mut related = tokio::task::spawn_blocking(move || st2.with_db(|s| s.by_root(&root_str)))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    st.with_open(|open| {
        for i in open.values() {
            if i.root != id && i.paths.iter().any(|p| p.contains(&id_str)) {
                related.push(i.clone());
            }
        }
    });
    let root_incidents = related;
    let view = match engine_view {
        Some(mut v) => {
            for i in &root_incidents {
                if !v.incidents.contains(&i.id) {
                    v.incidents.push(i.id.clone());
                }
            }
            v
        }
        None if !root_incidents.is_empty() => ComponentView {
            kind: id.kind(),
            healthy: !root_incidents.iter().any(|i| i.status == IncidentStatus::Open && i.root == id),
            symptoms: Vec::new(),
            depends_on: Vec::new(),
            dependents: Vec::new(),
            incidents: root_incidents.iter().map(|i| i.id.clone()).collect(),
            id,
        },
        None => return Err(ApiError::not_found(format!("no component {id}"))),
    };
    Ok(Json(view).into_response())
}

/// `GET /api/v1/jobs`
pub async fn list_jobs(State(st): State<Arc<AppState>>) -> Response {
    let jobs: Vec<JobView> = st.with_engine(|e| e.jobs());
    Json(jobs).into_response()
}

/// `GET /api/v1/jobs/{id}`; `llm-70b` and `job:llm-70b` both work.
pub async fn get_job(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let bare = id.strip_prefix("job:").unwrap_or(&id);
    match st.with_engine(|e| e.job(bare)) {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError::not_found(format!("no job {bare}"))),
    }
}

/// `GET /api/v1/topology`
pub async fn topology(State(st): State<Arc<AppState>>) -> Response {
    let mut view = st.with_engine(|e| e.topology_view());
    if view.switches.is_empty() && !st.topology.switches.is_empty() {
        // The engine has not built its graph yet: show the file as configured.
        view.switches = st
            .topology
            .switches
            .iter()
            .map(|s| SwitchView {
                id: format!("switch:{}", s.name),
                tier: serde_json::to_value(s.tier)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                uplinks: s.uplinks.iter().map(|u| format!("switch:{u}")).collect(),
                nics: Vec::new(),
                healthy: true,
            })
            .collect();
    }
    if view.nodes.is_empty() {
        view.nodes = st.with_ledger(|l| l.iter().map(|(n, _)| n.clone()).collect());
    }
    Json::<TopologyView>(view).into_response()
}

/// `GET /api/v1/summary`: the engine's summary, with open-incident counts from the recorded state
/// and a few analyzer facts.
#[derive(Debug, Serialize)]
struct SummaryBody {
    #[serde(flatten)]
    summary: Summary,
    incidents_total: u64,
    outbox_pending: u64,
    analyzer_version: &'static str,
    started_at: String,
    uptime_s: f64,
}

pub async fn summary(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut s = st.with_engine(|e| e.summary());
    st.with_open(|open| {
        s.open_incidents = u32::try_from(open.len()).unwrap_or(u32::MAX);
        s.open_by_class.clear();
        s.open_by_severity.clear();
        for i in open.values() {
            *s.open_by_class.entry(i.class).or_default() += 1;
            *s.open_by_severity.entry(i.severity).or_default() += 1;
        }
    });
    if s.nodes == 0 {
        s.nodes = u32::try_from(st.with_ledger(|l| l.len())).unwrap_or(u32::MAX);
    }
    let st2 = st.clone();
    let counts = tokio::task::spawn_blocking(move || st2.with_db(|s| s.counts()))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    let now_s = st.clock.now_s();
    Ok(Json(SummaryBody {
        summary: s,
        incidents_total: counts.incidents,
        outbox_pending: counts.outbox_pending,
        analyzer_version: env!("CARGO_PKG_VERSION"),
        started_at: rfc3339(st.started_s),
        uptime_s: (now_s - st.started_s).max(0.0),
    })
    .into_response())
}

/// Kinds whose healthy components still get a `faultline_component_healthy` series (the rest only
/// appear while unhealthy): the parts people replace or reboot.
fn always_exported(kind: ComponentKind) -> bool {
    matches!(kind, ComponentKind::Gpu | ComponentKind::Nic | ComponentKind::Node | ComponentKind::Switch)
}

/// `GET /metrics`
pub async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let now_ms = st.clock.now_ms();
    let open: Vec<Incident> = st.open_incidents();
    let (mut health, jobs): (Vec<HealthRow>, Vec<JobView>) = st.with_engine(|engine| {
        let health = engine
            .health()
            .filter(|h| h.kind != ComponentKind::Rank && h.kind != ComponentKind::Job)
            .filter(|h| !h.healthy || always_exported(h.kind))
            .collect();
        (health, engine.jobs())
    });
    // Roots of open incidents are unhealthy even if the engine's view has not caught up (after a
    // restart, before the next reports).
    let listed: BTreeSet<ComponentId> = health.iter().map(|h| h.id.clone()).collect();
    for i in &open {
        let kind = i.root.kind();
        if kind == ComponentKind::Rank || kind == ComponentKind::Job || listed.contains(&i.root) {
            continue;
        }
        health.push(HealthRow { id: i.root.clone(), kind, node: i.root.host().map(str::to_string), healthy: false });
    }
    // Switches run no agent: every one in the topology gets a series, healthy unless listed above.
    st.with_engine(|e| crate::metrics::add_topology_switches(&mut health, e.topology_file()));
    let affected: BTreeSet<String> = open.iter().flat_map(|i| i.affected_jobs.iter().cloned()).collect();
    let mut job_rows: BTreeMap<String, bool> = jobs.into_iter().map(|j| (j.id, false)).collect();
    for j in &affected {
        job_rows.insert(j.strip_prefix("job:").unwrap_or(j).to_string(), true);
    }
    let (nodes, reporting, skewed) =
        st.with_ledger(|ledger| (ledger.len(), ledger.reporting(now_ms, st.heartbeat_intervals), skewed_nodes(ledger)));
    let snap = Snapshot {
        open_incidents: open.iter().collect(),
        health,
        jobs: job_rows.into_iter().collect(),
        nodes: i64::try_from(nodes).unwrap_or(i64::MAX),
        nodes_reporting: i64::try_from(reporting).unwrap_or(i64::MAX),
        skewed_nodes: skewed,
        now_ms: Some(now_ms),
    };
    match st.metrics.render(&snap, wants_openmetrics(accept_header(&headers))) {
        Ok((body, ct)) => {
            let mut resp = body.into_response();
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            resp
        }
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "could not encode metrics").into_response(),
    }
}

/// Parses `since`: Unix seconds (`1714564800`, `1714564800.5`) or RFC 3339 (`2024-05-01T12:00:00Z`,
/// `2024-05-01T14:00:00.250+02:00`).
pub fn parse_since(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    faultline_proto::parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_unix_seconds_and_rfc3339() {
        assert_eq!(parse_since("1700000000"), Some(1_700_000_000.0));
        assert_eq!(parse_since("1700000000.5"), Some(1_700_000_000.5));
        assert_eq!(parse_since("2023-11-14T22:13:20.500Z"), Some(1_700_000_000.5));
        assert_eq!(parse_since("2023-11-15T00:13:20+02:00"), Some(1_700_000_000.0));
        assert_eq!(parse_since("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        assert_eq!(parse_since("1970-01-01T00:00:00Z"), Some(0.0));
        for bad in ["yesterday", "2023-13-01T00:00:00Z", "2023-11-14", "2023-11-14T22:13:20", "NaN", "inf", ""] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
        // Round trip with the proto formatter over a spread of instants.
        for s in [0.0, 86_399.0, 951_868_799.999, 1_714_564_800.0, 4_102_444_800.0] {
            assert_eq!(parse_since(&rfc3339(s)), Some(s), "{s}");
        }
    }
}
