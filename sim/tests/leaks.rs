//! One test per ground-truth leak the simulator used to have: what a simulated node shows is only what
//! a real node shows, and it reaches the analyzer only through the real agent's classifier and maps.

use faultline_agent::observe::NodeMaps;
use faultline_proto::{EventSource, NicKind, NodeReport, ProcState, SchedState};
use faultline_sim::agent::NodeAgent;
use faultline_sim::faults::{Fault, Obs};
use faultline_sim::world::{Outgoing, World};
use faultline_sim::{Scenario, cluster::Cluster};

const EPOCH: i64 = 1_700_000_000_000;

fn scenario(cluster_extra: &str, rest: &str) -> Scenario {
    let src = format!(
        r#"
name = "leaks"
seed = 5
duration_s = 1500
noise = 1.0
[cluster]
nodes = 4
nodes_per_leaf = 2
{cluster_extra}
[behaviour]
warmup_s = [0, 0]
{rest}
"#
    );
    Scenario::parse(&src, "leaks.toml").unwrap()
}

fn run(sc: &Scenario, until_s: i64) -> Vec<Outgoing> {
    World::new(sc, EPOCH).run_until(until_s * 1000)
}

fn of<'a>(rs: &'a [Outgoing], node: &'a str) -> impl Iterator<Item = &'a NodeReport> + 'a {
    rs.iter().map(|o| &o.report).filter(move |r| r.node == node)
}

#[test]
fn an_xid_is_a_kernel_line_naming_a_pci_bus_id_plus_an_nvml_index_and_code() {
    let sc = scenario("", "[[fault]]\nkind = \"gpu_hbm_uncorrectable\"\ntarget = \"node-0001/gpu2\"\nat_s = 300\n");
    let c = Cluster::build(&sc);
    let f = Fault::new(0, &sc.faults[0], &c, sc.seed);
    let seen = f.events(&c, 299_000, 302_000, &|_, _| 4242);
    let bus = &c.nodes[1].gpus[2].kmsg_dev; // `0000:3a:00`
    assert!(!seen.is_empty());
    for s in &seen {
        match &s.obs {
            Obs::Kmsg(line) => {
                assert!(line.contains(&format!("PCI:{bus}")), "{line}");
                assert!(!line.contains("gpu2"), "a kernel line never names the GPU index: {line}");
            }
            Obs::NvmlXid { gpu, code } => assert_eq!((*gpu, *code > 0), (2, true)),
            Obs::NvmlEcc { gpu, .. } => assert_eq!(*gpu, 2),
            Obs::NvmlLost { .. } => panic!("an HBM error does not lose the GPU"),
            Obs::TrainLog { .. } => panic!("a fault's kernel events carry no training-log line"),
        }
    }
    // Through the agent: the GPU comes from the PCI bus id of the line …
    let rs = run(&sc, 320);
    let evs: Vec<_> = of(&rs, "node-0001").flat_map(|r| r.events.iter()).filter(|e| e.xid.is_some()).collect();
    let kmsg = evs.iter().find(|e| e.source == EventSource::Kmsg).expect("the kernel line arrives");
    assert_eq!(kmsg.component.as_deref(), Some("gpu2"));
    assert_eq!(kmsg.device.as_deref(), Some(bus.as_str()));
    assert!(evs.iter().any(|e| e.source == EventSource::Nvml && e.component.as_deref() == Some("gpu2")));
    // … so an agent whose maps say otherwise attributes it otherwise: nothing else carries the index.
    let mut other = NodeAgent::new(&c, 1, 0);
    other.maps = NodeMaps::default();
    other.maps.add_gpu(5, &c.nodes[1].gpus[2].bus_id);
    let line = seen.iter().find(|s| matches!(s.obs, Obs::Kmsg(_))).unwrap();
    let ev = other.observe(line, -1_000_000, &|_| String::new()).unwrap();
    assert_eq!(ev.component.as_deref(), Some("gpu5"));
}

#[test]
fn a_roce_link_line_names_the_netdev_and_the_agent_maps_it_to_the_ib_device() {
    let sc = scenario(
        "link_layer = \"ethernet\"",
        "[[fault]]\nkind = \"nic_down\"\ntarget = \"node-0000/nic:mlx5_1\"\nat_s = 300\nduration_s = 60\n",
    );
    let c = Cluster::build(&sc);
    let f = Fault::new(0, &sc.faults[0], &c, sc.seed);
    let seen = f.events(&c, 299_000, 302_000, &|_, _| 1);
    let Obs::Kmsg(line) = &seen[0].obs else { panic!("{seen:?}") };
    assert!(line.contains(" eth1: Link down") && !line.contains("mlx5_1"), "{line}");
    let rs = run(&sc, 320);
    let ev = of(&rs, "node-0000").flat_map(|r| r.events.iter()).find(|e| e.source == EventSource::Kmsg).unwrap();
    assert_eq!(ev.component.as_deref(), Some("nic:mlx5_1"));
}

#[test]
fn counters_have_their_widths_saturate_and_are_listed() {
    let sc = scenario(
        "",
        "[[fault]]\nkind = \"cable_bit_errors\"\ntarget = \"node-0002/nic:mlx5_4\"\nat_s = 100\nduration_s = 1000\n",
    );
    let rs = run(&sc, 1200);
    let mut saw_healthy_saturated = false;
    for r in rs.iter().map(|o| &o.report) {
        for n in r.nics.iter().filter(|n| n.is_fabric()) {
            for (name, v) in &n.counters {
                if let Some(max) = faultline_proto::counters::ib_counter_max(name) {
                    assert!(*v <= max, "{} {name} = {v} is wider than its {max}", r.node);
                    assert_eq!(
                        n.saturated.iter().any(|s| s.as_str() == name.as_str()),
                        *v == max,
                        "{} {name} = {v}",
                        r.node
                    );
                }
            }
            saw_healthy_saturated |= !(r.node == "node-0002" && n.name == "mlx5_4") && !n.saturated.is_empty();
        }
    }
    assert!(saw_healthy_saturated, "long-running healthy ports sit at their maximum too");
    let last = of(&rs, "node-0002").last().unwrap();
    let port = last.nics.iter().find(|n| n.name == "mlx5_4").unwrap();
    assert_eq!(port.counters["local_link_integrity_errors"], 15, "a 4-bit counter stops at 15");
    assert!(port.saturated.iter().any(|s| s == "local_link_integrity_errors"));
}

/// ECN marks and CNPs are RoCE congestion control: an IB port's `hw_counters/` has none of them
/// (sim/data/sysfs-infiniband-h100-sample.txt), so a congested IB leaf shows only in the 32-bit
/// `port_xmit_wait`.
#[test]
fn ecn_and_cnp_counters_exist_on_roce_ports_only() {
    let roce_only = ["np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored"];
    for (extra, want) in [("", false), ("link_layer = \"ethernet\"", true)] {
        let rs = run(&scenario(extra, ""), 30);
        let r = of(&rs, "node-0000").last().unwrap();
        for n in r.nics.iter().filter(|n| n.is_fabric()) {
            assert!(n.counters.contains_key("port_xmit_wait"), "{}", n.name);
            for c in roce_only {
                assert_eq!(n.counters.contains_key(c), want, "{extra:?} {} {c}", n.name);
            }
        }
    }
}

/// A report carries the NICs the agent reports: by default its fabric ports only; with
/// `collect_nonfabric_netdevs` (`nonfabric_netdevs` here) also the physical netdevs and the bond, as
/// `fabric: false`; never the container and traffic-shaping devices its `netdev_exclude` names.
#[test]
fn nodes_have_the_netdevs_the_agent_reports_and_no_made_up_fields() {
    let jobs = "[[job]]\nid = \"a\"\nnodes = 2\nstep_time_s = 1\n";
    let names = |extra: &str| {
        let rs = run(&scenario(extra, jobs), 60);
        let r = of(&rs, "node-0000").last().unwrap().clone();
        assert!(r.nics.iter().filter(|n| n.kind == NicKind::Infiniband).all(|n| n.fabric == Some(true)));
        assert!(r.nics.iter().all(|n| n.max_rate_gbps.is_none()), "sysfs has no maximum rate");
        assert!(r.gpus.iter().all(|g| g.tensor_active_pct.is_none()), "no DCGM, no profiling fields");
        r
    };
    let plain = names("");
    assert!(plain.nics.iter().all(|n| n.kind == NicKind::Infiniband), "the agent's default: fabric ports only");
    assert_eq!(plain.nics.len(), 8);
    let all = names("nonfabric_netdevs = true");
    for name in ["eno1", "eno2", "ens10f0np0", "ens10f1np1", "bond0"] {
        let n = all.nics.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!((n.kind, n.fabric), (NicKind::Netdev, Some(false)), "{name}");
    }
    let agent = faultline_agent::collect::fabric::NicsConfig::default();
    for n in &all.nics {
        assert!(!agent.netdev_excluded(&n.name), "{} is never reported by the agent", n.name);
    }
}

#[test]
fn an_nccl_hang_keeps_gpus_busy_flattens_nics_and_the_watchdog_kills_every_rank() {
    let sc = scenario(
        "",
        "[[job]]\nid = \"a\"\nhosts = [\"node-0000\", \"node-0002\"]\nstep_time_s = 1\nscheduler = \"slurm\"\n\
         [[fault]]\nkind = \"job_hang\"\ntarget = \"job:a\"\nat_s = 300\nduration_s = 1000\n",
    );
    let rs = run(&sc, 1000);
    let window: Vec<&NodeReport> = of(&rs, "node-0000")
        .filter(|r| (r.timestamp_ms - EPOCH) / 1000 > 320 && (r.timestamp_ms - EPOCH) / 1000 < 880)
        .collect();
    let tx = |r: &NodeReport| r.nics.iter().find(|n| n.name == "mlx5_0").unwrap().counters["port_xmit_data"];
    assert!(tx(window.last().unwrap()) - tx(window[0]) < 10_000_000, "NIC bytes go flat");
    assert!(window.iter().all(|r| r.gpus.iter().all(|g| g.util_gpu_pct.unwrap_or(0.0) > 90.0)), "NCCL spins");
    let after = of(&rs, "node-0000").find(|r| (r.timestamp_ms - EPOCH) / 1000 > 920).unwrap();
    let job = after.jobs.iter().find(|j| j.job_id == "a").unwrap();
    assert!(job.ranks.iter().all(|k| k.state == ProcState::Exited && k.exit_code.is_none()));
    assert_eq!(job.sched_state, Some(SchedState::Failed), "Slurm says why it ended");
}

#[test]
fn only_a_scheduler_knows_an_exit_code_and_most_jobs_post_no_progress() {
    let sc = scenario(
        "",
        "[[job]]\nid = \"t\"\nhosts = [\"node-0001\"]\nstep_time_s = 1\nscheduler = \"torchrun\"\nprogress_api = false\n\
         [[fault]]\nkind = \"job_crash\"\ntarget = \"job:t\"\nat_s = 300\n",
    );
    let rs = run(&sc, 330);
    let last = of(&rs, "node-0001").last().unwrap();
    let job = &last.jobs[0];
    assert_eq!((job.sched_state, job.sched_exit_code), (None, None));
    assert!(job.ranks.iter().all(|k| k.exit_code.is_none() && k.progress.is_none()));
    assert!(job.ranks.iter().all(|k| k.state == ProcState::Exited));
}

#[test]
fn reports_jitter_arrive_late_out_of_order_are_resent_and_carry_clock_skew() {
    let sc = scenario("", "[network]\nlate_share = 0.3\nlost_share = 0.1\nclock_skew_ms = 80\n");
    let rs = run(&sc, 900);
    let mut out_of_order = false;
    for node in ["node-0000", "node-0001", "node-0002", "node-0003"] {
        let seqs: Vec<u64> = of(&rs, node).map(|r| r.seq).collect();
        out_of_order |= seqs.windows(2).any(|w| w[1] < w[0]);
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        // A failed push is re-sent from the agent's spool: late, but no seq is ever skipped.
        assert!(sorted.windows(2).all(|w| w[1] == w[0] + 1), "{node}: a failed push is re-sent, not lost");
    }
    assert!(out_of_order, "late reports arrive after later ones");
    for o in &rs {
        let skew = o.report.timestamp_ms - EPOCH - o.sent_ms;
        assert!(skew.abs() <= 80, "{}: skew {skew} ms", o.report.node);
    }
}
