//! Reports sent as what changed (`application/vnd.faultline.report-delta`): the compact report,
//! compressed by zstd with the last report the analyzer acknowledged from that node as a raw-content
//! dictionary. Between two reports of a healthy node almost nothing changes (names, identities,
//! limits, zero error counters, NVLink and NIC layouts); zstd then codes the report as references
//! into the previous one plus the few values that moved, so a healthy 8-GPU, 8-NIC node's report
//! shrinks from about 7.5 KiB to well under 4 KiB (BENCHMARKS.md, issue 16).
//!
//! The contract:
//! - The sender keeps the compact bytes (`wire::encode`) of its last acknowledged report and its
//!   `seq` (the *base*). It sends a `Delta` naming the node, the base's `seq`, the new report's
//!   `seq`, and the patch. It sends a full compact report instead every `full_every` reports, after
//!   any failure, and when the analyzer asks.
//! - The receiver keeps the compact bytes of the last report it accepted per node (`Bases`). A delta
//!   whose base it does not hold (after its restart, after a lost report) is answered
//!   `BaseMismatch`: the analyzer answers 409 and the agent sends the same report in full.
//! - The rebuilt bytes are an ordinary compact report and go through the same decode and validation
//!   as any other; a patch that does not rebuild one is an error naming the node, never a guess.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use prost::Message;

use crate::ReportError;

/// The media type of a delta body.
pub const DELTA_CONTENT_TYPE: &str = "application/vnd.faultline.report-delta";
/// zstd level -3 (a fast level: literals stored, not Huffman-coded, every third position tried).
/// Against a prefix this alike, on 39 successive reports of a healthy 8-GPU node with moving
/// counters, it made patches 11% larger than level -1 (2,023 vs 1,825 B) in 22% less time (15.3 vs
/// 19.6 us), and they rebuilt faster (3.6 vs 4.6 us); level -5 made 2,283 B in 12.3 us; level 1
/// 1,590 B in 22.2 us. Patches are a fifth of the 4 KiB a report may take, and CPU is what runs
/// out first, on the analyzer and on the agents, so the faster level (issue 16, sixth session).
const LEVEL: i32 = -3;
/// Largest rebuilt report taken: the same bound the analyzer puts on any request body (4 MiB).
pub const MAX_REBUILT_BYTES: usize = 4 << 20;

/// The envelope of a delta.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delta {
    #[prost(string, tag = "1")]
    pub node: String,
    /// `seq` of the report the patch is against.
    #[prost(uint64, tag = "2")]
    pub base_seq: u64,
    /// `seq` of the report the patch rebuilds (checked against the rebuilt report).
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// zstd frame with the base's compact bytes as its dictionary.
    #[prost(bytes = "vec", tag = "4")]
    pub patch: Vec<u8>,
}

/// What went wrong with a delta.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The receiver does not hold the base the patch is against: send the report in full.
    #[error(
        "node {node:?}: the delta is against report seq {base_seq}, but the analyzer holds {held}: send the report in full"
    )]
    BaseMismatch { node: String, base_seq: u64, held: String },
    /// The body or the patch is broken.
    #[error("node {node:?}: {message}")]
    Corrupt { node: String, message: String },
}

impl From<DeltaError> for ReportError {
    fn from(e: DeltaError) -> Self {
        ReportError::Decode { field: "(delta)".into(), message: e.to_string() }
    }
}

thread_local! {
    /// One zstd context per thread, reused: making one allocates its workspace (hundreds of KiB),
    /// which cost more than the patch itself.
    static COMPRESSOR: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

fn zstd_error(code: usize) -> String {
    zstd::zstd_safe::get_error_name(code).to_string()
}

/// The patch that rebuilds `full` from `base`.
///
/// The base is zstd's *prefix* for the frame (`ZSTD_CCtx_refPrefix`): referenced, not copied, and
/// not turned into a dictionary object first. Building one per report (`loadDictionary`) cost more
/// than the compression. A prefix-coded frame is the same frame as one coded against the same bytes
/// as a raw-content dictionary.
pub fn encode(node: &str, base_seq: u64, base: &[u8], seq: u64, full: &[u8]) -> Vec<u8> {
    let patch = COMPRESSOR
        .with(|c| {
            use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};
            let mut c = c.borrow_mut();
            let c = match &mut *c {
                Some(c) => c,
                None => {
                    let mut n = CCtx::try_create().ok_or("zstd could not make a context")?;
                    n.set_parameter(CParameter::CompressionLevel(LEVEL)).map_err(zstd_error)?;
                    // The frame's checksum makes a patch applied to the wrong base an error, not
                    // a report; the content size lets the receiver size its buffer exactly.
                    n.set_parameter(CParameter::ChecksumFlag(true)).map_err(zstd_error)?;
                    n.set_parameter(CParameter::ContentSizeFlag(true)).map_err(zstd_error)?;
                    c.insert(n)
                }
            };
            // SAFETY (lifetime only): zstd keeps a prefix for the next frame alone. That frame is
            // compressed here, and the session reset below drops the reference on every path, so
            // the context never reads `base` after this function returns.
            let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(full.len()));
            let done = c.ref_prefix(prefix).and_then(|_| c.compress2(&mut out, full));
            let reset = c.reset(ResetDirective::SessionOnly);
            done.and(reset).map_err(zstd_error)?;
            Ok::<_, String>(out)
        })
        // zstd fails only on allocation: a plain frame (no prefix) still rebuilds the report.
        .unwrap_or_else(|_: String| zstd::bulk::compress(full, LEVEL).unwrap_or_default());
    Delta { node: node.to_string(), base_seq, seq, patch }.encode_to_vec()
}

/// The envelope of a delta body, not yet rebuilt.
pub fn envelope(body: &[u8]) -> Result<Delta, DeltaError> {
    Delta::decode(body)
        .map_err(|e| DeltaError::Corrupt { node: String::new(), message: format!("not a faultline report delta: {e}") })
}

/// Rebuilds the compact bytes of the report `d` patches `base` into (`base` as the frame's prefix,
/// as `encode` made it).
pub fn rebuild(d: &Delta, base: &[u8]) -> Result<Vec<u8>, DeltaError> {
    use zstd::zstd_safe::{DCtx, ResetDirective};
    let corrupt = |message: String| DeltaError::Corrupt { node: d.node.clone(), message };
    // Exactly the size the frame declares (zstd writes it), never more than the limit: a buffer
    // sized to the limit would be kept as the node's base, 4 MiB per node.
    let size = match zstd::zstd_safe::get_frame_content_size(&d.patch) {
        Ok(Some(n)) if n <= MAX_REBUILT_BYTES as u64 => n as usize,
        Ok(Some(n)) => return Err(corrupt(format!("the patch rebuilds {n} bytes, over {MAX_REBUILT_BYTES}"))),
        _ => return Err(corrupt("the patch does not say how many bytes it rebuilds".into())),
    };
    DECOMPRESSOR.with(|z| {
        let mut z = z.borrow_mut();
        let z = match &mut *z {
            Some(z) => z,
            None => z.insert(DCtx::try_create().ok_or_else(|| corrupt("zstd could not make a context".into()))?),
        };
        // SAFETY (lifetime only): as in `encode`, the prefix serves the one frame decompressed
        // here, and the session reset below drops it on every path.
        let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let mut out = Vec::with_capacity(size);
        let done = z.ref_prefix(prefix).and_then(|_| z.decompress(&mut out, &d.patch));
        let reset = z.reset(ResetDirective::SessionOnly);
        match (done, reset) {
            (Ok(n), Ok(_)) if n == size => Ok(out),
            (Ok(n), Ok(_)) => Err(corrupt(format!("the patch rebuilt {n} bytes, not the {size} it declares"))),
            (Err(e), _) | (_, Err(e)) => Err(corrupt(format!(
                "the patch does not rebuild a report against base seq {}: {}",
                d.base_seq,
                zstd_error(e)
            ))),
        }
    })
}

/// The receiver's bases: per node, the `seq` and compact bytes of the last report it accepted.
/// Shared by the request threads that decode; each node's reports come one at a time.
#[derive(Debug, Default)]
pub struct Bases {
    map: Mutex<HashMap<String, (u64, Vec<u8>)>>,
}

impl Bases {
    /// Rebuilds the report a delta body carries: its compact bytes.
    pub fn rebuild(&self, body: &[u8]) -> Result<Vec<u8>, DeltaError> {
        self.rebuild_envelope(&envelope(body)?)
    }

    /// Rebuilds the report of a delta whose envelope was read already.
    pub fn rebuild_envelope(&self, d: &Delta) -> Result<Vec<u8>, DeltaError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&d.node) {
            Some((seq, base)) if *seq == d.base_seq => rebuild(d, base),
            held => Err(DeltaError::BaseMismatch {
                node: d.node.clone(),
                base_seq: d.base_seq,
                held: held.map_or_else(|| "no report from it".to_string(), |(s, _)| format!("seq {s}")),
            }),
        }
    }

    /// Remembers an accepted report's compact bytes as the node's base.
    pub fn keep(&self, node: &str, seq: u64, compact: Vec<u8>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(node) {
            Some(v) => *v = (seq, compact),
            None => {
                map.insert(node.to_string(), (seq, compact));
            }
        }
    }

    /// Forgets a node's base (its report was refused after all).
    pub fn forget(&self, node: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
    }

    /// Nodes with a base, and the bytes held.
    pub fn size(&self) -> (usize, usize) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        (map.len(), map.values().map(|(_, b)| b.len()).sum())
    }
}

/// The sender's side: the base to patch against, and when to send in full.
#[derive(Debug, Clone)]
pub struct Sender {
    /// A full report at least every this many reports (1 = never a delta).
    pub full_every: u32,
    base: Option<(u64, Vec<u8>)>,
    since_full: u32,
}

impl Sender {
    pub fn new(full_every: u32) -> Self {
        Sender { full_every: full_every.max(1), base: None, since_full: 0 }
    }

    /// Report `seq` (its compact bytes `full`) as a delta body, or `None` when it goes in full.
    pub fn delta(&self, node: &str, seq: u64, full: &[u8]) -> Option<Vec<u8>> {
        match &self.base {
            Some((base_seq, base)) if self.since_full + 1 < self.full_every && *base_seq < seq => {
                Some(encode(node, *base_seq, base, seq, full))
            }
            _ => None,
        }
    }

    /// The analyzer acknowledged report `seq` (sent as a delta or not): it is the next base.
    pub fn acknowledged(&mut self, seq: u64, full: Vec<u8>, was_delta: bool) {
        self.since_full = if was_delta { self.since_full + 1 } else { 0 };
        self.base = Some((seq, full));
    }

    /// The analyzer does not hold our base, or something failed: the next report goes in full.
    pub fn reset(&mut self) {
        self.base = None;
        self.since_full = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64, temp: f64) -> Vec<u8> {
        let mut r = crate::NodeReport::empty("node-0001");
        r.seq = seq;
        r.timestamp_ms = 1_700_000_000_000 + seq as i64 * 10_000;
        r.gpus = (0..8)
            .map(|i| crate::GpuSample {
                index: i,
                uuid: format!("GPU-{i:08x}-aaaa-bbbb-cccc-0123456789ab"),
                name: "NVIDIA H100 80GB HBM3".into(),
                temp_c: Some(temp + f64::from(i)),
                ..Default::default()
            })
            .collect();
        super::super::encode(&r)
    }

    #[test]
    fn a_delta_rebuilds_the_report_exactly_and_is_small() {
        let (a, b) = (report(1, 40.0), report(2, 41.0));
        let body = encode("node-0001", 1, &a, 2, &b);
        assert!(body.len() * 3 < b.len(), "delta {} B vs full {} B", body.len(), b.len());
        let bases = Bases::default();
        bases.keep("node-0001", 1, a.clone());
        assert_eq!(bases.rebuild(&body).unwrap(), b);
        assert_eq!(super::super::decode(&b).unwrap().seq, 2);
    }

    #[test]
    fn a_delta_against_a_base_the_receiver_lacks_asks_for_the_full_report() {
        let (a, b) = (report(1, 40.0), report(2, 41.0));
        let body = encode("node-0001", 1, &a, 2, &b);
        let bases = Bases::default();
        assert!(matches!(bases.rebuild(&body), Err(DeltaError::BaseMismatch { .. })));
        bases.keep("node-0001", 7, a);
        let e = bases.rebuild(&body).unwrap_err();
        assert!(e.to_string().contains("seq 7") && e.to_string().contains("in full"), "{e}");
    }

    #[test]
    fn a_patch_against_another_base_or_garbage_is_an_error_not_a_report() {
        let (a, b) = (report(1, 40.0), report(2, 41.0));
        let body = encode("node-0001", 1, &a, 2, &b);
        let bases = Bases::default();
        bases.keep("node-0001", 1, report(1, 90.0)); // same seq, other bytes: a restarted agent
        // The frame's checksum is of the report the patch was made for: against another base, a
        // patch fails, or (when every byte it copies from the base is the same in both) rebuilds
        // exactly that report. Never a third one.
        match bases.rebuild(&body) {
            Ok(rebuilt) => assert_eq!(rebuilt, b, "a wrong base must not rebuild another report"),
            Err(e) => assert!(matches!(e, DeltaError::Corrupt { .. })),
        }
        // A base that shares nothing with the right one: the patch cannot rebuild the report.
        bases.keep("node-0001", 1, vec![0x55; a.len()]);
        assert!(matches!(bases.rebuild(&body), Err(DeltaError::Corrupt { .. })));
        assert!(matches!(bases.rebuild(b"\xff\xff garbage"), Err(DeltaError::Corrupt { .. })));
    }

    #[test]
    fn a_rebuilt_report_holds_its_own_size_not_the_limit() {
        let (a, b) = (report(1, 40.0), report(2, 41.0));
        let env = envelope(&encode("node-0001", 1, &a, 2, &b)).unwrap();
        let out = rebuild(&env, &a).unwrap();
        assert_eq!(out, b);
        assert!(out.capacity() < 2 * b.len(), "capacity {} for {} bytes", out.capacity(), b.len());
    }

    #[test]
    fn the_sender_sends_in_full_first_every_nth_report_and_after_a_reset() {
        let mut s = Sender::new(3);
        let full = |seq| report(seq, 40.0);
        let d = s.delta("n", 1, &full(1)).is_some();
        assert!(!d, "no base yet");
        s.acknowledged(1, full(1), d);
        let d = s.delta("n", 2, &full(2)).is_some();
        assert!(d);
        s.acknowledged(2, full(2), d);
        let d = s.delta("n", 3, &full(3)).is_some();
        assert!(d);
        s.acknowledged(3, full(3), d);
        let d = s.delta("n", 4, &full(4)).is_some();
        assert!(!d, "every third report goes in full");
        s.acknowledged(4, full(4), d);
        s.reset();
        assert!(s.delta("n", 5, &full(5)).is_none());
    }
}
