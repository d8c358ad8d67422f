//! In-process tests of the analyzer's HTTP server on a real loopback socket, with a fake clock and
//! a store seeded through the library: routing, auth, error bodies, the incidents API over what the
//! store holds, restore of open incidents, and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_analyzer::IncidentChange;
use faultline_analyzer::clock::FakeClock;
use faultline_analyzer::config::Config;
use faultline_analyzer::server::{self, AppState, OutboxPlanner};
use faultline_analyzer::store::{NewOutbox, Store};
use faultline_proto::{Action, ComponentId, FaultClass, Incident, IncidentStatus, Severity, TimelineEntry, rfc3339};
use serde_json::{Value, json};

const T0_MS: i64 = 1_700_000_000_000;
const TOKEN: &str = "test-token-123";

struct TestServer {
    url: String,
    state: Arc<AppState>,
    clock: Arc<FakeClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    async fn start(token: Option<&str>, store: Store) -> Self {
        Self::start_with(token, store, None).await
    }

    async fn start_with(token: Option<&str>, store: Store, planner: Option<Arc<dyn OutboxPlanner>>) -> Self {
        let cfg = Config { token: token.map(Into::into), list_limit: 50, ..Config::default() };
        let settings = cfg.build().unwrap();
        let clock = Arc::new(FakeClock::new(T0_MS));
        let state = AppState::with_store(&settings, store, clock.clone(), planner, Instant::now()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A long tick interval: the tests tick by hand with the fake clock.
        let handle = tokio::spawn(server::serve(listener, state.clone(), Duration::from_secs(3600), async move {
            let _ = rx.await;
        }));
        Self { url, state, clock, stop: Some(tx), handle: Some(handle) }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().get(format!("{}{path}", self.url)).bearer_auth(TOKEN)
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn post_report(&self, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/reports", self.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

fn report(node: &str, seq: u64) -> Value {
    json!({
        "schema_version": 1,
        "node": node,
        "agent_version": "0.1.0-test",
        "seq": seq,
        "timestamp_ms": T0_MS - 200 + seq as i64,
        "interval_ms": 10000,
        "gpus": [{"index": 0, "uuid": "GPU-0", "name": "H100", "serial": null, "pci_bus_id": "00000000:3B:00.0",
                  "util_gpu_pct": 97.0, "util_mem_pct": 40.0, "mem_total_bytes": 85899345920u64,
                  "mem_used_bytes": 1000, "mem_free_bytes": null, "temp_c": 61.0, "mem_temp_c": null,
                  "power_w": 650.0, "power_limit_w": 700.0, "energy_mj": null, "sm_clock_mhz": 1980,
                  "sm_clock_max_mhz": 1980, "mem_clock_mhz": null, "mem_clock_max_mhz": null, "throttle_mask": 0}],
    })
}

fn incident(n: u64, opened_s: f64, status: IncidentStatus, root: ComponentId, class: FaultClass) -> Incident {
    Incident {
        id: format!("inc-{n:06}"),
        root: root.clone(),
        class,
        severity: Severity::Critical,
        confidence: 0.95,
        status,
        summary: format!("{root} broke"),
        onset_s: opened_s - 1.0,
        opened_s,
        opened_at: rfc3339(opened_s),
        updated_s: if status == IncidentStatus::Resolved { opened_s + 100.0 } else { opened_s },
        resolved_s: (status == IncidentStatus::Resolved).then_some(opened_s + 100.0),
        affected_jobs: vec!["llm-70b".into()],
        paths: vec![vec!["job:llm-70b".into(), "job:llm-70b/rank3".into(), root.to_string(), "node-0001".into()]],
        evidence: vec![],
        timeline: vec![TimelineEntry { at_s: opened_s, what: "opened".into(), detail: "seeded".into() }],
        action: Action::ResetGpu,
    }
}

fn seeded_store() -> Store {
    let mut s = Store::open_in_memory().unwrap();
    let base = T0_MS as f64 / 1000.0;
    s.record(
        &[
            IncidentChange::Resolved(incident(
                1,
                base - 10_000.0,
                IncidentStatus::Resolved,
                ComponentId::nic("node-0002", "mlx5_1"),
                FaultClass::NicFlap,
            )),
            IncidentChange::Opened(incident(
                2,
                base - 100.0,
                IncidentStatus::Open,
                ComponentId::gpu("node-0001", 3),
                FaultClass::GpuLost,
            )),
        ],
        &[],
        base,
    )
    .unwrap();
    s
}

#[tokio::test]
async fn a_valid_report_is_accepted_and_counted_per_node() {
    let srv = TestServer::start(Some(TOKEN), Store::open_in_memory().unwrap()).await;
    let (status, body) = srv.post_report(&report("node-0001", 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"node": "node-0001", "seq": 1, "duplicate": false}));
    for seq in [2, 3, 7] {
        assert_eq!(srv.post_report(&report("node-0001", seq)).await.0, 200);
    }
    assert_eq!(srv.post_report(&report("node-0002", 1)).await.0, 200);
    let (status, nodes) = srv.get_json("/api/v1/nodes").await;
    assert_eq!(status, 200);
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let n1 = &nodes[0];
    assert_eq!(n1["node"], "node-0001");
    assert_eq!(n1["last_seq"], 7);
    assert_eq!(n1["reports"], 4);
    assert_eq!(n1["gaps"], 1);
    assert_eq!(n1["seqs_missing"], 3);
    assert_eq!(n1["gpus"], 1);
    assert_eq!(n1["reporting"], true);
    assert_eq!(n1["agent_version"], "0.1.0-test");
    // The engine's silence allowance is the one rule: 3 × 10 s plus the 20 s transit allowance.
    srv.clock.advance_ms(31_000);
    let (_, nodes) = srv.get_json("/api/v1/nodes").await;
    assert_eq!(nodes[0]["reporting"], true, "within the transit allowance");
    srv.clock.advance_ms(20_000);
    let (_, nodes) = srv.get_json("/api/v1/nodes").await;
    assert_eq!(nodes[0]["reporting"], false);
    srv.stop().await;
}

#[tokio::test]
async fn stored_incidents_are_served_and_open_ones_restored() {
    let srv = TestServer::start(Some(TOKEN), seeded_store()).await;
    let ids =
        |v: &Value| v.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (status, all) = srv.get_json("/api/v1/incidents").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), ["inc-000001", "inc-000002"]);
    let (_, open) = srv.get_json("/api/v1/incidents?status=open").await;
    assert_eq!(ids(&open), ["inc-000002"]);
    let (_, resolved) = srv.get_json("/api/v1/incidents?status=resolved").await;
    assert_eq!(ids(&resolved), ["inc-000001"]);
    // `since` as RFC 3339 and as Unix seconds: the old resolved one drops out.
    let since = rfc3339(T0_MS as f64 / 1000.0 - 1000.0);
    let (_, recent) = srv.get_json(&format!("/api/v1/incidents?since={since}")).await;
    assert_eq!(ids(&recent), ["inc-000002"]);
    let (_, recent) = srv.get_json(&format!("/api/v1/incidents?since={}", T0_MS / 1000 - 1000)).await;
    assert_eq!(ids(&recent), ["inc-000002"]);
    let (_, limited) = srv.get_json("/api/v1/incidents?limit=1").await;
    assert_eq!(ids(&limited), ["inc-000002"]);

    let (status, one) = srv.get_json("/api/v1/incidents/inc-000002").await;
    assert_eq!(status, 200);
    for field in ["id", "root", "class", "confidence", "opened_s", "opened_at", "affected_jobs", "paths", "status"] {
        assert!(one.get(field).is_some(), "incident lacks {field}: {one}");
    }
    assert_eq!(one["root"], "node-0001/gpu3");
    assert_eq!(one["class"], "gpu_lost");
    let (status, err) = srv.get_json("/api/v1/incidents/inc-000009").await;
    assert_eq!((status, err), (404, json!({"error": "no incident inc-000009"})));

    for (query, needle) in
        [("status=maybe", "maybe"), ("since=yesterday", "yesterday"), ("limit=0", "limit"), ("colour=red", "colour")]
    {
        let (status, err) = srv.get_json(&format!("/api/v1/incidents?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(err["error"].as_str().unwrap().contains(needle), "{query}: {err}");
    }

    // Components: URL-encoded or with its slash; the open incident makes the GPU unhealthy.
    for path in ["/api/v1/components/node-0001%2Fgpu3", "/api/v1/components/node-0001/gpu3"] {
        let (status, c) = srv.get_json(path).await;
        assert_eq!(status, 200, "{path}: {c}");
        assert_eq!(c["id"], "node-0001/gpu3");
        assert_eq!(c["healthy"], false);
        assert!(c["incidents"].as_array().unwrap().iter().any(|i| i == "inc-000002"), "{c}");
    }
    let (status, _) = srv.get_json("/api/v1/components/node-0009%2Fgpu1").await;
    assert_eq!(status, 404);
    let (status, err) = srv.get_json("/api/v1/components/not%20an%20id").await;
    assert_eq!(status, 400, "{err}");

    let (status, summary) = srv.get_json("/api/v1/summary").await;
    assert_eq!(status, 200);
    assert_eq!(summary["open_incidents"], 1);
    assert_eq!(summary["incidents_total"], 2);
    assert_eq!(summary["open_by_class"]["gpu_lost"], 1);

    let metrics = srv.get("/metrics").send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"faultline_incidents_open{class="gpu_lost",severity="critical"} 1"#,
        r#"faultline_incident_info{id="inc-000002",root="node-0001/gpu3",class="gpu_lost",severity="critical",action="reset_gpu",needs_person="true"} 1"#,
        r#"faultline_component_healthy{component="node-0001/gpu3",kind="gpu",node="node-0001"} 0"#,
        r#"faultline_job_affected{job_id="llm-70b"} 1"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    assert!(!metrics.contains(r#"id="inc-000001""#), "a resolved incident has no info series:\n{metrics}");
    // A tick with nothing new keeps everything as it was.
    srv.clock.advance_ms(1_000);
    assert_eq!(srv.state.tick_once().pending, 0);
    assert_eq!(srv.get_json("/api/v1/incidents?status=open").await.1.as_array().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn read_endpoints_need_the_token_but_health_and_metrics_do_not() {
    let srv = TestServer::start(Some(TOKEN), Store::open_in_memory().unwrap()).await;
    let c = reqwest::Client::new();
    for path in ["/api/v1/nodes", "/api/v1/incidents", "/api/v1/jobs", "/api/v1/topology", "/api/v1/summary"] {
        let r = c.get(format!("{}{path}", srv.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("Authorization"), "{path}: {body}");
        let r = c.get(format!("{}{path}", srv.url)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = c.get(format!("{}{path}", srv.url)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = c.get(format!("{}/healthz", srv.url)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "ok".to_string()));
    let r = c.get(format!("{}/metrics", srv.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let r = c
        .get(format!("{}/metrics", srv.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    srv.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let srv = TestServer::start(None, Store::open_in_memory().unwrap()).await;
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/api/v2/whatever", srv.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/api/v2/whatever"), "{body}");
    let r = c.get(format!("{}/api/v1/reports", srv.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("GET"), "{body}");
    let (status, err) = srv.get_json("/api/v1/jobs/job:nothing-here").await;
    assert_eq!((status, err), (404, json!({"error": "no job nothing-here"})));
    // Without a configured token, no header is needed.
    let r = c.get(format!("{}/api/v1/nodes", srv.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    srv.stop().await;
}

/// Enqueues one notification per incident change, keyed so a retry cannot duplicate it.
#[derive(Debug)]
struct OnePerChange;

impl OutboxPlanner for OnePerChange {
    fn plan(&self, change: &IncidentChange, now_s: f64) -> Vec<NewOutbox> {
        let (event, inc) = match change {
            IncidentChange::Opened(i) => ("opened", i),
            IncidentChange::Updated(i) => ("updated", i),
            IncidentChange::Resolved(i) => ("resolved", i),
        };
        vec![NewOutbox {
            receiver: "test".into(),
            incident_id: inc.id.clone(),
            event: event.into(),
            payload: serde_json::to_string(inc).unwrap(),
            idempotency_key: format!("test/{}/{event}/{}", inc.id, inc.updated_s),
            next_attempt_s: now_s,
        }]
    }
}

fn lost_gpu_report(node: &str, seq: u64, ts_ms: i64) -> Value {
    let mut r = report(node, seq);
    r["timestamp_ms"] = json!(ts_ms);
    r["gpus"][0]["state"] = json!("lost");
    r["urgent"] = json!(true);
    r["events"] = json!([{"ts_ms": ts_ms, "source": "nvml", "class": "xid", "severity": "critical",
                          "component": "gpu0", "xid": 79, "message": "GPU has fallen off the bus."}]);
    r
}

#[tokio::test]
async fn a_tick_records_new_incidents_after_the_stored_ids_with_their_notifications() {
    let srv = TestServer::start_with(Some(TOKEN), seeded_store(), Some(Arc::new(OnePerChange))).await;
    for seq in 1..=3 {
        assert_eq!(srv.post_report(&report("node-0005", seq)).await.0, 200);
    }
    srv.clock.advance_ms(1_000);
    srv.state.tick_once();
    let (status, body) = srv.post_report(&lost_gpu_report("node-0005", 4, T0_MS + 1_000)).await;
    assert_eq!(status, 200, "{body}");
    // Tick (with the fake clock) until the engine opens the incident; the engine decides how many
    // ticks hard evidence needs, the test only bounds it.
    let mut opened = None;
    for _ in 0..30 {
        srv.clock.advance_ms(1_000);
        let r = srv.state.tick_once();
        assert_eq!(r.pending, 0, "the store took every change");
        let (_, open) = srv.get_json("/api/v1/incidents?status=open").await;
        if let Some(i) = open.as_array().unwrap().iter().find(|i| i["root"] == "node-0005/gpu0") {
            opened = Some(i.clone());
            break;
        }
    }
    let opened = opened.expect("an incident for the lost GPU");
    // Seeded ids were inc-000001 and inc-000002: numbering continues right after them.
    assert_eq!(opened["id"], "inc-000003", "{opened}");
    assert_eq!(opened["class"], "gpu_lost");
    let (_, summary) = srv.get_json("/api/v1/summary").await;
    assert_eq!(summary["incidents_total"], 3, "{summary}");
    assert!(summary["outbox_pending"].as_u64().unwrap() >= 1, "notifications were enqueued with the change: {summary}");
    let metrics = srv.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("faultline_diagnosis_latency_seconds_count 1"), "{metrics}");
    assert!(metrics.contains(r#"faultline_incident_info{id="inc-000003",root="node-0005/gpu0""#), "{metrics}");
    srv.stop().await;
}

#[tokio::test]
async fn the_first_incident_of_an_empty_store_is_inc_000001() {
    let srv = TestServer::start(Some(TOKEN), Store::open_in_memory().unwrap()).await;
    assert_eq!(srv.post_report(&report("node-0006", 1)).await.0, 200);
    assert_eq!(srv.post_report(&lost_gpu_report("node-0006", 2, T0_MS)).await.0, 200);
    let mut ids = Vec::new();
    for _ in 0..30 {
        srv.clock.advance_ms(1_000);
        srv.state.tick_once();
        let (_, all) = srv.get_json("/api/v1/incidents").await;
        ids = all.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
        if !ids.is_empty() {
            break;
        }
    }
    assert_eq!(ids, ["inc-000001"]);
    srv.stop().await;
}

async fn post_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Deltas over HTTP: one against a report the analyzer never took is answered 409 (the agent then
/// sends it in full); after a full compact report, a delta against it is taken and rebuilds the
/// report; one against an older report is 409 again; garbage in a delta body is a 400.
#[tokio::test]
async fn a_delta_is_taken_against_the_last_accepted_report_and_409_otherwise() {
    use faultline_proto::wire::{self, delta};
    let srv = TestServer::start(Some(TOKEN), Store::open_in_memory().unwrap()).await;
    let compact = |seq: u64| {
        let r: faultline_proto::NodeReport = serde_json::from_value(report("node-0001", seq)).unwrap();
        wire::encode(&r)
    };
    let (c1, c2, c3) = (compact(1), compact(2), compact(3));
    let (status, text) =
        post_raw(&srv.url, delta::DELTA_CONTENT_TYPE, delta::encode("node-0001", 1, &c1, 2, &c2)).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("in full"), "{text}");
    let (status, text) = post_raw(&srv.url, wire::CONTENT_TYPE, c1.clone()).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) =
        post_raw(&srv.url, delta::DELTA_CONTENT_TYPE, delta::encode("node-0001", 1, &c1, 2, &c2)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"seq\":2"), "{text}");
    // Against seq 1 again: the analyzer now holds seq 2.
    let (status, text) =
        post_raw(&srv.url, delta::DELTA_CONTENT_TYPE, delta::encode("node-0001", 1, &c1, 3, &c3)).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("seq 2"), "{text}");
    let (status, text) = post_raw(&srv.url, delta::DELTA_CONTENT_TYPE, b"\xff\xfe not a delta".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    let node = srv.state.with_engine(|e| e.node_state("node-0001").map(|n| (n.last_seq, n.reports)));
    assert_eq!(node, Some((2, 2)), "the refused deltas changed nothing");
    srv.stop().await;
}

/// A node's own token may not probe another node's delta base: the delta is refused (403) before
/// it is rebuilt, so the answer says nothing of which report the analyzer holds for that node.
#[tokio::test]
async fn a_node_token_cannot_send_a_delta_for_another_node() {
    use faultline_proto::wire::{self, delta};
    let mut cfg = Config { token: Some(TOKEN.into()), list_limit: 50, ..Config::default() };
    cfg.auth.node_tokens.insert("node-0002".into(), "node-2-own-token".into());
    let settings = cfg.build().unwrap();
    let clock = Arc::new(FakeClock::new(T0_MS));
    let state = AppState::with_store(&settings, Store::open_in_memory().unwrap(), clock, None, Instant::now()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server::serve(listener, state, Duration::from_secs(3600), async move {
        let _ = rx.await;
    }));
    let r: faultline_proto::NodeReport = serde_json::from_value(report("node-0001", 1)).unwrap();
    let c1 = wire::encode(&r);
    let body = delta::encode("node-0001", 1, &c1, 2, &c1);
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth("node-2-own-token")
        .header("content-type", delta::DELTA_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("seq"), "a refused delta tells nothing of the base: {text}");
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}
