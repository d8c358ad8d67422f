//! The jobs collector on a fixture procfs, for what a live test cannot stage: processes whose
//! environment the agent may not read (found through their Slurm / pod cgroup and NVML), exact
//! non-job CPU shares, and the exited-rank lifetime measured in report time.

use std::path::Path;

use faultline_agent::collect::Collector;
use faultline_agent::collect::jobs::{DEFAULT_EXITED_RETAIN_SECS, JobsCollector, JobsConfig};
use faultline_agent::progress::ProgressStore;
use faultline_proto::{GpuProcess, GpuSample, NodeReport, ProcState, SCHEMA_VERSION, Scheduler};

const T0: i64 = 1_700_000_000_000;
const POD: &str = "1b2c3d4e-0000-1111-2222-333344445555";

struct P {
    pid: u32,
    ppid: u32,
    state: char,
    ticks: u64,
    exit_status: i32,
    cgroup: &'static str,
    /// `None`: no environ file (unreadable).
    environ: Option<&'static str>,
}

fn write_proc(root: &Path, p: &P) {
    let dir = root.join(p.pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    // Fields 3..=52 after the command name.
    let mut f = vec!["0".to_string(); 50];
    let set = |f: &mut Vec<String>, n: usize, v: String| f[n - 3] = v;
    set(&mut f, 3, p.state.to_string());
    set(&mut f, 4, p.ppid.to_string());
    set(&mut f, 14, (p.ticks * 3 / 4).to_string());
    set(&mut f, 15, (p.ticks - p.ticks * 3 / 4).to_string());
    set(&mut f, 22, (1000 + p.pid).to_string());
    set(&mut f, 24, "100".to_string());
    set(&mut f, 52, p.exit_status.to_string());
    std::fs::write(dir.join("stat"), format!("{} (proc {}) {}\n", p.pid, p.pid, f.join(" "))).unwrap();
    std::fs::write(dir.join("cgroup"), format!("0::{}\n", p.cgroup)).unwrap();
    match p.environ {
        Some(e) => std::fs::write(dir.join("environ"), e.replace(' ', "\0")).unwrap(),
        None => {
            let _ = std::fs::remove_file(dir.join("environ"));
        }
    }
}

/// `/proc/stat` and `/proc/uptime`: `busy` ticks of user time and `idle` ticks of idle time.
fn write_totals(root: &Path, busy: u64, idle: u64) {
    // user nice system idle iowait irq softirq steal guest guest_nice
    std::fs::write(root.join("stat"), format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")).unwrap();
    std::fs::write(root.join("uptime"), "100000.00 50000.00\n").unwrap();
}

const JOB: &str = "/system.slice/slurmstepd.scope/job_777/step_0/user/task_0";

fn base() -> Vec<P> {
    let p = |pid, ppid, ticks, cgroup, environ| P { pid, ppid, state: 'S', ticks, exit_status: 0, cgroup, environ };
    vec![
        p(1, 0, 0, "/init.scope", Some("")),
        p(150, 1, 10, "/system.slice/slurmstepd.scope/job_777/step_0/slurm", None), // slurmstepd
        p(200, 150, 1000, JOB, None),                                               // rank on GPU 2
        p(201, 200, 50, JOB, None),                                                 // its data loader
        p(300, 150, 1000, JOB, None),                                               // rank on GPU 5
        p(400, 150, 5, JOB, None),                                                  // in the job, no GPU
        p(500, 1, 100, "/user.slice/user-1000.slice/session-2.scope", Some("HOME=/root PATH=/bin")),
        p(
            600,
            1,
            10,
            "/kubepods.slice/kubepods-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-1.scope",
            None,
        ),
    ]
}

fn report(ts: i64) -> NodeReport {
    let gpus = (0..8)
        .map(|i| {
            let pid = match i {
                2 => Some(200),
                5 => Some(300),
                0 => Some(600),
                _ => None,
            };
            GpuSample {
                index: i,
                processes: pid.map(|pid| GpuProcess { pid, used_mem_bytes: None }).into_iter().collect(),
                ..Default::default()
            }
        })
        .collect();
    NodeReport {
        schema_version: SCHEMA_VERSION,
        node: "fixture".into(),
        agent_version: "test".into(),
        seq: 1,
        timestamp_ms: ts,
        interval_ms: 1000,
        shutdown: false,
        urgent: false,
        host: None,
        gpus,
        nics: vec![],
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

#[test]
fn unreadable_environments_fall_back_to_cgroup_and_nvml_and_cpu_shares_add_up() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let mut procs = base();
    for p in &procs {
        write_proc(root, p);
    }
    write_totals(root, 5_000, 5_000);
    let mut c = JobsCollector::new(root.to_path_buf(), ProgressStore::new(), JobsConfig::default());

    let mut r = report(T0);
    c.collect(&mut r).unwrap();
    assert_eq!(r.host.as_ref().and_then(|h| h.cpu_non_job_pct), None, "no baseline yet");
    let ids: Vec<&str> = r.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, vec![POD, "777"]);
    let job = &r.jobs[1];
    assert_eq!(job.scheduler, Scheduler::Slurm);
    let ranks: Vec<(u32, Option<u32>, Vec<u32>)> = job.ranks.iter().map(|s| (s.rank, s.pid, s.gpus.clone())).collect();
    assert_eq!(
        ranks,
        vec![(2, Some(200), vec![2]), (5, Some(300), vec![5])],
        "GPU processes of the job are its ranks, numbered by GPU; the loader, slurmstepd and pid 400 are not"
    );
    assert!(job.ranks.iter().all(|s| s.local_rank.is_none()));
    assert_eq!(r.jobs[0].scheduler, Scheduler::Kubernetes);
    assert_eq!(r.jobs[0].ranks[0].pid, Some(600));

    // Next cycle: 1000 ticks pass on the host, 400 of them busy: the job's processes used 280, the
    // non-job process 500 used 100 and a new non-job process 700 used 20.
    procs[4].ticks += 200; // 300
    procs[2].ticks += 80; // 200
    procs[6].ticks += 100; // 500
    procs.push(P {
        pid: 700,
        ppid: 1,
        state: 'R',
        ticks: 20,
        exit_status: 0,
        cgroup: "/user.slice",
        environ: Some(""),
    });
    for p in &procs {
        write_proc(root, p);
    }
    write_totals(root, 5_400, 5_600);
    let mut r = report(T0 + 1000);
    c.collect(&mut r).unwrap();
    let pct = r.host.as_ref().and_then(|h| h.cpu_non_job_pct).unwrap();
    assert!((pct - 12.0).abs() < 1e-9, "(400 busy - 280 in the job) / 1000 = 12%, got {pct}");

    // Rank 2's process becomes a zombie that exited with status 1; rank 5's process vanishes.
    procs[2].state = 'Z';
    procs[2].exit_status = 1 << 8;
    std::fs::remove_dir_all(root.join("300")).unwrap();
    procs.retain(|p| p.pid != 300);
    for p in &procs {
        write_proc(root, p);
    }
    write_totals(root, 5_800, 6_000);
    let mut r = report(T0 + 2000);
    c.collect(&mut r).unwrap();
    let job = r.jobs.iter().find(|j| j.job_id == "777").unwrap();
    let s2 = job.ranks.iter().find(|s| s.rank == 2).unwrap();
    assert_eq!((s2.state, s2.exit_code), (ProcState::Zombie, Some(1)));
    let s5 = job.ranks.iter().find(|s| s.rank == 5).unwrap();
    assert_eq!((s5.state, s5.exit_code, s5.pid, s5.gpus.clone()), (ProcState::Exited, None, Some(300), vec![5]));
    let exits: Vec<_> = r.events.iter().filter(|e| e.class == faultline_proto::EventClass::ProcessExit).collect();
    assert_eq!(exits.len(), 2, "{exits:?}");
    assert!(exits.iter().any(|e| e.pid == Some(200) && e.message.contains("code 1")));
    assert!(exits.iter().any(|e| e.pid == Some(300) && e.message.contains("unknown")));
    assert!(r.validate().is_ok(), "{:?}", r.validate());

    // The zombie is reaped; no new exit event, the code is remembered.
    std::fs::remove_dir_all(root.join("200")).unwrap();
    std::fs::remove_dir_all(root.join("201")).unwrap();
    let mut r = report(T0 + 3000);
    c.collect(&mut r).unwrap();
    let job = r.jobs.iter().find(|j| j.job_id == "777").unwrap();
    let s2 = job.ranks.iter().find(|s| s.rank == 2).unwrap();
    assert_eq!((s2.state, s2.exit_code), (ProcState::Exited, Some(1)));
    assert!(r.events.is_empty(), "{:?}", r.events);

    // Still reported just before the retention ends, gone after.
    let retain = DEFAULT_EXITED_RETAIN_SECS as i64 * 1000;
    let mut r = report(T0 + 2000 + retain);
    c.collect(&mut r).unwrap();
    assert!(r.jobs.iter().any(|j| j.job_id == "777"));
    let mut r = report(T0 + 3000 + retain + 1);
    c.collect(&mut r).unwrap();
    assert!(!r.jobs.iter().any(|j| j.job_id == "777"), "{:?}", r.jobs);
}

#[test]
fn missing_procfs_is_a_collector_error_not_a_panic() {
    let mut c = JobsCollector::new("/nonexistent/proc".into(), ProgressStore::new(), JobsConfig::default());
    let mut r = report(T0);
    let e = c.collect(&mut r).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/proc"), "{e}");
}

#[test]
fn config_is_strict_toml_with_defaults() {
    let cfg: JobsConfig = toml::from_str("job_id_env = [\"MY_JOB\"]\ngpu_nics = [\"mlx5_3\"]\n").unwrap();
    assert_eq!(cfg.job_id_env, vec!["MY_JOB"]);
    assert_eq!(cfg.exited_retain_secs, DEFAULT_EXITED_RETAIN_SECS);
    let e = toml::from_str::<JobsConfig>("job_env = [\"X\"]\n").unwrap_err();
    assert!(e.to_string().contains("job_env"), "{e}");
}

#[test]
fn progress_for_made_up_jobs_cannot_push_a_live_job_out_of_the_report() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_totals(root, 500, 500);
    let live = P {
        pid: 900,
        ppid: 1,
        state: 'S',
        ticks: 5,
        exit_status: 0,
        cgroup: "/user.slice",
        environ: Some("SLURM_JOB_ID=zzz-live SLURM_PROCID=0 SLURM_STEP_ID=0"),
    };
    write_proc(root, &live);
    let store = ProgressStore::new();
    let limit = faultline_proto::limits::MAX_JOBS;
    for j in 0..limit + 20 {
        store.post_json(format!(r#"{{"job":"a{j:04}","rank":0,"step":1}}"#).as_bytes()).unwrap();
    }
    let mut c = JobsCollector::new(root.to_path_buf(), store, JobsConfig::default());
    let mut r = report(T0);
    c.collect(&mut r).unwrap();
    assert_eq!(r.jobs.len(), limit);
    assert!(r.jobs.iter().any(|j| j.job_id == "zzz-live" && j.ranks[0].pid == Some(900)));
    assert!(r.jobs.windows(2).all(|w| w[0].job_id < w[1].job_id), "still in id order");
    assert!(r.validate().is_ok(), "{:?}", r.validate());
}

/// A `stat` line with the fields the exec check reads: start time (22) in ticks, and where code (26),
/// stack (28) and the environment block (50, 51) sit.
fn write_stat_exec(dir: &Path, pid: u32, ppid: u32, starttime: u64, env_end: u64) {
    let mut f = vec!["0".to_string(); 50];
    let mut set = |n: usize, v: u64| f[n - 3] = v.to_string();
    set(4, u64::from(ppid));
    set(22, starttime);
    set(26, 0x40_0000);
    set(28, 0x7ffd_0000_0000);
    set(50, 0x7ffd_0000_1000);
    set(51, env_end);
    f[0] = "S".into();
    std::fs::write(dir.join("stat"), format!("{pid} (sh) {}\n", f.join(" "))).unwrap();
}

fn ranks_of(r: &NodeReport) -> Vec<(String, u32, Option<u32>)> {
    r.jobs.iter().flat_map(|j| j.ranks.iter().map(|s| (j.job_id.clone(), s.rank, s.pid))).collect()
}

#[test]
fn environ_is_read_once_per_process_and_again_after_exec_or_pid_reuse() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_totals(root, 500, 500);
    // uptime is 100000 s: a start time of 99995 s (in ticks of 1/100 s) is a 5 s old process, which
    // may still exec; 1000 ticks is an old one.
    let young = 9_999_500;
    let proc_dir = |pid: u32| {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup"), "0::/user.slice\n").unwrap();
        d
    };
    let d1 = proc_dir(1);
    write_stat_exec(&d1, 1, 0, 1, 0x7ffd_0000_2000);
    std::fs::write(d1.join("environ"), "").unwrap();
    let d600 = proc_dir(600);
    write_stat_exec(&d600, 600, 1, young, 0x7ffd_0000_2000);
    std::fs::write(d600.join("environ"), "HOME=/root\0").unwrap();
    let d500 = proc_dir(500);
    write_stat_exec(&d500, 500, 1, 1000, 0x7ffd_0000_2000);
    std::fs::write(d500.join("environ"), "HOME=/root\0").unwrap();

    let mut c = JobsCollector::new(root.to_path_buf(), ProgressStore::new(), JobsConfig::default());
    let mut r = report(T0);
    c.collect(&mut r).unwrap();
    assert!(r.jobs.is_empty(), "{:?}", r.jobs);

    // The environment block's content changes, but no exec happened (same stat): the identity read
    // while the process started stands (a process overwriting its own environ, as setproctitle does,
    // does not change what it is).
    std::fs::write(d600.join("environ"), "SLURM_JOB_ID=88\0SLURM_PROCID=1\0SLURM_STEP_ID=0\0").unwrap();
    std::fs::write(d500.join("environ"), "SLURM_JOB_ID=88\0SLURM_PROCID=2\0SLURM_STEP_ID=0\0").unwrap();
    let mut r = report(T0 + 1000);
    c.collect(&mut r).unwrap();
    assert!(r.jobs.is_empty(), "{:?}", r.jobs);

    // The young process execs: its environment block moved, so it is read again and it is a rank.
    write_stat_exec(&d600, 600, 1, young, 0x7ffd_0000_2400);
    let mut r = report(T0 + 2000);
    c.collect(&mut r).unwrap();
    assert_eq!(ranks_of(&r), vec![("88".to_string(), 1, Some(600))]);

    // pid 500 exits and a new process gets the pid: procfs gives it a new directory inode (here: made
    // aside, then renamed over the old one), so it is read although old processes are not.
    let fresh = root.join("500.new");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("cgroup"), "0::/user.slice\n").unwrap();
    std::fs::write(fresh.join("environ"), "SLURM_JOB_ID=88\0SLURM_PROCID=0\0SLURM_STEP_ID=0\0").unwrap();
    write_stat_exec(&fresh, 500, 1, 5000, 0x7ffd_0000_2000);
    std::fs::remove_dir_all(&d500).unwrap();
    std::fs::rename(&fresh, &d500).unwrap();
    let mut r = report(T0 + 3000);
    c.collect(&mut r).unwrap();
    assert_eq!(ranks_of(&r), vec![("88".to_string(), 0, Some(500)), ("88".to_string(), 1, Some(600))]);
}

#[test]
fn a_ranks_io_write_bytes_sum_its_process_tree_and_unreadable_is_unknown() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for p in &base() {
        write_proc(root, p);
    }
    write_totals(root, 5_000, 5_000);
    let io = |w: u64| {
        format!("rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: {w}\ncancelled_write_bytes: 0\n")
    };
    // Rank on GPU 2 (pid 200) wrote 4 GiB of checkpoint; its data loader (201) 1 MiB; pid 300 has no
    // readable io file.
    std::fs::write(root.join("200/io"), io(4 << 30)).unwrap();
    std::fs::write(root.join("201/io"), io(1 << 20)).unwrap();
    std::fs::write(root.join("400/io"), io(7)).unwrap(); // in the job but not under a rank
    let mut c = JobsCollector::new(root.to_path_buf(), ProgressStore::new(), JobsConfig::default());
    let mut r = report(T0);
    c.collect(&mut r).unwrap();
    let job = r.jobs.iter().find(|j| j.job_id == "777").unwrap();
    let io_of = |rank: u32| job.ranks.iter().find(|s| s.rank == rank).unwrap().io_write_bytes;
    assert_eq!(io_of(2), Some((4 << 30) + (1 << 20)));
    assert_eq!(io_of(5), None);
}
