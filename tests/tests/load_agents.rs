//! A lean load generator for `bench/load-2000-agents.sh` (ignored in normal test runs): N simulated
//! agents, each posting one report per second for D seconds to an analyzer, on an open-loop schedule
//! (node i of second s is due at s + i/N), from a pool of sender threads. The reports are the
//! simulator's own first-round reports (8 GPUs, 8 NICs, host, jobs), serialized once per node with
//! placeholders for `seq` and `timestamp_ms`, so generating them costs next to nothing and the
//! numbers are the analyzer's.
//!
//! Prints sent, refused, client-side p50/p99/max latency and how late the senders started (if the
//! senders cannot keep the schedule, the latency numbers understate the load and it says so).
//! Bounded: nothing is sent after twice the schedule plus 10 s; what was left is counted as skipped.
//!
//! Run: `FAULTLINE_LOAD_URL=http://… FAULTLINE_LOAD_TOKEN=… cargo test --release -p faultline-tests
//! --test load_agents -- --ignored --nocapture` (NODES, DURATION_S, THREADS optional).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_sim::{Scenario, World};

const SEQ_MARK: u64 = 987_654_321_987;
const TS_MARK: i64 = 1_111_111_111_111;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore = "a load generator for bench/load-2000-agents.sh, not a test"]
fn load_agents() {
    let url = std::env::var("FAULTLINE_LOAD_URL").expect("FAULTLINE_LOAD_URL");
    let token = std::env::var("FAULTLINE_LOAD_TOKEN").ok();
    let nodes: u32 = env("NODES", 2000);
    let duration_s: u64 = env("DURATION_S", 60);
    let threads: usize = env("THREADS", 32);

    let sc = Scenario::parse(
        &format!(
            "name = \"lean-load\"\nseed = 7\nduration_s = 10\ninterval_s = 1\n[cluster]\nfabric = \"tor\"\n\
             nodes = {nodes}\nnodes_per_leaf = 64\nspines = 8\ngpus_per_node = 8\nnics_per_node = 8\n\
             gpu_model = \"H100\"\n[[job]]\nid = \"train\"\nnodes = {nodes}\nstep_time_s = 2.0\n"
        ),
        "lean-load.toml",
    )
    .unwrap();
    let mut world = World::new(&sc, 1_700_000_000_000);
    let mut templates: Vec<(String, String)> = Vec::new();
    for _ in 0..3 {
        for o in world.step() {
            if templates.iter().any(|(n, _)| *n == o.report.node) {
                continue;
            }
            let mut r = o.report;
            r.seq = SEQ_MARK;
            r.timestamp_ms = TS_MARK;
            r.urgent = false;
            r.events.clear();
            templates.push((r.node.clone(), serde_json::to_string(&r).unwrap()));
        }
    }
    assert_eq!(templates.len(), nodes as usize, "one template per node");
    let bytes: usize = templates.iter().map(|(_, t)| t.len()).sum::<usize>() / templates.len();
    eprintln!("lean load: {nodes} agents × {duration_s} s, {threads} sender threads, ~{bytes} bytes per report");

    let templates = Arc::new(templates);
    let (tx, rx) = mpsc::sync_channel::<(usize, u64, Instant)>(100_000);
    let rx = Arc::new(Mutex::new(rx));
    let refused = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + Duration::from_secs(2 * duration_s + 10);
    let first_refusal = Arc::new(Mutex::new(None::<String>));
    let results = Arc::new(Mutex::new((Vec::<f64>::new(), Vec::<f64>::new())));
    let endpoint = format!("{}/api/v1/reports", url.trim_end_matches('/'));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (rx, templates, refused, first, results, skipped) = (
                rx.clone(),
                templates.clone(),
                refused.clone(),
                first_refusal.clone(),
                results.clone(),
                skipped.clone(),
            );
            let (endpoint, token) = (endpoint.clone(), token.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let (mut lat, mut late) = (Vec::new(), Vec::new());
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((node, seq, due)) = job else { break };
                    if Instant::now() > deadline {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
                    let body = templates[node].1.replacen(&SEQ_MARK.to_string(), &seq.to_string(), 1).replacen(
                        &TS_MARK.to_string(),
                        &now_ms.to_string(),
                        1,
                    );
                    let t0 = Instant::now();
                    late.push(t0.saturating_duration_since(due).as_secs_f64() * 1000.0);
                    let mut req = client.post(&endpoint).header("content-type", "application/json").body(body);
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    let ok = match req.send() {
                        Ok(r) if r.status().is_success() => true,
                        Ok(r) => {
                            let s = r.status();
                            first
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| format!("{s}: {}", r.text().unwrap_or_default()));
                            false
                        }
                        Err(e) => {
                            first.lock().unwrap().get_or_insert_with(|| e.to_string());
                            false
                        }
                    };
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut r = results.lock().unwrap();
                r.0.extend(lat);
                r.1.extend(late);
            })
        })
        .collect();

    'schedule: for s in 0..duration_s {
        for i in 0..nodes as usize {
            let due = start + Duration::from_secs(s) + Duration::from_secs_f64(i as f64 / f64::from(nodes));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if Instant::now() > deadline {
                let left = (duration_s - s) * u64::from(nodes) - i as u64;
                skipped.fetch_add(left, Ordering::Relaxed);
                break 'schedule;
            }
            tx.send((i, s + 1, due)).unwrap();
        }
    }
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    let (mut lat, mut late) = std::mem::take(&mut *results.lock().unwrap());
    lat.sort_by(f64::total_cmp);
    late.sort_by(f64::total_cmp);
    let refused = refused.load(Ordering::Relaxed);
    println!("LEAN sent {} (skipped past the deadline: {})", lat.len(), skipped.load(Ordering::Relaxed));
    println!("LEAN refused {refused} {}", first_refusal.lock().unwrap().clone().unwrap_or_default());
    println!(
        "LEAN latency_ms p50 {:.2} p99 {:.2} max {:.2}",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "LEAN late_start_ms p50 {:.1} p99 {:.1} max {:.1}",
        pct(&late, 50.0),
        pct(&late, 99.0),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!("LEAN wall_s {wall:.1} for {duration_s} s of schedule");
}
