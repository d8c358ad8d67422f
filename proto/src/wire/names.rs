//! The report's unit enums by their wire names (the serde/JSON names) and back, by `match`: what
//! the compact codec writes into the string table and parses out of it, without going through a
//! serde serializer or deserializer for every value. A test checks every name against serde's.

use crate::Severity;
use crate::report::{EventSource, GpuState, NicKind, ProcState, ProgressStatus, SchedState, Scheduler};

/// A unit enum with a wire name per variant (the name serde writes to JSON).
pub(super) trait WireName: Sized + Copy + 'static {
    /// Every variant, in declaration order.
    const ALL: &'static [Self];
    fn wire_name(self) -> &'static str;
    fn from_wire_name(s: &str) -> Option<Self>;
    /// The message a decoder gives for a name that is none of these.
    fn unknown(s: &str) -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|v| v.wire_name()).collect();
        format!("unknown variant {s:?}, expected one of {}", names.join(", "))
    }
}

macro_rules! wire_names {
    ($($ty:ident { $($v:ident = $n:literal),* $(,)? })*) => {
        $(impl WireName for $ty {
            const ALL: &'static [Self] = &[$($ty::$v),*];
            fn wire_name(self) -> &'static str {
                match self { $($ty::$v => $n),* }
            }
            fn from_wire_name(s: &str) -> Option<Self> {
                match s { $($n => Some($ty::$v),)* _ => None }
            }
        })*
    };
}

wire_names! {
    GpuState { Ok = "ok", Lost = "lost", Unresponsive = "unresponsive" }
    NicKind { Infiniband = "infiniband", Netdev = "netdev" }
    Scheduler { Slurm = "slurm", Torchrun = "torchrun", Kubernetes = "kubernetes", Unknown = "unknown" }
    SchedState {
        Pending = "pending", Running = "running", Completing = "completing", Completed = "completed",
        Failed = "failed", Cancelled = "cancelled", Timeout = "timeout", NodeFail = "node_fail",
        OutOfMemory = "out_of_memory", Preempted = "preempted",
    }
    ProcState {
        Running = "running", Sleeping = "sleeping", DiskSleep = "disk_sleep", Zombie = "zombie",
        Stopped = "stopped", Exited = "exited", Unknown = "unknown",
    }
    ProgressStatus { Running = "running", Checkpointing = "checkpointing", Evaluating = "evaluating", Exited = "exited" }
    EventSource { Nvml = "nvml", Kmsg = "kmsg", Agent = "agent", TrainingLog = "training_log" }
    Severity { Info = "info", Warning = "warning", Critical = "critical" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name is serde's, both ways: a report's JSON and its compact form name values alike.
    fn agrees<T: WireName + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>() {
        for &v in T::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.wire_name()));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
            assert_eq!(T::from_wire_name(v.wire_name()), Some(v));
        }
        assert_eq!(T::from_wire_name("no_such_value"), None);
        assert!(T::unknown("x").contains(T::ALL[0].wire_name()));
    }

    #[test]
    fn every_wire_name_is_the_serde_name() {
        agrees::<GpuState>();
        agrees::<NicKind>();
        agrees::<Scheduler>();
        agrees::<SchedState>();
        agrees::<ProcState>();
        agrees::<ProgressStatus>();
        agrees::<EventSource>();
        agrees::<Severity>();
    }
}
