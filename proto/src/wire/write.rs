//! `NodeReport` → compact bytes directly, without building the messages of `messages.rs` first:
//! the same bytes `prost` writes for `encode::to_wire(r)` (fields in tag order, proto3 defaults
//! left out, packed numbers), with strings put into the table in the order `to_wire` puts them.
//! The messages and `to_wire` stay the reference: the tests check that the bytes are equal.
//!
//! A nested message's (or packed column's) length comes before it but is known only after it: its
//! body is written after a one-byte length, and moved along by a byte or two when it is 128 bytes
//! or more.

use prost::encoding::encoded_len_varint;

use super::encode::{Run, Runs, Strings};
use crate::report::*;
use crate::{CollectiveInfo, Event};

/// The report's compact bytes: the string table (field 1, which `prost` would write first) straight
/// from the report's own strings, then the other fields, written straight from the report
/// (below). The same bytes as `encode_to_vec(&to_wire(r))`, without building the messages.
pub(super) fn encode(r: &NodeReport) -> Vec<u8> {
    let mut s = Strings::new();
    // A healthy 8-GPU node's report is about 7.5 KB.
    let mut body = W(Vec::with_capacity(8 << 10));
    report(&mut body, r, &mut s);
    // Field 1, length-delimited: the key byte 0x0a.
    let table: usize = s.list.iter().map(|s| 1 + encoded_len_varint(s.len() as u64) + s.len()).sum();
    let mut out = Vec::with_capacity(table + body.0.len());
    for s in &s.list {
        out.push(0x0a);
        encode_varint(s.len() as u64, &mut out);
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&body.0);
    out
}

/// `v` as a protobuf varint: the bytes `prost::encoding::encode_varint` writes. Most values here
/// (tags, string indices, small counts) take one byte, which is pushed inline, without a call: a call
/// per varint (the register saves around it) was most of what writing one cost.
#[inline(always)]
fn encode_varint(v: u64, out: &mut Vec<u8>) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        encode_long_varint(v, out);
    }
}

/// A varint of two bytes or more. All ten bytes are copied, then the vector cut back to the ones
/// used: a copy of a known size is a couple of moves, where one of 2 to 10 bytes was a call to
/// memcpy.
#[inline(never)]
fn encode_long_varint(v: u64, out: &mut Vec<u8>) {
    let (buf, len) = varint_bytes(v);
    let at = out.len();
    out.extend_from_slice(&buf);
    out.truncate(at + len);
}

/// `v` as a protobuf varint, in a buffer on the stack: (bytes, how many are used).
#[inline]
fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let mut buf = [0u8; 10];
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    (buf, i + 1)
}

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// The bytes being written.
pub(super) struct W(pub(super) Vec<u8>);

impl W {
    fn key(&mut self, tag: u32, wire_type: u32) {
        encode_varint(u64::from(tag << 3 | wire_type), &mut self.0);
    }
    fn varint(&mut self, tag: u32, v: u64) {
        self.key(tag, VARINT);
        encode_varint(v, &mut self.0);
    }
    /// A proto3 number: left out when 0.
    fn u64(&mut self, tag: u32, v: u64) {
        if v != 0 {
            self.varint(tag, v);
        }
    }
    fn u32(&mut self, tag: u32, v: u32) {
        self.u64(tag, u64::from(v));
    }
    fn i64(&mut self, tag: u32, v: i64) {
        self.u64(tag, v as u64);
    }
    fn bool(&mut self, tag: u32, v: bool) {
        self.u64(tag, u64::from(v));
    }
    fn f64(&mut self, tag: u32, v: f64) {
        if v != 0.0 {
            self.some_f64(tag, v);
        }
    }
    fn some_f64(&mut self, tag: u32, v: f64) {
        self.key(tag, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// An `optional` field: written when present, zero included.
    fn opt_u64(&mut self, tag: u32, v: Option<u64>) {
        if let Some(v) = v {
            self.varint(tag, v);
        }
    }
    fn opt_u32(&mut self, tag: u32, v: Option<u32>) {
        self.opt_u64(tag, v.map(u64::from));
    }
    fn opt_bool(&mut self, tag: u32, v: Option<bool>) {
        self.opt_u64(tag, v.map(u64::from));
    }
    fn opt_f64(&mut self, tag: u32, v: Option<f64>) {
        if let Some(v) = v {
            self.some_f64(tag, v);
        }
    }
    /// `sint32`: zigzag.
    fn opt_sint32(&mut self, tag: u32, v: Option<i32>) {
        self.opt_u64(tag, v.map(|v| u64::from(((v << 1) ^ (v >> 31)) as u32)));
    }
    /// A packed repeated number field: left out when empty. Written in one pass behind a one-byte
    /// length, as a nested message is.
    fn packed(&mut self, tag: u32, values: impl Iterator<Item = u64>) {
        let start = self.0.len();
        let at = self.open(tag, 1);
        for v in values {
            encode_varint(v, &mut self.0);
        }
        if self.0.len() == at + 1 {
            self.0.truncate(start);
            return;
        }
        self.close(at, 1);
    }
    /// A packed column of names, by their indices in the string table (each put there first).
    fn names<'a>(&mut self, tag: u32, names: &'a [String], s: &mut Strings<'a>) {
        self.packed(tag, names.iter().map(|x| u64::from(s.put(x))));
    }
    fn packed_u32(&mut self, tag: u32, values: &[u32]) {
        self.packed(tag, values.iter().map(|&v| u64::from(v)));
    }
    /// A nested message: `body` writes its fields.
    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Self)) {
        let at = self.open(tag, 1);
        body(self);
        self.close(at, 1);
    }
    /// A nested message that is usually 128 bytes to 16 KiB long (a GPU, a NIC, a GPU's links, a
    /// job): two bytes are kept for its length, so the body moves only when it is shorter or longer.
    fn big_message(&mut self, tag: u32, body: impl FnOnce(&mut Self)) {
        let at = self.open(tag, 2);
        body(self);
        self.close(at, 2);
    }
    /// The key of length-delimited field `tag`, then `reserved` bytes kept for its length: where
    /// they start.
    #[inline(always)]
    fn open(&mut self, tag: u32, reserved: usize) -> usize {
        self.key(tag, LEN);
        let at = self.0.len();
        for _ in 0..reserved {
            self.0.push(0);
        }
        at
    }
    /// Writes the length of what follows the `reserved` bytes at `at` into them. The usual case, a
    /// length that takes exactly those bytes, is written in place.
    #[inline(always)]
    fn close(&mut self, at: usize, reserved: usize) {
        let n = self.0.len() - at - reserved;
        match reserved {
            1 if n < 0x80 => self.0[at] = n as u8,
            2 if (0x80..0x4000).contains(&n) => {
                self.0[at] = (n as u8) | 0x80;
                self.0[at + 1] = (n >> 7) as u8;
            }
            _ => self.move_body(at, reserved, n),
        }
    }
    /// A length that takes more or fewer bytes than were kept: the body moves up or down by the
    /// difference.
    #[inline(never)]
    fn move_body(&mut self, at: usize, reserved: usize, n: usize) {
        let end = at + reserved + n;
        let (len, k) = varint_bytes(n as u64);
        if k > reserved {
            self.0.resize(end + k - reserved, 0);
            self.0.copy_within(at + reserved..end, at + k);
        } else if k < reserved {
            self.0.copy_within(at + reserved..end, at + k);
            self.0.truncate(end - (reserved - k));
        }
        self.0[at..at + k].copy_from_slice(&len[..k]);
    }
}

/// The report's fields (all but the string table, field 1, which `strings` collects).
pub(super) fn report<'a>(w: &mut W, r: &'a NodeReport, s: &mut Strings<'a>) {
    let mut runs = Runs::default();
    let mut keys = Vec::new();
    w.u32(2, r.schema_version);
    let node = s.put(&r.node);
    w.u32(3, node);
    let agent_version = s.put(&r.agent_version);
    w.u32(4, agent_version);
    w.u64(5, r.seq);
    w.i64(6, r.timestamp_ms);
    w.u64(7, r.interval_ms);
    w.bool(8, r.shutdown);
    w.bool(9, r.urgent);
    if let Some(h) = &r.host {
        w.message(10, |w| host(w, h, s));
    }
    for g in &r.gpus {
        w.big_message(11, |w| gpu(w, g, s, &mut runs, &mut keys));
    }
    for n in &r.nics {
        w.big_message(12, |w| nic(w, n, s, &mut runs, &mut keys));
    }
    for d in &r.disks {
        w.message(13, |w| {
            w.u32(1, s.put(&d.device));
            w.opt_u32(2, s.opt(&d.mount));
            w.opt_u64(3, d.total_bytes);
            w.opt_u64(4, d.available_bytes);
            w.bool(5, d.read_only);
            w.opt_u64(6, d.write_bytes);
        });
    }
    for j in &r.jobs {
        w.big_message(14, |w| job(w, j, s));
    }
    for e in &r.events {
        w.message(15, |w| event(w, e, s));
    }
    w.u64(16, r.dropped.reports);
    w.u64(17, r.dropped.events);
    w.u64(18, r.dropped.progress);
    s.keys(&mut Run::default(), &r.collector_errors, &mut keys);
    w.packed_u32(19, &keys);
    w.packed(20, r.collector_errors.values().copied());
    w.opt_u32(21, r.expected_gpus);
    w.opt_u32(22, s.opt(&r.driver_version));
    for p in &r.probes {
        w.message(40, |w| {
            w.u32(1, s.put(&p.peer));
            w.u32(2, s.put(&p.iface));
            w.u32(3, s.put(&p.local_addr));
            w.u32(4, s.put(&p.peer_addr));
            w.u32(5, p.sent);
            w.u32(6, p.received);
            w.opt_u32(7, p.rtt_p50_us);
            w.opt_u32(8, p.rtt_max_us);
        });
    }
}

fn host<'a>(w: &mut W, h: &'a HostSample, s: &mut Strings<'a>) {
    w.opt_u32(1, h.cpu_count);
    w.opt_f64(2, h.cpu_util_pct);
    w.opt_f64(3, h.cpu_non_job_pct);
    w.opt_f64(4, h.load1);
    w.opt_f64(5, h.load5);
    w.opt_f64(6, h.load15);
    w.opt_u64(7, h.mem_total_bytes);
    w.opt_u64(8, h.mem_used_bytes);
    w.opt_u64(9, h.mem_available_bytes);
    w.opt_u64(10, h.swap_total_bytes);
    w.opt_u64(11, h.swap_used_bytes);
    w.opt_u64(12, h.uptime_s);
    for f in &h.fans {
        w.message(13, |w| {
            w.u32(1, s.put(&f.name));
            w.opt_f64(2, f.rpm);
            w.opt_f64(3, f.min_rpm);
            w.bool(4, f.alarm);
        });
    }
    for t in &h.temps {
        w.message(14, |w| {
            w.u32(1, s.put(&t.name));
            w.f64(2, t.celsius);
            w.opt_f64(3, t.crit_celsius);
        });
    }
    w.names(15, &h.addrs, s);
}

/// A GPU: its clock-event names go into the table first, as `to_wire` puts them.
fn gpu<'a>(w: &mut W, g: &'a GpuSample, s: &mut Strings<'a>, runs: &mut Runs<'a>, keys: &mut Vec<u32>) {
    s.keys(&mut runs.clock_events, &g.clock_event_ns, keys);
    w.u32(1, g.index);
    w.u32(2, s.put(&g.uuid));
    w.u32(3, s.put(&g.name));
    w.opt_u32(4, s.opt(&g.serial));
    w.opt_u32(5, s.opt(&g.pci_bus_id));
    w.u32(6, s.name(g.state));
    w.opt_f64(7, g.util_gpu_pct);
    w.opt_f64(8, g.util_mem_pct);
    w.opt_u64(9, g.mem_total_bytes);
    w.opt_u64(10, g.mem_used_bytes);
    w.opt_u64(11, g.mem_free_bytes);
    w.opt_f64(12, g.temp_c);
    w.opt_f64(13, g.mem_temp_c);
    w.opt_f64(14, g.power_w);
    w.opt_f64(15, g.power_limit_w);
    w.opt_u64(16, g.energy_mj);
    w.opt_u32(17, g.sm_clock_mhz);
    w.opt_u32(18, g.sm_clock_max_mhz);
    w.opt_u32(19, g.mem_clock_mhz);
    w.opt_u32(20, g.mem_clock_max_mhz);
    w.opt_u64(21, g.throttle_mask);
    w.names(22, &g.throttle_reasons, s);
    w.opt_f64(23, g.tensor_active_pct);
    w.opt_u64(24, g.ecc.sbe_volatile);
    w.opt_u64(25, g.ecc.dbe_volatile);
    w.opt_u64(26, g.ecc.sbe_aggregate);
    w.opt_u64(27, g.ecc.dbe_aggregate);
    w.opt_u64(28, g.ecc.sram_uncorrectable);
    if let Some(p) = &g.retired_pages {
        w.message(29, |w| {
            w.u64(1, p.sbe);
            w.u64(2, p.dbe);
            w.bool(3, p.pending);
        });
    }
    if let Some(m) = &g.row_remap {
        w.message(30, |w| {
            w.u64(1, m.correctable);
            w.u64(2, m.uncorrectable);
            w.bool(3, m.pending);
            w.bool(4, m.failure);
        });
    }
    if let Some(p) = &g.pcie {
        w.message(31, |w| {
            w.opt_u32(1, p.generation);
            w.opt_u32(2, p.max_generation);
            w.opt_u32(3, p.width);
            w.opt_u32(4, p.max_width);
            w.opt_u64(5, p.replay_count);
        });
    }
    if !g.nvlinks.is_empty() {
        w.big_message(32, |w| links(w, &g.nvlinks));
    }
    for p in &g.processes {
        w.message(33, |w| {
            w.u32(1, p.pid);
            w.opt_u64(2, p.used_mem_bytes);
        });
    }
    w.names(34, &g.not_supported, s);
    w.packed_u32(35, keys);
    w.packed(36, g.clock_event_ns.values().copied());
    w.opt_u32(37, s.opt(&g.nvml_error));
    w.opt_bool(38, g.pci_present);
    w.opt_bool(39, g.mig.as_ref().map(|_| true));
    for m in g.mig.iter().flatten() {
        w.message(40, |w| {
            w.u32(1, m.gpu_instance_id);
            w.opt_u32(2, m.compute_instance_id);
            w.u32(3, s.put(&m.profile));
            w.u32(4, s.put(&m.uuid));
            w.opt_u64(5, m.mem_total_bytes);
            w.opt_u64(6, m.mem_used_bytes);
        });
    }
}

/// The NVLink columns (`messages::Links`): a value column with no value at all is left out, as is
/// the bitset of a column with none absent.
fn links(w: &mut W, l: &[NvLinkSample]) {
    w.packed(1, l.iter().map(|x| u64::from(x.link)));
    w.packed(2, l.iter().map(|x| u64::from(x.active)));
    // One call per column, each with its own getter (inlined, not called through a pointer).
    column(w, 3, l, |x| x.crc_errors);
    column(w, 5, l, |x| x.replay_errors);
    column(w, 7, l, |x| x.recovery_errors);
    column(w, 9, l, |x| x.tx_bytes);
    column(w, 11, l, |x| x.rx_bytes);
    column(w, 13, l, |x| x.crc_flit_errors);
    column(w, 15, l, |x| x.crc_data_errors);
}

/// One value column of the links (`tag`), and the bitset of its absent entries (`tag + 1`).
#[inline(always)]
fn column(w: &mut W, tag: u32, l: &[NvLinkSample], get: impl Fn(&NvLinkSample) -> Option<u64> + Copy) {
    if l.iter().all(|x| get(x).is_none()) {
        return;
    }
    w.packed(tag, l.iter().map(move |x| get(x).unwrap_or(0)));
    // The bitset, 64 links a word, as long as its last absent entry needs.
    let words = l.iter().rposition(|x| get(x).is_none()).map_or(0, |i| i / 64 + 1);
    w.packed(
        tag + 1,
        (0..words).map(move |k| {
            l.iter()
                .enumerate()
                .skip(k * 64)
                .take(64)
                .filter(|(_, x)| get(x).is_none())
                .fold(0u64, |m, (i, _)| m | 1 << (i % 64))
        }),
    );
}

/// A NIC: its counter names go into the table first, as `to_wire` puts them.
fn nic<'a>(w: &mut W, n: &'a NicSample, s: &mut Strings<'a>, runs: &mut Runs<'a>, keys: &mut Vec<u32>) {
    s.keys(&mut runs.nic_counters, &n.counters, keys);
    w.u32(1, s.put(&n.name));
    w.u32(2, s.name(n.kind));
    w.opt_u32(3, s.opt(&n.netdev));
    w.opt_u32(4, n.port);
    w.opt_u32(5, s.opt(&n.pci_bus_id));
    w.opt_u32(6, s.opt(&n.operstate));
    w.opt_bool(7, n.carrier);
    w.opt_u64(8, n.carrier_changes);
    w.opt_u64(9, n.speed_mbps);
    w.opt_u32(10, n.mtu);
    w.opt_u32(11, s.opt(&n.link_layer));
    w.opt_u32(12, s.opt(&n.ib_state));
    w.opt_u32(13, s.opt(&n.ib_phys_state));
    w.opt_f64(14, n.rate_gbps);
    w.opt_f64(15, n.max_rate_gbps);
    w.packed_u32(16, keys);
    w.packed(17, n.counters.values().copied());
    w.opt_bool(18, n.fabric);
    w.names(19, &n.saturated, s);
    w.names(20, &n.addrs, s);
}

fn job<'a>(w: &mut W, j: &'a JobSample, s: &mut Strings<'a>) {
    w.u32(1, s.put(&j.job_id));
    w.u32(2, s.name(j.scheduler));
    w.opt_u32(3, j.world_size);
    w.opt_u32(4, j.sched_state.map(|x| s.name(x)));
    w.opt_sint32(5, j.sched_exit_code);
    for k in &j.ranks {
        w.message(6, |w| {
            w.u32(1, k.rank);
            w.opt_u32(2, k.local_rank);
            w.opt_u32(3, k.pid);
            w.packed_u32(4, &k.gpus);
            w.opt_u32(5, s.opt(&k.nic));
            w.u32(6, s.name(k.state));
            w.opt_f64(7, k.cpu_seconds);
            w.opt_u64(8, k.rss_bytes);
            w.opt_sint32(9, k.exit_code);
            w.opt_u64(10, k.io_write_bytes);
            if let Some(p) = &k.progress {
                w.message(11, |w| {
                    w.u64(1, p.step);
                    w.i64(2, p.last_progress_ms);
                    w.opt_f64(3, p.step_time_ms);
                    w.opt_f64(4, p.step_time_avg_ms);
                    w.opt_f64(5, p.compute_ms);
                    w.opt_f64(6, p.loss);
                    w.opt_u64(7, p.loss_step);
                    w.opt_f64(8, p.grad_norm);
                    w.bool(9, p.nonfinite_loss);
                    w.u32(10, s.name(p.status));
                    w.opt_sint32(11, p.exit_code);
                });
            }
        });
    }
}

fn event<'a>(w: &mut W, e: &'a Event, s: &mut Strings<'a>) {
    w.i64(1, e.ts_ms);
    w.u32(2, s.name(e.source));
    w.u32(3, s.put(e.class.as_str()));
    w.u32(4, s.name(e.severity));
    w.opt_u32(5, s.opt(&e.component));
    w.opt_u32(6, e.xid);
    w.opt_u32(7, e.caused_by_xid);
    w.opt_u32(8, s.opt(&e.device));
    w.opt_u32(9, e.pid);
    w.u64(10, e.count);
    w.u32(11, s.put(&e.message));
    if let Some(c) = &e.collective {
        w.message(12, |w| collective(w, c, s));
    }
}

fn collective<'a>(w: &mut W, c: &'a CollectiveInfo, s: &mut Strings<'a>) {
    w.opt_u32(1, s.opt(&c.kind));
    w.opt_u32(2, s.opt(&c.job));
    w.opt_u32(3, c.rank);
    w.opt_u32(4, c.local_rank);
    w.opt_u32(5, c.device);
    w.opt_u32(6, s.opt(&c.hostname));
    w.opt_u32(7, s.opt(&c.peer));
    w.opt_u32(8, c.peer_port);
    w.opt_u32(9, s.opt(&c.local_addr));
    w.opt_u32(10, s.opt(&c.remote_addr));
    w.opt_u32(11, s.opt(&c.hca));
    w.opt_u64(12, c.seq);
    w.opt_u32(13, s.opt(&c.op));
    w.opt_u64(14, c.timeout_ms);
    w.opt_u64(15, c.last_completed);
    w.opt_u32(16, s.opt(&c.error));
    w.opt_u32(17, s.opt(&c.pg));
}
