//! Remediation inside a real analyzer server (loopback socket, fake clock, real engine and store),
//! without a scheduler: the default `suggest` policy records suggestions; a dry run records what it
//! would drain and resume, applies the blast-radius guard and pages through the metric, and never
//! runs the scheduler program; the actions API and its token; and the held drains surviving a
//! restart. Slurm itself is exercised in `tests/tests/slurm_e2e.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_analyzer::clock::{Clock, FakeClock};
use faultline_analyzer::config::Config;
use faultline_analyzer::server::{self, AppState};
use faultline_analyzer::store::Store;
use serde_json::{Value, json};

const T0_MS: i64 = 1_700_000_000_000;
const TOKEN: &str = "remediate-token";
const NODES: usize = 10;

fn node(i: usize) -> String {
    format!("node-{i:04}")
}

struct Srv {
    url: String,
    state: Arc<AppState>,
    clock: Arc<FakeClock>,
    seq: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
}

fn topology(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("topo.toml");
    let rack = |from: usize| (from..from + 5).map(|i| format!("\"{}\"", node(i))).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &p,
        format!(
            "[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\
             [[switch]]\nname = \"leaf-01\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\
             [[switch]]\nname = \"spine-00\"\ntier = \"spine\"\n\
             [[rack]]\nleaf = \"leaf-00\"\nnodes = [{}]\n[[rack]]\nleaf = \"leaf-01\"\nnodes = [{}]\n",
            rack(0),
            rack(5)
        ),
    )
    .unwrap();
    p
}

impl Srv {
    async fn start(dir: &std::path::Path, remediation: &str, store: Store, start_ms: i64) -> Srv {
        let text = format!(
            "resolve_after_s = 5.0\ntoken = \"{TOKEN}\"\ntopology = \"{}\"\n{remediation}",
            topology(dir).display()
        );
        let settings = Config::parse(&text).unwrap().build().unwrap();
        let clock = Arc::new(FakeClock::new(start_ms));
        let planner: Option<Arc<dyn server::OutboxPlanner>> = if settings.notify.is_empty() {
            None
        } else {
            Some(Arc::new(faultline_analyzer::notify::Planner::new(Arc::new(settings.notify.clone()))))
        };
        let state = AppState::with_store(&settings, store, clock.clone(), planner, Instant::now()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A long interval: the test ticks and runs rounds by hand with the fake clock.
        let handle = tokio::spawn(server::serve(listener, state.clone(), Duration::from_secs(3600), async move {
            let _ = rx.await;
        }));
        Srv { url, state, clock, seq: 0, stop: Some(tx), handle: Some(handle), http: reqwest::Client::new() }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    /// Every node reports once at the clock's time; `nic_down` nodes with their NIC down, `xid79`
    /// nodes with an XID 79 on gpu1.
    async fn round_of_reports(&mut self, nic_down: &[usize], xid79: &[usize]) {
        self.seq += 1;
        let now = self.clock.now_ms();
        for i in 0..NODES {
            let n = node(i);
            let down = nic_down.contains(&i);
            let events: Vec<Value> = if xid79.contains(&i) {
                vec![json!({"ts_ms": now - 100, "class": "xid", "component": "gpu1", "xid": 79, "message": "Xid 79"})]
            } else {
                vec![]
            };
            let gpu = |g: u32| {
                json!({"index": g, "uuid": format!("GPU-{n}-{g}"), "state": "ok", "util_gpu_pct": 90.0,
                                       "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980})
            };
            let body = json!({
                "schema_version": 1, "node": n, "agent_version": "t", "seq": self.seq, "timestamp_ms": now,
                "interval_ms": 5000, "gpus": [gpu(0), gpu(1)],
                "nics": [{"name": "mlx5_0", "operstate": if down {"down"} else {"up"}, "carrier": !down,
                          "link_layer": "InfiniBand", "ib_state": if down {"DOWN"} else {"ACTIVE"}, "rate_gbps": 400.0}],
                "events": events,
            });
            let r = self
                .http
                .post(format!("{}/api/v1/reports", self.url))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    }

    /// Engine tick then one remediation round, as the server's two loops would.
    async fn tick(&self) {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            st.tick_once();
            st.remediation.round(&*st);
        })
        .await
        .unwrap();
    }

    /// Reports every 5 s of fake time for `secs`, ticking after each.
    async fn run_for(&mut self, secs: i64, nic_down: &[usize]) {
        for _ in 0..(secs / 5) {
            self.clock.advance_ms(5_000);
            self.round_of_reports(nic_down, &[]).await;
            self.tick().await;
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }

    async fn incident(&self, class: &str, root: &str) -> Option<Value> {
        let (_, all) = self.get("/api/v1/incidents?status=all").await;
        all.as_array()?.iter().find(|i| i["class"] == class && i["root"] == root).cloned()
    }
}

fn actions_of<'a>(v: &'a Value, node: &str, result: &str) -> Vec<&'a Value> {
    v["taken"].as_array().unwrap().iter().filter(|r| r["node"] == node && r["result"] == result).collect()
}

fn action_lines(inc: &Value) -> Vec<String> {
    inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "action")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_drain_is_only_suggested() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Srv::start(dir.path(), "", Store::open_in_memory().unwrap(), T0_MS).await;
    srv.round_of_reports(&[], &[]).await;
    srv.tick().await;
    srv.clock.advance_ms(1000);
    srv.round_of_reports(&[], &[3]).await;
    srv.tick().await;
    let inc = srv.incident("gpu_lost", "node-0003/gpu1").await.expect("incident opened");
    assert_eq!(inc["action"], "reboot_node");
    let lines = action_lines(&inc);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].starts_with("suggest: drain node-0003"), "{lines:#?}");
    let (status, v) = srv.get("/api/v1/actions").await;
    assert_eq!(status, 200);
    assert_eq!(v["adapter"], Value::Null);
    assert_eq!(v["default_mode"], "suggest");
    assert_eq!(v["pending"][0]["state"], "suggested");
    assert_eq!(v["pending"][0]["node"], "node-0003");
    assert_eq!(actions_of(&v, "node-0003", "suggested").len(), 1);
    // Later rounds do not repeat the suggestion.
    srv.clock.advance_ms(1000);
    srv.round_of_reports(&[], &[]).await;
    srv.tick().await;
    let (_, v) = srv.get("/api/v1/actions").await;
    assert_eq!(v["taken"].as_array().unwrap().len(), 1);
    let m = srv.metrics().await;
    assert!(m.contains(r#"faultline_remediation_actions_total{action="drain",result="suggested"} 1"#), "{m}");
    assert!(m.contains("faultline_remediation_blocked_total 0"), "{m}");
    // Without an adapter a person's drain is refused with advice; without the token, 401.
    let r = srv
        .http
        .post(format!("{}/api/v1/actions/drain", srv.url))
        .bearer_auth(TOKEN)
        .json(&json!({"node": "node-0003"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("adapter"));
    let r = srv
        .http
        .post(format!("{}/api/v1/actions/drain", srv.url))
        .json(&json!({"node": "node-0003"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = srv.http.get(format!("{}/api/v1/actions", srv.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    for bad in ["", "{", r#"{"node": "a b"}"#, r#"{"node": "n1", "extra": 1}"#] {
        let r = srv
            .http
            .post(format!("{}/api/v1/actions/resume", srv.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_drains_and_resumes_on_paper_within_the_guard_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    // `false` as scontrol: any call to it would fail and be recorded as `failed`; a dry run makes none.
    let scontrol = ["/bin/false", "/usr/bin/false"].into_iter().find(|p| std::path::Path::new(p).is_file()).unwrap();
    let remediation = format!(
        "[remediation]\ndefault = \"suggest\"\ndry_run = true\nadapter = \"slurm\"\nmax_drain_share = 0.2\n\
         healthy_hold = \"30s\"\n\
         [[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"act\"\n\
         [[remediation.rule]]\nclass = \"leaf_switch_down\"\nmode = \"act\"\n\
         [remediation.slurm]\nscontrol = \"{scontrol}\"\n\
         [[notify.webhook]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:9/hook\"\nmin_severity = \"critical\"\n"
    );
    let mut srv = Srv::start(dir.path(), &remediation, Store::open(&db).unwrap(), T0_MS).await;
    srv.round_of_reports(&[], &[]).await;
    srv.tick().await;

    // A leaf with 5 of 10 nodes fails: 5 > 2 (20%), blocked even on paper.
    for _ in 0..3 {
        srv.clock.advance_ms(2_000);
        srv.round_of_reports(&[5, 6, 7, 8, 9], &[]).await;
        srv.tick().await;
    }
    let leaf = srv.incident("leaf_switch_down", "switch:leaf-01").await.expect("leaf incident");
    let lines = action_lines(&leaf);
    assert_eq!(lines.iter().filter(|l| l.starts_with("blocked:")).count(), 5, "{lines:#?}");
    assert!(lines[0].contains("limit of 2") && lines[0].contains("20% of 10 known nodes"), "{}", lines[0]);
    let m = srv.metrics().await;
    assert!(m.contains("faultline_remediation_blocked_total 1"), "{m}");
    assert!(m.contains(r#"faultline_remediation_actions_total{action="drain",result="blocked"} 5"#), "{m}");
    // The page goes out through the notifiers: a critical `updated` notification saying why.
    let rows = srv.state.with_db(|s| s.outbox_rows("oncall")).unwrap();
    let page: Vec<_> = rows.iter().filter(|r| r.payload.contains("REMEDIATION BLOCKED")).collect();
    assert_eq!(page.len(), 1, "{rows:#?}");
    assert_eq!(page[0].event, "updated");
    assert!(page[0].payload.contains("limit of 2"), "{}", page[0].payload);

    // XID 79 on node-0003: would drain.
    srv.clock.advance_ms(1_000);
    srv.round_of_reports(&[], &[3]).await;
    srv.tick().await;
    let inc = srv.incident("gpu_lost", "node-0003/gpu1").await.expect("gpu incident");
    let id = inc["id"].as_str().unwrap().to_string();
    let lines = action_lines(&inc);
    assert!(
        lines.iter().any(|l| l.starts_with("would drain node-0003")
            && l.contains(&format!("faultline: gpu_lost node-0003/gpu1 {id}"))),
        "{lines:#?}"
    );
    let (_, v) = srv.get("/api/v1/actions").await;
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["drained_in_window"], 1);
    assert!(v["taken"].as_array().unwrap().iter().all(|r| r["result"] != "failed"), "scontrol was called: {v:#}");

    // Restart on the same database: the paper drain is still held.
    srv.stop().await;
    let now = T0_MS + 20_000;
    let mut srv = Srv::start(dir.path(), &remediation, Store::open(&db).unwrap(), now).await;
    let (_, v) = srv.get("/api/v1/actions").await;
    let held: Vec<&Value> = v["pending"].as_array().unwrap().iter().filter(|p| p["action"] == "resume").collect();
    assert_eq!(held.len(), 1, "{v:#}");
    assert_eq!(held[0]["node"], "node-0003");
    assert_eq!(v["drained_in_window"], 1);
    srv.round_of_reports(&[], &[]).await;
    srv.tick().await;
    let (_, v) = srv.get("/api/v1/actions").await;
    assert_eq!(actions_of(&v, "node-0003", "dry_run").len(), 1, "not decided again after the restart: {v:#}");

    // The XID ages out (5 min), the incident resolves, and 30 s of health later: would resume.
    srv.run_for(300, &[]).await;
    let inc = srv.incident("gpu_lost", "node-0003/gpu1").await.unwrap();
    assert_eq!(inc["status"], "resolved");
    srv.run_for(40, &[]).await;
    let inc = srv.incident("gpu_lost", "node-0003/gpu1").await.unwrap();
    let lines = action_lines(&inc);
    assert!(lines.iter().any(|l| l.starts_with("would resume node-0003")), "{lines:#?}");
    let resolved = inc["resolved_s"].as_f64().unwrap();
    let (_, v) = srv.get("/api/v1/actions").await;
    let resumed = v["taken"].as_array().unwrap().iter().find(|r| r["action"] == "resume").unwrap();
    assert!(
        resumed["at_s"].as_f64().unwrap() >= resolved + 30.0,
        "the hold was kept: {resumed:#} resolved at {resolved}"
    );
    assert!(v["taken"].as_array().unwrap().iter().all(|r| r["result"] != "failed"), "{v:#}");
    srv.stop().await;
}
