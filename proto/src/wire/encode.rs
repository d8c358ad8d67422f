//! `NodeReport` → compact messages: the string table (each string once, referred to by index),
//! enum values written as their serde names, and optional columns with a bitset of absent entries.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::messages::*;
use crate::report::*;

/// The report's string table while encoding: strings borrowed from the report, looked up with a
/// cheap hash (FNV-1a; names are short and the table lives for one report).
#[derive(Default)]
struct Strings<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32, std::hash::BuildHasherDefault<Fnv>>,
}

impl<'a> Strings<'a> {
    fn put(&mut self, s: &'a str) -> u32 {
        let list = &mut self.list;
        *self.index.entry(s).or_insert_with(|| {
            list.push(s);
            (list.len() - 1) as u32
        })
    }
    fn opt(&mut self, s: &'a Option<String>) -> Option<u32> {
        s.as_deref().map(|s| self.put(s))
    }
    fn all(&mut self, v: &'a [String]) -> Vec<u32> {
        v.iter().map(|s| self.put(s)).collect()
    }
    /// A unit enum by its serde (JSON) name.
    fn name<T: Serialize>(&mut self, v: &T) -> u32 {
        self.put(v.serialize(VariantName).unwrap_or(""))
    }
    fn map(&mut self, m: &'a BTreeMap<String, u64>) -> (Vec<u32>, Vec<u64>) {
        m.iter().map(|(k, v)| (self.put(k), *v)).unzip()
    }
    fn into_owned(self) -> Vec<String> {
        self.list.into_iter().map(str::to_owned).collect()
    }
}

/// FNV-1a, for the string table's short keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A serializer that only answers the name of a unit enum variant (what serde writes to JSON for
/// it), without building a string.
struct VariantName;

#[derive(Debug)]
struct NotAUnitVariant;

impl std::fmt::Display for NotAUnitVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a unit enum variant")
    }
}

impl std::error::Error for NotAUnitVariant {}

impl serde::ser::Error for NotAUnitVariant {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAUnitVariant
    }
}

macro_rules! not_a_variant {
    ($($f:ident($($t:ty),*);)*) => {
        $(fn $f(self, $(_: $t),*) -> Result<Self::Ok, Self::Error> { Err(NotAUnitVariant) })*
    };
}

impl serde::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotAUnitVariant;
    type SerializeSeq = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTuple = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleStruct = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleVariant = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeMap = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeStruct = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeStructVariant = serde::ser::Impossible<&'static str, NotAUnitVariant>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, NotAUnitVariant> {
        Ok(variant)
    }

    not_a_variant! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit(); serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
}

/// A column of optional values: the values (0 where absent) and a bitset of the absent entries
/// (empty when none is). A column with no value at all is sent empty.
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

pub(super) fn to_wire(r: &NodeReport) -> Report {
    let mut s = Strings::default();
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
    let gpus = r.gpus.iter().map(|g| gpu_to_wire(g, &mut s)).collect();
    let nics = r
        .nics
        .iter()
        .map(|n| {
            let (counter_keys, counter_values) = s.map(&n.counters);
            Nic {
                name: s.put(&n.name),
                kind: s.name(&n.kind),
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
            scheduler: s.name(&j.scheduler),
            world_size: j.world_size,
            sched_state: j.sched_state.as_ref().map(|x| s.name(x)),
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
                    state: s.name(&k.state),
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
                        status: s.name(&p.status),
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
            source: s.name(&e.source),
            class: s.put(e.class.as_str()),
            severity: s.put(e.severity.as_str()),
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
    let (collector_error_keys, collector_error_values) = s.map(&r.collector_errors);
    Report {
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
    }
    .with_strings(s.into_owned())
}

impl Report {
    fn with_strings(mut self, strings: Vec<String>) -> Self {
        self.strings = strings;
        self
    }
}

fn gpu_to_wire<'a>(g: &'a GpuSample, s: &mut Strings<'a>) -> Gpu {
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
    let (clock_event_keys, clock_event_values) = s.map(&g.clock_event_ns);
    Gpu {
        index: g.index,
        uuid: s.put(&g.uuid),
        name: s.put(&g.name),
        serial: s.opt(&g.serial),
        pci_bus_id: s.opt(&g.pci_bus_id),
        state: s.name(&g.state),
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
