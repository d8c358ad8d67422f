//! Engine cases for the signals real machines give: jobs without the progress API, processes that
//! vanish without exit codes, the scheduler's word on a job, virtual and unwired NICs, a GPU missing
//! at boot, the node's power braking several GPUs, a cgroup OOM.

use super::*;

/// Make job `id` look like most real jobs: no progress API, ranks with no exit codes, and NIC and
/// NVLink byte counters that move while it trains and stop from `hang_at` (never when `None`).
fn counters_only(w: &mut World, id: &'static str, hosts: Vec<String>, hang_at: Option<i64>) {
    w.mutate(move |r, t| {
        let on = hosts.contains(&r.node);
        for j in r.jobs.iter_mut().filter(|j| j.job_id == id) {
            for rk in &mut j.ranks {
                rk.progress = None;
            }
        }
        if !on {
            return;
        }
        let moving_until = hang_at.map_or(t, |h| t.min(h));
        let bytes = (moving_until - START) as u64 * 2_000_000;
        for n in &mut r.nics {
            n.counters.insert("tx_bytes".into(), bytes);
            n.counters.insert("rx_bytes".into(), bytes);
        }
        for g in &mut r.gpus {
            g.util_gpu_pct = Some(99.0);
            for l in &mut g.nvlinks {
                l.tx_bytes = Some(bytes * 4);
                l.rx_bytes = Some(bytes * 4);
            }
        }
    });
}

#[test]
fn a_hang_without_progress_is_named_within_a_minute_and_the_watchdog_end_is_no_second_fault() {
    let mut w = World::new();
    let hosts = vec![host(0), host(1), host(4), host(5)];
    let hang_at = START + 300_000;
    counters_only(&mut w, "big", hosts, Some(hang_at));
    w.run(300);
    assert!(w.opened().is_empty(), "false incident before the hang: {:?}", w.opened());
    w.stalled.insert("big".into());
    w.run(90);
    let (i, ttd) = w.expect_one("job:big", &["big"], hang_at);
    assert_eq!(i.class, FaultClass::JobHang);
    assert!(ttd <= 60.0, "named {ttd} s after the hang");
    // TORCH_NCCL_TIMEOUT (10 min): the watchdog kills every rank at once.
    w.run(510);
    w.jobs.retain(|j| j.0 != "big");
    w.run(300);
    let opened = w.opened();
    assert_eq!(opened.len(), 1, "the watchdog's kill is the end of the hang: {opened:?}");
}

#[test]
fn a_job_without_progress_that_trains_or_ends_raises_nothing() {
    let mut w = World::new();
    counters_only(&mut w, "big", vec![host(0), host(1), host(4), host(5)], None);
    counters_only(&mut w, "small", vec![host(2)], None);
    w.run(900);
    // Every rank of a job leaves within one interval: the job ended.
    w.jobs.retain(|j| j.0 != "small");
    w.run(300);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
}

#[test]
fn a_rank_that_vanishes_while_its_peers_run_is_a_crash() {
    let (w, at) = case(120, 60, |w| {
        w.mutate(|r, _| {
            for j in r.jobs.iter_mut().filter(|j| j.job_id == "big") {
                j.ranks.retain(|rk| rk.rank != 5);
            }
        });
    });
    let (i, _) = w.expect_one("job:big", &["big"], at);
    assert_eq!(i.class, FaultClass::JobCrash);
    assert!(i.evidence.iter().any(|e| e.detail.contains("rank 5")), "{:?}", i.evidence);
}

#[test]
fn the_scheduler_says_how_a_job_ended() {
    let sched = |state: SchedState, code: i32| {
        move |w: &mut World| {
            w.jobs.retain(|j| j.0 != "small");
            w.mutate(move |r, _| {
                if r.node == host(2) {
                    r.jobs.push(JobSample {
                        job_id: "small".into(),
                        sched_state: Some(state),
                        sched_exit_code: Some(code),
                        ..Default::default()
                    });
                }
            });
        }
    };
    let (w, at) = case(120, 60, sched(SchedState::Failed, 1));
    let (i, _) = w.expect_one("job:small", &["small"], at);
    assert_eq!(i.class, FaultClass::JobCrash);
    assert!(i.evidence.iter().any(|e| e.detail.contains("exit code 1")), "{:?}", i.evidence);
    let (w, _) = case(120, 300, sched(SchedState::Completed, 0));
    assert!(w.opened().is_empty(), "{:?}", w.opened());
}

#[test]
fn a_cgroup_oom_kill_is_the_jobs_not_the_nodes() {
    let (w, at) = case(120, 30, |w| {
        let h = host(4);
        w.event(&h, "cgroup_oom_kill", None, None, Some(1000 + 9));
    });
    let (i, _) = w.expect_one("job:big", &["big"], at);
    assert_eq!(i.class, FaultClass::JobCrash);
}

#[test]
fn virtual_management_and_unwired_nics_raise_nothing() {
    let mut w = World::new();
    w.mutate(|r, t| {
        let late = t > START + 200_000;
        let netdev = |name: &str, up: bool| NicSample {
            name: name.into(),
            kind: NicKind::Netdev,
            operstate: Some(if up { "up" } else { "down" }.into()),
            carrier: Some(up),
            ..Default::default()
        };
        // docker0 and ifb0 down since boot, the management NIC going down later.
        r.nics.push(netdev("docker0", false));
        r.nics.push(netdev("ifb0", false));
        r.nics.push(netdev("eno1", !late));
        // An IB port with no cable: down since boot.
        r.nics.push(NicSample {
            name: "mlx5_9".into(),
            ib_state: Some("DOWN".into()),
            ib_phys_state: Some("Polling".into()),
            rate_gbps: Some(10.0),
            ..Default::default()
        });
        // A saturated error counter on a healthy port.
        if let Some(n) = r.nics.iter_mut().find(|n| n.name == "mlx5_1") {
            n.counters.insert("symbol_error".into(), 65_535);
        }
    });
    w.run(600);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    let nic = w.a.component(&ComponentId::nic(&host(0), "mlx5_1")).expect("known NIC");
    assert!(nic.symptoms.iter().any(|s| s.kind == "counter_saturated"), "{:?}", nic.symptoms);
}

#[test]
fn a_gpu_missing_at_boot_is_a_fault_of_the_node() {
    let mut w = World::new();
    w.mutate(|r, _| {
        if r.node == host(3) {
            r.expected_gpus = Some(GPUS + 1);
        }
    });
    w.run(30);
    let (i, ttd) = w.expect_one("node-0003", &[], START);
    assert_eq!(i.class, FaultClass::GpuLost);
    assert!(ttd <= 15.0, "{ttd}");
}

#[test]
fn the_power_brake_on_two_gpus_of_a_node_is_the_node() {
    let (w, at) = case(120, 60, |w| {
        w.mutate(|r, _| {
            if r.node == host(1) {
                for g in [0, 2] {
                    set_gpu(r, g, |x| {
                        x.throttle_reasons = vec!["hw_power_brake_slowdown".into()];
                        x.sm_clock_mhz = Some(1100);
                    });
                }
            }
        });
    });
    let (i, ttd) = w.expect_one("node-0001", &["big"], at);
    assert_eq!(i.class, FaultClass::GpuPowerBrake);
    assert!(ttd <= 60.0);
}

#[test]
fn notes_never_keep_an_incident_open() {
    let (mut w, _) = case(120, 60, |w| {
        w.mutate(|r, t| {
            if r.node == host(0) {
                set_nic(r, "mlx5_1", |n| {
                    n.counters.insert("excessive_buffer_overrun_errors".into(), 15);
                    if t < START + 180_000 {
                        link_down(n);
                    }
                });
            }
        });
    });
    assert_eq!(w.opened().len(), 1, "{:?}", w.opened());
    // The link is back; mlx5 keeps logging health lines on the port (a note) for minutes.
    for _ in 0..8 {
        w.event(&host(0), "nic_driver_error", Some("nic:mlx5_1"), None, None);
        w.run(50);
    }
    assert!(w.a.open_incidents().is_empty(), "a note kept it open: {:?}", w.a.open_incidents());
    let nic = w.a.component(&ComponentId::nic(&host(0), "mlx5_1")).expect("known NIC");
    let kinds: Vec<&str> = nic.symptoms.iter().map(|s| s.kind.as_str()).collect();
    assert!(kinds.contains(&"counter_saturated") && kinds.contains(&"nic_driver_errors"), "{kinds:?}");
    assert_eq!(w.opened().len(), 1, "{:?}", w.opened());
}

#[test]
fn a_silent_agent_whose_job_keeps_talking_is_the_agent_and_a_dead_node_stalls_it() {
    // No progress API: only the job's bytes on the other nodes tell that node-0005 still computes.
    let hosts = vec![host(0), host(1), host(4), host(5)];
    let mut w = World::new();
    counters_only(&mut w, "big", hosts.clone(), None);
    w.run(120);
    w.silent.insert(host(5));
    w.run(120);
    let (i, _) = w.expect_one("node-0005/agent", &[], 0);
    assert_eq!(i.class, FaultClass::AgentDown);
    // The node dies: every peer's collective stalls and the job's bytes go flat everywhere.
    let mut w = World::new();
    counters_only(&mut w, "big", hosts, Some(START + 120_000));
    w.run(120);
    w.silent.insert(host(5));
    w.run(120);
    let opened = w.opened();
    assert!(opened.iter().any(|i| i.root.to_string() == "node-0005" && i.class == FaultClass::NodeDown), "{opened:?}");
    assert!(!opened.iter().any(|i| i.class == FaultClass::AgentDown), "{opened:?}");
}
