//! `faultline topology`: leaf and spine switches with the NICs and nodes under them.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use faultline_proto::ComponentId;
use faultline_proto::api::TopologyView;

use super::{Ctx, Verdict, emit, emit_json};
use crate::render::{self, Style, Table};

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Print the topology as JSON (the API object)
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: &TopologyArgs) -> anyhow::Result<Verdict> {
    let got = ctx.client.topology()?;
    if a.json {
        emit_json(&got.raw)?;
    } else {
        emit(&text(&got.value, &ctx.style))?;
    }
    Ok(Verdict::of(got.value.switches.iter().any(|s| !s.healthy)))
}

/// The host part of a NIC id (`node-0003/nic:mlx5_2` → `node-0003`).
fn host_of(nic: &str) -> String {
    match nic.parse::<ComponentId>() {
        Ok(id) => id.host().unwrap_or(nic).to_string(),
        Err(_) => nic.split('/').next().unwrap_or(nic).to_string(),
    }
}

pub fn text(t: &TopologyView, style: &Style) -> String {
    if t.switches.is_empty() {
        return format!(
            "no switches known (start the analyzer with --topology FILE to describe the fabric)\nnodes: {} known\n",
            t.nodes.len()
        );
    }
    // A spine's NICs and nodes are those of the leaves that uplink to it.
    let mut below: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &t.switches {
        for u in &s.uplinks {
            below.entry(u.as_str()).or_default().push(s.id.as_str());
        }
    }
    let by_id: BTreeMap<&str, &faultline_proto::api::SwitchView> =
        t.switches.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut cabled: BTreeSet<String> = BTreeSet::new();
    let mut table = Table::new(&["SWITCH", "TIER", "HEALTH", "LEAVES", "NICS", "NODES", "UPLINKS"]);
    let mut sorted: Vec<_> = t.switches.iter().collect();
    sorted.sort_by(|a, b| (a.tier != "spine", &a.id).cmp(&(b.tier != "spine", &b.id)));
    for s in sorted {
        let leaves: Vec<&str> = below.get(s.id.as_str()).cloned().unwrap_or_default();
        let mut nics: BTreeSet<&str> = s.nics.iter().map(String::as_str).collect();
        for l in &leaves {
            if let Some(lv) = by_id.get(l) {
                nics.extend(lv.nics.iter().map(String::as_str));
            }
        }
        let nodes: BTreeSet<String> = nics.iter().map(|n| host_of(n)).collect();
        if s.tier != "spine" {
            cabled.extend(nodes.iter().cloned());
        }
        table.row(vec![
            s.id.clone(),
            s.tier.clone(),
            if s.healthy { style.green("✓ ok") } else { style.red("✗ FAULT") },
            if leaves.is_empty() { "-".into() } else { leaves.len().to_string() },
            nics.len().to_string(),
            nodes.len().to_string(),
            render::list(&s.uplinks, 4),
        ]);
    }
    let mut out = table.render(style);
    let spines = t.switches.iter().filter(|s| s.tier == "spine").count();
    let unhealthy = t.switches.iter().filter(|s| !s.healthy).count();
    let uncabled = t.nodes.iter().filter(|n| !cabled.contains(*n)).count();
    out.push_str(&format!(
        "\n{} leaves, {spines} spines{}; {} nodes known, {uncabled} with no NIC seen on a leaf yet\n",
        t.switches.len() - spines,
        if unhealthy > 0 { style.red(&format!(", {unhealthy} unhealthy")) } else { String::new() },
        t.nodes.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::api::SwitchView;

    fn sw(id: &str, tier: &str, up: &[&str], nics: &[&str], healthy: bool) -> SwitchView {
        SwitchView {
            id: id.into(),
            tier: tier.into(),
            uplinks: up.iter().map(|s| s.to_string()).collect(),
            nics: nics.iter().map(|s| s.to_string()).collect(),
            healthy,
        }
    }

    #[test]
    fn spines_count_what_their_leaves_carry() {
        let t = TopologyView {
            switches: vec![
                sw(
                    "switch:leaf-1",
                    "leaf",
                    &["switch:spine-1"],
                    &["n1/nic:mlx5_0", "n1/nic:mlx5_1", "n2/nic:mlx5_0"],
                    true,
                ),
                sw("switch:leaf-2", "leaf", &["switch:spine-1"], &["n3/nic:mlx5_0"], false),
                sw("switch:spine-1", "spine", &[], &[], true),
            ],
            nodes: vec!["n1".into(), "n2".into(), "n3".into(), "n4".into()],
        };
        let s = text(&t, &Style::plain());
        let expect = "\
SWITCH          TIER   HEALTH   LEAVES  NICS  NODES  UPLINKS
switch:spine-1  spine  ✓ ok     2       4     3      -
switch:leaf-1   leaf   ✓ ok     -       3     2      switch:spine-1
switch:leaf-2   leaf   ✗ FAULT  -       1     1      switch:spine-1

2 leaves, 1 spines, 1 unhealthy; 4 nodes known, 1 with no NIC seen on a leaf yet
";
        assert_eq!(s, expect);
    }
}
