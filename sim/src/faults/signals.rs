//! What a fault puts into the report of a node it touches: GPU states, throttle reasons, counter
//! increments, links down. Only the signals spec/fault-catalog.md lists for the kind.

use faultline_proto::{FaultClass, GpuState};

use super::Fault;
use crate::cluster::Cluster;
use crate::node_state::{NicCounter as C, ReportCtx, throttle};
use crate::noise::{self, what};

impl Fault {
    /// Put this fault's signals into the report being built for node `ctx.node` (everything the
    /// catalog says an agent sees, and nothing else). Counter increments cover only the part of the
    /// report window during which the fault was active.
    pub fn apply(&self, cluster: &Cluster, ctx: &mut ReportCtx<'_>) {
        let (t0, t1) = (ctx.last_ts, ctx.ts);
        let on = self.active(t1);
        let dt = self.overlap_s(t0, t1);
        if !on && dt == 0.0 {
            return;
        }
        use FaultClass as K;
        let g = self.gpu.unwrap_or(0) as usize;
        if self.gpu.is_some() && ctx.crossed(self.end_ms) {
            // A GPU fault that clears was dealt with by a reset (or a new GPU).
            ctx.dynamic.gpus[g].reset();
        }
        match self.kind() {
            // Many fallen-off GPUs answer `Unknown Error`, not GPU_IS_LOST.
            K::GpuLost if on && self.p.nvml_lost => {
                ctx.gpu_state[g] = GpuState::Lost;
                ctx.nvml_error[g] = Some("GPU is lost");
            }
            K::GpuLost if on => {
                ctx.gpu_state[g] = GpuState::Unresponsive;
                ctx.nvml_error[g] = Some("Unknown Error");
            }
            K::GpuGspHang if on => {
                ctx.gpu_state[g] = GpuState::Unresponsive;
                ctx.nvml_error[g] = Some("Timeout");
            }
            K::GpuHbmUncorrectable => {
                if ctx.crossed(self.at_ms) {
                    let d = &mut ctx.dynamic.gpus[g];
                    if self.p.xid == 48 || self.p.xid == 95 {
                        d.dbe_vol += 1;
                        d.dbe_agg += 1;
                    }
                    d.remap_unc += 1;
                    d.remap_pending = true;
                }
            }
            K::GpuSramUncorrectable => {
                if ctx.crossed(self.at_ms) {
                    ctx.dynamic.gpus[g].sram_unc += 1;
                }
            }
            K::GpuThermalThrottle if on => {
                let s = &mut ctx.report.gpus[g];
                s.temp_c = Some(self.p.temp_c + ctx.noise.plus(what::TEMP, ctx.node as u64, t1 as u64 ^ 77, 0.7));
                s.mem_temp_c = s.temp_c.map(|t| t + 4.0);
                throttle(s, &[("sw_thermal_slowdown", 0x20), ("hw_thermal_slowdown", 0x40)], 0.70);
            }
            K::GpuPowerBrake if on => {
                let s = &mut ctx.report.gpus[g];
                throttle(s, &[("hw_power_brake_slowdown", 0x80)], 0.60);
                if let Some(l) = s.power_limit_w {
                    s.power_w = Some(l * self.p.rate);
                }
            }
            K::GpuSlow if on => {
                // Nothing on the GPU itself: only tensor activity above its waiting peers'.
                if let Some(t) = ctx.report.gpus[g].tensor_active_pct.as_mut() {
                    *t = (*t * (1.0 + self.p.slow * 0.5)).min(100.0);
                }
            }
            K::GpuEccSbeStorm => {
                let d = &mut ctx.dynamic.gpus[g];
                let n = (self.p.rate * dt).round() as u64;
                d.sbe_vol += n;
                d.sbe_agg += n;
            }
            K::GpuRowRemapFailure if on => ctx.dynamic.gpus[g].remap_failure = true,
            K::NvlinkDown => {
                let l = self.link.unwrap_or(0) as usize;
                let first = ctx.crossed(self.at_ms);
                let d = &mut ctx.dynamic.gpus[g];
                if first {
                    if let Some(c) = d.nvl.get_mut(l) {
                        c[0] += 40 + (noise::unit(&[self.seed, self.idx as u64, 1]) * 400.0) as u64;
                        c[1] += 200 + (noise::unit(&[self.seed, self.idx as u64, 2]) * 2000.0) as u64;
                        c[2] += 5 + (noise::unit(&[self.seed, self.idx as u64, 3]) * 40.0) as u64;
                    }
                }
                if on {
                    ctx.nvlink_down.push((g, l));
                }
            }
            K::NvlinkCrcStorm => {
                let l = self.link.unwrap_or(0) as usize;
                if let Some(c) = ctx.dynamic.gpus[g].nvl.get_mut(l) {
                    c[0] += (self.p.rate * dt).round() as u64;
                    c[1] += (self.p.rate2 * dt).round() as u64;
                }
            }
            K::PcieDowntrained => {
                ctx.dynamic.gpus[g].pcie_replay += (self.p.rate * dt).round() as u64;
                if on {
                    if let Some(p) = ctx.report.gpus[g].pcie.as_mut() {
                        if self.p.variant {
                            p.width = Some(8);
                        } else {
                            p.generation = Some(3);
                        }
                    }
                }
            }
            K::NicDown => {
                let k = self.nic.unwrap_or(0) as usize;
                if ctx.crossed(self.at_ms) {
                    ctx.dynamic.nics[k].c[C::LinkDowned as usize] += 1;
                    ctx.dynamic.nics[k].carrier_changes += 1;
                }
                if ctx.crossed(self.end_ms) {
                    ctx.dynamic.nics[k].carrier_changes += 1;
                }
                if on {
                    ctx.nic_down[k] = true;
                }
            }
            K::NicFlap => {
                let k = self.nic.unwrap_or(0) as usize;
                let (a, b) = (self.flaps_by(t0), self.flaps_by(t1));
                let d = &mut ctx.dynamic.nics[k];
                d.c[C::LinkDowned as usize] += b - a;
                d.c[C::LinkErrorRecovery as usize] += (b - a) * 2;
                d.carrier_changes += 2 * (b - a);
                if self.flap_down(t1) {
                    ctx.nic_down[k] = true;
                }
                ctx.nic_tput[k] *= 1.0 - self.p.slow;
            }
            K::CableBitErrors => {
                let k = self.nic.unwrap_or(0) as usize;
                let d = &mut ctx.dynamic.nics[k];
                let n = |r: f64| (r * dt).round() as u64;
                d.c[C::SymbolError as usize] += n(self.p.rate);
                d.c[C::PortRcvErrors as usize] += n(self.p.rate * 0.5);
                d.c[C::LocalLinkIntegrityErrors as usize] += n(self.p.rate * 0.05).max(u64::from(dt > 0.0));
                d.c[C::RoceAdpRetrans as usize] += n(self.p.rate2);
                d.c[C::OutOfSequence as usize] += n(self.p.rate2 * 0.7);
                if on {
                    ctx.nic_tput[k] *= self.p.frac;
                }
            }
            K::NicSpeedDegraded if on => {
                let k = self.nic.unwrap_or(0) as usize;
                ctx.nic_rate[k] = self.p.gbps;
            }
            K::LeafSwitchDown | K::LeafCongestion => {
                let n = ctx.node;
                for k in 0..cluster.spec.nics_per_node {
                    if !self.leaf_touches(cluster, n, k) {
                        continue;
                    }
                    let ku = k as usize;
                    if self.kind() == K::LeafSwitchDown {
                        if ctx.crossed(self.at_ms) {
                            ctx.dynamic.nics[ku].c[C::LinkDowned as usize] += 1;
                            ctx.dynamic.nics[ku].carrier_changes += 1;
                        }
                        if ctx.crossed(self.end_ms) {
                            ctx.dynamic.nics[ku].carrier_changes += 1;
                        }
                        if on {
                            ctx.nic_down[ku] = true;
                        }
                    } else {
                        ctx.nic_congested[ku] = self.p.rate;
                        let d = &mut ctx.dynamic.nics[ku];
                        let r = |x: f64| (x * dt).round() as u64;
                        d.c[C::NpEcnMarkedRocePackets as usize] += r(3000.0);
                        d.c[C::RpCnpHandled as usize] += r(2500.0);
                        d.c[C::NpCnpSent as usize] += r(2800.0);
                        d.c[C::RoceAdpRetrans as usize] += r(15.0);
                        if on {
                            ctx.nic_tput[ku] *= 1.0 - self.p.slow;
                        }
                    }
                }
            }
            K::HostFanFailure if on => {
                let r = self.ramp(t1);
                ctx.fan_failed = true;
                for &gi in &self.p.gpus {
                    let s = &mut ctx.report.gpus[gi as usize];
                    if let Some(t) = s.temp_c {
                        let hot = t + (self.p.temp_c - t) * r;
                        s.temp_c = Some(hot);
                        s.mem_temp_c = Some(hot + 4.0);
                        if hot >= 87.0 {
                            throttle(s, &[("sw_thermal_slowdown", 0x20), ("hw_thermal_slowdown", 0x40)], 0.72);
                        }
                    }
                }
            }
            K::HostOom if on => ctx.mem_full = true,
            K::HostMce => {}
            K::HostCpuContention if on => ctx.cpu_non_job = Some(self.p.frac * 100.0),
            K::DiskFailure if on => {
                if self.p.variant {
                    ctx.disk_read_only = true;
                } else {
                    ctx.disk_full = true;
                }
            }
            _ => {}
        }
    }
}
