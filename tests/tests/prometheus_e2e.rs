//! The dashboards and alert rules against a REAL Prometheus: three real agents (fake NVML library,
//! each with its own state file and sysfs tree) push to a real analyzer; Prometheus scrapes all four
//! every second and loads `alerts/*.rules.yml`. A GPU is lost on one node (XID 79 queued, then NVML
//! GPU_IS_LOST). Then every panel query of every dashboard, with its variables filled in, runs
//! through `/api/v1/query` without error; panels not marked `faultline.may_be_empty` return series;
//! the overview's incident table shows the incident; the dcgm-exporter dashboard's queries (Grafana
//! 12239) return series with its labels; every rule evaluates without error and the critical XID and
//! incident alerts fire.

mod dash_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use dash_support::*;
use faultline_tests::{Proc, external, free_port, get_json, http};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The node that loses a GPU, and which one.
const FAULT_NODE: &str = "node-a";
const FAULT_GPU: usize = 3;
const JOB: &str = "llm-e2e";
/// The `cluster` target label the test Prometheus gives both jobs.
const CLUSTER: &str = "e2e";

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Run one instant query; `Err` carries Prometheus' error text.
fn query(prom: &str, q: &str) -> Result<Vec<Value>, String> {
    let resp = http()
        .post(format!("{prom}/api/v1/query"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("query={}", form_encode(q)))
        .send()
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().map_err(|e| format!("HTTP {status}, body not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("HTTP {status}: {} {}", body["errorType"], body["error"]));
    }
    match &body["data"]["result"] {
        Value::Array(a) => Ok(a.clone()),
        // scalar / string results: one value, count it as data
        v if !v.is_null() => Ok(vec![v.clone()]),
        _ => Ok(Vec::new()),
    }
}

/// Label `l` of each series in `result`.
fn label_values(result: &[Value], l: &str) -> Vec<String> {
    result.iter().filter_map(|s| s["metric"][l].as_str().map(str::to_string)).collect()
}

fn prometheus_config(dir: &std::path::Path, agents: &[&Agent], analyzer: &str) -> std::path::PathBuf {
    let host = |url: &str| url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let targets: Vec<String> = agents.iter().map(|a| format!("'{}'", host(&a.url))).collect();
    let rules = files("alerts", ".rules.yml")
        .into_iter()
        .map(|p| format!("  - '{}'", p.display()))
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n{rules}\n\
         scrape_configs:\n\
         \x20 - job_name: faultline-agent\n    static_configs:\n      - targets: [{}]\n        labels: {{cluster: {CLUSTER}}}\n\
         \x20 - job_name: faultline-analyzer\n    authorization:\n      credentials: '{TOKEN}'\n    static_configs:\n      - targets: ['{}']\n        labels: {{cluster: {CLUSTER}}}\n",
        targets.join(", "),
        host(analyzer)
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn start_prometheus(bin: &std::path::Path, dir: &std::path::Path, config: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-lifecycle")
        .arg("--log.level=warn");
    let proc = Proc::spawn_plain(cmd);
    let url = format!("http://127.0.0.1:{port}");
    let ready = poll(Duration::from_secs(60), || {
        http().get(format!("{url}/-/ready")).send().ok().filter(|r| r.status().is_success()).map(|_| ())
    });
    assert!(ready.is_some(), "prometheus did not become ready; stderr:\n{}", proc.stderr());
    (proc, url)
}

#[test]
fn dashboards_and_alerts_work_on_a_real_prometheus() {
    let Some(prometheus) = external("prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_test_analyzer(dir.path(), &NODES);
    let agents: Vec<Agent> =
        NODES.iter().map(|n| start_agent(dir.path(), n, &analyzer.url, &nvml_state(8, &[], json!([])))).collect();
    let config = prometheus_config(dir.path(), &agents.iter().collect::<Vec<_>>(), &analyzer.url);
    let (prom_proc, prom) = start_prometheus(&prometheus, dir.path(), &config);

    // A two-node job: ranks 0-1 on node-a (rank 1 a straggler), ranks 2-3 on node-b. Once every
    // target is up (the job is running by then), node-b's second fabric cable starts dropping bits:
    // an incident the job, which spans both nodes, is hit by.
    let mut step = 0u64;
    let mut t = 0u64;
    let bad_cable = std::cell::Cell::new(false);
    let traffic = |agents: &[Agent], step: &mut u64, t: &mut u64| {
        *step += 1;
        *t += 1;
        for (i, a) in agents.iter().enumerate() {
            a.sysfs.tick(*t, i == 1 && bad_cable.get());
            if i < 2 {
                for r in 0..2u32 {
                    let rank = i as u32 * 2 + r;
                    post_progress(a, JOB, rank, *step, if rank == 1 { 180.0 } else { 120.0 + rank as f64 });
                }
            }
        }
    };

    // Every target up, and a few seconds of history for the rate windows.
    let up = poll(Duration::from_secs(60), || {
        traffic(&agents, &mut step, &mut t);
        let r = query(&prom, "up == 1").ok()?;
        (r.len() == NODES.len() + 1).then_some(())
    });
    assert!(
        up.is_some(),
        "not every target is up in Prometheus: {:?}; prometheus stderr:\n{}",
        query(&prom, "up"),
        prom_proc.stderr()
    );

    bad_cable.set(true);

    // The fault: XID 79 on node-a's GPU 3, and the GPU falls off the bus.
    let t_fault = Instant::now();
    let fault = &agents[0];
    write_state(
        &fault.state_file,
        &nvml_state(8, &[FAULT_GPU], json!([{"id": 79, "gpu": FAULT_GPU, "type": "xid", "xid": 79}])),
    );
    fault.kernel_log(&xid_kernel_line(FAULT_GPU, 79));
    let lost_gpu = format!("{FAULT_NODE}/gpu{FAULT_GPU}");
    let incident = poll(Duration::from_secs(60), || {
        traffic(&agents, &mut step, &mut t);
        let r = query(&prom, "faultline_incident_info == 1").ok()?;
        r.into_iter().find(|s| s["metric"]["root"] == lost_gpu.as_str())
    });
    let api_incidents = get_json(&format!("{}/api/v1/incidents", analyzer.url), Some(TOKEN));
    let incident = incident.unwrap_or_else(|| {
        panic!(
            "no incident rooted at {lost_gpu} reached Prometheus within 60 s of the fault.\n\
             analyzer API incidents: {api_incidents:?}\nfaultline_incident_info: {:?}\nagent stderr:\n{}",
            query(&prom, "faultline_incident_info"),
            fault.proc.stderr()
        )
    });
    eprintln!(
        "fault → incident {} ({} at {}) visible in Prometheus after {:.1} s",
        incident["metric"]["id"],
        incident["metric"]["class"],
        incident["metric"]["root"],
        t_fault.elapsed().as_secs_f64()
    );
    // Keep the job and the traffic moving for a few more scrapes so rates and the job's series are fresh.
    for _ in 0..12 {
        traffic(&agents, &mut step, &mut t);
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut failures: Vec<String> = Vec::new();

    // --- the dashboards' variables resolve to the nodes and job we run ---
    let expect_var: BTreeMap<&str, &str> =
        [("node", FAULT_NODE), ("job", JOB), ("cluster", CLUSTER)].into_iter().collect();
    let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
    vars.insert("datasource", "Prometheus");
    // One cluster picked, as a person with many would: every panel must still find its series.
    vars.insert("cluster", CLUSTER);
    vars.insert("node", FAULT_NODE);
    vars.insert("job", JOB);
    vars.insert("gpu", ".*");
    vars.insert("nic", ".*");
    vars.insert("severity", ".*");
    // The incidents dashboard's `incident` text box, at its default (every incident).
    vars.insert("incident", ".+");
    vars.insert("api", &analyzer.url);

    let mut panels_checked = 0;
    let mut panels_with_data = 0;
    for (file, dash) in dashboards() {
        for (name, kind, q) in dashboard_variables(&dash) {
            if kind != "query" {
                continue;
            }
            let (Some(expr), Some(label)) = parse_label_values(&q) else {
                failures.push(format!("{file}: variable {name}: cannot read query {q:?}"));
                continue;
            };
            match query(&prom, &fill_variables(&expr, &vars)) {
                Err(e) => failures.push(format!("{file}: variable {name}: {e}")),
                Ok(r) => {
                    let values = label_values(&r, &label);
                    if values.is_empty() {
                        failures.push(format!("{file}: variable {name} ({q}) has no values"));
                    }
                    if let Some(want) = expect_var.get(name.as_str())
                        && !values.iter().any(|v| v == want)
                    {
                        failures.push(format!("{file}: variable {name} values {values:?} lack {want}"));
                    }
                }
            }
        }

        for pq in dashboard_queries(&file, &dash) {
            let expr = fill_variables(&pq.expr, &vars);
            panels_checked += 1;
            // `$1` in label_replace is a regex group, not a Grafana variable.
            let unfilled = expr
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] == b'{'));
            if unfilled {
                failures.push(format!("{file} / {} [{}]: unfilled variable in {expr}", pq.panel, pq.ref_id));
                continue;
            }
            match query(&prom, &expr) {
                Err(e) => failures.push(format!("{file} / {} [{}]: {e}\n    {expr}", pq.panel, pq.ref_id)),
                Ok(r) if r.is_empty() && pq.may_be_empty.is_none() => {
                    failures.push(format!("{file} / {} [{}]: no series\n    {expr}", pq.panel, pq.ref_id))
                }
                Ok(r) => panels_with_data += usize::from(!r.is_empty()),
            }
        }
    }

    // --- the overview's incident table shows the incident ---
    let overview = dashboards().into_iter().find(|(f, _)| f == "cluster-overview.json").expect("cluster-overview.json");
    let table = dashboard_queries(&overview.0, &overview.1)
        .into_iter()
        .find(|q| q.panel == "Open incidents")
        .expect("cluster-overview.json has an `Open incidents` panel");
    match query(&prom, &fill_variables(&table.expr, &vars)) {
        Ok(r) if r.iter().any(|s| s["metric"]["id"] == incident["metric"]["id"]) => {}
        other => {
            failures.push(format!("overview `Open incidents` lacks incident {}: {other:?}", incident["metric"]["id"]))
        }
    }

    // --- NVIDIA's dcgm-exporter dashboard (12239) queries work unchanged ---
    let (dcgm, labels) = dcgm_compat();
    let dcgm_vars: BTreeMap<&str, &str> = [("instance", ".*"), ("gpu", ".*")].into_iter().collect();
    for q in &dcgm {
        match query(&prom, &fill_variables(q, &dcgm_vars)) {
            Err(e) => failures.push(format!("dcgm 12239: {e}\n    {q}")),
            Ok(r) if r.is_empty() => failures.push(format!("dcgm 12239: no series\n    {q}")),
            Ok(_) => {}
        }
    }
    match query(&prom, "DCGM_FI_DEV_GPU_TEMP") {
        Ok(r) if !r.is_empty() => {
            for s in &r {
                for l in &labels {
                    if s["metric"][l.as_str()].as_str().is_none_or(str::is_empty) {
                        failures
                            .push(format!("dcgm 12239: DCGM_FI_DEV_GPU_TEMP series lacks label {l}: {}", s["metric"]));
                    }
                }
            }
            let hosts = label_values(&r, "Hostname");
            for n in NODES {
                if !hosts.iter().any(|h| h == n) {
                    failures.push(format!("DCGM_FI_DEV_GPU_TEMP has no series for {n}"));
                }
            }
        }
        other => failures.push(format!("DCGM_FI_DEV_GPU_TEMP: {other:?}")),
    }

    // --- every rule evaluates cleanly; the XID and incident alerts fire ---
    let rules = get_json(&format!("{prom}/api/v1/rules"), None).expect("/api/v1/rules");
    let mut rule_count = 0;
    for g in rules["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            rule_count += 1;
            if r["health"] != "ok" && r["health"] != "unknown" {
                failures.push(format!("rule {} is {}: {}", r["name"], r["health"], r["lastError"]));
            }
        }
    }
    if rule_count < 30 {
        failures.push(format!("Prometheus loaded only {rule_count} rules from alerts/"));
    }
    let firing = poll(Duration::from_secs(20), || {
        let a = get_json(&format!("{prom}/api/v1/alerts"), None)?;
        let alerts = a["data"]["alerts"].as_array()?.clone();
        let has = |name: &str| {
            alerts.iter().any(|x| {
                x["labels"]["alertname"] == name
                    && x["state"] == "firing"
                    && (name == "FaultlineIncidentCritical" || x["labels"]["Hostname"] == FAULT_NODE)
            })
        };
        (has("FaultlineGpuXidCritical") && has("FaultlineGpuLost") && has("FaultlineIncidentCritical")).then_some(())
    });
    if firing.is_none() {
        failures.push(format!(
            "expected FaultlineGpuXidCritical, FaultlineGpuLost (on {FAULT_NODE}) and FaultlineIncidentCritical firing; alerts: {}",
            get_json(&format!("{prom}/api/v1/alerts"), None).map(|v| v["data"].to_string()).unwrap_or_default()
        ));
    }

    eprintln!(
        "{panels_checked} panel queries checked, {panels_with_data} returned series; {} dcgm-12239 queries; {rule_count} rules",
        dcgm.len()
    );
    if !failures.is_empty() {
        // What the analyzer itself holds, to tell a dashboard fault from a diagnosis that differs.
        let incidents = get_json(&format!("{}/api/v1/incidents?status=all", analyzer.url), Some(TOKEN));
        let job = get_json(&format!("{}/api/v1/jobs/{JOB}", analyzer.url), Some(TOKEN));
        failures.push(format!("analyzer incidents: {incidents:?}\nanalyzer job {JOB}: {job:?}"));
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
