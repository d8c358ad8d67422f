//! The jobs collector against the real `/proc`: real child processes started with Slurm and torchrun
//! environments are found as ranks, mapped to GPUs (NVML pids in the report) and NICs, get their posted
//! progress, and are seen exiting. Each test uses its own job ids, so they can run in parallel.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use faultline_agent::collect::Collector;
use faultline_agent::collect::jobs::{JobsCollector, JobsConfig};
use faultline_agent::progress::ProgressStore;
use faultline_proto::{
    GpuProcess, GpuSample, NicSample, NodeReport, ProcState, ProgressStatus, RankSample, SCHEMA_VERSION, Scheduler,
};
use faultline_tests::children;

/// Generous: the machine may be busy building.
const DEADLINE: Duration = Duration::from_secs(30);

/// A child killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(script: &str, env: &[(&str, String)]) -> Kid {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Kid(cmd.spawn().expect("start sh"))
}

fn uniq(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

fn blank(gpus: Vec<GpuSample>, nics: Vec<NicSample>) -> NodeReport {
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: "test-node".into(),
        agent_version: "test".into(),
        seq: 1,
        timestamp_ms: faultline_agent::progress::now_ms(),
        interval_ms: 1000,
        shutdown: false,
        urgent: false,
        host: None,
        gpus,
        nics,
        disks: vec![],
        jobs: vec![],
        events: vec![],
        dropped: Default::default(),
        collector_errors: Default::default(),
        expected_gpus: None,
        driver_version: None,
        probes: Vec::new(),
    }
}

fn collector(store: &ProgressStore, cfg: JobsConfig) -> JobsCollector {
    JobsCollector::new("/proc".into(), store.clone(), cfg)
}

fn rank<'a>(r: &'a NodeReport, job: &str, rank: u32) -> Option<&'a RankSample> {
    r.jobs.iter().find(|j| j.job_id == job)?.ranks.iter().find(|s| s.rank == rank)
}

/// Collect every 100 ms until `ok` holds for the report (returns it), or fail with the last report.
fn poll(
    c: &mut JobsCollector,
    gpus: impl Fn() -> Vec<GpuSample>,
    nics: &[NicSample],
    what: &str,
    ok: impl Fn(&NodeReport) -> bool,
) -> NodeReport {
    let start = Instant::now();
    loop {
        let mut r = blank(gpus(), nics.to_vec());
        c.collect(&mut r).expect("collect");
        if ok(&r) {
            return r;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}; last jobs: {:#?}", r.jobs);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_children(pid: u32, n: usize) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let c = children(pid);
        if c.len() >= n {
            return c;
        }
        assert!(start.elapsed() < DEADLINE, "process {pid} never had {n} children (has {c:?})");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slurm_task_is_found_as_job_4242_rank_3() {
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    let kid = spawn(
        "exec sleep 30",
        &[
            ("SLURM_JOB_ID", "4242".into()),
            ("SLURM_PROCID", "3".into()),
            ("SLURM_STEP_ID", "0".into()),
            ("SLURM_LOCALID", "1".into()),
            ("SLURM_NTASKS", "8".into()),
        ],
    );
    let pid = kid.0.id();
    // A just-started `sleep` can still be caught running (state R) on a loaded machine: wait until it
    // has settled into its sleep rather than asserting on the first sight of it.
    let r = poll(&mut c, Vec::new, &[], "job 4242 rank 3 asleep", |r| {
        rank(r, "4242", 3).is_some_and(|s| s.pid == Some(pid) && s.state == ProcState::Sleeping)
    });
    let job = r.jobs.iter().find(|j| j.job_id == "4242").unwrap();
    assert_eq!(job.scheduler, Scheduler::Slurm);
    assert_eq!(job.world_size, Some(8));
    let s = rank(&r, "4242", 3).unwrap();
    assert_eq!(s.local_rank, Some(1));
    assert_eq!(s.state, ProcState::Sleeping);
    assert_eq!(s.gpus, vec![1], "no NVML data and no CUDA_VISIBLE_DEVICES: LOCAL_RANK names the GPU");
    assert!(s.cpu_seconds.is_some());
    assert!(s.rss_bytes.unwrap_or(0) > 0, "sleep has resident memory");
    assert_eq!(s.exit_code, None);
    assert!(r.validate().is_ok(), "{:?}", r.validate());
}

#[test]
fn torchrun_group_maps_ranks_to_gpus_and_nics_and_skips_the_launcher() {
    let run = uniq("tr");
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    // A launcher (no RANK, like torchrun's agent) starting four workers; each worker has a child with
    // the same environment (a data loader).
    let launcher = spawn(
        "for r in 0 1 2 3; do RANK=$r LOCAL_RANK=$r sh -c 'sleep 60 & wait' & done; wait",
        &[("TORCHELASTIC_RUN_ID", run.clone()), ("WORLD_SIZE", "8".into()), ("MASTER_ADDR", "n1".into())],
    );
    let workers = wait_children(launcher.0.id(), 4);
    let loaders: Vec<Vec<u32>> = workers.iter().map(|w| wait_children(*w, 1)).collect();
    // Which worker holds which rank: read it back from its environment.
    let rank_of = |pid: u32| -> u32 {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        env.split('\0').find_map(|kv| kv.strip_prefix("RANK=")).unwrap().parse().unwrap()
    };
    let mut pid_of_rank = BTreeMap::new();
    for (i, w) in workers.iter().enumerate() {
        pid_of_rank.insert(rank_of(*w), (*w, loaders[i][0]));
    }
    // NVML (as the GPU collector reports it): rank r on GPU 7 - r; rank 2 seen through its child
    // process; rank 3 not listed at all (falls back to LOCAL_RANK).
    let gpus = || -> Vec<GpuSample> {
        (0..8u32)
            .map(|i| {
                let mut g = GpuSample { index: i, uuid: format!("GPU-{i:08x}"), ..Default::default() };
                for (r, (w, l)) in &pid_of_rank {
                    if *r < 3 && 7 - r == i {
                        let pid = if *r == 2 { *l } else { *w };
                        g.processes.push(GpuProcess { pid, used_mem_bytes: Some(1 << 30) });
                    }
                }
                g
            })
            .collect()
    };
    let nics = vec![
        NicSample { name: "mlx5_1".into(), ..Default::default() },
        NicSample { name: "mlx5_0".into(), ..Default::default() },
    ];
    let r = poll(&mut c, gpus, &nics, "four torchrun ranks", |r| {
        r.jobs
            .iter()
            .find(|j| j.job_id == run)
            .is_some_and(|j| j.ranks.len() == 4 && j.ranks.iter().all(|s| !s.gpus.is_empty()))
    });
    let job = r.jobs.iter().find(|j| j.job_id == run).unwrap();
    assert_eq!(job.scheduler, Scheduler::Torchrun);
    assert_eq!(job.world_size, Some(8));
    let ranks: Vec<u32> = job.ranks.iter().map(|s| s.rank).collect();
    assert_eq!(ranks, vec![0, 1, 2, 3], "the launcher and the data loaders are not ranks");
    for s in &job.ranks {
        let (worker, _) = pid_of_rank[&s.rank];
        assert_eq!(s.pid, Some(worker), "rank {} is the worker, not its child", s.rank);
        assert_eq!(s.local_rank, Some(s.rank));
        let want_gpu = if s.rank < 3 { 7 - s.rank } else { 3 };
        assert_eq!(s.gpus, vec![want_gpu], "rank {}", s.rank);
        // Default NIC map: GPU i → NIC i mod 2 in name order.
        let want_nic = if want_gpu % 2 == 0 { "mlx5_0" } else { "mlx5_1" };
        assert_eq!(s.nic.as_deref(), Some(want_nic), "rank {}", s.rank);
    }
    drop(launcher);
}

#[test]
fn progress_posts_attach_to_the_rank_and_move_through_exited() {
    let job = uniq("prog");
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    let mut kid = spawn(
        "exec sleep 30",
        &[("SLURM_JOB_ID", job.clone()), ("SLURM_PROCID", "0".into()), ("SLURM_STEP_ID", "0".into())],
    );
    let pid = kid.0.id();
    poll(&mut c, Vec::new, &[], "the rank, asleep", |r| {
        rank(r, &job, 0).is_some_and(|s| s.pid == Some(pid) && s.state == ProcState::Sleeping)
    });

    let post = |body: String| store.post_json(body.as_bytes()).unwrap();
    post(format!(r#"{{"job":"{job}","rank":0,"step":10,"step_time_ms":250,"compute_ms":180,"loss":2.5}}"#));
    post(format!(r#"{{"job":"{job}","rank":0,"step":11,"step_time_ms":260,"loss":"nan"}}"#));
    // A rank that posts but has no process here still appears.
    post(format!(r#"{{"job":"{job}","rank":5,"step":11}}"#));
    let r = poll(&mut c, Vec::new, &[], "progress on rank 0", |r| {
        rank(r, &job, 0).and_then(|s| s.progress.as_ref()).is_some_and(|p| p.step == 11)
    });
    let s = rank(&r, &job, 0).unwrap();
    let p = s.progress.as_ref().unwrap();
    assert_eq!((p.step_time_ms, p.compute_ms, p.loss, p.nonfinite_loss), (Some(260.0), Some(180.0), Some(2.5), true));
    assert_eq!(s.state, ProcState::Sleeping);
    let ghost = rank(&r, &job, 5).expect("rank 5 only posts progress");
    assert_eq!((ghost.state, ghost.pid), (ProcState::Unknown, None));
    assert!(r.validate().is_ok(), "{:?}", r.validate());

    // The loop says it exits with 3, then the process goes away (reaped before the collector looks).
    post(format!(r#"{{"job":"{job}","rank":0,"step":12,"status":"exited","exit_code":3}}"#));
    let r = poll(&mut c, Vec::new, &[], "exited status", |r| {
        rank(r, &job, 0).and_then(|s| s.progress.as_ref()).is_some_and(|p| p.status == ProgressStatus::Exited)
    });
    assert_eq!(rank(&r, &job, 0).unwrap().state, ProcState::Sleeping, "the process still lives");
    kid.0.kill().unwrap();
    kid.0.wait().unwrap();
    let r = poll(&mut c, Vec::new, &[], "rank 0 exited", |r| {
        rank(r, &job, 0).is_some_and(|s| s.state == ProcState::Exited)
    });
    let s = rank(&r, &job, 0).unwrap();
    assert_eq!(s.exit_code, Some(3), "the exit code posted by the loop");
    assert_eq!(s.pid, Some(pid));
    assert!(
        r.events.iter().any(|e| e.class == faultline_proto::EventClass::ProcessExit && e.pid == Some(pid)),
        "{:?}",
        r.events
    );
}

#[test]
fn killed_rank_is_seen_as_zombie_then_gone_with_its_signal_and_is_dropped_later() {
    let job = uniq("kill");
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig { exited_retain_secs: 1, ..Default::default() });
    let mut kid = spawn(
        "exec sleep 30",
        &[("SLURM_JOB_ID", job.clone()), ("SLURM_PROCID", "2".into()), ("SLURM_STEP_ID", "0".into())],
    );
    let pid = kid.0.id();
    poll(&mut c, Vec::new, &[], "the rank", |r| rank(r, &job, 2).is_some_and(|s| s.pid == Some(pid)));
    kid.0.kill().unwrap(); // SIGKILL; not reaped yet, so the kernel keeps a zombie with its status
    let r = poll(&mut c, Vec::new, &[], "zombie", |r| rank(r, &job, 2).is_some_and(|s| s.state == ProcState::Zombie));
    assert_eq!(rank(&r, &job, 2).unwrap().exit_code, Some(-9));
    assert!(r.events.iter().any(|e| e.class == faultline_proto::EventClass::ProcessExit
        && e.pid == Some(pid)
        && e.message.contains("signal 9")));
    kid.0.wait().unwrap();
    let r = poll(&mut c, Vec::new, &[], "gone", |r| rank(r, &job, 2).is_some_and(|s| s.state == ProcState::Exited));
    assert_eq!(rank(&r, &job, 2).unwrap().exit_code, Some(-9), "remembered from the zombie");
    // After exited_retain_secs the rank (and its job) are dropped.
    poll(&mut c, Vec::new, &[], "dropped", |r| !r.jobs.iter().any(|j| j.job_id == job));
}

#[test]
fn rank_cpu_time_grows_and_non_job_cpu_is_measured() {
    let job = uniq("cpu");
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    // A busy rank, and a busy process outside any job.
    let _rank = spawn(
        "while :; do :; done",
        &[("SLURM_JOB_ID", job.clone()), ("SLURM_PROCID", "0".into()), ("SLURM_STEP_ID", "0".into())],
    );
    let _hog = spawn("while :; do :; done", &[]);
    let r = poll(&mut c, Vec::new, &[], "busy rank", |r| rank(r, &job, 0).is_some());
    let first = rank(&r, &job, 0).unwrap().cpu_seconds.unwrap();
    let r = poll(&mut c, Vec::new, &[], "cpu time growth", |r| {
        rank(r, &job, 0).and_then(|s| s.cpu_seconds).is_some_and(|t| t > first + 0.05)
    });
    assert!(matches!(rank(&r, &job, 0).unwrap().state, ProcState::Running | ProcState::Sleeping));
    // A second cycle has a baseline: the hog's CPU shows as outside any job.
    let r = poll(&mut c, Vec::new, &[], "non-job CPU", |r| {
        r.host.as_ref().and_then(|h| h.cpu_non_job_pct).is_some_and(|p| p > 0.0)
    });
    let pct = r.host.unwrap().cpu_non_job_pct.unwrap();
    assert!((0.0..=100.0).contains(&pct), "{pct}");
}

#[test]
fn torchrun_under_slurm_reports_framework_ranks_not_the_srun_tasks_that_launch_them() {
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    let slurm = |job: &str, procid: &str| {
        vec![
            ("SLURM_JOB_ID", job.to_string()),
            ("SLURM_PROCID", procid.to_string()),
            ("SLURM_STEP_ID", "0".to_string()),
            ("SLURM_NTASKS", "2".to_string()),
            ("WORLD_SIZE", "8".to_string()),
        ]
    };
    // Job A: srun task 0 starts torchrun, which starts framework ranks 0..3.
    let job_a = uniq("slurm-tr-a");
    let la = spawn("for r in 0 1 2 3; do RANK=$r LOCAL_RANK=$r sleep 60 & done; wait", &slurm(&job_a, "0"));
    // Job B: srun task 1 starts one worker that is framework rank 1, the same number as its launcher.
    let job_b = uniq("slurm-tr-b");
    let lb = spawn("RANK=1 LOCAL_RANK=0 sleep 60 & wait", &slurm(&job_b, "1"));
    let wa = wait_children(la.0.id(), 4);
    let wb = wait_children(lb.0.id(), 1);
    let r = poll(&mut c, Vec::new, &[], "framework ranks of both jobs", |r| {
        let a = r.jobs.iter().find(|j| j.job_id == job_a);
        let b = r.jobs.iter().find(|j| j.job_id == job_b);
        a.is_some_and(|j| j.ranks.len() == 4 && j.ranks.iter().all(|s| s.pid.is_some_and(|p| wa.contains(&p))))
            && b.is_some_and(|j| j.ranks.len() == 1 && j.ranks[0].pid == Some(wb[0]))
    });
    let a = r.jobs.iter().find(|j| j.job_id == job_a).unwrap();
    assert_eq!(a.scheduler, Scheduler::Slurm);
    assert_eq!(a.world_size, Some(8), "the framework's world size, not SLURM_NTASKS");
    assert_eq!(a.ranks.iter().map(|s| s.rank).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let b = r.jobs.iter().find(|j| j.job_id == job_b).unwrap();
    assert_eq!((b.ranks[0].rank, b.ranks[0].local_rank), (1, Some(0)));
}

#[test]
fn a_process_seen_before_it_execs_into_a_rank_is_found_after_the_exec() {
    let job = uniq("exec");
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    // The shell has no job environment; after a while it execs a program that has one.
    let script = format!("sleep 1; exec env SLURM_JOB_ID={job} SLURM_PROCID=6 SLURM_STEP_ID=0 sleep 30");
    let kid = spawn(&script, &[]);
    let pid = kid.0.id();
    let mut r = blank(Vec::new(), Vec::new());
    c.collect(&mut r).unwrap();
    assert!(rank(&r, &job, 6).is_none(), "not a rank before the exec");
    let r = poll(&mut c, Vec::new, &[], "the rank after exec", |r| rank(r, &job, 6).is_some());
    assert_eq!(rank(&r, &job, 6).unwrap().pid, Some(pid), "the same process, identified again after exec");
}

/// What one collection costs on this host's real `/proc`, once the collector is warm (a benchmark,
/// not a check: run with `--release -- --ignored --nocapture`).
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn jobs_collect_cost_on_this_host() {
    let store = ProgressStore::new();
    let mut c = collector(&store, JobsConfig::default());
    let mut r = blank(Vec::new(), Vec::new());
    c.collect(&mut r).unwrap();
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()))
        .count();
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut r = blank(Vec::new(), Vec::new());
        c.collect(&mut r).unwrap();
    }
    let per = start.elapsed().as_secs_f64() / rounds as f64;
    println!("jobs collector: {:.0} us per cycle over {procs} processes", per * 1e6);
}
