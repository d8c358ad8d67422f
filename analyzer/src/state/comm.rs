//! Collective-communication evidence as the state keeps it per node: what training logs said
//! (`CollectiveInfo` on `training_log` events) and the addresses each NIC reported, for
//! `detect::nccl` to trace peers through.

use faultline_proto::{CollectiveInfo, Event, EventClass, NicSample};

use super::NodeState;

/// Most observations kept per node; a job falling apart prints thousands, the newest matter.
pub const MAX_COMM_PER_NODE: usize = 512;

/// One observation as the detector keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommObs {
    pub ts: i64,
    pub class: EventClass,
    pub count: u64,
    pub info: CollectiveInfo,
}

/// Keep `e`'s collective evidence on its node.
pub fn record(node: &mut NodeState, e: &Event, c: &CollectiveInfo) {
    let obs = CommObs { ts: e.ts_ms, class: e.class, count: e.count.max(1), info: c.clone() };
    super::push(&mut node.comm, obs, MAX_COMM_PER_NODE);
}

/// Keep each NIC's addresses (from every report's NICs).
pub fn record_addrs(node: &mut NodeState, nics: &[NicSample]) {
    for n in nics.iter().filter(|n| !n.addrs.is_empty()) {
        let held = super::slot(&mut node.nic_addrs, &n.name);
        if *held != n.addrs {
            held.clone_from(&n.addrs);
            node.addr_changes += 1;
        }
    }
}
