//! The diagnosis subcommands (`status`, `incidents`, `incident`, `explain`, `path`, `topology`,
//! `jobs`, `watch`): their flags, the shared connection flags, and the exit-code contract.
//!
//! Exit codes: 0 healthy, 1 open incidents (or an unhealthy component) found, 2 error, 3 the
//! analyzer's store is failing (its answers came from memory). Errors go to
//! stderr and say what went wrong and what to do about it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::{Client, ClientError};
use crate::config;
use crate::render::Style;

mod explain;
mod incidents;
mod jobs;
mod path;
mod status;
mod topology;
mod watch;

/// The exit-code contract, shown under `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  healthy: nothing open, nothing faulty
  1  findings: open incidents, or the component, job or path asked about is unhealthy
  2  error: the analyzer is unreachable, refused the token, or does not know the id
  3  the analyzer's store is failing: what was shown came from its memory";

/// The top-level `--help` epilogue: where settings come from, then the exit codes.
pub const TOP_HELP: &str = "\
Connection settings come from the flag, then FAULTLINE_ANALYZER / FAULTLINE_TOKEN, then the config
file ~/.config/faultline/cli.toml (or $XDG_CONFIG_HOME/faultline/cli.toml) with the keys `analyzer`
and `token`, then the default http://127.0.0.1:9440 without a token.

Exit codes:
  0  healthy: nothing open, nothing faulty
  1  findings: open incidents, or the component, job or path asked about is unhealthy
  2  error: the analyzer is unreachable, refused the token, or does not know the id
  3  the analyzer's store is failing: what was shown came from its memory";

/// Where the analyzer is and how to authenticate; global, so they go before or after the subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnArgs {
    /// Analyzer base URL [env: FAULTLINE_ANALYZER] [config: analyzer] [default: http://127.0.0.1:9440]
    #[arg(long, global = true, value_name = "URL", help_heading = "Connection")]
    pub analyzer: Option<String>,
    /// Bearer token for the analyzer API [env: FAULTLINE_TOKEN] [config: token]
    #[arg(long, global = true, value_name = "TOKEN", help_heading = "Connection")]
    pub token: Option<String>,
    /// File holding the bearer token (instead of --token, which shows in `ps`), e.g. a mounted secret
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "FAULTLINE_TOKEN_FILE",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM file of the CA that signed the analyzer's TLS certificate (e.g. from `faultline-analyzer
    /// cert init`), trusted instead of the system's CAs
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "FAULTLINE_CA_CERT",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Longest `--token-file` read: tokens are tens of bytes; 64 KiB is far beyond any.
const TOKEN_FILE_MAX_BYTES: u64 = 64 * 1024;

impl ConnArgs {
    /// The token given on the command line: `--token`, or the trimmed contents of `--token-file`
    /// (giving both is an error). `None`: neither, so the environment or the config file decides.
    pub fn flag_token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => anyhow::bail!("give --token or --token-file, not both"),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(p)) => {
                use std::io::Read;
                // A token is short; a limit keeps `--token-file /dev/zero` from reading forever.
                let mut t = String::new();
                std::fs::File::open(p)
                    .and_then(|f| f.take(TOKEN_FILE_MAX_BYTES).read_to_string(&mut t))
                    .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", p.display()))?;
                anyhow::ensure!(
                    (t.len() as u64) < TOKEN_FILE_MAX_BYTES,
                    "--token-file {} is not a token (over {TOKEN_FILE_MAX_BYTES} bytes)",
                    p.display()
                );
                let t = t.trim();
                anyhow::ensure!(!t.is_empty(), "--token-file {} is empty", p.display());
                Ok(Some(t.to_string()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The diagnosis subcommands; `main.rs` flattens them into the top-level command.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Cluster at a glance: nodes reporting/silent, GPUs, open incidents, most affected jobs
    #[command(after_help = EXIT_CODES_HELP)]
    Status(status::StatusArgs),
    /// List incidents (open ones unless --all)
    #[command(after_help = EXIT_CODES_HELP)]
    Incidents(incidents::IncidentsArgs),
    /// One incident: root cause, evidence, timeline, recommended action, affected job paths
    #[command(after_help = EXIT_CODES_HELP)]
    Incident(incidents::IncidentArgs),
    /// Why a component or job is unhealthy: symptoms, incidents, what it depends on and what depends on it
    #[command(after_help = EXIT_CODES_HELP)]
    Explain(explain::ExplainArgs),
    /// A job's dependency tree (ranks → GPUs → nodes → NICs → switches) with health marks
    #[command(after_help = EXIT_CODES_HELP)]
    Path(path::PathArgs),
    /// Leaf and spine switches with their NIC and node counts
    #[command(after_help = EXIT_CODES_HELP)]
    Topology(topology::TopologyArgs),
    /// Running jobs with their health
    #[command(after_help = EXIT_CODES_HELP)]
    Jobs(jobs::JobsArgs),
    /// Refresh `status` every interval until interrupted (or --count times)
    #[command(after_help = EXIT_CODES_HELP)]
    Watch(watch::WatchArgs),
}

/// What a command found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Findings,
}

impl Verdict {
    pub fn of(findings: bool) -> Self {
        if findings { Self::Findings } else { Self::Healthy }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Findings => 1,
        }
    }
}

/// Exit code for errors.
pub const EXIT_ERROR: u8 = 2;
/// Exit code when the command ran but the analyzer said its store is failing: what was shown came
/// from its memory and may not be all there is.
pub const EXIT_STORE_FAILING: u8 = 3;

/// What every command gets.
pub struct Ctx {
    pub client: Client,
    pub style: Style,
}

/// Runs one diagnosis command and turns its result into the exit code; errors are printed here.
pub fn run(conn: &ConnArgs, cmd: Command) -> ExitCode {
    match run_inner(conn, cmd) {
        Ok((_, true)) => ExitCode::from(EXIT_STORE_FAILING),
        Ok((v, false)) => ExitCode::from(v.code()),
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// An error already printed to stderr where it happened; only the exit code is left to set.
#[derive(Debug, thiserror::Error)]
#[error("(reported above)")]
pub struct Reported;

fn run_inner(conn: &ConnArgs, cmd: Command) -> anyhow::Result<(Verdict, bool)> {
    let settings = config::from_env(conn.analyzer.as_deref(), conn.flag_token()?.as_deref())?;
    let ctx = Ctx {
        client: Client::new(&settings.analyzer, settings.token, conn.ca_cert.as_deref())?,
        style: Style::detect(),
    };
    let verdict = run_command(&ctx, cmd)?;
    Ok((verdict, ctx.client.store_failing().is_some()))
}

fn run_command(ctx: &Ctx, cmd: Command) -> anyhow::Result<Verdict> {
    match cmd {
        Command::Status(a) => status::run(ctx, &a),
        Command::Incidents(a) => incidents::run_list(ctx, &a),
        Command::Incident(a) => incidents::run_one(ctx, &a),
        Command::Explain(a) => explain::run(ctx, &a),
        Command::Path(a) => path::run(ctx, &a),
        Command::Topology(a) => topology::run(ctx, &a),
        Command::Jobs(a) => jobs::run(ctx, &a),
        Command::Watch(a) => watch::run(ctx, &a),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a message.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Pretty JSON with a trailing newline.
pub fn emit_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v).context("cannot encode JSON")?;
    s.push('\n');
    emit(&s)
}

/// Turns a 404 into advice about `what` (`incident inc-000099`) and where to find valid ids.
pub fn not_found(e: ClientError, what: &str, hint: &str) -> anyhow::Error {
    match e {
        ClientError::NotFound { .. } => anyhow::anyhow!("no {what}; {hint}"),
        other => other.into(),
    }
}

/// Unix seconds now (the CLI's own clock, only for "5m ago" and `--since 2h`).
pub fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(token: Option<&str>, file: Option<&std::path::Path>) -> ConnArgs {
        ConnArgs { analyzer: None, token: token.map(Into::into), token_file: file.map(Into::into), ca_cert: None }
    }

    #[test]
    fn token_file_is_read_trimmed_and_exclusive_with_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(conn(None, Some(&f)).flag_token().unwrap().as_deref(), Some("s3cret"));
        assert_eq!(conn(Some("t"), None).flag_token().unwrap().as_deref(), Some("t"));
        assert_eq!(conn(None, None).flag_token().unwrap(), None);
        assert!(conn(Some("t"), Some(&f)).flag_token().unwrap_err().to_string().contains("not both"));
        std::fs::write(&f, "  \n").unwrap();
        assert!(conn(None, Some(&f)).flag_token().unwrap_err().to_string().contains("empty"));
        let missing = dir.path().join("nope");
        assert!(conn(None, Some(&missing)).flag_token().unwrap_err().to_string().contains("cannot read"));
        let zero = std::path::Path::new("/dev/zero");
        if zero.exists() {
            assert!(conn(None, Some(zero)).flag_token().is_err(), "an endless file is refused, not read forever");
        }
    }
}
