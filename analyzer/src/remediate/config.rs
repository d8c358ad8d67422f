//! `[remediation]` in the analyzer's config file: the typed settings with their defaults, and
//! `build`, which checks every value (naming the bad key) before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use faultline_proto::remediation::RemediationMode;
use serde::Deserialize;

use super::policy::{Policy, RuleConfig};
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
    /// Checks a node faultline drained must pass before it is resumed. Off (resume as soon as the
    /// hold is over) unless at least one `[[remediation.validation.check]]` is configured.
    pub validation: ValidationConfig,
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
            validation: ValidationConfig::default(),
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
    #[error("remediation.validation.check[{index}]: {message}")]
    Check { index: usize, message: String },
    #[error("remediation.validation.{key}: {message}")]
    Validation { key: &'static str, message: String },
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
    /// The checks before a resume; none configured means no validation.
    pub validation: ValidationSettings,
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
            validation: ValidationSettings::default(),
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
            if let Some(k) = self.slurm.env.keys().find(|k| !valid_env_name(k)) {
                return Err(RemediationConfigError::Env(k.clone()));
            }
        }
        Ok(RemediationSettings {
            policy: Policy { default: self.default, rules: self.rule.clone() },
            dry_run: self.dry_run,
            adapter: self.adapter,
            healthy_hold_s: self.healthy_hold.as_secs_f64(),
            max_drain_share: self.max_drain_share,
            window_s: self.window.as_secs_f64(),
            validation: self.validation.build(&slurm.env)?,
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

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Validation before a resume

/// Default wait before a node that failed validation is validated again; it doubles after each
/// failure. Five minutes: long enough for a person or a reset to change something, short enough
/// that a transient failure (a port still training) costs little idle time.
pub const DEFAULT_VALIDATION_RETRY: Duration = Duration::from_secs(300);

/// Default longest wait between two validations of a node.
pub const DEFAULT_VALIDATION_RETRY_MAX: Duration = Duration::from_secs(3600);

/// Default validations a node may fail before faultline stops trying (5 + 10 + 20 + 40 + 60 min
/// of waits: about two and a quarter hours), after which a person must look at it.
pub const DEFAULT_VALIDATION_ATTEMPTS: u32 = 6;

/// Default time one command check may run: `dcgmi diag -r 1` takes under a minute, a short NCCL
/// all-reduce seconds; the margin covers `srun` waiting for the node.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Placeholders a command check's arguments may hold.
pub const CHECK_PLACEHOLDERS: &[&str] = &["{node}", "{target}"];

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Built in: the node's latest report lists the expected number of working GPUs.
    GpuCount,
    /// Built in: every fabric port in the node's latest report is Active (IB) or up (Ethernet),
    /// at the expected rate.
    FabricPorts,
    /// A program run on the analyzer's host (`srun -w {node} ...`, `ssh {node} ...`); exit 0 passes.
    Command,
}

/// `[[remediation.validation.check]]`: one check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Short name shown in the timeline and the drain reason (`gpu-count`, `dcgm-diag`).
    pub name: String,
    /// `gpu_count`, `fabric_ports` or `command`.
    pub kind: CheckKind,
    /// `gpu_count`: GPUs the node must have; default the agent's `expected_gpus`.
    #[serde(default)]
    pub expected: Option<u32>,
    /// `fabric_ports`: the rate every fabric port must run at, Gb/s; default the topology file's
    /// `expected_rate_gbps` (or the analyzer's `expected_nic_rate_gbps`, or the fleet's majority).
    #[serde(default)]
    pub rate_gbps: Option<f64>,
    /// `command`: the program and its arguments (no shell); `{node}` is the cluster node name and
    /// `{target}` the scheduler's name for it.
    #[serde(default)]
    pub command: Vec<String>,
    /// `command`: longest it may run, e.g. `5m`; then it is killed and the check fails.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// `command`: extra environment, on top of `[remediation.slurm] env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[remediation.validation]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Wait before validating a node again after it failed, e.g. `5m`; doubles after each failure.
    #[serde(deserialize_with = "de_duration")]
    pub retry: Duration,
    /// Longest wait between two validations of a node, e.g. `1h`.
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Validations a node may fail before faultline stops trying and leaves it to a person.
    pub max_attempts: u32,
    /// The checks, run in order: built-in checks first, commands only when those passed.
    pub check: Vec<CheckConfig>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            retry: DEFAULT_VALIDATION_RETRY,
            retry_max: DEFAULT_VALIDATION_RETRY_MAX,
            max_attempts: DEFAULT_VALIDATION_ATTEMPTS,
            check: Vec::new(),
        }
    }
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// One checked validator.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub spec: CheckSpec,
}

/// What one validator does.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSpec {
    GpuCount {
        expected: Option<u32>,
    },
    FabricPorts {
        rate_gbps: Option<f64>,
    },
    /// `argv[0]` is resolved; `env` already holds `[remediation.slurm] env` under the check's own.
    Command {
        argv: Vec<String>,
        timeout: Duration,
        env: BTreeMap<String, String>,
    },
}

impl Check {
    /// Built-in checks read the analyzer's state; commands run programs.
    pub fn is_builtin(&self) -> bool {
        !matches!(self.spec, CheckSpec::Command { .. })
    }
}

/// The checked `[remediation.validation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSettings {
    pub checks: Vec<Check>,
    pub retry_s: f64,
    pub retry_max_s: f64,
    pub max_attempts: u32,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        let c = ValidationConfig::default();
        Self {
            checks: Vec::new(),
            retry_s: c.retry.as_secs_f64(),
            retry_max_s: c.retry_max.as_secs_f64(),
            max_attempts: c.max_attempts,
        }
    }
}

impl ValidationSettings {
    /// Whether any check is configured (validation is off otherwise).
    pub fn enabled(&self) -> bool {
        !self.checks.is_empty()
    }

    /// Wait after the `failures`-th failed validation: `retry`, doubled each time, at most
    /// `retry_max`.
    pub fn backoff_s(&self, failures: u32) -> f64 {
        let doublings = failures.saturating_sub(1).min(30);
        (self.retry_s * f64::from(1u32 << doublings)).min(self.retry_max_s)
    }

    /// The check names, `a, b, c`.
    pub fn names(&self) -> String {
        self.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl ValidationConfig {
    /// Checks every validator; `slurm_env` is passed to command checks under their own `env`.
    pub fn build(&self, slurm_env: &BTreeMap<String, String>) -> Result<ValidationSettings, RemediationConfigError> {
        let key =
            |key: &'static str, message: &str| RemediationConfigError::Validation { key, message: message.into() };
        if self.retry.is_zero() {
            return Err(key("retry", "must be longer than zero"));
        }
        if self.retry_max < self.retry {
            return Err(key("retry_max", "must be at least `retry`"));
        }
        if self.max_attempts == 0 {
            return Err(key("max_attempts", "must be at least 1"));
        }
        let mut checks = Vec::new();
        for (index, c) in self.check.iter().enumerate() {
            let bad = |message: String| RemediationConfigError::Check { index, message };
            let name_ok = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
            if !name_ok {
                return Err(bad(format!(
                    "name = {:?}: use 1 to 32 letters, digits, '-', '_' or '.' (it goes into the drain reason)",
                    c.name
                )));
            }
            if let Some(first) = self.check[..index].iter().position(|o| o.name == c.name) {
                return Err(bad(format!("name = {:?} repeats check[{first}]", c.name)));
            }
            let only = |field: &str, set: bool, kind: &str| -> Result<(), RemediationConfigError> {
                if set {
                    Err(bad(format!("`{field}` is only for kind = \"{kind}\" (this check is {:?})", c.name)))
                } else {
                    Ok(())
                }
            };
            let is = |k: CheckKind| c.kind == k;
            only("expected", c.expected.is_some() && !is(CheckKind::GpuCount), "gpu_count")?;
            only("rate_gbps", c.rate_gbps.is_some() && !is(CheckKind::FabricPorts), "fabric_ports")?;
            only("command", !c.command.is_empty() && !is(CheckKind::Command), "command")?;
            only("timeout", c.timeout.is_some() && !is(CheckKind::Command), "command")?;
            only("env", !c.env.is_empty() && !is(CheckKind::Command), "command")?;
            let spec = match c.kind {
                CheckKind::GpuCount => {
                    if c.expected == Some(0) {
                        return Err(bad("expected = 0: a GPU count check needs at least one GPU".into()));
                    }
                    CheckSpec::GpuCount { expected: c.expected }
                }
                CheckKind::FabricPorts => {
                    if let Some(r) = c.rate_gbps
                        && !(r.is_finite() && r > 0.0)
                    {
                        return Err(bad(format!("rate_gbps = {r}: must be a rate above zero, in Gb/s")));
                    }
                    CheckSpec::FabricPorts { rate_gbps: c.rate_gbps }
                }
                CheckKind::Command => {
                    let Some(program) = c.command.first() else {
                        return Err(bad(format!(
                            "command is missing: kind = \"command\" needs command = [\"program\", \"arg\", ...] ({:?})",
                            c.name
                        )));
                    };
                    for arg in &c.command {
                        if let Some(p) = unknown_placeholder(arg) {
                            return Err(bad(format!(
                                "command: {p} in {arg:?} is not a placeholder; use {}",
                                CHECK_PLACEHOLDERS.join(" or ")
                            )));
                        }
                    }
                    if program.contains('{') {
                        return Err(bad(format!("command: the program {program:?} cannot hold a placeholder")));
                    }
                    let resolved =
                        resolve_program(std::path::Path::new(program)).map_err(|e| bad(format!("command: {e}")))?;
                    let timeout = c.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
                    if timeout.is_zero() {
                        return Err(bad("timeout must be longer than zero".into()));
                    }
                    if let Some(k) = c.env.keys().find(|k| !valid_env_name(k)) {
                        return Err(bad(format!("env: {k:?} is not a valid environment variable name")));
                    }
                    let mut env = slurm_env.clone();
                    env.extend(c.env.clone());
                    let mut argv = c.command.clone();
                    argv[0] = resolved.display().to_string();
                    CheckSpec::Command { argv, timeout, env }
                }
            };
            checks.push(Check { name: c.name.clone(), spec });
        }
        Ok(ValidationSettings {
            checks,
            retry_s: self.retry.as_secs_f64(),
            retry_max_s: self.retry_max.as_secs_f64(),
            max_attempts: self.max_attempts,
        })
    }
}

/// The first `{...}` in `arg` that is not a known placeholder.
fn unknown_placeholder(arg: &str) -> Option<String> {
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else { return Some(after.to_string()) };
        let word = &after[..=close];
        if !CHECK_PLACEHOLDERS.contains(&word) {
            return Some(word.to_string());
        }
        rest = &after[close + 1..];
    }
    None
}
