//! The `[notify]` section of the analyzer's config file: where notifications go (`[[notify.webhook]]`,
//! `[[notify.alertmanager]]`, `[[notify.slack]]`), which incidents each receiver wants, and how
//! delivery retries. `NotifyConfig::build` checks everything and reads secret files before any task
//! starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use faultline_proto::{FaultClass, Incident, Severity};
use reqwest::Url;
use serde::Deserialize;

/// First retry delay after a failed delivery. One second rides out a receiver restart or a dropped
/// connection without hammering a receiver that is really down.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);

/// Longest delay between retries (the doubling stops here). Five minutes: a receiver that comes
/// back after an outage gets its backlog within five minutes, and a dead one sees 12 tries an hour.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);

/// A notification still undelivered this long after its incident change is dropped (marked failed).
/// A day: an on-call person paged a day late learns nothing, and the incident API still has it.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long one delivery request may take, connect to last byte. Webhook receivers are expected to
/// answer at once and work asynchronously; ten seconds also covers a slow TLS handshake.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often open incidents are re-posted to Alertmanager. Alertmanager resolves an alert nobody
/// re-posts within its `resolve_timeout` (5 m by default); one minute leaves four misses of margin.
pub const DEFAULT_REPOST_INTERVAL: Duration = Duration::from_secs(60);

/// Longest receiver name: names appear in metric labels, logs and idempotency keys.
pub const MAX_NAME_LEN: usize = 64;

/// An incident event a receiver can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Opened,
    Updated,
    Resolved,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Opened, Event::Updated, Event::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Updated => "updated",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[notify]` table. With no receivers nothing is sent and nothing is queued.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Base URL people and tools use to reach this analyzer (e.g. `https://faultline.example.org`);
    /// incident links in notifications are `<public_url>/api/v1/incidents/<id>`. Default:
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// The cluster's name: the `cluster` label of every Alertmanager alert and of the `labels` in
    /// webhook payloads (the same label Prometheus adds through `external_labels`, so that Thanos or
    /// Mimir users with many clusters tell them apart). Default: no `cluster` label.
    pub cluster: Option<String>,
    /// Grafana's base URL (e.g. `https://grafana.example.org`). When set, an alert's `generatorURL`
    /// opens the faultline incidents dashboard (uid `faultline-incidents`) with the incident
    /// selected; otherwise it is the incident's API link. Default: unset.
    pub grafana_url: Option<String>,
    /// First retry delay after a failed delivery; it doubles on each further failure.
    #[serde(deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    /// Cap on the retry delay.
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Stop retrying a notification this long after it was queued (it is marked failed).
    #[serde(deserialize_with = "de_duration")]
    pub give_up_after: Duration,
    /// Time limit for one delivery request.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Generic JSON webhooks, HMAC-signed when a secret is set.
    pub webhook: Vec<WebhookConfig>,
    /// Alertmanager instances (API v2).
    pub alertmanager: Vec<AlertmanagerConfig>,
    /// Slack-compatible incoming webhooks.
    pub slack: Vec<SlackConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            cluster: None,
            grafana_url: None,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            timeout: DEFAULT_TIMEOUT,
            webhook: Vec::new(),
            alertmanager: Vec::new(),
            slack: Vec::new(),
        }
    }
}

/// One `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique receiver name (letters, digits, `-`, `_`, `.`); used in metrics, logs and the outbox.
    pub name: String,
    /// Where to POST, `http://` or `https://`.
    pub url: String,
    /// HMAC-SHA256 key: every request carries `X-Faultline-Signature: sha256=<hex>` of its body.
    /// Prefer `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// File whose content (trimmed) is the HMAC key.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only incidents at least this severe: `info`, `warning` or `critical`.
    #[serde(default)]
    pub min_severity: Severity,
    /// Only these fault classes (e.g. `["gpu_lost", "nic_down"]`); empty means every class.
    #[serde(default)]
    pub classes: Vec<FaultClass>,
    /// Which events to send; default all of `opened`, `updated`, `resolved`.
    #[serde(default = "all_events")]
    pub events: Vec<Event>,
}

/// One `[[notify.alertmanager]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Unique receiver name.
    pub name: String,
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// Only incidents at least this severe.
    #[serde(default)]
    pub min_severity: Severity,
    /// Only these fault classes; empty means every class.
    #[serde(default)]
    pub classes: Vec<FaultClass>,
    /// How often open incidents are re-posted; keep it well under Alertmanager's `resolve_timeout`.
    #[serde(default = "default_repost", deserialize_with = "de_duration")]
    pub repost_interval: Duration,
    /// Runbook base: the `runbook_url` annotation is this with the fault class appended (or put
    /// `{class}` where it belongs). No annotation when unset.
    #[serde(default)]
    pub runbook_base: Option<String>,
    /// Extra labels on every alert, e.g. `{ cluster = "train-a" }`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `[[notify.slack]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Unique receiver name.
    pub name: String,
    /// The incoming-webhook URL (keep the config file private: the URL is the credential).
    pub url: String,
    /// Only incidents at least this severe.
    #[serde(default)]
    pub min_severity: Severity,
    /// Only these fault classes; empty means every class.
    #[serde(default)]
    pub classes: Vec<FaultClass>,
    /// Which events to post; default `opened` and `resolved` (updates are chatty in a channel).
    #[serde(default = "opened_resolved")]
    pub events: Vec<Event>,
}

fn all_events() -> Vec<Event> {
    Event::ALL.to_vec()
}

fn opened_resolved() -> Vec<Event> {
    vec![Event::Opened, Event::Resolved]
}

fn default_repost() -> Duration {
    DEFAULT_REPOST_INTERVAL
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 1s or 5m: {e}")))
}

/// Why the `[notify]` section cannot be used; each message names the receiver and the setting.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("notify.{kind}[{index}]: name {name:?} {message}")]
    Name { kind: &'static str, index: usize, name: String, message: &'static str },
    #[error("notify: receiver name {0:?} is used twice (names must be unique across webhook, alertmanager and slack)")]
    DuplicateName(String),
    #[error("notify.{kind} {name:?}: url {url:?} {message}")]
    Url { kind: &'static str, name: String, url: String, message: String },
    #[error("notify.public_url {url:?}: {message}")]
    PublicUrl { url: String, message: String },
    #[error("notify.webhook {name:?}: give secret or secret_file, not both")]
    SecretTwice { name: String },
    #[error("notify.webhook {name:?}: cannot read secret_file {path}: {source}")]
    ReadSecret { name: String, path: PathBuf, source: std::io::Error },
    #[error("notify.webhook {name:?}: the secret is empty")]
    EmptySecret { name: String },
    #[error("notify.{kind} {name:?}: events is empty, so nothing would ever be sent")]
    NoEvents { kind: &'static str, name: String },
    #[error("notify.alertmanager {name:?}: label {label:?} {message}")]
    Label { name: String, label: String, message: &'static str },
    #[error("notify.{field} = {value}: {message}")]
    Value { field: &'static str, value: String, message: &'static str },
}

/// An HMAC key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which incidents a receiver wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub min_severity: Severity,
    /// Empty: every class.
    pub classes: BTreeSet<FaultClass>,
    pub events: BTreeSet<Event>,
}

impl Filter {
    /// Everything: every severity, class and event.
    pub fn all() -> Self {
        Self { min_severity: Severity::Info, classes: BTreeSet::new(), events: Event::ALL.into_iter().collect() }
    }

    /// Whether this receiver wants `event` about `inc` (judged on the incident as it is now).
    pub fn matches(&self, event: Event, inc: &Incident) -> bool {
        self.events.contains(&event)
            && super::notify_severity(inc) >= self.min_severity
            && (self.classes.is_empty() || self.classes.contains(&inc.class))
    }
}

/// What kind of receiver, with what it needs to send.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Webhook {
        url: Url,
        secret: Option<Secret>,
    },
    Alertmanager {
        alerts_url: Url,
        repost_interval: Duration,
        runbook_base: Option<String>,
        labels: BTreeMap<String, String>,
    },
    Slack {
        url: Url,
    },
}

impl ReceiverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Alertmanager { .. } => "alertmanager",
            Self::Slack { .. } => "slack",
        }
    }
}

/// One checked receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub filter: Filter,
    pub kind: ReceiverKind,
}

/// Retry timing for failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl RetryPolicy {
    /// Delay before the next try after `failures` failed attempts (1 for the first failure):
    /// `initial · 2^(failures-1)`, capped at `max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let factor = 1u32.checked_shl(exp).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial: DEFAULT_RETRY_INITIAL, max: DEFAULT_RETRY_MAX, give_up_after: DEFAULT_GIVE_UP_AFTER }
    }
}

/// The `[notify]` section, checked and loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// No trailing slash.
    pub public_url: String,
    /// True when `public_url` was not configured and comes from the listen address.
    pub public_url_is_default: bool,
    /// `[notify] cluster`, empty treated as unset.
    pub cluster: Option<String>,
    /// `[notify] grafana_url`, checked, no trailing slash.
    pub grafana_url: Option<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub receivers: Vec<Receiver>,
}

impl NotifySettings {
    /// No receivers: nothing to plan or send.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// With no configured `public_url`, links use the address actually bound (the port chosen for
    /// `:0`); an unspecified address (`0.0.0.0`) stays as it is, which is why `public_url` should
    /// be set on a real deployment.
    pub fn use_bound_address(&mut self, addr: SocketAddr) {
        if self.public_url_is_default {
            self.public_url = format!("http://{addr}");
        }
    }

    /// `<public_url>/api/v1/incidents/<id>`.
    pub fn incident_link(&self, id: &str) -> String {
        format!("{}/api/v1/incidents/{id}", self.public_url)
    }

    /// Where an alert's `generatorURL` points: the Grafana incidents dashboard with this incident
    /// selected when `grafana_url` is set, else `incident_link`.
    pub fn generator_url(&self, id: &str) -> String {
        match &self.grafana_url {
            Some(g) => format!("{g}/d/faultline-incidents/faultline-incidents?var-incident={id}"),
            None => self.incident_link(id),
        }
    }
}

impl NotifyConfig {
    /// Checks every receiver, reads secret files, and resolves the public URL (default
    /// `http://<listen>`).
    pub fn build(&self, listen: SocketAddr) -> Result<NotifySettings, NotifyConfigError> {
        let public_url = match &self.public_url {
            Some(u) => {
                let parsed = http_url(u).map_err(|message| NotifyConfigError::PublicUrl { url: u.clone(), message })?;
                parsed.as_str().trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };
        let grafana_url = match self.grafana_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(u) => Some(
                http_url(u)
                    .map_err(|message| NotifyConfigError::PublicUrl { url: u.to_string(), message })?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
            None => None,
        };
        for (field, d) in
            [("retry_initial", self.retry_initial), ("retry_max", self.retry_max), ("timeout", self.timeout)]
        {
            if d.is_zero() {
                return Err(NotifyConfigError::Value {
                    field,
                    value: "0s".into(),
                    message: "must be longer than zero",
                });
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(NotifyConfigError::Value {
                field: "retry_max",
                value: humantime::format_duration(self.retry_max).to_string(),
                message: "must not be shorter than retry_initial",
            });
        }
        if self.give_up_after < self.retry_max {
            return Err(NotifyConfigError::Value {
                field: "give_up_after",
                value: humantime::format_duration(self.give_up_after).to_string(),
                message: "must not be shorter than retry_max",
            });
        }
        let mut names = BTreeSet::new();
        let mut receivers = Vec::new();
        let mut check_name = |kind: &'static str, index: usize, name: &str| -> Result<(), NotifyConfigError> {
            let bad = |message| NotifyConfigError::Name { kind, index, name: name.to_string(), message };
            if name.is_empty() {
                return Err(bad("is empty; every receiver needs a name"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(bad("is longer than 64 characters"));
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(bad("may hold only letters, digits, '-', '_' and '.'"));
            }
            if !names.insert(name.to_string()) {
                return Err(NotifyConfigError::DuplicateName(name.to_string()));
            }
            Ok(())
        };
        for (i, w) in self.webhook.iter().enumerate() {
            check_name("webhook", i, &w.name)?;
            let url = receiver_url("webhook", &w.name, &w.url)?;
            let secret = match (&w.secret, &w.secret_file) {
                (Some(_), Some(_)) => return Err(NotifyConfigError::SecretTwice { name: w.name.clone() }),
                (Some(s), None) => Some(s.trim().to_string()),
                (None, Some(p)) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|source| NotifyConfigError::ReadSecret {
                            name: w.name.clone(),
                            path: p.clone(),
                            source,
                        })?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
            if secret.as_deref() == Some("") {
                return Err(NotifyConfigError::EmptySecret { name: w.name.clone() });
            }
            receivers.push(Receiver {
                name: w.name.clone(),
                filter: filter("webhook", &w.name, w.min_severity, &w.classes, &w.events)?,
                kind: ReceiverKind::Webhook { url, secret: secret.map(Secret::new) },
            });
        }
        for (i, a) in self.alertmanager.iter().enumerate() {
            check_name("alertmanager", i, &a.name)?;
            let base = receiver_url("alertmanager", &a.name, &a.url)?;
            let alerts_url =
                Url::parse(&format!("{}/api/v2/alerts", base.as_str().trim_end_matches('/'))).map_err(|e| {
                    NotifyConfigError::Url {
                        kind: "alertmanager",
                        name: a.name.clone(),
                        url: a.url.clone(),
                        message: e.to_string(),
                    }
                })?;
            if a.repost_interval.is_zero() {
                return Err(NotifyConfigError::Value {
                    field: "alertmanager.repost_interval",
                    value: "0s".into(),
                    message: "must be longer than zero",
                });
            }
            for (k, v) in &a.labels {
                let bad = |message| NotifyConfigError::Label { name: a.name.clone(), label: k.clone(), message };
                if !valid_label_name(k) {
                    return Err(bad("is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
                }
                if crate::notify::alertmanager::OWN_LABELS.contains(&k.as_str()) {
                    return Err(bad("is set by faultline itself and cannot be overridden"));
                }
                if v.is_empty() {
                    return Err(bad("has an empty value"));
                }
            }
            receivers.push(Receiver {
                name: a.name.clone(),
                filter: filter("alertmanager", &a.name, a.min_severity, &a.classes, &Event::ALL)?,
                kind: ReceiverKind::Alertmanager {
                    alerts_url,
                    repost_interval: a.repost_interval,
                    runbook_base: a.runbook_base.clone().filter(|s| !s.trim().is_empty()),
                    labels: a.labels.clone(),
                },
            });
        }
        for (i, s) in self.slack.iter().enumerate() {
            check_name("slack", i, &s.name)?;
            let url = receiver_url("slack", &s.name, &s.url)?;
            receivers.push(Receiver {
                name: s.name.clone(),
                filter: filter("slack", &s.name, s.min_severity, &s.classes, &s.events)?,
                kind: ReceiverKind::Slack { url },
            });
        }
        Ok(NotifySettings {
            public_url,
            public_url_is_default: self.public_url.is_none(),
            cluster: self.cluster.clone().filter(|c| !c.trim().is_empty()),
            grafana_url,
            retry: RetryPolicy { initial: self.retry_initial, max: self.retry_max, give_up_after: self.give_up_after },
            timeout: self.timeout,
            receivers,
        })
    }
}

fn filter(
    kind: &'static str,
    name: &str,
    min_severity: Severity,
    classes: &[FaultClass],
    events: &[Event],
) -> Result<Filter, NotifyConfigError> {
    if events.is_empty() {
        return Err(NotifyConfigError::NoEvents { kind, name: name.to_string() });
    }
    Ok(Filter { min_severity, classes: classes.iter().copied().collect(), events: events.iter().copied().collect() })
}

fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("has scheme {:?}; only http and https are supported", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

fn receiver_url(kind: &'static str, name: &str, url: &str) -> Result<Url, NotifyConfigError> {
    http_url(url).map_err(|message| NotifyConfigError::Url {
        kind,
        name: name.to_string(),
        url: url.to_string(),
        message,
    })
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:9440".parse().unwrap()
    }

    fn parse(text: &str) -> NotifyConfig {
        #[derive(Deserialize)]
        struct Wrap {
            notify: NotifyConfig,
        }
        toml::from_str::<Wrap>(text).unwrap().notify
    }

    #[test]
    fn every_receiver_kind_parses_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "  k3y\n").unwrap();
        let c = parse(&format!(
            r#"
            [notify]
            public_url = "https://faultline.example.org/"
            retry_initial = "2s"
            [[notify.webhook]]
            name = "oncall"
            url = "https://hooks.example.org/x"
            secret_file = "{}"
            min_severity = "warning"
            classes = ["gpu_lost", "nic_down"]
            [[notify.alertmanager]]
            name = "am"
            url = "http://am.example.org:9093/"
            runbook_base = "https://runbooks.example.org/faultline#"
            labels = {{ cluster = "train-a" }}
            [[notify.slack]]
            name = "chat"
            url = "https://chat.example.org/hook/T1"
            "#,
            secret.display()
        ));
        let s = c.build(listen()).unwrap();
        assert_eq!(s.public_url, "https://faultline.example.org");
        assert_eq!(s.incident_link("inc-000001"), "https://faultline.example.org/api/v1/incidents/inc-000001");
        assert_eq!(s.retry, RetryPolicy { initial: Duration::from_secs(2), ..RetryPolicy::default() });
        assert_eq!(s.receivers.len(), 3);
        let w = &s.receivers[0];
        assert_eq!(w.filter.min_severity, Severity::Warning);
        assert_eq!(w.filter.events.len(), 3);
        assert!(matches!(&w.kind, ReceiverKind::Webhook { secret: Some(k), .. } if k.bytes() == b"k3y"));
        assert!(!format!("{w:?}").contains("k3y"), "secrets never show in Debug");
        match &s.receivers[1].kind {
            ReceiverKind::Alertmanager { alerts_url, repost_interval, labels, .. } => {
                assert_eq!(alerts_url.as_str(), "http://am.example.org:9093/api/v2/alerts");
                assert_eq!(*repost_interval, DEFAULT_REPOST_INTERVAL);
                assert_eq!(labels["cluster"], "train-a");
            }
            k => panic!("{k:?}"),
        }
        let slack = &s.receivers[2];
        assert_eq!(slack.filter.events, [Event::Opened, Event::Resolved].into_iter().collect());
    }

    #[test]
    fn no_section_means_no_receivers_and_a_link_on_the_listen_address() {
        let s = NotifyConfig::default().build(listen()).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.incident_link("inc-000002"), "http://127.0.0.1:9440/api/v1/incidents/inc-000002");
        let mut s = NotifyConfig::default().build("127.0.0.1:0".parse().unwrap()).unwrap();
        s.use_bound_address("127.0.0.1:43210".parse().unwrap());
        assert_eq!(s.public_url, "http://127.0.0.1:43210");
        let mut set = NotifyConfig { public_url: Some("https://fl.example.org".into()), ..NotifyConfig::default() }
            .build(listen())
            .unwrap();
        set.use_bound_address("127.0.0.1:43210".parse().unwrap());
        assert_eq!(set.public_url, "https://fl.example.org");
    }

    #[test]
    fn generator_url_opens_grafana_when_configured() {
        let s = NotifyConfig::default().build(listen()).unwrap();
        assert_eq!(s.generator_url("inc-000003"), s.incident_link("inc-000003"));
        assert_eq!(s.cluster, None);
        let s = NotifyConfig {
            grafana_url: Some("https://grafana.example.org/".into()),
            cluster: Some("train-a".into()),
            ..NotifyConfig::default()
        }
        .build(listen())
        .unwrap();
        assert_eq!(
            s.generator_url("inc-000003"),
            "https://grafana.example.org/d/faultline-incidents/faultline-incidents?var-incident=inc-000003"
        );
        assert_eq!(s.cluster.as_deref(), Some("train-a"));
        let bad = NotifyConfig { grafana_url: Some("grafana".into()), ..NotifyConfig::default() }.build(listen());
        assert!(bad.is_err());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| {
            #[derive(Deserialize, Debug)]
            #[allow(dead_code)]
            struct Wrap {
                notify: NotifyConfig,
            }
            match toml::from_str::<Wrap>(text) {
                Ok(w) => w.notify.build(listen()).unwrap_err().to_string(),
                Err(e) => e.to_string(),
            }
        };
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"ftp://x\"");
        assert!(e.contains("\"a\"") && e.contains("ftp"), "{e}");
        let e = err(
            "[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\n[[notify.slack]]\nname = \"a\"\nurl = \"http://y\"",
        );
        assert!(e.contains("used twice"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a b\"\nurl = \"http://x\"");
        assert!(e.contains("a b"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nclasses = [\"gpu_on_fire\"]");
        assert!(e.contains("gpu_on_fire"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nmin_severity = \"loud\"");
        assert!(e.contains("loud"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nsecert = \"k\"");
        assert!(e.contains("secert"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nsecret = \" \"");
        assert!(e.contains("empty"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nsecret_file = \"/nonexistent/s\"");
        assert!(e.contains("/nonexistent/s"), "{e}");
        let e = err("[[notify.webhook]]\nname = \"a\"\nurl = \"http://x\"\nevents = []");
        assert!(e.contains("events is empty"), "{e}");
        let e = err("[[notify.alertmanager]]\nname = \"am\"\nurl = \"http://x\"\nlabels = { severity = \"low\" }");
        assert!(e.contains("severity") && e.contains("faultline itself"), "{e}");
        let e = err("[[notify.alertmanager]]\nname = \"am\"\nurl = \"http://x\"\nlabels = { \"1x\" = \"v\" }");
        assert!(e.contains("1x"), "{e}");
        let e = err("[notify]\nretry_initial = \"10s\"\nretry_max = \"1s\"");
        assert!(e.contains("retry_max"), "{e}");
        let e = err("[notify]\ntimeout = \"soon\"");
        assert!(e.contains("soon"), "{e}");
        let e = err("[notify]\npublic_url = \"not a url\"");
        assert!(e.contains("public_url"), "{e}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
        };
        let secs: Vec<u64> = (1..=11).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(p.backoff(0), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(300));
        let fast = RetryPolicy { initial: Duration::from_millis(100), max: Duration::from_millis(250), ..p };
        assert_eq!(fast.backoff(2), Duration::from_millis(200));
        assert_eq!(fast.backoff(3), Duration::from_millis(250));
    }

    #[test]
    fn filters_by_severity_class_and_event() {
        use faultline_proto::{Action, ComponentId, IncidentStatus};
        let inc = Incident {
            id: "inc-000001".into(),
            root: ComponentId::gpu("n1", 0),
            class: FaultClass::GpuThermalThrottle,
            severity: Severity::Warning,
            confidence: 0.8,
            status: IncidentStatus::Open,
            summary: String::new(),
            onset_s: 0.0,
            opened_s: 0.0,
            opened_at: String::new(),
            updated_s: 0.0,
            resolved_s: None,
            affected_jobs: vec![],
            paths: vec![],
            evidence: vec![],
            timeline: vec![],
            action: Action::ReplacePart,
        };
        assert!(Filter::all().matches(Event::Updated, &inc));
        let crit = Filter { min_severity: Severity::Critical, ..Filter::all() };
        assert!(!crit.matches(Event::Opened, &inc));
        let warn = Filter { min_severity: Severity::Warning, ..Filter::all() };
        assert!(warn.matches(Event::Opened, &inc));
        let lost_only = Filter { classes: [FaultClass::GpuLost].into_iter().collect(), ..Filter::all() };
        assert!(!lost_only.matches(Event::Opened, &inc));
        let thermal = Filter { classes: [FaultClass::GpuThermalThrottle].into_iter().collect(), ..Filter::all() };
        assert!(thermal.matches(Event::Opened, &inc));
        let opened_only = Filter { events: [Event::Opened].into_iter().collect(), ..Filter::all() };
        assert!(!opened_only.matches(Event::Resolved, &inc));
        // An incident no person needs to act on is informational: it reaches only `info` receivers.
        let oom = Incident {
            class: FaultClass::HostOom,
            severity: Severity::Critical,
            action: Action::RestartJob,
            ..inc.clone()
        };
        assert!(Filter::all().matches(Event::Opened, &oom));
        assert!(!crit.matches(Event::Opened, &oom));
        assert!(!warn.matches(Event::Opened, &oom));
    }
}
