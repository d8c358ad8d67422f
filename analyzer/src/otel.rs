//! OpenTelemetry span export: one `ingest` span per report (node, seq, bytes, result) and one
//! `diagnosis` span per engine tick that changed incidents (with the counts), sent in batches as OTLP
//! `ExportTraceServiceRequest`s (protobuf over HTTP) to `<endpoint>/v1/traces` from a thread of its
//! own. Until `install` is called (no endpoint configured) recording a span is a no-op.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message;

/// Spans waiting for the export thread. At 12,500 reports a second this is well under a second of
/// ingest; past it spans are dropped (and counted) rather than slowing ingest down.
pub const QUEUE_CAP: usize = 16_384;
/// Most spans in one export request (the OpenTelemetry SDK's default batch size).
pub const MAX_BATCH: usize = 512;
/// How long a span may wait for its batch to fill before it is sent anyway (the SDK's default
/// schedule delay is 5 s; 1 s keeps the trace view close to live at little cost).
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Upper bound on one export request (the OTLP exporter default timeout).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Export failures are logged at most this often, so a collector that is down does not flood the log.
pub const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// The OTLP/HTTP content type for binary protobuf bodies.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP endpoint {0:?} must be a URL starting with http:// or https://")]
    BadEndpoint(String),
    #[error("span export is already installed")]
    AlreadyInstalled,
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One finished span, as the handlers record it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Attr)>,
    pub error: Option<String>,
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Str(String),
    Int(i64),
}

struct Sink {
    tx: SyncSender<SpanRecord>,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Nanoseconds since the Unix epoch now.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Whether spans are being exported (an endpoint was installed).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Hands a finished span to the export thread; never blocks. A no-op without `install`.
pub fn record(span: SpanRecord) {
    let Some(sink) = SINK.get() else { return };
    match sink.tx.try_send(span) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `<endpoint>/v1/traces`, the OTLP/HTTP traces path under a base endpoint (as the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable means it); one already ending in `/v1/traces` is kept.
pub fn traces_url(endpoint: &str) -> Result<String, OtelError> {
    let e = endpoint.trim();
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        return Err(OtelError::BadEndpoint(endpoint.to_string()));
    }
    let e = e.trim_end_matches('/');
    if e.ends_with("/v1/traces") { Ok(e.to_string()) } else { Ok(format!("{e}/v1/traces")) }
}

/// Starts the export thread for `endpoint` and makes `record` live. Call once, at start-up.
pub fn install(endpoint: &str) -> Result<(), OtelError> {
    let url = traces_url(endpoint)?;
    let (tx, rx) = sync_channel(QUEUE_CAP);
    SINK.set(Sink { tx, dropped: AtomicU64::new(0) }).map_err(|_| OtelError::AlreadyInstalled)?;
    std::thread::Builder::new().name("otlp-spans".into()).spawn(move || export_loop(&url, rx))?;
    Ok(())
}

/// Random-enough ids: a per-process random key (std's hasher seed) over a counter and the time.
fn random_u64() -> u64 {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEY.get_or_init(std::collections::hash_map::RandomState::new).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(now_ns());
    h.finish()
}

fn nonzero_u64() -> u64 {
    loop {
        let v = random_u64();
        if v != 0 {
            return v;
        }
    }
}

fn attr_kv(key: &str, v: &Attr) -> KeyValue {
    let value = match v {
        Attr::Str(s) => any_value::Value::StringValue(s.clone()),
        Attr::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// The OTLP request for a batch of spans; each span is the root of its own trace.
pub fn build_request(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let spans = spans
        .iter()
        .map(|s| {
            let mut trace_id = Vec::with_capacity(16);
            trace_id.extend_from_slice(&nonzero_u64().to_be_bytes());
            trace_id.extend_from_slice(&random_u64().to_be_bytes());
            Span {
                trace_id,
                span_id: nonzero_u64().to_be_bytes().to_vec(),
                name: s.name.to_string(),
                kind: if s.name == "ingest" { span::SpanKind::Server } else { span::SpanKind::Internal } as i32,
                start_time_unix_nano: s.start_ns,
                end_time_unix_nano: s.end_ns.max(s.start_ns),
                attributes: s.attributes.iter().map(|(k, v)| attr_kv(k, v)).collect(),
                status: Some(match &s.error {
                    Some(m) => Status { message: m.clone(), code: status::StatusCode::Error as i32 },
                    None => Status { message: String::new(), code: status::StatusCode::Unset as i32 },
                }),
                ..Default::default()
            }
        })
        .collect();
    let kv = |k: &str, v: &str| attr_kv(k, &Attr::Str(v.to_string()));
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "faultline-analyzer"),
                    kv("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "faultline-analyzer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn export_loop(url: &str, rx: Receiver<SpanRecord>) {
    // Built on this thread: the blocking client must not be created or dropped on the async runtime.
    let client = match reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OTLP HTTP client; spans are not exported");
            return;
        }
    };
    tracing::info!(url, "exporting ingest and diagnosis spans over OTLP");
    let mut last_error_log: Option<Instant> = None;
    let mut failed_batches = 0u64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for the first span, then give the batch up to BATCH_DELAY to fill.
        match rx.recv() {
            Ok(s) => batch.push(s),
            Err(_) => return,
        }
        let deadline = Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => batch.push(s),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let body = build_request(&batch).encode_to_vec();
        let n = batch.len();
        batch.clear();
        let result = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, PROTOBUF_CONTENT_TYPE)
            .body(body)
            .send()
            .map_err(|e| e.to_string())
            .and_then(
                |r| if r.status().is_success() { Ok(()) } else { Err(format!("collector answered {}", r.status())) },
            );
        if let Err(e) = result {
            failed_batches += 1;
            let now = Instant::now();
            if last_error_log.is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY) {
                last_error_log = Some(now);
                let dropped = SINK.get().map(|s| s.dropped.load(Ordering::Relaxed)).unwrap_or(0);
                tracing::warn!(url, error = %e, spans = n, failed_batches, queue_full_drops = dropped, "OTLP span export failed (logged at most once a minute)");
            }
        }
    }
}

/// Records the `ingest` span of one report.
pub fn ingest_span(start_ns: u64, node: Option<&str>, seq: Option<u64>, bytes: Option<u64>, result: &str) {
    if !enabled() {
        return;
    }
    let mut attributes = vec![("faultline.ingest.result", Attr::Str(result.to_string()))];
    if let Some(n) = node {
        attributes.push(("faultline.node", Attr::Str(n.to_string())));
        attributes.push(("host.name", Attr::Str(n.to_string())));
    }
    if let Some(s) = seq {
        attributes.push(("faultline.report.seq", Attr::Int(s as i64)));
    }
    if let Some(b) = bytes {
        attributes.push(("http.request.body.size", Attr::Int(b as i64)));
    }
    let error = (result != "accepted" && result != "duplicate").then(|| format!("report {result}"));
    record(SpanRecord { name: "ingest", start_ns, end_ns: now_ns(), attributes, error });
}

/// What one engine tick changed, for its `diagnosis` span.
#[derive(Debug, Clone, Default)]
pub struct TickCounts {
    pub opened: u64,
    pub updated: u64,
    pub resolved: u64,
    pub open_after: u64,
    /// Root components of the incidents opened in this tick, comma-separated.
    pub roots: String,
}

/// Records the `diagnosis` span of one tick that changed incidents.
pub fn diagnosis_span(start_ns: u64, c: &TickCounts) {
    if !enabled() {
        return;
    }
    let attributes = vec![
        ("faultline.incidents.opened", Attr::Int(c.opened as i64)),
        ("faultline.incidents.updated", Attr::Int(c.updated as i64)),
        ("faultline.incidents.resolved", Attr::Int(c.resolved as i64)),
        ("faultline.incidents.open", Attr::Int(c.open_after as i64)),
        ("faultline.incidents.roots", Attr::Str(c.roots.clone())),
    ];
    record(SpanRecord { name: "diagnosis", start_ns, end_ns: now_ns(), attributes, error: None });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gets_the_traces_path_once() {
        assert_eq!(traces_url("http://c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces/").unwrap(), "http://c:4318/v1/traces");
        assert!(traces_url("c:4318").is_err());
    }

    #[test]
    fn spans_encode_as_otlp_with_ids_and_attributes() {
        let s = SpanRecord {
            name: "ingest",
            start_ns: 10,
            end_ns: 20,
            attributes: vec![("faultline.node", Attr::Str("n1".into())), ("faultline.report.seq", Attr::Int(4))],
            error: None,
        };
        let req = build_request(&[s.clone(), s]);
        let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let spans = &back.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id.len(), 16);
        assert_eq!(spans[0].span_id.len(), 8);
        assert_ne!(spans[0].span_id, spans[1].span_id);
        assert_eq!(spans[0].name, "ingest");
        assert!(spans[0].attributes.iter().any(|k| k.key == "faultline.report.seq"));
    }

    #[test]
    fn recording_without_install_is_a_no_op() {
        // Nothing installed in this test binary: must neither panic nor block.
        ingest_span(now_ns(), Some("n1"), Some(1), Some(10), "accepted");
        diagnosis_span(now_ns(), &TickCounts::default());
    }
}
