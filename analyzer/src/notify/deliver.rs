//! The delivery worker: one task per receiver takes the oldest pending outbox row of that receiver,
//! sends it when its time has come, and records the outcome. A receiver's later row waits for its
//! earlier one, so each receiver sees events in the order they happened, even after an outage.
//!
//! Outcomes: 2xx is delivered; a connection error, a timeout, 408, 429 or 5xx is retried after a
//! capped, doubling delay (`Retry-After` is honoured up to the cap); any other answer (3xx, 4xx) is
//! permanent: the row is marked failed with the answer, logged and counted, and the next row goes.
//! A row still undelivered `give_up_after` its recording is marked failed too.
//!
//! Alertmanager receivers also re-post every open incident every `repost_interval` while their
//! queue is empty, so Alertmanager keeps the alerts firing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::Incident;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::alertmanager::{self, AlertContext, PostableAlert, Supersede};
use super::config::{Event, NotifySettings, Receiver, ReceiverKind, RetryPolicy};
use super::webhook;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store, StoreError};

/// What the delivery workers need from the analyzer, and nothing more: its clock, its metrics, the
/// store (the outbox), and the open incidents an Alertmanager re-post sends again. `AppState`
/// implements it; tests may give their own.
pub trait Host: Send + Sync + 'static {
    fn now_s(&self) -> f64;
    fn metrics(&self) -> &Metrics;
    /// Runs `f` on the store, under its lock.
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T;
    /// The open incidents `keep` accepts.
    fn open_incidents(&self, keep: &dyn Fn(&Incident) -> bool) -> Vec<Incident>;
}

/// How often an idle receiver task looks for new rows, and a waiting one checks whether its head is
/// due. The engine ticks once a second, so a quarter second adds little to change-to-delivery
/// latency; each look is one indexed SQLite query.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often `faultline_outbox_depth` is refreshed.
const DEPTH_INTERVAL: Duration = Duration::from_secs(1);

/// Sent and failed notifications are kept this long for inspection, then deleted. A week covers a
/// post-incident review; a busy cluster writes tens of MB of payloads a day, so they cannot stay.
pub const OUTBOX_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often old outbox rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Most bytes of a receiver's answer kept for the log and the row's `last_error`.
const MAX_ANSWER_BYTES: usize = 512;

/// Most alerts in one Alertmanager re-post request; more open incidents go in several requests.
const MAX_ALERTS_PER_POST: usize = 500;

/// How one delivery attempt ended; the `result` label of `faultline_notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered,
    /// A transient failure; the row will be retried.
    Retry,
    /// The receiver refused it (3xx/4xx other than 408 and 429): marked failed, not retried.
    Failed,
    /// Still undelivered `give_up_after` its recording: marked failed.
    Expired,
    /// An Alertmanager re-post of open incidents went through.
    Repost,
    /// An Alertmanager re-post failed (the next one comes a `repost_interval` later).
    RepostFailed,
}

impl DeliveryResult {
    pub const ALL: [DeliveryResult; 6] =
        [Self::Delivered, Self::Retry, Self::Failed, Self::Expired, Self::Repost, Self::RepostFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Repost => "repost",
            Self::RepostFailed => "repost_failed",
        }
    }
}

/// What one HTTP attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Try again later; at least `after` later when the receiver said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Permanent(String),
}

/// Classifies a receiver's answer.
pub fn classify(status: StatusCode, answer: &str, retry_after: Option<&str>) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error =
        if answer.trim().is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {}", answer.trim()) };
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let after = retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        Outcome::Retry { error, after }
    } else {
        Outcome::Permanent(error)
    }
}

/// When to try again after `failures` failed attempts, or `None` to give up: the doubling delay,
/// at least `retry_after`, never more than the cap.
pub fn next_attempt(
    policy: &RetryPolicy,
    failures: u32,
    retry_after: Option<Duration>,
    created_s: f64,
    now_s: f64,
) -> Option<f64> {
    if now_s - created_s >= policy.give_up_after.as_secs_f64() {
        return None;
    }
    let delay = policy.backoff(failures).max(retry_after.unwrap_or(Duration::ZERO)).min(policy.max);
    Some(now_s + delay.as_secs_f64())
}

/// The running delivery tasks; dropping this stops them (rows in flight stay pending and are sent
/// again next time: at least once).
#[derive(Debug, Default)]
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stops every task now.
    pub fn stop(&mut self) {
        for h in self.handles.drain(..) {
            h.abort();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the notification HTTP client: {0}")]
    Client(String),
}

/// Starts one delivery task per receiver and one that keeps `faultline_outbox_depth` current.
/// Must be called inside a tokio runtime.
pub fn spawn<H: Host>(state: Arc<H>, settings: Arc<NotifySettings>) -> Result<Workers, StartError> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // A receiver that redirects is misconfigured: following would turn a POST into a GET.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("faultline-analyzer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Client(error_chain(&e)))?;
    let mut handles = Vec::new();
    for r in &settings.receivers {
        for result in DeliveryResult::ALL {
            state.metrics().notification_series(&r.name, result.as_str());
        }
        state.metrics().outbox_depth(&r.name, 0);
        let task = ReceiverTask {
            state: state.clone(),
            settings: settings.clone(),
            receiver: r.clone(),
            client: client.clone(),
            supersede: Supersede::default(),
            last_repost_s: None,
        };
        info!(receiver = %r.name, kind = r.kind.as_str(), "notification receiver started");
        handles.push(tokio::spawn(task.run()));
    }
    if !settings.receivers.is_empty() {
        handles.push(tokio::spawn(depth_loop(state, settings)));
    }
    Ok(Workers { handles })
}

/// Runs `f` on the store off the async threads (SQLite waits for the disk).
async fn with_store<H: Host, T: Send + 'static>(
    state: &Arc<H>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || st.with_store(f)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

async fn depth_loop<H: Host>(state: Arc<H>, settings: Arc<NotifySettings>) {
    let mut warned_unknown = false;
    let mut last_prune_s: Option<f64> = None;
    loop {
        let now_s = state.now_s();
        if last_prune_s.is_none_or(|t| now_s - t >= PRUNE_EVERY.as_secs_f64()) {
            last_prune_s = Some(now_s);
            let before_s = now_s - OUTBOX_KEEP.as_secs_f64();
            match with_store(&state, move |s| s.outbox_prune(before_s)).await {
                Ok(0) => {}
                Ok(n) => info!(deleted = n, keep_days = OUTBOX_KEEP.as_secs() / 86_400, "old notifications pruned"),
                Err(e) => warn!(error = %e, "cannot prune old notifications"),
            }
        }
        match with_store(&state, |s| s.outbox_depth()).await {
            Ok(depth) => {
                let depth: BTreeMap<String, u64> = depth.into_iter().collect();
                for r in &settings.receivers {
                    state.metrics().outbox_depth(&r.name, depth.get(&r.name).copied().unwrap_or(0));
                }
                let unknown: Vec<(&String, &u64)> =
                    depth.iter().filter(|(name, _)| !settings.receivers.iter().any(|r| &r.name == *name)).collect();
                for (name, n) in &unknown {
                    state.metrics().outbox_depth(name, **n);
                }
                if !unknown.is_empty() && !warned_unknown {
                    warned_unknown = true;
                    warn!(
                        receivers = ?unknown,
                        "the outbox holds pending notifications for receivers that are not configured; \
                         they wait until a receiver of that name is configured again"
                    );
                }
            }
            Err(e) => warn!(error = %e, "cannot read the outbox depth"),
        }
        tokio::time::sleep(DEPTH_INTERVAL).await;
    }
}

struct ReceiverTask<H: Host> {
    state: Arc<H>,
    settings: Arc<NotifySettings>,
    receiver: Receiver,
    client: reqwest::Client,
    supersede: Supersede,
    last_repost_s: Option<f64>,
}

impl<H: Host> ReceiverTask<H> {
    async fn run(mut self) {
        loop {
            let name = self.receiver.name.clone();
            match with_store(&self.state, move |s| s.outbox_head(&name)).await {
                Err(e) => {
                    error!(receiver = %self.receiver.name, error = %e, "cannot read the outbox");
                }
                Ok(Some(row)) => {
                    let now_s = self.state.now_s();
                    if row.next_attempt_s <= now_s && self.deliver(row, now_s).await {
                        // Delivered: go straight on with the backlog.
                        continue;
                    }
                }
                Ok(None) => {
                    if let ReceiverKind::Alertmanager { .. } = self.receiver.kind {
                        self.maybe_repost().await;
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends one due row and records the outcome; true when it was delivered and recorded.
    async fn deliver(&mut self, row: OutboxRow, now_s: f64) -> bool {
        let name = self.receiver.name.clone();
        let (outcome, alerts) = self.send_row(&row, now_s).await;
        let id = row.id;
        match outcome {
            Outcome::Delivered => {
                let after_s = self.state.now_s();
                match with_store(&self.state, move |s| s.outbox_sent(id)).await {
                    Ok(()) => {
                        self.state.metrics().notification(&name, DeliveryResult::Delivered.as_str());
                        self.state.metrics().notification_latency((after_s - row.created_s).max(0.0));
                        if let Some(a) = alerts {
                            self.supersede.delivered(&a);
                        }
                        debug!(receiver = %name, incident = %row.incident_id, event = %row.event,
                               attempts = row.attempts + 1, key = %row.idempotency_key, "notification delivered");
                        true
                    }
                    Err(e) => {
                        // It went out; it will go out again (same idempotency key).
                        error!(receiver = %name, row = id, error = %e, "delivered but cannot mark it sent; it will be sent again");
                        false
                    }
                }
            }
            Outcome::Retry { error, after } => {
                let failures = row.attempts.saturating_add(1);
                let next = next_attempt(&self.settings.retry, failures, after, row.created_s, now_s);
                let (result, msg) = match next {
                    Some(_) => (DeliveryResult::Retry, error.clone()),
                    None => (
                        DeliveryResult::Expired,
                        format!(
                            "gave up after {failures} attempts over {}: {error}",
                            humantime::format_duration(self.settings.retry.give_up_after)
                        ),
                    ),
                };
                self.state.metrics().notification(&name, result.as_str());
                let stored = msg.clone();
                if let Err(e) = with_store(&self.state, move |s| s.outbox_failed(id, &stored, next)).await {
                    error!(receiver = %name, row = id, error = %e, "cannot record a failed delivery");
                }
                match next {
                    Some(at) => warn!(receiver = %name, incident = %row.incident_id, event = %row.event,
                                      attempts = failures, retry_in_s = at - now_s, error = %msg,
                                      "notification not delivered; will retry"),
                    None => error!(receiver = %name, incident = %row.incident_id, event = %row.event,
                                   attempts = failures, error = %msg, "notification dropped"),
                }
                false
            }
            Outcome::Permanent(error) => {
                self.state.metrics().notification(&name, DeliveryResult::Failed.as_str());
                let stored = error.clone();
                error!(receiver = %name, incident = %row.incident_id, event = %row.event, answer = %error,
                       "receiver refused the notification; marked failed, not retried");
                match with_store(&self.state, move |s| s.outbox_failed(id, &stored, None)).await {
                    // The queue moves on at once.
                    Ok(()) => true,
                    Err(e) => {
                        error!(receiver = %name, row = id, error = %e, "cannot record a failed delivery");
                        false
                    }
                }
            }
        }
    }

    /// The HTTP attempt for one row; for Alertmanager also the alerts posted (for `Supersede`).
    async fn send_row(&self, row: &OutboxRow, now_s: f64) -> (Outcome, Option<Vec<PostableAlert>>) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&row.idempotency_key) {
            headers.insert(webhook::IDEMPOTENCY_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&row.event) {
            headers.insert(webhook::EVENT_HEADER, v);
        }
        match &self.receiver.kind {
            ReceiverKind::Webhook { url, secret } => {
                let body = match webhook::body_at(&row.payload, now_s) {
                    Ok(b) => b,
                    Err(e) => return (Outcome::Permanent(e), None),
                };
                if let Some(secret) = secret
                    && let Ok(v) = HeaderValue::from_str(&webhook::signature(secret, &body))
                {
                    headers.insert(webhook::SIGNATURE_HEADER, v);
                }
                (self.post(url, body, headers).await, None)
            }
            ReceiverKind::Slack { url } => (self.post(url, row.payload.clone().into_bytes(), headers).await, None),
            ReceiverKind::Alertmanager { alerts_url, .. } => {
                let alerts: Vec<PostableAlert> = match serde_json::from_str(&row.payload) {
                    Ok(a) => a,
                    Err(e) => {
                        return (
                            Outcome::Permanent(format!("stored payload is not an Alertmanager alert list: {e}")),
                            None,
                        );
                    }
                };
                let all = self.supersede.expand(&alerts, now_s);
                let body = match serde_json::to_vec(&all) {
                    Ok(b) => b,
                    Err(e) => return (Outcome::Permanent(format!("cannot encode alerts: {e}")), None),
                };
                (self.post(alerts_url, body, headers).await, Some(all))
            }
        }
    }

    async fn post(&self, url: &Url, body: Vec<u8>, headers: HeaderMap) -> Outcome {
        let resp = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return Outcome::Retry { error: error_chain(&e), after: None },
        };
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER_BYTES {
            match resp.chunk().await {
                Ok(Some(c)) => answer.extend_from_slice(&c),
                Ok(None) | Err(_) => break,
            }
        }
        answer.truncate(MAX_ANSWER_BYTES);
        classify(status, &String::from_utf8_lossy(&answer), retry_after.as_deref())
    }

    /// Re-posts every open incident this Alertmanager wants, once per `repost_interval`.
    async fn maybe_repost(&mut self) {
        let ReceiverKind::Alertmanager { alerts_url, repost_interval, runbook_base, labels } = &self.receiver.kind
        else {
            return;
        };
        let now_s = self.state.now_s();
        if self.last_repost_s.is_some_and(|t| now_s - t < repost_interval.as_secs_f64()) {
            return;
        }
        let open: Vec<Incident> =
            self.state.open_incidents(&|i: &Incident| self.receiver.filter.matches(Event::Updated, i));
        if open.is_empty() {
            return;
        }
        // The interval runs from the last post made, successful or not; the first comes as soon as
        // something is open (after a restart: at once, refreshing what Alertmanager holds).
        self.last_repost_s = Some(now_s);
        let alerts: Vec<PostableAlert> = open
            .iter()
            .map(|inc| {
                let link = self.settings.generator_url(&inc.id);
                alertmanager::alert(
                    inc,
                    AlertContext {
                        link: &link,
                        runbook_base: runbook_base.as_deref(),
                        extra_labels: labels,
                        cluster: self.settings.cluster.as_deref(),
                    },
                )
            })
            .collect();
        let alerts_url = alerts_url.clone();
        for chunk in alerts.chunks(MAX_ALERTS_PER_POST) {
            let all = self.supersede.expand(chunk, now_s);
            let body = match serde_json::to_vec(&all) {
                Ok(b) => b,
                Err(e) => {
                    error!(receiver = %self.receiver.name, error = %e, "cannot encode alerts");
                    return;
                }
            };
            match self.post(&alerts_url, body, HeaderMap::new()).await {
                Outcome::Delivered => {
                    self.supersede.delivered(&all);
                    self.state.metrics().notification(&self.receiver.name, DeliveryResult::Repost.as_str());
                    debug!(receiver = %self.receiver.name, alerts = all.len(), "open incidents re-posted");
                }
                Outcome::Retry { error, .. } | Outcome::Permanent(error) => {
                    self.state.metrics().notification(&self.receiver.name, DeliveryResult::RepostFailed.as_str());
                    warn!(receiver = %self.receiver.name, alerts = all.len(), error = %error,
                          "re-posting open incidents failed; trying again next interval");
                    return;
                }
            }
        }
    }
}

/// An error with its sources, `outer: inner: innermost`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(StatusCode::OK, "", None), Outcome::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, "", None), Outcome::Delivered);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance", None),
            Outcome::Retry { error: "HTTP 503 Service Unavailable: down for maintenance".into(), after: None }
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, "", Some("30")),
            Outcome::Retry { error: "HTTP 429 Too Many Requests".into(), after: Some(Duration::from_secs(30)) }
        );
        assert!(matches!(classify(StatusCode::REQUEST_TIMEOUT, "", Some("soon")), Outcome::Retry { after: None, .. }));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "invalid_payload\n", None),
            Outcome::Permanent("HTTP 400 Bad Request: invalid_payload".into())
        );
        assert!(matches!(classify(StatusCode::NOT_FOUND, "", None), Outcome::Permanent(_)));
        assert!(matches!(classify(StatusCode::MOVED_PERMANENTLY, "", None), Outcome::Permanent(_)));
    }

    #[test]
    fn retries_back_off_honour_retry_after_up_to_the_cap_and_give_up_late() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
        };
        assert_eq!(next_attempt(&p, 1, None, 100.0, 100.0), Some(101.0));
        assert_eq!(next_attempt(&p, 3, None, 100.0, 110.0), Some(114.0));
        assert_eq!(next_attempt(&p, 30, None, 100.0, 110.0), Some(410.0));
        assert_eq!(next_attempt(&p, 1, Some(Duration::from_secs(20)), 100.0, 110.0), Some(130.0));
        assert_eq!(next_attempt(&p, 1, Some(Duration::from_secs(86_400)), 100.0, 110.0), Some(410.0));
        assert_eq!(next_attempt(&p, 5, None, 100.0, 3700.0), None);
    }

    #[test]
    fn error_chains_name_the_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
    }
}
