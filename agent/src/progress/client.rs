//! `faultline-agent report-progress`: posts one record to a running agent over UDP, HTTP or the
//! Unix socket, with a small HTTP/1.1 exchange of its own (no client library in a training job's
//! hot path).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_proto::ProgressStatus;
use serde_json::Value;

use super::*;

/// Default address of the HTTP listener.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9431/progress";
/// Default address for progress datagrams: the HTTP listener's, over UDP (`report-progress --udp`).
pub const DEFAULT_UDP: &str = "127.0.0.1:9431";

/// `faultline-agent report-progress`: post one progress record to a running agent. `--job` and
/// `--rank` default to the process environment the way the agent discovers them (`SLURM_JOB_ID`,
/// `TORCHELASTIC_RUN_ID`; `RANK`, `SLURM_PROCID`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReportProgressArgs {
    /// Job id (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID).
    #[arg(long)]
    pub job: Option<String>,
    /// Global rank (default: $RANK, else $SLURM_PROCID).
    #[arg(long)]
    pub rank: Option<u32>,
    /// The training step just finished.
    #[arg(long)]
    pub step: u64,
    /// Wall time of the step in milliseconds.
    #[arg(long)]
    pub step_time_ms: Option<f64>,
    /// The step's own compute time before it waits in collectives, milliseconds.
    #[arg(long)]
    pub compute_ms: Option<f64>,
    /// Loss: a number, or `nan` / `inf` / `-inf`.
    #[arg(long, allow_hyphen_values = true)]
    pub loss: Option<String>,
    /// Gradient norm: a number, or `nan` / `inf`.
    #[arg(long, allow_hyphen_values = true)]
    pub grad_norm: Option<String>,
    /// `running`, `checkpointing`, `evaluating` or `exited`.
    #[arg(long, default_value = "running")]
    pub status: String,
    /// Exit code, with `--status exited` (negative: killed by signal -n).
    #[arg(long, allow_hyphen_values = true)]
    pub exit_code: Option<i32>,
    /// Send one UDP datagram to this address (the default transport: no answer, nothing to wait for).
    #[arg(long, default_value = DEFAULT_UDP, conflicts_with_all = ["url", "socket"])]
    pub udp: String,
    /// Post over HTTP to this URL instead (e.g. http://127.0.0.1:9431/progress) and wait for the
    /// agent's answer, so a refused record fails the command with the agent's reason.
    #[arg(long)]
    pub url: Option<String>,
    /// Post over HTTP on this Unix socket instead, waiting for the answer like `--url`.
    #[arg(long, conflicts_with = "url")]
    pub socket: Option<PathBuf>,
    /// Give up after this long (connect + send + answer).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Errors of the `report-progress` client.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the agent at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent refused the post ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("malformed answer from the agent: {0}")]
    BadAnswer(String),
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty() && v != "none")
}

fn cli_metric(name: &str, v: &Option<String>) -> Result<Option<Metric>, ReportError> {
    let Some(s) = v else { return Ok(None) };
    let l = s.trim().to_ascii_lowercase();
    if matches!(l.trim_start_matches(['+', '-']), "nan" | "inf" | "infinity") {
        return Ok(Some(Metric::NonFinite));
    }
    match l.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(Metric::Finite(x))),
        Ok(_) => Ok(Some(Metric::NonFinite)),
        Err(_) => Err(ReportError::Usage(format!("--{name} {s:?} is not a number, nan or inf"))),
    }
}

impl ReportProgressArgs {
    /// Build the post this command line describes, validated by the same rules as the server.
    pub fn to_post(&self) -> Result<ProgressPost, ReportError> {
        let job = self
            .job
            .clone()
            .or_else(|| env_first(&["SLURM_JOB_ID", "SLURM_JOBID", "TORCHELASTIC_RUN_ID"]))
            .ok_or_else(|| {
                ReportError::Usage("--job is required (no SLURM_JOB_ID or TORCHELASTIC_RUN_ID set)".into())
            })?;
        let rank = match self.rank {
            Some(r) => r,
            None => env_first(&["RANK", "SLURM_PROCID"])
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ReportError::Usage("--rank is required (no RANK or SLURM_PROCID set)".into()))?,
        };
        let status = match self.status.as_str() {
            "running" => ProgressStatus::Running,
            "checkpointing" => ProgressStatus::Checkpointing,
            "evaluating" => ProgressStatus::Evaluating,
            "exited" => ProgressStatus::Exited,
            s => {
                return Err(ReportError::Usage(format!(
                    "--status {s:?}: expected running, checkpointing, evaluating or exited"
                )));
            }
        };
        let post = ProgressPost {
            job,
            rank,
            step: self.step,
            step_time_ms: self.step_time_ms,
            compute_ms: self.compute_ms,
            loss: cli_metric("loss", &self.loss)?,
            grad_norm: cli_metric("grad-norm", &self.grad_norm)?,
            status,
            exit_code: self.exit_code,
        };
        // Run the server's own checks so a bad command line fails before it reaches the network.
        ProgressPost::from_json(post.to_json().as_bytes()).map_err(|e| ReportError::Usage(e.to_string()))
    }
}

/// `faultline-agent report-progress`: send one record as a datagram, or post it over HTTP (`--url`,
/// `--socket`) and wait for the agent's answer.
pub fn report_progress(args: ReportProgressArgs) -> anyhow::Result<()> {
    let post = args.to_post()?;
    let body = post.to_json();
    match (&args.socket, &args.url) {
        (Some(path), _) => post_unix(path, &body, args.timeout)?,
        (None, Some(url)) => post_http(url, &body, args.timeout)?,
        (None, None) => send_udp(&args.udp, &body)?,
    }
    Ok(())
}

/// Send `body` as one UDP datagram to `addr`. There is no answer to wait for; an agent that is not
/// listening on a local address shows as "connection refused" right after the send (the kernel's
/// ICMP answer on loopback), which is reported.
pub fn send_udp(addr: &str, body: &str) -> Result<(), ReportError> {
    use std::net::ToSocketAddrs;
    let target = format!("udp://{addr}");
    let conn_err = |source| ReportError::Connect { target: target.clone(), source };
    let to =
        addr.to_socket_addrs().map_err(conn_err)?.next().ok_or_else(|| {
            conn_err(std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing"))
        })?;
    let local: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = std::net::UdpSocket::bind(local).map_err(conn_err)?;
    sock.connect(to).map_err(conn_err)?;
    sock.send(body.as_bytes()).map_err(conn_err)?;
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => Err(conn_err(e)),
        Ok(None) => Ok(()),
    }
}

/// Split `http://host:port/path` into (host:port, path).
pub(super) fn split_http_url(url: &str) -> Result<(String, String), ReportError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ReportError::Usage(format!("--url {url:?}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/progress"),
    };
    if authority.is_empty() {
        return Err(ReportError::Usage(format!("--url {url:?} has no host")));
    }
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Post `body` over HTTP/1.1 with `Connection: close` (no client library: this runs inside training
/// jobs' shells and must not need a runtime).
pub fn post_http(url: &str, body: &str, timeout: Duration) -> Result<(), ReportError> {
    use std::net::ToSocketAddrs;
    let (authority, path) = split_http_url(url)?;
    let conn_err = |source| ReportError::Connect { target: url.to_string(), source };
    let addr = authority.to_socket_addrs().map_err(conn_err)?.next().ok_or_else(|| {
        conn_err(std::io::Error::new(std::io::ErrorKind::NotFound, "host name resolved to no address"))
    })?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(conn_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(conn_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(conn_err)?;
    exchange(stream, &authority, &path, body).map_err(|e| match e {
        ExchangeError::Io(source) => ReportError::Connect { target: url.to_string(), source },
        ExchangeError::Report(r) => r,
    })
}

/// Post `body` to the agent's Unix socket.
pub fn post_unix(path: &Path, body: &str, timeout: Duration) -> Result<(), ReportError> {
    let target = path.display().to_string();
    let conn_err = |source| ReportError::Connect { target: target.clone(), source };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(conn_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(conn_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(conn_err)?;
    exchange(stream, "localhost", "/progress", body).map_err(|e| match e {
        ExchangeError::Io(source) => ReportError::Connect { target: target.clone(), source },
        ExchangeError::Report(r) => r,
    })
}

enum ExchangeError {
    Io(std::io::Error),
    Report(ReportError),
}

fn exchange<S: std::io::Read + std::io::Write>(
    mut stream: S,
    host: &str,
    path: &str,
    body: &str,
) -> Result<(), ExchangeError> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(ExchangeError::Io)?;
    stream.flush().map_err(ExchangeError::Io)?;
    let mut answer = Vec::new();
    // Read until the server closes; cap what we keep (answers are tiny).
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if answer.len() < 64 * 1024 {
                    answer.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if !answer.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ExchangeError::Report(ReportError::BadAnswer(format!("status line {status_line:?}"))))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Err(ExchangeError::Report(ReportError::Refused { status, reason }))
}
