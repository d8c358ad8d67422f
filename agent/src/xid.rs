//! NVIDIA's XID triage workflows that need history (XID 13/31 repeating on one GPU, XID 45 following
//! another). The catalog itself (category, severity, action, likely cause) is `faultline_proto::xid`.

use std::collections::{BTreeMap, VecDeque};

use faultline_proto::Severity;
pub use faultline_proto::xid::{LikelyCause, UNKNOWN_XID_SEVERITY, XidInfo, describe, lookup, severity};

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
