//! The last pass over a report before it is pushed: every value the analyzer would refuse is
//! turned into null (or the entry dropped, where there is nothing to null), and counted as an error
//! of the collector that produced it. One broken sensor (a fan reading 2,000,000 rpm, a GPU power
//! register read as 4,294,967 W) must never get the whole report refused, or a lost GPU reported in
//! the same report would go unseen.
//!
//! The limits are the analyzer's own: `faultline_proto::validate::ranges` and
//! `faultline_proto::limits`, shared by both sides.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use faultline_proto::id::valid_name;
use faultline_proto::limits::*;
use faultline_proto::validate::ranges::{self, *};
use faultline_proto::{EventClass, NodeReport};

/// Distinct problems logged before only counting goes on.
const MAX_LOGGED: usize = 256;

/// Counts per collector, across reports (the report's `collector_errors` are cumulative).
#[derive(Debug, Default)]
pub struct Sanitizer {
    counts: BTreeMap<&'static str, u64>,
    logged: HashSet<String>,
}

/// One cycle's findings: (collector, field path, what was wrong).
type Found = Vec<(&'static str, String, String)>;

fn opt(found: &mut Found, who: &'static str, field: String, v: &mut Option<f64>, r: (f64, f64)) {
    if let Some(x) = *v
        && !ranges::contains(r, x)
    {
        found.push((who, field, format!("{x} is outside {}..={}", r.0, r.1)));
        *v = None;
    }
}

fn finite(found: &mut Found, who: &'static str, field: String, v: &mut Option<f64>) {
    if let Some(x) = *v
        && !x.is_finite()
    {
        found.push((who, field, format!("{x} is not finite")));
        *v = None;
    }
}

fn cut(found: &mut Found, who: &'static str, field: String, s: &mut String) {
    if s.len() > MAX_STRING {
        found.push((who, field, format!("{} bytes, more than {MAX_STRING}", s.len())));
        let mut end = MAX_STRING;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn cap<T>(found: &mut Found, who: &'static str, field: &str, v: &mut Vec<T>, max: usize) {
    if v.len() > max {
        found.push((who, field.to_string(), format!("{} entries, more than {max}", v.len())));
        v.truncate(max);
    }
}

impl Sanitizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `r` acceptable to the analyzer and adds what was fixed to `r.collector_errors`.
    /// Returns how many values were fixed in this report.
    pub fn apply(&mut self, r: &mut NodeReport) -> usize {
        let mut found: Found = Vec::new();
        let f = &mut found;
        if let Some(h) = &mut r.host {
            opt(f, "host", "host.cpu_util_pct".into(), &mut h.cpu_util_pct, PCT);
            opt(f, "host", "host.cpu_non_job_pct".into(), &mut h.cpu_non_job_pct, PCT);
            opt(f, "host", "host.load1".into(), &mut h.load1, LOAD);
            opt(f, "host", "host.load5".into(), &mut h.load5, LOAD);
            opt(f, "host", "host.load15".into(), &mut h.load15, LOAD);
            if let (Some(t), Some(u)) = (h.mem_total_bytes, h.mem_used_bytes)
                && u > t
            {
                f.push(("host", "host.mem_used_bytes".into(), "larger than mem_total_bytes".into()));
                h.mem_used_bytes = None;
            }
            cap(f, "host", "host.fans", &mut h.fans, MAX_FANS_OR_TEMPS);
            cap(f, "host", "host.temps", &mut h.temps, MAX_FANS_OR_TEMPS);
            for (i, fan) in h.fans.iter_mut().enumerate() {
                cut(f, "host", format!("host.fans[{i}].name"), &mut fan.name);
                opt(f, "host", format!("host.fans[{i}].rpm"), &mut fan.rpm, FAN_RPM);
            }
            let before = h.temps.len();
            h.temps.retain(|t| ranges::contains(HOST_TEMP_C, t.celsius));
            if h.temps.len() < before {
                f.push((
                    "host",
                    "host.temps".into(),
                    format!("{} readings outside the possible range", before - h.temps.len()),
                ));
            }
            for (i, t) in h.temps.iter_mut().enumerate() {
                cut(f, "host", format!("host.temps[{i}].name"), &mut t.name);
            }
        }
        cap(f, "gpu", "gpus", &mut r.gpus, MAX_GPUS);
        let mut seen = BTreeSet::new();
        let before = r.gpus.len();
        r.gpus.retain(|g| seen.insert(g.index));
        if r.gpus.len() < before {
            f.push(("gpu", "gpus".into(), "a GPU index appeared twice".into()));
        }
        for (i, g) in r.gpus.iter_mut().enumerate() {
            let p = format!("gpus[{i}]");
            opt(f, "gpu", format!("{p}.util_gpu_pct"), &mut g.util_gpu_pct, PCT);
            opt(f, "gpu", format!("{p}.util_mem_pct"), &mut g.util_mem_pct, PCT);
            opt(f, "gpu", format!("{p}.tensor_active_pct"), &mut g.tensor_active_pct, PCT);
            opt(f, "gpu", format!("{p}.temp_c"), &mut g.temp_c, GPU_TEMP_C);
            opt(f, "gpu", format!("{p}.mem_temp_c"), &mut g.mem_temp_c, GPU_TEMP_C);
            opt(f, "gpu", format!("{p}.power_w"), &mut g.power_w, GPU_POWER_W);
            opt(f, "gpu", format!("{p}.power_limit_w"), &mut g.power_limit_w, GPU_POWER_W);
            if let (Some(t), Some(u)) = (g.mem_total_bytes, g.mem_used_bytes)
                && u > t
            {
                f.push(("gpu", format!("{p}.mem_used_bytes"), "larger than mem_total_bytes".into()));
                g.mem_used_bytes = None;
            }
            if let Some(l) = &mut g.pcie {
                for (name, v, max) in [
                    ("width", &mut l.width, PCIE_MAX_WIDTH),
                    ("max_width", &mut l.max_width, PCIE_MAX_WIDTH),
                    ("generation", &mut l.generation, PCIE_MAX_GENERATION),
                    ("max_generation", &mut l.max_generation, PCIE_MAX_GENERATION),
                ] {
                    if v.is_some_and(|x| x > max) {
                        f.push(("gpu", format!("{p}.pcie.{name}"), format!("above {max}")));
                        *v = None;
                    }
                }
            }
            cap(f, "gpu", &format!("{p}.nvlinks"), &mut g.nvlinks, MAX_NVLINKS_PER_GPU);
            cap(f, "gpu", &format!("{p}.processes"), &mut g.processes, MAX_PROCESSES_PER_GPU);
            cap(f, "gpu", &format!("{p}.throttle_reasons"), &mut g.throttle_reasons, 64);
            cut(f, "gpu", format!("{p}.name"), &mut g.name);
            cut(f, "gpu", format!("{p}.uuid"), &mut g.uuid);
        }
        cap(f, "net", "nics", &mut r.nics, MAX_NICS);
        let mut names = BTreeSet::new();
        let before = r.nics.len();
        r.nics.retain(|n| valid_name(&n.name) && names.insert(n.name.clone()));
        if r.nics.len() < before {
            f.push(("net", "nics".into(), "a NIC name was not a valid name, or appeared twice".into()));
        }
        for (i, n) in r.nics.iter_mut().enumerate() {
            opt(f, "net", format!("nics[{i}].rate_gbps"), &mut n.rate_gbps, NIC_RATE_GBPS);
            opt(f, "net", format!("nics[{i}].max_rate_gbps"), &mut n.max_rate_gbps, NIC_RATE_GBPS);
            if n.counters.len() > MAX_COUNTERS_PER_NIC {
                f.push(("net", format!("nics[{i}].counters"), "too many counters".into()));
                let keep: Vec<faultline_proto::CounterName> =
                    n.counters.keys().take(MAX_COUNTERS_PER_NIC).cloned().collect();
                n.counters.retain(|k, _| keep.contains(k));
            }
        }
        cap(f, "host", "disks", &mut r.disks, MAX_DISKS);
        let before = r.disks.len();
        r.disks.retain(|d| valid_name(&d.device));
        if r.disks.len() < before {
            f.push(("host", "disks".into(), "a disk device name was not a valid name".into()));
        }
        for (i, d) in r.disks.iter_mut().enumerate() {
            if let (Some(t), Some(a)) = (d.total_bytes, d.available_bytes)
                && a > t
            {
                f.push(("host", format!("disks[{i}].available_bytes"), "larger than total_bytes".into()));
                d.available_bytes = None;
            }
        }
        cap(f, "jobs", "jobs", &mut r.jobs, MAX_JOBS);
        let before = r.jobs.len();
        r.jobs.retain(|j| valid_name(&j.job_id));
        if r.jobs.len() < before {
            f.push(("jobs", "jobs".into(), "a job id was not a valid name".into()));
        }
        for (i, j) in r.jobs.iter_mut().enumerate() {
            cap(f, "jobs", &format!("jobs[{i}].ranks"), &mut j.ranks, MAX_RANKS_PER_JOB);
            for (k, rk) in j.ranks.iter_mut().enumerate() {
                let p = format!("jobs[{i}].ranks[{k}]");
                opt(f, "jobs", format!("{p}.cpu_seconds"), &mut rk.cpu_seconds, CPU_SECONDS);
                cap(f, "jobs", &format!("{p}.gpus"), &mut rk.gpus, MAX_GPUS);
                if let Some(pr) = &mut rk.progress {
                    opt(f, "jobs", format!("{p}.progress.step_time_ms"), &mut pr.step_time_ms, STEP_MS);
                    opt(f, "jobs", format!("{p}.progress.step_time_avg_ms"), &mut pr.step_time_avg_ms, STEP_MS);
                    opt(f, "jobs", format!("{p}.progress.compute_ms"), &mut pr.compute_ms, STEP_MS);
                    finite(f, "jobs", format!("{p}.progress.loss"), &mut pr.loss);
                    finite(f, "jobs", format!("{p}.progress.grad_norm"), &mut pr.grad_norm);
                }
            }
        }
        // Events: a component the analyzer cannot read back becomes node-level (the event stays).
        let node = r.node.clone();
        let ts = r.timestamp_ms;
        r.events.retain(|e| e.class != EventClass::None);
        cap(f, "kmsg", "events", &mut r.events, MAX_EVENTS);
        for (i, e) in r.events.iter_mut().enumerate() {
            if e.ts_ms <= 0 {
                e.ts_ms = ts;
            }
            e.count = e.count.max(1);
            cut(f, "kmsg", format!("events[{i}].message"), &mut e.message);
            if let Some(d) = &mut e.device {
                cut(f, "kmsg", format!("events[{i}].device"), d);
            }
            if let Some(c) = e.component.as_deref().filter(|c| !c.is_empty()) {
                let field = format!("events[{i}].component");
                if let Err(err) = faultline_proto::validate::event_component(&field, &node, c) {
                    f.push(("kmsg", field, err.to_string()));
                    e.component = None;
                }
            }
        }
        let n = found.len();
        for (who, field, what) in found {
            *self.counts.entry(who).or_insert(0) += 1;
            let key = format!("{who}/{field}");
            if self.logged.len() < MAX_LOGGED && self.logged.insert(key) {
                tracing::warn!(collector = who, field = %field, problem = %what, "value the analyzer would refuse sent as null (logged once per field)");
            }
        }
        for (who, c) in &self.counts {
            *r.collector_errors.entry(faultline_proto::counter_name(who)).or_insert(0) += c;
        }
        if let Err(e) = r.validate() {
            tracing::error!(error = %e, "report still invalid after sanitizing; the analyzer will refuse it");
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{FanSample, GpuSample, HostSample};

    #[test]
    fn one_broken_sensor_costs_its_value_not_the_report() {
        let mut r = NodeReport::empty("n1");
        r.timestamp_ms = 1_700_000_000_000;
        r.host = Some(HostSample {
            fans: vec![FanSample { name: "fan1".into(), rpm: Some(2_000_000.0), ..Default::default() }],
            ..Default::default()
        });
        r.gpus.push(GpuSample { index: 0, power_w: Some(4_294_967.0), temp_c: Some(60.0), ..Default::default() });
        let mut lost = faultline_proto::Event::new(r.timestamp_ms, Default::default(), EventClass::GpuLost);
        lost.component = Some("gpu1".into());
        r.events.push(lost);
        let mut bogus = faultline_proto::Event::new(r.timestamp_ms, Default::default(), EventClass::Xid);
        bogus.component = Some("gpu99999".into());
        r.events.push(bogus);
        assert!(r.validate().is_err(), "the analyzer refuses this report as collected");

        let mut s = Sanitizer::new();
        assert_eq!(s.apply(&mut r), 3);
        r.validate().unwrap();
        assert_eq!(r.host.as_ref().unwrap().fans[0].rpm, None);
        assert_eq!(r.gpus[0].power_w, None);
        assert_eq!(r.gpus[0].temp_c, Some(60.0), "the sane readings stay");
        assert_eq!(r.events[0].component.as_deref(), Some("gpu1"), "the lost GPU still goes out");
        assert_eq!(r.events[1].component, None);
        assert_eq!(r.collector_errors.get("host"), Some(&1));
        assert_eq!(r.collector_errors.get("gpu"), Some(&1));
        // Counts are cumulative across reports, like the collectors' own.
        let mut r2 = NodeReport::empty("n1");
        r2.timestamp_ms = 1;
        r2.gpus.push(GpuSample { index: 0, power_w: Some(1e9), ..Default::default() });
        s.apply(&mut r2);
        assert_eq!(r2.collector_errors.get("gpu"), Some(&2));
    }
}
