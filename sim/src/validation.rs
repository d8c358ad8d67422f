//! Check before delivery, simulated: what the validators faultline runs before it resumes a node it
//! drained (`[remediation.validation]`, analyzer/src/remediate/validate.rs) say about each faulty
//! node, once while its fault is active and once after it cleared. The two built-in checks
//! (`gpu_count`, `fabric_ports`) are the analyzer's own code on the analyzer's own state. The NCCL
//! all-reduce test (`all_reduce_perf -b 128M -e 128M -g 8 -c 1` over the node's GPUs) is emulated
//! from the node's true state, with its output in nccl-tests' format, and judged as the analyzer
//! judges a command: by its exit status.
//!
//! A good check keeps a node drained while its fault lasts (when the fault is one a check can see)
//! and lets it go once the fault is gone; `ValidationRow`s say which happened.

use faultline_analyzer::Analyzer;
use faultline_analyzer::remediate::config::{Check, CheckSpec};
use faultline_analyzer::remediate::validate::{self, NodeFacts};
use faultline_proto::{ComponentId, FaultClass};
use serde::{Deserialize, Serialize};

use crate::scenario::{FaultSpec, Scenario};

/// The "during" check runs this long after onset, or halfway through a shorter fault: long enough
/// for the node's reports to show the fault.
pub const DURING_AFTER_MS: i64 = 60_000;
/// The "after" check runs this long after the fault cleared: two report intervals at the default
/// 10 s, so the node's reports show it healthy again.
pub const AFTER_CLEAR_MS: i64 = 30_000;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub name: String,
    pub passed: bool,
    pub summary: String,
}

/// The validators' verdict on one faulty node at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRow {
    /// Index of the fault in the scenario.
    pub fault: usize,
    pub kind: FaultClass,
    pub node: String,
    /// `during` (the fault is active) or `after` (it cleared).
    pub phase: String,
    /// Virtual seconds.
    pub at_s: f64,
    /// Every check passed: the node would be resumed.
    pub passed: bool,
    pub checks: Vec<CheckRow>,
}

/// When to check each fault that takes a node out of service: (virtual ms, fault index, phase).
pub fn schedule(sc: &Scenario) -> Vec<(i64, usize, &'static str)> {
    let mut out = Vec::new();
    for (i, f) in sc.faults.iter().enumerate() {
        if !faultline_analyzer::remediate::policy::drains(f.kind) || host_of(f).is_none() {
            continue;
        }
        let at = (f.at_s * 1000.0) as i64;
        let lasts = if f.duration_s > 0.0 { (f.duration_s * 1000.0) as i64 } else { i64::MAX / 4 };
        out.push((at + DURING_AFTER_MS.min(lasts / 2), i, "during"));
        if let Some(c) = f.clear_s(sc.duration_s) {
            let t = (c * 1000.0) as i64 + AFTER_CLEAR_MS;
            if (t as f64) < sc.duration_s * 1000.0 {
                out.push((t, i, "after"));
            }
        }
    }
    out.sort_unstable();
    out
}

fn host_of(f: &FaultSpec) -> Option<&str> {
    match &f.target {
        ComponentId::Switch { .. } | ComponentId::Job { .. } | ComponentId::Rank { .. } => None,
        t => t.host(),
    }
}

fn active(f: &FaultSpec, t_ms: i64, run_s: f64) -> bool {
    let t = t_ms as f64 / 1000.0;
    f.at_s <= t && f.clear_s(run_s).is_none_or(|c| t < c)
}

/// The validators' verdict on fault `i`'s node at virtual `t_ms`.
pub fn check(an: &Analyzer, sc: &Scenario, i: usize, phase: &str, t_ms: i64) -> Option<ValidationRow> {
    let f = sc.faults.get(i)?;
    let node = host_of(f)?.to_string();
    let facts = an.node_state(&node).map(|n| NodeFacts::from_state(n, |nic| an.expected_rate(&node, nic)));
    let builtins = [
        Check { name: "gpu_count".into(), spec: CheckSpec::GpuCount { expected: None } },
        Check { name: "fabric_ports".into(), spec: CheckSpec::FabricPorts { rate_gbps: None } },
    ];
    let mut checks: Vec<CheckRow> = builtins
        .iter()
        .filter_map(|c| validate::builtin(c, facts.as_ref()))
        .map(|o| CheckRow { name: o.name, passed: o.passed, summary: o.summary })
        .collect();
    let (status, out) = all_reduce(sc, &node, t_ms);
    // The verdict line when the test ran (`# Out of bounds values : N OK|FAILED`), else its last words.
    let last = out
        .lines()
        .find(|l| l.starts_with("# Out of bounds"))
        .or_else(|| out.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim_start_matches('#')
        .trim()
        .to_string();
    checks.push(CheckRow {
        name: "nccl_allreduce".into(),
        passed: status == 0,
        summary: format!("exit status {status}: {last}"),
    });
    let passed = checks.iter().all(|c| c.passed);
    Some(ValidationRow {
        fault: i,
        kind: f.kind,
        node,
        phase: phase.to_string(),
        at_s: t_ms as f64 / 1000.0,
        passed,
        checks,
    })
}

/// What `all_reduce_perf -b 128M -e 128M -g 8 -c 1` prints on `node` at `t_ms`, and its exit status.
/// Wrong results (a GPU corrupting collectives) show in the `#wrong` columns and fail the run; a
/// lost, hung or memory-faulted GPU or a dead node stops it before it measures anything.
pub fn all_reduce(sc: &Scenario, node: &str, t_ms: i64) -> (i32, String) {
    let here: Vec<&FaultSpec> =
        sc.faults.iter().filter(|f| f.target.host() == Some(node) && active(f, t_ms, sc.duration_s)).collect();
    let kinds = |k: &[FaultClass]| here.iter().find(|f| k.contains(&f.kind));
    if kinds(&[FaultClass::NodeDown]).is_some() {
        return (
            255,
            format!("srun: error: Task launch for StepId failed on node {node}: Communication connection failure"),
        );
    }
    if let Some(f) = kinds(&[
        FaultClass::GpuLost,
        FaultClass::GpuHbmUncorrectable,
        FaultClass::GpuSramUncorrectable,
        FaultClass::GpuGspHang,
    ]) {
        let dev = match &f.target {
            ComponentId::Gpu { index, .. } => *index,
            _ => 0,
        };
        return (
            1,
            format!(
                "{node}: Test CUDA failure common.cu:1032 'unspecified launch failure'\n .. {node} pid 4242: Test failure common.cu:1103 (device {dev})"
            ),
        );
    }
    let wrong: u64 = if kinds(&[FaultClass::GpuCollectiveCorruption]).is_some() { 33_554_432 / 64 } else { 0 };
    let busbw = if kinds(&[FaultClass::NvlinkDown]).is_some() { 212.4 } else { 371.9 };
    let mut o = String::new();
    o.push_str("# nThread 1 nGpus 8 minBytes 134217728 maxBytes 134217728 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0\n");
    o.push_str(
        "#                                                              out-of-place                       in-place\n",
    );
    o.push_str("#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong\n");
    o.push_str("#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)\n");
    let algbw = busbw * 8.0 / 14.0;
    let us = 134_217_728.0 / (algbw * 1e3);
    o.push_str(&format!(
        "   134217728      33554432     float     sum      -1  {us:7.1}  {algbw:6.2}  {busbw:6.2}  {wrong:6}  {us:7.1}  {algbw:6.2}  {busbw:6.2}  {wrong:6}\n"
    ));
    o.push_str(&format!("# Out of bounds values : {} {}\n", 2 * wrong, if wrong > 0 { "FAILED" } else { "OK" }));
    o.push_str(&format!("# Avg bus bandwidth    : {busbw:.3}\n"));
    (i32::from(wrong > 0), o)
}

/// Per kind: (during checks, of which kept the node drained; after checks, of which resumed it).
pub fn tally(rows: &[ValidationRow]) -> Vec<(FaultClass, usize, usize, usize, usize)> {
    let mut kinds: Vec<FaultClass> = rows.iter().map(|r| r.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|k| {
            let of = |phase: &'static str| rows.iter().filter(move |r| r.kind == k && r.phase == phase);
            (
                k,
                of("during").count(),
                of("during").filter(|r| !r.passed).count(),
                of("after").count(),
                of("after").filter(|r| r.passed).count(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(faults: &str) -> Scenario {
        Scenario::parse(
            &format!(
                "name = \"v\"\nseed = 1\nduration_s = 600\ninterval_s = 10\n[cluster]\nfabric = \"tor\"\nnodes = 4\n\
                 nodes_per_leaf = 4\nspines = 1\ngpus_per_node = 8\nnics_per_node = 8\ngpu_model = \"H100\"\n{faults}"
            ),
            "v.toml",
        )
        .unwrap()
    }

    #[test]
    fn the_all_reduce_test_fails_on_a_corrupting_gpu_only_while_it_corrupts() {
        let s = sc(
            "[[fault]]\nkind = \"gpu_collective_corruption\"\ntarget = \"node-0001/gpu2\"\nat_s = 100\nduration_s = 200\n",
        );
        let (st, out) = all_reduce(&s, "node-0001", 150_000);
        assert_eq!(st, 1);
        assert!(out.contains("#wrong") && out.contains("FAILED"), "{out}");
        assert_eq!(all_reduce(&s, "node-0001", 350_000).0, 0);
        assert_eq!(all_reduce(&s, "node-0002", 150_000).0, 0, "another node is fine");
        let sched = schedule(&s);
        assert_eq!(sched, vec![(160_000, 0, "during"), (330_000, 0, "after")]);
    }

    #[test]
    fn switch_and_job_faults_have_no_node_to_validate() {
        let s =
            sc("[[fault]]\nkind = \"leaf_switch_down\"\ntarget = \"switch:leaf-00\"\nat_s = 100\nduration_s = 60\n\
                    [[fault]]\nkind = \"host_oom\"\ntarget = \"node-0001\"\nat_s = 300\nduration_s = 60\n");
        assert!(schedule(&s).is_empty(), "{:?}", schedule(&s));
    }
}
