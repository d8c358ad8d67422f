//! `EventClass`: the one typed list of what an event can say, shared by the agent's classifiers, the
//! analyzer's detectors and the simulator. On the wire it is the snake_case name (`nic_link_down`), so
//! the JSON contract did not change when the bare strings became a type; an unknown name is refused
//! with the field's path, like any other bad value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Severity;

macro_rules! event_classes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal;)*) => {
        /// What one event shows. Kernel-log classes come from the agent's line classifier, NVML classes
        /// from its event set, agent classes from its own observations (a process gone, a GPU lost).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventClass { $($(#[$doc])* $variant,)* }

        impl EventClass {
            /// Every class, in declaration order.
            pub const ALL: &'static [EventClass] = &[$(EventClass::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(EventClass::$variant => $name,)* }
            }

            /// The class with this wire name.
            pub fn parse(s: &str) -> Option<EventClass> {
                match s { $($name => Some(EventClass::$variant),)* _ => None }
            }
        }
    };
}

event_classes! {
    /// An NVIDIA XID, from the kernel line `NVRM: Xid (PCI:…): N, …` or from NVML's event set.
    Xid = "xid";
    /// "GPU has fallen off the bus", which can come without an XID.
    GpuFallenOffBus = "gpu_fallen_off_bus";
    /// Other NVRM errors (RmInitAdapter failed, GPU initialization failures).
    GpuDriverError = "gpu_driver_error";
    /// An NVSwitch SXid.
    NvswitchSxid = "nvswitch_sxid";
    /// NVLink errors the driver logs outside an XID.
    NvlinkError = "nvlink_error";
    /// A fabric port or netdev lost its link (mlx5 `Link DOWN`, `NIC Link is Down`).
    NicLinkDown = "nic_link_down";
    /// The link came back (`Link ACTIVE`, `NIC Link is Up`).
    NicLinkUp = "nic_link_up";
    /// mlx5 health syndromes, command timeouts, firmware errors.
    NicDriverError = "nic_driver_error";
    /// `NETDEV WATCHDOG: eth1 (mlx5_core): transmit queue 3 timed out`.
    NetdevWatchdog = "netdev_watchdog";
    /// PCIe AER corrected errors.
    PcieAerCorrected = "pcie_aer_corrected";
    /// PCIe AER uncorrected (fatal or non-fatal) errors, DPC containment.
    PcieAerUncorrected = "pcie_aer_uncorrected";
    /// `mce: [Hardware Error]`.
    Mce = "mce";
    /// EDAC corrected memory errors.
    EdacCe = "edac_ce";
    /// EDAC uncorrected memory errors.
    EdacUe = "edac_ue";
    /// The global OOM killer (`Out of memory: Killed process`): the host ran out.
    OomKill = "oom_kill";
    /// A memory cgroup's OOM (`Memory cgroup out of memory: Killed process`): a job hit its own limit.
    CgroupOomKill = "cgroup_oom_kill";
    /// `INFO: task … blocked for more than N seconds`.
    HungTask = "hung_task";
    /// Block-layer I/O errors for a device.
    IoError = "io_error";
    /// NCCL / PyTorch watchdog timeouts from a training log.
    NcclTimeout = "nccl_timeout";
    /// NCCL errors (`ncclSystemError`, `ncclRemoteError`, …) from a training log.
    NcclError = "nccl_error";
    /// IB / verbs completion errors (`IBV_WC_RETRY_EXC_ERR`, …).
    IbCompletionError = "ib_completion_error";
    /// A training process's connection to a peer was reset, closed or refused (NCCL's sockets,
    /// Gloo): `Call to recv from 10.1.2.3<43116> failed : Connection reset by peer`.
    NcclPeerConnection = "nccl_peer_connection";
    /// NVML: a corrected (single-bit) ECC error.
    EccSbe = "ecc_sbe";
    /// NVML: an uncorrected (double-bit) ECC error.
    EccDbe = "ecc_dbe";
    /// The agent: NVML answered GPU_IS_LOST, or the GPU vanished from the device list.
    GpuLost = "gpu_lost";
    /// The agent: a rank's process is gone.
    ProcessExit = "process_exit";
    /// The progress API: a rank posted a non-finite loss or gradient norm.
    NonfiniteLoss = "nonfinite_loss";
    /// The progress API: a rank posted its own non-zero exit.
    RankExit = "rank_exit";
    /// The classifier's answer for a line that shows nothing. Never sent: the agent drops such lines
    /// and the analyzer refuses an event of this class. It is the default, so an event built without a
    /// class is refused rather than mistaken for one.
    #[default]
    None = "none";
}

impl EventClass {
    /// Severity of the class on its own (XIDs take theirs from the catalog, `crate::xid`).
    pub fn default_severity(self) -> Severity {
        use EventClass::*;
        match self {
            GpuFallenOffBus | GpuDriverError | PcieAerUncorrected | EdacUe | NicLinkDown | NicDriverError | EccDbe
            | GpuLost => Severity::Critical,
            NvswitchSxid | NvlinkError | NetdevWatchdog | Mce | OomKill | CgroupOomKill | HungTask | IoError
            | NcclTimeout | NcclError | IbCompletionError | NcclPeerConnection | Xid | ProcessExit | NonfiniteLoss
            | RankExit => Severity::Warning,
            NicLinkUp | PcieAerCorrected | EdacCe | EccSbe | None => Severity::Info,
        }
    }

    /// True for GPU-side kernel classes whose PCI `device` names a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(
            self,
            EventClass::Xid | EventClass::GpuFallenOffBus | EventClass::GpuDriverError | EventClass::NvlinkError
        )
    }

    /// True for classes whose component is a NIC (named by its IB device or netdev).
    pub fn is_nic(self) -> bool {
        matches!(
            self,
            EventClass::NicLinkDown
                | EventClass::NicLinkUp
                | EventClass::NicDriverError
                | EventClass::NetdevWatchdog
                | EventClass::IbCompletionError
        )
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventClass::parse(s).ok_or_else(|| format!("unknown event class {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for &c in EventClass::ALL {
            assert_eq!(EventClass::parse(c.as_str()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<EventClass>(&json).unwrap(), c);
        }
    }

    #[test]
    fn unknown_name_is_refused() {
        assert!(serde_json::from_str::<EventClass>("\"nic_link_sideways\"").is_err());
        assert!("nic_link_sideways".parse::<EventClass>().is_err());
    }
}
