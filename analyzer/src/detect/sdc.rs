//! Silent data corruption from what training loops report: a non-finite loss on a minority of the
//! ranks that report a loss, or a gradient norm unlike its peers' at the same step.
//!
//! Like with like: after the all-reduce every data-parallel rank logs the same global gradient norm
//! for a step, so ranks are compared at the same step (`Progress.loss_step`, else `step`), never at
//! whatever each reported last (ranks report different steps at any moment). With pipeline
//! parallelism only the last stage computes a loss: the minority is taken among the ranks that
//! report one. Several GPUs of one node flagged together are one question about the node or the job
//! (host memory, the data, divergence), never several GPU incidents: that is noted, not paged.

use std::collections::BTreeMap;

use faultline_proto::{ComponentId, FaultClass};

use super::{Symptom, SymptomKind as K, median_mad};
use crate::state::{JobState, RankState};

/// Ranks needed at one step before they say anything about each other.
pub const MIN_PEERS: usize = 4;
/// At one step the norms agree to rounding; a rank off by more than this fraction of the median
/// computed on corrupted data.
pub const GRAD_REL: f64 = 0.05;
/// …and by more than this many scaled MADs of that step's values.
pub const GRAD_MADS: f64 = 6.0;
/// Steps at which a rank must be off before it counts, unless it is off by `GRAD_FAST_REL`.
pub const GRAD_STEPS: usize = 2;
/// Off by half the median at a single step is corruption at once.
pub const GRAD_FAST_REL: f64 = 0.5;
/// Most recent common steps compared.
pub const MAX_STEPS: usize = 8;
/// Recent steps per rank put in the comparison (ranks on different report phases still share some).
pub const RECENT_PER_RANK: usize = 8;
/// Flagged GPUs of one node from which it is a node- or job-level question.
pub const NODE_FLAG_GPUS: usize = 2;
const MAD_SCALE: f64 = 1.4826;

/// Per rank: steps compared, steps off, worst relative deviation, its value there, the median.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    compared: usize,
    off: usize,
    worst: f64,
    value: f64,
    median: f64,
}

/// Check one job's losses and gradient norms. Pure.
pub fn check(job: &JobState, now: i64, out: &mut Vec<Symptom>) {
    let jid = ComponentId::job(&job.id);
    let alive: Vec<(&u32, &RankState)> = job.ranks.iter().filter(|(_, r)| r.alive()).collect();
    let mut flagged: Vec<(u32, Symptom)> = Vec::new();

    // Non-finite loss on a minority of the ranks that report a loss at all.
    let reporting: Vec<_> = alive.iter().filter(|(_, r)| r.reports_loss).collect();
    let nonfinite: Vec<_> = reporting.iter().filter(|(_, r)| r.nonfinite_since.is_some()).collect();
    if !nonfinite.is_empty() && nonfinite.len() * 2 < reporting.len() {
        for (rank, r) in nonfinite {
            flagged.push((
                **rank,
                Symptom::new(
                    ComponentId::rank(&job.id, **rank),
                    K::NonFinite,
                    r.nonfinite_since.unwrap_or(now),
                    format!(
                        "rank {rank} of {jid} on {} reported a non-finite loss while the {} other ranks reporting a loss did not",
                        r.node,
                        reporting.len() - 1
                    ),
                )
                .class(FaultClass::GpuSdc)
                .critical(),
            ));
        }
    }

    // Gradient norms at the same step.
    let mut by_step: std::collections::HashMap<u64, Vec<(u32, f64)>> = std::collections::HashMap::new();
    if alive.iter().filter(|(_, r)| !r.grads.is_empty()).count() >= MIN_PEERS {
        for (rank, r) in &alive {
            for (step, g) in r.grads.iter().skip(r.grads.len().saturating_sub(RECENT_PER_RANK)) {
                by_step.entry(*step).or_default().push((**rank, *g));
            }
        }
    }
    let mut steps: Vec<(&u64, &Vec<(u32, f64)>)> = by_step.iter().filter(|(_, v)| v.len() >= MIN_PEERS).collect();
    steps.sort_unstable_by(|a, b| b.0.cmp(a.0));
    let mut tally: BTreeMap<u32, Tally> = BTreeMap::new();
    for (_, vals) in steps.into_iter().take(MAX_STEPS) {
        let xs: Vec<f64> = vals.iter().map(|x| x.1).collect();
        let Some((m, mad)) = median_mad(&xs) else { continue };
        let limit = (GRAD_REL * m.abs()).max(GRAD_MADS * MAD_SCALE * mad);
        let off: Vec<&(u32, f64)> = vals.iter().filter(|(_, g)| (g - m).abs() > limit).collect();
        if off.len() * 2 >= vals.len() {
            continue; // no majority agrees: nothing to compare against
        }
        for (rank, g) in vals {
            let t = tally.entry(*rank).or_default();
            t.compared += 1;
            if off.iter().any(|(r, _)| r == rank) {
                t.off += 1;
                let rel = if m != 0.0 { (g - m).abs() / m.abs() } else { f64::INFINITY };
                if rel > t.worst {
                    *t = Tally { worst: rel, value: *g, median: m, ..*t };
                }
            }
        }
    }
    for (rank, t) in tally {
        if t.off == 0 || flagged.iter().any(|(r, _)| *r == rank) {
            continue;
        }
        if t.off >= GRAD_STEPS || t.worst >= GRAD_FAST_REL {
            let node = &job.ranks[&rank].node;
            flagged.push((
                rank,
                Symptom::new(
                    ComponentId::rank(&job.id, rank),
                    K::GradMismatch,
                    now,
                    format!(
                        "rank {rank} of {jid} on {node} reports gradient norm {:.4} where its peers agree on {:.4} at the same step ({} of {} steps compared)",
                        t.value, t.median, t.off, t.compared
                    ),
                )
                .class(FaultClass::GpuSdc),
            ));
        }
    }

    // Several GPUs of one node: one question about the node or the job, not several GPU faults.
    let mut per_node: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (rank, _) in &flagged {
        per_node.entry(job.ranks[rank].node.as_str()).or_default().push(*rank);
    }
    for (rank, s) in flagged {
        let node = job.ranks[&rank].node.as_str();
        let ranks = &per_node[node];
        if ranks.len() < NODE_FLAG_GPUS {
            out.push(s);
        } else if ranks[0] == rank {
            out.push(Symptom::new(
                ComponentId::node(node),
                K::SdcSuspect,
                s.onset_ms,
                format!(
                    "ranks {ranks:?} of {jid} on {node} disagree with their peers together: a question for the node or the job, not {} GPU faults",
                    ranks.len()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000_000;

    fn job(ranks: Vec<RankState>) -> JobState {
        JobState {
            id: "j".into(),
            ranks: ranks.into_iter().enumerate().map(|(i, r)| (i as u32, r)).collect(),
            ..Default::default()
        }
    }

    /// `n` ranks, 4 per node, each with gradient norms at `steps` (the global norm of the step, the
    /// same on every rank).
    fn ranks(n: usize, steps: impl Fn(usize) -> Vec<u64>) -> Vec<RankState> {
        (0..n)
            .map(|i| RankState {
                node: format!("n{}", i / 4),
                gpus: vec![(i % 4) as u32],
                reports_loss: true,
                grads: steps(i).into_iter().map(|s| (s, norm(s))).collect(),
                ..Default::default()
            })
            .collect()
    }

    /// A decaying norm, noisy from step to step (noise 2.0 in the simulator terms).
    fn norm(step: u64) -> f64 {
        1.0 + 0.3 * ((step * 7919 % 13) as f64 / 13.0 - 0.5)
    }

    fn kinds(j: &JobState) -> Vec<(K, String)> {
        let mut out = Vec::new();
        check(j, NOW, &mut out);
        out.into_iter().map(|s| (s.kind, s.component.to_string())).collect()
    }

    #[test]
    fn ranks_at_different_steps_are_never_compared() {
        // Each node reports its own step: across nodes the norms differ by 15%, which the old
        // latest-value comparison took for corruption.
        let j = job(ranks(16, |i| vec![100 + (i / 4) as u64 * 3, 101 + (i / 4) as u64 * 3]));
        assert_eq!(kinds(&j), []);
    }

    #[test]
    fn one_rank_off_at_the_same_steps_is_its_gpu() {
        let mut r = ranks(8, |_| vec![10, 11, 12]);
        r[5].grads = r[5].grads.iter().map(|(s, g)| (*s, g * 1.08)).collect();
        assert_eq!(kinds(&job(r)), [(K::GradMismatch, "job:j/rank5".to_string())]);
        // Off at a single step by a little: not yet.
        let mut r = ranks(8, |_| vec![10, 11, 12]);
        r[5].grads[2].1 *= 1.08;
        assert_eq!(kinds(&job(r)), []);
        // Off at a single step by a lot: at once.
        let mut r = ranks(8, |_| vec![10, 11, 12]);
        r[5].grads[2].1 *= 40.0;
        assert_eq!(kinds(&job(r)), [(K::GradMismatch, "job:j/rank5".to_string())]);
    }

    #[test]
    fn several_gpus_of_one_node_are_one_node_question() {
        let mut r = ranks(8, |_| vec![10, 11, 12]);
        for x in &mut r[4..6] {
            x.grads = x.grads.iter().map(|(s, g)| (*s, g * 3.0)).collect();
        }
        assert_eq!(kinds(&job(r)), [(K::SdcSuspect, "n1".to_string())]);
    }

    #[test]
    fn a_loss_only_the_last_pipeline_stage_reports_is_not_a_minority() {
        // 8 ranks, 2 pipeline stages: only ranks 4–7 (the last stage) report a loss; all go NaN.
        let mut r = ranks(8, |_| vec![]);
        for (i, x) in r.iter_mut().enumerate() {
            x.reports_loss = i >= 4;
            if i >= 4 {
                x.nonfinite_since = Some(NOW - 1000);
            }
        }
        assert_eq!(kinds(&job(r.clone())), []);
        // One NaN among the ranks that report a loss is a minority: its GPU.
        for x in &mut r[5..] {
            x.nonfinite_since = None;
        }
        let mut more = r.clone();
        for i in 8..12 {
            more.push(RankState {
                node: "n3".into(),
                reports_loss: true,
                gpus: vec![i as u32 % 4],
                ..Default::default()
            });
        }
        assert_eq!(kinds(&job(more)), [(K::NonFinite, "job:j/rank4".to_string())]);
    }
}
