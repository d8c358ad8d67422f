//! Hostile input, analyzer side: hostile and careless input must not break, blind or bloat a real
//! analyzer. Each test starts real processes on loopback and fails on the analyzer before the fix:
//! - a report whose event component or node name cannot be read back broke the incident list
//!   (500, also after a restart);
//! - a report stamped an hour ahead made every later report of that node "stale";
//! - invented nodes, invented components and megabyte names grew memory without bound;
//! - half-sent headers held a socket open forever;
//! - a full store disk made `GET /incidents` answer `[]` and `/healthz` say ok;
//! - a store whose WAL was deleted started empty in silence;
//! - plus the smaller ones (`%FF` in an id, bidi characters, year-292278994 onsets, `/dev/zero` as a
//!   token file, a 1-character token).

mod reliability_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, get_json, http, wait_for};
use reliability_support::*;
use serde_json::{Value, json};

const TOKEN: &str = "hostile-test-token-0123456789";
const INTERVAL_MS: u64 = 600_000;

fn good(node: &str, seq: u64) -> Value {
    report(node, seq, 2, &[], vec![], INTERVAL_MS)
}

fn open_incidents(url: &str) -> Vec<Value> {
    get_json(&format!("{url}/api/v1/incidents?status=open"), Some(TOKEN))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Opens a lost-GPU incident on `node` (GPU 1).
fn open_gpu_incident(url: &str, node: &str) {
    assert_eq!(post(url, TOKEN, &good(node, 1)).status, 200);
    let lost = report(node, 2, 2, &[1], vec![xid(1, 79, "GPU has fallen off the bus.")], INTERVAL_MS);
    let a = post(url, TOKEN, &lost);
    assert_eq!(a.status, 200, "{}", a.text);
    let root = format!("{node}/gpu1");
    wait_for(Duration::from_secs(60), "the lost-GPU incident", || {
        open_incidents(url).iter().any(|i| i["root"] == root.as_str()).then_some(())
    });
}

#[test]
fn ids_that_cannot_be_read_back_are_refused_and_the_list_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut analyzer = faultline_tests::start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = analyzer.url.clone();
    open_gpu_incident(&url, "node-a");
    let bad_component = |c: &str| {
        let mut ev = xid(0, 79, "GPU has fallen off the bus.");
        ev["component"] = json!(c);
        report("node-b", 1, 2, &[0], vec![ev], INTERVAL_MS)
    };
    for (what, body) in [
        ("component with a slash path", bad_component("gpu0/../../x")),
        ("component of another form", bad_component("switch:leaf-01")),
        ("component with a space", bad_component("nic:mlx5 0")),
        ("GPU index past the limit", bad_component("gpu9999")),
        ("a 1 MB NIC name", bad_component(&format!("nic:{}", "x".repeat(1 << 20)))),
        ("node posing as a job", good("job:evil", 1)),
        ("node posing as a switch", good("switch:leaf-01", 1)),
        ("node with a bidi override", good("node\u{202E}1-edon", 1)),
    ] {
        let a = post(&url, TOKEN, &body);
        assert!(a.status == 422 || a.status == 413, "{what}: answered {} {}", a.status, a.text);
        let e = a.error(what);
        assert!(e.contains("component") || e.contains("node") || e.contains("bytes"), "{what}: {e}");
    }
    wait_ticks(&url, 3);
    let (status, body) = get(&format!("{url}/api/v1/incidents?status=all"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");

    // A row damaged in the store itself is left out, counted and named; the rest is listed.
    analyzer.kill9();
    let db = dir.path().join("faultline.db");
    let sqlite = faultline_tests::external("sqlite3");
    if let Some(sqlite) = sqlite {
        let ok = Command::new(sqlite)
            .arg(&db)
            .arg("INSERT INTO incidents(id, json, status, root, class, opened_s, updated_s) VALUES ('inc-999999', '{\"id\":\"inc-999999\",\"root\":\"job:\"}', 'open', 'job:', 'gpu_lost', 1, 1);")
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let analyzer = faultline_tests::start_analyzer(dir.path(), Some(TOKEN), &[]);
    let resp = http().get(format!("{}/api/v1/incidents?status=all", analyzer.url)).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    if faultline_tests::external("sqlite3").is_some() {
        assert_eq!(resp.headers().get("x-faultline-skipped").and_then(|v| v.to_str().ok()), Some("inc-999999"));
    }
    let list: Value = resp.json().unwrap();
    assert!(list.as_array().unwrap().iter().any(|i| i["root"] == "node-a/gpu1"), "{list}");
    // The CLI lists it too.
    let out = Command::new(bin("faultline"))
        .args(["--analyzer", &analyzer.url, "--token", TOKEN, "incidents"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node-a/gpu1"));
}

#[test]
fn a_report_from_the_future_does_not_blind_the_analyzer_to_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = faultline_tests::start_analyzer(dir.path(), Some(TOKEN), &[]);
    let url = analyzer.url.clone();
    // A wrong RTC at boot: the first report is an hour ahead; NTP fixes the clock right after.
    let mut first = report("node-f", 1, 2, &[], vec![], 1000);
    first["timestamp_ms"] = json!(now_ms() + 3_600_000);
    assert_eq!(post(&url, TOKEN, &first).status, 200);
    // Later reports at the right time show GPU 1 lost: the analyzer must see it.
    for seq in 2..=5 {
        std::thread::sleep(Duration::from_millis(600));
        let a = post(&url, TOKEN, &report("node-f", seq, 2, &[1], vec![], 1000));
        assert_eq!(a.status, 200, "{}", a.text);
    }
    wait_for(Duration::from_secs(60), "the lost GPU seen in reports after the future one", || {
        open_incidents(&url).iter().any(|i| i["root"] == "node-f/gpu1").then_some(())
    });
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    let n = nodes.as_array().unwrap().iter().find(|n| n["node"] == "node-f").unwrap();
    assert_eq!(n["clock_skewed"], true, "the wrong clock is named: {n}");

    // An event stamped in year 292278994 does not give an incident an onset there.
    let mut ev = xid(0, 79, "GPU has fallen off the bus.");
    ev["ts_ms"] = json!(i64::MAX);
    let a = post(&url, TOKEN, &report("node-g", 1, 2, &[0], vec![ev], INTERVAL_MS));
    assert_eq!(a.status, 200, "{}", a.text);
    let inc = wait_for(Duration::from_secs(60), "the node-g incident", || {
        open_incidents(&url).into_iter().find(|i| i["root"] == "node-g/gpu0")
    });
    let onset = inc["onset_s"].as_f64().unwrap();
    assert!(onset < (now_ms() / 1000 + 3600) as f64, "onset {onset} is in the far future: {inc}");
}

#[test]
fn invented_nodes_and_components_are_capped_with_a_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[limits]\nmax_nodes = 3\nmax_components_per_node = 6\n";
    let analyzer = analyzer_with_config(dir.path(), config, &["--token", TOKEN]);
    let url = analyzer.url.clone();
    for i in 0..3 {
        assert_eq!(post(&url, TOKEN, &good(&format!("n{i}"), 1)).status, 200);
    }
    let a = post(&url, TOKEN, &good("n3", 1));
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.error("fourth node").contains("max_nodes"), "{}", a.text);
    assert_eq!(post(&url, TOKEN, &good("n0", 2)).status, 200, "known nodes keep reporting");
    // Components named only in events: 2 GPUs + 1 NIC known; new NIC names past 6 are dropped.
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"ts_ms": now_ms(), "class": "nic_link_down", "component": format!("nic:ib{i}"), "message": "down"}))
        .collect();
    let a = post(&url, TOKEN, &report("n1", 2, 2, &[], events, INTERVAL_MS));
    assert_eq!(a.status, 200, "{}", a.text);
    let hit = wait_for(Duration::from_secs(10), "the cap metric", || {
        metric(&url, "faultline_limits_hit_total{limit=\"components_per_node\"} ")
    });
    assert!(hit >= 17.0, "{hit}");
    assert!(metric(&url, "faultline_limits_hit_total{limit=\"max_nodes\"} ").unwrap_or(0.0) >= 1.0);
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");
}

#[test]
fn half_sent_headers_are_cut_off_and_healthz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[limits]\nheader_timeout = \"1s\"\nbody_timeout = \"2s\"\n";
    let analyzer = analyzer_with_config(dir.path(), config, &["--token", TOKEN]);
    let addr = analyzer.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        slow.push(s);
    }
    // A body that never finishes.
    let mut body = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"schema"
    );
    body.write_all(head.as_bytes()).unwrap();
    slow.push(body);
    // Every one is closed by the analyzer (the read returns end of file or an error, never hangs).
    for (i, s) in slow.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!("connection {i} still open after 60 s; the analyzer never cut it")
                }
                Err(_) => break,
            }
        }
    }
    let (status, body) = get(&format!("{}/healthz", analyzer.url), None);
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// Mounts a tmpfs of `size` at `dir`; None (the test is skipped) where mounting is not allowed.
fn tmpfs(dir: &std::path::Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is not checked");
        return None;
    }
    Some(Mount(dir.to_path_buf()))
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file until it is full.
fn fill(dir: &std::path::Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_store_disk_is_not_all_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("db");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(_mount) = tmpfs(&mnt, "8m") else { return };
    let analyzer = faultline_tests::start_analyzer(&mnt, Some(TOKEN), &[]);
    let url = analyzer.url.clone();
    assert_eq!(post(&url, TOKEN, &good("node-d", 1)).status, 200);
    wait_ticks(&url, 2);
    fill(&mnt);
    let lost = report("node-d", 2, 2, &[1], vec![xid(1, 79, "GPU has fallen off the bus.")], INTERVAL_MS);
    assert_eq!(post(&url, TOKEN, &lost).status, 200);
    wait_for(Duration::from_secs(60), "a store write error", || {
        metric(&url, "faultline_store_write_errors_total ").filter(|n| *n >= 1.0)
    });
    // The incident is served (from memory), flagged as such.
    let resp = http().get(format!("{url}/api/v1/incidents")).bearer_auth(TOKEN).send().unwrap();
    let flagged = resp.headers().get("x-faultline-store").and_then(|v| v.to_str().ok()).map(str::to_string);
    let list: Value = resp.json().unwrap();
    assert!(list.as_array().unwrap().iter().any(|i| i["root"] == "node-d/gpu1"), "{list}");
    assert!(flagged.is_some_and(|f| f.starts_with("failing")));
    let (status, body) = get(&format!("{url}/healthz"), None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    let out =
        Command::new(bin("faultline")).args(["--analyzer", &url, "--token", TOKEN, "incidents"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("store is failing"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("node-d/gpu1"));
    // Room again: the next tick writes what waited, and all is well.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    wait_for(Duration::from_secs(60), "healthz ok again", || {
        (get(&format!("{url}/healthz"), None).0 == 200).then_some(())
    });
}

#[test]
fn a_store_that_lost_its_wal_refuses_to_start_and_backups_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut analyzer = faultline_tests::start_analyzer(dir.path(), Some(TOKEN), &[]);
    open_gpu_incident(&analyzer.url, "node-w");
    // A backup while it runs.
    let backup = dir.path().join("backup.db");
    let out = Command::new(bin("faultline-analyzer"))
        .arg("--db")
        .arg(dir.path().join("faultline.db"))
        .arg("backup")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    analyzer.kill9();
    let db = dir.path().join("faultline.db");
    let wal = dir.path().join("faultline.db-wal");
    assert!(wal.exists(), "kill -9 leaves the WAL");
    std::fs::remove_file(&wal).unwrap();
    let _ = std::fs::remove_file(dir.path().join("faultline.db-shm"));
    let start = |extra: &[&str]| {
        let mut cmd = Command::new(bin("faultline-analyzer"));
        cmd.args(["--listen", "127.0.0.1:0", "--token", TOKEN]).arg("--db").arg(&db).args(extra);
        cmd
    };
    let out = exits_within(start(&[]), "a start on a store without its WAL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a damaged store must stop the start: {stderr}");
    assert!(stderr.contains("--allow-empty-store"), "{stderr}");
    // Truncated: the same.
    std::fs::write(&db, b"").unwrap();
    let out = exits_within(start(&[]), "a start on a truncated store");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // Told to, it starts (empty).
    let p = Proc::spawn(start(&["--allow-empty-store"]));
    drop(p);
    // The backup holds the incident.
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "127.0.0.1:0", "--token", TOKEN]).arg("--db").arg(&backup);
    let restored = Proc::spawn(cmd);
    assert!(open_incidents(&restored.url).iter().any(|i| i["root"] == "node-w/gpu1"));
}

/// Runs `cmd` and fails the test if it is still running after a minute (it started serving).
fn exits_within(mut cmd: Command, what: &str) -> std::process::Output {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what}: still running (serving) after 60 s; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_smaller_ones() {
    let dir = tempfile::tempdir().unwrap();
    // A 1-character token works but is warned about.
    let analyzer = faultline_tests::start_analyzer(dir.path(), Some("x"), &[]);
    wait_for(Duration::from_secs(10), "the weak-token warning", || {
        analyzer.stderr().contains("WEAK TOKEN").then_some(())
    });
    // `%FF` in an id: a JSON error, like every other.
    let resp = http().get(format!("{}/api/v1/incidents/%FF", analyzer.url)).bearer_auth("x").send().unwrap();
    assert!(resp.status().is_client_error());
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let v: Value = resp.json().unwrap();
    assert!(v["error"].is_string(), "{v}");
    // Unknown fields are accepted (a newer agent may add some) and ignored.
    let mut r = good("node-u", 1);
    r["field_from_the_future"] = json!({"x": 1});
    assert_eq!(post(&analyzer.url, "x", &r).status, 200);
    drop(analyzer);
    // `/dev/zero` as a token file: refused at the cap, at once.
    let mut zero = Command::new(bin("faultline-analyzer"));
    zero.args(["--listen", "127.0.0.1:0", "--token-file", "/dev/zero"]).arg("--db").arg(dir.path().join("z.db"));
    let out = exits_within(zero, "--token-file /dev/zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("limit"), "{stderr}");
    // The CLI pointed at something that is not HTTP does not ask whether the analyzer runs.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten().take(2) {
            let mut s = s;
            let _ = s.read(&mut [0u8; 1024]);
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n");
        }
    });
    let out =
        Command::new(bin("faultline")).args(["--analyzer", &format!("http://{addr}"), "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("Is faultline-analyzer running"), "{stderr}");
    assert!(stderr.contains("not like faultline-analyzer"), "{stderr}");
}
