//! XID counts since the agent started, tallied from the events of each report: one tally, read by
//! `/metrics` (`faultline_gpu_xid_errors_total`, `DCGM_FI_DEV_XID_ERRORS`) and by OTLP
//! (`faultline.gpu.xid.events`), so the two always agree.
//!
//! Events leave with their report, so the tally is what outlives them. A coalesced event carries
//! the number of lines it stands for in `count`, and that is what is added.
//!
//! **One source.** The kernel log is the complete XID record (NVML reports only the latest code
//! when several come at once), and a node that watches both sees every XID twice. So the tally
//! counts the kernel log's XID events when a kernel-log watcher runs, and NVML's otherwise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_proto::{EventSource, NodeReport};

#[derive(Debug, Default)]
struct Counts {
    /// (component, xid) → occurrences.
    totals: BTreeMap<(String, u32), u64>,
    /// component → the last XID code seen on it.
    last: BTreeMap<String, u32>,
}

/// Shared handle; clones count into the same totals.
#[derive(Debug, Clone)]
pub struct XidTally {
    counts: Arc<Mutex<Counts>>,
    source: EventSource,
}

impl XidTally {
    /// A tally of the XID events that come from `source` (`Kmsg` while a kernel-log watcher runs,
    /// else `Nvml`; see the module doc).
    pub fn from(source: EventSource) -> Self {
        XidTally { counts: Arc::default(), source }
    }

    /// Which source's XID events are counted, given whether a kernel-log watcher is running.
    pub fn source_for(kernel_log_watched: bool) -> EventSource {
        if kernel_log_watched { EventSource::Kmsg } else { EventSource::Nvml }
    }

    /// Adds the XID events of one report, in order (the last one per component stays the last).
    pub fn count(&self, r: &NodeReport) {
        let mut xids = r.events.iter().filter(|e| e.source == self.source).filter_map(|e| Some((e, e.xid?))).peekable();
        if xids.peek().is_none() {
            return;
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (e, x) in xids {
            let component = e.component.clone().unwrap_or_default();
            *c.totals.entry((component.clone(), x)).or_default() += e.count.max(1);
            c.last.insert(component, x);
        }
    }

    /// The totals so far, per (component, xid).
    pub fn totals(&self) -> BTreeMap<(String, u32), u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).totals.clone()
    }

    /// The last XID code seen per component.
    pub fn last(&self) -> BTreeMap<String, u32> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).last.clone()
    }
}

/// GPU index from an event component `gpu3` (not `gpu3/nvlink1`).
pub fn gpu_index_of(component: &str) -> Option<u32> {
    component.strip_prefix("gpu")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::Event;

    fn xid(source: EventSource, component: &str, code: u32, count: u64) -> Event {
        Event {
            source,
            component: Some(component.into()),
            xid: Some(code),
            count,
            class: faultline_proto::EventClass::Xid,
            ..Default::default()
        }
    }

    #[test]
    fn counts_one_source_with_coalesced_counts() {
        let t = XidTally::from(XidTally::source_for(true));
        let mut r = NodeReport::empty("n");
        r.events = vec![
            xid(EventSource::Kmsg, "gpu3", 79, 1),
            xid(EventSource::Nvml, "gpu3", 79, 1),
            xid(EventSource::Kmsg, "gpu3", 45, 499),
            xid(EventSource::Kmsg, "gpu1", 13, 0),
        ];
        t.count(&r);
        let totals = t.totals();
        assert_eq!(totals.get(&("gpu3".into(), 79)), Some(&1), "NVML's copy is not counted again");
        assert_eq!(totals.get(&("gpu3".into(), 45)), Some(&499));
        assert_eq!(totals.get(&("gpu1".into(), 13)), Some(&1));
        assert_eq!(t.last().get("gpu3"), Some(&45));
        let nvml = XidTally::from(XidTally::source_for(false));
        nvml.count(&r);
        assert_eq!(nvml.totals().len(), 1);
    }

    #[test]
    fn gpu_components_only() {
        assert_eq!(gpu_index_of("gpu3"), Some(3));
        assert_eq!(gpu_index_of("gpu3/nvlink1"), None);
        assert_eq!(gpu_index_of("nic:mlx5_0"), None);
    }
}
