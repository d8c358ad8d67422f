//! The scenario options that make the world behave like a real one (SCENARIO.md "Realism"): how jobs
//! behave when nothing is wrong, and how reports travel. Every default is the realistic value; a
//! scenario that says nothing gets the real world.

use serde::{Deserialize, Serialize};

/// How the jobs of a run behave (`[behaviour]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Share of jobs whose ranks post to the agent's progress API (most training scripts do not).
    pub progress_api_share: f64,
    /// Share of progress-posting jobs that also post `checkpointing`/`evaluating` during those pauses.
    pub pause_status_share: f64,
    /// Seconds between synchronous checkpoints (every N steps; it wanders with the step time).
    pub checkpoint_every_s: f64,
    /// How long a synchronous checkpoint pauses every rank, seconds (min, max).
    pub checkpoint_s: (f64, f64),
    /// Seconds between evaluation passes (0: none).
    pub eval_every_s: f64,
    /// How long an evaluation pass pauses training steps, seconds (min, max). GPUs stay busy.
    pub eval_s: (f64, f64),
    /// Compile/warm-up before the first step of every (re)start, seconds (min, max).
    pub warmup_s: (f64, f64),
    /// PyTorch's NCCL watchdog (`TORCH_NCCL_TIMEOUT`): a collective stuck this long kills every rank.
    pub nccl_timeout_s: f64,
    /// Share of multi-GPU jobs that use pipeline parallelism (only the last stage computes a loss).
    pub pipeline_share: f64,
    /// How far apart in time the ranks of a job post the same step, ms (max).
    pub rank_skew_ms: f64,
    /// Share of jobs that run with PyTorch's NaN check on collective inputs
    /// (`TORCH_NCCL_NAN_CHECK=1`; off by default in PyTorch, on where a team has been bitten).
    pub nan_check_share: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            progress_api_share: 0.25,
            pause_status_share: 0.5,
            checkpoint_every_s: 1800.0,
            checkpoint_s: (45.0, 240.0),
            eval_every_s: 3600.0,
            eval_s: (60.0, 300.0),
            warmup_s: (30.0, 240.0),
            nccl_timeout_s: 600.0,
            pipeline_share: 0.3,
            rank_skew_ms: 1500.0,
            nan_check_share: 0.5,
        }
    }
}

/// How reports travel from the agents to the analyzer (`[network]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Jitter of each regular report around its schedule, ± ms.
    pub jitter_ms: f64,
    /// Share of reports that arrive late (a slow or retried POST).
    pub late_share: f64,
    /// How late a late report is, ms (min, max).
    pub late_ms: (f64, f64),
    /// Share of regular pushes that fail on the way. Not lost: the agent spools the report and
    /// re-sends it after its back-off, so it arrives up to a request deadline late (`world::RETRY_MS`).
    pub lost_share: f64,
    /// Clock skew of each node's agent, ± ms (NTP keeps a node within tens of ms).
    pub clock_skew_ms: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            jitter_ms: 300.0,
            late_share: 0.01,
            late_ms: (2_000.0, 20_000.0),
            lost_share: 0.005,
            clock_skew_ms: 50.0,
        }
    }
}

/// Who launched a job, which decides whether anyone reports its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// Slurm reports job state and exit code.
    Slurm,
    /// Kubernetes reports pod phase and container exit code.
    Kubernetes,
    /// torchrun alone: no scheduler to ask.
    Torchrun,
}

/// The link layer of the fabric NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkLayer {
    /// InfiniBand: the port's lines name the IB device (`mlx5_3`).
    #[default]
    Infiniband,
    /// RoCE: the port's lines name its netdev (`eth1`).
    Ethernet,
}

impl Behaviour {
    /// Why the options cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let share = |v: f64, name: &str| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(format!("{name} = {v} must be between 0 and 1")) }
        };
        share(self.progress_api_share, "progress_api_share")?;
        share(self.pause_status_share, "pause_status_share")?;
        share(self.pipeline_share, "pipeline_share")?;
        share(self.nan_check_share, "nan_check_share")?;
        for (v, name) in [(self.checkpoint_s, "checkpoint_s"), (self.eval_s, "eval_s"), (self.warmup_s, "warmup_s")] {
            if !(v.0.is_finite() && v.1.is_finite() && 0.0 <= v.0 && v.0 <= v.1) {
                return Err(format!("{name} = [{}, {}] must be [min, max] seconds, 0 ≤ min ≤ max", v.0, v.1));
            }
        }
        for (v, name) in [
            (self.checkpoint_every_s, "checkpoint_every_s"),
            (self.eval_every_s, "eval_every_s"),
            (self.rank_skew_ms, "rank_skew_ms"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} = {v} must be 0 or more"));
            }
        }
        if !(self.nccl_timeout_s.is_finite() && self.nccl_timeout_s >= 1.0) {
            return Err(format!("nccl_timeout_s = {} must be at least 1", self.nccl_timeout_s));
        }
        Ok(())
    }
}

impl Network {
    /// Why the options cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        for (v, name) in [(self.late_share, "late_share"), (self.lost_share, "lost_share")] {
            if !(0.0..=0.5).contains(&v) {
                return Err(format!("{name} = {v} must be between 0 and 0.5"));
            }
        }
        let l = self.late_ms;
        if !(l.0.is_finite() && l.1.is_finite() && 0.0 <= l.0 && l.0 <= l.1 && l.1 <= 600_000.0) {
            return Err(format!("late_ms = [{}, {}] must be [min, max] ms up to 600000", l.0, l.1));
        }
        for (v, name, max) in [(self.jitter_ms, "jitter_ms", 60_000.0), (self.clock_skew_ms, "clock_skew_ms", 1_000.0)]
        {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(format!("{name} = {v} must be between 0 and {max}"));
            }
        }
        Ok(())
    }
}

/// Active fabric probes (`[probes]`, `telemetry::probes`): off unless `enabled = true`, so scenarios without it (and every
/// benchmark) are unchanged.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSpec {
    /// The agents probe the fabric. Default false.
    pub enabled: bool,
    /// Probes each agent sends per second, all paths together (the agent's `rate_pps`). Default 40.
    pub rate_pps: f64,
    /// Peers each node probes per rotation (the analyzer's pinglist size). Default 8.
    pub peers: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self { enabled: false, rate_pps: 40.0, peers: 8 }
    }
}

impl ProbeSpec {
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate_pps.is_finite() && self.rate_pps > 0.0 && self.rate_pps <= 1000.0) {
            return Err("rate_pps must be above 0 and at most 1000".into());
        }
        if !(1..=64).contains(&self.peers) {
            return Err("peers must be 1..=64".into());
        }
        Ok(())
    }
}
