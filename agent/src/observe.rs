//! From what a node shows to the events the agent sends: the pure step between a raw kernel line
//! (or an NVML event, which gives a device handle and an XID code, nothing more) and an `Event`
//! naming its component. The kmsg watcher uses it, and so does the simulator, so that a simulated
//! line reaches the analyzer through exactly the classification and mapping a real one does.
//!
//! The mapping needs two facts about the node, both read from sysfs by the collectors: which PCI
//! device is which GPU index (`NVRM: Xid (PCI:0000:2a:00)` names the GPU by bus id), and which netdev
//! backs which IB device (a RoCE port's link lines name the netdev `eth1`, the fabric knows `mlx5_1`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use faultline_proto::{Event, EventClass, EventSource, NicKind, NodeReport, Severity};

use crate::classify::{Class, Classification, classify};
use crate::pci::pci_key;

/// Longest message kept from a line, in bytes (the kmsg watcher's limit).
pub const MAX_MESSAGE: usize = 512;

/// Netdev → IB device of the node's RDMA ports (`eth1` → `mlx5_1`), shared with the collectors.
pub type NetdevMap = Arc<RwLock<BTreeMap<String, String>>>;

/// What the agent knows about its node's devices, for naming the component of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMaps {
    /// PCI device in `pci_key` form (`0000:2a:00`) → GPU index.
    pub pci: BTreeMap<String, u32>,
    /// Netdev → IB device (`eth1` → `mlx5_1`).
    pub netdev: BTreeMap<String, String>,
    /// GPU index → PCI device (`pci_key` form), for NVML events.
    pub gpu_pci: BTreeMap<u32, String>,
}

impl NodeMaps {
    /// The maps a collected report implies: each GPU's PCI bus id, each IB port's netdev.
    pub fn from_report(r: &NodeReport) -> Self {
        let mut m = NodeMaps::default();
        for g in &r.gpus {
            if let Some(k) = g.pci_bus_id.as_deref().and_then(pci_key) {
                m.pci.insert(k.clone(), g.index);
                m.gpu_pci.insert(g.index, k);
            }
        }
        for n in &r.nics {
            if let (NicKind::Infiniband, Some(nd)) = (n.kind, n.netdev.as_ref()) {
                m.netdev.insert(nd.clone(), n.name.clone());
            }
        }
        m
    }

    /// Add a GPU (PCI address in any form the driver prints).
    pub fn add_gpu(&mut self, index: u32, pci_addr: &str) {
        if let Some(k) = pci_key(pci_addr) {
            self.pci.insert(k.clone(), index);
            self.gpu_pci.insert(index, k);
        }
    }

    /// Add an RDMA port's netdev.
    pub fn add_netdev(&mut self, netdev: &str, ib_device: &str) {
        self.netdev.insert(netdev.to_string(), ib_device.to_string());
    }
}

/// The component a classified line concerns, as the part after `<host>/`: a GPU by its PCI device,
/// a NIC by its IB device when the line names the netdev behind one, a disk by its name.
pub fn component(
    c: &Classification,
    gpu_of_pci: &dyn Fn(&str) -> Option<u32>,
    ib_of_netdev: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    match c.class {
        Class::Xid
        | Class::GpuFallenOffBus
        | Class::GpuDriverError
        | Class::NvlinkError
        | Class::PcieAerCorrected
        | Class::PcieAerUncorrected => c.device.as_deref().and_then(gpu_of_pci).map(|i| format!("gpu{i}")),
        Class::NicLinkDown
        | Class::NicLinkUp
        | Class::NicDriverError
        | Class::NetdevWatchdog
        | Class::IbCompletionError => c.nic.as_ref().map(|n| format!("nic:{}", ib_of_netdev(n).unwrap_or(n.clone()))),
        Class::IoError => c.disk.as_ref().map(|d| format!("disk:{d}")),
        _ => None,
    }
}

/// `component` with a node's maps.
pub fn component_of(c: &Classification, maps: &NodeMaps) -> Option<String> {
    component(c, &|d| maps.pci.get(d).copied(), &|n| maps.netdev.get(n).cloned())
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The event a classified kernel line becomes, before XID assessment and coalescing.
pub fn line_event(c: &Classification, component: Option<String>, ts_ms: i64) -> Event {
    Event {
        ts_ms,
        source: EventSource::Kmsg,
        class: c.class,
        severity: c.severity,
        component,
        xid: c.xid,
        caused_by_xid: c.caused_by_xid,
        device: c.device.clone(),
        pid: c.pid,
        count: 1,
        message: truncate(&c.message, MAX_MESSAGE),
        collective: None,
    }
}

/// A raw kernel line (any prefix `classify` strips) as the kmsg watcher would send it, or None for a
/// benign line. XID assessment (`xid::XidTracker`) and coalescing come after this.
pub fn kernel_line_event(line: &str, ts_ms: i64, maps: &NodeMaps) -> Option<Event> {
    let c = classify(line);
    if c.class == Class::None {
        return None;
    }
    let comp = component_of(&c, maps);
    Some(line_event(&c, comp, ts_ms))
}

/// An NVML critical-XID event: the device handle (resolved to its index) and the code, nothing more.
pub fn nvml_xid_event(gpu_index: u32, code: u32, ts_ms: i64, maps: &NodeMaps) -> Event {
    Event {
        ts_ms,
        source: EventSource::Nvml,
        class: EventClass::Xid,
        severity: crate::xid::severity(code),
        component: Some(format!("gpu{gpu_index}")),
        xid: Some(code),
        device: maps.gpu_pci.get(&gpu_index).cloned(),
        count: 1,
        message: format!("XID {} from NVML", crate::xid::describe(code)),
        ..Default::default()
    }
}

/// An NVML ECC event (single-bit: Info; double-bit: Critical) of one device handle.
pub fn nvml_ecc_event(gpu_index: u32, double_bit: bool, ts_ms: i64, maps: &NodeMaps) -> Event {
    let (class, severity, what) = if double_bit {
        (EventClass::EccDbe, Severity::Critical, "double-bit (uncorrectable)")
    } else {
        (EventClass::EccSbe, Severity::Info, "single-bit (corrected)")
    };
    Event {
        ts_ms,
        source: EventSource::Nvml,
        class,
        severity,
        component: Some(format!("gpu{gpu_index}")),
        device: maps.gpu_pci.get(&gpu_index).cloned(),
        count: 1,
        message: format!("{what} ECC error from NVML"),
        ..Default::default()
    }
}

/// The agent's own event when NVML answers GPU_IS_LOST for a device it knew.
pub fn gpu_lost_event(gpu_index: u32, uuid: &str, ts_ms: i64, maps: &NodeMaps) -> Event {
    Event {
        ts_ms,
        source: EventSource::Agent,
        class: EventClass::GpuLost,
        severity: Severity::Critical,
        component: Some(format!("gpu{gpu_index}")),
        device: maps.gpu_pci.get(&gpu_index).cloned(),
        count: 1,
        message: format!("GPU {gpu_index} ({uuid}) NVML answers GPU_IS_LOST"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> NodeMaps {
        let mut m = NodeMaps::default();
        m.add_gpu(3, "00000000:2A:00.0");
        m.add_netdev("eth1", "mlx5_1");
        m
    }

    #[test]
    fn an_xid_line_names_its_gpu_by_pci_bus_id() {
        let e = kernel_line_event(
            "[ 12.5] NVRM: Xid (PCI:0000:2a:00): 79, pid=123, GPU has fallen off the bus.",
            7,
            &maps(),
        )
        .expect("an XID line is an event");
        assert_eq!(e.component.as_deref(), Some("gpu3"));
        assert_eq!(e.xid, Some(79));
        assert_eq!(e.ts_ms, 7);
        // A device the node does not know stays unnamed rather than guessed.
        let e = kernel_line_event("NVRM: Xid (PCI:0000:99:00): 79, pid=1, x", 7, &maps()).expect("event");
        assert_eq!(e.component, None);
    }

    #[test]
    fn a_roce_link_line_names_the_ib_device_behind_its_netdev() {
        let e = kernel_line_event("mlx5_core 0000:01:00.1 eth1: Link down", 1, &maps()).expect("event");
        assert_eq!(e.class, EventClass::NicLinkDown);
        assert_eq!(e.component.as_deref(), Some("nic:mlx5_1"));
        // A netdev that backs no RDMA port keeps its own name.
        let e = kernel_line_event("igb 0000:05:00.0 eno1: igb: eno1 NIC Link is Down", 1, &maps()).expect("event");
        assert_eq!(e.component.as_deref(), Some("nic:eno1"));
    }

    #[test]
    fn nvml_gives_an_index_and_a_code() {
        let e = nvml_xid_event(3, 48, 5, &maps());
        assert_eq!((e.component.as_deref(), e.xid, e.device.as_deref()), (Some("gpu3"), Some(48), Some("0000:2a:00")));
        assert_eq!(e.source, EventSource::Nvml);
        assert!(kernel_line_event("hello", 1, &maps()).is_none());
    }
}
