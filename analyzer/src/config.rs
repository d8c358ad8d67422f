//! The analyzer's configuration: a TOML file (`--config`) with a doc and a default for every field,
//! overridden by command-line flags, checked as a whole by `Config::build` before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_proto::{TopologyFile, report::limits};
use serde::Deserialize;

use crate::auth::{Auth, DuplicateToken, Token, TokenError};
use crate::engine::EngineConfig;

/// Default listen address: loopback, so a fresh install exposes nothing until told to.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9440";

/// Default database file, relative to the working directory.
pub const DEFAULT_DB: &str = "faultline.db";

/// How often the engine's detectors and localizer run. One second matches the resolution of the
/// timestamps people read in incidents, and costs little when nothing changes.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// At most this many `faultline_component_healthy` series per scrape. Unhealthy components come
/// first; the cap keeps one scrape of a very large cluster within what a Prometheus target
/// normally carries (a few tens of thousands of series).
pub const DEFAULT_METRICS_MAX_COMPONENTS: usize = 20_000;

/// Most incidents one `GET /api/v1/incidents` returns unless the client asks for fewer.
pub const DEFAULT_LIST_LIMIT: usize = 1_000;

/// Reports per second one node may send on average. An agent sends one report per interval (10 s by
/// default, 100 ms at its fastest) plus an urgent one at most once a second; twenty a second leaves
/// room for a spool replay while a runaway or spoofed sender cannot monopolise the engine lock.
pub const DEFAULT_NODE_RATE_PER_S: f64 = 20.0;

/// Reports one node may send in a burst above its rate: two seconds' worth, so a replay starts at
/// full speed and the bucket then paces it.
pub const DEFAULT_NODE_RATE_BURST: u32 = 40;

/// A token as written in the config file or on the command line; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// Access tokens by kind (`[auth]`); see `auth.rs`. The shared `token` stays good for everything.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens agents push reports with, for any node. They cannot read the API.
    pub ingest_tokens: Vec<String>,
    /// Files each holding one ingest token.
    pub ingest_token_files: Vec<PathBuf>,
    /// Tokens for readers (the CLI, Grafana): the read API only, no pushing, no actions.
    pub read_tokens: Vec<String>,
    /// Files each holding one read token.
    pub read_token_files: Vec<PathBuf>,
    /// Per-node tokens, `"node-0001" = "..."`: that node's reports only; a report for another node
    /// is refused (403). They cannot read the API.
    pub node_tokens: BTreeMap<String, String>,
    /// Per-node token files, `"node-0001" = "/etc/faultline/tokens/node-0001"`.
    pub node_token_files: BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token values: only how many there are and where the files are.
        f.debug_struct("AuthConfig")
            .field("ingest_tokens", &self.ingest_tokens.len())
            .field("ingest_token_files", &self.ingest_token_files)
            .field("read_tokens", &self.read_tokens.len())
            .field("read_token_files", &self.read_token_files)
            .field("node_tokens", &self.node_tokens.keys().collect::<Vec<_>>())
            .field("node_token_files", &self.node_token_files)
            .finish()
    }
}

impl AuthConfig {
    /// Reads the token files and checks every token and node name.
    fn build(&self, shared: Option<Token>) -> Result<Auth, ConfigError> {
        let inline = |t: &String| Token::new(t).map_err(|error| ConfigError::BadToken { path: None, error });
        let ingest = self
            .ingest_tokens
            .iter()
            .map(inline)
            .chain(self.ingest_token_files.iter().map(|p| read_token(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let read = self
            .read_tokens
            .iter()
            .map(inline)
            .chain(self.read_token_files.iter().map(|p| read_token(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut nodes = BTreeMap::new();
        for (node, t) in &self.node_tokens {
            nodes.insert(node.clone(), inline(t)?);
        }
        for (node, p) in &self.node_token_files {
            if nodes.insert(node.clone(), read_token(p)?).is_some() {
                return Err(ConfigError::AuthNode { node: node.clone(), message: "has both a token and a token file" });
            }
        }
        for node in nodes.keys() {
            if !faultline_proto::id::valid_name(node) {
                return Err(ConfigError::AuthNode {
                    node: node.clone(),
                    message: "is not a node name (1-128 bytes, no '/', spaces or control characters)",
                });
            }
        }
        Ok(Auth::new(shared, ingest, read, nodes)?)
    }
}

fn read_token(p: &Path) -> Result<Token, ConfigError> {
    let raw = crate::limits::read_capped(p, crate::limits::MAX_TOKEN_FILE_BYTES)
        .map_err(|error| ConfigError::ReadToken { path: p.to_path_buf(), error })?;
    Token::new(&raw).map_err(|error| ConfigError::BadToken { path: Some(p.to_path_buf()), error })
}

/// The configuration file. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address for the HTTP API, `/metrics` and `/healthz`, e.g. `0.0.0.0:9440`.
    pub listen: String,
    /// SQLite database holding incidents, their timelines and the notification outbox.
    pub db: PathBuf,
    /// Bearer token agents and readers must send. Prefer `token_file` so it stays out of config
    /// listings. With no token at all the API is open (a loud warning says so).
    pub token: Option<Secret>,
    /// File whose content (trimmed) is the bearer token.
    pub token_file: Option<PathBuf>,
    /// Topology file (TOML): switches, racks, rails and links. Without one, NICs have no known leaf.
    pub topology: Option<PathBuf>,
    /// How often detectors and the localizer run, e.g. `1s`, `500ms`.
    #[serde(deserialize_with = "de_duration")]
    pub tick_interval: Duration,
    /// Largest accepted report body in bytes.
    pub max_body_bytes: usize,
    /// Symptoms must be gone this many seconds before an incident resolves.
    pub resolve_after_s: f64,
    /// An agent silent for this many of its own report intervals, plus 20 s for a report held up in
    /// transit, is considered lost.
    pub heartbeat_intervals: f64,
    /// Seconds a fatal XID keeps its GPU suspect after it was raised, even if the GPU looks healthy
    /// again (the incident then resolves `resolve_after_s` later, and a Slurm resume waits for that).
    /// Shown by `faultline explain` as "held until".
    pub fatal_xid_hold_s: f64,
    /// Cap on `faultline_component_healthy` series per scrape.
    pub metrics_max_components: usize,
    /// Most incidents one list request returns (a client may ask for fewer with `limit`).
    pub list_limit: usize,
    /// Reports per second one node may send on average; past it the analyzer answers 429 with a
    /// `Retry-After` (a token bucket per node).
    pub node_rate_per_s: f64,
    /// Reports one node may send at once above its rate (the bucket's size).
    pub node_rate_burst: u32,
    /// PEM certificate chain for HTTPS on `listen` (with `tls_key`). Without it the API is plain
    /// HTTP, which the analyzer only keeps quiet about on a loopback address.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Tokens by kind: `[auth]` with `ingest_tokens`, `read_tokens`, `[auth.node_tokens]` and their
    /// `*_files` forms (see analyzer/SECURITY.md).
    pub auth: AuthConfig,
    /// Notifications: `[notify]` with `[[notify.webhook]]`, `[[notify.alertmanager]]` and
    /// `[[notify.slack]]` receivers (see analyzer/NOTIFY.md). None by default.
    pub notify: crate::notify::NotifyConfig,
    /// Acting on incidents: `[remediation]` with the policy per class and severity (`off`,
    /// `suggest`, `act`), the blast-radius guard, and `[remediation.slurm]` (see
    /// analyzer/REMEDIATION.md). Default: suggest only, no scheduler adapter.
    pub remediation: crate::remediate::RemediationConfig,
    /// OpenTelemetry collector base URL (`http://otel-collector:4318`): ingest and diagnosis spans
    /// are sent there as OTLP/HTTP protobuf to `<url>/v1/traces`. Default: none (no span export).
    pub otlp_endpoint: Option<String>,
    /// The rate fabric NICs should train at, Gb/s (`400`), when the topology file does not say
    /// (`expected_rate_gbps` there). Default: none, learned as the fleet's majority rate.
    pub expected_nic_rate_gbps: Option<f64>,
    /// Seconds a job's GPUs may stay busy while its NIC and NVLink bytes are flat before it counts as
    /// hung (jobs without the progress API). Default 30.
    pub hang_quiet_s: f64,
    /// Seconds after a job first appears during which its counters are not judged (compile and
    /// NCCL warm-up). Default 120.
    pub job_warmup_s: f64,
    /// Seconds a job may go without a step while it says it checkpoints or evaluates, or while its
    /// writes, NIC/NVLink traffic or lone busy GPU show it is not waiting in a collective. A job that
    /// came back from a longer pause on its own gets 1.5 times its longest. Default 600 (PyTorch's
    /// NCCL watchdog default: a collective stuck that long is killed anyway).
    pub job_pause_max_s: f64,
    /// `[limits]`: node and component caps, an optional node allow-list, client timeouts and the
    /// connection cap (see `limits.rs` for each default and why).
    pub limits: crate::limits::LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            listen: DEFAULT_LISTEN.to_string(),
            db: PathBuf::from(DEFAULT_DB),
            token: None,
            token_file: None,
            topology: None,
            tick_interval: DEFAULT_TICK,
            max_body_bytes: limits::MAX_BODY_BYTES,
            resolve_after_s: engine.resolve_after_s,
            heartbeat_intervals: engine.heartbeat_intervals,
            fatal_xid_hold_s: engine.fatal_xid_hold_s,
            metrics_max_components: DEFAULT_METRICS_MAX_COMPONENTS,
            list_limit: DEFAULT_LIST_LIMIT,
            node_rate_per_s: DEFAULT_NODE_RATE_PER_S,
            node_rate_burst: DEFAULT_NODE_RATE_BURST,
            tls_cert: None,
            tls_key: None,
            auth: AuthConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            remediation: crate::remediate::RemediationConfig::default(),
            otlp_endpoint: None,
            expected_nic_rate_gbps: engine.expected_nic_rate_gbps,
            hang_quiet_s: engine.hang_quiet_s,
            job_warmup_s: engine.job_warmup_s,
            job_pause_max_s: engine.job_pause_max_s,
            limits: crate::limits::LimitsConfig::default(),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 1s or 500ms: {e}")))
}

/// Why the configuration cannot be used. Each message names the setting or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    ReadConfig { path: PathBuf, error: std::io::Error },
    #[error("config file {path}: {message}")]
    ParseConfig { path: PathBuf, message: String },
    #[error("listen address {0:?} is not an address like 127.0.0.1:9440")]
    Listen(String),
    #[error("give a token or a token file, not both")]
    TokenTwice,
    #[error("cannot read token file {path}: {error}")]
    ReadToken { path: PathBuf, error: std::io::Error },
    #[error("token{}: {error}", .path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    BadToken { path: Option<PathBuf>, error: TokenError },
    #[error("cannot read topology file {path}: {error}")]
    ReadTopology { path: PathBuf, error: std::io::Error },
    #[error("topology file {path}: {message}")]
    Topology { path: PathBuf, message: String },
    #[error("{field} = {value}: {message}")]
    Value { field: &'static str, value: String, message: &'static str },
    #[error("auth: {0}")]
    DuplicateToken(#[from] DuplicateToken),
    #[error("auth: node {node:?} {message}")]
    AuthNode { node: String, message: &'static str },
    #[error("give both tls_cert and tls_key (--tls-cert, --tls-key), or neither")]
    TlsHalf,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyConfigError),
    #[error(transparent)]
    Remediation(#[from] crate::remediate::RemediationConfigError),
}

/// The TLS files and the server config loaded from them.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub config: std::sync::Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

/// Everything checked and loaded, ready to start the server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub token: Option<Token>,
    /// Every token by kind (the shared `token` included).
    pub auth: Auth,
    /// TLS for the listener, when configured.
    pub tls: Option<TlsSettings>,
    pub node_rate_per_s: f64,
    pub node_rate_burst: u32,
    pub topology: TopologyFile,
    pub topology_path: Option<PathBuf>,
    pub engine: EngineConfig,
    pub tick_interval: Duration,
    pub max_body_bytes: usize,
    pub metrics_max_components: usize,
    pub list_limit: usize,
    pub notify: crate::notify::NotifySettings,
    pub remediation: crate::remediate::RemediationSettings,
    pub limits: crate::limits::LimitsConfig,
    /// Open a store that looks damaged (lost WAL, truncated) instead of refusing to start. Only
    /// from the `--allow-empty-store` flag: accepting a loss is a decision for each start.
    pub allow_empty_store: bool,
}

impl Config {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::limits::read_capped(path, crate::limits::MAX_CONFIG_FILE_BYTES)
            .map_err(|error| ConfigError::ReadConfig { path: path.to_path_buf(), error })?;
        Self::parse(&text).map_err(|message| ConfigError::ParseConfig { path: path.to_path_buf(), message })
    }

    /// Parses TOML text; the error names the key and line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every value and loads the files it names (token, topology).
    pub fn build(&self) -> Result<Settings, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| ConfigError::Listen(self.listen.clone()))?;
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TokenTwice),
            (Some(t), None) => Some(Token::new(&t.0).map_err(|error| ConfigError::BadToken { path: None, error })?),
            (None, Some(p)) => {
                let raw = crate::limits::read_capped(p, crate::limits::MAX_TOKEN_FILE_BYTES)
                    .map_err(|error| ConfigError::ReadToken { path: p.clone(), error })?;
                Some(Token::new(&raw).map_err(|error| ConfigError::BadToken { path: Some(p.clone()), error })?)
            }
            (None, None) => None,
        };
        let topology = match &self.topology {
            Some(p) => load_topology(p)?,
            None => TopologyFile::default(),
        };
        positive_secs("tick_interval", self.tick_interval)?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Value {
                field: "max_body_bytes",
                value: self.max_body_bytes.to_string(),
                message: "must be at least 1024 bytes",
            });
        }
        if !(self.resolve_after_s.is_finite() && self.resolve_after_s >= 0.0) {
            return Err(ConfigError::Value {
                field: "resolve_after_s",
                value: self.resolve_after_s.to_string(),
                message: "must be a finite number of seconds, 0 or more",
            });
        }
        if !(self.fatal_xid_hold_s.is_finite() && (0.0..=86_400.0).contains(&self.fatal_xid_hold_s)) {
            return Err(ConfigError::Value {
                field: "fatal_xid_hold_s",
                value: self.fatal_xid_hold_s.to_string(),
                message: "must be a finite number of seconds from 0 to 86400",
            });
        }
        if !(self.heartbeat_intervals.is_finite() && self.heartbeat_intervals >= 1.0) {
            return Err(ConfigError::Value {
                field: "heartbeat_intervals",
                value: self.heartbeat_intervals.to_string(),
                message: "must be a finite number, 1 or more",
            });
        }
        if self.list_limit == 0 {
            return Err(ConfigError::Value { field: "list_limit", value: "0".into(), message: "must be at least 1" });
        }
        if !(self.node_rate_per_s.is_finite() && self.node_rate_per_s > 0.0) {
            return Err(ConfigError::Value {
                field: "node_rate_per_s",
                value: self.node_rate_per_s.to_string(),
                message: "must be a positive number of reports per second",
            });
        }
        if self.node_rate_burst == 0 {
            return Err(ConfigError::Value {
                field: "node_rate_burst",
                value: "0".into(),
                message: "must be at least 1",
            });
        }
        let auth = self.auth.build(token.clone())?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                config: crate::tls::server_config(cert, key)?,
            }),
            (None, None) => None,
            _ => return Err(ConfigError::TlsHalf),
        };
        for (field, v) in [
            ("hang_quiet_s", self.hang_quiet_s),
            ("job_warmup_s", self.job_warmup_s),
            ("job_pause_max_s", self.job_pause_max_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Value {
                    field,
                    value: v.to_string(),
                    message: "must be a finite number of seconds, 0 or more",
                });
            }
        }
        if self.expected_nic_rate_gbps.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(ConfigError::Value {
                field: "expected_nic_rate_gbps",
                value: format!("{:?}", self.expected_nic_rate_gbps),
                message: "must be a positive rate in Gb/s",
            });
        }
        // The engine's config has more tunables than the file exposes.
        let engine = EngineConfig {
            resolve_after_s: self.resolve_after_s,
            heartbeat_intervals: self.heartbeat_intervals,
            expected_nic_rate_gbps: self.expected_nic_rate_gbps,
            hang_quiet_s: self.hang_quiet_s,
            job_warmup_s: self.job_warmup_s,
            job_pause_max_s: self.job_pause_max_s,
            fatal_xid_hold_s: self.fatal_xid_hold_s,
            ..EngineConfig::default()
        };
        Ok(Settings {
            listen,
            db: self.db.clone(),
            token,
            auth,
            tls,
            node_rate_per_s: self.node_rate_per_s,
            node_rate_burst: self.node_rate_burst,
            topology,
            topology_path: self.topology.clone(),
            engine,
            tick_interval: self.tick_interval,
            max_body_bytes: self.max_body_bytes,
            metrics_max_components: self.metrics_max_components,
            list_limit: self.list_limit,
            notify: self.notify.build(listen)?,
            remediation: self.remediation.build()?,
            limits: self.limits.clone(),
            allow_empty_store: false,
        })
    }
}

fn positive_secs(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::Value { field, value: "0s".into(), message: "must be longer than zero" });
    }
    Ok(())
}

/// Reads a topology file: TOML, or JSON when the name ends in `.json`. Validated before use.
pub fn load_topology(path: &Path) -> Result<TopologyFile, ConfigError> {
    let text = crate::limits::read_capped(path, crate::limits::MAX_CONFIG_FILE_BYTES)
        .map_err(|error| ConfigError::ReadTopology { path: path.to_path_buf(), error })?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let topo = if is_json {
        TopologyFile::from_json(&text).map_err(|e| ConfigError::Topology { path: path.to_path_buf(), message: e.0 })?
    } else {
        let t: TopologyFile = toml::from_str(&text).map_err(|e| ConfigError::Topology {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        t.validate().map_err(|e| ConfigError::Topology { path: path.to_path_buf(), message: e.0 })?;
        t
    };
    Ok(topo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let s = c.build().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(s.token.is_none());
        assert_eq!(s.tick_interval, DEFAULT_TICK);
    }

    #[test]
    fn every_field_parses() {
        let c = Config::parse(
            r#"
            listen = "0.0.0.0:9999"
            db = "/var/lib/faultline/f.db"
            token = "abc"
            tick_interval = "500ms"
            max_body_bytes = 4096
            resolve_after_s = 60.0
            heartbeat_intervals = 5.0
            metrics_max_components = 10
            list_limit = 5
            expected_nic_rate_gbps = 400
            hang_quiet_s = 45
            job_warmup_s = 300
            "#,
        )
        .unwrap();
        let s = c.build().unwrap();
        assert_eq!(s.engine.expected_nic_rate_gbps, Some(400.0));
        assert_eq!((s.engine.hang_quiet_s, s.engine.job_warmup_s), (45.0, 300.0));
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.tick_interval, Duration::from_millis(500));
        assert_eq!(s.engine.resolve_after_s, 60.0);
        assert_eq!(s.engine.heartbeat_intervals, 5.0);
        assert!(s.token.unwrap().matches("abc"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("listn = \"x\"").unwrap_err();
        assert!(e.contains("listn"), "{e}");
        let e = Config::parse("tick_interval = \"soon\"").unwrap_err();
        assert!(e.contains("soon"), "{e}");
        let c = Config { listen: "nowhere".into(), ..Config::default() };
        assert!(c.build().unwrap_err().to_string().contains("nowhere"));
        let c = Config { token: Some("a".into()), token_file: Some("/x".into()), ..Config::default() };
        assert!(matches!(c.build().unwrap_err(), ConfigError::TokenTwice));
        let c = Config { resolve_after_s: f64::NAN, ..Config::default() };
        assert!(c.build().unwrap_err().to_string().contains("resolve_after_s"));
        let c = Config { hang_quiet_s: -1.0, ..Config::default() };
        assert!(c.build().unwrap_err().to_string().contains("hang_quiet_s"));
        let c = Config { expected_nic_rate_gbps: Some(0.0), ..Config::default() };
        assert!(c.build().unwrap_err().to_string().contains("expected_nic_rate_gbps"));
    }

    #[test]
    fn auth_section_builds_every_kind_of_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n2.token");
        std::fs::write(&f, "node2-secret\n").unwrap();
        let c = Config::parse(&format!(
            r#"
            token = "shared-secret"
            node_rate_per_s = 5.0
            node_rate_burst = 10
            [auth]
            ingest_tokens = ["ingest-secret"]
            read_tokens = ["read-secret"]
            [auth.node_tokens]
            "node-0001" = "node1-secret"
            [auth.node_token_files]
            "node-0002" = "{}"
            "#,
            f.display()
        ))
        .unwrap();
        let s = c.build().unwrap();
        assert_eq!(s.auth.counts(), (1, 1, 1, 2));
        assert_eq!((s.node_rate_per_s, s.node_rate_burst), (5.0, 10));
        assert!(s.tls.is_none());
        let shown = format!("{c:?} {s:?}");
        for secret in ["shared-secret", "ingest-secret", "read-secret", "node1-secret", "node2-secret"] {
            assert!(!shown.contains(secret), "Debug shows a token: {shown}");
        }
    }

    #[test]
    fn bad_auth_rate_and_tls_settings_are_named() {
        let e = Config::parse("[auth]\nread_tokens = [\"x\"]\ningest_tokens = [\"x\"]\n").unwrap().build().unwrap_err();
        assert!(e.to_string().contains("ingest_tokens[0]") && e.to_string().contains("read_tokens[0]"), "{e}");
        let e = Config::parse("[auth.node_tokens]\n\"a/b\" = \"t\"\n").unwrap().build().unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
        let e = Config::parse("[auth]\nread_tokens = [\" \"]\n").unwrap().build().unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        assert!(Config::parse("[auth]\nwrite_tokens = []\n").unwrap_err().contains("write_tokens"));
        let e = Config { node_rate_per_s: 0.0, ..Config::default() }.build().unwrap_err();
        assert!(e.to_string().contains("node_rate_per_s"), "{e}");
        let e = Config { node_rate_burst: 0, ..Config::default() }.build().unwrap_err();
        assert!(e.to_string().contains("node_rate_burst"), "{e}");
        let e = Config { tls_cert: Some("/x.pem".into()), ..Config::default() }.build().unwrap_err();
        assert!(matches!(e, ConfigError::TlsHalf), "{e}");
        let e =
            Config { tls_cert: Some("/nope/c.pem".into()), tls_key: Some("/nope/k.pem".into()), ..Config::default() }
                .build()
                .unwrap_err();
        assert!(e.to_string().contains("/nope/c.pem"), "{e}");
    }

    #[test]
    fn token_file_is_trimmed_and_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "tok123\n").unwrap();
        let c = Config { token_file: Some(p.clone()), ..Config::default() };
        assert!(c.build().unwrap().token.unwrap().matches("tok123"));
        std::fs::write(&p, "\n").unwrap();
        let e = c.build().unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("tok"), "{e}");
    }

    #[test]
    fn topology_errors_name_the_file_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("topo.toml");
        std::fs::write(&p, "[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-09\"]\n").unwrap();
        let e = load_topology(&p).unwrap_err().to_string();
        assert!(e.contains("topo.toml") && e.contains("spine-09"), "{e}");
        std::fs::write(&p, "[[swich]]\nname = \"x\"\n").unwrap();
        let e = load_topology(&p).unwrap_err().to_string();
        assert!(e.contains("swich"), "{e}");
        std::fs::write(
            &p,
            "[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\
             [[switch]]\nname = \"spine-00\"\ntier = \"spine\"\n[[rack]]\nleaf = \"leaf-00\"\nnodes = [\"n0\"]\n",
        )
        .unwrap();
        let t = load_topology(&p).unwrap();
        assert_eq!(t.leaf_of("n0", "mlx5_0"), Some("leaf-00"));
    }
}
