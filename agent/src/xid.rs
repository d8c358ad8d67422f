//! NVIDIA XID knowledge: the embedded catalog (category, severity, action, likely cause) and NVIDIA's
//! triage workflows that need history (XID 13/31 repeating on one GPU, XID 45 following another).
//!
//! The catalog is `agent/data/xid-catalog.csv`, compiled in. Its severity column is our mapping of
//! NVIDIA's recommended action: reset/reboot → critical, restart the app → warning, ignore → info.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use faultline_proto::Severity;

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

/// XID 13 (graphics engine exception) and 31 (MMU fault) are the program's fault when alone; NVIDIA's
/// workflows call them hardware when they keep coming back on the same GPU. This many within
/// `APP_XID_REPEAT_WINDOW_MS` counts as "keeps coming back" (our reading of "repeated").
pub const APP_XID_REPEAT_COUNT: usize = 3;
/// Two occurrences from different processes are also a repeat: a bad program would not move.
pub const APP_XID_DISTINCT_PIDS: usize = 2;
/// Window for the repeat rule: one hour, long enough to span a job restart after the first fault.
pub const APP_XID_REPEAT_WINDOW_MS: i64 = 3_600_000;
/// XID 45 (preemptive cleanup) within this long after another XID on the same GPU is taken as its
/// consequence: the driver's cleanup follows the fault within a second or two.
pub const CONSEQUENCE_WINDOW_MS: i64 = 10_000;

/// The verdict on one XID in the light of what came before on the same GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub severity: Severity,
    pub likely_cause: LikelyCause,
    /// The earlier XID this one follows from ("caused by previous Xid N", or XID 45 after another).
    pub caused_by_xid: Option<u32>,
    /// A consequence of something else, never a root cause by itself.
    pub consequence: bool,
    /// One line for the event message.
    pub note: String,
}

#[derive(Debug, Clone)]
struct Seen {
    ts_ms: i64,
    code: u32,
    pid: Option<u32>,
}

/// Per-GPU XID history that applies NVIDIA's workflows. Bounded: keeps the last hour per GPU, at most
/// `MAX_HISTORY` entries each.
#[derive(Debug, Default)]
pub struct XidTracker {
    history: BTreeMap<String, VecDeque<Seen>>,
}

const MAX_HISTORY: usize = 256;

impl XidTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record XID `code` on `gpu` (a component like `gpu3`, or the PCI address when unmapped) and judge it.
    pub fn assess(&mut self, ts_ms: i64, gpu: &str, code: u32, pid: Option<u32>, caused_by: Option<u32>) -> Assessment {
        let hist = self.history.entry(gpu.to_string()).or_default();
        while hist.front().is_some_and(|s| ts_ms - s.ts_ms > APP_XID_REPEAT_WINDOW_MS) {
            hist.pop_front();
        }
        let info = lookup(code);
        let mut a = Assessment {
            severity: info.map(|i| i.severity).unwrap_or(UNKNOWN_XID_SEVERITY),
            likely_cause: info.map(|i| i.likely_cause).unwrap_or(LikelyCause::Unknown),
            caused_by_xid: caused_by,
            consequence: caused_by.is_some(),
            note: String::new(),
        };
        match code {
            13 | 31 => {
                let same: Vec<&Seen> = hist.iter().filter(|s| s.code == 13 || s.code == 31).collect();
                let mut pids: Vec<u32> = same.iter().filter_map(|s| s.pid).chain(pid).collect();
                pids.sort_unstable();
                pids.dedup();
                if same.len() + 1 >= APP_XID_REPEAT_COUNT || pids.len() >= APP_XID_DISTINCT_PIDS {
                    a.likely_cause = LikelyCause::Hardware;
                    a.severity = Severity::Critical;
                    a.note =
                        format!("repeated on this GPU ({} times in the last hour): likely hardware", same.len() + 1);
                } else {
                    a.likely_cause = LikelyCause::Application;
                    a.note = "alone: likely the application".to_string();
                }
            }
            45 => {
                a.consequence = true;
                let prior = hist.iter().rev().find(|s| s.code != 45 && ts_ms - s.ts_ms <= CONSEQUENCE_WINDOW_MS);
                if a.caused_by_xid.is_none() {
                    a.caused_by_xid = prior.map(|s| s.code);
                }
                a.severity = Severity::Info;
                a.note = match a.caused_by_xid {
                    Some(p) => format!("cleanup after XID {p}: a consequence"),
                    None => {
                        "preemptive cleanup without an earlier XID: a consequence of a killed or failed job".to_string()
                    }
                };
            }
            _ => {
                if let Some(p) = caused_by {
                    a.note = format!("caused by XID {p}");
                }
            }
        }
        if hist.len() >= MAX_HISTORY {
            hist.pop_front();
        }
        hist.push_back(Seen { ts_ms, code, pid });
        a
    }
}

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

    #[test]
    fn xid13_alone_is_the_application_but_repeated_is_hardware() {
        let mut t = XidTracker::new();
        let a = t.assess(1_000, "gpu1", 13, Some(10), None);
        assert_eq!(a.likely_cause, LikelyCause::Application);
        let a = t.assess(2_000, "gpu1", 13, Some(10), None);
        assert_eq!(a.likely_cause, LikelyCause::Application);
        let a = t.assess(3_000, "gpu1", 31, Some(10), None);
        assert_eq!(a.likely_cause, LikelyCause::Hardware);
        assert_eq!(a.severity, Severity::Critical);
        // Another GPU is judged on its own history.
        assert_eq!(t.assess(3_000, "gpu2", 13, None, None).likely_cause, LikelyCause::Application);
    }

    #[test]
    fn xid13_from_two_processes_is_hardware() {
        let mut t = XidTracker::new();
        t.assess(1_000, "gpu0", 13, Some(10), None);
        assert_eq!(t.assess(2_000, "gpu0", 13, Some(11), None).likely_cause, LikelyCause::Hardware);
    }

    #[test]
    fn xid13_history_expires() {
        let mut t = XidTracker::new();
        t.assess(0, "gpu0", 13, None, None);
        t.assess(1, "gpu0", 13, None, None);
        let a = t.assess(APP_XID_REPEAT_WINDOW_MS + 10, "gpu0", 13, None, None);
        assert_eq!(a.likely_cause, LikelyCause::Application);
    }

    #[test]
    fn xid45_is_a_consequence_of_the_xid_before_it() {
        let mut t = XidTracker::new();
        t.assess(1_000, "gpu0", 79, None, None);
        let a = t.assess(1_500, "gpu0", 45, None, None);
        assert!(a.consequence);
        assert_eq!(a.caused_by_xid, Some(79));
        assert_eq!(a.severity, Severity::Info);
        let a = t.assess(900_000, "gpu0", 45, None, Some(145));
        assert_eq!(a.caused_by_xid, Some(145));
        let a = t.assess(2_000_000, "gpu3", 45, None, None);
        assert!(a.consequence);
        assert_eq!(a.caused_by_xid, None);
    }
}
