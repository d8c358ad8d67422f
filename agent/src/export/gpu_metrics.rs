//! GPU metrics under dcgm-exporter's names and labels, plus `faultline_gpu_*` for what DCGM lacks.
//!
//! Values are read at scrape time from the latest report, and the XID counts per GPU and code from
//! the `XidTally` that the collection loop feeds with every report (events leave with their report;
//! the counter must outlive them). Nothing reaches this module from a collector except the report.
//!
//! Labels are dcgm-exporter's: `gpu`, `UUID`, `pci_bus_id`, `device` (`nvidia<i>`), `modelName`,
//! `Hostname`, so existing GPU dashboards keep working. Every fault signal is on by default.
//!
//! **`dcgm_compat`** (agent config, default on): the `DCGM_FI_*` families. On by default because
//! faultline's own dashboards and alerts, and NVIDIA's dashboard 12239, read GPU temperature, power,
//! clocks, utilization and ECC under those names, and most nodes run no dcgm-exporter. Turn it off
//! on nodes that already run dcgm-exporter: the agent then exports no `DCGM_FI_*` series, nothing
//! collides or is counted twice, and the same dashboards read dcgm-exporter's series (same names and
//! labels). The `faultline_gpu_*` families (what DCGM lacks) stay either way.
//!
//! **Names over types:** dcgm-exporter declares some series (`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`,
//! the ECC, retired-page, remapped-row, PCIe-replay and NVLink error totals) as counters without a
//! `_total` suffix. The Prometheus client appends `_total` to every counter, which would rename them
//! and break the dashboards and alerts written for DCGM, so those series are exposed `untyped` under
//! their exact DCGM names. Our own counters (`faultline_gpu_xid_errors_total`, …) are real counters.

use std::collections::BTreeMap;

use faultline_proto::{GpuSample, GpuState, NodeReport};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use faultline_proto::THROTTLE_REASONS;

use crate::collect::pod_resources::{Owner, Owners};
use crate::export::Snapshot;
use crate::export::xids::{XidTally, gpu_index_of};

/// Bytes in the MiB that dcgm-exporter's framebuffer metrics count in.
const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// The collector
// ---------------------------------------------------------------------------------------------

/// Reads the latest report at scrape time.
#[derive(Debug)]
pub struct GpuMetrics {
    snapshot: Snapshot,
    xids: XidTally,
    dcgm_compat: bool,
    /// GPU and MIG UUID → Kubernetes pod, when the kubelet's pod-resources socket is read.
    owners: Option<Owners>,
}

impl GpuMetrics {
    /// With the `DCGM_FI_*` families (`dcgm_compat` on); XID counts come from `xids`.
    pub fn new(snapshot: Snapshot, xids: XidTally) -> GpuMetrics {
        GpuMetrics { snapshot, xids, dcgm_compat: true, owners: None }
    }

    /// Label each GPU's series (each MIG instance's, under MIG) with the `pod`, `namespace` and
    /// `container` it is allocated to, as dcgm-exporter does on Kubernetes.
    pub fn with_pod_owners(mut self, owners: Owners) -> GpuMetrics {
        self.owners = Some(owners);
        self
    }

    /// `dcgm_compat`: whether the `DCGM_FI_*` families are exported (see the module doc).
    pub fn with_dcgm_compat(mut self, on: bool) -> GpuMetrics {
        self.dcgm_compat = on;
        self
    }
}

/// The encoder and whether `DCGM_FI_*` families are written.
struct Enc<'e, 'a> {
    inner: &'e mut DescriptorEncoder<'a>,
    dcgm_compat: bool,
}

impl Collector for GpuMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let Some(report) = report.as_ref() else { return Ok(()) };
        if report.gpus.is_empty() {
            return Ok(());
        }
        let xids = Xids::of(&self.xids);
        let owners =
            self.owners.as_ref().map(|o| o.read().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default();
        encode_report(report, &xids, &owners, &mut Enc { inner: &mut encoder, dcgm_compat: self.dcgm_compat })
    }
}

/// The tally's counts keyed by GPU index.
struct Xids {
    /// (gpu, xid) → occurrences since the agent started.
    totals: BTreeMap<(u32, u32), u64>,
    /// gpu → the last XID code seen (DCGM_FI_DEV_XID_ERRORS).
    last: BTreeMap<u32, u32>,
}

impl Xids {
    fn of(t: &XidTally) -> Xids {
        let totals = t.totals().into_iter().filter_map(|((c, x), n)| Some(((gpu_index_of(&c)?, x), n))).collect();
        let last = t.last().into_iter().filter_map(|(c, x)| Some((gpu_index_of(&c)?, x))).collect();
        Xids { totals, last }
    }
}

type Labels = Vec<(&'static str, String)>;

/// `pod`, `namespace`, `container` of the pod holding device `uuid`, if any.
fn owner_labels(owners: &BTreeMap<String, Owner>, uuid: &str) -> Labels {
    match owners.get(uuid) {
        Some(o) => vec![("pod", o.pod.clone()), ("namespace", o.namespace.clone()), ("container", o.container.clone())],
        None => Vec::new(),
    }
}

fn labels(host: &str, driver: Option<&str>, owners: &BTreeMap<String, Owner>, g: &GpuSample) -> Labels {
    let mut l = vec![
        ("gpu", g.index.to_string()),
        ("UUID", g.uuid.clone()),
        ("pci_bus_id", g.pci_bus_id.clone().unwrap_or_default()),
        ("device", format!("nvidia{}", g.index)),
        ("modelName", g.name.clone()),
        ("Hostname", host.to_string()),
    ];
    if let Some(d) = driver.filter(|d| !d.is_empty()) {
        l.push(("DCGM_FI_DRIVER_VERSION", d.to_string()));
    }
    l.extend(owner_labels(owners, &g.uuid));
    l
}

/// Framebuffer MiB of a GPU, or with MIG on, of each MIG instance (labelled `GPU_I_PROFILE` and
/// `GPU_I_ID`, as dcgm-exporter does): memory is divided between instances, so the whole-GPU value
/// is not exported beside them (a sum over the family would count it twice).
fn framebuffer(l: &Labels, g: &GpuSample, which: Fb, owners: &BTreeMap<String, Owner>) -> Vec<(Labels, f64)> {
    let mib = |b: Option<u64>| b.map(|b| (b as f64 / MIB).round());
    match g.mig.as_deref() {
        Some(instances) if !instances.is_empty() => instances
            .iter()
            .filter_map(|m| {
                let free = m.mem_total_bytes.zip(m.mem_used_bytes).map(|(t, u)| t.saturating_sub(u));
                let v = mib(match which {
                    Fb::Used => m.mem_used_bytes,
                    Fb::Free => free,
                    Fb::Total => m.mem_total_bytes,
                })?;
                let mut extra = vec![("GPU_I_PROFILE", m.profile.clone()), ("GPU_I_ID", m.gpu_instance_id.to_string())];
                // A MIG device is allocated on its own: its pod, unless the whole GPU is one pod's.
                if !l.iter().any(|(k, _)| *k == "pod") {
                    extra.extend(owner_labels(owners, &m.uuid));
                }
                Some((with(l, &extra), v))
            })
            .collect(),
        _ => mib(match which {
            Fb::Used => g.mem_used_bytes,
            Fb::Free => g.mem_free_bytes,
            Fb::Total => g.mem_total_bytes,
        })
        .map(|v| (l.clone(), v))
        .into_iter()
        .collect(),
    }
}

#[derive(Clone, Copy)]
enum Fb {
    Used,
    Free,
    Total,
}

fn with(base: &Labels, extra: &[(&'static str, String)]) -> Labels {
    let mut l = base.clone();
    l.extend(extra.iter().cloned());
    l
}

/// One metric family over every GPU: `value` gives the series (extra labels, value) for a GPU.
fn family(
    enc: &mut Enc<'_, '_>,
    name: &str,
    help: &str,
    kind: MetricType,
    gpus: &[(Labels, &GpuSample)],
    value: impl Fn(&Labels, &GpuSample) -> Vec<(Labels, f64)>,
) -> std::fmt::Result {
    let series: Vec<(Labels, f64)> = gpus.iter().flat_map(|(l, g)| value(l, g)).collect();
    if series.is_empty() {
        return Ok(());
    }
    if !enc.dcgm_compat && name.starts_with("DCGM_FI_") {
        return Ok(());
    }
    let mut m = enc.inner.encode_descriptor(name, help, None, kind)?;
    for (l, v) in &series {
        let mut f = m.encode_family(l)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
            _ => f.encode_gauge(v)?,
        }
    }
    Ok(())
}

/// A gauge (or untyped DCGM counter) with one value per GPU.
fn per_gpu(
    enc: &mut Enc<'_, '_>,
    name: &str,
    help: &str,
    kind: MetricType,
    gpus: &[(Labels, &GpuSample)],
    value: impl Fn(&GpuSample) -> Option<f64>,
) -> std::fmt::Result {
    family(enc, name, help, kind, gpus, |l, g| value(g).map(|v| (l.clone(), v)).into_iter().collect())
}

fn encode_report(
    report: &NodeReport,
    xids: &Xids,
    owners: &BTreeMap<String, Owner>,
    enc: &mut Enc<'_, '_>,
) -> std::fmt::Result {
    let host = report.node.as_str();
    let driver = report.driver_version.as_deref();
    let gpus: Vec<(Labels, &GpuSample)> = report.gpus.iter().map(|g| (labels(host, driver, owners, g), g)).collect();
    let ok: Vec<(Labels, &GpuSample)> = gpus.iter().filter(|(_, g)| g.state == GpuState::Ok).cloned().collect();
    let g_ = MetricType::Gauge;
    // DCGM counters without `_total`: see the module doc.
    let dc = MetricType::Unknown;

    per_gpu(enc, "DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", g_, &ok, |g| g.util_gpu_pct)?;
    per_gpu(enc, "DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", g_, &ok, |g| g.util_mem_pct)?;
    family(enc, "DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", g_, &ok, |l, g| {
        framebuffer(l, g, Fb::Used, owners)
    })?;
    family(enc, "DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", g_, &ok, |l, g| {
        framebuffer(l, g, Fb::Free, owners)
    })?;
    family(enc, "DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", g_, &ok, |l, g| {
        framebuffer(l, g, Fb::Total, owners)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", g_, &ok, |g| g.temp_c)?;
    per_gpu(enc, "DCGM_FI_DEV_MEMORY_TEMP", "Memory temperature (in C).", g_, &ok, |g| g.mem_temp_c)?;
    per_gpu(enc, "DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", g_, &ok, |g| g.power_w)?;
    per_gpu(
        enc,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        dc,
        &ok,
        |g| g.energy_mj.map(|v| v as f64),
    )?;
    per_gpu(enc, "DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", g_, &ok, |g| g.sm_clock_mhz.map(f64::from))?;
    per_gpu(enc, "DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", g_, &ok, |g| {
        g.mem_clock_mhz.map(f64::from)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask).", g_, &ok, |g| {
        g.throttle_mask.map(|m| m as f64)
    })?;
    // Every GPU gets the XID gauge, 0 until one is seen, as dcgm-exporter does.
    per_gpu(enc, "DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", g_, &gpus, |g| {
        Some(xids.last.get(&g.index).copied().unwrap_or(0) as f64)
    })?;

    let ecc = [
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.", 0),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", 1),
        ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors.", 2),
        ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors.", 3),
    ];
    for (name, help, which) in ecc {
        per_gpu(enc, name, help, dc, &ok, |g| {
            let e = &g.ecc;
            [e.sbe_volatile, e.dbe_volatile, e.sbe_aggregate, e.dbe_aggregate][which].map(|v| v as f64)
        })?;
    }
    per_gpu(enc, "DCGM_FI_DEV_RETIRED_SBE", "Total number of retired pages due to single-bit errors.", dc, &ok, |g| {
        g.retired_pages.as_ref().map(|r| r.sbe as f64)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_RETIRED_DBE", "Total number of retired pages due to double-bit errors.", dc, &ok, |g| {
        g.retired_pages.as_ref().map(|r| r.dbe as f64)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_RETIRED_PENDING", "Total number of pages pending retirement.", dc, &ok, |g| {
        g.retired_pages.as_ref().map(|r| if r.pending { 1.0 } else { 0.0 })
    })?;
    per_gpu(enc, "DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed", g_, &ok, |g| {
        g.row_remap.as_ref().map(|r| if r.failure { 1.0 } else { 0.0 })
    })?;
    per_gpu(
        enc,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for uncorrectable errors",
        dc,
        &ok,
        |g| g.row_remap.as_ref().map(|r| r.uncorrectable as f64),
    )?;
    per_gpu(
        enc,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for correctable errors",
        dc,
        &ok,
        |g| g.row_remap.as_ref().map(|r| r.correctable as f64),
    )?;
    per_gpu(enc, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.", dc, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.replay_count).map(|v| v as f64)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_PCIE_LINK_GEN", "PCIe current link generation.", g_, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.generation).map(f64::from)
    })?;
    per_gpu(enc, "DCGM_FI_DEV_PCIE_LINK_WIDTH", "PCIe current link width.", g_, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.width).map(f64::from)
    })?;

    // NVLink totals per GPU, summed over links.
    let nvl_sum = |g: &GpuSample, f: &dyn Fn(&faultline_proto::NvLinkSample) -> Option<u64>| -> Option<f64> {
        let vals: Vec<u64> = g.nvlinks.iter().filter_map(f).collect();
        (!vals.is_empty()).then(|| vals.iter().sum::<u64>() as f64)
    };
    per_gpu(
        enc,
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "Total number of NVLink flow-control CRC errors.",
        dc,
        &ok,
        |g| nvl_sum(g, &|l| l.crc_flit_errors),
    )?;
    per_gpu(
        enc,
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        "Total number of NVLink data CRC errors.",
        dc,
        &ok,
        |g| nvl_sum(g, &|l| l.crc_data_errors),
    )?;
    per_gpu(enc, "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "Total number of NVLink retries.", dc, &ok, |g| {
        nvl_sum(g, &|l| l.replay_errors)
    })?;
    per_gpu(
        enc,
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        "Total number of NVLink recovery errors.",
        dc,
        &ok,
        |g| nvl_sum(g, &|l| l.recovery_errors),
    )?;

    // faultline_gpu_*: what DCGM lacks.
    family(
        enc,
        "faultline_gpu_xid_errors",
        "XID errors seen on this GPU since the agent started, by code.",
        MetricType::Counter,
        &gpus,
        |l, g| {
            xids.totals
                .range((g.index, 0)..=(g.index, u32::MAX))
                .map(|((_, x), n)| (with(l, &[("xid", x.to_string())]), *n as f64))
                .collect()
        },
    )?;
    per_gpu(
        enc,
        "faultline_gpu_lost",
        "1 when the GPU is lost (fell off the bus, or gone from NVML's list).",
        g_,
        &gpus,
        |g| Some(if g.state == GpuState::Lost { 1.0 } else { 0.0 }),
    )?;
    per_gpu(enc, "faultline_gpu_unresponsive", "1 when NVML calls for the GPU time out (hung GSP).", g_, &gpus, |g| {
        Some(if g.state == GpuState::Unresponsive { 1.0 } else { 0.0 })
    })?;
    family(
        enc,
        "faultline_gpu_throttle_reason",
        "1 while the GPU's clocks are held down for this reason.",
        g_,
        &ok,
        |l, g| {
            let Some(mask) = g.throttle_mask else { return Vec::new() };
            THROTTLE_REASONS
                .iter()
                .map(|(bit, name)| (with(l, &[("reason", name.to_string())]), if mask & bit != 0 { 1.0 } else { 0.0 }))
                .collect()
        },
    )?;
    family(enc, "faultline_gpu_nvlink_up", "1 when the NVLink link is active.", g_, &ok, |l, g| {
        g.nvlinks.iter().map(|n| (with(l, &[("link", n.link.to_string())]), if n.active { 1.0 } else { 0.0 })).collect()
    })?;
    for (name, help, pick) in [
        ("faultline_gpu_nvlink_crc_errors", "NVLink CRC errors (flit + data) on this link.", 0usize),
        ("faultline_gpu_nvlink_replay_errors", "NVLink replays on this link.", 1),
        ("faultline_gpu_nvlink_recovery_errors", "NVLink recoveries on this link.", 2),
    ] {
        family(enc, name, help, MetricType::Counter, &ok, |l, g| {
            g.nvlinks
                .iter()
                .filter_map(|n| {
                    let v = [n.crc_errors, n.replay_errors, n.recovery_errors][pick]?;
                    Some((with(l, &[("link", n.link.to_string())]), v as f64))
                })
                .collect()
        })?;
    }
    per_gpu(enc, "faultline_gpu_pcie_link_width", "PCIe link width the GPU runs at now.", g_, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.width).map(f64::from)
    })?;
    per_gpu(enc, "faultline_gpu_pcie_link_width_max", "PCIe link width the GPU is capable of.", g_, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.max_width).map(f64::from)
    })?;
    per_gpu(enc, "faultline_gpu_pcie_link_gen_max", "PCIe generation the GPU is capable of.", g_, &ok, |g| {
        g.pcie.as_ref().and_then(|p| p.max_generation).map(f64::from)
    })?;
    per_gpu(enc, "faultline_gpu_power_limit_watts", "Enforced power limit, watts.", g_, &ok, |g| g.power_limit_w)?;
    per_gpu(enc, "faultline_gpu_sm_clock_max_hertz", "Highest SM clock the GPU can run, hertz.", g_, &ok, |g| {
        g.sm_clock_max_mhz.map(f64::from)
    })?;
    family(
        enc,
        "faultline_gpu_ecc_sram_uncorrectable_errors",
        "Uncorrectable SRAM (on-chip) ECC errors, volatile.",
        MetricType::Counter,
        &ok,
        |l, g| g.ecc.sram_uncorrectable.map(|v| (l.clone(), v as f64)).into_iter().collect(),
    )?;
    per_gpu(
        enc,
        "faultline_gpu_row_remap_pending",
        "1 when remapped rows wait for a GPU reset to take effect.",
        g_,
        &ok,
        |g| g.row_remap.as_ref().map(|r| if r.pending { 1.0 } else { 0.0 }),
    )?;
    family(
        enc,
        "faultline_gpu_query_not_supported",
        "1 for each NVML query this GPU answered NotSupported (its value is unknown, not zero).",
        g_,
        &ok,
        |l, g| g.not_supported.iter().map(|q| (with(l, &[("query", q.clone())]), 1.0)).collect(),
    )?;
    family(
        enc,
        "faultline_gpu_clock_event_seconds",
        "Time the clocks were held down since driver load, by reason (NVML clocks-event counters).",
        MetricType::Counter,
        &ok,
        |l, g| {
            g.clock_event_ns.iter().map(|(r, ns)| (with(l, &[("reason", r.to_string())]), *ns as f64 / 1e9)).collect()
        },
    )?;
    family(
        enc,
        "faultline_gpu_nvml_error",
        "1 while NVML answers this GPU with an error, by NVML's words (Unknown Error, GPU is lost, Timeout).",
        g_,
        &gpus,
        |l, g| g.nvml_error.iter().map(|e| (with(l, &[("error", e.clone())]), 1.0)).collect(),
    )?;
    per_gpu(
        enc,
        "faultline_gpu_pci_present",
        "1 while the PCI function of a GPU that answers with an error is still in sysfs, 0 once it is gone.",
        g_,
        &gpus,
        |g| g.pci_present.map(|p| if p { 1.0 } else { 0.0 }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn report() -> NodeReport {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "node": "node-7", "agent_version": "t", "seq": 1, "timestamp_ms": 1, "interval_ms": 1000,
            "gpus": [
                {"index": 0, "uuid": "GPU-a", "name": "NVIDIA H100 80GB HBM3", "serial": null, "pci_bus_id": "00000000:18:00.0",
                 "util_gpu_pct": 97.0, "util_mem_pct": 40.0, "mem_total_bytes": 85_520_809_984u64, "mem_used_bytes": 1_048_576,
                 "mem_free_bytes": 85_519_761_408u64, "temp_c": 71.0, "mem_temp_c": 80.0, "power_w": 650.5, "power_limit_w": 700.0,
                 "energy_mj": 5, "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "mem_clock_mhz": 2619, "mem_clock_max_mhz": 2619,
                 "throttle_mask": 68, "throttle_reasons": ["sw_power_cap", "hw_thermal_slowdown"],
                 "ecc": {"sbe_volatile": 3, "dbe_volatile": 0, "sbe_aggregate": 9, "dbe_aggregate": 1, "sram_uncorrectable": 0},
                 "row_remap": {"correctable": 1, "uncorrectable": 2, "pending": true, "failure": false},
                 "pcie": {"generation": 4, "max_generation": 5, "width": 8, "max_width": 16, "replay_count": 12},
                 "nvlinks": [{"link": 0, "active": true, "crc_errors": 5, "replay_errors": 1, "recovery_errors": 0},
                             {"link": 1, "active": false, "crc_errors": 2, "replay_errors": 0, "recovery_errors": 3}]},
                {"index": 1, "uuid": "GPU-b", "name": "NVIDIA H100 80GB HBM3", "serial": null, "pci_bus_id": "00000000:2A:00.0", "state": "lost",
                 "util_gpu_pct": null, "util_mem_pct": null, "mem_total_bytes": null, "mem_used_bytes": null, "mem_free_bytes": null,
                 "temp_c": null, "mem_temp_c": null, "power_w": null, "power_limit_w": null, "energy_mj": null, "sm_clock_mhz": null,
                 "sm_clock_max_mhz": null, "mem_clock_mhz": null, "mem_clock_max_mhz": null, "throttle_mask": null}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn dcgm_compat_off_exports_no_dcgm_family_and_keeps_ours() {
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(report())));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(
            GpuMetrics::new(snap, XidTally::from(faultline_proto::EventSource::Kmsg)).with_dcgm_compat(false),
        ));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(!out.contains("DCGM_FI_"), "{out}");
        assert!(out.contains("faultline_gpu_lost{"), "{out}");
        assert!(out.contains("faultline_gpu_pcie_link_width{"), "{out}");
    }

    #[test]
    fn dcgm_names_labels_and_values() {
        let mut r = report();
        r.gpus[0].index = 40;
        r.gpus[1].index = 41;
        r.gpus[0].clock_event_ns.insert("sw_power_cap".into(), 2_500_000_000);
        r.gpus[1].nvml_error = Some("GPU is lost".into());
        r.gpus[1].pci_present = Some(false);
        for (l, flit, data) in [(0, 4, 1), (1, 2, 0)] {
            r.gpus[0].nvlinks[l].crc_flit_errors = Some(flit);
            r.gpus[0].nvlinks[l].crc_data_errors = Some(data);
        }
        let xid = |code, count| faultline_proto::Event {
            source: faultline_proto::EventSource::Kmsg,
            component: Some("gpu40".into()),
            xid: Some(code),
            count,
            ..Default::default()
        };
        let tally = XidTally::from(faultline_proto::EventSource::Kmsg);
        let mut with_events = r.clone();
        with_events.events = vec![xid(79, 1), xid(79, 2), xid(13, 1)];
        tally.count(&with_events);
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(r)));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(GpuMetrics::new(snap, tally)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        let l0 = r#"gpu="40",UUID="GPU-a",pci_bus_id="00000000:18:00.0",device="nvidia40",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7""#;
        for want in [
            format!("DCGM_FI_DEV_GPU_UTIL{{{l0}}} 97.0"),
            format!("DCGM_FI_DEV_FB_USED{{{l0}}} 1.0"),
            format!("DCGM_FI_DEV_GPU_TEMP{{{l0}}} 71.0"),
            format!("DCGM_FI_DEV_MEMORY_TEMP{{{l0}}} 80.0"),
            format!("DCGM_FI_DEV_POWER_USAGE{{{l0}}} 650.5"),
            format!("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{l0}}} 5.0"),
            format!("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{l0}}} 68.0"),
            format!("DCGM_FI_DEV_XID_ERRORS{{{l0}}} 13.0"),
            format!("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL{{{l0}}} 1.0"),
            format!("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{l0}}} 2.0"),
            format!("DCGM_FI_DEV_PCIE_REPLAY_COUNTER{{{l0}}} 12.0"),
            format!("DCGM_FI_DEV_PCIE_LINK_GEN{{{l0}}} 4.0"),
            format!("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{l0}}} 6.0"),
            format!("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL{{{l0}}} 1.0"),
            format!("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL{{{l0}}} 3.0"),
            format!("faultline_gpu_xid_errors_total{{{l0},xid=\"79\"}} 3"),
            format!("faultline_gpu_xid_errors_total{{{l0},xid=\"13\"}} 1"),
            format!("faultline_gpu_throttle_reason{{{l0},reason=\"sw_power_cap\"}} 1.0"),
            format!("faultline_gpu_throttle_reason{{{l0},reason=\"gpu_idle\"}} 0.0"),
            format!("faultline_gpu_nvlink_up{{{l0},link=\"1\"}} 0.0"),
            format!("faultline_gpu_pcie_link_width{{{l0}}} 8.0"),
            format!("faultline_gpu_pcie_link_width_max{{{l0}}} 16.0"),
            format!("faultline_gpu_lost{{{l0}}} 0.0"),
            format!("faultline_gpu_clock_event_seconds_total{{{l0},reason=\"sw_power_cap\"}} 2.5"),
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge".to_string(),
            "# TYPE faultline_gpu_xid_errors counter".to_string(),
        ] {
            assert!(out.contains(&want), "missing {want}\n{out}");
        }
        assert!(out.contains(r#"faultline_gpu_lost{gpu="41",UUID="GPU-b""#), "{out}");
        assert!(out.contains(r#"faultline_gpu_nvml_error{gpu="41",UUID="GPU-b""#), "{out}");
        assert!(out.contains(r#"error="GPU is lost"} 1.0"#), "{out}");
        assert!(out.contains(r#"faultline_gpu_pci_present{gpu="41",UUID="GPU-b""#), "{out}");
        assert!(!out.contains(r#"DCGM_FI_DEV_GPU_TEMP{gpu="41""#), "a lost GPU has no readings");
        assert!(!out.contains("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total"), "DCGM names are exact");
    }

    #[test]
    fn every_dcgm_name_we_export_is_a_dcgm_exporter_name() {
        // The names dcgm-exporter can emit (its etc/*.csv), plus the four it emits that the CSVs of
        // the version we checked did not list.
        const DCGM_CSV: &str = include_str!("../../tests/data/dcgm-exporter-metrics.csv");
        let mut known: Vec<&str> = DCGM_CSV.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
        known.extend([
            "DCGM_FI_DEV_FB_TOTAL",
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "DCGM_FI_DEV_PCIE_LINK_GEN",
            "DCGM_FI_DEV_PCIE_LINK_WIDTH",
        ]);
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(report())));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(GpuMetrics::new(snap, XidTally::from(faultline_proto::EventSource::Kmsg))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        let mut n = 0;
        for line in out.lines().filter(|l| l.starts_with("# TYPE DCGM_")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(known.contains(&name), "{name} is not a dcgm-exporter metric");
            n += 1;
        }
        assert!(n >= 25, "only {n} DCGM families exported");
    }

    #[test]
    fn driver_version_on_every_gpu_series_and_mig_instances_split_the_framebuffer() {
        let mut r = report();
        r.driver_version = Some("550.54.15".into());
        r.gpus[0].mig = Some(vec![
            faultline_proto::MigInstance {
                gpu_instance_id: 7,
                profile: "1g.10gb".into(),
                mem_total_bytes: Some(10 << 30),
                mem_used_bytes: Some(1 << 30),
                ..Default::default()
            },
            faultline_proto::MigInstance {
                gpu_instance_id: 1,
                profile: "3g.40gb".into(),
                mem_total_bytes: Some(40 << 30),
                mem_used_bytes: Some(0),
                ..Default::default()
            },
        ]);
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(r)));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(GpuMetrics::new(snap, XidTally::from(faultline_proto::EventSource::Kmsg))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        let l0 = r#"gpu="0",UUID="GPU-a",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7",DCGM_FI_DRIVER_VERSION="550.54.15""#;
        for want in [
            format!("DCGM_FI_DEV_GPU_TEMP{{{l0}}} 71.0"),
            format!("faultline_gpu_lost{{{l0}}} 0.0"),
            format!("DCGM_FI_DEV_FB_USED{{{l0},GPU_I_PROFILE=\"1g.10gb\",GPU_I_ID=\"7\"}} 1024.0"),
            format!("DCGM_FI_DEV_FB_FREE{{{l0},GPU_I_PROFILE=\"1g.10gb\",GPU_I_ID=\"7\"}} 9216.0"),
            format!("DCGM_FI_DEV_FB_TOTAL{{{l0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"1\"}} 40960.0"),
        ] {
            assert!(out.contains(&want), "missing {want}\n{out}");
        }
        assert!(
            !out.contains(&format!("DCGM_FI_DEV_FB_USED{{{l0}}}")),
            "no whole-GPU framebuffer beside MIG instances"
        );
        assert!(out.contains(r#"faultline_gpu_lost{gpu="1",UUID="GPU-b",pci_bus_id="00000000:2A:00.0",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7",DCGM_FI_DRIVER_VERSION="550.54.15"}"#), "{out}");
    }

    #[test]
    fn pods_holding_a_gpu_or_a_mig_device_label_its_series() {
        use crate::collect::pod_resources::Owner;
        let mut r = report();
        r.gpus[1].state = faultline_proto::GpuState::Ok;
        r.gpus[1].mig = Some(vec![faultline_proto::MigInstance {
            gpu_instance_id: 3,
            profile: "1g.10gb".into(),
            uuid: "MIG-x".into(),
            mem_total_bytes: Some(10 << 30),
            mem_used_bytes: Some(0),
            ..Default::default()
        }]);
        let owner = |pod: &str| Owner { pod: pod.into(), namespace: "research".into(), container: "trainer".into() };
        let owners = crate::collect::pod_resources::Owners::default();
        owners.write().unwrap().extend([("GPU-a".to_string(), owner("train-0")), ("MIG-x".to_string(), owner("nb-1"))]);
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(Some(r)));
        let mut reg = Registry::default();
        let m = GpuMetrics::new(snap, XidTally::from(faultline_proto::EventSource::Kmsg)).with_pod_owners(owners);
        reg.register_collector(Box::new(m));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7",pod="train-0",namespace="research",container="trainer"}"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"GPU_I_PROFILE="1g.10gb",GPU_I_ID="3",pod="nb-1",namespace="research",container="trainer"} 0.0"#
            ),
            "{out}"
        );
        assert!(!out.contains(r#"UUID="GPU-b",pci_bus_id="00000000:2A:00.0",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7",pod"#), "GPU-b is no pod's as a whole");
    }

    #[test]
    fn no_report_no_output() {
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(None));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(GpuMetrics::new(snap, XidTally::from(faultline_proto::EventSource::Kmsg))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(!out.contains("DCGM"));
    }
}
