//! The bad-input battery against a REAL analyzer process: malformed JSON, wrong types, unknown schema,
//! NaN and negative counters, huge bodies (declared and chunked), 10,000-deep nesting, missing and
//! wrong tokens, a read token used to push, a per-node token used for another node, wrong content
//! types, the read API with the wrong kind of token, and the per-node rate limit.
//!
//! Every case must get a 4xx whose JSON `error` names the problem — never a 5xx, never a dropped
//! connection — and `/api/v1/nodes` and `/api/v1/incidents?status=all` must be exactly the same after
//! the battery as before it (an incident is open during the battery, so "the same" covers incidents).

mod reliability_support;

use std::io::{Read, Write};
use std::time::Duration;

use faultline_tests::{get_json, http, wait_for};
use reliability_support::*;
use serde_json::{Value, json};

/// `--token`: good for both pushing and reading.
const BOTH: &str = "both-token-0123456789";
const INGEST: &str = "ingest-only-token-abcdef";
const READ: &str = "read-only-token-for-grafana";
const NODE7: &str = "node-0007-own-token";

/// Rate limit for the battery: 1 report/s per node with a burst of 5, so a quick loop trips it on
/// any machine however slow.
const CONFIG: &str = r#"
node_rate_per_s = 1.0
node_rate_burst = 5

[auth]
ingest_tokens = ["ingest-only-token-abcdef"]
read_tokens = ["read-only-token-for-grafana"]

[auth.node_tokens]
"node-0007" = "node-0007-own-token"
"#;

/// Ten minutes: the test never pauses long enough for a node to count as silent.
const INTERVAL_MS: u64 = 600_000;

fn good(node: &str, seq: u64) -> Value {
    report(node, seq, 2, &[], vec![], INTERVAL_MS)
}

/// A report of the never-seen node-0099 changed by `f`, as bytes.
fn bad(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = good("node-0099", 1);
    f(&mut v);
    v.to_string().into_bytes()
}

fn text_replace(body: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(body).unwrap().replace(from, to).into_bytes()
}

fn nested(open: &str, close: &str, depth: usize) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

fn state(url: &str) -> (Value, Value) {
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(READ)).expect("nodes");
    let incidents = get_json(&format!("{url}/api/v1/incidents?status=all"), Some(READ)).expect("incidents");
    (nodes, incidents)
}

/// Send a request the HTTP client would not produce: raw bytes on a TCP socket. Returns the status
/// line's code, or `None` when the server closed without answering.
fn raw_http(url: &str, request: &[u8]) -> Option<u16> {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

#[test]
fn every_bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = analyzer_with_config(dir.path(), CONFIG, &["--token", BOTH]);
    let url = analyzer.url.clone();

    // Something stored to protect: two nodes, and an open incident on node-0001.
    assert_eq!(post(&url, INGEST, &good("node-0001", 1)).status, 200);
    assert_eq!(post(&url, BOTH, &good("node-0001", 2)).status, 200);
    assert_eq!(post(&url, NODE7, &good("node-0007", 1)).status, 200);
    let lost = report("node-0001", 3, 2, &[1], vec![xid(1, 79, "GPU has fallen off the bus.")], INTERVAL_MS);
    let a = post(&url, INGEST, &lost);
    assert_eq!(a.status, 200, "{}", a.text);
    wait_for(Duration::from_secs(60), "the lost-GPU incident", || {
        let open = get_json(&format!("{url}/api/v1/incidents?status=open"), Some(READ))?;
        open.as_array()?.iter().any(|i| i["root"] == "node-0001/gpu1").then_some(())
    });
    wait_ticks(&url, 3);
    let before = state(&url);
    assert_eq!(before.0.as_array().unwrap().len(), 2, "{}", before.0);

    let j = Some("application/json");
    let big_events: Vec<Value> = (0..10_001)
        .map(|i| json!({"ts_ms": 1_700_000_000_000i64 + i, "class": "xid", "xid": 13, "message": "x"}))
        .collect();
    let node1_from_node7 = good("node-0001", 50).to_string().into_bytes();
    // (what, token, content type, body, expected status, words the error must contain)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>, u16, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        // Not JSON, or not the right JSON.
        ("truncated JSON", Some(BOTH), j, br#"{"schema_version": 1, "node": "#.to_vec(), 400, vec!["malformed"]),
        ("trailing garbage", Some(BOTH), j, [bad(|_| {}), b"}}".to_vec()].concat(), 400, vec!["trailing"]),
        ("not UTF-8", Some(BOTH), j, vec![0xff, 0xfe, 0x7b, 0x00], 400, vec!["malformed"]),
        ("an array, not an object", Some(BOTH), j, b"[1, 2, 3]".to_vec(), 400, vec!["malformed"]),
        ("a bare string", Some(BOTH), j, br#""hello""#.to_vec(), 400, vec!["malformed"]),
        ("JSON null", Some(BOTH), j, b"null".to_vec(), 400, vec!["malformed"]),
        ("empty body", Some(BOTH), j, Vec::new(), 400, vec!["empty"]),
        ("whitespace body", Some(BOTH), j, b"  \n ".to_vec(), 400, vec!["malformed"]),
        // Wrong types.
        ("seq as a string", Some(BOTH), j, bad(|v| v["seq"] = json!("seven")), 400, vec!["seq"]),
        ("seq as a float", Some(BOTH), j, bad(|v| v["seq"] = json!(1.5)), 400, vec!["seq"]),
        (
            "seq past u64",
            Some(BOTH),
            j,
            text_replace(bad(|v| v["seq"] = json!(7)), "\"seq\":7", "\"seq\":1e400"),
            400,
            vec!["seq"],
        ),
        ("node as a number", Some(BOTH), j, bad(|v| v["node"] = json!(42)), 400, vec!["node"]),
        ("timestamp as text", Some(BOTH), j, bad(|v| v["timestamp_ms"] = json!("now")), 400, vec!["timestamp_ms"]),
        ("gpus as an object", Some(BOTH), j, bad(|v| v["gpus"] = json!({"index": 0})), 400, vec!["gpus"]),
        (
            "gpu index as text",
            Some(BOTH),
            j,
            bad(|v| v["gpus"][0]["index"] = json!("zero")),
            400,
            vec!["gpus[0].index"],
        ),
        ("host as a list", Some(BOTH), j, bad(|v| v["host"] = json!([1, 2])), 400, vec!["host"]),
        ("missing node", Some(BOTH), j, bad(|v| drop(v.as_object_mut().unwrap().remove("node"))), 400, vec!["node"]),
        ("missing seq", Some(BOTH), j, bad(|v| drop(v.as_object_mut().unwrap().remove("seq"))), 400, vec!["seq"]),
        // Unknown schema.
        ("schema version 2", Some(BOTH), j, bad(|v| v["schema_version"] = json!(2)), 422, vec!["schema_version", "2"]),
        ("schema version 0", Some(BOTH), j, bad(|v| v["schema_version"] = json!(0)), 422, vec!["schema_version"]),
        // NaN, infinities and negative counters.
        (
            "NaN temperature",
            Some(BOTH),
            j,
            text_replace(bad(|v| v["gpus"][0]["temp_c"] = json!("__X__")), "\"__X__\"", "NaN"),
            400,
            vec!["gpus[0].temp_c"],
        ),
        (
            "NaN as a string",
            Some(BOTH),
            j,
            bad(|v| v["gpus"][0]["power_w"] = json!("NaN")),
            400,
            vec!["gpus[0].power_w"],
        ),
        (
            "infinite power",
            Some(BOTH),
            j,
            text_replace(bad(|v| v["gpus"][0]["power_w"] = json!("__X__")), "\"__X__\"", "1e999"),
            400,
            vec!["gpus[0].power_w"],
        ),
        (
            "negative NIC counter",
            Some(BOTH),
            j,
            bad(|v| v["nics"][0]["counters"]["symbol_error"] = json!(-5)),
            400,
            vec!["nics[0].counters", "symbol_error"],
        ),
        (
            "negative energy counter",
            Some(BOTH),
            j,
            bad(|v| v["gpus"][0]["energy_mj"] = json!(-1)),
            400,
            vec!["gpus[0].energy_mj"],
        ),
        ("negative seq", Some(BOTH), j, bad(|v| v["seq"] = json!(-1)), 400, vec!["seq"]),
        ("negative power", Some(BOTH), j, bad(|v| v["gpus"][0]["power_w"] = json!(-5.0)), 422, vec!["gpus[0].power_w"]),
        (
            "absurd temperature",
            Some(BOTH),
            j,
            bad(|v| v["gpus"][0]["temp_c"] = json!(5000.0)),
            422,
            vec!["gpus[0].temp_c"],
        ),
        (
            "CPU over 100 %",
            Some(BOTH),
            j,
            bad(|v| v["host"]["cpu_util_pct"] = json!(250.0)),
            422,
            vec!["host.cpu_util_pct"],
        ),
        ("timestamp before 1970", Some(BOTH), j, bad(|v| v["timestamp_ms"] = json!(-1)), 422, vec!["timestamp_ms"]),
        ("zero interval", Some(BOTH), j, bad(|v| v["interval_ms"] = json!(0)), 422, vec!["interval_ms"]),
        ("node name with a slash", Some(BOTH), j, bad(|v| v["node"] = json!("rack1/node-0099")), 422, vec!["node"]),
        (
            "GPU listed twice",
            Some(BOTH),
            j,
            bad(|v| {
                let g = v["gpus"][0].clone();
                v["gpus"].as_array_mut().unwrap().push(g)
            }),
            422,
            vec!["gpus[2].index"],
        ),
        // Too many components (the proto limits).
        (
            "65 GPUs",
            Some(BOTH),
            j,
            bad(|v| v["gpus"] = json!((0..65).map(|i| gpu(i, false)).collect::<Vec<_>>())),
            422,
            vec!["gpus", "64"],
        ),
        ("10,001 events", Some(BOTH), j, bad(|v| v["events"] = json!(big_events)), 422, vec!["events", "10000"]),
        // Huge bodies.
        ("9 MiB body", Some(BOTH), j, vec![b' '; 9 * 1024 * 1024], 413, vec!["limit"]),
        // Deep nesting: the decoder neither recurses 10,000 deep nor gives up with a 5xx.
        ("10,000 nested arrays", Some(BOTH), j, nested("[", "]", 10_000).into_bytes(), 400, vec!["malformed"]),
        (
            "10,000 nested objects",
            Some(BOTH),
            j,
            nested("{\"a\":", "}", 10_000).replace(":}", ":1}").into_bytes(),
            400,
            vec!["malformed"],
        ),
        (
            "10,000 nested arrays in gpus",
            Some(BOTH),
            j,
            text_replace(bad(|v| v["gpus"] = json!("__X__")), "\"__X__\"", &nested("[", "]", 10_000)),
            400,
            vec!["gpus"],
        ),
        // Tokens.
        ("missing token", None, j, bad(|_| {}), 401, vec!["Authorization"]),
        ("wrong token", Some("not-the-token"), j, bad(|_| {}), 401, vec!["wrong token"]),
        ("a token one byte short", Some(&BOTH[..BOTH.len() - 1]), j, bad(|_| {}), 401, vec!["wrong token"]),
        ("read token used to push", Some(READ), j, bad(|_| {}), 403, vec!["read"]),
        ("node-0007's token for node-0001", Some(NODE7), j, node1_from_node7, 403, vec!["node-0007", "node-0001"]),
        // Content types.
        ("text/plain", Some(BOTH), Some("text/plain"), bad(|_| {}), 415, vec!["application/json", "text/plain"]),
        (
            "form encoded",
            Some(BOTH),
            Some("application/x-www-form-urlencoded"),
            bad(|_| {}),
            415,
            vec!["application/json"],
        ),
        ("missing content type", Some(BOTH), None, bad(|_| {}), 415, vec!["Content-Type"]),
    ];
    let client = http();
    let mut failures = Vec::new();
    for (what, token, ct, body, status, words) in cases {
        let Some(a) = post_raw(&client, &url, token, ct, body) else {
            failures.push(format!("{what}: the connection failed instead of a {status}"));
            continue;
        };
        if a.status >= 500 {
            failures.push(format!("{what}: server error {}: {}", a.status, a.text));
            continue;
        }
        if a.status != status {
            failures.push(format!("{what}: expected {status}, got {}: {}", a.status, a.text));
            continue;
        }
        let msg = a.error(what);
        for w in words {
            if !msg.contains(w) {
                failures.push(format!("{what}: error {msg:?} does not mention {w:?}"));
            }
        }
    }

    // Bodies too big to be worth reading: a declared 100 MiB, and a chunked stream with no length.
    let a = raw_http(
        &url,
        format!(
            "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BOTH}\r\n\
             Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{{"
        )
        .as_bytes(),
    );
    if a != Some(413) {
        failures.push(format!("declared 100 MiB body: expected 413, got {a:?}"));
    }
    let chunk = vec![b' '; 1024 * 1024];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..12).map(|_| Ok(chunk.clone())).collect();
    let stream = reqwest::blocking::Body::new(ChunkReader { chunks: chunks.into_iter(), cur: Vec::new(), pos: 0 });
    match client
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(BOTH)
        .header("content-type", "application/json")
        .body(stream)
        .send()
    {
        Ok(r) if r.status().as_u16() == 413 => {}
        Ok(r) => failures.push(format!("12 MiB chunked body: expected 413, got {}", r.status())),
        // Past the drain limit the server may close while we still write; that is a refusal too,
        // as long as the server survives (checked below).
        Err(e) => eprintln!("12 MiB chunked body: connection closed while sending ({e}); accepted as a refusal"),
    }
    // Broken HTTP: hyper answers 400 itself, the analyzer keeps running.
    let a = raw_http(&url, b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n");
    if a.is_some_and(|s| s >= 500) {
        failures.push(format!("non-numeric Content-Length: got {a:?}"));
    }

    // The read API: no token, a push-only token, a node's token → refused; read and shared tokens read.
    for (what, token, want) in [
        ("no token", None, 401),
        ("wrong token", Some("nope"), 401),
        ("ingest token", Some(INGEST), 403),
        ("node token", Some(NODE7), 403),
        ("read token", Some(READ), 200),
        ("shared token", Some(BOTH), 200),
    ] {
        for path in ["/api/v1/nodes", "/api/v1/incidents?status=all", "/api/v1/summary"] {
            let (status, text) = get(&format!("{url}{path}"), token);
            if status != want {
                failures.push(format!("GET {path} with {what}: expected {want}, got {status}: {text}"));
            }
        }
    }
    // Unknown routes and methods are 4xx with a JSON reason.
    for (method, path, want) in
        [("GET", "/api/v1/reports", 405), ("DELETE", "/api/v1/nodes", 405), ("GET", "/nope", 404)]
    {
        let resp =
            client.request(method.parse().unwrap(), format!("{url}{path}")).bearer_auth(READ).send().expect("answer");
        if resp.status().as_u16() != want {
            failures.push(format!("{method} {path}: expected {want}, got {}", resp.status()));
        }
    }

    assert!(failures.is_empty(), "bad input handled wrongly:\n  {}", failures.join("\n  "));
    let after = state(&url);
    assert_eq!(before.0, after.0, "refused input changed /api/v1/nodes");
    assert_eq!(before.1, after.1, "refused input changed /api/v1/incidents");

    // Unknown fields are ignored (newer agents may send more), even 10,000 levels deep: the decoder
    // skips them without recursing, so this is accepted rather than a stack overflow.
    let deep = text_replace(
        good("node-0001", 4).to_string().into_bytes(),
        "\"schema_version\":1",
        &format!("\"schema_version\":1,\"future_field\":{}", nested("[", "]", 10_000)),
    );
    let a = post_raw(&client, &url, Some(BOTH), j, deep).unwrap();
    assert_eq!(a.status, 200, "{}", a.text);

    // The rate limit: node-0001 pushes as fast as it can; after its burst it gets 429 with a
    // Retry-After, and the refused report is not applied.
    let mut seq = 4;
    let mut last_ok = 4;
    let limited = loop {
        seq += 1;
        assert!(seq < 60, "no 429 after 55 reports from one node at full speed");
        let a = post(&url, BOTH, &good("node-0001", seq));
        match a.status {
            200 => last_ok = seq,
            429 => break a,
            s => panic!("report {seq}: unexpected {s}: {}", a.text),
        }
    };
    let msg = limited.error("rate limit");
    assert!(msg.contains("node-0001") && msg.contains("rate"), "{msg}");
    let retry: u64 = limited.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(READ)).unwrap();
    let n1 = nodes.as_array().unwrap().iter().find(|n| n["node"] == "node-0001").unwrap();
    assert_eq!(n1["last_seq"], last_ok, "a 429'd report was applied: {n1}");
    // Other nodes are not held back by node-0001's bucket.
    assert_eq!(post(&url, NODE7, &good("node-0007", 2)).status, 200);
    // After the wait the analyzer asked for, node-0001 is heard again.
    std::thread::sleep(Duration::from_secs(retry));
    let a = post(&url, BOTH, &good("node-0001", seq));
    assert_eq!(a.status, 200, "after Retry-After: {}", a.text);
    let m = http().get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    assert!(m.contains("faultline_ingest_reports_total{result=\"rate_limited\"}"), "rate_limited not counted");
    assert!(m.contains("faultline_ingest_reports_total{result=\"forbidden\"} 2"), "forbidden not counted:\n{m}");

    // Tokens never reach the log.
    let log = analyzer.stderr();
    for t in [BOTH, INGEST, READ, NODE7] {
        assert!(!log.contains(t), "a token appears in the analyzer's log");
    }
}

/// A `Read` over a list of chunks, so reqwest sends the body chunked with no Content-Length.
struct ChunkReader {
    chunks: std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.chunks.next() {
                Some(c) => {
                    self.cur = c?;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
