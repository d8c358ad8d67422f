//! Hang-from-counters tests: reports built like an agent's, applied through `State`, judged by the
//! job detector. Jobs report no progress.

use std::collections::BTreeMap;

use faultline_proto::*;

use super::*;
use crate::state::State;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;

/// What one node's job does in one interval.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Train,
    Hung,
    Checkpoint,
    /// An evaluation pass: GPUs busy, no gradients; each batch's loss all-reduce a trickle of bytes.
    Eval,
}

struct Rig {
    st: State,
    nodes: usize,
    gpus: u32,
    /// cumulative bytes per node
    nic_bytes: Vec<u64>,
    nvl_bytes: Vec<u64>,
    disk_bytes: Vec<u64>,
    seq: u64,
    /// Whether the agent reports NVLink byte counters.
    nvlink: bool,
}

impl Rig {
    fn new(nodes: usize, gpus: u32) -> Self {
        Rig {
            st: State::default(),
            nodes,
            gpus,
            nic_bytes: vec![0; nodes],
            nvl_bytes: vec![0; nodes],
            disk_bytes: vec![0; nodes],
            seq: 0,
            nvlink: true,
        }
    }

    /// One report per node at `t` (node i 1 s after node i-1), each node in its own phase.
    fn round(&mut self, t: i64, phase: impl Fn(usize) -> Phase) {
        self.seq += 1;
        for i in 0..self.nodes {
            let p = phase(i);
            if p == Phase::Train {
                self.nic_bytes[i] += 20 << 30;
                self.nvl_bytes[i] += 80 << 30;
            }
            // Every node writes logs and flushes caches in the background: 5 MB/s.
            self.disk_bytes[i] += 50_000_000;
            if p == Phase::Checkpoint {
                self.disk_bytes[i] += 8 << 30;
            }
            if p == Phase::Eval {
                // 64 KiB/s each way over NVLink and the NIC: under the NIC floor, over NVLink's.
                self.nic_bytes[i] += 640 << 10;
                self.nvl_bytes[i] += 640 << 10;
            }
            let ts = t + i as i64 * 1000;
            let mut r = NodeReport::empty(format!("n{i}"));
            r.seq = self.seq;
            r.timestamp_ms = ts;
            r.gpus = (0..self.gpus)
                .map(|g| GpuSample {
                    index: g,
                    util_gpu_pct: Some(match p {
                        Phase::Checkpoint => 3.0,
                        Phase::Eval => 86.0,
                        _ => 100.0,
                    }),
                    nvlinks: vec![NvLinkSample {
                        link: 0,
                        active: true,
                        tx_bytes: self.nvlink.then_some(self.nvl_bytes[i]),
                        rx_bytes: self.nvlink.then_some(self.nvl_bytes[i]),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect();
            r.nics = (0..self.gpus)
                .map(|g| NicSample {
                    name: format!("mlx5_{g}"),
                    operstate: Some("up".into()),
                    counters: [("rx_bytes".into(), self.nic_bytes[i]), ("tx_bytes".into(), self.nic_bytes[i])].into(),
                    ..Default::default()
                })
                .chain(std::iter::once(NicSample {
                    // The management NIC carries the agent's own reports: never training traffic.
                    name: "eno1".into(),
                    kind: NicKind::Netdev,
                    operstate: Some("up".into()),
                    counters: [("tx_bytes".into(), ts as u64 * 1000)].into(),
                    ..Default::default()
                }))
                .collect();
            r.disks = vec![DiskSample {
                device: "nvme0n1".into(),
                write_bytes: Some(self.disk_bytes[i]),
                ..Default::default()
            }];
            r.jobs = vec![JobSample {
                job_id: "j".into(),
                ranks: (0..self.gpus)
                    .map(|g| RankSample {
                        rank: i as u32 * self.gpus + g,
                        gpus: vec![g],
                        nic: Some(format!("mlx5_{g}")),
                        state: ProcState::Running,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }];
            self.st.apply(&r, ts);
        }
    }

    fn verdict(&self, now: i64) -> Option<Symptom> {
        let mut out = Vec::new();
        crate::detect::job::check(&self.st.jobs["j"], &self.st.nodes, &HangRules::default(), now, &mut out);
        out.into_iter().find(|s| s.kind == K::JobStalled)
    }

    /// Run rounds from `from` for `n` intervals; the first round at which the job is called hung.
    fn run(&mut self, from: i64, n: i64, phase: impl Fn(i64, usize) -> Phase) -> Option<(i64, Symptom)> {
        for k in 0..n {
            let t = from + k * STEP;
            self.round(t, |i| phase(t, i));
            let now = t + self.nodes as i64 * 1000;
            if let Some(s) = self.verdict(now) {
                return Some((now, s));
            }
        }
        None
    }
}

fn warm(rig: &mut Rig) -> i64 {
    let warm = DEFAULT_WARMUP_MS / STEP + 2;
    assert!(rig.run(T0, warm, |_, _| Phase::Train).is_none(), "a training job is not hung");
    T0 + warm * STEP
}

#[test]
fn two_nodes_of_four_gpus_hang_is_named_within_a_minute() {
    let mut rig = Rig::new(2, 4);
    let h = warm(&mut rig);
    let (at, s) = rig.run(h, 30, |_, _| Phase::Hung).expect("the hang is found");
    assert!(at - h <= 60_000, "named {} s after the hang", (at - h) / 1000);
    assert_eq!(s.class, Some(FaultClass::JobHang));
    assert_eq!(s.value, 1.0);
}

#[test]
fn the_node_that_went_quiet_first_is_named() {
    let mut rig = Rig::new(4, 8);
    let h = warm(&mut rig);
    // Node 2 stops two intervals before the others.
    let (_, s) = rig
        .run(h, 30, |t, i| if i == 2 || t >= h + 2 * STEP { Phase::Hung } else { Phase::Train })
        .expect("the hang is found");
    assert!(s.detail.contains("n2 went quiet first"), "{}", s.detail);
}

#[test]
fn a_single_node_job_hangs_on_nvlink_alone() {
    let mut rig = Rig::new(1, 8);
    let h = warm(&mut rig);
    let (at, _) = rig.run(h, 30, |_, _| Phase::Hung).expect("the hang is found");
    assert!(at - h <= 60_000);
}

#[test]
fn an_evaluation_pass_is_a_pause_even_without_progress_reports() {
    let mut rig = Rig::new(2, 8);
    let h = warm(&mut rig);
    // Five minutes of evaluation: busy GPUs, NIC bytes under the floor, NVLink still trickling.
    assert!(rig.run(h, 30, |_, _| Phase::Eval).is_none());
}

#[test]
fn without_nvlink_counters_a_flat_nic_must_outlast_an_evaluation_pass() {
    let mut rig = Rig::new(2, 1);
    rig.nvlink = false;
    let h = warm(&mut rig);
    assert!(rig.run(h, 30, |_, _| Phase::Eval).is_none(), "a five-minute evaluation is not a hang");
    // Training again, then a hang: the last moving report is one interval before `h`.
    let h = h + 40 * STEP;
    assert!(rig.run(h - 10 * STEP, 10, |_, _| Phase::Train).is_none());
    let (at, _) = rig.run(h, 60, |_, _| Phase::Hung).expect("a long hang is still found");
    assert!(at - h >= NIC_ONLY_QUIET_MS - STEP, "named {} s after the hang", (at - h) / 1000);
}

#[test]
fn a_rank_still_talking_over_nvlink_is_paused_and_a_hung_one_is_not() {
    let mut rig = Rig::new(1, 8);
    let h = warm(&mut rig);
    let _ = rig.run(h, 3, |_, _| Phase::Eval);
    let r = &rig.st.jobs["j"].ranks[&0];
    assert!(crate::detect::hang::still_moving(r, &rig.st.nodes), "evaluation still all-reduces");
    let _ = rig.run(h + 3 * STEP, 2, |_, _| Phase::Hung);
    let r = &rig.st.jobs["j"].ranks[&0];
    assert!(!crate::detect::hang::still_moving(r, &rig.st.nodes), "a hung collective is flat");
}

#[test]
fn a_checkpoint_is_a_pause() {
    let mut rig = Rig::new(2, 4);
    let h = warm(&mut rig);
    // Five minutes of checkpointing: GPUs idle, disks busy, no traffic.
    assert!(rig.run(h, 30, |_, _| Phase::Checkpoint).is_none());
}

#[test]
fn warm_up_and_a_job_that_never_moved_data_are_not_judged() {
    let mut rig = Rig::new(2, 4);
    // Busy GPUs, no traffic ever (compiling, NCCL setting up): never a hang.
    assert!(rig.run(T0, 40, |_, _| Phase::Hung).is_none());
}

#[test]
fn a_busy_job_whose_counters_are_unknown_is_not_judged() {
    let mut st = State::default();
    let mut r = NodeReport::empty("n0");
    for k in 0..40 {
        r.seq = k + 1;
        r.timestamp_ms = T0 + k as i64 * STEP;
        r.gpus = vec![GpuSample { index: 0, util_gpu_pct: Some(100.0), ..Default::default() }];
        r.jobs = vec![JobSample {
            job_id: "j".into(),
            ranks: vec![RankSample { rank: 0, gpus: vec![0], ..Default::default() }],
            ..Default::default()
        }];
        st.apply(&r, r.timestamp_ms);
    }
    let nodes: BTreeMap<String, crate::state::NodeState> = st.nodes.clone();
    assert!(check(&st.jobs["j"], &nodes, &HangRules::default(), T0 + 400 * 1000).is_none());
}
