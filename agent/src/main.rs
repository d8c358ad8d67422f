//! faultline-agent: the node agent. Collects host, NIC, GPU, kernel-log and job telemetry on its own
//! timer, serves it on `/metrics`, and pushes `NodeReport`s to the analyzer (spooling to disk while the
//! analyzer is away). Also the `classify-log` and `report-progress` helper subcommands.
//!
//! Exit codes: 0 on success (including a clean stop on SIGTERM/SIGINT), 2 on any error (bad flags or
//! config, a port that cannot be bound, an unusable spool directory).

mod config;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use clap::{Parser, Subcommand};
use faultline_agent::collect::{self, PciMap, Registry, Roots, Shared};
use faultline_agent::events::EventQueue;
use faultline_agent::export::push::{self, Outgoing};
use faultline_agent::export::spool::{SeqFile, Spool};
use faultline_agent::export::{self, AgentStats, Snapshot};
use faultline_agent::progress::{self, ProgressStore};
use faultline_proto::{Dropped, NodeReport};
use tokio::sync::mpsc;

use crate::config::{FileConfig, Options, Settings};

/// Events waiting for the next report. Below `proto`'s MAX_EVENTS so a full queue still fits one report.
const EVENT_QUEUE_CAP: usize = 4096;
/// Reports waiting for the pusher. The pusher spools whatever it receives while the analyzer is away,
/// so this only fills if the disk itself stalls; 64 reports is ten minutes at the default interval.
const PUSH_QUEUE_CAP: usize = 64;
/// After an urgent push, further urgent events within this window ride on the next one (an XID storm
/// must not turn into a report storm).
const URGENT_MIN_GAP: Duration = Duration::from_secs(1);
/// How long shutdown waits for a collection cycle that is stuck (a hung GPU driver) before exiting.
const SHUTDOWN_COLLECT_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    name = "faultline-agent",
    version,
    about = "faultline node agent: collects node telemetry, serves /metrics, pushes reports to the analyzer"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file (flags override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr: text, or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: faultline_logging::LogFormat,
    #[command(flatten)]
    options: Options,
    /// Collect once, print one NodeReport as JSON on stdout, and exit. Samples only: the kernel-log
    /// and NVML event watchers do not run, so XIDs and other events (even ones already in the log)
    /// never appear; a running agent pushes them as they happen.
    #[arg(long)]
    once: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
enum Command {
    /// Classify kernel/training log lines: without FILE, stdin to one JSON object per line; with FILE
    /// (`-` for stdin), a table of what each line shows (peer, collective, rank, device), or `--json`.
    ClassifyLog(faultline_agent::classify::cli::ClassifyLogArgs),
    /// Post one training-progress record to the local agent.
    ReportProgress(progress::ReportProgressArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    faultline_logging::init(cli.log_format);
    let result = match cli.command {
        Some(Command::ClassifyLog(ref args)) => faultline_agent::classify::cli::run(args),
        Some(Command::ReportProgress(ref args)) => progress::report_progress(args.clone()),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultline-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = match &cli.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let settings = Settings::build(cli.options.merge(file)?)?;
    if cli.once { once(&settings) } else { daemon(settings) }
}

/// What the collectors read from the settings.
fn sources(s: &Settings) -> collect::Sources {
    collect::Sources {
        roots: Roots { sysfs: s.sysfs_root.clone(), procfs: s.procfs_root.clone() },
        nics: s.nics.clone(),
        gpu: !s.no_gpu,
        nvml_lib: s.nvml_lib.clone(),
        expected_gpus: s.expected_gpus,
        jobs: s.jobs.clone(),
    }
}

fn once(s: &Settings) -> anyhow::Result<()> {
    let parts = Shared {
        events: Arc::new(EventQueue::new(EVENT_QUEUE_CAP)),
        progress: ProgressStore::new(),
        pci: PciMap::default(),
    };
    let mut cycle = Cycle {
        registry: Registry::all(&sources(s), &parts, &s.spool_dir_read_only(), false),
        node: s.node.clone(),
        interval: s.interval,
        seq: SeqFile::read_only(&s.spool_dir_read_only()),
        parts,
        stats: Arc::new(AgentStats::default()),
        seq_error_logged: false,
        sanitizer: faultline_agent::sanitize::Sanitizer::new(),
        probes: None,
    };
    let report = cycle.build(false, false);
    if let Err(e) = report.validate() {
        tracing::warn!(error = %e, "this report would be refused by the analyzer");
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// One collection cycle's state: the collectors, the sequence, and what every report carries.
struct Cycle {
    registry: Registry,
    node: String,
    interval: Duration,
    seq: SeqFile,
    parts: Shared,
    stats: Arc<AgentStats>,
    seq_error_logged: bool,
    /// Out-of-range values become null before the push (`sanitize.rs`).
    sanitizer: faultline_agent::sanitize::Sanitizer,
    /// Fabric probes, when `[probe] enabled`.
    probes: Option<Arc<faultline_agent::probe::Pingmesh>>,
}

impl Cycle {
    fn build(&mut self, urgent: bool, shutdown: bool) -> NodeReport {
        let start = Instant::now();
        let seq = match self.seq.take_next() {
            Ok(s) => s,
            Err(e) => {
                if !self.seq_error_logged {
                    tracing::error!(error = %e, "cannot persist the report sequence; numbering restarts if the agent restarts");
                    self.seq_error_logged = true;
                }
                self.seq.peek() - 1
            }
        };
        let mut r = collect::blank_report(&self.node, seq, self.interval.as_millis() as u64);
        r.urgent = urgent;
        r.shutdown = shutdown;
        self.registry.collect(&mut r);
        if let Some(p) = &self.probes {
            p.update_local(&r.nics);
            r.probes = p.take_samples();
        }
        let mut events = self.parts.events.drain();
        let mut extra_dropped = 0;
        if events.len() > faultline_proto::limits::MAX_EVENTS {
            extra_dropped = (events.len() - faultline_proto::limits::MAX_EVENTS) as u64;
            events.drain(..events.len() - faultline_proto::limits::MAX_EVENTS);
        }
        r.events = events;
        r.dropped = Dropped {
            reports: AgentStats::get(&self.stats.dropped_reports),
            events: self.parts.events.dropped() + extra_dropped,
            progress: self.parts.progress.dropped(),
        };
        self.sanitizer.apply(&mut r);
        *self.stats.collectors.lock().unwrap_or_else(|p| p.into_inner()) = self.registry.status().clone();
        AgentStats::set(&self.stats.collect_duration_us, start.elapsed().as_micros() as u64);
        AgentStats::add(&self.stats.reports, 1);
        r
    }
}

enum Trigger {
    Urgent,
    Shutdown,
}

/// The collection thread: collects every interval (and at once on an urgent event), publishes the
/// snapshot for `/metrics`, and hands the report to the pusher without ever waiting for it.
fn collection_loop(
    mut cycle: Cycle,
    triggers: std_mpsc::Receiver<Trigger>,
    snapshot: Snapshot,
    out: Option<mpsc::Sender<Outgoing>>,
    xids: export::xids::XidTally,
) {
    let mut next = Instant::now();
    let mut queue_full_logged = false;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let (urgent, shutdown) = match triggers.recv_timeout(wait) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                next += cycle.interval;
                let now = Instant::now();
                if next < now {
                    // A slow cycle (or a suspended host): skip the missed ticks rather than bursting.
                    next = now + cycle.interval;
                }
                (false, false)
            }
            Ok(Trigger::Urgent) => (true, false),
            Ok(Trigger::Shutdown) | Err(std_mpsc::RecvTimeoutError::Disconnected) => (false, true),
        };
        let report = cycle.build(urgent, shutdown);
        let seq = report.seq;
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(seq, error = %e, "cannot encode report");
                Vec::new()
            }
        };
        xids.count(&report);
        *snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(report);
        if let (Some(tx), false) = (&out, body.is_empty()) {
            let o = Outgoing { seq, body, last: shutdown };
            if shutdown {
                let _ = tx.blocking_send(o);
            } else if tx.try_send(o).is_err() {
                AgentStats::add(&cycle.stats.dropped_reports, 1);
                if !queue_full_logged {
                    tracing::warn!(seq, "push queue full (disk stalled?); dropping reports until it drains");
                    queue_full_logged = true;
                }
            } else {
                queue_full_logged = false;
            }
        }
        if shutdown {
            return;
        }
    }
}

/// Tokens shorter than this draw a start-up warning (the analyzer warns at the same length).
const WEAK_TOKEN_CHARS: usize = 16;

/// Take an exclusive lock on the spool directory so two agents never share one.
fn lock_spool(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!("another faultline-agent is using the spool directory {} (pass --spool-dir)", dir.display());
    }
    Ok(f)
}

#[derive(Clone)]
struct Http {
    registry: Arc<prometheus_client::registry::Registry>,
    snapshot: Snapshot,
}

async fn metrics_handler(State(h): State<Http>, headers: axum::http::HeaderMap) -> axum::response::Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (ct, body) = export::metrics::render(&h.registry, accept);
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

async fn healthz_handler(State(h): State<Http>) -> axum::response::Response {
    let body = match h.snapshot.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        // No report for three intervals (and a collector deadline): the collection loop is stuck.
        Some(r)
            if collect::now_ms().saturating_sub(r.timestamp_ms)
                > 3 * r.interval_ms as i64 + collect::DEFAULT_COLLECTOR_DEADLINE.as_millis() as i64 =>
        {
            let body = serde_json::json!({
                "status": "stalled",
                "last_seq": r.seq,
                "last_report_ms": r.timestamp_ms,
                "error": "no report built for more than three intervals",
            });
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
        }
        Some(r) => serde_json::json!({
            "status": "ok",
            "last_seq": r.seq,
            "last_report_ms": r.timestamp_ms,
            "last_urgent": r.urgent,
            "last_events": r.events.len(),
        }),
        None => serde_json::json!({ "status": "ok", "last_seq": null }),
    };
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn daemon(s: Settings) -> anyhow::Result<()> {
    let spool_dir = s.spool_dir()?;
    let _lock = lock_spool(&spool_dir)?;
    let spool = Spool::open(&spool_dir, s.spool_max_bytes)?;
    let seq = SeqFile::open(&spool_dir, Some(&spool))?;
    let client = match &s.analyzer {
        Some(a) => {
            warn_if_clear_text(a, s.token.is_some());
            if let Some(t) = &s.token
                && t.chars().count() < WEAK_TOKEN_CHARS
            {
                tracing::warn!(
                    min_chars = WEAK_TOKEN_CHARS,
                    "WEAK TOKEN: the push token is shorter than the minimum and can be guessed; use `openssl rand -hex 32`"
                );
            }
            Some(push::Client::new(a, s.token.clone(), s.ca_cert.as_deref())?)
        }
        None => None,
    };
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(s.listen).await.with_context(|| format!("cannot listen on {}", s.listen))?;
        let addr = listener.local_addr()?;
        announce(&format!("listening on http://{addr}"));
        let events = Arc::new(EventQueue::new(EVENT_QUEUE_CAP));
        // Posted news (a non-finite loss, a non-zero exit) and rank exits push an urgent report.
        let parts =
            Shared { progress: ProgressStore::new().with_events(events.clone()), events, pci: PciMap::default() };
        match progress::serve_http(parts.progress.clone(), s.progress_listen) {
            Ok((paddr, fut)) => {
                announce(&format!("progress on http://{paddr}"));
                tokio::spawn(fut);
                // The cheap path: one JSON post per UDP datagram, on the same address and port.
                if let Err(e) = progress::serve_udp(parts.progress.clone(), paddr) {
                    tracing::error!(addr = %paddr, error = %e, "progress datagrams (UDP) not available");
                }
            }
            Err(e) => tracing::error!(addr = %s.progress_listen, error = %e, "progress API not available"),
        }
        if let Some(path) = &s.progress_socket {
            match progress::serve_unix(parts.progress.clone(), path) {
                Ok(fut) => {
                    tokio::spawn(fut);
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "progress socket not available"),
            }
        }
        let kmsg_opts = collect::kmsg::KmsgOptions {
            state_dir: Some(spool_dir.clone()),
            boot_id_file: s.procfs_root.join("sys/kernel/random/boot_id"),
            sysfs: s.sysfs_root.clone(),
        };
        let watchers = collect::spawn_watchers(&s.kmsg, kmsg_opts, &parts);
        let xids = export::xids::XidTally::from(export::xids::XidTally::source_for(watchers.kernel_log));

        let stats = Arc::new(AgentStats::default());
        let snapshot: Snapshot = Arc::default();
        let mut prom = prometheus_client::registry::Registry::default();
        prom.register_collector(Box::new(export::metrics::NodeMetrics::new(
            snapshot.clone(),
            stats.clone(),
            s.node.clone(),
        )));
        let mut gpu_metrics =
            export::gpu_metrics::GpuMetrics::new(snapshot.clone(), xids.clone()).with_dcgm_compat(s.dcgm_compat);
        if let Some(socket) = &s.pod_resources_socket {
            let owners = faultline_agent::collect::pod_resources::Owners::default();
            faultline_agent::collect::pod_resources::spawn(socket.clone(), owners.clone(), s.interval);
            gpu_metrics = gpu_metrics.with_pod_owners(owners);
        }
        prom.register_collector(Box::new(gpu_metrics));
        prom.register_collector(Box::new(
            export::job_metrics::JobMetrics::new(snapshot.clone()).with_progress(parts.progress.clone(), &s.node),
        ));
        if let Some(endpoint) = &s.otlp_endpoint {
            let extra: Vec<_> = s.cluster.iter().map(|c| opentelemetry::KeyValue::new("cluster", c.clone())).collect();
            export::otlp::spawn(endpoint, &s.node, &extra, snapshot.clone(), xids.clone(), s.interval)?;
        }
        let http = Http { registry: Arc::new(prom), snapshot: snapshot.clone() };
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics_handler))
            .route("/healthz", axum::routing::get(healthz_handler))
            .with_state(http)
            .layer(tower_http::compression::CompressionLayer::new());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });

        let pusher_client = client.clone();
        let (out_tx, pusher) = match client {
            Some(c) => {
                let (tx, rx) = mpsc::channel(PUSH_QUEUE_CAP);
                tracing::info!(endpoint = c.endpoint(), interval = ?s.interval, "pushing reports");
                let task = tokio::spawn(push::Pusher::new(c, spool, stats.clone()).run(rx));
                (Some(tx), Some(task))
            }
            None => {
                if !spool.is_empty() {
                    tracing::warn!(reports = spool.len(), "spooled reports are kept but not sent: no --analyzer given");
                }
                (None, None)
            }
        };

        let probes = match &s.probe {
            Some(cfg) => {
                let pm = faultline_agent::probe::Pingmesh::start(&s.node, cfg.clone())
                    .context("cannot start the fabric probes")?;
                if let Some(c) = &pusher_client {
                    tokio::spawn(faultline_agent::probe::pinglist::run(
                        c.clone(),
                        s.node.clone(),
                        pm.clone(),
                        cfg.pinglist_refresh,
                    ));
                }
                Some(pm)
            }
            None => None,
        };
        let cycle = Cycle {
            registry: Registry::all(&sources(&s), &parts, &spool_dir, true),
            node: s.node.clone(),
            interval: s.interval,
            seq,
            parts,
            stats: stats.clone(),
            seq_error_logged: false,
            sanitizer: faultline_agent::sanitize::Sanitizer::new(),
            probes,
        };
        let events = cycle.parts.events.clone();
        let (trig_tx, trig_rx) = std_mpsc::channel();
        let collector = std::thread::Builder::new()
            .name("collect".into())
            .spawn(move || collection_loop(cycle, trig_rx, snapshot, out_tx, xids))
            .context("cannot start the collection thread")?;

        let urgent_tx = trig_tx.clone();
        tokio::spawn(async move {
            loop {
                events.urgent().await;
                if urgent_tx.send(Trigger::Urgent).is_err() {
                    return;
                }
                tokio::time::sleep(URGENT_MIN_GAP).await;
            }
        });

        wait_for_signal().await?;
        tracing::info!("stopping: sending the last report");
        let _ = trig_tx.send(Trigger::Shutdown);
        let joined = tokio::task::spawn_blocking(move || collector.join());
        if tokio::time::timeout(SHUTDOWN_COLLECT_DEADLINE, joined).await.is_err() {
            tracing::warn!("the last collection cycle did not finish in time; exiting without it");
            return Ok(());
        }
        if let Some(task) = pusher
            && tokio::time::timeout(push::SHUTDOWN_FLUSH_DEADLINE + Duration::from_secs(5), task).await.is_err()
        {
            tracing::warn!("the pusher did not finish in time");
        }
        Ok::<(), anyhow::Error>(())
    })?;
    // The runtime may hold a blocking task stuck in a hung driver call: do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// A loud warning when reports (and the token) would cross a network unencrypted: plain `http://` is
/// only quiet towards a loopback analyzer.
fn warn_if_clear_text(analyzer: &str, has_token: bool) {
    let Some(rest) = analyzer.trim().strip_prefix("http://") else { return };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        tracing::warn!(
            analyzer,
            token = if has_token { "sent in clear text" } else { "none" },
            "pushing to a non-loopback analyzer over plain HTTP: reports{} can be read and altered on the way; \
             use https:// (analyzer --tls-cert/--tls-key, agent --ca-cert)",
            if has_token { " and the bearer token" } else { "" }
        );
    }
}

/// Print one line on stdout for whoever started us (tests read the addresses from it). A closed stdout
/// is not a reason to stop a node agent: the error is logged and ignored.
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, line, "cannot write to stdout");
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
