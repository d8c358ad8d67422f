//! The notification outbox and its delivery worker in process, with a fake clock and real HTTP
//! receivers on loopback: order per receiver, capped doubling backoff, permanent 4xx failures,
//! `Retry-After`, one receiver down never holding up another, signatures, Alertmanager re-posts and
//! label supersession, and the notification metrics.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use faultline_analyzer::IncidentChange;
use faultline_analyzer::clock::{Clock, FakeClock};
use faultline_analyzer::config::Config;
use faultline_analyzer::notify::config::Secret;
use faultline_analyzer::notify::{self, Planner, webhook};
use faultline_analyzer::server::{AppState, OutboxPlanner};
use faultline_analyzer::store::{OutboxState, Store};
use faultline_proto::{
    Action, ComponentId, Evidence, FaultClass, Incident, IncidentStatus, Severity, TimelineEntry, rfc3339,
};
use serde_json::Value;

const T0_MS: i64 = 1_700_000_000_000;
const SECRET: &str = "s3cret-hmac-key";

/// One request a test receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn key(&self) -> String {
        self.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A receiver on 127.0.0.1:0 that records every request and answers with `status` (and a
/// `Retry-After` of `retry_after` seconds when that is not 0).
#[derive(Clone)]
struct Sink {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    retry_after: Arc<AtomicU16>,
    url: String,
}

impl Sink {
    async fn start(status: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sink = Sink {
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(status)),
            retry_after: Arc::new(AtomicU16::new(0)),
            url,
        };
        async fn handle(State(s): State<Sink>, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
            s.got.lock().unwrap().push(Got { path: uri.path().to_string(), headers, body });
            let status = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
            let ra = s.retry_after.load(Ordering::SeqCst);
            let mut h = HeaderMap::new();
            if ra > 0 {
                h.insert("retry-after", ra.to_string().parse().unwrap());
            }
            (status, h, if status.is_success() { "ok" } else { "nope" })
        }
        let app = Router::new().route("/{*path}", post(handle)).with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_count(&self, n: usize, what: &str) -> Vec<Got> {
        wait(what, || {
            let g = self.got();
            (g.len() >= n).then_some(g)
        })
        .await
    }
}

/// Polls `f` every 20 ms for up to 30 s.
async fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn incident(id: &str, opened_s: f64) -> Incident {
    Incident {
        id: id.into(),
        root: ComponentId::gpu("node-0004", 2),
        class: FaultClass::GpuThermalThrottle,
        severity: Severity::Warning,
        confidence: 0.8,
        status: IncidentStatus::Open,
        summary: "node-0004/gpu2 is thermally throttled (gpu_thermal_throttle); 1 job affected".into(),
        onset_s: opened_s - 5.0,
        opened_s,
        opened_at: rfc3339(opened_s),
        updated_s: opened_s,
        resolved_s: None,
        affected_jobs: vec!["llm-a".into()],
        paths: vec![vec!["job:llm-a".into(), "job:llm-a/rank2".into(), "node-0004/gpu2".into()]],
        evidence: vec![Evidence {
            at_s: opened_s - 5.0,
            component: ComponentId::gpu("node-0004", 2),
            kind: "thermal_throttle".into(),
            detail: "thermal slowdown for 30 s at 91 °C".into(),
        }],
        timeline: vec![TimelineEntry { at_s: opened_s, what: "opened".into(), detail: String::new() }],
        action: Action::ReplacePart,
    }
}

struct Rig {
    state: Arc<AppState>,
    clock: Arc<FakeClock>,
    planner: Planner,
    _workers: notify::Workers,
}

impl Rig {
    fn start(notify_toml: &str) -> Rig {
        let cfg = Config::parse(notify_toml).unwrap();
        let settings = cfg.build().unwrap();
        let notify = Arc::new(settings.notify.clone());
        let planner = Planner::new(notify.clone());
        let clock = Arc::new(FakeClock::new(T0_MS));
        let state = AppState::with_store(
            &settings,
            Store::open_in_memory().unwrap(),
            clock.clone(),
            Some(Arc::new(planner.clone()) as Arc<dyn OutboxPlanner>),
            Instant::now(),
        )
        .unwrap();
        let workers = notify::spawn(state.clone(), notify).unwrap();
        Rig { state, clock, planner, _workers: workers }
    }

    /// Records `change` and its notifications the way a tick does, keeping `open` current.
    fn record(&self, change: IncidentChange) {
        let now_s = self.clock.now_s();
        let outbox = self.planner.plan(&change, now_s);
        let inc = match &change {
            IncidentChange::Opened(i) | IncidentChange::Updated(i) | IncidentChange::Resolved(i) => i.clone(),
        };
        self.state.note_incident(&inc);
        self.state.with_db(|s| s.record(&[change], &outbox, now_s)).unwrap();
    }

    fn rows(&self, receiver: &str) -> Vec<faultline_analyzer::store::OutboxRow> {
        self.state.with_db(|s| s.outbox_rows(receiver)).unwrap()
    }

    fn metrics(&self) -> String {
        let snap = faultline_analyzer::metrics::Snapshot::default();
        self.state.metrics.render(&snap, false).unwrap().0
    }

    /// Waits until `series` reads `value` (a receiver sees a request before the sender counts it).
    async fn wait_metric(&self, series: &str, value: f64) -> String {
        wait(&format!("{series} = {value}"), || {
            let m = self.metrics();
            (metric(&m, series) == Some(value)).then_some(m)
        })
        .await
    }
}

/// Equal to the millisecond: the worker computes times from the clock's milliseconds.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_receiver_gets_its_events_in_order_after_backoff_and_others_are_not_held_up() {
    let hook = Sink::start(503).await;
    let chat = Sink::start(200).await;
    let rig = Rig::start(&format!(
        r#"
        [notify]
        public_url = "https://fl.example.org"
        retry_initial = "1s"
        retry_max = "3s"
        [[notify.webhook]]
        name = "hook"
        url = "{}/hook"
        secret = "{SECRET}"
        [[notify.slack]]
        name = "chat"
        url = "{}/chat"
        events = ["opened", "updated", "resolved"]
        "#,
        hook.url, chat.url
    ));
    let t0 = rig.clock.now_s();
    let mut inc = incident("inc-000001", t0);
    rig.record(IncidentChange::Opened(inc.clone()));
    rig.clock.advance_ms(10);
    inc.updated_s = rig.clock.now_s();
    inc.affected_jobs.push("llm-b".into());
    rig.record(IncidentChange::Updated(inc.clone()));
    rig.clock.advance_ms(10);
    inc.status = IncidentStatus::Resolved;
    inc.resolved_s = Some(rig.clock.now_s());
    inc.updated_s = rig.clock.now_s();
    rig.record(IncidentChange::Resolved(inc.clone()));
    let t_rec = rig.clock.now_s();

    // The healthy receiver gets all three at once, while the other one is failing.
    let got = chat.wait_count(3, "three chat messages").await;
    let events: Vec<String> =
        got.iter().map(|g| g.headers["x-faultline-event"].to_str().unwrap().to_string()).collect();
    assert_eq!(events, ["opened", "updated", "resolved"]);
    assert!(got[0].json()["text"].as_str().unwrap().contains("inc-000001 opened"));

    // The failing receiver: one attempt at the head, retried 1 s later (fake clock), then 2 s.
    let first = hook.wait_count(1, "the first attempt").await;
    assert_eq!(first[0].key(), format!("hook/inc-000001/opened/{}", (t0 * 1000.0).round() as i64));
    let head = wait("the failure recorded", || {
        let r = rig.rows("hook");
        (r[0].attempts == 1).then(|| r[0].clone())
    })
    .await;
    assert!(close(head.next_attempt_s, t_rec + 1.0), "{head:?}");
    assert_eq!(head.last_error.as_deref(), Some("HTTP 503 Service Unavailable: nope"));
    rig.clock.advance_ms(1_000);
    hook.wait_count(2, "the second attempt").await;
    let head = wait("the second failure recorded", || {
        let r = rig.rows("hook");
        (r[0].attempts == 2).then(|| r[0].clone())
    })
    .await;
    assert!(close(head.next_attempt_s, t_rec + 1.0 + 2.0), "{head:?}");
    rig.clock.advance_ms(2_000);
    hook.wait_count(3, "the third attempt").await;
    let head = wait("the third failure recorded", || {
        let r = rig.rows("hook");
        (r[0].attempts == 3).then(|| r[0].clone())
    })
    .await;
    // Doubling would give 4 s; the cap is 3 s.
    assert!(close(head.next_attempt_s, t_rec + 1.0 + 2.0 + 3.0), "{head:?}");
    // The later rows waited behind the head.
    assert!(hook.got().iter().all(|g| g.key().contains("/opened/")), "a later row overtook the head");

    hook.set_status(200);
    rig.clock.advance_ms(3_000);
    let got = hook.wait_count(6, "the backlog").await;
    let keys: Vec<String> = got.iter().map(Got::key).collect();
    assert_eq!(
        &keys[3..],
        [
            format!("hook/inc-000001/opened/{}", (t0 * 1000.0).round() as i64),
            format!("hook/inc-000001/updated/{}", (t0 * 1000.0).round() as i64 + 10),
            format!("hook/inc-000001/resolved/{}", (t0 * 1000.0).round() as i64 + 20),
        ]
    );
    // Every request, retries included, is signed over the exact body sent.
    let secret = Secret::new(SECRET);
    for g in &got {
        let sig = g.headers["x-faultline-signature"].to_str().unwrap();
        assert!(webhook::verify(&secret, &g.body, sig), "bad signature on {}", g.key());
        let v = g.json();
        assert_eq!(v["incident"]["id"], "inc-000001");
        assert_eq!(v["link"], "https://fl.example.org/api/v1/incidents/inc-000001");
        assert!(v["sent_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(g.headers["content-type"], "application/json");
    }
    assert_eq!(got[5].json()["event"], "resolved");
    assert_eq!(got[5].json()["incident"]["status"], "resolved");

    rig.wait_metric(r#"faultline_outbox_depth{receiver="hook"}"#, 0.0).await;
    let m = rig.wait_metric(r#"faultline_notifications_total{receiver="hook",result="delivered"}"#, 3.0).await;
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="retry"}"#), Some(3.0));
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="delivered"}"#), Some(3.0));
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="chat",result="delivered"}"#), Some(3.0));
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="failed"}"#), Some(0.0));
    assert_eq!(metric(&m, "faultline_notification_latency_seconds_count"), Some(6.0));
    // Delivered after the 6 s of backoff (fake clock): those land in the 10 s bucket, not the 5 s one.
    assert_eq!(metric(&m, r#"faultline_notification_latency_seconds_bucket{le="5"}"#), Some(3.0));
    assert_eq!(metric(&m, r#"faultline_notification_latency_seconds_bucket{le="10"}"#), Some(6.0));
    assert!(rig.rows("hook").iter().all(|r| r.state == OutboxState::Sent));
}

#[tokio::test]
async fn a_4xx_answer_fails_the_row_for_good_and_429_waits_for_retry_after() {
    let hook = Sink::start(400).await;
    let rig = Rig::start(&format!(
        "[notify]\nretry_initial = \"1s\"\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}/x\"",
        hook.url
    ));
    let t0 = rig.clock.now_s();
    let mut inc = incident("inc-000002", t0);
    rig.record(IncidentChange::Opened(inc.clone()));
    let rows = wait("the refusal recorded", || {
        let r = rig.rows("hook");
        (r[0].state == OutboxState::Dead).then_some(r)
    })
    .await;
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 400 Bad Request: nope"));
    assert_eq!(rows[0].attempts, 1);
    // No signature header without a secret.
    assert!(hook.got()[0].headers.get("x-faultline-signature").is_none());

    // The next event: 429 with Retry-After 7 s, longer than the 1 s backoff, so it waits 7 s.
    hook.set_status(429);
    hook.retry_after.store(7, Ordering::SeqCst);
    rig.clock.advance_ms(500);
    inc.status = IncidentStatus::Resolved;
    inc.resolved_s = Some(rig.clock.now_s());
    inc.updated_s = rig.clock.now_s();
    rig.record(IncidentChange::Resolved(inc));
    let now = rig.clock.now_s();
    let row = wait("the 429 recorded", || {
        let r = rig.rows("hook");
        (r.len() == 2 && r[1].attempts == 1).then(|| r[1].clone())
    })
    .await;
    assert_eq!(row.state, OutboxState::Pending);
    assert!(close(row.next_attempt_s, now + 7.0), "{row:?}");
    hook.set_status(204);
    hook.retry_after.store(0, Ordering::SeqCst);
    rig.clock.advance_ms(7_000);
    wait("the resolve delivered", || (rig.rows("hook")[1].state == OutboxState::Sent).then_some(())).await;
    let keys: Vec<String> = hook.got().iter().map(Got::key).collect();
    // The refused one was asked exactly once, never retried.
    assert_eq!(keys.iter().filter(|k| k.contains("/opened/")).count(), 1, "{keys:?}");
    let m = rig.wait_metric(r#"faultline_notifications_total{receiver="hook",result="delivered"}"#, 1.0).await;
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="failed"}"#), Some(1.0));
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="retry"}"#), Some(1.0));
    assert_eq!(metric(&m, r#"faultline_notifications_total{receiver="hook",result="delivered"}"#), Some(1.0));
}

#[tokio::test]
async fn a_notification_undelivered_past_give_up_after_is_dropped_and_the_queue_moves_on() {
    let hook = Sink::start(500).await;
    let rig = Rig::start(&format!(
        "[notify]\nretry_initial = \"1s\"\nretry_max = \"10s\"\ngive_up_after = \"60s\"\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}/x\"",
        hook.url
    ));
    let inc = incident("inc-000003", rig.clock.now_s());
    rig.record(IncidentChange::Opened(inc));
    hook.wait_count(1, "a first attempt").await;
    rig.clock.advance_ms(61_000);
    let row = wait("the row expired", || {
        let r = rig.rows("hook");
        (r[0].state == OutboxState::Dead).then(|| r[0].clone())
    })
    .await;
    assert!(row.last_error.as_deref().unwrap().starts_with("gave up after 2 attempts over 1m"), "{row:?}");
    rig.wait_metric(r#"faultline_notifications_total{receiver="hook",result="expired"}"#, 1.0).await;
}

#[tokio::test]
async fn alertmanager_gets_firing_reposts_label_changes_and_the_resolve() {
    let am = Sink::start(200).await;
    let rig = Rig::start(&format!(
        r#"
        [[notify.alertmanager]]
        name = "am"
        url = "{}/"
        repost_interval = "30s"
        runbook_base = "https://runbooks.example.org/faultline/{{class}}.md"
        labels = {{ cluster = "train-a" }}
        "#,
        am.url
    ));
    let t0 = rig.clock.now_s();
    let mut inc = incident("inc-000004", t0);
    rig.record(IncidentChange::Opened(inc.clone()));
    // The opened row, and (queue empty, first pass) a re-post of what is open: both firing.
    let got = am.wait_count(2, "the opened alert and the first re-post").await;
    for g in &got {
        assert_eq!(g.headers.get("x-faultline-event").is_some(), g.key().contains("/opened/"));
        let a = &g.json()[0];
        assert_eq!(a["labels"]["alertname"], "FaultlineIncident");
        assert_eq!(a["labels"]["class"], "gpu_thermal_throttle");
        assert_eq!(a["labels"]["severity"], "warning");
        assert_eq!(a["labels"]["node"], "node-0004");
        assert_eq!(a["labels"]["component"], "node-0004/gpu2");
        assert_eq!(a["labels"]["gpu"], "2");
        // Affected jobs change while an incident lives: an annotation, so the alert keeps its identity.
        assert!(a["labels"].get("jobs").is_none());
        assert_eq!(a["annotations"]["jobs"], "llm-a");
        assert_eq!(a["labels"]["incident"], "inc-000004");
        assert_eq!(a["labels"]["cluster"], "train-a");
        assert_eq!(a["annotations"]["runbook_url"], "https://runbooks.example.org/faultline/gpu_thermal_throttle.md");
        assert!(a["annotations"]["description"].as_str().unwrap().contains("thermal slowdown for 30 s"));
        assert_eq!(a["startsAt"], rfc3339(t0));
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["generatorURL"], "http://127.0.0.1:9440/api/v1/incidents/inc-000004");
    }
    assert!(got.iter().all(|g| g.path == "/api/v2/alerts"), "{got:?}");
    // Nothing more until the re-post interval has passed on the analyzer's clock.
    rig.clock.advance_ms(30_000);
    am.wait_count(3, "a re-post after the interval").await;

    // The class is upgraded: the new alert fires and the one under the old labels ends in the same post.
    rig.clock.advance_ms(1_000);
    inc.class = FaultClass::GpuLost;
    inc.severity = Severity::Critical;
    inc.updated_s = rig.clock.now_s();
    rig.record(IncidentChange::Updated(inc.clone()));
    let got = wait("the update", || am.got().into_iter().find(|g| g.key().contains("/updated/"))).await;
    let alerts = got.json();
    assert_eq!(alerts.as_array().unwrap().len(), 2, "{alerts}");
    assert_eq!(alerts[0]["labels"]["class"], "gpu_lost");
    assert!(alerts[0].get("endsAt").is_none());
    assert_eq!(alerts[1]["labels"]["class"], "gpu_thermal_throttle");
    assert_eq!(alerts[1]["endsAt"], rfc3339(rig.clock.now_s()));

    rig.clock.advance_ms(1_000);
    inc.status = IncidentStatus::Resolved;
    inc.resolved_s = Some(rig.clock.now_s());
    inc.updated_s = rig.clock.now_s();
    rig.record(IncidentChange::Resolved(inc.clone()));
    let got = wait("the resolve", || am.got().into_iter().find(|g| g.key().contains("/resolved/"))).await;
    let alerts = got.json();
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["labels"]["class"], "gpu_lost");
    assert_eq!(alerts[0]["endsAt"], rfc3339(inc.resolved_s.unwrap()));
    let m = rig.wait_metric(r#"faultline_notifications_total{receiver="am",result="delivered"}"#, 3.0).await;
    assert!(metric(&m, r#"faultline_notifications_total{receiver="am",result="repost"}"#).unwrap() >= 2.0, "{m}");
}

/// A report of one node with one GPU; `lost` reports it fallen off the bus with an XID 79.
fn gpu_report(seq: u64, ts_ms: i64, lost: bool) -> faultline_proto::NodeReport {
    let mut r = serde_json::json!({
        "schema_version": 1, "node": "node-0009", "agent_version": "0.1.0-test", "seq": seq,
        "timestamp_ms": ts_ms, "interval_ms": 10000,
        "gpus": [{"index": 0, "uuid": "GPU-0", "name": "H100", "serial": null, "pci_bus_id": "00000000:3B:00.0",
                  "util_gpu_pct": 97.0, "util_mem_pct": 40.0, "mem_total_bytes": 85899345920u64,
                  "mem_used_bytes": 1000, "mem_free_bytes": null, "temp_c": 61.0, "mem_temp_c": null,
                  "power_w": 650.0, "power_limit_w": 700.0, "energy_mj": null, "sm_clock_mhz": 1980,
                  "sm_clock_max_mhz": 1980, "mem_clock_mhz": null, "mem_clock_max_mhz": null, "throttle_mask": 0}],
    });
    if lost {
        r["gpus"][0]["state"] = serde_json::json!("lost");
        r["urgent"] = serde_json::json!(true);
        r["events"] = serde_json::json!([{"ts_ms": ts_ms, "source": "nvml", "class": "xid", "severity": "critical",
                                          "component": "gpu0", "xid": 79, "message": "GPU has fallen off the bus."}]);
    }
    faultline_proto::NodeReport::from_json(r.to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn an_engine_tick_enqueues_notifications_for_matching_receivers_only() {
    // The server's own path: reports into the engine, a tick, the planner, one transaction.
    let lost_hook = Sink::start(200).await;
    let nic_hook = Sink::start(200).await;
    let rig = Rig::start(&format!(
        "[[notify.webhook]]\nname = \"lost\"\nurl = \"{}/x\"\nmin_severity = \"critical\"\nclasses = [\"gpu_lost\"]\n\
         [[notify.webhook]]\nname = \"nics\"\nurl = \"{}/x\"\nclasses = [\"nic_down\", \"nic_flap\"]",
        lost_hook.url, nic_hook.url
    ));
    for seq in 1..=3 {
        let now = rig.clock.now_ms();
        rig.state.with_engine(|e| e.ingest(gpu_report(seq, now, false), now)).unwrap();
    }
    rig.clock.advance_ms(1_000);
    rig.state.tick_once();
    let now = rig.clock.now_ms();
    rig.state.with_engine(|e| e.ingest(gpu_report(4, now, true), now)).unwrap();
    let mut ticks = 0;
    let got = wait("the engine to open the incident and the hook to hear of it", || {
        if ticks < 30 {
            ticks += 1;
            rig.clock.advance_ms(1_000);
            assert_eq!(rig.state.tick_once().pending, 0, "the store took every change");
        }
        lost_hook.got().into_iter().next()
    })
    .await;
    let v = got.json();
    assert_eq!(v["event"], "opened");
    assert_eq!(v["incident"]["root"], "node-0009/gpu0");
    assert_eq!(v["incident"]["class"], "gpu_lost");
    let id = v["incident"]["id"].as_str().unwrap().to_string();
    assert_eq!(rig.rows("lost")[0].incident_id, id);
    assert!(rig.rows("nics").is_empty(), "a receiver for other classes got a row");
    assert!(nic_hook.got().is_empty());
}

#[tokio::test]
async fn a_receiver_down_for_an_hour_is_tried_a_bounded_number_of_times_then_gets_everything_in_order() {
    let hook = Sink::start(503).await;
    // The defaults: 1 s doubling to 5 min.
    let rig = Rig::start(&format!("[[notify.webhook]]\nname = \"hook\"\nurl = \"{}/x\"", hook.url));
    let mut inc = incident("inc-000007", rig.clock.now_s());
    rig.record(IncidentChange::Opened(inc.clone()));
    let mut expected = vec![format!("hook/inc-000007/opened/{}", (inc.updated_s * 1000.0).round() as i64)];
    // An hour of analyzer time in 20 s steps; a change every ten minutes. After each step, wait until
    // the worker has dealt with whatever was due.
    for step in 1..=180 {
        rig.clock.advance_ms(20_000);
        if step % 30 == 0 {
            inc.updated_s = rig.clock.now_s();
            inc.affected_jobs.push(format!("job-{step}"));
            rig.record(IncidentChange::Updated(inc.clone()));
            expected.push(format!("hook/inc-000007/updated/{}", (inc.updated_s * 1000.0).round() as i64));
        }
        let now = rig.clock.now_s();
        wait("the due attempt", || (rig.rows("hook")[0].next_attempt_s > now).then_some(())).await;
    }
    let attempts = hook.got().len();
    // 1, 2, 4 … 256 s, then every 300 s: 9 + 11 in the hour, and never more than that.
    assert!((15..=22).contains(&attempts), "{attempts} attempts in an hour");
    assert!(hook.got().iter().all(|g| g.key() == expected[0]), "a later event overtook the first");
    hook.set_status(200);
    rig.clock.advance_ms(300_000);
    wait("the whole backlog", || (hook.got().len() >= attempts + expected.len()).then_some(())).await;
    let keys: Vec<String> = hook.got()[attempts..].iter().map(Got::key).collect();
    assert_eq!(keys, expected);
}
