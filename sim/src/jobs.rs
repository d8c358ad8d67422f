//! The state of each job between seconds (`JobDyn`: step, incarnation, checkpoint and evaluation
//! windows, stalls, the NCCL watchdog's kill) and the pauses that are not faults. `step/jobs.rs`
//! advances it; the telemetry reads it.

/// Why a job's steps do not advance right now, when that is not a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pause {
    #[default]
    None,
    /// Compiling / warming up before the first step of a (re)start: GPUs partly busy.
    Warmup,
    /// Writing a synchronous checkpoint: GPUs idle, storage busy.
    Checkpoint,
    /// Evaluation pass: GPUs busy, no training steps.
    Eval,
}

/// Progress state of one job.
#[derive(Debug, Clone, Default)]
pub struct JobDyn {
    pub started: bool,
    pub(crate) step_f: f64,
    pub step: u64,
    /// Virtual ms of the last step advance.
    pub last_progress_ms: i64,
    pub last_step_ms: f64,
    pub avg_step_ms: f64,
    pub incarnation: u32,
    /// Virtual ms when the current incarnation started.
    pub run_start_ms: i64,
    pub(crate) next_ckpt_ms: i64,
    pub(crate) next_eval_ms: i64,
    /// In a checkpoint until this time (`i64::MAX`: stuck on a failing disk).
    pub ckpt_until: Option<i64>,
    /// In an evaluation pass until this time.
    pub eval_until: Option<i64>,
    /// Warming up until this time.
    pub warm_until: i64,
    /// A rank died or hung in this incarnation: restart once the cause clears.
    pub(crate) failed: bool,
    /// Current step time over the healthy one (1 = healthy).
    pub slowdown: f64,
    /// The largest straggler extra of any rank (fraction of the healthy step).
    pub extra_max: f64,
    /// Whether the step advanced in the last second.
    pub progressing: bool,
    /// Since when the ranks wait in a collective that does not complete.
    pub stuck_since: Option<i64>,
    /// When the NCCL watchdog killed every rank of this incarnation.
    pub killed_at: Option<i64>,
    /// Bytes each rank has written to storage (checkpoints), cumulative.
    pub written_bytes: u64,
}

impl JobDyn {
    /// A job that has not started.
    pub fn new() -> Self {
        Self { slowdown: 1.0, ..Default::default() }
    }

    /// The non-fault pause the job is in.
    pub fn pause(&self, t: i64) -> Pause {
        if t < self.warm_until {
            Pause::Warmup
        } else if self.ckpt_until.is_some() {
            Pause::Checkpoint
        } else if self.eval_until.is_some() {
            Pause::Eval
        } else {
            Pause::None
        }
    }
}

/// Bytes one rank writes per second of a synchronous checkpoint (its shard of weights and optimizer
/// state to a parallel file system: about 1 GB/s per rank).
pub const CKPT_BYTES_PER_S: f64 = 1.0e9;
