//! The progress API: training loops post `{job, rank, step, …}` to the agent; the store keeps the latest
//! state per (job, rank) for the jobs collector and `/metrics`.
//!
//! Two ways in, same record, same checks, same store:
//! - UDP datagrams on `127.0.0.1:9431` (the `--progress-listen` address; [`serve_udp`]): one JSON
//!   object per datagram, no answer. The cheap path, and the default of `report-progress` and of the
//!   snippet in `PROGRESS.md`: a post costs the agent a fraction of a `recvmmsg` call and the parse,
//!   against an HTTP request's parsing, routing and response. A refused datagram changes nothing, is
//!   counted (`faultline_agent_progress_rejected_total`) and the first is logged; there is nobody to
//!   tell. Only reachable from the host's network namespace.
//! - `POST /progress` over HTTP on the same address, or on the Unix socket `--progress-socket`
//!   (reachable from a container it is mounted into), answering each post.
//!
//! Contract of a post (JSON object, at most [`MAX_BODY_BYTES`]):
//!
//! | field | type | notes |
//! | --- | --- | --- |
//! | `job` | string, required | the job id the agent discovers: Slurm job id, else `TORCHELASTIC_RUN_ID`, … |
//! | `rank` | integer ≥ 0, required | global rank |
//! | `step` | integer ≥ 0, required | the training step just finished |
//! | `step_time_ms` | number ≥ 0 or null | wall time of the step; derived from post spacing when absent |
//! | `compute_ms` | number ≥ 0 or null | the step's own work before it waits in collectives |
//! | `loss`, `grad_norm` | number, null, or the strings `"nan"`, `"inf"`, `"-inf"` | a string marks a non-finite value |
//! | `loss_nonfinite`, `grad_norm_nonfinite` | bool | alternative to the strings: `"loss": null, "loss_nonfinite": true` |
//! | `status` | `running` (default), `checkpointing`, `evaluating`, `exited` | |
//! | `exit_code` | integer | required with `exited`, refused otherwise; negative = killed by signal -n |
//!
//! The bare tokens `NaN`, `Infinity` and `-Infinity` (what Python's `json.dumps` writes for non-finite
//! floats) are accepted too and read like the strings above. Unknown fields are refused, so a typo does
//! not silently drop data.
//!
//! Decisions:
//! - A step lower than the last one is accepted: it is a restart from a checkpoint. It counts as
//!   progress and restarts the step-time average. A repeated step is not progress (the time of last
//!   progress stays) but its other fields are stored.
//! - `nonfinite_loss` is latched: it stays set for [`NONFINITE_HOLD_MS`] after the last non-finite loss
//!   or gradient norm, so a report taken every interval cannot miss a single bad step.
//! - A refused post (4xx, with the reason in `{"error": "..."}`) changes nothing. Success is `204`.
//! - The store holds at most [`DEFAULT_MAX_ENTRIES`] (job, rank) entries; a post for a new entry when
//!   it is full is refused with 429 and counted in `dropped()`. Entries expire [`STALE_AFTER_MS`]
//!   after their last post unless the jobs collector still sees the rank's process
//!   ([`ProgressStore::touch`]); `exited` entries expire after [`EXITED_RETAIN_MS`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use faultline_proto::{Event, EventSource, Progress, ProgressStatus, Severity};
use serde_json::{Map, Value};

use crate::events::EventQueue;

/// Largest accepted post body. A progress post is ~200 bytes; 16 KiB leaves room for long job ids
/// while keeping a misbehaving client from making the agent buffer much.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most (job, rank) entries tracked. A node runs at most a few dozen ranks; 65,536 bounds memory to a
/// few tens of MiB even when a client posts garbage ids.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;
/// An entry with no post and no live process for this long is forgotten. One hour: far longer than any
/// checkpoint or evaluation pause, short enough that ids of finished jobs do not pile up.
pub const STALE_AFTER_MS: i64 = 60 * 60 * 1000;
/// An `exited` entry is kept this long after its last post (the same 5 minutes the jobs collector
/// keeps a vanished rank), so the analyzer sees the exit in several reports.
pub const EXITED_RETAIN_MS: i64 = 5 * 60 * 1000;
/// Weight of the newest sample in the step-time moving average. 0.2 averages over roughly the last
/// 5–10 steps: smooth enough to hide ±2% jitter, quick enough to show a slowdown within ~10 steps.
pub const STEP_TIME_EWMA_ALPHA: f64 = 0.2;
/// How long `nonfinite_loss` stays set after the last non-finite value: 60 s is several report
/// intervals (default 10 s), so no report in between can miss it.
pub const NONFINITE_HOLD_MS: i64 = 60 * 1000;
/// Highest accepted rank. The largest published training runs use ~10^5 GPUs; 2^24 leaves margin and
/// still refuses obviously corrupt values.
pub const MAX_RANK: u32 = 1 << 24;
/// Largest accepted `step_time_ms` / `compute_ms`: the proto's own bound (1e9 ms ≈ 11.6 days).
pub const MAX_DURATION_MS: f64 = 1e9;
/// Default address of the HTTP listener.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9431/progress";
/// Default address for progress datagrams: the HTTP listener's, over UDP (`report-progress --udp`).
pub const DEFAULT_UDP: &str = "127.0.0.1:9431";

const KNOWN_FIELDS: &str = "job, rank, step, step_time_ms, compute_ms, loss, loss_nonfinite, grad_norm, \
                            grad_norm_nonfinite, status, exit_code";
/// The fields of [`KNOWN_FIELDS`], in the order [`Fields`] stores them.
const FIELD_NAMES: [&str; 11] = [
    "job",
    "rank",
    "step",
    "step_time_ms",
    "compute_ms",
    "loss",
    "loss_nonfinite",
    "grad_norm",
    "grad_norm_nonfinite",
    "status",
    "exit_code",
];

/// A post's top-level object, read straight into one slot per known field (no map, no key strings:
/// this parse is most of what a datagram post costs). Like a JSON map, a repeated key keeps its last
/// value. An unknown key is remembered (the first in name order, as a sorted map would list it) and
/// its value skipped, so a malformed body is still reported as malformed first.
#[derive(Debug, Default)]
struct Fields {
    values: [Option<Value>; 11],
    unknown: Option<String>,
}

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        let i = FIELD_NAMES.iter().position(|f| *f == name)?;
        self.values[i].as_ref()
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Fields, A::Error> {
                let mut out = Fields::default();
                while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                    match FIELD_NAMES.iter().position(|f| *f == k) {
                        Some(i) => out.values[i] = Some(m.next_value()?),
                        None => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                            if out.unknown.as_deref().is_none_or(|u| k.as_ref() < u) {
                                out.unknown = Some(k.into_owned());
                            }
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Why a post was refused. Each maps to one HTTP status (see [`PostError::status`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PostError {
    /// The body is not a valid post; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("body is {0} bytes, more than the limit of {MAX_BODY_BYTES}")]
    TooLarge(usize),
    /// The store is full and this (job, rank) is new.
    #[error("tracking limit of {0} (job, rank) entries reached; post refused")]
    Full(usize),
}

impl PostError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Full(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

fn invalid(msg: impl Into<String>) -> PostError {
    PostError::Invalid(msg.into())
}

/// A value that may be non-finite (`loss`, `grad_norm`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Finite(f64),
    NonFinite,
}

/// One validated post.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressPost {
    pub job: String,
    pub rank: u32,
    pub step: u64,
    pub step_time_ms: Option<f64>,
    pub compute_ms: Option<f64>,
    pub loss: Option<Metric>,
    pub grad_norm: Option<Metric>,
    pub status: ProgressStatus,
    pub exit_code: Option<i32>,
}

impl ProgressPost {
    /// Parse and validate a post body. Every error names the field that is wrong.
    pub fn from_json(body: &[u8]) -> Result<Self, PostError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(PostError::TooLarge(body.len()));
        }
        let body = nonfinite_literals_to_strings(body);
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Not an object: say whether it is JSON at all.
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| invalid(format!("malformed JSON: {e}")))?;
            return Err(invalid("body must be a JSON object like {\"job\": \"j\", \"rank\": 0, \"step\": 1}"));
        }
        let fields: Fields = serde_json::from_slice(&body).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
        if let Some(k) = &fields.unknown {
            return Err(invalid(format!("unknown field `{k}`; known fields: {KNOWN_FIELDS}")));
        }
        Self::from_map(&fields)
    }

    fn from_map(map: &Fields) -> Result<Self, PostError> {
        let job = match map.get("job") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => return Err(invalid("missing field `job`")),
            Some(other) => return Err(invalid(format!("`job` must be a string, got {}", kind(other)))),
        };
        if !faultline_proto::id::valid_name(&job) {
            return Err(invalid(format!(
                "`job` {job:?} is not a valid id: 1 to 128 bytes, no '/', whitespace or control characters"
            )));
        }
        let rank = int_field(map, "rank")?.ok_or_else(|| invalid("missing field `rank`"))?;
        if rank < 0 || rank > i128::from(MAX_RANK) {
            return Err(invalid(format!("`rank` must be between 0 and {MAX_RANK}, got {rank}")));
        }
        let step = int_field(map, "step")?.ok_or_else(|| invalid("missing field `step`"))?;
        if step < 0 || step > i128::from(u64::MAX) {
            return Err(invalid(format!("`step` must be a non-negative integer, got {step}")));
        }
        let step_time_ms = duration_field(map, "step_time_ms")?;
        let compute_ms = duration_field(map, "compute_ms")?;
        let loss = metric_field(map, "loss", "loss_nonfinite")?;
        let grad_norm = metric_field(map, "grad_norm", "grad_norm_nonfinite")?;
        let status = match map.get("status") {
            None | Some(Value::Null) => ProgressStatus::Running,
            Some(Value::String(s)) => match s.as_str() {
                "running" => ProgressStatus::Running,
                "checkpointing" => ProgressStatus::Checkpointing,
                "evaluating" => ProgressStatus::Evaluating,
                "exited" => ProgressStatus::Exited,
                other => {
                    return Err(invalid(format!(
                        "unknown `status` {other:?}: expected \"running\", \"checkpointing\", \"evaluating\" or \"exited\""
                    )));
                }
            },
            Some(other) => return Err(invalid(format!("`status` must be a string, got {}", kind(other)))),
        };
        let exit_code = match int_field(map, "exit_code")? {
            None => None,
            Some(c) => {
                Some(i32::try_from(c).map_err(|_| invalid(format!("`exit_code` {c} does not fit a 32-bit integer")))?)
            }
        };
        match (status, exit_code) {
            (ProgressStatus::Exited, None) => {
                return Err(invalid(
                    "status \"exited\" needs `exit_code` (the process's exit status; negative for a signal)",
                ));
            }
            (ProgressStatus::Running | ProgressStatus::Checkpointing | ProgressStatus::Evaluating, Some(_)) => {
                return Err(invalid("`exit_code` is only allowed with status \"exited\""));
            }
            _ => {}
        }
        Ok(Self {
            job,
            rank: rank as u32,
            step: step as u64,
            step_time_ms,
            compute_ms,
            loss,
            grad_norm,
            status,
            exit_code,
        })
    }

    /// The JSON body for this post (what `report-progress` sends). Non-finite values go as `"nan"`.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("job".into(), Value::String(self.job.clone()));
        m.insert("rank".into(), Value::from(self.rank));
        m.insert("step".into(), Value::from(self.step));
        for (k, v) in [("step_time_ms", self.step_time_ms), ("compute_ms", self.compute_ms)] {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v));
            }
        }
        for (k, v) in [("loss", self.loss), ("grad_norm", self.grad_norm)] {
            match v {
                Some(Metric::Finite(x)) => {
                    m.insert(k.into(), Value::from(x));
                }
                Some(Metric::NonFinite) => {
                    m.insert(k.into(), Value::String("nan".into()));
                }
                None => {}
            }
        }
        let status = match self.status {
            ProgressStatus::Running => "running",
            ProgressStatus::Checkpointing => "checkpointing",
            ProgressStatus::Evaluating => "evaluating",
            ProgressStatus::Exited => "exited",
        };
        m.insert("status".into(), Value::String(status.into()));
        if let Some(c) = self.exit_code {
            m.insert("exit_code".into(), Value::from(c));
        }
        Value::Object(m).to_string()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional integer field. A float with no fractional part (`12.0`) is refused: steps and ranks
/// are counts, and a float here usually means the client sent the wrong variable.
fn int_field(map: &Fields, name: &str) -> Result<Option<i128>, PostError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(i128::from(u)))
            } else {
                Err(invalid(format!("`{name}` must be an integer, got {n}")))
            }
        }
        Some(other) => Err(invalid(format!("`{name}` must be an integer, got {}", kind(other)))),
    }
}

fn duration_field(map: &Fields, name: &str) -> Result<Option<f64>, PostError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().ok_or_else(|| invalid(format!("`{name}` {n} is not a number")))?;
            if !(0.0..=MAX_DURATION_MS).contains(&v) {
                return Err(invalid(format!("`{name}` must be between 0 and {MAX_DURATION_MS} ms, got {v}")));
            }
            Ok(Some(v))
        }
        Some(Value::String(s)) => {
            Err(invalid(format!("`{name}` must be a finite number of milliseconds, got the string {s:?}")))
        }
        Some(other) => Err(invalid(format!("`{name}` must be a number, got {}", kind(other)))),
    }
}

fn metric_field(map: &Fields, name: &str, flag: &str) -> Result<Option<Metric>, PostError> {
    let flagged = match map.get(flag) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(invalid(format!("`{flag}` must be true or false, got {}", kind(other)))),
    };
    let value = match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Some(Metric::Finite(v)),
            _ => Some(Metric::NonFinite),
        },
        Some(Value::String(s)) => {
            let l = s.trim().to_ascii_lowercase();
            let l = l.strip_prefix(['+', '-']).unwrap_or(&l);
            if matches!(l, "nan" | "inf" | "infinity") {
                Some(Metric::NonFinite)
            } else {
                return Err(invalid(format!(
                    "`{name}` must be a number, null, or one of \"nan\", \"inf\", \"-inf\"; got the string {s:?}"
                )));
            }
        }
        Some(other) => return Err(invalid(format!("`{name}` must be a number, got {}", kind(other)))),
    };
    match (value, flagged) {
        (Some(Metric::Finite(v)), true) => {
            Err(invalid(format!("`{flag}` is true but `{name}` is the finite number {v}")))
        }
        (_, true) => Ok(Some(Metric::NonFinite)),
        (v, false) => Ok(v),
    }
}

/// Rewrite the bare tokens `NaN`, `Infinity`, `-Infinity` outside strings into the strings `"nan"`,
/// `"inf"`, `"-inf"`, so bodies from Python's `json.dumps` parse. Returns the input unchanged (no copy)
/// when there is nothing to rewrite.
fn nonfinite_literals_to_strings(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const TOKENS: [(&[u8], &[u8]); 3] = [(b"-Infinity", b"\"-inf\""), (b"Infinity", b"\"inf\""), (b"NaN", b"\"nan\"")];
    if !body.iter().any(|&b| b == b'N' || b == b'I') {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    'outer: while i < body.len() {
        let b = body[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            for (tok, rep) in TOKENS {
                if body[i..].starts_with(tok) {
                    out.extend_from_slice(rep);
                    i += tok.len();
                    continue 'outer;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Unix time now, milliseconds (the agent's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Entry {
    step: u64,
    last_progress_ms: i64,
    last_post_ms: i64,
    /// Last time the jobs collector saw this rank's process alive.
    last_alive_ms: i64,
    step_time_ms: Option<f64>,
    step_time_avg_ms: Option<f64>,
    compute_ms: Option<f64>,
    loss: Option<f64>,
    grad_norm: Option<f64>,
    nonfinite_at_ms: Option<i64>,
    status: ProgressStatus,
    exit_code: Option<i32>,
}

impl Entry {
    fn progress(&self, now_ms: i64) -> Progress {
        Progress {
            step: self.step,
            last_progress_ms: self.last_progress_ms,
            step_time_ms: self.step_time_ms,
            step_time_avg_ms: self.step_time_avg_ms,
            compute_ms: self.compute_ms,
            loss: self.loss,
            loss_step: self.loss.map(|_| self.step),
            grad_norm: self.grad_norm,
            nonfinite_loss: self.nonfinite_at_ms.is_some_and(|t| now_ms - t < NONFINITE_HOLD_MS),
            status: self.status,
            exit_code: self.exit_code,
        }
    }

    fn expired(&self, now_ms: i64) -> bool {
        let seen = self.last_post_ms.max(self.last_alive_ms);
        let keep = if self.status == ProgressStatus::Exited { EXITED_RETAIN_MS } else { STALE_AFTER_MS };
        now_ms - seen > keep
    }
}

struct Inner {
    entries: HashMap<(String, u32), Entry>,
    max_entries: usize,
}

/// What a post brought that should not wait for the next report.
struct News {
    /// The rank's first non-finite loss or gradient norm (none latched before this post).
    nonfinite: bool,
    /// A posted non-zero exit code, not posted before.
    bad_exit: Option<i32>,
}

fn progress_event(now_ms: i64, class: faultline_proto::EventClass, message: String) -> Event {
    Event {
        ts_ms: now_ms,
        source: EventSource::Agent,
        class,
        severity: Severity::Warning,
        // The news concerns the rank, not a GPU: naming one would read as GPU evidence.
        component: None,
        count: 1,
        message,
        ..Default::default()
    }
}

/// Latest progress per (job, rank). Cheap to clone (an `Arc`), safe to share between the HTTP
/// handlers, the jobs collector and `/metrics`.
#[derive(Clone)]
pub struct ProgressStore {
    inner: Arc<Mutex<Inner>>,
    accepted: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    /// Where news that should not wait for the next interval goes (a rank's first non-finite loss, a
    /// posted non-zero exit); the jobs collector also wakes it when a rank's process exits.
    events: Option<Arc<EventQueue>>,
}

impl Default for ProgressStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProgressStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStore").field("entries", &self.len()).field("dropped", &self.dropped()).finish()
    }
}

impl ProgressStore {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_ENTRIES)
    }

    /// A store that tracks at most `max_entries` (job, rank) pairs.
    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner { entries: HashMap::new(), max_entries: max_entries.max(1) })),
            accepted: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
            events: None,
        }
    }

    /// Push an urgent event to `events` when a rank first posts a non-finite loss or gradient norm,
    /// or posts `exited` with a non-zero code, so the analyzer hears of it within a second instead of
    /// at the next report. Set before the store is cloned into the listeners and collectors.
    pub fn with_events(mut self, events: Arc<EventQueue>) -> Self {
        self.events = Some(events);
        self
    }

    /// The event queue given to [`ProgressStore::with_events`], if any.
    pub fn events(&self) -> Option<&Arc<EventQueue>> {
        self.events.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parse, validate and apply one post body at the current time.
    pub fn post_json(&self, body: &[u8]) -> Result<(), PostError> {
        self.post_json_at(body, now_ms())
    }

    /// Parse, validate and apply one post body as of `now_ms`.
    pub fn post_json_at(&self, body: &[u8], now_ms: i64) -> Result<(), PostError> {
        let res = ProgressPost::from_json(body).and_then(|p| self.apply(p, now_ms));
        match &res {
            Ok(()) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(PostError::Full(_)) => {}
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    /// Apply a validated post as of `now_ms`.
    pub fn apply(&self, p: ProgressPost, now_ms: i64) -> Result<(), PostError> {
        // The job name is only copied when someone listens for the news.
        let who = self.events.as_ref().map(|_| (p.job.clone(), p.rank, p.step));
        let news = self.apply_locked(p, now_ms)?;
        if let (Some(q), Some((job, rank, step))) = (&self.events, who) {
            if news.nonfinite {
                q.push(
                    progress_event(
                        now_ms,
                        faultline_proto::EventClass::NonfiniteLoss,
                        format!("rank {rank} of job {job} posted a non-finite loss or gradient norm at step {step}"),
                    ),
                    true,
                );
            }
            if let Some(c) = news.bad_exit {
                let how = if c < 0 { format!("was killed by signal {}", -c) } else { format!("exited with code {c}") };
                q.push(
                    progress_event(
                        now_ms,
                        faultline_proto::EventClass::RankExit,
                        format!("rank {rank} of job {job} {how} (posted)"),
                    ),
                    true,
                );
            }
        }
        Ok(())
    }

    /// Apply a post; says what news it carries (pushed by the caller after the lock is released).
    fn apply_locked(&self, p: ProgressPost, now_ms: i64) -> Result<News, PostError> {
        let mut inner = self.lock();
        let key = (p.job, p.rank);
        if !inner.entries.contains_key(&key) && inner.entries.len() >= inner.max_entries {
            inner.entries.retain(|_, e| !e.expired(now_ms));
            if inner.entries.len() >= inner.max_entries {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(PostError::Full(inner.max_entries));
            }
        }
        let e = inner.entries.entry(key).or_insert_with(|| Entry {
            step: p.step,
            last_progress_ms: now_ms,
            last_post_ms: now_ms,
            last_alive_ms: i64::MIN / 2,
            step_time_ms: None,
            step_time_avg_ms: None,
            compute_ms: None,
            loss: None,
            grad_norm: None,
            nonfinite_at_ms: None,
            status: p.status,
            exit_code: None,
        });
        // How long the step(s) since the previous post took, when the loop did not say.
        let derived = if p.step > e.step && e.status == ProgressStatus::Running && now_ms > e.last_progress_ms {
            Some((now_ms - e.last_progress_ms) as f64 / (p.step - e.step) as f64)
        } else {
            None
        };
        if p.step != e.step {
            let restarted = p.step < e.step;
            if restarted {
                e.step_time_avg_ms = None;
            }
            let sample = p.step_time_ms.or(if restarted { None } else { derived });
            if let Some(st) = sample {
                let st = st.min(MAX_DURATION_MS);
                e.step_time_ms = Some(st);
                e.step_time_avg_ms = Some(match e.step_time_avg_ms {
                    Some(avg) => avg + STEP_TIME_EWMA_ALPHA * (st - avg),
                    None => st,
                });
            }
            e.step = p.step;
            e.last_progress_ms = now_ms;
        } else if let Some(st) = p.step_time_ms {
            // First post of an entry, or a repeat of the same step that carries its time.
            e.step_time_ms = Some(st);
            e.step_time_avg_ms.get_or_insert(st);
        }
        if p.compute_ms.is_some() {
            e.compute_ms = p.compute_ms;
        }
        let was_latched = e.nonfinite_at_ms.is_some_and(|t| now_ms - t < NONFINITE_HOLD_MS);
        let was_exited = e.status == ProgressStatus::Exited;
        for (m, slot) in [(p.loss, &mut e.loss), (p.grad_norm, &mut e.grad_norm)] {
            match m {
                Some(Metric::Finite(v)) => *slot = Some(v),
                Some(Metric::NonFinite) => e.nonfinite_at_ms = Some(now_ms),
                None => {}
            }
        }
        let bad_exit = p.exit_code.filter(|&c| p.status == ProgressStatus::Exited && c != 0);
        let news = News {
            nonfinite: !was_latched && e.nonfinite_at_ms == Some(now_ms),
            bad_exit: bad_exit.filter(|_| !(was_exited && e.exit_code == bad_exit)),
        };
        e.status = p.status;
        e.exit_code = p.exit_code;
        e.last_post_ms = now_ms;
        Ok(news)
    }

    /// The progress of one rank as of `now_ms`.
    pub fn get(&self, job: &str, rank: u32, now_ms: i64) -> Option<Progress> {
        self.lock().entries.get(&(job.to_string(), rank)).map(|e| e.progress(now_ms))
    }

    /// Every tracked (job, rank) with its progress as of `now_ms`, sorted.
    pub fn snapshot(&self, now_ms: i64) -> Vec<(String, u32, Progress)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner.entries.iter().map(|((j, r), e)| (j.clone(), *r, e.progress(now_ms))).collect();
        drop(inner);
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// Mark ranks whose process the jobs collector saw alive at `now_ms`: their entries do not expire
    /// while the process lives, even when the loop stopped posting (a hang must stay visible).
    pub fn touch<'a>(&self, alive: impl IntoIterator<Item = (&'a str, u32)>, now_ms: i64) {
        let mut inner = self.lock();
        for (job, rank) in alive {
            if let Some(e) = inner.entries.get_mut(&(job.to_string(), rank)) {
                e.last_alive_ms = now_ms;
            }
        }
    }

    /// Forget stale entries (see the module docs). Returns how many were removed.
    pub fn expire(&self, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| !e.expired(now_ms));
        before - inner.entries.len()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Posts lost (monotonic): refused because the store was full, or datagrams the kernel dropped
    /// because the agent's receive buffer was full. `NodeReport.dropped.progress`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Posts stored (monotonic), over every transport.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Posts refused as invalid or too large (monotonic), over every transport.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------------
// Server

fn router(store: ProgressStore) -> Router {
    Router::new()
        .route("/progress", post(handle_post).get(handle_list))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}

async fn handle_post(
    State(store): State<ProgressStore>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // A body over the limit is refused by the body-limit layer before it is read: answer in the same
    // JSON form as every other refusal, and count it.
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                store.rejected.fetch_add(1, Ordering::Relaxed);
                return error_response(status, &format!("body is more than the limit of {MAX_BODY_BYTES} bytes"));
            }
            return error_response(status, &rej.body_text());
        }
    };
    match store.post_json(&body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::debug!(error = %e, "progress post refused");
            error_response(e.status(), &e.to_string())
        }
    }
}

async fn handle_list(State(store): State<ProgressStore>) -> Response {
    let now = now_ms();
    let list: Vec<Value> = store
        .snapshot(now)
        .into_iter()
        .map(|(job, rank, p)| serde_json::json!({"job": job, "rank": rank, "progress": p}))
        .collect();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], Value::Array(list).to_string()).into_response()
}

fn error_response(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Bind the progress HTTP listener on `addr` (meant for `127.0.0.1`). Returns the bound address and
/// the server future, which runs until dropped; it needs a Tokio runtime, binding does not.
pub fn serve_http(
    store: ProgressStore,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let fut = async move {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %local, error = %e, "progress listener could not be registered");
                return;
            }
        };
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, router(store)).await {
            tracing::error!(addr = %local, error = %e, "progress HTTP server stopped");
        }
    };
    Ok((local, fut))
}

/// Bind the progress API on a Unix socket at `path` (same HTTP protocol as [`serve_http`]:
/// `curl --unix-socket PATH -d '{…}' http://localhost/progress`). A stale socket file left by a dead
/// agent is replaced; a live one, or any other kind of file, is an error. The socket is made
/// writable by every local user (mode 0666) so training processes of any user can post.
pub fn serve_unix(store: ProgressStore, path: &Path) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process is serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)?;
    std_listener.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let shown: PathBuf = path.to_path_buf();
    Ok(async move {
        let listener = match tokio::net::UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(path = %shown.display(), error = %e, "progress socket could not be registered");
                return;
            }
        };
        if let Err(e) = axum::serve(listener, router(store)).await {
            tracing::error!(path = %shown.display(), error = %e, "progress socket server stopped");
        }
    })
}

// ---------------------------------------------------------------------------------------------------
// Datagram server: the cheap path

/// Datagrams taken per `recvmmsg` call: a full batch is followed at once by the next call, so this
/// only bounds the buffer (64 × 16 KiB of address space; only the touched pages are resident).
pub const DATAGRAM_BATCH: usize = 64;
/// After a batch that did not fill up, the reader waits before the next `recvmmsg`, so datagrams
/// queue and are taken many per call: a wake-up per datagram costs more than the post itself. The
/// wait is what fills a quarter of the receive buffer at [`DATAGRAM_DESIGN_RATE`], within these
/// bounds: 20 ms at most (a post shows up that much later; reports go out every few seconds).
pub const DATAGRAM_COALESCE_MAX: Duration = Duration::from_millis(20);
/// Shortest coalescing wait (a small receive buffer).
pub const DATAGRAM_COALESCE_MIN: Duration = Duration::from_millis(1);
/// Posts per second the coalescing wait is sized for: 1,000 ranks × 10 posts/s, the load this path
/// was built for. Faster senders fill batches, and a full batch is followed at once by the next.
pub const DATAGRAM_DESIGN_RATE: f64 = 10_000.0;
/// Kernel memory one small datagram takes in a receive queue (its buffer's `truesize`), to turn the
/// receive buffer's size into a count of datagrams. ~1 KiB for a 100–300 byte post.
const DATAGRAM_TRUESIZE: f64 = 1280.0;
/// Receive buffer asked for the UDP socket: 4 MiB queues ~5,000 small posts (each takes ~800 bytes of
/// kernel memory), half a second of 1,000 ranks × 10 posts/s, so a busy host that delays the
/// receiving thread does not lose posts. Without root the kernel caps it at `net.core.rmem_max`.
pub const DATAGRAM_RCVBUF: libc::c_int = 4 << 20;

/// Take progress posts as UDP datagrams on `addr` (the HTTP listener's address: UDP and TCP ports are
/// separate, so both use 9431): one JSON object per datagram, the same fields and checks as
/// `POST /progress`. There is no answer: a refused datagram is counted in [`ProgressStore::rejected`]
/// and the first one is logged; datagrams the kernel dropped because the receive buffer was full are
/// counted in [`ProgressStore::dropped`]. One thread reads them in batches (`recvmmsg`).
pub fn serve_udp(store: ProgressStore, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let local = sock.local_addr()?;
    let fd = std::os::fd::OwnedFd::from(sock);
    set_int_opt(&fd, libc::SO_RCVBUFFORCE, DATAGRAM_RCVBUF)
        .or_else(|_| set_int_opt(&fd, libc::SO_RCVBUF, DATAGRAM_RCVBUF))?;
    // Ask the kernel to attach its count of dropped datagrams to each one received.
    set_int_opt(&fd, libc::SO_RXQ_OVFL, 1)?;
    let rcvbuf = get_int_opt(&fd, libc::SO_RCVBUF)?;
    let queue = f64::from(rcvbuf.max(0)) / DATAGRAM_TRUESIZE;
    let coalesce =
        Duration::from_secs_f64(queue / 4.0 / DATAGRAM_DESIGN_RATE).clamp(DATAGRAM_COALESCE_MIN, DATAGRAM_COALESCE_MAX);
    let name = format!("udp://{local}");
    tracing::debug!(listen = %name, rcvbuf, ?coalesce, "progress datagram socket");
    std::thread::Builder::new()
        .name("progress-udp".into())
        .spawn(move || datagram_loop(&fd, &store, &name, coalesce))?;
    Ok(local)
}

fn set_int_opt(fd: &std::os::fd::OwnedFd, opt: libc::c_int, v: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn get_int_opt(fd: &std::os::fd::OwnedFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
    if rc == 0 { Ok(v) } else { Err(std::io::Error::last_os_error()) }
}

/// The kernel's running count of datagrams dropped on this socket (`SO_RXQ_OVFL`), if attached.
fn overflow_count(hdr: &libc::msghdr) -> Option<u32> {
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros, bounded by
    // `msg_controllen`; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

fn datagram_loop(fd: &std::os::fd::OwnedFd, store: &ProgressStore, name: &str, coalesce: Duration) {
    use std::os::fd::AsRawFd;
    // One byte over the limit, so an oversized datagram shows as truncated.
    const SLOT: usize = MAX_BODY_BYTES + 1;
    // SAFETY: CMSG_SPACE only computes a size.
    let cmsg_space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u32>() as u32) } as usize;
    let mut data = vec![0u8; DATAGRAM_BATCH * SLOT];
    // u64 elements: control messages must be aligned like `cmsghdr`.
    let mut ctrl = vec![0u64; (DATAGRAM_BATCH * cmsg_space).div_ceil(8)];
    // SAFETY: iovec and mmsghdr are plain C structs; all-zero is a valid (empty) value for both.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; DATAGRAM_BATCH];
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; DATAGRAM_BATCH];
    let mut drops_seen: Option<u32> = None;
    let mut logged_refusal = false;
    tracing::info!(listen = name, "progress datagrams accepted");
    loop {
        let base = data.as_mut_ptr();
        let ctrl_base = ctrl.as_mut_ptr().cast::<u8>();
        for (i, (m, v)) in msgs.iter_mut().zip(iov.iter_mut()).enumerate() {
            // SAFETY: every offset stays inside `data` / `ctrl`, sized for DATAGRAM_BATCH slots.
            *v = libc::iovec { iov_base: unsafe { base.add(i * SLOT) }.cast(), iov_len: SLOT };
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            // SAFETY: as above.
            m.msg_hdr.msg_control = unsafe { ctrl_base.add(i * cmsg_space) }.cast();
            m.msg_hdr.msg_controllen = cmsg_space as _;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds DATAGRAM_BATCH headers whose buffers point into `data` and `ctrl`,
        // which outlive the call and are not otherwise borrowed meanwhile. Blocks for the first
        // datagram, then takes what is queued without waiting (MSG_WAITFORONE).
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                DATAGRAM_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(listen = name, error = %e, "progress datagram socket failed; datagrams no longer read");
            return;
        }
        let full = n as usize == DATAGRAM_BATCH;
        let now = now_ms();
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            if let Some(total) = overflow_count(&m.msg_hdr) {
                let new = total.wrapping_sub(drops_seen.unwrap_or(0));
                if new > 0 {
                    store.dropped.fetch_add(u64::from(new), Ordering::Relaxed);
                    tracing::warn!(listen = name, dropped = new, "progress datagrams dropped: receive buffer full");
                }
                drops_seen = Some(total);
            }
            let len = (m.msg_len as usize).min(SLOT);
            let res = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > MAX_BODY_BYTES {
                store.rejected.fetch_add(1, Ordering::Relaxed);
                Err(PostError::TooLarge(len))
            } else {
                // SAFETY: the kernel wrote `len` bytes at the start of slot i.
                let body = unsafe { std::slice::from_raw_parts(base.add(i * SLOT), len) };
                store.post_json_at(body, now)
            };
            if let Err(e) = res {
                if !logged_refusal {
                    logged_refusal = true;
                    tracing::warn!(
                        listen = name,
                        error = %e,
                        "progress datagram refused; there is no reply channel, so further refusals are only \
                         counted (faultline_agent_progress_rejected_total) and logged at debug level"
                    );
                } else {
                    tracing::debug!(listen = name, error = %e, "progress datagram refused");
                }
            }
        }
        if !full {
            std::thread::sleep(coalesce);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Client: `faultline-agent report-progress`

/// `faultline-agent report-progress`: post one progress record to a running agent. `--job` and
/// `--rank` default to the process environment the way the agent discovers them (`SLURM_JOB_ID`,
/// `TORCHELASTIC_RUN_ID`; `RANK`, `SLURM_PROCID`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReportProgressArgs {
    /// Job id (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID).
    #[arg(long)]
    pub job: Option<String>,
    /// Global rank (default: $RANK, else $SLURM_PROCID).
    #[arg(long)]
    pub rank: Option<u32>,
    /// The training step just finished.
    #[arg(long)]
    pub step: u64,
    /// Wall time of the step in milliseconds.
    #[arg(long)]
    pub step_time_ms: Option<f64>,
    /// The step's own compute time before it waits in collectives, milliseconds.
    #[arg(long)]
    pub compute_ms: Option<f64>,
    /// Loss: a number, or `nan` / `inf` / `-inf`.
    #[arg(long, allow_hyphen_values = true)]
    pub loss: Option<String>,
    /// Gradient norm: a number, or `nan` / `inf`.
    #[arg(long, allow_hyphen_values = true)]
    pub grad_norm: Option<String>,
    /// `running`, `checkpointing`, `evaluating` or `exited`.
    #[arg(long, default_value = "running")]
    pub status: String,
    /// Exit code, with `--status exited` (negative: killed by signal -n).
    #[arg(long, allow_hyphen_values = true)]
    pub exit_code: Option<i32>,
    /// Send one UDP datagram to this address (the default transport: no answer, nothing to wait for).
    #[arg(long, default_value = DEFAULT_UDP, conflicts_with_all = ["url", "socket"])]
    pub udp: String,
    /// Post over HTTP to this URL instead (e.g. http://127.0.0.1:9431/progress) and wait for the
    /// agent's answer, so a refused record fails the command with the agent's reason.
    #[arg(long)]
    pub url: Option<String>,
    /// Post over HTTP on this Unix socket instead, waiting for the answer like `--url`.
    #[arg(long, conflicts_with = "url")]
    pub socket: Option<PathBuf>,
    /// Give up after this long (connect + send + answer).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Errors of the `report-progress` client.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the agent at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent refused the post ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("malformed answer from the agent: {0}")]
    BadAnswer(String),
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty() && v != "none")
}

fn cli_metric(name: &str, v: &Option<String>) -> Result<Option<Metric>, ReportError> {
    let Some(s) = v else { return Ok(None) };
    let l = s.trim().to_ascii_lowercase();
    if matches!(l.trim_start_matches(['+', '-']), "nan" | "inf" | "infinity") {
        return Ok(Some(Metric::NonFinite));
    }
    match l.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(Metric::Finite(x))),
        Ok(_) => Ok(Some(Metric::NonFinite)),
        Err(_) => Err(ReportError::Usage(format!("--{name} {s:?} is not a number, nan or inf"))),
    }
}

impl ReportProgressArgs {
    /// Build the post this command line describes, validated by the same rules as the server.
    pub fn to_post(&self) -> Result<ProgressPost, ReportError> {
        let job = self
            .job
            .clone()
            .or_else(|| env_first(&["SLURM_JOB_ID", "SLURM_JOBID", "TORCHELASTIC_RUN_ID"]))
            .ok_or_else(|| {
                ReportError::Usage("--job is required (no SLURM_JOB_ID or TORCHELASTIC_RUN_ID set)".into())
            })?;
        let rank = match self.rank {
            Some(r) => r,
            None => env_first(&["RANK", "SLURM_PROCID"])
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ReportError::Usage("--rank is required (no RANK or SLURM_PROCID set)".into()))?,
        };
        let status = match self.status.as_str() {
            "running" => ProgressStatus::Running,
            "checkpointing" => ProgressStatus::Checkpointing,
            "evaluating" => ProgressStatus::Evaluating,
            "exited" => ProgressStatus::Exited,
            s => {
                return Err(ReportError::Usage(format!(
                    "--status {s:?}: expected running, checkpointing, evaluating or exited"
                )));
            }
        };
        let post = ProgressPost {
            job,
            rank,
            step: self.step,
            step_time_ms: self.step_time_ms,
            compute_ms: self.compute_ms,
            loss: cli_metric("loss", &self.loss)?,
            grad_norm: cli_metric("grad-norm", &self.grad_norm)?,
            status,
            exit_code: self.exit_code,
        };
        // Run the server's own checks so a bad command line fails before it reaches the network.
        ProgressPost::from_json(post.to_json().as_bytes()).map_err(|e| ReportError::Usage(e.to_string()))
    }
}

/// `faultline-agent report-progress`: send one record as a datagram, or post it over HTTP (`--url`,
/// `--socket`) and wait for the agent's answer.
pub fn report_progress(args: ReportProgressArgs) -> anyhow::Result<()> {
    let post = args.to_post()?;
    let body = post.to_json();
    match (&args.socket, &args.url) {
        (Some(path), _) => post_unix(path, &body, args.timeout)?,
        (None, Some(url)) => post_http(url, &body, args.timeout)?,
        (None, None) => send_udp(&args.udp, &body)?,
    }
    Ok(())
}

/// Send `body` as one UDP datagram to `addr`. There is no answer to wait for; an agent that is not
/// listening on a local address shows as "connection refused" right after the send (the kernel's
/// ICMP answer on loopback), which is reported.
pub fn send_udp(addr: &str, body: &str) -> Result<(), ReportError> {
    use std::net::ToSocketAddrs;
    let target = format!("udp://{addr}");
    let conn_err = |source| ReportError::Connect { target: target.clone(), source };
    let to =
        addr.to_socket_addrs().map_err(conn_err)?.next().ok_or_else(|| {
            conn_err(std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing"))
        })?;
    let local: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = std::net::UdpSocket::bind(local).map_err(conn_err)?;
    sock.connect(to).map_err(conn_err)?;
    sock.send(body.as_bytes()).map_err(conn_err)?;
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => Err(conn_err(e)),
        Ok(None) => Ok(()),
    }
}

/// Split `http://host:port/path` into (host:port, path).
fn split_http_url(url: &str) -> Result<(String, String), ReportError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ReportError::Usage(format!("--url {url:?}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/progress"),
    };
    if authority.is_empty() {
        return Err(ReportError::Usage(format!("--url {url:?} has no host")));
    }
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Post `body` over HTTP/1.1 with `Connection: close` (no client library: this runs inside training
/// jobs' shells and must not need a runtime).
pub fn post_http(url: &str, body: &str, timeout: Duration) -> Result<(), ReportError> {
    use std::net::ToSocketAddrs;
    let (authority, path) = split_http_url(url)?;
    let conn_err = |source| ReportError::Connect { target: url.to_string(), source };
    let addr = authority.to_socket_addrs().map_err(conn_err)?.next().ok_or_else(|| {
        conn_err(std::io::Error::new(std::io::ErrorKind::NotFound, "host name resolved to no address"))
    })?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(conn_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(conn_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(conn_err)?;
    exchange(stream, &authority, &path, body).map_err(|e| match e {
        ExchangeError::Io(source) => ReportError::Connect { target: url.to_string(), source },
        ExchangeError::Report(r) => r,
    })
}

/// Post `body` to the agent's Unix socket.
pub fn post_unix(path: &Path, body: &str, timeout: Duration) -> Result<(), ReportError> {
    let target = path.display().to_string();
    let conn_err = |source| ReportError::Connect { target: target.clone(), source };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(conn_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(conn_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(conn_err)?;
    exchange(stream, "localhost", "/progress", body).map_err(|e| match e {
        ExchangeError::Io(source) => ReportError::Connect { target: target.clone(), source },
        ExchangeError::Report(r) => r,
    })
}

enum ExchangeError {
    Io(std::io::Error),
    Report(ReportError),
}

fn exchange<S: std::io::Read + std::io::Write>(
    mut stream: S,
    host: &str,
    path: &str,
    body: &str,
) -> Result<(), ExchangeError> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(ExchangeError::Io)?;
    stream.flush().map_err(ExchangeError::Io)?;
    let mut answer = Vec::new();
    // Read until the server closes; cap what we keep (answers are tiny).
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if answer.len() < 64 * 1024 {
                    answer.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if !answer.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ExchangeError::Report(ReportError::BadAnswer(format!("status line {status_line:?}"))))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Err(ExchangeError::Report(ReportError::Refused { status, reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &str) -> Result<ProgressPost, PostError> {
        ProgressPost::from_json(body.as_bytes())
    }

    fn err(body: &str) -> String {
        match post(body) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("expected refusal of {body}, got {p:?}"),
        }
    }

    #[test]
    fn minimal_post_defaults_to_running() {
        let p = post(r#"{"job":"4242","rank":3,"step":10}"#).unwrap();
        assert_eq!((p.job.as_str(), p.rank, p.step, p.status), ("4242", 3, 10, ProgressStatus::Running));
        assert_eq!(p.loss, None);
    }

    #[test]
    fn numeric_job_id_is_taken_as_its_text() {
        assert_eq!(post(r#"{"job":4242,"rank":0,"step":1}"#).unwrap().job, "4242");
    }

    #[test]
    fn field_parsing_reads_escaped_keys_keeps_the_last_repeat_and_names_unknown_keys_in_order() {
        let p = post(r#"{"j\u006fb":"j","rank":0,"step":1,"step":5}"#).unwrap();
        assert_eq!((p.job.as_str(), p.step), ("j", 5));
        assert!(err(r#"{"zz":1,"job":"j","rank":0,"step":1,"aa":2}"#).contains("unknown field `aa`"));
        assert!(err(r#"{"zz":1,"job":"j","rank":0,"step":1,"aa":}"#).contains("malformed JSON"));
        assert!(err("  7").contains("JSON object"));
        assert!(err("").contains("malformed JSON"));
    }

    #[test]
    fn bad_posts_name_the_field() {
        assert!(err("{").contains("malformed JSON"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"rank":0,"step":1}"#).contains("`job`"));
        assert!(err(r#"{"job":"j","step":1}"#).contains("`rank`"));
        assert!(err(r#"{"job":"j","rank":0}"#).contains("`step`"));
        assert!(err(r#"{"job":"j","rank":0,"step":-1}"#).contains("`step` must be a non-negative"));
        assert!(err(r#"{"job":"j","rank":-2,"step":1}"#).contains("`rank`"));
        assert!(err(r#"{"job":"j","rank":0,"step":1.5}"#).contains("integer"));
        assert!(err(r#"{"job":"j","rank":0,"step":"7"}"#).contains("integer"));
        assert!(err(r#"{"job":"a/b","rank":0,"step":1}"#).contains("not a valid id"));
        assert!(err(r#"{"job":"","rank":0,"step":1}"#).contains("not a valid id"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"status":"paused"}"#).contains("unknown `status`"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"stpe":2}"#).contains("unknown field `stpe`"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"step_time_ms":-5}"#).contains("step_time_ms"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"compute_ms":"fast"}"#).contains("compute_ms"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"loss":"low"}"#).contains("`loss`"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"status":"exited"}"#).contains("exit_code"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"exit_code":1}"#).contains("only allowed"));
        assert!(err(r#"{"job":"j","rank":0,"step":1,"loss":1.0,"loss_nonfinite":true}"#).contains("finite number"));
        let big = format!(r#"{{"job":"{}","rank":0,"step":1}}"#, "x".repeat(MAX_BODY_BYTES));
        assert!(matches!(post(&big), Err(PostError::TooLarge(_))));
    }

    #[test]
    fn nonfinite_loss_forms_are_all_accepted() {
        for body in [
            r#"{"job":"j","rank":0,"step":1,"loss":"nan"}"#,
            r#"{"job":"j","rank":0,"step":1,"loss":"-Inf"}"#,
            r#"{"job":"j","rank":0,"step":1,"loss":null,"loss_nonfinite":true}"#,
            r#"{"job":"j","rank":0,"step":1,"loss":NaN}"#,
            r#"{"job":"j","rank":0,"step":1,"loss":-Infinity}"#,
        ] {
            assert_eq!(post(body).unwrap().loss, Some(Metric::NonFinite), "{body}");
        }
        // A string that merely contains the token stays a string.
        assert_eq!(post(r#"{"job":"NaN-run","rank":0,"step":1}"#).unwrap().job, "NaN-run");
        assert_eq!(post(r#"{"job":"a\"NaN","rank":0,"step":1}"#).unwrap().job, "a\"NaN");
    }

    fn apply(s: &ProgressStore, body: &str, now: i64) {
        s.apply(post(body).unwrap(), now).unwrap();
    }

    #[test]
    fn store_tracks_steps_ewma_and_derived_step_time() {
        let s = ProgressStore::new();
        apply(&s, r#"{"job":"j","rank":0,"step":1,"step_time_ms":100,"compute_ms":60,"loss":2.5}"#, 1_000);
        apply(&s, r#"{"job":"j","rank":0,"step":2,"step_time_ms":200}"#, 1_200);
        let p = s.get("j", 0, 1_200).unwrap();
        assert_eq!(p.step, 2);
        assert_eq!(p.last_progress_ms, 1_200);
        assert_eq!(p.step_time_ms, Some(200.0));
        assert!((p.step_time_avg_ms.unwrap() - (100.0 + STEP_TIME_EWMA_ALPHA * 100.0)).abs() < 1e-9);
        assert_eq!(p.compute_ms, Some(60.0), "compute_ms keeps the last value given");
        assert_eq!(p.loss, Some(2.5));
        // No step_time_ms: derived from the spacing of posts, per step.
        apply(&s, r#"{"job":"j","rank":0,"step":4}"#, 1_800);
        assert_eq!(s.get("j", 0, 1_800).unwrap().step_time_ms, Some(300.0));
        // Same step again: not progress.
        apply(&s, r#"{"job":"j","rank":0,"step":4,"status":"checkpointing"}"#, 5_000);
        let p = s.get("j", 0, 5_000).unwrap();
        assert_eq!((p.last_progress_ms, p.status), (1_800, ProgressStatus::Checkpointing));
    }

    #[test]
    fn step_going_back_is_a_restart_from_checkpoint() {
        let s = ProgressStore::new();
        apply(&s, r#"{"job":"j","rank":0,"step":1000,"step_time_ms":100}"#, 1_000);
        apply(&s, r#"{"job":"j","rank":0,"step":900,"step_time_ms":300}"#, 2_000);
        let p = s.get("j", 0, 2_000).unwrap();
        assert_eq!((p.step, p.last_progress_ms, p.step_time_avg_ms), (900, 2_000, Some(300.0)));
    }

    #[test]
    fn nonfinite_flag_latches_then_clears() {
        let s = ProgressStore::new();
        apply(&s, r#"{"job":"j","rank":0,"step":1,"loss":1.5}"#, 1_000);
        apply(&s, r#"{"job":"j","rank":0,"step":2,"loss":"nan"}"#, 2_000);
        apply(&s, r#"{"job":"j","rank":0,"step":3,"loss":1.4}"#, 3_000);
        let p = s.get("j", 0, 3_000).unwrap();
        assert!(p.nonfinite_loss);
        assert_eq!(p.loss, Some(1.4), "last finite loss kept");
        assert!(!s.get("j", 0, 2_000 + NONFINITE_HOLD_MS + 1).unwrap().nonfinite_loss);
    }

    #[test]
    fn exited_then_running_again() {
        let s = ProgressStore::new();
        apply(&s, r#"{"job":"j","rank":1,"step":5,"status":"exited","exit_code":-9}"#, 1_000);
        let p = s.get("j", 1, 1_000).unwrap();
        assert_eq!((p.status, p.exit_code), (ProgressStatus::Exited, Some(-9)));
        apply(&s, r#"{"job":"j","rank":1,"step":6}"#, 2_000);
        let p = s.get("j", 1, 2_000).unwrap();
        assert_eq!((p.status, p.exit_code), (ProgressStatus::Running, None));
    }

    #[test]
    fn full_store_refuses_new_keys_and_keeps_old_ones() {
        let s = ProgressStore::with_capacity(2);
        apply(&s, r#"{"job":"j","rank":0,"step":1}"#, 1_000);
        apply(&s, r#"{"job":"j","rank":1,"step":1}"#, 1_000);
        let e = s.apply(post(r#"{"job":"j","rank":2,"step":1}"#).unwrap(), 1_000).unwrap_err();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(s.dropped(), 1);
        apply(&s, r#"{"job":"j","rank":1,"step":2}"#, 1_001);
        // Once the old ones are stale, a new key gets in.
        apply(&s, r#"{"job":"j","rank":2,"step":1}"#, 1_000 + STALE_AFTER_MS + 10);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn touched_entries_do_not_expire_exited_ones_do() {
        let s = ProgressStore::new();
        apply(&s, r#"{"job":"j","rank":0,"step":1}"#, 0);
        apply(&s, r#"{"job":"j","rank":1,"step":1,"status":"exited","exit_code":0}"#, 0);
        s.touch([("j", 0)], STALE_AFTER_MS);
        assert_eq!(s.expire(STALE_AFTER_MS + 1), 1);
        assert!(s.get("j", 0, 0).is_some());
        assert!(s.get("j", 1, 0).is_none());
    }

    #[test]
    fn refused_post_changes_nothing() {
        let s = ProgressStore::new();
        s.post_json(br#"{"job":"j","rank":0,"step":7,"loss":1.0}"#).unwrap();
        let before = s.snapshot(0);
        assert!(s.post_json(br#"{"job":"j","rank":0,"step":8,"loss":"x"}"#).is_err());
        assert_eq!(s.snapshot(0), before);
        assert_eq!(s.rejected(), 1);
    }

    #[test]
    fn first_nonfinite_and_bad_exit_are_urgent_events() {
        let q = Arc::new(EventQueue::new(64));
        let s = ProgressStore::new().with_events(q.clone());
        apply(&s, r#"{"job":"j","rank":3,"step":1,"loss":1.5}"#, 0);
        assert!(q.drain().is_empty(), "a finite loss is no news");
        apply(&s, r#"{"job":"j","rank":3,"step":2,"loss":"nan"}"#, 1_000);
        apply(&s, r#"{"job":"j","rank":3,"step":3,"loss":"nan"}"#, 2_000);
        let evs = q.drain();
        assert_eq!(evs.len(), 1, "only the first non-finite loss of a latch is news: {evs:#?}");
        assert_eq!(evs[0].class, faultline_proto::EventClass::NonfiniteLoss);
        assert_eq!(evs[0].ts_ms, 1_000);
        assert!(evs[0].message.contains("rank 3 of job j"), "{}", evs[0].message);
        // After the latch ran out, a new non-finite value is news again.
        apply(&s, r#"{"job":"j","rank":3,"step":4,"grad_norm":"inf"}"#, 2_000 + NONFINITE_HOLD_MS);
        assert_eq!(q.drain().len(), 1);

        apply(&s, r#"{"job":"j","rank":0,"step":9,"status":"exited","exit_code":0}"#, 3_000);
        assert!(q.drain().is_empty(), "a clean exit is no news");
        apply(&s, r#"{"job":"j","rank":1,"step":9,"status":"exited","exit_code":-9}"#, 3_000);
        apply(&s, r#"{"job":"j","rank":1,"step":9,"status":"exited","exit_code":-9}"#, 4_000);
        let evs = q.drain();
        assert_eq!(evs.len(), 1, "{evs:#?}");
        assert_eq!(evs[0].class, faultline_proto::EventClass::RankExit);
        assert!(evs[0].message.contains("killed by signal 9"), "{}", evs[0].message);

        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let woke = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), q.urgent()).await.is_ok() });
        assert!(woke, "the news must wake the pusher");
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:9431/progress").unwrap(),
            ("127.0.0.1:9431".into(), "/progress".into())
        );
        assert_eq!(split_http_url("http://localhost").unwrap(), ("localhost:80".into(), "/progress".into()));
        assert!(split_http_url("https://x/progress").is_err());
    }
}
