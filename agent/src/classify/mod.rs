//! Kernel-log and training-log line classifier, shared by the kmsg watcher and `classify-log`.
//!
//! `classify` is one pure function: a line in, a `Classification` out. It first strips whatever
//! prefix the line came with (`/dev/kmsg` records, `[  123.456]`, `[Fri Aug 30 11:43:09 2024]`,
//! ISO stamps, `dmesg --decode` facility/level, syslog headers up to `kernel:`), then applies rules
//! written for the message formats of the drivers that print them (NVRM, nvidia-nvswitch, mlx5,
//! bonding, netdev, PCIe AER/DPC, EDAC/MCE, the OOM killer, the block layer, NCCL, UCX/verbs). It
//! never panics, whatever the bytes.

use faultline_proto::Severity;
use serde::Serialize;

use crate::pci::pci_key;

/// What a line shows: the one event-class list of `faultline_proto`, whose `None` is a benign line.
pub use faultline_proto::EventClass as Class;

/// What `classify` found in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    pub severity: Severity,
    pub xid: Option<u32>,
    /// NVSwitch SXid code.
    pub sxid: Option<u32>,
    /// "caused by previous Xid N".
    pub caused_by_xid: Option<u32>,
    /// PCI device as `0000:3b:00` (domain:bus:device, function and MIG suffixes dropped).
    pub device: Option<String>,
    /// NIC: IB device (`mlx5_3`) or netdev (`eth0`, `enp83s0f0np0`).
    pub nic: Option<String>,
    /// The killed, hung or faulting process.
    pub pid: Option<u32>,
    /// Block device, partition dropped (`nvme0n1`, `sda`).
    pub disk: Option<String>,
    /// The line with its timestamp/syslog prefix removed.
    pub message: String,
}

impl Classification {
    fn new(class: Class, message: &str) -> Self {
        Classification {
            class,
            severity: class.default_severity(),
            xid: None,
            sxid: None,
            caused_by_xid: None,
            device: None,
            nic: None,
            pid: None,
            disk: None,
            message: message.to_string(),
        }
    }

    fn none(message: &str) -> Self {
        Self::new(Class::None, message)
    }
}

/// The JSON line `classify-log` prints.
#[derive(Debug, Serialize)]
struct JsonOut<'a> {
    class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sxid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caused_by_xid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<&'a str>,
}

/// One JSON object for `c`: `{"class":"none"}` when nothing was found.
pub fn to_json(c: &Classification) -> String {
    let out = if c.class == Class::None {
        JsonOut {
            class: "none",
            xid: None,
            sxid: None,
            device: None,
            severity: None,
            caused_by_xid: None,
            nic: None,
            pid: None,
            disk: None,
        }
    } else {
        JsonOut {
            class: c.class.as_str(),
            xid: c.xid,
            sxid: c.sxid,
            device: c.device.as_deref(),
            severity: Some(c.severity.as_str()),
            caused_by_xid: c.caused_by_xid,
            nic: c.nic.as_deref(),
            pid: c.pid,
            disk: c.disk.as_deref(),
        }
    };
    serde_json::to_string(&out).unwrap_or_else(|_| r#"{"class":"none"}"#.to_string())
}

pub mod cli;
mod fields;
pub mod nccl;
mod prefix;
#[cfg(test)]
mod tests;

use fields::*;
pub use prefix::strip_prefixes;

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

fn any(s: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| s.contains(n))
}

/// Words that turn an informational driver line into an error report.
const FAILURE_WORDS: [&str; 12] = [
    "fail",
    "error",
    "timeout",
    "timed out",
    "mismatch",
    "fatal",
    "assert",
    "not responding",
    "unable",
    "corrupt",
    "exception",
    "invalid",
];

/// An NVSwitch error's severity from its own words: "fatal" pages, "non-fatal" (or neither) warns.
fn nvswitch_severity(lower: &str) -> Severity {
    if lower.contains("non-fatal") || lower.contains("nonfatal") {
        Severity::Warning
    } else if lower.contains("fatal") {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

fn has_failure_word(lower: &str) -> bool {
    any(lower, &FAILURE_WORDS)
}

/// Drivers of the NICs found on GPU nodes (and common onboard ones), as they prefix their lines.
const NIC_DRIVERS: [&str; 18] = [
    "mlx5_core",
    "mlx4_core",
    "mlx5_ib",
    "mlx4_en",
    "bnxt_en",
    "bnxt_re",
    "ixgbe",
    "i40e",
    "ice",
    "igb",
    "igc",
    "e1000e",
    "tg3",
    "ena",
    "efa",
    "irdma",
    "ionic",
    "hfi1",
];

fn nic_driver_line(s: &str) -> bool {
    let first = s.split([' ', ':']).next().unwrap_or("");
    NIC_DRIVERS.contains(&first)
}

/// Classify one line. Pure; never panics.
pub fn classify(line: &str) -> Classification {
    let m = strip_prefixes(line);
    if m.is_empty() {
        return Classification::none(m);
    }
    let lower = m.to_ascii_lowercase();

    // GPU: XID first; its line may also say "fallen off the bus".
    if let Some((code, device)) = parse_xid(m) {
        let mut c = Classification::new(Class::Xid, m);
        c.xid = Some(code);
        c.severity = crate::xid::severity(code);
        c.device = device.or_else(|| first_pci(m));
        c.caused_by_xid =
            number_after(m, "caused by previous Xid").or_else(|| number_after(m, "caused by previous XID"));
        c.pid = parse_pid(m);
        return c;
    }
    // NVSwitch: `nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 28 …`.
    if let Some(pos) = m.find("SXid") {
        let mut c = Classification::new(Class::NvswitchSxid, m);
        let rest = &m[pos + 4..];
        let rest = match rest.trim_start().strip_prefix('(') {
            Some(r) => r.find(')').map(|e| &r[e + 1..]).unwrap_or(r),
            None => rest,
        };
        c.sxid = leading_number(rest.trim_start().trim_start_matches(':'));
        c.device = first_pci(m);
        c.severity = nvswitch_severity(&lower);
        return c;
    }

    // NVSwitch errors reported without an SXid (Fabric Manager, nvswitch driver).
    if lower.contains("nvswitch") && has_failure_word(&lower) {
        let mut c = Classification::new(Class::NvswitchSxid, m);
        c.device = first_pci(m);
        c.severity = nvswitch_severity(&lower);
        return c;
    }

    // Training-job logs: NCCL, PyTorch, UCX, verbs.
    if any(
        &lower,
        &[
            "got completion with error",
            "got completion from peer",
            "transport retry count exceeded",
            "transport retry counter exceeded",
            "cqe error",
            "ibv_wc_retry_exc_err",
            "wc_retry_exc",
            "remote access error",
            "local protection error",
            "rnr retry counter exceeded",
            "completion with error",
        ],
    ) || (lower.contains("ibv_poll_cq") && has_failure_word(&lower))
    {
        let mut c = Classification::new(Class::IbCompletionError, m);
        c.nic = parse_nic(m);
        return c;
    }
    if any(
        &lower,
        &[
            "watchdog caught collective operation timeout",
            "collective operation timeout",
            "nccl timeout",
            "ncclcommwatchdog",
            "timed out waiting for nccl",
            "nccl watchdog",
            "timeout at nccl work",
        ],
    ) || (lower.contains("processgroupnccl") && (lower.contains("timeout") || lower.contains("timed out")))
    {
        return Classification::new(Class::NcclTimeout, m);
    }
    if any(
        &lower,
        &[
            "nccl error",
            "ncclsystemerror",
            "ncclinternalerror",
            "ncclunhandledcudaerror",
            "ncclinvalidusage",
            "ncclremoteerror",
            "nccl failure",
            "distbackenderror",
            "nccl communicator was aborted",
        ],
    ) || (m.contains("NCCL WARN") && has_failure_word(&lower))
    {
        return Classification::new(Class::NcclError, m);
    }

    // PCIe AER and DPC. `pcieport …: AER: …`, `nvidia 0000:03:00.0: AER: can't recover`.
    if lower.contains("aer") || lower.contains("pcie bus error") || lower.contains("dpc:") || lower.contains("pciehp") {
        let corrected = lower.contains("severity=corrected")
            || lower.contains("corrected error received")
            || lower.contains("correctable error message received")
            || lower.contains("correctable error received")
            || lower.contains("multiple corrected error");
        let uncorrected = lower.contains("uncorrect")
            || lower.contains("severity=fatal")
            || lower.contains("non-fatal")
            || lower.contains("can't recover")
            || lower.contains("cannot recover")
            || lower.contains("device recovery failed")
            || lower.contains("containment event")
            || (lower.contains("pciehp") && lower.contains("link down"));
        if lower.contains("pciehp") && !uncorrected {
            return Classification::none(m);
        }
        if uncorrected || corrected {
            let class = if uncorrected && !lower.contains("severity=corrected") {
                Class::PcieAerUncorrected
            } else {
                Class::PcieAerCorrected
            };
            let mut c = Classification::new(class, m);
            // The reporting device: "received: X" / "received from X" names the source.
            let addrs = pci_addresses(m);
            c.device = match m.find("received") {
                Some(r) => addrs.iter().find(|(o, _)| *o > r).or(addrs.first()).map(|(_, k)| k.clone()),
                None => addrs.first().map(|(_, k)| k.clone()),
            };
            return c;
        }
    }

    // NVRM (the NVIDIA kernel driver).
    if m.contains("NVRM") || lower.starts_with("nvidia") || lower.contains("nvidia-nvlink") {
        let device = first_pci(m);
        if lower.contains("fallen off the bus") || lower.contains("fell off the bus") {
            let mut c = Classification::new(Class::GpuFallenOffBus, m);
            c.device = device;
            return c;
        }
        // First line of the three-line "fallen off the bus" message: the address and nothing else.
        if let Some(pos) = m.find("The NVIDIA GPU ") {
            let rest = m[pos + "The NVIDIA GPU ".len()..].trim();
            if device.is_some() && !rest.contains(' ') {
                let mut c = Classification::new(Class::GpuFallenOffBus, m);
                c.device = device;
                return c;
            }
            // "The NVIDIA GPU X (PCI ID: …) installed in this system is not supported": driver trouble.
            if rest.contains("(PCI ID") {
                let mut c = Classification::new(Class::GpuDriverError, m);
                c.device = device;
                return c;
            }
        }
        if lower.contains("nvlink") && has_failure_word(&lower) {
            let mut c = Classification::new(Class::NvlinkError, m);
            c.device = device;
            return c;
        }
        if has_failure_word(&lower) || lower.contains("not supported by") || lower.contains("gsp timeout") {
            let mut c = Classification::new(Class::GpuDriverError, m);
            c.device = device;
            return c;
        }
        return Classification::none(m);
    }

    // NICs.
    if lower.contains("netdev watchdog")
        || (lower.contains("transmit queue") && lower.contains("timed out"))
        || lower.contains("tx timeout")
    {
        let mut c = Classification::new(Class::NetdevWatchdog, m);
        c.nic = parse_nic(m);
        c.device = first_pci(m);
        return c;
    }
    let link_down = any(
        &lower,
        &[
            "link is down",
            "link down",
            "link status definitely down",
            "carrier lost",
            "changed to down",
            "port state changed to down",
            "lost carrier",
            "without any active interface",
        ],
    );
    let link_up = any(
        &lower,
        &[
            "link is up",
            "link up",
            "link active",
            "link status definitely up",
            "link status up",
            "link becomes ready",
            "changed to active",
            "gained carrier",
        ],
    );
    // Only for lines about a NIC: `ata1: SATA link down` is a disk port, not the network.
    if (link_down || link_up) && (parse_nic(m).is_some() || nic_driver_line(m)) {
        let mut c = Classification::new(if link_down { Class::NicLinkDown } else { Class::NicLinkUp }, m);
        c.nic = parse_nic(m);
        c.device = first_pci(m);
        return c;
    }
    if nic_driver_line(m) && has_failure_word(&lower) && !lower.contains("port module event") {
        let mut c = Classification::new(Class::NicDriverError, m);
        c.nic = parse_nic(m).filter(|n| !NIC_DRIVERS.contains(&n.as_str()));
        c.device = first_pci(m);
        return c;
    }

    // Host memory and CPU.
    if lower.contains("edac") {
        let words: Vec<&str> = m.split_whitespace().collect();
        let count_of = |tag: &str| words.windows(2).any(|w| w[1] == tag && w[0].bytes().all(|b| b.is_ascii_digit()));
        if count_of("UE") || lower.contains("uncorrected error") || lower.contains("uncorrectable error") {
            return Classification::new(Class::EdacUe, m);
        }
        if count_of("CE") || lower.contains("corrected error") || lower.contains("correctable error") {
            return Classification::new(Class::EdacCe, m);
        }
    }
    if lower.contains("[hardware error]")
        || any(
            &lower,
            &[
                "machine check event",
                "machine check exception",
                "machine check:",
                "machine check from",
                "machine check error",
            ],
        )
        || lower.contains("mce memory error")
        || lower.contains("handling mce")
        || (lower.contains("mc") && lower.contains("_status["))
    {
        return Classification::new(Class::Mce, m);
    }
    // A cgroup (job, container) that hit its own memory limit: the kernel names the memcg in the kill
    // line or its summary (`constraint=CONSTRAINT_MEMCG`, `oom_memcg=`). It concerns that job, not the
    // node; a global OOM (`Out of memory: Killed`, `global_oom`) is the node's.
    if lower.contains("memory cgroup out of memory")
        || (lower.contains("oom-kill") && (lower.contains("constraint_memcg") || lower.contains("oom_memcg=")))
    {
        let mut c = Classification::new(Class::CgroupOomKill, m);
        c.pid = parse_pid(m);
        return c;
    }
    if lower.contains("oom-kill")
        || lower.contains("out of memory: kill")
        || lower.contains("oom_reaper")
        || lower.contains("invoked oom-killer")
    {
        let mut c = Classification::new(Class::OomKill, m);
        c.pid = parse_pid(m);
        return c;
    }
    if (lower.contains("blocked for more than") && lower.contains("task")) || lower.contains("hung_task") {
        let mut c = Classification::new(Class::HungTask, m);
        // `INFO: task python:1234 blocked for more than 120 seconds.`
        if let Some(pos) = m.find("task ") {
            let tok = m[pos + 5..].split_whitespace().next().unwrap_or("");
            c.pid = tok.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        return c;
    }
    if any(
        &lower,
        &[
            "i/o error",
            "medium error",
            "critical target error",
            "blk_update_request",
            "buffer i/o error",
            "print_req_error",
            "failed result:",
        ],
    ) || (lower.contains("ext4-fs error") || (lower.contains("xfs") && lower.contains("error")))
        || (lower.starts_with("nvme nvme")
            && any(&lower, &["timeout", "controller is down", "reset", "failed", "removing"]))
    {
        let mut c = Classification::new(Class::IoError, m);
        c.disk = parse_disk(m);
        return c;
    }

    Classification::none(m)
}
