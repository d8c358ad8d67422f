//! The policy: which mode (`off`, `suggest`, `act`) applies to an incident, which fault classes take
//! nodes out of service and which nodes, and the drain reasons faultline writes and recognises as its
//! own.

use std::collections::BTreeSet;

use faultline_proto::remediation::RemediationMode;
use faultline_proto::{ComponentId, FaultClass, Incident, Severity};
use serde::Deserialize;

/// Every drain reason faultline writes starts with this; a drain whose reason does not is someone
/// else's and is never resumed or overwritten.
pub const DRAIN_REASON_PREFIX: &str = "faultline:";

/// Reason prefix of drains a person asked for through the API (`faultline drain`): faultline's, but
/// never resumed on its own.
pub const MANUAL_REASON_PREFIX: &str = "faultline: manual:";

/// Longest drain reason written to the scheduler; Slurm shows reasons in one line of `sinfo -R`.
pub const MAX_REASON_CHARS: usize = 200;

/// One policy rule (`[[remediation.rule]]`): the mode for incidents of a class, a severity, or both.
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

/// The mode for each class and severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: RemediationMode,
    pub rules: Vec<RuleConfig>,
}

impl Policy {
    /// The most specific matching rule's mode: class and severity, then class alone, then severity
    /// alone, then the default.
    pub fn mode_for(&self, class: FaultClass, severity: Severity) -> RemediationMode {
        self.rules
            .iter()
            .filter(|r| r.class.is_none_or(|c| c == class) && r.severity.is_none_or(|s| s == severity))
            .max_by_key(|r| (r.class.is_some(), r.severity.is_some()))
            .map(|r| r.mode)
            .unwrap_or(self.default)
    }
}

/// Whether an incident of this class should take its node(s) out of scheduling until it is fixed.
///
/// Yes for broken or failing hardware, where new jobs would crash or crawl. No where the node still
/// works and the remedy lies elsewhere: a congested (not broken) leaf, a silent agent on a computing
/// node, memory or CPU pressure from processes, and software faults of a job.
pub fn drains(class: FaultClass) -> bool {
    use FaultClass::*;
    match class {
        GpuLost
        | GpuHbmUncorrectable
        | GpuSramUncorrectable
        | GpuGspHang
        | GpuThermalThrottle
        | GpuPowerBrake
        | GpuSlow
        | GpuEccSbeStorm
        | GpuRowRemapFailure
        | GpuSdc
        | NvlinkDown
        | NvlinkCrcStorm
        | PcieDowntrained
        | NicDown
        | NicFlap
        | CableBitErrors
        | NicSpeedDegraded
        | LeafSwitchDown
        | NodeDown
        | HostFanFailure
        | HostMce
        | DiskFailure
        | SwitchSilentDrop
        | NicConnectionResets
        | GpuCollectiveCorruption => true,
        LeafCongestion | AgentDown | HostOom | HostCpuContention | JobHang | JobCrash => false,
    }
}

/// Cluster nodes an incident takes out of service: the root's host, or for a switch every node
/// whose NICs hang off it (`behind_switch`). Empty when the class does not drain, or when its
/// recommended action needs no person (a contained memory error only restarts the job).
pub fn targets(inc: &Incident, behind_switch: impl Fn(&str) -> BTreeSet<String>) -> Vec<String> {
    if !drains(inc.class) || !inc.action.needs_person() {
        return Vec::new();
    }
    match &inc.root {
        ComponentId::Switch { name } => behind_switch(name).into_iter().collect(),
        ComponentId::Job { .. } | ComponentId::Rank { .. } => Vec::new(),
        other => other.host().map(|h| vec![h.to_string()]).unwrap_or_default(),
    }
}

/// The drain reason for an incident: `faultline: <class> <root> <incident id>`.
pub fn drain_reason(inc: &Incident) -> String {
    clean_reason(&format!("{DRAIN_REASON_PREFIX} {} {} {}", inc.class, inc.root, inc.id))
}

/// The drain reason for a person's drain through the API.
pub fn manual_reason(text: Option<&str>) -> String {
    let text = text.map(str::trim).filter(|t| !t.is_empty()).unwrap_or("drained by hand with faultline");
    clean_reason(&format!("{MANUAL_REASON_PREFIX} {text}"))
}

/// One line, no control characters or double quotes, at most `MAX_REASON_CHARS`.
pub(crate) fn clean_reason(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '"' { ' ' } else { c }).take(MAX_REASON_CHARS).collect()
}

/// Whether a drain reason is faultline's (so faultline may resume it).
pub fn owned_by_faultline(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.trim_start().starts_with(DRAIN_REASON_PREFIX))
}

/// Whether a drain reason is a person's drain made through faultline (never resumed on its own).
pub fn manual_drain(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.trim_start().starts_with(MANUAL_REASON_PREFIX))
}
