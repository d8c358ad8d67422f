//! GPU and NVLink detectors: lost or unresponsive GPUs, XID classes, ECC (DBE, SRAM, SBE storms),
//! row remapping, throttling, SM clock against the node's other GPUs, PCIe training, NVLink state
//! and error-counter rates.
//!
//! XIDs mean what NVIDIA's catalog says (`faultline_proto::xid`): 94 is a contained error (restart
//! the application), 144–150 are decoded from their status word and the non-fatal ones page nobody.
//! An NVML error other than GPU_IS_LOST is checked against the kernel log (XID 79, "fallen off the
//! bus") and PCI presence before it is called a GSP hang. Throttling is judged from how fast NVML's
//! cumulative violation time grows; the reason bitmask is the fallback for agents without it.

use faultline_proto::{ComponentId, FaultClass};

use super::{EVENT_HOLD_MS, SOFT_SAMPLES, Symptom, SymptomKind as K};
use crate::state::{GpuPoint, GpuState};
use faultline_proto::xid::{self, XidClass};

/// Application XIDs (13, 31, 43) on one GPU within this window, this many times, point at the GPU:
/// one is an application bug, three in ten minutes on the same board is hardware (NVIDIA's XID 13/31
/// workflows say to suspect the GPU when it repeats).
pub const APP_XID_REPEAT: usize = 3;
pub const APP_XID_WINDOW_MS: i64 = 600_000;
/// Correctable ECC errors in the SBE window that make a storm: the catalog's "hundreds per minute";
/// an occasional single correctable error is normal.
pub const SBE_STORM_COUNT: u64 = 100;
pub const SBE_STORM_WINDOW_MS: i64 = 120_000;
/// NVML's slowdown temperature for H100 is 87–90 °C; at or above 87 °C the board throttles.
pub const THERMAL_TEMP_C: f64 = 87.0;
/// An SM clock below this fraction of the median of the node's other busy GPUs is a throttled GPU
/// (thermal −30%, power brake −40% in the catalog; normal boost spread is a few percent).
pub const CLOCK_LOW_FRACTION: f64 = 0.8;
/// NVLink CRC + replay + recovery errors over the last `SOFT_SAMPLES` deltas that make a storm, with
/// every one of those deltas increasing (healthy links count zero).
pub const NVLINK_ERR_MIN: u64 = 20;
/// GPU utilisation above which a PCIe generation below max is not the idle power-saving downshift.
pub const PCIE_BUSY_UTIL: f64 = 20.0;
/// Share of the time the clocks were held down (thermal, power brake) over `THROTTLE_SAMPLES`
/// intervals that makes a throttled GPU. Half the time is far from the odd short clock dip a busy
/// GPU shows, and with the violation counters a short event between two snapshots is not missed.
pub const THROTTLE_SHARE: f64 = 0.5;
/// Intervals the share is averaged over (20 s at the default interval).
pub const THROTTLE_SAMPLES: usize = 2;
/// GPUs of one node held by the power brake at once that make it the node's power, not each GPU's:
/// the brake is a board/chassis signal (NVML), one failing supply brakes several boards together.
pub const NODE_BRAKE_GPUS: usize = 2;

/// What the node's other GPUs look like.
#[derive(Debug, Clone)]
pub struct GpuPeers {
    /// Median SM clock of the node's other GPUs in their last sample.
    pub sm_median: Option<f64>,
    /// How long a fatal XID stays a live symptom (`EngineConfig::fatal_xid_hold_s`; default
    /// `EVENT_HOLD_MS`).
    pub fatal_xid_hold_ms: i64,
}

impl Default for GpuPeers {
    /// No peers known, and the catalog's hold: a zero hold would forget a fatal XID at once.
    fn default() -> Self {
        GpuPeers { sm_median: None, fatal_xid_hold_ms: EVENT_HOLD_MS }
    }
}

/// The last `n` points, or `None` while fewer were seen.
pub fn recent<T>(points: &std::collections::VecDeque<T>, n: usize) -> Option<Recent<'_, T>> {
    if points.len() < n || n == 0 {
        return None;
    }
    Some(Recent(points.range(points.len() - n..)))
}

/// The last points of a series, as `recent` found them (at least one): read in place, not copied
/// into a vector, since every GPU of every report is judged on them.
pub struct Recent<'a, T>(std::collections::vec_deque::Iter<'a, T>);

impl<'a, T> Recent<'a, T> {
    pub fn iter(&self) -> std::collections::vec_deque::Iter<'a, T> {
        self.0.clone()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
    pub fn first(&self) -> &'a T {
        self.0.clone().next().expect("recent() gives at least one point")
    }
    pub fn last(&self) -> Option<&'a T> {
        self.0.clone().next_back()
    }
}

/// Check one GPU. Pure: reads `g` and `peers`, appends to `out`.
pub fn check(host: &str, idx: u32, g: &GpuState, peers: &GpuPeers, now: i64, out: &mut Vec<Symptom>) {
    let id = ComponentId::gpu(host, idx);
    // Evidence that the GPU is gone rather than hung: the kernel's word, or no PCI device.
    let fell_off = g.fell_off_at.filter(|t| *t > now - EVENT_HOLD_MS);
    let no_pci = g.pci_present == Some(false);
    if let (None, true) = (g.lost_since.or(g.missing_since), no_pci) {
        let t = g.unresponsive_since.or(g.points.back().map(|p| p.ts)).unwrap_or(now);
        out.push(
            Symptom::new(id.clone(), K::GpuLost, t, format!("{id} is gone from the PCI bus"))
                .class(FaultClass::GpuLost)
                .critical(),
        );
    } else if let (None, Some(t), Some(_)) = (g.lost_since.or(g.missing_since), g.unresponsive_since, fell_off) {
        out.push(
            Symptom::new(
                id.clone(),
                K::GpuLost,
                t,
                format!(
                    "{id} answers NVML with {:?} and the kernel says it fell off the bus",
                    g.nvml_error.as_deref().unwrap_or("errors")
                ),
            )
            .class(FaultClass::GpuLost)
            .critical(),
        );
    }
    if let Some(t) = g.lost_since {
        out.push(
            Symptom::new(
                id.clone(),
                K::GpuLost,
                t,
                format!("{id} is lost: NVML reports GPU_IS_LOST or it fell off the bus"),
            )
            .class(FaultClass::GpuLost)
            .critical(),
        );
    } else if let Some(t) = g.missing_since {
        out.push(
            Symptom::new(id.clone(), K::GpuLost, t, format!("{id} vanished from the device list the agent reports"))
                .class(FaultClass::GpuLost)
                .critical(),
        );
    }
    let gone = g.lost_since.is_some() || g.missing_since.is_some() || no_pci || fell_off.is_some();
    if let (Some(t), false) = (g.unresponsive_since, gone) {
        let why = g.nvml_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        out.push(
            Symptom::new(
                id.clone(),
                K::GpuUnresponsive,
                t,
                format!("NVML queries to {id} time out or fail{why}, while its PCI device is present and the kernel logged no fall off the bus"),
            )
                .class(FaultClass::GpuGspHang)
                .critical(),
        );
    }
    // XIDs: fatal ones at once; application ones only when they repeat.
    let mut fatal_seen = std::collections::BTreeSet::new();
    let mut app = 0usize;
    let mut app_first = None;
    for x in g.xids.iter().rev() {
        match x.class {
            XidClass::Fatal(mut class) | XidClass::Contained(mut class) if x.ts > now - peers.fatal_xid_hold_ms => {
                if !fatal_seen.insert(x.xid) {
                    continue;
                }
                let contained = matches!(x.class, XidClass::Contained(_));
                if matches!(x.xid, 94 | 95) && g.sram_at.is_some_and(|t| t >= x.ts - EVENT_HOLD_MS) {
                    class = FaultClass::GpuSramUncorrectable;
                }
                let name = xid::lookup(x.xid).map(|i| i.category.as_str()).unwrap_or("unknown");
                let mut s = Symptom::new(
                    id.clone(),
                    K::XidFatal,
                    x.ts,
                    format!("{id} raised XID {} ({name}){}", x.xid, caused(x.caused_by)),
                )
                .class(class)
                .xid(x.xid)
                .value(x.xid as f64);
                // A contained error (94) needs the application restarted, not the GPU: no page.
                if !matches!(class, FaultClass::GpuEccSbeStorm) && !contained {
                    s = s.critical();
                }
                out.push(s);
            }
            XidClass::App if x.ts > now - APP_XID_WINDOW_MS => {
                app += 1;
                app_first = Some(x.ts);
            }
            _ => {}
        }
    }
    if app >= APP_XID_REPEAT {
        out.push(
            Symptom::new(
                id.clone(),
                K::XidAppRepeated,
                app_first.unwrap_or(now),
                format!("{id} raised {app} application XIDs in 10 minutes"),
            )
            .value(app as f64),
        );
    }
    if let Some(t) = g.dbe_at.or(g.ecc_dbe_event_at).filter(|t| *t > now - EVENT_HOLD_MS) {
        out.push(
            Symptom::new(
                id.clone(),
                K::EccDbe,
                t,
                format!("{id} volatile uncorrectable (DBE) ECC count rose to {}", g.dbe.value().unwrap_or(0)),
            )
            .class(FaultClass::GpuHbmUncorrectable)
            .critical(),
        );
    }
    if let Some(t) = g.sram_at.filter(|t| *t > now - EVENT_HOLD_MS) {
        out.push(
            Symptom::new(
                id.clone(),
                K::SramUncorrectable,
                t,
                format!("{id} SRAM uncorrectable ECC count rose to {}", g.sram.value().unwrap_or(0)),
            )
            .class(FaultClass::GpuSramUncorrectable)
            .critical(),
        );
    }
    let last_ts = g.points.back().map(|p| p.ts).unwrap_or(now);
    if g.remap_failure {
        out.push(
            Symptom::new(id.clone(), K::RowRemapFailure, last_ts, format!("{id} reports a row-remapping failure"))
                .class(FaultClass::GpuRowRemapFailure)
                .critical(),
        );
    }
    if g.remap_pending {
        out.push(Symptom::new(id.clone(), K::RowRemapPending, last_ts, format!("{id} has a row remap pending")));
    }
    let sbe = g.sbe.sum_since(now - SBE_STORM_WINDOW_MS);
    if sbe >= SBE_STORM_COUNT && g.sbe.increases_since(now - SBE_STORM_WINDOW_MS) >= 2 {
        let onset = g.sbe.deltas.iter().find(|(t, d)| *t > now - SBE_STORM_WINDOW_MS && *d > 0).map(|x| x.0);
        out.push(
            Symptom::new(
                id.clone(),
                K::SbeStorm,
                onset.unwrap_or(now),
                format!("{id} logged {sbe} correctable ECC errors in the last 2 minutes"),
            )
            .class(FaultClass::GpuEccSbeStorm),
        );
    }
    // Throttling from the violation counters' growth where the agent reports them.
    let shares = recent(&g.points, THROTTLE_SAMPLES).map(|pts| {
        // The mean share, if every point has one.
        let mean = |share: fn(&GpuPoint) -> Option<f64>| -> Option<f64> {
            let mut sum = 0.0;
            for p in pts.iter() {
                sum += share(p)?;
            }
            Some(sum / pts.len().max(1) as f64)
        };
        (mean(|p| p.thermal_share), mean(|p| p.brake_share), pts.first().ts)
    });
    let (thermal_share, brake_share, share_onset) = shares.unwrap_or((None, None, now));
    if let Some(pts) = recent(&g.points, SOFT_SAMPLES) {
        let onset = pts.first().ts;
        let hot = pts.iter().all(|p| p.temp_c.is_some_and(|t| t >= THERMAL_TEMP_C));
        let thermal = match thermal_share {
            Some(sh) => sh >= THROTTLE_SHARE,
            None => pts.iter().all(|p| p.thermal),
        };
        if thermal || hot {
            let t = pts.last().and_then(|p| p.temp_c).unwrap_or(0.0);
            let onset = if thermal_share.is_some() && !hot { share_onset } else { onset };
            out.push(
                Symptom::new(
                    id.clone(),
                    K::ThermalThrottle,
                    onset,
                    format!("{id} is thermally throttled at {t:.0} °C for {} samples", pts.len()),
                )
                .class(FaultClass::GpuThermalThrottle)
                .value(t),
            );
        }
        let brake = match brake_share {
            Some(sh) => sh >= THROTTLE_SHARE,
            None => pts.iter().all(|p| p.power_brake),
        };
        if brake {
            let w = pts.last().and_then(|p| p.power_w).unwrap_or(0.0);
            let onset = if brake_share.is_some() { share_onset } else { onset };
            out.push(
                Symptom::new(
                    id.clone(),
                    K::PowerBrake,
                    onset,
                    format!("{id} has HW power brake slowdown active for {} samples at {w:.0} W", pts.len()),
                )
                .class(FaultClass::GpuPowerBrake)
                .value(w),
            );
        }
        if let Some(peer) = peers.sm_median.filter(|m| *m > 0.0) {
            if pts.iter().all(|p| p.sm_mhz.is_some_and(|c| (c as f64) < CLOCK_LOW_FRACTION * peer)) {
                let c = pts.last().and_then(|p| p.sm_mhz).unwrap_or(0);
                out.push(
                    Symptom::new(
                        id.clone(),
                        K::ClockLow,
                        onset,
                        format!(
                            "{id} SM clock {c} MHz is {:.0}% below the node's other GPUs ({peer:.0} MHz)",
                            100.0 * (1.0 - c as f64 / peer)
                        ),
                    )
                    .value(c as f64),
                );
            }
        }
        let narrow = pts.iter().all(|p| p.pcie_width.is_some_and(|(w, m)| w < m));
        let replays: u64 = g.pcie_replay.last_n(SOFT_SAMPLES).sum();
        let replaying = g.pcie_replay.consecutive_increases() >= SOFT_SAMPLES;
        // An idle GPU drops its PCIe generation to save power; busy or replaying, it should not.
        let slow_gen = pts.iter().all(|p| {
            p.pcie_gen.is_some_and(|(c, m)| c < m) && (replaying || p.util.is_some_and(|u| u > PCIE_BUSY_UTIL))
        });
        if narrow || slow_gen {
            let p = pts.last().map(|p| (*p).clone()).unwrap_or_default();
            let (w, mw) = p.pcie_width.unwrap_or((0, 0));
            let (c, mg) = p.pcie_gen.unwrap_or((0, 0));
            out.push(
                Symptom::new(
                    id.clone(),
                    K::PcieDegraded,
                    onset,
                    format!("{id} PCIe link trained at x{w} Gen{c} (max x{mw} Gen{mg}); {replays} replays in the last samples"),
                )
                .class(FaultClass::PcieDowntrained),
            );
        }
    }
    // PCIe AER lines naming this GPU: evidence for a PCIe or bus fault, never one alone.
    let aer: Vec<&(i64, bool)> = g.aer.iter().filter(|(t, _)| *t > now - EVENT_HOLD_MS).collect();
    if let Some((t, _)) = aer.first() {
        let unc = aer.iter().filter(|(_, u)| *u).count();
        out.push(Symptom::new(
            id.clone(),
            K::PcieAer,
            *t,
            format!("{id} PCIe AER: {} corrected, {unc} uncorrected errors in the kernel log", aer.len() - unc),
        ));
    }
    // NVLinks: a link seen up that is now inactive is down; error counters rising every sample is a storm.
    for (link, l) in &g.nvlinks {
        // Named only when it has a symptom: 18 links a GPU, on every report.
        let lid = || ComponentId::nvlink(host, idx, *link);
        if let (Some(t), true) = (l.inactive_since, l.seen_active) {
            let lid = lid();
            out.push(
                Symptom::new(lid.clone(), K::NvlinkDown, t, format!("{lid} is inactive"))
                    .class(FaultClass::NvlinkDown)
                    .critical(),
            );
            continue;
        }
        // (sum of the last samples' deltas, whether there are SOFT_SAMPLES of them and all moved)
        let sum = |c: &crate::state::Counter| -> (u64, bool) {
            let (mut sum, mut n, mut all) = (0u64, 0usize, true);
            for d in c.last_n(SOFT_SAMPLES) {
                sum += d;
                n += 1;
                all &= d > 0;
            }
            (sum, n == SOFT_SAMPLES && all)
        };
        let (crc, crc_all) = sum(&l.crc);
        let (rep, rep_all) = sum(&l.replay);
        let (rec, rec_all) = sum(&l.recovery);
        if crc + rep + rec >= NVLINK_ERR_MIN && (crc_all || rep_all || rec_all) {
            let onset = [&l.crc, &l.replay, &l.recovery]
                .iter()
                .filter_map(|c| c.deltas.iter().rev().nth(SOFT_SAMPLES - 1).map(|x| x.0))
                .min()
                .unwrap_or(now);
            let lid = lid();
            out.push(
                Symptom::new(
                    lid.clone(),
                    K::NvlinkErrors,
                    onset,
                    format!("{lid} counted {crc} CRC, {rep} replay and {rec} recovery errors over the last {SOFT_SAMPLES} samples"),
                )
                .class(FaultClass::NvlinkCrcStorm)
                .value((crc + rep + rec) as f64),
            );
        }
    }
}

/// Node-level GPU findings: GPUs the node should have and does not report (also right after boot,
/// when the analyzer never saw the missing one), and the power brake on several GPUs at once (the
/// node's power, not each GPU). Reads the node and the GPU symptoms already in `out`.
pub fn check_node(n: &crate::state::NodeState, now: i64, out: &mut Vec<Symptom>) {
    let node = ComponentId::node(&n.name);
    if let Some(expected) = n.expected_gpus.filter(|_| n.reports > 0) {
        let reported = n.gpus_reported as u32;
        let known_missing = n.gpus.values().filter(|g| g.missing_since.is_some()).count() as u32;
        if reported + known_missing < expected {
            out.push(
                Symptom::new(
                    node.clone(),
                    K::GpuLost,
                    n.first_seen_ms.max(n.last_report_ms - n.interval_ms as i64).min(now),
                    format!(
                        "{} reports {reported} GPUs of the {expected} it should have; which one is missing is unknown (NVML renumbers the rest)",
                        n.name
                    ),
                )
                .class(FaultClass::GpuLost)
                .critical()
                .value((expected - reported) as f64),
            );
        }
    }
    let braked: Vec<&Symptom> =
        out.iter().filter(|s| s.kind == K::PowerBrake && s.component.host() == Some(&n.name)).collect();
    if braked.len() >= NODE_BRAKE_GPUS {
        let onset = braked.iter().map(|s| s.onset_ms).min().unwrap_or(now);
        let gpus: Vec<String> = braked.iter().map(|s| s.component.to_string()).collect();
        out.push(
            Symptom::new(
                node,
                K::PowerBrake,
                onset,
                format!(
                    "{} GPUs of {} are held by the power brake at once ({}): the node's power",
                    gpus.len(),
                    n.name,
                    gpus.join(", ")
                ),
            )
            .class(FaultClass::GpuPowerBrake)
            .value(gpus.len() as f64),
        );
    }
}

fn caused(by: Option<u32>) -> String {
    by.map(|x| format!(", caused by previous XID {x}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{GpuPoint, NvLinkState, XidSeen};
    use faultline_proto::GpuState as Wire;

    const NOW: i64 = 1_000_000;

    fn pts(n: usize, f: impl Fn(usize) -> GpuPoint) -> std::collections::VecDeque<GpuPoint> {
        (0..n).map(|i| GpuPoint { ts: NOW - (n - i) as i64 * 10_000, ..f(i) }).collect()
    }

    fn normal(_: usize) -> GpuPoint {
        GpuPoint {
            temp_c: Some(70.0),
            sm_mhz: Some(1980),
            sm_max_mhz: Some(1980),
            util: Some(95.0),
            pcie_width: Some((16, 16)),
            pcie_gen: Some((5, 5)),
            ..Default::default()
        }
    }

    fn kinds(g: &GpuState, peers: &GpuPeers) -> Vec<(K, Option<FaultClass>)> {
        let mut out = Vec::new();
        check("n", 0, g, peers, NOW, &mut out);
        out.into_iter().map(|s| (s.kind, s.class)).collect()
    }

    fn check_case(name: &str, g: GpuState, peers: GpuPeers, want: &[(K, Option<FaultClass>)]) {
        assert_eq!(kinds(&g, &peers), want, "case {name}");
    }

    fn xids(list: &[(i64, u32)]) -> std::collections::VecDeque<XidSeen> {
        list.iter().map(|(t, x)| XidSeen { ts: *t, xid: *x, caused_by: None, class: xid::classify(*x) }).collect()
    }

    #[test]
    fn gpu_detector_table() {
        use FaultClass::*;
        let healthy = || GpuState { points: pts(5, normal), ..Default::default() };
        let peers = GpuPeers { sm_median: Some(1980.0), fatal_xid_hold_ms: EVENT_HOLD_MS };
        check_case("healthy", healthy(), peers.clone(), &[]);
        check_case(
            "lost",
            GpuState { lost_since: Some(NOW - 1), state: Wire::Lost, ..healthy() },
            peers.clone(),
            &[(K::GpuLost, Some(GpuLost))],
        );
        check_case(
            "missing from the list",
            GpuState { missing_since: Some(NOW - 1), ..healthy() },
            peers.clone(),
            &[(K::GpuLost, Some(GpuLost))],
        );
        check_case(
            "unresponsive",
            GpuState { unresponsive_since: Some(NOW - 1), ..healthy() },
            peers.clone(),
            &[(K::GpuUnresponsive, Some(GpuGspHang))],
        );
        check_case(
            "xid 79",
            GpuState { xids: xids(&[(NOW - 500, 79)]), ..healthy() },
            peers.clone(),
            &[(K::XidFatal, Some(GpuLost))],
        );
        check_case(
            "xid 119 old is forgotten",
            GpuState { xids: xids(&[(NOW - EVENT_HOLD_MS - 1, 119)]), ..healthy() },
            peers.clone(),
            &[],
        );
        check_case("one xid 13 is noise", GpuState { xids: xids(&[(NOW - 500, 13)]), ..healthy() }, peers.clone(), &[]);
        check_case(
            "xid 45 is a consequence",
            GpuState { xids: xids(&[(NOW - 500, 45)]), ..healthy() },
            peers.clone(),
            &[],
        );
        check_case(
            "three xid 31 on one gpu",
            GpuState { xids: xids(&[(NOW - 500, 31), (NOW - 400, 31), (NOW - 300, 13)]), ..healthy() },
            peers.clone(),
            &[(K::XidAppRepeated, None)],
        );
        let mut sram = healthy();
        sram.sram_at = Some(NOW - 100);
        sram.xids = xids(&[(NOW - 100, 95)]);
        check_case(
            "xid 95 with SRAM count is SRAM",
            sram,
            peers.clone(),
            &[(K::XidFatal, Some(GpuSramUncorrectable)), (K::SramUncorrectable, Some(GpuSramUncorrectable))],
        );
        check_case(
            "dbe",
            GpuState { dbe_at: Some(NOW - 100), remap_pending: true, ..healthy() },
            peers.clone(),
            &[(K::EccDbe, Some(GpuHbmUncorrectable)), (K::RowRemapPending, None)],
        );
        check_case(
            "remap failure",
            GpuState { remap_failure: true, ..healthy() },
            peers.clone(),
            &[(K::RowRemapFailure, Some(GpuRowRemapFailure))],
        );
        let mut storm = healthy();
        for (i, v) in [0u64, 1, 80, 200, 330].iter().enumerate() {
            storm.sbe.update(NOW - 50_000 + i as i64 * 10_000, *v);
        }
        check_case("sbe storm", storm, peers.clone(), &[(K::SbeStorm, Some(GpuEccSbeStorm))]);
        let mut single = healthy();
        for (i, v) in [0u64, 1, 1, 1].iter().enumerate() {
            single.sbe.update(NOW - 40_000 + i as i64 * 10_000, *v);
        }
        check_case("single sbe is noise", single, peers.clone(), &[]);
        check_case(
            "thermal 3 samples",
            GpuState {
                points: pts(4, |i| {
                    if i == 0 {
                        normal(i)
                    } else {
                        GpuPoint { thermal: true, temp_c: Some(89.0), sm_mhz: Some(1300), ..normal(i) }
                    }
                }),
                ..Default::default()
            },
            peers.clone(),
            &[(K::ThermalThrottle, Some(GpuThermalThrottle)), (K::ClockLow, None)],
        );
        check_case(
            "thermal 2 samples is not yet",
            GpuState {
                points: pts(4, |i| if i < 2 { normal(i) } else { GpuPoint { thermal: true, ..normal(i) } }),
                ..Default::default()
            },
            peers.clone(),
            &[],
        );
        check_case(
            "+2 °C noise",
            GpuState { points: pts(4, |i| GpuPoint { temp_c: Some(72.0), ..normal(i) }), ..Default::default() },
            peers.clone(),
            &[],
        );
        check_case(
            "power brake",
            GpuState {
                points: pts(3, |i| GpuPoint { power_brake: true, sm_mhz: Some(1900), ..normal(i) }),
                ..Default::default()
            },
            peers.clone(),
            &[(K::PowerBrake, Some(GpuPowerBrake))],
        );
        check_case(
            "pcie x8",
            GpuState { points: pts(3, |i| GpuPoint { pcie_width: Some((8, 16)), ..normal(i) }), ..Default::default() },
            peers.clone(),
            &[(K::PcieDegraded, Some(PcieDowntrained))],
        );
        check_case(
            "pcie gen low while idle is power saving",
            GpuState {
                points: pts(3, |i| GpuPoint { pcie_gen: Some((1, 5)), util: Some(0.0), ..normal(i) }),
                ..Default::default()
            },
            peers.clone(),
            &[],
        );
        let mut nv = healthy();
        nv.nvlinks.insert(
            2,
            NvLinkState { active: false, seen_active: true, inactive_since: Some(NOW - 10), ..Default::default() },
        );
        nv.nvlinks.insert(
            3,
            NvLinkState { active: false, seen_active: false, inactive_since: Some(NOW - 10), ..Default::default() },
        );
        let mut out = Vec::new();
        check("n", 0, &nv, &peers, NOW, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].component, ComponentId::nvlink("n", 0, 2));
        let mut crc = healthy();
        let mut l = NvLinkState { active: true, seen_active: true, ..Default::default() };
        for (i, v) in [0u64, 10, 30, 60].iter().enumerate() {
            l.crc.update(NOW - 40_000 + i as i64 * 10_000, *v);
        }
        crc.nvlinks.insert(1, l);
        check_case("nvlink crc storm", crc, peers.clone(), &[(K::NvlinkErrors, Some(NvlinkCrcStorm))]);
    }

    #[test]
    fn xid_meanings_follow_the_catalog() {
        use FaultClass::*;
        let healthy = || GpuState { points: pts(5, normal), ..Default::default() };
        let peers = GpuPeers { sm_median: Some(1980.0), fatal_xid_hold_ms: EVENT_HOLD_MS };
        // 94: contained, the application restarts; a GPU fault but no page.
        let mut out = Vec::new();
        check("n", 0, &GpuState { xids: xids(&[(NOW - 500, 94)]), ..healthy() }, &peers, NOW, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].class, out[0].severity), (Some(GpuHbmUncorrectable), faultline_proto::Severity::Warning));
        // 144 with a non-fatal status word pages nobody; a fatal one is the NVLink.
        let line = |status: &str| {
            format!(
                "NVRM: Xid (PCI:0000:01:00): 144, SAW_MVB Nonfatal XC0 i0 Link 0 (0x00000001 {status} 0x0 0x0 0x0 0x0)"
            )
        };
        let seen =
            |msg: &str| XidSeen { ts: NOW - 500, xid: 144, caused_by: None, class: xid::classify_event(144, msg) };
        check_case(
            "144 non-fatal",
            GpuState { xids: [seen(&line("0x00000008"))].into(), ..healthy() },
            peers.clone(),
            &[],
        );
        check_case(
            "144 fatal",
            GpuState { xids: [seen(&line("0x00000002"))].into(), ..healthy() },
            peers.clone(),
            &[(K::XidFatal, Some(NvlinkDown))],
        );
    }

    #[test]
    fn an_nvml_error_is_checked_against_the_kernel_and_pci_before_gsp_hang() {
        use FaultClass::*;
        let peers = GpuPeers::default();
        let unknown = || GpuState {
            unresponsive_since: Some(NOW - 5000),
            nvml_error: Some("Unknown Error".into()),
            pci_present: Some(true),
            ..Default::default()
        };
        check_case("unknown error alone", unknown(), peers.clone(), &[(K::GpuUnresponsive, Some(GpuGspHang))]);
        check_case(
            "unknown error and XID 79",
            GpuState { fell_off_at: Some(NOW - 4000), xids: xids(&[(NOW - 4000, 79)]), ..unknown() },
            peers.clone(),
            &[(K::GpuLost, Some(GpuLost)), (K::XidFatal, Some(GpuLost))],
        );
        check_case(
            "unknown error and no PCI device",
            GpuState { pci_present: Some(false), ..unknown() },
            peers.clone(),
            &[(K::GpuLost, Some(GpuLost))],
        );
    }

    #[test]
    fn throttling_is_judged_from_violation_time_growth() {
        use FaultClass::*;
        let peers = GpuPeers { sm_median: Some(1980.0), fatal_xid_hold_ms: EVENT_HOLD_MS };
        // The counters say 70% of the last two intervals were braked, though no snapshot caught it.
        let braked = GpuState {
            points: pts(3, |i| GpuPoint {
                brake_share: Some(if i == 0 { 0.0 } else { 0.7 }),
                thermal_share: Some(0.0),
                ..normal(i)
            }),
            ..Default::default()
        };
        check_case("brake share", braked, peers.clone(), &[(K::PowerBrake, Some(GpuPowerBrake))]);
        // Three snapshots with the flag up, but the counters say 5% of the time: a blip, not a brake.
        let blips = GpuState {
            points: pts(3, |i| GpuPoint {
                power_brake: true,
                brake_share: Some(0.05),
                thermal_share: Some(0.0),
                ..normal(i)
            }),
            ..Default::default()
        };
        check_case("snapshots against counters", blips, peers.clone(), &[]);
        // Without counters, the snapshot mask is the fallback.
        let old = GpuState { points: pts(3, |i| GpuPoint { power_brake: true, ..normal(i) }), ..Default::default() };
        check_case("mask fallback", old, peers, &[(K::PowerBrake, Some(GpuPowerBrake))]);
    }

    #[test]
    fn node_level_gpu_findings() {
        use crate::state::NodeState;
        let node = |reported: usize| NodeState {
            name: "n".into(),
            reports: 1,
            last_report_ms: NOW,
            interval_ms: 10_000,
            expected_gpus: Some(8),
            gpus_reported: reported,
            ..Default::default()
        };
        let mut out = Vec::new();
        check_node(&node(7), NOW, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].component.to_string(), out[0].class), ("n".to_string(), Some(FaultClass::GpuLost)));
        let mut out = Vec::new();
        check_node(&node(8), NOW, &mut out);
        assert!(out.is_empty());
        // Two GPUs braked at once: the node's power.
        let brake = |g: u32| {
            Symptom::new(ComponentId::gpu("n", g), K::PowerBrake, NOW, String::new()).class(FaultClass::GpuPowerBrake)
        };
        let mut out = vec![brake(1), brake(5)];
        check_node(&node(8), NOW, &mut out);
        assert_eq!(out.last().map(|s| (s.component.to_string(), s.kind)), Some(("n".to_string(), K::PowerBrake)));
    }
}
