//! Decoding and validation of `NodeReport`: every refusal names the field that is wrong.

use crate::id::{ComponentId, valid_host, valid_name};
use crate::report::{limits::*, *};

/// The possible range of every bounded number in a report, shared by the analyzer (which refuses a
/// report outside them) and the agent (which turns an out-of-range reading into null and counts a
/// collector error, so one broken sensor never costs the whole report). Each is `(lo, hi)`,
/// inclusive. The bounds are physical: far beyond any real part, so only a broken sensor or a
/// misread register lands outside.
pub mod ranges {
    /// Percentages (utilisation, CPU).
    pub const PCT: (f64, f64) = (0.0, 100.0);
    /// Load averages: a million runnable tasks is beyond any host.
    pub const LOAD: (f64, f64) = (0.0, 1e6);
    /// Fan speed, rpm: the fastest server fans turn at about 30,000 rpm.
    pub const FAN_RPM: (f64, f64) = (0.0, 1e6);
    /// Host sensor temperature, °C.
    pub const HOST_TEMP_C: (f64, f64) = (-100.0, 300.0);
    /// GPU and GPU-memory temperature, °C.
    pub const GPU_TEMP_C: (f64, f64) = (-50.0, 250.0);
    /// GPU power and power limit, W: the largest GPU boards draw about 1,200 W.
    pub const GPU_POWER_W: (f64, f64) = (0.0, 10_000.0);
    /// NIC link rate, Gb/s.
    pub const NIC_RATE_GBPS: (f64, f64) = (0.0, 100_000.0);
    /// A rank's CPU seconds.
    pub const CPU_SECONDS: (f64, f64) = (0.0, 1e12);
    /// Step times, ms (a million seconds per step is no training job).
    pub const STEP_MS: (f64, f64) = (0.0, 1e9);
    /// Widest PCIe link and highest PCIe generation.
    pub const PCIE_MAX_WIDTH: u32 = 64;
    pub const PCIE_MAX_GENERATION: u32 = 16;
    /// Longest `interval_ms`: one hour.
    pub const MAX_INTERVAL_MS: u64 = 3_600_000;

    /// Whether `v` lies in `r` (and is finite).
    pub fn contains(r: (f64, f64), v: f64) -> bool {
        v.is_finite() && v >= r.0 && v <= r.1
    }
}
use ranges::*;

/// Why a report was refused. `field` is a path like `gpus[3].temp_c`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("malformed report at `{field}`: {message}")]
    Decode { field: String, message: String },
    #[error("invalid report field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl ReportError {
    pub fn field(&self) -> &str {
        match self {
            Self::Decode { field, .. } | Self::Invalid { field, .. } => field,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ReportError {
    ReportError::Invalid { field: field.into(), message: message.into() }
}

impl NodeReport {
    /// Parse JSON and validate. Errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let report: NodeReport = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            ReportError::Decode {
                field: if path == "." { "(body)".to_string() } else { path },
                message: e.into_inner().to_string(),
            }
        })?;
        // Only whitespace may follow the report: `{…}}` or `{…}{…}` is not one report.
        de.end().map_err(|e| ReportError::Decode { field: "(body)".to_string(), message: e.to_string() })?;
        report.validate()?;
        Ok(report)
    }

    /// Check everything serde cannot: versions, ranges, finiteness, list sizes, names. A field's
    /// path is written out only when it is refused, so a good report costs no allocation.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(invalid(
                "schema_version",
                format!("unknown schema version {} (this analyzer speaks {SCHEMA_VERSION})", self.schema_version),
            ));
        }
        if !valid_host(&self.node) {
            return Err(invalid(
                "node",
                "must be a non-empty host name without '/', ':', spaces, control or bidi characters, at most 128 bytes",
            ));
        }
        str_len(&|| "agent_version".into(), &self.agent_version)?;
        if let Some(d) = &self.driver_version {
            str_len(&|| "driver_version".into(), d)?;
        }
        if self.timestamp_ms <= 0 {
            return Err(invalid("timestamp_ms", "must be a positive Unix time in milliseconds"));
        }
        if self.interval_ms == 0 || self.interval_ms > MAX_INTERVAL_MS {
            return Err(invalid("interval_ms", "must be between 1 ms and 1 hour"));
        }
        if let Some(h) = &self.host {
            validate_host(h)?;
        }
        max_len(&|| "gpus".into(), self.gpus.len(), MAX_GPUS)?;
        let mut seen = Seen::new(self.gpus.len());
        for (i, g) in self.gpus.iter().enumerate() {
            if seen.again(&self.gpus[..i], g.index, |h| h.index) {
                return Err(invalid(format!("gpus[{i}].index"), format!("GPU index {} appears twice", g.index)));
            }
            validate_gpu(i, g)?;
        }
        max_len(&|| "nics".into(), self.nics.len(), MAX_NICS)?;
        let mut seen = Seen::new(self.nics.len());
        for (i, n) in self.nics.iter().enumerate() {
            let f = |k: &str| format!("nics[{i}].{k}");
            if !valid_name(&n.name) {
                return Err(invalid(f("name"), "must be a non-empty name without '/' or spaces"));
            }
            if seen.again(&self.nics[..i], n.name.as_str(), |m| m.name.as_str()) {
                return Err(invalid(f("name"), format!("NIC {} appears twice", n.name)));
            }
            max_len(&|| f("counters"), n.counters.len(), MAX_COUNTERS_PER_NIC)?;
            if let Some(r) = n.rate_gbps {
                range(&|| f("rate_gbps"), r, NIC_RATE_GBPS)?;
            }
            if let Some(r) = n.max_rate_gbps {
                range(&|| f("max_rate_gbps"), r, NIC_RATE_GBPS)?;
            }
        }
        max_len(&|| "disks".into(), self.disks.len(), MAX_DISKS)?;
        for (i, d) in self.disks.iter().enumerate() {
            if !valid_name(&d.device) {
                return Err(invalid(
                    format!("disks[{i}].device"),
                    "must be a non-empty device name without '/' or spaces",
                ));
            }
            if let (Some(t), Some(a)) = (d.total_bytes, d.available_bytes)
                && a > t
            {
                return Err(invalid(format!("disks[{i}].available_bytes"), "is larger than total_bytes"));
            }
        }
        max_len(&|| "jobs".into(), self.jobs.len(), MAX_JOBS)?;
        for (i, j) in self.jobs.iter().enumerate() {
            if !valid_name(&j.job_id) {
                return Err(invalid(format!("jobs[{i}].job_id"), "must be a non-empty id without '/' or spaces"));
            }
            max_len(&|| format!("jobs[{i}].ranks"), j.ranks.len(), MAX_RANKS_PER_JOB)?;
            for (k, r) in j.ranks.iter().enumerate() {
                let f = |x: &str| format!("jobs[{i}].ranks[{k}].{x}");
                if let Some(c) = r.cpu_seconds {
                    range(&|| f("cpu_seconds"), c, CPU_SECONDS)?;
                }
                if r.gpus.len() > MAX_GPUS {
                    return Err(invalid(f("gpus"), format!("has {} entries, more than {MAX_GPUS}", r.gpus.len())));
                }
                if let Some(p) = &r.progress {
                    for (name, v) in [
                        ("step_time_ms", p.step_time_ms),
                        ("step_time_avg_ms", p.step_time_avg_ms),
                        ("compute_ms", p.compute_ms),
                    ] {
                        if let Some(v) = v {
                            range(&|| f(&format!("progress.{name}")), v, STEP_MS)?;
                        }
                    }
                    for (name, v) in [("loss", p.loss), ("grad_norm", p.grad_norm)] {
                        if let Some(v) = v {
                            finite(&|| f(&format!("progress.{name}")), v)?;
                        }
                    }
                }
            }
        }
        max_len(&|| "events".into(), self.events.len(), MAX_EVENTS)?;
        for (i, e) in self.events.iter().enumerate() {
            let f = |k: &str| format!("events[{i}].{k}");
            if e.class == crate::EventClass::None {
                return Err(invalid(f("class"), "\"none\" is the classifier's word for a benign line, not an event"));
            }
            if e.ts_ms <= 0 {
                return Err(invalid(f("ts_ms"), "must be a positive Unix time in milliseconds"));
            }
            if e.count == 0 {
                return Err(invalid(f("count"), "must be at least 1"));
            }
            str_len(&|| f("message"), &e.message)?;
            if let Some(c) = e.component.as_deref().filter(|c| !c.is_empty()) {
                event_component("", &self.node, c).map_err(|e| at(e, f("component")))?;
            }
            if let Some(d) = &e.device {
                str_len(&|| f("device"), d)?;
            }
            if let Some(c) = &e.collective {
                for (k, v) in c.strings() {
                    if let Some(v) = v {
                        str_len(&|| f(&format!("collective.{k}")), v)?;
                    }
                }
            }
        }
        validate_probes(&self.probes)?;
        Ok(())
    }
}

/// The keys of a list seen so far, to find one that appears twice. Lists are short (the limits
/// allow 64 GPUs): comparing with the earlier entries costs less than building a set, and only a
/// long list gets one.
struct Seen<K>(Option<std::collections::BTreeSet<K>>);

impl<K: Ord + Copy> Seen<K> {
    fn new(len: usize) -> Self {
        Seen((len > 32).then(std::collections::BTreeSet::new))
    }
    /// Whether `k`, the key of the entry after `earlier`, is the key of an earlier entry.
    fn again<'a, T>(&mut self, earlier: &'a [T], k: K, key: impl Fn(&'a T) -> K) -> bool {
        match &mut self.0 {
            Some(set) => !set.insert(k),
            None => earlier.iter().any(|x| key(x) == k),
        }
    }
}

/// `e` naming `field`.
fn at(e: ReportError, field: String) -> ReportError {
    match e {
        ReportError::Decode { message, .. } => ReportError::Decode { field, message },
        ReportError::Invalid { message, .. } => ReportError::Invalid { field, message },
    }
}

/// A field's path, written out only when a refusal names it.
type Field<'a> = &'a dyn Fn() -> String;

fn validate_host(h: &HostSample) -> Result<(), ReportError> {
    for (name, v) in [("host.cpu_util_pct", h.cpu_util_pct), ("host.cpu_non_job_pct", h.cpu_non_job_pct)] {
        if let Some(v) = v {
            range(&|| name.into(), v, PCT)?;
        }
    }
    for (name, v) in [("host.load1", h.load1), ("host.load5", h.load5), ("host.load15", h.load15)] {
        if let Some(v) = v {
            range(&|| name.into(), v, LOAD)?;
        }
    }
    if let (Some(t), Some(u)) = (h.mem_total_bytes, h.mem_used_bytes)
        && u > t
    {
        return Err(invalid("host.mem_used_bytes", "is larger than mem_total_bytes"));
    }
    max_len(&|| "host.fans".into(), h.fans.len(), MAX_FANS_OR_TEMPS)?;
    max_len(&|| "host.temps".into(), h.temps.len(), MAX_FANS_OR_TEMPS)?;
    for (i, fan) in h.fans.iter().enumerate() {
        str_len(&|| format!("host.fans[{i}].name"), &fan.name)?;
        if let Some(r) = fan.rpm {
            range(&|| format!("host.fans[{i}].rpm"), r, FAN_RPM)?;
        }
    }
    for (i, t) in h.temps.iter().enumerate() {
        str_len(&|| format!("host.temps[{i}].name"), &t.name)?;
        range(&|| format!("host.temps[{i}].celsius"), t.celsius, HOST_TEMP_C)?;
    }
    Ok(())
}

/// GPU `i` of the report (`gpus[i]`).
fn validate_gpu(i: usize, g: &GpuSample) -> Result<(), ReportError> {
    let f = |k: &str| format!("gpus[{i}].{k}");
    for (name, v) in
        [("util_gpu_pct", g.util_gpu_pct), ("util_mem_pct", g.util_mem_pct), ("tensor_active_pct", g.tensor_active_pct)]
    {
        if let Some(v) = v {
            range(&|| f(name), v, PCT)?;
        }
    }
    for (name, v) in [("temp_c", g.temp_c), ("mem_temp_c", g.mem_temp_c)] {
        if let Some(v) = v {
            range(&|| f(name), v, GPU_TEMP_C)?;
        }
    }
    for (name, v) in [("power_w", g.power_w), ("power_limit_w", g.power_limit_w)] {
        if let Some(v) = v {
            range(&|| f(name), v, GPU_POWER_W)?;
        }
    }
    if let (Some(t), Some(u)) = (g.mem_total_bytes, g.mem_used_bytes)
        && u > t
    {
        return Err(invalid(f("mem_used_bytes"), "is larger than mem_total_bytes"));
    }
    if let Some(p) = &g.pcie {
        if let (Some(c), Some(m)) = (p.width, p.max_width)
            && (c > PCIE_MAX_WIDTH || m > PCIE_MAX_WIDTH)
        {
            return Err(invalid(f("pcie.width"), "PCIe width above x64 is impossible"));
        }
        if let (Some(c), Some(m)) = (p.generation, p.max_generation)
            && (c > PCIE_MAX_GENERATION || m > PCIE_MAX_GENERATION)
        {
            return Err(invalid(f("pcie.generation"), "PCIe generation above 16 is impossible"));
        }
    }
    max_len(&|| f("nvlinks"), g.nvlinks.len(), MAX_NVLINKS_PER_GPU)?;
    max_len(&|| f("processes"), g.processes.len(), MAX_PROCESSES_PER_GPU)?;
    max_len(&|| f("throttle_reasons"), g.throttle_reasons.len(), 64)?;
    str_len(&|| f("name"), &g.name)?;
    str_len(&|| f("uuid"), &g.uuid)?;
    if let Some(mig) = &g.mig {
        max_len(&|| f("mig"), mig.len(), MAX_MIG_PER_GPU)?;
        for (j, m) in mig.iter().enumerate() {
            str_len(&|| f(&format!("mig[{j}].profile")), &m.profile)?;
            str_len(&|| f(&format!("mig[{j}].uuid")), &m.uuid)?;
        }
    }
    Ok(())
}

/// An event's `component` is the part of a component id after `<node>/`: `gpu3`, `gpu3/nvlink1`,
/// `nic:mlx5_0`, `disk:nvme0n1` or `agent`, with indexes inside the report limits (an event naming
/// `gpu9999` would invent a GPU the node cannot have).
pub fn event_component(field: &str, node: &str, c: &str) -> Result<(), ReportError> {
    let id: ComponentId = format!("{node}/{c}").parse().map_err(|e: crate::IdError| invalid(field, e.reason))?;
    match id {
        ComponentId::Gpu { index, .. } | ComponentId::NvLink { gpu: index, .. } if index as usize >= MAX_GPUS => {
            Err(invalid(field, format!("GPU index {index} is not below the limit of {MAX_GPUS} GPUs per node")))
        }
        ComponentId::NvLink { link, .. } if link as usize >= MAX_NVLINKS_PER_GPU => Err(invalid(
            field,
            format!("NVLink index {link} is not below the limit of {MAX_NVLINKS_PER_GPU} links per GPU"),
        )),
        ComponentId::Node { .. } => Err(invalid(field, "names the node itself; leave it empty instead")),
        _ => Ok(()),
    }
}

fn finite(field: Field<'_>, v: f64) -> Result<(), ReportError> {
    if v.is_finite() { Ok(()) } else { Err(invalid(field(), "must be a finite number")) }
}

fn range(field: Field<'_>, v: f64, (lo, hi): (f64, f64)) -> Result<(), ReportError> {
    finite(field, v)?;
    if v < lo || v > hi {
        return Err(invalid(field(), format!("{v} is outside the possible range {lo}..={hi}")));
    }
    Ok(())
}

fn max_len(field: Field<'_>, n: usize, max: usize) -> Result<(), ReportError> {
    if n > max {
        return Err(invalid(field(), format!("has {n} entries, more than the limit of {max}")));
    }
    Ok(())
}

fn str_len(field: Field<'_>, s: &str) -> Result<(), ReportError> {
    if s.len() > MAX_STRING {
        return Err(invalid(field(), format!("is {} bytes, more than the limit of {MAX_STRING}", s.len())));
    }
    Ok(())
}

/// Checks a report's probe list (`crate::probe`): size, names, addresses, counts (`received <= sent`) and times.
pub fn validate_probes(probes: &[crate::probe::ProbeSample]) -> Result<(), ReportError> {
    use crate::probe::{MAX_ADDR, MAX_PROBES, MAX_RTT_US, MAX_SENT};
    if probes.len() > MAX_PROBES {
        return Err(invalid("probes", format!("has {} entries, more than the limit of {MAX_PROBES}", probes.len())));
    }
    for (i, p) in probes.iter().enumerate() {
        let f = |k: &str| format!("probes[{i}].{k}");
        if !valid_host(&p.peer) {
            return Err(invalid(f("peer"), "must be a node name"));
        }
        if !valid_name(&p.iface) {
            return Err(invalid(f("iface"), "must be a non-empty NIC name without '/' or spaces"));
        }
        for (k, a) in [("local_addr", &p.local_addr), ("peer_addr", &p.peer_addr)] {
            if a.is_empty() || a.len() > MAX_ADDR || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(f(k), "must be an address of at most 64 bytes without spaces"));
            }
        }
        if p.sent > MAX_SENT {
            return Err(invalid(f("sent"), format!("{} is more than the limit of {MAX_SENT}", p.sent)));
        }
        if p.received > p.sent {
            return Err(invalid(f("received"), format!("{} replies to {} probes", p.received, p.sent)));
        }
        for (k, v) in [("rtt_p50_us", p.rtt_p50_us), ("rtt_max_us", p.rtt_max_us)] {
            if v.is_some_and(|v| v > MAX_RTT_US) {
                return Err(invalid(f(k), format!("is more than {MAX_RTT_US} µs")));
            }
        }
        if let (Some(a), Some(b)) = (p.rtt_p50_us, p.rtt_max_us)
            && a > b
        {
            return Err(invalid(f("rtt_p50_us"), "is larger than rtt_max_us"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use crate::probe::{MAX_PROBES, ProbeSample};

    fn ok() -> ProbeSample {
        ProbeSample {
            peer: "node-2".into(),
            iface: "mlx5_0".into(),
            local_addr: "10.0.0.1".into(),
            peer_addr: "10.0.0.2".into(),
            sent: 10,
            received: 9,
            rtt_p50_us: Some(40),
            rtt_max_us: Some(90),
        }
    }

    #[test]
    fn sane_probe_samples_pass() {
        assert!(validate_probes(&[ok()]).is_ok());
    }

    #[test]
    fn impossible_samples_are_refused_with_the_field() {
        let e = validate_probes(&[ok(), ProbeSample { received: 11, ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[1].received");
        let e = validate_probes(&[ProbeSample { peer: "a:b".into(), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].peer");
        let e = validate_probes(&[ProbeSample { peer_addr: "".into(), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].peer_addr");
        let e = validate_probes(&[ProbeSample { rtt_p50_us: Some(100), ..ok() }]).unwrap_err();
        assert_eq!(e.field(), "probes[0].rtt_p50_us");
        let e = validate_probes(&vec![ok(); MAX_PROBES + 1]).unwrap_err();
        assert_eq!(e.field(), "probes");
    }
}
