//! The collector registry: one module per telemetry source, all behind the `Collector` trait.
//! This file is the only place that lists them.

pub mod gpu;
pub mod host;
pub mod infiniband;
pub mod jobs;
pub mod kmsg;
pub mod net;

use faultline_proto::NodeReport;

/// A collector failure. Errors are data: counted per collector, logged once, and the others go on.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// One telemetry source. `collect` fills its part of the report for this cycle; collectors run in
/// registry order, so a later one (jobs) may read what an earlier one (gpu) wrote.
pub trait Collector: Send {
    /// Stable name, used as the `collector` label of `faultline_agent_collector_errors_total`.
    fn name(&self) -> &'static str;
    /// Fill this collector's part of `report`. Partial data plus an error is allowed: whatever was
    /// written stays in the report.
    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError>;
}

/// PCI bus id → GPU index, filled by the GPU collector from NVML and read by the kernel-log watcher
/// to turn `NVRM: Xid (PCI:0000:3b:00)` into `gpu3`. Keys are lower-case `dddd:bb:dd` (domain, bus,
/// device; no function), see `pci_key`.
pub type PciMap = std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<String, u32>>>;

/// Normalize a PCI address as NVML (`00000000:3B:00.0`) or the kernel (`0000:3b:00`, `3b:00.0`)
/// writes it into the `PciMap` key form `0000:3b:00`.
pub fn pci_key(addr: &str) -> Option<String> {
    let a = addr.trim().to_ascii_lowercase();
    let a = a.split('.').next()?; // drop the function
    let parts: Vec<&str> = a.split(':').collect();
    let (dom, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0", *b, *v),
        _ => return None,
    };
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let dev = u32::from_str_radix(dev, 16).ok()?;
    Some(format!("{:04x}:{:02x}:{:02x}", dom & 0xffff, bus, dev))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pci_keys_from_nvml_and_kernel_forms_agree() {
        assert_eq!(super::pci_key("00000000:3B:00.0").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("0000:3b:00").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("3b:00.0").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("zz"), None);
    }
}
