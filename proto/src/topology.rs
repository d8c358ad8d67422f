//! The topology file: how NICs are cabled to leaves and leaves to spines. Operators write it by hand
//! or generate it from LLDP; the simulator writes one for its cluster. TOML or JSON.
//!
//! ```toml
//! [[switch]]
//! name = "leaf-00"
//! tier = "leaf"
//! uplinks = ["spine-00", "spine-01"]
//!
//! [[switch]]
//! name = "spine-00"
//! tier = "spine"
//!
//! # Top-of-rack: every NIC of these nodes goes to this leaf.
//! [[rack]]
//! leaf = "leaf-00"
//! nodes = ["node-0000", "node-0001"]
//!
//! # Rail: NIC `mlx5_3` of every node (or of the nodes listed) goes to this leaf.
//! [[rail]]
//! leaf = "leaf-03"
//! nic = "mlx5_3"
//! # nodes = ["node-0000"]     # optional; default all nodes
//!
//! # Single cables (LLDP output), most specific, win over racks and rails.
//! [[link]]
//! nic = "node-0007/nic:mlx5_0"
//! switch = "leaf-01"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchTier {
    Leaf,
    Spine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchDef {
    /// Name without the `switch:` prefix.
    pub name: String,
    pub tier: SwitchTier,
    /// Spines this leaf connects to.
    #[serde(default)]
    pub uplinks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackDef {
    pub leaf: String,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RailDef {
    pub leaf: String,
    /// NIC name (after `nic:`).
    pub nic: String,
    /// Nodes this rail covers; all nodes when absent.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDef {
    /// NIC component id, `node-0007/nic:mlx5_0`.
    pub nic: String,
    /// Switch name without prefix.
    pub switch: String,
    /// The rate this NIC should train at, Gb/s, when it differs from the fabric's.
    #[serde(default)]
    pub expected_rate_gbps: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchDef>,
    #[serde(default, rename = "rack")]
    pub racks: Vec<RackDef>,
    #[serde(default, rename = "rail")]
    pub rails: Vec<RailDef>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkDef>,
    /// The rate fabric NICs should train at, Gb/s (`400` for NDR). sysfs has no "maximum rate" to
    /// compare a degraded link with, so the operator says it here; without it the analyzer learns
    /// the fleet's majority rate.
    #[serde(default)]
    pub expected_rate_gbps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("topology: {0}")]
pub struct TopologyError(pub String);

impl TopologyFile {
    /// Check names and references: every leaf named by a rack, rail or link is a declared leaf, every
    /// uplink a declared spine, and no name is declared twice.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut tiers = BTreeMap::new();
        for (i, s) in self.switches.iter().enumerate() {
            if !crate::id::valid_name(&s.name) {
                return Err(TopologyError(format!("switch[{i}].name {:?} is not a valid name", s.name)));
            }
            if tiers.insert(s.name.as_str(), s.tier).is_some() {
                return Err(TopologyError(format!("switch {:?} is declared twice", s.name)));
            }
        }
        let is = |name: &str, tier| tiers.get(name) == Some(&tier);
        for s in &self.switches {
            for u in &s.uplinks {
                if !is(u, SwitchTier::Spine) {
                    return Err(TopologyError(format!(
                        "switch {:?} has uplink {u:?}, which is not a declared spine",
                        s.name
                    )));
                }
            }
        }
        for (i, r) in self.racks.iter().enumerate() {
            if !is(&r.leaf, SwitchTier::Leaf) {
                return Err(TopologyError(format!("rack[{i}].leaf {:?} is not a declared leaf", r.leaf)));
            }
        }
        for (i, r) in self.rails.iter().enumerate() {
            if !is(&r.leaf, SwitchTier::Leaf) {
                return Err(TopologyError(format!("rail[{i}].leaf {:?} is not a declared leaf", r.leaf)));
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if !tiers.contains_key(l.switch.as_str()) {
                return Err(TopologyError(format!("link[{i}].switch {:?} is not a declared switch", l.switch)));
            }
            match l.nic.parse::<crate::ComponentId>() {
                Ok(crate::ComponentId::Nic { .. }) => {}
                _ => {
                    return Err(TopologyError(format!(
                        "link[{i}].nic {:?} is not a NIC id like node-0007/nic:mlx5_0",
                        l.nic
                    )));
                }
            }
        }
        Ok(())
    }

    /// Parse JSON and validate. (Crates that read TOML files use `toml::from_str` and `validate`.)
    pub fn from_json(text: &str) -> Result<Self, TopologyError> {
        let t: TopologyFile =
            serde_json::from_str(text).map_err(|e| TopologyError(format!("not valid topology JSON: {e}")))?;
        t.validate()?;
        Ok(t)
    }

    /// Which leaf a NIC is cabled to: a `link` wins, then a `rail`, then a `rack`.
    pub fn leaf_of(&self, host: &str, nic: &str) -> Option<&str> {
        let id = format!("{host}/nic:{nic}");
        if let Some(l) = self.links.iter().find(|l| l.nic == id) {
            return Some(&l.switch);
        }
        if let Some(r) =
            self.rails.iter().find(|r| r.nic == nic && r.nodes.as_ref().is_none_or(|n| n.iter().any(|h| h == host)))
        {
            return Some(&r.leaf);
        }
        self.racks.iter().find(|r| r.nodes.iter().any(|h| h == host)).map(|r| r.leaf.as_str())
    }

    /// The rates NICs should train at, indexed for lookups on every report (`ExpectedRates::get`).
    pub fn expected_rates(&self) -> ExpectedRates {
        let mut by_nic = HashMap::new();
        // Without a per-link rate, every NIC gets the file's: nothing to look up.
        if self.links.iter().any(|l| l.expected_rate_gbps.is_some()) {
            for l in &self.links {
                by_nic.entry(l.nic.clone()).or_insert(l.expected_rate_gbps);
            }
        }
        ExpectedRates { by_nic, fabric: self.expected_rate_gbps }
    }

    /// Spines above a switch.
    pub fn uplinks_of(&self, switch: &str) -> &[String] {
        self.switches.iter().find(|s| s.name == switch).map(|s| s.uplinks.as_slice()).unwrap_or(&[])
    }

    pub fn leaves(&self) -> BTreeSet<&str> {
        self.switches.iter().filter(|s| s.tier == SwitchTier::Leaf).map(|s| s.name.as_str()).collect()
    }
}

/// What a topology file says NICs should train at (`TopologyFile::expected_rates`): each `link`'s
/// rate by NIC id (the first link naming a NIC), and the file's for the rest. Asked for every fabric
/// NIC of every report, so a hash lookup, not a scan of the links.
#[derive(Debug, Clone, Default)]
pub struct ExpectedRates {
    by_nic: HashMap<String, Option<f64>>,
    fabric: Option<f64>,
}

impl ExpectedRates {
    /// The rate NIC `nic` of `host` should train at: its `link`'s, else the file's. `None`: not said.
    pub fn get(&self, host: &str, nic: &str) -> Option<f64> {
        let link = if self.by_nic.is_empty() {
            None
        } else {
            self.by_nic.get(&format!("{host}/nic:{nic}")).copied().flatten()
        };
        link.or(self.fabric).filter(|r| r.is_finite() && *r > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TopologyFile {
        TopologyFile {
            switches: vec![
                SwitchDef { name: "leaf-00".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
                SwitchDef { name: "leaf-01".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
                SwitchDef { name: "spine-00".into(), tier: SwitchTier::Spine, uplinks: vec![] },
            ],
            racks: vec![RackDef { leaf: "leaf-00".into(), nodes: vec!["n0".into(), "n1".into()] }],
            rails: vec![RailDef { leaf: "leaf-01".into(), nic: "mlx5_1".into(), nodes: None }],
            links: vec![LinkDef {
                nic: "n1/nic:mlx5_0".into(),
                switch: "leaf-01".into(),
                expected_rate_gbps: Some(200.0),
            }],
            expected_rate_gbps: Some(400.0),
        }
    }

    #[test]
    fn link_beats_rail_beats_rack() {
        let t = sample();
        t.validate().unwrap();
        assert_eq!(t.leaf_of("n0", "mlx5_0"), Some("leaf-00"));
        assert_eq!(t.leaf_of("n0", "mlx5_1"), Some("leaf-01"));
        assert_eq!(t.leaf_of("n1", "mlx5_0"), Some("leaf-01"));
        assert_eq!(t.leaf_of("n9", "mlx5_0"), None);
        assert_eq!(t.uplinks_of("leaf-00"), ["spine-00".to_string()]);
        assert_eq!(t.expected_rates().get("n1", "mlx5_0"), Some(200.0));
        assert_eq!(t.expected_rates().get("n0", "mlx5_0"), Some(400.0));
        let parsed: TopologyFile = serde_json::from_str(r#"{"expected_rate_gbps": 400}"#).unwrap();
        assert_eq!(parsed.expected_rates().get("x", "mlx5_0"), Some(400.0));
    }

    #[test]
    fn dangling_references_are_named() {
        let mut t = sample();
        t.racks[0].leaf = "leaf-99".into();
        assert!(t.validate().unwrap_err().0.contains("leaf-99"));
        let mut t = sample();
        t.switches[0].uplinks = vec!["leaf-01".into()];
        assert!(t.validate().unwrap_err().0.contains("not a declared spine"));
    }
}
