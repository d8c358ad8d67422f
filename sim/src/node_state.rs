//! What the simulated world keeps about each node between reports (`NodeDyn`: sequence numbers,
//! boot time, monotonic GPU and NIC counters), and the vocabulary that the telemetry and the faults
//! share to write into a report: the node's fixed sizes and rates, the IB counter names, the
//! `ReportCtx` a fault sets its signals on, and `throttle`. Below both `telemetry` and `faults`, so
//! neither imports the other for it.

use faultline_proto::{GpuSample, GpuState, NodeReport};

use crate::cluster::Cluster;
use crate::noise::{self, what};

/// Host memory of a simulated node (DGX H100: 2 TiB).
pub const HOST_MEM_BYTES: u64 = 2 << 40;
/// Logical CPUs of a simulated node (2 × 56 cores, SMT).
pub const HOST_CPUS: u32 = 224;
/// Local NVMe of a simulated node, bytes (3.84 TB).
pub const DISK_BYTES: u64 = 3_840_755_982_336;
/// Traffic of one NIC of a training rank, bytes/s (about half of a 400 Gb/s port, averaged over the step).
pub const NIC_BUSY_BYTES_PER_S: f64 = 22.0e9;
/// Background traffic of an idle port (subnet management, IPoIB chatter), bytes/s.
pub const NIC_IDLE_BYTES_PER_S: f64 = 2.0e3;
/// `port_xmit_wait` ticks per second on a busy, healthy port (the H100 sample in shared/data has
/// 2.5e9 after weeks of uptime: a few thousand per second).
pub const XMIT_WAIT_PER_S: f64 = 3_000.0;
/// Rated IB speed, Gb/s (NDR).
pub const NIC_RATE_GBPS: f64 = 400.0;
/// Step-to-step jitter of the global gradient norm (absolute, on a norm near 1) at noise 1: it moves
/// smoothly in steady pre-training; ranks reporting a few steps apart see nearly the same value.
pub const GRAD_NORM_JITTER: f64 = 0.015;
/// NVML clock-event reasons the agent reads violation time for.
pub const CLOCK_EVENT_REASONS: &[&str] =
    &["sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"];
/// Agent version the simulated agents report.
pub const AGENT_VERSION: &str = concat!("faultline-sim/", env!("CARGO_PKG_VERSION"));

/// The IB counters every port reports, in a fixed order (kernel sysfs names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum NicCounter {
    ExcessiveBufferOverrunErrors,
    LinkDowned,
    LinkErrorRecovery,
    LocalLinkIntegrityErrors,
    PortRcvConstraintErrors,
    PortRcvData,
    PortRcvErrors,
    PortRcvPackets,
    PortRcvRemotePhysicalErrors,
    PortRcvSwitchRelayErrors,
    PortXmitConstraintErrors,
    PortXmitData,
    PortXmitDiscards,
    PortXmitPackets,
    PortXmitWait,
    SymbolError,
    Vl15Dropped,
    // hw_counters
    DuplicateRequest,
    ImpliedNakSeqErr,
    LocalAckTimeoutErr,
    NpCnpSent,
    NpEcnMarkedRocePackets,
    OutOfBuffer,
    OutOfSequence,
    PacketSeqErr,
    RnrNakRetryErr,
    RoceAdpRetrans,
    RoceAdpRetransTo,
    RpCnpHandled,
    RpCnpIgnored,
}

/// Sysfs names, in `NicCounter` order.
pub const NIC_COUNTER_NAMES: [&str; 30] = [
    "excessive_buffer_overrun_errors",
    "link_downed",
    "link_error_recovery",
    "local_link_integrity_errors",
    "port_rcv_constraint_errors",
    "port_rcv_data",
    "port_rcv_errors",
    "port_rcv_packets",
    "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors",
    "port_xmit_constraint_errors",
    "port_xmit_data",
    "port_xmit_discards",
    "port_xmit_packets",
    "port_xmit_wait",
    "symbol_error",
    "VL15_dropped",
    "duplicate_request",
    "implied_nak_seq_err",
    "local_ack_timeout_err",
    "np_cnp_sent",
    "np_ecn_marked_roce_packets",
    "out_of_buffer",
    "out_of_sequence",
    "packet_seq_err",
    "rnr_nak_retry_err",
    "roce_adp_retrans",
    "roce_adp_retrans_to",
    "rp_cnp_handled",
    "rp_cnp_ignored",
];

/// Monotonic GPU counters of one boot.
#[derive(Debug, Clone, Default)]
pub struct GpuDyn {
    pub energy_mj: f64,
    pub sbe_vol: u64,
    pub sbe_agg: u64,
    pub dbe_vol: u64,
    pub dbe_agg: u64,
    pub sram_unc: u64,
    pub pcie_replay: u64,
    pub remap_corr: u64,
    pub remap_unc: u64,
    pub remap_pending: bool,
    pub remap_failure: bool,
    /// Per NVLink: crc, replay, recovery.
    pub nvl: Vec<[u64; 3]>,
    /// Per NVLink: data KiB sent and received (NVML's throughput fields).
    pub nvl_kib: Vec<[u64; 2]>,
    /// NVML's cumulative clock-event (violation) time per reason, ns.
    pub clock_ev: faultline_proto::CounterMap,
}

/// Monotonic NIC counters of one boot.
#[derive(Debug, Clone, Default)]
pub struct NicDyn {
    pub c: [u64; 30],
    pub carrier_changes: u64,
    /// Fractional remainders of data counters, so slow rates still count.
    pub(crate) frac: [f64; 4],
}

/// Everything about one node that changes from report to report.
#[derive(Debug, Clone, Default)]
pub struct NodeDyn {
    pub seq: u64,
    /// Virtual ms the node booted (negative: before the run).
    pub boot_ms: i64,
    /// Virtual ms of the last report sent.
    pub last_ts: i64,
    /// Virtual ms of the next regular report.
    pub next_ms: i64,
    /// Events waiting for the next report.
    pub pending: Vec<faultline_proto::Event>,
    /// Was away (reboot, crash): the next report starts a new boot.
    pub rebooting: bool,
    pub gpus: Vec<GpuDyn>,
    pub nics: Vec<NicDyn>,
    /// Bytes through the management NIC since boot.
    pub mgmt_bytes: u64,
    /// Bytes written to the local disk since boot.
    pub disk_written: u64,
}

impl GpuDyn {
    /// A GPU reset (or replacement) after a fault cleared: volatile error counts start over and
    /// pending row remaps are applied; aggregate counts stay.
    pub fn reset(&mut self) {
        self.sbe_vol = 0;
        self.dbe_vol = 0;
        self.sram_unc = 0;
        self.remap_pending = false;
        self.remap_failure = false;
    }
}

impl NodeDyn {
    pub fn new(cluster: &Cluster, n: usize, seed: u64, phase_ms: i64, interval_ms: i64) -> Self {
        let u = |k: u64| noise::unit(&[seed, what::STATIC, n as u64, 1000 + k]);
        let uptime_ms = ((3.0 + 57.0 * u(0)) * 86_400_000.0) as i64;
        let mut d = Self {
            seq: 1000 + (u(1) * 1_000_000.0) as u64,
            boot_ms: -uptime_ms,
            last_ts: phase_ms - interval_ms,
            next_ms: phase_ms,
            ..Default::default()
        };
        d.fresh_counters(cluster, n, seed, uptime_ms as f64 / 1000.0);
        d
    }

    /// Counters after `up_s` seconds of uptime: data counters that match it, and the small
    /// non-zero error counts healthy ports carry.
    fn fresh_counters(&mut self, cluster: &Cluster, n: usize, seed: u64, up_s: f64) {
        let spec = &cluster.spec;
        let u = |a: u64, b: u64| noise::unit(&[seed, what::STATIC, n as u64, a, b]);
        let small = |a: u64, b: u64, max: f64| (u(a, b) * max) as u64;
        let agg: Vec<(u64, u64)> = self.gpus.iter().map(|g| (g.sbe_agg, g.dbe_agg)).collect();
        let remap: Vec<(u64, u64, bool)> =
            self.gpus.iter().map(|g| (g.remap_corr, g.remap_unc, g.remap_failure)).collect();
        self.gpus = (0..spec.gpus_per_node as u64)
            .map(|g| GpuDyn {
                energy_mj: up_s * 250.0 * 1000.0,
                sbe_agg: agg.get(g as usize).map_or(small(10, g, 40.0), |a| a.0),
                dbe_agg: agg.get(g as usize).map_or(0, |a| a.1),
                pcie_replay: small(11, g, 4.0),
                remap_corr: remap.get(g as usize).map_or(small(12, g, 2.5), |r| r.0),
                remap_unc: remap.get(g as usize).map_or(0, |r| r.1),
                remap_failure: remap.get(g as usize).is_some_and(|r| r.2),
                nvl: (0..spec.nvlinks_per_gpu as u64)
                    .map(|l| [small(13, g * 64 + l, 6.0) * u64::from(up_s > 3600.0), small(14, g * 64 + l, 3.0), 0])
                    .collect(),
                nvl_kib: vec![[0; 2]; spec.nvlinks_per_gpu as usize],
                ..Default::default()
            })
            .collect();
        let aged = up_s > 3600.0;
        self.nics = (0..spec.nics_per_node as u64)
            .map(|k| {
                let mut c = [0u64; 30];
                use NicCounter as C;
                let avg_bytes = up_s * 6.0e9 * (0.5 + u(20, k));
                c[C::PortXmitData as usize] = avg_bytes as u64;
                c[C::PortRcvData as usize] = (avg_bytes * (0.99 + 0.02 * u(21, k))) as u64;
                c[C::PortXmitPackets as usize] = c[C::PortXmitData as usize] / 4000;
                c[C::PortRcvPackets as usize] = c[C::PortRcvData as usize] / 4000;
                // 32 bits: weeks of training traffic take a port past its maximum (the H100 sample in
                // sim/data shows 2.5e9 of 4.3e9).
                c[C::PortXmitWait as usize] = (up_s * XMIT_WAIT_PER_S * (0.3 + 2.0 * u(22, k))) as u64;
                if aged {
                    // Healthy ports are rarely at zero, and the 4-bit counters of many already sit at
                    // their maximum (sim/data/sysfs-infiniband-h100-sample.txt: 15 and 14).
                    c[C::ExcessiveBufferOverrunErrors as usize] =
                        if u(30, k) < 0.5 { 15 + small(23, k, 40.0) } else { small(23, k, 12.0) };
                    c[C::LocalLinkIntegrityErrors as usize] = if u(31, k) < 0.15 { 15 + small(32, k, 9.0) } else { 0 };
                    c[C::PortRcvErrors as usize] = 1 + small(24, k, 15.0);
                    c[C::SymbolError as usize] =
                        if u(33, k) < 0.05 { 65_535 + small(25, k, 900.0) } else { small(25, k, 4.0) };
                    c[C::PortRcvSwitchRelayErrors as usize] = small(26, k, 2.5);
                    c[C::LinkErrorRecovery as usize] = small(27, k, 2.5);
                    c[C::RoceAdpRetrans as usize] = small(28, k, 6.0);
                    c[C::LinkDowned as usize] = small(29, k, 1.5);
                }
                NicDyn { c, carrier_changes: 1 + 2 * c[C::LinkDowned as usize], frac: [0.0; 4] }
            })
            .collect();
    }

    /// A new boot at `boot_ms`: volatile counters start over, aggregate ECC counts persist, and the
    /// agent carries on with its persisted `seq`.
    pub fn reboot(&mut self, cluster: &Cluster, n: usize, seed: u64, boot_ms: i64) {
        self.boot_ms = boot_ms;
        self.rebooting = false;
        self.pending.clear();
        self.fresh_counters(cluster, n, seed, 0.0);
        for nic in &mut self.nics {
            nic.c = [0; 30];
            nic.carrier_changes = 1;
        }
    }
}

/// The report being built, and what faults set on it.
pub struct ReportCtx<'a> {
    pub node: usize,
    pub last_ts: i64,
    pub ts: i64,
    pub noise: noise::Noise,
    pub report: &'a mut NodeReport,
    pub dynamic: &'a mut NodeDyn,
    pub gpu_state: Vec<GpuState>,
    pub nvlink_down: Vec<(usize, usize)>,
    pub nic_down: Vec<bool>,
    /// Throughput multiplier per NIC.
    pub nic_tput: Vec<f64>,
    /// Trained rate per NIC, Gb/s.
    pub nic_rate: Vec<f64>,
    /// `port_xmit_wait` multiplier from congestion (0 = none).
    pub nic_congested: Vec<f64>,
    pub fan_failed: bool,
    pub mem_full: bool,
    pub cpu_non_job: Option<f64>,
    pub disk_read_only: bool,
    pub disk_full: bool,
    /// The NVML error each GPU answers (`Unknown Error`, `GPU is lost`, `Timeout`), if any.
    pub nvml_error: Vec<Option<&'static str>>,
}

impl ReportCtx<'_> {
    /// Whether `t` falls in this report's window (last_ts, ts].
    pub fn crossed(&self, t: i64) -> bool {
        self.last_ts < t && t <= self.ts
    }
}

/// Set throttle reasons and cut the SM clock to `clock_factor` of its max.
pub fn throttle(s: &mut GpuSample, reasons: &[(&str, u64)], clock_factor: f64) {
    s.throttle_reasons.retain(|r| r != "gpu_idle");
    let mut mask = s.throttle_mask.unwrap_or(0) & !1;
    for (name, bit) in reasons {
        if !s.throttle_reasons.iter().any(|r| r == name) {
            s.throttle_reasons.push((*name).to_string());
        }
        mask |= bit;
    }
    s.throttle_mask = Some(mask);
    if let Some(max) = s.sm_clock_max_mhz {
        s.sm_clock_mhz = Some((f64::from(max) * clock_factor).round() as u32);
    }
}
