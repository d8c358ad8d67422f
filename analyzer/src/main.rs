//! `faultline-analyzer`: the analyzer server binary. Reads config and flags, opens the store,
//! continues open incidents, binds, prints `listening on http://ADDR`, and serves until SIGINT or
//! SIGTERM.
//!
//! Exit codes: 0 after a clean shutdown, 1 when serving failed, 2 for a configuration or start-up
//! error (bad flag, unreadable token or topology file, database that cannot be opened, port taken).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use faultline_analyzer::clock::SystemClock;
use faultline_analyzer::config::Config;
use faultline_analyzer::notify;
use faultline_analyzer::server::{self, AppState, OutboxPlanner};
use tracing::{info, warn};

/// mimalloc: reports are decoded on request (or decoder) threads and freed on the engine's, and
/// glibc malloc's per-thread arenas spend much of the analyzer's time on such cross-thread frees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "faultline-analyzer",
    version,
    about = "faultline analyzer: ingests agent reports, names root causes, serves incidents"
)]
struct Cli {
    /// `cert init DIR`: make a CA, a server certificate and tokens (analyzer/SECURITY.md);
    /// `backup DEST`: copy the store.
    #[command(subcommand)]
    command: Option<Sub>,
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9440].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// SQLite database file [default: faultline.db].
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
    /// Bearer token for ingest and read (prefer --token-file: flags show up in `ps`).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Topology file (TOML, or JSON when named *.json).
    #[arg(long, value_name = "PATH")]
    topology: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Remediation dry run: log and record what would be drained or resumed, call no scheduler.
    #[arg(long)]
    dry_run: bool,
    /// OpenTelemetry collector base URL: export ingest and diagnosis spans to URL/v1/traces (OTLP/HTTP).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Log format on stderr: text, or json (one object per line).
    #[arg(long, value_enum, default_value_t)]
    log_format: faultline_logging::LogFormat,
    /// Start even if the store looks damaged (its WAL lost, the file truncated or missing): what it
    /// lost stays lost. Without this the analyzer refuses to start on a damaged store.
    #[arg(long)]
    allow_empty_store: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Make a CA, a TLS server certificate and tokens for the analyzer, its agents and the CLI
    #[command(subcommand)]
    Cert(faultline_analyzer::cert::CertCommand),
    /// Write a consistent copy of the store to DEST (safe while the analyzer runs), then exit.
    Backup {
        /// Where to write the copy; must not exist yet.
        dest: PathBuf,
    },
}

fn main() -> ExitCode {
    faultline_analyzer::alloc::keep_freed_pages();
    let mut cli = Cli::parse();
    faultline_logging::init(cli.log_format);
    if let Some(Sub::Backup { dest }) = &cli.command {
        return match backup(&cli, dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Sub::Cert(c)) = cli.command.take() {
        return match faultline_analyzer::cert::run(c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let (state, listener, settings) = match start(cli).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Delivery runs until the process ends; rows in flight then are sent again on the next start.
    let _notifier = match notify::spawn(state.clone(), Arc::new(settings.notify.clone())) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let served = match &settings.tls {
        Some(tls) => match faultline_analyzer::tls::TlsListener::new(listener, tls.config.clone()) {
            Ok(l) => server::serve(l, state, settings.tick_interval, shutdown_signal()).await,
            Err(e) => Err(e),
        },
        None => server::serve(listener, state, settings.tick_interval, shutdown_signal()).await,
    };
    match served {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: serving failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn start(
    cli: Cli,
) -> anyhow::Result<(Arc<AppState>, tokio::net::TcpListener, faultline_analyzer::config::Settings)> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(d) = cli.db {
        cfg.db = d;
    }
    if let Some(t) = cli.token {
        cfg.token = Some(t.into());
        cfg.token_file = None;
    }
    if let Some(p) = cli.token_file {
        cfg.token_file = Some(p);
        cfg.token = None;
    }
    if let Some(t) = cli.topology {
        cfg.topology = Some(t);
    }
    if let (Some(c), Some(k)) = (cli.tls_cert, cli.tls_key) {
        cfg.tls_cert = Some(c);
        cfg.tls_key = Some(k);
    }
    if cli.dry_run {
        cfg.remediation.dry_run = true;
    }
    if let Some(e) = cli.otlp_endpoint {
        cfg.otlp_endpoint = Some(e);
    }
    if let Some(e) = cfg.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        faultline_analyzer::otel::install(e).context("--otlp-endpoint")?;
    }
    let mut settings = cfg.build()?;
    settings.allow_empty_store = cli.allow_empty_store;
    // Bound before the store opens so that notification links can name the port chosen for `:0`;
    // nothing is served (and `listening on` is not printed) until the store has loaded.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr().context("cannot read the bound address")?;
    settings.notify.use_bound_address(addr);
    let planner: Option<Arc<dyn OutboxPlanner>> = if settings.notify.is_empty() {
        None
    } else {
        Some(Arc::new(notify::Planner::new(Arc::new(settings.notify.clone()))))
    };
    let state = AppState::open(&settings, Arc::new(SystemClock), planner).context("cannot start the store")?;
    {
        let mut out = std::io::stdout().lock();
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        writeln!(out, "listening on {scheme}://{addr}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    if settings.auth.is_open() {
        warn!("************************************************************************");
        warn!("NO API TOKEN CONFIGURED: anyone who can reach {addr} can push reports");
        warn!("and read incidents. Set --token-file (or token_file in the config).");
        warn!("************************************************************************");
    }
    let weak = settings.auth.weak_tokens();
    if weak > 0 {
        warn!(
            weak_tokens = weak,
            min_chars = faultline_analyzer::auth::MIN_TOKEN_CHARS,
            "WEAK TOKEN: a configured token is shorter than the minimum and can be guessed; use `openssl rand -hex 32`"
        );
    }
    if !addr.ip().is_loopback() && settings.tls.is_none() {
        warn!("************************************************************************");
        warn!("PLAIN HTTP ON {addr}, A NON-LOOPBACK ADDRESS: tokens and reports travel");
        warn!("in clear text. Give --tls-cert and --tls-key (agents: --ca-cert), or put");
        warn!("a TLS-terminating proxy in front and listen on loopback.");
        warn!("************************************************************************");
    }
    let (shared, ingest, read, node) = settings.auth.counts();
    info!(
        tls = settings.tls.is_some(),
        shared_token = shared > 0,
        ingest_tokens = ingest,
        read_tokens = read,
        node_tokens = node,
        node_rate_per_s = settings.node_rate_per_s,
        node_rate_burst = settings.node_rate_burst,
        "access"
    );
    info!(
        listen = %addr,
        db = %settings.db.display(),
        topology = settings.topology_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()),
        switches = settings.topology.switches.len(),
        tick_ms = settings.tick_interval.as_millis() as u64,
        notify_receivers = settings.notify.receivers.len(),
        "analyzer started"
    );
    Ok((state, listener, settings))
}

/// `faultline-analyzer backup DEST`: the store named by `--db` (or the config) copied to DEST.
fn backup(cli: &Cli, dest: &std::path::Path) -> anyhow::Result<()> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let db = cli.db.clone().unwrap_or(cfg.db);
    if dest.exists() {
        anyhow::bail!("{} already exists; give a new file name", dest.display());
    }
    if !db.exists() {
        anyhow::bail!("no store at {} (give --db)", db.display());
    }
    let store = faultline_analyzer::store::Store::open_checked(&db, cli.allow_empty_store)
        .with_context(|| format!("cannot open the store {}", db.display()))?;
    store.backup(dest).with_context(|| format!("cannot write the backup {}", dest.display()))?;
    let counts = store.counts()?;
    println!("backed up {} ({} incidents) to {}", db.display(), counts.incidents, dest.display());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    info!("shutdown requested");
}
