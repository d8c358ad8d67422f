//! Engine tests: a small hand-built cluster whose agents' reports we write by hand, driven through
//! `Analyzer` with a fake clock. One case per catalog kind, the hard distinctions, and noise.

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
                    ("symbol_error".to_string(), 3),
                    ("port_rcv_errors".to_string(), 1),
                    ("link_downed".to_string(), 0),
                    ("port_xmit_wait".to_string(), elapsed / 10 + (elapsed / 1000 % 7) * 10),
                    ("tx_bytes".to_string(), elapsed * 1_000_000),
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

#[test]
fn clean_cluster_stays_quiet_for_an_hour() {
    let mut w = World::new();
    w.run(3600);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    assert_eq!(w.a.nodes().len(), 8);
    assert_eq!(w.a.jobs().len(), 2);
    assert!(w.a.summary().open_incidents == 0);
}

#[test]
fn gpu_lost_is_the_gpu_within_seconds() {
    let (w, at) = case(120, 60, |w| {
        w.event(&host(4), "xid", Some("gpu3"), Some(79), None);
        w.mutate(|r, _| {
            if r.node == "node-0004" {
                r.gpus.retain(|g| g.index != 3);
            }
        });
        w.stalled.insert("big".into());
    });
    let (i, ttd) = w.expect_one("node-0004/gpu3", &["big"], at);
    assert_eq!(i.class, FaultClass::GpuLost);
    assert!(ttd <= 5.0, "{ttd}");
    assert_eq!(i.action, Action::RebootNode);
    assert!(i.paths.iter().any(|p| p
        == &["job:big", "job:big/rank11", "node-0004/gpu3", "node-0004", "node-0004/nic:mlx5_3", "switch:leaf-01"]));
    assert!(i.evidence.iter().any(|e| e.detail.contains("79")), "{:?}", i.evidence);
}

#[test]
fn hbm_sram_and_gsp_faults() {
    for (xid, field, class) in [
        (48u32, "dbe", FaultClass::GpuHbmUncorrectable),
        (95, "sram", FaultClass::GpuSramUncorrectable),
        (119, "", FaultClass::GpuGspHang),
    ] {
        let (w, at) = case(60, 60, |w| {
            let f = field.to_string();
            w.mutate(move |r, _| {
                if r.node == "node-0002" {
                    set_gpu(r, 1, |g| match f.as_str() {
                        "dbe" => g.ecc.dbe_volatile = Some(1),
                        "sram" => g.ecc.sram_uncorrectable = Some(1),
                        _ => g.state = GpuState::Unresponsive,
                    });
                }
            });
            w.event(&host(2), "xid", Some("gpu1"), Some(xid), None);
            w.stalled.insert("small".into());
        });
        let (i, ttd) = w.expect_one("node-0002/gpu1", &["small"], at);
        assert_eq!(i.class, class, "xid {xid}");
        assert!(ttd <= 5.0);
        // A one-node job's path has no NIC or leaf.
        assert_eq!(i.paths[0], ["job:small", "job:small/rank1", "node-0002/gpu1", "node-0002"]);
    }
}

#[test]
fn early_warnings_sbe_storm_and_row_remap_failure() {
    let (w, _) = case(60, 90, |w| {
        let t0 = w.t;
        w.mutate(move |r, t| {
            if r.node == "node-0000" {
                set_gpu(r, 2, |g| g.ecc.sbe_volatile = Some(((t - t0) / 100) as u64));
            }
        });
    });
    let (i, _) = w.expect_one("node-0000/gpu2", &["big"], 0);
    assert_eq!(i.class, FaultClass::GpuEccSbeStorm);
    let (w, _) = case(60, 30, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0003" {
                set_gpu(r, 0, |g| g.row_remap = Some(RowRemap { failure: true, ..Default::default() }));
            }
        });
        w.event(&host(3), "xid", Some("gpu0"), Some(64), None);
    });
    let (i, _) = w.expect_one("node-0003/gpu0", &[], 0);
    assert_eq!(i.class, FaultClass::GpuRowRemapFailure);
}

#[test]
fn thermal_power_brake_and_pcie_slowdowns_within_a_minute() {
    let cases: Vec<(FaultClass, Box<dyn Fn(&mut GpuSample)>)> = vec![
        (
            FaultClass::GpuThermalThrottle,
            Box::new(|g| {
                g.temp_c = Some(89.0);
                g.throttle_reasons = vec!["hw_thermal_slowdown".into()];
                g.sm_clock_mhz = Some(1380);
            }),
        ),
        (
            FaultClass::GpuPowerBrake,
            Box::new(|g| {
                g.throttle_reasons = vec!["hw_power_brake_slowdown".into()];
                g.sm_clock_mhz = Some(1180);
                g.power_w = Some(250.0);
            }),
        ),
        (
            FaultClass::PcieDowntrained,
            Box::new(|g| {
                g.pcie = Some(PcieLink {
                    generation: Some(3),
                    max_generation: Some(5),
                    width: Some(8),
                    max_width: Some(16),
                    replay_count: Some(0),
                })
            }),
        ),
    ];
    for (class, f) in cases {
        let f = std::rc::Rc::new(f);
        let (w, at) = case(120, 90, |w| {
            let f = f.clone();
            w.mutate(move |r, _| {
                if r.node == "node-0001" {
                    set_gpu(r, 2, |g| f(g));
                }
            });
            w.slow.insert("big".into(), 1.25);
            w.compute.insert(("big".into(), 6), 1.3);
        });
        let (i, ttd) = w.expect_one("node-0001/gpu2", &["big"], at);
        assert_eq!(i.class, class);
        assert!(ttd <= 60.0, "{class}: {ttd}");
    }
}

#[test]
fn gpu_slow_is_found_from_compute_time_alone() {
    let (w, at) = case(120, 120, |w| {
        w.slow.insert("big".into(), 1.2);
        w.compute.insert(("big".into(), 9), 1.2);
    });
    let (i, ttd) = w.expect_one("node-0004/gpu1", &["big"], at);
    assert_eq!(i.class, FaultClass::GpuSlow);
    assert!(ttd <= 60.0, "{ttd}");
}

#[test]
fn sdc_on_one_rank_is_its_gpu() {
    let (w, _) = case(60, 30, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0005" {
                for j in &mut r.jobs {
                    for rk in &mut j.ranks {
                        if rk.rank == 13 {
                            if let Some(p) = &mut rk.progress {
                                p.nonfinite_loss = true;
                                p.loss = None;
                            }
                        }
                    }
                }
            }
        });
    });
    let (i, _) = w.expect_one("node-0005/gpu1", &["big"], 0);
    assert_eq!(i.class, FaultClass::GpuSdc);
}

#[test]
fn nvlink_down_and_crc_storm_are_the_link() {
    let (w, at) = case(60, 30, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0000" {
                set_gpu(r, 1, |g| g.nvlinks[2].active = false);
            }
        });
        w.event(&host(0), "xid", Some("gpu1"), Some(74), None);
        w.slow.insert("big".into(), 1.4);
    });
    let (i, ttd) = w.expect_one("node-0000/gpu1/nvlink2", &["big"], at);
    assert_eq!(i.class, FaultClass::NvlinkDown);
    assert!(ttd <= 5.0);
    let (w, _) = case(60, 60, |w| {
        let t0 = w.t;
        w.mutate(move |r, t| {
            if r.node == "node-0002" {
                set_gpu(r, 3, |g| g.nvlinks[1].crc_errors = Some(((t - t0) / 100) as u64));
            }
        });
        w.slow.insert("small".into(), 1.1);
    });
    let (i, _) = w.expect_one("node-0002/gpu3/nvlink1", &["small"], 0);
    assert_eq!(i.class, FaultClass::NvlinkCrcStorm);
}

#[test]
fn one_nic_down_is_the_nic_and_a_whole_leaf_down_is_the_leaf() {
    let (w, at) = case(60, 30, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0001" {
                set_nic(r, "mlx5_2", link_down);
            }
        });
        w.event(&host(1), "nic_link_down", Some("nic:mlx5_2"), None, None);
        w.stalled.insert("big".into());
    });
    let (i, ttd) = w.expect_one("node-0001/nic:mlx5_2", &["big"], at);
    assert_eq!(i.class, FaultClass::NicDown);
    assert!(ttd <= 5.0, "{ttd}");

    let (w, at) = case(60, 30, |w| {
        w.mutate(|r, _| {
            let i: usize = r.node[5..].parse().unwrap();
            if i >= 4 {
                for n in &mut r.nics {
                    link_down(n);
                }
            }
        });
        for h in 4..8 {
            for n in 0..NICS {
                w.event(&host(h), "nic_link_down", Some(&format!("nic:mlx5_{n}")), None, None);
            }
        }
        w.stalled.insert("big".into());
    });
    let (i, ttd) = w.expect_one("switch:leaf-01", &["big"], at);
    assert_eq!(i.class, FaultClass::LeafSwitchDown);
    assert!(ttd <= 5.0, "{ttd}");
}

#[test]
fn nic_flap_bit_errors_and_speed() {
    let (w, _) = case(60, 120, |w| {
        let t0 = w.t;
        w.mutate(move |r, t| {
            if r.node == "node-0004" {
                let k = ((t - t0) / 20_000) as u64;
                set_nic(r, "mlx5_0", |n| {
                    n.counters.insert("link_downed".into(), k);
                    n.carrier_changes = Some(1 + 2 * k);
                    n.counters.insert("link_error_recovery".into(), k);
                });
            }
        });
    });
    let (i, _) = w.expect_one("node-0004/nic:mlx5_0", &["big"], 0);
    assert_eq!(i.class, FaultClass::NicFlap);

    let (w, at) = case(60, 90, |w| {
        let t0 = w.t;
        w.mutate(move |r, t| {
            if r.node == "node-0000" {
                set_nic(r, "mlx5_1", |n| {
                    n.counters.insert("symbol_error".into(), 3 + ((t - t0) / 500) as u64);
                    n.counters.insert("port_rcv_errors".into(), 1 + ((t - t0) / 1000) as u64);
                });
            }
        });
        w.slow.insert("big".into(), 1.2);
    });
    let (i, ttd) = w.expect_one("node-0000/nic:mlx5_1", &["big"], at);
    assert_eq!(i.class, FaultClass::CableBitErrors);
    assert!(ttd <= 60.0);

    let (w, _) = case(60, 60, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0005" {
                set_nic(r, "mlx5_3", |n| n.rate_gbps = Some(200.0));
            }
        });
        w.slow.insert("big".into(), 1.2);
    });
    let (i, _) = w.expect_one("node-0005/nic:mlx5_3", &["big"], 0);
    assert_eq!(i.class, FaultClass::NicSpeedDegraded);
}

#[test]
fn a_flap_seen_only_in_events_opens_at_the_first_bounce_and_becomes_a_flap() {
    let mut w = World::new();
    w.run(60);
    let at = w.t;
    for k in 0..4u64 {
        w.event(&host(5), "nic_link_down", Some("nic:mlx5_1"), None, None);
        w.mutate(move |r, _| {
            if r.node == "node-0005" {
                set_nic(r, "mlx5_1", |n| {
                    n.counters.insert("link_downed".into(), k + 1);
                    n.carrier_changes = Some(1 + 2 * (k + 1));
                });
            }
        });
        w.run(3);
        w.event(&host(5), "nic_link_up", Some("nic:mlx5_1"), None, None);
        w.run(27);
    }
    let (i, ttd) = w.expect_one("node-0005/nic:mlx5_1", &["big"], at);
    assert!(ttd <= 5.0, "{ttd}");
    let last = w.a.incident(&i.id).unwrap();
    assert_eq!(last.class, FaultClass::NicFlap, "{:?}", last.timeline);
}

#[test]
fn leaf_congestion_is_the_leaf() {
    let (w, at) = case(120, 90, |w| {
        let t0 = w.t;
        w.mutate(move |r, t| {
            let i: usize = r.node[5..].parse().unwrap();
            if i < 4 {
                for n in &mut r.nics {
                    let base = n.counters["port_xmit_wait"];
                    n.counters.insert("port_xmit_wait".into(), base + ((t - t0) as u64) * 50);
                    n.counters.insert("np_cnp_sent".into(), ((t - t0) as u64) * 2);
                }
            }
        });
        w.slow.insert("big".into(), 1.2);
    });
    let (i, ttd) = w.expect_one("switch:leaf-00", &["big"], at);
    assert_eq!(i.class, FaultClass::LeafCongestion);
    assert!(ttd <= 60.0, "{ttd}");
}

#[test]
fn node_down_versus_agent_down() {
    // The node dies: its agent stops and the job stops everywhere.
    let (w, at) = case(60, 90, |w| {
        w.silent.insert(host(5));
        w.stalled.insert("big".into());
    });
    let (i, ttd) = w.expect_one("node-0005", &["big"], at);
    assert_eq!(i.class, FaultClass::NodeDown);
    assert!(ttd <= 40.0, "{ttd}");
    // Only the agent dies: the job keeps stepping on the other nodes.
    let (w, _) = case(60, 90, |w| {
        w.silent.insert(host(5));
    });
    let (i, _) = w.expect_one("node-0005/agent", &[], 0);
    assert_eq!(i.class, FaultClass::AgentDown);
    // An idle node going silent: nothing tells node from agent; call it the node.
    let (w, _) = case(60, 60, |w| {
        w.silent.insert(host(7));
    });
    let (i, _) = w.expect_one("node-0007", &[], 0);
    assert_eq!(i.class, FaultClass::NodeDown);
}

#[test]
fn planned_reboot_after_a_goodbye_is_not_a_fault() {
    let mut w = World::new();
    w.run(60);
    w.shutdown.insert(host(7));
    w.run(10);
    w.silent.insert(host(7));
    w.run(300);
    w.shutdown.remove(&host(7));
    w.silent.remove(&host(7));
    w.run(60);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
}

#[test]
fn fan_failure_is_the_node_not_each_gpu() {
    let (w, at) = case(120, 90, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0001" {
                if let Some(h) = &mut r.host {
                    h.fans[0].rpm = Some(0.0);
                    h.fans[0].alarm = true;
                }
                for g in [0, 1, 2] {
                    set_gpu(r, g, |x| {
                        x.temp_c = Some(90.0);
                        x.throttle_reasons = vec!["hw_thermal_slowdown".into()];
                        x.sm_clock_mhz = Some(1380);
                    });
                }
            }
        });
        w.slow.insert("big".into(), 1.25);
    });
    let (i, ttd) = w.expect_one("node-0001", &["big"], at);
    assert_eq!(i.class, FaultClass::HostFanFailure);
    assert!(ttd <= 60.0);
}

#[test]
fn oom_kill_of_a_rank_is_the_node_and_a_crash_without_hardware_is_the_job() {
    let (w, at) = case(60, 30, |w| {
        w.event(&host(2), "oom_kill", None, None, Some(1001));
        w.exited.insert(("small".into(), 1), -9);
        w.stalled.insert("small".into());
    });
    let (i, ttd) = w.expect_one("node-0002", &["small"], at);
    assert_eq!(i.class, FaultClass::HostOom);
    assert!(ttd <= 5.0);
    let (w, at) = case(60, 30, |w| {
        for r in 0..16 {
            w.exited.insert(("big".into(), r), 1);
        }
        w.stalled.insert("big".into());
        for h in [0, 1, 4, 5] {
            let r = w.report(&host(h), Vec::new());
            w.a.ingest(r, w.t).unwrap();
        }
    });
    let (i, ttd) = w.expect_one("job:big", &["big"], at);
    assert_eq!(i.class, FaultClass::JobCrash);
    assert!(ttd <= 5.0, "{ttd}");
    assert_eq!(i.paths.len(), 16);
}

#[test]
fn job_hang_without_hardware_is_the_job() {
    let (w, at) = case(60, 60, |w| {
        w.stalled.insert("big".into());
    });
    let (i, ttd) = w.expect_one("job:big", &["big"], at);
    assert_eq!(i.class, FaultClass::JobHang);
    assert!(ttd <= 45.0, "{ttd}");
}

#[test]
fn mce_cpu_contention_and_disk() {
    let (w, _) = case(60, 20, |w| w.event(&host(6), "mce", None, None, None));
    let (i, _) = w.expect_one("node-0006", &[], 0);
    assert_eq!(i.class, FaultClass::HostMce);
    let (w, _) = case(120, 90, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0002" {
                if let Some(h) = &mut r.host {
                    h.cpu_util_pct = Some(99.0);
                    h.cpu_non_job_pct = Some(70.0);
                }
            }
        });
        w.slow.insert("small".into(), 1.2);
    });
    let (i, _) = w.expect_one("node-0002", &["small"], 0);
    assert_eq!(i.class, FaultClass::HostCpuContention);
    let (w, _) = case(60, 40, |w| {
        w.event(&host(3), "io_error", Some("disk:nvme0n1"), None, None);
        w.mutate(|r, _| {
            if r.node == "node-0003" {
                r.disks[0].read_only = true;
            }
        });
    });
    let (i, _) = w.expect_one("node-0003/disk:nvme0n1", &[], 0);
    assert_eq!(i.class, FaultClass::DiskFailure);
}

#[test]
fn two_faults_at_once_give_two_incidents() {
    let (w, _) = case(60, 30, |w| {
        w.event(&host(0), "xid", Some("gpu0"), Some(79), None);
        w.event(&host(6), "mce", None, None, None);
        w.stalled.insert("big".into());
    });
    let roots: BTreeSet<String> = w.opened().iter().map(|i| i.root.to_string()).collect();
    assert_eq!(roots, ["node-0000/gpu0", "node-0006"].into_iter().map(String::from).collect());
}

#[test]
fn noise_does_not_raise_incidents() {
    let mut w = World::new();
    // Rare application XIDs, single correctable ECC and symbol error ticks, checkpoint pauses.
    w.mutate(|r, t| {
        if r.node == "node-0001" && (t / 1000) % 600 < 10 {
            set_gpu(r, 0, |g| g.ecc.sbe_volatile = Some(2));
            set_nic(r, "mlx5_0", |n| {
                n.counters.insert("symbol_error".into(), 4);
            });
        }
    });
    w.run(300);
    w.event(&host(4), "xid", Some("gpu2"), Some(13), None);
    w.run(300);
    w.event(&host(4), "xid", Some("gpu2"), Some(45), None);
    w.stalled.insert("big".into());
    w.run(6);
    w.stalled.remove("big");
    w.run(600);
    // A job ends and a new one starts.
    w.jobs.retain(|j| j.0 != "small");
    w.run(120);
    w.jobs.push(("fresh".into(), vec![host(6), host(7)], 1500.0));
    w.progress.insert("fresh".into(), (w.t, 0));
    w.run(300);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    assert_eq!(w.a.jobs().iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ["big", "fresh"]);
}

#[test]
fn duplicates_are_not_applied_twice_and_bad_input_changes_nothing() {
    let mut w = World::new();
    w.run(20);
    let r = w.report(&host(0), Vec::new());
    let body = serde_json::to_vec(&r).unwrap();
    assert!(!w.a.ingest_json(&body, w.t).unwrap().duplicate);
    assert!(w.a.ingest_json(&body, w.t).unwrap().duplicate);
    let before = w.a.nodes();
    let mut bad = r.clone();
    bad.gpus[0].temp_c = Some(f64::NAN);
    bad.seq += 1;
    assert!(w.a.ingest(bad, w.t).is_err());
    assert!(w.a.ingest_json(b"{\"schema_version\": 1}", w.t).is_err());
    assert_eq!(w.a.nodes(), before);
}

#[test]
fn views_describe_components_jobs_and_topology() {
    let (w, _) = case(60, 20, |w| w.event(&host(4), "xid", Some("gpu3"), Some(79), None));
    let c = w.a.component(&"node-0004/gpu3".parse().unwrap()).unwrap();
    assert!(!c.healthy);
    assert_eq!(c.depends_on, vec![ComponentId::node("node-0004")]);
    assert!(c.dependents.contains(&"job:big/rank11".parse().unwrap()));
    assert_eq!(c.incidents.len(), 1);
    let j = w.a.job("big").unwrap();
    assert_eq!(j.ranks.len(), 16);
    assert_eq!(j.ranks[11].leaf.as_deref(), Some("switch:leaf-01"));
    assert!(!j.healthy);
    assert!(w.a.job("small").unwrap().ranks[0].nic.is_none());
    let t = w.a.topology_view();
    assert_eq!(t.switches.len(), 3);
    assert_eq!(t.switches.iter().find(|s| s.id == "switch:leaf-00").unwrap().nics.len(), 16);
    let s = w.a.summary();
    assert_eq!((s.nodes, s.gpus, s.open_incidents), (8, 32, 1));
    assert_eq!(s.most_affected_jobs[0].job, "big");
    assert!(w.a.health().any(|h| h.id.to_string() == "node-0004/gpu3" && !h.healthy));
    assert!(w.a.component(&"node-0099".parse().unwrap()).is_none());
}

#[test]
fn incidents_resolve_after_the_symptoms_are_gone_and_restore_continues_numbering() {
    let (mut w, _) = case(60, 30, |w| {
        w.mutate(|r, _| {
            if r.node == "node-0006" {
                set_nic(r, "mlx5_1", link_down);
            }
        });
    });
    assert_eq!(w.opened().len(), 1);
    w.mutators.clear();
    w.run(200);
    assert!(w.changes.iter().any(|c| matches!(c, IncidentChange::Resolved(_))));
    let all = w.a.incidents();
    let mut b = Analyzer::new(EngineConfig::default(), topology());
    b.restore(all, 7);
    assert_eq!(b.next_incident_id(), 7);
}

/// One report of a 100k-GPU cluster node: 8 GPUs with 18 NVLinks each, 8 NICs with a full counter
/// set, and 8 ranks of a 64-node job.
fn big_report(n: usize, seq: u64, t: i64) -> NodeReport {
    let h = format!("node-{n:05}");
    let job = n / 64;
    let step = ((t - START) / 2000) as u64;
    let counters: BTreeMap<String, u64> = crate::state::NIC_COUNTERS
        .iter()
        .chain(["port_xmit_data", "port_rcv_data", "port_xmit_packets", "port_rcv_packets", "VL15_dropped"].iter())
        .enumerate()
        .map(|(i, c)| (c.to_string(), (t - START) as u64 * i as u64))
        .collect();
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: h.clone(),
        agent_version: "bench".into(),
        seq,
        timestamp_ms: t,
        interval_ms: INTERVAL as u64,
        shutdown: false,
        urgent: false,
        host: Some(HostSample { cpu_util_pct: Some(30.0), cpu_non_job_pct: Some(2.0), ..Default::default() }),
        gpus: (0..8)
            .map(|g| GpuSample {
                index: g,
                uuid: format!("GPU-{n}-{g}"),
                util_gpu_pct: Some(97.0),
                temp_c: Some(66.0),
                sm_clock_mhz: Some(1980),
                sm_clock_max_mhz: Some(1980),
                ecc: EccCounts { sbe_volatile: Some(1), dbe_volatile: Some(0), ..Default::default() },
                pcie: Some(PcieLink {
                    generation: Some(5),
                    max_generation: Some(5),
                    width: Some(16),
                    max_width: Some(16),
                    replay_count: Some(3),
                }),
                nvlinks: (0..18)
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
            .collect(),
        nics: (0..8)
            .map(|k| NicSample {
                name: format!("mlx5_{k}"),
                operstate: Some("up".into()),
                carrier: Some(true),
                ib_state: Some("ACTIVE".into()),
                rate_gbps: Some(400.0),
                max_rate_gbps: Some(400.0),
                link_layer: Some("InfiniBand".into()),
                counters: counters.clone(),
                ..Default::default()
            })
            .collect(),
        disks: vec![],
        jobs: vec![JobSample {
            job_id: format!("job{job}"),
            world_size: Some(512),
            ranks: (0..8)
                .map(|g| RankSample {
                    rank: (n % 64) as u32 * 8 + g,
                    pid: Some(1000 + g),
                    gpus: vec![g],
                    nic: Some(format!("mlx5_{g}")),
                    state: ProcState::Running,
                    progress: Some(Progress {
                        step,
                        last_progress_ms: START + step as i64 * 2000,
                        step_time_ms: Some(2000.0),
                        compute_ms: Some(1600.0 + g as f64),
                        grad_norm: Some(1.0),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        events: vec![],
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
    }
}

/// Measures one 10 s round of 12,500 node reports (100k GPUs): JSON decode, ingest and ticks.
/// Run with `cargo test --release -p faultline-analyzer --lib scale_round -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale_round_of_12500_reports() {
    const NODES: usize = 12_500;
    let racks = (0..NODES / 32)
        .map(|l| RackDef {
            leaf: format!("leaf-{l:03}"),
            nodes: (l * 32..(l + 1) * 32).map(|n| format!("node-{n:05}")).collect(),
        })
        .collect();
    let mut switches: Vec<SwitchDef> = (0..NODES / 32)
        .map(|l| SwitchDef { name: format!("leaf-{l:03}"), tier: SwitchTier::Leaf, uplinks: vec!["spine-0".into()] })
        .collect();
    switches.push(SwitchDef { name: "spine-0".into(), tier: SwitchTier::Spine, uplinks: vec![] });
    let mut a = Analyzer::new(EngineConfig::default(), TopologyFile { switches, racks, ..Default::default() });
    for round in 0..3i64 {
        let t0 = START + round * INTERVAL;
        let bodies: Vec<Vec<u8>> = (0..NODES)
            .map(|n| serde_json::to_vec(&big_report(n, round as u64 + 1, t0 + n as i64 / 2)).unwrap())
            .collect();
        let bytes: usize = bodies.iter().map(|b| b.len()).sum();
        let start = std::time::Instant::now();
        let reports: Vec<NodeReport> = bodies.iter().map(|b| decode(b).unwrap()).collect();
        let parsed = start.elapsed();
        let mut ticks = std::time::Duration::ZERO;
        for (n, r) in reports.into_iter().enumerate() {
            let now = t0 + n as i64 / 2;
            a.apply(r, now).unwrap();
            if n % 500 == 0 {
                let s = std::time::Instant::now();
                a.tick(now);
                ticks += s.elapsed();
            }
        }
        let s = std::time::Instant::now();
        a.tick(t0 + 9_000);
        ticks += s.elapsed();
        let took = start.elapsed();
        eprintln!(
            "round {round}: {NODES} reports ({:.0} MB JSON) in {:.3} s: decode+validate {:.3} s, apply {:.3} s, ticks {:.3} s; graph {} vertices; {} incidents",
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            parsed.as_secs_f64(),
            (took - parsed - ticks).as_secs_f64(),
            ticks.as_secs_f64(),
            a.graph_size(),
            a.incidents().len()
        );
    }
    assert!(a.incidents().is_empty());
}

/// A bare report at a 1 s interval: enough for heartbeats.
fn heartbeat_report(node: &str, seq: u64, t: i64) -> NodeReport {
    NodeReport {
        schema_version: faultline_proto::SCHEMA_VERSION,
        node: node.into(),
        agent_version: "test".into(),
        seq,
        timestamp_ms: t,
        interval_ms: 1_000,
        shutdown: false,
        urgent: false,
        host: None,
        gpus: vec![],
        nics: vec![],
        disks: vec![],
        jobs: vec![],
        events: vec![],
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
    }
}

/// Drive `nodes` agents at 1 s for `secs` seconds; those in `silent` send nothing.
fn drive_heartbeats(a: &mut Analyzer, nodes: &[String], silent: &[String], t: &mut i64, seq: &mut u64, secs: i64) {
    for _ in 0..secs {
        *t += 1_000;
        *seq += 1;
        for n in nodes.iter().filter(|n| !silent.contains(n)) {
            a.ingest(heartbeat_report(n, *seq, *t), *t).unwrap();
        }
        a.tick(*t);
    }
}

#[test]
fn short_silence_at_a_fast_interval_is_not_a_dead_node() {
    // Regression for the 2,000-agent load test: at a 1 s interval, a report held up a few seconds in
    // the analyzer's own queue opened node_down. Silence under HEARTBEAT_MIN_SILENCE_MS never does.
    let nodes: Vec<String> = (0..4).map(host).collect();
    let mut a = Analyzer::new(EngineConfig::default(), topology());
    let (mut t, mut seq) = (START, 0);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    drive_heartbeats(&mut a, &nodes, &nodes[1..2], &mut t, &mut seq, 6);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    assert!(a.incidents().is_empty(), "{:?}", a.incidents());
    // A real death still opens node_down once the floor has passed.
    drive_heartbeats(&mut a, &nodes, &nodes[1..2], &mut t, &mut seq, 20);
    let inc = a.incidents();
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0].root.to_string(), host(1));
    assert_eq!(inc[0].class, FaultClass::NodeDown);
}

#[test]
fn mass_silence_is_the_analyzer_behind_not_many_dead_nodes() {
    let nodes: Vec<String> = (0..40).map(host).collect();
    let mut a = Analyzer::new(EngineConfig::default(), TopologyFile::default());
    let (mut t, mut seq) = (START, 0);
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    // Half the cluster goes quiet in the same second (analyzer overloaded, management network cut).
    drive_heartbeats(&mut a, &nodes, &nodes[..20], &mut t, &mut seq, 60);
    assert!(a.mass_silence());
    assert!(a.incidents().is_empty(), "{:?}", a.incidents());
    drive_heartbeats(&mut a, &nodes, &[], &mut t, &mut seq, 30);
    assert!(!a.mass_silence());
    // One node dying among many healthy ones is still found.
    drive_heartbeats(&mut a, &nodes, &nodes[7..8], &mut t, &mut seq, 30);
    let inc = a.incidents();
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0].root.to_string(), host(7));
}
