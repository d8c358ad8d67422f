//! Detectors: pure functions from state windows to `Symptom`s, one family per file. No I/O, no
//! clock: `now_ms` is an argument. Hard evidence fires at once; soft evidence must persist
//! (`SOFT_SAMPLES`) and is judged against peers.

pub mod gpu;
pub mod hang;
pub mod host;
pub mod job;
pub mod nccl;
pub mod nic;
pub mod pingmesh;
pub mod sdc;

use faultline_proto::{ComponentId, FaultClass, Severity};

/// Consecutive samples a soft symptom must hold before it counts: 3 samples = 20–30 s at the
/// default 10 s interval, which keeps slowdowns inside the 60 s diagnosis budget while a single
/// noisy sample (±2% jitter, one checkpoint pause) never qualifies.
pub const SOFT_SAMPLES: usize = 3;

/// How long an instant event (XID, DBE, OOM kill, MCE, I/O error) stays a live symptom after it was
/// seen: 5 minutes, long enough for the localizer to see it next to its consequences.
pub const EVENT_HOLD_MS: i64 = 300_000;

/// What a detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SymptomKind {
    // GPU
    GpuLost,
    GpuUnresponsive,
    XidFatal,
    XidAppRepeated,
    EccDbe,
    SramUncorrectable,
    RowRemapFailure,
    RowRemapPending,
    SbeStorm,
    ThermalThrottle,
    PowerBrake,
    ClockLow,
    PcieDegraded,
    // NVLink
    NvlinkDown,
    NvlinkErrors,
    // NIC
    NicDown,
    NicFlap,
    NicErrors,
    NicSpeedLow,
    NicCongested,
    // host
    HeartbeatLost,
    OomKill,
    Mce,
    FanFailure,
    CpuContention,
    MemoryPressure,
    DiskError,
    // job and rank
    JobStalled,
    JobCrashed,
    JobSlow,
    RankExited,
    Straggler,
    NonFinite,
    GradMismatch,
    // supporting evidence from signals that never open an incident alone
    CounterSaturated,
    NicDriver,
    PcieAer,
    HungTask,
    SdcSuspect,
    // collective-communication evidence from training logs (`nccl`)
    /// The element most failing edges between ranks share.
    CommErrors,
    /// One end of a lone failing edge: either end may be at fault.
    CommEdgeSuspect,
    /// The rank whose collective sequence number lags its group's.
    CollectiveLaggard,
    /// PyTorch's NaN check failed on a rank: its GPU poisoned a collective's input.
    CollectiveNanCheck,
    // active fabric probes (`pingmesh`)
    /// Probes through this element (NIC, leaf, spine) are lost or slow while the rest are fine.
    ProbeLoss,
}

impl SymptomKind {
    pub fn as_str(self) -> &'static str {
        use SymptomKind::*;
        match self {
            GpuLost => "gpu_lost",
            GpuUnresponsive => "gpu_unresponsive",
            XidFatal => "xid_critical",
            XidAppRepeated => "xid_app_repeated",
            EccDbe => "ecc_dbe",
            SramUncorrectable => "sram_uncorrectable",
            RowRemapFailure => "row_remap_failure",
            RowRemapPending => "row_remap_pending",
            SbeStorm => "ecc_sbe_storm",
            ThermalThrottle => "thermal_throttle",
            PowerBrake => "power_brake",
            ClockLow => "sm_clock_low",
            PcieDegraded => "pcie_degraded",
            NvlinkDown => "nvlink_down",
            NvlinkErrors => "nvlink_errors",
            NicDown => "link_down",
            NicFlap => "link_flap",
            NicErrors => "link_errors",
            NicSpeedLow => "link_speed_low",
            NicCongested => "congestion",
            HeartbeatLost => "heartbeat_lost",
            OomKill => "oom_kill",
            Mce => "mce",
            FanFailure => "fan_failure",
            CpuContention => "cpu_contention",
            MemoryPressure => "memory_pressure",
            DiskError => "disk_error",
            JobStalled => "job_stalled",
            JobCrashed => "job_crashed",
            JobSlow => "job_slow",
            RankExited => "rank_exited",
            Straggler => "straggler",
            NonFinite => "nonfinite_loss",
            GradMismatch => "grad_norm_mismatch",
            CounterSaturated => "counter_saturated",
            NicDriver => "nic_driver_errors",
            PcieAer => "pcie_aer",
            HungTask => "hung_task",
            SdcSuspect => "sdc_suspect",
            CommErrors => "collective_comm_errors",
            CommEdgeSuspect => "collective_edge_suspect",
            CollectiveLaggard => "collective_laggard",
            CollectiveNanCheck => "collective_nan_check",
            ProbeLoss => "probe_loss",
        }
    }

    /// Consequences are what jobs suffer; they never open an incident on their own unless nothing
    /// under the job explains them (then the job itself is the root).
    pub fn is_consequence(self) -> bool {
        use SymptomKind::*;
        matches!(self, JobStalled | JobCrashed | JobSlow | RankExited)
    }

    /// Notes: what a signal says about a component that no fault needs (a saturated counter, driver
    /// lines, AER, a hung task, a node-level SDC question). Shown on the component and as evidence,
    /// but they neither open an incident nor keep one open: a healthy port can sit at a saturated
    /// counter for months.
    pub fn is_note(self) -> bool {
        use SymptomKind::*;
        matches!(self, CounterSaturated | NicDriver | PcieAer | HungTask | SdcSuspect)
    }

    /// Supporting evidence: strengthens a hypothesis, never opens one alone.
    pub fn is_supporting(self) -> bool {
        use SymptomKind::*;
        matches!(
            self,
            XidAppRepeated
                | RowRemapPending
                | ClockLow
                | MemoryPressure
                | NicCongested
                | CounterSaturated
                | NicDriver
                | PcieAer
                | HungTask
                | SdcSuspect
                | CommEdgeSuspect
                | CollectiveLaggard
        )
    }
}

/// One detector finding on one component.
#[derive(Debug, Clone, PartialEq)]
pub struct Symptom {
    pub component: ComponentId,
    pub kind: SymptomKind,
    pub severity: Severity,
    /// When the condition began (report time, ms).
    pub onset_ms: i64,
    /// The fault class this symptom points to if its component is the root.
    pub class: Option<FaultClass>,
    /// The XID behind it, for the recommended action.
    pub xid: Option<u32>,
    /// The number the sentence quotes (pid for OOM, link for NVLink XIDs, …).
    pub value: f64,
    /// One sentence with the number in it.
    pub detail: String,
}

impl Symptom {
    pub fn new(component: ComponentId, kind: SymptomKind, onset_ms: i64, detail: String) -> Self {
        let severity = if kind.is_supporting() { Severity::Info } else { Severity::Warning };
        Symptom { component, kind, severity, onset_ms, class: None, xid: None, value: 0.0, detail }
    }
    pub fn class(mut self, c: FaultClass) -> Self {
        self.class = Some(c);
        self
    }
    pub fn critical(mut self) -> Self {
        self.severity = Severity::Critical;
        self
    }
    pub fn value(mut self, v: f64) -> Self {
        self.value = v;
        self
    }
    pub fn xid(mut self, x: u32) -> Self {
        self.xid = Some(x);
        self
    }
}

/// Median of a slice (NaN-free input); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Median and median absolute deviation.
pub fn median_mad(v: &[f64]) -> Option<(f64, f64)> {
    let mut a = v.to_vec();
    let m = median(&mut a)?;
    let mut d: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut d)?;
    Some((m, mad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_statistics() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(median_mad(&[1.0, 1.0, 1.0, 10.0]), Some((1.0, 0.0)));
    }
}
