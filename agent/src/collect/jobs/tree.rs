//! The process tree → ranks (steps 4 and 5 of the module doc): which processes are launchers, which
//! one process is each (job, rank), and which rank every other process belongs to.

use super::*;

/// One process that may be a rank.
pub(super) struct Candidate {
    job: String,
    rank: u32,
    source: RankSource,
}

/// The ranks of one cycle and who belongs to them.
pub(super) struct RankTree {
    /// (job, rank) → the rank's process.
    pub(super) rank_root: HashMap<(String, u32), u32>,
    /// Every process → the rank process it belongs to (itself, or its nearest rank ancestor), if any.
    pub(super) owner: HashMap<u32, Option<u32>>,
}

/// The processes NVML lists on each GPU, as pid → GPU indexes.
pub(super) fn nvml_pids(gpus: &[GpuSample]) -> HashMap<u32, Vec<u32>> {
    let mut nvml: HashMap<u32, Vec<u32>> = HashMap::new();
    for g in gpus {
        for p in &g.processes {
            nvml.entry(p.pid).or_default().push(g.index);
        }
    }
    nvml
}

impl RankTree {
    /// Find the ranks among `procs`; `nvml` is pid → GPUs.
    pub(super) fn build(procs: &HashMap<u32, Tracked>, nvml: &HashMap<u32, Vec<u32>>) -> RankTree {
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
        RankTree { rank_root, owner }
    }

    /// Whether `pid` belongs to a rank.
    pub(super) fn owned(&self, pid: &u32) -> bool {
        self.owner.get(pid).is_some_and(Option::is_some)
    }

    /// GPUs per rank process: NVML over the rank's whole process tree.
    pub(super) fn gpus(&self, nvml: &HashMap<u32, Vec<u32>>) -> HashMap<u32, Vec<u32>> {
        let mut tree_gpus: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, gpus) in nvml {
            if let Some(Some(root)) = self.owner.get(pid) {
                tree_gpus.entry(*root).or_default().extend(gpus);
            }
        }
        tree_gpus
    }

    /// Bytes written to storage per rank process: `/proc/<pid>/io` over the rank's process tree (a
    /// checkpoint written by a helper process counts). Unreadable (another user's process without
    /// privilege): unknown. The sum dips when a helper exits, which a rate reader sees as a reset.
    pub(super) fn io_write_bytes(&self, procfs: &Path) -> HashMap<u32, u64> {
        let roots: HashSet<u32> = self.rank_root.values().copied().collect();
        let mut tree_io: HashMap<u32, u64> = HashMap::new();
        for (pid, root) in &self.owner {
            if let Some(root) = root
                && roots.contains(root)
                && let Some(w) = io_write_bytes(procfs, *pid)
            {
                *tree_io.entry(*root).or_default() += w;
            }
        }
        tree_io
    }
}
