//! Caps that keep hostile or careless input from bloating the analyzer: how many nodes it tracks
//! (with an optional allow-list), how many components one node may name, how long a client may take
//! over its headers and body, how many connections are served at once, and how much of any file is
//! read. Applied at ingest, before a report reaches the engine; every cap hit is counted
//! (`faultline_limits_hit_total{limit}`) and logged once per node.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use faultline_proto::{NodeReport, TopologyFile};
use serde::Deserialize;

/// Default most nodes tracked. Each node costs the engine about 150 KB of history; 20,000 nodes
/// (3 GB) is past the largest GPU clusters built so far (about 100,000 GPUs, 12,500 nodes).
pub const DEFAULT_MAX_NODES: usize = 20_000;
/// Default most distinct components one node may name (GPUs, NVLinks, NICs, disks). A node has at
/// most 64 GPUs × 32 NVLinks = 2,048 links plus its NICs and disks; 4,096 leaves room for both.
pub const DEFAULT_MAX_COMPONENTS_PER_NODE: usize = 4_096;
/// Default time a client has to send a request's headers, and the longest a kept-alive connection
/// may sit idle. A real agent sends its headers in one write; 10 s covers a congested link.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request body. An 8 MB report at 10 Mbit/s takes 7 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most connections served at once. Agents push once per interval and close or reuse one
/// connection, so 2,000 agents need far fewer; file descriptors (commonly 1,024 soft, 65,536 hard)
/// run out well after this.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Largest token file read, bytes: a token is a line, 64 KB is a thousand times more.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Largest config or topology file read, bytes: a 20,000-node topology is about 2 MB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// `[limits]` in the analyzer config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most nodes tracked. Reports from a node beyond it are refused with 403 (the agent keeps them
    /// spooled); raise it and they flow.
    pub max_nodes: usize,
    /// Most distinct components (GPUs, NVLinks, NICs, disks) one node may name. Past it, new names
    /// in samples are dropped and events lose their component (they stay node-level).
    pub max_components_per_node: usize,
    /// Only these nodes may report (empty: any node). Refused with 403 otherwise.
    pub allowed_nodes: Vec<String>,
    /// Only nodes named in the topology file (its racks) may report. Default false.
    pub topology_nodes_only: bool,
    /// How long a client may take to send its request headers (and the longest idle keep-alive).
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// How long a client may take to send a request body.
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_nodes: DEFAULT_MAX_NODES,
            max_components_per_node: DEFAULT_MAX_COMPONENTS_PER_NODE,
            allowed_nodes: Vec::new(),
            topology_nodes_only: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like 10s or 500ms: {e}")))
}

/// Why a node may not report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRefusal {
    NotAllowed,
    TooManyNodes { max: usize },
}

impl std::fmt::Display for NodeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAllowed => {
                f.write_str("is not in the analyzer's allowed nodes (limits.allowed_nodes or the topology file)")
            }
            Self::TooManyNodes { max } => write!(
                f,
                "would be node number {} but the analyzer tracks at most {max} (limits.max_nodes); the report stays with the agent",
                max + 1
            ),
        }
    }
}

/// What admitting a report trimmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Component names dropped because the node is at its component cap.
    pub components: usize,
}

/// The ingest-side caps and what they have seen.
#[derive(Debug)]
pub struct Limits {
    pub cfg: LimitsConfig,
    allow: Option<BTreeSet<String>>,
    /// Components named so far, per node.
    seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Cap hits so far, for logging the 1st, 2nd, 4th, 8th… rather than every one.
    hits: std::sync::atomic::AtomicU64,
}

impl Limits {
    pub fn new(cfg: &LimitsConfig, topology: &TopologyFile) -> Self {
        let mut allow: Option<BTreeSet<String>> = None;
        if !cfg.allowed_nodes.is_empty() {
            allow.get_or_insert_with(BTreeSet::new).extend(cfg.allowed_nodes.iter().cloned());
        }
        if cfg.topology_nodes_only {
            let set = allow.get_or_insert_with(BTreeSet::new);
            for r in &topology.racks {
                set.extend(r.nodes.iter().cloned());
            }
        }
        Self { cfg: cfg.clone(), allow, seen: Mutex::new(BTreeMap::new()), hits: Default::default() }
    }

    /// Lets `report` in or says why not; drops component names past the per-node cap.
    pub fn admit(&self, report: &mut NodeReport) -> Result<Trimmed, NodeRefusal> {
        if let Some(allow) = &self.allow
            && !allow.contains(&report.node)
        {
            return Err(NodeRefusal::NotAllowed);
        }
        let mut seen = crate::sync::lock(&self.seen);
        if !seen.contains_key(&report.node) {
            if seen.len() >= self.cfg.max_nodes {
                return Err(NodeRefusal::TooManyNodes { max: self.cfg.max_nodes });
            }
            seen.insert(report.node.clone(), BTreeSet::new());
        }
        let max = self.cfg.max_components_per_node;
        let Some(known) = seen.get_mut(&report.node) else { return Ok(Trimmed::default()) };
        let mut trimmed = Trimmed::default();
        let mut room = |name: String| -> bool {
            if known.contains(&name) {
                return true;
            }
            if known.len() >= max {
                trimmed.components += 1;
                return false;
            }
            known.insert(name);
            true
        };
        report.gpus.retain(|g| room(format!("gpu{}", g.index)));
        report.nics.retain(|n| room(format!("nic:{}", n.name)));
        report.disks.retain(|d| room(format!("disk:{}", d.device)));
        for e in &mut report.events {
            if let Some(c) = e.component.as_deref().filter(|c| !c.is_empty())
                && !room(c.to_string())
            {
                e.component = None;
            }
        }
        Ok(trimmed)
    }

    /// Counts one cap hit; true when this one should be logged (the 1st, 2nd, 4th, 8th, …), so a
    /// flood of refusals leaves a few log lines, not millions.
    pub fn should_log(&self) -> bool {
        let n = self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        n.is_power_of_two()
    }

    /// Nodes tracked so far.
    pub fn nodes(&self) -> usize {
        crate::sync::lock(&self.seen).len()
    }
}

/// Reads at most `max` bytes of a file; a longer file (or an endless one like `/dev/zero`) is an
/// error that names the cap instead of filling memory.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than the limit of {max} bytes (is it the right file?)"),
        ));
    }
    String::from_utf8(buf).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str) -> NodeReport {
        NodeReport::empty(node)
    }

    #[test]
    fn nodes_past_the_cap_or_outside_the_allow_list_are_refused() {
        let cfg = LimitsConfig { max_nodes: 2, ..Default::default() };
        let l = Limits::new(&cfg, &TopologyFile::default());
        assert!(l.admit(&mut report("a")).is_ok());
        assert!(l.admit(&mut report("b")).is_ok());
        assert_eq!(l.admit(&mut report("c")), Err(NodeRefusal::TooManyNodes { max: 2 }));
        assert!(l.admit(&mut report("a")).is_ok(), "known nodes keep reporting");
        let cfg = LimitsConfig { allowed_nodes: vec!["a".into()], ..Default::default() };
        let l = Limits::new(&cfg, &TopologyFile::default());
        assert!(l.admit(&mut report("a")).is_ok());
        assert_eq!(l.admit(&mut report("b")), Err(NodeRefusal::NotAllowed));
    }

    #[test]
    fn components_past_the_cap_are_dropped_and_counted() {
        let cfg = LimitsConfig { max_components_per_node: 3, ..Default::default() };
        let l = Limits::new(&cfg, &TopologyFile::default());
        let mut r = report("a");
        for i in 0..5 {
            r.events.push(faultline_proto::Event {
                component: Some(format!("nic:n{i}")),
                ..faultline_proto::Event::new(1, Default::default(), faultline_proto::EventClass::NicLinkDown)
            });
        }
        let t = l.admit(&mut r).unwrap();
        assert_eq!(t.components, 2);
        assert_eq!(r.events.iter().filter(|e| e.component.is_some()).count(), 3);
        assert_eq!(r.events.len(), 5, "events stay, only their component goes");
    }

    #[test]
    fn endless_files_are_refused_at_the_cap() {
        let e = read_capped(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("1024"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "token\n").unwrap();
        assert_eq!(read_capped(&p, 1024).unwrap(), "token\n");
    }
}
