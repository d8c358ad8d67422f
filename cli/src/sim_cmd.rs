//! `faultline sim run SCENARIO [--json REPORT] [--speed N] [--analyzer URL --token T]` (and `sim fuzz`): run a
//! scenario against the analyzer (in-process, or a running one over HTTP), print a table of the
//! scores, and exit 0 once the run completed (scores are reported, not errors; 2 on an error).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use faultline_sim::{RunOptions, Scenario, WireTarget};

use crate::commands::ConnArgs;

#[derive(Debug, Clone, Subcommand)]
pub enum SimCommand {
    /// Run one scenario file and score what the analyzer found (in-process; over HTTP with --analyzer URL)
    Run(RunArgs),
    /// Print (or write) the topology file of a scenario's cluster, for `faultline-analyzer --topology`
    /// before a `sim run --analyzer` against it
    Topology(TopologyArgs),
    /// Score a run report (`sim run --json REPORT`) against its scenario again, without running
    Score(crate::sim_score::ScoreArgs),
    /// Run a campaign of randomized worlds (in-process) and print pass rates per property and per
    /// fault kind; failing worlds come with the scenario TOML that reproduces them
    Fuzz(FuzzArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FuzzArgs {
    /// How many worlds to draw
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub worlds: usize,
    /// Campaign seed: the same seed draws the same worlds
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// Also write the campaign report as JSON here
    #[arg(long, value_name = "REPORT")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Scenario file (TOML, see sim/SCENARIO.md)
    pub scenario: PathBuf,
    /// Write it here instead of stdout
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Scenario file (TOML, see sim/SCENARIO.md)
    pub scenario: PathBuf,
    /// Also write the run report as JSON here
    #[arg(long, value_name = "REPORT")]
    pub json: Option<PathBuf>,
    /// Pace virtual time at N× real time (default: flat out in-process, 1× with --analyzer)
    #[arg(long, value_name = "N")]
    pub speed: Option<f64>,
}

/// Run a `sim` subcommand. With the global `--analyzer URL` the reports go over HTTP to that
/// analyzer; without it the analyzer engine runs in-process.
pub fn run(conn: &ConnArgs, cmd: SimCommand) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    let result = match cmd {
        SimCommand::Run(args) => run_scenario(conn, args),
        SimCommand::Topology(args) => write_topology(args),
        SimCommand::Score(args) => crate::sim_score::run(args),
        SimCommand::Fuzz(args) => fuzz(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn write_topology(args: TopologyArgs) -> anyhow::Result<ExitCode> {
    let sc = Scenario::from_path(&args.scenario)?;
    let text =
        faultline_sim::cluster::Cluster::build(&sc).topology_toml().context("cannot write the topology as TOML")?;
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct Bar {
    last: Option<Instant>,
    start: Instant,
}

impl Bar {
    fn draw(&mut self, done: f64, total: f64) {
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < Duration::from_millis(100)) && done < total {
            return;
        }
        self.last = Some(now);
        let frac = if total > 0.0 { (done / total).clamp(0.0, 1.0) } else { 1.0 };
        let width = 40;
        let full = (frac * width as f64).round() as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>5.1}%  {:.0}/{:.0} virtual s  {:.1} s",
            "#".repeat(full),
            ".".repeat(width - full),
            frac * 100.0,
            done,
            total,
            self.start.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}\r", " ".repeat(90));
        let _ = err.flush();
    }
}

fn run_scenario(conn: &ConnArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let sc = Scenario::from_path(&args.scenario)?;
    if let Some(s) = args.speed {
        if !(s.is_finite() && s > 0.0) {
            bail!("--speed must be a positive number, not {s}");
        }
    }
    let env_token = std::env::var("FAULTLINE_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let token = conn.flag_token()?.map(|t| t.trim().to_string()).or(env_token);
    let wire = conn.analyzer.as_ref().map(|url| WireTarget { url: url.clone(), token });
    let tty = std::io::stderr().is_terminal();
    let mut bar = Bar { last: None, start: Instant::now() };
    let mut draw = |d: f64, t: f64| bar.draw(d, t);
    let opts = RunOptions {
        speed: args.speed,
        wire,
        progress: if tty { Some(&mut draw) } else { None },
        ..Default::default()
    };
    let report = faultline_sim::run(&sc, opts).with_context(|| format!("running {}", args.scenario.display()))?;
    if tty {
        bar.clear();
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.table().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn fuzz(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    if args.worlds == 0 {
        bail!("--worlds must be at least 1");
    }
    let start = Instant::now();
    let total = args.worlds;
    let mut each = |i: usize, o: &faultline_sim::fuzz::WorldOutcome| {
        let verdict = if o.passed { "pass".to_string() } else { format!("FAIL: {}", o.reason) };
        eprintln!(
            "[{}/{total} {:.0} s] world {}: {}",
            i + 1,
            start.elapsed().as_secs_f64(),
            o.seed,
            verdict.chars().take(160).collect::<String>()
        );
    };
    let report = faultline_sim::fuzz::campaign(args.worlds, args.seed, &mut each);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.table().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
