//! Agent clock skew and the analyzer's own lag, against a real analyzer.
//!
//! Three nodes report at their own pace: one with a good clock, one 60 s ahead, one ten minutes
//! behind. The analyzer names the two bad clocks (a field in `/api/v1/nodes`, a metric, a log line),
//! leaves the good one alone, and does not trust the bad timestamps for liveness: the node ten
//! minutes behind is still "reporting" and gets no silence incident while its reports arrive. Its lag
//! metrics (engine backlog, age of the last tick, report age) are exported.

mod reliability_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faultline_tests::{get_json, http, wait_for};
use reliability_support::*;
use serde_json::Value;

const TOKEN: &str = "clock-lag-token";
const INTERVAL_MS: u64 = 200;

fn entry(url: &str, node: &str) -> Option<Value> {
    get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN))?.as_array()?.iter().find(|n| n["node"] == node).cloned()
}

/// Keeps the three nodes reporting every `INTERVAL_MS` until `stop` is set; returns the last seq.
fn sender(url: String, stop: Arc<AtomicBool>) -> u64 {
    let nodes = [("clock-good", 0i64), ("clock-ahead", 60_000), ("clock-behind", -600_000)];
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        for (node, offset) in nodes {
            let mut r = report(node, seq, 1, &[], vec![], INTERVAL_MS);
            r["timestamp_ms"] = (now_ms() + offset).into();
            let a = post(&url, TOKEN, &r);
            assert_eq!(a.status, 200, "{node} {seq}: {}", a.text);
        }
        std::thread::sleep(Duration::from_millis(INTERVAL_MS));
    }
    seq
}

#[test]
fn skewed_agent_clocks_are_named_and_not_trusted_for_liveness() {
    let dir = tempfile::tempdir().unwrap();
    // Silence counts after 25 intervals (5 s): a slow test machine must not fake a dead node.
    let analyzer = analyzer_with_config(dir.path(), "heartbeat_intervals = 25.0\n", &["--token", TOKEN]);
    let url = analyzer.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || sender(url, stop))
    };
    wait_for(Duration::from_secs(60), "ten reports from each node", || {
        entry(&url, "clock-behind").filter(|n| n["reports"].as_u64() >= Some(10))
    });

    let good = entry(&url, "clock-good").unwrap();
    assert_eq!(good["clock_skewed"], false, "{good}");
    assert!(good["clock_skew_s"].as_f64().unwrap().abs() < 5.0, "{good}");
    let ahead = entry(&url, "clock-ahead").unwrap();
    assert_eq!(ahead["clock_skewed"], true, "{ahead}");
    let s = ahead["clock_skew_s"].as_f64().unwrap();
    assert!((55.0..=61.0).contains(&s), "60 s ahead measured as {s}");
    let behind = entry(&url, "clock-behind").unwrap();
    assert_eq!(behind["clock_skewed"], true, "{behind}");
    let s = behind["clock_skew_s"].as_f64().unwrap();
    assert!((-605.0..=-599.0).contains(&s), "600 s behind measured as {s}");
    // Liveness comes from arrival time: the node ten minutes behind is reporting.
    assert_eq!(behind["reporting"], true, "{behind}");

    let m = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    assert!(m.contains("faultline_nodes_clock_skewed 2"), "{m}");
    assert!(m.contains("faultline_node_clock_skew_seconds{node=\"clock-behind\"} -60"), "{m}");
    assert!(!m.contains("faultline_node_clock_skew_seconds{node=\"clock-good\"}"), "{m}");
    for name in ["faultline_engine_backlog_reports ", "faultline_report_age_seconds_count "] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} missing");
    }
    let log = analyzer.stderr();
    let line = log.lines().find(|l| l.contains("agent clock is off") && l.contains("clock-ahead"));
    assert!(line.is_some(), "no log line for the skewed clock:\n{log}");
    assert!(!log.lines().any(|l| l.contains("agent clock is off") && l.contains("clock-good")), "{log}");

    // The engine ticks and says how long ago.
    wait_ticks(&url, 3);
    let age = metric(&url, "faultline_engine_last_tick_age_seconds ").expect("last tick age");
    assert!((0.0..60.0).contains(&age), "last tick {age} s ago");

    // While the reports arrive no incident calls any of them silent, whatever their clocks say.
    let open = get_json(&format!("{url}/api/v1/incidents?status=all"), Some(TOKEN)).unwrap();
    assert_eq!(open, serde_json::json!([]), "live nodes with odd clocks got incidents");
    stop.store(true, Ordering::SeqCst);
    feeding.join().unwrap();
    // Once the node really goes quiet, arrival time says so within its heartbeat allowance.
    wait_for(Duration::from_secs(60), "the silent node to stop counting as reporting", || {
        (entry(&url, "clock-behind")?["reporting"] == false).then_some(())
    });
}
