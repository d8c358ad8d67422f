//! The XID class table: what an NVIDIA XID code says about the GPU that raised it, from the XID
//! catalog in `analyzer/data/xid-classes.csv` (NVIDIA's catalog; see the provenance lines there).

use std::collections::HashMap;
use std::sync::LazyLock;

use faultline_proto::{Action, FaultClass};

/// What one XID means to the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidClass {
    /// Hardware or firmware fault of the GPU itself: opens an incident at once.
    Fatal(FaultClass),
    /// Application-level (13, 31, 43, …): noise alone; the same GPU repeating it is hardware.
    App,
    /// A consequence of an earlier error (45, "preemptive cleanup"): never a cause.
    Consequence,
    /// Informational (63, 154, …) or unknown: recorded, not a symptom.
    Info,
}

#[derive(Debug, Clone)]
pub struct XidInfo {
    pub code: u32,
    pub category: String,
    pub severity: String,
    /// NVIDIA's immediate action mnemonic (`RESET_GPU`, `RESTART_BM`, `RESTART_APP`, `IGNORE`, …).
    pub action: String,
}

static TABLE: LazyLock<HashMap<u32, XidInfo>> = LazyLock::new(|| {
    let mut m = HashMap::new();
    for line in include_str!("../data/xid-classes.csv").lines() {
        if line.starts_with('#') || line.starts_with("code,") || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 4 {
            continue;
        }
        if let Ok(code) = f[0].parse::<u32>() {
            m.insert(
                code,
                XidInfo { code, category: f[1].to_string(), severity: f[2].to_string(), action: f[3].to_string() },
            );
        }
    }
    m
});

/// The catalog row for a code, if the catalog knows it.
pub fn info(code: u32) -> Option<&'static XidInfo> {
    TABLE.get(&code)
}

/// Classify an XID. The fault-class mapping follows the fault catalog: 79 lost; 48/94/95/140/171/172
/// memory; 119/120 and other firmware halts GSP hang; 74/136/144–150/155 NVLink; 64 remap failure;
/// 92 SBE storm.
pub fn classify(code: u32) -> XidClass {
    use FaultClass::*;
    match code {
        79 => XidClass::Fatal(GpuLost),
        48 | 140 | 171 | 172 => XidClass::Fatal(GpuHbmUncorrectable),
        // 94 contained / 95 uncontained: HBM or SRAM, decided by which ECC counter moved.
        94 | 95 => XidClass::Fatal(GpuHbmUncorrectable),
        119 | 120 | 62 | 46 | 109 | 143 | 158 | 169 => XidClass::Fatal(GpuGspHang),
        74 | 136 | 144..=150 | 155 => XidClass::Fatal(NvlinkDown),
        64 => XidClass::Fatal(GpuRowRemapFailure),
        92 => XidClass::Fatal(GpuEccSbeStorm),
        45 => XidClass::Consequence,
        _ => match info(code) {
            Some(i) if i.category == "app" || i.action == "RESTART_APP" => XidClass::App,
            _ => XidClass::Info,
        },
    }
}

/// The catalog's immediate action as our `Action`.
pub fn action(code: u32) -> Action {
    match info(code).map(|i| i.action.as_str()) {
        Some("RESTART_BM") => Action::RebootNode,
        Some("RESET_GPU") | Some("WORKFLOW_XID_48") | Some("WORKFLOW_NVLINK_ERR") | Some("WORKFLOW_NVLINK5_ERR") => {
            Action::ResetGpu
        }
        Some("RESTART_APP") => Action::RestartJob,
        Some("CHECK_MECHANICALS") => Action::ReplacePart,
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(info(79).is_some());
        assert_eq!(action(79), Action::RebootNode);
        assert_eq!(action(119), Action::ResetGpu);
        assert_eq!(action(13), Action::RestartJob);
        assert_eq!(action(63), Action::None);
    }
}
