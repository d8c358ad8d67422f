//! Training-log collector tests on fixture log files: globs, pod logs in CRI format, a Slurm job's
//! `StdOut` found through a stand-in `scontrol`, the byte budget.

use std::io::Write;
use std::path::Path;

use faultline_proto::{EventClass, JobSample, NodeReport, Scheduler};

use super::*;

fn append(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
}

fn cfg() -> TrainLogConfig {
    TrainLogConfig { slurm: false, pod_log_dir: None, ..Default::default() }
}

fn collector(cfg: TrainLogConfig, sched: crate::collect::sched::SchedConfig) -> (TrainLogCollector, Arc<EventQueue>) {
    let q = Arc::new(EventQueue::new(1000));
    (TrainLogCollector::new(cfg, sched, q.clone()), q)
}

const IB: &str = "gpu-a17:2211:2390 [3] transport/net_ib.cc:2411 NCCL WARN NET/IB: Got completion from peer 10.0.8.21<41327> with status=IBV_WC_RETRY_EXC_ERR(12) opcode=IBV_WC_SEND(0) vendor_err=129  localGid ::ffff:10.1.3.17 remoteGids::ffff:10.1.3.21 hca mlx5_3\n";

#[test]
fn a_globbed_file_is_followed_from_its_end_and_repeats_are_counted() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("run1/rank3.log");
    append(&log, IB); // before the agent: not read
    let (mut c, q) = collector(
        TrainLogConfig { globs: vec![format!("{}/*/rank*.log", d.path().display())], ..cfg() },
        Default::default(),
    );
    let mut r = NodeReport::empty("n1");
    c.collect(&mut r).unwrap();
    assert!(q.drain().is_empty(), "what was there before the agent started is not evidence now");
    append(&log, "step 10 loss 2.1\n");
    append(&log, IB);
    append(&log, IB);
    append(
        &log,
        "[rank3]:[E1206 18:44:12.715298746 ProcessGroupNCCL.cpp:607] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7753, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600061 milliseconds before timing out.\n",
    );
    c.collect(&mut r).unwrap();
    let evs = q.drain();
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(evs[0].class, EventClass::IbCompletionError);
    assert_eq!(evs[0].count, 2, "the same completion error twice is one event counted twice");
    assert_eq!(evs[0].source, EventSource::TrainingLog);
    assert_eq!(evs[0].component.as_deref(), Some("nic:mlx5_3"));
    let ci = evs[0].collective.as_ref().unwrap();
    assert_eq!(
        (ci.peer.as_deref(), ci.remote_addr.as_deref(), ci.device),
        (Some("10.0.8.21"), Some("10.1.3.21"), Some(3))
    );
    let to = evs[1].collective.as_ref().unwrap();
    assert_eq!(
        (evs[1].class, to.rank, to.seq, to.timeout_ms),
        (EventClass::NcclTimeout, Some(3), Some(7753), Some(600_000))
    );
    let mut report = NodeReport::empty("n1");
    report.timestamp_ms = 1;
    report.events = evs;
    report.validate().expect("the events are valid report content");
}

#[test]
fn pod_logs_lose_their_cri_prefix_and_partial_lines_are_joined() {
    let d = tempfile::tempdir().unwrap();
    let uid = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab";
    let log = d.path().join(format!("train_worker-1_{uid}/pytorch/0.log"));
    append(&log, "");
    let (mut c, q) =
        collector(TrainLogConfig { pod_log_dir: Some(d.path().to_path_buf()), ..cfg() }, Default::default());
    let mut r = NodeReport::empty("n1");
    r.jobs.push(JobSample { job_id: uid.into(), scheduler: Scheduler::Kubernetes, ..Default::default() });
    c.collect(&mut r).unwrap();
    append(&log, "2025-03-01T10:00:00.000000001Z stderr P [rank5]: socketProgressOpt: Call to recv from 10.2.0.9<4\n");
    append(&log, "2025-03-01T10:00:00.000000002Z stderr F 1000> failed : Connection reset by peer\n");
    c.collect(&mut r).unwrap();
    let evs = q.drain();
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].class, EventClass::NcclPeerConnection);
    let ci = evs[0].collective.as_ref().unwrap();
    assert_eq!((ci.peer.as_deref(), ci.peer_port, ci.rank), (Some("10.2.0.9"), Some(41000), Some(5)));
    assert_eq!(ci.job.as_deref(), Some(uid), "the pod uid is the job's id");
}

#[test]
fn a_slurm_jobs_stdout_comes_from_scontrol() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("slurm-4242.out");
    append(&out, "");
    let scontrol = d.path().join("scontrol");
    std::fs::write(
        &scontrol,
        format!(
            "#!/bin/sh\necho \"JobId=$4 JobName=x JobState=RUNNING StdErr={0} StdIn=/dev/null StdOut={0}\"\n",
            out.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&scontrol).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&scontrol, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sched = crate::collect::sched::SchedConfig { scontrol, ..Default::default() };
    let (mut c, q) = collector(TrainLogConfig { slurm: true, ..cfg() }, sched);
    let mut r = NodeReport::empty("n1");
    r.jobs.push(JobSample { job_id: "4242".into(), scheduler: Scheduler::Slurm, ..Default::default() });
    r.jobs.push(JobSample { job_id: "4243".into(), scheduler: Scheduler::Slurm, ..Default::default() });
    c.collect(&mut r).unwrap();
    assert_eq!(c.slurm.len(), 1, "one scontrol query per cycle");
    c.collect(&mut r).unwrap();
    assert_eq!(c.slurm.len(), 2, "the next job's turn comes the cycle after");
    r.jobs.pop();
    append(
        &out,
        "[rank1]:[E626 06:24:44.906457629 ProcessGroupNCCL.cpp:1785] [PG ID 0 PG GUID 0(default_pg) Rank 1] Exception (either an error or timeout) detected by watchdog at work: 808, last enqueued NCCL work: 811, last completed NCCL work: 807.\n",
    );
    c.collect(&mut r).unwrap();
    let evs = q.drain();
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let ci = evs[0].collective.as_ref().unwrap();
    assert_eq!((ci.job.as_deref(), ci.rank, ci.last_completed), (Some("4242"), Some(1), Some(807)));
    // The job ended: its log is no longer followed.
    r.jobs.clear();
    c.collect(&mut r).unwrap();
    assert!(c.tails.is_empty());
}

#[test]
fn the_cycle_budget_spreads_a_burst_over_cycles() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    append(&log, "");
    let (mut c, q) = collector(
        TrainLogConfig { globs: vec![log.display().to_string()], max_bytes_per_cycle: 300, ..cfg() },
        Default::default(),
    );
    let mut r = NodeReport::empty("n1");
    c.collect(&mut r).unwrap();
    for i in 0..4 {
        append(
            &log,
            &format!(
                "[rank{i}]: ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely.{}\n",
                " ".repeat(120)
            ),
        );
    }
    let mut seen = 0;
    for _ in 0..4 {
        c.collect(&mut r).unwrap();
        let n = q.drain().len();
        assert!(n <= 2, "at most 300 bytes a cycle: {n} lines");
        seen += n;
    }
    assert_eq!(seen, 4, "nothing is lost, only delayed");
}

#[test]
fn off_means_nothing_is_read() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("a.log");
    append(&log, "");
    let (mut c, q) = collector(
        TrainLogConfig { enabled: false, globs: vec![log.display().to_string()], ..cfg() },
        Default::default(),
    );
    let mut r = NodeReport::empty("n1");
    c.collect(&mut r).unwrap();
    append(&log, IB);
    c.collect(&mut r).unwrap();
    assert!(q.drain().is_empty());
}

#[test]
fn the_jobs_logs_section_parses_and_refuses_unknown_keys() {
    let c: crate::collect::jobs::JobsConfig =
        toml::from_str("[logs]\nglobs = [\"/scratch/*/rank*.log\"]\nmax_files = 8\npod_log_dir = \"\"\n").unwrap();
    assert_eq!(c.logs.globs, ["/scratch/*/rank*.log"]);
    assert_eq!(c.logs.max_files, 8);
    assert!(c.logs.enabled && c.logs.slurm, "defaults kept");
    assert!(toml::from_str::<crate::collect::jobs::JobsConfig>("[logs]\nglob = []\n").is_err());
    assert_eq!(TrainLogConfig::default().pod_log_dir.as_deref(), Some(Path::new("/var/log/pods")));
}

#[test]
fn pod_addresses_from_the_kubelet_list_go_on_the_host() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods.json");
    std::fs::write(&pods, r#"{"items":[{"status":{"phase":"Running","podIPs":[{"ip":"10.244.3.9"}]}}]}"#).unwrap();
    let sched =
        crate::collect::sched::SchedConfig { kubelet_pods: Some(pods.display().to_string()), ..Default::default() };
    let (mut c, _) = collector(cfg(), sched);
    let mut r = NodeReport::empty("n1");
    r.host = Some(faultline_proto::HostSample { addrs: vec!["172.16.0.3".into()], ..Default::default() });
    c.collect(&mut r).unwrap();
    assert_eq!(r.host.unwrap().addrs, ["172.16.0.3", "10.244.3.9"]);
}
