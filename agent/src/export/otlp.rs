//! OpenTelemetry export of the agent's metrics: every interval the latest report snapshot becomes one
//! OTLP `ExportMetricsServiceRequest`, sent as protobuf over HTTP to `<endpoint>/v1/metrics` from a
//! thread of its own. GPU values use the OpenTelemetry hardware conventions (`hw.gpu.*`,
//! `hw.temperature`, `hw.power`, `hw.energy`, `hw.errors` with `hw.type=gpu`, `hw.id`=UUID); the
//! rest (NIC counters, host, XID events) is named `faultline.*`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_proto::NodeReport;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::Snapshot;

/// Export failures are logged at most this often: a collector that is down for an hour must not fill
/// the journal (60 s is the cadence the brief for this exporter asks for).
pub const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// Upper bound on one export request: past it the export is given up and the next interval tries
/// again with fresher values (10 s is the OTLP exporter default timeout).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The OTLP/HTTP content type for binary protobuf bodies.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {0:?} must be a URL starting with http:// or https://")]
    BadEndpoint(String),
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[from] std::io::Error),
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

fn kv(key: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn int_kv(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        ..Default::default()
    }
}

/// Metric names in the order first seen, each with its points.
struct Builder {
    start_ns: u64,
    now_ns: u64,
    metrics: Vec<Metric>,
    index: BTreeMap<String, usize>,
}

enum Kind {
    Gauge,
    Counter,
}

impl Builder {
    fn push(&mut self, kind: Kind, name: &str, unit: &str, desc: &str, attrs: Vec<KeyValue>, value: f64) {
        if !value.is_finite() {
            return;
        }
        let point = NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: if matches!(kind, Kind::Counter) { self.start_ns } else { 0 },
            time_unix_nano: self.now_ns,
            value: Some(match kind {
                Kind::Counter => number_data_point::Value::AsInt(value as i64),
                Kind::Gauge => number_data_point::Value::AsDouble(value),
            }),
            ..Default::default()
        };
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let data = match kind {
                    Kind::Gauge => metric::Data::Gauge(Gauge { data_points: Vec::new() }),
                    Kind::Counter => metric::Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                };
                self.metrics.push(Metric {
                    name: name.to_string(),
                    description: desc.to_string(),
                    unit: unit.to_string(),
                    data: Some(data),
                    ..Default::default()
                });
                self.index.insert(name.to_string(), self.metrics.len() - 1);
                self.metrics.len() - 1
            }
        };
        match &mut self.metrics[i].data {
            Some(metric::Data::Gauge(g)) => g.data_points.push(point),
            Some(metric::Data::Sum(s)) => s.data_points.push(point),
            _ => {}
        }
    }
}

/// A NIC counter name made safe as the last part of a metric name (`port_rcv_errors`).
fn counter_suffix(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The OTLP request for one report. `start_ns` is when the cumulative counters started (the agent's
/// start), `xid_totals` the XID events counted so far per (component, xid).
pub fn build_request(
    r: &NodeReport,
    start_ns: u64,
    now_ns: u64,
    xid_totals: &BTreeMap<(String, u32), u64>,
) -> ExportMetricsServiceRequest {
    let mut b = Builder { start_ns, now_ns, metrics: Vec::new(), index: BTreeMap::new() };
    for g in &r.gpus {
        let gpu = || vec![kv("hw.type", "gpu"), kv("hw.id", g.uuid.clone()), kv("hw.name", g.name.clone())];
        let gpu_plain = || vec![kv("hw.id", g.uuid.clone()), kv("hw.name", g.name.clone())];
        if let Some(u) = g.util_gpu_pct {
            b.push(
                Kind::Gauge,
                "hw.gpu.utilization",
                "1",
                "Fraction of time the GPU was busy.",
                gpu_plain(),
                u / 100.0,
            );
        }
        if let Some(u) = g.util_mem_pct {
            b.push(
                Kind::Gauge,
                "hw.gpu.memory.utilization",
                "1",
                "Fraction of time GPU memory was being read or written.",
                gpu_plain(),
                u / 100.0,
            );
        }
        if let Some(m) = g.mem_used_bytes {
            b.push(Kind::Gauge, "hw.gpu.memory.usage", "By", "GPU memory in use.", gpu_plain(), m as f64);
        }
        if let Some(m) = g.mem_total_bytes {
            b.push(Kind::Gauge, "hw.gpu.memory.limit", "By", "GPU memory size.", gpu_plain(), m as f64);
        }
        if let Some(t) = g.temp_c {
            b.push(Kind::Gauge, "hw.temperature", "Cel", "GPU temperature.", gpu(), t);
        }
        if let Some(p) = g.power_w {
            b.push(Kind::Gauge, "hw.power", "W", "GPU power draw.", gpu(), p);
        }
        if let Some(e) = g.energy_mj {
            b.push(Kind::Counter, "hw.energy", "J", "GPU energy since the driver loaded.", gpu(), (e / 1000) as f64);
        }
        for (ty, v) in [("ecc_corrected", g.ecc.sbe_aggregate), ("ecc_uncorrected", g.ecc.dbe_aggregate)] {
            if let Some(v) = v {
                let mut a = gpu();
                a.push(kv("error.type", ty));
                b.push(
                    Kind::Counter,
                    "hw.errors",
                    "{error}",
                    "GPU hardware errors counted by the driver (ECC, PCIe replays).",
                    a,
                    v as f64,
                );
            }
        }
        if let Some(rp) = g.pcie.as_ref().and_then(|p| p.replay_count) {
            let mut a = gpu();
            a.push(kv("error.type", "pcie_replay"));
            b.push(
                Kind::Counter,
                "hw.errors",
                "{error}",
                "GPU hardware errors counted by the driver (ECC, PCIe replays).",
                a,
                rp as f64,
            );
        }
        if let Some(c) = g.sm_clock_mhz {
            b.push(Kind::Gauge, "faultline.gpu.clock.sm", "MHz", "GPU SM clock.", gpu_plain(), c as f64);
        }
        if let Some(m) = g.throttle_mask {
            b.push(
                Kind::Gauge,
                "faultline.gpu.throttled",
                "1",
                "1 while any clock throttle reason other than idle is active.",
                gpu_plain(),
                if m & !1 != 0 { 1.0 } else { 0.0 },
            );
        }
    }
    let by_component: BTreeMap<String, &str> =
        r.gpus.iter().map(|g| (format!("gpu{}", g.index), g.uuid.as_str())).collect();
    for ((component, xid), n) in xid_totals {
        let mut a = vec![int_kv("faultline.xid", i64::from(*xid)), kv("faultline.component", component.clone())];
        if let Some(uuid) = by_component.get(component) {
            a.push(kv("hw.id", *uuid));
        }
        b.push(
            Kind::Counter,
            "faultline.gpu.xid.events",
            "{event}",
            "GPU XID events seen by this agent.",
            a,
            *n as f64,
        );
    }
    for n in &r.nics {
        let attrs = || {
            let mut a = vec![kv("hw.id", n.name.clone())];
            if let Some(d) = &n.netdev {
                a.push(kv("network.interface.name", d.clone()));
            }
            if let Some(p) = n.port {
                a.push(int_kv("faultline.nic.port", i64::from(p)));
            }
            a
        };
        if let Some(c) = n.carrier {
            b.push(
                Kind::Gauge,
                "faultline.nic.carrier",
                "1",
                "1 while the link has carrier.",
                attrs(),
                if c { 1.0 } else { 0.0 },
            );
        }
        if let Some(c) = n.carrier_changes {
            b.push(
                Kind::Counter,
                "faultline.nic.carrier_changes",
                "{change}",
                "Link carrier changes.",
                attrs(),
                c as f64,
            );
        }
        if let Some(s) = n.speed_mbps {
            b.push(Kind::Gauge, "faultline.nic.speed", "Mbit/s", "Link speed.", attrs(), s as f64);
        }
        if let Some(s) = n.rate_gbps {
            b.push(Kind::Gauge, "faultline.nic.rate", "Gbit/s", "InfiniBand link rate.", attrs(), s);
        }
        for (name, v) in &n.counters {
            let metric = format!("faultline.nic.{}", counter_suffix(name));
            b.push(Kind::Counter, &metric, "1", "NIC hardware counter, as the driver names it.", attrs(), *v as f64);
        }
    }
    if let Some(h) = &r.host {
        if let Some(u) = h.cpu_util_pct {
            b.push(Kind::Gauge, "faultline.host.cpu.utilization", "1", "Host CPU busy fraction.", vec![], u / 100.0);
        }
        if let Some(m) = h.mem_used_bytes {
            b.push(Kind::Gauge, "faultline.host.memory.usage", "By", "Host memory in use.", vec![], m as f64);
        }
        if let Some(m) = h.mem_total_bytes {
            b.push(Kind::Gauge, "faultline.host.memory.limit", "By", "Host memory size.", vec![], m as f64);
        }
        for t in &h.temps {
            b.push(
                Kind::Gauge,
                "faultline.host.temperature",
                "Cel",
                "Host sensor temperature.",
                vec![kv("hw.name", t.name.clone())],
                t.celsius,
            );
        }
    }
    b.push(
        Kind::Gauge,
        "faultline.agent.report.seq",
        "1",
        "Sequence number of the exported report.",
        vec![],
        r.seq as f64,
    );
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "faultline-agent"),
                    kv("service.version", env!("CARGO_PKG_VERSION")),
                    kv("host.name", r.node.clone()),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "faultline-agent".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: b.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Logs an export failure unless one was logged less than `ERROR_LOG_EVERY` ago; counts the rest.
#[derive(Debug, Default)]
pub struct ErrorThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorThrottle {
    /// True when this failure should be logged now; `suppressed()` then says how many were not.
    pub fn should_log(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.duration_since(t) < ERROR_LOG_EVERY => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// Failures not logged since the last logged one (reset by reading).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Starts the export thread: every `interval` the newest report in `snapshot` (if it is new) is sent
/// to `<endpoint>/v1/metrics`. The thread only reads the snapshot, so a slow or absent collector never
/// holds up collection or pushing.
pub fn spawn(
    endpoint: &str,
    snapshot: Snapshot,
    xids: crate::export::xids::XidTally,
    interval: Duration,
) -> Result<std::thread::JoinHandle<()>, OtlpError> {
    let url = metrics_url(endpoint)?;
    let start_ns = unix_ns();
    let handle = std::thread::Builder::new().name("otlp".into()).spawn(move || {
        // Built on this thread: the blocking client must not be created or dropped on the async runtime.
        let client = match reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the OTLP HTTP client; not exporting");
                return;
            }
        };
        tracing::info!(url = %url, ?interval, "exporting metrics over OTLP");
        let mut errors = ErrorThrottle::default();
        let mut last_seq = None;
        let mut next = Instant::now() + interval.min(Duration::from_secs(1));
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            if next < Instant::now() {
                next = Instant::now() + interval;
            }
            let report = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(report) = report else { continue };
            if last_seq == Some(report.seq) {
                continue;
            }
            last_seq = Some(report.seq);
            let body = build_request(&report, start_ns, unix_ns(), &xids.totals()).encode_to_vec();
            let result = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, PROTOBUF_CONTENT_TYPE)
                .body(body)
                .send()
                .map_err(|e| crate::export::push::error_chain(&e))
                .and_then(|resp| {
                    if resp.status().is_success() { Ok(()) } else { Err(format!("collector answered {}", resp.status())) }
                });
            if let Err(e) = result
                && errors.should_log(Instant::now())
            {
                tracing::warn!(url = %url, error = %e, suppressed = errors.take_suppressed(), "OTLP metrics export failed (logged at most once a minute)");
            }
        }
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{GpuSample, NicSample};

    #[test]
    fn url_gets_the_metrics_path_once() {
        assert_eq!(metrics_url("http://c:4318").unwrap(), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/").unwrap(), "http://c:4318/v1/metrics");
        assert_eq!(metrics_url("https://c/v1/metrics").unwrap(), "https://c/v1/metrics");
        assert!(metrics_url("c:4318").is_err());
    }

    #[test]
    fn gpu_values_use_hardware_conventions() {
        let mut r = crate::collect::blank_report("n1", 7, 1000);
        r.gpus = vec![GpuSample {
            index: 0,
            uuid: "GPU-abc".into(),
            name: "H100".into(),
            util_gpu_pct: Some(50.0),
            mem_used_bytes: Some(1024),
            mem_total_bytes: Some(4096),
            temp_c: Some(61.0),
            ..Default::default()
        }];
        r.nics = vec![NicSample {
            name: "mlx5_0".into(),
            counters: [("symbol_error".to_string(), 3u64)].into_iter().collect(),
            ..Default::default()
        }];
        let totals = [(("gpu0".to_string(), 79u32), 2u64)].into_iter().collect();
        let req = build_request(&r, 1, 2, &totals);
        let bytes = req.encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        let rm = &back.resource_metrics[0];
        let res = rm.resource.as_ref().unwrap();
        assert!(res.attributes.iter().any(|k| k.key == "host.name"
            && k.value.as_ref().unwrap().value == Some(any_value::Value::StringValue("n1".into()))));
        let m = &rm.scope_metrics[0].metrics;
        let util = m.iter().find(|m| m.name == "hw.gpu.utilization").unwrap();
        let Some(metric::Data::Gauge(g)) = &util.data else { panic!("not a gauge") };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(0.5)));
        assert!(g.data_points[0].attributes.iter().any(|k| k.key == "hw.id"));
        let xid = m.iter().find(|m| m.name == "faultline.gpu.xid.events").unwrap();
        let Some(metric::Data::Sum(s)) = &xid.data else { panic!("not a sum") };
        assert!(s.is_monotonic);
        assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(2)));
        assert!(m.iter().any(|m| m.name == "faultline.nic.symbol_error"));
        assert!(m.iter().any(|m| m.name == "hw.temperature"));
    }

    #[test]
    fn errors_are_logged_at_most_once_a_minute() {
        let mut t = ErrorThrottle::default();
        let t0 = Instant::now();
        assert!(t.should_log(t0));
        assert!(!t.should_log(t0 + Duration::from_secs(1)));
        assert!(!t.should_log(t0 + Duration::from_secs(59)));
        assert_eq!(t.take_suppressed(), 2);
        assert!(t.should_log(t0 + Duration::from_secs(61)));
    }
}
