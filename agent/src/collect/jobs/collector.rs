//! The jobs collector: what it keeps between cycles, and one cycle, phase by phase.

use super::*;

/// What the collector keeps about one process between cycles.
pub(super) struct Tracked {
    /// `d_ino` of `<procfs>/<pid>` in the listing when `stat` was last read. procfs gives a new
    /// process a new inode, so a pid reused between two cycles shows up here without reading `stat`.
    pub(super) ino: u64,
    /// The last `stat` read (state, ticks and RSS are stale for processes not read this cycle).
    pub(super) stat: ProcStat,
    /// Cycle of the last `stat` read.
    pub(super) read_in: u64,
    /// Ticks at the read before, when that read was in the previous cycle (for CPU deltas).
    pub(super) prev_ticks: Option<u64>,
    /// First seen this cycle: everything it ran, it ran since the previous cycle.
    pub(super) new: bool,
    /// What `environ` and `cgroup` said; `None` until read (never read for a zombie).
    pub(super) ident: Option<Arc<Ident>>,
    /// Read `stat` again next cycle: the process is in a job, under a rank, or young enough to exec.
    pub(super) hot: bool,
    /// `<pid>/stat`, kept open while the process is hot (at most [`MAX_HELD_STAT_FDS`]).
    pub(super) stat_fd: Option<std::fs::File>,
}

/// The last sample of a rank whose process we saw, kept to report its exit.
pub(super) struct Remembered {
    pub(super) scheduler: Scheduler,
    pub(super) world_size: Option<u32>,
    pub(super) sample: RankSample,
    pub(super) starttime: u64,
    pub(super) gone_since_ms: Option<i64>,
}

/// What the GPU → NIC map was computed from: GPU indexes and PCI addresses, NIC names, kinds and PCI
/// addresses. The map (PCIe affinity reads sysfs) is computed again only when these change.
pub(super) type NicMapKey = (Vec<(u32, Option<String>)>, Vec<(String, NicKind, Option<String>)>);

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
    sched: Option<crate::collect::sched::SchedWatch>,
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
            match crate::collect::sched::SchedWatch::spawn(cfg.scheduler.clone(), progress.events().cloned()) {
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

/// A job being assembled: scheduler, world size, ranks by number.
pub(super) type JobParts = (Scheduler, Option<u32>, BTreeMap<u32, RankSample>);

impl Collector for JobsCollector {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let now = if report.timestamp_ms > 0 { report.timestamp_ms } else { crate::progress::now_ms() };
        let uptime = uptime_secs(&self.procfs, &mut self.buf);
        let cpu = cpu_ticks(&self.procfs, &mut self.buf);
        self.refresh(uptime)?;
        let nvml = nvml_pids(&report.gpus);
        let tree = RankTree::build(&self.procs, &nvml);
        let hot = self.account_cpu(&tree, uptime, cpu, report);
        let mut tree_gpus = tree.gpus(&nvml);
        let tree_io = tree.io_write_bytes(&self.procfs);
        for (pid, h) in hot {
            if let Some(t) = self.procs.get_mut(&pid) {
                t.hot = h;
                if !h {
                    t.stat_fd = None;
                }
            }
        }
        let nic_map = if tree.rank_root.is_empty() && self.remembered.is_empty() {
            Arc::default()
        } else {
            self.nic_map_for(report)
        };
        let mut jobs: BTreeMap<String, JobParts> = BTreeMap::new();
        let alive = self.alive_ranks(&tree, &mut tree_gpus, &tree_io, &nic_map, now, report, &mut jobs);
        self.vanished_ranks(&tree, now, report, &mut jobs);
        self.attach_progress(&alive, now, &mut jobs);
        let list = self.within_limits(jobs);
        self.finish(list, report);
        Ok(())
    }
}

impl JobsCollector {
    /// `host.cpu_non_job_pct`: the host's busy ticks less those of job processes (which are read
    /// every cycle), so the many processes outside jobs need no reading at all. Returns which
    /// processes are hot (read again next cycle).
    fn account_cpu(
        &mut self,
        tree: &RankTree,
        uptime: Option<f64>,
        cpu: Option<(u64, u64)>,
        report: &mut NodeReport,
    ) -> Vec<(u32, bool)> {
        let cycle = self.cycle;
        let mut job_ticks = 0u64;
        let mut hot: Vec<(u32, bool)> = Vec::with_capacity(self.procs.len());
        for (pid, t) in &self.procs {
            let in_job = tree.owned(pid) || t.ident.as_ref().is_some_and(|i| i.job.is_some());
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
        hot
    }

    /// The ranks whose process is alive (or a zombie) into `jobs`, with an exit event for a rank
    /// whose process was replaced or became a zombie. Returns the (job, rank)s that are alive.
    #[allow(clippy::too_many_arguments)]
    fn alive_ranks(
        &mut self,
        tree: &RankTree,
        tree_gpus: &mut HashMap<u32, Vec<u32>>,
        tree_io: &HashMap<u32, u64>,
        nic_map: &HashMap<u32, String>,
        now: i64,
        report: &mut NodeReport,
        jobs: &mut BTreeMap<String, JobParts>,
    ) -> Vec<(String, u32)> {
        let mut alive_keys: Vec<(String, u32)> = Vec::new();
        for ((job, rank), pid) in &tree.rank_root {
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
        alive_keys
    }

    /// Ranks that vanished: reported as exited (one exit event) for `exited_retain_secs`, then
    /// forgotten.
    fn vanished_ranks(
        &mut self,
        tree: &RankTree,
        now: i64,
        report: &mut NodeReport,
        jobs: &mut BTreeMap<String, JobParts>,
    ) {
        let retain_ms = (self.cfg.exited_retain_secs as i64).saturating_mul(1000);
        let mut forget = Vec::new();
        for (key, mem) in self.remembered.iter_mut() {
            if tree.rank_root.contains_key(key) {
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
    }

    /// Progress: attach to ranks; ranks that post but whose process is not found still appear.
    fn attach_progress(&mut self, alive: &[(String, u32)], now: i64, jobs: &mut BTreeMap<String, JobParts>) {
        self.progress.touch(alive.iter().map(|(j, r)| (j.as_str(), *r)), now);
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
    }

    /// The jobs as the report carries them, within the protocol's limits. Jobs and ranks with a
    /// process here come first when the limits bite, so posts for made-up ids cannot push real jobs
    /// out of the report.
    fn within_limits(&mut self, jobs: BTreeMap<String, JobParts>) -> Vec<JobSample> {
        if (jobs.len() > MAX_JOBS || jobs.values().any(|j| j.2.len() > MAX_RANKS_PER_JOB)) && !self.warned_limits {
            self.warned_limits = true;
            tracing::warn!(
                jobs = jobs.len(),
                max_jobs = MAX_JOBS,
                max_ranks_per_job = MAX_RANKS_PER_JOB,
                "more jobs or ranks than a report may carry; the rest are left out (logged once)"
            );
        }
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
        list
    }

    /// Ask the scheduler how the listed jobs stand, hand the live rank pids to the exit watcher, and
    /// put the jobs into the report.
    fn finish(&mut self, mut list: Vec<JobSample>, report: &mut NodeReport) {
        self.job_pods.retain(|j, _| list.iter().any(|x| &x.job_id == j));
        if let Some(sw) = &self.sched {
            let wanted = list
                .iter()
                .map(|j| {
                    let gone = j.ranks.iter().any(|r| matches!(r.state, ProcState::Exited | ProcState::Zombie));
                    let pods = self.job_pods.get(&j.job_id).cloned().unwrap_or_default();
                    (j.job_id.clone(), crate::collect::sched::Wanted { scheduler: j.scheduler, pods, ending: gone })
                })
                .collect();
            let known = sw.update(wanted);
            for j in &mut list {
                if let Some(s) = known.get(&j.job_id) {
                    crate::collect::sched::apply(j, *s);
                }
            }
        }
        if let Some(w) = &self.exit_watch {
            let live = |r: &&RankSample| !matches!(r.state, ProcState::Exited | ProcState::Zombie);
            w.set(list.iter().flat_map(|j| j.ranks.iter().filter(live).filter_map(|r| r.pid)).collect());
        }
        report.jobs = list;
        report.dropped.progress = self.progress.dropped();
    }
}
