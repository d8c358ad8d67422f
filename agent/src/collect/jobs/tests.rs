//! Tests of job discovery: parsing, identity, GPU and NIC mapping, and exits.

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
        Some(&env(&[("TORCHELASTIC_RUN_ID", "none"), ("RANK", "0"), ("MASTER_ADDR", "n1"), ("MASTER_PORT", "29500")])),
        &CgroupIds::default(),
        &cfg,
    );
    assert_eq!(id.job.as_deref(), Some("torch-n1-29500"));
    assert_eq!(id.scheduler, Scheduler::Torchrun);

    let cfg = JobsConfig { job_id_env: vec!["MY_JOB".into()], rank_env: vec!["MY_RANK".into()], ..Default::default() };
    let id =
        ident_of(Some(&env(&[("MY_JOB", "llm-70b"), ("MY_RANK", "7"), ("RANK", "1")])), &CgroupIds::default(), &cfg);
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
    for (i, bdf) in ["00000000:03:00.0", "00000000:04:00.0", "00000000:83:00.0", "00000000:84:00.0"].iter().enumerate()
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
