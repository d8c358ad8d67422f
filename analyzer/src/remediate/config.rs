//! `[remediation]` in the analyzer's config file: the typed settings with their defaults, and
//! `build`, which checks every value (naming the bad key) before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use faultline_proto::remediation::RemediationMode;
use faultline_proto::{FaultClass, Severity};
use serde::Deserialize;

use super::policy::Policy;
use super::slurm;

/// Default most share of the known nodes faultline drains on its own within one window. One node in
/// ten: a real hardware wave (a bad PDU, a firmware push) rarely takes more at once, while a
/// misdiagnosis storm that drained more would idle a tenth of the cluster before a person looked.
pub const DEFAULT_MAX_DRAIN_SHARE: f64 = 0.10;

/// Default guard window: one hour, the time an on-call person needs to notice, look and decide.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Default time a drained node must stay healthy after its incident resolved before it is resumed.
/// Ten minutes: five times the analyzer's two-minute resolve hysteresis and sixty 10 s report
/// intervals, so a part that fails again within minutes is seen before jobs land on it.
pub const DEFAULT_HEALTHY_HOLD: Duration = Duration::from_secs(600);

/// Default time one `scontrol` call may take. Slurm's own `MessageTimeout` defaults to 10 s and
/// scontrol may retry once before it gives up.
pub const DEFAULT_SCONTROL_TIMEOUT: Duration = Duration::from_secs(25);

/// Which scheduler adapter carries out drains and resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// No scheduler: actions can only be suggested (or dry-run).
    #[default]
    None,
    /// Slurm through `scontrol`.
    Slurm,
}

/// One policy rule: the mode for incidents of a class, a severity, or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Fault class (`gpu_lost`, `leaf_switch_down`, …); any class when absent.
    #[serde(default)]
    pub class: Option<FaultClass>,
    /// Incident severity (`info`, `warning`, `critical`); any severity when absent.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// `off`, `suggest` or `act`.
    pub mode: RemediationMode,
}

/// `[remediation.slurm]`: how to reach Slurm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// The `scontrol` program: a path, or a name looked up on `PATH`.
    pub scontrol: PathBuf,
    /// Extra environment for every scontrol call, e.g. `{ SLURM_CONF = "/etc/slurm/slurm.conf" }`.
    pub env: BTreeMap<String, String>,
    /// Longest one scontrol call may take, e.g. `25s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Cluster node name (as agents report it) → Slurm NodeName, where they differ.
    pub node_map: BTreeMap<String, String>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            scontrol: PathBuf::from("scontrol"),
            env: BTreeMap::new(),
            timeout: DEFAULT_SCONTROL_TIMEOUT,
            node_map: BTreeMap::new(),
        }
    }
}

/// `[remediation]` in the analyzer's config file. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// Mode for incidents no rule names: `off`, `suggest` (record what would be done) or `act`.
    pub default: RemediationMode,
    /// Log and record what would be done (`would drain …`) without calling the scheduler.
    pub dry_run: bool,
    /// Scheduler adapter: `none` or `slurm`.
    pub adapter: AdapterKind,
    /// How long a node faultline drained must stay healthy after its incident resolved before it is
    /// resumed, e.g. `10m`.
    #[serde(deserialize_with = "de_duration")]
    pub healthy_hold: Duration,
    /// Most share (0..=1) of the nodes known to the analyzer that faultline drains on its own
    /// within `window`. Above it nothing more is drained and a person is paged.
    pub max_drain_share: f64,
    /// The guard's sliding window, e.g. `1h`.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// Policy rules; the most specific match wins (class and severity, then class, then severity).
    pub rule: Vec<RuleConfig>,
    /// Slurm adapter settings (used when `adapter = "slurm"`).
    pub slurm: SlurmConfig,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            default: RemediationMode::Suggest,
            dry_run: false,
            adapter: AdapterKind::None,
            healthy_hold: DEFAULT_HEALTHY_HOLD,
            max_drain_share: DEFAULT_MAX_DRAIN_SHARE,
            window: DEFAULT_WINDOW,
            rule: Vec::new(),
            slurm: SlurmConfig::default(),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 30s or 10m: {e}")))
}

/// Why the `[remediation]` settings cannot be used; each message names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemediationConfigError {
    #[error("remediation.max_drain_share = {0}: must be a number from 0 to 1")]
    Share(f64),
    #[error("remediation.{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("remediation.rule[{index}] repeats rule[{first}] (same class and severity)")]
    DuplicateRule { index: usize, first: usize },
    #[error(
        "remediation: mode `act` ({what}) needs a scheduler adapter: set adapter = \"slurm\" (or dry_run = true to only log)"
    )]
    ActWithoutAdapter { what: String },
    #[error("remediation.slurm.scontrol: {0}")]
    Scontrol(String),
    #[error("remediation.slurm.node_map: {0:?} is not a valid node name for Slurm")]
    NodeMap(String),
    #[error("remediation.slurm.env: {0:?} is not a valid environment variable name")]
    Env(String),
}

/// The checked remediation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationSettings {
    pub policy: Policy,
    pub dry_run: bool,
    pub adapter: AdapterKind,
    pub healthy_hold_s: f64,
    pub max_drain_share: f64,
    pub window_s: f64,
    /// Resolved scontrol path (when the adapter is Slurm).
    pub slurm: SlurmConfig,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        // The defaults are valid by construction.
        let c = RemediationConfig::default();
        Self {
            policy: Policy { default: c.default, rules: Vec::new() },
            dry_run: c.dry_run,
            adapter: c.adapter,
            healthy_hold_s: c.healthy_hold.as_secs_f64(),
            max_drain_share: c.max_drain_share,
            window_s: c.window.as_secs_f64(),
            slurm: c.slurm,
        }
    }
}

impl RemediationConfig {
    /// Checks every value; resolves `scontrol` on `PATH` when the Slurm adapter is chosen.
    pub fn build(&self) -> Result<RemediationSettings, RemediationConfigError> {
        if !(self.max_drain_share.is_finite() && (0.0..=1.0).contains(&self.max_drain_share)) {
            return Err(RemediationConfigError::Share(self.max_drain_share));
        }
        if self.window.is_zero() {
            return Err(RemediationConfigError::ZeroDuration("window"));
        }
        if self.slurm.timeout.is_zero() {
            return Err(RemediationConfigError::ZeroDuration("slurm.timeout"));
        }
        for (i, r) in self.rule.iter().enumerate() {
            if let Some(first) = self.rule[..i].iter().position(|o| o.class == r.class && o.severity == r.severity) {
                return Err(RemediationConfigError::DuplicateRule { index: i, first });
            }
        }
        if self.adapter == AdapterKind::None && !self.dry_run {
            let acting = if self.default == RemediationMode::Act {
                Some("the default".to_string())
            } else {
                self.rule.iter().position(|r| r.mode == RemediationMode::Act).map(|i| format!("rule[{i}]"))
            };
            if let Some(what) = acting {
                return Err(RemediationConfigError::ActWithoutAdapter { what });
            }
        }
        let mut slurm = self.slurm.clone();
        if self.adapter == AdapterKind::Slurm {
            slurm.scontrol = resolve_program(&self.slurm.scontrol).map_err(RemediationConfigError::Scontrol)?;
            for (k, v) in &self.slurm.node_map {
                for name in [k, v] {
                    if !slurm::valid_node_name(name) {
                        return Err(RemediationConfigError::NodeMap(name.clone()));
                    }
                }
            }
            for k in self.slurm.env.keys() {
                let ok = !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err(RemediationConfigError::Env(k.clone()));
                }
            }
        }
        Ok(RemediationSettings {
            policy: Policy { default: self.default, rules: self.rule.clone() },
            dry_run: self.dry_run,
            adapter: self.adapter,
            healthy_hold_s: self.healthy_hold.as_secs_f64(),
            max_drain_share: self.max_drain_share,
            window_s: self.window.as_secs_f64(),
            slurm,
        })
    }
}

/// A program path as given, or found on `PATH` when it is a bare name.
fn resolve_program(p: &std::path::Path) -> Result<PathBuf, String> {
    if p.components().count() > 1 || p.is_absolute() {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(format!("{} does not exist", p.display())) };
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(p)).find(|c| c.is_file()))
        .ok_or_else(|| format!("{:?} is not on PATH; give its full path", p.display().to_string()))
}
