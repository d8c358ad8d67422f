//! The analyzer's Alertmanager notifier against the real Alertmanager binary, configured with the
//! repository's `alerts/alertmanager.example.yml` (its webhook URLs pointed at this test): a lost GPU
//! (XID 79) becomes a `FaultlineIncident` alert that Alertmanager routes to the pager receiver, with
//! the identity labels of the one label scheme and the jobs in annotations; while it fires, a
//! symptom alert of the same node (as the Prometheus rules raise it) is inhibited and one of another
//! node is not; when the GPU is healthy again the incident resolves, the resolve flows through the
//! same way (`status: resolved`), and the symptom is no longer inhibited.
//!
//! Needs `alertmanager` (or Debian's `prometheus-alertmanager`) on PATH; under CI a missing one
//! fails the test, elsewhere the test says loudly that it did not run.

mod notify_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, free_port, http, start_analyzer, wait_for};
use notify_support::{EVENT_HOLD_MS, Mode, Receiver, incidents, push, report, xid};
use serde_json::Value;

const TOKEN: &str = "am-e2e-token";
const NODE: &str = "node-0012";
const JOB: &str = "llm-am";

fn alertmanager_binary() -> Option<PathBuf> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    };
    on_path("alertmanager").or_else(|| faultline_tests::external("prometheus-alertmanager"))
}

/// Posts a symptom alert the way Prometheus would (`alerts/agent.rules.yml` labels).
fn post_symptom(am_url: &str, node: &str) {
    let alert = serde_json::json!([{
        "labels": {"alertname": "FaultlineGpuThermalThrottle", "severity": "warning", "cluster": "e2e",
                   "node": node, "Hostname": node, "gpu": "3", "job": "faultline-agent"},
        "annotations": {"summary": format!("GPU 3 on {node} thermally throttled")},
    }]);
    let r = http().post(format!("{am_url}/api/v2/alerts")).json(&alert).send().unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Alertmanager's state of the symptom alert of `node`: `active` or `suppressed`, and what inhibits it.
fn symptom_state(am_url: &str, node: &str) -> Option<(String, Vec<Value>)> {
    let all: Value = http().get(format!("{am_url}/api/v2/alerts")).send().ok()?.json().ok()?;
    let a = all
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == "FaultlineGpuThermalThrottle" && a["labels"]["node"] == node)?;
    Some((
        a["status"]["state"].as_str()?.to_string(),
        a["status"]["inhibitedBy"].as_array().cloned().unwrap_or_default(),
    ))
}

/// The alerts of every notification Alertmanager sent for `incident` with `status`.
fn notifications(hook: &Receiver, incident: &str, status: &str) -> Vec<Value> {
    hook.requests()
        .iter()
        .map(|r| r.json())
        .filter(|n| n["status"] == status)
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["incident"] == incident)
        .collect()
}

#[test]
fn an_incident_reaches_alertmanager_and_resolves_through_it() {
    let Some(am_bin) = alertmanager_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(0, Mode::Ok);

    // Alertmanager: the repository's example configuration, its receivers pointed at the test's
    // webhook and its waits shortened so that the test does not wait minutes for a group.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../alerts/alertmanager.example.yml")).unwrap();
    let config = example
        .replace("http://127.0.0.1:9095", &hook.url)
        .replace("http://127.0.0.1:9096", &hook.url)
        .replace("group_wait: 10s", "group_wait: 1s")
        .replace("group_interval: 1m", "group_interval: 1s");
    assert!(config.contains(&hook.url), "the example's receiver URLs changed; update this test");
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(&am_config, config).unwrap();
    let am_port = free_port();
    let mut cmd = Command::new(&am_bin);
    cmd.arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", dir.path().join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=info");
    let am = Proc::spawn_plain(cmd);
    let am_url = format!("http://127.0.0.1:{am_port}");
    wait_for(Duration::from_secs(60), "Alertmanager to be ready", || {
        let ok = http().get(format!("{am_url}/-/ready")).send().is_ok_and(|r| r.status().is_success());
        ok.then_some(())
    });

    // The analyzer: notifies that Alertmanager; incidents resolve 2 s after their symptoms go.
    let analyzer_config = dir.path().join("analyzer.toml");
    std::fs::write(
        &analyzer_config,
        format!(
            "resolve_after_s = 2.0\n\
             [notify]\ncluster = \"e2e\"\n\
             [[notify.alertmanager]]\nname = \"am\"\nurl = \"{am_url}\"\nrepost_interval = \"5s\"\n\
             runbook_base = \"https://runbooks.example.org/faultline/{{class}}.md\"\n"
        ),
    )
    .unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--config", analyzer_config.to_str().unwrap()]);
    let url = analyzer.url.clone();

    // Symptoms Prometheus raised: one on the node about to lose a GPU, one on another node.
    let other = "node-0099";
    post_symptom(&am_url, NODE);
    post_symptom(&am_url, other);
    wait_for(Duration::from_secs(30), "the symptoms to be active", || {
        let a = symptom_state(&am_url, NODE)?;
        let b = symptom_state(&am_url, other)?;
        (a.0 == "active" && b.0 == "active").then_some(())
    });

    let mut seq = 0;
    for _ in 0..3 {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[], vec![]));
    }
    // GPU 3 falls off the bus. The XID is dated just inside the analyzer's 5-minute evidence hold,
    // so that the incident can resolve within seconds once the GPU is back.
    seq += 1;
    let age = EVENT_HOLD_MS - 20_000;
    push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[3], vec![xid(3, 79, "GPU has fallen off the bus.", age)]));
    let root = format!("{NODE}/gpu3");
    let inc = wait_for(Duration::from_secs(60), "an incident for the lost GPU", || {
        incidents(&url, TOKEN, "open").into_iter().find(|i| i["root"] == root.as_str())
    });
    let id = inc["id"].as_str().unwrap().to_string();

    let firing = wait_for(Duration::from_secs(60), "Alertmanager to notify the firing alert", || {
        notifications(&hook, &id, "firing").into_iter().next()
    });
    assert_eq!(firing["status"], "firing", "{firing}");
    let labels = &firing["labels"];
    assert_eq!(labels["alertname"], "FaultlineIncident", "{firing}");
    assert_eq!(labels["severity"], "critical", "{firing}");
    assert_eq!(labels["class"], "gpu_lost", "{firing}");
    assert_eq!(labels["component"], root.as_str(), "{firing}");
    assert_eq!(labels["node"], NODE, "{firing}");
    assert_eq!(labels["gpu"], "3", "{firing}");
    assert_eq!(labels["incident"], id.as_str(), "{firing}");
    assert_eq!(labels["cluster"], "e2e", "{firing}");
    // Exactly the identity labels of the scheme: nothing that changes during the incident.
    let names: Vec<&str> = labels.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["alertname", "class", "cluster", "component", "gpu", "incident", "node", "severity"],
        "{firing}"
    );
    let ann = &firing["annotations"];
    assert!(ann["jobs"].as_str().is_some_and(|j| j.contains(JOB)), "{firing}");
    assert_eq!(ann["action"], inc["action"], "{firing}");
    assert_eq!(ann["summary"], inc["summary"], "{firing}");
    assert_eq!(ann["runbook_url"], "https://runbooks.example.org/faultline/gpu_lost.md", "{firing}");
    let description = ann["description"].as_str().unwrap();
    assert!(description.starts_with(&format!("Root cause: {root} (gpu_lost")), "{description}");
    assert!(description.contains("XID 79"), "{description}");
    assert_eq!(firing["generatorURL"], format!("{url}/api/v1/incidents/{id}"), "{firing}");
    // Alertmanager writes times its own way; the second must match the incident's opening.
    let opened_at = inc["opened_at"].as_str().unwrap();
    assert_eq!(firing["startsAt"].as_str().unwrap()[..19], opened_at[..19], "{firing}");

    // The incident inhibits the symptom of its node (the example's inhibit rule), not another node's.
    let (_, by) = wait_for(Duration::from_secs(30), "the symptom of the incident's node to be inhibited", || {
        symptom_state(&am_url, NODE).filter(|(state, by)| state == "suppressed" && !by.is_empty())
    });
    assert_eq!(by.len(), 1, "{by:?}");
    assert_eq!(
        symptom_state(&am_url, other).map(|s| s.0).as_deref(),
        Some("active"),
        "another node's symptom is inhibited"
    );

    // The GPU comes back: healthy reports until the incident resolves.
    let resolved = wait_for(Duration::from_secs(120), "the incident to resolve", || {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[], vec![]));
        std::thread::sleep(Duration::from_millis(400));
        incidents(&url, TOKEN, "resolved").into_iter().find(|i| i["id"] == id.as_str())
    });
    let resolved_at = faultline_proto::rfc3339(resolved["resolved_s"].as_f64().unwrap());

    let done = wait_for(Duration::from_secs(60), "Alertmanager to notify the resolve", || {
        notifications(&hook, &id, "resolved").into_iter().next()
    });
    assert_eq!(done["status"], "resolved", "{done}");
    assert_eq!(done["labels"]["incident"], id.as_str(), "{done}");
    assert_eq!(done["labels"]["class"], "gpu_lost", "{done}");
    assert_eq!(done["endsAt"].as_str().unwrap()[..19], resolved_at[..19], "{done}");
    // One alert identity for this incident (no stray label sets left firing).
    let firing_again = notifications(&hook, &id, "firing");
    assert!(firing_again.iter().all(|a| a["labels"] == firing["labels"]), "{firing_again:?}");
    let am_alerts: Value = http().get(format!("{am_url}/api/v2/alerts?active=true")).send().unwrap().json().unwrap();
    assert!(
        am_alerts.as_array().unwrap().iter().all(|a| a["labels"]["incident"] != id.as_str()),
        "Alertmanager still holds the resolved incident as active: {am_alerts}"
    );
    // With the incident resolved, the symptom (still posted by "Prometheus") is no longer inhibited.
    wait_for(Duration::from_secs(30), "the symptom to be active again", || {
        symptom_state(&am_url, NODE).filter(|(state, by)| state == "active" && by.is_empty())
    });
    drop(analyzer);
    drop(am);
}
