//! The simulator's physics, checked on the reports it generates: determinism, stragglers, stalls,
//! clearing, counters, noise, silence, reboots, and what each hard fault looks like to the agent.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::{GpuState, NodeReport, ProcState};
use faultline_sim::Scenario;
use faultline_sim::world::{Outgoing, World};

const EPOCH: i64 = 1_700_000_000_000;

fn world(src: &str) -> World {
    World::new(&Scenario::parse(src, "test.toml").unwrap(), EPOCH)
}

/// Every report sent up to virtual second `until_s`.
fn reports(src: &str, until_s: i64) -> Vec<Outgoing> {
    world(src).run_until(until_s * 1000)
}

fn at_s(r: &NodeReport) -> f64 {
    (r.timestamp_ms - EPOCH) as f64 / 1000.0
}

/// A two-node job on leaves 0 and 1, a one-node job, and idle nodes.
fn cluster(noise: f64, faults: &str) -> String {
    format!(
        r#"
name = "physics"
seed = 11
duration_s = 1200
interval_s = 10
noise = {noise}

[cluster]
fabric = "tor"
nodes = 8
nodes_per_leaf = 4

# These tests look at fault physics one effect at a time: every job posts progress, starts at once,
# and reports travel without loss, lateness or skew (sim/tests/leaks.rs covers those).
[behaviour]
progress_api_share = 1.0
pause_status_share = 1.0
pipeline_share = 0.0
warmup_s = [0, 0]
eval_every_s = 0
rank_skew_ms = 0

[network]
jitter_ms = 0
late_share = 0
lost_share = 0
clock_skew_ms = 0

[[job]]
id = "big"
hosts = ["node-0000", "node-0004"]
step_time_s = 2.0

[[job]]
id = "solo"
hosts = ["node-0001"]
step_time_s = 1.0
{faults}
"#
    )
}

/// (rank → progress) of a job in the reports of a time window.
fn rank_samples<'a>(
    rs: &'a [Outgoing],
    job: &str,
    from_s: f64,
    to_s: f64,
) -> Vec<(&'a NodeReport, &'a faultline_proto::RankSample)> {
    rs.iter()
        .map(|o| &o.report)
        .filter(|r| at_s(r) >= from_s && at_s(r) < to_s)
        .flat_map(|r| r.jobs.iter().filter(|j| j.job_id == job).flat_map(move |j| j.ranks.iter().map(move |k| (r, k))))
        .collect()
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    assert!(!v.is_empty(), "no samples");
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn same_seed_same_reports_other_seed_other_reports() {
    let src = cluster(
        1.0,
        "[[fault]]\nkind = \"nic_flap\"\ntarget = \"node-0000/nic:mlx5_1\"\nat_s = 100\nduration_s = 60\n",
    );
    let a: Vec<String> = reports(&src, 240).iter().map(|o| serde_json::to_string(&o.report).unwrap()).collect();
    let b: Vec<String> = reports(&src, 240).iter().map(|o| serde_json::to_string(&o.report).unwrap()).collect();
    assert!(a.len() > 100);
    assert_eq!(a, b, "same scenario, same seed: byte-identical reports");
    let c: Vec<String> = reports(&src.replace("seed = 11", "seed = 12"), 240)
        .iter()
        .map(|o| serde_json::to_string(&o.report).unwrap())
        .collect();
    assert_ne!(a, c);
}

#[test]
fn a_straggler_slows_every_rank_but_only_the_root_shows_the_cause() {
    let src = cluster(
        1.0,
        "[[fault]]\nkind = \"gpu_thermal_throttle\"\ntarget = \"node-0004/gpu2\"\nat_s = 400\nduration_s = 300\n",
    );
    let rs = reports(&src, 1000);
    let before = rank_samples(&rs, "big", 200.0, 390.0);
    let during = rank_samples(&rs, "big", 460.0, 690.0);
    let after = rank_samples(&rs, "big", 800.0, 1000.0);
    let step = |v: &[(&NodeReport, &faultline_proto::RankSample)], rank: u32| {
        mean(v.iter().filter(|(_, k)| k.rank == rank).map(|(_, k)| k.progress.as_ref().unwrap().step_time_ms.unwrap()))
    };
    let compute = |v: &[(&NodeReport, &faultline_proto::RankSample)], rank: u32| {
        mean(v.iter().filter(|(_, k)| k.rank == rank).map(|(_, k)| k.progress.as_ref().unwrap().compute_ms.unwrap()))
    };
    // The root is rank 10 (node-0004 is the job's second host, gpu2 its third rank there).
    let root = 10;
    for rank in 0..16 {
        let ratio = step(&during, rank) / step(&before, rank);
        assert!((1.15..1.35).contains(&ratio), "rank {rank} step time ×{ratio:.2} during the throttle");
        let back = step(&after, rank) / step(&before, rank);
        assert!((0.95..1.05).contains(&back), "rank {rank} step time ×{back:.2} after it cleared");
        let c = compute(&during, rank) / compute(&before, rank);
        if rank == root {
            assert!(c > 1.2, "the root's compute_ms grows (×{c:.2})");
        } else {
            assert!((0.95..1.05).contains(&c), "rank {rank}'s compute_ms stays (×{c:.2})");
        }
    }
    // Only the root GPU shows throttling; waiting peers' utilization drops.
    for o in &rs {
        let r = &o.report;
        let t = at_s(r);
        if !(460.0..690.0).contains(&t) {
            continue;
        }
        for g in &r.gpus {
            let is_root = r.node == "node-0004" && g.index == 2;
            let throttled = g.throttle_reasons.iter().any(|x| x.contains("thermal"));
            assert_eq!(throttled, is_root, "{} gpu{} at {t}", r.node, g.index);
            if is_root {
                assert!(g.temp_c.unwrap() >= 87.0);
                assert!(g.sm_clock_mhz.unwrap() < g.sm_clock_max_mhz.unwrap() * 8 / 10);
            }
        }
    }
    let util = |from: f64, to: f64, node: &str, gpu: u32| {
        mean(
            rs.iter()
                .map(|o| &o.report)
                .filter(|r| r.node == node && (from..to).contains(&at_s(r)))
                .map(|r| r.gpus[gpu as usize].util_gpu_pct.unwrap()),
        )
    };
    assert!(util(460.0, 690.0, "node-0000", 5) < util(200.0, 390.0, "node-0000", 5) - 10.0, "peers wait");
    // The one-node job is untouched.
    let solo_before = mean(
        rank_samples(&rs, "solo", 200.0, 390.0).iter().map(|(_, k)| k.progress.as_ref().unwrap().step_time_ms.unwrap()),
    );
    let solo_during = mean(
        rank_samples(&rs, "solo", 460.0, 690.0).iter().map(|(_, k)| k.progress.as_ref().unwrap().step_time_ms.unwrap()),
    );
    assert!((solo_during / solo_before - 1.0).abs() < 0.03);
}

#[test]
fn a_lost_gpu_stalls_every_rank_until_it_clears() {
    let src =
        cluster(0.0, "[[fault]]\nkind = \"gpu_lost\"\ntarget = \"node-0000/gpu3\"\nat_s = 300\nduration_s = 200\n");
    let rs = reports(&src, 800);
    // The XID arrives at once, in an urgent report.
    let urgent: Vec<&NodeReport> =
        rs.iter().map(|o| &o.report).filter(|r| r.urgent && r.events.iter().any(|e| e.xid == Some(79))).collect();
    assert_eq!(urgent.len(), 1);
    assert_eq!(urgent[0].node, "node-0000");
    assert!((300.0..301.0).contains(&at_s(urgent[0])), "urgent push at {}", at_s(urgent[0]));
    let ev = &urgent[0].events[0];
    assert_eq!(ev.component.as_deref(), Some("gpu3"));
    assert!(ev.message.contains("NVRM: Xid (PCI:0000:5d:00): 79"), "{}", ev.message);
    // Lost in every report while it lasts; the other GPUs are fine.
    for r in rs.iter().map(|o| &o.report).filter(|r| r.node == "node-0000" && (301.0..499.0).contains(&at_s(r))) {
        // GPU_IS_LOST, or (as many fallen-off GPUs answer) `Unknown Error`.
        assert_ne!(r.gpus[3].state, GpuState::Ok);
        assert!(matches!(r.gpus[3].nvml_error.as_deref(), Some("GPU is lost" | "Unknown Error")));
        assert_eq!(r.gpus[3].util_gpu_pct, None);
        assert!(r.gpus.iter().filter(|g| g.index != 3).all(|g| g.state == GpuState::Ok));
    }
    // Every rank on both nodes stops advancing.
    let steps = |from: f64, to: f64| -> BTreeSet<u64> {
        rank_samples(&rs, "big", from, to).iter().map(|(_, k)| k.progress.as_ref().unwrap().step).collect()
    };
    let stalled = steps(320.0, 499.0);
    assert_eq!(stalled.len(), 1, "one step value on every rank while stalled: {stalled:?}");
    assert!(steps(520.0, 800.0).iter().all(|s| s > stalled.iter().next().unwrap()), "progress resumes");
    // Peers spin in NCCL at 100%.
    let peer =
        rs.iter().map(|o| &o.report).find(|r| r.node == "node-0004" && (350.0..360.0).contains(&at_s(r))).unwrap();
    assert!(peer.gpus.iter().all(|g| g.util_gpu_pct == Some(100.0)));
    // After the restart the ranks have new pids.
    let pid = |from: f64, to: f64| {
        rank_samples(&rs, "big", from, to).iter().find(|(_, k)| k.rank == 0).and_then(|(_, k)| k.pid).unwrap()
    };
    assert_ne!(pid(200.0, 290.0), pid(600.0, 700.0));
    // The one-node job on node-0001 never noticed.
    assert!(
        rank_samples(&rs, "solo", 320.0, 499.0)
            .iter()
            .map(|(_, k)| k.progress.as_ref().unwrap().step)
            .collect::<BTreeSet<_>>()
            .len()
            > 10
    );
}

#[test]
fn counters_never_go_back_within_a_boot_and_healthy_ports_carry_old_errors() {
    let src = cluster(
        1.0,
        "[[fault]]\nkind = \"cable_bit_errors\"\ntarget = \"node-0000/nic:mlx5_2\"\nat_s = 200\nduration_s = 300\n\
         [[fault]]\nkind = \"node_down\"\ntarget = \"node-0005\"\nat_s = 300\nduration_s = 200\n\
         [[fault]]\nkind = \"nic_flap\"\ntarget = \"node-0004/nic:mlx5_0\"\nat_s = 600\nduration_s = 200\n\
         [[fault]]\nkind = \"gpu_ecc_sbe_storm\"\ntarget = \"node-0001/gpu1\"\nat_s = 100\nduration_s = 300\n",
    );
    let rs = reports(&src, 1000);
    let mut last: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new(); // (node, counter) → (uptime, value)
    let mut checked = 0;
    let mut nonzero_healthy = 0;
    for o in &rs {
        let r = &o.report;
        let up = r.host.as_ref().unwrap().uptime_s.unwrap();
        let mut vals: Vec<(String, u64)> = Vec::new();
        for n in r.nics.iter().filter(|n| n.is_fabric()) {
            for (k, v) in &n.counters {
                vals.push((format!("{}/{k}", n.name), *v));
            }
            vals.push((format!("{}/carrier_changes", n.name), n.carrier_changes.unwrap()));
            if n.counters["port_rcv_errors"] > 0 && n.name != "mlx5_2" {
                nonzero_healthy += 1;
            }
        }
        for g in &r.gpus {
            if g.state != GpuState::Ok {
                continue;
            }
            vals.push((format!("gpu{}/energy", g.index), g.energy_mj.unwrap()));
            vals.push((format!("gpu{}/sbe_agg", g.index), g.ecc.sbe_aggregate.unwrap()));
            vals.push((format!("gpu{}/replay", g.index), g.pcie.as_ref().unwrap().replay_count.unwrap()));
            for l in &g.nvlinks {
                vals.push((format!("gpu{}/nvl{}", g.index, l.link), l.crc_errors.unwrap()));
            }
        }
        for (k, v) in vals {
            let key = (r.node.clone(), k);
            if let Some((u0, v0)) = last.get(&key) {
                if up >= *u0 {
                    assert!(v >= *v0, "{key:?} went from {v0} to {v} within one boot");
                    checked += 1;
                }
            }
            last.insert(key, (up, v));
        }
    }
    assert!(checked > 10_000, "{checked}");
    assert!(nonzero_healthy > 100, "healthy ports show small non-zero error counters");
    // The cable's symbol errors rise fast; healthy ports' barely move.
    let sym = |node: &str, nic: &str, t: f64| {
        rs.iter()
            .map(|o| &o.report)
            .rfind(|r| r.node == node && at_s(r) <= t)
            .map(|r| r.nics.iter().find(|n| n.name == nic).unwrap().counters["symbol_error"])
            .unwrap()
    };
    assert!(sym("node-0000", "mlx5_2", 480.0) - sym("node-0000", "mlx5_2", 220.0) > 2_000);
    assert!(sym("node-0000", "mlx5_3", 480.0) - sym("node-0000", "mlx5_3", 220.0) <= 2);
}

#[test]
fn zero_noise_is_clean_and_steady() {
    let rs = reports(&cluster(0.0, ""), 600);
    assert!(rs.iter().all(|o| o.report.events.is_empty()), "no events without faults or noise");
    let steps: BTreeSet<u64> = rank_samples(&rs, "big", 0.0, 600.0)
        .iter()
        .map(|(_, k)| k.progress.as_ref().unwrap().step_time_ms.unwrap().to_bits())
        .collect();
    assert_eq!(steps.len(), 1, "one step time");
}

#[test]
fn noise_stays_within_the_catalog_bounds() {
    let rs = reports(&cluster(1.0, "").replace("duration_s = 1200", "duration_s = 3000"), 3000);
    let st: Vec<f64> = rank_samples(&rs, "big", 100.0, 3000.0)
        .iter()
        .map(|(_, k)| k.progress.as_ref().unwrap().step_time_ms.unwrap())
        .collect();
    for s in &st {
        assert!((1950.0..2050.0).contains(s), "±2% step jitter, got {s}");
    }
    let ckpt = rank_samples(&rs, "big", 0.0, 3000.0)
        .iter()
        .filter(|(_, k)| k.progress.as_ref().unwrap().status == faultline_proto::ProgressStatus::Checkpointing)
        .count();
    assert!(ckpt > 0, "checkpoint pauses show");
}

#[test]
fn a_leaf_going_down_takes_every_nic_behind_it_in_the_same_second() {
    let src = cluster(
        1.0,
        "[[fault]]\nkind = \"leaf_switch_down\"\ntarget = \"switch:leaf-01\"\nat_s = 300\nduration_s = 120\n",
    );
    let rs = reports(&src, 600);
    let downs: Vec<(String, i64, faultline_proto::EventClass)> = rs
        .iter()
        .flat_map(|o| o.report.events.iter().map(move |e| (o.report.node.clone(), e.ts_ms, e.class)))
        .filter(|(_, _, c)| *c == faultline_proto::EventClass::NicLinkDown)
        .collect();
    assert_eq!(downs.len(), 4 * 8, "every NIC of leaf-01's four nodes");
    assert!(downs.iter().all(|(n, _, _)| ["node-0004", "node-0005", "node-0006", "node-0007"].contains(&n.as_str())));
    let (lo, hi) = (downs.iter().map(|d| d.1).min().unwrap(), downs.iter().map(|d| d.1).max().unwrap());
    assert!(hi - lo < 1000, "same second: {lo}..{hi}");
    for r in rs.iter().map(|o| &o.report).filter(|r| (310.0..415.0).contains(&at_s(r))) {
        let behind = ["node-0004", "node-0005", "node-0006", "node-0007"].contains(&r.node.as_str());
        for n in r.nics.iter().filter(|n| n.is_fabric()) {
            assert_eq!(n.ib_state.as_deref() == Some("DOWN"), behind, "{} {}", r.node, n.name);
        }
    }
    // The two-node job stops; the one-node job on leaf-00 goes on.
    let big: BTreeSet<u64> =
        rank_samples(&rs, "big", 310.0, 415.0).iter().map(|(_, k)| k.progress.as_ref().unwrap().step).collect();
    assert!(big.len() <= 2, "{big:?}");
}

#[test]
fn node_down_is_silence_without_goodbye_and_agent_down_leaves_jobs_running() {
    let src = cluster(
        0.0,
        "[[fault]]\nkind = \"node_down\"\ntarget = \"node-0001\"\nat_s = 300\nduration_s = 300\n\
         [[fault]]\nkind = \"agent_down\"\ntarget = \"node-0004/agent\"\nat_s = 300\nduration_s = 300\n",
    );
    let rs = reports(&src, 1000);
    let of = |node: &str| rs.iter().map(|o| &o.report).filter(|r| r.node == node).collect::<Vec<_>>();
    for node in ["node-0001", "node-0004"] {
        let v = of(node);
        assert!(v.iter().all(|r| !r.shutdown), "no goodbye");
        assert!(!v.iter().any(|r| (301.0..600.0).contains(&at_s(r))), "{node} silent while down");
        assert!(v.iter().any(|r| at_s(r) > 600.0), "{node} back after it cleared");
    }
    // The rebooted node starts a new boot (uptime small, counters from zero); the agent restart does not.
    let back =
        |node: &str| of(node).into_iter().find(|r| at_s(r) > 600.0).unwrap().host.clone().unwrap().uptime_s.unwrap();
    assert!(back("node-0001") < 120);
    assert!(back("node-0004") > 86_400);
    // seq goes on after the restart.
    let seqs: Vec<u64> = of("node-0004").iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // The agent is gone but job "big" keeps progressing on node-0000.
    let steps: BTreeSet<u64> =
        rank_samples(&rs, "big", 310.0, 590.0).iter().map(|(_, k)| k.progress.as_ref().unwrap().step).collect();
    assert!(steps.len() > 10, "big progresses while node-0004's agent is away");
}

#[test]
fn software_faults_have_no_hardware_signal() {
    let src = cluster(
        0.0,
        "[[fault]]\nkind = \"job_hang\"\ntarget = \"job:big\"\nat_s = 200\nduration_s = 200\n\
         [[fault]]\nkind = \"job_crash\"\ntarget = \"job:solo\"\nat_s = 200\nduration_s = 200\n",
    );
    let rs = reports(&src, 700);
    assert!(rs.iter().all(|o| o.report.events.is_empty()));
    let hang = rank_samples(&rs, "big", 220.0, 399.0);
    assert_eq!(hang.iter().map(|(_, k)| k.progress.as_ref().unwrap().step).collect::<BTreeSet<_>>().len(), 1);
    for (r, k) in &hang {
        assert_eq!(k.state, ProcState::Running);
        assert_eq!(r.gpus[k.gpus[0] as usize].util_gpu_pct, Some(100.0), "NCCL busy-spin");
    }
    let crash = rank_samples(&rs, "solo", 201.0, 399.0);
    assert!(!crash.is_empty());
    for (r, k) in &crash {
        assert_eq!(k.state, ProcState::Exited);
        assert_eq!(k.exit_code, None, "the agent is not the rank's parent: it never learns the code");
        assert_eq!(r.jobs.iter().find(|j| j.job_id == "solo").unwrap().sched_exit_code, Some(1), "Slurm knows it");
    }
    // Every rank exited in the same report.
    let first = rs.iter().map(|o| &o.report).find(|r| r.node == "node-0001" && at_s(r) > 200.0).unwrap();
    assert!(first.jobs[0].ranks.iter().all(|k| k.state == ProcState::Exited));
    // Restarted after the fault cleared.
    assert!(rank_samples(&rs, "solo", 420.0, 700.0).iter().all(|(_, k)| k.state == ProcState::Running));
}

#[test]
fn oom_kills_a_rank_pid_and_fills_memory() {
    let src = cluster(0.0, "[[fault]]\nkind = \"host_oom\"\ntarget = \"node-0001\"\nat_s = 200\nduration_s = 100\n");
    let rs = reports(&src, 400);
    let r = rs
        .iter()
        .map(|o| &o.report)
        .find(|r| r.events.iter().any(|e| e.class == faultline_proto::EventClass::OomKill))
        .unwrap();
    let ev = r
        .events
        .iter()
        .find(|e| e.class == faultline_proto::EventClass::OomKill && e.message.contains("Killed process"))
        .unwrap();
    assert!(r.urgent);
    assert!(ev.message.contains(&format!("Out of memory: Killed process {} (python)", ev.pid.unwrap())));
    let killed = r.jobs[0].ranks.iter().find(|k| k.pid == ev.pid).expect("the killed pid is a rank's");
    assert_eq!(killed.state, ProcState::Exited);
    assert_eq!(killed.exit_code, None, "only a scheduler reports exit codes");
    let h = r.host.as_ref().unwrap();
    assert!(h.mem_used_bytes.unwrap() as f64 > 0.98 * h.mem_total_bytes.unwrap() as f64);
}

#[test]
fn planned_reboots_say_goodbye_and_come_back() {
    let src = r#"
name = "reboots"
seed = 5
duration_s = 7200
noise = 10
[cluster]
nodes = 64
"#;
    let mut w = world(src);
    assert!(!w.reboots.is_empty(), "noise 10 on 64 idle nodes for 2 h schedules reboots");
    let rb = w.reboots[0];
    let name = w.cluster.nodes[rb.node].name.clone();
    let mut mine = Vec::new();
    while w.t_ms < 7200 * 1000 {
        mine.extend(w.step().into_iter().map(|o| o.report).filter(|r| r.node == name));
    }
    let bye = mine.iter().position(|r| r.shutdown).expect("a last report with shutdown: true");
    let next = &mine[bye + 1];
    let gap = next.timestamp_ms - mine[bye].timestamp_ms;
    assert!(gap >= 180_000, "back minutes later, not {gap} ms");
    assert!(next.host.as_ref().unwrap().uptime_s.unwrap() < 120, "a fresh boot");
    assert_eq!(next.seq, mine[bye].seq + 1);
}

#[test]
fn a_failed_push_is_resent_from_the_spool_not_lost() {
    // Half the regular pushes fail on the way. A real agent spools each one and re-sends it after
    // its back-off: every seq arrives, some of them seconds late, none is skipped.
    let src = cluster(1.0, "").replace("lost_share = 0\n", "lost_share = 0.5\n");
    let out = reports(&src, 300);
    let mut seqs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut late = 0;
    for o in &out {
        seqs.entry(o.report.node.clone()).or_default().insert(o.report.seq);
        if o.arrival_ms - o.sent_ms >= faultline_sim::world::RETRY_MS.0 as i64 {
            late += 1;
        }
    }
    assert!(late > 10, "{late} re-sent reports");
    for (node, s) in &seqs {
        let (lo, hi) = (*s.first().unwrap(), *s.last().unwrap());
        assert_eq!(s.len() as u64, hi - lo + 1, "{node} skipped a seq: {s:?}");
        assert!(s.len() >= 25, "{node}: {} reports in 300 s", s.len());
    }
}

/// Sum of a node's NVLink data bytes (tx + rx, every link of every GPU).
fn nvlink_bytes(r: &NodeReport) -> u64 {
    r.gpus.iter().flat_map(|g| &g.nvlinks).map(|l| l.tx_bytes.unwrap_or(0) + l.rx_bytes.unwrap_or(0)).sum()
}

#[test]
fn nvlink_bytes_move_with_training_and_stop_in_a_hung_collective() {
    let src = cluster(1.0, "[[fault]]\nkind = \"job_hang\"\ntarget = \"job:solo\"\nat_s = 600\nduration_s = 300\n");
    let rs = reports(&src, 900);
    let node1: Vec<&NodeReport> = rs.iter().map(|o| &o.report).filter(|r| r.node == "node-0001").collect();
    let rate = |from: f64, to: f64| {
        let w: Vec<&&NodeReport> = node1.iter().filter(|r| at_s(r) >= from && at_s(r) <= to).collect();
        let (a, b) = (w.first().unwrap(), w.last().unwrap());
        (nvlink_bytes(b) - nvlink_bytes(a)) as f64 / (at_s(b) - at_s(a))
    };
    let (train, hung) = (rate(300.0, 590.0), rate(630.0, 890.0));
    assert!(train > 1e9, "training moves GB/s over NVLink: {train}");
    assert_eq!(hung, 0.0, "a hung collective moves nothing");
    let busy = node1.iter().filter(|r| at_s(r) > 630.0).all(|r| r.gpus.iter().all(|g| g.util_gpu_pct > Some(90.0)));
    assert!(busy, "the hung job's GPUs spin");
}
