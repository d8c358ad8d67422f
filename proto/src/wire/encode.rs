//! `NodeReport` → compact bytes: the string table (each string once, referred to by index, enum
//! values as their serde names) and `encode`, which writes the table and then the fields
//! (`write.rs`). `to_wire` builds the same report as the messages of `messages.rs`, with optional
//! columns as values and a bitset of absent entries: the reference the tests hold the bytes to.

use crate::CounterMap;
use std::collections::HashMap;

#[cfg(test)]
use super::messages::*;
use super::names::WireName;
#[cfg(test)]
use crate::report::*;

/// The report's string table while encoding: strings borrowed from the report, looked up with a
/// cheap hash (a word at a time; names are short and the table lives for one report).
pub(super) struct Strings<'a> {
    pub(super) list: Vec<&'a str>,
    index: HashMap<&'a str, u32, std::hash::BuildHasherDefault<WordHash>>,
}

/// The names a list of names (a map's keys) got last time, by position: every NIC of a node lists
/// the same 30-odd counter names in the same order (every GPU the same clock-event reasons), so
/// comparing a name with the one at its place in the previous list is much cheaper than hashing it
/// again. A name that differs is put as usual.
#[derive(Default)]
pub(super) struct Run<'a>(Vec<(&'a str, u32)>);

impl<'a> Strings<'a> {
    pub(super) fn new() -> Self {
        // A healthy 8-GPU, 8-NIC report has about 100 distinct strings.
        Strings { list: Vec::with_capacity(128), index: HashMap::with_capacity_and_hasher(128, Default::default()) }
    }
    pub(super) fn put(&mut self, s: &'a str) -> u32 {
        let list = &mut self.list;
        *self.index.entry(s).or_insert_with(|| {
            list.push(s);
            (list.len() - 1) as u32
        })
    }
    pub(super) fn opt(&mut self, s: &'a Option<String>) -> Option<u32> {
        s.as_deref().map(|s| self.put(s))
    }
    #[cfg(test)]
    pub(super) fn all(&mut self, v: &'a [String]) -> Vec<u32> {
        v.iter().map(|s| self.put(s)).collect()
    }
    /// Entry `i` of a list of names, through `run`.
    fn put_at(&mut self, run: &mut Run<'a>, i: usize, s: &'a str) -> u32 {
        if let Some(&(p, k)) = run.0.get(i)
            && p == s
        {
            return k;
        }
        let k = self.put(s);
        match run.0.get_mut(i) {
            Some(e) => *e = (s, k),
            None => run.0.push((s, k)),
        }
        k
    }
    /// A unit enum by its serde (JSON) name.
    pub(super) fn name<T: WireName>(&mut self, v: T) -> u32 {
        self.put(v.wire_name())
    }
    /// The indices of a map's keys, into `out`.
    pub(super) fn keys(&mut self, run: &mut Run<'a>, m: &'a CounterMap, out: &mut Vec<u32>) {
        out.clear();
        for (i, k) in m.keys().enumerate() {
            out.push(self.put_at(run, i, k));
        }
    }
    #[cfg(test)]
    fn map(&mut self, run: &mut Run<'a>, m: &'a CounterMap) -> (Vec<u32>, Vec<u64>) {
        let mut keys = Vec::with_capacity(m.len());
        let mut values = Vec::with_capacity(m.len());
        for (i, (k, v)) in m.iter().enumerate() {
            keys.push(self.put_at(run, i, k));
            values.push(*v);
        }
        (keys, values)
    }
}

/// The runs of the lists of names that repeat from one NIC or GPU to the next.
#[derive(Default)]
pub(super) struct Runs<'a> {
    pub(super) nic_counters: Run<'a>,
    pub(super) clock_events: Run<'a>,
}

/// A multiplicative hash over 8-byte words (as rustc's FxHash), for the string table's short keys.
#[derive(Default)]
struct WordHash(u64);

const WORD_HASH_K: u64 = 0x517c_c1b7_2722_0a95;

impl WordHash {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(WORD_HASH_K);
    }
}

impl std::hash::Hasher for WordHash {
    fn finish(&self) -> u64 {
        // The table picks buckets from the low bits and tags from the high ones: fold the well-mixed
        // high half down.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
}

/// A column of optional values: the values (0 where absent) and a bitset of the absent entries
/// (empty when none is). A column with no value at all is sent empty.
#[cfg(test)]
fn column(values: impl Iterator<Item = Option<u64>> + Clone) -> (Vec<u64>, Vec<u64>) {
    if values.clone().all(|v| v.is_none()) {
        return (Vec::new(), Vec::new());
    }
    let mut out = Vec::new();
    let mut absent: Vec<u64> = Vec::new();
    for (i, v) in values.enumerate() {
        if v.is_none() {
            let w = i / 64;
            if absent.len() <= w {
                absent.resize(w + 1, 0);
            }
            absent[w] |= 1 << (i % 64);
        }
        out.push(v.unwrap_or(0));
    }
    (out, absent)
}

/// The report's messages, with its string table (what `encode` writes; tests change them to make
/// bad bodies).
#[cfg(test)]
pub(super) fn to_wire(r: &NodeReport) -> Report {
    let (mut w, strings) = build(r);
    w.strings = strings.into_iter().map(str::to_owned).collect();
    w
}

/// The report's messages with an empty string table, and the table apart (borrowed from `r`).
#[cfg(test)]
fn build(r: &NodeReport) -> (Report, Vec<&str>) {
    let mut s = Strings::new();
    let mut runs = Runs::default();
    let node = s.put(&r.node);
    let agent_version = s.put(&r.agent_version);
    let host = r.host.as_ref().map(|h| Host {
        cpu_count: h.cpu_count,
        cpu_util_pct: h.cpu_util_pct,
        cpu_non_job_pct: h.cpu_non_job_pct,
        load1: h.load1,
        load5: h.load5,
        load15: h.load15,
        mem_total_bytes: h.mem_total_bytes,
        mem_used_bytes: h.mem_used_bytes,
        mem_available_bytes: h.mem_available_bytes,
        swap_total_bytes: h.swap_total_bytes,
        swap_used_bytes: h.swap_used_bytes,
        uptime_s: h.uptime_s,
        fans: h
            .fans
            .iter()
            .map(|f| Fan { name: s.put(&f.name), rpm: f.rpm, min_rpm: f.min_rpm, alarm: f.alarm })
            .collect(),
        temps: h
            .temps
            .iter()
            .map(|t| Temp { name: s.put(&t.name), celsius: t.celsius, crit_celsius: t.crit_celsius })
            .collect(),
        addrs: s.all(&h.addrs),
    });
    let gpus = r.gpus.iter().map(|g| gpu_to_wire(g, &mut s, &mut runs)).collect();
    let nics = r
        .nics
        .iter()
        .map(|n| {
            let (counter_keys, counter_values) = s.map(&mut runs.nic_counters, &n.counters);
            Nic {
                name: s.put(&n.name),
                kind: s.name(n.kind),
                netdev: s.opt(&n.netdev),
                port: n.port,
                pci_bus_id: s.opt(&n.pci_bus_id),
                operstate: s.opt(&n.operstate),
                carrier: n.carrier,
                carrier_changes: n.carrier_changes,
                speed_mbps: n.speed_mbps,
                mtu: n.mtu,
                link_layer: s.opt(&n.link_layer),
                ib_state: s.opt(&n.ib_state),
                ib_phys_state: s.opt(&n.ib_phys_state),
                rate_gbps: n.rate_gbps,
                max_rate_gbps: n.max_rate_gbps,
                counter_keys,
                counter_values,
                fabric: n.fabric,
                saturated: s.all(&n.saturated),
                addrs: s.all(&n.addrs),
            }
        })
        .collect();
    let disks = r
        .disks
        .iter()
        .map(|d| Disk {
            device: s.put(&d.device),
            mount: s.opt(&d.mount),
            total_bytes: d.total_bytes,
            available_bytes: d.available_bytes,
            read_only: d.read_only,
            write_bytes: d.write_bytes,
        })
        .collect();
    let jobs = r
        .jobs
        .iter()
        .map(|j| Job {
            job_id: s.put(&j.job_id),
            scheduler: s.name(j.scheduler),
            world_size: j.world_size,
            sched_state: j.sched_state.map(|x| s.name(x)),
            sched_exit_code: j.sched_exit_code,
            ranks: j
                .ranks
                .iter()
                .map(|k| Rank {
                    rank: k.rank,
                    local_rank: k.local_rank,
                    pid: k.pid,
                    gpus: k.gpus.clone(),
                    nic: s.opt(&k.nic),
                    state: s.name(k.state),
                    cpu_seconds: k.cpu_seconds,
                    rss_bytes: k.rss_bytes,
                    exit_code: k.exit_code,
                    io_write_bytes: k.io_write_bytes,
                    progress: k.progress.as_ref().map(|p| WireProgress {
                        step: p.step,
                        last_progress_ms: p.last_progress_ms,
                        step_time_ms: p.step_time_ms,
                        step_time_avg_ms: p.step_time_avg_ms,
                        compute_ms: p.compute_ms,
                        loss: p.loss,
                        loss_step: p.loss_step,
                        grad_norm: p.grad_norm,
                        nonfinite_loss: p.nonfinite_loss,
                        status: s.name(p.status),
                        exit_code: p.exit_code,
                    }),
                })
                .collect(),
        })
        .collect();
    let events = r
        .events
        .iter()
        .map(|e| WireEvent {
            ts_ms: e.ts_ms,
            source: s.name(e.source),
            class: s.put(e.class.as_str()),
            severity: s.name(e.severity),
            component: s.opt(&e.component),
            xid: e.xid,
            caused_by_xid: e.caused_by_xid,
            device: s.opt(&e.device),
            pid: e.pid,
            count: e.count,
            message: s.put(&e.message),
            collective: e.collective.as_ref().map(|c| WireCollective {
                kind: s.opt(&c.kind),
                job: s.opt(&c.job),
                rank: c.rank,
                local_rank: c.local_rank,
                device: c.device,
                hostname: s.opt(&c.hostname),
                peer: s.opt(&c.peer),
                peer_port: c.peer_port,
                local_addr: s.opt(&c.local_addr),
                remote_addr: s.opt(&c.remote_addr),
                hca: s.opt(&c.hca),
                seq: c.seq,
                op: s.opt(&c.op),
                timeout_ms: c.timeout_ms,
                last_completed: c.last_completed,
                error: s.opt(&c.error),
                pg: s.opt(&c.pg),
            }),
        })
        .collect();
    let (collector_error_keys, collector_error_values) = s.map(&mut Run::default(), &r.collector_errors);
    let w = Report {
        strings: Vec::new(),
        schema_version: r.schema_version,
        node,
        agent_version,
        seq: r.seq,
        timestamp_ms: r.timestamp_ms,
        interval_ms: r.interval_ms,
        shutdown: r.shutdown,
        urgent: r.urgent,
        host,
        gpus,
        nics,
        disks,
        jobs,
        events,
        dropped_reports: r.dropped.reports,
        dropped_events: r.dropped.events,
        dropped_progress: r.dropped.progress,
        collector_error_keys,
        collector_error_values,
        expected_gpus: r.expected_gpus,
        driver_version: s.opt(&r.driver_version),
        probes: r
            .probes
            .iter()
            .map(|p| Probe {
                peer: s.put(&p.peer),
                iface: s.put(&p.iface),
                local_addr: s.put(&p.local_addr),
                peer_addr: s.put(&p.peer_addr),
                sent: p.sent,
                received: p.received,
                rtt_p50_us: p.rtt_p50_us,
                rtt_max_us: p.rtt_max_us,
            })
            .collect(),
    };
    (w, s.list)
}

#[cfg(test)]
fn gpu_to_wire<'a>(g: &'a GpuSample, s: &mut Strings<'a>, runs: &mut Runs<'a>) -> Gpu {
    let nvlinks = (!g.nvlinks.is_empty()).then(|| {
        let l = &g.nvlinks;
        let (crc_errors, crc_errors_absent) = column(l.iter().map(|x| x.crc_errors));
        let (replay_errors, replay_errors_absent) = column(l.iter().map(|x| x.replay_errors));
        let (recovery_errors, recovery_errors_absent) = column(l.iter().map(|x| x.recovery_errors));
        let (tx_bytes, tx_bytes_absent) = column(l.iter().map(|x| x.tx_bytes));
        let (rx_bytes, rx_bytes_absent) = column(l.iter().map(|x| x.rx_bytes));
        let (crc_flit_errors, crc_flit_errors_absent) = column(l.iter().map(|x| x.crc_flit_errors));
        let (crc_data_errors, crc_data_errors_absent) = column(l.iter().map(|x| x.crc_data_errors));
        Links {
            link: l.iter().map(|x| x.link).collect(),
            active: l.iter().map(|x| x.active).collect(),
            crc_errors,
            crc_errors_absent,
            replay_errors,
            replay_errors_absent,
            recovery_errors,
            recovery_errors_absent,
            tx_bytes,
            tx_bytes_absent,
            rx_bytes,
            rx_bytes_absent,
            crc_flit_errors,
            crc_flit_errors_absent,
            crc_data_errors,
            crc_data_errors_absent,
        }
    });
    let (clock_event_keys, clock_event_values) = s.map(&mut runs.clock_events, &g.clock_event_ns);
    Gpu {
        index: g.index,
        uuid: s.put(&g.uuid),
        name: s.put(&g.name),
        serial: s.opt(&g.serial),
        pci_bus_id: s.opt(&g.pci_bus_id),
        state: s.name(g.state),
        util_gpu_pct: g.util_gpu_pct,
        util_mem_pct: g.util_mem_pct,
        mem_total_bytes: g.mem_total_bytes,
        mem_used_bytes: g.mem_used_bytes,
        mem_free_bytes: g.mem_free_bytes,
        temp_c: g.temp_c,
        mem_temp_c: g.mem_temp_c,
        power_w: g.power_w,
        power_limit_w: g.power_limit_w,
        energy_mj: g.energy_mj,
        sm_clock_mhz: g.sm_clock_mhz,
        sm_clock_max_mhz: g.sm_clock_max_mhz,
        mem_clock_mhz: g.mem_clock_mhz,
        mem_clock_max_mhz: g.mem_clock_max_mhz,
        throttle_mask: g.throttle_mask,
        throttle_reasons: s.all(&g.throttle_reasons),
        tensor_active_pct: g.tensor_active_pct,
        ecc_sbe_volatile: g.ecc.sbe_volatile,
        ecc_dbe_volatile: g.ecc.dbe_volatile,
        ecc_sbe_aggregate: g.ecc.sbe_aggregate,
        ecc_dbe_aggregate: g.ecc.dbe_aggregate,
        ecc_sram_uncorrectable: g.ecc.sram_uncorrectable,
        retired_pages: g.retired_pages.as_ref().map(|p| Retired { sbe: p.sbe, dbe: p.dbe, pending: p.pending }),
        row_remap: g.row_remap.as_ref().map(|m| Remap {
            correctable: m.correctable,
            uncorrectable: m.uncorrectable,
            pending: m.pending,
            failure: m.failure,
        }),
        pcie: g.pcie.as_ref().map(|p| Pcie {
            generation: p.generation,
            max_generation: p.max_generation,
            width: p.width,
            max_width: p.max_width,
            replay_count: p.replay_count,
        }),
        nvlinks,
        processes: g.processes.iter().map(|p| Proc { pid: p.pid, used_mem_bytes: p.used_mem_bytes }).collect(),
        not_supported: s.all(&g.not_supported),
        clock_event_keys,
        clock_event_values,
        nvml_error: s.opt(&g.nvml_error),
        pci_present: g.pci_present,
        mig_on: g.mig.as_ref().map(|_| true),
        mig: g
            .mig
            .iter()
            .flatten()
            .map(|m| Mig {
                gpu_instance_id: m.gpu_instance_id,
                compute_instance_id: m.compute_instance_id,
                profile: s.put(&m.profile),
                uuid: s.put(&m.uuid),
                mem_total_bytes: m.mem_total_bytes,
                mem_used_bytes: m.mem_used_bytes,
            })
            .collect(),
    }
}
