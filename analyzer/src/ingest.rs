//! The one way a report gets into the analyzer. HTTP (`server.rs`), the simulator's in-process mode
//! and the load generator all come through here, so what a benchmark measures is what production
//! runs:
//!
//! 1. `decode`: the body, in the encoding its `Content-Type` named, into a `Decoded` report,
//!    validated once. Runs outside the engine lock (on whatever thread received the body).
//! 2. `apply`: under the engine lock, re-stamps a report from the future, hands it to the engine
//!    (which trusts `Decoded` and does not validate again) and records its seq in the node ledger.
//!
//! The ledger here also holds the single rule for "is this node alive" (`alive`): the API's
//! `reporting` flag, the `nodes_reporting` gauge and the engine's heartbeat scan all use it.

use std::collections::{BTreeMap, VecDeque};

pub use faultline_proto::wire::delta::Bases;
use faultline_proto::wire::delta::DeltaError;
use faultline_proto::{NodeReport, ReportError};

use crate::engine::{Analyzer, IngestError, IngestOutcome};
pub use crate::silence::{
    HEARTBEAT_MIN_SILENCE_MS, HEARTBEAT_TRANSIT_MS, MASS_SILENCE_FRACTION, MASS_SILENCE_MIN_NODES,
    silence_allowance_ms, silent,
};
use crate::skew::ClockSkew;

/// How a report body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`: the reference form (`--once`, debugging, third-party senders).
    Json,
    /// `application/x-protobuf`: the compact form agents send (`faultline_proto::wire`).
    Protobuf,
    /// `application/vnd.faultline.report-delta`: a compact report as what changed since the node's
    /// last accepted one (`faultline_proto::wire::delta`); decoded with `decode_any` and the bases.
    Delta,
}

impl Encoding {
    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
            Encoding::Delta => "delta",
        }
    }

    /// The media type the analyzer takes for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => faultline_proto::wire::CONTENT_TYPE,
            Encoding::Delta => faultline_proto::wire::delta::DELTA_CONTENT_TYPE,
        }
    }

    /// The encoding a `Content-Type` value names (parameters such as `charset` ignored), or an
    /// error that says what to send instead.
    pub fn from_content_type(v: Option<&str>) -> Result<Encoding, String> {
        let Some(v) = v else {
            return Err(format!(
                "missing Content-Type: send `Content-Type: application/json` or `{}`",
                faultline_proto::wire::CONTENT_TYPE
            ));
        };
        let mime = v.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else if faultline_proto::wire::CONTENT_TYPES.iter().any(|t| mime.eq_ignore_ascii_case(t)) {
            Ok(Encoding::Protobuf)
        } else if mime.eq_ignore_ascii_case(faultline_proto::wire::delta::DELTA_CONTENT_TYPE) {
            Ok(Encoding::Delta)
        } else {
            Err(format!(
                "Content-Type is {v:?}; reports must be sent as application/json, {} or {}",
                faultline_proto::wire::CONTENT_TYPE,
                faultline_proto::wire::delta::DELTA_CONTENT_TYPE
            ))
        }
    }
}

/// A report that was decoded and validated (`decode` is the only way to make one), with what the
/// ledger needs from it. The engine takes these without validating again.
#[derive(Debug, Clone)]
pub struct Decoded {
    report: NodeReport,
    bytes: usize,
    encoding: Encoding,
    /// The report's compact bytes (the body, or what a delta rebuilt): the node's next delta base
    /// once the report is accepted (`Bases::keep`).
    compact: Option<Vec<u8>>,
}

impl Decoded {
    pub fn report(&self) -> &NodeReport {
        &self.report
    }
    /// For limits that drop parts of a report (component caps); removing parts keeps it valid.
    pub fn report_mut(&mut self) -> &mut NodeReport {
        &mut self.report
    }
    /// Size of the body it came from.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    pub fn into_report(self) -> NodeReport {
        self.report
    }
    /// The compact bytes to keep as the node's delta base once the report is accepted.
    pub fn take_compact(&mut self) -> Option<Vec<u8>> {
        self.compact.take()
    }
}

/// Why a body could not be decoded: a problem in the report, or a delta the analyzer cannot rebuild
/// (answered 409: the agent then sends the same report in full).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
}

/// Decodes a body in any encoding, deltas included (rebuilt against `bases`), and validates the
/// report once. A rebuilt report must name the node and `seq` its delta's envelope named.
pub fn decode_any(body: &[u8], encoding: Encoding, bases: &Bases) -> Result<Decoded, DecodeError> {
    if encoding != Encoding::Delta {
        let mut d = decode(body, encoding)?;
        if encoding == Encoding::Protobuf {
            d.compact = Some(body.to_vec());
        }
        return Ok(d);
    }
    decode_delta(faultline_proto::wire::delta::envelope(body)?, body.len(), bases)
}

/// Rebuilds a delta whose envelope was read already (`bytes`: the body's size) against `bases`,
/// then decodes and validates the report as `decode_any` does.
pub fn decode_delta(
    env: faultline_proto::wire::delta::Delta,
    bytes: usize,
    bases: &Bases,
) -> Result<Decoded, DecodeError> {
    let encoding = Encoding::Delta;
    let full = bases.rebuild_envelope(&env)?;
    let report = faultline_proto::wire::decode(&full)?;
    if report.node != env.node || report.seq != env.seq {
        return Err(DeltaError::Corrupt {
            node: env.node,
            message: format!(
                "the delta rebuilt report {:?} seq {} instead of seq {}",
                report.node, report.seq, env.seq
            ),
        }
        .into());
    }
    report.validate()?;
    Ok(Decoded { report, bytes, encoding, compact: Some(full) })
}

/// Decodes a body and validates the report, once. The plain JSON decoder is several times faster
/// than the path-tracking one, so it goes first; only a body it refuses is decoded again to name the
/// field that is wrong.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Decoded, ReportError> {
    let report = match encoding {
        Encoding::Json => match serde_json::from_slice::<NodeReport>(body) {
            Ok(r) => {
                r.validate()?;
                r
            }
            Err(_) => NodeReport::from_json(body)?,
        },
        Encoding::Protobuf => {
            let r = faultline_proto::wire::decode(body)?;
            r.validate()?;
            r
        }
        Encoding::Delta => {
            return Err(ReportError::Decode {
                field: "(delta)".into(),
                message: "a delta is rebuilt against the node's last report: decode it with decode_any".into(),
            });
        }
    };
    Ok(Decoded { report, bytes: body.len(), encoding, compact: None })
}

/// What `apply` did besides the engine's verdict, for the caller's metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: IngestOutcome,
    pub arrival: Arrival,
    /// The report was stamped this far (ms) ahead of the analyzer's clock and was taken at arrival
    /// time instead.
    pub restamped_ahead_ms: Option<i64>,
    /// Arrival time minus the report's (re-stamped) time, ms.
    pub age_ms: i64,
    pub bytes: usize,
    /// The report itself, applied: the caller frees it after letting go of the engine's lock, so
    /// freeing a report's hundreds of allocations does not hold up other reports and the tick.
    pub report: Spent,
}

/// An applied report, kept only to be freed outside the engine's lock. Always equal to another:
/// `Applied` compares by what happened, not by what the report held.
#[derive(Debug, Clone)]
pub struct Spent(pub NodeReport);

impl PartialEq for Spent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Applies a decoded report at `now_ms`: the engine and the ledger, in that order (the caller
/// holds both; lock order engine, then ledger). The ledger sees the agent's own clock (that is how
/// skew is measured); the engine sees a report from the future at arrival time, so one wrong clock
/// cannot hide later reports.
pub fn apply(engine: &mut Analyzer, ledger: &mut NodeLedger, d: Decoded, now_ms: i64) -> Applied {
    let Decoded { mut report, bytes, .. } = d;
    let meta = ReportMeta::of(&report, bytes);
    let restamped_ahead_ms = crate::skew::restamp_future(&mut report, now_ms);
    let age_ms = now_ms - report.timestamp_ms;
    let outcome = engine.apply_validated(&report, now_ms);
    let arrival = ledger.record(&meta, outcome.duplicate, now_ms);
    Applied { outcome, arrival, restamped_ahead_ms, age_ms, bytes, report: Spent(report) }
}

/// `decode` then `apply`: the whole path for a caller that holds the engine already (the
/// simulator's in-process mode, the demo).
pub fn ingest_body(
    engine: &mut Analyzer,
    ledger: &mut NodeLedger,
    body: &[u8],
    encoding: Encoding,
    now_ms: i64,
) -> Result<Applied, IngestError> {
    let d = decode(body, encoding)?;
    Ok(apply(engine, ledger, d, now_ms))
}

/// The rule for "is this node alive": not shut down, and heard (by the analyzer's clock) within its
/// silence allowance (`silence::silence_allowance_ms`: `intervals` missed reports plus the transit
/// allowance). The engine calls a node lost past the same bound.
pub fn alive(shutdown: bool, last_heard_ms: i64, interval_ms: u64, now_ms: i64, intervals: f64) -> bool {
    !shutdown && !silent(last_heard_ms, interval_ms, now_ms, intervals)
}

/// Most separate missing-seq ranges remembered per node. Past this the oldest range is forgotten
/// (its count stays in `seqs_missing`); a node with this many holes is broken in a way a person
/// will look at anyway.
const MAX_MISSING_RANGES: usize = 64;

/// What the ledger needs from a report, taken before the report moves into the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMeta {
    pub node: String,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub interval_ms: u64,
    pub agent_version: String,
    pub shutdown: bool,
    pub gpus: u32,
    pub nics: u32,
    pub bytes: usize,
}

impl ReportMeta {
    pub fn of(r: &NodeReport, bytes: usize) -> Self {
        Self {
            node: r.node.clone(),
            seq: r.seq,
            timestamp_ms: r.timestamp_ms,
            interval_ms: r.interval_ms,
            agent_version: r.agent_version.clone(),
            shutdown: r.shutdown,
            gpus: u32::try_from(r.gpus.len()).unwrap_or(u32::MAX),
            nics: u32::try_from(r.nics.len()).unwrap_or(u32::MAX),
            bytes,
        }
    }
}

/// How a report's `seq` related to what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    First,
    InOrder,
    /// `missing` seqs were skipped before this one.
    Gap {
        missing: u64,
    },
    /// Filled a hole left by an earlier gap.
    LateFill,
    Duplicate,
}

/// One node's ingest history.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub last_seq: u64,
    /// Reports applied, duplicates not counted.
    pub reports: u64,
    pub duplicates: u64,
    /// Times `seq` jumped by more than one.
    pub gaps: u64,
    /// Seqs skipped and not (yet) filled by a late report.
    pub seqs_missing: u64,
    /// Reports that arrived after a later seq and filled a hole.
    pub late: u64,
    missing: VecDeque<(u64, u64)>,
    /// Analyzer clock, Unix ms.
    pub first_heard_ms: i64,
    pub last_heard_ms: i64,
    /// Report clock of the newest report, Unix ms.
    pub last_report_ms: i64,
    pub interval_ms: u64,
    pub agent_version: String,
    pub shutdown: bool,
    pub bytes: u64,
    pub gpus: u32,
    pub nics: u32,
    /// How far the node's clock is from the analyzer's.
    pub clock: ClockSkew,
}

/// Per-node seq accounting: lets anyone check that every report arrived, in order, with no gap.
#[derive(Debug, Default)]
pub struct NodeLedger {
    nodes: BTreeMap<String, NodeRecord>,
}

impl NodeLedger {
    /// Accounts for one accepted report. `engine_duplicate` is the engine's own verdict.
    pub fn record(&mut self, m: &ReportMeta, engine_duplicate: bool, now_ms: i64) -> Arrival {
        let Some(rec) = self.nodes.get_mut(&m.node) else {
            self.nodes.insert(
                m.node.clone(),
                NodeRecord {
                    last_seq: m.seq,
                    reports: 1,
                    duplicates: 0,
                    gaps: 0,
                    seqs_missing: 0,
                    late: 0,
                    missing: VecDeque::new(),
                    first_heard_ms: now_ms,
                    last_heard_ms: now_ms,
                    last_report_ms: m.timestamp_ms,
                    interval_ms: m.interval_ms,
                    agent_version: m.agent_version.clone(),
                    shutdown: m.shutdown,
                    bytes: m.bytes as u64,
                    gpus: m.gpus,
                    nics: m.nics,
                    clock: observed_clock(m, now_ms),
                },
            );
            return Arrival::First;
        };
        rec.last_heard_ms = now_ms;
        rec.bytes = rec.bytes.saturating_add(m.bytes as u64);
        if let Some(now_skewed) = rec.clock.observe(m.timestamp_ms, now_ms, m.interval_ms) {
            log_skew(&m.node, &rec.clock, now_skewed);
        }
        let arrival = if engine_duplicate {
            Arrival::Duplicate
        } else if m.seq == rec.last_seq.saturating_add(1) {
            Arrival::InOrder
        } else if m.seq > rec.last_seq {
            let missing = m.seq - rec.last_seq - 1;
            rec.missing.push_back((rec.last_seq + 1, m.seq - 1));
            if rec.missing.len() > MAX_MISSING_RANGES {
                rec.missing.pop_front();
            }
            Arrival::Gap { missing }
        } else if take_missing(&mut rec.missing, m.seq) {
            Arrival::LateFill
        } else {
            Arrival::Duplicate
        };
        match arrival {
            Arrival::Duplicate => {
                rec.duplicates += 1;
                return arrival;
            }
            Arrival::LateFill => {
                rec.late += 1;
                rec.seqs_missing = rec.seqs_missing.saturating_sub(1);
            }
            Arrival::Gap { missing } => {
                rec.gaps += 1;
                rec.seqs_missing = rec.seqs_missing.saturating_add(missing);
            }
            Arrival::First | Arrival::InOrder => {}
        }
        rec.reports += 1;
        if m.seq > rec.last_seq {
            rec.last_seq = m.seq;
        }
        if m.timestamp_ms >= rec.last_report_ms {
            rec.last_report_ms = m.timestamp_ms;
            rec.interval_ms = m.interval_ms;
            rec.agent_version.clone_from(&m.agent_version);
            rec.shutdown = m.shutdown;
            rec.gpus = m.gpus;
            rec.nics = m.nics;
        }
        arrival
    }

    pub fn get(&self, node: &str) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &NodeRecord)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes alive by `alive`'s rule.
    pub fn reporting(&self, now_ms: i64, intervals: f64) -> usize {
        self.nodes.values().filter(|r| r.alive(now_ms, intervals)).count()
    }
}

fn observed_clock(m: &ReportMeta, now_ms: i64) -> ClockSkew {
    let mut c = ClockSkew::default();
    c.observe(m.timestamp_ms, now_ms, m.interval_ms);
    c
}

fn log_skew(node: &str, c: &ClockSkew, now_skewed: bool) {
    let skew_s = c.estimate_ms().map(|ms| ms as f64 / 1000.0);
    if now_skewed {
        tracing::warn!(
            node,
            skew_s,
            limit_s = crate::skew::MAX_CLOCK_SKEW_MS as f64 / 1000.0,
            "agent clock is off from the analyzer's; its report times are not trusted for liveness (check NTP on the node)"
        );
    } else {
        tracing::info!(node, skew_s, "agent clock back in line with the analyzer's");
    }
}

/// Nodes whose clocks are skewed, with the offset in seconds.
pub fn skewed_nodes(ledger: &NodeLedger) -> Vec<(String, f64)> {
    ledger
        .iter()
        .filter(|(_, r)| r.clock.skewed())
        .filter_map(|(n, r)| Some((n.clone(), r.clock.estimate_ms()? as f64 / 1000.0)))
        .collect()
}

/// Removes `seq` from the missing ranges; false when it was not missing.
fn take_missing(ranges: &mut VecDeque<(u64, u64)>, seq: u64) -> bool {
    let Some(i) = ranges.iter().position(|&(lo, hi)| lo <= seq && seq <= hi) else { return false };
    let (lo, hi) = ranges[i];
    match (seq == lo, seq == hi) {
        (true, true) => {
            ranges.remove(i);
        }
        (true, false) => ranges[i].0 = seq + 1,
        (false, true) => ranges[i].1 = seq - 1,
        (false, false) => {
            ranges[i].1 = seq - 1;
            ranges.insert(i + 1, (seq + 1, hi));
        }
    }
    true
}

impl NodeRecord {
    /// Alive by the one rule (`alive`).
    pub fn alive(&self, now_ms: i64, intervals: f64) -> bool {
        alive(self.shutdown, self.last_heard_ms, self.interval_ms, now_ms, intervals)
    }
}

impl Analyzer {
    /// Decode, validate and apply one JSON report body with `decode`, as `POST /api/v1/reports`
    /// does, but without the node ledger: callers that want the whole path (seq accounting, future
    /// stamps) use `ingest_body`.
    pub fn ingest_json(&mut self, body: &[u8], now_ms: i64) -> Result<IngestOutcome, IngestError> {
        let report = decode(body, Encoding::Json)?;
        Ok(self.apply_validated(report.report(), now_ms))
    }
}

/// Decode and validate a JSON report body (`decode` with `Encoding::Json`).
pub fn decode_json(body: &[u8]) -> Result<NodeReport, ReportError> {
    decode(body, Encoding::Json).map(Decoded::into_report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(node: &str, seq: u64) -> ReportMeta {
        ReportMeta {
            node: node.into(),
            seq,
            timestamp_ms: 1_000 + seq as i64,
            interval_ms: 10_000,
            agent_version: "0.1.0".into(),
            shutdown: false,
            gpus: 8,
            nics: 8,
            bytes: 100,
        }
    }

    #[test]
    fn ledger_counts_order_gaps_late_fills_and_duplicates() {
        let mut l = NodeLedger::default();
        assert_eq!(l.record(&meta("n", 1), false, 0), Arrival::First);
        assert_eq!(l.record(&meta("n", 2), false, 0), Arrival::InOrder);
        assert_eq!(l.record(&meta("n", 6), false, 0), Arrival::Gap { missing: 3 });
        assert_eq!(l.record(&meta("n", 4), false, 0), Arrival::LateFill);
        assert_eq!(l.record(&meta("n", 4), false, 0), Arrival::Duplicate);
        assert_eq!(l.record(&meta("n", 6), false, 0), Arrival::Duplicate);
        assert_eq!(l.record(&meta("n", 7), true, 0), Arrival::Duplicate);
        let r = l.get("n").unwrap();
        assert_eq!((r.last_seq, r.reports, r.gaps, r.seqs_missing, r.late, r.duplicates), (6, 4, 1, 2, 1, 3));
        assert_eq!(r.missing, VecDeque::from([(3, 3), (5, 5)]));
    }

    #[test]
    fn missing_ranges_split_and_shrink() {
        let mut r = VecDeque::from([(10, 20)]);
        assert!(take_missing(&mut r, 10));
        assert!(take_missing(&mut r, 20));
        assert!(take_missing(&mut r, 15));
        assert_eq!(r, VecDeque::from([(11, 14), (16, 19)]));
        assert!(!take_missing(&mut r, 15));
        assert!(!take_missing(&mut r, 25));
    }

    #[test]
    fn reporting_counts_only_nodes_heard_recently_and_not_shut_down() {
        let mut l = NodeLedger::default();
        l.record(&meta("a", 1), false, 0);
        l.record(&meta("b", 1), false, 50_000);
        let mut m = meta("c", 1);
        m.shutdown = true;
        l.record(&m, false, 50_000);
        // Allowance at a 10 s interval and 3 intervals: 30 s plus the 20 s transit allowance.
        assert_eq!(l.reporting(50_000, 3.0), 2);
        assert_eq!(l.reporting(50_001, 3.0), 1);
        assert_eq!(l.reporting(20_000, 3.0), 2);
    }
}
