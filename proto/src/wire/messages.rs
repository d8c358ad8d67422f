//! The compact report's messages, written by hand for `prost`. Field numbers are the contract: never
//! reuse one; add new fields with new numbers.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Report {
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
    #[prost(uint32, tag = "2")]
    pub schema_version: u32,
    #[prost(uint32, tag = "3")]
    pub node: u32,
    #[prost(uint32, tag = "4")]
    pub agent_version: u32,
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
    #[prost(uint64, tag = "7")]
    pub interval_ms: u64,
    #[prost(bool, tag = "8")]
    pub shutdown: bool,
    #[prost(bool, tag = "9")]
    pub urgent: bool,
    #[prost(message, optional, tag = "10")]
    pub host: Option<Host>,
    #[prost(message, repeated, tag = "11")]
    pub gpus: Vec<Gpu>,
    #[prost(message, repeated, tag = "12")]
    pub nics: Vec<Nic>,
    #[prost(message, repeated, tag = "13")]
    pub disks: Vec<Disk>,
    #[prost(message, repeated, tag = "14")]
    pub jobs: Vec<Job>,
    #[prost(message, repeated, tag = "15")]
    pub events: Vec<WireEvent>,
    #[prost(uint64, tag = "16")]
    pub dropped_reports: u64,
    #[prost(uint64, tag = "17")]
    pub dropped_events: u64,
    #[prost(uint64, tag = "18")]
    pub dropped_progress: u64,
    #[prost(uint32, repeated, tag = "19")]
    pub collector_error_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "20")]
    pub collector_error_values: Vec<u64>,
    #[prost(uint32, optional, tag = "21")]
    pub expected_gpus: Option<u32>,
    #[prost(uint32, optional, tag = "22")]
    pub driver_version: Option<u32>,
    /// Tags 23–39 are reserved for report deltas.
    #[prost(message, repeated, tag = "40")]
    pub probes: Vec<Probe>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Host {
    #[prost(uint32, optional, tag = "1")]
    pub cpu_count: Option<u32>,
    #[prost(double, optional, tag = "2")]
    pub cpu_util_pct: Option<f64>,
    #[prost(double, optional, tag = "3")]
    pub cpu_non_job_pct: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub load1: Option<f64>,
    #[prost(double, optional, tag = "5")]
    pub load5: Option<f64>,
    #[prost(double, optional, tag = "6")]
    pub load15: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "8")]
    pub mem_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    pub mem_available_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    pub swap_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub swap_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "12")]
    pub uptime_s: Option<u64>,
    #[prost(message, repeated, tag = "13")]
    pub fans: Vec<Fan>,
    #[prost(message, repeated, tag = "14")]
    pub temps: Vec<Temp>,
    #[prost(uint32, repeated, tag = "15")]
    pub addrs: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Fan {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(double, optional, tag = "2")]
    pub rpm: Option<f64>,
    #[prost(double, optional, tag = "3")]
    pub min_rpm: Option<f64>,
    #[prost(bool, tag = "4")]
    pub alarm: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Temp {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(double, tag = "2")]
    pub celsius: f64,
    #[prost(double, optional, tag = "3")]
    pub crit_celsius: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Gpu {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(uint32, tag = "2")]
    pub uuid: u32,
    #[prost(uint32, tag = "3")]
    pub name: u32,
    #[prost(uint32, optional, tag = "4")]
    pub serial: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub pci_bus_id: Option<u32>,
    #[prost(uint32, tag = "6")]
    pub state: u32,
    #[prost(double, optional, tag = "7")]
    pub util_gpu_pct: Option<f64>,
    #[prost(double, optional, tag = "8")]
    pub util_mem_pct: Option<f64>,
    #[prost(uint64, optional, tag = "9")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    pub mem_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub mem_free_bytes: Option<u64>,
    #[prost(double, optional, tag = "12")]
    pub temp_c: Option<f64>,
    #[prost(double, optional, tag = "13")]
    pub mem_temp_c: Option<f64>,
    #[prost(double, optional, tag = "14")]
    pub power_w: Option<f64>,
    #[prost(double, optional, tag = "15")]
    pub power_limit_w: Option<f64>,
    #[prost(uint64, optional, tag = "16")]
    pub energy_mj: Option<u64>,
    #[prost(uint32, optional, tag = "17")]
    pub sm_clock_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "18")]
    pub sm_clock_max_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "19")]
    pub mem_clock_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "20")]
    pub mem_clock_max_mhz: Option<u32>,
    #[prost(uint64, optional, tag = "21")]
    pub throttle_mask: Option<u64>,
    #[prost(uint32, repeated, tag = "22")]
    pub throttle_reasons: Vec<u32>,
    #[prost(double, optional, tag = "23")]
    pub tensor_active_pct: Option<f64>,
    #[prost(uint64, optional, tag = "24")]
    pub ecc_sbe_volatile: Option<u64>,
    #[prost(uint64, optional, tag = "25")]
    pub ecc_dbe_volatile: Option<u64>,
    #[prost(uint64, optional, tag = "26")]
    pub ecc_sbe_aggregate: Option<u64>,
    #[prost(uint64, optional, tag = "27")]
    pub ecc_dbe_aggregate: Option<u64>,
    #[prost(uint64, optional, tag = "28")]
    pub ecc_sram_uncorrectable: Option<u64>,
    #[prost(message, optional, tag = "29")]
    pub retired_pages: Option<Retired>,
    #[prost(message, optional, tag = "30")]
    pub row_remap: Option<Remap>,
    #[prost(message, optional, tag = "31")]
    pub pcie: Option<Pcie>,
    #[prost(message, optional, tag = "32")]
    pub nvlinks: Option<Links>,
    #[prost(message, repeated, tag = "33")]
    pub processes: Vec<Proc>,
    #[prost(uint32, repeated, tag = "34")]
    pub not_supported: Vec<u32>,
    #[prost(uint32, repeated, tag = "35")]
    pub clock_event_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "36")]
    pub clock_event_values: Vec<u64>,
    #[prost(uint32, optional, tag = "37")]
    pub nvml_error: Option<u32>,
    #[prost(bool, optional, tag = "38")]
    pub pci_present: Option<bool>,
    /// `Some(true)`: MIG on, with the instances in `mig`.
    #[prost(bool, optional, tag = "39")]
    pub mig_on: Option<bool>,
    #[prost(message, repeated, tag = "40")]
    pub mig: Vec<Mig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mig {
    #[prost(uint32, tag = "1")]
    pub gpu_instance_id: u32,
    #[prost(uint32, optional, tag = "2")]
    pub compute_instance_id: Option<u32>,
    #[prost(uint32, tag = "3")]
    pub profile: u32,
    #[prost(uint32, tag = "4")]
    pub uuid: u32,
    #[prost(uint64, optional, tag = "5")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pub mem_used_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Retired {
    #[prost(uint64, tag = "1")]
    pub sbe: u64,
    #[prost(uint64, tag = "2")]
    pub dbe: u64,
    #[prost(bool, tag = "3")]
    pub pending: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Remap {
    #[prost(uint64, tag = "1")]
    pub correctable: u64,
    #[prost(uint64, tag = "2")]
    pub uncorrectable: u64,
    #[prost(bool, tag = "3")]
    pub pending: bool,
    #[prost(bool, tag = "4")]
    pub failure: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pcie {
    #[prost(uint32, optional, tag = "1")]
    pub generation: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub max_generation: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub width: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub max_width: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub replay_count: Option<u64>,
}

/// A GPU's NVLinks as columns: entry `i` of every column is link `i` of the report's list. A value
/// column holds 0 where the value is absent, and its `*_absent` bitset (64 links per word) says
/// which entries those are; a value column with no value at all is empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Links {
    #[prost(uint32, repeated, tag = "1")]
    pub link: Vec<u32>,
    #[prost(bool, repeated, tag = "2")]
    pub active: Vec<bool>,
    #[prost(uint64, repeated, tag = "3")]
    pub crc_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub crc_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub replay_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    pub replay_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "7")]
    pub recovery_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "8")]
    pub recovery_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "9")]
    pub tx_bytes: Vec<u64>,
    #[prost(uint64, repeated, tag = "10")]
    pub tx_bytes_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "11")]
    pub rx_bytes: Vec<u64>,
    #[prost(uint64, repeated, tag = "12")]
    pub rx_bytes_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "13")]
    pub crc_flit_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "14")]
    pub crc_flit_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "15")]
    pub crc_data_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "16")]
    pub crc_data_errors_absent: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Proc {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint64, optional, tag = "2")]
    pub used_mem_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Nic {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(uint32, optional, tag = "3")]
    pub netdev: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub port: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub pci_bus_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub operstate: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub carrier: Option<bool>,
    #[prost(uint64, optional, tag = "8")]
    pub carrier_changes: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    pub speed_mbps: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub mtu: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub link_layer: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    pub ib_state: Option<u32>,
    #[prost(uint32, optional, tag = "13")]
    pub ib_phys_state: Option<u32>,
    #[prost(double, optional, tag = "14")]
    pub rate_gbps: Option<f64>,
    #[prost(double, optional, tag = "15")]
    pub max_rate_gbps: Option<f64>,
    #[prost(uint32, repeated, tag = "16")]
    pub counter_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "17")]
    pub counter_values: Vec<u64>,
    #[prost(bool, optional, tag = "18")]
    pub fabric: Option<bool>,
    #[prost(uint32, repeated, tag = "19")]
    pub saturated: Vec<u32>,
    #[prost(uint32, repeated, tag = "20")]
    pub addrs: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Disk {
    #[prost(uint32, tag = "1")]
    pub device: u32,
    #[prost(uint32, optional, tag = "2")]
    pub mount: Option<u32>,
    #[prost(uint64, optional, tag = "3")]
    pub total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    pub available_bytes: Option<u64>,
    #[prost(bool, tag = "5")]
    pub read_only: bool,
    #[prost(uint64, optional, tag = "6")]
    pub write_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    #[prost(uint32, tag = "1")]
    pub job_id: u32,
    #[prost(uint32, tag = "2")]
    pub scheduler: u32,
    #[prost(uint32, optional, tag = "3")]
    pub world_size: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub sched_state: Option<u32>,
    #[prost(sint32, optional, tag = "5")]
    pub sched_exit_code: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub ranks: Vec<Rank>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rank {
    #[prost(uint32, tag = "1")]
    pub rank: u32,
    #[prost(uint32, optional, tag = "2")]
    pub local_rank: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub pid: Option<u32>,
    #[prost(uint32, repeated, tag = "4")]
    pub gpus: Vec<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub nic: Option<u32>,
    #[prost(uint32, tag = "6")]
    pub state: u32,
    #[prost(double, optional, tag = "7")]
    pub cpu_seconds: Option<f64>,
    #[prost(uint64, optional, tag = "8")]
    pub rss_bytes: Option<u64>,
    #[prost(sint32, optional, tag = "9")]
    pub exit_code: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub io_write_bytes: Option<u64>,
    #[prost(message, optional, tag = "11")]
    pub progress: Option<WireProgress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireProgress {
    #[prost(uint64, tag = "1")]
    pub step: u64,
    #[prost(int64, tag = "2")]
    pub last_progress_ms: i64,
    #[prost(double, optional, tag = "3")]
    pub step_time_ms: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub step_time_avg_ms: Option<f64>,
    #[prost(double, optional, tag = "5")]
    pub compute_ms: Option<f64>,
    #[prost(double, optional, tag = "6")]
    pub loss: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub loss_step: Option<u64>,
    #[prost(double, optional, tag = "8")]
    pub grad_norm: Option<f64>,
    #[prost(bool, tag = "9")]
    pub nonfinite_loss: bool,
    #[prost(uint32, tag = "10")]
    pub status: u32,
    #[prost(sint32, optional, tag = "11")]
    pub exit_code: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEvent {
    #[prost(int64, tag = "1")]
    pub ts_ms: i64,
    #[prost(uint32, tag = "2")]
    pub source: u32,
    #[prost(uint32, tag = "3")]
    pub class: u32,
    #[prost(uint32, tag = "4")]
    pub severity: u32,
    #[prost(uint32, optional, tag = "5")]
    pub component: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub xid: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub caused_by_xid: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub device: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub pid: Option<u32>,
    #[prost(uint64, tag = "10")]
    pub count: u64,
    #[prost(uint32, tag = "11")]
    pub message: u32,
    #[prost(message, optional, tag = "12")]
    pub collective: Option<WireCollective>,
}

/// `CollectiveInfo`: strings are string-table indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireCollective {
    #[prost(uint32, optional, tag = "1")]
    pub kind: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub job: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub rank: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub local_rank: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub device: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub hostname: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub peer: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub peer_port: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub local_addr: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub remote_addr: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub hca: Option<u32>,
    #[prost(uint64, optional, tag = "12")]
    pub seq: Option<u64>,
    #[prost(uint32, optional, tag = "13")]
    pub op: Option<u32>,
    #[prost(uint64, optional, tag = "14")]
    pub timeout_ms: Option<u64>,
    #[prost(uint64, optional, tag = "15")]
    pub last_completed: Option<u64>,
    #[prost(uint32, optional, tag = "16")]
    pub error: Option<u32>,
    #[prost(uint32, optional, tag = "17")]
    pub pg: Option<u32>,
}

/// `ProbeSample`: strings are string-table indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Probe {
    #[prost(uint32, tag = "1")]
    pub peer: u32,
    #[prost(uint32, tag = "2")]
    pub iface: u32,
    #[prost(uint32, tag = "3")]
    pub local_addr: u32,
    #[prost(uint32, tag = "4")]
    pub peer_addr: u32,
    #[prost(uint32, tag = "5")]
    pub sent: u32,
    #[prost(uint32, tag = "6")]
    pub received: u32,
    #[prost(uint32, optional, tag = "7")]
    pub rtt_p50_us: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub rtt_max_us: Option<u32>,
}
