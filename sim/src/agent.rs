//! The agent's side of each simulated node: what the node shows (raw kernel lines, NVML index/code
//! pairs) becomes events through the real agent's classifier, PCI → GPU and netdev → IB-device
//! maps (`faultline_agent::observe`) and XID workflows (`faultline_agent::xid::XidTracker`); a
//! training-log line goes through the NCCL classifier and the training-log collector's event
//! (`faultline_agent::classify::nccl`, `collect::trainlog::line_event`). The
//! agent's clock runs with the node's NTP skew (`skew_ms`, applied when the report is built).

use faultline_agent::classify::nccl;
use faultline_agent::collect::trainlog;
use faultline_agent::observe::{self, NodeMaps};
use faultline_agent::xid::XidTracker;
use faultline_proto::Event;

use crate::cluster::Cluster;
use crate::faults::{Obs, Seen};

/// The agent of one node.
#[derive(Debug, Default)]
pub struct NodeAgent {
    pub maps: NodeMaps,
    tracker: XidTracker,
    /// The node clock's offset from true time, ms (NTP keeps it small).
    pub skew_ms: i64,
}

/// The kmsg timestamp prefix `[ 1843.308145]` for a time since boot.
pub fn kmsg_prefix(t: i64, boot_ms: i64) -> String {
    let up = (t - boot_ms).max(0);
    format!("[{:>5}.{:06}]", up / 1000, (up % 1000) * 1000 + (t.rem_euclid(997)))
}

impl NodeAgent {
    /// The agent of node `n`: its maps are what its collectors read from sysfs (the GPUs' PCI bus
    /// ids, the netdev behind each RDMA port).
    pub fn new(cluster: &Cluster, n: usize, skew_ms: i64) -> Self {
        let mut maps = NodeMaps::default();
        let node = &cluster.nodes[n];
        for (i, g) in node.gpus.iter().enumerate() {
            maps.add_gpu(i as u32, &g.bus_id);
        }
        for nic in &node.nics {
            maps.add_netdev(&nic.netdev, &nic.name);
        }
        Self { maps, tracker: XidTracker::new(), skew_ms }
    }

    /// The event the agent sends for what its node showed (None: a benign line), stamped with the
    /// agent's clock. `uuid`: the GPU's UUID, for the agent's own GPU-lost event.
    pub fn observe(&mut self, s: &Seen, boot_ms: i64, uuid: &dyn Fn(u32) -> String) -> Option<Event> {
        // Stamped in true time here; the report adds the node's clock skew to all it carries.
        let ts = s.ts_ms;
        let mut ev = match &s.obs {
            Obs::Kmsg(line) => {
                observe::kernel_line_event(&format!("{} {line}", kmsg_prefix(s.ts_ms, boot_ms)), ts, &self.maps)?
            }
            Obs::NvmlXid { gpu, code } => observe::nvml_xid_event(*gpu, *code, ts, &self.maps),
            Obs::NvmlEcc { gpu, double_bit, count } => {
                let mut e = observe::nvml_ecc_event(*gpu, *double_bit, ts, &self.maps);
                e.count = *count;
                e
            }
            Obs::NvmlLost { gpu } => observe::gpu_lost_event(*gpu, &uuid(*gpu), ts, &self.maps),
            Obs::TrainLog { job, line } => {
                let l = nccl::parse(line)?;
                trainlog::line_event(&l, Some(job), line, ts)
            }
        };
        if let Some(code) = ev.xid {
            let key = ev.component.clone().or(ev.device.clone()).unwrap_or_default();
            let a = self.tracker.assess(ts, &key, code, ev.pid, ev.caused_by_xid);
            ev.severity = a.severity;
            ev.caused_by_xid = a.caused_by_xid;
            if !a.note.is_empty() && ev.source == faultline_proto::EventSource::Kmsg {
                ev.message = format!("[{}] {}", a.note, ev.message);
            }
        }
        Some(ev)
    }
}
