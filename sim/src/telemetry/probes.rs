//! Active fabric probe results (pingmesh) as an agent with `[probe] enabled = true` reports them,
//! when the scenario's `[probes]` turns them on: each node probes a small rotating set of peers
//! (half on its own leaf, half elsewhere), NIC k to the peer's NIC k, and reports per path what was
//! sent, what came back and the median and largest round trip. Loss comes from the active faults
//! that sit on the path: a leaf dropping silently loses a share of what crosses it, a NIC or leaf
//! that is down (or flapping down) and a silent peer lose everything, a NIC that resets connections
//! loses a share; otherwise a healthy fabric's rare single losses and a little jitter.

use faultline_proto::{FaultClass, NicSample, ProbeSample};

use crate::noise::{self, Noise};
use crate::realism::ProbeSpec;
use crate::world::World;

/// How long one pinglist rotation lasts (the analyzer's `ROTATE_MS`).
const ROTATE_MS: i64 = 300_000;
/// Share of the packets crossing a silently dropping leaf that it loses. Silent drops seen in
/// production (Pingmesh, SIGCOMM 2015; 007, NSDI 2018) run from fractions of a percent to tens of
/// percent; 20% makes one minute of probes unambiguous while the leaf's port counters say nothing.
const SILENT_DROP_SHARE: f64 = 0.20;
/// Share of probes lost through a NIC whose optic resets connections without bit errors.
const RESET_LOSS_SHARE: f64 = 0.10;
/// A healthy path's loss per probe, at noise 1: about 1e-4 (Pingmesh's intra-DC drop rates).
const HEALTHY_LOSS: f64 = 1e-4;
/// A healthy round trip through the kernel's UDP stack on both ends, µs.
const BASE_RTT_US: f64 = 45.0;
/// Probe kind for noise keys (distinct from `noise::what`'s).
const WHAT_PROBE: u64 = 0x7072_6f62;

/// The peers node `n` probes in the rotation that holds `ts`: half from its own leaf (NIC 0's),
/// half from anywhere else, drawn without scanning the cluster.
fn peers(w: &World, spec: &ProbeSpec, n: usize, ts: i64) -> Vec<usize> {
    let c = &w.cluster;
    let total = c.nodes.len();
    let want = (spec.peers as usize).min(total.saturating_sub(1));
    let rot = ts.div_euclid(ROTATE_MS) as u64;
    let leaf = c.leaf_of(n, 0);
    let same: Vec<usize> = c.nics_of_leaf(leaf).into_iter().filter(|(_, k)| *k == 0).map(|(m, _)| m).collect();
    let mut out: Vec<usize> = Vec::new();
    let key = |salt: u64, i: u64| noise::hash(&[w.seed, WHAT_PROBE, n as u64, rot, salt, i]);
    let half = want.div_ceil(2).min(same.len().saturating_sub(1));
    draw(&mut out, n, half, |i| same[(key(1, i) % same.len() as u64) as usize]);
    draw(&mut out, n, want, |i| (key(2, i) % total as u64) as usize);
    out.truncate(want);
    out
}

/// Adds distinct peers (never `n`) from `pick(0), pick(1), …` until `out` holds `upto`, giving up
/// after a few tries per wanted peer (a small pool has fewer).
fn draw(out: &mut Vec<usize>, n: usize, upto: usize, pick: impl Fn(u64) -> usize) {
    for i in 0..(upto as u64 * 4) {
        if out.len() >= upto {
            return;
        }
        let m = pick(i);
        if m != n && !out.contains(&m) {
            out.push(m);
        }
    }
}

/// Share of probes lost on the path from (n, k) to (p, k) at `ts`, from the faults on it.
fn path_loss(w: &World, n: usize, p: usize, k: u32, ts: i64) -> f64 {
    if w.silence(p, ts).is_some() {
        return 1.0;
    }
    let c = &w.cluster;
    let ends = [(n, c.leaf_of(n, k)), (p, c.leaf_of(p, k))];
    let mut pass = 1.0;
    for f in w.faults.iter().filter(|f| f.active(ts)) {
        let on_nic = ends.iter().any(|(m, _)| f.node == Some(*m) && f.nic.is_none_or(|x| x == k));
        let on_leaf = f.leaf.is_some_and(|l| ends.iter().any(|(_, el)| *el == l));
        let lost = match f.kind() {
            FaultClass::SwitchSilentDrop if on_leaf => SILENT_DROP_SHARE,
            FaultClass::LeafSwitchDown if on_leaf => 1.0,
            FaultClass::NicDown if on_nic && f.nic.is_some() => 1.0,
            FaultClass::NicFlap if on_nic && f.nic.is_some() && f.flap_down(ts) => 1.0,
            FaultClass::NicConnectionResets if on_nic && f.nic.is_some() => RESET_LOSS_SHARE,
            _ => 0.0,
        };
        pass *= 1.0 - lost;
    }
    1.0 - pass
}

/// Node `n`'s probe samples for the interval ending at `ts` (`dt_s` long), over its fabric NICs.
pub fn fill(w: &World, spec: &ProbeSpec, n: usize, ts: i64, dt_s: f64, nics: &[NicSample]) -> Vec<ProbeSample> {
    // Fabric NICs only (mlx5_0, mlx5_1, …), in rail order; the management and virtual netdevs the
    // realistic world also reports are not probed.
    let mut fabric: Vec<String> = Vec::new();
    // Their addresses (`crate::addrs::nic`, rail k's subnet) are already in the samples.
    for nic in nics.iter().filter(|x| x.is_fabric()) {
        fabric.push(nic.name.clone());
    }
    let rails = fabric.len() as u32;
    let peers = peers(w, spec, n, ts);
    let paths = (peers.len() as u32 * rails).max(1);
    let sent = ((spec.rate_pps * dt_s) / f64::from(paths)).round().max(0.0) as u32;
    if sent == 0 {
        return Vec::new();
    }
    let noise: Noise = w.noise;
    let mut out = Vec::new();
    for &p in &peers {
        for k in 0..rails {
            let loss = (path_loss(w, n, p, k, ts) + HEALTHY_LOSS * noise.level).min(1.0);
            let key = |i: u64| [w.seed, WHAT_PROBE, n as u64, p as u64, u64::from(k), ts as u64, i];
            let received = (0..sent).filter(|&i| noise::unit(&key(u64::from(i))) >= loss).count() as u32;
            let rtt = |i: u64| BASE_RTT_US * (1.0 + 0.3 * noise.level * noise::unit(&key(1_000 + i)));
            let (p50, max) = if received > 0 {
                let mut r: Vec<f64> = (0..u64::from(received)).map(rtt).collect();
                r.sort_by(|a, b| a.total_cmp(b));
                (Some(r[r.len() / 2].round() as u32), r.last().map(|m| m.round() as u32))
            } else {
                (None, None)
            };
            out.push(ProbeSample {
                peer: w.cluster.nodes[p].name.clone(),
                iface: fabric[k as usize].clone(),
                local_addr: crate::addrs::nic(n, k),
                peer_addr: crate::addrs::nic(p, k),
                sent,
                received,
                rtt_p50_us: p50,
                rtt_max_us: max,
            });
        }
    }
    out
}
