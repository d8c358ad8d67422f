//! What the analyzer remembers of each node, GPU, NIC, disk, job and rank: latest values and short
//! windows of recent samples, counter deltas robust to reset, wrap and saturation, heartbeats, `seq`
//! tracking and the clean-shutdown flag. All times are report timestamps or the caller's `now_ms`.

use std::collections::{BTreeMap, VecDeque};

mod apply;
pub mod comm;
pub mod probes;

pub use apply::fan_rpm_bad;
use apply::{apply_event, apply_gpus, apply_host, apply_job, apply_nics, job_news};

use faultline_proto::{
    EventClass, EventSource, GpuSample, GpuState as WireGpuState, HostSample, JobSample, NicSample, NodeReport,
    ProcState, ProgressStatus,
};

/// How much history a window keeps: 10 minutes covers the longest persistence rule (SBE storm rate
/// per minute over several minutes) with room to spare.
pub const WINDOW_MS: i64 = 600_000;
/// Most points a window holds, whatever the interval (a 1 s agent fills 10 minutes with 600; we
/// only ever look at the last few dozen).
pub const MAX_POINTS: usize = 64;
/// Deltas a counter keeps: 16 samples is 160 s at the default interval, enough for the longest
/// counter rule (SBE storm over 2 minutes) and for a congestion baseline. Kept small because a
/// 100k-GPU cluster has 1.8M NVLinks with three counters each.
pub const COUNTER_POINTS: usize = 16;
/// GPU samples kept (the soft rules look at the last 3).
pub const GPU_POINTS: usize = 8;
/// Host samples kept.
pub const HOST_POINTS: usize = 16;
/// Events kept per node.
pub const MAX_EVENTS_PER_NODE: usize = 256;
/// NIC counters the detectors read; others in the report are ignored to keep per-report cost low.
/// In byte order, as a report's counter map is: applying a report walks both lists side by side
/// (a test checks the order).
pub const NIC_COUNTERS: &[&str] = &[
    "excessive_buffer_overrun_errors",
    "link_downed",
    "link_error_recovery",
    "local_ack_timeout_err",
    "local_link_integrity_errors",
    "np_cnp_sent",
    "np_ecn_marked_roce_packets",
    "out_of_sequence",
    "packet_seq_err",
    "port_rcv_errors",
    "port_rcv_remote_physical_errors",
    "port_xmit_data",
    "port_xmit_discards",
    "port_xmit_wait",
    "roce_adp_retrans",
    "rp_cnp_handled",
    "rx_bytes",
    "symbol_error",
    "tx_bytes",
];

/// The `NIC_COUNTERS` a port reported, by their place in that list: a fixed array instead of a
/// map keyed by name, so applying a report looks nothing up by name.
#[derive(Debug, Clone, Default)]
pub struct NicCounters([Option<Counter>; NIC_COUNTERS.len()]);

impl NicCounters {
    /// Place of `name` in `NIC_COUNTERS`, by binary search: the list is in byte order (a test checks
    /// it), so each counter of each NIC of a report is found in a few comparisons.
    pub fn index(name: &str) -> Option<usize> {
        NIC_COUNTERS.binary_search(&name).ok()
    }
    pub fn get(&self, name: &str) -> Option<&Counter> {
        Self::index(name).and_then(|i| self.get_at(i))
    }
    /// The counter at place `i` of `NIC_COUNTERS` (a constant from `nic_counter_at`).
    pub fn get_at(&self, i: usize) -> Option<&Counter> {
        self.0.get(i).and_then(Option::as_ref)
    }
    /// The counter of `name` (made on first use); `None` for a name the detectors do not read.
    pub fn at(&mut self, name: &str) -> Option<&mut Counter> {
        Self::index(name).map(|i| self.slot(i))
    }
    pub(crate) fn slot(&mut self, i: usize) -> &mut Counter {
        self.0[i].get_or_insert_with(Counter::default)
    }
}

/// Bytes per second below which a fabric port or an NVLink counts as idle: a training job's
/// collectives move GB/s, subnet-management chatter on an idle port a few kB/s.
pub const TRAFFIC_FLOOR_BYTES_PER_S: f64 = 1e6;
/// Bytes per second (sent plus received, all links of a GPU) below which a GPU's NVLinks count as
/// idle. NVLink data counters carry no management chatter: a collective stuck in NCCL leaves them
/// exactly flat, while even an evaluation pass all-reduces its loss or metrics each batch (tens of
/// KiB/s). NVML counts in KiB, so this is a few of its units a second.
pub const NVLINK_TRAFFIC_FLOOR_BYTES_PER_S: f64 = 4096.0;
/// Bytes per second written that mark a checkpoint under way: a rank writes its shard at hundreds of
/// MB/s to GB/s, while a node's background writes (logs, journald, page-cache flushes of data-loader
/// caches) run at a few MB/s and must not pass for a checkpoint (that would excuse every hang).
pub const WRITE_FLOOR_BYTES_PER_S: f64 = 50e6;

/// A monotonic counter seen over time. A decrease means the source reset (driver reload, agent on a
/// new boot) or a 32-bit counter wrapped: the delta is then the new value (never negative). A counter
/// stuck at its maximum (IB 32-bit counters saturate) gives zero deltas.
///
/// Memory: a counter that only ever counts zero keeps no deltas at all (most NVLink and error
/// counters) and no buffer for them (`Deltas`); once it moves, every delta is kept until the window
/// has aged out again.
///
/// 32 bytes: the last sample is two words with `NO_SAMPLE` for none, not an `Option` of a pair
/// (24 bytes, which made the counter 48). A 100k-GPU cluster keeps 1.9M of them, and a healthy
/// report updates about 600 (432 of them NVLink error counters): a third less memory read back
/// per report.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Report time of the last sample, `NO_SAMPLE` before the first.
    last_ts: i64,
    last_value: u64,
    /// Samples seen (the first gives no delta).
    pub samples: u32,
    /// The counter sits at its width's maximum and no longer moves: its rate is unknown, not zero.
    pub saturated: bool,
    /// (report time, increase since the previous sample); leading zero deltas are not stored.
    pub deltas: Deltas,
}

/// `Counter::last_ts` before a first sample (or after saturation): no report has this time.
const NO_SAMPLE: i64 = i64::MIN;

impl Default for Counter {
    fn default() -> Self {
        Counter { last_ts: NO_SAMPLE, last_value: 0, samples: 0, saturated: false, deltas: Deltas::default() }
    }
}

/// A counter's stored deltas: no buffer at all while there are none. A 100k-GPU cluster keeps
/// about 1.9M counters, nearly all of them flat; an empty `VecDeque` inline cost 32 bytes each,
/// a pointer costs 8.
#[derive(Debug, Clone, Default)]
pub struct Deltas(Option<Box<VecDeque<(i64, u64)>>>);

impl Deltas {
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &(i64, u64)> + '_ {
        self.0.as_deref().into_iter().flatten()
    }
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn back(&self) -> Option<&(i64, u64)> {
        self.0.as_ref().and_then(|q| q.back())
    }
    fn push(&mut self, d: (i64, u64)) {
        push(self.0.get_or_insert_with(|| Box::new(VecDeque::with_capacity(COUNTER_POINTS))), d, COUNTER_POINTS);
    }
    /// Drops deltas older than `since`, and the buffer once nothing but zeros is left.
    fn trim(&mut self, since: i64) {
        if let Some(q) = self.0.as_mut() {
            while q.front().is_some_and(|x| x.0 < since) {
                q.pop_front();
            }
            if q.iter().all(|x| x.1 == 0) {
                self.0 = None;
            }
        }
    }
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl Counter {
    /// Record a value at `ts`; returns the increase since the previous sample, if there was one.
    pub fn update(&mut self, ts: i64, value: u64) -> Option<u64> {
        self.saturated = false;
        let d = match self.last() {
            None => None,
            Some((lt, _)) if ts <= lt => return None,
            Some((_, lv)) => Some(if value >= lv { value - lv } else { value }),
        };
        (self.last_ts, self.last_value) = (ts, value);
        self.samples = self.samples.saturating_add(1);
        if let Some(d) = d {
            if d > 0 || !self.deltas.is_empty() {
                self.deltas.push((ts, d));
            }
            self.deltas.trim(ts - WINDOW_MS);
        }
        d
    }

    /// The counter was seen at its maximum: forget its past and give no delta until it moves again
    /// (a reset by the operator starts it over). Neither healthy nor a burst.
    pub fn mark_saturated(&mut self) {
        self.saturated = true;
        self.last_ts = NO_SAMPLE;
        self.deltas.clear();
    }

    /// Deltas observed, stored or not (zeros before the first increase are implied).
    pub fn observed(&self) -> usize {
        (self.samples.saturating_sub(1) as usize).min(COUNTER_POINTS)
    }

    pub fn value(&self) -> Option<u64> {
        self.last().map(|x| x.1)
    }

    /// The last sample: (report time, value).
    fn last(&self) -> Option<(i64, u64)> {
        (self.last_ts != NO_SAMPLE).then_some((self.last_ts, self.last_value))
    }

    /// Sum of increases with a sample time after `since`.
    pub fn sum_since(&self, since: i64) -> u64 {
        self.deltas.iter().filter(|(t, _)| *t > since).map(|(_, d)| *d).sum()
    }

    /// How many of the most recent deltas in a row are increases.
    pub fn consecutive_increases(&self) -> usize {
        self.deltas.iter().rev().take_while(|(_, d)| *d > 0).count()
    }

    /// How many deltas after `since` are increases.
    pub fn increases_since(&self, since: i64) -> usize {
        self.deltas.iter().filter(|(t, d)| *t > since && *d > 0).count()
    }

    /// The last `n` stored deltas, oldest first (fewer when the counter sat at zero before).
    pub fn last_n(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        self.deltas.iter().skip(self.deltas.len().saturating_sub(n)).map(|x| x.1)
    }

    pub fn last_delta(&self) -> Option<(i64, u64)> {
        self.deltas.back().copied()
    }
}

/// Bytes moved by a port, a GPU's NVLinks or a disk: when they last moved faster than a floor.
/// Flat counters are what a hung NCCL collective leaves behind (it spins on the GPU, sends nothing).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    last: Option<(i64, u64)>,
    /// Report time of the newest sample whose delta moved faster than the floor.
    pub active_at: Option<i64>,
    /// Start of the interval that sample covered (the previous sample's time).
    pub active_from: Option<i64>,
    /// Report time of the newest sample (the source is known to exist).
    pub seen_at: Option<i64>,
}

impl Traffic {
    /// Record a cumulative byte total at `ts`; a decrease is a reset and counts as movement.
    pub fn update(&mut self, ts: i64, total: u64, floor_bytes_per_s: f64) {
        if let Some((lt, lv)) = self.last {
            if ts <= lt {
                return;
            }
            let d = if total >= lv { total - lv } else { total };
            if d as f64 >= floor_bytes_per_s * (ts - lt) as f64 / 1000.0 {
                self.active_at = Some(ts);
                self.active_from = Some(lt);
            }
        }
        self.last = Some((ts, total));
        self.seen_at = Some(ts);
    }
}

pub(crate) fn trim<T>(q: &mut VecDeque<T>, now: i64, ts: impl Fn(&T) -> i64) {
    while q.len() > MAX_POINTS || q.front().is_some_and(|x| ts(x) < now - WINDOW_MS) {
        q.pop_front();
    }
}

/// One GPU sample reduced to what the detectors compare over time.
#[derive(Debug, Clone, Default)]
pub struct GpuPoint {
    pub ts: i64,
    pub temp_c: Option<f64>,
    pub sm_mhz: Option<u32>,
    pub sm_max_mhz: Option<u32>,
    pub util: Option<f64>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub thermal: bool,
    pub power_brake: bool,
    pub pcie_width: Option<(u32, u32)>,
    pub pcie_gen: Option<(u32, u32)>,
    /// Share of the interval before this sample the clocks were held down for thermal reasons
    /// (from NVML's cumulative violation time), when the counters are reported.
    pub thermal_share: Option<f64>,
    /// The same for the hardware power brake.
    pub brake_share: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct NvLinkState {
    pub active: bool,
    /// The link was seen active at least once (a link never up is not wired, not broken).
    pub seen_active: bool,
    pub inactive_since: Option<i64>,
    pub crc: Counter,
    pub replay: Counter,
    pub recovery: Counter,
}

/// A GPU's NVLinks by link number, in order: a sorted vector, not a map. A 100k-GPU cluster keeps
/// 1.8M of them; a B-tree's nodes (room for 11 entries each) held them at about twice the bytes.
#[derive(Debug, Clone, Default)]
pub struct Links(Vec<(u32, NvLinkState)>);

impl Links {
    pub fn get(&self, link: &u32) -> Option<&NvLinkState> {
        self.0.binary_search_by_key(link, |(k, _)| *k).ok().map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, link: &u32) -> bool {
        self.get(link).is_some()
    }
    /// The state of `link`, made on first use.
    pub fn entry_or_default(&mut self, link: u32) -> &mut NvLinkState {
        // Links are numbered from 0 without gaps on every GPU seen so far: link k sits at k, and the
        // search (several entries of a large vector touched, for every link of every report) is
        // only for the exception.
        let at = link as usize;
        if self.0.get(at).is_some_and(|(k, _)| *k == link) {
            return &mut self.0[at].1;
        }
        let i = match self.0.binary_search_by_key(&link, |(k, _)| *k) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (link, NvLinkState::default()));
                i
            }
        };
        &mut self.0[i].1
    }
    /// Room for `n` more links, exactly: a GPU lists all its links in its first sample, and
    /// growing one at a time would leave 32 slots for 18 links.
    pub fn reserve_exact(&mut self, n: usize) {
        self.0.reserve_exact(n);
    }
    pub fn insert(&mut self, link: u32, st: NvLinkState) {
        *self.entry_or_default(link) = st;
    }
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &NvLinkState)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Links {
    type Item = (&'a u32, &'a NvLinkState);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u32, NvLinkState)>,
        fn(&'a (u32, NvLinkState)) -> (&'a u32, &'a NvLinkState),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidSeen {
    pub ts: i64,
    pub xid: u32,
    pub caused_by: Option<u32>,
    /// What it means, decoded with its kernel line (NVLink5 XIDs 144–150 by their status word).
    pub class: faultline_proto::xid::XidClass,
}

#[derive(Debug, Clone, Default)]
pub struct GpuState {
    /// A sample of this GPU was seen (it can go missing only after that).
    pub seen: bool,
    pub state: WireGpuState,
    /// Report time since which the GPU is lost / unresponsive / missing from reports.
    pub lost_since: Option<i64>,
    pub unresponsive_since: Option<i64>,
    pub missing_since: Option<i64>,
    pub points: VecDeque<GpuPoint>,
    pub sbe: Counter,
    pub dbe: Counter,
    pub sram: Counter,
    pub pcie_replay: Counter,
    pub remap_pending: bool,
    pub remap_failure: bool,
    /// When a DBE / SRAM increase was last seen.
    pub dbe_at: Option<i64>,
    pub sram_at: Option<i64>,
    pub nvlinks: Links,
    pub xids: VecDeque<XidSeen>,
    /// Last ECC-event (NVML `ecc_dbe` / `ecc_sbe`) times.
    pub ecc_dbe_event_at: Option<i64>,
    /// `00000000:3b:00.0`, as last reported.
    pub pci_bus_id: Option<String>,
    /// The NVML error its queries answered last, if any.
    pub nvml_error: Option<String>,
    /// Whether its PCI device was present, when the agent checked.
    pub pci_present: Option<bool>,
    /// The kernel said it fell off the bus (XID 79 or the plain line).
    pub fell_off_at: Option<i64>,
    /// Previous cumulative clock-event (violation) times of the reasons `apply::CLOCK_REASONS`,
    /// for the share of each interval.
    pub clock_events: Option<(i64, [Option<u64>; 3])>,
    /// NVLink data bytes (all links, both directions).
    pub nvlink_traffic: Traffic,
    /// PCIe AER lines naming this GPU: (time, uncorrected).
    pub aer: VecDeque<(i64, bool)>,
}

#[derive(Debug, Clone, Default)]
pub struct NicState {
    /// `InfiniBand` / `Ethernet`, as last reported.
    pub link_layer: Option<String>,
    /// IB state or operstate word, as last reported.
    pub state_word: Option<String>,
    /// The rating the port reports, Gb/s.
    pub max_rate_gbps: Option<f64>,
    pub counters: NicCounters,
    pub carrier_changes: Counter,
    /// Report time since which the link is down.
    pub down_since: Option<i64>,
    /// Times the link went from up to down (from samples and events).
    pub downs: VecDeque<i64>,
    pub up_at: Option<i64>,
    /// (report time, rate Gb/s or netdev speed Gb/s)
    pub rates: VecDeque<(i64, f64)>,
    /// Congestion signals per sample that carried traffic.
    pub congestion: VecDeque<CongestionPoint>,
    /// A fabric NIC (data plane): only these can be a fault root or raise a symptom.
    pub fabric: bool,
    /// The link was seen up at least once: a port down since boot is not wired, not broken.
    pub ever_up: bool,
    /// The netdev behind the port (`ibp12s0`, `eth1`): kernel lines name RoCE ports by it.
    pub netdev: Option<String>,
    /// Counters sitting at their maximum now.
    pub saturated: Vec<&'static str>,
    /// Data bytes sent and received.
    pub traffic: Traffic,
    /// Driver-level trouble from the kernel: mlx5 health/command timeouts, NETDEV WATCHDOG, IB
    /// completion errors (time, class).
    pub driver_events: VecDeque<(i64, EventClass)>,
}

/// One busy sample's congestion signals, normalised by the bytes the port sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CongestionPoint {
    pub ts: i64,
    /// `port_xmit_wait` ticks per MB sent; `None` while the 32-bit counter sits at its maximum
    /// (unknown, not zero).
    pub wait_per_mb: Option<f64>,
    /// ECN-marked packets plus CNPs sent and handled, absolute.
    pub marks: u64,
    pub marks_per_mb: f64,
}

/// Counters the congestion series is built from, in this order: bytes sent (two names), transmit
/// wait, then ECN/CNP marks.
pub const CONGESTION_INPUTS: [&str; 6] =
    ["tx_bytes", "port_xmit_data", "port_xmit_wait", "np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled"];
/// Where each of `CONGESTION_INPUTS` sits in `NIC_COUNTERS`, worked out at compile time (a name
/// missing there fails the build), so applying a report looks none of them up.
pub const CONGESTION_AT: [usize; 6] = {
    let mut at = [0; 6];
    let mut k = 0;
    while k < CONGESTION_INPUTS.len() {
        at[k] = nic_counter_at(CONGESTION_INPUTS[k]);
        k += 1;
    }
    at
};

/// Where `rx_bytes`, `tx_bytes` and `port_xmit_data` sit in `NIC_COUNTERS`.
pub const RX_BYTES_AT: usize = nic_counter_at("rx_bytes");
pub const TX_BYTES_AT: usize = nic_counter_at("tx_bytes");
pub const PORT_XMIT_DATA_AT: usize = nic_counter_at("port_xmit_data");

/// The value each of `NIC_COUNTERS` saturates at, where it has a fixed width (IB port counters).
pub static NIC_COUNTER_MAX: std::sync::LazyLock<[Option<u64>; NIC_COUNTERS.len()]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|i| faultline_proto::counters::ib_counter_max(NIC_COUNTERS[i])));

/// Place of `name` in `NIC_COUNTERS`, in a constant; not there is a build error.
pub const fn nic_counter_at(name: &str) -> usize {
    let mut i = 0;
    while i < NIC_COUNTERS.len() {
        let (a, b) = (NIC_COUNTERS[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("a counter named in a constant is not in NIC_COUNTERS")
}
/// A sample that sent less than this (1 MB) is idle: subnet chatter, not traffic.
pub const CONGESTION_MIN_BYTES: u64 = 1_000_000;

impl NicState {
    pub fn counter(&self, name: &str) -> Option<&Counter> {
        self.counters.get(name)
    }
    /// The counter at place `i` of `NIC_COUNTERS`, found without a search.
    pub fn counter_at(&self, i: usize) -> Option<&Counter> {
        self.counters.get_at(i)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DiskState {
    /// Bytes written (diskstats), for telling a checkpoint from a hang.
    pub writes: Traffic,
    pub read_only: bool,
    pub full: bool,
    pub errors: VecDeque<i64>,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub ts: i64,
    pub source: EventSource,
    pub class: EventClass,
    pub component: Option<String>,
    pub xid: Option<u32>,
    pub pid: Option<u32>,
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct HostPoint {
    pub ts: i64,
    pub cpu: Option<f64>,
    pub cpu_non_job: Option<f64>,
    pub mem_used_frac: Option<f64>,
    pub fan_bad: bool,
}

#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub name: String,
    /// How many times this node's NIC or host addresses changed (the first report's included).
    pub addr_changes: u64,
    pub first_seen_ms: i64,
    /// Report time of the newest applied report.
    pub last_report_ms: i64,
    /// Caller time (`now_ms`) when the newest report arrived: heartbeats are judged on this.
    pub last_recv_ms: i64,
    pub interval_ms: u64,
    pub last_seq: u64,
    pub reports: u64,
    pub duplicates: u64,
    /// Reports missed according to `seq` gaps.
    pub seq_gaps: u64,
    pub shutdown: bool,
    pub host: Option<HostSample>,
    pub host_points: VecDeque<HostPoint>,
    pub uptime_s: Option<u64>,
    pub gpus: BTreeMap<u32, GpuState>,
    pub nics: BTreeMap<String, NicState>,
    pub disks: BTreeMap<String, DiskState>,
    pub events: VecDeque<StoredEvent>,
    /// Jobs this node listed in its last report.
    pub jobs: Vec<String>,
    /// GPUs this node should have (the agent's word), and how many its last report listed.
    pub expected_gpus: Option<u32>,
    pub gpus_reported: usize,
    /// Bytes written to any of its disks.
    pub disk_writes: Traffic,
    /// Memory-cgroup OOM kills: (time, pid killed), for the job whose rank it was.
    pub cgroup_ooms: VecDeque<(i64, u32)>,
    /// Collective-library evidence from training logs, newest last (`detect::nccl`).
    pub comm: VecDeque<comm::CommObs>,
    /// Each NIC's netdev addresses as last reported, to trace a peer address to this node.
    pub nic_addrs: BTreeMap<String, Vec<String>>,
    /// The last `RECENT_SEQS` seqs applied, to tell a replayed report from a late one.
    pub recent_seqs: VecDeque<u64>,
    /// Active fabric probe results (`detect::pingmesh`).
    pub probes: probes::ProbePaths,
}

#[derive(Debug, Clone, Default)]
pub struct RankState {
    pub node: String,
    pub gpus: Vec<u32>,
    pub nic: Option<String>,
    pub pid: Option<u32>,
    pub state: ProcState,
    pub exit_code: Option<i32>,
    pub exited_ms: Option<i64>,
    /// Report time of the newest report that listed this rank.
    pub seen_ms: i64,
    /// The rank's node stopped listing it (the job ended there).
    pub gone_ms: Option<i64>,
    pub step: Option<u64>,
    pub last_progress_ms: Option<i64>,
    pub status: ProgressStatus,
    pub step_times: VecDeque<f64>,
    pub compute: VecDeque<f64>,
    pub grad_norms: VecDeque<f64>,
    pub nonfinite_since: Option<i64>,
    /// (step the value belongs to, gradient norm): ranks are compared at the same step only.
    pub grads: VecDeque<(u64, f64)>,
    /// The rank reports a loss at all (with pipeline parallelism only the last stage does).
    pub reports_loss: bool,
    /// Bytes its process wrote (a checkpoint shows here).
    pub io: Traffic,
    /// The node's report interval, for "within one interval".
    pub interval_ms: i64,
    /// The longest time between two of its steps that it came back from on its own (an evaluation
    /// pass, a checkpoint), ms: the job's own pause length, learned.
    pub longest_pause_ms: i64,
}

/// Seqs remembered per node to tell a replay from a late report: 64 reports, over 10 minutes at the
/// default interval, longer than any reordering on the way (the agent sends oldest first).
pub const RECENT_SEQS: usize = 64;

/// Samples per rank kept for step time and compute time.
pub const RANK_POINTS: usize = 8;
/// Gradient norms per rank kept by step: enough for ranks that report at different phases to share
/// a few steps.
pub const GRAD_POINTS: usize = 16;

impl RankState {
    pub fn exited_nonzero(&self) -> bool {
        self.exit_code.is_some_and(|c| c != 0)
    }
    pub fn alive(&self) -> bool {
        self.gone_ms.is_none()
            && self.exit_code.is_none()
            && !matches!(self.state, ProcState::Exited | ProcState::Zombie)
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobState {
    pub id: String,
    pub ranks: BTreeMap<u32, RankState>,
    pub world_size: Option<u32>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Learned healthy step time (median over ranks), ms.
    pub baseline_step_ms: Option<f64>,
    pub baseline_samples: u32,
    /// Placement changed since the graph last saw it.
    pub placement_dirty: bool,
    /// When every rank was gone (the job ended).
    pub ended_ms: Option<i64>,
    /// The scheduler's word on the job, newest first reported, with its exit code.
    pub sched_state: Option<faultline_proto::SchedState>,
    pub sched_exit_code: Option<i32>,
    /// Report time the scheduler first said the job ended.
    pub sched_ended_ms: Option<i64>,
    /// Ranks each node listed last, so a rank it stops listing is found without scanning the job.
    pub by_node: BTreeMap<String, Vec<u32>>,
    /// Since when the job hangs, once a detector said so: its end by the NCCL watchdog (every rank
    /// exits after `TORCH_NCCL_TIMEOUT`) is the end of the same hang, not a second fault.
    pub hung_since: Option<i64>,
}

/// Everything ingested.
#[derive(Debug, Default)]
pub struct State {
    pub nodes: BTreeMap<String, NodeState>,
    pub jobs: BTreeMap<String, JobState>,
    /// Moves whenever a node appears or any node's NIC or host addresses change: what the address
    /// book of collective evidence (detect/nccl.rs) is rebuilt on.
    pub addr_gen: u64,
    /// What the last `apply` found that the engine acts on.
    pub changes: Changes,
}

/// What `State::apply` found in a report, beside what it wrote to the state, for the engine: found
/// where the node and its jobs are in hand, not looked up again. Reused from report to report.
#[derive(Debug, Default)]
pub struct Changes {
    /// Jobs the node listed in its previous report and no longer lists.
    pub left: Vec<String>,
    /// Places in the report's `jobs` of the jobs to check at the next tick: all of them when the
    /// report carries events, else those with news (`apply::job_news`).
    pub urgent: Vec<usize>,
    /// The node is new, or its count of GPUs, NICs or disks changed: the graph learns its parts.
    pub inventory: bool,
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Fresh,
    Duplicate,
}

/// The entry for `key`, made (with its key allocated) only the first time: a report names the same
/// NICs, disks and nodes every interval, and cloning each name per report was most of the cost of
/// applying one.
pub(crate) fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above when missing")
}

/// Sets `dst` to `src` without allocating when they are already equal (names rarely change).
pub(crate) fn set_str(dst: &mut Option<String>, src: Option<&str>) {
    if dst.as_deref() != src {
        *dst = src.map(str::to_string);
    }
}

/// Appends to a ring of at most `cap`, making room first: pushing first would hold `cap + 1` for a
/// moment, and a `VecDeque` grows its buffer to the next power of two for it (a ring of 8 GPU
/// samples kept 16 slots), doubling what every ring of every component holds.
pub(crate) fn push<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    while q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(v);
}

impl State {
    /// Apply one validated report. A `seq` at or below the last one with a timestamp not newer is a
    /// duplicate (a spool replay); a lower `seq` with a newer timestamp means the agent lost its
    /// persisted `seq` and starts over, which we accept.
    pub fn apply(&mut self, r: &NodeReport, now_ms: i64) -> Applied {
        let changes = &mut self.changes;
        changes.left.clear();
        changes.urgent.clear();
        let new_node = !self.nodes.contains_key(&r.node);
        if new_node {
            self.addr_gen += 1;
            let fresh = NodeState { name: r.node.clone(), first_seen_ms: r.timestamp_ms, ..Default::default() };
            self.nodes.insert(r.node.clone(), fresh);
        }
        let node = self.nodes.get_mut(&r.node).expect("inserted above when missing");
        let inventory = |n: &NodeState| (n.gpus.len(), n.nics.len(), n.disks.len());
        let inventory_before = inventory(node);
        changes.inventory = new_node;
        // A duplicate is a seq applied already (a spool replay after a lost answer). A report with an
        // older seq that was never applied (it arrived late, behind newer ones) is not: its events
        // still count. Past the window of remembered seqs, an older report is taken as a replay.
        let replay = r.seq <= node.last_seq
            && r.timestamp_ms <= node.last_report_ms
            && (node.recent_seqs.contains(&r.seq)
                || node.recent_seqs.len() >= RECENT_SEQS && node.recent_seqs.iter().all(|s| *s > r.seq));
        if node.reports > 0 && replay {
            node.duplicates += 1;
            return Applied::Duplicate;
        }
        changes.left.extend(node.jobs.iter().filter(|j| !r.jobs.iter().any(|x| x.job_id == **j)).cloned());
        if !r.events.is_empty() {
            changes.urgent.extend(0..r.jobs.len());
        }
        push(&mut node.recent_seqs, r.seq, RECENT_SEQS);
        // Saturating: a report may carry any u64 seq, `u64::MAX` included (found by fuzzing).
        if node.reports > 0 && r.seq > node.last_seq.saturating_add(1) {
            node.seq_gaps = node.seq_gaps.saturating_add(r.seq - node.last_seq - 1);
        }
        let stale = node.reports > 0 && r.timestamp_ms < node.last_report_ms;
        node.reports += 1;
        node.last_seq = if stale { node.last_seq.max(r.seq) } else { r.seq };
        node.last_recv_ms = node.last_recv_ms.max(now_ms);
        node.interval_ms = r.interval_ms;
        let ts = r.timestamp_ms;
        for e in &r.events {
            apply_event(node, e);
        }
        if stale {
            // An old report replayed after newer ones: its events count, its samples are history.
            changes.inventory |= inventory(node) != inventory_before;
            if r.events.is_empty() {
                changes.urgent.extend((0..r.jobs.len()).filter(|i| job_news(&self.jobs, &r.node, &r.jobs[*i])));
            }
            return Applied::Fresh;
        }
        node.last_report_ms = ts;
        node.shutdown = r.shutdown;
        let addr_changes = node.addr_changes;
        apply_host(node, r.host.as_ref(), ts);
        apply_gpus(node, &r.gpus, ts);
        apply_nics(node, &r.nics, ts);
        if node.addr_changes != addr_changes {
            self.addr_gen += 1;
        }
        probes::record(node, &r.probes, ts); // fabric probe results (detect/pingmesh.rs reads them)
        node.expected_gpus = r.expected_gpus;
        let mut written: Option<u64> = None;
        for d in &r.disks {
            let st = slot(&mut node.disks, &d.device);
            st.read_only = d.read_only;
            st.full = matches!((d.total_bytes, d.available_bytes), (Some(t), Some(a)) if t > 0 && a == 0);
            if let Some(w) = d.write_bytes {
                st.writes.update(ts, w, WRITE_FLOOR_BYTES_PER_S);
                written = Some(written.unwrap_or(0).saturating_add(w));
            }
        }
        if let Some(w) = written {
            node.disk_writes.update(ts, w, WRITE_FLOOR_BYTES_PER_S);
        }
        changes.inventory |= inventory(node) != inventory_before;
        let interval = r.interval_ms as i64;
        // Nearly always the jobs of the last report, in its order: nothing to copy or to end.
        let same_jobs = node.jobs.len() == r.jobs.len() && node.jobs.iter().zip(&r.jobs).all(|(a, j)| *a == j.job_id);
        if !same_jobs {
            // The jobs that left (`changes.left`, found above) lost this node's ranks.
            for old in &changes.left {
                if let Some(job) = self.jobs.get_mut(old) {
                    for rs in job.ranks.values_mut() {
                        if rs.node == r.node && rs.gone_ms.is_none() {
                            rs.gone_ms = Some(ts);
                        }
                    }
                }
            }
            node.jobs = r.jobs.iter().map(|j| j.job_id.clone()).collect();
        }
        for (i, j) in r.jobs.iter().enumerate() {
            // The news is read before the sample is applied, as `job_news` reads it.
            if apply_job(&mut self.jobs, &r.node, j, ts, interval) && r.events.is_empty() {
                changes.urgent.push(i);
            }
        }
        Applied::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_says_which_jobs_left_which_have_news_and_when_the_inventory_changed() {
        use faultline_proto::report::ProcState;
        use faultline_proto::{JobSample, RankSample};
        let job = |id: &str, ranks: &[u32]| JobSample {
            job_id: id.into(),
            ranks: ranks.iter().map(|r| RankSample { rank: *r, ..Default::default() }).collect(),
            ..Default::default()
        };
        let rep = |seq: u64, jobs: Vec<JobSample>, gpus: u32| {
            let mut r = NodeReport::empty("n1");
            r.seq = seq;
            r.timestamp_ms = seq as i64 * 10_000;
            r.jobs = jobs;
            r.gpus = (0..gpus).map(|i| faultline_proto::GpuSample { index: i, ..Default::default() }).collect();
            r
        };
        let mut st = State::default();
        st.apply(&rep(1, vec![job("a", &[0, 1]), job("b", &[2])], 2), 10_000);
        assert!(st.changes.inventory, "a new node's parts go to the graph");
        assert!(st.changes.left.is_empty() && st.changes.urgent.is_empty());
        // The same again: nothing to say.
        st.apply(&rep(2, vec![job("a", &[0, 1]), job("b", &[2])], 2), 20_000);
        assert!(!st.changes.inventory && st.changes.left.is_empty() && st.changes.urgent.is_empty());
        // Job b left the node, a lost a rank, and a GPU more is listed.
        st.apply(&rep(3, vec![job("a", &[0])], 3), 30_000);
        assert_eq!(st.changes.left, vec!["b".to_string()]);
        assert_eq!(st.changes.urgent, vec![0]);
        assert!(st.changes.inventory);
        // A rank that exited is news, read before the sample is applied.
        let mut exited = job("a", &[0]);
        exited.ranks[0].state = ProcState::Exited;
        st.apply(&rep(4, vec![job("c", &[5]), exited], 3), 40_000);
        assert_eq!(st.changes.urgent, vec![1]);
        assert!(st.changes.left.is_empty() && !st.changes.inventory);
        // A report with events makes every job it lists urgent.
        let mut r = rep(5, vec![job("c", &[5]), job("a", &[0])], 3);
        r.events.push(faultline_proto::Event { ts_ms: 50_000, message: "x".into(), ..Default::default() });
        st.apply(&r, 50_000);
        assert_eq!(st.changes.urgent, vec![0, 1]);
        // A replay of seq 5 is a duplicate: the engine ignores what it says.
        assert_eq!(st.apply(&r, 51_000), Applied::Duplicate);
    }

    #[test]
    fn a_counter_is_four_words_and_keeps_its_last_sample() {
        assert_eq!(std::mem::size_of::<Counter>(), 32);
        let mut c = Counter::default();
        assert_eq!((c.value(), c.update(1_000, 5)), (None, None));
        assert_eq!((c.value(), c.update(2_000, 7)), (Some(5), Some(2)));
        // Not after the last sample: ignored.
        assert_eq!(c.update(2_000, 9), None);
        assert_eq!(c.value(), Some(7));
        c.mark_saturated();
        assert_eq!((c.value(), c.update(3_000, 9)), (None, None));
        assert_eq!(c.update(4_000, 12), Some(3));
    }

    #[test]
    fn nic_counters_are_in_byte_order_as_a_reports_counter_map_is() {
        // apply_nics walks a report's counters and this list side by side.
        assert!(NIC_COUNTERS.windows(2).all(|w| w[0] < w[1]), "{NIC_COUNTERS:?}");
        for (i, name) in NIC_COUNTERS.iter().enumerate() {
            assert_eq!(NicCounters::index(name), Some(i), "{name}");
        }
        assert_eq!(NicCounters::index("port_rcv_data"), None);
        for name in CONGESTION_INPUTS {
            assert!(NicCounters::index(name).is_some(), "{name} is read for congestion");
        }
        // Every counter a report carries that the detectors read is kept, the others are not.
        let mut st = State::default();
        let mut r = NodeReport::empty("n1");
        r.seq = 1;
        r.timestamp_ms = 1_000;
        let mut nic = faultline_proto::NicSample { name: "mlx5_0".into(), ..Default::default() };
        for (i, name) in NIC_COUNTERS.iter().chain(["aaa_first", "zzz_last", "port_rcv_data"].iter()).enumerate() {
            nic.counters.insert((*name).into(), i as u64);
        }
        r.nics = vec![nic];
        st.apply(&r, 1_000);
        let kept = &st.nodes["n1"].nics["mlx5_0"].counters;
        for name in NIC_COUNTERS {
            assert!(kept.get(name).is_some_and(|c| c.samples == 1), "{name} kept");
        }
        assert!(kept.get("port_rcv_data").is_none());
    }

    #[test]
    fn the_address_generation_moves_only_when_a_node_or_an_address_is_new() {
        let mut st = State::default();
        let report = |seq: u64, nic_addr: &str, host_addr: &str| {
            let mut r = NodeReport::empty("n1");
            r.seq = seq;
            r.timestamp_ms = seq as i64 * 10_000;
            let nic = faultline_proto::NicSample {
                name: "mlx5_0".into(),
                addrs: vec![nic_addr.to_string()],
                ..Default::default()
            };
            r.nics = vec![nic];
            r.host = Some(faultline_proto::HostSample { addrs: vec![host_addr.into()], ..Default::default() });
            r
        };
        st.apply(&report(1, "10.0.0.1", "192.168.0.1"), 10_000);
        let first = st.addr_gen;
        assert!(first > 0, "a new node and its first addresses move it");
        st.apply(&report(2, "10.0.0.1", "192.168.0.1"), 20_000);
        assert_eq!(st.addr_gen, first, "the same addresses again leave it");
        st.apply(&report(3, "10.0.0.2", "192.168.0.1"), 30_000);
        assert!(st.addr_gen > first, "a NIC address changed");
        let second = st.addr_gen;
        st.apply(&report(4, "10.0.0.2", "192.168.0.9"), 40_000);
        assert!(st.addr_gen > second, "a host address changed");
        let third = st.addr_gen;
        let mut other = report(1, "10.0.0.3", "192.168.0.3");
        other.node = "n2".into();
        st.apply(&other, 40_000);
        assert!(st.addr_gen > third, "a new node");
        // The cached book follows the generation: the same book until it moves.
        let cache = crate::detect::nccl::BookCache::default();
        let a = cache.get(&st.nodes, st.addr_gen);
        assert!(std::sync::Arc::ptr_eq(&a, &cache.get(&st.nodes, st.addr_gen)));
        assert_eq!(a.resolve("10.0.0.3").map(|e| e.node), Some("n2".to_string()));
        st.apply(&report(5, "10.0.0.7", "192.168.0.9"), 50_000);
        let b = cache.get(&st.nodes, st.addr_gen);
        assert!(!std::sync::Arc::ptr_eq(&a, &b));
        assert_eq!(b.resolve("10.0.0.7").map(|e| e.node), Some("n1".to_string()));
        assert_eq!(b.resolve("10.0.0.2"), None, "the old address is gone with the rebuild");
    }

    #[test]
    fn a_late_report_is_applied_for_its_events_and_a_replay_is_a_duplicate() {
        let mut st = State::default();
        let rep = |seq: u64, ts: i64, events: usize| {
            let mut r = NodeReport::empty("n1");
            r.seq = seq;
            r.timestamp_ms = ts;
            r.events = (0..events)
                .map(|i| faultline_proto::Event::new(ts + i as i64, EventSource::Kmsg, EventClass::IoError))
                .collect();
            r
        };
        assert_eq!(st.apply(&rep(1, 10_000, 0), 10_000), Applied::Fresh);
        assert_eq!(st.apply(&rep(3, 30_000, 0), 30_000), Applied::Fresh);
        // seq 2 arrives after seq 3: never applied, so its event counts.
        assert_eq!(st.apply(&rep(2, 20_000, 1), 31_000), Applied::Fresh);
        assert_eq!(st.nodes["n1"].events.len(), 1);
        assert_eq!(st.nodes["n1"].last_report_ms, 30_000, "its samples are history");
        // A replay of seq 2 or 3 is a duplicate.
        assert_eq!(st.apply(&rep(2, 20_000, 1), 32_000), Applied::Duplicate);
        assert_eq!(st.apply(&rep(3, 30_000, 0), 32_000), Applied::Duplicate);
        assert_eq!(st.nodes["n1"].events.len(), 1);
    }

    fn check_counter(values: &[(i64, u64)], want_deltas: &[u64]) {
        let mut c = Counter::default();
        for (t, v) in values {
            c.update(*t, *v);
        }
        let got: Vec<u64> = c.deltas.iter().map(|x| x.1).collect();
        assert_eq!(got, want_deltas, "{values:?}");
    }

    #[test]
    fn counter_deltas_table() {
        // plain increase
        check_counter(&[(1, 10), (2, 15), (3, 15)], &[5, 0]);
        // reset: rate from the new value, never negative
        check_counter(&[(1, 100), (2, 3), (3, 4)], &[3, 1]);
        // 32-bit wrap looks like a reset
        check_counter(&[(1, u32::MAX as u64 - 1), (2, 5)], &[5]);
        // saturated: stuck at max gives zero
        check_counter(&[(1, u32::MAX as u64), (2, u32::MAX as u64)], &[]);
        // out-of-order or repeated time is ignored
        check_counter(&[(2, 10), (1, 50), (2, 60), (3, 12)], &[2]);
        // a counter that never moved keeps nothing; once it moves, zeros after count
        check_counter(&[(1, 7), (2, 7), (3, 7)], &[]);
        check_counter(&[(1, 7), (2, 7), (3, 9), (4, 9)], &[2, 0]);
    }

    #[test]
    fn fan_rules() {
        assert!(fan_rpm_bad(Some(0.0), None));
        assert!(fan_rpm_bad(Some(500.0), Some(1000.0)));
        assert!(!fan_rpm_bad(Some(9000.0), Some(1000.0)));
        assert!(!fan_rpm_bad(None, Some(1000.0)));
    }
}
