//! The analyzer's configuration: a TOML file (`--config`) with a doc and a default for every field,
//! overridden by command-line flags, checked as a whole by `Config::build` before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_proto::{TopologyFile, report::limits};
use serde::Deserialize;

use crate::auth::{Token, TokenError};
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
    pub token: Option<String>,
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
    /// An agent silent for this many of its own report intervals is considered lost.
    pub heartbeat_intervals: f64,
    /// Cap on `faultline_component_healthy` series per scrape.
    pub metrics_max_components: usize,
    /// Most incidents one list request returns (a client may ask for fewer with `limit`).
    pub list_limit: usize,
    /// Notifications: `[notify]` with `[[notify.webhook]]`, `[[notify.alertmanager]]` and
    /// `[[notify.slack]]` receivers (see analyzer/NOTIFY.md). None by default.
    pub notify: crate::notify::NotifyConfig,
    /// Acting on incidents: `[remediation]` with the policy per class and severity (`off`,
    /// `suggest`, `act`), the blast-radius guard, and `[remediation.slurm]` (see
    /// analyzer/REMEDIATION.md). Default: suggest only, no scheduler adapter.
    pub remediation: crate::remediate::RemediationConfig,
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
            metrics_max_components: DEFAULT_METRICS_MAX_COMPONENTS,
            list_limit: DEFAULT_LIST_LIMIT,
            notify: crate::notify::NotifyConfig::default(),
            remediation: crate::remediate::RemediationConfig::default(),
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
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyConfigError),
    #[error(transparent)]
    Remediation(#[from] crate::remediate::RemediationConfigError),
}

/// Everything checked and loaded, ready to start the server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub token: Option<Token>,
    pub topology: TopologyFile,
    pub topology_path: Option<PathBuf>,
    pub engine: EngineConfig,
    pub tick_interval: Duration,
    pub max_body_bytes: usize,
    pub metrics_max_components: usize,
    pub list_limit: usize,
    pub notify: crate::notify::NotifySettings,
    pub remediation: crate::remediate::RemediationSettings,
}

impl Config {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
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
            (Some(t), None) => Some(Token::new(t).map_err(|error| ConfigError::BadToken { path: None, error })?),
            (None, Some(p)) => {
                let raw =
                    std::fs::read_to_string(p).map_err(|error| ConfigError::ReadToken { path: p.clone(), error })?;
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
        // Set field by field: the engine's config has more tunables than the file exposes.
        #[allow(clippy::field_reassign_with_default)]
        let mut engine = EngineConfig::default();
        engine.resolve_after_s = self.resolve_after_s;
        engine.heartbeat_intervals = self.heartbeat_intervals;
        Ok(Settings {
            listen,
            db: self.db.clone(),
            token,
            topology,
            topology_path: self.topology.clone(),
            engine,
            tick_interval: self.tick_interval,
            max_body_bytes: self.max_body_bytes,
            metrics_max_components: self.metrics_max_components,
            list_limit: self.list_limit,
            notify: self.notify.build(listen)?,
            remediation: self.remediation.build()?,
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
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::ReadTopology { path: path.to_path_buf(), error })?;
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
            "#,
        )
        .unwrap();
        let s = c.build().unwrap();
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
