//! Property tests of the compact encoding: for reports of every shape (present and absent values,
//! names repeated across NICs and GPUs or not, every enum value), `decode(encode(r)) == r`, and the
//! bytes are exactly `prost`'s encoding of `to_wire(r)`, so the fast paths change nothing on the wire,
//! and the in-place reader gives what `prost` and `from_wire` give.

use proptest::prelude::*;

use super::encode::to_wire;
use super::names::WireName;
use super::*;
use crate::report::*;
use crate::{CollectiveInfo, Event, EventClass, Severity};

/// A small generator over a proptest seed: reports with many fields need more draws than a tuple of
/// strategies holds.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.coin() { Some(f(self)) } else { None }
    }
    /// Values across the varint sizes, the extremes included.
    fn u64(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(128),
            1 => self.below(1 << 20),
            2 => u64::MAX - self.below(3),
            _ => self.next(),
        }
    }
    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    fn i32(&mut self) -> i32 {
        self.u64() as i32
    }
    /// Finite (NaN would not equal itself after the trip), of every magnitude and sign.
    fn f64(&mut self) -> f64 {
        let v = f64::from_bits(self.next());
        if v.is_finite() { v } else { self.below(1000) as f64 / 8.0 }
    }
    /// A name from a small pool (so names repeat, as counter names do) or a fresh one.
    fn name(&mut self) -> String {
        const POOL: [&str; 8] =
            ["symbol_error", "port_xmit_wait", "rx_bytes", "", "mlx5_0", "GPU-1", "ü-unicode", "port_rcv_errors"];
        if self.below(4) == 0 {
            format!("n{}", self.below(1_000_000))
        } else {
            POOL[self.below(POOL.len() as u64) as usize].to_string()
        }
    }
    fn names(&mut self, max: u64) -> Vec<String> {
        (0..self.below(max + 1)).map(|_| self.name()).collect()
    }
    fn map(&mut self, max: u64) -> CounterMap {
        (0..self.below(max + 1)).map(|_| (counter_name(&self.name()), self.u64())).collect()
    }
    fn pick<T: WireName>(&mut self) -> T {
        T::ALL[self.below(T::ALL.len() as u64) as usize]
    }
}

fn gpu(g: &mut Gen, index: u32) -> GpuSample {
    let links = g.below(19) as u32;
    GpuSample {
        index,
        uuid: g.name(),
        name: g.name(),
        serial: g.opt(Gen::name),
        pci_bus_id: g.opt(Gen::name),
        state: g.pick(),
        util_gpu_pct: g.opt(Gen::f64),
        util_mem_pct: g.opt(Gen::f64),
        mem_total_bytes: g.opt(Gen::u64),
        mem_used_bytes: g.opt(Gen::u64),
        mem_free_bytes: g.opt(Gen::u64),
        temp_c: g.opt(Gen::f64),
        mem_temp_c: g.opt(Gen::f64),
        power_w: g.opt(Gen::f64),
        power_limit_w: g.opt(Gen::f64),
        energy_mj: g.opt(Gen::u64),
        sm_clock_mhz: g.opt(Gen::u32),
        sm_clock_max_mhz: g.opt(Gen::u32),
        mem_clock_mhz: g.opt(Gen::u32),
        mem_clock_max_mhz: g.opt(Gen::u32),
        throttle_mask: g.opt(Gen::u64),
        throttle_reasons: g.names(3),
        tensor_active_pct: g.opt(Gen::f64),
        ecc: EccCounts {
            sbe_volatile: g.opt(Gen::u64),
            dbe_volatile: g.opt(Gen::u64),
            sbe_aggregate: g.opt(Gen::u64),
            dbe_aggregate: g.opt(Gen::u64),
            sram_uncorrectable: g.opt(Gen::u64),
        },
        retired_pages: g.opt(|g| RetiredPages { sbe: g.u64(), dbe: g.u64(), pending: g.coin() }),
        row_remap: g.opt(|g| RowRemap {
            correctable: g.u64(),
            uncorrectable: g.u64(),
            pending: g.coin(),
            failure: g.coin(),
        }),
        pcie: g.opt(|g| PcieLink {
            generation: g.opt(Gen::u32),
            max_generation: g.opt(Gen::u32),
            width: g.opt(Gen::u32),
            max_width: g.opt(Gen::u32),
            replay_count: g.opt(Gen::u64),
        }),
        nvlinks: (0..links)
            .map(|l| NvLinkSample {
                link: l,
                active: g.coin(),
                crc_errors: g.opt(Gen::u64),
                replay_errors: g.opt(Gen::u64),
                recovery_errors: g.opt(Gen::u64),
                crc_flit_errors: g.opt(Gen::u64),
                crc_data_errors: g.opt(Gen::u64),
                tx_bytes: g.opt(Gen::u64),
                rx_bytes: g.opt(Gen::u64),
            })
            .collect(),
        processes: (0..g.below(3)).map(|_| GpuProcess { pid: g.u32(), used_mem_bytes: g.opt(Gen::u64) }).collect(),
        not_supported: g.names(2),
        clock_event_ns: g.map(6),
        nvml_error: g.opt(Gen::name),
        pci_present: g.opt(Gen::coin),
        mig: g.opt(|g| {
            (0..g.below(3))
                .map(|_| MigInstance {
                    gpu_instance_id: g.u32(),
                    compute_instance_id: g.opt(Gen::u32),
                    profile: g.name(),
                    uuid: g.name(),
                    mem_total_bytes: g.opt(Gen::u64),
                    mem_used_bytes: g.opt(Gen::u64),
                })
                .collect()
        }),
    }
}

fn nic(g: &mut Gen, counters: &CounterMap) -> NicSample {
    NicSample {
        name: g.name(),
        kind: g.pick(),
        netdev: g.opt(Gen::name),
        port: g.opt(Gen::u32),
        pci_bus_id: g.opt(Gen::name),
        operstate: g.opt(Gen::name),
        carrier: g.opt(Gen::coin),
        carrier_changes: g.opt(Gen::u64),
        speed_mbps: g.opt(Gen::u64),
        mtu: g.opt(Gen::u32),
        link_layer: g.opt(Gen::name),
        ib_state: g.opt(Gen::name),
        ib_phys_state: g.opt(Gen::name),
        rate_gbps: g.opt(Gen::f64),
        max_rate_gbps: g.opt(Gen::f64),
        // Mostly the node's common counter names with this NIC's values (as real NICs), sometimes
        // a list of its own.
        counters: if g.below(3) == 0 { g.map(8) } else { counters.keys().map(|k| (k.clone(), g.u64())).collect() },
        fabric: g.opt(Gen::coin),
        saturated: g.names(2),
        addrs: g.names(2),
    }
}

fn event(g: &mut Gen) -> Event {
    Event {
        ts_ms: g.u64() as i64,
        source: g.pick(),
        class: EventClass::ALL[g.below(EventClass::ALL.len() as u64) as usize],
        severity: g.pick::<Severity>(),
        component: g.opt(Gen::name),
        xid: g.opt(Gen::u32),
        caused_by_xid: g.opt(Gen::u32),
        device: g.opt(Gen::name),
        pid: g.opt(Gen::u32),
        count: g.u64(),
        message: g.name(),
        collective: g.opt(|g| CollectiveInfo {
            kind: g.opt(Gen::name),
            job: g.opt(Gen::name),
            rank: g.opt(Gen::u32),
            local_rank: g.opt(Gen::u32),
            device: g.opt(Gen::u32),
            hostname: g.opt(Gen::name),
            peer: g.opt(Gen::name),
            peer_port: g.opt(Gen::u32),
            local_addr: g.opt(Gen::name),
            remote_addr: g.opt(Gen::name),
            hca: g.opt(Gen::name),
            seq: g.opt(Gen::u64),
            op: g.opt(Gen::name),
            timeout_ms: g.opt(Gen::u64),
            last_completed: g.opt(Gen::u64),
            error: g.opt(Gen::name),
            pg: g.opt(Gen::name),
        }),
    }
}

fn job(g: &mut Gen) -> JobSample {
    JobSample {
        job_id: g.name(),
        scheduler: g.pick(),
        world_size: g.opt(Gen::u32),
        sched_state: g.opt(Gen::pick),
        sched_exit_code: g.opt(Gen::i32),
        ranks: (0..g.below(4))
            .map(|_| RankSample {
                rank: g.u32(),
                local_rank: g.opt(Gen::u32),
                pid: g.opt(Gen::u32),
                gpus: (0..g.below(3)).map(|_| g.u32()).collect(),
                nic: g.opt(Gen::name),
                state: g.pick(),
                cpu_seconds: g.opt(Gen::f64),
                rss_bytes: g.opt(Gen::u64),
                exit_code: g.opt(Gen::i32),
                io_write_bytes: g.opt(Gen::u64),
                progress: g.opt(|g| Progress {
                    step: g.u64(),
                    last_progress_ms: g.u64() as i64,
                    step_time_ms: g.opt(Gen::f64),
                    step_time_avg_ms: g.opt(Gen::f64),
                    compute_ms: g.opt(Gen::f64),
                    loss: g.opt(Gen::f64),
                    loss_step: g.opt(Gen::u64),
                    grad_norm: g.opt(Gen::f64),
                    nonfinite_loss: g.coin(),
                    status: g.pick(),
                    exit_code: g.opt(Gen::i32),
                }),
            })
            .collect(),
    }
}

fn report(seed: u64) -> NodeReport {
    let g = &mut Gen(seed | 1);
    let mut r = NodeReport::empty(g.name());
    r.agent_version = g.name();
    r.seq = g.u64();
    r.timestamp_ms = g.u64() as i64;
    r.interval_ms = g.u64();
    r.shutdown = g.coin();
    r.urgent = g.coin();
    r.host = g.opt(|g| HostSample {
        cpu_count: g.opt(Gen::u32),
        cpu_util_pct: g.opt(Gen::f64),
        cpu_non_job_pct: g.opt(Gen::f64),
        load1: g.opt(Gen::f64),
        load5: g.opt(Gen::f64),
        load15: g.opt(Gen::f64),
        mem_total_bytes: g.opt(Gen::u64),
        mem_used_bytes: g.opt(Gen::u64),
        mem_available_bytes: g.opt(Gen::u64),
        swap_total_bytes: g.opt(Gen::u64),
        swap_used_bytes: g.opt(Gen::u64),
        uptime_s: g.opt(Gen::u64),
        fans: (0..g.below(3))
            .map(|_| FanSample { name: g.name(), rpm: g.opt(Gen::f64), min_rpm: g.opt(Gen::f64), alarm: g.coin() })
            .collect(),
        temps: (0..g.below(3))
            .map(|_| TempSample { name: g.name(), celsius: g.f64(), crit_celsius: g.opt(Gen::f64) })
            .collect(),
        addrs: g.names(3),
    });
    r.gpus = (0..g.below(9) as u32).map(|i| gpu(g, i)).collect();
    let counters = g.map(12);
    r.nics = (0..g.below(9)).map(|_| nic(g, &counters)).collect();
    r.disks = (0..g.below(3))
        .map(|_| DiskSample {
            device: g.name(),
            mount: g.opt(Gen::name),
            total_bytes: g.opt(Gen::u64),
            available_bytes: g.opt(Gen::u64),
            read_only: g.coin(),
            write_bytes: g.opt(Gen::u64),
        })
        .collect();
    r.jobs = (0..g.below(3)).map(|_| job(g)).collect();
    r.events = (0..g.below(4)).map(|_| event(g)).collect();
    r.dropped = Dropped { reports: g.u64(), events: g.u64(), progress: g.u64() };
    r.collector_errors = g.map(3);
    r.expected_gpus = g.opt(Gen::u32);
    r.driver_version = g.opt(Gen::name);
    r.probes = (0..g.below(3))
        .map(|_| crate::probe::ProbeSample {
            peer: g.name(),
            iface: g.name(),
            local_addr: g.name(),
            peer_addr: g.name(),
            sent: g.u32(),
            received: g.u32(),
            rtt_p50_us: g.opt(Gen::u32),
            rtt_max_us: g.opt(Gen::u32),
        })
        .collect();
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_report_survives_the_round_trip_in_prosts_own_bytes(seed in any::<u64>()) {
        let r = report(seed);
        let bytes = encode(&r);
        prop_assert_eq!(&bytes, &prost::Message::encode_to_vec(&to_wire(&r)));
        prop_assert_eq!(decode(&bytes).unwrap(), r.clone());
        // The in-place reader takes the body (no silent fall back) and agrees with the general way.
        let general = super::decode::from_wire(<Report as prost::Message>::decode(&bytes[..]).unwrap()).unwrap();
        prop_assert_eq!(super::read::report(&bytes), Some(general));
    }
}
