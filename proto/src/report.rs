//! `NodeReport`: what one agent tells the analyzer about one node, every interval and at once on events.
//!
//! Design notes:
//! - Every measured value is an `Option`: a query the hardware does not support is `None`, never 0,
//!   so the analyzer can tell "zero errors" from "cannot know".
//! - Counters are raw, monotonic as the kernel or NVML gives them. Rates are the analyzer's job, since
//!   only it sees the series across reports (and across agent restarts that reset nothing in sysfs).
//! - NIC counters travel in a name → value map with the kernel's own names (`symbol_error`,
//!   `port_xmit_wait`, `rx_bytes`, …) so a new driver counter needs no schema change.
//! - `seq` grows by one per report and survives agent restarts (the agent persists it), so the analyzer
//!   can see a gap and the spool can replay in order.

use serde::{Deserialize, Serialize};

pub use crate::counters::{CounterMap, CounterName, counter_name};
use crate::{EventClass, Severity};

/// The schema version this crate writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// Upper bounds on list sizes. A report over them is refused, not truncated.
pub mod limits {
    pub const MAX_GPUS: usize = 64;
    pub const MAX_NVLINKS_PER_GPU: usize = 32;
    pub const MAX_PROCESSES_PER_GPU: usize = 1024;
    /// MIG devices per GPU: NVML's `NVML_MAX_GPU_INSTANCES`-sized tables hold 7 on A100/H100; 64 leaves
    /// room for later parts without letting a report invent thousands.
    pub const MAX_MIG_PER_GPU: usize = 64;
    pub const MAX_NICS: usize = 512;
    pub const MAX_COUNTERS_PER_NIC: usize = 512;
    pub const MAX_DISKS: usize = 256;
    pub const MAX_JOBS: usize = 256;
    pub const MAX_RANKS_PER_JOB: usize = 1024;
    pub const MAX_EVENTS: usize = 10_000;
    pub const MAX_FANS_OR_TEMPS: usize = 256;
    pub const MAX_STRING: usize = 4096;
    /// Default HTTP body limit for one report, in bytes.
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
}

/// One agent report. Field names are part of the public contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub schema_version: u32,
    /// Node (host) name, the root of every component id on it.
    pub node: String,
    pub agent_version: String,
    /// Grows by one per report, survives agent restarts.
    pub seq: u64,
    /// When the agent took this sample, Unix milliseconds (agent clock).
    pub timestamp_ms: i64,
    /// The agent's report interval in milliseconds.
    pub interval_ms: u64,
    /// Set on the last report of a clean agent shutdown (SIGTERM, planned reboot): silence that
    /// follows is not a fault.
    #[serde(default)]
    pub shutdown: bool,
    /// True when this report was pushed early because of an event.
    #[serde(default)]
    pub urgent: bool,
    #[serde(default)]
    pub host: Option<HostSample>,
    #[serde(default)]
    pub gpus: Vec<GpuSample>,
    #[serde(default)]
    pub nics: Vec<NicSample>,
    #[serde(default)]
    pub disks: Vec<DiskSample>,
    #[serde(default)]
    pub jobs: Vec<JobSample>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// What the agent had to drop since it started (monotonic).
    #[serde(default)]
    pub dropped: Dropped,
    /// Collector errors since start, by collector name (monotonic).
    #[serde(default)]
    pub collector_errors: CounterMap,
    /// How many GPUs this node should have: the agent's config, or else the count it saw at its first
    /// start (persisted). Fewer GPUs than this in a report is a GPU missing, even right after boot.
    #[serde(default)]
    pub expected_gpus: Option<u32>,
    /// The NVIDIA driver version NVML reports (`550.54.15`), when the GPU collector runs.
    #[serde(default)]
    pub driver_version: Option<String>,
    /// Active fabric probe results (pingmesh) of the last interval, one per probed path; empty when
    /// probing is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<crate::probe::ProbeSample>,
}

impl NodeReport {
    /// A report for `node` that says nothing yet: builders fill in what they observed.
    pub fn empty(node: impl Into<String>) -> NodeReport {
        NodeReport {
            schema_version: SCHEMA_VERSION,
            node: node.into(),
            agent_version: String::new(),
            seq: 0,
            timestamp_ms: 0,
            interval_ms: 10_000,
            shutdown: false,
            urgent: false,
            host: None,
            gpus: Vec::new(),
            nics: Vec::new(),
            disks: Vec::new(),
            jobs: Vec::new(),
            events: Vec::new(),
            dropped: Dropped::default(),
            collector_errors: CounterMap::new(),
            expected_gpus: None,
            driver_version: None,
            probes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// Reports dropped from a full spool (oldest first).
    #[serde(default)]
    pub reports: u64,
    /// Events dropped from a full event queue or rate limiting (their count is kept in `Event::count`).
    #[serde(default)]
    pub events: u64,
    /// Progress posts dropped.
    #[serde(default)]
    pub progress: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub cpu_count: Option<u32>,
    /// Whole-host CPU busy, percent 0–100.
    pub cpu_util_pct: Option<f64>,
    /// CPU busy from processes outside any training job, percent of the host 0–100.
    #[serde(default)]
    pub cpu_non_job_pct: Option<f64>,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_used_bytes: Option<u64>,
    pub uptime_s: Option<u64>,
    #[serde(default)]
    pub fans: Vec<FanSample>,
    #[serde(default)]
    pub temps: Vec<TempSample>,
    /// Every IPv4/IPv6 address of the host's interfaces (loopback excluded), also those of NICs the
    /// report does not list (the management network NCCL often uses for its sockets), so that a peer
    /// address in a collective library's error names this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanSample {
    /// `hwmon2/fan1` or the label.
    pub name: String,
    pub rpm: Option<f64>,
    pub min_rpm: Option<f64>,
    /// The hwmon `fanN_alarm` / `fanN_fault` flag.
    #[serde(default)]
    pub alarm: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TempSample {
    pub name: String,
    pub celsius: f64,
    pub crit_celsius: Option<f64>,
}

/// Whether a GPU answered this cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuState {
    #[default]
    Ok,
    /// NVML answered GPU_IS_LOST, or the GPU vanished from the device list.
    Lost,
    /// NVML calls for it timed out (GSP hang looks like this).
    Unresponsive,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    pub serial: Option<String>,
    /// `00000000:3B:00.0`
    pub pci_bus_id: Option<String>,
    #[serde(default)]
    pub state: GpuState,
    pub util_gpu_pct: Option<f64>,
    pub util_mem_pct: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    pub temp_c: Option<f64>,
    pub mem_temp_c: Option<f64>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    /// Total energy since driver load, millijoules.
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub sm_clock_max_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub mem_clock_max_mhz: Option<u32>,
    /// NVML's raw clocks-event (throttle) reason bitmask.
    pub throttle_mask: Option<u64>,
    /// Decoded names of the bits set in `throttle_mask`, as listed in `THROTTLE_REASONS`.
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
    /// Tensor/SM activity percent where the source gives it (DCGM profiling, simulator).
    #[serde(default)]
    pub tensor_active_pct: Option<f64>,
    #[serde(default)]
    pub ecc: EccCounts,
    #[serde(default)]
    pub retired_pages: Option<RetiredPages>,
    #[serde(default)]
    pub row_remap: Option<RowRemap>,
    #[serde(default)]
    pub pcie: Option<PcieLink>,
    #[serde(default)]
    pub nvlinks: Vec<NvLinkSample>,
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
    /// Queries this GPU answered NotSupported (kept so "unknown" is not mistaken for "zero").
    #[serde(default)]
    pub not_supported: Vec<String>,
    /// Cumulative time the clocks were held down, per reason, nanoseconds since driver load: NVML's
    /// `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` fields (DCGM's `*_VIOLATION`). Keys are the reason names of
    /// `throttle_reasons` (`sw_power_cap`, `hw_slowdown`, `hw_thermal_slowdown`, `sw_thermal_slowdown`,
    /// `hw_power_brake_slowdown`, `sync_boost`). Judging throttling from how fast these grow is
    /// robust to a snapshot that happens to miss a short event.
    #[serde(default)]
    pub clock_event_ns: CounterMap,
    /// The NVML error the handle or its queries answered this cycle, in NVML's words (`Unknown Error`,
    /// `GPU is lost`, `Timeout`), when any. A fallen-off GPU often answers `Unknown Error`.
    #[serde(default)]
    pub nvml_error: Option<String>,
    /// Whether the GPU's PCI device is still present (`/sys/bus/pci/devices/<bdf>`), when checked.
    #[serde(default)]
    pub pci_present: Option<bool>,
    /// The GPU's MIG instances when MIG mode is on (`Some`, possibly empty before any instance is
    /// made); `None` when MIG is off, unsupported or unknown.
    #[serde(default)]
    pub mig: Option<Vec<MigInstance>>,
}

/// One MIG device (a GPU instance with its compute instance) of a GPU in MIG mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigInstance {
    /// The GPU instance id (dcgm-exporter's `GPU_I_ID`).
    pub gpu_instance_id: u32,
    /// The compute instance id inside it.
    #[serde(default)]
    pub compute_instance_id: Option<u32>,
    /// The profile (`1g.10gb`, `3g.40gb`; dcgm-exporter's `GPU_I_PROFILE`).
    #[serde(default)]
    pub profile: String,
    /// The MIG device's own UUID (`MIG-…`).
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub mem_total_bytes: Option<u64>,
    #[serde(default)]
    pub mem_used_bytes: Option<u64>,
}

/// The bits of `GpuSample::throttle_mask` (NVML's `nvmlClocksEventReasons`) and the names that
/// `GpuSample::throttle_reasons` uses for them: one table, so the agent that decodes the mask and
/// the exporters that write one series per reason agree.
pub const THROTTLE_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// The names in `THROTTLE_REASONS` of the bits set in `mask`.
pub fn decode_throttle(mask: u64) -> Vec<String> {
    THROTTLE_REASONS.iter().filter(|(bit, _)| mask & bit != 0).map(|(_, n)| n.to_string()).collect()
}

/// ECC error counts. `sbe` = corrected (single-bit), `dbe` = uncorrected (double-bit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EccCounts {
    pub sbe_volatile: Option<u64>,
    pub dbe_volatile: Option<u64>,
    pub sbe_aggregate: Option<u64>,
    pub dbe_aggregate: Option<u64>,
    /// Uncorrectable SRAM errors (on-chip, not HBM), volatile.
    #[serde(default)]
    pub sram_uncorrectable: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetiredPages {
    pub sbe: u64,
    pub dbe: u64,
    pub pending: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowRemap {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failure: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PcieLink {
    pub generation: Option<u32>,
    pub max_generation: Option<u32>,
    pub width: Option<u32>,
    pub max_width: Option<u32>,
    pub replay_count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NvLinkSample {
    pub link: u32,
    pub active: bool,
    pub crc_errors: Option<u64>,
    pub replay_errors: Option<u64>,
    pub recovery_errors: Option<u64>,
    /// The flow-control (flit) part of `crc_errors`: NVML's `NVML_NVLINK_ERROR_DL_CRC_FLIT` counter,
    /// which dcgm-exporter exports on its own. Left out of the JSON when unknown, and absent from
    /// reports of agents older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc_flit_errors: Option<u64>,
    /// The data part of `crc_errors` (`NVML_NVLINK_ERROR_DL_CRC_DATA`). As `crc_flit_errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc_data_errors: Option<u64>,
    /// Data bytes this link sent, cumulative: NVML field `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`
    /// (KiB, ×1024) for this link's scope. A hung NCCL collective leaves it flat.
    /// Left out of the JSON when unknown: a node has up to 18 links per GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Data bytes this link received, cumulative (`NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_mem_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicKind {
    /// An InfiniBand or RoCE port under /sys/class/infiniband (named by its IB device, `mlx5_0`).
    #[default]
    Infiniband,
    /// A plain network interface under /sys/class/net.
    Netdev,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NicSample {
    /// The id part after `nic:`: the IB device (`mlx5_0`, `mlx5_0p2` for port 2) or the netdev name.
    pub name: String,
    #[serde(default)]
    pub kind: NicKind,
    /// The netdev behind an IB/RoCE port (`ibp12s0`, `ens1f0np0`).
    pub netdev: Option<String>,
    pub port: Option<u32>,
    /// PCI address of the NIC, for GPU affinity.
    #[serde(default)]
    pub pci_bus_id: Option<String>,
    /// netdev operstate: `up`, `down`, `lowerlayerdown`, `unknown`, …
    pub operstate: Option<String>,
    pub carrier: Option<bool>,
    pub carrier_changes: Option<u64>,
    /// netdev speed, Mb/s.
    pub speed_mbps: Option<u64>,
    pub mtu: Option<u32>,
    /// `InfiniBand` or `Ethernet`.
    pub link_layer: Option<String>,
    /// IB port state: `ACTIVE`, `DOWN`, `INIT`, `ARMED`, … (the name without the number).
    pub ib_state: Option<String>,
    /// IB physical state: `LinkUp`, `Disabled`, `Polling`, …
    pub ib_phys_state: Option<String>,
    /// IB rate, Gb/s.
    pub rate_gbps: Option<f64>,
    /// The highest rate this port is rated for, Gb/s, where known.
    #[serde(default)]
    pub max_rate_gbps: Option<f64>,
    /// Raw counters with the kernel's names. IB `port_*_data` are already ×4 into bytes and also
    /// appear as `rx_bytes`/`tx_bytes`.
    #[serde(default)]
    pub counters: CounterMap,
    /// Whether this is a fabric NIC (the data plane training traffic uses). Only fabric NICs can be a
    /// fault root. `None` (older agents): IB/RoCE ports are fabric, plain netdevs are not.
    #[serde(default)]
    pub fabric: Option<bool>,
    /// Counters stuck at their width's maximum (`symbol_error` at 65535, …). The kernel saturates
    /// them instead of wrapping, so they no longer move: their rate is unknown, not zero.
    #[serde(default)]
    pub saturated: Vec<String>,
    /// The addresses of the netdev behind this NIC (IPv4 and IPv6, no prefix length), so that a peer
    /// address in a collective library's error can be traced to this node and NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
}

impl NicSample {
    /// Fabric NIC: the agent's word, or by kind for agents that do not say.
    pub fn is_fabric(&self) -> bool {
        self.fabric.unwrap_or(self.kind == NicKind::Infiniband)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskSample {
    /// `nvme0n1`
    pub device: String,
    pub mount: Option<String>,
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
    /// Bytes written since boot (`/proc/diskstats` sectors × 512), when known.
    #[serde(default)]
    pub write_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    Slurm,
    Torchrun,
    Kubernetes,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSample {
    pub job_id: String,
    #[serde(default)]
    pub scheduler: Scheduler,
    #[serde(default)]
    pub world_size: Option<u32>,
    /// The job's state as its scheduler reports it (Slurm job state, Kubernetes pod phase), when a
    /// scheduler was asked. Only a scheduler knows why a job ended.
    #[serde(default)]
    pub sched_state: Option<SchedState>,
    /// The job's exit code as its scheduler reports it (negative: killed by signal -n).
    #[serde(default)]
    pub sched_exit_code: Option<i32>,
    #[serde(default)]
    pub ranks: Vec<RankSample>,
}

/// A job's state as the scheduler reports it (Slurm's job states; Kubernetes pod phases map onto them:
/// Pending, Running, Succeeded → `completed`, Failed → `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedState {
    Pending,
    Running,
    /// Slurm: the job finished and is cleaning up.
    Completing,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code.
    Failed,
    /// Cancelled by a person or the scheduler.
    Cancelled,
    /// Hit its time limit.
    Timeout,
    /// Ended because a node failed.
    NodeFail,
    /// Killed by the scheduler for exceeding its memory limit.
    OutOfMemory,
    Preempted,
}

impl SchedState {
    /// True once the job has ended, however.
    pub fn is_ended(self) -> bool {
        !matches!(self, SchedState::Pending | SchedState::Running | SchedState::Completing)
    }
}

/// Process state as /proc shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    Running,
    Sleeping,
    /// Uninterruptible sleep (D): usually stuck in I/O or a driver.
    DiskSleep,
    Zombie,
    Stopped,
    /// The process is gone.
    Exited,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankSample {
    pub rank: u32,
    pub local_rank: Option<u32>,
    pub pid: Option<u32>,
    /// GPU indexes on this node.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// NIC name (the part after `nic:`) this rank's GPU uses.
    #[serde(default)]
    pub nic: Option<String>,
    #[serde(default)]
    pub state: ProcState,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Exit code once the process is gone, when known: from the scheduler or the rank's own post, never
    /// guessed (a process that merely vanished has none). Negative: killed by signal -n.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Bytes this rank's process caused to be written to storage (`/proc/<pid>/io` `write_bytes`),
    /// cumulative. A synchronous checkpoint shows as a burst here.
    #[serde(default)]
    pub io_write_bytes: Option<u64>,
    /// What the training loop reported, if it reports.
    #[serde(default)]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStatus {
    #[default]
    Running,
    Checkpointing,
    /// Running evaluation: training steps pause for minutes, which is not a hang.
    Evaluating,
    Exited,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    /// Agent time of the last post that advanced `step`, Unix ms.
    pub last_progress_ms: i64,
    pub step_time_ms: Option<f64>,
    /// Moving average of step time.
    pub step_time_avg_ms: Option<f64>,
    /// The step's own work before it waits in collectives.
    pub compute_ms: Option<f64>,
    /// Last finite loss.
    pub loss: Option<f64>,
    /// The step `loss` and `grad_norm` belong to (may trail `step`). Ranks are compared at the same
    /// step, never at whatever each reported last.
    #[serde(default)]
    pub loss_step: Option<u64>,
    pub grad_norm: Option<f64>,
    /// Set once the loop reported a NaN/Inf loss or gradient norm.
    #[serde(default)]
    pub nonfinite_loss: bool,
    #[serde(default)]
    pub status: ProgressStatus,
    pub exit_code: Option<i32>,
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// An NVML event set (XID, ECC).
    Nvml,
    /// A kernel log line.
    #[default]
    Kmsg,
    /// The agent itself (process exit seen, GPU vanished, …).
    Agent,
    /// A training process's own log (NCCL, PyTorch distributed), read where the scheduler puts it.
    TrainingLog,
}

/// Something that happened at an instant: an XID, a kernel line, a process exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix ms.
    pub ts_ms: i64,
    #[serde(default)]
    pub source: EventSource,
    /// What the event shows: a kernel-log class (`xid`, `gpu_fallen_off_bus`, `nic_link_down`, …), an
    /// NVML class (`xid`, `ecc_sbe`, `ecc_dbe`) or an agent class (`process_exit`, `gpu_lost`).
    pub class: EventClass,
    #[serde(default)]
    pub severity: Severity,
    /// The component on this node it concerns, as the part after `<host>/` (`gpu3`, `nic:mlx5_2`,
    /// `disk:nvme0n1`), or empty for the node itself.
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default)]
    pub xid: Option<u32>,
    /// "caused by previous Xid N".
    #[serde(default)]
    pub caused_by_xid: Option<u32>,
    /// PCI device as the line wrote it (`0000:3b:00`).
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// How many identical events this one stands for (rate-limited floods).
    #[serde(default = "one")]
    pub count: u64,
    /// The raw line or a short description, truncated.
    #[serde(default)]
    pub message: String,
    /// What an NCCL / PyTorch-distributed line said (peer, collective, rank); training-log events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collective: Option<crate::CollectiveInfo>,
}

fn one() -> u64 {
    1
}

impl Event {
    /// An event of `class` from `source` at `ts_ms`, with the class's own severity and nothing else
    /// set: builders fill in the rest.
    pub fn new(ts_ms: i64, source: EventSource, class: EventClass) -> Event {
        Event {
            ts_ms,
            source,
            class,
            severity: class.default_severity(),
            component: None,
            xid: None,
            caused_by_xid: None,
            device: None,
            pid: None,
            count: 1,
            message: String::new(),
            collective: None,
        }
    }
}
