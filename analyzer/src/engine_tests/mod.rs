//! Engine tests: a small hand-built cluster whose agents' reports we write by hand, driven through
//! `Analyzer` with a fake clock. This file holds the world and its helpers; `catalog.rs` has one case
//! per catalog kind, the hard distinctions and noise; `real.rs` the signals real machines give (no
//! progress API, no exit codes, scheduler states, virtual NICs); `scale.rs` the load and heartbeat
//! cases.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use faultline_proto::topology::{RackDef, SwitchDef, SwitchTier};
use faultline_proto::*;

use super::*;

const START: i64 = 1_700_000_000_000;
const INTERVAL: i64 = 10_000;
const GPUS: u32 = 4;
const NICS: u32 = 4;

type Mutator = Box<dyn Fn(&mut NodeReport, i64)>;

/// A small cluster: 8 nodes, two leaves of four, 4 GPUs and 4 NICs each (GPU i uses NIC i).
/// Job `big` runs on node-0000, 0001 (leaf-00) and 0004, 0005 (leaf-01); job `small` on node-0002 alone.
struct World {
    t: i64,
    seq: BTreeMap<String, u64>,
    jobs: Vec<(String, Vec<String>, f64)>,
    /// job → time of its last step and step number
    progress: BTreeMap<String, (i64, u64)>,
    stalled: BTreeSet<String>,
    /// host → (time, fabric bytes each port has moved): a stalled job's ports go flat.
    nic_bytes: HashMap<String, (i64, u64)>,
    slow: HashMap<String, f64>,
    compute: HashMap<(String, u32), f64>,
    exited: HashMap<(String, u32), i32>,
    silent: BTreeSet<String>,
    shutdown: BTreeSet<String>,
    mutators: Vec<Mutator>,
    changes: Vec<IncidentChange>,
    a: Analyzer,
}

fn host(i: usize) -> String {
    format!("node-{i:04}")
}

fn topology() -> TopologyFile {
    TopologyFile {
        switches: vec![
            SwitchDef { name: "leaf-00".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
            SwitchDef { name: "leaf-01".into(), tier: SwitchTier::Leaf, uplinks: vec!["spine-00".into()] },
            SwitchDef { name: "spine-00".into(), tier: SwitchTier::Spine, uplinks: vec![] },
        ],
        racks: vec![
            RackDef { leaf: "leaf-00".into(), nodes: (0..4).map(host).collect() },
            RackDef { leaf: "leaf-01".into(), nodes: (4..8).map(host).collect() },
        ],
        rails: vec![],
        links: vec![],
        expected_rate_gbps: None,
    }
}

impl World {
    fn new() -> Self {
        let mut w = World {
            t: START,
            seq: (0..8).map(|i| (host(i), 0)).collect(),
            jobs: vec![
                ("big".into(), vec![host(0), host(1), host(4), host(5)], 2000.0),
                ("small".into(), vec![host(2)], 1000.0),
            ],
            progress: BTreeMap::new(),
            stalled: BTreeSet::new(),
            nic_bytes: HashMap::new(),
            slow: HashMap::new(),
            compute: HashMap::new(),
            exited: HashMap::new(),
            silent: BTreeSet::new(),
            shutdown: BTreeSet::new(),
            mutators: Vec::new(),
            changes: Vec::new(),
            a: Analyzer::new(EngineConfig::default(), topology()),
        };
        for (id, _, _) in &w.jobs {
            w.progress.insert(id.clone(), (START, 0));
        }
        w
    }

    fn report(&mut self, h: &str, events: Vec<Event>) -> NodeReport {
        let seq = self.seq.get_mut(h).unwrap();
        *seq += 1;
        let t = self.t;
        let idx: u64 = h[5..].parse().unwrap();
        let gpus = (0..GPUS)
            .map(|g| GpuSample {
                index: g,
                uuid: format!("GPU-{h}-{g}"),
                name: "H100".into(),
                util_gpu_pct: Some(95.0 + ((t / 1000 + g as i64) % 3) as f64),
                temp_c: Some(65.0 + ((t / 1000 + g as i64 + idx as i64) % 3) as f64),
                power_w: Some(600.0),
                power_limit_w: Some(700.0),
                sm_clock_mhz: Some(1980),
                sm_clock_max_mhz: Some(1980),
                ecc: EccCounts {
                    sbe_volatile: Some(idx),
                    dbe_volatile: Some(0),
                    sram_uncorrectable: Some(0),
                    ..Default::default()
                },
                row_remap: Some(RowRemap::default()),
                pcie: Some(PcieLink {
                    generation: Some(5),
                    max_generation: Some(5),
                    width: Some(16),
                    max_width: Some(16),
                    replay_count: Some(0),
                }),
                nvlinks: (0..4)
                    .map(|l| NvLinkSample {
                        link: l,
                        active: true,
                        crc_errors: Some(0),
                        replay_errors: Some(0),
                        recovery_errors: Some(0),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let elapsed = (t - START) as u64;
        let stalled_here = self.jobs.iter().any(|(id, hs, _)| self.stalled.contains(id) && hs.iter().any(|x| x == h));
        let (lt, lb) = self.nic_bytes.get(h).copied().unwrap_or((START, 0));
        let moved = if stalled_here { lb } else { lb + (t - lt).max(0) as u64 * 1_000_000 };
        self.nic_bytes.insert(h.to_string(), (t, moved));
        let nics = (0..NICS)
            .map(|n| NicSample {
                name: format!("mlx5_{n}"),
                operstate: Some("up".into()),
                carrier: Some(true),
                carrier_changes: Some(1),
                ib_state: Some("ACTIVE".into()),
                ib_phys_state: Some("LinkUp".into()),
                link_layer: Some("InfiniBand".into()),
                rate_gbps: Some(400.0),
                max_rate_gbps: Some(400.0),
                counters: [
                    ("symbol_error".into(), 3),
                    ("port_rcv_errors".into(), 1),
                    ("link_downed".into(), 0),
                    ("port_xmit_wait".into(), elapsed / 10 + (elapsed / 1000 % 7) * 10),
                    ("tx_bytes".into(), moved),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            })
            .collect();
        let mut jobs = Vec::new();
        for (id, hosts, step) in &self.jobs {
            let Some(pos) = hosts.iter().position(|x| x == h) else { continue };
            let (last, step_no) = self.progress[id];
            let factor = self.slow.get(id).copied().unwrap_or(1.0);
            let ranks = (0..GPUS)
                .map(|g| {
                    let r = pos as u32 * GPUS + g;
                    let exit = self.exited.get(&(id.clone(), r)).copied();
                    let cf = self.compute.get(&(id.clone(), r)).copied().unwrap_or(1.0);
                    let jitter = 1.0 + 0.02 * (((t / 1000) as i64 + r as i64) % 3 - 1) as f64;
                    RankSample {
                        rank: r,
                        local_rank: Some(g),
                        pid: Some(1000 + r),
                        gpus: vec![g],
                        nic: Some(format!("mlx5_{g}")),
                        state: if exit.is_some() { ProcState::Exited } else { ProcState::Running },
                        exit_code: exit,
                        progress: Some(Progress {
                            step: step_no,
                            last_progress_ms: last,
                            step_time_ms: Some(step * factor * jitter),
                            compute_ms: Some(step * 0.7 * cf * jitter),
                            loss: Some(2.0),
                            grad_norm: Some(1.0),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            jobs.push(JobSample {
                job_id: id.clone(),
                world_size: Some(hosts.len() as u32 * GPUS),
                ranks,
                ..Default::default()
            });
        }
        let mut r = NodeReport {
            schema_version: SCHEMA_VERSION,
            node: h.to_string(),
            agent_version: "test".into(),
            seq: *self.seq.get(h).unwrap(),
            timestamp_ms: t,
            interval_ms: INTERVAL as u64,
            shutdown: self.shutdown.contains(h),
            urgent: !events.is_empty(),
            host: Some(HostSample {
                cpu_count: Some(128),
                cpu_util_pct: Some(40.0),
                cpu_non_job_pct: Some(3.0),
                mem_total_bytes: Some(1 << 40),
                mem_available_bytes: Some(1 << 39),
                uptime_s: Some(100_000),
                fans: vec![FanSample { name: "fan1".into(), rpm: Some(9000.0), min_rpm: Some(1000.0), alarm: false }],
                ..Default::default()
            }),
            gpus,
            nics,
            disks: vec![DiskSample { device: "nvme0n1".into(), mount: Some("/".into()), ..Default::default() }],
            jobs,
            events,
            dropped: Default::default(),
            collector_errors: Default::default(),
            expected_gpus: None,
            driver_version: None,
            probes: Vec::new(),
        };
        for m in &self.mutators {
            m(&mut r, t);
        }
        r
    }

    /// Advance virtual time by `secs`, 500 ms at a time: jobs step, agents report on their interval
    /// (staggered by 100 ms per node), the analyzer ticks.
    fn run(&mut self, secs: i64) {
        let end = self.t + secs * 1000;
        while self.t < end {
            self.t += 500;
            for (id, _, step) in self.jobs.clone() {
                let factor = self.slow.get(&id).copied().unwrap_or(1.0);
                let (last, n) = self.progress[&id];
                if !self.stalled.contains(&id) && (self.t - last) as f64 >= step * factor {
                    self.progress.insert(id, (self.t, n + 1));
                }
            }
            for i in 0..8 {
                let h = host(i);
                if self.silent.contains(&h) {
                    continue;
                }
                if (self.t - START - i as i64 * 100).rem_euclid(INTERVAL) < 500 {
                    let r = self.report(&h, Vec::new());
                    self.a.ingest(r, self.t).unwrap();
                }
            }
            let c = self.a.tick(self.t);
            self.changes.extend(c);
        }
    }

    /// An agent pushes an event at once (urgent report).
    fn event(&mut self, h: &str, class: &str, component: Option<&str>, xid: Option<u32>, pid: Option<u32>) {
        let e = Event {
            ts_ms: self.t,
            source: if xid.is_some() { EventSource::Nvml } else { EventSource::Kmsg },
            class: faultline_proto::EventClass::parse(class).expect("a known event class"),
            severity: Severity::Critical,
            component: component.map(str::to_string),
            xid,
            pid,
            message: format!("{class} on {h}"),
            count: 1,
            ..Default::default()
        };
        let r = self.report(h, vec![e]);
        self.a.ingest(r, self.t).unwrap();
    }

    fn mutate(&mut self, f: impl Fn(&mut NodeReport, i64) + 'static) {
        self.mutators.push(Box::new(f));
    }

    fn opened(&self) -> Vec<Incident> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                IncidentChange::Opened(i) => Some(i.clone()),
                _ => None,
            })
            .collect()
    }

    /// Exactly one incident, at `root`, with these affected jobs; returns it and the seconds from
    /// `fault_at` to its opening.
    fn expect_one(&self, root: &str, jobs: &[&str], fault_at: i64) -> (Incident, f64) {
        let opened = self.opened();
        let summary: Vec<String> =
            opened.iter().map(|i| format!("{} {} {:?}", i.root, i.class, i.affected_jobs)).collect();
        assert_eq!(opened.len(), 1, "expected one incident at {root}, got {summary:?}");
        let i = opened[0].clone();
        assert_eq!(i.root.to_string(), root, "{summary:?}");
        assert_eq!(i.affected_jobs, jobs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{summary:?}");
        let ttd = i.opened_s - fault_at as f64 / 1000.0;
        (i, ttd)
    }
}

fn set_nic(r: &mut NodeReport, nic: &str, f: impl Fn(&mut NicSample)) {
    if let Some(n) = r.nics.iter_mut().find(|n| n.name == nic) {
        f(n);
    }
}

fn set_gpu(r: &mut NodeReport, g: u32, f: impl Fn(&mut GpuSample)) {
    if let Some(x) = r.gpus.iter_mut().find(|x| x.index == g) {
        f(x);
    }
}

fn link_down(n: &mut NicSample) {
    n.operstate = Some("down".into());
    n.carrier = Some(false);
    n.ib_state = Some("DOWN".into());
    n.ib_phys_state = Some("Disabled".into());
    n.counters.insert("link_downed".into(), 1);
    n.carrier_changes = Some(2);
}

/// Warm up, apply a fault, run on, return the world.
fn case(warm_s: i64, run_s: i64, fault: impl FnOnce(&mut World)) -> (World, i64) {
    let mut w = World::new();
    w.run(warm_s);
    assert!(w.opened().is_empty(), "false incident during warm-up: {:?}", w.opened());
    let at = w.t;
    fault(&mut w);
    w.run(run_s);
    (w, at)
}

mod catalog;
mod nccl;
mod real;
mod scale;
