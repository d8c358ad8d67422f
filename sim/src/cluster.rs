//! The static cluster model: names, hardware identities, fabric wiring, job placement, the topology
//! file the analyzer gets, and the ground truth of scenario.md (which ranks depend on what).

use std::collections::{BTreeSet, HashMap};

use faultline_proto::ComponentId;
use faultline_proto::topology::{RackDef, RailDef, SwitchDef, SwitchTier, TopologyFile};

use crate::naming;
use crate::noise::{self, what};
pub use crate::realism::LinkLayer;
use crate::scenario::{ClusterSpec, Fabric, Scenario};

/// Static identity of one GPU.
#[derive(Debug, Clone)]
pub struct GpuStatic {
    pub uuid: String,
    pub serial: String,
    /// NVML form, `00000000:18:00.0`.
    pub bus_id: String,
    /// Kernel XID form, `0000:18:00`.
    pub kmsg_dev: String,
    /// PCIe root port above it, `0000:17:01.0` (AER lines name it).
    pub root_port: String,
}

/// Static identity of one NIC.
#[derive(Debug, Clone)]
pub struct NicStatic {
    pub name: String,
    pub netdev: String,
    pub bus_id: String,
    /// The fabric address of its netdev (`addrs::nic`), made once.
    pub addr: String,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// tor: the rack's leaf.
    pub rack_leaf: Option<usize>,
    pub gpus: Vec<GpuStatic>,
    pub nics: Vec<NicStatic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    pub rank: u32,
    pub node: usize,
    pub gpu: u32,
    pub nic: u32,
    pub local_rank: u32,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub tag: u64,
    pub step_ms: f64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub hosts: Vec<usize>,
    pub ranks: Vec<Rank>,
    /// More than one node: the job talks over NICs, leaves and spines.
    pub multi_node: bool,
    pub launcher: crate::realism::Launcher,
    pub progress_api: bool,
    pub pause_status: bool,
    pub pipeline_stages: u32,
}

impl Job {
    pub fn active_at(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}

/// The whole static cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<Node>,
    pub leaves: Vec<String>,
    pub spines: Vec<String>,
    pub jobs: Vec<Job>,
    pub host_index: HashMap<String, usize>,
    pub job_index: HashMap<String, usize>,
    /// Per node: the jobs ever placed on it, with the rank indexes (into `Job::ranks`) there.
    pub node_jobs: Vec<Vec<(usize, Vec<usize>)>>,
}

/// PCI bus numbers of the eight GPUs of a DGX H100 board; more GPUs continue the pattern.
const GPU_BUSES: [u32; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

fn gpu_bus(i: u32) -> u32 {
    GPU_BUSES.get(i as usize).copied().unwrap_or(0x10 + (i * 7) % 0xe0)
}

impl Cluster {
    pub fn build(sc: &Scenario) -> Self {
        let spec = sc.cluster.clone();
        let n = spec.nodes;
        let leaves_n = spec.leaves();
        let leaves: Vec<String> = (0..leaves_n).map(|i| naming::leaf(i, leaves_n)).collect();
        let spines: Vec<String> = (0..spec.spines).map(|i| naming::spine(i, spec.spines)).collect();
        let mut nodes = Vec::with_capacity(n as usize);
        for i in 0..n {
            let name = naming::node(i, n);
            let gpus = (0..spec.gpus_per_node)
                .map(|g| {
                    let h = noise::hash(&[sc.seed, what::STATIC, u64::from(i), u64::from(g)]);
                    let bus = gpu_bus(g);
                    GpuStatic {
                        uuid: format!(
                            "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                            h >> 32,
                            (h >> 16) & 0xffff,
                            h & 0xffff,
                            (h >> 48) & 0xffff,
                            noise::mix(h) & 0xffff_ffff_ffff
                        ),
                        serial: format!("{:013}", 1_650_000_000_000 + noise::mix(h) % 10_000_000_000),
                        bus_id: format!("00000000:{bus:02x}:00.0"),
                        kmsg_dev: format!("0000:{bus:02x}:00"),
                        root_port: format!("0000:{:02x}:01.0", bus.saturating_sub(1)),
                    }
                })
                .collect();
            let nics = (0..spec.nics_per_node)
                .map(|k| {
                    let bus = gpu_bus(k) + 1;
                    NicStatic {
                        name: naming::nic(k),
                        netdev: match spec.link_layer {
                            LinkLayer::Infiniband => format!("ibp{bus}s0"),
                            LinkLayer::Ethernet => format!("eth{k}"),
                        },
                        bus_id: format!("0000:{bus:02x}:00.0"),
                        addr: crate::addrs::nic(i as usize, k),
                    }
                })
                .collect();
            let rack_leaf = match spec.fabric {
                Fabric::Tor => Some((i / spec.nodes_per_leaf) as usize),
                Fabric::Rail => None,
            };
            nodes.push(Node { name, rack_leaf, gpus, nics });
        }
        let host_index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let mut jobs = Vec::new();
        let mut node_jobs: Vec<Vec<(usize, Vec<usize>)>> = vec![Vec::new(); nodes.len()];
        for (ji, j) in sc.jobs.iter().enumerate() {
            let hosts: Vec<usize> = j.hosts.iter().map(|h| host_index[h]).collect();
            let mut ranks = Vec::new();
            for (hi, (&h, gpus)) in hosts.iter().zip(&j.gpus).enumerate() {
                let mut here = Vec::new();
                for (k, &g) in gpus.iter().enumerate() {
                    here.push(ranks.len());
                    ranks.push(Rank {
                        rank: ranks.len() as u32,
                        node: h,
                        gpu: g,
                        nic: g % spec.nics_per_node,
                        local_rank: k as u32,
                    });
                }
                let _ = hi;
                node_jobs[h].push((ji, here));
            }
            jobs.push(Job {
                id: j.id.clone(),
                tag: noise::tag(&j.id),
                step_ms: j.step_time_s * 1000.0,
                start_ms: (j.start_s * 1000.0).round() as i64,
                end_ms: (j.end_s * 1000.0).round() as i64,
                multi_node: hosts.len() > 1,
                launcher: j.launcher,
                progress_api: j.progress_api,
                pause_status: j.pause_status,
                pipeline_stages: j.pipeline_stages,
                hosts,
                ranks,
            });
        }
        let job_index = jobs.iter().enumerate().map(|(i, j)| (j.id.clone(), i)).collect();
        Self { spec, nodes, leaves, spines, jobs, host_index, job_index, node_jobs }
    }

    /// Which leaf NIC `nic` of node `node` is cabled to.
    pub fn leaf_of(&self, node: usize, nic: u32) -> usize {
        match self.spec.fabric {
            Fabric::Tor => self.nodes[node].rack_leaf.unwrap_or(0),
            Fabric::Rail => nic as usize,
        }
    }

    pub fn leaf_index(&self, name: &str) -> Option<usize> {
        self.leaves.iter().position(|l| l == name)
    }

    /// Every (node, nic) cabled to a leaf.
    pub fn nics_of_leaf(&self, leaf: usize) -> Vec<(usize, u32)> {
        match self.spec.fabric {
            Fabric::Tor => {
                let per = self.spec.nodes_per_leaf as usize;
                let lo = leaf * per;
                let hi = ((leaf + 1) * per).min(self.nodes.len());
                (lo..hi).flat_map(|n| (0..self.spec.nics_per_node).map(move |k| (n, k))).collect()
            }
            Fabric::Rail => (0..self.nodes.len()).map(|n| (n, leaf as u32)).collect(),
        }
    }

    /// The switch wiring the analyzer gets: tor = one rack per leaf, rail = one rail per NIC index;
    /// every leaf uplinks to every spine.
    pub fn topology(&self) -> TopologyFile {
        let mut switches: Vec<SwitchDef> = self
            .leaves
            .iter()
            .map(|l| SwitchDef { name: l.clone(), tier: SwitchTier::Leaf, uplinks: self.spines.clone() })
            .collect();
        switches.extend(self.spines.iter().map(|s| SwitchDef {
            name: s.clone(),
            tier: SwitchTier::Spine,
            uplinks: vec![],
        }));
        let mut topo = TopologyFile { switches, ..Default::default() };
        match self.spec.fabric {
            Fabric::Tor => {
                for (li, leaf) in self.leaves.iter().enumerate() {
                    let nodes: Vec<String> =
                        self.nodes.iter().filter(|n| n.rack_leaf == Some(li)).map(|n| n.name.clone()).collect();
                    topo.racks.push(RackDef { leaf: leaf.clone(), nodes });
                }
            }
            Fabric::Rail => {
                for (li, leaf) in self.leaves.iter().enumerate() {
                    topo.rails.push(RailDef { leaf: leaf.clone(), nic: naming::nic(li as u32), nodes: None });
                }
            }
        }
        topo
    }

    /// The topology file as TOML, for `faultline-analyzer --topology`.
    pub fn topology_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.topology())
    }

    pub fn gpus(&self) -> usize {
        self.nodes.len() * self.spec.gpus_per_node as usize
    }

    pub fn nics(&self) -> usize {
        self.nodes.len() * self.spec.nics_per_node as usize
    }

    /// Ground truth (scenario.md): does this rank's dependency path contain `target`? A rank depends
    /// on its GPU, its GPU's NVLinks, its node (and the node's local disk, where checkpoints go),
    /// and, only when its job spans more than one node, on its NIC, that NIC's leaf and the spines.
    pub fn rank_depends_on(&self, job: &Job, r: &Rank, target: &ComponentId) -> bool {
        let host = &self.nodes[r.node].name;
        match target {
            ComponentId::Gpu { host: h, index } => h == host && *index == r.gpu,
            ComponentId::NvLink { host: h, gpu, .. } => h == host && *gpu == r.gpu,
            ComponentId::Node { host: h } | ComponentId::Disk { host: h, .. } => h == host,
            ComponentId::Nic { host: h, name } => job.multi_node && h == host && *name == naming::nic(r.nic),
            ComponentId::Switch { name } => {
                job.multi_node && (self.leaves[self.leaf_of(r.node, r.nic)] == *name || self.spines.contains(name))
            }
            ComponentId::Agent { .. } => false,
            ComponentId::Job { id } => *id == job.id,
            ComponentId::Rank { job: j, rank } => *j == job.id && *rank == r.rank,
        }
    }

    /// Candidate jobs for a target: for host-local targets only the jobs on that host.
    fn candidate_jobs(&self, target: &ComponentId) -> Vec<usize> {
        match target.host().and_then(|h| self.host_index.get(h)) {
            Some(&n) => self.node_jobs[n].iter().map(|(j, _)| *j).collect(),
            None => (0..self.jobs.len()).collect(),
        }
    }

    /// Ground truth: the jobs that, at `t_ms`, have a rank whose dependency path contains `target`.
    pub fn affected_jobs(&self, target: &ComponentId, t_ms: i64) -> Vec<String> {
        let mut out = BTreeSet::new();
        for ji in self.candidate_jobs(target) {
            let j = &self.jobs[ji];
            if j.active_at(t_ms) && j.ranks.iter().any(|r| self.rank_depends_on(j, r, target)) {
                out.insert(j.id.clone());
            }
        }
        out.into_iter().collect()
    }

    /// The fault's blast radius at `t_ms`: the target and everything that depends on it (components
    /// on it, ranks whose path contains it, their jobs). An incident rooted anywhere in here
    /// "detected" the fault.
    pub fn blast_radius(&self, target: &ComponentId, t_ms: i64) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.insert(target.to_string());
        let links = self.spec.nvlinks_per_gpu;
        match target {
            ComponentId::Node { host } => {
                for g in 0..self.spec.gpus_per_node {
                    out.insert(ComponentId::gpu(host.clone(), g).to_string());
                    for l in 0..links {
                        out.insert(ComponentId::nvlink(host.clone(), g, l).to_string());
                    }
                }
                for k in 0..self.spec.nics_per_node {
                    out.insert(ComponentId::nic(host.clone(), naming::nic(k)).to_string());
                }
                out.insert(ComponentId::disk(host.clone(), naming::DISK).to_string());
                out.insert(ComponentId::agent(host.clone()).to_string());
            }
            ComponentId::Gpu { host, index } => {
                for l in 0..links {
                    out.insert(ComponentId::nvlink(host.clone(), *index, l).to_string());
                }
            }
            ComponentId::Switch { name } => {
                if let Some(li) = self.leaf_index(name) {
                    for (n, k) in self.nics_of_leaf(li) {
                        out.insert(ComponentId::nic(self.nodes[n].name.clone(), naming::nic(k)).to_string());
                    }
                }
            }
            _ => {}
        }
        for ji in self.candidate_jobs(target) {
            let j = &self.jobs[ji];
            if !j.active_at(t_ms) {
                continue;
            }
            let mut hit = false;
            for r in &j.ranks {
                if self.rank_depends_on(j, r, target) {
                    hit = true;
                    out.insert(ComponentId::rank(j.id.clone(), r.rank).to_string());
                }
            }
            if hit {
                out.insert(ComponentId::job(j.id.clone()).to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(src: &str) -> Cluster {
        Cluster::build(&Scenario::parse(src, "t.toml").unwrap())
    }

    const TOR: &str = r#"
name = "t"
duration_s = 600
[cluster]
nodes = 16
nodes_per_leaf = 4
[[job]]
id = "big"
hosts = ["node-0000", "node-0004"]
step_time_s = 1
[[job]]
id = "solo"
hosts = ["node-0001"]
step_time_s = 1
[[job]]
id = "late"
hosts = ["node-0002", "node-0003"]
step_time_s = 1
start_s = 300
"#;

    #[test]
    fn names_widen_with_the_cluster() {
        assert_eq!(naming::node(3, 32), "node-0003");
        assert_eq!(naming::node(12_499, 12_500), "node-12499");
        assert_eq!(naming::leaf(2, 4), "leaf-02");
        assert_eq!(naming::leaf(390, 391), "leaf-390");
    }

    #[test]
    fn tor_topology_has_a_rack_per_leaf() {
        let c = cluster(TOR);
        let t = c.topology();
        t.validate().unwrap();
        assert_eq!(t.leaves().len(), 4);
        assert_eq!(t.leaf_of("node-0005", "mlx5_3"), Some("leaf-01"));
        assert_eq!(t.uplinks_of("leaf-00").len(), 2);
        assert_eq!(c.leaf_of(5, 3), 1);
    }

    #[test]
    fn rail_topology_has_a_rail_per_nic() {
        let c = cluster("name = \"r\"\nduration_s = 60\n[cluster]\nfabric = \"rail\"\nnodes = 4\n");
        let t = c.topology();
        t.validate().unwrap();
        assert_eq!(t.leaves().len(), 8);
        assert_eq!(t.leaf_of("node-0002", "mlx5_5"), Some("leaf-05"));
        assert_eq!(c.nics_of_leaf(5).len(), 4);
    }

    #[test]
    fn ground_truth_follows_the_spec() {
        let c = cluster(TOR);
        let id = |s: &str| s.parse::<ComponentId>().unwrap();
        // A one-node job talks over NVLink alone: a leaf or NIC fault does not touch it.
        assert_eq!(c.affected_jobs(&id("switch:leaf-00"), 10_000), ["big"]);
        assert_eq!(c.affected_jobs(&id("node-0001/nic:mlx5_0"), 10_000), Vec::<String>::new());
        assert_eq!(c.affected_jobs(&id("node-0001/gpu3"), 10_000), ["solo"]);
        assert_eq!(c.affected_jobs(&id("node-0004/gpu3/nvlink2"), 10_000), ["big"]);
        assert_eq!(c.affected_jobs(&id("node-0004/agent"), 10_000), Vec::<String>::new());
        assert_eq!(c.affected_jobs(&id("switch:spine-01"), 10_000), ["big"]);
        // Jobs not running at at_s are not affected.
        assert_eq!(c.affected_jobs(&id("node-0002"), 10_000), Vec::<String>::new());
        assert_eq!(c.affected_jobs(&id("node-0002"), 400_000), ["late"]);
        assert_eq!(c.affected_jobs(&id("job:solo"), 10_000), ["solo"]);
        let br = c.blast_radius(&id("node-0004/gpu3"), 10_000);
        assert!(br.contains("node-0004/gpu3/nvlink17"));
        assert!(br.contains("job:big/rank11"));
        assert!(br.contains("job:big"));
        assert!(!br.contains("node-0004"));
        let br = c.blast_radius(&id("switch:leaf-01"), 10_000);
        assert!(br.contains("node-0004/nic:mlx5_7"));
        assert!(!br.contains("node-0000/nic:mlx5_7"));
        assert!(br.contains("job:big/rank8") && !br.contains("job:big/rank0"));
    }
}
