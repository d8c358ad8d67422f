//! Every metric named in `dashboards/*.json` (panel queries and variable queries),
//! `dashboards/compat/dcgm-12239-queries.txt` and `alerts/*.rules.yml` is really exported by a real
//! agent (fake NVML library, fixture sysfs tree) or a real analyzer: a renamed metric breaks this
//! test, not a dashboard in production.

mod dash_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dash_support::*;
use serde_json::json;

/// Series Prometheus makes itself, not an exporter.
const PROMETHEUS_OWN: &[&str] =
    &["up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"];

fn check(expr: &str, want: &[&str]) {
    let got = promql_metric_names(expr);
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "metric names of {expr:?}");
}

#[test]
fn tokenizer_finds_series_and_skips_functions_labels_and_variables() {
    check("up", &["up"]);
    check(r#"up{job="faultline-agent"} == 0"#, &["up"]);
    check(
        r#"sum by (kind, node) (rate(faultline_nic_symbol_errors_total{nic=~"$nic",Hostname="${node}"}[$__rate_interval]))"#,
        &["faultline_nic_symbol_errors_total"],
    );
    check(
        "histogram_quantile(0.99, sum by (instance, le) (rate(faultline_report_age_seconds_bucket[5m]))) > 30",
        &["faultline_report_age_seconds_bucket"],
    );
    check(
        r#"max(up{job="faultline-agent"} * on (instance) group_left (Hostname) faultline_agent_info{Hostname="$node"})"#,
        &["up", "faultline_agent_info"],
    );
    check(
        r#"faultline_component_healthy and on (node) label_replace(group by (Hostname) (faultline_job_ranks{job_id="$job"}), "node", "$1", "Hostname", "(.*)")"#,
        &["faultline_component_healthy", "faultline_job_ranks"],
    );
    check(r#"x_total unless x_total offset 10m or vector(0) and bool_thing"#, &["x_total", "bool_thing"]);
    check("max without (reason) (DCGM_FI_DEV_GPU_TEMP) >= 87 # comment naming not_a_metric", &["DCGM_FI_DEV_GPU_TEMP"]);
    check("sum(rate(a[1m])) by (b) / ignoring (c) group_right (d) e", &["a", "e"]);
    check("count by (kind) (k == 0) + avg without (gpu) (g) + max\n  by (x) (m)", &["k", "g", "m"]);
    check(
        "time() - faultline_rank_last_progress_timestamp_seconds * 1e6 + .5",
        &["faultline_rank_last_progress_timestamp_seconds"],
    );
    check(r#"{__name__="weird"} + 1"#, &[]);
}

#[test]
fn label_values_variables_split_into_query_and_label() {
    assert_eq!(
        parse_label_values("label_values(faultline_agent_info, Hostname)"),
        (Some("faultline_agent_info".to_string()), Some("Hostname".to_string()))
    );
    assert_eq!(
        parse_label_values(r#"label_values(DCGM_FI_DEV_GPU_TEMP{Hostname="$node", a=~"x,y"}, gpu)"#),
        (Some(r#"DCGM_FI_DEV_GPU_TEMP{Hostname="$node", a=~"x,y"}"#.to_string()), Some("gpu".to_string()))
    );
    assert_eq!(parse_label_values("label_values(job)"), (None, Some("job".to_string())));
}

#[test]
fn rule_reader_finds_inline_and_block_exprs() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          (rate(x[5m]) > 1)\n          or\n          y\n        labels:\n          severity: info\n      - alert: C\n        expr: 'z > 0'\n";
    let got = rule_exprs(yaml);
    assert_eq!(
        got,
        vec![
            ("A".to_string(), "up == 0".to_string()),
            ("B".to_string(), "(rate(x[5m]) > 1)\nor\ny".to_string()),
            ("C".to_string(), "z > 0".to_string()),
        ]
    );
}

#[test]
fn exposition_names_include_type_promises() {
    let text = "# HELP a_total x\n# TYPE a counter\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE g gauge\ng{x=\"1\"} 2\nplain 1\n";
    let names = exported_names(text);
    for n in ["a", "a_total", "h_bucket", "h_sum", "h_count", "g", "plain"] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
}

/// Every metric name the dashboards and alert rules use, with where each is used.
fn used_names() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |expr: &str, place: String| {
        for n in promql_metric_names(expr) {
            used.entry(n).or_default().insert(place.clone());
        }
    };
    let dashboards = dashboards();
    assert!(dashboards.len() >= 4, "expected the four faultline dashboards, found {}", dashboards.len());
    for (file, dash) in &dashboards {
        for q in dashboard_queries(file, dash) {
            add(&q.expr, format!("{file} / {}", q.panel));
        }
        for (name, kind, query) in dashboard_variables(dash) {
            if kind == "query"
                && let (Some(expr), _) = parse_label_values(&query)
            {
                add(&expr, format!("{file} / variable {name}"));
            }
        }
    }
    for expr in dcgm_compat().0 {
        add(&expr, "dashboards/compat/dcgm-12239-queries.txt".into());
    }
    let rules = files("alerts", ".rules.yml");
    assert!(rules.len() >= 2, "expected alerts/agent.rules.yml and alerts/analyzer.rules.yml");
    for p in rules {
        let text = std::fs::read_to_string(&p).unwrap();
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        let exprs = rule_exprs(&text);
        assert!(!exprs.is_empty(), "{file} has no expr");
        for (alert, expr) in exprs {
            add(&expr, format!("{file} / {alert}"));
        }
    }
    for own in PROMETHEUS_OWN {
        used.remove(*own);
    }
    used
}

#[test]
fn every_metric_in_dashboards_and_alerts_is_exported() {
    let used = used_names();
    assert!(used.len() > 40, "suspiciously few metric names found: {:?}", used.keys());

    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_test_analyzer(dir.path(), &["node-m"]);
    // Conditions under which every family has samples: an XID queued (critical, so the counter
    // exists), a thermal throttle, NVLink errors, a job reporting progress.
    let mut state = nvml_state(4, &[], json!([{"id": 1, "gpu": 1, "type": "xid", "xid": 79}]));
    state["gpus"][0]["throttle_mask"] = json!(0x40 | 0x20);
    let agent = start_agent(dir.path(), "node-m", &analyzer.url, &state);
    for step in 1..=3 {
        for rank in 0..2 {
            post_progress(&agent, "names-job", rank, step, 100.0 + rank as f64);
        }
    }

    let scrape = |url: &str| get_text(&format!("{url}/metrics")).map(|t| exported_names(&t)).unwrap_or_default();
    let missing =
        |have: &BTreeSet<String>| -> Vec<String> { used.keys().filter(|n| !have.contains(*n)).cloned().collect() };
    // Families appear as the agent's collectors and the analyzer's engine catch up: poll until every
    // name is there, then report whatever is still missing.
    let mut have = BTreeSet::new();
    let mut polls = 0;
    let done = poll(Duration::from_secs(45), || {
        // The kernel-log watcher starts after the listener, from the end of the file: repeat the
        // XID line until the agent has counted one.
        if polls % 10 == 0 && !have.contains("faultline_gpu_xid_errors_total") {
            agent.kernel_log(&xid_kernel_line(1, 79));
        }
        polls += 1;
        have = scrape(&agent.url);
        have.extend(scrape(&analyzer.url));
        missing(&have).is_empty().then_some(())
    });
    if done.is_none() {
        let report: Vec<String> = missing(&have)
            .into_iter()
            .map(|n| format!("  {n}  (used in: {})", used[&n].iter().cloned().collect::<Vec<_>>().join("; ")))
            .collect();
        panic!(
            "{} metric names used by dashboards/alerts are not exported by the agent or the analyzer:\n{}\n\
             agent stderr:\n{}",
            report.len(),
            report.join("\n"),
            agent.proc.stderr()
        );
    }
    eprintln!("checked {} metric names against a real agent and analyzer", used.len());
}

/// Every panel (rows' nested ones included), flattened.
fn all_panels(panels: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        if let Some(n) = p.get("panels") {
            all_panels(n, out);
        }
    }
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or("");
        if uid.is_empty() || !uids.insert(uid.to_string()) {
            problems.push(format!("{file}: uid {uid:?} missing or not unique"));
        }
        if !d["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)) {
            problems.push(format!("{file}: schemaVersion {} (want ~39)", d["schemaVersion"]));
        }
        let vars = dashboard_variables(&d);
        if !vars.iter().any(|(n, t, q)| n == "datasource" && t == "datasource" && q == "prometheus") {
            problems.push(format!("{file}: no `datasource` variable of type datasource/prometheus"));
        }
        if !vars.iter().any(|(n, t, q)| n == "cluster" && t == "query" && q.contains(", cluster)")) {
            problems.push(format!("{file}: no `cluster` query variable"));
        }
        let mut panels = Vec::new();
        all_panels(&d["panels"], &mut panels);
        let mut ids = BTreeSet::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("?");
            if !p["id"].as_u64().is_some_and(|id| ids.insert(id)) {
                problems.push(format!("{file} / {title}: panel id missing or repeated"));
            }
            if p["type"] == "row" {
                continue;
            }
            if p["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{file} / {title}: datasource is not ${{datasource}}"));
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["datasource"]["uid"] != "${datasource}" {
                    problems.push(format!("{file} / {title}: a target's datasource is not ${{datasource}}"));
                }
                // Thanos and Mimir users keep clusters apart by `cluster`: every selector filters on it.
                let expr = t["expr"].as_str().unwrap_or("");
                let selectors = promql_metric_names(expr).len();
                let filtered = expr.matches(r#"cluster=~"$cluster""#).count();
                if filtered < selectors {
                    problems.push(format!(
                        "{file} / {title}: {selectors} metric selectors but {filtered} filter on cluster=~\"$cluster\": {expr}"
                    ));
                }
            }
            if p["type"] == "timeseries" && p["fieldConfig"]["defaults"]["unit"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{file} / {title}: timeseries without a unit"));
            }
            if p["description"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{file} / {title}: no description"));
            }
        }
        // Links to the analyzer API use the `api` variable, so the base URL is configurable.
        let text = serde_json::to_string(&d).unwrap();
        if text.contains("/api/v1/incidents/") && !text.contains("${api}/api/v1/incidents/${__data.fields.id}") {
            problems.push(format!("{file}: incident links must be ${{api}}/api/v1/incidents/${{__data.fields.id}}"));
        }
        if text.contains("/api/v1/incidents/") && !vars.iter().any(|(n, t, _)| n == "api" && t == "textbox") {
            problems.push(format!("{file}: links to the API but has no `api` textbox variable"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
