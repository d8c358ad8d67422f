//! Job dynamics second by second: compile warm-up at every (re)start, synchronous checkpoints and
//! evaluation passes that pause steps for minutes, stalls from faults, PyTorch's NCCL watchdog that
//! kills every rank of a job stuck in a collective, and restarts once the cause clears. The state
//! these update (`JobDyn`) lives in `crate::jobs`.

use crate::faults::{RankFx, Stall};
use crate::jobs::{CKPT_BYTES_PER_S, Pause};
use crate::noise::{self, what};
use crate::world::World;

impl World {
    fn span(&self, what_: u64, tag: u64, k: u64, (lo, hi): (f64, f64)) -> i64 {
        ((lo + self.noise.draw(what_, tag, k) * (hi - lo)) * 1000.0) as i64
    }

    /// Advance every job by one second, to `t`.
    pub(crate) fn update_jobs(&mut self, t: i64) {
        let dt = 1000.0;
        let b = self.behaviour.clone();
        for j in 0..self.jobs.len() {
            let job = &self.cluster.jobs[j];
            if !job.active_at(t) {
                continue;
            }
            let tag = job.tag;
            if !self.jobs[j].started {
                let warm = self.span(what::CHECKPOINT, tag, 7, b.warmup_s);
                let first_ckpt = b.checkpoint_every_s * (0.3 + 0.7 * self.noise.draw(what::CHECKPOINT, tag, 0));
                let first_eval = b.eval_every_s * (0.4 + 0.6 * self.noise.draw(what::CHECKPOINT, tag, 5));
                let jd = &mut self.jobs[j];
                jd.started = true;
                jd.last_progress_ms = job.start_ms;
                jd.run_start_ms = job.start_ms;
                jd.last_step_ms = job.step_ms;
                jd.avg_step_ms = job.step_ms;
                jd.warm_until = job.start_ms + warm;
                jd.next_ckpt_ms = jd.warm_until + (first_ckpt * 1000.0) as i64;
                jd.next_eval_ms =
                    if b.eval_every_s > 0.0 { jd.warm_until + (first_eval * 1000.0) as i64 } else { i64::MAX };
            }
            let (mut stall, mut hang, mut failing, mut disk) = (false, false, false, false);
            let mut comm_slow = 0.0;
            for (fi, fx) in &self.job_fx[j] {
                let f = &self.faults[*fi];
                if !f.active(t) {
                    continue;
                }
                match fx.stall {
                    Stall::WhileActive => stall = true,
                    Stall::WhileFlapDown => stall |= f.flap_down(t),
                    Stall::AtCheckpoint => disk = true,
                    Stall::No => {}
                }
                hang |= fx.hang;
                failing |= fx.crash
                    || fx.ranks.iter().any(|(_, x)| matches!(x, RankFx::Exit(_) | RankFx::HangD | RankFx::Gone));
                comm_slow += fx.comm_slow * f.ramp(t);
            }
            let extra = self.job_fx[j]
                .iter()
                .flat_map(|(_, fx)| fx.ranks.iter().map(|(r, _)| *r))
                .map(|r| self.rank_extra(j, r, t))
                .fold(0.0, f64::max);
            let warm = self.span(what::CHECKPOINT, tag, 8 + u64::from(self.jobs[j].incarnation), b.warmup_s);
            let jd = &mut self.jobs[j];
            // The NCCL watchdog: ranks stuck in a collective this long are all killed.
            let stuck = (stall || hang) && jd.pause(t) == Pause::None && jd.ckpt_until.is_none();
            if stuck {
                let since = *jd.stuck_since.get_or_insert(t);
                if jd.killed_at.is_none() && t - since >= (b.nccl_timeout_s * 1000.0) as i64 {
                    jd.killed_at = Some(t);
                }
            } else if !(stall || hang) {
                jd.stuck_since = None;
            }
            if failing || jd.killed_at.is_some() {
                jd.failed = true;
            }
            if jd.failed && !failing && !stall && !hang {
                // The cause cleared: the launcher restarts every rank (new pids), which warm up again.
                jd.failed = false;
                jd.killed_at = None;
                jd.stuck_since = None;
                jd.incarnation += 1;
                jd.run_start_ms = t;
                jd.last_progress_ms = t;
                jd.warm_until = t + warm;
                jd.ckpt_until = None;
                jd.eval_until = None;
            }
            let job = &self.cluster.jobs[j];
            let jd = &mut self.jobs[j];
            // Synchronous checkpoints: every rank pauses for minutes; on a failing disk the write
            // never finishes.
            if jd.ckpt_until.is_none() && jd.eval_until.is_none() && t >= jd.next_ckpt_ms && !stall && !jd.failed {
                let pause = b.checkpoint_s.0
                    + self.noise.draw(what::CHECKPOINT, tag, jd.next_ckpt_ms as u64)
                        * (b.checkpoint_s.1 - b.checkpoint_s.0);
                let period = b.checkpoint_every_s
                    * (0.9 + 0.2 * self.noise.draw(what::CHECKPOINT, tag, jd.next_ckpt_ms as u64 ^ 1));
                jd.next_ckpt_ms += (period.max(1.0) * 1000.0) as i64;
                if disk {
                    jd.ckpt_until = Some(i64::MAX);
                } else if pause > 0.0 {
                    jd.ckpt_until = Some(t + (pause * 1000.0) as i64);
                }
            }
            if jd.ckpt_until.is_none() && jd.eval_until.is_none() && t >= jd.next_eval_ms && !stall && !jd.failed {
                let pause = b.eval_s.0
                    + self.noise.draw(what::CHECKPOINT, tag, jd.next_eval_ms as u64 ^ 3) * (b.eval_s.1 - b.eval_s.0);
                jd.next_eval_ms += (b.eval_every_s.max(1.0) * 1000.0) as i64;
                if pause > 0.0 {
                    jd.eval_until = Some(t + (pause * 1000.0) as i64);
                }
            }
            match jd.ckpt_until {
                Some(i64::MAX) if !disk => jd.ckpt_until = None,
                Some(u) if u != i64::MAX && t >= u => jd.ckpt_until = None,
                Some(_) => jd.written_bytes += (CKPT_BYTES_PER_S * dt / 1000.0) as u64,
                None => {}
            }
            if jd.eval_until.is_some_and(|u| t >= u) {
                jd.eval_until = None;
            }
            let jitter = self.noise.jitter(what::STEP_JITTER, tag, jd.step, noise::STEP_JITTER_FRAC);
            let step_eff = job.step_ms * (jitter * (1.0 + comm_slow) + extra);
            jd.slowdown = step_eff / job.step_ms;
            jd.extra_max = extra;
            jd.progressing = !(stall || hang || jd.failed) && jd.pause(t) == Pause::None;
            if jd.progressing {
                jd.step_f += dt / step_eff;
                let whole = jd.step_f.floor() as u64;
                if whole > jd.step {
                    let over = (jd.step_f - jd.step_f.floor()) * step_eff;
                    jd.step = whole;
                    jd.last_progress_ms = t - over.min(dt) as i64;
                    jd.last_step_ms = step_eff;
                    jd.avg_step_ms = 0.9 * jd.avg_step_ms + 0.1 * step_eff;
                }
            }
        }
    }
}
