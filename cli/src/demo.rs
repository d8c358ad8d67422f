//! `faultline demo`: a simulated 64-node cluster with injected faults, diagnosed live by the real
//! analyzer engine (the in-process path of `faultline sim run`), every incident change recorded in
//! a real SQLite store, then scored; `--serve` keeps an analyzer up over that store and engine.
//!
//! Exit codes: 0 once the run completed (the scores are reported, not judged; with `--serve`, 0
//! after Ctrl-C), 2 on an error (bad flag, store or listener failure).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use faultline_analyzer::api::{NodeLedger, ReportMeta};
use faultline_analyzer::clock::FakeClock;
use faultline_analyzer::config::Config;
use faultline_analyzer::server::{self, AppState};
use faultline_analyzer::store::Store;
use faultline_analyzer::{Analyzer, IncidentChange, IngestError, IngestOutcome};
use faultline_proto::{Incident, NodeReport};
use faultline_sim::cluster::Cluster;
use faultline_sim::runner::{run_incident, truth};
use faultline_sim::scenario::Fabric;
use faultline_sim::score::{RunFacts, TruthFault, percentile};
use faultline_sim::{RunOptions, RunReport, Scenario, World};

use crate::demo_live;
use crate::render::Style;
use faultline_proto::time::now_ms;

/// The demo's cluster, jobs and faults (a scenario file, sim/SCENARIO.md).
pub const SCENARIO: &str = include_str!("demo_scenario.toml");

/// A fault is kept in a shortened run only if this much virtual time is left after its onset: the
/// slow group's p95 diagnosis target is 60 s (sim/SCENARIO.md), doubled for margin.
pub const SETTLE_S: f64 = 120.0;

/// Virtual run length of `--short`: the first three faults (at 300, 540 and 780 s) plus `SETTLE_S`.
pub const SHORT_DURATION_S: f64 = 900.0;

/// Shortest `--duration`: below a minute no fault of the demo has time to be injected at all.
const MIN_DURATION_S: f64 = 60.0;

/// Default address of `--serve`, the analyzer's own default.
const DEFAULT_LISTEN: &str = "127.0.0.1:9440";

/// How often the served analyzer ticks (the analyzer's default).
const SERVE_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seed of the simulated cluster's noise [default: the demo's own, 2024]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Virtual run length (e.g. 20m) [default: 54m, all twelve faults]; faults that would have less
    /// than two minutes to be diagnosed are left out
    #[arg(long, value_name = "DUR", conflicts_with = "short")]
    pub duration: Option<humantime::Duration>,
    /// A short run (15 virtual minutes, the first three faults), for tests and a quick look
    #[arg(long)]
    pub short: bool,
    /// Print the run report as JSON on stdout; everything else goes to stderr
    #[arg(long)]
    pub json: bool,
    /// Afterwards keep an analyzer up with the results (API, /metrics, incidents) until Ctrl-C
    #[arg(long)]
    pub serve: bool,
    /// Address for --serve [default: 127.0.0.1:9440]
    #[arg(long, value_name = "ADDR", requires = "serve")]
    pub listen: Option<SocketAddr>,
    /// With --serve: freeze the cluster at the end of the scored run instead of keeping it running
    /// live (real-time clock, a new fault every 4 minutes, reports still flowing)
    #[arg(long, requires = "serve")]
    pub no_live: bool,
    /// With --serve: also print a Prometheus configuration that scrapes the served analyzer and loads
    /// the alert rules
    #[arg(long, requires = "serve")]
    pub prometheus: bool,
}

/// Run `faultline demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    match demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The demo scenario with `--seed` and `--duration`/`--short` applied. Goes through the real
/// scenario parser, so a shortened run is validated like any scenario file.
pub fn scenario(seed: Option<u64>, duration_s: Option<f64>) -> anyhow::Result<Scenario> {
    let mut table: toml::Table = toml::from_str(SCENARIO).context("the embedded demo scenario is not TOML")?;
    if let Some(s) = seed {
        let s = i64::try_from(s).with_context(|| format!("--seed {s} is too large (at most {})", i64::MAX))?;
        table.insert("seed".into(), toml::Value::Integer(s));
    }
    if let Some(d) = duration_s {
        if !(MIN_DURATION_S..=faultline_sim::scenario::MAX_DURATION_S).contains(&d) {
            bail!("--duration must be between 1m and 30days of virtual time, not {d} s");
        }
        let faults = table.get("fault").and_then(toml::Value::as_array).cloned().unwrap_or_default();
        let first_at = faults.iter().filter_map(fault_at).fold(f64::INFINITY, f64::min);
        let kept: Vec<toml::Value> =
            faults.into_iter().filter(|f| fault_at(f).is_some_and(|at| at + SETTLE_S <= d)).collect();
        if kept.is_empty() {
            bail!(
                "--duration {} leaves no fault time to be diagnosed: the first is injected at {first_at:.0} s and gets {SETTLE_S:.0} s",
                humantime::format_duration(Duration::from_secs_f64(d))
            );
        }
        table.insert("fault".into(), toml::Value::Array(kept));
        table.insert("duration_s".into(), toml::Value::Float(d));
    }
    let text = toml::to_string(&table).context("cannot write the demo scenario back as TOML")?;
    Ok(Scenario::parse(&text, "demo_scenario.toml")?)
}

fn fault_at(f: &toml::Value) -> Option<f64> {
    match f.get("at_s")? {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(x) => Some(*x),
        _ => None,
    }
}

/// `HH:MM:SS` of virtual seconds since the start of the run.
fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Where the demo's human output goes: stdout, or stderr when stdout carries `--json`.
#[derive(Clone, Copy)]
struct Out {
    stderr: bool,
    style: Style,
}

impl Out {
    fn line(&self, text: &str) {
        // A closed pipe (`| head`) must not stop the run; the report's own write reports errors.
        if self.stderr {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{text}");
            let _ = o.flush();
        }
    }
}

/// What the change hook keeps between calls.
struct Live<'a> {
    out: Out,
    epoch_s: f64,
    facts: RunFacts,
    truth: &'a [TruthFault],
    /// Scheduled inject/clear lines, by virtual second, not printed yet.
    events: Vec<(f64, String)>,
    /// Root, class and jobs last printed per incident, to print an update only when one changes.
    shown: BTreeMap<String, (String, String, Vec<String>)>,
    store: Store,
    store_error: Option<anyhow::Error>,
    opened: Vec<Incident>,
}

impl Live<'_> {
    /// Prints the inject/clear lines due by virtual second `now`.
    fn due(&mut self, now: f64) {
        while self.events.first().is_some_and(|(t, _)| *t <= now) {
            let (t, text) = self.events.remove(0);
            self.out.line(&format!("{}  {text}", clock(t)));
        }
    }

    fn change(&mut self, c: &IncidentChange, now: f64) {
        self.due(now);
        if self.store_error.is_none()
            && let Err(e) = self.store.record(std::slice::from_ref(c), &[], self.epoch_s + now)
        {
            self.store_error = Some(anyhow::Error::new(e).context("cannot record an incident change"));
        }
        let s = self.out.style;
        let (tag, inc) = match c {
            IncidentChange::Opened(i) => (s.red("OPENED  "), i),
            IncidentChange::Updated(i) => (s.yellow("updated "), i),
            IncidentChange::Resolved(i) => (s.green("resolved"), i),
        };
        let key = (inc.root.to_string(), inc.class.as_str().to_string(), inc.affected_jobs.clone());
        if matches!(c, IncidentChange::Updated(_)) && self.shown.get(&inc.id) == Some(&key) {
            return;
        }
        self.shown.insert(inc.id.clone(), key);
        let jobs = if inc.affected_jobs.is_empty() { "no job".to_string() } else { inc.affected_jobs.join(", ") };
        let mut line = format!(
            "{}  {tag} {} {} [{}] confidence {:.2}, jobs: {jobs}",
            clock(now),
            inc.id,
            s.bold(&inc.root.to_string()),
            inc.class,
            inc.confidence
        );
        match c {
            IncidentChange::Opened(i) => {
                self.opened.push(i.clone());
                line.push_str(&format!("\n          {}", i.summary));
                line.push_str(&format!("\n          {}", self.verdict(i)));
            }
            IncidentChange::Resolved(i) => {
                let lasted = i.resolved_s.unwrap_or(i.updated_s) - i.opened_s;
                let lasted = humantime::format_duration(Duration::from_secs(lasted.max(0.0).round() as u64));
                line = format!("{}  {tag} {} {} (open {lasted})", clock(now), i.id, i.root);
            }
            IncidentChange::Updated(_) => {}
        }
        self.out.line(&line);
    }

    /// Which injected fault an opened incident is about, and how long the diagnosis took.
    fn verdict(&self, i: &Incident) -> String {
        let ri = run_incident(i, self.epoch_s, 1.0);
        let fault = self.truth.iter().filter(|f| f.matches(&ri, self.facts)).max_by(|a, b| {
            (a.target == ri.root, a.at_s)
                .partial_cmp(&(b.target == ri.root, b.at_s))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let s = self.out.style;
        match fault {
            Some(f) if f.target == ri.root => format!(
                "-> {} {} injected at {}: diagnosed {:.1} s after onset",
                s.green("correct:"),
                f.kind,
                clock(f.at_s),
                ri.opened_s - f.at_s
            ),
            Some(f) => format!(
                "-> {} the injected fault is {} on {} (at {}); this root depends on it",
                s.yellow("near:"),
                f.kind,
                f.target,
                clock(f.at_s)
            ),
            None => format!("-> {} no injected fault explains it", s.red("false alarm:")),
        }
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    let duration = if args.short { Some(SHORT_DURATION_S) } else { args.duration.map(|d| d.as_secs_f64()) };
    let sc = scenario(args.seed, duration)?;
    let out = Out { stderr: args.json, style: if args.json { Style::plain() } else { Style::detect() } };

    // Virtual time ends about now, so times read as recent in the CLI and the API.
    let epoch_ms = (now_ms() - (sc.duration_s * 1000.0) as i64) / 1000 * 1000;
    let epoch_s = epoch_ms as f64 / 1000.0;
    let dir =
        tempfile::Builder::new().prefix("faultline-demo-").tempdir().context("cannot make a temporary directory")?;
    let db = dir.path().join("faultline.db");
    let store = Store::open(&db)?;
    let cluster = Cluster::build(&sc);
    let topology = cluster.topology();
    let truth = truth(&World::new(&sc, epoch_ms), &sc);
    let facts = RunFacts { duration_s: sc.duration_s, interval_s: sc.interval_s, nodes: cluster.nodes.len() };
    // The live continuation steps through the scored run on its own thread meanwhile.
    let live_world = (args.serve && !args.no_live).then(|| demo_live::prepare(&sc, epoch_ms));

    let multi = sc.jobs.iter().filter(|j| j.hosts.len() > 1).count();
    out.line(&format!(
        "faultline demo: {} nodes x {} GPUs, {} fabric ({} leaves, {} spines), {} jobs ({multi} multi-node), {} faults in {} of virtual time (seed {})",
        sc.cluster.nodes,
        sc.cluster.gpus_per_node,
        match sc.cluster.fabric {
            Fabric::Tor => "tor",
            Fabric::Rail => "rail",
        },
        sc.cluster.leaves(),
        sc.cluster.spines,
        sc.jobs.len(),
        sc.faults.len(),
        clock(sc.duration_s),
        sc.seed
    ));
    out.line(&format!("analyzer engine in-process, incidents recorded in {}", db.display()));
    out.line("");

    let mut events: Vec<(f64, String)> = Vec::new();
    for f in &sc.faults {
        events.push((f.at_s, format!("{} {} on {}", out.style.bold("inject  "), f.kind, f.target)));
        if let Some(c) = f.clear_s(sc.duration_s) {
            events.push((c, format!("{} {} on {}", out.style.dim("cleared "), f.kind, f.target)));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let live = RefCell::new(Live {
        out,
        epoch_s,
        facts,
        truth: &truth,
        events,
        shown: BTreeMap::new(),
        store,
        store_error: None,
        opened: Vec::new(),
    });
    let mut analyzer = Analyzer::new(Default::default(), topology.clone());
    let mut ledger = NodeLedger::default();
    let mut on_change = |c: &IncidentChange, t: f64| live.borrow_mut().change(c, t);
    let mut progress = |done: f64, _total: f64| live.borrow_mut().due(done);
    let mut on_report = |body: &[u8], now: i64, res: &Result<IngestOutcome, IngestError>| {
        // Only for --serve: `GET /api/v1/nodes` lists what the ledger saw.
        if let (Ok(outcome), Ok(report)) = (res, NodeReport::from_json(body)) {
            ledger.record(&ReportMeta::of(&report, body.len()), outcome.duplicate, now);
        }
    };
    let opts = RunOptions {
        analyzer: Some(&mut analyzer),
        on_change: Some(&mut on_change),
        on_report: if args.serve { Some(&mut on_report) } else { None },
        progress: Some(&mut progress),
        epoch_ms: Some(epoch_ms),
        // `on_report` reads the bodies as JSON.
        encoding: Some(faultline_analyzer::ingest::Encoding::Json),
        ..Default::default()
    };
    let report = faultline_sim::run(&sc, opts).context("running the demo scenario")?;
    let Live { store, store_error, opened, .. } = live.into_inner();
    if let Some(e) = store_error {
        return Err(e);
    }
    let counts = store.counts()?;
    finish(&report, out, args.json)?;
    out.line(&format!(
        "\nstore: {} incidents ({} open) recorded in {} ({}); whole demo took {:.1} s wall",
        counts.incidents,
        counts.open,
        db.display(),
        if args.serve { "served below" } else { "removed on exit; --serve keeps an analyzer on it" },
        wall.elapsed().as_secs_f64()
    ));
    if args.serve {
        let listen =
            args.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9440))));
        let end_ms = epoch_ms + (sc.duration_s * 1000.0) as i64;
        let prometheus = args.prometheus;
        serve(Served {
            listen,
            db: &db,
            store,
            analyzer,
            ledger,
            topology,
            opened,
            end_ms,
            out,
            live_world,
            prometheus,
        })?;
    }
    Ok(())
}

/// The results table (the sim's), or the run report as JSON.
fn finish(report: &RunReport, out: Out, json: bool) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, report)?;
        writeln!(o)?;
    } else {
        writeln!(o, "\n{}", report.table())?;
        let s = &report.summary;
        let diag: Vec<f64> = report.faults.iter().filter_map(|f| f.time_to_diagnose_s).collect();
        let p = |q: f64| percentile(&diag, q).map_or("-".into(), |v| format!("{v:.1} s"));
        let line = format!(
            "DEMO RESULT: {} of {} injected faults diagnosed with the exact root ({:.0}%), time to diagnose p50 {} p95 {}",
            s.correct,
            s.faults,
            s.coverage * 100.0,
            p(50.0),
            p(95.0)
        );
        writeln!(o, "{}", if s.correct == s.faults { out.style.green(&line) } else { out.style.yellow(&line) })?;
    }
    o.flush()?;
    Ok(())
}

struct Served<'a> {
    listen: SocketAddr,
    db: &'a Path,
    store: Store,
    analyzer: Analyzer,
    ledger: NodeLedger,
    topology: faultline_proto::TopologyFile,
    opened: Vec<Incident>,
    end_ms: i64,
    out: Out,
    /// The live continuation (`None` with `--no-live`).
    live_world: Option<demo_live::Prepared>,
    /// Print a Prometheus configuration for the served analyzer.
    prometheus: bool,
}

/// Serves the demo's analyzer (its engine, ledger and store) until Ctrl-C.
fn serve(s: Served<'_>) -> anyhow::Result<()> {
    let cfg = Config { listen: s.listen.to_string(), db: PathBuf::from(s.db), ..Config::default() };
    let mut settings = cfg.build()?;
    settings.topology = s.topology;
    // Without live mode the simulated cluster stopped when the run ended and the served analyzer's
    // clock stays at that moment, or every node would go silent (and be called down) a few intervals
    // later. In live mode the feeder moves this clock with the live world's virtual time.
    let clock = Arc::new(FakeClock::new(s.end_ms));
    let feeder_clock = Arc::clone(&clock);
    let state =
        AppState::with_store(&settings, s.store, clock, None, Instant::now()).context("cannot start the analyzer")?;
    state.replace_engine(s.analyzer, s.ledger);
    for i in &s.opened {
        state.metrics.incident_opened(i);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(s.listen).await.with_context(|| format!("cannot listen on {}", s.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        let url = format!("http://{addr}");
        s.out.line(&format!("\nlistening on {url}"));
        if !addr.ip().is_loopback() {
            tracing::warn!(listen = %addr, "the demo analyzer has no token and plain HTTP: anyone who can reach it can read it");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let what = match s.live_world {
            Some(prepared) => {
                let out = s.out;
                let counters = Arc::new(demo_live::Counters::default());
                demo_live::feed(prepared, url.clone(), feeder_clock, Arc::clone(&stop), counters, move |l| {
                    out.line(&format!("{}  {l}", clock_now()));
                });
                "The simulated cluster keeps running live: its clock at real speed, its agents reporting here, a new\n\
                 fault every 4 minutes (each lasting 150 s), the first 5 s after the scored run's end"
            }
            None => "The simulated cluster stopped at the end of the run (--no-live), and so does the analyzer's clock",
        };
        if s.prometheus {
            s.out.line(&prometheus_config(addr));
        }
        s.out.line(&format!(
            "The analyzer keeps serving the demo's engine (nodes, jobs, topology, incidents) and its store.\n\
             {what}. Try:\n  \
             faultline --analyzer {url} status\n  \
             faultline --analyzer {url} incidents --all\n  \
             faultline --analyzer {url} watch\n  \
             faultline --analyzer {url} path llm-70b --faulty\n  \
             curl {url}/api/v1/incidents\n  \
             curl {url}/metrics\n\
             Ctrl-C to stop."
        ));
        let served = server::serve(listener, state, SERVE_TICK, stop_signal()).await.context("serving failed");
        stop.store(true, Ordering::SeqCst);
        served
    })
}

/// Wall-clock `HH:MM:SS` (UTC) for the live lines.
fn clock_now() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// A Prometheus configuration that scrapes the served analyzer under the job name the rules and
/// dashboards select, and loads the repository's alert rules.
pub fn prometheus_config(addr: SocketAddr) -> String {
    // The rules of the checkout this binary was built from, when it is still there (`cargo run`);
    // else the path relative to a config file saved in the repository root.
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts/analyzer.rules.yml");
    let rules = built
        .canonicalize()
        .ok()
        .filter(|p| p.is_file())
        .map_or_else(|| "alerts/analyzer.rules.yml".to_string(), |p| p.display().to_string());
    format!(
        "\n# Prometheus configuration for this demo: save it as prometheus.yml and run\n\
         #   prometheus --config.file=prometheus.yml\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         rule_files:\n  - {rules}\n\
         # With an Alertmanager (alerts/alertmanager.example.yml), uncomment:\n\
         # alerting:\n#   alertmanagers:\n#     - static_configs:\n#         - targets: [\"127.0.0.1:9093\"]\n\
         scrape_configs:\n  - job_name: faultline-analyzer\n    static_configs:\n      - targets: [\"{addr}\"]\n"
    )
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_scenario_is_the_advertised_cluster() {
        let sc = scenario(None, None).unwrap();
        assert_eq!((sc.cluster.nodes, sc.cluster.gpus_per_node), (64, 8));
        assert!(sc.jobs.iter().any(|j| j.hosts.len() > 1) && sc.jobs.iter().any(|j| j.hosts.len() == 1));
        assert_eq!(sc.faults.len(), 12);
        let kinds: std::collections::BTreeSet<_> = sc.faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 12, "every fault a different kind");
    }

    #[test]
    fn short_keeps_the_faults_with_time_to_be_diagnosed() {
        let sc = scenario(Some(7), Some(SHORT_DURATION_S)).unwrap();
        assert_eq!(sc.seed, 7);
        assert_eq!(sc.duration_s, SHORT_DURATION_S);
        assert_eq!(sc.faults.len(), 3);
        assert!(sc.faults.iter().all(|f| f.at_s + SETTLE_S <= sc.duration_s));
        // Jobs end with the shortened run, as the parser sets them.
        assert!(sc.jobs.iter().all(|j| j.end_s == SHORT_DURATION_S));
    }

    #[test]
    fn a_duration_too_short_for_any_fault_is_refused_by_name() {
        let e = scenario(None, Some(200.0)).unwrap_err().to_string();
        assert!(e.contains("--duration") && e.contains("no fault"), "{e}");
        let e = scenario(None, Some(5.0)).unwrap_err().to_string();
        assert!(e.contains("--duration"), "{e}");
    }

    #[test]
    fn clock_is_hours_minutes_seconds() {
        assert_eq!(clock(0.0), "00:00:00");
        assert_eq!(clock(3723.4), "01:02:03");
    }
}
