//! OpenTelemetry span export through the OpenTelemetry SDK: one `ingest` span per report (node,
//! seq, bytes, result) and one `diagnosis` span per engine tick that changed incidents (with the
//! counts). The SDK's batch processor queues them on its own thread and `opentelemetry-otlp` sends
//! them as OTLP/HTTP protobuf to `<endpoint>/v1/traces`, with its retries, gzip and the standard
//! `OTEL_*` variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`). Until `install` is called (no endpoint configured)
//! recording a span is a no-op.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_logging::ErrorThrottle;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

/// Spans waiting for export. At 12,500 reports a second this is over a second of ingest; past it
/// the SDK drops spans rather than slow ingest down.
pub const QUEUE_CAP: usize = 16_384;
/// Most spans in one export request (the SDK's default batch size).
pub const MAX_BATCH: usize = 512;
/// How long a span may wait for its batch to fill before it is sent anyway (the SDK's default
/// schedule delay is 5 s; 1 s keeps the trace view close to live at little cost).
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Upper bound on one export request (the OTLP exporter default timeout).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP endpoint {0:?} must be a URL starting with http:// or https://")]
    BadEndpoint(String),
    #[error("span export is already installed")]
    AlreadyInstalled,
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(String),
}

struct Sink {
    /// Kept so the batch thread lives as long as the process.
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
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

/// The SDK's OTLP exporter with our own failure logging: at most one line a minute (the SDK's
/// internal logs are compiled out, so this is the only word about a failing collector).
#[derive(Debug)]
struct Logged {
    inner: opentelemetry_otlp::SpanExporter,
    url: String,
    errors: Mutex<ErrorThrottle>,
}

impl SpanExporter for Logged {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            if errors.should_log(Instant::now()) {
                let suppressed = errors.take_suppressed();
                tracing::warn!(url = %self.url, error = %e, spans, suppressed, "OTLP span export failed (logged at most once a minute)");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn provider(url: &str) -> Result<SdkTracerProvider, OtelError> {
    let mut builder =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    // The signal's own variable wins over the flag, as the OpenTelemetry specification says.
    if !env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        builder = builder.with_endpoint(url.to_string());
    }
    if !env_set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") && !env_set("OTEL_EXPORTER_OTLP_TIMEOUT") {
        builder = builder.with_timeout(EXPORT_TIMEOUT);
    }
    let inner = builder.build().map_err(|e| OtelError::Exporter(e.to_string()))?;
    let exporter = Logged { inner, url: url.to_string(), errors: Mutex::default() };
    let mut batch = BatchConfigBuilder::default();
    if !env_set("OTEL_BSP_SCHEDULE_DELAY") {
        batch = batch.with_scheduled_delay(BATCH_DELAY);
    }
    if !env_set("OTEL_BSP_MAX_QUEUE_SIZE") {
        batch = batch.with_max_queue_size(QUEUE_CAP);
    }
    if !env_set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        batch = batch.with_max_export_batch_size(MAX_BATCH);
    }
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
    let resource = Resource::builder()
        .with_service_name("faultline-analyzer")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// Starts span export to `endpoint` and makes the span functions live. Call once, at start-up.
pub fn install(endpoint: &str) -> Result<(), OtelError> {
    let url = traces_url(endpoint)?;
    if SINK.get().is_some() {
        return Err(OtelError::AlreadyInstalled);
    }
    // Built on a thread of its own: the exporter's blocking HTTP client must not be created (or
    // dropped) on the async runtime's threads.
    let provider = std::thread::scope(|s| s.spawn(|| provider(&url)).join())
        .map_err(|_| OtelError::Exporter("the exporter builder panicked".into()))??;
    let tracer = provider.tracer("faultline-analyzer");
    SINK.set(Sink { _provider: provider, tracer }).map_err(|_| OtelError::AlreadyInstalled)?;
    tracing::info!(url, "exporting ingest and diagnosis spans over OTLP");
    Ok(())
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn record(name: &'static str, kind: SpanKind, start_ns: u64, attributes: Vec<KeyValue>, error: Option<String>) {
    let Some(sink) = SINK.get() else { return };
    let mut span = sink
        .tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(at(start_ns))
        .with_attributes(attributes)
        .start(&sink.tracer);
    if let Some(m) = error {
        span.set_status(Status::error(m));
    }
    span.end_with_timestamp(at(now_ns().max(start_ns)));
}

/// Records the `ingest` span of one report.
pub fn ingest_span(start_ns: u64, node: Option<&str>, seq: Option<u64>, bytes: Option<u64>, result: &str) {
    if !enabled() {
        return;
    }
    let mut attributes = vec![KeyValue::new("faultline.ingest.result", result.to_string())];
    if let Some(n) = node {
        attributes.push(KeyValue::new("faultline.node", n.to_string()));
        attributes.push(KeyValue::new("host.name", n.to_string()));
    }
    if let Some(s) = seq {
        attributes.push(KeyValue::new("faultline.report.seq", s as i64));
    }
    if let Some(b) = bytes {
        attributes.push(KeyValue::new("http.request.body.size", b as i64));
    }
    let error = (result != "accepted" && result != "duplicate").then(|| format!("report {result}"));
    record("ingest", SpanKind::Server, start_ns, attributes, error);
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
        KeyValue::new("faultline.incidents.opened", c.opened as i64),
        KeyValue::new("faultline.incidents.updated", c.updated as i64),
        KeyValue::new("faultline.incidents.resolved", c.resolved as i64),
        KeyValue::new("faultline.incidents.open", c.open_after as i64),
        KeyValue::new("faultline.incidents.roots", c.roots.clone()),
    ];
    record("diagnosis", SpanKind::Internal, start_ns, attributes, None);
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
    fn recording_without_install_is_a_no_op() {
        // Nothing installed in this test binary: must neither panic nor block.
        ingest_span(now_ns(), Some("n1"), Some(1), Some(10), "accepted");
        diagnosis_span(now_ns(), &TickCounts::default());
    }
}
