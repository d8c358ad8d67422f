//! Job detectors: every rank stalled (progress, or the counters of `hang.rs`), crashes, stragglers by
//! median/MAD of `compute_ms` over the job's ranks, silent corruption (`sdc.rs`), and job step time
//! above the job's own baseline.
//!
//! How a job ended comes from its scheduler when one says so: a failed state with a non-zero exit
//! code is a crash, a completed, cancelled, timed-out or preempted job raises nothing. Without a
//! scheduler: every rank vanishing within one report interval is a job that ended (no incident); a
//! rank that vanished while its peers went on is a crash; an exit code is used where a rank or the
//! scheduler gave one (a process that vanished has none). A cgroup OOM kill of a rank's process is
//! the job's own memory limit: a crash of the job. A job that hung and then ended (PyTorch's
//! watchdog kills every rank after `TORCH_NCCL_TIMEOUT`) ended its hang, not a second fault.

use std::collections::BTreeMap;

use faultline_proto::{ComponentId, FaultClass, ProgressStatus};

use faultline_proto::SchedState;

pub use super::hang::DEFAULT_PAUSE_MAX_MS;
use super::hang::HangRules;
use super::{EVENT_HOLD_MS, SOFT_SAMPLES, Symptom, SymptomKind as K, median, median_mad};
use crate::state::{JobState, NodeState, RankState};

/// A job is stalled when no rank advanced its step for this many of its step times…
pub const STALL_STEPS: f64 = 5.0;
/// …and at least this long: 20 s is well past the "few seconds" checkpoint pauses of the catalog and
/// two report intervals, so one late report cannot fake a stall.
pub const STALL_MIN_MS: i64 = 20_000;
/// A job that already came back from a longer pause on its own may pause half as long again: its
/// own evaluation or checkpoint length, learned, with room for the variation between passes.
pub const PAUSE_LEARNED_FACTOR: f64 = 1.5;
/// A rank whose compute time is this much above the job median is a straggler candidate (the catalog's
/// slow GPU is 15–25% slower; jitter is ±2%).
pub const STRAGGLER_REL: f64 = 0.10;
/// …and this many scaled MADs above it (robust z-score).
pub const STRAGGLER_MADS: f64 = 4.0;
/// Ranks needed before peers say anything.
pub const MIN_PEERS: usize = 4;
/// Job step time this much above its own baseline is slow (catalog slowdowns are +5–50%; jitter ±2%).
pub const JOB_SLOW_REL: f64 = 0.04;
/// Nodes whose ranks all exited non-zero before the job counts as crashing without waiting for the
/// rest of its nodes to report (one node's ranks dying is a node or GPU matter).
pub const CRASH_MIN_NODES: usize = 2;
/// Scale from MAD to a normal standard deviation.
const MAD_SCALE: f64 = 1.4826;

fn last_n_min(v: &std::collections::VecDeque<f64>, n: usize) -> Option<f64> {
    if v.len() < n {
        return None;
    }
    v.iter().skip(v.len() - n).copied().reduce(f64::min)
}

/// The job's current step time: median over ranks of each rank's smallest of its last samples (the
/// minimum drops one-off spikes such as a checkpoint step).
pub fn current_step_ms(job: &JobState) -> Option<f64> {
    let mut v: Vec<f64> =
        job.ranks.values().filter(|r| r.alive()).filter_map(|r| last_n_min(&r.step_times, SOFT_SAMPLES)).collect();
    median(&mut v)
}

/// A job of one rank has no collective to hang in: while its GPU stays busy it is computing (an
/// evaluation pass, a long step), and only a GPU gone idle says its host code is stuck.
fn lone_rank_computing(job: &JobState, r: &crate::state::RankState, nodes: &BTreeMap<String, NodeState>) -> bool {
    if job.ranks.len() != 1 || r.gpus.is_empty() {
        return false;
    }
    let Some(n) = nodes.get(&r.node) else { return false };
    r.gpus
        .iter()
        .filter_map(|g| n.gpus.get(g))
        .all(|g| g.points.back().and_then(|p| p.util).is_some_and(|u| u >= super::hang::HANG_GPU_BUSY_PCT))
}

/// How long `job` may go without a step while something says it is pausing: the configured
/// allowance, or more for a job whose own pauses were longer.
pub fn pause_allowance_ms(job: &JobState, rules: &HangRules) -> i64 {
    let learned = job.ranks.values().map(|r| r.longest_pause_ms).max().unwrap_or(0);
    rules.pause_max_ms.max((learned as f64 * PAUSE_LEARNED_FACTOR) as i64)
}

/// Learn the job's healthy step time: an average that moves only while the job is not slow.
pub fn learn_baseline(job: &mut JobState) {
    let Some(s) = current_step_ms(job) else { return };
    match job.baseline_step_ms {
        None => {
            job.baseline_step_ms = Some(s);
            job.baseline_samples = 1;
        }
        Some(b) if s <= b * (1.0 + JOB_SLOW_REL) => {
            let a = if job.baseline_samples < 10 { 0.3 } else { 0.05 };
            job.baseline_step_ms = Some(b + a * (s - b));
            job.baseline_samples += 1;
        }
        _ => {}
    }
}

/// A crash symptom on the job, or, for a job that hung, the end of that hang.
fn crash(job: &JobState, onset: i64, detail: String, value: f64) -> Symptom {
    let jid = ComponentId::job(&job.id);
    match job.hung_since {
        Some(h) => Symptom::new(
            jid.clone(),
            K::JobStalled,
            h,
            format!("{jid} hung and then ended (the NCCL watchdog ends a hang by killing every rank): {detail}"),
        )
        .class(FaultClass::JobHang)
        .critical()
        .value(1.0),
        None => Symptom::new(jid, K::JobCrashed, onset, detail).class(FaultClass::JobCrash).critical().value(value),
    }
}

/// A rank that vanished (no exit code) while a peer was still seen running more than one report
/// interval later: the job did not simply end.
fn vanished_early(job: &JobState, r: &RankState) -> bool {
    let Some(g) = r.gone_ms else { return false };
    let interval = r.interval_ms.max(1);
    r.exit_code.is_none()
        && job.ranks.values().any(|p| p.gone_ms.is_none() && p.alive() && p.seen_ms > g.saturating_add(interval))
}

/// The cgroup OOM kill of one of this job's rank processes, if the kernel logged one: (time, rank, pid).
fn cgroup_oom(job: &JobState, nodes: &BTreeMap<String, NodeState>, now: i64) -> Option<(i64, u32, u32)> {
    // Ranks in order sit node by node: look each node up once, not once per rank.
    let mut held: Option<(&str, Option<&NodeState>)> = None;
    job.ranks.iter().find_map(|(k, r)| {
        let pid = r.pid?;
        let n = match held {
            Some((name, n)) if name == r.node => n,
            _ => {
                let n = nodes.get(&r.node);
                held = Some((r.node.as_str(), n));
                n
            }
        }?;
        n.cgroup_ooms.iter().find(|(t, p)| *p == pid && *t > now - EVENT_HOLD_MS).map(|(t, _)| (*t, *k, pid))
    })
}

/// Check one job. Pure: reads the job and the nodes its ranks run on.
pub fn check(job: &JobState, nodes: &BTreeMap<String, NodeState>, rules: &HangRules, now: i64, out: &mut Vec<Symptom>) {
    let jid = ComponentId::job(&job.id);
    if job.ranks.is_empty() {
        return;
    }
    // The scheduler's word on how the job ended wins over anything the processes show.
    if let (Some(st), Some(at)) = (job.sched_state, job.sched_ended_ms) {
        let code = job.sched_exit_code;
        let failed = match st {
            SchedState::Failed => code != Some(0),
            SchedState::NodeFail | SchedState::OutOfMemory => true,
            _ => false,
        };
        if failed {
            let why = match st {
                SchedState::NodeFail => "ended because a node failed".to_string(),
                SchedState::OutOfMemory => "was killed by its scheduler for exceeding its memory limit".to_string(),
                _ => format!("failed with exit code {}", code.map(|c| c.to_string()).unwrap_or("unknown".into())),
            };
            out.push(crash(job, at, format!("the scheduler says {jid} {why}"), code.unwrap_or(0) as f64));
        }
        return;
    }
    if job.ended_ms.is_some() {
        return;
    }
    if let Some((t, rank, pid)) = cgroup_oom(job, nodes, now) {
        let node = &job.ranks[&rank].node;
        out.push(crash(
            job,
            t,
            format!("the kernel's cgroup OOM killer killed rank {rank} (pid {pid}) of {jid} on {node}: the job hit its own memory limit"),
            pid as f64,
        ));
        return;
    }
    let present: Vec<_> = job.ranks.iter().filter(|(_, r)| r.gone_ms.is_none()).collect();
    let exited: Vec<_> = job.ranks.iter().filter(|(_, r)| r.exit_code.is_some() || !r.alive()).collect();
    let nonzero: Vec<_> = job.ranks.iter().filter(|(_, r)| r.exited_nonzero()).collect();
    let all_exited = exited.len() == job.ranks.len() && job.world_size.is_none_or(|w| job.ranks.len() as u32 >= w);
    // Ranks exit together when the job crashes, but their nodes report over a whole interval: once
    // every rank on at least two nodes has exited non-zero and no rank advanced since the first exit,
    // the job is crashing (one OOM-killed or lost rank stays on one node).
    let first_exit = nonzero.iter().filter_map(|(_, r)| r.exited_ms).min();
    let crash_nodes: std::collections::BTreeSet<&str> = nonzero.iter().map(|(_, r)| r.node.as_str()).collect();
    let early_crash = crash_nodes.len() >= CRASH_MIN_NODES
        && job.ranks.values().filter(|r| crash_nodes.contains(r.node.as_str())).all(|r| r.exited_nonzero())
        && first_exit.is_some_and(|t| {
            job.ranks.values().filter(|r| r.alive()).all(|r| r.last_progress_ms.is_none_or(|lp| lp <= t))
        });
    if (all_exited || early_crash) && !nonzero.is_empty() {
        let onset = nonzero.iter().filter_map(|(_, r)| r.exited_ms).min().unwrap_or(now);
        let codes: std::collections::BTreeSet<i32> = nonzero.iter().filter_map(|(_, r)| r.exit_code).collect();
        out.push(crash(
            job,
            onset,
            format!("{} of {} ranks of {jid} exited non-zero (codes {codes:?})", nonzero.len(), job.ranks.len()),
            nonzero.len() as f64,
        ));
        return;
    }
    if present.is_empty() {
        return;
    }
    // A rank that vanished while its peers went on: the job crashed (hardware under it, if any, is
    // the localizer's to find).
    let vanished: Vec<(&u32, &RankState)> = job.ranks.iter().filter(|(_, r)| vanished_early(job, r)).collect();
    if let Some(onset) = vanished.iter().filter_map(|(_, r)| r.gone_ms).min() {
        for (rank, r) in &vanished {
            out.push(Symptom::new(
                ComponentId::rank(&job.id, **rank),
                K::RankExited,
                r.gone_ms.unwrap_or(now),
                format!("rank {rank} of {jid} on {} vanished (no exit code) while its peers went on", r.node),
            ));
        }
        let names: Vec<String> = vanished.iter().map(|(k, r)| format!("rank {k} on {}", r.node)).collect();
        out.push(crash(
            job,
            onset,
            format!("{} of {jid} vanished while its other ranks kept running", names.join(", ")),
            vanished.len() as f64,
        ));
        return;
    }
    for (rank, r) in &nonzero {
        out.push(
            Symptom::new(
                ComponentId::rank(&job.id, **rank),
                K::RankExited,
                r.exited_ms.unwrap_or(now),
                format!("rank {rank} of {jid} on {} exited with code {}", r.node, r.exit_code.unwrap_or(0)),
            )
            .value(r.pid.unwrap_or(0) as f64),
        );
    }
    // Stall: no alive rank advanced for the threshold.
    let step = current_step_ms(job).or(job.baseline_step_ms).unwrap_or(0.0);
    let thr = ((STALL_STEPS * step) as i64).max(STALL_MIN_MS);
    let alive: Vec<_> = job.ranks.values().filter(|r| r.alive()).collect();
    let with_progress: Vec<_> = alive.iter().filter(|r| r.last_progress_ms.is_some()).collect();
    let pause_max = pause_allowance_ms(job, rules);
    let stalled = |r: &&&crate::state::RankState| {
        let lp = r.last_progress_ms.unwrap_or(now);
        // A checkpoint or an evaluation pauses steps for minutes; so do writes under way.
        let pausing = matches!(r.status, ProgressStatus::Checkpointing | ProgressStatus::Evaluating)
            || r.io.active_at.is_some_and(|t| t > lp)
            || nodes.get(&r.node).and_then(|n| n.disk_writes.active_at).is_some_and(|t| t > lp)
            || super::hang::still_moving(r, nodes)
            || lone_rank_computing(job, r, nodes)
            // A rank that never timed a step is still compiling or setting NCCL up (minutes).
            || (r.step_times.is_empty() && now - job.first_seen_ms < rules.warmup_ms);
        let limit = if pausing { pause_max } else { thr };
        now - lp >= limit
    };
    if !with_progress.is_empty() && with_progress.iter().all(stalled) {
        // Confirmed when every rank's node reported after the threshold passed (fresh evidence).
        let confirmed = with_progress.iter().all(|r| {
            let lp = r.last_progress_ms.unwrap_or(now);
            nodes.get(&r.node).is_some_and(|n| n.last_report_ms - lp >= thr)
        });
        let last = with_progress.iter().filter_map(|r| r.last_progress_ms).max().unwrap_or(now);
        out.push(
            Symptom::new(
                jid.clone(),
                K::JobStalled,
                last,
                format!(
                    "no rank of {jid} advanced its step for {:.0} s (step time {:.1} s)",
                    (now - last) as f64 / 1000.0,
                    step / 1000.0
                ),
            )
            .class(FaultClass::JobHang)
            .critical()
            .value(if confirmed { 1.0 } else { 0.0 }),
        );
        return;
    }
    // Hangs of jobs that report no progress (or whose progress stopped too): the counters.
    if let Some(s) = super::hang::check(job, nodes, rules, now) {
        out.push(s);
        return;
    }
    // Stragglers: compute time against the job's other ranks.
    let computes: Vec<(u32, f64)> = job
        .ranks
        .iter()
        .filter(|(_, r)| r.alive())
        .filter_map(|(k, r)| last_n_min(&r.compute, SOFT_SAMPLES).map(|c| (*k, c)))
        .collect();
    if computes.len() >= MIN_PEERS {
        let vals: Vec<f64> = computes.iter().map(|x| x.1).collect();
        if let Some((m, mad)) = median_mad(&vals) {
            let slow: Vec<&(u32, f64)> = computes
                .iter()
                .filter(|(_, c)| *c > m * (1.0 + STRAGGLER_REL) && *c - m > STRAGGLER_MADS * MAD_SCALE * mad)
                .collect();
            if slow.len() * 2 < computes.len() {
                for (rank, c) in slow {
                    let r = &job.ranks[rank];
                    out.push(
                        Symptom::new(
                            ComponentId::rank(&job.id, *rank),
                            K::Straggler,
                            now,
                            format!(
                                "rank {rank} of {jid} on {} computes in {c:.0} ms, {:.0}% above the job median {m:.0} ms",
                                r.node,
                                100.0 * (c / m - 1.0)
                            ),
                        )
                        .class(FaultClass::GpuSlow)
                        .value(*c),
                    );
                }
            }
        }
    }
    super::sdc::check(job, now, out);
    // Step time above the job's own baseline.
    if let (Some(s), Some(b)) = (current_step_ms(job), job.baseline_step_ms) {
        if job.baseline_samples >= 3 && s > b * (1.0 + JOB_SLOW_REL) {
            out.push(
                Symptom::new(
                    jid.clone(),
                    K::JobSlow,
                    now,
                    format!(
                        "{jid} steps take {s:.0} ms, {:.0}% above its baseline of {b:.0} ms",
                        100.0 * (s / b - 1.0)
                    ),
                )
                .value(s / b),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RankState;

    const NOW: i64 = 10_000_000;

    fn rank(node: &str, step_ms: f64, compute: f64, last_progress: i64) -> RankState {
        RankState {
            node: node.into(),
            gpus: vec![0],
            seen_ms: NOW - 1000,
            step: Some(100),
            last_progress_ms: Some(last_progress),
            step_times: [step_ms, step_ms, step_ms].into(),
            compute: [compute, compute, compute].into(),
            grad_norms: [1.0, 1.0, 1.0].into(),
            grads: [(98, 1.0), (99, 1.0), (100, 1.0)].into(),
            reports_loss: true,
            interval_ms: 10_000,
            ..Default::default()
        }
    }

    fn job(ranks: Vec<RankState>) -> JobState {
        JobState {
            id: "j".into(),
            ranks: ranks.into_iter().enumerate().map(|(i, r)| (i as u32, r)).collect(),
            baseline_step_ms: Some(2000.0),
            baseline_samples: 20,
            ..Default::default()
        }
    }

    fn nodes(last_report: i64) -> BTreeMap<String, NodeState> {
        ["a", "b"]
            .iter()
            .map(|n| {
                (n.to_string(), NodeState { name: n.to_string(), last_report_ms: last_report, ..Default::default() })
            })
            .collect()
    }

    fn check_case(name: &str, j: JobState, want: &[(K, f64)]) {
        let mut out = Vec::new();
        check(&j, &nodes(NOW - 500), &HangRules::default(), NOW, &mut out);
        let got: Vec<(K, f64)> =
            out.iter().map(|s| (s.kind, if s.kind == K::JobStalled { s.value } else { 0.0 })).collect();
        assert_eq!(got, want, "case {name}: {out:?}");
    }

    fn healthy(n: usize) -> Vec<RankState> {
        (0..n).map(|i| rank(if i < n / 2 { "a" } else { "b" }, 2000.0, 1500.0 + i as f64, NOW - 1000)).collect()
    }

    #[test]
    fn job_detector_table() {
        check_case("healthy", job(healthy(8)), &[]);
        let mut r = healthy(8);
        for x in &mut r {
            x.last_progress_ms = Some(NOW - 40_000);
        }
        check_case("all stalled and confirmed", job(r.clone()), &[(K::JobStalled, 1.0)]);
        for x in &mut r {
            x.status = ProgressStatus::Checkpointing;
        }
        check_case("checkpoint pause", job(r), &[]);
        let mut r = healthy(8);
        for x in &mut r {
            x.last_progress_ms = Some(NOW - 8_000);
        }
        check_case("a few seconds of pause", job(r), &[]);
        let mut r = healthy(8);
        for x in &mut r {
            x.exit_code = Some(1);
            x.exited_ms = Some(NOW - 1000);
        }
        check_case("all exited non-zero", job(r.clone()), &[(K::JobCrashed, 0.0)]);
        for x in &mut r {
            x.exit_code = Some(0);
        }
        check_case("all exited zero is a normal end", job(r), &[]);
        let mut r = healthy(8);
        r[3].exit_code = Some(-9);
        r[3].exited_ms = Some(NOW - 1000);
        check_case("one rank killed", job(r), &[(K::RankExited, 0.0)]);
        let mut r = healthy(8);
        r[5].compute = [1900.0, 1850.0, 1880.0].into();
        check_case("straggler", job(r), &[(K::Straggler, 0.0)]);
        let mut r = healthy(8);
        for (i, x) in r.iter_mut().enumerate() {
            let j = 1.0 + 0.02 * ((i % 3) as f64 - 1.0);
            x.compute = [1500.0 * j, 1500.0 / j, 1500.0].into();
        }
        check_case("±2% jitter", job(r), &[]);
        let mut r = healthy(8);
        r[2].nonfinite_since = Some(NOW - 1000);
        check_case("one rank nan", job(r), &[(K::NonFinite, 0.0)]);
        let mut r = healthy(8);
        for x in &mut r {
            x.nonfinite_since = Some(NOW - 1000);
        }
        check_case("every rank nan is the job diverging, not a GPU", job(r), &[]);
        let mut r = healthy(8);
        r[6].grads = [(98, 1.07), (99, 1.08), (100, 1.09)].into();
        check_case("grad norm mismatch held over steps", job(r), &[(K::GradMismatch, 0.0)]);
        let mut r = healthy(8);
        r[6].grads = [(98, 1.0), (99, 1.0), (100, 60.0)].into();
        check_case("one grad norm far off", job(r), &[(K::GradMismatch, 0.0)]);
        let mut r = healthy(8);
        for x in &mut r[..4] {
            x.exit_code = Some(1);
            x.exited_ms = Some(NOW - 2000);
            x.last_progress_ms = Some(NOW - 3000);
        }
        for x in &mut r[4..] {
            x.last_progress_ms = Some(NOW - 3000);
        }
        let four = [(K::RankExited, 0.0); 4];
        check_case("one node's ranks exited: not yet a crash", job(r.clone()), &four);
        for x in &mut r[4..6] {
            x.exit_code = Some(1);
            x.exited_ms = Some(NOW - 1000);
        }
        for (i, x) in r.iter_mut().enumerate() {
            x.node = ["a", "a", "a", "a", "b", "b", "c", "c"][i].into();
        }
        check_case("two nodes' ranks exited and nobody advanced: crashing", job(r), &[(K::JobCrashed, 0.0)]);
        let mut r = healthy(8);
        for x in &mut r {
            x.step_times = [2500.0, 2500.0, 2500.0].into();
        }
        check_case("job slower than its baseline", job(r), &[(K::JobSlow, 0.0)]);
        let mut r = healthy(8);
        for x in &mut r {
            x.step_times = [2000.0, 9000.0, 2000.0].into();
        }
        check_case("one checkpoint step is not slow", job(r), &[]);
    }

    #[test]
    fn how_a_job_ended() {
        use faultline_proto::SchedState;
        let ended = |st: SchedState, code: Option<i32>| {
            let mut r = healthy(8);
            for x in &mut r {
                x.gone_ms = Some(NOW - 1000);
            }
            JobState { sched_state: Some(st), sched_exit_code: code, sched_ended_ms: Some(NOW - 1000), ..job(r) }
        };
        check_case("scheduler: failed with exit 1", ended(SchedState::Failed, Some(1)), &[(K::JobCrashed, 0.0)]);
        let mut out = Vec::new();
        check(&ended(SchedState::Failed, Some(1)), &nodes(NOW), &HangRules::default(), NOW, &mut out);
        assert!(out[0].detail.contains("exit code 1"), "{}", out[0].detail);
        check_case("scheduler: completed", ended(SchedState::Completed, Some(0)), &[]);
        check_case("scheduler: cancelled", ended(SchedState::Cancelled, None), &[]);
        check_case("scheduler: node failure", ended(SchedState::NodeFail, None), &[(K::JobCrashed, 0.0)]);
        // The scheduler says failed, but the job hung first: the watchdog ended the hang.
        let hung = JobState { hung_since: Some(NOW - 700_000), ..ended(SchedState::Failed, Some(134)) };
        check_case("watchdog end of a hang", hung, &[(K::JobStalled, 1.0)]);

        // No scheduler: every rank gone within one interval is a job that ended.
        let mut r = healthy(8);
        for (i, x) in r.iter_mut().enumerate() {
            x.gone_ms = Some(NOW - 9000 + i as i64 * 1000);
            x.seen_ms = NOW - 10_000;
        }
        check_case("all ranks vanished within an interval", job(r), &[]);
        // One rank vanished, its peers seen running more than an interval later: a crash.
        let mut r = healthy(8);
        r[3].gone_ms = Some(NOW - 25_000);
        r[3].seen_ms = NOW - 35_000;
        check_case("a rank vanished while its peers went on", job(r), &[(K::RankExited, 0.0), (K::JobCrashed, 0.0)]);
        // …or vanished just now: the others may be leaving too.
        let mut r = healthy(8);
        r[3].gone_ms = Some(NOW - 1500);
        check_case("a rank vanished a moment ago", job(r), &[]);
    }

    #[test]
    fn a_cgroup_oom_kill_is_the_jobs_own_limit() {
        let mut ns = nodes(NOW - 500);
        ns.get_mut("a").unwrap().cgroup_ooms.push_back((NOW - 2000, 1002));
        let mut r = healthy(8);
        for (i, x) in r.iter_mut().enumerate() {
            x.pid = Some(1000 + i as u32);
        }
        let mut out = Vec::new();
        check(&job(r.clone()), &ns, &HangRules::default(), NOW, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].kind, out[0].component.to_string()), (K::JobCrashed, "job:j".to_string()));
        // Another process's cgroup OOM on the node is none of this job's business.
        for x in &mut r {
            x.pid = Some(5000);
        }
        let mut out = Vec::new();
        check(&job(r), &ns, &HangRules::default(), NOW, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn evaluation_and_checkpoint_writes_are_pauses() {
        let mut r = healthy(8);
        for x in &mut r {
            x.last_progress_ms = Some(NOW - 60_000);
            x.status = ProgressStatus::Evaluating;
        }
        check_case("evaluating", job(r.clone()), &[]);
        for x in &mut r {
            x.status = ProgressStatus::Running;
            x.io.update(NOW - 50_000, 0, crate::state::WRITE_FLOOR_BYTES_PER_S);
            x.io.update(NOW - 40_000, 4 << 30, crate::state::WRITE_FLOOR_BYTES_PER_S);
        }
        check_case("writing a checkpoint", job(r.clone()), &[]);
        for x in &mut r {
            x.io = Default::default();
        }
        check_case("stalled, not writing", job(r), &[(K::JobStalled, 1.0)]);
    }

    #[test]
    fn a_declared_pause_holds_for_the_allowance_and_a_longer_one_the_job_came_back_from() {
        let evaluating = |since_ms: i64, longest_pause_ms: i64| {
            let mut r = healthy(8);
            for x in &mut r {
                x.last_progress_ms = Some(NOW - since_ms);
                x.status = ProgressStatus::Evaluating;
                x.longest_pause_ms = longest_pause_ms;
            }
            job(r)
        };
        // Evaluation passes of large models run for minutes: a few seconds past five is no hang.
        check_case("evaluating 303 s", evaluating(303_000, 0), &[]);
        check_case("evaluating under the allowance", evaluating(DEFAULT_PAUSE_MAX_MS - 1000, 0), &[]);
        check_case("evaluating past the allowance", evaluating(DEFAULT_PAUSE_MAX_MS, 0), &[(K::JobStalled, 1.0)]);
        // This job's own passes take 12 minutes: it gets half as long again.
        let learned = 720_000;
        let allowance = (learned as f64 * PAUSE_LEARNED_FACTOR) as i64;
        assert_eq!(pause_allowance_ms(&evaluating(0, learned), &HangRules::default()), allowance);
        check_case("as long as its own passes", evaluating(learned + 60_000, learned), &[]);
        check_case("past its learned allowance", evaluating(allowance, learned), &[(K::JobStalled, 1.0)]);
        // The operator's allowance holds when it is the larger.
        let rules = HangRules { pause_max_ms: 3_600_000, ..HangRules::default() };
        assert_eq!(pause_allowance_ms(&evaluating(0, learned), &rules), 3_600_000);
    }

    #[test]
    fn a_job_still_warming_up_is_not_stalled() {
        let mut r = healthy(8);
        for x in &mut r {
            x.last_progress_ms = Some(NOW - 28_000);
            x.step_times.clear();
        }
        let mut j = job(r);
        j.first_seen_ms = NOW - 30_000;
        check_case("compiling", j.clone(), &[]);
        j.first_seen_ms = NOW - 600_000;
        check_case("never trained after ten minutes", j, &[(K::JobStalled, 1.0)]);
    }

    #[test]
    fn stall_is_unconfirmed_when_a_node_is_silent() {
        let mut r = healthy(8);
        for x in &mut r {
            x.last_progress_ms = Some(NOW - 40_000);
        }
        let mut out = Vec::new();
        check(&job(r), &nodes(NOW - 35_000), &HangRules::default(), NOW, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 0.0);
    }
}
