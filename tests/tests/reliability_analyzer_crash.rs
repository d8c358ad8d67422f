//! The analyzer killed (`kill -9`) in the middle of an ingest burst, with real processes.
//!
//! Eight simulated agents push as fast as the analyzer lets them (each resends a report that got no
//! answer, in order, the way the real agent's spool does). One of them reports a GPU off the bus, so
//! an incident is open when the analyzer dies. Checked:
//! - every report answered 2xx was applied: with the senders paused, each node's `reports` and
//!   `last_seq` in `/api/v1/nodes` equal what got a 2xx, with no gap and nothing out of order —
//!   before the kill (first process) and after it (second process);
//! - across the kill, every seq of every node was acknowledged by one of the two processes: nothing
//!   a sender had in hand was lost (the in-flight ones got no answer and were sent again);
//! - the incident open before the kill is still open after it, with the same id and opening time;
//! - the restart is bounded and logged (the "store loaded" line with its elapsed time).
//!
//! What is NOT kept, by design: the first process's in-memory windows (samples behind the soft
//! detectors, the per-node ledger) die with it; the second rebuilds them from the next reports.
//! Incidents and the notification outbox are what is durable (SQLite, WAL). A report acknowledged in
//! the last tick before the kill whose hard evidence had not yet become an incident is only
//! recovered if the agent repeats it: a lost GPU is reported lost in every report (so it is), a
//! one-off XID event is not. Notification delivery across a kill is tested in
//! `notify_webhook.rs` (`..._a_kill9_mid_delivery_loses_nothing`).

mod reliability_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use faultline_tests::{Proc, bin, free_port, get_json, wait_for};
use reliability_support::*;
use serde_json::Value;

const TOKEN: &str = "crash-test-token";
const NODES: usize = 8;
/// The node whose GPU 1 falls off the bus.
const SICK: usize = 3;

fn start_on(port: u16, dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("faultline.db"))
        .args(["--token", TOKEN])
        .env("RUST_LOG", "info");
    Proc::spawn(cmd)
}

fn node_name(k: usize) -> String {
    format!("node-{:04}", 100 + k)
}

/// One sender's record of what the analyzer acknowledged: seq → generation that answered.
#[derive(Default)]
struct Acks {
    by_gen: BTreeMap<u64, u32>,
    /// 2xx answers that straddled the kill (sent before it, answered after it was ordered).
    ambiguous: BTreeSet<u64>,
}

struct Shared {
    url: Mutex<String>,
    /// 1 while the first analyzer runs; set to 2 just before it is killed.
    generation: AtomicU32,
    pause: AtomicBool,
    parked: AtomicUsize,
    stop: AtomicBool,
    acks: Vec<Mutex<Acks>>,
}

fn sender(k: usize, sh: Arc<Shared>) {
    let node = node_name(k);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut seq = 1u64;
    loop {
        if sh.pause.load(Ordering::SeqCst) {
            sh.parked.fetch_add(1, Ordering::SeqCst);
            while sh.pause.load(Ordering::SeqCst) && !sh.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
            sh.parked.fetch_sub(1, Ordering::SeqCst);
        }
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let lost: &[u32] = if k == SICK && seq >= 5 { &[1] } else { &[] };
        let events = if k == SICK && seq == 5 { vec![xid(1, 79, "GPU has fallen off the bus.")] } else { Vec::new() };
        let body = report(&node, seq, 2, lost, events, 600_000).to_string().into_bytes();
        let url = sh.url.lock().unwrap().clone();
        let gen_before = sh.generation.load(Ordering::SeqCst);
        let answer = post_raw(&client, &url, Some(TOKEN), Some("application/json"), body);
        let gen_after = sh.generation.load(Ordering::SeqCst);
        match answer {
            Some(a) if a.status == 200 => {
                let mut acks = sh.acks[k].lock().unwrap();
                if gen_before == gen_after {
                    acks.by_gen.insert(seq, gen_before);
                } else {
                    acks.ambiguous.insert(seq);
                }
                seq += 1;
            }
            Some(a) if a.status == 429 => {
                let wait = a.retry_after.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1u64);
                thread::sleep(Duration::from_secs(wait));
            }
            Some(a) => panic!("{node} seq {seq}: unexpected {}: {}", a.status, a.text),
            // No answer (the analyzer is dead or restarting): keep the report, try again shortly.
            None => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Pause every sender between two posts and wait until all are parked.
fn pause(sh: &Shared) {
    sh.pause.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(60), "the senders to pause", || {
        (sh.parked.load(Ordering::SeqCst) == NODES).then_some(())
    });
}

fn resume(sh: &Shared) {
    sh.pause.store(false, Ordering::SeqCst);
}

/// Compare `/api/v1/nodes` with what generation `gen` acknowledged; `min_reports` per node.
fn check_ledger(url: &str, sh: &Shared, generation: u32) {
    let nodes = get_json(&format!("{url}/api/v1/nodes"), Some(TOKEN)).expect("nodes");
    let by_name: BTreeMap<String, Value> =
        nodes.as_array().unwrap().iter().map(|n| (n["node"].as_str().unwrap().to_string(), n.clone())).collect();
    for k in 0..NODES {
        let node = node_name(k);
        let acks = sh.acks[k].lock().unwrap();
        let mine: Vec<u64> = acks.by_gen.iter().filter(|(_, g)| **g == generation).map(|(s, _)| *s).collect();
        assert!(acks.ambiguous.is_empty() || generation == 2, "ambiguous acks before the kill?");
        let n = by_name.get(&node).unwrap_or_else(|| panic!("{node} missing from /api/v1/nodes: {nodes}"));
        // Ambiguous answers came from one of the two; a straddling one counts for the second only if
        // the second shows it.
        let extra = acks.ambiguous.iter().filter(|s| mine.first().is_none_or(|f| *s >= f)).count() as u64;
        let reports = n["reports"].as_u64().unwrap();
        assert!(
            reports >= mine.len() as u64 && reports <= mine.len() as u64 + extra,
            "{node}: the analyzer (generation {generation}) applied {reports} reports, {} were acknowledged: {n}",
            mine.len()
        );
        let max = mine.iter().max().copied().unwrap_or(0).max(acks.ambiguous.iter().max().copied().unwrap_or(0));
        assert_eq!(n["last_seq"].as_u64().unwrap(), max, "{node}: last_seq is not the last acknowledged seq: {n}");
        assert_eq!(n["gaps"], 0, "{node}: a gap: {n}");
        assert_eq!(n["late"], 0, "{node}: out of order: {n}");
        assert_eq!(n["duplicates"], 0, "{node}: duplicates: {n}");
    }
}

#[test]
fn analyzer_killed_mid_burst_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = start_on(port, dir.path());
    let sh = Arc::new(Shared {
        url: Mutex::new(first.url.clone()),
        generation: AtomicU32::new(1),
        pause: AtomicBool::new(false),
        parked: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        acks: (0..NODES).map(|_| Mutex::new(Acks::default())).collect(),
    });
    let senders: Vec<_> = (0..NODES)
        .map(|k| {
            let sh = sh.clone();
            thread::spawn(move || sender(k, sh))
        })
        .collect();

    // Burst until the sick node's incident is open and every node has been heard many times.
    let sick_gpu = format!("{}/gpu1", node_name(SICK));
    let incident = wait_for(Duration::from_secs(90), "the lost-GPU incident during the burst", || {
        let open = get_json(&format!("{}/api/v1/incidents?status=open", first.url), Some(TOKEN))?;
        open.as_array()?.iter().find(|i| i["root"] == sick_gpu.as_str()).cloned()
    });
    wait_for(Duration::from_secs(60), "20 reports from every node", || {
        sh.acks.iter().all(|a| a.lock().unwrap().by_gen.len() >= 20).then_some(())
    });

    // Every 2xx so far was applied, in order, by the first process.
    pause(&sh);
    check_ledger(&first.url, &sh, 1);
    resume(&sh);

    // Let the burst run, then kill -9 while posts are in flight.
    let before_kill: usize = sh.acks.iter().map(|a| a.lock().unwrap().by_gen.len()).sum();
    wait_for(Duration::from_secs(60), "more posts in flight", || {
        let now: usize = sh.acks.iter().map(|a| a.lock().unwrap().by_gen.len()).sum();
        (now >= before_kill + 40).then_some(())
    });
    sh.generation.store(2, Ordering::SeqCst);
    first.kill9();
    let log_first = first.stderr();
    drop(first);
    thread::sleep(Duration::from_millis(500)); // senders now fail and hold their reports

    let second = start_on(port, dir.path());
    *sh.url.lock().unwrap() = second.url.clone();
    wait_for(Duration::from_secs(90), "20 reports from every node after the restart", || {
        sh.acks.iter().all(|a| a.lock().unwrap().by_gen.values().filter(|g| **g == 2).count() >= 20).then_some(())
    });
    pause(&sh);
    check_ledger(&second.url, &sh, 2);

    // Nothing a sender had in hand was lost: every seq from 1 to the last was acknowledged by one of
    // the two processes.
    let mut straddled = 0;
    for k in 0..NODES {
        let acks = sh.acks[k].lock().unwrap();
        let all: BTreeSet<u64> = acks.by_gen.keys().chain(acks.ambiguous.iter()).copied().collect();
        let last = *all.iter().next_back().unwrap();
        let missing: Vec<u64> = (1..=last).filter(|s| !all.contains(s)).collect();
        assert!(missing.is_empty(), "{}: seqs never acknowledged: {missing:?}", node_name(k));
        straddled += acks.ambiguous.len();
        let first_gen2 = acks.by_gen.iter().find(|(_, g)| **g == 2).map(|(s, _)| *s).unwrap();
        let last_gen1 = acks.by_gen.iter().filter(|(_, g)| **g == 1).map(|(s, _)| *s).max().unwrap();
        println!("{}: first process acknowledged 1..={last_gen1}, second from {first_gen2} to {last}", node_name(k));
    }
    println!("{straddled} acknowledgements straddled the kill");

    // The incident open before the kill is still open, the same one.
    let after = get_json(&format!("{}/api/v1/incidents?status=all", second.url), Some(TOKEN)).unwrap();
    let same: Vec<&Value> = after.as_array().unwrap().iter().filter(|i| i["root"] == sick_gpu.as_str()).collect();
    assert_eq!(same.len(), 1, "one incident for the lost GPU across the crash: {after}");
    assert_eq!(same[0]["id"], incident["id"]);
    assert_eq!(same[0]["opened_s"], incident["opened_s"]);
    assert_eq!(same[0]["status"], "open");

    // The restart read the store, said so, and said how long it took.
    let log = second.stderr();
    let line = log.lines().find(|l| l.contains("store loaded")).unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    assert!(line.contains("elapsed_ms") && line.contains("open=1"), "{line}");
    assert!(!log_first.contains(TOKEN) && !log.contains(TOKEN), "the token was logged");

    sh.stop.store(true, Ordering::SeqCst);
    resume(&sh);
    for s in senders {
        s.join().unwrap();
    }
}
