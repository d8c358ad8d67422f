//! The analyzer's ingest path, stage by stage, on one thread, with the allocator production uses,
//! in thread CPU time:
//! what each stage costs per report, so work goes where the time is. Reports come from a scenario's
//! world; each node's reports are deltas against its previous one, as agents send them.
//! `cargo run --release -p faultline-sim --example ingestbench -- sim/scenarios/scale-16k.toml 120`
//! With `INGESTBENCH_TRACE=1` it also prints the live heap, RSS and tick time every 10 virtual
//! seconds, and any second whose work grew the live heap by more than 20 MiB, stage by stage;
//! with `INGESTBENCH_BIG=M` it prints where each allocation of M MiB or more was made.

use std::collections::HashMap;
use std::time::Duration;

use faultline_analyzer::engine::Analyzer;
use faultline_analyzer::ingest::{self, Bases, Encoding, NodeLedger};
use faultline_proto::wire::delta::{Sender, envelope};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// mimalloc, counting the bytes live: what the engine holds, apart from the allocator's overhead.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        big(l.size());
        LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        big(n);
        LIVE.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.realloc(p, l, n) }
    }
}

std::thread_local! {
    static IN_BIG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// With `INGESTBENCH_BIG=MiB`: where each allocation of at least that size comes from.
fn big(size: usize) {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if size < (1 << 20) {
        return;
    }
    if IN_BIG.with(|f| f.replace(true)) {
        return;
    }
    let limit = *LIMIT.get_or_init(|| {
        std::env::var("INGESTBENCH_BIG").ok().and_then(|v| v.parse::<usize>().ok()).map_or(usize::MAX, |m| m << 20)
    });
    if size >= limit {
        eprintln!("allocation of {} MiB at\n{}", size >> 20, std::backtrace::Backtrace::force_capture());
    }
    IN_BIG.with(|f| f.set(false));
}

fn live_mib() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) >> 20
}

/// This thread's CPU time: stages are timed in CPU time, not wall time, so that other work on a
/// shared machine does not count.
#[derive(Clone, Copy)]
struct Instant(Duration);

impl Instant {
    fn now() -> Self {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given, nothing else.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        Instant(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    fn elapsed(&self) -> Duration {
        Instant::now().0.saturating_sub(self.0)
    }
}

#[derive(Default)]
struct Stages {
    step: Duration,
    encode: Duration,
    delta_encode: Duration,
    rebuild: Duration,
    from_wire: Duration,
    validate: Duration,
    apply: Duration,
    tick: Duration,
    free: Duration,
    reports: u64,
    delta_bytes: u64,
    events: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("sim/scenarios/scale-16k.toml");
    let secs: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
    let sc = match faultline_sim::Scenario::from_path(std::path::Path::new(path)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let epoch = 1_700_000_000_000;
    let rss = || faultline_sim::report::rss_bytes() >> 20;
    let mut w = faultline_sim::World::new(&sc, epoch);
    let rss_world = rss();
    let l0 = live_mib();
    let mut an = Analyzer::new(Default::default(), w.cluster.topology());
    if std::env::var_os("INGESTBENCH_TRACE").is_some() {
        eprintln!("Analyzer::new (topology): {} MiB", live_mib() - l0);
    }
    let mut ledger = NodeLedger::default();
    let bases = Bases::default();
    let mut senders: HashMap<String, Sender> = HashMap::new();
    let mut s = Stages::default();
    // The first two intervals warm up (first full reports, first bases); the rest is measured.
    let warm_ms = (2.0 * sc.interval_s * 1000.0) as i64;
    // Tick CPU time in the current 10 virtual s (the trace shows how faults change it).
    let mut tick_window = Duration::ZERO;
    while w.t_ms < secs * 1000 {
        if w.t_ms == warm_ms {
            s = Stages::default();
        }
        let live0 = live_mib();
        let t = Instant::now();
        let out = w.step();
        s.step += t.elapsed();
        let live_step = live_mib();
        let n_out = out.len();
        if std::env::var_os("INGESTBENCH_TRACE").is_some() && live_step > live0 + 20 {
            let big = out.iter().map(|o| (faultline_proto::wire::encode(&o.report).len(), o)).max_by_key(|(n, _)| *n);
            if let Some((bytes, o)) = big {
                let r = &o.report;
                eprintln!(
                    "t {} ms: largest report {} ({} B compact): {} NICs, {} GPUs, {} jobs, {} ranks, {} events, {} probes, {} disks",
                    w.t_ms,
                    r.node,
                    bytes,
                    r.nics.len(),
                    r.gpus.len(),
                    r.jobs.len(),
                    r.jobs.iter().map(|j| j.ranks.len()).sum::<usize>(),
                    r.events.len(),
                    r.probes.len(),
                    r.disks.len()
                );
            }
        }
        let now = epoch + w.t_ms;
        let mut spent = Vec::with_capacity(out.len());
        for o in out {
            let r = o.report;
            s.events += r.events.len() as u64;
            let t = Instant::now();
            let full = faultline_proto::wire::encode(&r);
            s.encode += t.elapsed();
            let t = Instant::now();
            let snd = senders.entry(r.node.clone()).or_insert_with(|| Sender::new(30));
            let body = snd.delta(&r.node, r.seq, &full);
            snd.acknowledged(r.seq, full.clone(), body.is_some());
            s.delta_encode += t.elapsed();
            let compact = match body {
                Some(d) => {
                    s.delta_bytes += d.len() as u64;
                    let t = Instant::now();
                    let rebuilt = envelope(&d).and_then(|e| bases.rebuild_envelope(&e)).expect("rebuild");
                    s.rebuild += t.elapsed();
                    rebuilt
                }
                None => {
                    s.delta_bytes += full.len() as u64;
                    full
                }
            };
            let t = Instant::now();
            let d = ingest::decode(&compact, Encoding::Protobuf).expect("decode");
            s.from_wire += t.elapsed();
            let t = Instant::now();
            let _ = d.report().validate();
            s.validate += t.elapsed();
            bases.keep(&r.node, r.seq, compact);
            let t = Instant::now();
            let a = ingest::apply(&mut an, &mut ledger, d, now);
            s.apply += t.elapsed();
            spent.push(a.report);
            s.reports += 1;
            drop(r);
        }
        let live_reports = live_mib();
        let t = Instant::now();
        drop(spent);
        s.free += t.elapsed();
        let before_tick = live_mib();
        let t = Instant::now();
        an.tick(now);
        if std::env::var_os("INGESTBENCH_TRACE").is_some() && w.t_ms <= 11_000 {
            eprintln!(
                "t {} ms: tick grew live heap by {} MiB (now {})",
                w.t_ms,
                live_mib() as i64 - before_tick as i64,
                live_mib()
            );
        }
        let tk = t.elapsed();
        s.tick += tk;
        // A second whose work grew the live heap by more than 20 MiB, stage by stage.
        if std::env::var_os("INGESTBENCH_TRACE").is_some() && live_mib() > live0 + 20 {
            eprintln!(
                "t {} ms: live heap {} MiB -> step ({} reports) {} -> reports (encode, decode, apply) {} -> free, tick {}",
                w.t_ms,
                n_out,
                live0,
                live_step,
                live_reports,
                live_mib()
            );
        }
        tick_window += tk;
        if std::env::var_os("INGESTBENCH_TRACE").is_some() && w.t_ms % 10_000 == 0 {
            eprintln!(
                "t {} s: live heap {} MiB, RSS {} MiB, events so far {}, ticks of the last 10 s {:.0} ms",
                w.t_ms / 1000,
                live_mib(),
                rss(),
                s.events,
                tick_window.as_secs_f64() * 1000.0
            );
            tick_window = Duration::ZERO;
        }
    }
    let rss_end = rss();
    drop(senders);
    let rss_no_senders = rss();
    let (bn, bb) = bases.size();
    let live_with = live_mib();
    drop(an);
    let rss_no_engine = rss();
    println!(
        "live heap: engine {} MiB ({:.0} KiB per node)",
        live_with - live_mib(),
        (live_with - live_mib()) as f64 * 1024.0 / w.nodes.len().max(1) as f64
    );
    println!(
        "RSS MiB: world built {rss_world}, end {rss_end}, without the agents' delta bases {rss_no_senders}, without the engine {rss_no_engine} (engine ~{} MiB = {:.0} KiB per node); analyzer delta bases {bn} nodes, {} MiB",
        rss_no_senders.saturating_sub(rss_no_engine),
        (rss_no_senders.saturating_sub(rss_no_engine) as f64 * 1024.0) / w.nodes.len().max(1) as f64,
        bb >> 20
    );
    let n = s.reports.max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let rounds = ((secs * 1000 - warm_ms) as f64 / (sc.interval_s * 1000.0)).max(1.0);
    println!(
        "{} reports measured ({} rounds of {} nodes), {:.0} B/report sent",
        s.reports,
        rounds,
        w.nodes.len(),
        s.delta_bytes as f64 / n
    );
    println!("per report, us (validate is timed apart but is also inside decode):");
    for (name, d) in [
        ("sim step (physics + report)", s.step),
        ("agent: compact encode", s.encode),
        ("agent: delta encode", s.delta_encode),
        ("analyzer: delta rebuild", s.rebuild),
        ("analyzer: decode + validate", s.from_wire),
        ("analyzer: validate", s.validate),
        ("analyzer: apply (engine + ledger)", s.apply),
        ("analyzer: tick (per report)", s.tick),
        ("analyzer: free reports", s.free),
    ] {
        println!("  {name:<50} {:>8.1}", us(d));
    }
    println!(
        "analyzer per round (rebuild + decode + apply + tick + free): {:.0} ms; apply + tick alone {:.0} ms; peak RSS {} MiB",
        (s.rebuild + s.from_wire + s.apply + s.tick + s.free).as_secs_f64() * 1000.0 / rounds,
        (s.apply + s.tick).as_secs_f64() * 1000.0 / rounds,
        faultline_sim::report::peak_rss_bytes() >> 20
    );
}
