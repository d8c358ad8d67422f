//! The localizer: explains symptoms over the dependency graph and names root causes.
//!
//! Candidates are the symptomatic components and what they depend on (a node above its GPUs, a leaf
//! above its NICs, a job above its ranks). Each candidate gets the set of symptoms it would explain
//! and a score: the symptoms it explains, its own direct evidence, minus dependents that should
//! suffer and do not (one sick NIC under a healthy leaf is the NIC). Greedy explain-away then picks
//! the best candidate, removes what it explains, and repeats until no primary symptom is left, so
//! two faults at once give two roots. Roots already under an open incident explain first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use faultline_proto::{ComponentId, FaultClass};

use crate::detect::{Symptom, SymptomKind as K, job as jobdet};
use crate::state::State;
use crate::topology::Topology;

/// A symptom as the localizer sees it: the finding plus how long the analyzer has known it.
#[derive(Debug, Clone)]
pub struct Active {
    pub s: Symptom,
    /// Analyzer time (`now_ms`) when this symptom was first seen.
    pub first_seen_ms: i64,
}

/// A NIC-down waits this long for other NICs of its leaf before it is called a NIC fault: the agents
/// of a leaf's nodes push their link-down events within a second of each other, so 3 s separates
/// "one NIC" from "the whole leaf" and stays inside the 5 s diagnosis budget.
pub const LEAF_SETTLE_MS: i64 = 3_000;
/// Fraction of a leaf's reported NICs that must be down together to blame the leaf.
pub const LEAF_DOWN_FRACTION: f64 = 0.5;
/// Fraction of a leaf's NICs that must show congestion to blame the leaf.
pub const LEAF_CONGESTION_FRACTION: f64 = 0.5;
/// A stall or crash with nothing under it waits this long (analyzer time) for hardware evidence that
/// may still be on its way (an OOM line or an XID pushed by another agent).
pub const JOB_VERDICT_GRACE_MS: i64 = 1_000;
/// Ranks on other nodes that advanced this long after a silent node's last report show that the job
/// runs on: the node is fine and only its agent is gone. In step times, plus one report interval.
pub const AGENT_PROGRESS_STEPS: f64 = 2.0;
/// Longest wait for that evidence before calling the silent node down.
pub const SILENT_DECIDE_MAX_MS: i64 = 60_000;

/// One root cause the localizer settled on.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub root: ComponentId,
    pub class: FaultClass,
    pub confidence: f64,
    /// Earliest symptom it explains (report time, ms).
    pub onset_ms: i64,
    /// Indices into the symptom slice: everything it explains.
    pub explains: Vec<usize>,
    /// Whether it may open an incident now (some wait for more evidence first).
    pub ready: bool,
    /// The XID behind it, if any, for the recommended action.
    pub xid: Option<u32>,
}

/// What the localizer reads besides the symptoms.
pub struct Ctx<'a> {
    pub topo: &'a Topology,
    pub state: &'a State,
    pub now: i64,
    /// Roots and classes of the open incidents.
    pub open: &'a [(ComponentId, FaultClass)],
}

/// Priority of classes on one component: the strongest explanation wins (lost before hung before
/// memory before slow …).
pub fn class_rank(c: FaultClass) -> u32 {
    use FaultClass::*;
    match c {
        NodeDown => 100,
        GpuLost => 95,
        GpuGspHang => 90,
        GpuSramUncorrectable => 86,
        GpuHbmUncorrectable => 85,
        LeafSwitchDown => 84,
        NicFlap => 82,
        NicDown => 80,
        NvlinkDown => 78,
        HostOom => 76,
        DiskFailure => 74,
        HostFanFailure => 72,
        GpuRowRemapFailure => 70,
        GpuPowerBrake => 66,
        GpuThermalThrottle => 65,
        PcieDowntrained => 60,
        NvlinkCrcStorm => 58,
        CableBitErrors => 56,
        NicSpeedDegraded => 54,
        LeafCongestion => 52,
        SwitchSilentDrop => 53,
        NicConnectionResets => 55,
        GpuCollectiveCorruption => 49,
        HostCpuContention => 50,
        GpuSdc => 48,
        GpuSlow => 45,
        GpuEccSbeStorm => 40,
        HostMce => 38,
        AgentDown => 30,
        JobCrash => 20,
        JobHang => 19,
    }
}

/// Early-warning classes: the part is failing but jobs do not suffer yet.
pub fn early_warning(c: FaultClass) -> bool {
    matches!(
        c,
        FaultClass::GpuEccSbeStorm | FaultClass::GpuRowRemapFailure | FaultClass::HostMce | FaultClass::AgentDown
    )
}

/// A job's last step may end up to this many step times before the fault that stopped it (the
/// step in flight, and the one whose post was under way)...
const STALL_BEFORE_CAUSE_STEPS: f64 = 2.0;
/// ...plus this for clocks between nodes and the kernel's timestamps of the failure.
const STALL_BEFORE_CAUSE_SKEW_MS: i64 = 5_000;

/// How long before a part's failure a stall of `job` may seem to begin and still be its effect. A
/// job that posts progress dates its stall by its last step (precise): two steps and clock skew. A
/// job judged from its counters dates it by the last report that saw data move, up to one report
/// interval before the traffic really stopped.
fn stall_slack_ms(ctx: &Ctx, job: &str) -> i64 {
    let Some(j) = ctx.state.jobs.get(job) else { return i64::MAX / 4 };
    let posts = j.ranks.values().any(|r| r.last_progress_ms.is_some());
    let step = crate::detect::job::current_step_ms(j).unwrap_or(0.0);
    let interval = j.ranks.values().map(|r| r.interval_ms).max().unwrap_or(0).max(DEFAULT_INTERVAL_MS);
    let base = if posts { (STALL_BEFORE_CAUSE_STEPS * step) as i64 } else { interval };
    base + STALL_BEFORE_CAUSE_SKEW_MS
}

/// The report interval assumed where a node has not said its own.
const DEFAULT_INTERVAL_MS: i64 = 10_000;

/// Faults that can stop a job's steps altogether: a rank's GPU or node gone or killed, its link
/// cut, its connections reset or black-holed (a queue pair that runs out of retries or is reset
/// aborts NCCL's communicator), its checkpoint stuck on disk. The other classes degrade a job
/// (slower steps) but leave it running, so they never explain a stall.
pub fn stops_jobs(c: FaultClass) -> bool {
    use FaultClass::*;
    matches!(
        c,
        GpuLost
            | GpuHbmUncorrectable
            | GpuSramUncorrectable
            | GpuGspHang
            | NvlinkDown
            | NicDown
            | NicFlap
            | LeafSwitchDown
            | NicConnectionResets
            | SwitchSilentDrop
            | NodeDown
            | HostOom
            | DiskFailure
    )
}

#[derive(Debug, Clone)]
struct Hyp {
    root: ComponentId,
    class: FaultClass,
    explains: BTreeSet<usize>,
    /// Symptoms on the root itself (or that name it directly).
    direct: usize,
    penalty: f64,
    ready: bool,
    xid: Option<u32>,
    open: bool,
}

fn weight(s: &Symptom) -> f64 {
    if s.kind.is_consequence() {
        1.0
    } else if s.kind.is_supporting() {
        0.5
    } else {
        match s.severity {
            faultline_proto::Severity::Critical => 3.0,
            faultline_proto::Severity::Warning => 2.0,
            faultline_proto::Severity::Info => 1.0,
        }
    }
}

/// Whether a symptom can, on its own, call for a root.
fn primary(s: &Symptom) -> bool {
    !s.kind.is_consequence() && !s.kind.is_supporting()
}

/// The hardware component a rank-level symptom points at: the rank's (first) GPU.
fn rank_gpu(ctx: &Ctx, job: &str, rank: u32) -> Option<ComponentId> {
    let r = ctx.state.jobs.get(job)?.ranks.get(&rank)?;
    r.gpus.first().map(|g| ComponentId::gpu(&r.node, *g))
}

fn rank_node(ctx: &Ctx, job: &str, rank: u32) -> Option<String> {
    ctx.state.jobs.get(job)?.ranks.get(&rank).map(|r| r.node.clone())
}

/// Hosts a job runs on.
fn job_hosts(ctx: &Ctx, job: &str) -> BTreeSet<String> {
    ctx.state.jobs.get(job).map(|j| j.ranks.values().map(|r| r.node.clone()).collect()).unwrap_or_default()
}

struct Closures<'a> {
    topo: &'a Topology,
    cache: HashMap<String, BTreeSet<ComponentId>>,
}

impl Closures<'_> {
    /// Everything a job depends on (its ranks, GPUs, nodes, NICs, leaves, spines).
    fn of(&mut self, job: &str) -> &BTreeSet<ComponentId> {
        if !self.cache.contains_key(job) {
            let c = self.topo.closure(&ComponentId::job(job));
            self.cache.insert(job.to_string(), c);
        }
        &self.cache[job]
    }
}

/// Does a root of `class` at `root` explain symptom `s`?
fn explains(ctx: &Ctx, cl: &mut Closures, root: &ComponentId, class: FaultClass, s: &Symptom) -> bool {
    use FaultClass::*;
    if &s.component == root {
        return true;
    }
    let root_host = root.host();
    match &s.component {
        ComponentId::Job { id } => {
            if early_warning(class) {
                return false;
            }
            if matches!(class, JobHang | JobCrash) {
                return false;
            }
            // A job that stopped stepping was stopped by a part that stops ranks or cuts their links;
            // a degradation (bit errors, throttling, a slow link) slows a job but never halts it.
            if s.kind == K::JobStalled && !stops_jobs(class) {
                return false;
            }
            if class == DiskFailure {
                return root_host.is_some_and(|h| job_hosts(ctx, id).contains(h));
            }
            cl.of(id).contains(root)
                || matches!(root, ComponentId::NvLink { host, gpu, .. } if cl.of(id).contains(&ComponentId::gpu(host, *gpu)))
        }
        ComponentId::Rank { job, rank } => {
            let kind = s.kind;
            match kind {
                K::RankExited => {
                    if early_warning(class) || matches!(class, JobHang | JobCrash) {
                        return false;
                    }
                    let closure = ctx.topo.closure(&s.component);
                    closure.contains(root)
                        || (class == HostOom
                            && root_host.is_some_and(|h| rank_node(ctx, job, *rank).as_deref() == Some(h)))
                        || (class == NodeDown && root_host.is_some_and(|h| job_hosts(ctx, job).contains(h)))
                }
                K::Straggler => {
                    let gpu = rank_gpu(ctx, job, *rank);
                    match class {
                        HostFanFailure | HostCpuContention | NodeDown => {
                            root_host.is_some_and(|h| rank_node(ctx, job, *rank).as_deref() == Some(h))
                        }
                        // The node's power braking several of its GPUs at once.
                        GpuPowerBrake if matches!(root, ComponentId::Node { .. }) => {
                            root_host.is_some_and(|h| rank_node(ctx, job, *rank).as_deref() == Some(h))
                        }
                        _ => {
                            gpu.as_ref() == Some(root)
                                || matches!(root, ComponentId::NvLink { host, gpu: g, .. } if gpu == Some(ComponentId::gpu(host, *g)))
                        }
                    }
                }
                K::NonFinite | K::GradMismatch => rank_gpu(ctx, job, *rank).as_ref() == Some(root),
                _ => false,
            }
        }
        other => {
            let same_host = other.host().is_some() && other.host() == root_host;
            match class {
                NodeDown => same_host,
                AgentDown => same_host && s.kind == K::HeartbeatLost,
                HostFanFailure => same_host && matches!(s.kind, K::ThermalThrottle | K::ClockLow | K::PowerBrake),
                GpuPowerBrake if matches!(root, ComponentId::Node { .. }) => {
                    same_host && matches!(s.kind, K::PowerBrake | K::ClockLow)
                }
                // GPUs missing from a node's count are the node's GPUs: their lost links with them.
                GpuLost if matches!(root, ComponentId::Node { .. }) => same_host && s.kind == K::NvlinkDown,
                HostOom => same_host && s.kind == K::MemoryPressure,
                LeafSwitchDown => {
                    matches!(s.kind, K::NicDown | K::NicFlap)
                        && matches!(root, ComponentId::Switch { name } if ctx.topo.leaf_of_nic(other) == Some(name))
                }
                LeafCongestion => {
                    matches!(s.kind, K::NicCongested | K::NicErrors)
                        && matches!(root, ComponentId::Switch { name } if ctx.topo.leaf_of_nic(other) == Some(name))
                }
                GpuLost | GpuGspHang | GpuHbmUncorrectable | GpuSramUncorrectable => {
                    // A dead GPU silences its links too.
                    matches!((other, root), (ComponentId::NvLink { host, gpu, .. }, ComponentId::Gpu { host: h, index })
                        if host == h && gpu == index)
                }
                NvlinkDown | NvlinkCrcStorm => {
                    // The NVLink XID on the link's GPU.
                    matches!((other, root), (ComponentId::Gpu { host, index }, ComponentId::NvLink { host: h, gpu, .. })
                        if host == h && index == gpu)
                        && s.kind == K::XidFatal
                        && s.class == Some(NvlinkDown)
                }
                CableBitErrors | NicFlap | NicDown | NicSpeedDegraded => false,
                _ => false,
            }
        }
    }
}

/// Name the roots behind `symptoms`.
pub fn localize(symptoms: &[Active], ctx: &Ctx) -> Vec<Diagnosis> {
    let mut cl = Closures { topo: ctx.topo, cache: HashMap::new() };
    let mut hyps: Vec<Hyp> = Vec::new();
    let add = |hyps: &mut Vec<Hyp>, root: ComponentId, class: FaultClass, ready: bool, xid: Option<u32>| {
        if let Some(h) = hyps.iter_mut().find(|h| h.root == root) {
            if class_rank(class) > class_rank(h.class) {
                h.class = class;
                h.xid = xid.or(h.xid);
            }
            h.ready &= ready;
        } else {
            hyps.push(Hyp { root, class, explains: BTreeSet::new(), direct: 0, penalty: 0.0, ready, xid, open: false });
        }
    };

    // Open incidents first: they keep explaining what they explained.
    for (root, class) in ctx.open {
        add(&mut hyps, root.clone(), *class, true, None);
        if let Some(h) = hyps.last_mut() {
            h.open = true;
        }
    }

    // Leaves: how many of their NICs are down, or congested, right now.
    let mut leaf_down: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut leaf_down_nics: BTreeMap<String, usize> = BTreeMap::new();
    let mut leaf_cong: BTreeMap<String, usize> = BTreeMap::new();
    for a in symptoms {
        if let ComponentId::Nic { host, .. } = &a.s.component {
            if let Some(leaf) = ctx.topo.leaf_of_nic(&a.s.component) {
                match a.s.kind {
                    K::NicDown => {
                        leaf_down.entry(leaf.to_string()).or_default().insert(host.clone());
                        *leaf_down_nics.entry(leaf.to_string()).or_default() += 1;
                    }
                    K::NicCongested => *leaf_cong.entry(leaf.to_string()).or_default() += 1,
                    _ => {}
                }
            }
        }
    }
    for (leaf, hosts) in &leaf_down {
        let total = cabled_nics(ctx, leaf).max(1);
        let down = leaf_down_nics[leaf];
        // Two hosts at least, unless every cabled port of the leaf is down (a leaf with one node).
        let enough_hosts = hosts.len() >= 2 || down >= total;
        if down >= 2 && enough_hosts && down as f64 >= LEAF_DOWN_FRACTION * total as f64 {
            add(&mut hyps, ComponentId::switch(leaf), FaultClass::LeafSwitchDown, true, None);
        }
    }
    for (leaf, c) in &leaf_cong {
        // Judged against the leaf's ports that carry traffic now (idle ports see no congestion).
        let total = busy_nics(ctx, leaf).max(1);
        if *c >= 2 && *c as f64 >= LEAF_CONGESTION_FRACTION * total as f64 {
            add(&mut hyps, ComponentId::switch(leaf), FaultClass::LeafCongestion, true, None);
        }
    }

    // Component hypotheses from primary symptoms.
    for a in symptoms {
        let s = &a.s;
        let age = ctx.now - a.first_seen_ms;
        match (&s.component, s.kind) {
            (ComponentId::Node { host }, K::HeartbeatLost) => {
                let (class, ready) = silent_node(ctx, host, a);
                let root = if class == FaultClass::AgentDown { ComponentId::agent(host) } else { s.component.clone() };
                add(&mut hyps, root, class, ready, None);
            }
            (ComponentId::Rank { job, rank }, K::Straggler | K::NonFinite | K::GradMismatch) => {
                if let Some(g) = rank_gpu(ctx, job, *rank) {
                    let class = s.class.unwrap_or(FaultClass::GpuSlow);
                    add(&mut hyps, g, class, true, None);
                }
            }
            (ComponentId::Gpu { host, index }, K::XidFatal) if s.class == Some(FaultClass::NvlinkDown) => {
                // The NVLink XID names the GPU; the root is its broken link when we can see which.
                let link = symptoms.iter().find_map(|b| match &b.s.component {
                    ComponentId::NvLink { host: h, gpu, .. } if h == host && gpu == index => {
                        Some(b.s.component.clone())
                    }
                    _ => None,
                });
                let link = link.or_else(|| worst_link(ctx, host, *index));
                match link {
                    Some(l) => add(&mut hyps, l, FaultClass::NvlinkDown, true, s.xid),
                    None => add(&mut hyps, s.component.clone(), FaultClass::NvlinkDown, true, s.xid),
                }
            }
            (ComponentId::Nic { .. }, K::NicDown) => {
                let class = s.class.unwrap_or(FaultClass::NicDown);
                add(&mut hyps, s.component.clone(), class, age >= LEAF_SETTLE_MS, None);
            }
            (_, k) if primary(s) && !k.is_consequence() => {
                if let Some(class) = s.class {
                    if k == K::NicCongested {
                        continue;
                    }
                    add(&mut hyps, s.component.clone(), class, true, s.xid);
                }
            }
            _ => {}
        }
    }
    // OOM kill: the node, for any job whose rank it killed or any rank that exited there.
    // (Added above through the generic rule: OomKill has class HostOom on the node.)

    // Fill in what each hypothesis explains.
    for h in hyps.iter_mut() {
        for (i, a) in symptoms.iter().enumerate() {
            if explains(ctx, &mut cl, &h.root, h.class, &a.s) {
                h.explains.insert(i);
                if a.s.component == h.root {
                    h.direct += 1;
                }
            }
        }
        // A cause comes before its effect: a job that had stopped stepping well before this part
        // failed was not stopped by it (two faults at once, each named on its own).
        let root_onset = h
            .explains
            .iter()
            .map(|i| &symptoms[*i].s)
            .filter(|s| !matches!(s.component, ComponentId::Job { .. }) && !s.kind.is_consequence())
            .map(|s| s.onset_ms)
            .min();
        if let Some(root_onset) = root_onset {
            h.explains.retain(|i| {
                let s = &symptoms[*i].s;
                let ComponentId::Job { id } = &s.component else { return true };
                if s.kind != K::JobStalled {
                    return true;
                }
                s.onset_ms >= root_onset - stall_slack_ms(ctx, id)
            });
        }
        if h.class == FaultClass::LeafSwitchDown || h.class == FaultClass::LeafCongestion {
            if let ComponentId::Switch { name } = &h.root {
                let total =
                    if h.class == FaultClass::LeafCongestion { busy_nics(ctx, name) } else { cabled_nics(ctx, name) };
                let suffering =
                    h.explains.iter().filter(|i| matches!(symptoms[**i].s.component, ComponentId::Nic { .. })).count();
                h.penalty = 0.5 * total.saturating_sub(suffering) as f64;
                h.direct += 1;
            }
        }
    }

    // Job-level: stalls and crashes nothing else explains, with no hardware evidence under the job.
    let explained_by_hw: BTreeSet<usize> = hyps.iter().flat_map(|h| h.explains.iter().copied()).collect();
    for (i, a) in symptoms.iter().enumerate() {
        let s = &a.s;
        let ComponentId::Job { id } = &s.component else { continue };
        if explained_by_hw.contains(&i) || !matches!(s.kind, K::JobStalled | K::JobCrashed) {
            continue;
        }
        if s.kind == K::JobStalled && s.value < 1.0 {
            continue; // a node of the job is silent: the heartbeat decides
        }
        let closure = cl.of(id).clone();
        // Supporting evidence (memory pressure, a saturated counter) cannot open an incident, so it
        // does not stand in the way of the job's own verdict either.
        // For a stall, hardware whose every reading is a degradation (bit errors, a slow link)
        // does not stand in the way: it slows a job, it does not stop it.
        let only_degrades = |b: usize| {
            let mut readings = hyps.iter().filter(|h| h.explains.contains(&b)).peekable();
            readings.peek().is_some() && readings.all(|h| !stops_jobs(h.class))
        };
        // Nor does a part that failed well after the job had stopped stepping.
        let slack = stall_slack_ms(ctx, id);
        let after_stall = |b: &Active| s.kind == K::JobStalled && b.s.onset_ms > s.onset_ms + slack;
        let hw_under = symptoms.iter().enumerate().any(|(bi, b)| {
            !(s.kind == K::JobStalled && only_degrades(bi))
                && !after_stall(b)
                && !b.s.kind.is_consequence()
                && !b.s.kind.is_supporting()
                && (closure.contains(&b.s.component)
                    || b.s.component.host().is_some_and(|h| closure.contains(&ComponentId::node(h)))
                    || matches!(&b.s.component, ComponentId::Rank { job, .. } if job == id))
                && !matches!(b.s.kind, K::Straggler | K::GradMismatch | K::NonFinite | K::NicCongested)
        });
        let ready = ctx.now - a.first_seen_ms >= JOB_VERDICT_GRACE_MS;
        if !hw_under {
            let class = if s.kind == K::JobCrashed { FaultClass::JobCrash } else { FaultClass::JobHang };
            let mut h = Hyp {
                root: s.component.clone(),
                class,
                explains: BTreeSet::new(),
                direct: 1,
                penalty: 0.0,
                ready,
                xid: None,
                open: false,
            };
            for (j, b) in symptoms.iter().enumerate() {
                let same_job = match &b.s.component {
                    ComponentId::Job { id: x } => x == id,
                    ComponentId::Rank { job, .. } => job == id && b.s.kind.is_consequence(),
                    _ => false,
                };
                if same_job {
                    h.explains.insert(j);
                }
            }
            if let Some(existing) = hyps.iter_mut().find(|x| x.root == h.root) {
                existing.explains.extend(h.explains);
                if !existing.open {
                    existing.class = class;
                    existing.ready = ready;
                }
            } else {
                hyps.push(h);
            }
        }
    }

    // Greedy explain-away.
    let mut explained: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (k, h) in hyps.iter().enumerate() {
            let fresh: Vec<usize> = h.explains.iter().copied().filter(|i| !explained.contains(i)).collect();
            let claims = fresh.iter().any(|i| {
                let s = &symptoms[*i].s;
                primary(s)
                    || matches!(h.class, FaultClass::JobHang | FaultClass::JobCrash) && s.component == h.root
                    // The leaf verdict rests on many NICs' congestion, each only supporting alone.
                    || h.class == FaultClass::LeafCongestion && s.kind == K::NicCongested
            });
            // An open incident stays confirmed by what it explains, notes aside.
            let keeps = fresh.iter().any(|i| !symptoms[*i].s.kind.is_note());
            if !claims && !(h.open && keeps) {
                continue;
            }
            let score: f64 = fresh.iter().map(|i| weight(&symptoms[*i].s)).sum::<f64>() + 2.0 * h.direct as f64
                - h.penalty
                + if h.open { 1000.0 } else { 0.0 }
                + class_rank(h.class) as f64 / 1000.0;
            if score <= 0.0 {
                continue;
            }
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, k));
            }
        }
        let Some((score, k)) = best else { break };
        let h = hyps.swap_remove(k);
        let fresh: Vec<usize> = h.explains.iter().copied().filter(|i| !explained.contains(i)).collect();
        explained.extend(fresh.iter().copied());
        let onset = h.explains.iter().map(|i| symptoms[*i].s.onset_ms).min().unwrap_or(ctx.now);
        let hard = h.explains.iter().any(|i| symptoms[*i].s.severity == faultline_proto::Severity::Critical);
        let confidence = (if hard { 0.9 } else { 0.7 } + 0.02 * score.min(1000.0).rem_euclid(1000.0).min(4.0))
            .min(if h.penalty > 0.0 { 0.85 } else { 0.99 });
        out.push(Diagnosis {
            root: h.root,
            class: h.class,
            confidence,
            onset_ms: onset,
            explains: h.explains.into_iter().collect(),
            ready: h.ready,
            xid: h.xid,
        });
    }
    out
}

/// NICs behind a leaf that can go down with it: fabric ports seen up at least once. A rack's
/// topology puts every netdev of its nodes behind the leaf (management NIC, storage bond, docker0,
/// veth*, ifb*, ports never cabled); counting those would keep a whole leaf's fabric ports below
/// `LEAF_DOWN_FRACTION`.
fn cabled_nics(ctx: &Ctx, leaf: &str) -> usize {
    let cabled = |nic: &&ComponentId| match nic {
        ComponentId::Nic { host, name } => {
            ctx.state.nodes.get(host).and_then(|n| n.nics.get(name)).is_some_and(|s| s.fabric && s.ever_up)
        }
        _ => false,
    };
    ctx.topo.nics_of_leaf(leaf).map(|n| n.iter().filter(cabled).count()).unwrap_or(0)
}

/// NICs of a leaf that carry traffic now (a congestion sample in the last `BUSY_RECENT_MS`).
fn busy_nics(ctx: &Ctx, leaf: &str) -> usize {
    let busy = |nic: &&ComponentId| match nic {
        ComponentId::Nic { host, name } => ctx
            .state
            .nodes
            .get(host)
            .and_then(|n| n.nics.get(name))
            .and_then(|s| s.congestion.back())
            .is_some_and(|p| p.ts >= ctx.now - crate::detect::nic::BUSY_RECENT_MS),
        _ => false,
    };
    ctx.topo.nics_of_leaf(leaf).map(|n| n.iter().filter(busy).count()).unwrap_or(0)
}

/// The link of a GPU whose error counters moved most recently, for an NVLink XID with no link named.
fn worst_link(ctx: &Ctx, host: &str, gpu: u32) -> Option<ComponentId> {
    let g = ctx.state.nodes.get(host)?.gpus.get(&gpu)?;
    g.nvlinks
        .iter()
        .filter(|(_, l)| !l.active && l.seen_active || l.crc.last_delta().is_some_and(|d| d.1 > 0))
        .max_by_key(|(_, l)| (!l.active as u8, l.crc.last_delta().map(|d| d.1).unwrap_or(0)))
        .map(|(link, _)| ComponentId::nvlink(host, gpu, *link))
}

/// Most jobs post no progress: their collectives are the evidence instead. A multi-node job's ranks
/// elsewhere whose fabric NIC moved data entirely after `after` (and whose node runs this job alone,
/// so the bytes are its own) are still exchanging with every peer: a dead node would have stalled
/// their collectives within a step, and their bytes would have gone flat.
fn peers_talking(ctx: &Ctx, job: &str, others: &[&crate::state::RankState], after: i64) -> bool {
    others.iter().any(|r| {
        let Some(n) = ctx.state.nodes.get(&r.node) else { return false };
        let only_this = n.jobs.len() == 1 && n.jobs[0] == job;
        only_this
            && r.nic
                .as_ref()
                .and_then(|nic| n.nics.get(nic))
                .is_some_and(|st| st.fabric && st.traffic.active_from.is_some_and(|f| f > after))
    })
}

/// A node whose agent fell silent: is the node down, or only the agent? The jobs it ran tell: if
/// their ranks elsewhere keep advancing past the silence, the node still computes.
fn silent_node(ctx: &Ctx, host: &str, a: &Active) -> (FaultClass, bool) {
    let Some(node) = ctx.state.nodes.get(host) else { return (FaultClass::NodeDown, true) };
    let silent_since = node.last_report_ms;
    let mut any_job = false;
    let mut progressing = false;
    let mut stalled = false;
    for jid in &node.jobs {
        let Some(job) = ctx.state.jobs.get(jid) else { continue };
        let others: Vec<_> = job.ranks.values().filter(|r| r.node != host && r.gone_ms.is_none()).collect();
        if others.is_empty() {
            continue;
        }
        any_job = true;
        let step = jobdet::current_step_ms(job).or(job.baseline_step_ms).unwrap_or(0.0);
        let margin = node.interval_ms as i64 + (AGENT_PROGRESS_STEPS * step) as i64;
        let latest = others.iter().filter_map(|r| r.last_progress_ms).max();
        if latest.is_some_and(|lp| lp > silent_since + margin)
            || peers_talking(ctx, jid, &others, silent_since + margin)
        {
            progressing = true;
        }
        let thr = ((jobdet::STALL_STEPS * step) as i64).max(jobdet::STALL_MIN_MS);
        let confirmed_stall = latest.is_some_and(|lp| {
            others
                .iter()
                .all(|r| ctx.state.nodes.get(&r.node).is_some_and(|n| n.last_report_ms - lp >= thr.min(margin)))
        });
        if confirmed_stall || others.iter().any(|r| r.exited_nonzero()) {
            stalled = true;
        }
    }
    if !any_job {
        return (FaultClass::NodeDown, true);
    }
    if progressing && !stalled {
        return (FaultClass::AgentDown, true);
    }
    if stalled {
        return (FaultClass::NodeDown, true);
    }
    (FaultClass::NodeDown, ctx.now - a.first_seen_ms >= SILENT_DECIDE_MAX_MS)
}
