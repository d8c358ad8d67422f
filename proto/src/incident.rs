//! Fault classes, severities, recommended actions and the `Incident` object the API, store,
//! notifiers, CLI and simulator all share. Field names follow spec/scenario.md.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::ComponentId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! fault_classes {
    ($($variant:ident = $name:literal, $weight:literal;)*) => {
        /// Every fault kind of spec/fault-catalog.md. The snake_case name is the scenario `kind`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FaultClass { $($variant,)* }

        impl FaultClass {
            pub const ALL: &'static [FaultClass] = &[$(FaultClass::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Relative frequency from the catalog, for weighted coverage.
            pub fn weight(self) -> u32 {
                match self { $(Self::$variant => $weight,)* }
            }
        }

        impl FromStr for FaultClass {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    _ => Err(format!("unknown fault kind {s:?}")),
                }
            }
        }
    };
}

fault_classes! {
    GpuLost = "gpu_lost", 100;
    GpuHbmUncorrectable = "gpu_hbm_uncorrectable", 72;
    GpuSramUncorrectable = "gpu_sram_uncorrectable", 19;
    GpuGspHang = "gpu_gsp_hang", 17;
    GpuThermalThrottle = "gpu_thermal_throttle", 6;
    GpuPowerBrake = "gpu_power_brake", 4;
    GpuSlow = "gpu_slow", 8;
    GpuEccSbeStorm = "gpu_ecc_sbe_storm", 5;
    GpuRowRemapFailure = "gpu_row_remap_failure", 5;
    GpuSdc = "gpu_sdc", 6;
    NvlinkDown = "nvlink_down", 14;
    NvlinkCrcStorm = "nvlink_crc_storm", 6;
    PcieDowntrained = "pcie_downtrained", 6;
    NicDown = "nic_down", 7;
    NicFlap = "nic_flap", 10;
    CableBitErrors = "cable_bit_errors", 15;
    NicSpeedDegraded = "nic_speed_degraded", 10;
    LeafSwitchDown = "leaf_switch_down", 10;
    LeafCongestion = "leaf_congestion", 20;
    SwitchSilentDrop = "switch_silent_drop", 4;
    NicConnectionResets = "nic_connection_resets", 5;
    GpuCollectiveCorruption = "gpu_collective_corruption", 3;
    NodeDown = "node_down", 41;
    AgentDown = "agent_down", 5;
    HostFanFailure = "host_fan_failure", 8;
    HostOom = "host_oom", 14;
    HostMce = "host_mce", 4;
    HostCpuContention = "host_cpu_contention", 6;
    DiskFailure = "disk_failure", 3;
    JobHang = "job_hang", 7;
    JobCrash = "job_crash", 40;
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FaultClass {
    /// The component kind a fault of this class is rooted at.
    pub fn target_kind(self) -> crate::ComponentKind {
        use crate::ComponentKind as K;
        use FaultClass::*;
        match self {
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
            | PcieDowntrained
            | GpuCollectiveCorruption => K::Gpu,
            NvlinkDown | NvlinkCrcStorm => K::Nvlink,
            NicDown | NicFlap | CableBitErrors | NicSpeedDegraded | NicConnectionResets => K::Nic,
            LeafSwitchDown | LeafCongestion | SwitchSilentDrop => K::Switch,
            NodeDown | HostFanFailure | HostOom | HostMce | HostCpuContention => K::Node,
            AgentDown => K::Agent,
            DiskFailure => K::Disk,
            JobHang | JobCrash => K::Job,
        }
    }
}

/// What a person (or the remediation adapter) should do about an incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    None,
    RestartJob,
    ResetGpu,
    RebootNode,
    /// Replace the part: contact the vendor.
    ReplacePart,
    InspectCableOrSwitch,
}

impl Action {
    /// Whether the action needs a person (pages) or is informational.
    pub fn needs_person(self) -> bool {
        matches!(self, Self::ResetGpu | Self::RebootNode | Self::ReplacePart | Self::InspectCableOrSwitch)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    #[default]
    Open,
    Resolved,
}

/// One piece of evidence: a sample or event that convinced the analyzer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Unix seconds (report time).
    pub at_s: f64,
    pub component: ComponentId,
    /// Symptom kind, e.g. `xid`, `ecc_dbe`, `link_down`, `heartbeat_lost`, `straggler`.
    pub kind: String,
    /// One sentence with the number in it.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_s: f64,
    /// `opened`, `updated`, `evidence`, `job_affected`, `action`, `resolved`, …
    pub what: String,
    pub detail: String,
}

/// One root cause. Consequences hang off it as affected jobs and paths, never as incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-000001`
    pub id: String,
    pub root: ComponentId,
    pub class: FaultClass,
    pub severity: Severity,
    /// 0..=1
    pub confidence: f64,
    pub status: IncidentStatus,
    /// One line for humans: "node-0008/gpu3 fell off the bus (XID 79); 1 job stopped".
    pub summary: String,
    /// Earliest symptom time, Unix seconds (report clock).
    pub onset_s: f64,
    /// When the analyzer opened it, Unix seconds (analyzer clock).
    pub opened_s: f64,
    /// RFC 3339 form of `opened_s`.
    pub opened_at: String,
    pub updated_s: f64,
    pub resolved_s: Option<f64>,
    pub affected_jobs: Vec<String>,
    /// Each path is `job → rank → gpu → node → nic → leaf` as component id strings.
    pub paths: Vec<Vec<String>>,
    pub evidence: Vec<Evidence>,
    pub timeline: Vec<TimelineEntry>,
    #[serde(default)]
    pub action: Action,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const RFC3339_MS: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in Unix milliseconds: the four-digit years
/// RFC 3339 can write.
const RFC3339_MS_RANGE: (f64, f64) = (-62_167_219_200_000.0, 253_402_300_799_999.0);

/// RFC 3339 (UTC, millisecond precision) for Unix seconds. Times outside years 0000–9999 are
/// clamped to them; a value that is not a number reads as the epoch.
pub fn rfc3339(unix_s: f64) -> String {
    let ms = (unix_s * 1000.0).round();
    let ms = if ms.is_finite() { ms.clamp(RFC3339_MS_RANGE.0, RFC3339_MS_RANGE.1) as i128 } else { 0 };
    time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(RFC3339_MS)
        .unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`);
/// `None` for anything else (a date alone, a time without an offset).
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_round_trips_and_has_a_weight() {
        assert_eq!(FaultClass::ALL.len(), 31);
        for c in FaultClass::ALL {
            assert_eq!(c.as_str().parse::<FaultClass>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{}\"", c.as_str()));
            assert!(c.weight() > 0);
        }
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000.5), "2023-11-14T22:13:20.500Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1.5), "1969-12-31T23:59:58.500Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1e15), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_parses_offsets_and_fractions_and_round_trips() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.500Z"), Some(1_700_000_000.5));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(1_700_000_000.0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        for bad in
            ["yesterday", "2023-13-01T00:00:00Z", "2023-11-14", "2023-11-14T22:13:20", "2023-02-30T00:00:00Z", ""]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for s in [0.0, 86_399.0, 951_868_799.999, 1_714_564_800.0, 4_102_444_800.0] {
            assert_eq!(parse_rfc3339(&rfc3339(s)), Some(s), "{s}");
        }
    }
}
