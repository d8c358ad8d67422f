//! Collector: jobs — which training job and rank runs on which GPU and NIC, whether its process lives,
//! and what its training loop last reported (the progress API).
//!
//! How a rank is found, each cycle:
//! 1. `<procfs>` is listed. `<pid>/stat` (state, parent, CPU ticks, RSS, start time) is read for
//!    processes not seen before and, every cycle, for the few that matter: those in a job, those under
//!    a rank, and young ones that may still `exec`. The rest are only listed; a pid reused by a new
//!    process shows as a new inode in the listing, and every 30 s all `stat`s are read anyway.
//!    `<pid>/environ` and `<pid>/cgroup` are read once per process (pid + start time), and again only
//!    when `stat` shows it exec'd (command name, code, stack or environment block moved).
//! 2. The job id is the first of: the configured `job_id_env` names, `SLURM_JOB_ID`/`SLURM_JOBID`,
//!    `TORCHELASTIC_RUN_ID` (unless `none`), the Slurm cgroup (`…/job_<id>/…`), the Kubernetes pod uid
//!    of the cgroup (`…/pod<uid>/…`, per pod: multi-pod jobs should name a job env var in the config),
//!    and last `MASTER_ADDR`+`MASTER_PORT` (`torch-<addr>-<port>`, the rendezvous every rank shares).
//! 3. The rank is the first of: the configured `rank_env` names, `RANK`, `OMPI_COMM_WORLD_RANK`,
//!    `PMI_RANK`, `SLURM_PROCID` (only in a job step, with `SLURM_STEP_ID`: the batch script and the
//!    `srun` client carry `SLURM_PROCID=0` too). Only processes with a job and a rank are ranks.
//! 4. Process tree: a process with a rank whose descendants hold other ranks of the same job, or whose
//!    rank came only from `SLURM_PROCID` while a descendant has a framework rank, is a launcher
//!    (torchrun's agent, an `srun` task that starts torchrun), not a rank. A process whose ancestor is
//!    the same (job, rank) — a data loader — belongs to that rank. When two unrelated processes claim
//!    the same (job, rank) (a Slurm batch script also carries `SLURM_PROCID=0`), the one on a GPU wins,
//!    then the one started last.
//! 5. When `environ` cannot be read (another user's process and no privilege), a process in a Slurm or
//!    pod cgroup that NVML lists on a GPU is still a rank of that job; its rank number is unknown and
//!    reported as its lowest GPU index. A warning says so once.
//! 6. GPUs: NVML's compute processes (the rank's pid or any of its descendants), else
//!    `CUDA_VISIBLE_DEVICES` (indexes, or `GPU-<uuid>` prefixes mapped through `report.gpus[].uuid`;
//!    relative to `NVIDIA_VISIBLE_DEVICES` inside containers; with several listed, the one at
//!    `LOCAL_RANK`), else the GPU numbered `LOCAL_RANK`.
//! 7. NIC: the configured `gpu_nics` map, else PCIe affinity (the InfiniBand NIC sharing the deepest
//!    PCIe bridge with the GPU, then the same NUMA node; ties spread round-robin), else GPU i → NIC
//!    i mod n over the IB NICs of the report in natural name order (`mlx5_2` before `mlx5_10`).
//!
//! A rank whose process disappears is reported `exited` for `exited_retain_secs` (default 5 min),
//! then dropped. Its exit code is known when the process was seen as a zombie (the kernel keeps the
//! wait status in `stat`), or when the loop posted `status: exited` with a code. The agent cannot
//! `waitpid` processes that are not its children, so otherwise the code is unknown (`null`).
//!
//! `host.cpu_non_job_pct` is the CPU time spent outside any job over the whole host's CPU time since
//! the previous cycle: the busy ticks of `/proc/stat` (all but idle and iowait, as `cpu_util_pct`)
//! less those of the processes in a job (a job identity, or descended from a rank: launchers and batch
//! scripts count as the job). Interrupts and kernel threads count as outside; the last ticks of a job
//! process that exited since the previous cycle do too.
//!
//! `cpu_seconds` is the rank process's own user+system time (all its threads), not its children's.
//!
//! Files: `procfs.rs` reads `/proc` (step 1), `ident.rs` finds job and rank (2, 3) and the GPUs an
//! environment names (6), `tree.rs` walks the process tree (4, 5), `nic_map.rs` maps GPUs to NICs
//! (7), `collector.rs` runs one cycle phase by phase, and `exit_watch.rs` notices a rank's exit the
//! moment it happens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::limits::{MAX_JOBS, MAX_RANKS_PER_JOB};
use faultline_proto::{
    Event, EventSource, GpuSample, JobSample, NicKind, NodeReport, ProcState, ProgressStatus, RankSample, Scheduler,
    Severity,
};
use serde::Deserialize;

use super::{CollectError, Collector};
use crate::progress::ProgressStore;

/// How long a vanished rank stays in reports as `exited`: 5 minutes is 30 reports at the default 10 s
/// interval, enough for the analyzer to tie the exit to a cause, short enough not to mislead.
pub const DEFAULT_EXITED_RETAIN_SECS: u64 = 300;
/// A process younger than this whose environment showed no rank has its `stat` read every cycle, so
/// that its `exec` is seen and its environment read again: right after `fork`, before `exec`, a worker
/// still carries its launcher's environment. Two minutes covers slow interpreter start-up.
const REREAD_YOUNG_SECS: f64 = 120.0;
/// Every this often, `stat` of every process is read, not only of new and hot ones: it bounds how long
/// an old process outside any job that execs into a rank (a wrapper script that waited, then `exec`s
/// the trainer) or is re-parented under one goes unseen. Half a minute is three reports at the default
/// interval, and costs one `stat` read per process per 30 s.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);
/// Most `stat` files kept open for hot processes (ranks, their children, job processes, young ones).
/// A node runs a few hundred such processes at most; 512 stays well inside the usual limit of 1,024
/// open files, and processes past it are read by path as before.
const MAX_HELD_STAT_FDS: usize = 512;
/// Largest `stat`/`cgroup` file read. A `stat` line is < 1 KiB; a cgroup v1 file lists ~15 hierarchies.
const MAX_SMALL_FILE: usize = 64 * 1024;
/// Longest parent chain followed. Real trees are < 20 deep; this bounds work on a corrupt fixture.
const MAX_TREE_DEPTH: usize = 128;
/// Largest `environ` read. The kernel bounds the environment by ARG_MAX (usually 2 MiB); the variables
/// we want sit among the first few KiB in practice, 1 MiB is generous.
const MAX_ENVIRON_BYTES: u64 = 1024 * 1024;

/// Job discovery settings (`[jobs]` in the agent's TOML config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Extra environment variable names holding the job id, tried before the built-in ones
    /// (`SLURM_JOB_ID`, `TORCHELASTIC_RUN_ID`, …). Use one your launcher sets on every node.
    pub job_id_env: Vec<String>,
    /// Extra environment variable names holding the global rank, tried before `RANK`,
    /// `OMPI_COMM_WORLD_RANK`, `PMI_RANK`, `SLURM_PROCID`.
    pub rank_env: Vec<String>,
    /// Extra environment variable names holding the local rank (rank on this node), tried before
    /// `LOCAL_RANK`, `OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`, `SLURM_LOCALID`.
    pub local_rank_env: Vec<String>,
    /// Extra environment variable names holding the world size, tried before `WORLD_SIZE`,
    /// `OMPI_COMM_WORLD_SIZE`, `PMI_SIZE`, `SLURM_NTASKS`.
    pub world_size_env: Vec<String>,
    /// GPU → NIC override: entry i is the NIC name (`mlx5_3`) GPU i uses. Empty: PCIe affinity from
    /// sysfs, else GPU i → NIC i mod (number of IB NICs).
    pub gpu_nics: Vec<String>,
    /// Seconds a rank whose process vanished is still reported as `exited`.
    pub exited_retain_secs: u64,
    /// Where sysfs is mounted, for PCIe affinity (default `/sys`; the agent sets it from
    /// `--sysfs-root`).
    pub sysfs_root: Option<PathBuf>,
    /// Where job states and exit codes come from (`[jobs.scheduler]`): Slurm and the kubelet.
    pub scheduler: crate::collect::sched::SchedConfig,
    /// Training logs to follow for NCCL / PyTorch-distributed errors (`[jobs.logs]`): Slurm's
    /// `StdOut`/`StdErr` of each job, the kubelet's pod logs, configured globs.
    pub logs: crate::collect::trainlog::TrainLogConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            job_id_env: Vec::new(),
            rank_env: Vec::new(),
            local_rank_env: Vec::new(),
            world_size_env: Vec::new(),
            gpu_nics: Vec::new(),
            exited_retain_secs: DEFAULT_EXITED_RETAIN_SECS,
            sysfs_root: None,
            scheduler: Default::default(),
            logs: Default::default(),
        }
    }
}

mod collector;
mod exit_watch;
mod ident;
mod nic_map;
mod procfs;
mod tree;

pub use collector::JobsCollector;
use collector::Tracked;
use exit_watch::*;
use ident::*;
use nic_map::*;
use procfs::*;
use tree::*;

#[cfg(test)]
mod tests;
