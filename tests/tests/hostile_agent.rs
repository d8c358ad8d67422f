//! Hostile input, agent side: the agent must never drop a report it could still deliver, and one bad
//! sensor, file or disk must not stop it. Real agents and analyzers on loopback, each case failing
//! before the fix:
//! - 401 and 404 answers dropped every report (a token rotated out of order, a URL with a path);
//!   a 200 that is not the analyzer's answer counted as delivered;
//! - reports in flight lived only in memory (`kill -9` during a slow push lost them);
//! - one fan at 2,000,000 rpm got the whole report refused (422) and dropped;
//! - a full disk stopped the agent from starting;
//! - a FIFO at `proc/uptime` stopped every report;
//! - a 1 MB sysfs file was copied into the report (which the analyzer then refused).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, get_json, http, start_analyzer, wait_for};
use serde_json::Value;

const TOKEN: &str = "agent-hostile-token-0123456789";

struct Agent<'a> {
    node: &'a str,
    analyzer: String,
    token: &'a str,
    spool: &'a Path,
    sysfs: Option<&'a Path>,
    procfs: Option<&'a Path>,
}

impl Agent<'_> {
    fn start(&self) -> Proc {
        let mut cmd = Command::new(bin("faultline-agent"));
        cmd.args(["--node-name", self.node, "--interval", "200ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
            .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
            .args(["--analyzer", &self.analyzer, "--token", self.token])
            .arg("--spool-dir")
            .arg(self.spool)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        if let Some(s) = self.sysfs {
            cmd.arg("--sysfs-root").arg(s);
        }
        if let Some(p) = self.procfs {
            cmd.arg("--procfs-root").arg(p);
        }
        Proc::spawn(cmd)
    }
}

fn node_entry(analyzer: &str, node: &str) -> Option<Value> {
    let nodes = get_json(&format!("{analyzer}/api/v1/nodes"), Some(TOKEN))?;
    nodes.as_array()?.iter().find(|n| n["node"] == node).cloned()
}

fn agent_metric(agent: &str, name: &str) -> Option<f64> {
    let body = http().get(format!("{agent}/metrics")).send().ok()?.text().ok()?;
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn spooled(spool: &Path) -> usize {
    std::fs::read_dir(spool.join("reports"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

/// Every seq from 1 to the last one reached the analyzer.
fn all_delivered(analyzer: &str, node: &str, at_least: u64) -> Option<()> {
    let n = node_entry(analyzer, node)?;
    let last = n["last_seq"].as_u64()?;
    let reports = n["reports"].as_u64()?;
    (last >= at_least && reports >= last && n["seqs_missing"].as_u64() == Some(0)).then_some(())
}

/// A TCP server answering every request with `answer` (None: read the request and never answer).
fn fake_server(answer: Option<&'static [u8]>) -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = tx.send(read_request(&mut s));
            match answer {
                Some(a) => {
                    let _ = s.write_all(a);
                }
                None => held.push(s),
            }
        }
    });
    (url, rx)
}

/// One whole request: the headers, then as much body as `content-length` says.
fn read_request(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return got;
            }
        }
        if n == 0 {
            return got;
        }
    }
}

/// The `seq` of the report in a captured request, JSON or compact.
fn request_seq(req: &[u8]) -> Option<u64> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n")?;
    let body = &req[end + 4..];
    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
    if head.contains(faultline_proto::wire::CONTENT_TYPE) {
        faultline_proto::wire::decode(body).ok().map(|r| r.seq)
    } else {
        serde_json::from_slice::<serde_json::Value>(body).ok()?["seq"].as_u64()
    }
}

#[test]
fn auth_and_url_errors_keep_reports_and_only_the_analyzers_ack_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let spool = dir.path().join("spool");
    let node = "held-node";
    // Token rotated on the analyzer before the agent: 401.
    let mut agent = Agent {
        node,
        analyzer: analyzer.url.clone(),
        token: "old-token-not-valid-anymore",
        spool: &spool,
        sysfs: None,
        procfs: None,
    }
    .start();
    wait_for(Duration::from_secs(60), "reports held in the spool", || (spooled(&spool) >= 5).then_some(()));
    assert_eq!(agent_metric(&agent.url, "faultline_agent_push_held"), Some(1.0));
    assert_eq!(agent_metric(&agent.url, "faultline_agent_refused_reports_total"), Some(0.0));
    assert!(agent.stderr().contains("REPORTS HELD"), "{}", agent.stderr());
    agent.kill9();
    // `--analyzer` given with the full path: 404. Still kept.
    let mut agent = Agent {
        node,
        analyzer: format!("{}/api/v1/reports", analyzer.url),
        token: TOKEN,
        spool: &spool,
        sysfs: None,
        procfs: None,
    }
    .start();
    let before = spooled(&spool);
    wait_for(Duration::from_secs(60), "more reports held", || (spooled(&spool) >= before + 3).then_some(()));
    assert!(agent.stderr().contains("404"), "{}", agent.stderr());
    agent.kill9();
    // Something that answers 200 but is not the analyzer: not delivered.
    let (fake, _rx) = fake_server(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"));
    let mut agent = Agent { node, analyzer: fake, token: TOKEN, spool: &spool, sysfs: None, procfs: None }.start();
    let before = spooled(&spool);
    wait_for(Duration::from_secs(60), "reports kept despite 200", || (spooled(&spool) >= before + 3).then_some(()));
    assert_eq!(agent_metric(&agent.url, "faultline_agent_pushed_reports_total").unwrap_or(0.0), 0.0);
    agent.kill9();
    // Fixed: every report since seq 1 arrives.
    let held = spooled(&spool) as u64;
    let agent =
        Agent { node, analyzer: analyzer.url.clone(), token: TOKEN, spool: &spool, sysfs: None, procfs: None }.start();
    wait_for(Duration::from_secs(120), "every held report delivered", || all_delivered(&analyzer.url, node, held));
    drop(agent);
}

#[test]
fn a_report_refused_for_its_content_is_still_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let spool = dir.path().join("spool");
    // A node name the analyzer cannot use as an id: 422, a problem in the report itself.
    let agent = Agent {
        node: "job:bad",
        analyzer: analyzer.url.clone(),
        token: TOKEN,
        spool: &spool,
        sysfs: None,
        procfs: None,
    }
    .start();
    wait_for(Duration::from_secs(60), "three refusals", || {
        agent_metric(&agent.url, "faultline_agent_refused_reports_total").filter(|n| *n >= 3.0)
    });
    assert!(spooled(&spool) <= 1, "refused reports leave the spool");
}

#[test]
fn kill_9_during_a_slow_push_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let node = "slow-push-node";
    let (slow, rx) = fake_server(None);
    let mut agent = Agent { node, analyzer: slow, token: TOKEN, spool: &spool, sysfs: None, procfs: None }.start();
    let first = rx.recv_timeout(Duration::from_secs(60)).expect("the agent posts");
    assert_eq!(request_seq(&first), Some(1), "{}", String::from_utf8_lossy(&first));
    // While seq 1 hangs, four more reports are built.
    wait_for(Duration::from_secs(60), "later reports", || {
        get_json(&format!("{}/healthz", agent.url), None)?["last_seq"].as_u64().filter(|s| *s >= 5)
    });
    agent.kill9();
    assert!(spooled(&spool) >= 5, "only {} reports on disk after kill -9", spooled(&spool));
    // The next start delivers them all.
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let _agent =
        Agent { node, analyzer: analyzer.url.clone(), token: TOKEN, spool: &spool, sysfs: None, procfs: None }.start();
    wait_for(Duration::from_secs(120), "every report since seq 1", || all_delivered(&analyzer.url, node, 6));
}

/// A sysfs tree with one hwmon chip.
fn hwmon(root: &Path, files: &[(&str, &[u8])]) {
    let chip = root.join("class/hwmon/hwmon0");
    std::fs::create_dir_all(&chip).unwrap();
    for (name, content) in files {
        std::fs::write(chip.join(name), content).unwrap();
    }
}

#[test]
fn an_impossible_sensor_value_or_a_huge_sysfs_file_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let sysfs = dir.path().join("sys");
    let huge = vec![b'x'; 1 << 20];
    hwmon(
        &sysfs,
        &[("name", b"nct6775\n"), ("fan1_input", b"2000000\n"), ("fan2_input", b"1200\n"), ("fan2_label", &huge)],
    );
    let spool = dir.path().join("spool");
    let node = "odd-sensor-node";
    let agent =
        Agent { node, analyzer: analyzer.url.clone(), token: TOKEN, spool: &spool, sysfs: Some(&sysfs), procfs: None }
            .start();
    wait_for(Duration::from_secs(60), "reports accepted", || all_delivered(&analyzer.url, node, 3));
    let errors = agent_metric(&agent.url, "faultline_agent_collector_errors_total{collector=\"host\"}");
    let host_errors = http()
        .get(format!("{}/metrics", agent.url))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("faultline_agent_collector_errors_total") && l.contains("collector=\"host\""))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(host_errors.or(errors).unwrap_or(0.0) >= 1.0, "the bad fan is counted as a host collector error");
    // The report as sent: the bad reading is null, the huge label is not in it.
    let out = Command::new(bin("faultline-agent"))
        .args(["--node-name", node, "--no-gpu", "--kmsg", "/nonexistent/kmsg", "--once"])
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--spool-dir")
        .arg(dir.path().join("once"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.len() < 200_000, "report is {} bytes", out.stdout.len());
    let r = faultline_proto::NodeReport::from_json(&out.stdout).expect("the analyzer takes the report as sent");
    let fans = &r.host.as_ref().unwrap().fans;
    assert_eq!(fans.iter().find(|f| f.name.ends_with("fan1")).and_then(|f| f.rpm), None);
    assert_eq!(fans.iter().find(|f| f.name.ends_with("fan2")).and_then(|f| f.rpm), Some(1200.0));
}

#[test]
fn a_full_disk_does_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let mnt = dir.path().join("full");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _u = Unmount(&mnt);
    {
        let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let node = "full-disk-node";
    let agent =
        Agent { node, analyzer: analyzer.url.clone(), token: TOKEN, spool: &mnt, sysfs: None, procfs: None }.start();
    wait_for(Duration::from_secs(60), "reports from an agent on a full disk", || {
        node_entry(&analyzer.url, node)?["reports"].as_u64().filter(|n| *n >= 3)
    });
    assert!(agent.stderr().contains("disk full") || agent.stderr().contains("No space"), "{}", agent.stderr());
}

#[test]
fn a_blocking_read_does_not_stall_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &[]);
    let procfs = dir.path().join("proc");
    std::fs::create_dir_all(&procfs).unwrap();
    for f in ["stat", "meminfo", "loadavg"] {
        std::fs::write(procfs.join(f), std::fs::read(Path::new("/proc").join(f)).unwrap()).unwrap();
    }
    let fifo = procfs.join("uptime");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let node = "fifo-node";
    let spool = dir.path().join("spool");
    let agent =
        Agent { node, analyzer: analyzer.url.clone(), token: TOKEN, spool: &spool, sysfs: None, procfs: Some(&procfs) }
            .start();
    wait_for(Duration::from_secs(60), "reports while proc/uptime blocks", || {
        node_entry(&analyzer.url, node)?["reports"].as_u64().filter(|n| *n >= 10)
    });
    let body = http().get(format!("{}/metrics", agent.url)).send().unwrap().text().unwrap();
    let host_errors = body
        .lines()
        .filter(|l| l.starts_with("faultline_agent_collector_errors_total") && l.contains("collector=\"host\""))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(host_errors >= 5.0, "the stuck collector is counted every cycle: {host_errors}");
    assert!(agent.stderr().contains("deadline"), "{}", agent.stderr());
}
