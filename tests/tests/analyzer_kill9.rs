//! Crash safety of the analyzer, with real processes: incidents recorded before `kill -9` are all
//! there after a restart on the same database, open ones stay open and continue (no second incident
//! for the same root, new ids after the old ones), and the state rebuilds from the next reports.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_tests::{get_json, http, now_ms, start_analyzer, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "kill9-token";
const NODE: &str = "node-0007";
const GPUS: u32 = 4;

/// A report of `NODE` with `GPUS` GPUs and one rank of job `llm-kill9` on each. GPUs in `lost` are
/// reported lost; `events` are attached as they are.
fn report(seq: u64, lost: &[u32], events: Vec<Value>) -> Value {
    faultline_tests::report_json(NODE, "llm-kill9", GPUS, seq, lost, events)
}

fn xid(gpu: u32, code: u32, text: &str) -> Value {
    json!({"ts_ms": now_ms(), "source": "nvml", "class": "xid", "severity": "critical",
           "component": format!("gpu{gpu}"), "xid": code, "count": 1,
           "message": format!("NVRM: Xid (PCI:0000:{:02x}:00): {code}, pid=1003, {text}", 0x18 + gpu * 16)})
}

fn push(url: &str, body: &Value) {
    let resp = http()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("analyzer answers");
    let status = resp.status();
    assert!(status.is_success(), "report refused: {status} {}", resp.text().unwrap_or_default());
}

fn incidents(url: &str, status: &str) -> Vec<Value> {
    get_json(&format!("{url}/api/v1/incidents?status={status}"), Some(TOKEN))
        .and_then(|v| v.as_array().cloned())
        .expect("incident list")
}

/// How many engine ticks the analyzer has run (the tick histogram's count).
fn ticks(url: &str) -> u64 {
    let text = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("faultline_engine_tick_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tick count in /metrics")
}

fn wait_ticks(url: &str, n: u64) {
    let start = ticks(url);
    wait_for(Duration::from_secs(30), "engine ticks", || (ticks(url) >= start + n).then_some(()));
}

fn number(id: &str) -> u64 {
    id.strip_prefix("inc-").and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("odd incident id {id}"))
}

#[test]
fn incidents_survive_kill9_and_open_ones_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = first.url.clone();
    let mut seq = 0;
    for _ in 0..3 {
        seq += 1;
        push(&url, &report(seq, &[], vec![]));
    }
    seq += 1;
    push(&url, &report(seq, &[3], vec![xid(3, 79, "GPU has fallen off the bus.")]));
    let open = wait_for(Duration::from_secs(60), "an incident for the lost GPU", || {
        let open = incidents(&url, "open");
        open.iter().any(|i| i["root"] == format!("{NODE}/gpu3")).then_some(open)
    });
    let before: BTreeMap<String, Value> =
        incidents(&url, "all").into_iter().map(|i| (i["id"].as_str().unwrap().to_string(), i)).collect();
    assert!(!open.is_empty());

    first.kill9();

    let mut second = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = second.url.clone();
    // Before any new report: everything recorded is served, and what was open is still open.
    let after: BTreeMap<String, Value> =
        incidents(&url, "all").into_iter().map(|i| (i["id"].as_str().unwrap().to_string(), i)).collect();
    for (id, inc) in &before {
        let got = after.get(id).unwrap_or_else(|| panic!("incident {id} lost in the crash"));
        assert_eq!(got["root"], inc["root"], "{id}");
        assert_eq!(got["class"], inc["class"], "{id}");
        assert_eq!(got["opened_s"], inc["opened_s"], "{id}");
        if inc["status"] == "open" {
            assert_eq!(got["status"], "open", "{id} was open before the crash: {got}");
        }
        let one = get_json(&format!("{url}/api/v1/incidents/{id}"), Some(TOKEN)).expect("incident by id");
        assert_eq!(one["id"], id.as_str());
    }
    let lost_gpu = open.iter().find(|i| i["root"] == format!("{NODE}/gpu3")).unwrap();
    let lost_id = lost_gpu["id"].as_str().unwrap().to_string();
    let metrics = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains(&format!("faultline_incident_info{{id=\"{lost_id}\"")),
        "restored incident not in /metrics"
    );

    // The agent carries on: the GPU is still lost. The open incident continues; no second one opens
    // for the same root.
    for _ in 0..3 {
        seq += 1;
        push(&url, &report(seq, &[3], vec![]));
    }
    wait_ticks(&url, 2);
    let open_now = incidents(&url, "open");
    let same_root: Vec<&Value> = open_now.iter().filter(|i| i["root"] == format!("{NODE}/gpu3")).collect();
    assert_eq!(same_root.len(), 1, "one root cause, one incident, across a restart: {open_now:?}");
    assert_eq!(same_root[0]["id"], lost_id.as_str());
    // The same incident, not a new one that took its id: it was opened before the crash.
    assert_eq!(same_root[0]["opened_s"], lost_gpu["opened_s"], "the incident was reopened: {}", same_root[0]);
    let all_same_root = incidents(&url, "all").into_iter().filter(|i| i["root"] == format!("{NODE}/gpu3")).count();
    assert_eq!(all_same_root, 1, "a second incident was recorded for the same root");

    // A new fault gets a new id, after every id used before the crash.
    seq += 1;
    push(
        &url,
        &report(seq, &[3], vec![xid(1, 48, "An uncorrectable double bit error (DBE) has been detected on GPU.")]),
    );
    let newest = wait_for(Duration::from_secs(60), "an incident for the second fault", || {
        incidents(&url, "open").into_iter().find(|i| i["root"] == format!("{NODE}/gpu1"))
    });
    let max_before = before.keys().map(|id| number(id)).max().unwrap();
    assert!(number(newest["id"].as_str().unwrap()) > max_before, "id reused after restart: {newest}");

    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    assert_eq!(nodes[0]["node"], NODE);
    assert_eq!(nodes[0]["last_seq"], seq);

    // A clean stop after all that: SIGTERM ends the process with status 0.
    let status = second.terminate(Duration::from_secs(30)).expect("the analyzer stops on SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
