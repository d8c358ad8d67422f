//! OpenTelemetry export of the agent's metrics through the OpenTelemetry SDK: one observable
//! instrument per entry of `otlp_points::INSTRUMENTS`, read from the latest report snapshot whenever
//! the SDK's periodic reader collects, and sent by `opentelemetry-otlp` as OTLP/HTTP protobuf to
//! `<endpoint>/v1/metrics`. The exporter brings what a collector operator expects: the standard
//! `OTEL_EXPORTER_OTLP_*` variables (`..._METRICS_ENDPOINT`, `..._HEADERS`, `..._COMPRESSION=gzip`,
//! `..._TIMEOUT`), `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`, and
//! retries with jittered backoff on 429/5xx. Names and attributes: `otlp_points.rs`.
//!
//! The SDK exports on its own timer, not once per report: between two reports an export repeats the
//! previous values with a new timestamp. A GPU, NIC or XID that disappears from the report disappears
//! from the next export (observable instruments report only what their callback saw).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::Snapshot;
use super::otlp_points::{INSTRUMENTS, Kind, Points, observations};
use crate::export::xids::XidTally;

pub use faultline_logging::{ERROR_LOG_EVERY, ErrorThrottle};
/// Name and version of the instrumentation scope (and the default `service.name`).
pub const SERVICE_NAME: &str = "faultline-agent";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {0:?} must be a URL starting with http:// or https://")]
    BadEndpoint(String),
    #[error("cannot build the OTLP metrics exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// `<endpoint>/v1/metrics`, the OTLP/HTTP metrics path under a base endpoint (as the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable means it). An endpoint already ending in `/v1/metrics` is
/// kept as it is.
pub fn metrics_url(endpoint: &str) -> Result<String, OtlpError> {
    let e = endpoint.trim();
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        return Err(OtlpError::BadEndpoint(endpoint.to_string()));
    }
    let e = e.trim_end_matches('/');
    if e.ends_with("/v1/metrics") { Ok(e.to_string()) } else { Ok(format!("{e}/v1/metrics")) }
}

static PROVIDER: std::sync::OnceLock<SdkMeterProvider> = std::sync::OnceLock::new();

/// The SDK exporter with our own failure logging: at most one line a minute (the SDK's internal
/// logs are compiled out, so this is the only word about a failing collector).
#[derive(Debug)]
struct Logged {
    inner: opentelemetry_otlp::MetricExporter,
    url: String,
    errors: Mutex<ErrorThrottle>,
}

impl PushMetricExporter for Logged {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            if errors.should_log(Instant::now()) {
                let suppressed = errors.take_suppressed();
                tracing::warn!(url = %self.url, error = %e, suppressed, "OTLP metrics export failed (logged at most once a minute)");
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// The resource every export carries: `host.name` (the node name), `service.name`
/// (`faultline-agent` unless `OTEL_SERVICE_NAME` says otherwise), `service.version`, and whatever
/// `OTEL_RESOURCE_ATTRIBUTES` adds; `extra` (such as the cluster) comes last and wins.
pub fn resource(node: &str, extra: &[KeyValue]) -> Resource {
    let mut b = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        b = b.with_service_name(SERVICE_NAME);
    }
    b.with_attributes([
        KeyValue::new("host.name", node.to_string()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ])
    .with_attributes(extra.iter().cloned())
    .build()
}

/// Registers every instrument of `INSTRUMENTS` on `provider`, each reading its points from
/// `points` when the SDK collects.
pub fn register(provider: &SdkMeterProvider, points: impl Fn() -> Points + Send + Sync + 'static) {
    let scope =
        opentelemetry::InstrumentationScope::builder(SERVICE_NAME).with_version(env!("CARGO_PKG_VERSION")).build();
    let meter = provider.meter_with_scope(scope);
    let points = std::sync::Arc::new(points);
    for i in INSTRUMENTS {
        let p = points.clone();
        let take = move || p().remove(i.name).unwrap_or_default();
        // The SDK keeps the callbacks once built; the returned handles need not be kept.
        match i.kind {
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(i.name)
                    .with_unit(i.unit)
                    .with_description(i.description)
                    .with_callback(move |o| take().iter().for_each(|(v, a)| o.observe(v.as_f64(), a)))
                    .build();
            }
            Kind::Counter => {
                meter
                    .u64_observable_counter(i.name)
                    .with_unit(i.unit)
                    .with_description(i.description)
                    .with_callback(move |o| take().iter().for_each(|(v, a)| o.observe(v.as_u64(), a)))
                    .build();
            }
            Kind::UpDown => {
                meter
                    .i64_observable_up_down_counter(i.name)
                    .with_unit(i.unit)
                    .with_description(i.description)
                    .with_callback(move |o| take().iter().for_each(|(v, a)| o.observe(v.as_i64(), a)))
                    .build();
            }
        }
    }
}

/// Starts OTLP export: the SDK's periodic reader (a thread of its own) collects every `interval`
/// (or `OTEL_METRIC_EXPORT_INTERVAL` when set) from the newest report in `snapshot` and sends it to
/// `<endpoint>/v1/metrics` (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` when set, as the
/// specification asks). The reader only reads the snapshot, so a slow or absent collector never
/// holds up collection or pushing. The provider is kept in a static for the life of the process:
/// never dropped, so its blocking HTTP client is never dropped on the async runtime (which panics).
pub fn spawn(
    endpoint: &str,
    node: &str,
    resource_extra: &[KeyValue],
    snapshot: Snapshot,
    xids: XidTally,
    interval: Duration,
) -> Result<(), OtlpError> {
    let mut url = metrics_url(endpoint)?;
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        url = std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").unwrap_or_default();
    } else {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = Logged { inner: builder.build()?, url: url.clone(), errors: Mutex::default() };
    let mut reader = PeriodicReader::builder(exporter);
    if !set("OTEL_METRIC_EXPORT_INTERVAL") {
        reader = reader.with_interval(interval);
    }
    let provider =
        SdkMeterProvider::builder().with_reader(reader.build()).with_resource(resource(node, resource_extra)).build();
    register(&provider, move || {
        let report = snapshot.read().unwrap_or_else(|p| p.into_inner());
        match report.as_ref() {
            Some(r) => observations(r, &xids.totals()),
            None => Points::new(),
        }
    });
    tracing::info!(url = %url, ?interval, "exporting metrics over OTLP");
    // A second call (none today) would keep both running; neither is ever dropped.
    if let Err(second) = PROVIDER.set(provider) {
        std::mem::forget(second);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::GpuSample;
    use opentelemetry_sdk::metrics::InMemoryMetricExporter;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    #[test]
    fn url_gets_the_metrics_path_once() {
        assert_eq!(metrics_url("http://c:4318").unwrap(), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/").unwrap(), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("https://c/v1/metrics").unwrap(), "https://c/v1/metrics");
        assert!(metrics_url("c:4318").is_err());
    }

    /// The SDK path end to end in memory: a GPU that leaves the report leaves the next export.
    #[test]
    fn the_sdk_exports_what_the_report_holds_and_forgets_what_left() {
        let mut r = crate::collect::blank_report("n1", 7, 1000);
        r.gpus = vec![
            GpuSample { index: 0, uuid: "GPU-a".into(), util_gpu_pct: Some(50.0), ..Default::default() },
            GpuSample { index: 1, uuid: "GPU-b".into(), util_gpu_pct: Some(10.0), ..Default::default() },
        ];
        let snapshot: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(r)));
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).with_interval(Duration::from_secs(3600)).build())
            .with_resource(resource("n1", &[KeyValue::new("faultline.cluster", "c1")]))
            .build();
        let s = snapshot.clone();
        register(&provider, move || observations(s.read().unwrap().as_ref().unwrap(), &Default::default()));
        let ids = |exporter: &InMemoryMetricExporter| -> Vec<String> {
            let all = exporter.get_finished_metrics().unwrap();
            let last = all.last().unwrap();
            let attrs: Vec<_> = last.resource().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert!(attrs.contains(&("host.name".into(), "n1".into())), "{attrs:?}");
            assert!(attrs.contains(&("faultline.cluster".into(), "c1".into())), "{attrs:?}");
            let mut out = Vec::new();
            for sm in last.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == "hw.gpu.utilization") {
                    let AggregatedMetrics::F64(MetricData::Gauge(g)) = m.data() else { panic!("not an f64 gauge") };
                    for p in g.data_points() {
                        let id = p.attributes().find(|k| k.key.as_str() == "hw.id").unwrap();
                        out.push(id.value.to_string());
                    }
                }
            }
            out.sort();
            out
        };
        provider.force_flush().unwrap();
        assert_eq!(ids(&exporter), ["GPU-a", "GPU-b"]);
        snapshot.write().unwrap().as_mut().unwrap().gpus.pop();
        provider.force_flush().unwrap();
        assert_eq!(ids(&exporter), ["GPU-a"]);
    }
}
