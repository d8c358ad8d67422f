//! Compact messages → `NodeReport`: string indices resolved against the table, enum names parsed
//! by their serde names (`names.rs`), columns unpacked. Every error names the field that is wrong.

use super::messages::*;
use super::names::WireName;
use crate::report::*;
use crate::{Event, ReportError};

fn bad(field: impl Into<String>, message: impl Into<String>) -> ReportError {
    ReportError::Decode { field: field.into(), message: message.into() }
}

struct Table<'a>(&'a [String]);

impl Table<'_> {
    fn get(&self, i: u32, field: &dyn Fn() -> String) -> Result<String, ReportError> {
        self.str(i, field).map(str::to_owned)
    }
    fn opt(&self, i: Option<u32>, field: &dyn Fn() -> String) -> Result<Option<String>, ReportError> {
        i.map(|i| self.get(i, field)).transpose()
    }
    fn all(&self, v: &[u32], field: &dyn Fn() -> String) -> Result<Vec<String>, ReportError> {
        v.iter().map(|&i| self.get(i, field)).collect_exact()
    }
    /// Entry `i`, borrowed.
    fn str(&self, i: u32, field: &dyn Fn() -> String) -> Result<&str, ReportError> {
        self.0.get(i as usize).map(String::as_str).ok_or_else(|| {
            bad(field(), format!("string index {i} is past the end of the string table ({} entries)", self.0.len()))
        })
    }
    /// A unit enum by its serde (JSON) name.
    fn name<T: WireName>(&self, i: u32, field: &dyn Fn() -> String) -> Result<T, ReportError> {
        let s = self.str(i, field)?;
        T::from_wire_name(s).ok_or_else(|| bad(field(), T::unknown(s)))
    }
    fn map(&self, keys: &[u32], values: &[u64], field: &dyn Fn() -> String) -> Result<CounterMap, ReportError> {
        if keys.len() != values.len() {
            return Err(bad(field(), format!("{} names but {} values", keys.len(), values.len())));
        }
        let mut pairs = Vec::with_capacity(keys.len());
        for (&k, &v) in keys.iter().zip(values) {
            pairs.push((counter_name(&self.get(k, field)?), v));
        }
        // Keys come sorted from a `CounterMap`: the map is then built as they come, without a sort.
        Ok(CounterMap::from_entries(pairs))
    }
}

/// Collecting the entries of a list into a `Vec` of its size at once: `collect` into a `Result`
/// cannot know the size and grows the `Vec` (of large structs) step by step.
trait CollectExact<U>: ExactSizeIterator<Item = Result<U, ReportError>> + Sized {
    fn collect_exact(self) -> Result<Vec<U>, ReportError> {
        let mut out = Vec::with_capacity(self.len());
        for x in self {
            out.push(x?);
        }
        Ok(out)
    }
}

impl<U, I: ExactSizeIterator<Item = Result<U, ReportError>>> CollectExact<U> for I {}

/// Entry `i` of an optional column.
fn cell(values: &[u64], absent: &[u64], i: usize) -> Option<u64> {
    let gone = absent.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
    if gone { None } else { values.get(i).copied() }
}

pub(super) fn from_wire(w: Report) -> Result<NodeReport, ReportError> {
    let t = Table(&w.strings);
    let f = |name: &'static str| move || name.to_string();
    let host = match &w.host {
        None => None,
        Some(h) => Some(HostSample {
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
                .enumerate()
                .map(|(i, x)| {
                    Ok(FanSample {
                        name: t.get(x.name, &|| format!("host.fans[{i}].name"))?,
                        rpm: x.rpm,
                        min_rpm: x.min_rpm,
                        alarm: x.alarm,
                    })
                })
                .collect_exact()?,
            temps: h
                .temps
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    Ok(TempSample {
                        name: t.get(x.name, &|| format!("host.temps[{i}].name"))?,
                        celsius: x.celsius,
                        crit_celsius: x.crit_celsius,
                    })
                })
                .collect_exact()?,
            addrs: t.all(&h.addrs, &|| "host.addrs".to_string())?,
        }),
    };
    let gpus = w.gpus.iter().enumerate().map(|(i, g)| gpu_from_wire(g, i, &t)).collect_exact()?;
    let nics = w
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = |k: &'static str| move || format!("nics[{i}].{k}");
            Ok(NicSample {
                name: t.get(n.name, &p("name"))?,
                kind: t.name(n.kind, &p("kind"))?,
                netdev: t.opt(n.netdev, &p("netdev"))?,
                port: n.port,
                pci_bus_id: t.opt(n.pci_bus_id, &p("pci_bus_id"))?,
                operstate: t.opt(n.operstate, &p("operstate"))?,
                carrier: n.carrier,
                carrier_changes: n.carrier_changes,
                speed_mbps: n.speed_mbps,
                mtu: n.mtu,
                link_layer: t.opt(n.link_layer, &p("link_layer"))?,
                ib_state: t.opt(n.ib_state, &p("ib_state"))?,
                ib_phys_state: t.opt(n.ib_phys_state, &p("ib_phys_state"))?,
                rate_gbps: n.rate_gbps,
                max_rate_gbps: n.max_rate_gbps,
                counters: t.map(&n.counter_keys, &n.counter_values, &p("counters"))?,
                fabric: n.fabric,
                saturated: t.all(&n.saturated, &p("saturated"))?,
                addrs: t.all(&n.addrs, &p("addrs"))?,
            })
        })
        .collect_exact()?;
    let disks = w
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = |k: &'static str| move || format!("disks[{i}].{k}");
            Ok(DiskSample {
                device: t.get(d.device, &p("device"))?,
                mount: t.opt(d.mount, &p("mount"))?,
                total_bytes: d.total_bytes,
                available_bytes: d.available_bytes,
                read_only: d.read_only,
                write_bytes: d.write_bytes,
            })
        })
        .collect_exact()?;
    let jobs = w
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let p = |k: &'static str| move || format!("jobs[{i}].{k}");
            let ranks = j
                .ranks
                .iter()
                .enumerate()
                .map(|(r, k)| {
                    let q = |f: &'static str| move || format!("jobs[{i}].ranks[{r}].{f}");
                    let progress = match &k.progress {
                        None => None,
                        Some(x) => Some(Progress {
                            step: x.step,
                            last_progress_ms: x.last_progress_ms,
                            step_time_ms: x.step_time_ms,
                            step_time_avg_ms: x.step_time_avg_ms,
                            compute_ms: x.compute_ms,
                            loss: x.loss,
                            loss_step: x.loss_step,
                            grad_norm: x.grad_norm,
                            nonfinite_loss: x.nonfinite_loss,
                            status: t.name(x.status, &q("progress.status"))?,
                            exit_code: x.exit_code,
                        }),
                    };
                    Ok(RankSample {
                        rank: k.rank,
                        local_rank: k.local_rank,
                        pid: k.pid,
                        gpus: k.gpus.clone(),
                        nic: t.opt(k.nic, &q("nic"))?,
                        state: t.name(k.state, &q("state"))?,
                        cpu_seconds: k.cpu_seconds,
                        rss_bytes: k.rss_bytes,
                        exit_code: k.exit_code,
                        io_write_bytes: k.io_write_bytes,
                        progress,
                    })
                })
                .collect_exact()?;
            Ok(JobSample {
                job_id: t.get(j.job_id, &p("job_id"))?,
                scheduler: t.name(j.scheduler, &p("scheduler"))?,
                world_size: j.world_size,
                sched_state: j.sched_state.map(|x| t.name(x, &p("sched_state"))).transpose()?,
                sched_exit_code: j.sched_exit_code,
                ranks,
            })
        })
        .collect_exact()?;
    let events = w
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = |k: &'static str| move || format!("events[{i}].{k}");
            let class_name = t.str(e.class, &p("class"))?;
            let class = crate::EventClass::parse(class_name)
                .ok_or_else(|| bad(p("class")(), format!("unknown event class {class_name:?}")))?;
            Ok(Event {
                ts_ms: e.ts_ms,
                source: t.name(e.source, &p("source"))?,
                class,
                severity: t.name(e.severity, &p("severity"))?,
                component: t.opt(e.component, &p("component"))?,
                xid: e.xid,
                caused_by_xid: e.caused_by_xid,
                device: t.opt(e.device, &p("device"))?,
                pid: e.pid,
                count: e.count,
                message: t.get(e.message, &p("message"))?,
                collective: e
                    .collective
                    .as_ref()
                    .map(|c| -> Result<crate::CollectiveInfo, ReportError> {
                        let q = |k: &'static str| move || format!("events[{i}].collective.{k}");
                        Ok(crate::CollectiveInfo {
                            kind: t.opt(c.kind, &q("kind"))?,
                            job: t.opt(c.job, &q("job"))?,
                            rank: c.rank,
                            local_rank: c.local_rank,
                            device: c.device,
                            hostname: t.opt(c.hostname, &q("hostname"))?,
                            peer: t.opt(c.peer, &q("peer"))?,
                            peer_port: c.peer_port,
                            local_addr: t.opt(c.local_addr, &q("local_addr"))?,
                            remote_addr: t.opt(c.remote_addr, &q("remote_addr"))?,
                            hca: t.opt(c.hca, &q("hca"))?,
                            seq: c.seq,
                            op: t.opt(c.op, &q("op"))?,
                            timeout_ms: c.timeout_ms,
                            last_completed: c.last_completed,
                            error: t.opt(c.error, &q("error"))?,
                            pg: t.opt(c.pg, &q("pg"))?,
                        })
                    })
                    .transpose()?,
            })
        })
        .collect_exact()?;
    Ok(NodeReport {
        schema_version: w.schema_version,
        node: t.get(w.node, &f("node"))?,
        agent_version: t.get(w.agent_version, &f("agent_version"))?,
        seq: w.seq,
        timestamp_ms: w.timestamp_ms,
        interval_ms: w.interval_ms,
        shutdown: w.shutdown,
        urgent: w.urgent,
        host,
        gpus,
        nics,
        disks,
        jobs,
        events,
        dropped: Dropped { reports: w.dropped_reports, events: w.dropped_events, progress: w.dropped_progress },
        collector_errors: t.map(&w.collector_error_keys, &w.collector_error_values, &f("collector_errors"))?,
        expected_gpus: w.expected_gpus,
        driver_version: t.opt(w.driver_version, &f("driver_version"))?,
        probes: w
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let q = |k: &'static str| move || format!("probes[{i}].{k}");
                Ok(crate::probe::ProbeSample {
                    peer: t.get(p.peer, &q("peer"))?,
                    iface: t.get(p.iface, &q("iface"))?,
                    local_addr: t.get(p.local_addr, &q("local_addr"))?,
                    peer_addr: t.get(p.peer_addr, &q("peer_addr"))?,
                    sent: p.sent,
                    received: p.received,
                    rtt_p50_us: p.rtt_p50_us,
                    rtt_max_us: p.rtt_max_us,
                })
            })
            .collect_exact()?,
    })
}

fn gpu_from_wire(g: &Gpu, i: usize, t: &Table<'_>) -> Result<GpuSample, ReportError> {
    let p = |k: &'static str| move || format!("gpus[{i}].{k}");
    let nvlinks = match &g.nvlinks {
        None => Vec::new(),
        Some(l) => {
            let n = l.link.len();
            // An empty value column is one whose every entry is absent (and what a sender from
            // before a column was added sends).
            let cols = [
                &l.crc_errors,
                &l.replay_errors,
                &l.recovery_errors,
                &l.tx_bytes,
                &l.rx_bytes,
                &l.crc_flit_errors,
                &l.crc_data_errors,
            ];
            if l.active.len() != n || cols.iter().any(|c| !c.is_empty() && c.len() != n) {
                return Err(bad(p("nvlinks")(), format!("columns of different lengths for {n} links")));
            }
            (0..n)
                .map(|k| NvLinkSample {
                    link: l.link[k],
                    active: l.active[k],
                    crc_errors: cell(&l.crc_errors, &l.crc_errors_absent, k),
                    replay_errors: cell(&l.replay_errors, &l.replay_errors_absent, k),
                    recovery_errors: cell(&l.recovery_errors, &l.recovery_errors_absent, k),
                    tx_bytes: cell(&l.tx_bytes, &l.tx_bytes_absent, k),
                    rx_bytes: cell(&l.rx_bytes, &l.rx_bytes_absent, k),
                    crc_flit_errors: cell(&l.crc_flit_errors, &l.crc_flit_errors_absent, k),
                    crc_data_errors: cell(&l.crc_data_errors, &l.crc_data_errors_absent, k),
                })
                .collect()
        }
    };
    Ok(GpuSample {
        index: g.index,
        uuid: t.get(g.uuid, &p("uuid"))?,
        name: t.get(g.name, &p("name"))?,
        serial: t.opt(g.serial, &p("serial"))?,
        pci_bus_id: t.opt(g.pci_bus_id, &p("pci_bus_id"))?,
        state: t.name(g.state, &p("state"))?,
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
        throttle_reasons: t.all(&g.throttle_reasons, &p("throttle_reasons"))?,
        tensor_active_pct: g.tensor_active_pct,
        ecc: EccCounts {
            sbe_volatile: g.ecc_sbe_volatile,
            dbe_volatile: g.ecc_dbe_volatile,
            sbe_aggregate: g.ecc_sbe_aggregate,
            dbe_aggregate: g.ecc_dbe_aggregate,
            sram_uncorrectable: g.ecc_sram_uncorrectable,
        },
        retired_pages: g.retired_pages.as_ref().map(|x| RetiredPages { sbe: x.sbe, dbe: x.dbe, pending: x.pending }),
        row_remap: g.row_remap.as_ref().map(|x| RowRemap {
            correctable: x.correctable,
            uncorrectable: x.uncorrectable,
            pending: x.pending,
            failure: x.failure,
        }),
        pcie: g.pcie.as_ref().map(|x| PcieLink {
            generation: x.generation,
            max_generation: x.max_generation,
            width: x.width,
            max_width: x.max_width,
            replay_count: x.replay_count,
        }),
        nvlinks,
        processes: g.processes.iter().map(|x| GpuProcess { pid: x.pid, used_mem_bytes: x.used_mem_bytes }).collect(),
        not_supported: t.all(&g.not_supported, &p("not_supported"))?,
        clock_event_ns: t.map(&g.clock_event_keys, &g.clock_event_values, &p("clock_event_ns"))?,
        nvml_error: t.opt(g.nvml_error, &p("nvml_error"))?,
        pci_present: g.pci_present,
        mig: match g.mig_on {
            Some(true) => Some(
                g.mig
                    .iter()
                    .map(|m| {
                        Ok(MigInstance {
                            gpu_instance_id: m.gpu_instance_id,
                            compute_instance_id: m.compute_instance_id,
                            profile: t.get(m.profile, &p("mig.profile"))?,
                            uuid: t.get(m.uuid, &p("mig.uuid"))?,
                            mem_total_bytes: m.mem_total_bytes,
                            mem_used_bytes: m.mem_used_bytes,
                        })
                    })
                    .collect_exact()?,
            ),
            _ => None,
        },
    })
}
