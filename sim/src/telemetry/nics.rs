//! The NICs of a node as the agent reads them from sysfs and reports them: the fabric ports (IB or
//! RoCE) with their counters at their real widths, stuck at the maximum where the kernel saturates
//! them. The other netdevs every real node has (management NIC, storage bond, docker0, veth*, ifb*,
//! ports down since boot) go through the agent's own `[nics]` rules: by default it reports none of
//! them; with `collect_nonfabric_netdevs` (the scenario's `nonfabric_netdevs`) it reports the
//! physical ones and the bond as `fabric: false`, and never the container and traffic-shaping
//! devices its `netdev_exclude` names.

use faultline_proto::counters;
use faultline_proto::{CounterMap, CounterName, NicKind, NicSample};

use super::reuse::{slots, some_text, text, texts};
use super::{Load, RankHere};
use crate::node_state::{
    NIC_BUSY_BYTES_PER_S, NIC_COUNTER_NAMES, NIC_IDLE_BYTES_PER_S, NicCounter as C, NicDyn, NodeDyn, XMIT_WAIT_PER_S,
};
use crate::noise::{self, what};
use crate::realism::LinkLayer;
use crate::world::World;

/// The RoCE congestion-control counters of `hw_counters/` (ECN marks, CNPs): an IB port has none
/// (sim/data/sysfs-infiniband-h100-sample.txt lists its hw_counters without them); IB congestion
/// shows only in `port_xmit_wait`, 32 bits, which long-running ports already hold at its maximum.
const ROCE_CONGESTION_COUNTERS: [&str; 4] =
    ["np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored"];

/// One counter a fabric port shows.
struct Shown {
    name: &'static str,
    /// Where its true total is kept (`NicDyn::c`).
    slot: usize,
    /// The value it saturates at, if it has a fixed width (`counters::ib_counter_max`).
    max: Option<u64>,
    /// Only a RoCE port has it (`ROCE_CONGESTION_COUNTERS`).
    roce_only: bool,
}

impl Shown {
    fn new(name: &'static str, slot: usize) -> Shown {
        Shown { name, slot, max: counters::ib_counter_max(name), roce_only: ROCE_CONGESTION_COUNTERS.contains(&name) }
    }
}

/// Every counter a fabric port shows, in name order (the order of its report's map): the sysfs
/// counters, and `rx_bytes`/`tx_bytes`, which are its data counters. Looked up once, not per report.
static SHOWN: std::sync::LazyLock<Vec<Shown>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<Shown> = NIC_COUNTER_NAMES.iter().enumerate().map(|(i, n)| Shown::new(n, i)).collect();
    v.push(Shown::new("rx_bytes", C::PortRcvData as usize));
    v.push(Shown::new("tx_bytes", C::PortXmitData as usize));
    v.sort_unstable_by_key(|s| s.name);
    v
});

/// The sysfs counters of fixed width, in `NIC_COUNTER_NAMES` order (the order of `saturated`).
static SATURABLE: std::sync::LazyLock<Vec<Shown>> = std::sync::LazyLock::new(|| {
    NIC_COUNTER_NAMES.iter().enumerate().map(|(i, n)| Shown::new(n, i)).filter(|s| s.max.is_some()).collect()
});

/// The agent's default `[nics]` rules, made once (its exclude list is two dozen globs).
static AGENT_NICS: std::sync::LazyLock<faultline_agent::collect::fabric::NicsConfig> =
    std::sync::LazyLock::new(Default::default);

/// What faults did to the fabric ports of this report.
pub struct NicFx {
    pub down: Vec<bool>,
    /// Throughput multiplier per NIC.
    pub tput: Vec<f64>,
    /// Trained rate per NIC, Gb/s.
    pub rate: Vec<f64>,
    /// `port_xmit_wait` multiplier from congestion (0 = none).
    pub congested: Vec<f64>,
}

/// The fabric ports, then the other netdevs of node `n`, in the buffers of `spare` (see `reuse`).
#[allow(clippy::too_many_arguments)]
pub fn build(
    w: &World,
    d: &mut NodeDyn,
    n: usize,
    ts: i64,
    dt_s: f64,
    ranks: &[RankHere],
    fx: &NicFx,
    spare: Vec<NicSample>,
) -> Vec<NicSample> {
    let c = &w.cluster;
    let node = &c.nodes[n];
    let noise = w.noise;
    let nk = n as u64;
    let tk = (ts / 1000) as u64;
    let nics_n = c.spec.nics_per_node as usize;
    // Traffic follows the ranks that use a port; a job hung in a collective moves no bytes.
    let mut nic_busy = vec![0.0f64; nics_n];
    // An evaluation pass still all-reduces its loss and metrics each batch: a trickle.
    let mut nic_eval = vec![false; nics_n];
    for rh in ranks {
        let job = &c.jobs[rh.j];
        if !job.multi_node {
            continue;
        }
        let k = job.ranks[rh.r].nic as usize;
        match rh.load {
            Load::Busy(..) if k < nics_n => nic_busy[k] += 1.0 / w.jobs[rh.j].slowdown.max(1e-6),
            Load::Eval if k < nics_n => nic_eval[k] = true,
            _ => {}
        }
    }
    let roce = c.spec.link_layer == LinkLayer::Ethernet;
    let mut nics = spare;
    slots(&mut nics, node.nics.len());
    for (k, (ns, slot)) in node.nics.iter().zip(nics.iter_mut()).enumerate() {
        let o = std::mem::take(slot);
        let nd = &mut d.nics[k];
        let down = fx.down[k];
        let rate = fx.rate[k];
        let cap = rate / 8.0 * 1e9 * 0.92;
        let bps = if down {
            0.0
        } else if nic_busy[k] > 0.0 {
            (NIC_BUSY_BYTES_PER_S * nic_busy[k].min(1.0) * fx.tput[k]).min(cap)
                * noise.jitter(what::TRAFFIC, nk * 64 + k as u64, tk, 0.03)
        } else if nic_eval[k] {
            NIC_IDLE_BYTES_PER_S + super::nvlink::NVL_EVAL_BYTES_PER_S
        } else {
            NIC_IDLE_BYTES_PER_S
        };
        let add = |nd: &mut NicDyn, i: C, slot: usize, x: f64| {
            let v = x + nd.frac[slot];
            nd.c[i as usize] += v.floor() as u64;
            nd.frac[slot] = v.fract();
        };
        // The agent reports the 4-byte-word data counters as bytes (64-bit extended counters).
        add(nd, C::PortXmitData, 0, bps * dt_s);
        add(nd, C::PortRcvData, 1, bps * dt_s * noise.jitter(what::TRAFFIC, nk * 64 + k as u64, tk ^ 3, 0.01));
        add(nd, C::PortXmitPackets, 2, bps * dt_s / 4000.0);
        add(nd, C::PortRcvPackets, 3, bps * dt_s / 4000.0);
        if !down && nic_busy[k] > 0.0 {
            let mult = if fx.congested[k] > 0.0 { fx.congested[k] } else { 1.0 };
            nd.c[C::PortXmitWait as usize] += (XMIT_WAIT_PER_S * nic_busy[k].min(1.0) * mult * dt_s) as u64;
        }
        if noise.fires(what::SYMBOL_TICK, nk * 64 + k as u64, d.seq, noise::SYMBOL_TICKS_PER_NIC_HOUR, dt_s) {
            nd.c[C::SymbolError as usize] += 1;
        }
        // What sysfs shows: the true totals, held at each counter's maximum.
        let saturated = texts(
            o.saturated,
            SATURABLE
                .iter()
                .filter(|s| (roce || !s.roce_only) && counters::at_max(s.max, nd.c[s.slot]))
                .map(|s| s.name),
        );
        // Static names (no allocation per counter), in name order.
        let mut counters = o.counters;
        counters.refill_sorted(
            SHOWN
                .iter()
                .filter(|s| roce || !s.roce_only)
                .map(|s| (CounterName::new_static(s.name), counters::held_at(s.max, nd.c[s.slot]))),
        );
        *slot = NicSample {
            fabric: Some(true),
            saturated,
            name: text(o.name, &ns.name),
            kind: NicKind::Infiniband,
            netdev: some_text(o.netdev, &ns.netdev),
            port: Some(1),
            pci_bus_id: some_text(o.pci_bus_id, &ns.bus_id),
            operstate: some_text(o.operstate, if down { "down" } else { "up" }),
            carrier: Some(!down),
            carrier_changes: Some(nd.carrier_changes),
            speed_mbps: if down { None } else { Some((rate * 1000.0) as u64) },
            mtu: Some(if roce { 9000 } else { 4096 }),
            link_layer: some_text(o.link_layer, if roce { "Ethernet" } else { "InfiniBand" }),
            ib_state: some_text(o.ib_state, if down { "DOWN" } else { "ACTIVE" }),
            ib_phys_state: some_text(o.ib_phys_state, if down { "Polling" } else { "LinkUp" }),
            rate_gbps: Some(if down { 0.0 } else { rate }),
            // sysfs has no "maximum rate" to compare a degraded link with.
            max_rate_gbps: None,
            addrs: texts(o.addrs, [ns.addr.as_str()]),
            counters,
        };
    }
    if c.spec.nonfabric_netdevs {
        nics.extend(other_netdevs(w, d, n, ts, dt_s).into_iter().filter(|x| !AGENT_NICS.netdev_excluded(&x.name)));
    }
    nics
}

/// One plain netdev: (name, up, bytes/s, PCI address).
fn netdev(
    name: &str,
    up: bool,
    carrier: Option<bool>,
    speed_mbps: Option<u64>,
    bytes: u64,
    bus: Option<String>,
) -> NicSample {
    let counters = CounterMap::from([
        (CounterName::new_static("rx_bytes"), bytes),
        (CounterName::new_static("tx_bytes"), bytes / 3),
        (CounterName::new_static("rx_errors"), 0),
        (CounterName::new_static("tx_errors"), 0),
        (CounterName::new_static("rx_dropped"), bytes / 9_000_000_000),
    ]);
    NicSample {
        name: name.to_string(),
        kind: NicKind::Netdev,
        netdev: Some(name.to_string()),
        pci_bus_id: bus,
        operstate: Some(if up { "up" } else { "down" }.to_string()),
        carrier,
        carrier_changes: Some(if up { 1 } else { 0 }),
        speed_mbps,
        mtu: Some(1500),
        fabric: Some(false),
        counters,
        ..Default::default()
    }
}

/// The netdevs a real GPU node has besides its fabric ports.
fn other_netdevs(w: &World, d: &mut NodeDyn, n: usize, ts: i64, dt_s: f64) -> Vec<NicSample> {
    d.mgmt_bytes += (2.0e6 * dt_s) as u64;
    let up_s = ((ts - d.boot_ms) / 1000).max(0) as u64;
    let base = d.mgmt_bytes + up_s * 1_500_000;
    let u = |k: u64| noise::unit(&[w.seed, what::STATIC, n as u64, 3000 + k]);
    let mut out = vec![
        // Management NIC and the onboard port nobody cabled (down since boot, no carrier).
        netdev("eno1", true, Some(true), Some(25_000), base, Some("0000:c1:00.0".into())),
        netdev("eno2", false, Some(false), None, 0, Some("0000:c1:00.1".into())),
        // Storage: two ports in an LACP bond.
        netdev("ens10f0np0", true, Some(true), Some(100_000), base * 20, Some("0000:e1:00.0".into())),
        netdev("ens10f1np1", true, Some(true), Some(100_000), base * 19, Some("0000:e1:00.1".into())),
        netdev("bond0", true, Some(true), Some(200_000), base * 39, None),
        // Container bridge (down when no container runs), and the IFB devices tc made at boot.
        netdev("docker0", u(1) < 0.5, Some(u(1) < 0.5), None, base / 100, None),
        netdev("ifb0", false, Some(false), None, 0, None),
        netdev("ifb1", false, Some(false), None, 0, None),
    ];
    for v in 0..(u(2) * 4.0) as u64 {
        let h = noise::hash(&[w.seed, what::STATIC, n as u64, 3100 + v]);
        out.push(netdev(&format!("veth{:07x}", h & 0xfff_ffff), true, Some(true), Some(10_000), base / 50, None));
    }
    out
}
