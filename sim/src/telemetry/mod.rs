//! NodeReports as a real agent on a real node would send them: 8 GPUs with every NVML field, IB
//! ports with their sysfs counters (healthy ports included, with their small non-zero error
//! counts), the host, the disk, and the training ranks with their progress. Faults add their signals
//! through `Fault::apply`; the consequences (slow steps, stalls, idle peers) come from job state.

use faultline_proto::{
    DiskSample, EccCounts, FanSample, GpuProcess, GpuSample, GpuState, HostSample, NodeReport, NvLinkSample, PcieLink,
    RowRemap, SCHEMA_VERSION, TempSample,
};

use crate::faults::{COMPUTE_FRAC_MULTI, COMPUTE_FRAC_SINGLE};
use crate::jobs::{CKPT_BYTES_PER_S, Pause};
use crate::naming;
use crate::node_state::{
    AGENT_VERSION, CLOCK_EVENT_REASONS, DISK_BYTES, HOST_CPUS, HOST_MEM_BYTES, NIC_RATE_GBPS, NodeDyn, ReportCtx,
};
use crate::noise::{self, what};
use crate::world::{RankView, World};

mod nics;
mod nvlink;
pub mod probes;
mod ranks;
mod reuse;

use reuse::{filled, slots, some_text, text, texts};

struct Model {
    mem_bytes: u64,
    power_limit_w: f64,
    sm_max: u32,
    mem_max: u32,
}

fn model(name: &str) -> Model {
    let has = |m: &str| name.as_bytes().windows(m.len()).any(|w| w.eq_ignore_ascii_case(m.as_bytes()));
    let mib = |x: u64| x << 20;
    if has("B200") {
        Model { mem_bytes: mib(183_359), power_limit_w: 1000.0, sm_max: 1965, mem_max: 3996 }
    } else if has("H200") {
        Model { mem_bytes: mib(143_771), power_limit_w: 700.0, sm_max: 1980, mem_max: 3201 }
    } else if has("A100") {
        Model { mem_bytes: mib(81_920), power_limit_w: 400.0, sm_max: 1410, mem_max: 1593 }
    } else {
        Model { mem_bytes: mib(81_559), power_limit_w: 700.0, sm_max: 1980, mem_max: 2619 }
    }
}

/// How a GPU is loaded this report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    Idle,
    /// Training: util %, tensor-active %.
    Busy(f64, f64),
    /// Spinning in a collective that never completes (NCCL busy-wait).
    Spin,
    /// Writing a checkpoint.
    Checkpoint,
    /// Compiling and warming up: GPUs partly busy, no steps.
    Warmup,
    /// Evaluation: GPUs busy, no training steps.
    Eval,
    /// The process is stuck in the driver.
    Stuck,
}

pub(crate) struct RankHere {
    pub j: usize,
    pub r: usize,
    pub view: RankView,
    pub load: Load,
    pub extra: f64,
}

/// The names of a node's fans, as hwmon numbers them.
const FANS: [&str; 6] = ["hwmon3/fan1", "hwmon3/fan2", "hwmon3/fan3", "hwmon3/fan4", "hwmon3/fan5", "hwmon3/fan6"];

/// Build node `n`'s report at virtual ms `ts`, in the buffers of `spare`, a report sent before (of
/// any node; `NodeReport::empty` when there is none): see `reuse`.
pub fn build(
    w: &World,
    d: &mut NodeDyn,
    n: usize,
    ts: i64,
    urgent: bool,
    shutdown: bool,
    mut spare: NodeReport,
) -> NodeReport {
    let c = &w.cluster;
    let spec = &c.spec;
    let node = &c.nodes[n];
    let noise = w.noise;
    let last = d.last_ts;
    let dt_s = ((ts - last) as f64 / 1000.0).max(0.0);
    let tk = (ts / 1000) as u64;
    let nk = n as u64;
    let m = model(&spec.gpu_model);
    let gpn = spec.gpus_per_node as usize;
    let disk_fault_here = w.node_faults[n].iter().any(|&f| {
        let f = &w.faults[f];
        f.kind() == faultline_proto::FaultClass::DiskFailure && f.active(ts)
    });

    // Ranks visible on this node, and what their GPUs do.
    let mut ranks: Vec<RankHere> = Vec::new();
    for (j, rs) in &c.node_jobs[n] {
        for &r in rs {
            let view = w.rank_view(*j, r, ts);
            if view == RankView::Hidden {
                continue;
            }
            let jd = &w.jobs[*j];
            let job = &c.jobs[*j];
            let extra = w.rank_extra(*j, r, ts);
            let load = match view {
                RankView::Exited { .. } | RankView::Hidden => Load::Idle,
                RankView::HangD => Load::Stuck,
                RankView::Running => match jd.ckpt_until {
                    Some(i64::MAX) if disk_fault_here => Load::Stuck,
                    Some(u) if u != i64::MAX => Load::Checkpoint,
                    _ if jd.pause(ts) == Pause::Warmup => Load::Warmup,
                    _ if jd.pause(ts) == Pause::Eval => Load::Eval,
                    // A lone rank has no collective to wait in: its hang is in host code (a
                    // deadlocked data loader, a lock), and its GPU goes idle.
                    _ if !jd.progressing && job.ranks.len() == 1 => Load::Idle,
                    // NCCL spins in its kernel: NVML counts that as utilization.
                    _ if !jd.progressing => Load::Spin,
                    _ => {
                        let cfrac = if job.multi_node { COMPUTE_FRAC_MULTI } else { COMPUTE_FRAC_SINGLE };
                        let s = jd.slowdown.max(1e-6);
                        // Busy share: its own compute, plus the communication everyone does; the rest
                        // of a slowed step it waits for the straggler.
                        let busy = ((s - (jd.extra_max - extra)) / s).clamp(0.0, 1.0);
                        let util = 97.0 * busy;
                        let tensor = 55.0 * (cfrac + extra) / s;
                        Load::Busy(util, tensor)
                    }
                },
            };
            ranks.push(RankHere { j: *j, r, view, load, extra });
        }
    }
    let mut gpu_rank: Vec<Option<usize>> = vec![None; gpn];
    for (i, rh) in ranks.iter().enumerate() {
        if matches!(rh.view, RankView::Running | RankView::HangD) {
            let g = c.jobs[rh.j].ranks[rh.r].gpu as usize;
            if g < gpn {
                gpu_rank[g] = Some(i);
            }
        }
    }

    // GPUs, before faults.
    let mut gpus = std::mem::take(&mut spare.gpus);
    slots(&mut gpus, node.gpus.len());
    for (g, (gs, slot)) in node.gpus.iter().zip(gpus.iter_mut()).enumerate() {
        let o = std::mem::take(slot);
        let gk = nk * 64 + g as u64;
        let load = gpu_rank[g].map_or(Load::Idle, |i| ranks[i].load);
        let (util, tensor, power) = match load {
            Load::Idle => (0.0, 0.0, 72.0),
            Load::Busy(u, t) => {
                let u = (u + noise.plus(what::UTIL, gk, tk, noise::UTIL_JITTER_PCT)).clamp(0.0, 100.0);
                let t = (t + noise.plus(what::UTIL, gk, tk ^ 1, 1.5)).clamp(0.0, 100.0);
                (u, t, (120.0 + 5.6 * u * (0.75 + 0.25 * t / 55.0)).min(m.power_limit_w * 0.97))
            }
            Load::Spin => (100.0, 0.0, 330.0),
            Load::Checkpoint => (8.0, 0.0, 140.0),
            Load::Warmup => ((35.0 + noise.plus(what::UTIL, gk, tk, 15.0)).clamp(0.0, 100.0), 5.0, 220.0),
            Load::Eval => ((85.0 + noise.plus(what::UTIL, gk, tk, 5.0)).clamp(0.0, 100.0), 30.0, 420.0),
            Load::Stuck => (0.0, 0.0, 110.0),
        };
        let power = power * noise.jitter(what::POWER, gk, tk, 0.02);
        let offset = noise::sym(&[w.seed, what::STATIC, gk, 7]) * 3.0;
        let temp = (27.0 + power * 0.052 + offset + noise.plus(what::TEMP, gk, tk, noise::TEMP_JITTER_C)).max(20.0);
        let idle = load == Load::Idle;
        let mem_used = match gpu_rank[g] {
            Some(_) => m.mem_bytes / 100 * (88 + (noise::unit(&[w.seed, what::STATIC, gk, 8]) * 8.0) as u64),
            None => 600 << 20,
        };
        let processes = filled(
            o.processes,
            gpu_rank[g].map(|i| GpuProcess {
                pid: w.pid(ranks[i].j, ranks[i].r),
                used_mem_bytes: Some(mem_used - (500 << 20)),
            }),
        );
        *slot = GpuSample {
            index: g as u32,
            uuid: text(o.uuid, &gs.uuid),
            name: text(o.name, &spec.gpu_model),
            serial: some_text(o.serial, &gs.serial),
            pci_bus_id: some_text(o.pci_bus_id, &gs.bus_id),
            state: GpuState::Ok,
            util_gpu_pct: Some((util * 10.0).round() / 10.0),
            util_mem_pct: Some((util * 0.42 * 10.0).round() / 10.0),
            mem_total_bytes: Some(m.mem_bytes),
            mem_used_bytes: Some(mem_used),
            mem_free_bytes: Some(m.mem_bytes - mem_used),
            temp_c: Some(temp.round()),
            mem_temp_c: Some((temp + 4.0).round()),
            power_w: Some((power * 100.0).round() / 100.0),
            power_limit_w: Some(m.power_limit_w),
            energy_mj: None,
            sm_clock_mhz: Some(if idle { 345 } else { m.sm_max }),
            sm_clock_max_mhz: Some(m.sm_max),
            mem_clock_mhz: Some(m.mem_max),
            mem_clock_max_mhz: Some(m.mem_max),
            throttle_mask: Some(u64::from(idle)),
            throttle_reasons: texts(o.throttle_reasons, idle.then_some("gpu_idle")),
            // A DCGM profiling field: only where DCGM runs.
            tensor_active_pct: spec.dcgm.then_some((tensor * 10.0).round() / 10.0),
            ecc: EccCounts::default(),
            retired_pages: None,
            row_remap: None,
            pcie: Some(PcieLink {
                generation: Some(5),
                max_generation: Some(5),
                width: Some(16),
                max_width: Some(16),
                replay_count: None,
            }),
            // Filled in after the faults, below.
            nvlinks: o.nvlinks,
            processes,
            not_supported: texts(o.not_supported, ["retired_pages"]),
            clock_event_ns: o.clock_event_ns,
            nvml_error: None,
            pci_present: Some(true),
            mig: None,
        };
    }

    let spare_nics = std::mem::take(&mut spare.nics);
    let spare_host = spare.host.take().unwrap_or_default();
    let spare_disks = std::mem::take(&mut spare.disks);
    let spare_jobs = std::mem::take(&mut spare.jobs);
    let mut report = NodeReport {
        schema_version: SCHEMA_VERSION,
        node: text(spare.node, &node.name),
        agent_version: text(spare.agent_version, AGENT_VERSION),
        seq: d.seq,
        // The agent's clock, NTP-skewed.
        timestamp_ms: w.epoch_ms + ts + w.agents[n].skew_ms,
        interval_ms: w.interval_ms as u64,
        shutdown,
        urgent,
        host: None,
        gpus,
        nics: Vec::new(),
        disks: Vec::new(),
        jobs: Vec::new(),
        events: Vec::new(),
        dropped: Default::default(),
        collector_errors: Default::default(),
        // The count the agent saw at its first start, persisted.
        expected_gpus: Some(gpn as u32),
        driver_version: None,
        probes: Vec::new(),
    };
    let nics_n = spec.nics_per_node as usize;
    let mut ctx = ReportCtx {
        node: n,
        last_ts: last,
        ts,
        noise,
        report: &mut report,
        dynamic: &mut *d,
        gpu_state: vec![GpuState::Ok; gpn],
        nvlink_down: Vec::new(),
        nic_down: vec![false; nics_n],
        nic_tput: vec![1.0; nics_n],
        nic_rate: vec![NIC_RATE_GBPS; nics_n],
        nic_congested: vec![0.0; nics_n],
        fan_failed: false,
        mem_full: false,
        cpu_non_job: None,
        disk_read_only: false,
        disk_full: false,
        nvml_error: vec![None; gpn],
    };
    for &f in &w.node_faults[n] {
        w.faults[f].apply(c, &mut ctx);
    }
    let ReportCtx {
        report: _,
        dynamic: _,
        gpu_state,
        nvlink_down,
        nic_down,
        nic_tput,
        nic_rate,
        nic_congested,
        fan_failed,
        mem_full,
        cpu_non_job,
        disk_read_only,
        disk_full,
        nvml_error,
        ..
    } = ctx;
    let nic_fx = nics::NicFx { down: nic_down, tput: nic_tput, rate: nic_rate, congested: nic_congested };

    // GPU counters, then the state of GPUs that stopped answering.
    let mut sbe_events = Vec::new();
    let mut up: Vec<bool> = Vec::new();
    for (g, s) in report.gpus.iter_mut().enumerate() {
        let gd = &mut d.gpus[g];
        gd.energy_mj += s.power_w.unwrap_or(0.0) * dt_s * 1000.0;
        if noise.fires(what::SBE_TICK, nk * 64 + g as u64, d.seq, noise::SBE_TICKS_PER_GPU_HOUR, dt_s) {
            gd.sbe_vol += 1;
            gd.sbe_agg += 1;
            if gpu_state[g] == GpuState::Ok {
                let t = last + ((ts - last) as f64 * noise::unit(&[w.seed, what::SBE_TICK, nk, d.seq])) as i64;
                let maps = &w.agents[n].maps;
                sbe_events.push(faultline_agent::observe::nvml_ecc_event(g as u32, false, t.max(last + 1), maps));
            }
        }
        s.energy_mj = Some(gd.energy_mj as u64);
        s.ecc = EccCounts {
            sbe_volatile: Some(gd.sbe_vol),
            dbe_volatile: Some(gd.dbe_vol),
            sbe_aggregate: Some(gd.sbe_agg),
            dbe_aggregate: Some(gd.dbe_agg),
            sram_uncorrectable: Some(gd.sram_unc),
        };
        s.row_remap = Some(RowRemap {
            correctable: gd.remap_corr,
            uncorrectable: gd.remap_unc,
            pending: gd.remap_pending,
            failure: gd.remap_failure,
        });
        if let Some(p) = s.pcie.as_mut() {
            p.replay_count = Some(gd.pcie_replay);
        }
        // NVLink data: the job's collectives over the links that are up; nothing on a lost GPU.
        up.clear();
        up.extend((0..gd.nvl.len()).map(|l| !nvlink_down.contains(&(g, l))));
        if let (Some(i), GpuState::Ok) = (gpu_rank[g], gpu_state[g]) {
            let rh = &ranks[i];
            let peers = ranks.iter().filter(|o| o.j == rh.j && o.view == RankView::Running).count();
            let bps = nvlink::rate(rh.load, peers, w.jobs[rh.j].slowdown)
                * noise.jitter(what::TRAFFIC, nk * 64 + g as u64, tk ^ 5, 0.03);
            let rx = noise.jitter(what::TRAFFIC, nk * 64 + g as u64, tk ^ 7, 0.01);
            nvlink::advance(&mut gd.nvl_kib, &up, bps, dt_s, rx);
        }
        s.nvlinks.clear();
        s.nvlinks.extend(gd.nvl.iter().zip(&gd.nvl_kib).enumerate().map(|(l, (c, b))| NvLinkSample {
            link: l as u32,
            active: up[l],
            crc_errors: Some(c[0]),
            replay_errors: Some(c[1]),
            recovery_errors: Some(c[2]),
            tx_bytes: Some(b[0] * 1024),
            rx_bytes: Some(b[1] * 1024),
            ..Default::default()
        }));
        // Violation time grows while a reason holds (the whole window: faults hold it throughout);
        // a busy healthy GPU touches its software power cap now and then.
        let busy = s.util_gpu_pct.unwrap_or(0.0) > 50.0;
        if gd.clock_ev.len() != CLOCK_EVENT_REASONS.len() {
            for r in CLOCK_EVENT_REASONS {
                gd.clock_ev.entry(faultline_proto::CounterName::new_static(r)).or_insert(0);
            }
        }
        // Its keys are the reasons (nothing else adds any): walked in place, not looked up.
        for (r, e) in gd.clock_ev.iter_mut() {
            if s.throttle_reasons.iter().any(|x| x == r) {
                *e += (dt_s * 1e9) as u64;
            } else if r == "sw_power_cap" && busy {
                *e += (dt_s * 1e9 * 0.01 * noise.level.min(3.0)) as u64;
            }
        }
        s.clock_event_ns.clone_from(&gd.clock_ev);
        if gpu_state[g] != GpuState::Ok {
            *s = GpuSample {
                index: s.index,
                uuid: std::mem::take(&mut s.uuid),
                name: std::mem::take(&mut s.name),
                serial: s.serial.take(),
                pci_bus_id: s.pci_bus_id.take(),
                state: gpu_state[g],
                nvml_error: nvml_error[g].map(str::to_string),
                pci_present: Some(true),
                ..Default::default()
            };
        }
    }

    report.nics = nics::build(w, d, n, ts, dt_s, &ranks, &nic_fx, spare_nics);
    if w.probes.enabled {
        report.probes = probes::fill(w, &w.probes, n, ts, dt_s, &report.nics); // scenario [probes]
    }

    // Host.
    let alive = ranks.iter().filter(|r| matches!(r.view, RankView::Running | RankView::HangD)).count() as f64;
    let job_cpu = 1.7 * alive;
    let (cpu_util, non_job) = match cpu_non_job {
        Some(x) => (97.0 + 2.5 * noise::unit(&[w.seed, what::HOST, nk, tk]), x),
        None => (
            (3.0 + job_cpu + noise.plus(what::HOST, nk, tk, 1.0)).clamp(0.5, 100.0),
            (1.5 + noise.plus(what::HOST, nk, tk ^ 9, 0.5)).clamp(0.1, 100.0),
        ),
    };
    let mem_used = if mem_full {
        (HOST_MEM_BYTES as f64 * (0.985 + 0.01 * noise::unit(&[w.seed, what::HOST, nk, tk ^ 5]))) as u64
    } else {
        ((30u64 << 30) as f64 + (40u64 << 30) as f64 * alive) as u64
    };
    let load = cpu_util / 100.0 * f64::from(HOST_CPUS) * 0.9;
    let mut fans = spare_host.fans;
    slots(&mut fans, FANS.len());
    for (i, (slot, fan)) in (0u64..).zip(fans.iter_mut().zip(FANS)) {
        let o = std::mem::take(slot);
        *slot = {
            let failed = fan_failed && (i == 0 || i == 3);
            let rpm = if failed {
                0.0
            } else {
                (9_600.0
                    + 400.0 * noise::sym(&[w.seed, what::STATIC, nk, 40 + i])
                    + noise.plus(what::HOST, nk, tk ^ i, 80.0))
                .round()
            };
            FanSample { name: text(o.name, fan), rpm: Some(rpm), min_rpm: Some(1_000.0), alarm: failed }
        };
    }
    let hot = if fan_failed { 15.0 } else { 0.0 };
    // (name, °C, critical °C)
    let readings = [
        ("CPU0 Temp", 42.0 + 1.5 * alive + hot + noise.plus(what::TEMP, nk, tk ^ 11, 1.0), 100.0),
        ("CPU1 Temp", 41.0 + 1.5 * alive + hot + noise.plus(what::TEMP, nk, tk ^ 12, 1.0), 100.0),
        ("Inlet Temp", 23.0 + noise.plus(what::TEMP, nk, tk ^ 13, 0.5), 45.0),
    ];
    let mut temps = spare_host.temps;
    slots(&mut temps, readings.len());
    for (slot, (name, celsius, crit)) in temps.iter_mut().zip(readings) {
        let o = std::mem::take(slot);
        *slot = TempSample { name: text(o.name, name), celsius: celsius.round(), crit_celsius: Some(crit) };
    }
    let mut addrs = spare_host.addrs;
    slots(&mut addrs, 1);
    crate::addrs::write_host(n, &mut addrs[0]);
    report.host = Some(HostSample {
        cpu_count: Some(HOST_CPUS),
        cpu_util_pct: Some((cpu_util * 10.0).round() / 10.0),
        cpu_non_job_pct: Some((non_job * 10.0).round() / 10.0),
        load1: Some((load * 100.0).round() / 100.0),
        load5: Some((load * 0.97 * 100.0).round() / 100.0),
        load15: Some((load * 0.95 * 100.0).round() / 100.0),
        mem_total_bytes: Some(HOST_MEM_BYTES),
        mem_used_bytes: Some(mem_used.min(HOST_MEM_BYTES)),
        mem_available_bytes: Some(HOST_MEM_BYTES.saturating_sub(mem_used)),
        swap_total_bytes: Some(0),
        swap_used_bytes: Some(0),
        uptime_s: Some(((ts - d.boot_ms) / 1000).max(0) as u64),
        fans,
        temps,
        addrs,
    });
    let writing = ranks.iter().filter(|r| r.load == Load::Checkpoint).count() as f64;
    d.disk_written += ((5.0e6 + CKPT_BYTES_PER_S * writing) * dt_s) as u64;
    let mut disks = spare_disks;
    slots(&mut disks, 1);
    let o = std::mem::take(&mut disks[0]);
    disks[0] = DiskSample {
        write_bytes: Some(d.disk_written),
        device: text(o.device, naming::DISK),
        mount: some_text(o.mount, "/"),
        total_bytes: Some(DISK_BYTES),
        available_bytes: Some(if disk_full {
            0
        } else {
            (DISK_BYTES as f64 * (0.62 + 0.02 * noise::unit(&[w.seed, what::STATIC, nk, 50]))) as u64
        }),
        read_only: disk_read_only,
    };
    report.disks = disks;

    report.jobs = ranks::build(w, ts, &ranks, spare_jobs);

    // Events seen since the last report.
    let mut events = sbe_events;
    d.pending.retain(|e| {
        if e.ts_ms <= ts {
            events.push(e.clone());
            false
        } else {
            true
        }
    });
    events.sort_by_key(|e| e.ts_ms);
    for e in &mut events {
        e.ts_ms += w.epoch_ms + w.agents[n].skew_ms;
    }
    report.events = events;
    d.seq += 1;
    d.last_ts = ts;
    report
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
