//! Load benchmarks of the progress API (ignored by default; each takes ~30 s and wants a release
//! build): a real `faultline-agent` process, 1,000 ranks each posting 10 times a second for ~20 s,
//! over its own HTTP keep-alive connection or as UDP datagrams from its own socket, and the agent's
//! CPU time read from `/proc/<pid>/stat`.
//!
//! ```text
//! cargo test -p faultline-agent --release --test progress_load -- --ignored --nocapture
//! ```
//!
//! Knobs (environment): `FAULTLINE_BENCH_RANKS` (1000), `FAULTLINE_BENCH_RATE` (posts per rank per
//! second, 10), `FAULTLINE_BENCH_SECS` (20). It prints the agent's CPU as a percentage of one core,
//! idle and under load. It checks correctness (every post answered 204, every rank's last step
//! stored), not speed: the figure is for the report, since a shared CI machine cannot promise it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3; utime is field 14, stime field 15.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Raise the open-file limit so 1,000 client and 1,000 server sockets fit (the agent inherits it).
fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read one HTTP/1.1 response off a keep-alive connection; returns the status code.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Start a release-built agent on 127.0.0.1:0 (HTTP and UDP progress on the same port); returns it,
/// its pid, the progress address, its metrics URL and its spool directory (kept alive by the caller).
fn start_agent() -> (Agent, u32, String, String, tempfile::TempDir) {
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--no-gpu", "--interval", "10s"])
        .arg("--spool-dir")
        .arg(spool.path())
        .arg("--node-name")
        .arg("bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("start faultline-agent");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let agent = Agent(child);
    let pid = agent.0.id();
    let first = lines.next().expect("agent output").unwrap();
    let metrics = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_string();
    let second = lines.next().expect("progress line").unwrap();
    let paddr = second.strip_prefix("progress on http://").unwrap_or_else(|| panic!("{second}")).to_string();
    // Keep draining the agent's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (agent, pid, paddr, metrics, spool)
}

/// The agent's CPU over 5 s of doing nothing but its collectors, % of one core.
fn idle_cpu_pct(pid: u32) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let idle_secs = 5.0;
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    (cpu_seconds(pid) - c0) / idle_secs * 100.0
}

#[test]
#[ignore = "load benchmark: run with --release -- --ignored --nocapture"]
fn progress_api_load_1000_ranks_10_posts_per_second() {
    let ranks = env_num("FAULTLINE_BENCH_RANKS", 1000);
    let rate = env_num("FAULTLINE_BENCH_RATE", 10).max(1);
    let secs = env_num("FAULTLINE_BENCH_SECS", 20).clamp(1, 600);
    raise_nofile();

    let (agent, pid, paddr, _metrics, _spool) = start_agent();

    // Idle baseline (collectors only).
    let idle_pct = idle_cpu_pct(pid);

    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (cpu_load, wall, last_step) = rt.block_on(async {
        // Connect everyone first (keep-alive), then start posting in step.
        let mut conns = Vec::new();
        for _ in 0..ranks {
            let s = tokio::net::TcpStream::connect(&paddr).await.expect("connect");
            s.set_nodelay(true).unwrap();
            conns.push(s);
        }
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let posts = secs * rate;
        let start = tokio::time::Instant::now() + Duration::from_millis(200);
        let t0 = Instant::now() + Duration::from_millis(200);
        let c_start = cpu_seconds(pid);
        let mut tasks = Vec::new();
        for (r, mut s) in conns.into_iter().enumerate() {
            let (ok, bad) = (ok.clone(), bad.clone());
            // Spread the ranks over the period so posts do not arrive in one burst.
            let offset = period.mul_f64(r as f64 / ranks as f64);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(start + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut buf = Vec::with_capacity(256);
                for step in 0..posts {
                    tick.tick().await;
                    let body = format!(
                        r#"{{"job":"bench","rank":{r},"step":{step},"step_time_ms":100.0,"compute_ms":80.0,"loss":2.5}}"#
                    );
                    let req = format!(
                        "POST /progress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let res = async {
                        s.write_all(req.as_bytes()).await?;
                        read_response(&mut s, &mut buf).await
                    }
                    .await;
                    match res {
                        Ok(204) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - c_start;
        (cpu, wall, posts - 1)
    });

    let sent = ok.load(Ordering::Relaxed) + bad.load(Ordering::Relaxed);
    let load_pct = cpu_load / wall * 100.0;
    println!("progress load: {ranks} ranks x {rate} posts/s for {wall:.1} s wall");
    println!(
        "  posts: {sent} sent, {} answered 204, {} failed; {:.0} posts/s achieved",
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        sent as f64 / wall
    );
    println!(
        "  agent CPU: idle {idle_pct:.2}% of one core, under load {load_pct:.2}% of one core ({:.1} us per post)",
        cpu_load / sent.max(1) as f64 * 1e6
    );

    assert_eq!(bad.load(Ordering::Relaxed), 0, "every post must be accepted");
    assert_eq!(ok.load(Ordering::Relaxed), ranks * secs * rate);
    // Every rank's last step reached the agent's store.
    let list: serde_json::Value = reqwest::blocking::get(format!("http://{paddr}/progress")).unwrap().json().unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len() as u64, ranks);
    assert!(entries.iter().all(|e| e["progress"]["step"].as_u64() == Some(last_step)));
    drop(agent);
}

/// A counter's value from the agent's `/metrics` (text format, the `Hostname="bench"` series).
fn counter(metrics_url: &str, name: &str) -> u64 {
    let text = reqwest::blocking::get(metrics_url).unwrap().text().unwrap();
    let prefix = format!("{name}{{Hostname=\"bench\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}")) as u64
}

/// The same load as above over the datagram path (the default of `report-progress` and the Python
/// snippet): 1,000 ranks, each with its own UDP socket, 10 datagrams a second for ~20 s.
#[test]
#[ignore = "load benchmark: run with --release -- --ignored --nocapture"]
fn progress_datagrams_load_1000_ranks_10_posts_per_second() {
    let ranks = env_num("FAULTLINE_BENCH_RANKS", 1000) as usize;
    let rate = env_num("FAULTLINE_BENCH_RATE", 10).max(1);
    let secs = env_num("FAULTLINE_BENCH_SECS", 20).clamp(1, 600);
    raise_nofile();
    let (agent, pid, paddr, metrics_base, _spool) = start_agent();
    let idle_pct = idle_cpu_pct(pid);

    let socks: Vec<std::net::UdpSocket> = (0..ranks)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(&paddr).unwrap();
            s
        })
        .collect();
    // Each period is cut into 100 slices; rank r sends in slice r * 100 / ranks, so posts are spread
    // over the period rather than arriving in one burst.
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let slices = 100u32;
    let posts = secs * rate;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let t0 = Instant::now();
    let c_start = cpu_seconds(pid);
    for step in 0..posts {
        for slice in 0..slices {
            let due = t0 + period * step as u32 + period / slices * slice;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let lo = ranks * slice as usize / slices as usize;
            let hi = ranks * (slice as usize + 1) / slices as usize;
            for (r, s) in socks.iter().enumerate().take(hi).skip(lo) {
                let body = format!(
                    r#"{{"job":"bench","rank":{r},"step":{step},"step_time_ms":100.0,"compute_ms":80.0,"loss":2.5}}"#
                );
                match s.send(body.as_bytes()) {
                    Ok(_) => sent += 1,
                    Err(_) => send_errors += 1,
                }
            }
        }
    }
    let metrics = format!("{metrics_base}/metrics");
    // Wait (generously) for the agent to have read everything that was sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut stored, mut dropped) = (0, 0);
    while Instant::now() < deadline {
        stored = counter(&metrics, "faultline_agent_progress_posts_total");
        dropped = counter(&metrics, "faultline_agent_progress_dropped_total");
        if stored + dropped >= sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_load = cpu_seconds(pid) - c_start;
    let load_pct = cpu_load / wall * 100.0;
    println!("progress datagrams: {ranks} ranks x {rate} posts/s for {wall:.1} s wall");
    println!(
        "  datagrams: {sent} sent ({send_errors} send errors), {stored} stored, {dropped} dropped; {:.0} posts/s",
        sent as f64 / wall
    );
    println!(
        "  agent CPU: idle {idle_pct:.2}% of one core, under load {load_pct:.2}% of one core ({:.1} us per post)",
        cpu_load / sent.max(1) as f64 * 1e6
    );
    assert_eq!(send_errors, 0);
    assert_eq!(stored + dropped, sent, "every datagram is either stored or counted as dropped");
    assert_eq!(dropped, 0, "the receive buffer held up at this rate");
    let last_step = posts - 1;
    let list: serde_json::Value = reqwest::blocking::get(format!("http://{paddr}/progress")).unwrap().json().unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), ranks);
    assert!(entries.iter().all(|e| e["progress"]["step"].as_u64() == Some(last_step)));
    drop(agent);
}

/// The in-process part of a post (parse, validate, store) without HTTP, to tell how much of the
/// per-post cost is ours and how much is the socket and HTTP layers.
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn progress_store_cost_per_post_without_http() {
    let store = faultline_agent::progress::ProgressStore::new();
    let ranks = 1000u64;
    let rounds = 200u64;
    let bodies: Vec<String> = (0..ranks)
        .flat_map(|r| {
            (0..2).map(move |s| {
                format!(r#"{{"job":"bench","rank":{r},"step":{s},"step_time_ms":100.0,"compute_ms":80.0,"loss":2.5}}"#)
            })
        })
        .collect();
    let start = Instant::now();
    for round in 0..rounds {
        for r in 0..ranks {
            let b = &bodies[(r * 2 + round % 2) as usize];
            store.post_json(b.as_bytes()).unwrap();
        }
    }
    let per = start.elapsed().as_secs_f64() / (ranks * rounds) as f64;
    println!("store: {:.2} us per post (parse + validate + apply), {} entries", per * 1e6, store.len());
}
