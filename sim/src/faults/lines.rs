//! What a fault makes a node show outside its counters: raw kernel lines in the drivers' own formats
//! (a GPU named by its PCI bus id, a RoCE port by its netdev), and NVML events that carry a device
//! index and a code, nothing more. Nothing here is classified or names a component: the agent's
//! classifier and maps (`faultline_agent::observe`) do that on the way to the analyzer.

use faultline_proto::FaultClass;

use super::{ECC_COALESCE_MS, EDAC_EVERY_MS, Fault, IO_ERROR_EVERY_MS, XID92_EVERY_MS};
use crate::cluster::{Cluster, LinkLayer};
use crate::node_state;
use crate::noise::{self, what};

/// What a node shows, as the agent receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obs {
    /// A kernel log line, without its `[uptime]` prefix.
    Kmsg(String),
    /// An NVML critical-XID event: device index and code.
    NvmlXid { gpu: u32, code: u32 },
    /// An NVML ECC event of one device, `count` coalesced by the agent.
    NvmlEcc { gpu: u32, double_bit: bool, count: u64 },
    /// NVML answered GPU_IS_LOST for this device on the agent's next query.
    NvmlLost { gpu: u32 },
    /// A line a rank of job `job` wrote to the job's log (its Slurm `StdErr`, its pod log), which
    /// the agent's training-log collector follows.
    TrainLog { job: String, line: String },
}

/// One observation on one node at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub node: usize,
    pub ts_ms: i64,
    pub obs: Obs,
}

fn seen(node: usize, ts_ms: i64, obs: Obs) -> Seen {
    Seen { node, ts_ms, obs }
}

/// `NVRM: Xid (PCI:0000:2a:00): 79, pid=…, name=…, text`.
pub fn xid_line(dev: &str, xid: u32, pid: Option<u32>, text: &str) -> String {
    let who = match pid {
        Some(p) => format!("pid={p}, name=python"),
        None => "pid='<unknown>', name=<unknown>".to_string(),
    };
    format!("NVRM: Xid (PCI:{dev}): {xid}, {who}, {text}")
}

/// The link line of NIC `k` of node `n`: an IB port logs under its IB device, a RoCE port under its
/// netdev (`mlx5_core 0000:01:00.1 eth1: Link down`).
pub fn nic_link_line(cluster: &Cluster, n: usize, k: u32, up: bool) -> String {
    let nic = &cluster.nodes[n].nics[k as usize];
    match cluster.spec.link_layer {
        LinkLayer::Infiniband => {
            format!("mlx5_core {} {}: Port: 1 Link {}", nic.bus_id, nic.name, if up { "ACTIVE" } else { "DOWN" })
        }
        LinkLayer::Ethernet => {
            format!("mlx5_core {} {}: Link {}", nic.bus_id, nic.netdev, if up { "up" } else { "down" })
        }
    }
}

/// Application XIDs of the noise model (13, 31, 43): a kernel line naming the rank's pid.
pub fn app_xid_line(dev: &str, xid: u32, pid: u32) -> String {
    let text = match xid {
        13 => "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
        31 => {
            "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_8 faulted @ 0x73ac_1c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_WRITE"
        }
        _ => "Ch 00000010",
    };
    xid_line(dev, xid, Some(pid), text)
}

impl Fault {
    /// What this fault makes nodes show in (t0, t1]. `nvml_lost`: whether NVML answers
    /// GPU_IS_LOST for a fallen-off GPU (else `Unknown Error`, and no event of its own).
    pub fn events(&self, cluster: &Cluster, t0: i64, t1: i64, rank_pid: &dyn Fn(usize, usize) -> u32) -> Vec<Seen> {
        let mut out = Vec::new();
        if !self.touches(t0, t1 + 1000) {
            return out;
        }
        let onset = self.at_ms + self.p.offset_ms;
        let in_win = |t: i64| t0 < t && t <= t1 && t < self.end_ms.saturating_add(1000);
        let clear = self.end_ms.saturating_add(self.p.offset_ms);
        let clear_in_win = self.end_ms != i64::MAX && t0 < clear && clear <= t1;
        // Recurring events: every `every` ms after onset while active.
        let recurring = |every: i64| -> Vec<i64> {
            if every <= 0 {
                return Vec::new();
            }
            let first_k = ((t0 - onset) / every).max(0);
            (first_k..=first_k + (t1 - t0) / every + 1)
                .map(|k| onset + k * every)
                .filter(|&t| in_win(t) && t < self.end_ms)
                .collect()
        };
        let Some(n) = self.node else {
            // Leaf faults: every NIC cabled to the leaf goes down in the same second.
            if let (FaultClass::LeafSwitchDown, Some(l)) = (self.kind(), self.leaf) {
                if in_win(onset) || clear_in_win {
                    for (n, k) in cluster.nics_of_leaf(l) {
                        let jitter = (noise::unit(&[self.seed, what::FAULT, self.idx as u64, n as u64, u64::from(k)])
                            * 300.0) as i64;
                        if in_win(onset) {
                            out.push(seen(n, onset + jitter, Obs::Kmsg(nic_link_line(cluster, n, k, false))));
                        }
                        if clear_in_win {
                            out.push(seen(n, clear + jitter, Obs::Kmsg(nic_link_line(cluster, n, k, true))));
                        }
                    }
                }
            }
            return out;
        };
        let node = &cluster.nodes[n];
        let g = self.gpu.unwrap_or(0);
        let dev = node.gpus[g as usize].kmsg_dev.clone();
        // Every XID line has its NVML twin a few ms later; a GPU off the bus answers nothing.
        let xid = |out: &mut Vec<Seen>, t: i64, code: u32, text: String| {
            out.push(seen(n, t, Obs::Kmsg(xid_line(&dev, code, None, &text))));
            if code != 79 {
                out.push(seen(n, t + 3, Obs::NvmlXid { gpu: g, code }));
            }
        };
        use FaultClass as K;
        match self.kind() {
            K::GpuLost if in_win(onset) => {
                xid(&mut out, onset, 79, "GPU has fallen off the bus.".into());
                let bdf = &node.gpus[g as usize].bus_id[4..];
                out.push(seen(n, onset + 1, Obs::Kmsg(format!("NVRM: GPU {bdf}: GPU has fallen off the bus."))));
                if self.p.nvml_lost {
                    out.push(seen(n, onset + 200, Obs::NvmlLost { gpu: g }));
                }
            }
            K::GpuHbmUncorrectable if in_win(onset) => {
                let addr = noise::hash(&[self.seed, self.idx as u64]) % 0x14_0000_0000;
                let text = match self.p.xid {
                    48 => format!(
                        "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at physAddr 0x{addr:x} partition {}, subpartition {}.",
                        addr % 8,
                        addr % 2
                    ),
                    94 => "Contained: FBHUB (0x1). RST: Yes, D-RST: No".into(),
                    _ => "Uncontained: FBHUB. RST: Yes, D-RST: No".into(),
                };
                xid(&mut out, onset, self.p.xid, text);
                if self.p.xid != 94 {
                    out.push(seen(n, onset + 3, Obs::NvmlEcc { gpu: g, double_bit: true, count: 1 }));
                }
            }
            K::GpuSramUncorrectable if in_win(onset) => {
                let text = if self.p.xid == 94 {
                    "Contained: SM (0x1). RST: No, D-RST: No"
                } else {
                    "Uncontained: LTC TAG (0x2,0x0). RST: Yes, D-RST: No"
                };
                xid(&mut out, onset, self.p.xid, text.into());
            }
            K::GpuGspHang if in_win(onset) => {
                let text = if self.p.xid == 119 {
                    format!(
                        "Timeout after 6s of waiting for RPC response from GPU{g} GSP! Expected function 76 (GSP_RM_CONTROL) (0x20803032 0x58c)."
                    )
                } else {
                    "GSP task exception: store access page fault (cause:0xf) @ pc:0x13ebd80, partition:2#0, task:3"
                        .into()
                };
                xid(&mut out, onset, self.p.xid, text);
            }
            K::GpuEccSbeStorm => {
                for t in recurring(XID92_EVERY_MS) {
                    xid(&mut out, t, 92, "High single-bit ECC error rate".into());
                }
                // NVML raises an event per corrected error; the agent coalesces them per window.
                for t in recurring(ECC_COALESCE_MS) {
                    let count = (self.p.rate * ECC_COALESCE_MS as f64 / 1000.0).round().max(1.0) as u64;
                    out.push(seen(n, t + 7, Obs::NvmlEcc { gpu: g, double_bit: false, count }));
                }
            }
            K::GpuRowRemapFailure if in_win(onset) => {
                let row = noise::hash(&[self.seed, self.idx as u64, 9]) % 0x10_0000_0000;
                xid(&mut out, onset, 64, format!("Row Remapper Error: failed to remap row (0x{row:016x})."));
            }
            K::NvlinkDown if in_win(onset) => {
                let l = self.link.unwrap_or(0);
                xid(
                    &mut out,
                    onset,
                    74,
                    format!("NVLink: fatal error detected on link {l}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)"),
                );
            }
            K::PcieDowntrained => {
                for t in recurring(self.p.period_ms) {
                    let gs = &node.gpus[g as usize];
                    let line = format!("pcieport {}: AER: Corrected error received: {}", gs.root_port, &gs.bus_id[4..]);
                    out.push(seen(n, t, Obs::Kmsg(line)));
                }
            }
            K::NicDown => {
                let k = self.nic.unwrap_or(0);
                if in_win(onset) {
                    out.push(seen(n, onset, Obs::Kmsg(nic_link_line(cluster, n, k, false))));
                }
                if clear_in_win {
                    out.push(seen(n, clear, Obs::Kmsg(nic_link_line(cluster, n, k, true))));
                }
            }
            K::NicFlap => {
                let k = self.nic.unwrap_or(0);
                let first = ((t0 - onset) / self.p.period_ms.max(1) - 1).max(0);
                let last = (t1 - onset) / self.p.period_ms.max(1) + 1;
                for i in first..=last.max(first) {
                    let down = self.flap_start(i);
                    let up = down + self.p.down_ms;
                    if down < self.end_ms && in_win(down) {
                        out.push(seen(n, down, Obs::Kmsg(nic_link_line(cluster, n, k, false))));
                    }
                    if down < self.end_ms && t0 < up && up <= t1 {
                        out.push(seen(n, up, Obs::Kmsg(nic_link_line(cluster, n, k, true))));
                    }
                }
            }
            K::HostOom if in_win(onset) => {
                let pid = self.p.victim.map_or(self.p.pid, |(j, r)| rank_pid(j, r));
                // The leaking rank holds most of the host's memory when the killer picks it.
                let rss_kb = node_state::HOST_MEM_BYTES / 1024 * 9 / 10;
                out.push(seen(
                    n,
                    onset - 1,
                    Obs::Kmsg("python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0".into()),
                ));
                out.push(seen(
                    n,
                    onset,
                    Obs::Kmsg(format!(
                        "Out of memory: Killed process {pid} (python) total-vm:{}kB, anon-rss:{rss_kb}kB, file-rss:0kB, shmem-rss:2097152kB, UID:1000 pgtables:3915520kB oom_score_adj:0",
                        rss_kb + 60_000_000
                    )),
                ));
            }
            K::HostMce => {
                if in_win(onset) {
                    out.push(seen(n, onset, Obs::Kmsg("mce: [Hardware Error]: Machine check events logged".into())));
                }
                for t in recurring(EDAC_EVERY_MS).into_iter().filter(|&t| t > onset) {
                    let page = noise::hash(&[self.seed, self.idx as u64, t as u64]) % 0xfff_ffff;
                    out.push(seen(
                        n,
                        t,
                        Obs::Kmsg(format!(
                            "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#2_DIMM#0 (channel:2 slot:0 page:0x{page:x} offset:0x0 grain:32 syndrome:0x0 -  err_code:0101:0092 socket:0 imc:0 rank:0 bg:1 ba:2 row:1a1e8 col:180)"
                        )),
                    ));
                }
            }
            K::DiskFailure => {
                for t in recurring(IO_ERROR_EVERY_MS) {
                    let sector = noise::hash(&[self.seed, self.idx as u64, t as u64]) % 7_500_000_000;
                    out.push(seen(
                        n,
                        t,
                        Obs::Kmsg(format!(
                            "blk_update_request: I/O error, dev {}, sector {sector} op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
                            crate::naming::DISK
                        )),
                    ));
                }
            }
            _ => {}
        }
        out
    }
}
