//! The push client: posts each report to `<analyzer>/api/v1/reports` with a bearer token. The
//! collection loop hands reports over on a bounded channel and never waits for this task. While the
//! analyzer is unreachable (or answers 5xx) reports go to the disk spool and are replayed oldest first
//! when it is back; a 4xx answer means the analyzer refuses that report for good, so it is logged with
//! the analyzer's message and dropped. Retries back off exponentially, capped with `min`. A 429 (the
//! analyzer's per-node rate limit) waits as long as its `Retry-After` asks, also capped with `min`.
//!
//! With `https://` the analyzer's certificate is checked against the system's roots, or only against
//! the CA given with `--ca-cert` (pinning: the system roots are then not trusted at all).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::export::AgentStats;
use crate::export::spool::Spool;

/// First retry delay after a failed push.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Retry delay cap: an analyzer back from a restart hears from every agent within this long, and a
/// thousand agents retrying do not hammer it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One HTTP request's deadline. A report is small; an analyzer that needs longer is treated as down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shutdown path may spend flushing the spool and sending the last report (systemd's
/// default stop timeout is 90 s; this leaves most of it unused).
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(15);
/// How much of a refusal's body goes into the log line.
const MAX_LOGGED_BODY: usize = 512;
/// Wait after a 429 that carries no usable `Retry-After`: one second is what the analyzer's token
/// bucket needs to refill at its default 20 reports per second.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A report on its way out: its sequence number and the exact JSON bytes.
#[derive(Debug)]
pub struct Outgoing {
    pub seq: u64,
    pub body: Vec<u8>,
    /// The shutdown report: flush, send it, and end the task.
    pub last: bool,
}

/// What happened to one post.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: the analyzer has it.
    Accepted,
    /// 4xx: the analyzer will never take this report; retrying is pointless.
    Refused { status: u16, message: String },
    /// Connection error, timeout, 5xx or 408: try again later.
    Retry(String),
    /// 429: the analyzer is rate-limiting this node; try again after `after`.
    Busy { after: Duration, message: String },
}

/// Posts reports to one analyzer.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    /// `analyzer` is the base URL (`http://analyzer:9440`); reports go to `<base>/api/v1/reports`.
    /// `ca_cert` is a PEM file of the CA(s) that alone may vouch for the analyzer's certificate.
    pub fn new(analyzer: &str, token: Option<String>, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        use anyhow::Context;
        let base = analyzer.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("analyzer URL {analyzer:?} must start with http:// or https://");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("faultline-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert {} is not a PEM certificate bundle", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("--ca-cert {} holds no PEM certificate", path.display());
            }
            if base.starts_with("http://") {
                tracing::warn!(
                    analyzer = base,
                    "--ca-cert is set but the analyzer URL is http://: nothing is encrypted"
                );
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Client { http, endpoint: format!("{base}/api/v1/reports"), token })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn post(&self, body: Vec<u8>) -> Outcome {
        let mut req =
            self.http.post(&self.endpoint).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Accepted;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut message = resp.text().await.unwrap_or_default();
        if message.len() > MAX_LOGGED_BODY {
            let mut cut = MAX_LOGGED_BODY;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let code = status.as_u16();
        if code == 429 {
            let after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER).min(MAX_BACKOFF);
            return Outcome::Busy { after, message };
        }
        if status.is_client_error() && code != 408 {
            Outcome::Refused { status: code, message }
        } else {
            Outcome::Retry(format!("HTTP {code}: {message}"))
        }
    }
}

/// Next retry delay: doubled, capped with `min`.
pub fn next_backoff(cur: Duration) -> Duration {
    (cur * 2).min(MAX_BACKOFF)
}

/// The pusher task. Runs until the channel closes or the `last` report was handled.
pub struct Pusher {
    client: Client,
    spool: Spool,
    stats: Arc<AgentStats>,
    /// When set, the analyzer failed and no direct push is tried before this instant.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The analyzer failed (not just rate-limited) since the last accepted push: log once each way.
    unreachable: bool,
}

impl Pusher {
    pub fn new(client: Client, spool: Spool, stats: Arc<AgentStats>) -> Pusher {
        let p = Pusher { client, spool, stats, retry_at: None, backoff: INITIAL_BACKOFF, unreachable: false };
        p.publish_spool();
        if !p.spool.is_empty() {
            tracing::info!(
                reports = p.spool.len(),
                bytes = p.spool.bytes(),
                "spooled reports from an earlier run will be replayed"
            );
        }
        p
    }

    fn publish_spool(&self) {
        AgentStats::set(&self.stats.spool_reports, self.spool.len() as u64);
        AgentStats::set(&self.stats.spool_bytes, self.spool.bytes());
    }

    /// Put a report in the spool; false when it could not be stored (it is then counted as dropped).
    fn spool(&mut self, r: &Outgoing) -> bool {
        let stored = match self.spool.push(r.seq, &r.body) {
            Ok(0) => true,
            Ok(n) => {
                AgentStats::add(&self.stats.dropped_reports, n);
                tracing::warn!(dropped = n, seq = r.seq, "spool full: dropped the oldest reports");
                self.spool.newest() == Some(r.seq)
            }
            Err(e) => {
                AgentStats::add(&self.stats.dropped_reports, 1);
                tracing::error!(seq = r.seq, error = %e, "cannot spool report; it is lost");
                false
            }
        };
        self.publish_spool();
        stored
    }

    fn failed(&mut self, seq: u64, why: &str) {
        AgentStats::add(&self.stats.push_errors, 1);
        if !self.unreachable {
            self.unreachable = true;
            tracing::warn!(
                seq,
                endpoint = self.client.endpoint(),
                error = why,
                "analyzer unreachable; spooling reports until it is back"
            );
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = next_backoff(self.backoff);
    }

    /// The analyzer rate-limits this node: wait as asked, without counting the analyzer as down.
    fn busy(&mut self, seq: u64, after: Duration, message: &str) {
        AgentStats::add(&self.stats.push_errors, 1);
        tracing::debug!(
            seq,
            wait_ms = after.as_millis() as u64,
            analyzer_message = message,
            "analyzer busy (429); waiting"
        );
        self.retry_at = Some(Instant::now() + after);
    }

    fn refused(&mut self, seq: u64, status: u16, message: &str) {
        AgentStats::add(&self.stats.push_errors, 1);
        AgentStats::add(&self.stats.refused, 1);
        tracing::error!(seq, status, analyzer_message = message, "analyzer refused the report; dropping it");
    }

    fn ok(&mut self) {
        AgentStats::add(&self.stats.pushed, 1);
        if self.unreachable {
            tracing::info!(endpoint = self.client.endpoint(), "analyzer reachable again");
        }
        self.unreachable = false;
        self.retry_at = None;
        self.backoff = INITIAL_BACKOFF;
    }

    /// Take everything already waiting on the channel into the spool (keeps order while replaying).
    /// Returns true when the last report was among them (it is spooled too).
    fn absorb(&mut self, rx: &mut mpsc::Receiver<Outgoing>) -> bool {
        while let Ok(r) = rx.try_recv() {
            self.spool(&r);
            if r.last {
                return true;
            }
        }
        false
    }

    /// Replay the spool oldest first until it is empty or the analyzer fails again. With `rx`, what
    /// arrives meanwhile is spooled behind, and the replay stops (returning true) once the last report
    /// arrived, so shutdown can take over with its deadline.
    async fn drain(&mut self, mut rx: Option<&mut mpsc::Receiver<Outgoing>>) -> bool {
        while let Some(seq) = self.spool.oldest() {
            if let Some(rx) = rx.as_deref_mut()
                && self.absorb(rx)
            {
                return true;
            }
            let body = match self.spool.read(seq) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(seq, error = %e, "spooled report unreadable; dropping it");
                    AgentStats::add(&self.stats.dropped_reports, 1);
                    let _ = self.spool.remove(seq);
                    self.publish_spool();
                    continue;
                }
            };
            match self.client.post(body).await {
                Outcome::Accepted => self.ok(),
                Outcome::Refused { status, message } => self.refused(seq, status, &message),
                Outcome::Retry(why) => {
                    self.failed(seq, &why);
                    return false;
                }
                Outcome::Busy { after, message } => {
                    self.busy(seq, after, &message);
                    return false;
                }
            }
            if let Err(e) = self.spool.remove(seq) {
                tracing::error!(seq, error = %e, "cannot remove a sent report from the spool; it may be sent twice");
            }
            self.publish_spool();
        }
        false
    }

    /// Send one report now, or spool it if the analyzer is (or becomes) unavailable.
    async fn send_or_spool(&mut self, r: Outgoing) {
        match self.client.post(r.body.clone()).await {
            Outcome::Accepted => self.ok(),
            Outcome::Refused { status, message } => self.refused(r.seq, status, &message),
            Outcome::Retry(why) => {
                self.failed(r.seq, &why);
                self.spool(&r);
            }
            Outcome::Busy { after, message } => {
                self.busy(r.seq, after, &message);
                self.spool(&r);
            }
        }
    }

    /// Shutdown: the last report goes behind whatever is spooled (on disk first, so a flush cut short
    /// by the deadline loses nothing), then the spool is replayed in order while the analyzer answers.
    /// What cannot be sent within the deadline stays spooled for the next start.
    async fn finish(&mut self, last: Option<Outgoing>) {
        let flush = async {
            if let Some(last) = last
                && !self.spool(&last)
            {
                // Could not spool it (disk full?): try it directly, after the older ones.
                self.drain(None).await;
                return self.send_or_spool(last).await;
            }
            self.drain(None).await;
        };
        if tokio::time::timeout(SHUTDOWN_FLUSH_DEADLINE, flush).await.is_err() {
            tracing::warn!(spooled = self.spool.len(), "shutdown flush timed out; the rest stays spooled");
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>) {
        loop {
            // Replay what is spooled once the retry time has come.
            let due = self.retry_at.is_none_or(|t| t <= Instant::now());
            if !self.spool.is_empty() && due {
                if self.drain(Some(&mut rx)).await {
                    return self.finish(None).await;
                }
                continue;
            }
            let wake = self.retry_at.filter(|_| !self.spool.is_empty());
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = async { tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)).await }, if wake.is_some() => continue,
            };
            let Some(r) = msg else { return };
            if r.last {
                return self.finish(Some(r)).await;
            }
            if !self.spool.is_empty() || self.retry_at.is_some_and(|t| t > Instant::now()) {
                self.spool(&r);
            } else {
                self.send_or_spool(r).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut d = INITIAL_BACKOFF;
        for _ in 0..20 {
            d = next_backoff(d);
        }
        assert_eq!(d, MAX_BACKOFF);
        assert_eq!(next_backoff(Duration::from_secs(1)), Duration::from_secs(2));
    }

    #[test]
    fn analyzer_urls_must_be_http() {
        assert!(Client::new("analyzer:9440", None, None).is_err());
        let c = Client::new("http://127.0.0.1:9440/", None, None).unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:9440/api/v1/reports");
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = Client::new("https://127.0.0.1:9440", None, Some(&p)).err().unwrap();
        assert!(format!("{e:#}").contains("ca.pem"), "{e:#}");
        let e = Client::new("https://127.0.0.1:9440", None, Some(&dir.path().join("nope.pem"))).err().unwrap();
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
    }
}
