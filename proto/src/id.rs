//! `ComponentId`: the stable, readable ids of DESIGN.md, shared by reports, API, metrics and scenarios.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One component of the cluster. `Display` and `FromStr` round-trip exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentId {
    /// `node-0003`
    Node { host: String },
    /// `node-0003/gpu5`
    Gpu { host: String, index: u32 },
    /// `node-0003/gpu5/nvlink3`
    NvLink { host: String, gpu: u32, link: u32 },
    /// `node-0003/nic:mlx5_2`
    Nic { host: String, name: String },
    /// `node-0003/disk:nvme0n1`
    Disk { host: String, device: String },
    /// `node-0003/agent`
    Agent { host: String },
    /// `switch:leaf-02`
    Switch { name: String },
    /// `job:llm-70b`
    Job { id: String },
    /// `job:llm-70b/rank17`
    Rank { job: String, rank: u32 },
}

/// The kind of a component, as used in metric labels and API filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Node,
    Gpu,
    Nvlink,
    Nic,
    Disk,
    Agent,
    Switch,
    Job,
    Rank,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Gpu => "gpu",
            Self::Nvlink => "nvlink",
            Self::Nic => "nic",
            Self::Disk => "disk",
            Self::Agent => "agent",
            Self::Switch => "switch",
            Self::Job => "job",
            Self::Rank => "rank",
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a component id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid component id {input:?}: {reason}")]
pub struct IdError {
    pub input: String,
    pub reason: &'static str,
}

/// Longest name (host, NIC, disk, job, switch) in bytes. Linux host names stop at 64, interface
/// names at 15; 128 leaves room for FQDNs and scheduler job ids.
pub const MAX_NAME_BYTES: usize = 128;

/// Host names, NIC names, job ids: non-empty, at most 128 bytes, no `/`, whitespace, control
/// characters, or invisible formatting characters (bidi overrides and isolates, zero-width marks:
/// they make one name display as another in a terminal or a dashboard).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && !s.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control() || is_invisible_format(c))
}

/// A node (host) name: a valid name that cannot be mistaken for another id form. `job:` and `switch:`
/// prefixes name jobs and switches, so a host called `job:x` would make incident roots that do not
/// read back; no real host name has a `:`.
pub fn valid_host(s: &str) -> bool {
    valid_name(s) && !s.contains(':')
}

/// Unicode format characters that change how text around them is shown: bidi embeddings, overrides
/// and isolates (U+202A..U+202E, U+2066..U+2069), the directional marks, zero-width characters and
/// the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}' | '\u{00AD}')
}

impl ComponentId {
    pub fn node(host: impl Into<String>) -> Self {
        Self::Node { host: host.into() }
    }
    pub fn gpu(host: impl Into<String>, index: u32) -> Self {
        Self::Gpu { host: host.into(), index }
    }
    pub fn nvlink(host: impl Into<String>, gpu: u32, link: u32) -> Self {
        Self::NvLink { host: host.into(), gpu, link }
    }
    pub fn nic(host: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Nic { host: host.into(), name: name.into() }
    }
    pub fn disk(host: impl Into<String>, device: impl Into<String>) -> Self {
        Self::Disk { host: host.into(), device: device.into() }
    }
    pub fn agent(host: impl Into<String>) -> Self {
        Self::Agent { host: host.into() }
    }
    pub fn switch(name: impl Into<String>) -> Self {
        Self::Switch { name: name.into() }
    }
    pub fn job(id: impl Into<String>) -> Self {
        Self::Job { id: id.into() }
    }
    pub fn rank(job: impl Into<String>, rank: u32) -> Self {
        Self::Rank { job: job.into(), rank }
    }

    pub fn kind(&self) -> ComponentKind {
        match self {
            Self::Node { .. } => ComponentKind::Node,
            Self::Gpu { .. } => ComponentKind::Gpu,
            Self::NvLink { .. } => ComponentKind::Nvlink,
            Self::Nic { .. } => ComponentKind::Nic,
            Self::Disk { .. } => ComponentKind::Disk,
            Self::Agent { .. } => ComponentKind::Agent,
            Self::Switch { .. } => ComponentKind::Switch,
            Self::Job { .. } => ComponentKind::Job,
            Self::Rank { .. } => ComponentKind::Rank,
        }
    }

    /// The node this component lives on, if it lives on one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Node { host }
            | Self::Gpu { host, .. }
            | Self::NvLink { host, .. }
            | Self::Nic { host, .. }
            | Self::Disk { host, .. }
            | Self::Agent { host } => Some(host),
            Self::Switch { .. } | Self::Job { .. } | Self::Rank { .. } => None,
        }
    }

    /// The job this component belongs to, for jobs and ranks.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Self::Job { id } => Some(id),
            Self::Rank { job, .. } => Some(job),
            _ => None,
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node { host } => write!(f, "{host}"),
            Self::Gpu { host, index } => write!(f, "{host}/gpu{index}"),
            Self::NvLink { host, gpu, link } => write!(f, "{host}/gpu{gpu}/nvlink{link}"),
            Self::Nic { host, name } => write!(f, "{host}/nic:{name}"),
            Self::Disk { host, device } => write!(f, "{host}/disk:{device}"),
            Self::Agent { host } => write!(f, "{host}/agent"),
            Self::Switch { name } => write!(f, "switch:{name}"),
            Self::Job { id } => write!(f, "job:{id}"),
            Self::Rank { job, rank } => write!(f, "job:{job}/rank{rank}"),
        }
    }
}

fn num(s: &str, input: &str, reason: &'static str) -> Result<u32, IdError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(IdError { input: input.to_string(), reason });
    }
    s.parse().map_err(|_| IdError { input: input.to_string(), reason })
}

impl FromStr for ComponentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| IdError { input: s.to_string(), reason };
        let name = |n: &str, reason| if valid_name(n) { Ok(n.to_string()) } else { Err(err(reason)) };
        if let Some(rest) = s.strip_prefix("switch:") {
            return Ok(Self::Switch { name: name(rest, "switch name is empty or has '/' or spaces")? });
        }
        if let Some(rest) = s.strip_prefix("job:") {
            let mut parts = rest.splitn(2, '/');
            let id = name(parts.next().unwrap_or(""), "job id is empty or has spaces")?;
            return match parts.next() {
                None => Ok(Self::Job { id }),
                Some(r) => {
                    let r = r.strip_prefix("rank").ok_or_else(|| err("expected job:<id>/rank<n>"))?;
                    Ok(Self::Rank { job: id, rank: num(r, s, "rank is not a number")? })
                }
            };
        }
        let parts: Vec<&str> = s.split('/').collect();
        if !valid_host(parts[0]) {
            return Err(err("host name is empty, has spaces, ':' or control characters, or is over 128 bytes"));
        }
        let host = parts[0].to_string();
        match parts.as_slice() {
            [_] => Ok(Self::Node { host }),
            [_, "agent"] => Ok(Self::Agent { host }),
            [_, p] if p.starts_with("nic:") => {
                Ok(Self::Nic { host, name: name(&p[4..], "NIC name is empty or has spaces")? })
            }
            [_, p] if p.starts_with("disk:") => {
                Ok(Self::Disk { host, device: name(&p[5..], "disk device is empty or has spaces")? })
            }
            [_, p] if p.starts_with("gpu") => {
                Ok(Self::Gpu { host, index: num(&p[3..], s, "GPU index is not a number")? })
            }
            [_, g, l] if g.starts_with("gpu") && l.starts_with("nvlink") => Ok(Self::NvLink {
                host,
                gpu: num(&g[3..], s, "GPU index is not a number")?,
                link: num(&l[6..], s, "NVLink index is not a number")?,
            }),
            _ => Err(err("unknown component form; see DESIGN.md for the id forms")),
        }
    }
}

impl Serialize for ComponentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_design_md_form_round_trips() {
        for s in [
            "node-0003",
            "node-0003/gpu5",
            "node-0003/gpu5/nvlink3",
            "node-0003/nic:mlx5_2",
            "node-0003/disk:nvme0n1",
            "node-0003/agent",
            "switch:leaf-02",
            "job:llm-70b",
            "job:llm-70b/rank17",
        ] {
            let id: ComponentId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<ComponentId>(&json).unwrap(), id);
        }
    }

    #[test]
    fn host_names_cannot_pose_as_other_forms_or_hide_characters() {
        assert!(valid_host("node-0003.cluster.local"));
        for bad in ["job:x", "switch:leaf", "a\u{202E}b", "a\u{200B}b", "a\u{2066}b", &"x".repeat(129)] {
            assert!(!valid_host(bad), "{bad:?}");
        }
        // Every id built from a valid host reads back.
        for id in [ComponentId::node("n1"), ComponentId::gpu("n1", 3), ComponentId::nic("n1", "mlx5_0")] {
            assert_eq!(id.to_string().parse::<ComponentId>().unwrap(), id);
        }
    }

    #[test]
    fn kinds_and_hosts() {
        let id: ComponentId = "node-0003/gpu5/nvlink3".parse().unwrap();
        assert_eq!(id.kind(), ComponentKind::Nvlink);
        assert_eq!(id.host(), Some("node-0003"));
        let id: ComponentId = "job:a/rank2".parse().unwrap();
        assert_eq!(id.job_id(), Some("a"));
        assert_eq!(id.host(), None);
    }

    #[test]
    fn malformed_ids_are_rejected_with_a_reason() {
        for s in [
            "",
            "node/gpu",
            "node/gpux",
            "node/gpu01",
            "node/nic:",
            "switch:",
            "job:",
            "job:a/r1",
            "node/what",
            "a b",
            "node/gpu1/nvlinkX",
            "node/gpu99999999999",
            "host:x/gpu1",
            "node\u{202E}1",
        ] {
            let e = s.parse::<ComponentId>().unwrap_err();
            assert!(!e.reason.is_empty(), "{s}");
        }
    }
}
