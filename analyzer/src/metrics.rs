//! The analyzer's own `/metrics`: open incidents, component health, affected jobs, diagnosis
//! latency, and how ingest is doing. Text format 0.0.4 by default, OpenMetrics when asked for.
//!
//! Every label has bounded cardinality: classes, severities and results are fixed sets; incident,
//! component and job series exist only while they matter and are capped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use faultline_proto::api::HealthRow;
use faultline_proto::remediation::{ActionResult, NodeAction};
use faultline_proto::{Incident, Severity};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Diagnosis latency buckets, seconds: hard evidence is diagnosed within a tick (≤ 1 s), soft
/// evidence must persist for a few report intervals (10 s each by default), so the tail reaches
/// ten minutes.
const DIAGNOSIS_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Ingest handling time buckets, seconds: a typical report decodes and applies in well under a
/// millisecond; a maximal 8 MiB one takes tens of milliseconds.
const INGEST_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Report age buckets, seconds: live reports arrive within a second; spooled ones replayed after
/// an outage can be hours old.
const REPORT_AGE_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

/// Change-to-delivery latency buckets for notifications, seconds: a healthy receiver gets a
/// notification within a tick and a poll (about a second); retries after an outage reach the
/// five-minute backoff cap and beyond, up to an hour-long outage.
const NOTIFY_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Most `faultline_incident_info` series at once: an incident storm must not become a series storm.
const MAX_INCIDENT_INFO_SERIES: usize = 1_000;

/// Most `faultline_job_affected` series at once.
const MAX_JOB_SERIES: usize = 5_000;

/// Most `faultline_node_clock_skew_seconds` series at once (only skewed nodes get one; a fleet-wide
/// NTP failure must not become a series per node).
const MAX_SKEW_SERIES: usize = 1_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabels {
    family: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ClassLabels {
    class: String,
    severity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    id: String,
    root: String,
    class: String,
    severity: String,
    action: String,
    /// `true` when the recommended action needs a person (`Action::needs_person`): the analyzer's
    /// own paging policy, so alert rules page for exactly the incidents its notifications page for.
    needs_person: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
    kind: String,
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    /// The training job id. Not `job`: that is Prometheus' own scrape label and would be renamed.
    job_id: String,
}

/// Encodings come from a fixed set: bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncodingLabels {
    encoding: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Receiver names come from the config file, results from a fixed set: bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    receiver: String,
    result: String,
}

/// Remediation action and result: both fixed sets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemediationLabels {
    action: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

/// How one ingest request ended; the `result` label of `faultline_ingest_reports_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestResult {
    Accepted,
    Duplicate,
    /// Not JSON, or JSON of the wrong shape.
    Malformed,
    /// Well-formed but refused by validation.
    Invalid,
    Unauthorized,
    /// A valid token that may not push this (a read token, another node's token).
    Forbidden,
    /// The node's rate limit was exceeded (429).
    RateLimited,
    TooLarge,
    UnsupportedMediaType,
    /// A delta against a report the analyzer does not hold (409: the agent sends it in full).
    DeltaBaseMismatch,
}

impl IngestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::DeltaBaseMismatch => "delta_base_mismatch",
        }
    }
}

/// Everything `/metrics` shows that is a snapshot of state rather than a running count.
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    pub open_incidents: Vec<&'a Incident>,
    /// Component health; unhealthy rows are kept first when the cap bites.
    pub health: Vec<HealthRow>,
    /// Every job known, with whether an open incident affects it.
    pub jobs: Vec<(String, bool)>,
    pub nodes: i64,
    pub nodes_reporting: i64,
    /// Nodes whose clocks are off, with the offset in seconds.
    pub skewed_nodes: Vec<(String, f64)>,
    /// The analyzer's clock at the scrape (for the age of the last tick).
    pub now_ms: Option<i64>,
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    incidents_open: Family<ClassLabels, Gauge>,
    incident_info: Family<InfoLabels, Gauge>,
    component_healthy: Family<ComponentLabels, Gauge>,
    job_affected: Family<JobLabels, Gauge>,
    diagnosis_latency: Histogram,
    ingest_reports: Family<ResultLabels, Counter>,
    ingest_bytes: Counter,
    ingest_encoding: Family<EncodingLabels, Counter>,
    ingest_duration: Histogram,
    report_age: Histogram,
    nodes: Gauge,
    nodes_reporting: Gauge,
    tick_duration: Histogram,
    store_errors: Counter,
    remediation_actions: Family<RemediationLabels, Counter>,
    remediation_blocked: Counter,
    notifications: Family<NotifyLabels, Counter>,
    notification_latency: Histogram,
    outbox_depth: Family<ReceiverLabels, Gauge>,
    engine_backlog: Gauge,
    last_tick_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    nodes_clock_skewed: Gauge,
    node_clock_skew: Family<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    series_capped: Family<FamilyLabels, Gauge>,
    limits_hit: Family<LimitLabels, Counter>,
    store_failing: Gauge,
    store_rows_skipped: Counter,
    /// Reports applied since the last engine tick started (the detection backlog).
    since_tick: AtomicI64,
    /// Analyzer clock when the last tick finished, Unix ms (0: none yet).
    last_tick_ms: AtomicI64,
    /// Class/severity pairs exported: every one from the start (at 0), plus any seen open.
    seen_classes: Mutex<BTreeSet<ClassLabels>>,
    /// Serializes refresh+encode so two scrapes never see each other's half-rebuilt families.
    scrape: Mutex<()>,
    max_components: usize,
}

impl Metrics {
    pub fn new(max_components: usize) -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let incidents_open = Family::<ClassLabels, Gauge>::default();
        registry.register("incidents_open", "Open incidents by fault class and severity", incidents_open.clone());
        let incident_info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "incident_info",
            "1 for each open incident, labelled with its root, class, action and whether that action needs a person",
            incident_info.clone(),
        );
        let component_healthy = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "component_healthy",
            "1 when a component shows no symptom, 0 when it does (hardware components and unhealthy ones only)",
            component_healthy.clone(),
        );
        let job_affected = Family::<JobLabels, Gauge>::default();
        registry.register("job_affected", "1 when an open incident affects the job", job_affected.clone());
        let diagnosis_latency = Histogram::new(DIAGNOSIS_BUCKETS);
        registry.register(
            "diagnosis_latency_seconds",
            "Time from the first symptom (report clock) to the incident opening (analyzer clock)",
            diagnosis_latency.clone(),
        );
        let ingest_reports = Family::<ResultLabels, Counter>::default();
        registry.register("ingest_reports", "Report posts by result", ingest_reports.clone());
        let ingest_bytes = Counter::default();
        registry.register("ingest_bytes", "Bytes of report bodies read", ingest_bytes.clone());
        let ingest_encoding = Family::<EncodingLabels, Counter>::default();
        registry.register(
            "ingest_encoding_reports",
            "Reports decoded, by encoding: json, protobuf (a full compact report) or delta (what changed since the node's last one)",
            ingest_encoding.clone(),
        );
        let ingest_duration = Histogram::new(INGEST_BUCKETS);
        registry.register(
            "ingest_duration_seconds",
            "Time to read, decode, validate and apply one report",
            ingest_duration.clone(),
        );
        let report_age = Histogram::new(REPORT_AGE_BUCKETS);
        registry.register(
            "report_age_seconds",
            "Analyzer time minus report timestamp at arrival (spool replays are old; clock skew shows here too)",
            report_age.clone(),
        );
        let nodes = Gauge::default();
        registry.register("nodes", "Nodes heard from since the analyzer started", nodes.clone());
        let nodes_reporting = Gauge::default();
        registry.register(
            "nodes_reporting",
            "Nodes whose last report arrived within their heartbeat allowance",
            nodes_reporting.clone(),
        );
        let tick_duration = Histogram::new(INGEST_BUCKETS);
        registry.register(
            "engine_tick_duration_seconds",
            "Time one engine tick (detectors, localizer) took, including recording its changes",
            tick_duration.clone(),
        );
        let store_errors = Counter::default();
        registry.register("store_write_errors", "Failed attempts to record incident changes", store_errors.clone());
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by receiver and result (delivered, retry, failed, expired, repost, repost_failed)",
            notifications.clone(),
        );
        let notification_latency = Histogram::new(NOTIFY_BUCKETS);
        registry.register(
            "notification_latency_seconds",
            "Time from an incident change being recorded to its notification being delivered",
            notification_latency.clone(),
        );
        let remediation_actions = Family::<RemediationLabels, Counter>::default();
        registry.register(
            "remediation_actions",
            "Scheduler actions (drain, resume) by result: ok, failed, suggested, dry_run, blocked, skipped",
            remediation_actions.clone(),
        );
        for action in [NodeAction::Drain, NodeAction::Resume] {
            for result in [ActionResult::Ok, ActionResult::Failed] {
                let _ = remediation_actions.get_or_create_owned(&RemediationLabels {
                    action: action.as_str().into(),
                    result: result.as_str().into(),
                });
            }
        }
        let remediation_blocked = Counter::default();
        registry.register(
            "remediation_blocked",
            "Incidents whose drains the blast-radius guard stopped (a person was paged)",
            remediation_blocked.clone(),
        );
        let engine_backlog = Gauge::default();
        registry.register(
            "engine_backlog_reports",
            "Reports applied but not yet examined by the detectors (grows when the engine falls behind)",
            engine_backlog.clone(),
        );
        let last_tick_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "engine_last_tick_age_seconds",
            "Seconds since the engine last finished a tick (about 1 normally; grows when it is stuck)",
            last_tick_age.clone(),
        );
        let nodes_clock_skewed = Gauge::default();
        registry.register(
            "nodes_clock_skewed",
            "Nodes whose clock is more than 5 s off the analyzer's",
            nodes_clock_skewed.clone(),
        );
        let node_clock_skew = Family::<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "node_clock_skew_seconds",
            "Node clock minus analyzer clock, for skewed nodes only",
            node_clock_skew.clone(),
        );
        let series_capped = Family::<FamilyLabels, Gauge>::default();
        registry.register(
            "metrics_series_capped",
            "Series left out of the last scrape by the cardinality caps, by metric family",
            series_capped.clone(),
        );
        let limits_hit = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limits_hit",
            "Times an ingest cap bit (max_nodes, allowed_nodes, components_per_node, future_timestamp)",
            limits_hit.clone(),
        );
        for limit in ["max_nodes", "allowed_nodes", "components_per_node", "future_timestamp"] {
            let _ = limits_hit.get_or_create_owned(&LimitLabels { limit: limit.into() });
        }
        let store_failing = Gauge::default();
        registry.register(
            "store_failing",
            "1 while incident changes cannot be written to the store (served from memory meanwhile)",
            store_failing.clone(),
        );
        let store_rows_skipped = Counter::default();
        registry.register(
            "store_rows_skipped",
            "Stored incidents left out of an answer because they no longer decode",
            store_rows_skipped.clone(),
        );
        let outbox_depth = Family::<ReceiverLabels, Gauge>::default();
        registry.register("outbox_depth", "Notifications waiting in the outbox, per receiver", outbox_depth.clone());
        // The same version `faultline-analyzer --version` prints (tests/tests/packages.rs checks both).
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register("build_info", "1, labelled with the analyzer's version", build_info.clone());
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        for r in [IngestResult::Accepted, IngestResult::Invalid, IngestResult::Malformed] {
            let _ = ingest_reports.get_or_create_owned(&ResultLabels { result: r.as_str().into() });
        }
        Self {
            registry,
            incidents_open,
            incident_info,
            component_healthy,
            job_affected,
            diagnosis_latency,
            ingest_reports,
            ingest_bytes,
            ingest_encoding,
            ingest_duration,
            report_age,
            nodes,
            nodes_reporting,
            tick_duration,
            store_errors,
            remediation_actions,
            remediation_blocked,
            notifications,
            notification_latency,
            outbox_depth,
            engine_backlog,
            last_tick_age,
            nodes_clock_skewed,
            node_clock_skew,
            series_capped,
            limits_hit,
            store_failing,
            store_rows_skipped,
            since_tick: AtomicI64::new(0),
            last_tick_ms: AtomicI64::new(0),
            // Every class and severity starts at 0, so that Grafana shows 0 open incidents, not
            // "No data", and `increase()`/alerts see the series before the first incident.
            seen_classes: Mutex::new(
                faultline_proto::FaultClass::ALL
                    .iter()
                    .flat_map(|c| {
                        [Severity::Critical, Severity::Warning, Severity::Info]
                            .map(|s| ClassLabels { class: c.as_str().into(), severity: s.as_str().into() })
                    })
                    .collect(),
            ),
            scrape: Mutex::new(()),
            max_components,
        }
    }

    pub fn ingest_result(&self, result: IngestResult) {
        self.ingest_reports.get_or_create(&ResultLabels { result: result.as_str().into() }).inc();
    }

    pub fn ingest_bytes(&self, n: usize) {
        self.ingest_bytes.inc_by(n as u64);
    }

    /// One report decoded in `encoding` (`json`, `protobuf`, `delta`).
    pub fn ingest_encoding(&self, encoding: &'static str) {
        self.ingest_encoding.get_or_create(&EncodingLabels { encoding: encoding.into() }).inc();
    }

    pub fn ingest_duration(&self, seconds: f64) {
        self.ingest_duration.observe(seconds);
    }

    /// Age of a report at arrival; negative ages (agent clock ahead) count as 0.
    pub fn report_age(&self, seconds: f64) {
        if seconds.is_finite() {
            self.report_age.observe(seconds.max(0.0));
        }
    }

    /// One engine tick finished (its count is the `_count` of the histogram).
    pub fn tick(&self, seconds: f64) {
        self.tick_duration.observe(seconds);
    }

    /// One remediation action ended with `result`.
    pub fn remediation_action(&self, action: NodeAction, result: ActionResult) {
        self.remediation_actions
            .get_or_create(&RemediationLabels { action: action.as_str().into(), result: result.as_str().into() })
            .inc();
    }

    /// The blast-radius guard stopped an incident's drains.
    pub fn remediation_blocked(&self) {
        self.remediation_blocked.inc();
    }

    /// One report was applied; the next tick will look at it.
    pub fn report_applied(&self) {
        self.since_tick.fetch_add(1, Ordering::Relaxed);
    }

    /// A tick starts: what was applied so far is being looked at.
    pub fn tick_started(&self) {
        self.since_tick.store(0, Ordering::Relaxed);
    }

    /// A tick finished at `now_ms` (analyzer clock).
    pub fn tick_finished(&self, now_ms: i64) {
        self.last_tick_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// An ingest cap bit `n` times (`limit` is one of a fixed set of names).
    pub fn limit_hit(&self, limit: &'static str, n: u64) {
        self.limits_hit.get_or_create(&LimitLabels { limit: limit.into() }).inc_by(n);
    }

    pub fn store_failing(&self, failing: bool) {
        self.store_failing.set(i64::from(failing));
    }

    pub fn store_rows_skipped(&self, n: u64) {
        self.store_rows_skipped.inc_by(n);
    }

    /// One notification attempt for `receiver` ended with `result`.
    pub fn notification(&self, receiver: &str, result: &str) {
        self.notifications.get_or_create(&NotifyLabels { receiver: receiver.into(), result: result.into() }).inc();
    }

    /// Creates the `receiver`/`result` series at 0, so rates work from the first scrape.
    pub fn notification_series(&self, receiver: &str, result: &str) {
        let _ =
            self.notifications.get_or_create_owned(&NotifyLabels { receiver: receiver.into(), result: result.into() });
    }

    /// Seconds from a change being recorded to its notification being delivered.
    pub fn notification_latency(&self, seconds: f64) {
        if seconds.is_finite() {
            self.notification_latency.observe(seconds.max(0.0));
        }
    }

    /// Notifications pending for `receiver`.
    pub fn outbox_depth(&self, receiver: &str, pending: u64) {
        self.outbox_depth
            .get_or_create(&ReceiverLabels { receiver: receiver.into() })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// One newly opened incident: record its diagnosis latency.
    pub fn incident_opened(&self, inc: &Incident) {
        let latency = inc.opened_s - inc.onset_s;
        if latency.is_finite() {
            self.diagnosis_latency.observe(latency.max(0.0));
        }
    }

    /// Rebuilds the state gauges from `snap` and encodes everything. `openmetrics` picks the format;
    /// the content type to send comes back with the text.
    pub fn render(&self, snap: &Snapshot<'_>, openmetrics: bool) -> Result<(String, &'static str), std::fmt::Error> {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(snap);
        let mut out = String::new();
        if openmetrics {
            text::encode(&mut out, &self.registry)?;
            faultline_proto::process::append_to(&mut out, true);
            Ok((out, OPENMETRICS_CONTENT_TYPE))
        } else {
            prometheus_text::encode(&mut out, &self.registry)?;
            // process_* as every Prometheus client library exports them (no `faultline` prefix).
            faultline_proto::process::append_to(&mut out, false);
            Ok((out, prometheus_text::CONTENT_TYPE))
        }
    }

    fn refresh(&self, snap: &Snapshot<'_>) {
        let mut seen = self.seen_classes.lock().unwrap_or_else(|p| p.into_inner());
        for labels in seen.iter() {
            self.incidents_open.get_or_create(labels).set(0);
        }
        self.incident_info.clear();
        let mut open = snap.open_incidents.clone();
        // Newest first when capping info series: the newest incidents are the ones being worked on.
        open.sort_by(|a, b| b.opened_s.total_cmp(&a.opened_s).then_with(|| b.id.cmp(&a.id)));
        let capped = |family: &str, n: usize| {
            self.series_capped
                .get_or_create(&FamilyLabels { family: format!("faultline_{family}") })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        capped("incident_info", open.len().saturating_sub(MAX_INCIDENT_INFO_SERIES));
        for (i, inc) in open.iter().enumerate() {
            let labels = ClassLabels { class: inc.class.as_str().into(), severity: severity_str(inc.severity).into() };
            self.incidents_open.get_or_create(&labels).inc();
            seen.insert(labels);
            if i < MAX_INCIDENT_INFO_SERIES {
                let action = serde_json::to_value(inc.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "none".into());
                self.incident_info
                    .get_or_create(&InfoLabels {
                        id: inc.id.clone(),
                        root: inc.root.to_string(),
                        class: inc.class.as_str().into(),
                        severity: severity_str(inc.severity).into(),
                        action,
                        needs_person: inc.action.needs_person().to_string(),
                    })
                    .set(1);
            }
        }
        drop(seen);

        self.component_healthy.clear();
        let mut rows: Vec<&HealthRow> = snap.health.iter().collect();
        // Unhealthy first, then by id, so the cap drops healthy series, never the sick ones.
        rows.sort_by(|a, b| a.healthy.cmp(&b.healthy).then_with(|| a.id.cmp(&b.id)));
        capped("component_healthy", rows.len().saturating_sub(self.max_components));
        for row in rows.into_iter().take(self.max_components) {
            self.component_healthy
                .get_or_create(&ComponentLabels {
                    component: row.id.to_string(),
                    kind: row.kind.as_str().into(),
                    node: row.node.clone().unwrap_or_default(),
                })
                .set(i64::from(row.healthy));
        }

        self.job_affected.clear();
        let mut jobs: Vec<&(String, bool)> = snap.jobs.iter().collect();
        jobs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        capped("job_affected", jobs.len().saturating_sub(MAX_JOB_SERIES));
        for (job, affected) in jobs.into_iter().take(MAX_JOB_SERIES) {
            self.job_affected.get_or_create(&JobLabels { job_id: job.clone() }).set(i64::from(*affected));
        }
        self.nodes.set(snap.nodes);
        self.nodes_reporting.set(snap.nodes_reporting);

        self.node_clock_skew.clear();
        let mut skewed: Vec<&(String, f64)> = snap.skewed_nodes.iter().collect();
        // The worst clocks first when the cap bites.
        skewed.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
        capped("node_clock_skew_seconds", skewed.len().saturating_sub(MAX_SKEW_SERIES));
        self.nodes_clock_skewed.set(i64::try_from(skewed.len()).unwrap_or(i64::MAX));
        for (node, s) in skewed.into_iter().take(MAX_SKEW_SERIES) {
            self.node_clock_skew.get_or_create(&NodeLabels { node: node.clone() }).set(*s);
        }
        self.engine_backlog.set(self.since_tick.load(Ordering::Relaxed));
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        if let Some(now) = snap.now_ms
            && last > 0
        {
            self.last_tick_age.set(((now - last) as f64 / 1000.0).max(0.0));
        }
    }
}

/// Adds a healthy `faultline_component_healthy{kind="switch"}` row for every switch of the topology
/// file that no row lists yet. The engine's health rows come from what agents report, and no agent
/// runs on a switch: without these the switch panel would show only broken switches, never the
/// healthy fabric around them. Call after the unhealthy rows (open incidents' roots) are in.
pub fn add_topology_switches(health: &mut Vec<HealthRow>, topology: &faultline_proto::TopologyFile) {
    use faultline_proto::{ComponentId, ComponentKind};
    let listed: std::collections::BTreeSet<ComponentId> = health.iter().map(|h| h.id.clone()).collect();
    for sw in &topology.switches {
        let id = ComponentId::switch(sw.name.as_str());
        if !listed.contains(&id) {
            health.push(HealthRow { id, kind: ComponentKind::Switch, node: None, healthy: true });
        }
    }
}

fn severity_str(s: Severity) -> &'static str {
    s.as_str()
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|part| part.trim().starts_with("application/openmetrics-text")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{Action, ComponentId, ComponentKind, FaultClass, IncidentStatus, rfc3339};

    fn incident(id: &str, class: FaultClass) -> Incident {
        Incident {
            id: id.into(),
            root: ComponentId::gpu("node-0001", 2),
            class,
            severity: Severity::Critical,
            confidence: 0.9,
            status: IncidentStatus::Open,
            summary: String::new(),
            onset_s: 100.0,
            opened_s: 101.5,
            opened_at: rfc3339(101.5),
            updated_s: 101.5,
            resolved_s: None,
            affected_jobs: vec!["j1".into()],
            paths: vec![],
            evidence: vec![],
            timeline: vec![],
            action: Action::ResetGpu,
        }
    }

    fn render(m: &Metrics, snap: &Snapshot<'_>) -> String {
        m.render(snap, false).unwrap().0
    }

    #[test]
    fn open_incidents_by_class_and_severity_start_at_zero() {
        let out = render(&Metrics::new(100), &Snapshot::default());
        for class in FaultClass::ALL {
            for sev in ["critical", "warning", "info"] {
                let line = format!("faultline_incidents_open{{class=\"{}\",severity=\"{sev}\"}} 0", class.as_str());
                assert!(out.contains(&line), "{line} missing:\n{out}");
            }
        }
        assert!(out.contains("faultline_build_info{version=\""), "{out}");
    }

    #[test]
    fn open_incidents_show_and_drop_to_zero_when_resolved() {
        let m = Metrics::new(100);
        let a = incident("inc-000001", FaultClass::GpuLost);
        m.incident_opened(&a);
        let out = render(&m, &Snapshot { open_incidents: vec![&a], ..Default::default() });
        assert!(out.contains(r#"faultline_incidents_open{class="gpu_lost",severity="critical"} 1"#), "{out}");
        assert!(out.contains(
            r#"faultline_incident_info{id="inc-000001",root="node-0001/gpu2",class="gpu_lost",severity="critical",action="reset_gpu",needs_person="true"} 1"#
        ), "{out}");
        assert!(out.contains("faultline_diagnosis_latency_seconds_bucket{le=\"2\"} 1"), "{out}");
        let out = render(&m, &Snapshot::default());
        assert!(out.contains(r#"faultline_incidents_open{class="gpu_lost",severity="critical"} 0"#), "{out}");
        assert!(!out.contains("faultline_incident_info{"), "{out}");
    }

    #[test]
    fn every_topology_switch_gets_a_series_the_broken_one_unhealthy() {
        use faultline_proto::{ComponentId, ComponentKind};
        let topo: faultline_proto::TopologyFile = toml::from_str(
            "[[switch]]\nname = \"spine-00\"\ntier = \"spine\"\n[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n",
        )
        .unwrap();
        let mut health = vec![HealthRow {
            id: ComponentId::switch("leaf-00"),
            kind: ComponentKind::Switch,
            node: None,
            healthy: false,
        }];
        add_topology_switches(&mut health, &topo);
        let m = Metrics::new(100);
        let out = render(&m, &Snapshot { health, ..Default::default() });
        assert!(
            out.contains(r#"faultline_component_healthy{component="switch:leaf-00",kind="switch",node=""} 0"#),
            "{out}"
        );
        assert!(
            out.contains(r#"faultline_component_healthy{component="switch:spine-00",kind="switch",node=""} 1"#),
            "{out}"
        );
    }

    #[test]
    fn component_series_are_capped_keeping_the_unhealthy() {
        let m = Metrics::new(2);
        let row = |i: u32, healthy| HealthRow {
            id: ComponentId::gpu("n1", i),
            kind: ComponentKind::Gpu,
            node: Some("n1".into()),
            healthy,
        };
        let snap = Snapshot { health: vec![row(0, true), row(1, true), row(2, false)], ..Default::default() };
        let out = render(&m, &snap);
        assert!(out.contains(r#"faultline_component_healthy{component="n1/gpu2",kind="gpu",node="n1"} 0"#), "{out}");
        assert!(out.contains(r#"faultline_component_healthy{component="n1/gpu0",kind="gpu",node="n1"} 1"#), "{out}");
        assert!(!out.contains("n1/gpu1"), "{out}");
    }

    #[test]
    fn counters_and_formats() {
        let m = Metrics::new(10);
        m.ingest_result(IngestResult::Accepted);
        m.ingest_result(IngestResult::TooLarge);
        m.ingest_bytes(123);
        m.report_age(-5.0);
        let snap = Snapshot {
            jobs: vec![("j1".into(), true), ("j2".into(), false)],
            nodes: 3,
            nodes_reporting: 2,
            ..Default::default()
        };
        let (out, ct) = m.render(&snap, false).unwrap();
        assert_eq!(ct, prometheus_text::CONTENT_TYPE);
        for needle in [
            r#"faultline_ingest_reports_total{result="accepted"} 1"#,
            r#"faultline_ingest_reports_total{result="too_large"} 1"#,
            "faultline_ingest_bytes_total 123",
            "faultline_report_age_seconds_bucket{le=\"0.05\"} 1",
            r#"faultline_job_affected{job_id="j1"} 1"#,
            r#"faultline_job_affected{job_id="j2"} 0"#,
            "faultline_nodes 3",
            "faultline_nodes_reporting 2",
        ] {
            assert!(out.contains(needle), "missing {needle} in\n{out}");
        }
        let (out, ct) = m.render(&snap, true).unwrap();
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(wants_openmetrics(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
