//! Runs a scenario: in-process (each report encoded, compact by default, and fed to the real analyzer engine through
//! `ingest::ingest_body`, the path HTTP takes too: one decode and validation, the node ledger, the
//! future-stamp rule; with a `tick` every virtual second) or over the wire
//! (POST to a running analyzer, paced N× real time, then read its incidents). Then scores.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_analyzer::ingest::{self, Encoding, NodeLedger};
use faultline_analyzer::{Analyzer, EngineConfig, IncidentChange, IngestError, IngestOutcome};
use faultline_proto::Incident;

use crate::cputime::thread_cpu;
use crate::report::{AnalyzerStats, ClusterInfo, JobPlacement, RunReport, peak_rss_bytes, rss_bytes};
use crate::scenario::Scenario;
use crate::score::{self, RunFacts, RunIncident, TruthFault};
use crate::world::{DEFAULT_EPOCH_MS, Outgoing, World};

/// Seconds of reports the simulator may run ahead of the analyzer in-process.
const PIPELINE_DEPTH: usize = 2;

/// One virtual second of encoded reports: (arrival ms, node, seq, body, its encoding: a delta
/// sender sends some reports in full).
struct Second {
    t_ms: i64,
    items: Vec<(i64, String, u64, Vec<u8>, Encoding)>,
    sim_time: Duration,
}

/// What a simulated agent sends for one report.
enum Body {
    /// The full compact report.
    Full(Vec<u8>),
    /// A delta, and (when asked for) the full report to resend if the analyzer answers 409.
    Delta { body: Vec<u8>, resend: Option<Vec<u8>> },
}

/// A simulated agent's body for `r`: a delta against its previous report, or the full compact
/// report the first time and every `FULL_EVERY` reports (as the real agent does), taken as
/// acknowledged at once. `keep_resend`: keep a copy of the full report beside a delta (over the
/// wire a 409 asks for it; in-process nothing does, and the copy is not made).
fn delta_body(
    senders: &mut HashMap<String, faultline_proto::wire::delta::Sender>,
    o: &mut Outgoing,
    keep_resend: bool,
) -> Body {
    let full = compact(o);
    let r = &o.report;
    if !senders.contains_key(&r.node) {
        let fresh = faultline_proto::wire::delta::Sender::new(faultline_agent::export::push::FULL_EVERY);
        senders.insert(r.node.clone(), fresh);
    }
    let s = senders.get_mut(&r.node).expect("inserted above when missing");
    match s.delta(&r.node, r.seq, &full) {
        Some(body) => {
            let resend = keep_resend.then(|| full.clone());
            s.acknowledged(r.seq, full, true);
            Body::Delta { body, resend }
        }
        None => {
            s.acknowledged(r.seq, full.clone(), false);
            Body::Full(full)
        }
    }
}

/// The compact bytes of an outgoing report: those made as it was built, else made now.
fn compact(o: &mut Outgoing) -> Vec<u8> {
    o.compact.take().unwrap_or_else(|| faultline_proto::wire::encode(&o.report))
}

/// (arrival ms, node, seq, body, what `ingest::decode` made of it).
type DecodedItem = (i64, String, u64, Vec<u8>, Result<ingest::Decoded, ingest::DecodeError>);

/// One virtual second of reports after `ingest::decode`, which runs on its own thread as it runs
/// on the HTTP server's request threads: outside the engine lock, on the other core.
struct Decoded {
    t_ms: i64,
    items: Vec<DecodedItem>,
    sim_time: Duration,
    decode_time: Duration,
}

/// How much lower the simulator's thread runs than the analyzer's in-process (nice steps): it stands
/// for the cluster's machines, which have their own CPUs, so the analyzer's threads go first.
const SIMULATOR_NICE: i32 = 10;

/// Report posts in flight at once in wire mode.
pub const WIRE_WORKERS: usize = 4;
/// Per-request timeout in wire mode.
const WIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// A wire run is invalid when its reports reach the analyzer, at p99, more than this many report
/// intervals of virtual time late: the analyzer then sees nodes go silent and steps stall that the
/// simulated cluster never had, and slow faults are diagnosed late or missed because of the
/// machine, not the analyzer. One interval: a report later than the node's next one was due.
pub const WIRE_LAG_BOUND_INTERVALS: f64 = 1.0;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot serialize a report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("analyzer at {url}: {message}")]
    Wire { url: String, message: String },
}

/// A running analyzer to push to.
#[derive(Debug, Clone)]
pub struct WireTarget {
    /// Base URL, e.g. `http://127.0.0.1:9440`.
    pub url: String,
    pub token: Option<String>,
}

/// Sees each incident change of an in-process run, with the virtual seconds since the start.
pub type ChangeHook<'a> = &'a mut dyn FnMut(&IncidentChange, f64);
/// Sees each report body of an in-process run, with its arrival (Unix ms) and the ingest result.
pub type ReportHook<'a> = &'a mut dyn FnMut(&[u8], i64, &Result<IngestOutcome, IngestError>);

/// How to run.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Pace virtual time at N× real time (wire mode defaults to 1×; in-process runs flat out).
    pub speed: Option<f64>,
    pub wire: Option<WireTarget>,
    /// Called after every virtual second with (virtual seconds done, total).
    pub progress: Option<&'a mut dyn FnMut(f64, f64)>,
    pub engine: Option<EngineConfig>,
    /// In-process: feed this analyzer instead of a fresh one, so the caller keeps it afterwards.
    pub analyzer: Option<&'a mut Analyzer>,
    /// In-process: called with every incident change a `tick` returns and the virtual seconds since the start.
    pub on_change: Option<ChangeHook<'a>>,
    /// In-process: called with every report body, its arrival (Unix ms) and what the analyzer said.
    pub on_report: Option<ReportHook<'a>>,
    /// In-process: the Unix ms virtual time starts at (default `DEFAULT_EPOCH_MS`).
    pub epoch_ms: Option<i64>,
    /// How reports are encoded on their way to the analyzer, in-process and over the wire (default:
    /// the compact encoding, as agents send them). `on_report` sees bodies in this encoding.
    pub encoding: Option<Encoding>,
}

/// Ground truth of every fault of the scenario.
pub fn truth(world: &World, sc: &Scenario) -> Vec<TruthFault> {
    sc.faults
        .iter()
        .map(|f| {
            let at_ms = (f.at_s * 1000.0).round() as i64;
            TruthFault {
                kind: f.kind,
                target: f.target.to_string(),
                at_s: f.at_s,
                clear_s: f.clear_s(sc.duration_s),
                blast: world.cluster.blast_radius(&f.target, at_ms),
                expected_jobs: world.cluster.affected_jobs(&f.target, at_ms),
            }
        })
        .collect()
}

/// Convert an analyzer incident to run-report form (times relative to the run's start).
pub fn run_incident(i: &Incident, epoch_s: f64, speed: f64) -> RunIncident {
    let rel = |t: f64| ((t - epoch_s) * speed * 1000.0).round() / 1000.0;
    RunIncident {
        id: i.id.clone(),
        root: i.root.to_string(),
        class: i.class,
        confidence: i.confidence,
        opened_s: rel(i.opened_s),
        resolved_s: i.resolved_s.map(rel),
        affected_jobs: i.affected_jobs.clone(),
        paths: i.paths.clone(),
        evidence: i.evidence.iter().map(|e| format!("{} {}: {}", e.component, e.kind, e.detail)).collect(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run a scenario and score it.
pub fn run(sc: &Scenario, mut opts: RunOptions<'_>) -> Result<RunReport, RunError> {
    let wall = Instant::now();
    let wire = opts.wire.clone();
    let speed = opts.speed.or(wire.as_ref().map(|_| 1.0)).filter(|s| *s > 0.0);
    let epoch_ms = if wire.is_some() {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(DEFAULT_EPOCH_MS, |d| d.as_millis() as i64)
    } else {
        opts.epoch_ms.unwrap_or(DEFAULT_EPOCH_MS)
    };
    let mut world = World::new(sc, epoch_ms);
    let truth = truth(&world, sc);
    let steps = (sc.duration_s.ceil() as i64).max(1);
    let interval_ms = world.interval_ms;
    let mut stats =
        AnalyzerStats { mode: if wire.is_some() { "wire" } else { "in_process" }.into(), ..Default::default() };
    let mut rounds_ms: Vec<f64> = Vec::new();
    let checks_due = crate::validation::schedule(sc);
    let (mut next_check, mut validation) = (0usize, Vec::new());
    let mut sim_rounds_ms: Vec<f64> = Vec::new();
    let mut sim_cur = Duration::ZERO;
    let mut sim_total = Duration::ZERO;
    let mut round_cur = Duration::ZERO;
    let (mut rounds_cpu_ms, mut round_cpu_cur): (Vec<f64>, Duration) = (Vec::new(), Duration::ZERO);
    let mut round_reports = 0u64;
    let mut round_idx = 0i64;
    let (mut ingest_total, mut tick_total, mut tick_max) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);

    let incidents: Vec<Incident> = match &wire {
        None => {
            let mut own = None;
            let an = match opts.analyzer.take() {
                Some(a) => a,
                None => own.insert(Analyzer::new(opts.engine.take().unwrap_or_default(), world.cluster.topology())),
            };
            // The simulator runs one second ahead on its own thread (physics, reports, encoding),
            // a second thread decodes and validates (`ingest::decode`, as HTTP request threads do,
            // outside the engine lock), and the analyzer's thread only applies reports (the ledger
            // and the engine) and ticks, as a real one would.
            // The ingest ledger (seq, duplicates, liveness) an HTTP analyzer keeps beside its engine.
            let mut ledger = NodeLedger::default();
            let encoding = opts.encoding.unwrap_or(Encoding::Delta);
            // Compact bytes are made as each report is built, as an agent makes them.
            world.encode_compact = encoding != Encoding::Json;
            // The analyzer's delta bases (an HTTP analyzer keeps them beside its engine) and each
            // simulated agent's own (`Sender`): in-process every report is acknowledged.
            let bases = ingest::Bases::default();
            let mut senders: HashMap<String, faultline_proto::wire::delta::Sender> = HashMap::new();
            let (tx, rx_enc) = mpsc::sync_channel::<Result<Second, serde_json::Error>>(PIPELINE_DEPTH);
            let (tx_dec, rx) = mpsc::sync_channel::<Result<Decoded, serde_json::Error>>(PIPELINE_DEPTH);
            let mut decode_total = Duration::ZERO;
            // The analyzer thread's CPU from here on (building the world and the engine is not its work).
            let analyzer_cpu0 = thread_cpu();
            // Applied reports go back to the thread that decoded them, to be freed there, as an HTTP
            // request thread frees the report it decoded once the engine has applied it. (A thread
            // of their own cost more: every free of another thread's memory is an atomic operation
            // in the allocator.) Unbounded, but at most the pipeline's depth of seconds is in it:
            // the decoder drains it before each second it decodes, and it cannot run further ahead.
            let (tx_free, rx_free) = mpsc::channel::<Vec<ingest::Spent>>();
            let result = std::thread::scope(|scope| -> Result<(), RunError> {
                // Owned here, so that returning early drops it and the producer stops.
                let rx = rx;
                let tx_free = tx_free;
                let world = &mut world;
                let bases = &bases;
                let senders = &mut senders;
                let decoder = scope.spawn(move || {
                    for second in rx_enc {
                        rx_free.try_iter().for_each(drop);
                        let msg = second.map(|s| {
                            let d0 = Instant::now();
                            let items = s
                                .items
                                .into_iter()
                                .map(|(arrival, node, seq, body, encoding)| {
                                    let mut d = ingest::decode_any(&body, encoding, bases);
                                    if let Ok(d) = d.as_mut()
                                        && let Some(c) = d.take_compact()
                                    {
                                        bases.keep(&node, seq, c);
                                    }
                                    (arrival, node, seq, body, d)
                                })
                                .collect();
                            Decoded { t_ms: s.t_ms, items, sim_time: s.sim_time, decode_time: d0.elapsed() }
                        });
                        if tx_dec.send(msg).is_err() {
                            break;
                        }
                    }
                    drop(tx_dec);
                    // The last seconds' reports, until the analyzer is done.
                    rx_free.into_iter().for_each(drop);
                    thread_cpu()
                });
                let simulator = scope.spawn(move || {
                    crate::cputime::lower_thread_priority(SIMULATOR_NICE);
                    for _ in 0..=steps {
                        let g0 = Instant::now();
                        let out = world.step();
                        let mut items = Vec::with_capacity(out.len());
                        let mut failed = None;
                        for mut o in out {
                            let body = match encoding {
                                Encoding::Json => serde_json::to_vec(&o.report).map(|b| (b, encoding)),
                                Encoding::Protobuf => Ok((compact(&mut o), encoding)),
                                Encoding::Delta => match delta_body(senders, &mut o, false) {
                                    Body::Delta { body, .. } => Ok((body, Encoding::Delta)),
                                    Body::Full(body) => Ok((body, Encoding::Protobuf)),
                                },
                            };
                            match body {
                                Ok((body, enc)) => {
                                    items.push((o.arrival_ms, o.report.node.clone(), o.report.seq, body, enc))
                                }
                                Err(e) => failed = Some(e),
                            }
                            world.recycle(o.report);
                        }
                        let msg = match failed {
                            Some(e) => Err(e),
                            None => Ok(Second { t_ms: world.t_ms, items, sim_time: g0.elapsed() }),
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                    thread_cpu()
                });
                for k in 0..=steps {
                    let Ok(second) = rx.recv() else { break };
                    let second = second?;
                    let mut applied = Vec::with_capacity(second.items.len());
                    let t = second.t_ms;
                    let mut spent = Duration::ZERO;
                    decode_total += second.decode_time;
                    let n_items = second.items.len() as u64;
                    let cpu0 = thread_cpu();
                    for (arrival, node, seq, body, decoded) in second.items {
                        stats.reports += 1;
                        stats.report_bytes += body.len() as u64;
                        let now = epoch_ms + arrival.min(t);
                        let t0 = Instant::now();
                        let res = match decoded {
                            Ok(d) => {
                                let a = ingest::apply(an, &mut ledger, d, now);
                                applied.push(a.report);
                                Ok(a.outcome)
                            }
                            Err(ingest::DecodeError::Report(e)) => Err(IngestError::from(e)),
                            Err(ingest::DecodeError::Delta(e)) => {
                                Err(IngestError::from(faultline_proto::ReportError::from(e)))
                            }
                        };
                        spent += t0.elapsed();
                        if let Some(f) = opts.on_report.as_mut() {
                            f(&body, now, &res);
                        }
                        if let Err(e) = res {
                            stats.rejected += 1;
                            if stats.first_rejection.is_none() {
                                tracing::warn!(node = %node, seq, error = %e, "analyzer refused a simulated report");
                                stats.first_rejection = Some(format!("{node} seq {seq}: {e}"));
                            }
                        }
                    }
                    ingest_total += spent;
                    let _ = tx_free.send(applied);
                    let t0 = Instant::now();
                    let changes = an.tick(epoch_ms + t);
                    let tk = t0.elapsed();
                    let round_cpu = thread_cpu().saturating_sub(cpu0);
                    tick_total += tk;
                    tick_max = tick_max.max(tk);
                    spent += tk;
                    if let Some(f) = opts.on_change.as_mut() {
                        changes.iter().for_each(|c| f(c, t as f64 / 1000.0));
                    }
                    // Check before delivery: what the validators say of each faulty node now.
                    while let Some(&(when, i, phase)) = checks_due.get(next_check)
                        && when <= t
                    {
                        validation.extend(crate::validation::check(an, sc, i, phase, t));
                        next_check += 1;
                    }
                    // Rounds: one report interval each.
                    let idx = t.max(0) / interval_ms;
                    if idx != round_idx {
                        rounds_ms.push(ms(round_cur));
                        rounds_cpu_ms.push(ms(round_cpu_cur));
                        sim_rounds_ms.push(ms(sim_cur));
                        stats.reports_per_round_max = stats.reports_per_round_max.max(round_reports);
                        round_cur = Duration::ZERO;
                        round_cpu_cur = Duration::ZERO;
                        sim_cur = Duration::ZERO;
                        round_reports = 0;
                        round_idx = idx;
                    }
                    if t > 0 && t % (rss_every_s(sc.duration_s) * 1000) == 0 {
                        stats.rss_samples.push(((t / 1000) as f64, rss_bytes()));
                    }
                    round_cur += spent;
                    round_cpu_cur += round_cpu;
                    sim_cur += second.sim_time;
                    sim_total += second.sim_time;
                    round_reports += n_items;
                    pace(wall, speed, t);
                    if let Some(p) = opts.progress.as_mut() {
                        p((k as f64).min(sc.duration_s), sc.duration_s);
                    }
                }
                // Every second was consumed: the other threads have finished or are finishing.
                drop(tx_free);
                let secs = |h: std::thread::ScopedJoinHandle<'_, Duration>| h.join().map_or(0.0, |d| d.as_secs_f64());
                stats.cpu_s = Some(crate::report::ThreadCpu {
                    simulator: r2(secs(simulator)),
                    decode: r2(secs(decoder)),
                    analyzer: r2(thread_cpu().saturating_sub(analyzer_cpu0).as_secs_f64()),
                });
                Ok(())
            });
            result?;
            if round_reports > 0 {
                rounds_ms.push(ms(round_cur));
                rounds_cpu_ms.push(ms(round_cpu_cur));
                sim_rounds_ms.push(ms(sim_cur));
                stats.reports_per_round_max = stats.reports_per_round_max.max(round_reports);
            }
            stats.rounds = rounds_ms.len() as u64;
            stats.round_ms_p50 = score::percentile(&rounds_ms, 50.0).map(r2);
            stats.round_ms_p95 = score::percentile(&rounds_ms, 95.0).map(r2);
            stats.round_ms_max = score::percentile(&rounds_ms, 100.0).map(r2);
            stats.round_cpu_ms_p50 = score::percentile(&rounds_cpu_ms, 50.0).map(r2);
            stats.round_cpu_ms_p95 = score::percentile(&rounds_cpu_ms, 95.0).map(r2);
            stats.round_cpu_ms_max = score::percentile(&rounds_cpu_ms, 100.0).map(r2);
            stats.round_cpu_ms = rounds_cpu_ms.iter().map(|x| x.round()).collect();
            stats.ingest_ms_total = Some(r2(ms(ingest_total)));
            stats.decode_ms_total = Some(r2(ms(decode_total)));
            stats.tick_ms_total = Some(r2(ms(tick_total)));
            stats.tick_ms_max = Some(r2(ms(tick_max)));
            stats.sim_ms_total = r2(ms(sim_total));
            stats.sim_round_ms_p50 = score::percentile(&sim_rounds_ms, 50.0).map(r2);
            stats.sim_round_ms_max = score::percentile(&sim_rounds_ms, 100.0).map(r2);
            an.incidents()
        }
        Some(target) => run_wire(&mut world, sc, target, speed.unwrap_or(1.0), steps, &mut stats, &mut opts)?,
    };
    let epoch_s = epoch_ms as f64 / 1000.0;
    let speed_for_times = if wire.is_some() { speed.unwrap_or(1.0) } else { 1.0 };
    let mut run_incidents: Vec<RunIncident> =
        incidents.iter().map(|i| run_incident(i, epoch_s, speed_for_times)).collect();
    run_incidents.sort_by(|a, b| a.opened_s.total_cmp(&b.opened_s).then(a.id.cmp(&b.id)));
    let facts = RunFacts { duration_s: sc.duration_s, interval_s: sc.interval_s, nodes: world.cluster.nodes.len() };
    let (faults, summary) = score::score(&truth, &run_incidents, facts);
    let c = &world.cluster;
    Ok(RunReport {
        validation,
        scenario: sc.name.clone(),
        seed: sc.seed,
        cluster: ClusterInfo {
            nodes: c.nodes.len(),
            gpus: c.gpus(),
            nics: c.nics(),
            switches: c.leaves.len() + c.spines.len(),
            jobs: sc.jobs.iter().map(|j| JobPlacement { id: j.id.clone(), hosts: j.hosts.clone() }).collect(),
        },
        virtual_s: sc.duration_s,
        wall_s: r2(wall.elapsed().as_secs_f64()),
        peak_rss_bytes: peak_rss_bytes(),
        faults,
        incidents: run_incidents,
        summary,
        analyzer: stats,
    })
}

/// How often an in-process run samples its RSS, virtual seconds: every minute in runs up to two
/// hours (a 600 s scale run gives ten samples: one sample at a fault or a burst of full reports is
/// not a trend), every hour in longer ones (a 24 h run gives 24).
pub fn rss_every_s(duration_s: f64) -> i64 {
    if duration_s <= 7200.0 { 60 } else { 3600 }
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sleep until virtual ms `t` is due at `speed`× real time.
fn pace(start: Instant, speed: Option<f64>, t: i64) {
    if let Some(s) = speed {
        let due = Duration::from_secs_f64((t.max(0) as f64 / 1000.0) / s);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

struct WireShared {
    errors: u64,
    first_error: Option<String>,
    /// Per report: real seconds between when it was due and when the analyzer answered.
    lags_s: Vec<f64>,
}

fn run_wire(
    world: &mut World,
    sc: &Scenario,
    target: &WireTarget,
    speed: f64,
    steps: i64,
    stats: &mut AnalyzerStats,
    opts: &mut RunOptions<'_>,
) -> Result<Vec<Incident>, RunError> {
    let base = target.url.trim_end_matches('/').to_string();
    let werr = |message: String| RunError::Wire { url: base.clone(), message };
    let client = reqwest::blocking::Client::builder()
        .timeout(WIRE_TIMEOUT)
        .build()
        .map_err(|e| werr(format!("cannot build an HTTP client: {e}")))?;
    // (body, its content type, the full compact report to resend on a 409, due time)
    let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, &'static str, Option<Vec<u8>>, Instant)>(4096);
    let rx = Arc::new(Mutex::new(rx));
    let shared = Arc::new(Mutex::new(WireShared { errors: 0, first_error: None, lags_s: Vec::new() }));
    // Set before the workers start: the due time of every report is measured from it.
    let start = Instant::now();
    let url = format!("{base}/api/v1/reports");
    // What agents send: the compact encoding unless the caller asked for JSON.
    let encoding = opts.encoding.unwrap_or(Encoding::Delta);
    world.encode_compact = encoding != Encoding::Json;
    let mut senders: HashMap<String, faultline_proto::wire::delta::Sender> = HashMap::new();
    let mut workers = Vec::new();
    for _ in 0..WIRE_WORKERS {
        let rx = Arc::clone(&rx);
        let shared = Arc::clone(&shared);
        let client = client.clone();
        let url = url.clone();
        let token = target.token.clone();
        workers.push(std::thread::spawn(move || {
            loop {
                let body = {
                    let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                    guard.recv()
                };
                let Ok((body, content_type, full, due)) = body else { break };
                let post = |body: Vec<u8>, content_type: &str| {
                    let mut req = client.post(&url).header("content-type", content_type).body(body);
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    req.send()
                };
                let mut sent = post(body, content_type);
                // The analyzer holds no base for this delta (it restarted, or missed a report):
                // the agent sends the same report in full at once.
                if let (Ok(r), Some(full)) = (&sent, full)
                    && r.status() == reqwest::StatusCode::CONFLICT
                {
                    sent = post(full, faultline_proto::wire::CONTENT_TYPE);
                }
                let failure = match sent {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().unwrap_or_default();
                        Some(format!("POST {url}: {status}: {}", text.chars().take(300).collect::<String>()))
                    }
                    Err(e) => Some(format!("POST {url}: {e}")),
                };
                let lag = Instant::now().saturating_duration_since(due).as_secs_f64();
                shared.lock().unwrap_or_else(|p| p.into_inner()).lags_s.push(lag);
                if let Some(f) = failure {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.errors += 1;
                    if s.first_error.is_none() {
                        tracing::warn!(error = %f, "analyzer refused or missed a report");
                        s.first_error = Some(f);
                    }
                }
            }
        }));
    }
    let mut round_reports = 0u64;
    let mut round_idx = 0i64;
    for k in 0..=steps {
        let out = world.step();
        let t = world.t_ms;
        for mut o in out {
            let (body, content_type, full) = match encoding {
                Encoding::Json => (serde_json::to_vec(&o.report)?, encoding.content_type(), None),
                Encoding::Protobuf => (compact(&mut o), encoding.content_type(), None),
                Encoding::Delta => match delta_body(&mut senders, &mut o, true) {
                    Body::Delta { body, resend } => (body, encoding.content_type(), resend),
                    Body::Full(body) => (body, faultline_proto::wire::CONTENT_TYPE, None),
                },
            };
            stats.reports += 1;
            stats.report_bytes += body.len() as u64;
            round_reports += 1;
            // Due when its arrival's virtual time comes round at `speed`.
            let due = start + Duration::from_secs_f64((o.arrival_ms.max(0) as f64 / 1000.0) / speed);
            if tx.send((body, content_type, full, due)).is_err() {
                return Err(werr("every sender thread stopped".into()));
            }
            world.recycle(o.report);
        }
        let idx = t.max(0) / world.interval_ms;
        if idx != round_idx {
            stats.rounds += 1;
            stats.reports_per_round_max = stats.reports_per_round_max.max(round_reports);
            round_reports = 0;
            round_idx = idx;
        }
        pace(start, Some(speed), t);
        if let Some(p) = opts.progress.as_mut() {
            p((k as f64).min(sc.duration_s), sc.duration_s);
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    {
        let s = shared.lock().unwrap_or_else(|p| p.into_inner());
        stats.rejected = s.errors;
        stats.first_rejection = s.first_error.clone();
        wire_lag(stats, &s.lags_s, speed, sc.interval_s);
    }
    let mut req = client.get(format!("{base}/api/v1/incidents?status=all"));
    if let Some(t) = &target.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| werr(format!("GET incidents: {e}")))?;
    let status = resp.status();
    let text = resp.text().map_err(|e| werr(format!("GET incidents: {e}")))?;
    if !status.is_success() {
        return Err(werr(format!("GET incidents: {status}: {}", text.chars().take(300).collect::<String>())));
    }
    parse_incidents(&text).map_err(|e| werr(format!("GET incidents: {e}")))
}

/// Puts the wire lag (virtual seconds) into `stats`, and marks the run invalid past the bound.
fn wire_lag(stats: &mut AnalyzerStats, lags_real_s: &[f64], speed: f64, interval_s: f64) {
    let virt: Vec<f64> = lags_real_s.iter().map(|l| l * speed).collect();
    stats.speed = Some(speed);
    stats.lag_virtual_s_p50 = score::percentile(&virt, 50.0).map(r2);
    stats.lag_virtual_s_p99 = score::percentile(&virt, 99.0).map(r2);
    stats.lag_virtual_s_max = score::percentile(&virt, 100.0).map(r2);
    let bound = WIRE_LAG_BOUND_INTERVALS * interval_s;
    if let Some(p99) = stats.lag_virtual_s_p99.filter(|p| *p > bound) {
        let why = format!(
            "at {speed}x the reports reached the analyzer {p99:.1} s of virtual time late (p99), more than the {bound:.0} s bound (one report interval); run slower (lower --speed)"
        );
        tracing::warn!(speed, lag_p99_s = p99, bound_s = bound, "wire run fell behind virtual time: invalid");
        stats.invalid = Some(why);
    }
}

/// The incidents list: a JSON array, or an object holding it under `incidents`.
pub fn parse_incidents(text: &str) -> Result<Vec<Incident>, String> {
    #[derive(serde::Deserialize)]
    struct Wrapped {
        incidents: Vec<Incident>,
    }
    serde_json::from_str::<Vec<Incident>>(text)
        .or_else(|_| serde_json::from_str::<Wrapped>(text).map(|w| w.incidents))
        .map_err(|e| format!("not a list of incidents: {e}"))
}

#[cfg(test)]
mod wire_lag_tests {
    use super::*;

    #[test]
    fn lag_is_in_virtual_seconds_and_past_one_interval_the_run_is_invalid() {
        let mut ok = AnalyzerStats::default();
        // 200x: 10 ms of real lag is 2 virtual s, under a 10 s interval.
        wire_lag(&mut ok, &[0.001, 0.01, 0.01, 0.02], 200.0, 10.0);
        assert_eq!(ok.speed, Some(200.0));
        assert_eq!(ok.lag_virtual_s_max, Some(4.0));
        assert!(ok.invalid.is_none(), "{:?}", ok.invalid);
        assert!(!serde_json::to_string(&ok).unwrap().contains("invalid"));
        let mut late = AnalyzerStats::default();
        // Half a real second behind at 200x is 100 virtual s: ten intervals.
        wire_lag(&mut late, &[0.5; 100], 200.0, 10.0);
        let why = late.invalid.clone().expect("marked invalid");
        assert!(why.contains("--speed") && why.contains("100.0 s"), "{why}");
        let report_line = serde_json::to_value(&late).unwrap();
        assert_eq!(report_line["lag_virtual_s_p99"], 100.0);
    }
}
