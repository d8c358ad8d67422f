//! What the agent exports over OTLP, as a pure function of one report: the instruments (name, kind,
//! unit, description) and, per instrument, the values with their attributes. `otlp.rs` registers one
//! OpenTelemetry SDK observable instrument per entry of `INSTRUMENTS`, whose callback reads its points
//! from here, so the naming is testable without an SDK or a collector.
//!
//! Names follow the OpenTelemetry semantic conventions where one fits: hardware (`hw.gpu.*`,
//! `hw.temperature`, `hw.power`, `hw.energy`, `hw.errors`, `hw.status`, `hw.network.*`, with `hw.id`,
//! `hw.name`, `hw.type`, `hw.model`, `hw.vendor`) and host (`system.*`). What has no convention (XID
//! events, carrier flaps, IB congestion ticks, raw driver counters) is named `faultline.*`.

use std::collections::BTreeMap;

use faultline_proto::{GpuSample, GpuState, NicSample, NodeReport};
use opentelemetry::KeyValue;

/// How an instrument's values behave, which picks the SDK observable instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value read now (`ObservableGauge<f64>`).
    Gauge,
    /// A cumulative count that only grows (`ObservableCounter<u64>`).
    Counter,
    /// A value that is a sum but can go down (`ObservableUpDownCounter<i64>`), as the conventions
    /// ask for `hw.status`, `hw.network.up`, `system.memory.usage`.
    UpDown,
}

/// One instrument the agent exports.
#[derive(Debug, Clone, Copy)]
pub struct Instrument {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub description: &'static str,
}

const fn inst(name: &'static str, kind: Kind, unit: &'static str, description: &'static str) -> Instrument {
    Instrument { name, kind, unit, description }
}

/// Every instrument, registered once at start. A name missing here is never exported.
pub const INSTRUMENTS: &[Instrument] = &[
    // GPUs (semantic conventions: hardware, GPU).
    inst("hw.gpu.utilization", Kind::Gauge, "1", "Fraction of time the GPU was busy."),
    inst("hw.gpu.memory.usage", Kind::UpDown, "By", "GPU memory in use."),
    inst("hw.gpu.memory.limit", Kind::UpDown, "By", "GPU memory size."),
    inst("hw.gpu.memory.utilization", Kind::Gauge, "1", "Fraction of GPU memory in use."),
    inst("hw.temperature", Kind::Gauge, "Cel", "Temperature of a GPU or a host sensor."),
    inst("hw.power", Kind::Gauge, "W", "GPU power draw."),
    inst("hw.energy", Kind::Counter, "J", "GPU energy since the driver loaded."),
    inst("hw.errors", Kind::Counter, "{error}", "Hardware errors counted by the driver (ECC, PCIe replays, IB link)."),
    inst("hw.status", Kind::UpDown, "1", "1 for the state the GPU is in (ok, degraded, failed), 0 for the others."),
    inst(
        "faultline.gpu.memory_controller.utilization",
        Kind::Gauge,
        "1",
        "Fraction of time GPU memory was being read or written (NVML's memory utilization).",
    ),
    inst("faultline.gpu.clock.sm", Kind::Gauge, "Hz", "GPU SM clock."),
    inst("faultline.gpu.throttled", Kind::Gauge, "1", "1 while any clock throttle reason other than idle is active."),
    inst("faultline.gpu.xid.events", Kind::Counter, "{event}", "GPU XID events seen by this agent."),
    // NICs (semantic conventions: hardware, network).
    inst("hw.network.io", Kind::Counter, "By", "Bytes received or transmitted by the NIC."),
    inst("hw.network.packets", Kind::Counter, "{packet}", "Packets received or transmitted by the NIC."),
    inst("hw.network.up", Kind::UpDown, "1", "1 when the link is up (IB port ACTIVE, netdev operstate up)."),
    inst("hw.network.bandwidth.limit", Kind::UpDown, "By/s", "Link rate (IB rate, or netdev speed)."),
    inst("faultline.nic.carrier", Kind::Gauge, "1", "1 while the netdev has carrier."),
    inst("faultline.nic.carrier_changes", Kind::Counter, "{change}", "Link carrier changes (flaps count twice)."),
    inst(
        "faultline.nic.xmit_wait",
        Kind::Counter,
        "{tick}",
        "IB port_xmit_wait: ticks with data to send but no credits (congestion).",
    ),
    inst(
        "faultline.nic.raw.bytes",
        Kind::Counter,
        "By",
        "Every raw NIC byte counter by its kernel name (IB port_*_data already converted to bytes).",
    ),
    inst(
        "faultline.nic.raw.events",
        Kind::Counter,
        "{event}",
        "Every other raw NIC counter (packets, errors, waits) by its kernel name.",
    ),
    // Host (semantic conventions: system).
    inst("system.cpu.utilization", Kind::Gauge, "1", "Host CPU busy fraction."),
    inst("system.cpu.logical.count", Kind::UpDown, "{cpu}", "Logical CPUs."),
    inst("system.memory.usage", Kind::UpDown, "By", "Host memory in use."),
    inst("system.memory.limit", Kind::UpDown, "By", "Host memory size."),
    inst("system.uptime", Kind::Gauge, "s", "Seconds since the host booted."),
    // The agent itself.
    inst("faultline.agent.report.seq", Kind::Gauge, "1", "Sequence number of the newest report."),
];

/// One observed value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    F(f64),
    U(u64),
    I(i64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::F(v) => v,
            Num::U(v) => v as f64,
            Num::I(v) => v as f64,
        }
    }

    pub fn as_u64(self) -> u64 {
        match self {
            Num::F(v) => v.max(0.0) as u64,
            Num::U(v) => v,
            Num::I(v) => v.max(0) as u64,
        }
    }

    pub fn as_i64(self) -> i64 {
        match self {
            Num::F(v) => v as i64,
            Num::U(v) => i64::try_from(v).unwrap_or(i64::MAX),
            Num::I(v) => v,
        }
    }
}

/// Points of every instrument, by instrument name.
pub type Points = BTreeMap<&'static str, Vec<(Num, Vec<KeyValue>)>>;

/// GPUs seen through NVML are NVIDIA's.
pub const GPU_VENDOR: &str = "NVIDIA";

struct Out(Points);

impl Out {
    fn put(&mut self, name: &'static str, v: Num, attrs: Vec<KeyValue>) {
        debug_assert!(INSTRUMENTS.iter().any(|i| i.name == name), "{name} is not in INSTRUMENTS");
        if let Num::F(f) = v
            && !f.is_finite()
        {
            return;
        }
        self.0.entry(name).or_default().push((v, attrs));
    }

    fn f(&mut self, name: &'static str, v: Option<f64>, attrs: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(v) = v {
            self.put(name, Num::F(v), attrs());
        }
    }

    fn u(&mut self, name: &'static str, v: Option<u64>, attrs: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(v) = v {
            self.put(name, Num::U(v), attrs());
        }
    }
}

fn with(mut a: Vec<KeyValue>, more: impl IntoIterator<Item = KeyValue>) -> Vec<KeyValue> {
    a.extend(more);
    a
}

/// The identity attributes of a GPU: `hw.id` (its UUID), `hw.name`, `hw.model`, `hw.vendor`, and
/// `hw.serial_number` when NVML gave one.
fn gpu_attrs(g: &GpuSample) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("hw.id", g.uuid.clone()),
        KeyValue::new("hw.name", format!("gpu{}", g.index)),
        KeyValue::new("hw.model", g.name.clone()),
        KeyValue::new("hw.vendor", GPU_VENDOR),
    ];
    if let Some(s) = g.serial.as_deref().filter(|s| !s.is_empty()) {
        a.push(KeyValue::new("hw.serial_number", s.to_string()));
    }
    a
}

fn gpu(out: &mut Out, g: &GpuSample) {
    let plain = || gpu_attrs(g);
    let typed = || with(gpu_attrs(g), [KeyValue::new("hw.type", "gpu")]);
    out.f("hw.gpu.utilization", g.util_gpu_pct.map(|u| u / 100.0), plain);
    out.f("faultline.gpu.memory_controller.utilization", g.util_mem_pct.map(|u| u / 100.0), plain);
    out.u("hw.gpu.memory.usage", g.mem_used_bytes, plain);
    out.u("hw.gpu.memory.limit", g.mem_total_bytes, plain);
    let used_fraction = match (g.mem_used_bytes, g.mem_total_bytes) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    };
    out.f("hw.gpu.memory.utilization", used_fraction, plain);
    out.f("hw.temperature", g.temp_c, typed);
    out.f("hw.power", g.power_w, typed);
    out.u("hw.energy", g.energy_mj.map(|e| e / 1000), typed);
    let errors = [
        ("ecc_corrected", g.ecc.sbe_aggregate),
        ("ecc_uncorrected", g.ecc.dbe_aggregate),
        ("pcie_replay", g.pcie.as_ref().and_then(|p| p.replay_count)),
    ];
    for (ty, v) in errors {
        out.u("hw.errors", v, || with(typed(), [KeyValue::new("error.type", ty)]));
    }
    let state = match g.state {
        GpuState::Ok => "ok",
        GpuState::Unresponsive => "degraded",
        GpuState::Lost => "failed",
    };
    for s in ["ok", "degraded", "failed"] {
        out.put("hw.status", Num::I(i64::from(s == state)), with(typed(), [KeyValue::new("hw.state", s)]));
    }
    out.f("faultline.gpu.clock.sm", g.sm_clock_mhz.map(|c| f64::from(c) * 1e6), plain);
    out.f("faultline.gpu.throttled", g.throttle_mask.map(|m| if m & !1 != 0 { 1.0 } else { 0.0 }), plain);
}

fn nic(out: &mut Out, n: &NicSample) {
    let attrs = || {
        let mut a = vec![KeyValue::new("hw.id", n.name.clone()), KeyValue::new("hw.name", n.name.clone())];
        if let Some(d) = &n.netdev {
            a.push(KeyValue::new("network.interface.name", d.clone()));
        }
        if let Some(p) = n.port {
            a.push(KeyValue::new("faultline.nic.port", i64::from(p)));
        }
        a
    };
    let c = |a: &str, b: &str| n.counters.get(a).or_else(|| n.counters.get(b)).copied();
    let dir = |d: &'static str| move || with(attrs(), [KeyValue::new("network.io.direction", d)]);
    out.u("hw.network.io", c("rx_bytes", "port_rcv_data"), dir("receive"));
    out.u("hw.network.io", c("tx_bytes", "port_xmit_data"), dir("transmit"));
    out.u("hw.network.packets", c("port_rcv_packets", "rx_packets"), dir("receive"));
    out.u("hw.network.packets", c("port_xmit_packets", "tx_packets"), dir("transmit"));
    if let Some(up) = crate::export::metrics::nic_up(n) {
        out.put("hw.network.up", Num::I(i64::from(up)), attrs());
    }
    let rate = n.rate_gbps.map(|g| g * 1e9 / 8.0).or(n.speed_mbps.map(|m| m as f64 * 1e6 / 8.0));
    if let Some(r) = rate.filter(|r| r.is_finite()) {
        out.put("hw.network.bandwidth.limit", Num::I(r as i64), attrs());
    }
    for ty in ["link_downed", "symbol_error", "port_rcv_errors"] {
        out.u("hw.errors", n.counters.get(ty).copied(), || {
            with(attrs(), [KeyValue::new("hw.type", "network"), KeyValue::new("error.type", ty)])
        });
    }
    out.f("faultline.nic.carrier", n.carrier.map(|c| if c { 1.0 } else { 0.0 }), attrs);
    out.u("faultline.nic.carrier_changes", n.carrier_changes, attrs);
    out.u("faultline.nic.xmit_wait", n.counters.get("port_xmit_wait").copied(), attrs);
    for (k, v) in &n.counters {
        let name = if k.contains("bytes") || k.ends_with("_data") {
            "faultline.nic.raw.bytes"
        } else {
            "faultline.nic.raw.events"
        };
        out.put(name, Num::U(*v), with(attrs(), [KeyValue::new("faultline.nic.counter", k.to_string())]));
    }
}

/// Every instrument's points for report `r`; `xid_totals` are the XID events counted so far per
/// (component, xid). Values that are not finite are left out.
pub fn observations(r: &NodeReport, xid_totals: &BTreeMap<(String, u32), u64>) -> Points {
    let mut out = Out(Points::new());
    for g in &r.gpus {
        gpu(&mut out, g);
    }
    let by_component: BTreeMap<String, &GpuSample> = r.gpus.iter().map(|g| (format!("gpu{}", g.index), g)).collect();
    for ((component, xid), n) in xid_totals {
        let mut a = match by_component.get(component) {
            Some(g) => gpu_attrs(g),
            None => Vec::new(),
        };
        a.push(KeyValue::new("faultline.xid", i64::from(*xid)));
        a.push(KeyValue::new("faultline.component", component.clone()));
        out.put("faultline.gpu.xid.events", Num::U(*n), a);
    }
    for n in &r.nics {
        nic(&mut out, n);
    }
    if let Some(h) = &r.host {
        out.f("system.cpu.utilization", h.cpu_util_pct.map(|u| u / 100.0), Vec::new);
        if let Some(c) = h.cpu_count {
            out.put("system.cpu.logical.count", Num::I(i64::from(c)), Vec::new());
        }
        if let Some(m) = h.mem_used_bytes {
            out.put("system.memory.usage", Num::U(m), vec![KeyValue::new("system.memory.state", "used")]);
        }
        out.u("system.memory.limit", h.mem_total_bytes, Vec::new);
        out.f("system.uptime", h.uptime_s.map(|s| s as f64), Vec::new);
        for t in &h.temps {
            out.put(
                "hw.temperature",
                Num::F(t.celsius),
                vec![
                    KeyValue::new("hw.type", "temperature"),
                    KeyValue::new("hw.id", t.name.clone()),
                    KeyValue::new("hw.name", t.name.clone()),
                ],
            );
        }
    }
    out.put("faultline.agent.report.seq", Num::U(r.seq), Vec::new());
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::{HostSample, NicSample};

    fn attr(a: &[KeyValue], key: &str) -> Option<String> {
        a.iter().find(|k| k.key.as_str() == key).map(|k| k.value.as_str().into_owned())
    }

    fn report() -> NodeReport {
        let mut r = crate::collect::blank_report("n1", 7, 1000);
        r.gpus = vec![GpuSample {
            index: 3,
            uuid: "GPU-abc".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            util_gpu_pct: Some(50.0),
            mem_used_bytes: Some(1024),
            mem_total_bytes: Some(4096),
            temp_c: Some(61.0),
            sm_clock_mhz: Some(1980),
            state: GpuState::Lost,
            ..Default::default()
        }];
        r.nics = vec![NicSample {
            name: "mlx5_0".into(),
            netdev: Some("ib0".into()),
            ib_state: Some("ACTIVE".into()),
            rate_gbps: Some(400.0),
            counters: [("symbol_error".into(), 3u64), ("port_rcv_data".into(), 40)].into_iter().collect(),
            ..Default::default()
        }];
        r.host = Some(HostSample { mem_used_bytes: Some(5), cpu_util_pct: Some(25.0), ..Default::default() });
        r
    }

    #[test]
    fn every_point_names_a_registered_instrument_and_names_are_unique() {
        let mut names: Vec<_> = INSTRUMENTS.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INSTRUMENTS.len());
        let totals = [(("gpu3".to_string(), 79u32), 2u64)].into_iter().collect();
        for name in observations(&report(), &totals).keys() {
            assert!(INSTRUMENTS.iter().any(|i| i.name == *name), "{name}");
        }
    }

    #[test]
    fn gpus_follow_the_hardware_conventions() {
        let totals = [(("gpu3".to_string(), 79u32), 2u64)].into_iter().collect();
        let p = observations(&report(), &totals);
        let (v, a) = &p["hw.gpu.utilization"][0];
        assert_eq!(*v, Num::F(0.5));
        assert_eq!(attr(a, "hw.id").as_deref(), Some("GPU-abc"));
        assert_eq!(attr(a, "hw.model").as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(attr(a, "hw.vendor").as_deref(), Some("NVIDIA"));
        assert_eq!(attr(a, "hw.name").as_deref(), Some("gpu3"));
        assert_eq!(p["hw.gpu.memory.utilization"][0].0, Num::F(0.25));
        let temp = &p["hw.temperature"][0].1;
        assert_eq!(attr(temp, "hw.type").as_deref(), Some("gpu"));
        assert_eq!(p["faultline.gpu.clock.sm"][0].0, Num::F(1.98e9));
        let failed: Vec<_> =
            p["hw.status"].iter().filter(|(v, _)| *v == Num::I(1)).map(|(_, a)| attr(a, "hw.state")).collect();
        assert_eq!(failed, vec![Some("failed".to_string())]);
        let (n, xa) = &p["faultline.gpu.xid.events"][0];
        assert_eq!(*n, Num::U(2));
        assert_eq!(attr(xa, "hw.id").as_deref(), Some("GPU-abc"));
        assert_eq!(attr(xa, "faultline.xid").as_deref(), Some("79"));
    }

    #[test]
    fn nics_and_host_follow_the_network_and_system_conventions() {
        let p = observations(&report(), &BTreeMap::new());
        let (v, a) = &p["hw.network.io"][0];
        assert_eq!(*v, Num::U(40));
        assert_eq!(attr(a, "network.io.direction").as_deref(), Some("receive"));
        assert_eq!(attr(a, "network.interface.name").as_deref(), Some("ib0"));
        assert_eq!(p["hw.network.up"][0].0, Num::I(1));
        assert_eq!(p["hw.network.bandwidth.limit"][0].0, Num::I(50_000_000_000));
        let err = &p["hw.errors"].iter().find(|(_, a)| attr(a, "hw.type").as_deref() == Some("network")).unwrap();
        assert_eq!(attr(&err.1, "error.type").as_deref(), Some("symbol_error"));
        assert!(
            p["faultline.nic.raw.bytes"]
                .iter()
                .all(|(_, a)| attr(a, "faultline.nic.counter").unwrap().ends_with("_data"))
        );
        assert_eq!(p["system.cpu.utilization"][0].0, Num::F(0.25));
        assert_eq!(attr(&p["system.memory.usage"][0].1, "system.memory.state").as_deref(), Some("used"));
        assert!(!p.contains_key("faultline.gpu.xid.events"));
    }

    #[test]
    fn values_that_are_not_finite_are_left_out() {
        let mut r = report();
        r.gpus[0].temp_c = Some(f64::NAN);
        let p = observations(&r, &BTreeMap::new());
        assert!(p.get("hw.temperature").is_none_or(|v| v.is_empty()));
    }
}
