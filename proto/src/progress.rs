//! The progress-post schema: what a training loop posts to its node's agent (`{job, rank, step, …}`),
//! how a body is parsed and checked, and how `report-progress` writes one. The agent's progress API
//! (`agent/src/progress/`) serves it; `agent/PROGRESS.md` documents it for users and points here.
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

use serde_json::{Map, Value};

use crate::ProgressStatus;

/// Largest accepted post body. A progress post is ~200 bytes; 16 KiB leaves room for long job ids
/// while keeping a misbehaving client from making the agent buffer much.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Highest accepted rank. The largest published training runs use ~10^5 GPUs; 2^24 leaves margin and
/// still refuses obviously corrupt values.
pub const MAX_RANK: u32 = 1 << 24;
/// Largest accepted `step_time_ms` / `compute_ms`: the proto's own bound (1e9 ms ≈ 11.6 days).
pub const MAX_DURATION_MS: f64 = 1e9;

const KNOWN_FIELDS: &str = "job, rank, step, step_time_ms, compute_ms, loss, loss_nonfinite, grad_norm, \
                            grad_norm_nonfinite, status, exit_code";
/// Every field a post may have (as [`KNOWN_FIELDS`] lists them), in the order [`Fields`] stores them.
pub const FIELD_NAMES: [&str; 11] = [
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

/// Why a post was refused. The agent answers each with one HTTP status.
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
        if !crate::id::valid_name(&job) {
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
