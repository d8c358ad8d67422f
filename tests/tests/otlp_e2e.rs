//! OpenTelemetry export end to end: a real agent (fake NVML) and a real analyzer, both given
//! `--otlp-endpoint`, export to an OTLP/HTTP receiver run by this test, which decodes every body
//! with the OTLP protobuf types. The agent's metrics must carry `hw.gpu.*` with the GPU's UUID; the
//! analyzer must send `ingest` spans, and a `diagnosis` span once an XID 79 opens an incident.
//! Without an endpoint the agent says nothing about OTLP; with a dead one it says so once. The
//! standard `OTEL_EXPORTER_OTLP_COMPRESSION`/`_HEADERS` variables give gzip bodies and extra headers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_tests::{Proc, bin, fake_nvml_lib, free_port, get_json, start_analyzer, wait_for};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;
use serde_json::{Value, json};

const TOKEN: &str = "otlp-e2e-token";
const NODE: &str = "otlp-node";
/// Generous for a loaded CI machine: reports come every second, span batches within one more.
const DEADLINE: Duration = Duration::from_secs(60);
/// The UUID the fake NVML reports for GPU 3.
const GPU3_UUID: &str = "GPU-0e1e0000-0000-4000-8000-000000000003";

/// What the receiver decoded, in arrival order.
#[derive(Default)]
struct Received {
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    /// Requests it could not take: wrong path, wrong content type, undecodable body.
    refused: Vec<String>,
    /// Per metrics request: its `Content-Encoding` and `X-Scope-OrgID` headers (empty when absent).
    metrics_headers: Vec<(String, String)>,
}

/// A minimal OTLP/HTTP receiver on 127.0.0.1: `POST /v1/metrics` and `POST /v1/traces` with
/// `application/x-protobuf` bodies, keep-alive connections, one thread per connection.
fn start_receiver() -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let g = g.clone();
            std::thread::spawn(move || serve_conn(conn, &g));
        }
    });
    (url, got)
}

fn serve_conn(conn: TcpStream, got: &Mutex<Received>) {
    let mut write = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let (mut len, mut ctype, mut encoding, mut tenant) = (0usize, String::new(), String::new(), String::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "content-type" => ctype = v.trim().to_string(),
                    "content-encoding" => encoding = v.trim().to_ascii_lowercase(),
                    "x-scope-orgid" => tenant = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if encoding == "gzip" {
            let mut plain = Vec::new();
            if flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain).is_err() {
                got.lock().unwrap().refused.push(format!("{method} {path}: bad gzip body"));
                return;
            }
            body = plain;
        }
        let ok = {
            let mut g = got.lock().unwrap();
            if path == "/v1/metrics" {
                g.metrics_headers.push((encoding.clone(), tenant.clone()));
            }
            let decoded = match (method.as_str(), path.as_str(), ctype.as_str()) {
                ("POST", "/v1/metrics", "application/x-protobuf") => {
                    ExportMetricsServiceRequest::decode(body.as_slice()).map(|m| g.metrics.push(m)).is_ok()
                }
                ("POST", "/v1/traces", "application/x-protobuf") => {
                    ExportTraceServiceRequest::decode(body.as_slice()).map(|t| g.traces.push(t)).is_ok()
                }
                _ => false,
            };
            if !decoded {
                g.refused.push(format!("{method} {path} {ctype} ({len} bytes)"));
            }
            decoded
        };
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        let resp = format!("HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
        if write.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|k| k.key == key).and_then(|k| match k.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|k| k.key == key).and_then(|k| match k.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    })
}

/// Attribute sets of every data point of metric `name` the agent of `NODE` exported.
fn points(got: &Received, name: &str) -> Vec<Vec<KeyValue>> {
    let mut out = Vec::new();
    for req in &got.metrics {
        for rm in &req.resource_metrics {
            let res = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            if str_attr(res, "service.name") != Some("faultline-agent") || str_attr(res, "host.name") != Some(NODE) {
                continue;
            }
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
                match &m.data {
                    Some(metric::Data::Gauge(g)) => out.extend(g.data_points.iter().map(|p| p.attributes.clone())),
                    Some(metric::Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| p.attributes.clone())),
                    _ => {}
                }
            }
        }
    }
    out
}

/// Every analyzer span named `name`, as its attributes.
fn spans(got: &Received, name: &str) -> Vec<Vec<KeyValue>> {
    let mut out = Vec::new();
    for req in &got.traces {
        for rs in &req.resource_spans {
            let res = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            if str_attr(res, "service.name") != Some("faultline-analyzer") {
                continue;
            }
            for s in rs.scope_spans.iter().flat_map(|s| &s.spans).filter(|s| s.name == name) {
                assert_eq!(s.trace_id.len(), 16, "trace id of span {name}");
                assert_eq!(s.span_id.len(), 8, "span id of span {name}");
                assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "span {name} ends before it starts");
                out.push(s.attributes.clone());
            }
        }
    }
    out
}

fn write_state(path: &Path, v: Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn gpus() -> Value {
    (0..4).map(|i| json!({"uuid": format!("GPU-0e1e0000-0000-4000-8000-{i:012}")})).collect()
}

fn agent_cmd(dir: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", NODE, "--interval", "1s", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .env("FAKE_NVML_STATE", state)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn agent_metrics_and_analyzer_spans_reach_an_otlp_receiver() {
    let (otlp, got) = start_receiver();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({ "gpus": gpus() }));
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--otlp-endpoint", &otlp]);
    let mut cmd = agent_cmd(dir.path(), &state);
    cmd.args(["--analyzer", &analyzer.url, "--token", TOKEN, "--otlp-endpoint", &otlp]);
    let agent = Proc::spawn(cmd);

    // Agent metrics: hw.gpu.* per GPU, identified by its UUID, under the node's resource.
    wait_for(DEADLINE, "hw.gpu.utilization for GPU 3 over OTLP", || {
        let g = got.lock().unwrap();
        points(&g, "hw.gpu.utilization")
            .iter()
            .any(|a| str_attr(a, "hw.id") == Some(GPU3_UUID) && str_attr(a, "hw.name").is_some())
            .then_some(())
    });
    {
        let g = got.lock().unwrap();
        for name in ["hw.gpu.memory.usage", "hw.gpu.memory.limit"] {
            assert!(
                points(&g, name).iter().any(|a| str_attr(a, "hw.id") == Some(GPU3_UUID)),
                "{name} missing for {GPU3_UUID}"
            );
        }
        let temps = points(&g, "hw.temperature");
        assert!(
            temps.iter().any(|a| str_attr(a, "hw.type") == Some("gpu") && str_attr(a, "hw.id") == Some(GPU3_UUID)),
            "hw.temperature with hw.type=gpu missing: {temps:?}"
        );
    }

    // Analyzer spans: one `ingest` per report of this node, naming it.
    wait_for(DEADLINE, "analyzer ingest spans for the node", || {
        let g = got.lock().unwrap();
        let ours: Vec<_> =
            spans(&g, "ingest").into_iter().filter(|a| str_attr(a, "faultline.node") == Some(NODE)).collect();
        (ours.len() >= 2
            && ours.iter().all(|a| {
                int_attr(a, "faultline.report.seq").is_some()
                    && int_attr(a, "http.request.body.size").is_some_and(|b| b > 0)
                    && str_attr(a, "faultline.ingest.result").is_some_and(|r| r == "accepted" || r == "duplicate")
            }))
        .then_some(())
    });
    assert!(spans(&got.lock().unwrap(), "diagnosis").is_empty(), "a diagnosis span before any fault");

    // An XID 79 (GPU fallen off the bus) on GPU 3: the analyzer opens an incident in a tick, and the
    // agent counts the XID in its own metrics.
    write_state(&state, json!({ "gpus": gpus(), "events": [{"id": 1, "gpu": 3, "type": "xid", "xid": 79}] }));
    wait_for(DEADLINE, "a diagnosis span with an opened incident", || {
        let g = got.lock().unwrap();
        spans(&g, "diagnosis")
            .iter()
            .any(|a| {
                int_attr(a, "faultline.incidents.opened").unwrap_or(0) >= 1
                    && str_attr(a, "faultline.incidents.roots").is_some_and(|r| r.contains(NODE))
            })
            .then_some(())
    });
    wait_for(DEADLINE, "faultline.gpu.xid.events with xid 79", || {
        let g = got.lock().unwrap();
        points(&g, "faultline.gpu.xid.events").iter().any(|a| int_attr(a, "faultline.xid") == Some(79)).then_some(())
    });
    let g = got.lock().unwrap();
    assert!(g.refused.is_empty(), "receiver refused requests: {:?}", g.refused);
    drop(g);
    drop(agent);
}

/// The standard `OTEL_EXPORTER_OTLP_*` variables reach the agent's exporter: gzip bodies and an
/// extra header (a tenant id, as Mimir and Thanos receivers want), with no flag of ours.
#[test]
fn otel_variables_turn_on_gzip_and_headers() {
    let (otlp, got) = start_receiver();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({ "gpus": gpus() }));
    let mut cmd = agent_cmd(dir.path(), &state);
    cmd.args(["--otlp-endpoint", &otlp])
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "X-Scope-OrgID=tenant-a")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test");
    let agent = Proc::spawn(cmd);
    wait_for(DEADLINE, "hw.gpu.utilization over gzip", || {
        let g = got.lock().unwrap();
        points(&g, "hw.gpu.utilization").iter().any(|a| str_attr(a, "hw.id") == Some(GPU3_UUID)).then_some(())
    });
    let g = got.lock().unwrap();
    assert!(g.refused.is_empty(), "receiver refused requests: {:?}", g.refused);
    assert!(
        g.metrics_headers.iter().all(|(enc, tenant)| enc == "gzip" && tenant == "tenant-a"),
        "{:?}",
        g.metrics_headers
    );
    let res = g.metrics[0].resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(str_attr(&res.attributes, "deployment.environment.name"), Some("test"));
    drop(g);
    drop(agent);
}

/// The analyzer's `last_seq` of `NODE`, if it has seen the node.
fn analyzer_seq(analyzer: &Proc) -> Option<u64> {
    let nodes = get_json(&format!("{}/api/v1/nodes", analyzer.url), Some(TOKEN))?;
    nodes.as_array()?.iter().find(|n| n["node"] == NODE)?["last_seq"].as_u64()
}

#[test]
fn without_an_endpoint_nothing_is_said_about_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({ "gpus": gpus() }));
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--db")
        .arg(dir.path().join("faultline.db"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "info");
    let analyzer = Proc::spawn(cmd);
    let mut cmd = agent_cmd(dir.path(), &state);
    cmd.args(["--analyzer", &analyzer.url, "--token", TOKEN]);
    let agent = Proc::spawn(cmd);
    // Several collection cycles and ingests, each of which would have exported with an endpoint.
    wait_for(DEADLINE, "four reports ingested", || (analyzer_seq(&analyzer)? >= 4).then_some(()));
    for (who, err) in [("agent", agent.stderr()), ("analyzer", analyzer.stderr())] {
        let err = err.to_ascii_lowercase();
        for word in ["otlp", "opentelemetry", "otel"] {
            assert!(!err.contains(word), "{who} mentions {word:?} with no endpoint configured:\n{err}");
        }
    }
}

#[test]
fn a_dead_collector_is_reported_once_and_collection_and_ingest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nvml.json");
    write_state(&state, json!({ "gpus": gpus() }));
    // A port nobody listens on: every export fails with connection refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--otlp-endpoint", &dead]);
    let mut cmd = agent_cmd(dir.path(), &state);
    cmd.args(["--analyzer", &analyzer.url, "--token", TOKEN, "--otlp-endpoint", &dead]);
    let agent = Proc::spawn(cmd);
    wait_for(DEADLINE, "the export failures to be logged", || {
        (agent.stderr().contains("OTLP metrics export failed") && analyzer.stderr().contains("OTLP span export failed"))
            .then_some(())
    });
    // Collection and ingest keep going: five more reports, whose exports failed too.
    let seq = analyzer_seq(&analyzer).unwrap_or(0);
    wait_for(DEADLINE, "five more reports ingested", || (analyzer_seq(&analyzer)? >= seq + 5).then_some(()));
    let n = agent.stderr().matches("OTLP metrics export failed").count();
    assert_eq!(n, 1, "agent export failures must be logged at most once a minute:\n{}", agent.stderr());
    let n = analyzer.stderr().matches("OTLP span export failed").count();
    assert_eq!(n, 1, "analyzer export failures must be logged at most once a minute:\n{}", analyzer.stderr());
}
