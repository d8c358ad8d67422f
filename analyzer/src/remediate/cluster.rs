//! Which nodes the analyzer knows, which hang off a switch, and which an open incident still
//! concerns: read from the engine's graph (NICs the agents reported) and the topology file (racks,
//! rails, links). The runner sizes the blast-radius guard and finds drain targets with them.

use std::collections::BTreeSet;

use faultline_proto::{ComponentId, Incident};

use super::drains;
use super::host::Host;

/// Nodes known to the analyzer: heard from, or named in the topology file.
pub fn known_nodes(st: &dyn Host) -> usize {
    let mut names: BTreeSet<String> = st.reported_nodes();
    for r in &st.topology().racks {
        names.extend(r.nodes.iter().cloned());
    }
    for r in &st.topology().rails {
        names.extend(r.nodes.iter().flatten().cloned());
    }
    for l in &st.topology().links {
        if let Ok(id) = l.nic.parse::<ComponentId>()
            && let Some(h) = id.host()
        {
            names.insert(h.to_string());
        }
    }
    names.len()
}

/// Every node whose NICs hang off `switch` (for a spine: off the leaves below it), from the graph
/// (NICs agents reported) and the topology file (racks, rails with node lists, single links).
pub fn nodes_behind(st: &dyn Host, switch: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![switch.to_string()];
    while let Some(sw) = stack.pop() {
        if !seen.insert(sw.clone()) {
            continue;
        }
        if let Some(view) = st.component(&ComponentId::switch(&sw)) {
            for d in view.dependents {
                match d {
                    ComponentId::Nic { host, .. } => {
                        out.insert(host);
                    }
                    ComponentId::Switch { name } => stack.push(name),
                    _ => {}
                }
            }
        }
        for r in st.topology().racks.iter().filter(|r| r.leaf == sw) {
            out.extend(r.nodes.iter().cloned());
        }
        for r in st.topology().rails.iter().filter(|r| r.leaf == sw) {
            out.extend(r.nodes.iter().flatten().cloned());
        }
        for l in st.topology().links.iter().filter(|l| l.switch == sw) {
            if let Ok(id) = l.nic.parse::<ComponentId>()
                && let Some(h) = id.host()
            {
                out.insert(h.to_string());
            }
        }
        for s in st.topology().switches.iter().filter(|s| s.uplinks.contains(&sw)) {
            stack.push(s.name.clone());
        }
    }
    out
}

/// Nodes an open incident still concerns: its root's host, or the nodes behind a broken switch.
pub fn busy_nodes(st: &dyn Host, open: &[Incident]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in open {
        match &i.root {
            ComponentId::Switch { name } if drains(i.class) => out.extend(nodes_behind(st, name)),
            r => out.extend(r.host().map(str::to_string)),
        }
    }
    out
}
