//! `/metrics`: host, NIC, disk and agent metrics as `faultline_*`, computed at scrape time from the
//! latest report (`Snapshot`) and the agent's own counters. Every series carries `Hostname` (the node
//! name, as dcgm-exporter does) so node and GPU series join on it. Labels are bounded: NIC, fan,
//! sensor, disk and collector names, and raw NIC counter names (at most 512 per NIC by `proto`'s
//! limits).

use std::sync::Arc;

use faultline_proto::{NicKind, NicSample, NodeReport};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::export::{AgentStats, Snapshot};

/// The OpenMetrics content type, served when the scraper's `Accept` asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy)]
enum Value {
    U(u64),
    F(f64),
}

/// One metric family being built for this scrape.
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, &'a str)>, Value)>,
}

impl<'a> Family<'a> {
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Self { name, help, kind: MetricType::Gauge, samples: Vec::new() }
    }
    /// `name` without `_total`: the encoder appends it.
    fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, help, kind: MetricType::Counter, samples: Vec::new() }
    }
    fn f(&mut self, labels: Vec<(&'static str, &'a str)>, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.samples.push((labels, Value::F(v)));
        }
    }
    fn u(&mut self, labels: Vec<(&'static str, &'a str)>, v: Option<u64>) {
        if let Some(v) = v {
            self.samples.push((labels, Value::U(v)));
        }
    }

    fn encode(self, enc: &mut DescriptorEncoder, host: &str) -> Result<(), std::fmt::Error> {
        if self.samples.is_empty() {
            return Ok(());
        }
        let mut me = enc.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (mut labels, v) in self.samples {
            labels.push(("Hostname", host));
            let mut fe = me.encode_family(&labels)?;
            match (self.kind, v) {
                (MetricType::Counter, Value::U(v)) => fe.encode_counter::<NoLabelSet, u64, f64>(&v, None)?,
                (MetricType::Counter, Value::F(v)) => fe.encode_counter::<NoLabelSet, f64, f64>(&v, None)?,
                (_, Value::U(v)) => fe.encode_gauge(&v)?,
                (_, Value::F(v)) => fe.encode_gauge(&v)?,
            }
        }
        Ok(())
    }
}

/// Host, NIC, disk and agent metrics from the latest report.
#[derive(Debug)]
pub struct NodeMetrics {
    snapshot: Snapshot,
    stats: Arc<AgentStats>,
    node: String,
}

impl NodeMetrics {
    /// `node` labels the agent's own metrics before the first report exists.
    pub fn new(snapshot: Snapshot, stats: Arc<AgentStats>, node: String) -> Self {
        Self { snapshot, stats, node }
    }
}

impl Collector for NodeMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let report = guard.as_ref();
        let host = report.map(|r| r.node.as_str()).unwrap_or(&self.node);
        if let Some(r) = report {
            let mut expected = Family::gauge(
                "faultline_node_expected_gpus",
                "GPUs this node should have (configured, or counted at the agent's first start).",
            );
            expected.u(vec![], r.expected_gpus.map(u64::from));
            for f in host_families(r).into_iter().chain(nic_families(r)).chain(disk_families(r)).chain([expected]) {
                f.encode(&mut enc, host)?;
            }
        }
        for f in agent_families(report, &self.stats) {
            f.encode(&mut enc, host)?;
        }
        Ok(())
    }
}

fn host_families(r: &NodeReport) -> Vec<Family<'_>> {
    let Some(h) = &r.host else { return Vec::new() };
    let mut cpu = Family::gauge(
        "faultline_node_cpu_utilization_ratio",
        "Whole-host CPU busy fraction (0-1) over the last interval.",
    );
    cpu.f(vec![], h.cpu_util_pct.map(|p| p / 100.0));
    let mut non_job = Family::gauge(
        "faultline_node_cpu_non_job_utilization_ratio",
        "CPU busy fraction (0-1) of the host spent outside training jobs.",
    );
    non_job.f(vec![], h.cpu_non_job_pct.map(|p| p / 100.0));
    let mut count = Family::gauge("faultline_node_cpus", "Number of logical CPUs.");
    count.u(vec![], h.cpu_count.map(u64::from));
    let mut l1 = Family::gauge("faultline_node_load1", "1-minute load average.");
    l1.f(vec![], h.load1);
    let mut l5 = Family::gauge("faultline_node_load5", "5-minute load average.");
    l5.f(vec![], h.load5);
    let mut l15 = Family::gauge("faultline_node_load15", "15-minute load average.");
    l15.f(vec![], h.load15);
    let mut mt = Family::gauge("faultline_node_memory_total_bytes", "Physical memory.");
    mt.u(vec![], h.mem_total_bytes);
    let mut mu = Family::gauge("faultline_node_memory_used_bytes", "Memory in use (total minus available).");
    mu.u(vec![], h.mem_used_bytes);
    let mut ma =
        Family::gauge("faultline_node_memory_available_bytes", "Memory available for new work (MemAvailable).");
    ma.u(vec![], h.mem_available_bytes);
    let mut st = Family::gauge("faultline_node_swap_total_bytes", "Swap space.");
    st.u(vec![], h.swap_total_bytes);
    let mut su = Family::gauge("faultline_node_swap_used_bytes", "Swap space in use.");
    su.u(vec![], h.swap_used_bytes);
    let mut up = Family::gauge("faultline_node_uptime_seconds", "Seconds since boot.");
    up.u(vec![], h.uptime_s);
    let mut fan = Family::gauge("faultline_node_fan_speed_rpm", "Fan speed from hwmon.");
    let mut fan_min = Family::gauge("faultline_node_fan_min_rpm", "Fan minimum speed threshold from hwmon.");
    let mut fan_alarm = Family::gauge("faultline_node_fan_alarm", "1 when hwmon raises the fan's alarm or fault flag.");
    for f in &h.fans {
        fan.f(vec![("fan", &f.name)], f.rpm);
        fan_min.f(vec![("fan", &f.name)], f.min_rpm);
        fan_alarm.u(vec![("fan", &f.name)], Some(u64::from(f.alarm)));
    }
    let mut temp = Family::gauge("faultline_node_temperature_celsius", "Temperature sensor reading from hwmon.");
    let mut crit =
        Family::gauge("faultline_node_temperature_crit_celsius", "Critical temperature threshold from hwmon.");
    for t in &h.temps {
        temp.f(vec![("sensor", &t.name)], Some(t.celsius));
        crit.f(vec![("sensor", &t.name)], t.crit_celsius);
    }
    let mut ts =
        Family::gauge("faultline_node_report_timestamp_seconds", "When the agent took the latest sample (Unix time).");
    ts.f(vec![], Some(r.timestamp_ms as f64 / 1000.0));
    vec![cpu, non_job, count, l1, l5, l15, mt, mu, ma, st, su, up, fan, fan_min, fan_alarm, temp, crit, ts]
}

/// Whether a NIC is up: an IB/RoCE port is ACTIVE; a netdev's operstate is `up`.
pub fn nic_up(n: &NicSample) -> Option<bool> {
    match (&n.ib_state, &n.operstate) {
        (Some(s), _) => Some(s.eq_ignore_ascii_case("ACTIVE")),
        (None, Some(o)) if o == "unknown" => n.carrier,
        (None, Some(o)) => Some(o == "up"),
        (None, None) => n.carrier,
    }
}

fn nic_families(r: &NodeReport) -> Vec<Family<'_>> {
    let mut info = Family::gauge(
        "faultline_nic_info",
        "NIC identity: kind (infiniband or netdev), netdev, link layer, PCI address.",
    );
    let mut up = Family::gauge("faultline_nic_up", "1 when the link is up (IB port ACTIVE, netdev operstate up).");
    let mut carrier = Family::gauge("faultline_nic_carrier", "1 when the netdev has carrier.");
    let mut changes = Family::counter("faultline_nic_carrier_changes", "Link carrier changes (flaps count twice).");
    let mut speed = Family::gauge(
        "faultline_nic_speed_bytes_per_second",
        "Link rate in bytes per second (IB rate, or netdev speed; 400 Gb/s is 5e10).",
    );
    let mut mtu = Family::gauge("faultline_nic_mtu_bytes", "Netdev MTU.");
    let mut rx =
        Family::counter("faultline_nic_receive_bytes", "Bytes received (IB port data counters, else netdev rx_bytes).");
    let mut tx = Family::counter(
        "faultline_nic_transmit_bytes",
        "Bytes transmitted (IB port data counters, else netdev tx_bytes).",
    );
    let mut rxp = Family::counter("faultline_nic_receive_packets", "Packets received.");
    let mut txp = Family::counter("faultline_nic_transmit_packets", "Packets transmitted.");
    let mut downed = Family::counter(
        "faultline_nic_link_downed",
        "IB link_downed: times the port training failed and the link went down.",
    );
    let mut symbol = Family::counter(
        "faultline_nic_symbol_errors",
        "IB symbol_error: minor link errors seen on the physical lanes.",
    );
    let mut rcv_err =
        Family::counter("faultline_nic_port_rcv_errors", "IB port_rcv_errors: malformed packets received.");
    let mut xmit_wait = Family::counter(
        "faultline_nic_port_xmit_wait",
        "IB port_xmit_wait: ticks with data to send but no credits (congestion).",
    );
    // Raw counters split by unit, so that no family mixes bytes with events (and no name says
    // "counter", which promtool refuses).
    let mut raw_bytes = Family::counter(
        "faultline_nic_raw_bytes",
        "Every raw NIC byte counter by its kernel name (IB port_*_data already converted to bytes).",
    );
    let mut raw = Family::counter(
        "faultline_nic_raw_events",
        "Every other raw NIC counter (packets, errors, waits) by its kernel name.",
    );
    let mut saturated = Family::gauge(
        "faultline_nic_counter_saturated",
        "1 for a NIC counter stuck at its hardware width's maximum (it no longer counts: its rate is unknown).",
    );
    let mut fabric = Family::gauge(
        "faultline_nic_fabric",
        "1 for a fabric NIC (training data plane), 0 for one reported as data only.",
    );
    for n in &r.nics {
        let l = || vec![("nic", n.name.as_str())];
        for c in &n.saturated {
            saturated.u(vec![("nic", &n.name), ("counter", c)], Some(1));
        }
        fabric.u(l(), Some(u64::from(n.is_fabric())));
        let kind = match n.kind {
            NicKind::Infiniband => "infiniband",
            NicKind::Netdev => "netdev",
        };
        info.u(
            vec![
                ("nic", &n.name),
                ("kind", kind),
                ("netdev", n.netdev.as_deref().unwrap_or("")),
                ("link_layer", n.link_layer.as_deref().unwrap_or("")),
                ("pci_bus_id", n.pci_bus_id.as_deref().unwrap_or("")),
            ],
            Some(1),
        );
        up.u(l(), nic_up(n).map(u64::from));
        carrier.u(l(), n.carrier.map(u64::from));
        changes.u(l(), n.carrier_changes);
        speed.f(l(), n.rate_gbps.map(|g| g * 1e9 / 8.0).or(n.speed_mbps.map(|m| m as f64 * 1e6 / 8.0)));
        mtu.u(l(), n.mtu.map(u64::from));
        let c = |a: &str, b: &str| n.counters.get(a).or_else(|| n.counters.get(b)).copied();
        rx.u(l(), c("rx_bytes", "port_rcv_data"));
        tx.u(l(), c("tx_bytes", "port_xmit_data"));
        rxp.u(l(), c("port_rcv_packets", "rx_packets"));
        txp.u(l(), c("port_xmit_packets", "tx_packets"));
        downed.u(l(), c("link_downed", "link_downed"));
        symbol.u(l(), c("symbol_error", "symbol_error"));
        rcv_err.u(l(), c("port_rcv_errors", "port_rcv_errors"));
        xmit_wait.u(l(), c("port_xmit_wait", "port_xmit_wait"));
        for (k, v) in &n.counters {
            let family = if k.contains("bytes") || k.ends_with("_data") { &mut raw_bytes } else { &mut raw };
            family.u(vec![("nic", &n.name), ("counter", k)], Some(*v));
        }
    }
    vec![
        info, up, carrier, changes, speed, mtu, rx, tx, rxp, txp, downed, symbol, rcv_err, xmit_wait, raw_bytes, raw,
        saturated, fabric,
    ]
}

fn disk_families(r: &NodeReport) -> Vec<Family<'_>> {
    let mut total = Family::gauge("faultline_disk_total_bytes", "File system size.");
    let mut avail =
        Family::gauge("faultline_disk_available_bytes", "File system space available to unprivileged users.");
    let mut ro = Family::gauge("faultline_disk_read_only", "1 when the file system is mounted read-only.");
    let mut written = Family::counter("faultline_disk_written_bytes", "Bytes written to the device since boot.");
    for d in &r.disks {
        let l = || vec![("disk", d.device.as_str()), ("mount", d.mount.as_deref().unwrap_or(""))];
        total.u(l(), d.total_bytes);
        avail.u(l(), d.available_bytes);
        ro.u(l(), Some(u64::from(d.read_only)));
        written.u(l(), d.write_bytes);
    }
    vec![total, avail, ro, written]
}

fn agent_families<'a>(r: Option<&'a NodeReport>, s: &AgentStats) -> Vec<Family<'a>> {
    let g = AgentStats::get;
    let mut info = Family::gauge("faultline_agent_info", "The agent's version.");
    info.u(vec![("version", env!("CARGO_PKG_VERSION"))], Some(1));
    // The same name and label as the analyzer's, so one query finds every faultline binary's version.
    let mut build = Family::gauge("faultline_build_info", "1, labelled with the agent's version.");
    build.u(vec![("version", env!("CARGO_PKG_VERSION"))], Some(1));
    let mut reports = Family::counter("faultline_agent_reports", "Reports built by the agent.");
    reports.u(vec![], Some(g(&s.reports)));
    let mut pushed = Family::counter("faultline_agent_pushed_reports", "Reports the analyzer accepted.");
    pushed.u(vec![], Some(g(&s.pushed)));
    let mut errors = Family::counter("faultline_agent_push_errors", "Failed pushes (unreachable, timeout, 5xx, 4xx).");
    errors.u(vec![], Some(g(&s.push_errors)));
    let mut refused = Family::counter(
        "faultline_agent_refused_reports",
        "Reports the analyzer refused for their content (400, 413, 422; dropped).",
    );
    refused.u(vec![], Some(g(&s.refused)));
    let mut held = Family::gauge(
        "faultline_agent_push_held",
        "1 while the analyzer refuses reports for a reason outside them (401, 403, 404); they stay spooled.",
    );
    held.u(vec![], Some(g(&s.push_held)));
    let mut spool = Family::gauge("faultline_agent_spool_reports", "Reports waiting in the disk spool.");
    spool.u(vec![], Some(g(&s.spool_reports)));
    let mut spool_b = Family::gauge("faultline_agent_spool_bytes", "Bytes in the disk spool.");
    spool_b.u(vec![], Some(g(&s.spool_bytes)));
    let mut dropped = Family::counter("faultline_agent_dropped_reports", "Reports lost (push queue or spool full).");
    dropped.u(vec![], Some(g(&s.dropped_reports)));
    let mut dropped_ev = Family::counter("faultline_agent_dropped_events", "Events dropped from the full event queue.");
    dropped_ev.u(vec![], r.map(|r| r.dropped.events));
    let mut coll = Family::counter(
        "faultline_agent_collector_errors",
        "Collector problems (missing or unreadable files, saturated or wrapped counters), by collector.",
    );
    if let Some(r) = r {
        for (name, n) in &r.collector_errors {
            coll.u(vec![("collector", name)], Some(*n));
        }
    }
    let mut dur = Family::gauge("faultline_agent_collect_duration_seconds", "How long the last collection cycle took.");
    dur.f(vec![], r.map(|_| g(&s.collect_duration_us) as f64 / 1e6));
    let mut ok = Family::gauge(
        "faultline_agent_collector_success",
        "1 when the collector's last run succeeded, 0 when it failed or could not start (NVML did not load).",
    );
    let mut took =
        Family::gauge("faultline_agent_collector_duration_seconds", "How long the collector's last run took.");
    for (name, st) in s.collectors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        ok.u(vec![("collector", name)], Some(u64::from(st.success)));
        took.f(vec![("collector", name)], Some(st.duration.as_secs_f64()));
    }
    vec![info, build, reports, pushed, errors, refused, held, spool, spool_b, dropped, dropped_ev, coll, dur, ok, took]
}

/// Encode a registry in the format the `Accept` header asks for: OpenMetrics when it names
/// `application/openmetrics-text`, else the classic text format 0.0.4. Returns (content type, body).
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut body = String::with_capacity(16 * 1024);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        match prometheus_client::encoding::text::encode(&mut body, registry) {
            Ok(()) => {
                faultline_proto::process::append_to(&mut body, true);
                (OPENMETRICS_CONTENT_TYPE, body)
            }
            Err(_) => (OPENMETRICS_CONTENT_TYPE, String::from("# EOF\n")),
        }
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, registry);
        // process_* as every Prometheus client library exports them (no prefix).
        faultline_proto::process::append_to(&mut body, false);
        (prometheus_client::encoding::prometheus_text::CONTENT_TYPE, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::HostSample;

    fn registry_with(r: NodeReport) -> Registry {
        let snap: Snapshot = Arc::new(std::sync::RwLock::new(Some(r)));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(NodeMetrics::new(snap, Arc::new(AgentStats::default()), "n1".into())));
        reg
    }

    fn sample_report() -> NodeReport {
        let mut r = crate::collect::blank_report("node-7", 1, 1000);
        r.host = Some(HostSample { cpu_util_pct: Some(50.0), mem_used_bytes: Some(42), ..Default::default() });
        let mut counters = faultline_proto::CounterMap::new();
        counters.insert("rx_bytes".into(), 9_007_199_254_740_993u64);
        counters.insert("link_downed".into(), 2);
        r.nics.push(NicSample {
            name: "mlx5_0".into(),
            ib_state: Some("ACTIVE".into()),
            rate_gbps: Some(400.0),
            counters,
            saturated: vec!["excessive_buffer_overrun_errors".into()],
            ..Default::default()
        });
        r.collector_errors.insert("infiniband".into(), 3);
        r
    }

    #[test]
    fn text_format_has_hostname_labels_totals_and_exact_big_counters() {
        let (ct, body) = render(&registry_with(sample_report()), None);
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("faultline_node_cpu_utilization_ratio{Hostname=\"node-7\"} 0.5"), "{body}");
        assert!(body.contains("faultline_node_memory_used_bytes{Hostname=\"node-7\"} 42"), "{body}");
        assert!(body.contains("faultline_nic_up{nic=\"mlx5_0\",Hostname=\"node-7\"} 1"), "{body}");
        assert!(
            body.contains("faultline_nic_speed_bytes_per_second{nic=\"mlx5_0\",Hostname=\"node-7\"} 50000000000"),
            "{body}"
        );
        assert!(
            body.contains("faultline_nic_receive_bytes_total{nic=\"mlx5_0\",Hostname=\"node-7\"} 9007199254740993"),
            "{body}"
        );
        assert!(body.contains("faultline_nic_link_downed_total{nic=\"mlx5_0\",Hostname=\"node-7\"} 2"), "{body}");
        assert!(
            body.contains(
                "faultline_nic_raw_events_total{nic=\"mlx5_0\",counter=\"link_downed\",Hostname=\"node-7\"} 2"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "faultline_nic_counter_saturated{nic=\"mlx5_0\",counter=\"excessive_buffer_overrun_errors\",Hostname=\"node-7\"} 1"
            ),
            "{body}"
        );
        assert!(body.contains("faultline_nic_fabric{nic=\"mlx5_0\",Hostname=\"node-7\"} 1"), "{body}");
        assert!(
            body.contains("faultline_agent_collector_errors_total{collector=\"infiniband\",Hostname=\"node-7\"} 3"),
            "{body}"
        );
        assert!(body.contains("# TYPE faultline_agent_reports_total counter"), "{body}");
        assert!(!body.contains("# EOF"));
    }

    #[test]
    fn each_collector_has_a_success_and_a_duration_and_a_gpu_without_nvml_is_a_zero() {
        let snap: Snapshot = Arc::new(std::sync::RwLock::new(Some(sample_report())));
        let stats = Arc::new(AgentStats::default());
        let mut reg = crate::collect::Registry::empty();
        reg.unavailable("gpu");
        reg.collect(&mut crate::collect::blank_report("node-7", 1, 1000));
        let mut st = reg.status().clone();
        st.insert(
            "host",
            crate::collect::CollectorStatus { success: true, duration: std::time::Duration::from_millis(250) },
        );
        *stats.collectors.lock().unwrap() = st;
        let mut prom = Registry::default();
        prom.register_collector(Box::new(NodeMetrics::new(snap, stats, "n1".into())));
        let (_, body) = render(&prom, None);
        for want in [
            "faultline_agent_collector_success{collector=\"gpu\",Hostname=\"node-7\"} 0",
            "faultline_agent_collector_success{collector=\"host\",Hostname=\"node-7\"} 1",
            "faultline_agent_collector_duration_seconds{collector=\"host\",Hostname=\"node-7\"} 0.25",
            "# TYPE faultline_agent_collector_success gauge",
        ] {
            assert!(body.contains(want), "missing {want}\n{body}");
        }
    }

    #[test]
    fn openmetrics_when_asked() {
        let (ct, body) = render(
            &registry_with(sample_report()),
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        );
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("# TYPE faultline_nic_receive_bytes counter"), "{body}");
    }

    #[test]
    fn before_the_first_report_only_agent_metrics_are_served() {
        let snap: Snapshot = Arc::new(std::sync::RwLock::new(None));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(NodeMetrics::new(snap, Arc::new(AgentStats::default()), "n1".into())));
        let (_, body) = render(&reg, None);
        assert!(body.contains("faultline_agent_reports_total{Hostname=\"n1\"} 0"), "{body}");
        assert!(!body.contains("faultline_node_"), "{body}");
    }
}
