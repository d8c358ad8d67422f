//! A real `faultline-analyzer` process on `127.0.0.1:0`: a valid report is accepted and shows in
//! `/api/v1/nodes`; every kind of bad input gets a 4xx whose JSON `error` names the problem, and
//! leaves `/api/v1/nodes` exactly as it was.

use faultline_proto::time::now_ms;
use faultline_tests::{get_json, http, start_analyzer};
use serde_json::{Value, json};

const TOKEN: &str = "ingest-test-token";

fn good_report(node: &str, seq: u64) -> Value {
    json!({
        "schema_version": 1,
        "node": node,
        "agent_version": "0.1.0",
        "seq": seq,
        "timestamp_ms": now_ms(),
        "interval_ms": 60000,
        "host": {"cpu_count": 64, "cpu_util_pct": 12.5, "load1": 3.0, "load5": 2.0, "load15": 1.0,
                 "mem_total_bytes": 1000000, "mem_used_bytes": 5000, "mem_available_bytes": 900000,
                 "swap_total_bytes": 0, "swap_used_bytes": 0, "uptime_s": 1000},
        "gpus": [
            {"index": 0, "uuid": "GPU-aaaa", "name": "NVIDIA H100 80GB HBM3", "serial": null,
             "pci_bus_id": "00000000:18:00.0", "util_gpu_pct": 99.0, "util_mem_pct": 35.0,
             "mem_total_bytes": 85899345920u64, "mem_used_bytes": 60000000000u64, "mem_free_bytes": 25899345920u64,
             "temp_c": 64.0, "mem_temp_c": 70.0, "power_w": 640.0, "power_limit_w": 700.0, "energy_mj": 123456,
             "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "mem_clock_mhz": 2619, "mem_clock_max_mhz": 2619,
             "throttle_mask": 0}
        ],
        "nics": [{"name": "mlx5_0", "netdev": "ibp24s0", "port": 1, "operstate": "up", "carrier": true,
                  "carrier_changes": 2, "speed_mbps": 400000, "mtu": 4096, "link_layer": "InfiniBand",
                  "ib_state": "ACTIVE", "ib_phys_state": "LinkUp", "rate_gbps": 400.0,
                  "counters": {"symbol_error": 0, "port_rcv_errors": 0}}],
    })
}

struct Answer {
    status: u16,
    body: Value,
}

fn post(url: &str, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = http().post(format!("{url}/api/v1/reports")).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().expect("the analyzer answers");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"));
    Answer { status, body }
}

fn post_json(url: &str, v: &Value) -> Answer {
    post(url, Some(TOKEN), Some("application/json"), v.to_string().into_bytes())
}

/// Apply `f` to a good report of a node the analyzer has never seen.
fn bad(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = good_report("node-0099", 1);
    f(&mut v);
    v.to_string().into_bytes()
}

#[test]
fn valid_report_is_accepted_and_bad_input_is_refused_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = analyzer.url.clone();

    let ok = post_json(&url, &good_report("node-0001", 1));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, json!({"node": "node-0001", "seq": 1, "duplicate": false}));
    let ok = post_json(&url, &good_report("node-0001", 2));
    assert_eq!(ok.status, 200, "{}", ok.body);

    let nodes_before = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).expect("nodes");
    let list = nodes_before.as_array().expect("a JSON array of nodes");
    assert_eq!(list.len(), 1, "{nodes_before}");
    assert_eq!(list[0]["node"], "node-0001");
    assert_eq!(list[0]["last_seq"], 2);
    assert_eq!(list[0]["reports"], 2);
    assert_eq!(list[0]["gaps"], 0);

    let json_ct = Some("application/json");
    let big_events: Vec<Value> = (0..10_001)
        .map(|i| json!({"ts_ms": 1_700_000_000_000i64 + i, "class": "xid", "xid": 13, "message": "x"}))
        .collect();
    // (what, token, content type, body, expected status, words the error must contain)
    let cases: Vec<(&str, Option<&str>, Option<&str>, Vec<u8>, u16, &[&str])> = vec![
        ("malformed JSON", Some(TOKEN), json_ct, br#"{"schema_version": 1, "node": "#.to_vec(), 400, &["malformed"]),
        ("not an object", Some(TOKEN), json_ct, b"[1, 2, 3]".to_vec(), 400, &["malformed"]),
        ("empty body", Some(TOKEN), json_ct, Vec::new(), 400, &["empty"]),
        ("seq of the wrong type", Some(TOKEN), json_ct, bad(|v| v["seq"] = json!("seven")), 400, &["seq"]),
        ("negative seq", Some(TOKEN), json_ct, bad(|v| v["seq"] = json!(-1)), 400, &["seq"]),
        (
            "missing node",
            Some(TOKEN),
            json_ct,
            bad(|v| drop(v.as_object_mut().unwrap().remove("node"))),
            400,
            &["node"],
        ),
        ("gpus not a list", Some(TOKEN), json_ct, bad(|v| v["gpus"] = json!({"index": 0})), 400, &["gpus"]),
        (
            "unknown schema version",
            Some(TOKEN),
            json_ct,
            bad(|v| v["schema_version"] = json!(2)),
            422,
            &["schema_version", "2"],
        ),
        (
            "NaN temperature",
            Some(TOKEN),
            json_ct,
            bad(|v| v["gpus"][0]["temp_c"] = json!("__NAN__")).replace_str("\"__NAN__\"", "NaN"),
            400,
            &["gpus[0].temp_c"],
        ),
        (
            "infinite power",
            Some(TOKEN),
            json_ct,
            bad(|v| v["gpus"][0]["power_w"] = json!("__INF__")).replace_str("\"__INF__\"", "1e999"),
            400,
            &["gpus[0].power_w"],
        ),
        (
            "negative power",
            Some(TOKEN),
            json_ct,
            bad(|v| v["gpus"][0]["power_w"] = json!(-5.0)),
            422,
            &["gpus[0].power_w"],
        ),
        (
            "absurd temperature",
            Some(TOKEN),
            json_ct,
            bad(|v| v["gpus"][0]["temp_c"] = json!(5000.0)),
            422,
            &["gpus[0].temp_c", "5000"],
        ),
        (
            "CPU over 100 %",
            Some(TOKEN),
            json_ct,
            bad(|v| v["host"]["cpu_util_pct"] = json!(250.0)),
            422,
            &["host.cpu_util_pct"],
        ),
        ("zero interval", Some(TOKEN), json_ct, bad(|v| v["interval_ms"] = json!(0)), 422, &["interval_ms"]),
        ("timestamp before 1970", Some(TOKEN), json_ct, bad(|v| v["timestamp_ms"] = json!(-1)), 422, &["timestamp_ms"]),
        ("node name with a slash", Some(TOKEN), json_ct, bad(|v| v["node"] = json!("rack1/node-0099")), 422, &["node"]),
        (
            "GPU listed twice",
            Some(TOKEN),
            json_ct,
            bad(|v| {
                let g = v["gpus"][0].clone();
                v["gpus"].as_array_mut().unwrap().push(g)
            }),
            422,
            &["gpus[1].index"],
        ),
        (
            "used memory over total",
            Some(TOKEN),
            json_ct,
            bad(|v| v["gpus"][0]["mem_used_bytes"] = json!(85899345921u64 * 2)),
            422,
            &["gpus[0].mem_used_bytes"],
        ),
        (
            "oversized event list",
            Some(TOKEN),
            json_ct,
            bad(|v| v["events"] = json!(big_events)),
            422,
            &["events", "10001", "10000"],
        ),
        ("oversized body", Some(TOKEN), json_ct, vec![b' '; 9 * 1024 * 1024], 413, &["limit"]),
        ("missing token", None, json_ct, bad(|_| {}), 401, &["Authorization"]),
        ("wrong token", Some("not-the-token"), json_ct, bad(|_| {}), 401, &["wrong token"]),
        ("wrong content type", Some(TOKEN), Some("text/plain"), bad(|_| {}), 415, &["application/json", "text/plain"]),
        ("missing content type", Some(TOKEN), None, bad(|_| {}), 415, &["Content-Type"]),
    ];
    for (what, token, ct, body, status, words) in cases {
        let a = post(&url, token, ct, body);
        assert_eq!(a.status, status, "{what}: {}", a.body);
        let msg = a.body["error"].as_str().unwrap_or_else(|| panic!("{what}: no `error` string in {}", a.body));
        for w in words {
            assert!(msg.contains(w), "{what}: error {msg:?} does not mention {w:?}");
        }
    }

    let nodes_after = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).expect("nodes");
    assert_eq!(nodes_before, nodes_after, "refused reports changed /api/v1/nodes");

    // The refusals are counted by result.
    let metrics = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    for needle in [
        r#"faultline_ingest_reports_total{result="accepted"} 2"#,
        r#"faultline_ingest_reports_total{result="unauthorized"} 2"#,
        r#"faultline_ingest_reports_total{result="too_large"} 1"#,
        r#"faultline_ingest_reports_total{result="unsupported_media_type"} 2"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // A replayed report (same seq) is accepted, flagged or at least not counted twice.
    let again = post_json(&url, &good_report("node-0001", 2));
    assert_eq!(again.status, 200, "{}", again.body);
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    assert_eq!(nodes[0]["reports"], 2, "{nodes}");
    assert_eq!(nodes[0]["duplicates"], 1, "{nodes}");
}

trait ReplaceStr {
    fn replace_str(self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceStr for Vec<u8> {
    fn replace_str(self, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(self).unwrap().replace(from, to).into_bytes()
    }
}

/// The compact encoding (`application/x-protobuf`) goes through the same ingest: accepted with the
/// same answer and ledger, and a bad body is refused naming what is wrong (400 for a body that does
/// not decode, 422 for a report that decodes but is invalid).
#[test]
fn compact_reports_are_taken_and_bad_ones_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = analyzer.url.clone();
    let pb = Some(faultline_proto::wire::CONTENT_TYPE);
    let compact = |v: Value| {
        let r: faultline_proto::NodeReport = serde_json::from_value(v).unwrap();
        faultline_proto::wire::encode(&r)
    };

    let ok = post(&url, Some(TOKEN), pb, compact(good_report("node-0001", 1)));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, json!({"node": "node-0001", "seq": 1, "duplicate": false}));
    // JSON and compact reports from one node share its ledger.
    let second = good_report("node-0001", 2);
    let ok = post_json(&url, &second);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let again = post(&url, Some(TOKEN), pb, compact(second));
    assert_eq!(again.body["duplicate"], true, "{}", again.body);
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    assert_eq!((nodes[0]["last_seq"].as_u64(), nodes[0]["reports"].as_u64()), (Some(2), Some(2)), "{nodes}");
    assert_eq!(nodes[0]["duplicates"], 1, "{nodes}");

    let mut bad_index = compact(good_report("node-0098", 1));
    // Field 3 (node), varint 200: past the end of this report's string table.
    bad_index.extend_from_slice(&[0x18, 200, 1]);
    let cases: Vec<(&str, Vec<u8>, u16, &[&str])> = vec![
        ("not protobuf", b"\xff\xff\xff\xff".to_vec(), 400, &["protobuf"]),
        ("JSON sent as protobuf", good_report("node-0098", 1).to_string().into_bytes(), 400, &["protobuf"]),
        ("string index out of range", bad_index, 400, &["node", "string table"]),
        (
            "unknown schema version",
            compact(good_report("node-0098", 1)).into_iter().chain([0x10, 2]).collect(),
            422,
            &["schema_version"],
        ),
    ];
    for (what, body, status, words) in cases {
        let a = post(&url, Some(TOKEN), pb, body);
        assert_eq!(a.status, status, "{what}: {}", a.body);
        let msg = a.body["error"].as_str().unwrap_or_else(|| panic!("{what}: no `error` string in {}", a.body));
        for w in words {
            assert!(msg.contains(w), "{what}: error {msg:?} does not mention {w:?}");
        }
    }
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "refused reports added a node: {nodes}");
}
