//! Scenario files (spec/scenario.md): parse, validate, and place jobs. Every refusal names the line:
//! `scenario.toml:14: unknown key `nodez` in [cluster]`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use faultline_proto::{ComponentId, ComponentKind, FaultClass};
use serde::Deserialize;
use toml::Spanned;

use crate::naming;
use crate::noise::{self, SeqRng, what};
pub use crate::realism::{Behaviour, Launcher, LinkLayer, Network};

/// Most nodes a scenario may ask for (the scale target is 12,500; leave room).
pub const MAX_NODES: u32 = 100_000;
/// Longest run a scenario may ask for: 30 virtual days.
pub const MAX_DURATION_S: f64 = 30.0 * 86_400.0;
/// Per-node limits follow the wire format's (`proto::report::limits`).
pub const MAX_GPUS_PER_NODE: u32 = faultline_proto::limits::MAX_GPUS as u32;
/// H100/H200 SXM have 18 NVLinks per GPU; the wire format allows 32.
pub const DEFAULT_NVLINKS_PER_GPU: u32 = 18;

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `file:line: message`
    #[error("{file}:{line}: {message}")]
    At { file: String, line: usize, message: String },
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl ScenarioError {
    /// The line the error names, if it names one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::At { line, .. } => Some(*line),
            Self::Read { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    /// All NICs of a node go to its rack's leaf.
    Tor,
    /// NIC i of every node goes to leaf i.
    Rail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    seed: Option<Spanned<u64>>,
    duration_s: Spanned<f64>,
    #[serde(default)]
    interval_s: Option<Spanned<f64>>,
    #[serde(default)]
    noise: Option<Spanned<f64>>,
    cluster: Spanned<RawCluster>,
    #[serde(default)]
    behaviour: Option<Spanned<Behaviour>>,
    #[serde(default)]
    network: Option<Spanned<Network>>,
    #[serde(default)]
    probes: Option<Spanned<crate::realism::ProbeSpec>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    fabric: Option<Spanned<Fabric>>,
    nodes: Spanned<u32>,
    #[serde(default)]
    nodes_per_leaf: Option<Spanned<u32>>,
    #[serde(default)]
    spines: Option<Spanned<u32>>,
    #[serde(default)]
    gpus_per_node: Option<Spanned<u32>>,
    #[serde(default)]
    nics_per_node: Option<Spanned<u32>>,
    #[serde(default)]
    gpu_model: Option<Spanned<String>>,
    /// Extension: NVLinks per GPU (default 18, as on H100/H200 SXM).
    #[serde(default)]
    nvlinks_per_gpu: Option<Spanned<u32>>,
    #[serde(default)]
    link_layer: Option<Spanned<LinkLayer>>,
    #[serde(default)]
    dcgm: Option<bool>,
    #[serde(default)]
    nonfabric_netdevs: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    id: Spanned<String>,
    #[serde(default)]
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    nodes: Option<Spanned<u32>>,
    #[serde(default)]
    gpus_per_node: Option<Spanned<u32>>,
    step_time_s: Spanned<f64>,
    #[serde(default)]
    start_s: Option<Spanned<f64>>,
    #[serde(default)]
    end_s: Option<Spanned<f64>>,
    #[serde(default)]
    scheduler: Option<Launcher>,
    #[serde(default)]
    progress_api: Option<bool>,
    #[serde(default)]
    pause_status: Option<bool>,
    #[serde(default)]
    pipeline_stages: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    target: Spanned<String>,
    at_s: Spanned<f64>,
    #[serde(default)]
    duration_s: Option<Spanned<f64>>,
}

/// The cluster a scenario describes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub fabric: Fabric,
    pub nodes: u32,
    /// tor only (rail: 0).
    pub nodes_per_leaf: u32,
    pub spines: u32,
    pub gpus_per_node: u32,
    pub nics_per_node: u32,
    pub gpu_model: String,
    pub nvlinks_per_gpu: u32,
    pub link_layer: LinkLayer,
    /// DCGM runs on the nodes: profiling fields (`tensor_active_pct`) exist.
    pub dcgm: bool,
    /// The agents run with `[nics] collect_nonfabric_netdevs = true`: reports also carry the
    /// management, storage and bond netdevs (`fabric: false`). Default false, the agent's default.
    pub nonfabric_netdevs: bool,
}

impl ClusterSpec {
    pub fn leaves(&self) -> u32 {
        match self.fabric {
            Fabric::Tor => self.nodes.div_ceil(self.nodes_per_leaf),
            Fabric::Rail => self.nics_per_node,
        }
    }
}

/// One training job, placed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub id: String,
    /// Host names in rank order.
    pub hosts: Vec<String>,
    /// GPU indexes used on each host (same order as `hosts`).
    pub gpus: Vec<Vec<u32>>,
    pub step_time_s: f64,
    pub start_s: f64,
    pub end_s: f64,
    /// Who launched it: Slurm and Kubernetes report its state and exit code, torchrun does not.
    pub launcher: Launcher,
    /// Its ranks post to the progress API.
    pub progress_api: bool,
    /// It posts `checkpointing`/`evaluating` during those pauses (progress API jobs only).
    pub pause_status: bool,
    /// Pipeline stages (1: none); only the last stage's ranks compute a loss.
    pub pipeline_stages: u32,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultClass,
    pub target: ComponentId,
    pub at_s: f64,
    /// 0 = lasts until the end.
    pub duration_s: f64,
}

impl FaultSpec {
    /// When the fault clears, if it does before the run ends.
    pub fn clear_s(&self, run_s: f64) -> Option<f64> {
        (self.duration_s > 0.0 && self.at_s + self.duration_s < run_s).then_some(self.at_s + self.duration_s)
    }
}

/// A parsed, validated scenario with every job placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub duration_s: f64,
    pub interval_s: f64,
    pub noise: f64,
    pub cluster: ClusterSpec,
    pub behaviour: Behaviour,
    pub network: Network,
    /// Active fabric probes (`[probes]`): off by default.
    pub probes: crate::realism::ProbeSpec,
    pub jobs: Vec<JobSpec>,
    pub faults: Vec<FaultSpec>,
}

struct Ctx<'a> {
    file: &'a str,
    src: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The table header (`[cluster]`, `[[fault]]`) that encloses a byte offset, if any.
    fn table_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.src.len());
        let end = self.src[offset..].find('\n').map_or(self.src.len(), |i| offset + i);
        self.src[..end]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.split('#').next().unwrap_or(l).trim().to_string())
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::At { file: self.file.to_string(), line: self.line_of(span.start), message: message.into() }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ScenarioError {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let table = self.table_at(span.start);
        let message = if let Some(rest) = msg.strip_prefix("unknown field ") {
            // "unknown field `nodez`, expected one of `a`, `b`"
            let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let place = table.map_or_else(|| "at the top level".to_string(), |t| format!("in {t}"));
            if expected.is_empty() {
                format!("unknown key {key} {place}")
            } else {
                format!("unknown key {key} {place} (expected {expected})")
            }
        } else if let Some(rest) = msg.strip_prefix("unknown variant ") {
            format!("unknown value {rest}")
        } else {
            match (msg.strip_prefix("missing field "), table) {
                (Some(key), Some(t)) if span.end > 0 => format!("missing key {key} in {t}"),
                (Some(key), _) => format!("missing key {key}"),
                (None, _) => msg,
            }
        };
        self.err(span, message)
    }
}

impl Scenario {
    /// Read and parse a scenario file; errors name `path:line`.
    pub fn from_path(path: &Path) -> Result<Self, ScenarioError> {
        let src = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        Self::parse(&src, &file)
    }

    /// Parse scenario text. `file` is the name used in error messages.
    pub fn parse(src: &str, file: &str) -> Result<Self, ScenarioError> {
        let cx = Ctx { file, src };
        let raw: RawScenario = toml::from_str(src).map_err(|e| cx.toml_error(&e))?;
        resolve(&cx, raw)
    }

    /// Every host name of the cluster, in leaf order.
    pub fn host_names(&self) -> Vec<String> {
        (0..self.cluster.nodes).map(|i| naming::node(i, self.cluster.nodes)).collect()
    }
}

fn finite_in(cx: &Ctx, v: &Spanned<f64>, name: &str, lo: f64, hi: f64) -> Result<f64, ScenarioError> {
    let x = *v.get_ref();
    if !x.is_finite() || x < lo || x > hi {
        return Err(cx.err(v.span(), format!("{name} = {x} is out of range ({lo} to {hi})")));
    }
    Ok(x)
}

fn resolve(cx: &Ctx, raw: RawScenario) -> Result<Scenario, ScenarioError> {
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(cx.err(raw.name.span(), "name must not be empty"));
    }
    let seed = raw.seed.as_ref().map_or(0, |s| *s.get_ref());
    let duration_s = finite_in(cx, &raw.duration_s, "duration_s", 1.0, MAX_DURATION_S)?;
    let interval_s = match &raw.interval_s {
        Some(v) => finite_in(cx, v, "interval_s", 1.0, 3600.0)?,
        None => 10.0,
    };
    if let Some(v) = &raw.interval_s {
        if (interval_s * 1000.0).fract() != 0.0 {
            return Err(cx.err(v.span(), "interval_s must be a whole number of milliseconds"));
        }
    }
    let noise = match &raw.noise {
        Some(v) => finite_in(cx, v, "noise", 0.0, 10.0)?,
        None => 1.0,
    };
    let cluster = resolve_cluster(cx, &raw.cluster)?;
    let behaviour = raw.behaviour.as_ref().map_or_else(Behaviour::default, |b| b.get_ref().clone());
    if let (Some(b), Err(e)) = (&raw.behaviour, behaviour.check()) {
        return Err(cx.err(b.span(), format!("{e} in [behaviour]")));
    }
    let network = raw.network.as_ref().map_or_else(Network::default, |b| b.get_ref().clone());
    if let (Some(b), Err(e)) = (&raw.network, network.check()) {
        return Err(cx.err(b.span(), format!("{e} in [network]")));
    }
    let probes = raw.probes.as_ref().map_or_else(Default::default, |b| b.get_ref().clone());
    if let (Some(b), Err(e)) = (&raw.probes, probes.check()) {
        return Err(cx.err(b.span(), format!("{e} in [probes]")));
    }
    let hosts: BTreeMap<String, u32> = (0..cluster.nodes).map(|i| (naming::node(i, cluster.nodes), i)).collect();

    let mut jobs = Vec::new();
    let mut placed = Placement::new(cluster.nodes, cluster.gpus_per_node);
    let mut rng = SeqRng::new(seed, what::PLACEMENT);
    let mut ids = BTreeSet::new();
    for j in &raw.job {
        let mut job = resolve_job(cx, j, &cluster, &hosts, duration_s, &mut placed, &mut rng)?;
        job_options(cx, j.get_ref(), &mut job, &behaviour, seed)?;
        if !ids.insert(job.id.clone()) {
            return Err(cx.err(j.get_ref().id.span(), format!("job id `{}` is used twice", job.id)));
        }
        jobs.push(job);
    }

    let mut faults = Vec::new();
    for f in &raw.fault {
        faults.push(resolve_fault(cx, f.get_ref(), &cluster, &hosts, &jobs, duration_s)?);
    }
    Ok(Scenario { name, seed, duration_s, interval_s, noise, cluster, behaviour, network, probes, jobs, faults })
}

/// A job's behaviour options: what its table says, else drawn from the seed with `[behaviour]`'s shares.
fn job_options(cx: &Ctx, r: &RawJob, job: &mut JobSpec, b: &Behaviour, seed: u64) -> Result<(), ScenarioError> {
    let u = |k: u64| noise::unit(&[seed, what::PLACEMENT, noise::tag(&job.id), k]);
    job.launcher = r.scheduler.unwrap_or(Launcher::Slurm);
    job.progress_api = r.progress_api.unwrap_or_else(|| u(1) < b.progress_api_share);
    job.pause_status = r.pause_status.unwrap_or_else(|| u(2) < b.pause_status_share);
    let ranks = job.gpus.iter().map(Vec::len).sum::<usize>() as u32;
    job.pipeline_stages = match &r.pipeline_stages {
        Some(v) => {
            let s = *v.get_ref();
            if s == 0 || s > ranks {
                return Err(cx.err(v.span(), format!("pipeline_stages = {s} is out of range (1 to {ranks} ranks)")));
            }
            s
        }
        None if ranks >= 2 && u(3) < b.pipeline_share => {
            let fit: Vec<u32> = [2, 4, 8].into_iter().filter(|&s| ranks.is_multiple_of(s)).collect();
            fit.get((u(4) * fit.len() as f64) as usize).copied().unwrap_or(1)
        }
        None => 1,
    };
    Ok(())
}

fn resolve_cluster(cx: &Ctx, c: &Spanned<RawCluster>) -> Result<ClusterSpec, ScenarioError> {
    let r = c.get_ref();
    let fabric = r.fabric.as_ref().map_or(Fabric::Tor, |f| *f.get_ref());
    let count = |v: &Option<Spanned<u32>>, name: &str, default: u32, lo: u32, hi: u32| -> Result<u32, ScenarioError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let x = *s.get_ref();
                if x < lo || x > hi {
                    Err(cx.err(s.span(), format!("{name} = {x} is out of range ({lo} to {hi}) in [cluster]")))
                } else {
                    Ok(x)
                }
            }
        }
    };
    let nodes = count(&Some(r.nodes.clone()), "nodes", 0, 1, MAX_NODES)?;
    let nodes_per_leaf = match (fabric, &r.nodes_per_leaf) {
        (Fabric::Rail, Some(s)) => {
            return Err(cx.err(s.span(), "nodes_per_leaf applies to fabric = \"tor\" only (rail: one leaf per NIC)"));
        }
        (Fabric::Rail, None) => 0,
        (Fabric::Tor, v) => count(v, "nodes_per_leaf", 16, 1, 4096)?,
    };
    let spines = count(&r.spines, "spines", 2, 1, 256)?;
    let gpus_per_node = count(&r.gpus_per_node, "gpus_per_node", 8, 1, MAX_GPUS_PER_NODE)?;
    let nics_per_node = count(&r.nics_per_node, "nics_per_node", 8, 1, 64)?;
    let nvlinks_per_gpu = count(
        &r.nvlinks_per_gpu,
        "nvlinks_per_gpu",
        DEFAULT_NVLINKS_PER_GPU,
        0,
        faultline_proto::limits::MAX_NVLINKS_PER_GPU as u32,
    )?;
    let gpu_model = match &r.gpu_model {
        None => "H100".to_string(),
        Some(s) => {
            let m = s.get_ref().trim();
            if m.is_empty() || m.len() > 128 {
                return Err(cx.err(s.span(), "gpu_model must be 1 to 128 characters"));
            }
            m.to_string()
        }
    };
    let link_layer = r.link_layer.as_ref().map_or_else(LinkLayer::default, |l| *l.get_ref());
    Ok(ClusterSpec {
        fabric,
        nodes,
        nodes_per_leaf,
        spines,
        gpus_per_node,
        nics_per_node,
        gpu_model,
        nvlinks_per_gpu,
        link_layer,
        dcgm: r.dcgm.unwrap_or(false),
        nonfabric_netdevs: r.nonfabric_netdevs.unwrap_or(false),
    })
}

/// Which GPUs of which host are taken when.
struct Placement {
    /// Per host: (start, end, GPU bitmask) of the jobs placed so far.
    busy: Vec<Vec<(f64, f64, u64)>>,
    gpus_per_node: u32,
}

impl Placement {
    fn new(nodes: u32, gpus_per_node: u32) -> Self {
        Self { busy: vec![Vec::new(); nodes as usize], gpus_per_node }
    }

    /// Bitmask of the GPUs of `host` taken at some time in [start, end).
    fn taken(&self, host: usize, start: f64, end: f64) -> u64 {
        self.busy[host].iter().filter(|(s, e, _)| *s < end && start < *e).fold(0, |m, (_, _, g)| m | g)
    }

    fn free_count(&self, host: usize, start: f64, end: f64) -> usize {
        self.gpus_per_node as usize - self.taken(host, start, end).count_ones() as usize
    }

    /// GPUs of `host` free during [start, end), lowest first.
    fn free(&self, host: usize, start: f64, end: f64) -> Vec<u32> {
        let taken = self.taken(host, start, end);
        (0..self.gpus_per_node).filter(|g| taken & (1u64 << g) == 0).collect()
    }

    fn take(&mut self, host: usize, start: f64, end: f64, gpus: &[u32]) {
        let mask = gpus.iter().fold(0u64, |m, g| m | (1u64 << g));
        self.busy[host].push((start, end, mask));
    }
}

fn resolve_job(
    cx: &Ctx,
    j: &Spanned<RawJob>,
    cluster: &ClusterSpec,
    hosts: &BTreeMap<String, u32>,
    duration_s: f64,
    placed: &mut Placement,
    rng: &mut SeqRng,
) -> Result<JobSpec, ScenarioError> {
    let r = j.get_ref();
    let id = r.id.get_ref().clone();
    if !faultline_proto::id::valid_name(&id) {
        return Err(cx.err(r.id.span(), format!("job id {id:?} must be non-empty, without '/' or spaces")));
    }
    let step_time_s = finite_in(cx, &r.step_time_s, "step_time_s", 0.001, 3600.0)?;
    let start_s = match &r.start_s {
        Some(v) => finite_in(cx, v, "start_s", 0.0, duration_s)?,
        None => 0.0,
    };
    if start_s >= duration_s {
        let span = r.start_s.as_ref().map_or(j.span(), |v| v.span());
        return Err(cx.err(span, format!("start_s = {start_s} is not before duration_s = {duration_s}")));
    }
    let end_s = match &r.end_s {
        Some(v) => {
            let e = finite_in(cx, v, "end_s", 0.0, duration_s)?;
            if e <= start_s {
                return Err(cx.err(v.span(), format!("end_s = {e} must be after start_s = {start_s}")));
            }
            e
        }
        None => duration_s,
    };
    let gpn = match &r.gpus_per_node {
        Some(v) => {
            let g = *v.get_ref();
            if g == 0 || g > cluster.gpus_per_node {
                return Err(cx.err(
                    v.span(),
                    format!("gpus_per_node = {g} is out of range (1 to {} GPUs per node)", cluster.gpus_per_node),
                ));
            }
            g as usize
        }
        None => cluster.gpus_per_node as usize,
    };
    let (host_idx, gpus): (Vec<usize>, Vec<Vec<u32>>) = match (&r.hosts, &r.nodes) {
        (Some(_), Some(n)) => {
            return Err(cx.err(n.span(), format!("job `{id}` gives both `hosts` and `nodes`; give one")));
        }
        (None, None) => {
            return Err(cx.err(j.span(), format!("job `{id}` needs `hosts = [...]` or `nodes = N`")));
        }
        (Some(list), None) => {
            if list.get_ref().is_empty() {
                return Err(cx.err(list.span(), format!("job `{id}` has an empty `hosts` list")));
            }
            let mut seen = BTreeSet::new();
            let mut idx = Vec::new();
            let mut gpus = Vec::new();
            for h in list.get_ref() {
                let name = h.get_ref();
                let Some(&i) = hosts.get(name) else {
                    return Err(cx.err(
                        h.span(),
                        format!(
                            "host `{name}` is not in the cluster (hosts are {} … {})",
                            naming::node(0, cluster.nodes),
                            naming::node(cluster.nodes - 1, cluster.nodes)
                        ),
                    ));
                };
                if !seen.insert(i) {
                    return Err(cx.err(h.span(), format!("host `{name}` appears twice in job `{id}`")));
                }
                let free = placed.free(i as usize, start_s, end_s);
                if free.len() < gpn {
                    return Err(cx.err(
                        h.span(),
                        format!(
                            "host `{name}` has {} free GPUs from {start_s} s to {end_s} s, job `{id}` needs {gpn}",
                            free.len()
                        ),
                    ));
                }
                idx.push(i as usize);
                gpus.push(free[..gpn].to_vec());
            }
            (idx, gpus)
        }
        (None, Some(n)) => {
            let want = *n.get_ref() as usize;
            if want == 0 || want > cluster.nodes as usize {
                return Err(cx.err(n.span(), format!("nodes = {want} is out of range (1 to {})", cluster.nodes)));
            }
            let total = cluster.nodes as usize;
            let candidates: Vec<usize> = (0..total).filter(|&h| placed.free_count(h, start_s, end_s) >= gpn).collect();
            if candidates.len() < want {
                return Err(cx.err(
                    n.span(),
                    format!(
                        "job `{id}` needs {want} nodes with {gpn} free GPUs from {start_s} s to {end_s} s; only {} have them",
                        candidates.len()
                    ),
                ));
            }
            // A topology-aware scheduler packs a job onto neighbouring nodes: take consecutive
            // candidates (leaf order) from a seeded starting point.
            let first = rng.below(candidates.len() as u64) as usize;
            let mut idx: Vec<usize> = (0..want).map(|k| candidates[(first + k) % candidates.len()]).collect();
            idx.sort_unstable();
            let gpus = idx.iter().map(|&h| placed.free(h, start_s, end_s)[..gpn].to_vec()).collect();
            (idx, gpus)
        }
    };
    for (h, g) in host_idx.iter().zip(&gpus) {
        placed.take(*h, start_s, end_s, g);
    }
    Ok(JobSpec {
        id,
        hosts: host_idx.iter().map(|&h| naming::node(h as u32, cluster.nodes)).collect(),
        gpus,
        step_time_s,
        start_s,
        end_s,
        launcher: Launcher::Slurm,
        progress_api: false,
        pause_status: false,
        pipeline_stages: 1,
    })
}

fn resolve_fault(
    cx: &Ctx,
    f: &RawFault,
    cluster: &ClusterSpec,
    hosts: &BTreeMap<String, u32>,
    jobs: &[JobSpec],
    duration_s: f64,
) -> Result<FaultSpec, ScenarioError> {
    let kind: FaultClass = f.kind.get_ref().parse().map_err(|_| {
        let all: Vec<&str> = FaultClass::ALL.iter().map(|c| c.as_str()).collect();
        cx.err(f.kind.span(), format!("unknown fault kind `{}` (kinds: {})", f.kind.get_ref(), all.join(", ")))
    })?;
    let tspan = f.target.span();
    let target: ComponentId =
        f.target.get_ref().parse().map_err(|e: faultline_proto::IdError| cx.err(tspan.clone(), e.to_string()))?;
    if target.kind() != kind.target_kind() {
        return Err(cx.err(
            tspan,
            format!(
                "fault `{kind}` needs {} as target, but `{target}` is {}",
                kind_words(kind.target_kind()),
                kind_words(target.kind())
            ),
        ));
    }
    let at_s = finite_in(cx, &f.at_s, "at_s", 0.0, f64::MAX)?;
    if at_s >= duration_s {
        return Err(cx.err(f.at_s.span(), format!("at_s = {at_s} is beyond the run (duration_s = {duration_s})")));
    }
    let dur = match &f.duration_s {
        Some(v) => finite_in(cx, v, "duration_s", 0.0, MAX_DURATION_S)?,
        None => 0.0,
    };
    check_target_exists(cx, &target, tspan, cluster, hosts, jobs, at_s)?;
    Ok(FaultSpec { kind, target, at_s, duration_s: dur })
}

fn kind_words(k: ComponentKind) -> &'static str {
    match k {
        ComponentKind::Node => "a node (`node-0003`)",
        ComponentKind::Gpu => "a GPU (`node-0003/gpu5`)",
        ComponentKind::Nvlink => "an NVLink (`node-0003/gpu5/nvlink3`)",
        ComponentKind::Nic => "a NIC (`node-0003/nic:mlx5_2`)",
        ComponentKind::Disk => "a disk (`node-0003/disk:nvme0n1`)",
        ComponentKind::Agent => "an agent (`node-0003/agent`)",
        ComponentKind::Switch => "a leaf switch (`switch:leaf-02`)",
        ComponentKind::Job => "a job (`job:llm-70b`)",
        ComponentKind::Rank => "a rank",
    }
}

fn check_target_exists(
    cx: &Ctx,
    target: &ComponentId,
    span: Range<usize>,
    cluster: &ClusterSpec,
    hosts: &BTreeMap<String, u32>,
    jobs: &[JobSpec],
    at_s: f64,
) -> Result<(), ScenarioError> {
    if let Some(h) = target.host() {
        if !hosts.contains_key(h) {
            return Err(cx.err(span, format!("host `{h}` of target `{target}` is not in the cluster")));
        }
    }
    let bad = |what: String| Err(cx.err(span.clone(), what));
    match target {
        ComponentId::Gpu { index, .. } | ComponentId::NvLink { gpu: index, .. } if *index >= cluster.gpus_per_node => {
            return bad(format!("`{target}`: the nodes have GPUs gpu0 … gpu{}", cluster.gpus_per_node - 1));
        }
        _ => {}
    }
    match target {
        ComponentId::NvLink { link, .. } if *link >= cluster.nvlinks_per_gpu => {
            bad(format!("`{target}`: each GPU has {} NVLinks (nvlink0 …)", cluster.nvlinks_per_gpu))
        }
        ComponentId::Nic { name, .. } => {
            let ok = name
                .strip_prefix("mlx5_")
                .and_then(|i| i.parse::<u32>().ok())
                .is_some_and(|i| i < cluster.nics_per_node && naming::nic(i) == *name);
            if ok {
                Ok(())
            } else {
                bad(format!("`{target}`: the nodes have NICs mlx5_0 … mlx5_{}", cluster.nics_per_node - 1))
            }
        }
        ComponentId::Disk { device, .. } if device != naming::DISK => {
            bad(format!("`{target}`: the nodes have one disk, `{}`", naming::DISK))
        }
        ComponentId::Switch { name } => {
            let leaves = cluster.leaves();
            if (0..leaves).any(|i| naming::leaf(i, leaves) == *name) {
                Ok(())
            } else if (0..cluster.spines).any(|i| naming::spine(i, cluster.spines) == *name) {
                bad(format!("`{target}` is a spine; leaf faults need a leaf (leaf-… )"))
            } else {
                bad(format!(
                    "switch `{name}` is not in the cluster (leaves are {} … {})",
                    naming::leaf(0, leaves),
                    naming::leaf(leaves - 1, leaves)
                ))
            }
        }
        ComponentId::Job { id } => match jobs.iter().find(|j| j.id == *id) {
            None => bad(format!("job `{id}` is not declared in a [[job]] table")),
            Some(j) if !(j.start_s <= at_s && at_s < j.end_s) => bad(format!(
                "job `{id}` is not running at at_s = {at_s} (it runs from {} s to {} s)",
                j.start_s, j.end_s
            )),
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "scenario_tests.rs"]
mod tests;
