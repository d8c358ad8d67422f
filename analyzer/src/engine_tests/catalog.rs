//! One engine case per catalog kind, the hard distinctions between them, and noise.

use super::*;

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
        bad_cable_on_node0_mlx5_1(w);
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
    // Kubernetes' node-monitor-grace-period is 40–50 s; we allow two intervals plus 20 s transit.
    assert!(ttd <= 50.0, "{ttd}");
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
fn one_late_or_resent_report_is_not_a_dead_node() {
    // One report held up 20 s on its way (a slow POST, or a failed push the agent re-sends from its
    // spool): the node is silent for almost three intervals, then reports as usual.
    let mut w = World::new();
    w.run(60);
    w.silent.insert(host(3));
    w.run(29);
    w.silent.remove(&host(3));
    w.run(200);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    // Silence well past the allowance is still a dead node.
    w.silent.insert(host(3));
    w.run(60);
    let (i, _) = w.expect_one("node-0003", &[], 0);
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

/// Every netdev a real node has besides its fabric ports (management NIC, storage, docker0, veth*,
/// ifb*, a port never cabled).
fn add_netdevs(r: &mut NodeReport) {
    for (name, up) in [
        ("eno1", true),
        ("eno2", false),
        ("ens10f0np0", true),
        ("ens10f1np1", true),
        ("bond0", true),
        ("docker0", false),
        ("ifb0", false),
        ("ifb1", false),
        ("veth1a2b3c4", true),
        ("veth5d6e7f8", true),
    ] {
        r.nics.push(NicSample {
            name: name.into(),
            kind: faultline_proto::NicKind::Netdev,
            fabric: Some(false),
            operstate: Some(if up { "up" } else { "down" }.into()),
            carrier: Some(up),
            ..Default::default()
        });
    }
}

#[test]
fn a_leaf_down_is_the_leaf_although_its_nodes_have_more_netdevs_than_fabric_ports() {
    let mut w = World::new();
    w.mutate(|r, _| add_netdevs(r));
    w.run(60);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    let at = w.t;
    w.mutate(|r, _| {
        let i: usize = r.node[5..].parse().unwrap();
        if i >= 4 {
            for n in r.nics.iter_mut().filter(|n| n.name.starts_with("mlx5_")) {
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
    w.run(30);
    let (i, ttd) = w.expect_one("switch:leaf-01", &["big"], at);
    assert_eq!(i.class, FaultClass::LeafSwitchDown);
    assert!(ttd <= 5.0, "{ttd}");
}

#[test]
fn leaf_congestion_is_found_from_ecn_marks_while_transmit_wait_is_saturated() {
    let mut w = World::new();
    // Long-running RoCE ports: the 32-bit transmit wait sits at its maximum; ECN marks are 64-bit.
    w.mutate(|r, _| {
        for n in &mut r.nics {
            n.counters.insert("port_xmit_wait".into(), u64::from(u32::MAX));
            n.saturated.push("port_xmit_wait".into());
            n.counters.insert("np_ecn_marked_roce_packets".into(), 0);
        }
    });
    w.run(120);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    let at = w.t;
    w.mutate(move |r, t| {
        let i: usize = r.node[5..].parse().unwrap();
        if i < 4 {
            for n in &mut r.nics {
                n.counters.insert("np_ecn_marked_roce_packets".into(), ((t - at) as u64) * 2);
            }
        }
    });
    w.slow.insert("big".into(), 1.2);
    w.run(90);
    let (i, ttd) = w.expect_one("switch:leaf-00", &["big"], at);
    assert_eq!(i.class, FaultClass::LeafCongestion);
    assert!(ttd <= 60.0, "{ttd}");
}

#[test]
fn a_leaf_with_one_node_going_down_is_the_leaf() {
    let mut w = World::new();
    let mut topo = topology();
    topo.racks = vec![
        RackDef { leaf: "leaf-00".into(), nodes: [0, 1, 2, 3, 4, 6, 7].into_iter().map(host).collect() },
        RackDef { leaf: "leaf-01".into(), nodes: vec![host(5)] },
    ];
    w.a = Analyzer::new(EngineConfig::default(), topo);
    w.run(60);
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    let at = w.t;
    w.mutate(|r, _| {
        if r.node == "node-0005" {
            for n in &mut r.nics {
                link_down(n);
            }
        }
    });
    for n in 0..NICS {
        w.event(&host(5), "nic_link_down", Some(&format!("nic:mlx5_{n}")), None, None);
    }
    w.stalled.insert("big".into());
    w.run(30);
    let (i, ttd) = w.expect_one("switch:leaf-01", &["big"], at);
    assert_eq!(i.class, FaultClass::LeafSwitchDown);
    assert!(ttd <= 5.0, "{ttd}");
}

#[test]
fn a_hang_beside_bit_errors_on_its_nic_is_two_faults() {
    // Bit errors slow a job; they do not stop it. The stall that follows them is the job's own.
    let (mut w, _) = case(60, 60, |w| {
        bad_cable_on_node0_mlx5_1(w);
    });
    assert_eq!(w.opened().len(), 1, "the bit errors first: {:?}", w.opened());
    w.stalled.insert("big".into());
    w.run(60);
    let mut got: Vec<(String, FaultClass)> = w.opened().iter().map(|i| (i.root.to_string(), i.class)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("job:big".to_string(), FaultClass::JobHang),
            ("node-0000/nic:mlx5_1".to_string(), FaultClass::CableBitErrors)
        ]
    );
}

#[test]
fn a_nic_that_fails_after_the_job_stopped_stepping_did_not_stop_it() {
    let (mut w, _) = case(60, 13, |w| {
        w.stalled.insert("big".into());
    });
    // The job has missed six steps of 2 s when one of its NICs goes down, before the job's own
    // verdict is due.
    w.mutate(|r, _| {
        if r.node == "node-0001" {
            set_nic(r, "mlx5_2", link_down);
        }
    });
    w.event(&host(1), "nic_link_down", Some("nic:mlx5_2"), None, None);
    w.run(30);
    let mut got: Vec<(String, FaultClass)> = w.opened().iter().map(|i| (i.root.to_string(), i.class)).collect();
    got.sort();
    assert_eq!(
        got,
        [("job:big".to_string(), FaultClass::JobHang), ("node-0001/nic:mlx5_2".to_string(), FaultClass::NicDown)]
    );
}

#[test]
fn a_lone_rank_that_stops_stepping_hangs_only_once_its_gpu_goes_idle() {
    // "small" cut to one rank: no collective to wait in.
    let lone = |r: &mut NodeReport, _: i64| {
        for j in r.jobs.iter_mut().filter(|j| j.job_id == "small") {
            j.ranks.truncate(1);
            j.world_size = Some(1);
        }
    };
    let mut w = World::new();
    w.mutate(lone);
    w.run(60);
    assert!(w.opened().is_empty(), "false incident during warm-up: {:?}", w.opened());
    w.stalled.insert("small".into());
    w.run(90);
    // Busy GPU: an evaluation pass or a long step, not a hang (yet).
    assert!(w.opened().is_empty(), "{:?}", w.opened());
    w.mutate(|r, _| {
        if r.node == "node-0002" {
            set_gpu(r, 0, |g| g.util_gpu_pct = Some(0.0));
        }
    });
    w.run(60);
    let (i, _) = w.expect_one("job:small", &["small"], 0);
    assert_eq!(i.class, FaultClass::JobHang);
}

/// From now on node-0000's mlx5_1 counts symbol and receive errors: a cable dropping bits.
fn bad_cable_on_node0_mlx5_1(w: &mut World) {
    let t0 = w.t;
    w.mutate(move |r, t| {
        if r.node == "node-0000" {
            set_nic(r, "mlx5_1", |n| {
                n.counters.insert("symbol_error".into(), 3 + ((t - t0) / 500) as u64);
                n.counters.insert("port_rcv_errors".into(), 1 + ((t - t0) / 1000) as u64);
            });
        }
    });
}
