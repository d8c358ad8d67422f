//! Compact bytes → `NodeReport` directly, for bodies in the form `encode` writes (every message's
//! fields in tag order, each singular field once, numbers packed, the string table first): the
//! string table is read as `&str` into the body and only the strings the report keeps are copied,
//! and packed columns are read in place instead of into `Vec`s first.
//!
//! Anything else (another field order, an unknown field, a bad index, an unknown name, a malformed
//! body) answers `None`, and the caller decodes with `prost` and `from_wire`, which accept every
//! valid encoding and name the field that is wrong. So this path only ever answers what that one
//! would: the tests check both on the same bodies.

use std::cell::RefCell;

use super::names::WireName;
use crate::report::*;
use crate::{CollectiveInfo, Event, EventClass};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// A reader over a message's bytes.
#[derive(Clone, Copy)]
struct R<'b>(&'b [u8]);

impl<'b> R<'b> {
    /// A varint: one byte (most of them) inline, longer ones by a call.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        match self.0.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.0 = rest;
                Some(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }
    #[inline(never)]
    fn long_varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            // The tenth byte holds the top bit only (`prost` refuses more).
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn bytes(&mut self) -> Option<&'b [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn fixed64(&mut self) -> Option<u64> {
        let (a, b) = self.0.split_first_chunk::<8>()?;
        self.0 = b;
        Some(u64::from_le_bytes(*a))
    }
}

/// One field: its wire type and the reader at its value.
struct F<'r, 'b> {
    wt: u32,
    r: &'r mut R<'b>,
}

impl<'b> F<'_, 'b> {
    fn u64(self) -> Option<u64> {
        (self.wt == VARINT).then_some(())?;
        self.r.varint()
    }
    fn u32(self) -> Option<u32> {
        self.u64().map(|v| v as u32)
    }
    fn i64(self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    fn bool(self) -> Option<bool> {
        self.u64().map(|v| v != 0)
    }
    fn sint32(self) -> Option<i32> {
        self.u64().map(|v| {
            let v = v as u32;
            ((v >> 1) as i32) ^ -((v & 1) as i32)
        })
    }
    fn f64(self) -> Option<f64> {
        (self.wt == FIXED64).then_some(())?;
        self.r.fixed64().map(f64::from_bits)
    }
    /// A nested message or a packed column.
    fn bytes(self) -> Option<&'b [u8]> {
        (self.wt == LEN).then_some(())?;
        self.r.bytes()
    }
}

/// The fields of a message in tag order: `f(tag, field)` reads each. A tag below the one before,
/// or the same again where it is not one of `repeated`, is outside `encode`'s form.
fn fields<'b>(buf: &'b [u8], repeated: &[u32], mut f: impl FnMut(u32, F<'_, 'b>) -> Option<()>) -> Option<()> {
    let mut r = R(buf);
    let mut last = 0;
    while !r.0.is_empty() {
        let key = u32::try_from(r.varint()?).ok()?;
        let (tag, wt) = (key >> 3, key & 7);
        if tag < last || (tag == last && !repeated.contains(&tag)) {
            return None;
        }
        last = tag;
        f(tag, F { wt, r: &mut r })?;
    }
    Some(())
}

/// The numbers of a packed column.
fn packed(buf: &[u8]) -> impl Iterator<Item = Option<u64>> + '_ {
    let mut r = R(buf);
    std::iter::from_fn(move || if r.0.is_empty() { None } else { Some(r.varint()) })
}

fn count(buf: &[u8]) -> usize {
    buf.iter().filter(|&&b| b < 0x80).count()
}

/// The report's string table, and the counter names made from its entries so far: every NIC of a
/// report names the same counters, so each name is made once per report, not once per NIC.
/// Also the last column of counter names read that was in name order, and its names: the next
/// NIC's (GPU's) column is usually the same bytes, and then neither its indices nor its order need
/// reading again.
struct T<'b>(Vec<&'b str>, RefCell<Vec<Option<CounterName>>>, RefCell<(&'b [u8], Vec<CounterName>)>);

impl<'b> T<'b> {
    fn s(&self, i: u32) -> Option<String> {
        self.0.get(i as usize).map(|s| (*s).to_owned())
    }
    fn opt(&self, i: Option<u32>) -> Option<Option<String>> {
        match i {
            None => Some(None),
            Some(i) => self.s(i).map(Some),
        }
    }
    fn name<E: WireName>(&self, i: u32) -> Option<E> {
        E::from_wire_name(self.0.get(i as usize)?)
    }
    fn all(&self, col: &[u8]) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(count(col));
        for i in packed(col) {
            out.push(self.s(i? as u32)?);
        }
        Some(out)
    }
    fn map(&self, keys: &'b [u8], values: &[u8]) -> Option<CounterMap> {
        let mut vs = packed(values);
        let mut last = self.2.borrow_mut();
        if !keys.is_empty() && last.0 == keys {
            let mut pairs = Vec::with_capacity(last.1.len());
            for name in &last.1 {
                pairs.push((name.clone(), vs.next()??));
            }
            return vs.next().is_none().then(|| CounterMap::from_sorted(pairs));
        }
        let mut pairs = Vec::with_capacity(count(keys));
        let mut names = self.1.borrow_mut();
        if names.len() < self.0.len() {
            names.resize(self.0.len(), None);
        }
        for k in packed(keys) {
            let k = k? as u32 as usize;
            let name = match names.get_mut(k)? {
                Some(n) => n.clone(),
                slot => slot.insert(counter_name(self.0.get(k)?)).clone(),
            };
            pairs.push((name, vs.next()??));
        }
        if vs.next().is_some() {
            return None;
        }
        if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            *last = (keys, pairs.iter().map(|(k, _)| k.clone()).collect());
            return Some(CounterMap::from_sorted(pairs));
        }
        Some(CounterMap::from_entries(pairs))
    }
}

/// The report in `body`, or `None` when `body` is not in `encode`'s form or not a good report.
pub(super) fn report(body: &[u8]) -> Option<NodeReport> {
    let mut t = T(Vec::with_capacity(128), Default::default(), RefCell::new((&[], Vec::new())));
    let mut r = NodeReport::empty(String::new());
    // What `from_wire` gives for a field the body leaves out (proto3: 0).
    r.schema_version = 0;
    r.interval_ms = 0;
    let (mut node, mut agent_version) = (0, 0);
    let (mut ce_keys, mut ce_values): (&[u8], &[u8]) = (&[], &[]);
    let mut driver_version = None;
    fields(body, &[1, 11, 12, 13, 14, 15, 40], |tag, f| {
        match tag {
            1 => t.0.push(std::str::from_utf8(f.bytes()?).ok()?),
            2 => r.schema_version = f.u32()?,
            3 => node = f.u32()?,
            4 => agent_version = f.u32()?,
            5 => r.seq = f.u64()?,
            6 => r.timestamp_ms = f.i64()?,
            7 => r.interval_ms = f.u64()?,
            8 => r.shutdown = f.bool()?,
            9 => r.urgent = f.bool()?,
            10 => r.host = Some(host(f.bytes()?, &t)?),
            // Room for a full node at the first: growing 1, 2, 4, 8 moved every sample three times.
            11 => {
                r.gpus.reserve(if r.gpus.is_empty() { 8 } else { 1 });
                r.gpus.push(gpu(f.bytes()?, &t)?)
            }
            12 => {
                r.nics.reserve(if r.nics.is_empty() { 8 } else { 1 });
                r.nics.push(nic(f.bytes()?, &t)?)
            }
            13 => r.disks.push(disk(f.bytes()?, &t)?),
            14 => r.jobs.push(job(f.bytes()?, &t)?),
            15 => r.events.push(event(f.bytes()?, &t)?),
            16 => r.dropped.reports = f.u64()?,
            17 => r.dropped.events = f.u64()?,
            18 => r.dropped.progress = f.u64()?,
            19 => ce_keys = f.bytes()?,
            20 => ce_values = f.bytes()?,
            21 => r.expected_gpus = Some(f.u32()?),
            22 => driver_version = Some(f.u32()?),
            40 => r.probes.push(probe(f.bytes()?, &t)?),
            _ => return None,
        }
        Some(())
    })?;
    r.node = t.s(node)?;
    r.agent_version = t.s(agent_version)?;
    r.collector_errors = t.map(ce_keys, ce_values)?;
    r.driver_version = t.opt(driver_version)?;
    Some(r)
}

fn host(buf: &[u8], t: &T<'_>) -> Option<HostSample> {
    let mut h = HostSample::default();
    let mut addrs: &[u8] = &[];
    fields(buf, &[13, 14], |tag, f| {
        match tag {
            1 => h.cpu_count = Some(f.u32()?),
            2 => h.cpu_util_pct = Some(f.f64()?),
            3 => h.cpu_non_job_pct = Some(f.f64()?),
            4 => h.load1 = Some(f.f64()?),
            5 => h.load5 = Some(f.f64()?),
            6 => h.load15 = Some(f.f64()?),
            7 => h.mem_total_bytes = Some(f.u64()?),
            8 => h.mem_used_bytes = Some(f.u64()?),
            9 => h.mem_available_bytes = Some(f.u64()?),
            10 => h.swap_total_bytes = Some(f.u64()?),
            11 => h.swap_used_bytes = Some(f.u64()?),
            12 => h.uptime_s = Some(f.u64()?),
            13 => {
                let (mut name, mut x) = (0, FanSample::default());
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => name = f.u32()?,
                        2 => x.rpm = Some(f.f64()?),
                        3 => x.min_rpm = Some(f.f64()?),
                        4 => x.alarm = f.bool()?,
                        _ => return None,
                    }
                    Some(())
                })?;
                x.name = t.s(name)?;
                h.fans.push(x);
            }
            14 => {
                let (mut name, mut x) = (0, TempSample::default());
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => name = f.u32()?,
                        2 => x.celsius = f.f64()?,
                        3 => x.crit_celsius = Some(f.f64()?),
                        _ => return None,
                    }
                    Some(())
                })?;
                x.name = t.s(name)?;
                h.temps.push(x);
            }
            15 => addrs = f.bytes()?,
            _ => return None,
        }
        Some(())
    })?;
    h.addrs = t.all(addrs)?;
    Some(h)
}

fn gpu<'b>(buf: &'b [u8], t: &T<'b>) -> Option<GpuSample> {
    let mut g = GpuSample::default();
    let (mut uuid, mut name, mut state) = (0, 0, 0);
    let (mut serial, mut pci_bus_id, mut nvml_error, mut mig_on) = (None, None, None, None);
    let (mut reasons, mut not_supported, mut ce_keys, mut ce_values): (&[u8], &[u8], &[u8], &[u8]) =
        (&[], &[], &[], &[]);
    let mut mig = Vec::new();
    fields(buf, &[33, 40], |tag, f| {
        match tag {
            1 => g.index = f.u32()?,
            2 => uuid = f.u32()?,
            3 => name = f.u32()?,
            4 => serial = Some(f.u32()?),
            5 => pci_bus_id = Some(f.u32()?),
            6 => state = f.u32()?,
            7 => g.util_gpu_pct = Some(f.f64()?),
            8 => g.util_mem_pct = Some(f.f64()?),
            9 => g.mem_total_bytes = Some(f.u64()?),
            10 => g.mem_used_bytes = Some(f.u64()?),
            11 => g.mem_free_bytes = Some(f.u64()?),
            12 => g.temp_c = Some(f.f64()?),
            13 => g.mem_temp_c = Some(f.f64()?),
            14 => g.power_w = Some(f.f64()?),
            15 => g.power_limit_w = Some(f.f64()?),
            16 => g.energy_mj = Some(f.u64()?),
            17 => g.sm_clock_mhz = Some(f.u32()?),
            18 => g.sm_clock_max_mhz = Some(f.u32()?),
            19 => g.mem_clock_mhz = Some(f.u32()?),
            20 => g.mem_clock_max_mhz = Some(f.u32()?),
            21 => g.throttle_mask = Some(f.u64()?),
            22 => reasons = f.bytes()?,
            23 => g.tensor_active_pct = Some(f.f64()?),
            24 => g.ecc.sbe_volatile = Some(f.u64()?),
            25 => g.ecc.dbe_volatile = Some(f.u64()?),
            26 => g.ecc.sbe_aggregate = Some(f.u64()?),
            27 => g.ecc.dbe_aggregate = Some(f.u64()?),
            28 => g.ecc.sram_uncorrectable = Some(f.u64()?),
            29 => {
                let mut x = RetiredPages::default();
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => x.sbe = f.u64()?,
                        2 => x.dbe = f.u64()?,
                        3 => x.pending = f.bool()?,
                        _ => return None,
                    }
                    Some(())
                })?;
                g.retired_pages = Some(x);
            }
            30 => {
                let mut x = RowRemap::default();
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => x.correctable = f.u64()?,
                        2 => x.uncorrectable = f.u64()?,
                        3 => x.pending = f.bool()?,
                        4 => x.failure = f.bool()?,
                        _ => return None,
                    }
                    Some(())
                })?;
                g.row_remap = Some(x);
            }
            31 => {
                let mut x = PcieLink::default();
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => x.generation = Some(f.u32()?),
                        2 => x.max_generation = Some(f.u32()?),
                        3 => x.width = Some(f.u32()?),
                        4 => x.max_width = Some(f.u32()?),
                        5 => x.replay_count = Some(f.u64()?),
                        _ => return None,
                    }
                    Some(())
                })?;
                g.pcie = Some(x);
            }
            32 => g.nvlinks = links(f.bytes()?)?,
            33 => {
                let mut x = GpuProcess::default();
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => x.pid = f.u32()?,
                        2 => x.used_mem_bytes = Some(f.u64()?),
                        _ => return None,
                    }
                    Some(())
                })?;
                g.processes.push(x);
            }
            34 => not_supported = f.bytes()?,
            35 => ce_keys = f.bytes()?,
            36 => ce_values = f.bytes()?,
            37 => nvml_error = Some(f.u32()?),
            38 => g.pci_present = Some(f.bool()?),
            39 => mig_on = Some(f.bool()?),
            40 => {
                let (mut profile, mut uuid) = (0, 0);
                let mut x = MigInstance::default();
                fields(f.bytes()?, &[], |tag, f| {
                    match tag {
                        1 => x.gpu_instance_id = f.u32()?,
                        2 => x.compute_instance_id = Some(f.u32()?),
                        3 => profile = f.u32()?,
                        4 => uuid = f.u32()?,
                        5 => x.mem_total_bytes = Some(f.u64()?),
                        6 => x.mem_used_bytes = Some(f.u64()?),
                        _ => return None,
                    }
                    Some(())
                })?;
                x.profile = t.s(profile)?;
                x.uuid = t.s(uuid)?;
                mig.push(x);
            }
            _ => return None,
        }
        Some(())
    })?;
    g.uuid = t.s(uuid)?;
    g.name = t.s(name)?;
    g.serial = t.opt(serial)?;
    g.pci_bus_id = t.opt(pci_bus_id)?;
    g.state = t.name(state)?;
    g.throttle_reasons = t.all(reasons)?;
    g.not_supported = t.all(not_supported)?;
    g.clock_event_ns = t.map(ce_keys, ce_values)?;
    g.nvml_error = t.opt(nvml_error)?;
    g.mig = (mig_on == Some(true)).then_some(mig);
    Some(g)
}

/// The NVLink columns (`messages::Links`), read side by side in place: one link a step from each.
fn links(buf: &[u8]) -> Option<Vec<NvLinkSample>> {
    let mut cols: [&[u8]; 16] = [&[]; 16];
    fields(buf, &[], |tag, f| {
        *cols.get_mut(tag.checked_sub(1)? as usize)? = f.bytes()?;
        Some(())
    })?;
    let (mut link, mut active) = (R(cols[0]), R(cols[1]));
    // Value columns (tags 3, 5, …, 15), each empty or one value per link, and their bitsets of
    // absent entries (4, 6, …, 16), a word per 64 links; words past the last are all present.
    let mut values: [R<'_>; 7] = std::array::from_fn(|c| R(cols[2 + 2 * c]));
    let mut absent: [R<'_>; 7] = std::array::from_fn(|c| R(cols[3 + 2 * c]));
    let used: [bool; 7] = std::array::from_fn(|c| !values[c].0.is_empty());
    let mut words = [0u64; 7];
    let mut out = Vec::with_capacity(count(cols[0]));
    while !link.0.is_empty() {
        let i = out.len();
        let mut cell = [None; 7];
        for c in 0..7 {
            if i % 64 == 0 {
                words[c] = if absent[c].0.is_empty() { 0 } else { absent[c].varint()? };
            }
            if used[c] {
                let v = values[c].varint()?;
                cell[c] = (words[c] & (1 << (i % 64)) == 0).then_some(v);
            }
        }
        let [crc_errors, replay_errors, recovery_errors, tx_bytes, rx_bytes, crc_flit_errors, crc_data_errors] = cell;
        out.push(NvLinkSample {
            link: link.varint()? as u32,
            active: active.varint()? != 0,
            crc_errors,
            replay_errors,
            recovery_errors,
            tx_bytes,
            rx_bytes,
            crc_flit_errors,
            crc_data_errors,
        });
    }
    // Every column as long as the links; the rest of a bitset well formed, though unused.
    if !active.0.is_empty() || values.iter().any(|v| !v.0.is_empty()) {
        return None;
    }
    for mut a in absent {
        while !a.0.is_empty() {
            a.varint()?;
        }
    }
    Some(out)
}

fn nic<'b>(buf: &'b [u8], t: &T<'b>) -> Option<NicSample> {
    let mut n = NicSample::default();
    let (mut name, mut kind) = (0, 0);
    let (mut netdev, mut pci_bus_id, mut operstate, mut link_layer, mut ib_state, mut ib_phys_state) =
        (None, None, None, None, None, None);
    let (mut keys, mut values, mut saturated, mut addrs): (&[u8], &[u8], &[u8], &[u8]) = (&[], &[], &[], &[]);
    fields(buf, &[], |tag, f| {
        match tag {
            1 => name = f.u32()?,
            2 => kind = f.u32()?,
            3 => netdev = Some(f.u32()?),
            4 => n.port = Some(f.u32()?),
            5 => pci_bus_id = Some(f.u32()?),
            6 => operstate = Some(f.u32()?),
            7 => n.carrier = Some(f.bool()?),
            8 => n.carrier_changes = Some(f.u64()?),
            9 => n.speed_mbps = Some(f.u64()?),
            10 => n.mtu = Some(f.u32()?),
            11 => link_layer = Some(f.u32()?),
            12 => ib_state = Some(f.u32()?),
            13 => ib_phys_state = Some(f.u32()?),
            14 => n.rate_gbps = Some(f.f64()?),
            15 => n.max_rate_gbps = Some(f.f64()?),
            16 => keys = f.bytes()?,
            17 => values = f.bytes()?,
            18 => n.fabric = Some(f.bool()?),
            19 => saturated = f.bytes()?,
            20 => addrs = f.bytes()?,
            _ => return None,
        }
        Some(())
    })?;
    n.name = t.s(name)?;
    n.kind = t.name(kind)?;
    n.netdev = t.opt(netdev)?;
    n.pci_bus_id = t.opt(pci_bus_id)?;
    n.operstate = t.opt(operstate)?;
    n.link_layer = t.opt(link_layer)?;
    n.ib_state = t.opt(ib_state)?;
    n.ib_phys_state = t.opt(ib_phys_state)?;
    n.counters = t.map(keys, values)?;
    n.saturated = t.all(saturated)?;
    n.addrs = t.all(addrs)?;
    Some(n)
}

fn disk(buf: &[u8], t: &T<'_>) -> Option<DiskSample> {
    let mut d = DiskSample::default();
    let (mut device, mut mount) = (0, None);
    fields(buf, &[], |tag, f| {
        match tag {
            1 => device = f.u32()?,
            2 => mount = Some(f.u32()?),
            3 => d.total_bytes = Some(f.u64()?),
            4 => d.available_bytes = Some(f.u64()?),
            5 => d.read_only = f.bool()?,
            6 => d.write_bytes = Some(f.u64()?),
            _ => return None,
        }
        Some(())
    })?;
    d.device = t.s(device)?;
    d.mount = t.opt(mount)?;
    Some(d)
}

fn job(buf: &[u8], t: &T<'_>) -> Option<JobSample> {
    let mut j = JobSample::default();
    let (mut job_id, mut scheduler, mut sched_state) = (0, 0, None);
    fields(buf, &[6], |tag, f| {
        match tag {
            1 => job_id = f.u32()?,
            2 => scheduler = f.u32()?,
            3 => j.world_size = Some(f.u32()?),
            4 => sched_state = Some(f.u32()?),
            5 => j.sched_exit_code = Some(f.sint32()?),
            6 => j.ranks.push(rank(f.bytes()?, t)?),
            _ => return None,
        }
        Some(())
    })?;
    j.job_id = t.s(job_id)?;
    j.scheduler = t.name(scheduler)?;
    j.sched_state = match sched_state {
        None => None,
        Some(i) => Some(t.name(i)?),
    };
    Some(j)
}

fn rank(buf: &[u8], t: &T<'_>) -> Option<RankSample> {
    let mut k = RankSample::default();
    let (mut nic, mut state, mut gpus): (Option<u32>, u32, &[u8]) = (None, 0, &[]);
    fields(buf, &[], |tag, f| {
        match tag {
            1 => k.rank = f.u32()?,
            2 => k.local_rank = Some(f.u32()?),
            3 => k.pid = Some(f.u32()?),
            4 => gpus = f.bytes()?,
            5 => nic = Some(f.u32()?),
            6 => state = f.u32()?,
            7 => k.cpu_seconds = Some(f.f64()?),
            8 => k.rss_bytes = Some(f.u64()?),
            9 => k.exit_code = Some(f.sint32()?),
            10 => k.io_write_bytes = Some(f.u64()?),
            11 => k.progress = Some(progress(f.bytes()?, t)?),
            _ => return None,
        }
        Some(())
    })?;
    k.gpus = packed(gpus).map(|v| v.map(|v| v as u32)).collect::<Option<_>>()?;
    k.nic = t.opt(nic)?;
    k.state = t.name(state)?;
    Some(k)
}

fn progress(buf: &[u8], t: &T<'_>) -> Option<Progress> {
    let mut p = Progress::default();
    let mut status = 0;
    fields(buf, &[], |tag, f| {
        match tag {
            1 => p.step = f.u64()?,
            2 => p.last_progress_ms = f.i64()?,
            3 => p.step_time_ms = Some(f.f64()?),
            4 => p.step_time_avg_ms = Some(f.f64()?),
            5 => p.compute_ms = Some(f.f64()?),
            6 => p.loss = Some(f.f64()?),
            7 => p.loss_step = Some(f.u64()?),
            8 => p.grad_norm = Some(f.f64()?),
            9 => p.nonfinite_loss = f.bool()?,
            10 => status = f.u32()?,
            11 => p.exit_code = Some(f.sint32()?),
            _ => return None,
        }
        Some(())
    })?;
    p.status = t.name(status)?;
    Some(p)
}

fn event(buf: &[u8], t: &T<'_>) -> Option<Event> {
    let mut e = Event::new(0, EventSource::default(), EventClass::None);
    e.count = 0;
    let (mut source, mut class, mut severity, mut message) = (0, 0, 0, 0);
    let (mut component, mut device) = (None, None);
    fields(buf, &[], |tag, f| {
        match tag {
            1 => e.ts_ms = f.i64()?,
            2 => source = f.u32()?,
            3 => class = f.u32()?,
            4 => severity = f.u32()?,
            5 => component = Some(f.u32()?),
            6 => e.xid = Some(f.u32()?),
            7 => e.caused_by_xid = Some(f.u32()?),
            8 => device = Some(f.u32()?),
            9 => e.pid = Some(f.u32()?),
            10 => e.count = f.u64()?,
            11 => message = f.u32()?,
            12 => e.collective = Some(collective(f.bytes()?, t)?),
            _ => return None,
        }
        Some(())
    })?;
    e.source = t.name(source)?;
    e.class = EventClass::parse(t.0.get(class as usize)?)?;
    e.severity = t.name(severity)?;
    e.component = t.opt(component)?;
    e.device = t.opt(device)?;
    e.message = t.s(message)?;
    Some(e)
}

fn collective(buf: &[u8], t: &T<'_>) -> Option<CollectiveInfo> {
    let mut c = CollectiveInfo::default();
    let mut s: [Option<u32>; 10] = [None; 10];
    fields(buf, &[], |tag, f| {
        match tag {
            1 => s[0] = Some(f.u32()?),
            2 => s[1] = Some(f.u32()?),
            3 => c.rank = Some(f.u32()?),
            4 => c.local_rank = Some(f.u32()?),
            5 => c.device = Some(f.u32()?),
            6 => s[2] = Some(f.u32()?),
            7 => s[3] = Some(f.u32()?),
            8 => c.peer_port = Some(f.u32()?),
            9 => s[4] = Some(f.u32()?),
            10 => s[5] = Some(f.u32()?),
            11 => s[6] = Some(f.u32()?),
            12 => c.seq = Some(f.u64()?),
            13 => s[7] = Some(f.u32()?),
            14 => c.timeout_ms = Some(f.u64()?),
            15 => c.last_completed = Some(f.u64()?),
            16 => s[8] = Some(f.u32()?),
            17 => s[9] = Some(f.u32()?),
            _ => return None,
        }
        Some(())
    })?;
    c.kind = t.opt(s[0])?;
    c.job = t.opt(s[1])?;
    c.hostname = t.opt(s[2])?;
    c.peer = t.opt(s[3])?;
    c.local_addr = t.opt(s[4])?;
    c.remote_addr = t.opt(s[5])?;
    c.hca = t.opt(s[6])?;
    c.op = t.opt(s[7])?;
    c.error = t.opt(s[8])?;
    c.pg = t.opt(s[9])?;
    Some(c)
}

fn probe(buf: &[u8], t: &T<'_>) -> Option<crate::probe::ProbeSample> {
    let mut i = [0u32; 4];
    let mut p = crate::probe::ProbeSample {
        peer: String::new(),
        iface: String::new(),
        local_addr: String::new(),
        peer_addr: String::new(),
        sent: 0,
        received: 0,
        rtt_p50_us: None,
        rtt_max_us: None,
    };
    fields(buf, &[], |tag, f| {
        match tag {
            1..=4 => i[tag as usize - 1] = f.u32()?,
            5 => p.sent = f.u32()?,
            6 => p.received = f.u32()?,
            7 => p.rtt_p50_us = Some(f.u32()?),
            8 => p.rtt_max_us = Some(f.u32()?),
            _ => return None,
        }
        Some(())
    })?;
    p.peer = t.s(i[0])?;
    p.iface = t.s(i[1])?;
    p.local_addr = t.s(i[2])?;
    p.peer_addr = t.s(i[3])?;
    Some(p)
}
