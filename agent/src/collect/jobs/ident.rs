//! Which job and rank a process belongs to, from its environment and cgroup, and which GPUs its
//! environment names.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RankSource {
    /// Set by the training framework or MPI (`RANK`, `OMPI_COMM_WORLD_RANK`, config names).
    Framework,
    /// `SLURM_PROCID`: the Slurm task, which may be a launcher of framework ranks.
    Slurm,
    /// Unknown rank (environment unreadable): the lowest GPU index stands in for it.
    GpuIndex,
}

/// What a process's environment and cgroup say about it. Cached per (pid, start time).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Ident {
    pub(super) job: Option<String>,
    pub(super) scheduler: Scheduler,
    pub(super) rank: Option<(u32, RankSource)>,
    pub(super) local_rank: Option<u32>,
    pub(super) world_size: Option<u32>,
    pub(super) cuda_visible: Option<String>,
    pub(super) nvidia_visible: Option<String>,
    /// False when `environ` could not be read (permissions): cgroup only.
    pub(super) env_readable: bool,
    /// Slurm job or pod found in the cgroup (used when the environment is unreadable).
    pub(super) cgroup_job: Option<String>,
}

/// (rank, local rank, world size) variable families, in order of preference.
pub(super) const RANK_FAMILIES: &[(&str, &str, &str, RankSource)] = &[
    ("RANK", "LOCAL_RANK", "WORLD_SIZE", RankSource::Framework),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", RankSource::Framework),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", RankSource::Framework),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", RankSource::Slurm),
];

pub(super) fn ident_of(env: Option<&HashMap<String, String>>, cg: &CgroupIds, cfg: &JobsConfig) -> Ident {
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
pub(super) fn wanted_env(cfg: &JobsConfig) -> HashSet<String> {
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
pub(super) fn parse_environ(bytes: &[u8], wanted: &HashSet<String>) -> HashMap<String, String> {
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
pub(super) fn gpus_from_env(id: &Ident, gpus: &[GpuSample]) -> Vec<u32> {
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
