//! What the analyzer remembers of each node, GPU, NIC, disk, job and rank: latest values and short
//! windows of recent samples, counter deltas robust to reset, wrap and saturation, heartbeats, `seq`
//! tracking and the clean-shutdown flag. All times are report timestamps or the caller's `now_ms`.

use std::collections::{BTreeMap, VecDeque};

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
pub const NIC_COUNTERS: &[&str] = &[
    "symbol_error",
    "port_rcv_errors",
    "local_link_integrity_errors",
    "link_downed",
    "link_error_recovery",
    "port_xmit_wait",
    "np_ecn_marked_roce_packets",
    "np_cnp_sent",
    "rp_cnp_handled",
    "out_of_sequence",
    "packet_seq_err",
    "roce_adp_retrans",
    "local_ack_timeout_err",
    "excessive_buffer_overrun_errors",
    "port_rcv_remote_physical_errors",
    "port_xmit_discards",
    "tx_bytes",
    "rx_bytes",
    "port_xmit_data",
];

/// A monotonic counter seen over time. A decrease means the source reset (driver reload, agent on a
/// new boot) or a 32-bit counter wrapped: the delta is then the new value (never negative). A counter
/// stuck at its maximum (IB 32-bit counters saturate) gives zero deltas.
///
/// Memory: a counter that only ever counts zero keeps no deltas at all (most NVLink and error
/// counters); once it moves, every delta is kept until the window has aged out again.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    last: Option<(i64, u64)>,
    /// Samples seen (the first gives no delta).
    pub samples: u32,
    /// (report time, increase since the previous sample); leading zero deltas are not stored.
    pub deltas: VecDeque<(i64, u64)>,
}

impl Counter {
    /// Record a value at `ts`; returns the increase since the previous sample, if there was one.
    pub fn update(&mut self, ts: i64, value: u64) -> Option<u64> {
        let d = match self.last {
            None => None,
            Some((lt, _)) if ts <= lt => return None,
            Some((_, lv)) => Some(if value >= lv { value - lv } else { value }),
        };
        self.last = Some((ts, value));
        self.samples = self.samples.saturating_add(1);
        if let Some(d) = d {
            if d > 0 || !self.deltas.is_empty() {
                self.deltas.push_back((ts, d));
            }
            while self.deltas.len() > COUNTER_POINTS || self.deltas.front().is_some_and(|x| x.0 < ts - WINDOW_MS) {
                self.deltas.pop_front();
            }
            if self.deltas.iter().all(|x| x.1 == 0) {
                self.deltas.clear();
            }
        }
        d
    }

    /// Deltas observed, stored or not (zeros before the first increase are implied).
    pub fn observed(&self) -> usize {
        (self.samples.saturating_sub(1) as usize).min(COUNTER_POINTS)
    }

    pub fn value(&self) -> Option<u64> {
        self.last.map(|x| x.1)
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

fn trim<T>(q: &mut VecDeque<T>, now: i64, ts: impl Fn(&T) -> i64) {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidSeen {
    pub ts: i64,
    pub xid: u32,
    pub caused_by: Option<u32>,
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
    pub nvlinks: BTreeMap<u32, NvLinkState>,
    pub xids: VecDeque<XidSeen>,
    /// Last ECC-event (NVML `ecc_dbe` / `ecc_sbe`) times.
    pub ecc_dbe_event_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct NicState {
    /// `InfiniBand` / `Ethernet`, as last reported.
    pub link_layer: Option<String>,
    /// IB state or operstate word, as last reported.
    pub state_word: Option<String>,
    /// The rating the port reports, Gb/s.
    pub max_rate_gbps: Option<f64>,
    pub counters: BTreeMap<&'static str, Counter>,
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
}

/// One busy sample's congestion signals, normalised by the bytes the port sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CongestionPoint {
    pub ts: i64,
    /// `port_xmit_wait` ticks per MB sent.
    pub wait_per_mb: f64,
    /// ECN-marked packets plus CNPs sent and handled, absolute.
    pub marks: u64,
    pub marks_per_mb: f64,
}

/// Counters the congestion series is built from, in this order: bytes sent (two names), transmit
/// wait, then ECN/CNP marks.
pub const CONGESTION_INPUTS: [&str; 6] =
    ["tx_bytes", "port_xmit_data", "port_xmit_wait", "np_ecn_marked_roce_packets", "np_cnp_sent", "rp_cnp_handled"];
/// A sample that sent less than this (1 MB) is idle: subnet chatter, not traffic.
pub const CONGESTION_MIN_BYTES: u64 = 1_000_000;

impl NicState {
    pub fn counter(&self, name: &str) -> Option<&Counter> {
        self.counters.get(name)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DiskState {
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
}

/// Samples per rank kept for step time and compute time.
pub const RANK_POINTS: usize = 8;

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
}

/// Everything ingested.
#[derive(Debug, Default)]
pub struct State {
    pub nodes: BTreeMap<String, NodeState>,
    pub jobs: BTreeMap<String, JobState>,
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Fresh,
    Duplicate,
}

fn push<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    q.push_back(v);
    while q.len() > cap {
        q.pop_front();
    }
}

impl State {
    /// Apply one validated report. A `seq` at or below the last one with a timestamp not newer is a
    /// duplicate (a spool replay); a lower `seq` with a newer timestamp means the agent lost its
    /// persisted `seq` and starts over, which we accept.
    pub fn apply(&mut self, r: &NodeReport, now_ms: i64) -> Applied {
        let node = self.nodes.entry(r.node.clone()).or_insert_with(|| NodeState {
            name: r.node.clone(),
            first_seen_ms: r.timestamp_ms,
            ..Default::default()
        });
        if node.reports > 0 && r.seq <= node.last_seq && r.timestamp_ms <= node.last_report_ms {
            node.duplicates += 1;
            return Applied::Duplicate;
        }
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
            return Applied::Fresh;
        }
        node.last_report_ms = ts;
        node.shutdown = r.shutdown;
        apply_host(node, r.host.as_ref(), ts);
        apply_gpus(node, &r.gpus, ts);
        apply_nics(node, &r.nics, ts);
        for d in &r.disks {
            let st = node.disks.entry(d.device.clone()).or_default();
            st.read_only = d.read_only;
            st.full = matches!((d.total_bytes, d.available_bytes), (Some(t), Some(a)) if t > 0 && a == 0);
        }
        let listed: Vec<String> = r.jobs.iter().map(|j| j.job_id.clone()).collect();
        for old in std::mem::take(&mut node.jobs) {
            if !listed.contains(&old) {
                if let Some(job) = self.jobs.get_mut(&old) {
                    for rs in job.ranks.values_mut() {
                        if rs.node == r.node && rs.gone_ms.is_none() {
                            rs.gone_ms = Some(ts);
                        }
                    }
                }
            }
        }
        node.jobs = listed;
        for j in &r.jobs {
            apply_job(&mut self.jobs, &r.node, j, ts);
        }
        Applied::Fresh
    }
}

fn apply_event(node: &mut NodeState, e: &faultline_proto::Event) {
    let ev = StoredEvent {
        ts: e.ts_ms,
        source: e.source,
        class: e.class,
        component: e.component.clone().filter(|c| !c.is_empty()),
        xid: e.xid,
        pid: e.pid,
        count: e.count,
        message: e.message.chars().take(200).collect(),
    };
    // XIDs also go to the GPU they name.
    if let (Some(xid), Some(c)) = (e.xid, ev.component.as_deref()) {
        if let Some(idx) = c.strip_prefix("gpu").and_then(|i| i.parse::<u32>().ok()) {
            let g = node.gpus.entry(idx).or_default();
            push(&mut g.xids, XidSeen { ts: e.ts_ms, xid, caused_by: e.caused_by_xid }, MAX_POINTS);
        }
    }
    if let Some(c) = ev.component.as_deref() {
        if let Some(dev) = c.strip_prefix("disk:") {
            if ev.class == EventClass::IoError {
                push(&mut node.disks.entry(dev.to_string()).or_default().errors, e.ts_ms, MAX_POINTS);
            }
        }
        if let Some(nic) = c.strip_prefix("nic:") {
            let st = node.nics.entry(nic.to_string()).or_default();
            match ev.class {
                EventClass::NicLinkDown if st.down_since.is_none() => {
                    st.down_since = Some(e.ts_ms);
                    push(&mut st.downs, e.ts_ms, MAX_POINTS);
                }
                EventClass::NicLinkUp if st.down_since.is_some_and(|t| t <= e.ts_ms) => {
                    st.down_since = None;
                    st.up_at = Some(e.ts_ms);
                }
                _ => {}
            }
        }
        if let Some(idx) = c.strip_prefix("gpu").and_then(|i| i.parse::<u32>().ok()) {
            let g = node.gpus.entry(idx).or_default();
            match ev.class {
                EventClass::GpuFallenOffBus | EventClass::GpuLost => {
                    g.lost_since.get_or_insert(e.ts_ms);
                }
                EventClass::EccDbe => g.ecc_dbe_event_at = Some(e.ts_ms),
                _ => {}
            }
        }
    }
    node.events.push_back(ev);
    while node.events.len() > MAX_EVENTS_PER_NODE {
        node.events.pop_front();
    }
}

fn apply_host(node: &mut NodeState, h: Option<&HostSample>, ts: i64) {
    let Some(h) = h else { return };
    let fan_bad = h.fans.iter().any(|f| f.alarm || fan_rpm_bad(f.rpm, f.min_rpm));
    let mem = match (h.mem_total_bytes, h.mem_used_bytes, h.mem_available_bytes) {
        (Some(t), _, Some(a)) if t > 0 => Some(1.0 - a as f64 / t as f64),
        (Some(t), Some(u), _) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    };
    push(
        &mut node.host_points,
        HostPoint { ts, cpu: h.cpu_util_pct, cpu_non_job: h.cpu_non_job_pct, mem_used_frac: mem, fan_bad },
        HOST_POINTS,
    );
    node.uptime_s = h.uptime_s;
    node.host = Some(h.clone());
}

/// A fan turning slower than its hwmon minimum, or not at all, has failed.
pub fn fan_rpm_bad(rpm: Option<f64>, min: Option<f64>) -> bool {
    match (rpm, min) {
        (Some(r), Some(m)) if m > 0.0 => r < m,
        (Some(r), _) => r <= 0.0,
        _ => false,
    }
}

fn apply_gpus(node: &mut NodeState, gpus: &[GpuSample], ts: i64) {
    for g in gpus {
        let st = node.gpus.entry(g.index).or_default();
        st.missing_since = None;
        st.state = g.state;
        match g.state {
            WireGpuState::Lost => {
                st.lost_since.get_or_insert(ts);
            }
            WireGpuState::Unresponsive => {
                st.unresponsive_since.get_or_insert(ts);
            }
            WireGpuState::Ok => {
                st.lost_since = None;
                st.unresponsive_since = None;
            }
        }
        if g.state == WireGpuState::Ok {
            let has = |r: &str| g.throttle_reasons.iter().any(|x| x == r);
            let pcie = g.pcie.as_ref();
            push(
                &mut st.points,
                GpuPoint {
                    ts,
                    temp_c: g.temp_c,
                    sm_mhz: g.sm_clock_mhz,
                    sm_max_mhz: g.sm_clock_max_mhz,
                    util: g.util_gpu_pct,
                    power_w: g.power_w,
                    power_limit_w: g.power_limit_w,
                    thermal: has("hw_thermal_slowdown") || has("sw_thermal_slowdown"),
                    power_brake: has("hw_power_brake_slowdown"),
                    pcie_width: pcie.and_then(|p| Some((p.width?, p.max_width?))),
                    pcie_gen: pcie.and_then(|p| Some((p.generation?, p.max_generation?))),
                },
                GPU_POINTS,
            );
            trim(&mut st.points, ts, |p| p.ts);
            if let Some(v) = g.ecc.sbe_volatile {
                st.sbe.update(ts, v);
            }
            if let Some(v) = g.ecc.dbe_volatile {
                if st.dbe.update(ts, v).is_some_and(|d| d > 0) {
                    st.dbe_at = Some(ts);
                }
            }
            if let Some(v) = g.ecc.sram_uncorrectable {
                if st.sram.update(ts, v).is_some_and(|d| d > 0) {
                    st.sram_at = Some(ts);
                }
            }
            if let Some(v) = pcie.and_then(|p| p.replay_count) {
                st.pcie_replay.update(ts, v);
            }
            if let Some(rr) = &g.row_remap {
                st.remap_pending = rr.pending;
                st.remap_failure = rr.failure;
            }
            for l in &g.nvlinks {
                let ls = st.nvlinks.entry(l.link).or_default();
                if l.active {
                    ls.seen_active = true;
                    ls.inactive_since = None;
                } else {
                    ls.inactive_since.get_or_insert(ts);
                }
                ls.active = l.active;
                if let Some(v) = l.crc_errors {
                    ls.crc.update(ts, v);
                }
                if let Some(v) = l.replay_errors {
                    ls.replay.update(ts, v);
                }
                if let Some(v) = l.recovery_errors {
                    ls.recovery.update(ts, v);
                }
            }
        }
        st.seen = true;
    }
    // GPUs the node had and no longer lists have gone missing (fell off the bus).
    for (idx, st) in node.gpus.iter_mut() {
        if !gpus.iter().any(|g| g.index == *idx) && st.seen {
            st.missing_since.get_or_insert(ts);
        }
    }
}

fn apply_nics(node: &mut NodeState, nics: &[NicSample], ts: i64) {
    for n in nics {
        let st = node.nics.entry(n.name.clone()).or_default();
        let down = n.carrier == Some(false)
            || n.operstate.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("down") || s == "lowerlayerdown")
            || n.ib_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("down"))
            || n.ib_phys_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("disabled") || s == "Polling");
        if down {
            if st.down_since.is_none() {
                st.down_since = Some(ts);
                push(&mut st.downs, ts, MAX_POINTS);
            }
        } else if st.down_since.is_some() {
            st.down_since = None;
            st.up_at = Some(ts);
        }
        let mut deltas = [None::<u64>; 6];
        for name in NIC_COUNTERS {
            if let Some(v) = n.counters.get(*name) {
                let d = st.counters.entry(name).or_default().update(ts, *v);
                if let Some(i) = CONGESTION_INPUTS.iter().position(|c| c == name) {
                    deltas[i] = d;
                }
            }
        }
        // Congestion per byte sent, only while the port carries traffic: a job that stalls and
        // resumes changes wait and bytes together, a congested fabric changes the ratio.
        let bytes = deltas[0].or(deltas[1]).unwrap_or(0);
        if bytes >= CONGESTION_MIN_BYTES && !down {
            let wait = deltas[2].unwrap_or(0);
            let marks = deltas[3].unwrap_or(0) + deltas[4].unwrap_or(0) + deltas[5].unwrap_or(0);
            push(
                &mut st.congestion,
                CongestionPoint {
                    ts,
                    wait_per_mb: wait as f64 * 1e6 / bytes as f64,
                    marks,
                    marks_per_mb: marks as f64 * 1e6 / bytes as f64,
                },
                COUNTER_POINTS,
            );
        }
        if let Some(v) = n.carrier_changes {
            st.carrier_changes.update(ts, v);
        }
        let rate = n.rate_gbps.or(n.speed_mbps.map(|m| m as f64 / 1000.0));
        if let Some(rate) = rate {
            if !down {
                push(&mut st.rates, (ts, rate), GPU_POINTS);
            }
        }
        if st.link_layer != n.link_layer {
            st.link_layer = n.link_layer.clone();
        }
        st.state_word = n.ib_state.clone().or_else(|| n.operstate.clone());
        st.max_rate_gbps = n.max_rate_gbps;
    }
}

fn apply_job(jobs: &mut BTreeMap<String, JobState>, host: &str, j: &JobSample, ts: i64) {
    let job = jobs.entry(j.job_id.clone()).or_insert_with(|| JobState {
        id: j.job_id.clone(),
        first_seen_ms: ts,
        ..Default::default()
    });
    job.last_seen_ms = job.last_seen_ms.max(ts);
    job.ended_ms = None;
    if j.world_size.is_some() {
        job.world_size = j.world_size;
    }
    for r in &j.ranks {
        let rs = job.ranks.entry(r.rank).or_default();
        if rs.node != host || rs.gpus != r.gpus || rs.nic != r.nic {
            job.placement_dirty = true;
        }
        if rs.gone_ms.is_some() && rs.node == host && r.exit_code.is_none() && r.state != ProcState::Exited {
            // The rank came back on this node: a restarted job with the same id.
            rs.exit_code = None;
            rs.exited_ms = None;
        }
        rs.node = host.to_string();
        rs.gpus = r.gpus.clone();
        rs.nic = r.nic.clone();
        rs.pid = r.pid.or(rs.pid);
        rs.state = r.state;
        rs.seen_ms = ts;
        rs.gone_ms = None;
        let code = r.exit_code.or(r.progress.as_ref().and_then(|p| p.exit_code));
        if code.is_some() || r.state == ProcState::Exited {
            if rs.exited_ms.is_none() {
                rs.exited_ms = Some(ts);
            }
            rs.exit_code = code.or(rs.exit_code);
        } else {
            rs.exit_code = None;
            rs.exited_ms = None;
        }
        if let Some(p) = &r.progress {
            if rs.step != Some(p.step) || rs.last_progress_ms != Some(p.last_progress_ms) {
                if let Some(st) = p.step_time_ms {
                    push(&mut rs.step_times, st, RANK_POINTS);
                }
                if let Some(c) = p.compute_ms {
                    push(&mut rs.compute, c, RANK_POINTS);
                }
                if let Some(g) = p.grad_norm {
                    push(&mut rs.grad_norms, g, RANK_POINTS);
                }
            }
            rs.step = Some(p.step);
            rs.last_progress_ms = Some(p.last_progress_ms);
            rs.status = p.status;
            if p.status == ProgressStatus::Exited {
                rs.exited_ms.get_or_insert(ts);
                if p.exit_code.is_some() {
                    rs.exit_code = p.exit_code;
                }
            }
            if p.nonfinite_loss {
                rs.nonfinite_since.get_or_insert(ts);
            } else {
                rs.nonfinite_since = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
