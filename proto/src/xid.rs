//! NVIDIA's XID catalog, compiled in: one copy for the agent (severity of a line or NVML event), the
//! analyzer (what a code means for the diagnosis) and the simulator (what a fault prints).
//!
//! The catalog is `proto/data/xid-catalog.csv`, a copy of the project's reference data. Its severity
//! column is our mapping of NVIDIA's recommended action: reset/reboot → critical, restart the app →
//! warning, ignore → info.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::{Action, FaultClass, Severity};

/// The catalog, compiled in. Provenance: NVIDIA's XID catalog (docs.nvidia.com/deploy/xid-errors), the
/// older NVIDIA cause matrix and gpud's repair actions, gathered in the project's reference data.
const CATALOG_CSV: &str = include_str!("../data/xid-catalog.csv");

/// What most likely broke, following NVIDIA's triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LikelyCause {
    Hardware,
    Driver,
    Application,
    /// Informational codes, or not enough to say.
    Unknown,
}

impl LikelyCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::Driver => "driver",
            Self::Application => "application",
            Self::Unknown => "unknown",
        }
    }
}

/// One catalog row.
#[derive(Debug, Clone, PartialEq)]
pub struct XidInfo {
    pub code: u32,
    pub name: String,
    /// `app`, `memory`, `nvlink`, `bus`, `driver_firmware`, `power`, … (`unused/…` for codes NVIDIA
    /// no longer emits on Ampere and later).
    pub category: String,
    pub severity: Severity,
    /// What to do, in words.
    pub action: String,
    /// NVIDIA's immediate-action bucket (`RESET_GPU`, `RESTART_APP`, `IGNORE`, `WORKFLOW_XID_48`, …).
    pub immediate_action: String,
    /// What broke when this code appears on its own.
    pub likely_cause: LikelyCause,
}

/// Severity of a code nobody catalogued: a warning, so it is seen but pages nobody.
pub const UNKNOWN_XID_SEVERITY: Severity = Severity::Warning;

fn catalog() -> &'static BTreeMap<u32, XidInfo> {
    static CATALOG: OnceLock<BTreeMap<u32, XidInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| parse_catalog(CATALOG_CSV))
}

fn parse_catalog(text: &str) -> BTreeMap<u32, XidInfo> {
    let mut out = BTreeMap::new();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(_) => return out,
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(c_code), Some(c_name), Some(c_cat), Some(c_sev), Some(c_action), Some(c_imm), Some(c_causes)) = (
        col("code"),
        col("name"),
        col("category"),
        col("severity"),
        col("action"),
        col("nvidia_immediate_action"),
        col("legacy_possible_causes"),
    ) else {
        return out;
    };
    for rec in rdr.records().flatten() {
        let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
        let Ok(code) = get(c_code).parse::<u32>() else { continue };
        let category = get(c_cat);
        let immediate_action = get(c_imm);
        let likely_cause = cause_of(&category, &immediate_action, &get(c_causes));
        out.insert(
            code,
            XidInfo {
                code,
                name: get(c_name),
                severity: severity_of(&get(c_sev)),
                category,
                action: get(c_action),
                immediate_action,
                likely_cause,
            },
        );
    }
    out
}

fn severity_of(s: &str) -> Severity {
    match s.trim_start_matches("legacy-") {
        "critical" => Severity::Critical,
        "info" => Severity::Info,
        _ => Severity::Warning,
    }
}

/// A code's likely cause when seen alone: the catalog category first (memory, bus, NVLink, power and
/// InfoROM faults are the board; driver/firmware codes the driver; app and engine exceptions the
/// program), then NVIDIA's immediate action, then the legacy cause matrix.
fn cause_of(category: &str, immediate: &str, legacy: &str) -> LikelyCause {
    let cat = category.rsplit('/').next().unwrap_or(category);
    match cat {
        "memory" | "bus" | "nvlink" | "power" | "inforom" => return LikelyCause::Hardware,
        "driver_firmware" | "virtualization" => return LikelyCause::Driver,
        "app" | "copy_engine" | "video_engine" => return LikelyCause::Application,
        "informational" => return LikelyCause::Unknown,
        _ => {}
    }
    match immediate {
        "RESTART_APP" => return LikelyCause::Application,
        "RESET_GPU" | "RESTART_BM" | "CHECK_MECHANICALS" => return LikelyCause::Hardware,
        "UPDATE_SWFW" => return LikelyCause::Driver,
        _ => {}
    }
    if legacy.contains("HWError") {
        LikelyCause::Hardware
    } else if legacy.contains("DriverError") {
        LikelyCause::Driver
    } else {
        LikelyCause::Unknown
    }
}

/// The catalog row for `code`, if there is one.
pub fn lookup(code: u32) -> Option<&'static XidInfo> {
    catalog().get(&code)
}

/// Severity of `code` on its own (see `UNKNOWN_XID_SEVERITY` for uncatalogued codes).
pub fn severity(code: u32) -> Severity {
    lookup(code).map(|i| i.severity).unwrap_or(UNKNOWN_XID_SEVERITY)
}

/// A short description: `79 GPU has fallen off the bus`.
pub fn describe(code: u32) -> String {
    match lookup(code) {
        Some(i) => format!("{code} {}", i.name),
        None => format!("{code} (not in the catalog)"),
    }
}

/// What one XID means to the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidClass {
    /// Hardware or firmware fault of the GPU itself: opens an incident at once.
    Fatal(FaultClass),
    /// A memory error the driver contained (94): the application that hit it must restart, the GPU
    /// keeps working. A fault of the GPU, but not a critical one.
    Contained(FaultClass),
    /// Application-level (13, 31, 43, …): noise alone; the same GPU repeating it is hardware.
    App,
    /// A consequence of an earlier error (45, "preemptive cleanup"): never a cause.
    Consequence,
    /// Informational (63, 154, …) or unknown: recorded, not a symptom.
    Info,
}

/// Classify an XID. The fault-class mapping follows the fault catalog: 79 lost; 48/95/140/171/172
/// memory; 94 a contained memory error (NVIDIA: `RESTART_APP`); 119/120 and other firmware halts GSP
/// hang; 74/136/144–150/155 NVLink; 64 remap failure; 92 SBE storm. For 144–150 the status word
/// decides whether it is fatal: use `classify_event` when the kernel line is at hand.
pub fn classify(code: u32) -> XidClass {
    use FaultClass::*;
    match code {
        79 => XidClass::Fatal(GpuLost),
        48 | 140 | 171 | 172 => XidClass::Fatal(GpuHbmUncorrectable),
        // 94 contained / 95 uncontained: HBM or SRAM, decided by which ECC counter moved.
        94 => XidClass::Contained(GpuHbmUncorrectable),
        95 => XidClass::Fatal(GpuHbmUncorrectable),
        119 | 120 | 62 | 46 | 109 | 143 | 158 | 169 => XidClass::Fatal(GpuGspHang),
        74 | 136 | 144..=150 | 155 => XidClass::Fatal(NvlinkDown),
        64 => XidClass::Fatal(GpuRowRemapFailure),
        92 => XidClass::Fatal(GpuEccSbeStorm),
        45 => XidClass::Consequence,
        _ => match lookup(code) {
            Some(i) if i.category == "app" || i.immediate_action == "RESTART_APP" => XidClass::App,
            _ => XidClass::Info,
        },
    }
}

/// Classify an XID together with the kernel line (or NVML message) it came with. NVLink5 XIDs
/// 144–150 are decoded from their status words (`decode_nvlink5`): a non-fatal one is `Info`, so it
/// pages nobody. When the words cannot be decoded, the driver's own `Fatal`/`Nonfatal` word in the
/// line decides, and without that the code alone (`classify`).
pub fn classify_event(code: u32, message: &str) -> XidClass {
    if !(144..=150).contains(&code) {
        return classify(code);
    }
    let fatal = crate::xid_nvlink5::words_in(message)
        .and_then(|(intr, status)| crate::xid_nvlink5::decode(code, intr, status))
        .map(|d| d.fatal)
        .or_else(|| crate::xid_nvlink5::fatal_word(message));
    match fatal {
        Some(false) => XidClass::Info,
        _ => classify(code),
    }
}

/// The catalog's immediate action as our `Action`.
pub fn action(code: u32) -> Action {
    match lookup(code).map(|i| i.immediate_action.as_str()) {
        Some("RESTART_BM") => Action::RebootNode,
        Some("RESET_GPU") | Some("WORKFLOW_XID_48") | Some("WORKFLOW_NVLINK_ERR") | Some("WORKFLOW_NVLINK5_ERR") => {
            Action::ResetGpu
        }
        Some("RESTART_APP") => Action::RestartJob,
        Some("CHECK_MECHANICALS") => Action::ReplacePart,
        _ => Action::None,
    }
}

/// The reference data this catalog was copied from, for the test that the copy is faithful.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_loads_every_code() {
        assert!(catalog().len() >= 170, "{}", catalog().len());
        let i = lookup(79).unwrap();
        assert_eq!(i.severity, Severity::Critical);
        assert_eq!(i.likely_cause, LikelyCause::Hardware);
        assert_eq!(lookup(13).unwrap().likely_cause, LikelyCause::Application);
        assert_eq!(lookup(119).unwrap().likely_cause, LikelyCause::Driver);
        assert_eq!(lookup(48).unwrap().severity, Severity::Critical);
        assert_eq!(severity(63), Severity::Info);
        assert_eq!(severity(9999), UNKNOWN_XID_SEVERITY);
        assert!(describe(79).contains("fallen off the bus"));
    }

    fn check(code: u32, expected: XidClass) {
        assert_eq!(classify(code), expected, "XID {code}");
    }

    #[test]
    fn catalog_classes() {
        use FaultClass::*;
        for (code, want) in [
            (79, XidClass::Fatal(GpuLost)),
            (48, XidClass::Fatal(GpuHbmUncorrectable)),
            (95, XidClass::Fatal(GpuHbmUncorrectable)),
            (94, XidClass::Contained(GpuHbmUncorrectable)),
            (119, XidClass::Fatal(GpuGspHang)),
            (120, XidClass::Fatal(GpuGspHang)),
            (74, XidClass::Fatal(NvlinkDown)),
            (64, XidClass::Fatal(GpuRowRemapFailure)),
            (92, XidClass::Fatal(GpuEccSbeStorm)),
            (13, XidClass::App),
            (31, XidClass::App),
            (43, XidClass::App),
            (45, XidClass::Consequence),
            (63, XidClass::Info),
            (9999, XidClass::Info),
        ] {
            check(code, want);
        }
    }

    #[test]
    fn table_loaded_and_actions_mapped() {
        assert!(lookup(79).is_some());
        assert_eq!(action(79), Action::RebootNode);
        assert_eq!(action(119), Action::ResetGpu);
        assert_eq!(action(13), Action::RestartJob);
        assert_eq!(action(63), Action::None);
    }

    /// Every row of the CSV is in the catalog with the CSV's severity mapping, and the file is the
    /// project's reference copy (the header names the columns the parser needs).
    #[test]
    fn catalog_agrees_with_the_csv() {
        let mut rdr = csv::Reader::from_reader(CATALOG_CSV.as_bytes());
        let mut rows = 0;
        for rec in rdr.records() {
            let rec = rec.unwrap();
            let code: u32 = rec[0].parse().unwrap();
            let info = lookup(code).unwrap_or_else(|| panic!("XID {code} missing"));
            assert_eq!(info.name, rec[1].trim());
            assert_eq!(info.severity, severity_of(rec[3].trim()), "XID {code}");
            rows += 1;
        }
        assert_eq!(rows, catalog().len());
        assert!((1..=172).all(|c| lookup(c).is_some()), "codes 1–172 all catalogued");
    }
}
