//! Host detectors: heartbeat lost (silence without a goodbye), OOM kills, machine-check and EDAC
//! memory errors, fan failure, CPU saturated by processes outside the job, memory pressure, and disk
//! I/O errors or a read-only / full disk.
//!
//! The global OOM killer (`Out of memory: Killed process`) means the host ran out: the node. A memory
//! cgroup's OOM kill means a job hit its own limit: that is the job's (see `job.rs`), not the node's.
//! CPU contention needs a job on the node to contend with.

use faultline_proto::{ComponentId, FaultClass};

use super::{EVENT_HOLD_MS, SOFT_SAMPLES, Symptom, SymptomKind as K};
use crate::state::NodeState;

/// Host CPU busy at or above this percent is saturated ("near 100%" in the catalog; a busy training
/// host runs its data loaders at 30–70%).
pub const CPU_SATURATED_PCT: f64 = 90.0;
/// Of which at least this many percent of the host come from processes outside any job.
pub const CPU_NON_JOB_PCT: f64 = 40.0;
/// Host memory in use at or above this fraction is pressure (supporting evidence for an OOM kill).
pub const MEM_PRESSURE_FRACTION: f64 = 0.95;
/// Consecutive host samples with a fan alarm or a stopped fan: a fan alarm is a hardware flag, two
/// samples rule out a single bad hwmon read.
pub const FAN_SAMPLES: usize = 2;
/// Kernel classes that mean memory or CPU hardware errors.
pub const MCE_CLASSES: &[&str] = &["mce", "edac_ce", "edac_ue", "edac"];

/// Check one node's host-level signals. `heartbeat_ms` is how long silence may last before the
/// agent counts as lost (intervals × interval).
pub fn check(n: &NodeState, heartbeat_ms: i64, now: i64, out: &mut Vec<Symptom>) {
    let node = ComponentId::node(&n.name);
    if !n.shutdown && n.reports > 0 && now - n.last_recv_ms > heartbeat_ms {
        out.push(
            Symptom::new(
                node.clone(),
                K::HeartbeatLost,
                n.last_report_ms,
                format!(
                    "{} has not reported for {:.0} s (interval {:.0} s), without a shutdown notice",
                    n.name,
                    (now - n.last_recv_ms) as f64 / 1000.0,
                    n.interval_ms as f64 / 1000.0
                ),
            )
            .class(FaultClass::NodeDown)
            .critical(),
        );
    }
    let recent = |e: &&crate::state::StoredEvent| e.ts > now - EVENT_HOLD_MS;
    let mut hung = 0usize;
    let mut hung_first = None;
    for e in n.events.iter().filter(recent) {
        if e.class == faultline_proto::EventClass::HungTask {
            hung += 1;
            hung_first.get_or_insert(e.ts);
            continue;
        }
        match e.class.as_str() {
            "oom_kill" => out.push(
                Symptom::new(
                    node.clone(),
                    K::OomKill,
                    e.ts,
                    format!(
                        "kernel OOM killer killed pid {} on {}",
                        e.pid.map(|p| p.to_string()).unwrap_or("?".into()),
                        n.name
                    ),
                )
                .class(FaultClass::HostOom)
                .critical()
                .value(e.pid.unwrap_or(0) as f64),
            ),
            c if MCE_CLASSES.contains(&c) => {
                if !out.iter().any(|s| s.kind == K::Mce && s.component == node) {
                    out.push(
                        Symptom::new(
                            node.clone(),
                            K::Mce,
                            e.ts,
                            format!("{} logged a hardware memory/CPU error: {}", n.name, e.message),
                        )
                        .class(FaultClass::HostMce),
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(t) = hung_first {
        out.push(Symptom::new(
            node.clone(),
            K::HungTask,
            t,
            format!("{} kernel reports {hung} task(s) blocked for minutes (D state)", n.name),
        ));
    }
    let pts = &n.host_points;
    let last = |k: usize| pts.iter().skip(pts.len().saturating_sub(k));
    if pts.len() >= FAN_SAMPLES && last(FAN_SAMPLES).all(|p| p.fan_bad) {
        let onset = last(FAN_SAMPLES).next().map(|p| p.ts).unwrap_or(now);
        let fans: Vec<String> = n
            .host
            .iter()
            .flat_map(|h| h.fans.iter())
            .filter(|f| f.alarm || crate::state::fan_rpm_bad(f.rpm, f.min_rpm))
            .map(|f| format!("{} at {:.0} rpm", f.name, f.rpm.unwrap_or(0.0)))
            .collect();
        out.push(
            Symptom::new(node.clone(), K::FanFailure, onset, format!("{} fan failure: {}", n.name, fans.join(", ")))
                .class(FaultClass::HostFanFailure)
                .critical(),
        );
    }
    // Contention needs a training job to starve: a job on the node, and GPUs for its ranks to feed. A
    // CPU-only process that looks like a rank (a test harness, a CPU job) on a GPU-less host is not
    // one; a busy build machine must stay quiet (the CI host showed this).
    if pts.len() >= SOFT_SAMPLES
        && !n.jobs.is_empty()
        && !n.gpus.is_empty()
        && last(SOFT_SAMPLES).all(|p| {
            p.cpu.is_some_and(|c| c >= CPU_SATURATED_PCT) && p.cpu_non_job.is_some_and(|c| c >= CPU_NON_JOB_PCT)
        })
    {
        let p = pts.back().cloned().unwrap_or_default();
        let onset = last(SOFT_SAMPLES).next().map(|p| p.ts).unwrap_or(now);
        out.push(
            Symptom::new(
                node.clone(),
                K::CpuContention,
                onset,
                format!(
                    "{} CPU is {:.0}% busy, {:.0}% of it from processes outside any job",
                    n.name,
                    p.cpu.unwrap_or(0.0),
                    p.cpu_non_job.unwrap_or(0.0)
                ),
            )
            .class(FaultClass::HostCpuContention),
        );
    }
    if let Some(p) = pts.back() {
        if p.mem_used_frac.is_some_and(|m| m >= MEM_PRESSURE_FRACTION) {
            out.push(Symptom::new(
                node.clone(),
                K::MemoryPressure,
                p.ts,
                format!("{} host memory is {:.0}% used", n.name, 100.0 * p.mem_used_frac.unwrap_or(0.0)),
            ));
        }
    }
    // Disks: I/O errors from the kernel, read-only or full.
    let mut devs: std::collections::BTreeMap<String, (i64, String)> = Default::default();
    for (dev, d) in &n.disks {
        if let Some(t) = d.errors.iter().rev().find(|t| **t > now - EVENT_HOLD_MS) {
            devs.insert(dev.clone(), (*t, format!("kernel I/O errors on {dev} ({} recently)", d.errors.len())));
        } else if d.read_only {
            devs.insert(dev.clone(), (n.last_report_ms, format!("{dev} is mounted read-only")));
        } else if d.full {
            devs.insert(dev.clone(), (n.last_report_ms, format!("{dev} is full")));
        }
    }
    for e in n
        .events
        .iter()
        .filter(recent)
        .filter(|e| e.class == faultline_proto::EventClass::IoError && e.component.is_none())
    {
        if let Some(dev) = device_in_message(&e.message) {
            devs.entry(dev.clone()).or_insert((e.ts, format!("kernel I/O error on {dev}")));
        }
    }
    for (dev, (t, detail)) in devs {
        if !faultline_proto::id::valid_name(&dev) {
            continue;
        }
        out.push(
            Symptom::new(ComponentId::disk(&n.name, &dev), K::DiskError, t, format!("{}: {detail}", n.name))
                .class(FaultClass::DiskFailure)
                .critical(),
        );
    }
}

/// `blk_update_request: I/O error, dev nvme0n1, sector …` → `nvme0n1`.
pub fn device_in_message(msg: &str) -> Option<String> {
    let i = msg.find("dev ")?;
    let rest = &msg[i + 4..];
    let dev: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    (!dev.is_empty()).then_some(dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DiskState, HostPoint, StoredEvent};
    use faultline_proto::EventSource;

    const NOW: i64 = 10_000_000;

    fn node() -> NodeState {
        NodeState {
            name: "n1".into(),
            jobs: vec!["j".into()],
            gpus: [(0, Default::default())].into(),
            reports: 5,
            last_recv_ms: NOW - 5_000,
            last_report_ms: NOW - 5_000,
            interval_ms: 10_000,
            ..Default::default()
        }
    }

    fn ev(class: &str, pid: Option<u32>, msg: &str) -> StoredEvent {
        StoredEvent {
            ts: NOW - 1000,
            source: EventSource::Kmsg,
            class: faultline_proto::EventClass::parse(class).expect("a known event class"),
            component: None,
            xid: None,
            pid,
            count: 1,
            message: msg.into(),
        }
    }

    fn check_case(name: &str, n: NodeState, want: &[K]) {
        let mut out = Vec::new();
        check(&n, 30_000, NOW, &mut out);
        let got: Vec<K> = out.iter().map(|s| s.kind).collect();
        assert_eq!(got, want, "case {name}: {out:?}");
    }

    fn hp(cpu: f64, non_job: f64, fan_bad: bool) -> HostPoint {
        HostPoint { ts: NOW - 1000, cpu: Some(cpu), cpu_non_job: Some(non_job), mem_used_frac: Some(0.5), fan_bad }
    }

    #[test]
    fn host_detector_table() {
        check_case("healthy", node(), &[]);
        check_case("silent 40 s", NodeState { last_recv_ms: NOW - 40_000, ..node() }, &[K::HeartbeatLost]);
        check_case("silent after a goodbye", NodeState { last_recv_ms: NOW - 400_000, shutdown: true, ..node() }, &[]);
        check_case(
            "oom",
            NodeState { events: [ev("oom_kill", Some(4242), "Out of memory: Killed process 4242")].into(), ..node() },
            &[K::OomKill],
        );
        check_case("mce", NodeState { events: [ev("mce", None, "mce: [Hardware Error]")].into(), ..node() }, &[K::Mce]);
        check_case(
            "fan alarm twice",
            NodeState { host_points: [hp(50.0, 5.0, true), hp(50.0, 5.0, true)].into(), ..node() },
            &[K::FanFailure],
        );
        check_case(
            "fan alarm once",
            NodeState { host_points: [hp(50.0, 5.0, false), hp(50.0, 5.0, true)].into(), ..node() },
            &[],
        );
        check_case(
            "cpu contention",
            NodeState {
                host_points: [hp(99.0, 70.0, false), hp(98.0, 70.0, false), hp(99.0, 72.0, false)].into(),
                ..node()
            },
            &[K::CpuContention],
        );
        check_case(
            "no job on the node, nothing to contend with",
            NodeState {
                host_points: [hp(99.0, 70.0, false), hp(98.0, 70.0, false), hp(99.0, 72.0, false)].into(),
                jobs: vec![],
                ..node()
            },
            &[],
        );
        check_case(
            "regression: a GPU-less host with a CPU process that looks like a rank has nothing to starve",
            NodeState {
                host_points: [hp(99.0, 70.0, false), hp(98.0, 70.0, false), hp(99.0, 72.0, false)].into(),
                gpus: Default::default(),
                ..node()
            },
            &[],
        );
        check_case(
            "a cgroup OOM is the job's, not the node's",
            NodeState {
                events: [ev("cgroup_oom_kill", Some(4242), "Memory cgroup out of memory: Killed process 4242")].into(),
                ..node()
            },
            &[],
        );
        check_case(
            "a hung task is noted, never a fault alone",
            NodeState {
                events: [ev("hung_task", None, "INFO: task python:77 blocked for more than 120 seconds.")].into(),
                ..node()
            },
            &[K::HungTask],
        );
        check_case(
            "busy job is not contention",
            NodeState {
                host_points: [hp(99.0, 5.0, false), hp(98.0, 5.0, false), hp(99.0, 5.0, false)].into(),
                ..node()
            },
            &[],
        );
        let mut d = node();
        d.disks.insert("nvme0n1".into(), DiskState { errors: [NOW - 1000].into(), ..Default::default() });
        check_case("disk io errors", d, &[K::DiskError]);
        check_case(
            "io error named in the message only",
            NodeState {
                events: [ev("io_error", None, "blk_update_request: I/O error, dev nvme1n1, sector 42")].into(),
                ..node()
            },
            &[K::DiskError],
        );
        assert_eq!(device_in_message("I/O error, dev sda, sector 1").as_deref(), Some("sda"));
    }
}
