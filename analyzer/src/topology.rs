//! The dependency graph: the topology file's switch wiring merged with the GPUs, NICs, ranks and jobs
//! that agents report, in a petgraph `StableDiGraph` whose edges read "depends on" (DESIGN.md).
//!
//! Jobs and ranks come and go without rebuilding anything: vertices are looked up through an
//! id → index map and removed in place. NVLink vertices are created only when a link has something
//! to say (a symptom), so the graph stays O(GPUs) on a 100k-GPU cluster with 18 links per GPU.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use faultline_proto::ComponentId;
use faultline_proto::TopologyFile;
use faultline_proto::topology::SwitchTier;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

/// Where one rank runs, as the graph needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankPlacement {
    pub rank: u32,
    pub host: String,
    pub gpus: Vec<u32>,
    pub nic: Option<String>,
}

/// Resolves which leaf a NIC is cabled to, with the topology file's precedence (link, rail, rack),
/// through hash indexes instead of the file's linear scans.
#[derive(Debug, Default)]
struct Wiring {
    links: HashMap<String, String>,
    rails: HashMap<String, Vec<(String, Option<BTreeSet<String>>)>>,
    racks: HashMap<String, String>,
    tiers: BTreeMap<String, SwitchTier>,
    uplinks: BTreeMap<String, Vec<String>>,
}

impl Wiring {
    fn new(file: &TopologyFile) -> Self {
        let mut w = Wiring::default();
        for l in &file.links {
            w.links.entry(l.nic.clone()).or_insert_with(|| l.switch.clone());
        }
        for r in &file.rails {
            w.rails
                .entry(r.nic.clone())
                .or_default()
                .push((r.leaf.clone(), r.nodes.as_ref().map(|n| n.iter().cloned().collect())));
        }
        for r in &file.racks {
            for h in &r.nodes {
                w.racks.entry(h.clone()).or_insert_with(|| r.leaf.clone());
            }
        }
        for s in &file.switches {
            w.tiers.insert(s.name.clone(), s.tier);
            w.uplinks.insert(s.name.clone(), s.uplinks.clone());
        }
        w
    }

    fn leaf_of(&self, host: &str, nic: &str) -> Option<&str> {
        if let Some(s) = self.links.get(&format!("{host}/nic:{nic}")) {
            return Some(s);
        }
        if let Some(rails) = self.rails.get(nic) {
            if let Some((leaf, _)) = rails.iter().find(|(_, nodes)| nodes.as_ref().is_none_or(|n| n.contains(host))) {
                return Some(leaf);
            }
        }
        self.racks.get(host).map(|s| s.as_str())
    }
}

/// A job's place in the graph.
#[derive(Debug, Clone, Default)]
struct JobEntry {
    ranks: BTreeMap<u32, RankPlacement>,
    multi_node: bool,
}

/// The dependency graph and its indexes.
pub struct Topology {
    graph: StableDiGraph<ComponentId, ()>,
    index: HashMap<ComponentId, NodeIndex>,
    wiring: Wiring,
    /// Leaf name → NICs cabled to it that agents reported.
    leaf_nics: HashMap<String, BTreeSet<ComponentId>>,
    /// NIC id → leaf name.
    nic_leaf: HashMap<ComponentId, String>,
    jobs: HashMap<String, JobEntry>,
}

impl Topology {
    pub fn new(file: &TopologyFile) -> Self {
        let mut t = Topology {
            graph: StableDiGraph::new(),
            index: HashMap::new(),
            wiring: Wiring::new(file),
            leaf_nics: HashMap::new(),
            nic_leaf: HashMap::new(),
            jobs: HashMap::new(),
        };
        for s in &file.switches {
            let a = t.ensure(&ComponentId::switch(&s.name));
            for u in &s.uplinks {
                let b = t.ensure(&ComponentId::switch(u));
                t.edge(a, b);
            }
        }
        t
    }

    fn ensure(&mut self, id: &ComponentId) -> NodeIndex {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.graph.add_node(id.clone());
        self.index.insert(id.clone(), i);
        i
    }

    fn edge(&mut self, a: NodeIndex, b: NodeIndex) {
        if self.graph.find_edge(a, b).is_none() {
            self.graph.add_edge(a, b, ());
        }
    }

    fn remove(&mut self, id: &ComponentId) {
        if let Some(i) = self.index.remove(id) {
            self.graph.remove_node(i);
        }
    }

    pub fn contains(&self, id: &ComponentId) -> bool {
        self.index.contains_key(id)
    }

    pub fn vertex_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Make sure a node, its agent, and the GPUs and NICs it reports are in the graph.
    pub fn add_inventory(&mut self, host: &str, gpus: impl Iterator<Item = u32>, nics: impl Iterator<Item = String>) {
        let node = self.ensure(&ComponentId::node(host));
        let agent = self.ensure(&ComponentId::agent(host));
        self.edge(agent, node);
        for g in gpus {
            let id = ComponentId::gpu(host, g);
            if !self.index.contains_key(&id) {
                let gi = self.ensure(&id);
                self.edge(gi, node);
            }
        }
        for n in nics {
            let id = ComponentId::nic(host, &n);
            if self.index.contains_key(&id) {
                continue;
            }
            let ni = self.ensure(&id);
            self.edge(ni, node);
            if let Some(leaf) = self.wiring.leaf_of(host, &n).map(str::to_string) {
                let li = self.ensure(&ComponentId::switch(&leaf));
                self.edge(ni, li);
                self.leaf_nics.entry(leaf.clone()).or_default().insert(id.clone());
                self.nic_leaf.insert(id, leaf);
            }
        }
    }

    /// Add a disk of a node.
    pub fn add_disk(&mut self, host: &str, device: &str) {
        let id = ComponentId::disk(host, device);
        if !self.index.contains_key(&id) {
            let node = self.ensure(&ComponentId::node(host));
            let d = self.ensure(&id);
            self.edge(d, node);
        }
    }

    /// The NVLink vertex, created on demand (`nvlink → gpu`).
    pub fn ensure_nvlink(&mut self, host: &str, gpu: u32, link: u32) {
        let id = ComponentId::nvlink(host, gpu, link);
        if !self.index.contains_key(&id) {
            let g = self.ensure(&ComponentId::gpu(host, gpu));
            let node = self.ensure(&ComponentId::node(host));
            self.edge(g, node);
            let l = self.ensure(&id);
            self.edge(l, g);
        }
    }

    /// Set (or change) a job's ranks. A job on one node depends on no NIC or switch.
    pub fn set_job(&mut self, job: &str, ranks: BTreeMap<u32, RankPlacement>) {
        let hosts: BTreeSet<&str> = ranks.values().map(|r| r.host.as_str()).collect();
        let multi_node = hosts.len() > 1;
        if let Some(old) = self.jobs.get(job) {
            if old.ranks == ranks && old.multi_node == multi_node {
                return;
            }
        }
        // Rebuild this job's vertices: cheap (its ranks only) and keeps the edges exact.
        self.remove_job(job);
        let ji = self.ensure(&ComponentId::job(job));
        for r in ranks.values() {
            let ri = self.ensure(&ComponentId::rank(job, r.rank));
            // Both ends were made just now (`remove_job` above), and each rank once: the edge cannot
            // be there yet. `edge` would look through every edge of the job's vertex for it, which
            // made placing an 800-rank job quadratic (over a second per tick while 12,500 nodes
            // sent their first reports).
            self.graph.add_edge(ji, ri, ());
            self.add_inventory(&r.host, r.gpus.iter().copied(), r.nic.iter().cloned());
            for g in &r.gpus {
                let gi = self.index[&ComponentId::gpu(&r.host, *g)];
                self.edge(ri, gi);
            }
            if r.gpus.is_empty() {
                let n = self.index[&ComponentId::node(&r.host)];
                self.edge(ri, n);
            }
            if multi_node {
                if let Some(nic) = &r.nic {
                    let ni = self.index[&ComponentId::nic(&r.host, nic)];
                    self.edge(ri, ni);
                }
            }
        }
        self.jobs.insert(job.to_string(), JobEntry { ranks, multi_node });
    }

    /// Remove a job and its ranks.
    pub fn remove_job(&mut self, job: &str) {
        if let Some(old) = self.jobs.remove(job) {
            for r in old.ranks.keys() {
                self.remove(&ComponentId::rank(job, *r));
            }
            self.remove(&ComponentId::job(job));
        }
    }

    pub fn job_ids(&self) -> impl Iterator<Item = &String> {
        self.jobs.keys()
    }

    pub fn job_ranks(&self, job: &str) -> Option<&BTreeMap<u32, RankPlacement>> {
        self.jobs.get(job).map(|j| &j.ranks)
    }

    pub fn job_multi_node(&self, job: &str) -> bool {
        self.jobs.get(job).is_some_and(|j| j.multi_node)
    }

    pub fn leaf_of_nic(&self, nic: &ComponentId) -> Option<&str> {
        self.nic_leaf.get(nic).map(|s| s.as_str())
    }

    pub fn nics_of_leaf(&self, leaf: &str) -> Option<&BTreeSet<ComponentId>> {
        self.leaf_nics.get(leaf)
    }

    pub fn leaves(&self) -> impl Iterator<Item = (&String, &BTreeSet<ComponentId>)> {
        self.leaf_nics.iter()
    }

    pub fn switch_tiers(&self) -> &BTreeMap<String, SwitchTier> {
        &self.wiring.tiers
    }

    pub fn uplinks(&self, switch: &str) -> &[String] {
        self.wiring.uplinks.get(switch).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// What `id` depends on (edges out).
    pub fn depends_on(&self, id: &ComponentId) -> Vec<ComponentId> {
        self.neighbors(id, Direction::Outgoing)
    }

    /// What depends on `id` (edges in).
    pub fn dependents(&self, id: &ComponentId) -> Vec<ComponentId> {
        self.neighbors(id, Direction::Incoming)
    }

    fn neighbors(&self, id: &ComponentId, dir: Direction) -> Vec<ComponentId> {
        let Some(&i) = self.index.get(id) else { return Vec::new() };
        let mut v: Vec<ComponentId> = self.graph.neighbors_directed(i, dir).map(|n| self.graph[n].clone()).collect();
        v.sort();
        v
    }

    /// Every component `id` depends on, transitively (its dependency closure, without itself).
    pub fn closure(&self, id: &ComponentId) -> BTreeSet<ComponentId> {
        let mut out = BTreeSet::new();
        let Some(&start) = self.index.get(id) else { return out };
        let mut queue = VecDeque::from([start]);
        let mut seen = std::collections::HashSet::from([start]);
        while let Some(i) = queue.pop_front() {
            for e in self.graph.edges_directed(i, Direction::Outgoing) {
                let t = e.target();
                if seen.insert(t) {
                    out.insert(self.graph[t].clone());
                    queue.push_back(t);
                }
            }
        }
        out
    }

    /// Ranks whose dependency path contains `root` (reverse walk from the root, stopping at ranks).
    /// A rank uses every NVLink of its GPU, so an NVLink root stands for its GPU here.
    pub fn ranks_depending_on(&self, root: &ComponentId) -> Vec<(String, u32)> {
        let key = match root {
            ComponentId::NvLink { host, gpu, .. } => ComponentId::gpu(host, *gpu),
            other => other.clone(),
        };
        let Some(&start) = self.index.get(&key) else { return Vec::new() };
        let mut out = Vec::new();
        let mut queue = VecDeque::from([start]);
        let mut seen = std::collections::HashSet::from([start]);
        while let Some(i) = queue.pop_front() {
            if let ComponentId::Rank { job, rank } = &self.graph[i] {
                out.push((job.clone(), *rank));
                continue;
            }
            for e in self.graph.edges_directed(i, Direction::Incoming) {
                let s = e.source();
                if seen.insert(s) {
                    queue.push_back(s);
                }
            }
        }
        // A rank of a multi-node job whose NIC the agent could not tell (no GPU, or no GPU→NIC
        // affinity) sends over any of its node's fabric NICs: collectives use every rail. So a
        // fabric NIC, or the leaf it is cabled to, is on that rank's path too.
        let fabric_hosts: BTreeSet<&str> = match root {
            ComponentId::Nic { host, .. } if self.nic_leaf.contains_key(root) => BTreeSet::from([host.as_str()]),
            ComponentId::Switch { name } => self
                .leaf_nics
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|n| match n {
                    ComponentId::Nic { host, .. } => Some(host.as_str()),
                    _ => None,
                })
                .collect(),
            _ => BTreeSet::new(),
        };
        if !fabric_hosts.is_empty() {
            for (job, e) in self.jobs.iter().filter(|(_, e)| e.multi_node) {
                for r in e.ranks.values() {
                    if r.nic.is_none() && fabric_hosts.contains(r.host.as_str()) {
                        out.push((job.clone(), r.rank));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The path `job → rank → gpu → node → nic → leaf` of one rank (nic and leaf only for a job on
    /// more than one node).
    pub fn rank_path(&self, job: &str, rank: u32) -> Option<Vec<String>> {
        let j = self.jobs.get(job)?;
        let r = j.ranks.get(&rank)?;
        let mut p = vec![ComponentId::job(job).to_string(), ComponentId::rank(job, rank).to_string()];
        for g in &r.gpus {
            p.push(ComponentId::gpu(&r.host, *g).to_string());
        }
        p.push(r.host.clone());
        if j.multi_node {
            if let Some(nic) = &r.nic {
                let nid = ComponentId::nic(&r.host, nic);
                p.push(nid.to_string());
                if let Some(leaf) = self.nic_leaf.get(&nid) {
                    p.push(ComponentId::switch(leaf).to_string());
                }
            }
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::topology::{RackDef, SwitchDef};

    fn file() -> TopologyFile {
        TopologyFile {
            switches: vec![
                SwitchDef { name: "leaf-00".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
                SwitchDef { name: "leaf-01".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
                SwitchDef { name: "spine-00".into(), tier: SwitchTier::Spine, uplinks: vec![] },
            ],
            racks: vec![
                RackDef { leaf: "leaf-00".into(), nodes: vec!["n0".into()] },
                RackDef { leaf: "leaf-01".into(), nodes: vec!["n1".into()] },
            ],
            rails: vec![],
            links: vec![],
            expected_rate_gbps: None,
        }
    }

    fn place(rank: u32, host: &str, gpu: u32) -> (u32, RankPlacement) {
        (rank, RankPlacement { rank, host: host.into(), gpus: vec![gpu], nic: Some(format!("mlx5_{gpu}")) })
    }

    #[test]
    fn multi_node_job_depends_on_nics_and_leaves_one_node_job_does_not() {
        let mut t = Topology::new(&file());
        t.set_job("big", [place(0, "n0", 0), place(1, "n1", 0)].into_iter().collect());
        t.set_job("small", [place(0, "n0", 1), place(1, "n0", 2)].into_iter().collect());
        let leaf = ComponentId::switch("leaf-00");
        assert_eq!(t.ranks_depending_on(&leaf), vec![("big".to_string(), 0)]);
        let node = ComponentId::node("n0");
        assert_eq!(t.ranks_depending_on(&node).len(), 3);
        let c = t.closure(&ComponentId::rank("big", 1));
        assert!(c.contains(&ComponentId::switch("spine-00")));
        assert!(!t.closure(&ComponentId::rank("small", 0)).contains(&ComponentId::nic("n0", "mlx5_1")));
        assert_eq!(
            t.rank_path("big", 1).unwrap(),
            ["job:big", "job:big/rank1", "n1/gpu0", "n1", "n1/nic:mlx5_0", "switch:leaf-01"]
        );
        assert_eq!(t.rank_path("small", 0).unwrap(), ["job:small", "job:small/rank0", "n0/gpu1", "n0"]);
    }

    #[test]
    fn a_rank_of_unknown_nic_depends_on_every_fabric_nic_of_its_node_when_the_job_spans_nodes() {
        let mut t = Topology::new(&file());
        t.add_inventory("n0", [0].into_iter(), ["mlx5_0".to_string()].into_iter());
        t.add_inventory("n1", [0].into_iter(), ["mlx5_0".to_string()].into_iter());
        // Progress-only ranks: no GPU, so no NIC either.
        let bare = |rank: u32, host: &str| (rank, RankPlacement { rank, host: host.into(), gpus: vec![], nic: None });
        t.set_job("wide", [bare(0, "n0"), bare(1, "n1")].into_iter().collect());
        t.set_job("local", [bare(0, "n0"), bare(1, "n0")].into_iter().collect());
        assert_eq!(t.ranks_depending_on(&ComponentId::nic("n0", "mlx5_0")), vec![("wide".to_string(), 0)]);
        assert_eq!(t.ranks_depending_on(&ComponentId::switch("leaf-01")), vec![("wide".to_string(), 1)]);
        // A NIC cabled to no leaf (a management port) is on no job's path.
        let mut t2 = Topology::new(&TopologyFile { racks: vec![], ..file() });
        t2.add_inventory("n0", std::iter::empty(), ["eno1".to_string()].into_iter());
        t2.set_job("wide", [bare(0, "n0"), bare(1, "n1")].into_iter().collect());
        assert!(t2.ranks_depending_on(&ComponentId::nic("n0", "eno1")).is_empty());
    }

    #[test]
    fn jobs_come_and_go_without_disturbing_hardware() {
        let mut t = Topology::new(&file());
        t.set_job("a", [place(0, "n0", 0)].into_iter().collect());
        let before = t.vertex_count();
        t.remove_job("a");
        assert_eq!(t.vertex_count(), before - 2);
        assert!(t.contains(&ComponentId::gpu("n0", 0)));
        assert!(t.ranks_depending_on(&ComponentId::gpu("n0", 0)).is_empty());
        // A rank uses its GPU's NVLinks, in the graph or not.
        t.set_job("b", [place(0, "n0", 0)].into_iter().collect());
        assert_eq!(t.ranks_depending_on(&ComponentId::nvlink("n0", 0, 3)).len(), 1);
        t.ensure_nvlink("n0", 0, 3);
        assert_eq!(t.ranks_depending_on(&ComponentId::nvlink("n0", 0, 3)).len(), 1);
        assert_eq!(t.depends_on(&ComponentId::nvlink("n0", 0, 3)), vec![ComponentId::gpu("n0", 0)]);
    }
}
