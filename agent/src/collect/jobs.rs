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
    pub scheduler: super::sched::SchedConfig,
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
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// procfs parsing

/// What one `/proc/<pid>/stat` line says.
#[derive(Debug, Clone, PartialEq)]
struct ProcStat {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    /// utime + stime, clock ticks.
    ticks: u64,
    /// Start time after boot, clock ticks.
    starttime: u64,
    rss_pages: u64,
    /// The wait status (field 52, Linux ≥ 3.5): meaningful for a zombie.
    exit_status: Option<i32>,
    /// Changes when the process calls `execve` (see [`ExecSig`]).
    exec_sig: ExecSig,
}

/// Fields of `stat` that `execve` changes while pid and start time stay: where the code, the stack
/// and the environment block (fields 26, 28, 50, 51) were mapped. The environment block's size
/// (`env_end - env_start`) changes whenever a launcher adds `RANK` before it execs a worker, even with
/// address randomisation off. All zero when the reader may not see them (then `environ` is
/// unreadable too) or in fixtures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ExecSig {
    start_code: u64,
    start_stack: u64,
    env_start: u64,
    env_end: u64,
}

impl ExecSig {
    fn known(&self) -> bool {
        *self != ExecSig::default()
    }
}

/// Parse `/proc/<pid>/stat`. The command name sits in parentheses and may hold spaces and `)`, so
/// the fields are counted from the last `)`.
fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut rest = [""; 50];
    let mut n = 0;
    for (slot, v) in rest.iter_mut().zip(s.get(close + 1..)?.split_ascii_whitespace()) {
        *slot = v;
        n += 1;
    }
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let field = |f: usize| rest[..n].get(f - 3).copied();
    let num = |f: usize| field(f).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        ticks: num(14)?.saturating_add(num(15)?),
        starttime: num(22)?,
        rss_pages: field(24).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64).unwrap_or(0),
        exit_status: field(52).and_then(|v| v.parse().ok()),
        exec_sig: ExecSig {
            start_code: num(26).unwrap_or(0),
            start_stack: num(28).unwrap_or(0),
            env_start: num(50).unwrap_or(0),
            env_end: num(51).unwrap_or(0),
        },
    })
}

fn proc_state(c: char) -> ProcState {
    match c {
        'R' => ProcState::Running,
        'S' | 'I' => ProcState::Sleeping,
        'D' => ProcState::DiskSleep,
        'Z' => ProcState::Zombie,
        'T' | 't' => ProcState::Stopped,
        'X' | 'x' => ProcState::Exited,
        _ => ProcState::Unknown,
    }
}

/// Decode a `waitpid` status: the exit code, or `-signal` when a signal killed the process.
fn decode_wait_status(st: i32) -> i32 {
    let sig = st & 0x7f;
    if sig == 0 { (st >> 8) & 0xff } else { -sig }
}

/// The Slurm job id and the Kubernetes pod uid found in `/proc/<pid>/cgroup`.
#[derive(Debug, Default, Clone, PartialEq)]
struct CgroupIds {
    slurm_job: Option<String>,
    pod_uid: Option<String>,
}

fn parse_cgroup(text: &str) -> CgroupIds {
    let mut ids = CgroupIds::default();
    for line in text.lines() {
        // hierarchy-id:controllers:path
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        for comp in path.split('/') {
            if ids.slurm_job.is_none()
                && let Some(id) = comp.strip_prefix("job_")
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
            {
                ids.slurm_job = Some(id.to_string());
            }
            if ids.pod_uid.is_none() {
                ids.pod_uid = pod_uid_of(comp);
            }
        }
    }
    ids
}

/// `pod1b2c…` (cgroupfs driver) or `kubepods-burstable-pod1b2c_…​.slice` (systemd driver, `_` for `-`).
fn pod_uid_of(comp: &str) -> Option<String> {
    let comp = comp.strip_suffix(".slice").unwrap_or(comp);
    let start = if comp.starts_with("pod") { 3 } else { comp.rfind("-pod")? + 4 };
    let uid = comp[start..].replace('_', "-");
    let ok = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && uid.matches('-').count() == 4;
    ok.then_some(uid)
}

// ---------------------------------------------------------------------------------------------------
// identity

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RankSource {
    /// Set by the training framework or MPI (`RANK`, `OMPI_COMM_WORLD_RANK`, config names).
    Framework,
    /// `SLURM_PROCID`: the Slurm task, which may be a launcher of framework ranks.
    Slurm,
    /// Unknown rank (environment unreadable): the lowest GPU index stands in for it.
    GpuIndex,
}

/// What a process's environment and cgroup say about it. Cached per (pid, start time).
#[derive(Debug, Clone, Default, PartialEq)]
struct Ident {
    job: Option<String>,
    scheduler: Scheduler,
    rank: Option<(u32, RankSource)>,
    local_rank: Option<u32>,
    world_size: Option<u32>,
    cuda_visible: Option<String>,
    nvidia_visible: Option<String>,
    /// False when `environ` could not be read (permissions): cgroup only.
    env_readable: bool,
    /// Slurm job or pod found in the cgroup (used when the environment is unreadable).
    cgroup_job: Option<String>,
}

/// (rank, local rank, world size) variable families, in order of preference.
const RANK_FAMILIES: &[(&str, &str, &str, RankSource)] = &[
    ("RANK", "LOCAL_RANK", "WORLD_SIZE", RankSource::Framework),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", RankSource::Framework),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", RankSource::Framework),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", RankSource::Slurm),
];

fn ident_of(env: Option<&HashMap<String, String>>, cg: &CgroupIds, cfg: &JobsConfig) -> Ident {
    let mut id = Ident { env_readable: env.is_some(), ..Default::default() };
    let empty = HashMap::new();
    let env = env.unwrap_or(&empty);
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let get_u32 = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok());
    let valid = |v: &str| faultline_proto::id::valid_name(v);

    let slurm_env = get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")).filter(|v| valid(v));
    let torch_run = get("TORCHELASTIC_RUN_ID").filter(|v| *v != "none" && valid(v));
    let configured = cfg.job_id_env.iter().find_map(|k| get(k)).filter(|v| valid(v));
    let master = match (get("MASTER_ADDR"), get("MASTER_PORT")) {
        (Some(a), Some(p)) => Some(format!("torch-{a}-{p}")).filter(|v| valid(v)),
        _ => None,
    };
    id.cgroup_job = cg.slurm_job.clone().or_else(|| cg.pod_uid.clone());
    id.job = configured
        .map(str::to_string)
        .or(slurm_env.map(str::to_string))
        .or(torch_run.map(str::to_string))
        .or(cg.slurm_job.clone())
        .or(cg.pod_uid.clone())
        .or(master);
    id.scheduler = if slurm_env.is_some() || cg.slurm_job.is_some() {
        Scheduler::Slurm
    } else if cg.pod_uid.is_some() {
        Scheduler::Kubernetes
    } else if torch_run.is_some() || get("RANK").is_some() {
        Scheduler::Torchrun
    } else {
        Scheduler::Unknown
    };

    let mut family = None;
    if let Some(r) = cfg.rank_env.iter().find_map(|k| get_u32(k)) {
        id.rank = Some((r, RankSource::Framework));
    } else {
        // `SLURM_PROCID` names a task only inside a job step (`srun`), which also sets
        // `SLURM_STEP_ID`: the batch script and the `srun` client carry `SLURM_PROCID=0` without it
        // and are launchers, never ranks.
        let step_task = get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID")).is_some();
        for f in RANK_FAMILIES {
            if f.3 == RankSource::Slurm && !step_task {
                continue;
            }
            if let Some(r) = get_u32(f.0) {
                id.rank = Some((r, f.3));
                family = Some(f);
                break;
            }
        }
    }
    id.local_rank = cfg
        .local_rank_env
        .iter()
        .find_map(|k| get_u32(k))
        .or_else(|| family.and_then(|f| get_u32(f.1)))
        .or_else(|| RANK_FAMILIES.iter().find_map(|f| get_u32(f.1)));
    id.world_size = cfg
        .world_size_env
        .iter()
        .find_map(|k| get_u32(k))
        .or_else(|| family.and_then(|f| get_u32(f.2)))
        .or_else(|| get_u32("WORLD_SIZE"));
    id.cuda_visible = env.get("CUDA_VISIBLE_DEVICES").map(|v| v.trim().to_string());
    id.nvidia_visible = env.get("NVIDIA_VISIBLE_DEVICES").map(|v| v.trim().to_string());
    id
}

/// The environment variables [`ident_of`] looks at: the built-in names and the configured ones.
fn wanted_env(cfg: &JobsConfig) -> HashSet<String> {
    let builtin = [
        "SLURM_JOB_ID",
        "SLURM_JOBID",
        "TORCHELASTIC_RUN_ID",
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "SLURM_STEP_ID",
        "SLURM_STEPID",
    ];
    let families = RANK_FAMILIES.iter().flat_map(|f| [f.0, f.1, f.2]);
    let configured = cfg.job_id_env.iter().chain(&cfg.rank_env).chain(&cfg.local_rank_env).chain(&cfg.world_size_env);
    builtin.into_iter().chain(families).map(str::to_string).chain(configured.cloned()).collect()
}

/// The `wanted` variables of a NUL-separated `environ` block (the rest are not kept: a process may
/// carry hundreds).
fn parse_environ(bytes: &[u8], wanted: &HashSet<String>) -> HashMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            let k = std::str::from_utf8(&kv[..eq]).ok()?;
            if !wanted.contains(k) {
                return None;
            }
            let v = std::str::from_utf8(&kv[eq + 1..]).ok()?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// GPUs named by `CUDA_VISIBLE_DEVICES` (and `NVIDIA_VISIBLE_DEVICES` inside a container), or by
/// `LOCAL_RANK` when neither is set.
fn gpus_from_env(id: &Ident, gpus: &[GpuSample]) -> Vec<u32> {
    let by_uuid = |u: &str| -> Option<u32> {
        let u = u.to_ascii_lowercase();
        gpus.iter().find(|g| !g.uuid.is_empty() && g.uuid.to_ascii_lowercase().starts_with(&u)).map(|g| g.index)
    };
    let known = |i: u32| gpus.is_empty() || gpus.iter().any(|g| g.index == i);
    // Entries of a device list; CUDA stops at the first entry it cannot parse.
    let entries = |list: &str| -> Vec<String> {
        list.split(',').map(|s| s.trim().to_string()).take_while(|s| !s.is_empty()).collect()
    };
    let resolve = |e: &str| -> Option<u32> {
        if let Ok(i) = e.parse::<u32>() {
            return known(i).then_some(i);
        }
        if e.starts_with("GPU-") { by_uuid(e) } else { None }
    };
    let host_list: Option<Vec<String>> =
        id.nvidia_visible.as_deref().filter(|v| !matches!(*v, "" | "all" | "none" | "void")).map(entries);
    let list: Option<Vec<u32>> = match id.cuda_visible.as_deref() {
        Some(cvd) => {
            let mut out = Vec::new();
            for e in entries(cvd) {
                let r = match (&host_list, e.parse::<usize>()) {
                    // Inside a container, CUDA's index i is the container's i-th device.
                    (Some(h), Ok(i)) => h.get(i).and_then(|h| resolve(h)),
                    _ => resolve(&e),
                };
                match r {
                    Some(g) => out.push(g),
                    None => break,
                }
            }
            Some(out)
        }
        None => host_list.map(|h| h.iter().filter_map(|e| resolve(e)).collect()),
    };
    match list {
        Some(l) if l.len() > 1 => match id.local_rank.map(|r| r as usize) {
            Some(r) if r < l.len() => vec![l[r]],
            _ => l,
        },
        Some(l) => l,
        None => id.local_rank.filter(|&r| known(r)).into_iter().collect(),
    }
}

// ---------------------------------------------------------------------------------------------------
// GPU → NIC

/// Sort key for natural name order: `mlx5_2` < `mlx5_10`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(u64::from(d)));
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

/// `00000000:3B:00.0` → `0000:3b:00.0` (sysfs form).
fn sysfs_pci_name(bus_id: &str) -> Option<String> {
    let b = bus_id.trim().to_ascii_lowercase();
    let (dom, rest) = b.split_once(':')?;
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let rest = if rest.contains('.') { rest.to_string() } else { format!("{rest}.0") };
    Some(format!("{:04x}:{rest}", dom & 0xffff))
}

/// Where a PCI device sits: its bridge chain under `/sys/devices` and its NUMA node.
#[derive(Debug, Clone)]
struct PciPlace {
    chain: Vec<String>,
    numa: Option<i64>,
}

fn pci_place(dev_dir: &Path) -> Option<PciPlace> {
    let real = std::fs::canonicalize(dev_dir).ok()?;
    let comps: Vec<String> = real.components().filter_map(|c| c.as_os_str().to_str().map(str::to_string)).collect();
    let start = comps.iter().position(|c| c.starts_with("pci"))?;
    let numa = std::fs::read_to_string(real.join("numa_node")).ok().and_then(|s| s.trim().parse::<i64>().ok());
    Some(PciPlace { chain: comps[start..].to_vec(), numa: numa.filter(|&n| n >= 0) })
}

fn common_prefix(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// GPU index → NIC name for every GPU of the report.
fn gpu_nic_map(report: &NodeReport, cfg: &JobsConfig, sysfs: &Path) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let mut gpu_idx: Vec<u32> = report.gpus.iter().map(|g| g.index).collect();
    gpu_idx.sort_unstable();
    if !cfg.gpu_nics.is_empty() {
        for (i, nic) in cfg.gpu_nics.iter().enumerate() {
            if !nic.is_empty() {
                out.insert(i as u32, nic.clone());
            }
        }
        return out;
    }
    let mut nics: Vec<&faultline_proto::NicSample> =
        report.nics.iter().filter(|n| n.kind == NicKind::Infiniband).collect();
    nics.sort_by_key(|n| natural_key(&n.name));
    if nics.is_empty() {
        return out;
    }
    let default_for = |i: u32| nics[i as usize % nics.len()].name.clone();

    // PCIe places of the NICs (from the IB class link, else their PCI address).
    let nic_places: Vec<Option<PciPlace>> = nics
        .iter()
        .map(|n| {
            let base = n.name.split_once('p').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
            let mut dirs = vec![sysfs.join("class/infiniband").join(&n.name).join("device")];
            if let Some((dev, _)) = base {
                dirs.push(sysfs.join("class/infiniband").join(dev).join("device"));
            }
            if let Some(p) = n.pci_bus_id.as_deref().and_then(sysfs_pci_name) {
                dirs.push(sysfs.join("bus/pci/devices").join(p));
            }
            dirs.iter().find_map(|d| pci_place(d))
        })
        .collect();
    let any_nic_place = nic_places.iter().any(Option::is_some);
    // For each GPU, the set of best NICs; GPUs with the same best set share them round-robin.
    let mut tie_sets: Vec<(u32, Vec<usize>)> = Vec::new();
    for g in report.gpus.iter() {
        let place = g
            .pci_bus_id
            .as_deref()
            .and_then(sysfs_pci_name)
            .and_then(|p| if any_nic_place { pci_place(&sysfs.join("bus/pci/devices").join(p)) } else { None });
        let Some(place) = place else {
            out.insert(g.index, default_for(g.index));
            continue;
        };
        let scores: Vec<Option<(usize, bool)>> = nic_places
            .iter()
            .map(|np| {
                np.as_ref()
                    .map(|np| (common_prefix(&place.chain, &np.chain), place.numa.is_some() && place.numa == np.numa))
            })
            .collect();
        let best = scores.iter().flatten().max().copied();
        let Some(best) = best else {
            out.insert(g.index, default_for(g.index));
            continue;
        };
        let set: Vec<usize> = scores.iter().enumerate().filter(|(_, s)| **s == Some(best)).map(|(i, _)| i).collect();
        tie_sets.push((g.index, set));
    }
    tie_sets.sort_by_key(|(g, _)| *g);
    let mut seen: HashMap<Vec<usize>, usize> = HashMap::new();
    for (g, set) in tie_sets {
        let ord = seen.entry(set.clone()).or_insert(0);
        out.insert(g, nics[set[*ord % set.len()]].name.clone());
        *ord += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// the collector

/// What the collector keeps about one process between cycles.
struct Tracked {
    /// `d_ino` of `<procfs>/<pid>` in the listing when `stat` was last read. procfs gives a new
    /// process a new inode, so a pid reused between two cycles shows up here without reading `stat`.
    ino: u64,
    /// The last `stat` read (state, ticks and RSS are stale for processes not read this cycle).
    stat: ProcStat,
    /// Cycle of the last `stat` read.
    read_in: u64,
    /// Ticks at the read before, when that read was in the previous cycle (for CPU deltas).
    prev_ticks: Option<u64>,
    /// First seen this cycle: everything it ran, it ran since the previous cycle.
    new: bool,
    /// What `environ` and `cgroup` said; `None` until read (never read for a zombie).
    ident: Option<Arc<Ident>>,
    /// Read `stat` again next cycle: the process is in a job, under a rank, or young enough to exec.
    hot: bool,
    /// `<pid>/stat`, kept open while the process is hot (at most [`MAX_HELD_STAT_FDS`]).
    stat_fd: Option<std::fs::File>,
}

/// The last sample of a rank whose process we saw, kept to report its exit.
struct Remembered {
    scheduler: Scheduler,
    world_size: Option<u32>,
    sample: RankSample,
    starttime: u64,
    gone_since_ms: Option<i64>,
}

/// What the GPU → NIC map was computed from: GPU indexes and PCI addresses, NIC names, kinds and PCI
/// addresses. The map (PCIe affinity reads sysfs) is computed again only when these change.
type NicMapKey = (Vec<(u32, Option<String>)>, Vec<(String, NicKind, Option<String>)>);

/// Finds training ranks in `/proc`, maps them to GPUs and NICs, and attaches posted progress.
pub struct JobsCollector {
    procfs: PathBuf,
    sysfs: PathBuf,
    progress: ProgressStore,
    cfg: JobsConfig,
    wanted_env: HashSet<String>,
    clk_tck: f64,
    page_size: u64,
    cycle: u64,
    last_full_scan: Option<Instant>,
    procs: HashMap<u32, Tracked>,
    remembered: HashMap<(String, u32), Remembered>,
    /// Busy and total ticks of `/proc/stat` at the previous cycle.
    prev_cpu: Option<(u64, u64)>,
    nic_map: Option<(NicMapKey, Arc<HashMap<u32, String>>)>,
    buf: Vec<u8>,
    warned_environ: bool,
    warned_limits: bool,
    /// Watches live rank pids and wakes the pusher the moment one exits (real `/proc` only).
    exit_watch: Option<ExitWatch>,
    /// Asks the scheduler how jobs ended (real `/proc` only: a fixture's job ids are made up).
    sched: Option<super::sched::SchedWatch>,
    /// Pod uids each Kubernetes job's ranks were seen in, kept while the job is reported.
    job_pods: HashMap<String, std::collections::BTreeSet<String>>,
}

impl JobsCollector {
    pub fn new(procfs_root: PathBuf, progress: ProgressStore, cfg: JobsConfig) -> JobsCollector {
        // SAFETY: sysconf only reads a system constant.
        let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let sysfs = cfg.sysfs_root.clone().unwrap_or_else(|| PathBuf::from("/sys"));
        // Only the host's own processes can be watched: a fixture procfs holds made-up pids.
        let exit_watch = match progress.events() {
            Some(q) if procfs_root == Path::new("/proc") => match ExitWatch::spawn(q.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "rank exits are noticed at the next cycle only: cannot start the exit watcher");
                    None
                }
            },
            _ => None,
        };
        let sched = if procfs_root == Path::new("/proc") {
            match super::sched::SchedWatch::spawn(cfg.scheduler.clone(), progress.events().cloned()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "job states are not asked from the scheduler: cannot start its thread");
                    None
                }
            }
        } else {
            None
        };
        JobsCollector {
            procfs: procfs_root,
            sysfs,
            progress,
            wanted_env: wanted_env(&cfg),
            cfg,
            clk_tck: if clk > 0 { clk as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
            cycle: 0,
            last_full_scan: None,
            procs: HashMap::new(),
            remembered: HashMap::new(),
            prev_cpu: None,
            nic_map: None,
            buf: Vec::with_capacity(4096),
            warned_environ: false,
            warned_limits: false,
            exit_watch,
            sched,
            job_pods: HashMap::new(),
        }
    }

    /// Read sysfs (PCIe affinity) under `root` instead of `/sys` or the config's `sysfs_root`.
    pub fn with_sysfs_root(mut self, root: PathBuf) -> Self {
        self.sysfs = root;
        self.nic_map = None;
        self
    }

    fn read_ident(&mut self, pid: u32) -> Arc<Ident> {
        let dir = self.procfs.join(pid.to_string());
        let env = match read_capped(&dir.join("environ"), MAX_ENVIRON_BYTES) {
            Ok(b) => Some(parse_environ(&b, &self.wanted_env)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if !self.warned_environ {
                    self.warned_environ = true;
                    tracing::warn!(
                        pid,
                        error = %e,
                        "cannot read some processes' environments (reading /proc/<pid>/environ needs \
                         ptrace-read access: root with CAP_SYS_PTRACE, in the host PID namespace); those \
                         processes are matched to jobs through their cgroup and NVML only, with unknown \
                         rank numbers (logged once)"
                    );
                }
                None
            }
            Err(_) => None,
        };
        let cg = match read_small(&dir.join("cgroup"), &mut self.buf) {
            Ok(()) => parse_cgroup(&String::from_utf8_lossy(&self.buf)),
            Err(_) => CgroupIds::default(),
        };
        Arc::new(ident_of(env.as_ref(), &cg, &self.cfg))
    }

    /// `stat` of `pid`, through `held` (the descriptor kept open for a hot process: reading it from
    /// offset 0 makes procfs write the line afresh, with no path walk, open or close) or else opened by
    /// path. Returns the line and the open descriptor, to keep or drop.
    fn read_stat(&mut self, pid: u32, held: Option<std::fs::File>) -> (Option<ProcStat>, Option<std::fs::File>) {
        let file = match held {
            Some(f) => Some(f),
            None => {
                let mut path = self.procfs.join(pid.to_string());
                path.push("stat");
                std::fs::File::open(path).ok()
            }
        };
        let Some(file) = file else { return (None, None) };
        if read_small_at(&file, &mut self.buf).is_err() {
            // ESRCH: the process this descriptor belongs to is gone.
            return (None, None);
        }
        let st = std::str::from_utf8(&self.buf).ok().and_then(parse_stat).filter(|s| s.pid == pid);
        (st, Some(file))
    }

    /// Bring `self.procs` up to date: list `<procfs>`, read `stat` of new and hot processes (all of
    /// them on a full scan), and the identity of processes not identified yet or that exec'd.
    fn refresh(&mut self, uptime_s: Option<f64>) -> Result<(), CollectError> {
        use std::os::unix::fs::DirEntryExt;
        self.cycle += 1;
        let cycle = self.cycle;
        let full = self.last_full_scan.is_none_or(|t| t.elapsed() >= FULL_SCAN_EVERY);
        if full {
            self.last_full_scan = Some(Instant::now());
        }
        let rd = std::fs::read_dir(&self.procfs)
            .map_err(|e| CollectError::Io { what: format!("listing {}", self.procfs.display()), source: e })?;
        let mut listed: Vec<(u32, u64)> = Vec::with_capacity(self.procs.len() + 16);
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            listed.push((pid, ent.ino()));
        }
        let live: HashSet<u32> = listed.iter().map(|(p, _)| *p).collect();
        self.procs.retain(|pid, _| live.contains(pid));

        let own_pid = (self.procfs == Path::new("/proc")).then(std::process::id);
        let mut held = self.procs.values().filter(|t| t.stat_fd.is_some()).count();
        for (pid, ino) in listed {
            let known = self.procs.get(&pid);
            if known.is_some_and(|t| !full && !t.hot && t.ino == ino) {
                continue;
            }
            let was_listed = known.is_some();
            // A descriptor opened for the process that had this pid before is not reused.
            let fd = self.procs.get_mut(&pid).and_then(|t| t.stat_fd.take().filter(|_| t.ino == ino));
            held -= usize::from(fd.is_some());
            let (st, fd) = self.read_stat(pid, fd);
            // A process can exit between listing and reading: forget it quietly.
            let Some(st) = st else {
                self.procs.remove(&pid);
                continue;
            };
            // Kept until the end of the cycle, and after it while the process stays hot.
            let fd = fd.filter(|_| held < MAX_HELD_STAT_FDS);
            held += usize::from(fd.is_some());
            let young = uptime_s.is_some_and(|up| up - st.starttime as f64 / self.clk_tck < REREAD_YOUNG_SECS);
            match self.procs.get_mut(&pid) {
                Some(t) if t.stat.starttime == st.starttime => {
                    t.prev_ticks = (t.read_in + 1 == cycle).then_some(t.stat.ticks);
                    t.new = false;
                    // A zombie has no memory map left (its exec fields read 0): that is no exec.
                    let execd = st.state != 'Z'
                        && (t.stat.comm != st.comm || (st.exec_sig.known() && t.stat.exec_sig != st.exec_sig));
                    // Without the exec fields (fixtures), a young process without a rank is read again:
                    // right after fork, before exec, a worker still carries its launcher's environment.
                    let unsure = !st.exec_sig.known()
                        && young
                        && t.ident.as_ref().is_some_and(|i| i.env_readable && i.rank.is_none());
                    if execd || unsure {
                        t.ident = None;
                    }
                    t.stat = st;
                    t.ino = ino;
                    t.read_in = cycle;
                    t.stat_fd = fd;
                }
                _ => {
                    // New, or a reused pid (another start time): what we knew was someone else's.
                    self.procs.insert(
                        pid,
                        Tracked {
                            ino,
                            stat: st,
                            read_in: cycle,
                            prev_ticks: None,
                            new: !was_listed,
                            ident: None,
                            hot: false,
                            stat_fd: fd,
                        },
                    );
                }
            }
            let needs_ident = self.procs.get(&pid).is_some_and(|t| t.ident.is_none() && t.stat.state != 'Z');
            if needs_ident && Some(pid) != own_pid {
                // A zombie's environ is gone; only an identity read while it lived counts.
                let id = self.read_ident(pid);
                if let Some(t) = self.procs.get_mut(&pid) {
                    t.ident = Some(id);
                }
            }
        }
        Ok(())
    }

    /// The GPU → NIC map, computed again only when the GPUs or NICs of the report changed.
    fn nic_map_for(&mut self, report: &NodeReport) -> Arc<HashMap<u32, String>> {
        let key: NicMapKey = (
            report.gpus.iter().map(|g| (g.index, g.pci_bus_id.clone())).collect(),
            report.nics.iter().map(|n| (n.name.clone(), n.kind, n.pci_bus_id.clone())).collect(),
        );
        if let Some((k, m)) = &self.nic_map
            && *k == key
        {
            return m.clone();
        }
        let m = Arc::new(gpu_nic_map(report, &self.cfg, &self.sysfs));
        self.nic_map = Some((key, m.clone()));
        m
    }
}

/// Read a small file from offset 0 with `pread` into `buf` (see [`read_small`]).
fn read_small_at(f: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        let len = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        let n = match f.read_at(&mut buf[len..], len as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(len);
                continue;
            }
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        };
        buf.truncate(len + n);
        if n == 0 || len + n < cap || buf.len() >= MAX_SMALL_FILE {
            return Ok(());
        }
        buf.reserve(cap);
    }
}

/// Read a small file (procfs `stat`, `cgroup`) into `buf`, reusing its allocation. A short read ends
/// it: procfs hands out such a file in one read, and a regular file short-reads only at its end.
fn read_small(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        let len = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        let n = match f.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        };
        buf.truncate(len + n);
        if n == 0 || len + n < cap {
            return Ok(());
        }
        if buf.len() >= MAX_SMALL_FILE {
            return Ok(());
        }
        buf.reserve(cap);
    }
}

fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `write_bytes` of `<procfs>/<pid>/io`: bytes this process caused to be sent to storage.
fn io_write_bytes(procfs: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(procfs.join(pid.to_string()).join("io")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// The `cpu` line of `/proc/stat`: (busy, total) ticks of all CPUs. Busy is all but idle and iowait,
/// as in the host collector's CPU utilisation.
fn cpu_ticks(procfs: &Path, buf: &mut Vec<u8>) -> Option<(u64, u64)> {
    read_small(&procfs.join("stat"), buf).ok()?;
    let text = std::str::from_utf8(buf).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest is already inside user).
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|v| v.parse::<u64>().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn uptime_secs(procfs: &Path, buf: &mut Vec<u8>) -> Option<f64> {
    read_small(&procfs.join("uptime"), buf).ok()?;
    std::str::from_utf8(buf).ok()?.split_whitespace().next()?.parse().ok()
}

/// A job being assembled: scheduler, world size, ranks by number.
type JobParts = (Scheduler, Option<u32>, BTreeMap<u32, RankSample>);

/// One process that may be a rank.
struct Candidate {
    job: String,
    rank: u32,
    source: RankSource,
}

impl Collector for JobsCollector {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let now = if report.timestamp_ms > 0 { report.timestamp_ms } else { crate::progress::now_ms() };
        let uptime = uptime_secs(&self.procfs, &mut self.buf);
        let cpu = cpu_ticks(&self.procfs, &mut self.buf);
        self.refresh(uptime)?;
        let cycle = self.cycle;
        let procs = &self.procs;

        // NVML: pid → GPUs.
        let mut nvml: HashMap<u32, Vec<u32>> = HashMap::new();
        for g in &report.gpus {
            for p in &g.processes {
                nvml.entry(p.pid).or_default().push(g.index);
            }
        }

        // Candidates: processes with a job and a rank.
        let mut cands: HashMap<u32, Candidate> = HashMap::new();
        for (pid, t) in procs {
            let Some(id) = &t.ident else { continue };
            let Some(job) = &id.job else { continue };
            if let Some((rank, source)) = id.rank {
                cands.insert(*pid, Candidate { job: job.clone(), rank, source });
            } else if !id.env_readable {
                // Environment unreadable: a process of a Slurm job or pod on a GPU is a rank.
                if let (Some(cg_job), Some(gpus)) = (&id.cgroup_job, nvml.get(pid))
                    && let Some(&g) = gpus.iter().min()
                {
                    cands.insert(*pid, Candidate { job: cg_job.clone(), rank: g, source: RankSource::GpuIndex });
                }
            }
        }
        let parent = |pid: u32| -> Option<u32> {
            let st = &procs.get(&pid)?.stat;
            (st.ppid != 0 && st.ppid != pid).then_some(st.ppid)
        };
        let ancestors = |pid: u32| -> Vec<u32> {
            let mut out = Vec::new();
            let mut cur = pid;
            while out.len() < MAX_TREE_DEPTH {
                let Some(p) = parent(cur) else { break };
                out.push(p);
                cur = p;
            }
            out
        };
        // Launchers: a candidate with a descendant holding another rank of the same job, or a
        // framework rank below a Slurm-only one.
        let mut launchers: HashSet<u32> = HashSet::new();
        for (pid, c) in &cands {
            for a in ancestors(*pid) {
                if let Some(ac) = cands.get(&a)
                    && ac.job == c.job
                    && (ac.rank != c.rank || (ac.source == RankSource::Slurm && c.source == RankSource::Framework))
                {
                    launchers.insert(a);
                }
            }
        }
        // Roots: candidates (not launchers) with no ancestor of the same (job, rank).
        let mut roots_by_key: HashMap<(String, u32), Vec<u32>> = HashMap::new();
        for (pid, c) in &cands {
            if launchers.contains(pid) {
                continue;
            }
            let child = ancestors(*pid)
                .iter()
                .any(|a| !launchers.contains(a) && cands.get(a).is_some_and(|ac| ac.job == c.job && ac.rank == c.rank));
            if !child {
                roots_by_key.entry((c.job.clone(), c.rank)).or_default().push(*pid);
            }
        }
        // Owner rank root of every process (itself, or its nearest root ancestor).
        let mut root_of: HashMap<u32, (String, u32)> = HashMap::new();
        let mut rank_root: HashMap<(String, u32), u32> = HashMap::new();
        for (key, pids) in roots_by_key {
            // Two unrelated processes claim one rank: the one on a GPU, then the youngest.
            let best = pids
                .iter()
                .copied()
                .max_by_key(|p| (nvml.contains_key(p), procs.get(p).map(|t| t.stat.starttime).unwrap_or(0), *p));
            if let Some(b) = best {
                root_of.insert(b, key.clone());
                rank_root.insert(key, b);
            }
        }
        // Each chain of parents is walked once: what a process resolves to, its children reuse.
        let mut owner: HashMap<u32, Option<u32>> = HashMap::with_capacity(procs.len());
        if !root_of.is_empty() {
            let mut path = Vec::new();
            for pid in procs.keys() {
                path.clear();
                let mut cur = Some(*pid);
                let mut found = None;
                while let Some(p) = cur {
                    if root_of.contains_key(&p) {
                        found = Some(p);
                        break;
                    }
                    if let Some(known) = owner.get(&p) {
                        found = *known;
                        break;
                    }
                    if path.len() >= MAX_TREE_DEPTH {
                        break;
                    }
                    path.push(p);
                    cur = parent(p);
                }
                for p in &path {
                    owner.insert(*p, found);
                }
                if let Some(f) = found {
                    owner.insert(f, Some(f));
                }
            }
        }
        let owned = |pid: &u32| owner.get(pid).is_some_and(Option::is_some);

        // CPU outside jobs: the host's busy ticks less those of job processes (which are read every
        // cycle), so the many processes outside jobs need no reading at all.
        let mut job_ticks = 0u64;
        let mut hot: Vec<(u32, bool)> = Vec::with_capacity(procs.len());
        for (pid, t) in procs {
            let in_job = owned(pid) || t.ident.as_ref().is_some_and(|i| i.job.is_some());
            if in_job && t.read_in == cycle {
                job_ticks += match t.prev_ticks {
                    Some(prev) => t.stat.ticks.saturating_sub(prev),
                    None if t.new => t.stat.ticks,
                    None => 0,
                };
            }
            let young = uptime.is_some_and(|up| up - t.stat.starttime as f64 / self.clk_tck < REREAD_YOUNG_SECS);
            let may_exec = young && t.stat.state != 'Z' && t.ident.as_ref().is_none_or(|i| i.rank.is_none());
            hot.push((*pid, in_job || may_exec));
        }
        if let (Some((prev_busy, prev_total)), Some((busy, total))) = (self.prev_cpu, cpu)
            && total > prev_total
        {
            let non_job = busy.saturating_sub(prev_busy).saturating_sub(job_ticks);
            let pct = (non_job as f64 * 100.0 / (total - prev_total) as f64).clamp(0.0, 100.0);
            report.host.get_or_insert_with(Default::default).cpu_non_job_pct = Some(pct);
        }
        self.prev_cpu = cpu;

        // GPUs per rank: NVML over the rank's whole process tree.
        let mut tree_gpus: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, gpus) in &nvml {
            if let Some(Some(root)) = owner.get(pid) {
                tree_gpus.entry(*root).or_default().extend(gpus);
            }
        }
        // Bytes written to storage per rank: `/proc/<pid>/io` over the rank's process tree (a checkpoint
        // written by a helper process counts). Unreadable (another user's process without privilege):
        // unknown. The sum dips when a helper exits, which a rate reader sees as a reset.
        let roots: HashSet<u32> = rank_root.values().copied().collect();
        let mut tree_io: HashMap<u32, u64> = HashMap::new();
        for (pid, root) in &owner {
            if let Some(root) = root
                && roots.contains(root)
                && let Some(w) = io_write_bytes(&self.procfs, *pid)
            {
                *tree_io.entry(*root).or_default() += w;
            }
        }
        drop(owner);
        for (pid, h) in hot {
            if let Some(t) = self.procs.get_mut(&pid) {
                t.hot = h;
                if !h {
                    t.stat_fd = None;
                }
            }
        }
        let nic_map =
            if rank_root.is_empty() && self.remembered.is_empty() { Arc::default() } else { self.nic_map_for(report) };

        // Alive (or zombie) ranks.
        let mut jobs: BTreeMap<String, JobParts> = BTreeMap::new();
        let mut alive_keys: Vec<(String, u32)> = Vec::new();
        for ((job, rank), pid) in &rank_root {
            let Some(t) = self.procs.get(pid) else { continue };
            let (st, Some(id)) = (&t.stat, &t.ident) else { continue };
            let mut gpus = tree_gpus.remove(pid).unwrap_or_default();
            if gpus.is_empty() && id.env_readable {
                gpus = gpus_from_env(id, &report.gpus);
            }
            gpus.sort_unstable();
            gpus.dedup();
            let state = proc_state(st.state);
            let exit_code = (state == ProcState::Zombie).then(|| st.exit_status.map(decode_wait_status)).flatten();
            let sample = RankSample {
                rank: *rank,
                local_rank: id.local_rank,
                pid: Some(*pid),
                nic: gpus.first().and_then(|g| nic_map.get(g).cloned()),
                gpus,
                state,
                cpu_seconds: Some(st.ticks as f64 / self.clk_tck),
                rss_bytes: Some(st.rss_pages.saturating_mul(self.page_size)),
                exit_code,
                io_write_bytes: tree_io.get(pid).copied(),
                progress: None,
            };
            let key = (job.clone(), *rank);
            if state != ProcState::Zombie {
                alive_keys.push(key.clone());
            }
            // A different process now holds a rank we knew: the old one exited.
            if let Some(old) = self.remembered.get(&key) {
                let replaced = old.sample.pid != Some(*pid) || old.starttime != st.starttime;
                if replaced && old.gone_since_ms.is_none() && old.sample.state != ProcState::Zombie {
                    report.events.push(exit_event(now, job, &old.sample, None));
                }
                if state == ProcState::Zombie && old.sample.state != ProcState::Zombie && old.sample.pid == Some(*pid) {
                    report.events.push(exit_event(now, job, &old.sample, exit_code));
                }
            }
            if id.scheduler == Scheduler::Kubernetes
                && let Some(uid) = &id.cgroup_job
            {
                self.job_pods.entry(job.clone()).or_default().insert(uid.clone());
            }
            let entry = jobs.entry(job.clone()).or_insert((id.scheduler, None, BTreeMap::new()));
            entry.1 = entry.1.max(id.world_size);
            if entry.0 == Scheduler::Unknown {
                entry.0 = id.scheduler;
            }
            self.remembered.insert(
                key,
                Remembered {
                    scheduler: id.scheduler,
                    world_size: id.world_size,
                    sample: sample.clone(),
                    starttime: st.starttime,
                    gone_since_ms: None,
                },
            );
            entry.2.insert(*rank, sample);
        }

        // Ranks that vanished: reported as exited for a while.
        let retain_ms = (self.cfg.exited_retain_secs as i64).saturating_mul(1000);
        let mut forget = Vec::new();
        for (key, mem) in self.remembered.iter_mut() {
            if rank_root.contains_key(key) {
                continue;
            }
            let gone_since = *mem.gone_since_ms.get_or_insert_with(|| {
                let code = (mem.sample.state == ProcState::Zombie).then_some(mem.sample.exit_code).flatten();
                if mem.sample.state != ProcState::Zombie {
                    report.events.push(exit_event(now, &key.0, &mem.sample, code));
                }
                mem.sample.state = ProcState::Exited;
                mem.sample.exit_code = code;
                now
            });
            if now - gone_since > retain_ms {
                forget.push(key.clone());
                continue;
            }
            let entry = jobs.entry(key.0.clone()).or_insert((mem.scheduler, None, BTreeMap::new()));
            entry.1 = entry.1.max(mem.world_size);
            entry.2.entry(key.1).or_insert_with(|| mem.sample.clone());
        }
        for k in forget {
            self.remembered.remove(&k);
        }

        // Progress: attach to ranks; ranks that post but whose process is not found still appear.
        self.progress.touch(alive_keys.iter().map(|(j, r)| (j.as_str(), *r)), now);
        self.progress.expire(now);
        for (job, rank, p) in self.progress.snapshot(now) {
            let entry = jobs.entry(job).or_insert((Scheduler::Unknown, None, BTreeMap::new()));
            let sample = entry.2.entry(rank).or_insert_with(|| RankSample {
                rank,
                state: if p.status == ProgressStatus::Exited { ProcState::Exited } else { ProcState::Unknown },
                ..Default::default()
            });
            if p.status == ProgressStatus::Exited
                && sample.exit_code.is_none()
                && matches!(sample.state, ProcState::Exited | ProcState::Zombie | ProcState::Unknown)
            {
                sample.exit_code = p.exit_code;
            }
            sample.progress = Some(p);
        }

        // Into the report, within the protocol's limits.
        if (jobs.len() > MAX_JOBS || jobs.values().any(|j| j.2.len() > MAX_RANKS_PER_JOB)) && !self.warned_limits {
            self.warned_limits = true;
            tracing::warn!(
                jobs = jobs.len(),
                max_jobs = MAX_JOBS,
                max_ranks_per_job = MAX_RANKS_PER_JOB,
                "more jobs or ranks than a report may carry; the rest are left out (logged once)"
            );
        }
        // Jobs and ranks with a process here come first when the limits bite, so posts for made-up
        // ids cannot push real jobs out of the report.
        let has_pid = |r: &RankSample| r.pid.is_some();
        let mut list: Vec<JobSample> = jobs
            .into_iter()
            .map(|(job_id, (scheduler, world_size, ranks))| {
                let mut ranks: Vec<RankSample> = ranks.into_values().collect();
                if ranks.len() > MAX_RANKS_PER_JOB {
                    ranks.sort_by_key(|r| (!has_pid(r), r.rank));
                    ranks.truncate(MAX_RANKS_PER_JOB);
                    ranks.sort_by_key(|r| r.rank);
                }
                JobSample { job_id, scheduler, world_size, sched_state: None, sched_exit_code: None, ranks }
            })
            .collect();
        if list.len() > MAX_JOBS {
            list.sort_by(|a, b| {
                let live = |j: &JobSample| j.ranks.iter().any(has_pid);
                (!live(a), &a.job_id).cmp(&(!live(b), &b.job_id))
            });
            list.truncate(MAX_JOBS);
            list.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        }
        self.job_pods.retain(|j, _| list.iter().any(|x| &x.job_id == j));
        if let Some(sw) = &self.sched {
            let wanted = list
                .iter()
                .map(|j| {
                    let gone = j.ranks.iter().any(|r| matches!(r.state, ProcState::Exited | ProcState::Zombie));
                    let pods = self.job_pods.get(&j.job_id).cloned().unwrap_or_default();
                    (j.job_id.clone(), super::sched::Wanted { scheduler: j.scheduler, pods, ending: gone })
                })
                .collect();
            let known = sw.update(wanted);
            for j in &mut list {
                if let Some(s) = known.get(&j.job_id) {
                    super::sched::apply(j, *s);
                }
            }
        }
        if let Some(w) = &self.exit_watch {
            let live = |r: &&RankSample| !matches!(r.state, ProcState::Exited | ProcState::Zombie);
            w.set(list.iter().flat_map(|j| j.ranks.iter().filter(live).filter_map(|r| r.pid)).collect());
        }
        report.jobs = list;
        report.dropped.progress = self.progress.dropped();
        Ok(())
    }
}

/// How often the exit watcher takes up a changed set of rank pids, and, where `pidfd_open` is not
/// available (Linux before 5.3), how often it checks each pid with `kill(pid, 0)`. Half a second keeps
/// an exit under a second old when the pusher hears of it, at two wake-ups a second of a small thread.
const EXIT_WATCH_TICK_MS: i32 = 500;

/// A small thread that holds a pidfd for each live rank process and wakes the pusher (an urgent
/// report, whose jobs collection then finds the exit, the exit code when the process is a zombie, and
/// emits `process_exit`) as soon as one becomes readable, that is, the process ended.
struct ExitWatch {
    wanted: Arc<std::sync::Mutex<Vec<u32>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ExitWatch {
    fn spawn(events: Arc<crate::events::EventQueue>) -> std::io::Result<ExitWatch> {
        let wanted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, st) = (wanted.clone(), stop.clone());
        std::thread::Builder::new().name("exit-watch".into()).spawn(move || exit_watch_loop(&w, &st, &events))?;
        Ok(ExitWatch { wanted, stop })
    }

    /// The pids to watch from now on (the live ranks of the latest cycle).
    fn set(&self, pids: Vec<u32>) {
        *self.wanted.lock().unwrap_or_else(|p| p.into_inner()) = pids;
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a watched pid is followed.
enum Watched {
    Pidfd(std::os::fd::OwnedFd),
    /// No pidfd support: `kill(pid, 0)` and the `stat` state every tick.
    Probe,
}

/// Open a pidfd for `pid`: `Ok(None)` when the kernel has no `pidfd_open`, an error `ESRCH` when the
/// process is already gone.
fn pidfd_open(pid: u32) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let Ok(p) = libc::pid_t::try_from(pid) else { return Err(std::io::Error::from_raw_os_error(libc::ESRCH)) };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
}

/// Whether `pid` is gone or a zombie, by `kill(pid, 0)` and `/proc/<pid>/stat`.
fn probe_gone(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else { return true };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => st.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn exit_watch_loop(
    wanted: &std::sync::Mutex<Vec<u32>>,
    stop: &std::sync::atomic::AtomicBool,
    events: &crate::events::EventQueue,
) {
    use std::os::fd::AsRawFd;
    let mut watched: HashMap<u32, Watched> = HashMap::new();
    let mut gone: Vec<u32> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let want: HashSet<u32> = wanted.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        watched.retain(|p, _| want.contains(p));
        for &p in &want {
            if watched.contains_key(&p) {
                continue;
            }
            match pidfd_open(p) {
                Ok(Some(fd)) => {
                    watched.insert(p, Watched::Pidfd(fd));
                }
                Ok(None) => {
                    watched.insert(p, Watched::Probe);
                }
                Err(_) => gone.push(p), // gone between the cycle and now
            }
        }
        let mut fds: Vec<(u32, libc::pollfd)> = watched
            .iter()
            .filter_map(|(p, w)| match w {
                Watched::Pidfd(fd) => Some((*p, libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })),
                Watched::Probe => None,
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(EXIT_WATCH_TICK_MS as u64));
        } else {
            let mut raw: Vec<libc::pollfd> = fds.iter().map(|(_, f)| *f).collect();
            // SAFETY: `raw` is a valid array of `raw.len()` pollfd structs for the duration of the call.
            let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, EXIT_WATCH_TICK_MS) };
            if n > 0 {
                for (i, f) in raw.iter().enumerate() {
                    if f.revents != 0 {
                        gone.push(fds[i].0);
                    }
                }
            }
            fds.clear();
        }
        for (p, w) in &watched {
            if matches!(w, Watched::Probe) && probe_gone(*p) {
                gone.push(*p);
            }
        }
        if !gone.is_empty() {
            {
                let mut w = wanted.lock().unwrap_or_else(|p| p.into_inner());
                w.retain(|p| !gone.contains(p));
            }
            for p in &gone {
                watched.remove(p);
            }
            tracing::info!(pids = ?gone, "rank process exited: urgent report");
            gone.clear();
            events.wake();
        }
    }
}

fn exit_event(now: i64, job: &str, s: &RankSample, code: Option<i32>) -> Event {
    let how = match code {
        Some(0) => "exited with code 0".to_string(),
        Some(c) if c < 0 => format!("was killed by signal {}", -c),
        Some(c) => format!("exited with code {c}"),
        None => "is gone (exit code unknown)".to_string(),
    };
    Event {
        ts_ms: now,
        source: EventSource::Agent,
        class: faultline_proto::EventClass::ProcessExit,
        severity: if code == Some(0) { Severity::Info } else { Severity::Warning },
        // The exit concerns the rank, not its GPU: naming the GPU would read as GPU evidence.
        component: None,
        pid: s.pid,
        count: 1,
        message: format!(
            "rank {} of job {job} (pid {}) {how}",
            s.rank,
            s.pid.map(|p| p.to_string()).unwrap_or_default()
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_rank_wakes_the_pusher() {
        let q = Arc::new(crate::events::EventQueue::new(16));
        let store = ProgressStore::new().with_events(q.clone());
        let mut col = JobsCollector::new(PathBuf::from("/proc"), store, JobsConfig::default());
        let job = format!("exitwatch-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .env("SLURM_JOB_ID", &job)
            .env("RANK", "0")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut r = crate::collect::blank_report("n", 1, 1000);
            col.collect(&mut r).expect("collect");
            if r.jobs.iter().any(|j| j.job_id == job && j.ranks.iter().any(|k| k.pid == Some(pid))) {
                break;
            }
            assert!(Instant::now() < deadline, "the child never showed as a rank");
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().expect("kill");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let woke = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), q.urgent()).await.is_ok() });
        let _ = child.wait();
        assert!(woke, "the rank's exit must wake the pusher without waiting for a cycle");
        // The cycle the wake-up triggers reports the exit.
        let mut r = crate::collect::blank_report("n", 1, 1000);
        col.collect(&mut r).expect("collect");
        assert!(
            r.events.iter().any(|e| e.class == faultline_proto::EventClass::ProcessExit && e.pid == Some(pid)),
            "{:#?}",
            r.events
        );
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 98765 \
                    1000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 256";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.pid, 1234);
        assert_eq!(st.comm, "my (weird) proc");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.ticks, 300);
        assert_eq!(st.starttime, 98765);
        assert_eq!(st.rss_pages, 2560);
        assert_eq!(st.exit_status, Some(256));
        assert_eq!(decode_wait_status(256), 1);
        assert_eq!(decode_wait_status(9), -9);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn cgroups_give_slurm_job_and_pod_uid() {
        let v1 = "12:cpuset:/slurm/uid_1000/job_4242/step_0/task_1\n11:memory:/slurm/uid_1000/job_4242/step_0";
        assert_eq!(parse_cgroup(v1).slurm_job.as_deref(), Some("4242"));
        let v2 = "0::/system.slice/slurmstepd.scope/job_77/step_0/user/task_0";
        assert_eq!(parse_cgroup(v2).slurm_job.as_deref(), Some("77"));
        let k8s = "0::/kubepods/burstable/pod1b2c3d4e-0000-1111-2222-333344445555/abcdef0123";
        assert_eq!(parse_cgroup(k8s).pod_uid.as_deref(), Some("1b2c3d4e-0000-1111-2222-333344445555"));
        let sysd = "0::/kubepods.slice/kubepods-besteffort.slice/\
                    kubepods-besteffort-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-ab.scope";
        assert_eq!(parse_cgroup(sysd).pod_uid.as_deref(), Some("1b2c3d4e-0000-1111-2222-333344445555"));
        assert_eq!(parse_cgroup("0::/user.slice/user-1000.slice/session-3.scope"), CgroupIds::default());
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn identity_from_slurm_torchrun_and_config() {
        let cfg = JobsConfig::default();
        let id = ident_of(
            Some(&env(&[
                ("SLURM_JOB_ID", "4242"),
                ("SLURM_PROCID", "3"),
                ("SLURM_LOCALID", "1"),
                ("SLURM_NTASKS", "8"),
                ("SLURM_STEP_ID", "0"),
            ])),
            &CgroupIds::default(),
            &cfg,
        );
        assert_eq!(id.job.as_deref(), Some("4242"));
        assert_eq!(id.scheduler, Scheduler::Slurm);
        assert_eq!(id.rank, Some((3, RankSource::Slurm)));
        assert_eq!((id.local_rank, id.world_size), (Some(1), Some(8)));
        // The batch script and the `srun` client carry SLURM_PROCID=0 but no step: not ranks.
        let id = ident_of(
            Some(&env(&[("SLURM_JOB_ID", "4242"), ("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")])),
            &CgroupIds::default(),
            &cfg,
        );
        assert_eq!((id.job.as_deref(), id.rank), (Some("4242"), None));

        // torchrun under Slurm: the framework rank wins, the world is torch's.
        let id = ident_of(
            Some(&env(&[
                ("SLURM_JOB_ID", "9"),
                ("SLURM_PROCID", "1"),
                ("SLURM_NTASKS", "2"),
                ("RANK", "13"),
                ("LOCAL_RANK", "5"),
                ("WORLD_SIZE", "16"),
            ])),
            &CgroupIds::default(),
            &cfg,
        );
        assert_eq!((id.rank, id.local_rank, id.world_size), (Some((13, RankSource::Framework)), Some(5), Some(16)));

        let id = ident_of(
            Some(&env(&[
                ("TORCHELASTIC_RUN_ID", "none"),
                ("RANK", "0"),
                ("MASTER_ADDR", "n1"),
                ("MASTER_PORT", "29500"),
            ])),
            &CgroupIds::default(),
            &cfg,
        );
        assert_eq!(id.job.as_deref(), Some("torch-n1-29500"));
        assert_eq!(id.scheduler, Scheduler::Torchrun);

        let cfg =
            JobsConfig { job_id_env: vec!["MY_JOB".into()], rank_env: vec!["MY_RANK".into()], ..Default::default() };
        let id = ident_of(
            Some(&env(&[("MY_JOB", "llm-70b"), ("MY_RANK", "7"), ("RANK", "1")])),
            &CgroupIds::default(),
            &cfg,
        );
        assert_eq!((id.job.as_deref(), id.rank), (Some("llm-70b"), Some((7, RankSource::Framework))));

        // Unreadable environment: the cgroup names the job, nothing names the rank.
        let cg = CgroupIds { slurm_job: Some("55".into()), pod_uid: None };
        let id = ident_of(None, &cg, &JobsConfig::default());
        assert_eq!((id.job.as_deref(), id.rank, id.env_readable), (Some("55"), None, false));
    }

    fn gpu(i: u32, uuid: &str) -> GpuSample {
        GpuSample { index: i, uuid: uuid.into(), ..Default::default() }
    }

    #[test]
    fn visible_devices_map_to_gpu_indexes() {
        let gpus = vec![gpu(0, "GPU-aaaa-0"), gpu(1, "GPU-bbbb-1"), gpu(2, "GPU-cccc-2"), gpu(3, "GPU-dddd-3")];
        let id = |cvd: Option<&str>, nvd: Option<&str>, lr: Option<u32>| Ident {
            cuda_visible: cvd.map(str::to_string),
            nvidia_visible: nvd.map(str::to_string),
            local_rank: lr,
            env_readable: true,
            ..Default::default()
        };
        assert_eq!(gpus_from_env(&id(Some("2"), None, Some(0)), &gpus), vec![2]);
        assert_eq!(gpus_from_env(&id(Some("0,1,2,3"), None, Some(3)), &gpus), vec![3]);
        assert_eq!(gpus_from_env(&id(Some("1,3"), None, None), &gpus), vec![1, 3]);
        assert_eq!(gpus_from_env(&id(Some("GPU-cccc"), None, None), &gpus), vec![2]);
        assert_eq!(gpus_from_env(&id(Some(""), None, Some(1)), &gpus), Vec::<u32>::new());
        assert_eq!(gpus_from_env(&id(Some("1,bogus,2"), None, None), &gpus), vec![1]);
        assert_eq!(gpus_from_env(&id(Some("0"), Some("GPU-dddd-3"), None), &gpus), vec![3]);
        assert_eq!(gpus_from_env(&id(None, None, Some(2)), &gpus), vec![2]);
        assert_eq!(gpus_from_env(&id(None, None, Some(9)), &gpus), Vec::<u32>::new());
        assert_eq!(gpus_from_env(&id(None, None, Some(5)), &[]), vec![5], "no GPU list (--no-gpu): trust LOCAL_RANK");
    }

    #[test]
    fn natural_order_puts_mlx5_2_before_mlx5_10() {
        let mut v = vec!["mlx5_10", "mlx5_2", "mlx5_0"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, vec!["mlx5_0", "mlx5_2", "mlx5_10"]);
    }

    fn nic(name: &str) -> faultline_proto::NicSample {
        faultline_proto::NicSample { name: name.into(), ..Default::default() }
    }

    #[test]
    fn default_nic_map_is_gpu_mod_nics() {
        let mut r = crate::collect::blank_report("n", 1, 1000);
        r.gpus = (0..4).map(|i| gpu(i, "")).collect();
        r.nics = vec![nic("mlx5_1"), nic("mlx5_0")];
        r.nics.push(faultline_proto::NicSample { kind: NicKind::Netdev, ..nic("eth0") });
        let m = gpu_nic_map(&r, &JobsConfig::default(), Path::new("/nonexistent"));
        assert_eq!(m[&0], "mlx5_0");
        assert_eq!(m[&1], "mlx5_1");
        assert_eq!(m[&2], "mlx5_0");
        let cfg = JobsConfig { gpu_nics: vec!["mlx5_1".into(), "mlx5_1".into()], ..Default::default() };
        assert_eq!(gpu_nic_map(&r, &cfg, Path::new("/nonexistent"))[&0], "mlx5_1");
    }

    /// A fake sysfs: two PCIe switches, each with two GPUs and one NIC, on two NUMA nodes.
    #[test]
    fn pcie_affinity_picks_the_nic_under_the_same_switch() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let dev = |chain: &[&str], numa: i32| -> PathBuf {
            let mut p = root.join("devices");
            for c in chain {
                p = p.join(c);
            }
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("numa_node"), format!("{numa}\n")).unwrap();
            p
        };
        let link = |target: &Path, at: PathBuf| {
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, at).unwrap();
        };
        let sw0 = ["pci0000:00", "0000:00:01.0", "0000:01:00.0"];
        let sw1 = ["pci0000:80", "0000:80:01.0", "0000:81:00.0"];
        let g = |sw: &[&str; 3], port: &str, bdf: &str, numa| {
            let mut c: Vec<&str> = sw.to_vec();
            c.push(port);
            c.push(bdf);
            let p = dev(&c, numa);
            link(&p, root.join("bus/pci/devices").join(bdf));
        };
        g(&sw0, "0000:02:00.0", "0000:03:00.0", 0); // GPU 0
        g(&sw0, "0000:02:01.0", "0000:04:00.0", 0); // GPU 1
        g(&sw1, "0000:82:00.0", "0000:83:00.0", 1); // GPU 2
        g(&sw1, "0000:82:01.0", "0000:84:00.0", 1); // GPU 3
        let n0 = dev(&["pci0000:00", "0000:00:01.0", "0000:01:00.0", "0000:02:02.0", "0000:05:00.0"], 0);
        let n1 = dev(&["pci0000:80", "0000:80:01.0", "0000:81:00.0", "0000:82:02.0", "0000:85:00.0"], 1);
        // Named so that natural order would give the opposite of affinity.
        link(&n1, root.join("class/infiniband/mlx5_0/device"));
        link(&n0, root.join("class/infiniband/mlx5_1/device"));

        let mut r = crate::collect::blank_report("n", 1, 1000);
        for (i, bdf) in
            ["00000000:03:00.0", "00000000:04:00.0", "00000000:83:00.0", "00000000:84:00.0"].iter().enumerate()
        {
            r.gpus.push(GpuSample { index: i as u32, pci_bus_id: Some(bdf.to_string()), ..Default::default() });
        }
        r.nics = vec![nic("mlx5_0"), nic("mlx5_1")];
        let m = gpu_nic_map(&r, &JobsConfig::default(), root);
        assert_eq!(m[&0], "mlx5_1");
        assert_eq!(m[&1], "mlx5_1");
        assert_eq!(m[&2], "mlx5_0");
        assert_eq!(m[&3], "mlx5_0");
    }
}
