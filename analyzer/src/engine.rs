//! The analyzer engine: ingest → state → detectors → localizer → incidents, all in one synchronous,
//! clock-free object. Time is what callers pass as `now_ms` (the HTTP server passes the system clock,
//! the simulator passes virtual time), so the whole diagnosis runs deterministically in tests.
//!
//! Cost model (100k GPUs, 12,500 reports per 10 s round): ingest updates only the reporting node's
//! state and runs that node's detectors while its state is hot in cache; `tick` re-runs node
//! detectors for nodes that still carry symptoms or fell silent, scans heartbeats at most once per
//! second, checks a job when it has new data or every few seconds, and runs the localizer over the
//! (small) set of live symptoms.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use faultline_proto::{ComponentId, Incident, IncidentStatus, NodeReport, ReportError, TopologyFile};

use crate::detect::hang as jobdet_hang;
use crate::detect::{self, Symptom, SymptomKind, gpu, host, job as jobdet, nic};
use crate::incident::{Book, Change};
use crate::localize::{self, Active};
use crate::state::{Applied, State};
use crate::topology::{RankPlacement, Topology};

/// Tunables of the engine. Every field has a default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Symptoms must be gone this long before an incident resolves (hysteresis), seconds.
    pub resolve_after_s: f64,
    /// An agent silent for this many of its own intervals (plus `HEARTBEAT_TRANSIT_MS`) is lost.
    pub heartbeat_intervals: f64,
    /// A job none of whose ranks was reported for this long is over and leaves the graph, seconds.
    pub job_linger_s: f64,
    /// A fatal XID keeps its GPU's symptom live this long after it was raised, seconds (then the
    /// incident resolves `resolve_after_s` later); `faultline explain` shows it as "held until".
    pub fatal_xid_hold_s: f64,
    /// The rate fabric NICs should train at, Gb/s, when the topology file does not say. `None`:
    /// learned as the fleet's majority rate.
    pub expected_nic_rate_gbps: Option<f64>,
    /// A job's GPUs busy while its NIC and NVLink bytes stay flat this long is a hang, seconds.
    pub hang_quiet_s: f64,
    /// A job is not judged hung from its counters this long after it first appears (compile and
    /// NCCL warm-up), seconds.
    pub job_warmup_s: f64,
    /// A job may go this long without a step while it says it pauses (checkpoint, evaluation) or
    /// its writes, traffic or lone busy GPU say so, seconds; more for a job whose own pauses were
    /// longer.
    pub job_pause_max_s: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // Two missed intervals (plus `HEARTBEAT_TRANSIT_MS`): one late or re-sent report is
        // normal, two missing in a row is not.
        Self {
            resolve_after_s: 120.0,
            heartbeat_intervals: 2.0,
            job_linger_s: 60.0,
            fatal_xid_hold_s: detect::EVENT_HOLD_MS as f64 / 1000.0,
            expected_nic_rate_gbps: None,
            hang_quiet_s: jobdet_hang::DEFAULT_QUIET_MS as f64 / 1000.0,
            job_warmup_s: jobdet_hang::DEFAULT_WARMUP_MS as f64 / 1000.0,
            job_pause_max_s: crate::detect::job::DEFAULT_PAUSE_MAX_MS as f64 / 1000.0,
        }
    }
}

/// Why a report was refused. Nothing in the state changed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] ReportError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    pub node: String,
    pub seq: u64,
    /// The report repeated a `seq` already applied (a spool replay after a lost answer): accepted,
    /// not applied twice.
    pub duplicate: bool,
}

/// What changed in an incident during a `tick`: the store and notifiers act on these.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    Opened(Incident),
    Updated(Incident),
    Resolved(Incident),
}

/// Heartbeats of every node are scanned at most this often (analyzer time).
const HEARTBEAT_SCAN_MS: i64 = 1_000;
/// A job with no new data is re-checked this often (stalls are judged on time passing). What a
/// routine check can find is judged over minutes (a stall after `hang_quiet_s`, a slowdown over
/// `SOFT_SAMPLES` steps), so 5 s adds little to its diagnosis; at 896 jobs of up to 800 ranks
/// (scale-100k) checking every job every 2 s was the largest part of the tick.
const JOB_RECHECK_MS: i64 = 5_000;
/// A job with new routine data (progress, counters) waits this long after its last check: each of
/// its nodes' reports marks it dirty, so a 100-node job was checked on every tick (every second).
/// Reports that change what a job is (a rank exits or vanishes, a non-finite loss, any event, the
/// scheduler ending it) are checked on the next tick.
const JOB_DIRTY_MIN_MS: i64 = 5_000;
pub use crate::silence::{
    HEARTBEAT_MIN_SILENCE_MS, HEARTBEAT_TRANSIT_MS, MASS_SILENCE_FRACTION, MASS_SILENCE_MIN_NODES, silence_allowance_ms,
};

/// Open-incident statistics for the server's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentStats {
    pub open: usize,
    pub total: usize,
    pub open_by_class: BTreeMap<String, usize>,
    pub affected_jobs: usize,
}

pub struct Analyzer {
    cfg: EngineConfig,
    topology_file: TopologyFile,
    /// The topology file's NIC rates, indexed: asked for every fabric NIC of every report.
    expected_rates: faultline_proto::topology::ExpectedRates,
    topo: Topology,
    state: State,
    book: Book,
    dirty_jobs: BTreeSet<String>,
    /// Dirty jobs to check on the next tick whatever `JOB_DIRTY_MIN_MS` says.
    urgent_jobs: BTreeSet<String>,
    node_symptoms: HashMap<String, Vec<Symptom>>,
    job_symptoms: HashMap<String, Vec<Symptom>>,
    job_checked: HashMap<String, i64>,
    first_seen: HashMap<(ComponentId, SymptomKind), i64>,
    last_scan_ms: i64,
    symptoms_changed: bool,
    last_localize_ms: i64,
    /// Set by the heartbeat scan when so many nodes are silent at once that silence is not evidence.
    mass_silence: bool,
    /// The fleet's majority rate among fabric NICs: the expected rate when neither the topology file
    /// nor the config says.
    rates: crate::fleet_rate::FleetRates,
    /// Verdicts of the fabric probe matrix (`detect::pingmesh`), judged once per `PINGMESH_EVERY_MS`.
    fabric_symptoms: Vec<Symptom>,
    last_pingmesh_ms: i64,
    /// The fleet's address book for collective evidence (detect/nccl.rs), kept until an address changes.
    addr_book: detect::nccl::BookCache,
}

/// How often the whole probe matrix is judged: its view is a minute long, so every 5 s is plenty
/// and keeps the cost (one pass over every probed path) off the per-report path.
const PINGMESH_EVERY_MS: i64 = 5_000;

impl Analyzer {
    pub fn new(cfg: EngineConfig, topology: TopologyFile) -> Self {
        let topo = Topology::new(&topology);
        let expected_rates = topology.expected_rates();
        Self {
            cfg,
            topology_file: topology,
            expected_rates,
            topo,
            state: State::default(),
            book: Book::default(),
            dirty_jobs: BTreeSet::new(),
            urgent_jobs: BTreeSet::new(),
            node_symptoms: HashMap::new(),
            job_symptoms: HashMap::new(),
            job_checked: HashMap::new(),
            first_seen: HashMap::new(),
            last_scan_ms: i64::MIN,
            symptoms_changed: false,
            last_localize_ms: i64::MIN,
            mass_silence: false,
            rates: Default::default(),
            fabric_symptoms: Vec::new(),
            last_pingmesh_ms: i64::MIN,
            addr_book: detect::nccl::BookCache::default(),
        }
    }

    /// The rate most fabric NICs run at, Gb/s, when more than half of them agree.
    pub fn fleet_nic_rate_gbps(&self) -> Option<f64> {
        self.rates.majority_gbps()
    }

    /// The rate a NIC should train at: the topology file's, the config's, else the fleet's.
    pub fn expected_rate(&self, host: &str, nic: &str) -> Option<f64> {
        self.expected_rates
            .get(host, nic)
            .or(self.cfg.expected_nic_rate_gbps.filter(|r| *r > 0.0))
            .or_else(|| self.fleet_nic_rate_gbps())
    }

    /// How long `n` may be silent before its agent counts as lost.
    fn heartbeat_allowance_ms(&self, interval_ms: u64) -> i64 {
        if self.mass_silence {
            return i64::MAX;
        }
        silence_allowance_ms(self.cfg.heartbeat_intervals, interval_ms)
    }

    /// True while the last heartbeat scan found so many nodes silent at once that heartbeat loss is
    /// not being judged (see `MASS_SILENCE_FRACTION`).
    pub fn mass_silence(&self) -> bool {
        self.mass_silence
    }

    /// Apply one report built in memory (tests, fuzzing): validated here, since nothing decoded it.
    pub fn ingest(&mut self, report: NodeReport, now_ms: i64) -> Result<IngestOutcome, IngestError> {
        report.validate()?;
        Ok(self.apply(&report, now_ms))
    }

    /// Apply a report `ingest::decode` validated already; only the ingest path calls this.
    /// By reference: the caller frees the report after letting go of the engine.
    pub(crate) fn apply_validated(&mut self, report: &NodeReport, now_ms: i64) -> IngestOutcome {
        self.apply(report, now_ms)
    }

    fn apply(&mut self, report: &NodeReport, now_ms: i64) -> IngestOutcome {
        let applied = self.state.apply(report, now_ms);
        let duplicate = applied == Applied::Duplicate;
        if !duplicate {
            self.rates.learn(report);
            // The graph learns a node's parts when they first appear (not on every report).
            if self.state.changes.inventory {
                self.topo.add_inventory(
                    &report.node,
                    report.gpus.iter().map(|g| g.index),
                    report.nics.iter().map(|n| n.name.clone()),
                );
                for d in &report.disks {
                    self.topo.add_disk(&report.node, &d.device);
                }
            }
            // The node's detectors run now, while the state this report just wrote is in the
            // CPU's cache: at the next tick, after a second of other nodes' reports, reading it
            // back was most of what they cost (12,500 nodes hold about 1.5 GB of state). Nodes
            // with symptoms, and silent ones, are still judged at each heartbeat scan.
            self.check_node(&report.node, now_ms);
            // Jobs listed now, and jobs that just left this node, need a look; those with news
            // (`state::Changes::urgent`) at the next tick.
            for j in &report.jobs {
                if !self.dirty_jobs.contains(&j.job_id) {
                    self.dirty_jobs.insert(j.job_id.clone());
                }
            }
            for &i in &self.state.changes.urgent {
                let j = &report.jobs[i].job_id;
                if !self.urgent_jobs.contains(j) {
                    self.urgent_jobs.insert(j.clone());
                }
            }
            for j in self.state.changes.left.drain(..) {
                self.urgent_jobs.insert(j.clone());
                self.dirty_jobs.insert(j);
            }
        }
        IngestOutcome { node: report.node.clone(), seq: report.seq, duplicate }
    }

    /// Run detectors and the localizer at `now_ms`; return what changed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<IncidentChange> {
        let heartbeat_due = now_ms.saturating_sub(self.last_scan_ms) >= HEARTBEAT_SCAN_MS;
        let mut to_check: BTreeSet<String> = BTreeSet::new();
        if heartbeat_due {
            self.last_scan_ms = now_ms;
            to_check.extend(self.node_symptoms.keys().cloned());
            let (mut expected, mut silent) = (0usize, Vec::new());
            for (name, n) in &self.state.nodes {
                if n.shutdown || n.reports == 0 {
                    continue;
                }
                expected += 1;
                if crate::silence::silent(n.last_recv_ms, n.interval_ms, now_ms, self.cfg.heartbeat_intervals) {
                    silent.push(name.clone());
                }
            }
            let mass =
                silent.len() >= MASS_SILENCE_MIN_NODES && silent.len() as f64 > MASS_SILENCE_FRACTION * expected as f64;
            if mass != self.mass_silence {
                if mass {
                    tracing::warn!(
                        silent = silent.len(),
                        reporting = expected,
                        "so many nodes are silent at once that the analyzer is behind or cut off from them: not calling them down"
                    );
                } else {
                    tracing::info!(
                        silent = silent.len(),
                        reporting = expected,
                        "mass silence over: judging heartbeats again"
                    );
                }
                self.mass_silence = mass;
                // Re-judge every node with a symptom now that the allowance changed.
                to_check.extend(self.state.nodes.keys().cloned());
            }
            to_check.extend(silent);
        }
        for name in &to_check {
            self.check_node(name, now_ms);
        }
        self.update_jobs(now_ms, heartbeat_due);
        self.check_fabric_probes(now_ms);

        if !self.symptoms_changed && !heartbeat_due && now_ms.saturating_sub(self.last_localize_ms) < HEARTBEAT_SCAN_MS
        {
            return Vec::new();
        }
        self.symptoms_changed = false;
        self.last_localize_ms = now_ms;

        let mut active: Vec<Active> = Vec::new();
        let mut keys = BTreeSet::new();
        let mut node_names: Vec<&String> = self.node_symptoms.keys().collect();
        node_names.sort();
        let mut job_names: Vec<&String> = self.job_symptoms.keys().collect();
        job_names.sort();
        let all = node_names
            .into_iter()
            .flat_map(|n| self.node_symptoms[n].iter())
            .chain(job_names.into_iter().flat_map(|j| self.job_symptoms[j].iter()))
            .chain(self.fabric_symptoms.iter());
        for s in all {
            tracing::trace!(component = %s.component, kind = s.kind.as_str(), onset_ms = s.onset_ms, detail = %s.detail, "symptom");
            let key = (s.component.clone(), s.kind);
            let first = *self.first_seen.entry(key.clone()).or_insert(now_ms);
            keys.insert(key);
            active.push(Active { s: s.clone(), first_seen_ms: first });
        }
        self.first_seen.retain(|k, _| keys.contains(k));
        for a in &active {
            if let ComponentId::NvLink { host, gpu, link } = &a.s.component {
                self.topo.ensure_nvlink(host, *gpu, *link);
            }
        }
        let open = self.book.open_roots();
        let ctx = localize::Ctx { topo: &self.topo, state: &self.state, now: now_ms, open: &open };
        let diags = localize::localize(&active, &ctx);
        let resolve_ms = (self.cfg.resolve_after_s * 1000.0) as i64;
        let changes = self.book.apply(&diags, &active, &self.topo, &self.state, now_ms, resolve_ms);
        changes
            .into_iter()
            .map(|c| match c {
                Change::Opened(i) => IncidentChange::Opened(self.book.incidents[i].clone()),
                Change::Updated(i) => IncidentChange::Updated(self.book.incidents[i].clone()),
                Change::Resolved(i) => IncidentChange::Resolved(self.book.incidents[i].clone()),
            })
            .collect()
    }

    fn check_node(&mut self, name: &str, now_ms: i64) {
        let Some(n) = self.state.nodes.get(name) else { return };
        let mut out = Vec::new();
        let hb = self.heartbeat_allowance_ms(n.interval_ms);
        host::check(n, hb, now_ms, &mut out);
        let mut clocks: Vec<f64> = n
            .gpus
            .values()
            .filter_map(|g| g.points.back())
            .filter(|p| p.util.is_none_or(|u| u > 10.0))
            .filter_map(|p| p.sm_mhz.map(|c| c as f64))
            .collect();
        let peers = gpu::GpuPeers {
            sm_median: detect::median(&mut clocks).filter(|_| clocks.len() >= 3),
            fatal_xid_hold_ms: (self.cfg.fatal_xid_hold_s * 1000.0) as i64,
        };
        for (idx, g) in &n.gpus {
            gpu::check(name, *idx, g, &peers, now_ms, &mut out);
        }
        gpu::check_node(n, now_ms, &mut out);
        // Only fabric NICs can be a fault root or raise a symptom.
        for (nic_name, st) in n.nics.iter().filter(|(_, st)| st.fabric) {
            let peers = nic::NicPeers { expected_rate: self.expected_rate(name, nic_name) };
            nic::check(name, nic_name, st, &peers, now_ms, &mut out);
        }
        let old = self.node_symptoms.get(name);
        let had = old.is_some();
        if old.map(|o| same(o, &out)) != Some(true) && !(old.is_none() && out.is_empty()) {
            self.symptoms_changed = true;
        }
        if out.is_empty() {
            // A healthy node had none before either, nearly always: no second hash of its name.
            if had {
                self.node_symptoms.remove(name);
            }
        } else {
            self.node_symptoms.insert(name.to_string(), out);
        }
    }

    /// The fabric probe matrix (detect/pingmesh.rs), over live nodes only.
    fn check_fabric_probes(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.last_pingmesh_ms) < PINGMESH_EVERY_MS {
            return;
        }
        self.last_pingmesh_ms = now_ms;
        let intervals = self.cfg.heartbeat_intervals;
        let live = |n: &crate::state::NodeState| {
            !n.shutdown && n.reports > 0 && !crate::silence::silent(n.last_recv_ms, n.interval_ms, now_ms, intervals)
        };
        let topo = &self.topo;
        let leaf_of = |h: &str, n: &str| {
            topo.leaf_of_nic(&ComponentId::Nic { host: h.into(), name: n.into() }).map(str::to_string)
        };
        let uplinks = |leaf: &str| topo.uplinks(leaf).to_vec();
        let fab = detect::pingmesh::Fabric { live: &live, leaf_of: &leaf_of, uplinks: &uplinks };
        let mut out = Vec::new();
        detect::pingmesh::check(&self.state.nodes, &fab, &mut out);
        if !same(&self.fabric_symptoms, &out) {
            self.symptoms_changed = true;
        }
        self.fabric_symptoms = out;
    }

    fn update_jobs(&mut self, now_ms: i64, recheck: bool) {
        let linger = (self.cfg.job_linger_s * 1000.0) as i64;
        let rules = jobdet_hang::HangRules {
            quiet_ms: (self.cfg.hang_quiet_s * 1000.0) as i64,
            warmup_ms: (self.cfg.job_warmup_s * 1000.0) as i64,
            pause_max_ms: (self.cfg.job_pause_max_s * 1000.0) as i64,
        };
        // Dirty jobs checked less than `JOB_DIRTY_MIN_MS` ago stay dirty for a later tick, unless
        // their news is urgent.
        let urgent = std::mem::take(&mut self.urgent_jobs);
        let (dirty, wait): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut self.dirty_jobs).into_iter().partition(|id| {
                urgent.contains(id) || self.job_checked.get(id).is_none_or(|t| now_ms - t >= JOB_DIRTY_MIN_MS)
            });
        self.dirty_jobs = wait;
        let mut to_check: BTreeSet<String> = dirty.clone();
        if recheck {
            for (id, _) in &self.state.jobs {
                if self.job_checked.get(id).is_none_or(|t| now_ms - t >= JOB_RECHECK_MS) {
                    to_check.insert(id.clone());
                }
            }
        }
        let mut remove = Vec::new();
        for id in &to_check {
            let Some(job) = self.state.jobs.get_mut(id) else { continue };
            // Every rank gone from its node's reports: the job ended.
            let all_gone = job.ranks.values().all(|r| r.gone_ms.is_some());
            if all_gone && job.ended_ms.is_none() {
                let t = job.ranks.values().filter_map(|r| r.gone_ms).max().unwrap_or(now_ms);
                let first = job.ranks.values().filter_map(|r| r.gone_ms).min().unwrap_or(t);
                job.ended_ms = Some(t);
                tracing::info!(
                    job = %id,
                    ranks = job.ranks.len(),
                    first_gone_ms = first,
                    last_gone_ms = t,
                    scheduler = ?job.sched_state,
                    hung = job.hung_since.is_some(),
                    "job ended: every rank left its node's reports"
                );
            }
            let silent_too_long = now_ms - job.last_seen_ms > linger
                && job
                    .ranks
                    .values()
                    .all(|r| self.state.nodes.get(&r.node).is_none_or(|n| n.last_report_ms > r.seen_ms));
            if job.ended_ms.is_some_and(|t| now_ms - t > linger) || silent_too_long {
                remove.push(id.clone());
                continue;
            }
            if job.placement_dirty {
                job.placement_dirty = false;
                let placement: BTreeMap<u32, RankPlacement> = job
                    .ranks
                    .iter()
                    .map(|(k, r)| {
                        (*k, RankPlacement { rank: *k, host: r.node.clone(), gpus: r.gpus.clone(), nic: r.nic.clone() })
                    })
                    .collect();
                self.topo.set_job(id, placement);
            }
            if dirty.contains(id) {
                jobdet::learn_baseline(job);
            }
            let mut out = Vec::new();
            jobdet::check(job, &self.state.nodes, &rules, now_ms, &mut out);
            // Collective-communication evidence from training logs (detect/nccl.rs).
            let topo = &self.topo;
            let leaf_of = |h: &str, n: &str| {
                topo.leaf_of_nic(&ComponentId::Nic { host: h.into(), name: n.into() }).map(str::to_string)
            };
            let (cache, nodes, generation) = (&self.addr_book, &self.state.nodes, self.state.addr_gen);
            let book = || cache.get(nodes, generation);
            detect::nccl::check(job, &self.state.nodes, &leaf_of, &book, now_ms, &mut out);
            // Remember a hang, so its end (the NCCL watchdog killing every rank) stays the same fault.
            match out.iter().find(|s| s.kind == SymptomKind::JobStalled && s.value >= 1.0) {
                Some(s) => {
                    job.hung_since.get_or_insert(s.onset_ms);
                }
                None if job.ranks.values().all(|r| r.alive()) => job.hung_since = None,
                None => {}
            }
            self.job_checked.insert(id.clone(), now_ms);
            let old = self.job_symptoms.get(id);
            if old.map(|o| same(o, &out)) != Some(true) && !(old.is_none() && out.is_empty()) {
                self.symptoms_changed = true;
            }
            if out.is_empty() {
                self.job_symptoms.remove(id);
            } else {
                self.job_symptoms.insert(id.clone(), out);
            }
        }
        for id in remove {
            self.state.jobs.remove(&id);
            self.topo.remove_job(&id);
            self.job_checked.remove(&id);
            if self.job_symptoms.remove(&id).is_some() {
                self.symptoms_changed = true;
            }
        }
    }

    /// Every incident, open and resolved, oldest first.
    pub fn incidents(&self) -> Vec<Incident> {
        self.book.incidents.clone()
    }

    /// One incident by id.
    pub fn incident(&self, id: &str) -> Option<Incident> {
        self.book.incidents.iter().find(|i| i.id == id).cloned()
    }

    /// After a restart: continue the open incidents the store kept, and number new ones after `next_id`.
    pub fn restore(&mut self, incidents: Vec<Incident>, next_id: u64) {
        let now = incidents.iter().map(|i| (i.updated_s * 1000.0) as i64).max().unwrap_or(0);
        self.book.restore(incidents, next_id, now);
    }

    /// The number the next incident id follows.
    pub fn next_incident_id(&self) -> u64 {
        self.book.next_id()
    }

    /// Open-incident statistics (for metrics).
    pub fn incident_stats(&self) -> IncidentStats {
        let mut s =
            IncidentStats { open: self.book.open_count(), total: self.book.incidents.len(), ..Default::default() };
        let mut jobs = BTreeSet::new();
        for i in self.book.open_incidents() {
            *s.open_by_class.entry(i.class.as_str().to_string()).or_default() += 1;
            jobs.extend(i.affected_jobs.iter().cloned());
        }
        s.affected_jobs = jobs.len();
        s
    }

    pub(crate) fn symptoms_of(&self, id: &ComponentId) -> Vec<&Symptom> {
        let from_node = id.host().and_then(|h| self.node_symptoms.get(h)).into_iter().flatten();
        let from_job = id.job_id().and_then(|j| self.job_symptoms.get(j)).into_iter().flatten();
        from_node.chain(from_job).filter(|s| &s.component == id).collect()
    }

    pub(crate) fn node_healthy(&self, host: &str) -> bool {
        !self.node_symptoms.get(host).is_some_and(|v| v.iter().any(|s| !s.kind.is_supporting()))
    }

    /// What the analyzer holds of one node from its reports (remediation's checks read it).
    pub fn node_state(&self, node: &str) -> Option<&crate::state::NodeState> {
        self.state.nodes.get(node)
    }

    /// Everything ingested (read-only; `views.rs` builds the API's views from it).
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The incident book (read-only).
    pub(crate) fn book(&self) -> &Book {
        &self.book
    }

    /// The dependency graph (read-only).
    pub(crate) fn topo(&self) -> &Topology {
        &self.topo
    }

    /// The engine's settings.
    pub(crate) fn cfg(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Current symptoms of one node's components.
    pub(crate) fn node_symptoms(&self, host: &str) -> Option<&Vec<Symptom>> {
        self.node_symptoms.get(host)
    }

    /// Current symptoms of one job.
    pub(crate) fn job_symptoms(&self, job: &str) -> Option<&Vec<Symptom>> {
        self.job_symptoms.get(job)
    }

    /// Open incidents right now.
    pub fn open_incidents(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = self.book.open_incidents().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The topology file this analyzer was started with.
    pub fn topology_file(&self) -> &TopologyFile {
        &self.topology_file
    }

    /// Vertices in the dependency graph (for metrics and scale tests).
    pub fn graph_size(&self) -> usize {
        self.topo.vertex_count()
    }
}

fn same(a: &[Symptom], b: &[Symptom]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.component == y.component && x.kind == y.kind && x.class == y.class)
}

/// Resolved incidents are kept; this says whether one is open.
pub fn is_open(i: &Incident) -> bool {
    i.status == IncidentStatus::Open
}

#[cfg(test)]
#[path = "engine_tests/mod.rs"]
mod tests;
