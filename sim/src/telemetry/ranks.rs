//! The jobs and ranks of a node as the agent sees them: processes (pid, state, CPU, RSS, bytes
//! written), the scheduler's word on the job where a scheduler is asked (Slurm, Kubernetes; torchrun
//! alone has none, and a vanished process has no exit code), and progress only for the jobs that
//! post to the progress API. Ranks post at different moments, so they show different steps; with
//! pipeline parallelism only the last stage has a loss.

use faultline_proto::{JobSample, ProcState, Progress, ProgressStatus, RankSample, SchedState, Scheduler};

use super::reuse::{filled, text};
use super::{Load, RankHere, round2};
use crate::faults::{COMPUTE_FRAC_MULTI, COMPUTE_FRAC_SINGLE, RankFx};
use crate::jobs::Pause;
use crate::naming;
use crate::node_state::GRAD_NORM_JITTER;
use crate::noise::{self, what};
use crate::realism::Launcher;
use crate::world::{RankView, World};

/// What the scheduler says about job `j` at `ts`, when one is asked.
fn sched(w: &World, j: usize, ts: i64, launcher: Launcher) -> (Option<SchedState>, Option<i32>) {
    if launcher == Launcher::Torchrun {
        return (None, None);
    }
    let job = &w.cluster.jobs[j];
    if ts >= job.end_ms {
        return (Some(SchedState::Completed), Some(0));
    }
    // The job failed once every one of its ranks is gone or dead; until then it runs. (Asked per
    // node report, of jobs of thousands of ranks: the first live rank answers.)
    let alive = |v: &RankView| matches!(v, RankView::Running | RankView::HangD);
    if (0..job.ranks.len()).any(|r| alive(&w.rank_view(j, r, ts))) {
        return (Some(SchedState::Running), None);
    }
    let views: Vec<RankView> = (0..job.ranks.len()).map(|r| w.rank_view(j, r, ts)).collect();
    let node_fail =
        w.job_fx[j].iter().any(|(fi, fx)| w.faults[*fi].active(ts) && fx.ranks.iter().any(|(_, x)| *x == RankFx::Gone));
    if node_fail {
        return (Some(SchedState::NodeFail), None);
    }
    let code = views.iter().find_map(|v| match v {
        RankView::Exited { code, .. } if *code != 0 => Some(*code),
        _ => None,
    });
    (Some(SchedState::Failed), code.or(Some(1)))
}

/// The job samples of one node's report, in the buffers of `spare` (see `reuse`).
pub fn build(w: &World, ts: i64, ranks: &[RankHere], spare: Vec<JobSample>) -> Vec<JobSample> {
    let c = &w.cluster;
    let noise = w.noise;
    // The old samples' buffers, to take from; the jobs are rebuilt in `jobs`.
    let mut old_jobs: Vec<JobSample> = spare;
    let mut old_ranks: Vec<RankSample> = old_jobs.iter_mut().flat_map(|j| j.ranks.drain(..)).collect();
    let mut jobs: Vec<JobSample> = Vec::with_capacity(old_jobs.len().max(1));
    for rh in ranks {
        let job = &c.jobs[rh.j];
        let jd = &w.jobs[rh.j];
        let rk = &job.ranks[rh.r];
        let rkey = job.tag ^ (rh.r as u64) << 20;
        let cfrac = if job.multi_node { COMPUTE_FRAC_MULTI } else { COMPUTE_FRAC_SINGLE };
        let state = match rh.view {
            RankView::Exited { .. } => ProcState::Exited,
            RankView::HangD => ProcState::DiskSleep,
            _ if rh.load == Load::Stuck => ProcState::DiskSleep,
            _ => ProcState::Running,
        };
        let end = match rh.view {
            RankView::Exited { at_ms, .. } => at_ms,
            _ => ts,
        };
        let ended_ok = matches!(rh.view, RankView::Exited { code: 0, .. });
        // A training script posts after a step completes: before its first step (compile, NCCL
        // setup) there is nothing to post, and the agent has no progress for the rank.
        let progress = (job.progress_api && jd.step > 0).then(|| {
            // This rank posts a moment after the others: it may still show the step before.
            let skew = (noise::unit(&[w.seed, what::STEP_JITTER, rkey, 0x5e]) * w.behaviour.rank_skew_ms) as i64;
            let behind = u64::from(jd.step > 0 && ts - jd.last_progress_ms < skew);
            let step = jd.step - behind;
            let last_progress_ms =
                if behind == 1 { jd.last_progress_ms - jd.last_step_ms as i64 } else { jd.last_progress_ms };
            let loss_at = |step: u64| 1.8 + 6.0 * (-(step as f64) / 3_000.0).exp();
            let mut loss = loss_at(step) + noise.plus(what::LOSS, rkey, step, 0.01);
            // The global gradient norm is computed after the all-reduce: every rank logs the same value.
            let mut grad = 0.8
                + 0.4 * (-(step as f64) / 2_000.0).exp()
                + noise.plus(what::LOSS, job.tag, step ^ 1, GRAD_NORM_JITTER);
            let mut nonfinite = false;
            if let Some(at) = job_sdc_since(w, rh.j, ts) {
                loss += ((ts - at) as f64 / 1000.0 * 0.002).min(3.0); // the job diverges
            }
            if let Some((at, nan)) = w.sdc(rh.j, rh.r, ts) {
                if nan {
                    nonfinite = true;
                    loss = loss_at(step.saturating_sub(((ts - at) as f64 / job.step_ms) as u64));
                } else {
                    grad *= 50.0 + 950.0 * noise::unit(&[w.seed, what::LOSS, rkey, 77]);
                }
            }
            // Pipeline parallelism: only the last stage computes the loss.
            let stages = job.pipeline_stages.max(1) as usize;
            let stage = rh.r * stages / job.ranks.len().max(1);
            let has_loss = stage + 1 == stages;
            let compute = job.step_ms * cfrac * noise.jitter(what::COMPUTE, rkey, step, 0.02) + job.step_ms * rh.extra;
            let paused = state != ProcState::Exited && job.pause_status;
            Progress {
                step,
                last_progress_ms: w.epoch_ms + last_progress_ms,
                step_time_ms: Some(round2(jd.last_step_ms * noise.jitter(what::STEP_JITTER, rkey, step, 0.003))),
                step_time_avg_ms: Some(round2(jd.avg_step_ms)),
                compute_ms: Some(round2(compute)),
                loss: (has_loss || nonfinite).then_some((loss * 1e4).round() / 1e4),
                loss_step: (has_loss || nonfinite).then_some(step),
                grad_norm: Some((grad * 1e4).round() / 1e4),
                nonfinite_loss: nonfinite,
                status: match jd.pause(ts) {
                    _ if ended_ok => ProgressStatus::Exited,
                    Pause::Checkpoint if paused => ProgressStatus::Checkpointing,
                    Pause::Eval if paused => ProgressStatus::Evaluating,
                    _ => ProgressStatus::Running,
                },
                exit_code: if ended_ok { Some(0) } else { None },
            }
        });
        let o = old_ranks.pop().unwrap_or_default();
        let sample = RankSample {
            io_write_bytes: Some(jd.written_bytes + (noise::unit(&[w.seed, what::STATIC, rkey, 4]) * 2.0e9) as u64),
            rank: rk.rank,
            local_rank: Some(rk.local_rank),
            pid: Some(w.pid(rh.j, rh.r)),
            gpus: filled(o.gpus, [rk.gpu]),
            nic: {
                let mut s = o.nic.unwrap_or_default();
                naming::write_nic(rk.nic, &mut s);
                Some(s)
            },
            state,
            cpu_seconds: Some(round2(((end - jd.run_start_ms).max(0) as f64 / 1000.0) * 1.4)),
            rss_bytes: Some(
                (22u64 << 30) + (noise::unit(&[w.seed, what::STATIC, rkey, 3]) * (4u64 << 30) as f64) as u64,
            ),
            // The agent watches the pid but is not its parent: it never learns the exit status.
            exit_code: None,
            progress,
        };
        match jobs.iter_mut().find(|s| s.job_id == job.id) {
            Some(s) => s.ranks.push(sample),
            None => {
                let (sched_state, sched_exit_code) = sched(w, rh.j, ts, job.launcher);
                let o = old_jobs.pop().unwrap_or_default();
                jobs.push(JobSample {
                    sched_state,
                    sched_exit_code,
                    job_id: text(o.job_id, &job.id),
                    scheduler: match job.launcher {
                        Launcher::Slurm => Scheduler::Slurm,
                        Launcher::Kubernetes => Scheduler::Kubernetes,
                        Launcher::Torchrun => Scheduler::Torchrun,
                    },
                    world_size: Some(job.ranks.len() as u32),
                    ranks: filled(o.ranks, [sample]),
                })
            }
        }
    }
    jobs
}

/// When silent data corruption began in job `j`, if it is going on.
fn job_sdc_since(w: &World, j: usize, t: i64) -> Option<i64> {
    w.job_fx[j].iter().find_map(|(fi, fx)| {
        let f = &w.faults[*fi];
        (f.active(t) && fx.ranks.iter().any(|(_, x)| *x == RankFx::Sdc)).then_some(f.at_ms)
    })
}
