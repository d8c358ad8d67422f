//! The push client: posts each report to `<analyzer>/api/v1/reports` with a bearer token. The
//! collection loop hands reports over on a bounded channel and never waits for this task. Every
//! report is written to the disk spool first and removed only when the analyzer's answer
//! acknowledges its `seq` (write-ahead: a `kill -9` loses nothing). Reports are sent oldest first.
//! Only 400, 413 and 422 (a problem in the report itself) drop a report; 401, 403, 404 and other
//! 4xx keep it spooled with a loud log line, like a connection error or a 5xx. Retries back off
//! exponentially, capped with `min`. A 429 (the analyzer's per-node rate limit) waits as long as
//! its `Retry-After` asks, also capped with `min`.
//!
//! Reports go out in the compact encoding (`faultline_proto::wire`, `application/x-protobuf`),
//! transcoded from the spooled JSON at send time; an analyzer that answers 415 (one from before the
//! compact encoding) gets JSON from then on. `--once` and the spool stay JSON.
//!
//! Most reports go as what changed since the last one the analyzer acknowledged
//! (`faultline_proto::wire::delta`): a full compact report first, every `FULL_EVERY` reports, after
//! any failure, and when the analyzer answers 409 (it restarted, or lost our base), in which case the
//! same report goes again at once in full. An analyzer that answers 415 to a delta gets full compact
//! reports from then on.
//!
//! With `https://` the analyzer's certificate is checked against the system's roots, or only against
//! the CA given with `--ca-cert` (pinning: the system roots are then not trusted at all).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::export::AgentStats;
use crate::export::spool::Spool;

/// First retry delay after a failed push (before jitter, which adds up to as much again).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Retry delay cap, jitter included: an analyzer back from a restart hears from every agent within
/// this long, and a thousand agents retrying do not hammer it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One HTTP request's deadline. A report is small; an analyzer that needs longer is treated as down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shutdown path may spend flushing the spool and sending the last report (systemd's
/// default stop timeout is 90 s; this leaves most of it unused).
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(15);
/// A full compact report at least every this many reports (5 minutes at the default 10 s interval):
/// bounds how long a wrong base on either side could last, whatever the cause.
pub const FULL_EVERY: u32 = 30;
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
    /// 2xx with the analyzer's own answer for this seq: the analyzer has it.
    Accepted,
    /// 400, 413 or 422: the analyzer names a problem in this report itself; it will never take it.
    Refused { status: u16, message: String },
    /// Any other 4xx (401, 403, 404, …): a problem with the token, the URL or the analyzer's
    /// config, not with the report. It stays in the spool and is sent once that is fixed.
    Held { status: u16, message: String },
    /// Connection error, timeout, 5xx, 408, or a 2xx that is not the analyzer's answer: try again.
    Retry(String),
    /// 429: the analyzer is rate-limiting this node; try again after `after`.
    Busy { after: Duration, message: String },
}

/// The statuses that refuse a report for what is in it. Everything else keeps it.
fn refuses_the_report(status: u16) -> bool {
    matches!(status, 400 | 413 | 422)
}

/// The analyzer's answer to an accepted report.
#[derive(Debug, serde::Deserialize)]
struct Ack {
    seq: u64,
    #[allow(dead_code)]
    node: String,
}

/// Posts reports to one analyzer.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// Send the compact encoding; cleared for good when the analyzer answers 415 to it.
    compact: Arc<AtomicBool>,
    /// Send deltas; cleared for good when the analyzer answers 415 to one.
    deltas: Arc<AtomicBool>,
    /// The last acknowledged report, what the next delta patches.
    sender: Arc<std::sync::Mutex<faultline_proto::wire::delta::Sender>>,
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
        Ok(Client {
            http,
            endpoint: format!("{base}/api/v1/reports"),
            token,
            compact: Arc::new(AtomicBool::new(true)),
            deltas: Arc::new(AtomicBool::new(true)),
            sender: Arc::new(std::sync::Mutex::new(faultline_proto::wire::delta::Sender::new(FULL_EVERY))),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether reports go out in the compact encoding (until an analyzer answers 415 to it).
    pub fn compact(&self) -> bool {
        self.compact.load(Ordering::Relaxed)
    }

    /// Sends JSON only, as to an analyzer that does not take the compact encoding.
    pub fn json_only(self) -> Self {
        self.compact.store(false, Ordering::Relaxed);
        self
    }

    /// GETs `path` (`/api/v1/…`) from the same analyzer with the same token and reads its JSON answer
    /// (the probe pinglist). Errors are one line.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let base = self.endpoint.trim_end_matches("/api/v1/reports");
        let mut req = self.http.get(format!("{base}{path}"));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = read_capped(resp, 1 << 20).await?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// Posts report `seq` (its JSON body): compact when the analyzer takes it, else the JSON as is.
    /// Only the analyzer's JSON answer naming the same `seq` counts as delivered.
    pub async fn post(&self, seq: u64, body: Vec<u8>) -> Outcome {
        if self.compact() {
            // A body that is not a report we can read goes as JSON: the analyzer names what is wrong.
            if let Ok(report) = serde_json::from_slice::<faultline_proto::NodeReport>(&body) {
                let compact = faultline_proto::wire::encode(&report);
                if let Some(out) = self.post_delta(seq, &report.node, &compact).await {
                    return out;
                }
                let out = self.post_as(seq, compact.clone(), faultline_proto::wire::CONTENT_TYPE).await;
                self.after(seq, compact, false, &out);
                match out {
                    Outcome::Held { status: 415, message } => {
                        self.compact.store(false, Ordering::Relaxed);
                        tracing::info!(
                            endpoint = self.endpoint(),
                            answer = message,
                            "the analyzer does not take the compact encoding (415); sending JSON from now on"
                        );
                    }
                    other => return other,
                }
            }
        }
        self.post_as(seq, body, "application/json").await
    }

    /// Posts report `seq` as a delta when there is a base to patch. `None`: send it in full (no
    /// base, deltas off, or the analyzer asked for the full report).
    async fn post_delta(&self, seq: u64, node: &str, compact: &[u8]) -> Option<Outcome> {
        use faultline_proto::wire::delta::DELTA_CONTENT_TYPE;
        if !self.deltas.load(Ordering::Relaxed) {
            return None;
        }
        let body = self.sender().delta(node, seq, compact)?;
        let out = self.post_as(seq, body, DELTA_CONTENT_TYPE).await;
        match &out {
            Outcome::Held { status: 409, message } => {
                tracing::debug!(seq, answer = %message, "the analyzer holds no base for our delta; sending in full");
                self.sender().reset();
                None
            }
            Outcome::Held { status: 415, .. } => {
                self.deltas.store(false, Ordering::Relaxed);
                tracing::info!(
                    endpoint = self.endpoint(),
                    "the analyzer does not take deltas (415); sending full reports from now on"
                );
                self.sender().reset();
                None
            }
            _ => {
                self.after(seq, compact.to_vec(), true, &out);
                Some(out)
            }
        }
    }

    fn sender(&self) -> std::sync::MutexGuard<'_, faultline_proto::wire::delta::Sender> {
        self.sender.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps an acknowledged report as the next base; anything else sends the next one in full.
    fn after(&self, seq: u64, compact: Vec<u8>, was_delta: bool, out: &Outcome) {
        match out {
            Outcome::Accepted => self.sender().acknowledged(seq, compact, was_delta),
            _ => self.sender().reset(),
        }
    }

    async fn post_as(&self, seq: u64, body: Vec<u8>, content_type: &'static str) -> Outcome {
        let mut req = self.http.post(&self.endpoint).header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(error_chain(&e)),
        };
        let status = resp.status();
        if status.is_success() {
            let body = match read_capped(resp, MAX_ACK_BYTES).await {
                Ok(b) => b,
                Err(e) => return Outcome::Retry(format!("HTTP {status} but the answer could not be read: {e}")),
            };
            return match serde_json::from_slice::<Ack>(&body) {
                Ok(a) if a.seq == seq => Outcome::Accepted,
                Ok(a) => {
                    Outcome::Retry(format!("HTTP {status} but the answer acknowledges seq {} instead of {seq}", a.seq))
                }
                Err(_) => Outcome::Retry(format!(
                    "HTTP {status} but the answer is not the analyzer's ({:?}); is --analyzer the analyzer's base URL?",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                )),
            };
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut message = read_capped(resp, MAX_LOGGED_BODY * 8)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
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
        if refuses_the_report(code) {
            Outcome::Refused { status: code, message }
        } else if status.is_client_error() && code != 408 {
            Outcome::Held { status: code, message }
        } else {
            Outcome::Retry(format!("HTTP {code}: {message}"))
        }
    }
}

/// Most of an acknowledgement read: the analyzer's answer is under 200 bytes.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// Reads at most `max` bytes of a response body (a proxy's endless answer is cut there).
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= max {
            break;
        }
    }
    Ok(buf)
}

/// An error with every cause, outermost first: reqwest's own message ("error sending request")
/// says nothing; the TLS verdict or the OS error underneath says what is wrong.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

/// Retry delays after consecutive failures: doubling from `INITIAL_BACKOFF`, each with a random
/// jitter of up to its own length, the doubling capped at half of `MAX_BACKOFF` so that no delay
/// exceeds it. The jitter spreads agents that failed together (an analyzer restart) instead of having
/// them retry in lockstep. `backon`'s exponential backoff, used as a plain iterator of delays.
pub fn retry_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(INITIAL_BACKOFF)
        .with_max_delay(MAX_BACKOFF / 2)
        .without_max_times()
        .build()
}

/// Reports kept in memory when the spool cannot take them (disk full with nothing older to drop).
/// A full disk is rare and this only bridges it; past this the oldest are dropped and counted.
const MAX_UNSPOOLED: usize = 64;

/// The pusher task. Runs until the channel closes or the `last` report was handled.
///
/// Write-ahead: every report goes to the spool first and leaves it only when the analyzer
/// acknowledged it (or refused it for what is in it). A `kill -9` at any moment loses nothing that
/// reached this task: the next start replays the spool. Reports that arrive while a post is in
/// flight are spooled at once, not held in memory behind it.
pub struct Pusher {
    client: Client,
    spool: Spool,
    stats: Arc<AgentStats>,
    /// Reports the spool could not take, by seq (sent from memory, oldest first with the spool).
    unspooled: std::collections::BTreeMap<u64, Vec<u8>>,
    /// When set, the analyzer failed and no push is tried before this instant.
    retry_at: Option<Instant>,
    backoff: backon::ExponentialBackoff,
    /// The analyzer failed (not just rate-limited) since the last accepted push: log once each way.
    unreachable: bool,
    /// The analyzer holds reports back (auth or URL problem): the status, logged on each change.
    held: Option<u16>,
}

/// What sending the oldest report did.
enum Step {
    /// Sent, refused or held; go on.
    Done,
    /// The analyzer failed or is busy: wait for `retry_at`.
    Wait,
}

impl Pusher {
    pub fn new(client: Client, spool: Spool, stats: Arc<AgentStats>) -> Pusher {
        let p = Pusher {
            client,
            spool,
            stats,
            unspooled: Default::default(),
            retry_at: None,
            backoff: retry_delays(),
            unreachable: false,
            held: None,
        };
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
        AgentStats::set(&self.stats.spool_reports, (self.spool.len() + self.unspooled.len()) as u64);
        AgentStats::set(&self.stats.spool_bytes, self.spool.bytes());
    }

    fn pending(&self) -> bool {
        !self.spool.is_empty() || !self.unspooled.is_empty()
    }

    /// The oldest report waiting, from the spool or memory.
    fn oldest(&self) -> Option<u64> {
        match (self.spool.oldest(), self.unspooled.keys().next().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Write a report ahead of sending it. If the spool cannot take it, it waits in memory.
    fn store(&mut self, r: Outgoing) {
        match self.spool.push(r.seq, &r.body) {
            Ok(0) => {}
            Ok(n) => {
                AgentStats::add(&self.stats.dropped_reports, n);
                tracing::warn!(dropped = n, seq = r.seq, "spool full: dropped the oldest reports");
            }
            Err(e) => {
                tracing::warn!(seq = r.seq, error = %e, "cannot spool report; keeping it in memory until it is sent");
                self.unspooled.insert(r.seq, r.body);
                while self.unspooled.len() > MAX_UNSPOOLED {
                    self.unspooled.pop_first();
                    AgentStats::add(&self.stats.dropped_reports, 1);
                }
            }
        }
        self.publish_spool();
    }

    fn forget(&mut self, seq: u64) {
        if self.unspooled.remove(&seq).is_none()
            && let Err(e) = self.spool.remove(seq)
        {
            tracing::error!(seq, error = %e, "cannot remove a sent report from the spool; it may be sent twice");
        }
        self.publish_spool();
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
        self.retry_at = Some(Instant::now() + self.backoff.next().unwrap_or(MAX_BACKOFF));
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

    /// 401, 403, 404…: keep the report, say so loudly, try again later.
    fn held(&mut self, seq: u64, status: u16, message: &str) {
        AgentStats::add(&self.stats.push_errors, 1);
        AgentStats::set(&self.stats.push_held, 1);
        if self.held != Some(status) {
            self.held = Some(status);
            let hint = match status {
                401 => "the analyzer does not accept this agent's token (--token-file); rotated out of order?",
                403 => "this token may not push for this node, or the analyzer does not admit the node (limits)",
                404 => {
                    "nothing answers at this URL; give --analyzer as the base URL (http://host:9440), without a path"
                }
                _ => "the analyzer refuses every report for a reason outside the report",
            };
            tracing::error!(
                seq,
                status,
                endpoint = self.client.endpoint(),
                analyzer_message = message,
                spooled = self.spool.len(),
                "REPORTS HELD: the analyzer refuses them for a reason that is not in the reports; they stay spooled and are retried. {hint}"
            );
        }
        self.retry_at = Some(Instant::now() + self.backoff.next().unwrap_or(MAX_BACKOFF));
    }

    fn refused(&mut self, seq: u64, status: u16, message: &str) {
        AgentStats::add(&self.stats.push_errors, 1);
        AgentStats::add(&self.stats.refused, 1);
        tracing::error!(
            seq,
            status,
            analyzer_message = message,
            "analyzer refused the report for its content; dropping it"
        );
    }

    fn ok(&mut self) {
        AgentStats::add(&self.stats.pushed, 1);
        AgentStats::set(&self.stats.push_held, 0);
        if self.unreachable {
            tracing::info!(endpoint = self.client.endpoint(), "analyzer reachable again");
        }
        if self.held.take().is_some() {
            tracing::info!(endpoint = self.client.endpoint(), "analyzer takes reports again; held reports follow");
        }
        self.unreachable = false;
        self.retry_at = None;
        self.backoff = retry_delays();
    }

    /// Spool everything already waiting on the channel. Returns true when the last report was
    /// among them (or the channel closed).
    fn absorb(&mut self, rx: &mut mpsc::Receiver<Outgoing>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(r) => {
                    let last = r.last;
                    self.store(r);
                    if last {
                        return true;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Post the oldest waiting report. With `rx`, reports arriving meanwhile are spooled at once;
    /// `*last` is set when the last one (or the channel's end) came.
    async fn send_oldest(&mut self, mut rx: Option<&mut mpsc::Receiver<Outgoing>>, last: &mut bool) -> Step {
        let Some(seq) = self.oldest() else { return Step::Done };
        let body = match self.unspooled.get(&seq) {
            Some(b) => b.clone(),
            None => match self.spool.read(seq) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(seq, error = %e, "spooled report unreadable; dropping it");
                    AgentStats::add(&self.stats.dropped_reports, 1);
                    let _ = self.spool.remove(seq);
                    self.publish_spool();
                    return Step::Done;
                }
            },
        };
        let client = self.client.clone();
        let post = client.post(seq, body);
        tokio::pin!(post);
        let outcome = loop {
            let open = rx.is_some() && !*last;
            tokio::select! {
                o = &mut post => break o,
                m = async { rx.as_deref_mut().expect("guarded by `open`").recv().await }, if open => match m {
                    Some(r) => {
                        *last |= r.last;
                        self.store(r);
                    }
                    None => *last = true,
                },
            }
        };
        match outcome {
            Outcome::Accepted => {
                self.ok();
                self.forget(seq);
                Step::Done
            }
            Outcome::Refused { status, message } => {
                self.refused(seq, status, &message);
                self.forget(seq);
                Step::Done
            }
            Outcome::Held { status, message } => {
                self.held(seq, status, &message);
                Step::Wait
            }
            Outcome::Retry(why) => {
                self.failed(seq, &why);
                Step::Wait
            }
            Outcome::Busy { after, message } => {
                self.busy(seq, after, &message);
                Step::Wait
            }
        }
    }

    /// Shutdown: the last report is already spooled; replay in order while the analyzer answers,
    /// within the deadline. What is left stays spooled for the next start.
    async fn finish(&mut self) {
        let flush = async {
            let mut last = true;
            while self.pending() {
                if let Step::Wait = self.send_oldest(None, &mut last).await {
                    // One more try after a short wait only if the deadline allows; then give up.
                    let wait = self.retry_at.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default();
                    tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_FLUSH_DEADLINE, flush).await.is_err() {
            tracing::warn!(spooled = self.spool.len(), "shutdown flush timed out; the rest stays spooled");
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>) {
        let mut last = false;
        loop {
            last |= self.absorb(&mut rx);
            if last {
                return self.finish().await;
            }
            let due = self.retry_at.is_none_or(|t| t <= Instant::now());
            if self.pending() && due {
                self.send_oldest(Some(&mut rx), &mut last).await;
                continue;
            }
            let wake = self.retry_at.filter(|_| self.pending());
            tokio::select! {
                m = rx.recv() => match m {
                    Some(r) => {
                        last |= r.last;
                        self.store(r);
                    }
                    None => last = true,
                },
                _ = async { tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)).await }, if wake.is_some() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_and_stay_under_the_cap() {
        let a: Vec<Duration> = retry_delays().take(20).collect();
        let mut base = INITIAL_BACKOFF;
        for d in &a {
            assert!(*d >= base && *d < base * 2 + Duration::from_millis(1), "{d:?} outside [{base:?}, 2×{base:?})");
            assert!(*d <= MAX_BACKOFF, "{d:?} over the cap");
            base = (base * 2).min(MAX_BACKOFF / 2);
        }
        assert!(a[19] >= MAX_BACKOFF / 2, "the delay reaches the cap's range: {a:?}");
        // Two agents failing together do not retry together.
        let b: Vec<Duration> = retry_delays().take(20).collect();
        assert_ne!(a, b, "no jitter");
    }

    #[test]
    fn error_chains_name_the_innermost_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("invalid peer certificate: UnknownIssuer"));
        assert_eq!(error_chain(&e), "error sending request: invalid peer certificate: UnknownIssuer");
    }

    #[test]
    fn only_a_problem_in_the_report_drops_it() {
        for s in [400, 413, 422] {
            assert!(refuses_the_report(s), "{s}");
        }
        for s in [401, 403, 404, 405, 409, 410, 415] {
            assert!(!refuses_the_report(s), "{s}");
        }
    }

    /// A one-connection-per-request HTTP server; `answer(content type, body)` gives the status line
    /// and body. Returns its URL and the content types it saw.
    fn fake_analyzer(
        answer: impl Fn(&str, &[u8]) -> (&'static str, String) + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut ct, mut len) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-type:") {
                        ct = v.trim().to_string();
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                seen2.lock().unwrap().push(ct.clone());
                let (status, text) = answer(&ct, &body);
                let mut s = s;
                let _ =
                    write!(s, "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
            }
        });
        (url, seen)
    }

    /// Reports go as deltas against the last acknowledged one; a 409 (the analyzer holds no base)
    /// sends the same report in full at once, and deltas follow.
    #[tokio::test]
    async fn reports_go_as_deltas_and_a_409_sends_the_same_report_in_full() {
        use faultline_proto::wire::{self, delta};
        let bases = std::sync::Arc::new(delta::Bases::default());
        let refused_once = std::sync::Arc::new(AtomicBool::new(false));
        let (b, once) = (bases.clone(), refused_once.clone());
        let (url, seen) = fake_analyzer(move |ct, body| {
            let full = if ct == wire::CONTENT_TYPE {
                body.to_vec()
            } else if !once.swap(true, Ordering::Relaxed) {
                return ("409 Conflict", r#"{"error":"send the report in full"}"#.to_string());
            } else {
                match b.rebuild(body) {
                    Ok(f) => f,
                    Err(e) => return ("409 Conflict", serde_json::json!({"error": e.to_string()}).to_string()),
                }
            };
            let r = wire::decode(&full).unwrap();
            b.keep(&r.node, r.seq, full);
            ("200 OK", serde_json::json!({"seq": r.seq, "node": r.node}).to_string())
        });
        let c = Client::new(&url, None, None).unwrap();
        let mut r = faultline_proto::NodeReport::empty("n1");
        for seq in 1..=4 {
            r.seq = seq;
            r.timestamp_ms = seq as i64 * 10_000;
            assert_eq!(c.post(seq, serde_json::to_vec(&r).unwrap()).await, Outcome::Accepted, "seq {seq}");
        }
        let d = delta::DELTA_CONTENT_TYPE;
        let p = wire::CONTENT_TYPE;
        assert_eq!(seen.lock().unwrap().clone(), [p, d, p, d, d]);
    }

    /// A one-connection-per-request HTTP server that answers 415 to the compact encoding and
    /// acknowledges JSON; returns its URL and the content types it saw.
    fn json_only_analyzer() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        fake_analyzer(|ct, body| {
            if ct.starts_with("application/json") {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                ("200 OK", serde_json::json!({"seq": v["seq"], "node": v["node"]}).to_string())
            } else {
                ("415 Unsupported Media Type", r#"{"error":"reports must be sent as application/json"}"#.to_string())
            }
        })
    }

    #[tokio::test]
    async fn an_analyzer_that_answers_415_to_the_compact_encoding_gets_json_from_then_on() {
        let (url, seen) = json_only_analyzer();
        let c = Client::new(&url, None, None).unwrap();
        assert!(c.compact());
        let mut r = faultline_proto::NodeReport::empty("n1");
        for seq in [1, 2] {
            r.seq = seq;
            assert_eq!(c.post(seq, serde_json::to_vec(&r).unwrap()).await, Outcome::Accepted);
        }
        assert!(!c.compact());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["application/x-protobuf", "application/json", "application/json"]);
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
