//! Deterministic randomness and the baseline noise model of spec/fault-catalog.md ("noise that must
//! not raise incidents"), scaled by the scenario's `noise`.
//!
//! Randomness is stateless: every draw hashes (seed, what, which entity, when) with SplitMix64, so a
//! value never depends on the order in which reports are generated. Same seed, same run.

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash step.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a key of several parts into 64 bits.
#[inline]
pub fn hash(parts: &[u64]) -> u64 {
    let mut h = 0x6A09_E667_F3BC_C909u64;
    for &p in parts {
        h = mix(h ^ p);
    }
    h
}

/// Uniform in [0, 1).
#[inline]
pub fn unit(parts: &[u64]) -> f64 {
    (hash(parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [-1, 1).
#[inline]
pub fn sym(parts: &[u64]) -> f64 {
    unit(parts) * 2.0 - 1.0
}

/// Uniform in [lo, hi).
#[inline]
pub fn range(parts: &[u64], lo: f64, hi: f64) -> f64 {
    lo + unit(parts) * (hi - lo)
}

/// A stable 64-bit tag for a string (job ids, purposes).
pub fn tag(s: &str) -> u64 {
    // FNV-1a, then mixed.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h)
}

/// Purposes: the second part of every key, so that independent draws never collide.
pub mod what {
    pub const STEP_JITTER: u64 = 1;
    pub const UTIL: u64 = 2;
    pub const TEMP: u64 = 3;
    pub const SBE_TICK: u64 = 4;
    pub const SYMBOL_TICK: u64 = 5;
    pub const APP_XID: u64 = 6;
    pub const APP_XID_KIND: u64 = 7;
    pub const CHECKPOINT: u64 = 8;
    pub const REBOOT: u64 = 9;
    pub const PLACEMENT: u64 = 10;
    pub const PHASE: u64 = 11;
    pub const LATENCY: u64 = 12;
    pub const FAULT: u64 = 13;
    pub const STATIC: u64 = 14;
    pub const LOSS: u64 = 15;
    pub const COMPUTE: u64 = 16;
    pub const POWER: u64 = 17;
    pub const HOST: u64 = 18;
    pub const PID: u64 = 19;
    pub const TRAFFIC: u64 = 20;
}

/// Step-time jitter, ±fraction at noise 1 (catalog: "±2% step-time jitter").
pub const STEP_JITTER_FRAC: f64 = 0.02;
/// GPU utilization jitter, ± percentage points at noise 1 (catalog: "±3% GPU util").
pub const UTIL_JITTER_PCT: f64 = 3.0;
/// Temperature jitter, ± °C at noise 1 (catalog: "±2 °C").
pub const TEMP_JITTER_C: f64 = 2.0;
/// Single correctable ECC errors on healthy GPUs, per GPU-hour at noise 1. Field data shows a few
/// isolated CEs per GPU per month to per day; one per 20 GPU-hours keeps them "occasional".
pub const SBE_TICKS_PER_GPU_HOUR: f64 = 0.05;
/// Single `symbol_error` ticks on healthy IB ports, per port-hour at noise 1 (the H100 sample in
/// shared/data shows small non-zero error counts on healthy ports after weeks of uptime).
pub const SYMBOL_TICKS_PER_NIC_HOUR: f64 = 0.1;
/// Application XIDs 13/31/43 that kill nothing, per node-day at noise 1 ("rare").
pub const APP_XIDS_PER_NODE_DAY: f64 = 0.5;
/// cgroup OOM kills of helper processes (data loaders, sidecars; not ranks), per node-day at noise 1.
pub const CGROUP_OOMS_PER_NODE_DAY: f64 = 0.2;
/// Planned reboots of idle nodes, per node-day at noise 1 (maintenance, kernel updates).
pub const PLANNED_REBOOTS_PER_NODE_DAY: f64 = 0.05;
/// How long a planned reboot keeps the node away, seconds ("back minutes later").
pub const PLANNED_REBOOT_DOWN_S: (f64, f64) = (180.0, 480.0);
/// How long the agent takes from a kernel/NVML event to an urgent push, ms (kmsg poll + HTTP).
pub const URGENT_PUSH_LATENCY_MS: (f64, f64) = (20.0, 150.0);
/// Network latency from agent to analyzer on the management network, ms.
pub const NET_LATENCY_MS: (f64, f64) = (1.0, 5.0);

/// The baseline noise of one run.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    pub seed: u64,
    /// Scenario `noise`: 0 = perfectly clean signals.
    pub level: f64,
}

impl Noise {
    pub fn new(seed: u64, level: f64) -> Self {
        Self { seed, level }
    }

    /// Multiplicative jitter 1 ± level·frac.
    pub fn jitter(&self, what: u64, a: u64, b: u64, frac: f64) -> f64 {
        1.0 + self.level * frac * sym(&[self.seed, what, a, b])
    }

    /// Additive jitter ± level·amp.
    pub fn plus(&self, what: u64, a: u64, b: u64, amp: f64) -> f64 {
        self.level * amp * sym(&[self.seed, what, a, b])
    }

    /// Whether a Poisson process of `per_hour` (at noise 1) fires in a window of `window_s`.
    pub fn fires(&self, what: u64, a: u64, b: u64, per_hour: f64, window_s: f64) -> bool {
        let p = 1.0 - (-self.level * per_hour * window_s / 3600.0).exp();
        unit(&[self.seed, what, a, b]) < p
    }

    /// A uniform draw that does not scale with the noise level (structural randomness).
    pub fn draw(&self, what: u64, a: u64, b: u64) -> f64 {
        unit(&[self.seed, what, a, b])
    }
}

/// A small sequential generator for the places where order is natural (placement).
#[derive(Debug, Clone)]
pub struct SeqRng(u64);

impl SeqRng {
    pub fn new(seed: u64, what: u64) -> Self {
        Self(hash(&[seed, what]))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_deterministic_and_in_range() {
        for i in 0..1000u64 {
            let u = unit(&[7, 1, i]);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, unit(&[7, 1, i]));
            let s = sym(&[7, 2, i]);
            assert!((-1.0..1.0).contains(&s));
        }
        assert_ne!(unit(&[7, 1, 1]), unit(&[8, 1, 1]));
    }

    #[test]
    fn zero_noise_is_perfectly_clean() {
        let n = Noise::new(3, 0.0);
        for i in 0..100 {
            assert_eq!(n.jitter(what::STEP_JITTER, i, 0, 0.02), 1.0);
            assert_eq!(n.plus(what::TEMP, i, 0, 2.0), 0.0);
            assert!(!n.fires(what::APP_XID, i, 0, 1000.0, 10.0));
        }
    }

    #[test]
    fn poisson_rate_is_about_right() {
        let n = Noise::new(1, 1.0);
        let hits = (0..100_000u64).filter(|&i| n.fires(what::SBE_TICK, i, 0, 36.0, 10.0)).count();
        // p = 1 - exp(-0.1) ≈ 0.0952
        assert!((9_000..10_000).contains(&hits), "{hits}");
    }
}
