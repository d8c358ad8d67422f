//! NCCL and PyTorch-distributed lines from a training process's log: what each says about the
//! collective it was in and the peer it was talking to.
//!
//! The formats are the libraries' own, across versions:
//! - NCCL's prefix `host:pid:tid [cudaDev] [file.cc:123 ]NCCL WARN|INFO …` (newer builds may print
//!   `[time] host [dev] …` or only `[dev] …`); the bracketed number is the CUDA device the process
//!   uses, numbered after `CUDA_VISIBLE_DEVICES`.
//! - IB completion errors: `NET/IB : Got completion from peer <addr><<port>> with error 12, opcode …`
//!   (≤ 2.12), `… with status=12 opcode=0 len=0 vendor err 129 (Recv) localGid … remoteGids… hca
//!   mlx5_0` (2.13–2.2x) and `… with status=IBV_WC_RETRY_EXC_ERR(12) opcode=… vendor_err=129 …`.
//!   The peer address is the peer's out-of-band socket (one per node); on RoCE the remote GID is
//!   the peer NIC's own address (`::ffff:a.b.c.d`), and `hca` names the local NIC.
//! - Socket errors: `Call to recv from <addr><<port>> failed : Connection reset by peer`,
//!   `Connection closed by remote peer <addr><<port>>`, `Connect to <addr><<port>> failed : …`, and
//!   Gloo's `Read error [a.b.c.d]:port: Connection reset by peer`.
//! - ProcessGroupNCCL's watchdog: `[Rank 3] Watchdog caught collective operation timeout:
//!   WorkNCCL(SeqNum=1580, OpType=ALLREDUCE, …, Timeout(ms)=600000) ran for 600060 milliseconds` and
//!   `… detected by watchdog at work: 1580, last enqueued NCCL work: 1582, last completed NCCL work:
//!   1579.`
//! - Result codes: `ncclSystemError`, `ncclRemoteError`, `ncclInternalError`, … and PyTorch's text
//!   for them (`unhandled system error`, `remote process exited or there was a network error`).
//!
//! Launcher tags in front are read too: torchrun's `[default3]:` (local rank), PyTorch's `[rank3]:`
//! (global rank), srun/mpirun labels and the CRI log prefix are skipped. Pure; never panics.

use faultline_proto::EventClass;
use serde::Serialize;

/// What kind of NCCL/distributed evidence a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NcclKind {
    /// An IB/RoCE work completion with an error status (`Got completion from peer …`).
    IbCompletion,
    /// A connection to a peer was reset or closed, or a send/recv on it failed (broken pipe).
    PeerReset,
    /// Connecting to a peer failed (refused, aborted, timed out).
    ConnectFailed,
    /// The watchdog timed a collective out (`WorkNCCL(SeqNum=…, OpType=…)`).
    WatchdogTimeout,
    /// The watchdog's summary: the work it failed at and the last one enqueued and completed.
    WatchdogProgress,
    /// An NCCL result code or another NCCL warning (`ncclRemoteError`, `NCCL WARN Cuda failure`).
    CommError,
    /// An asynchronous event from the IB device (`NET/IB : Got async event : port error`).
    AsyncEvent,
}

impl NcclKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NcclKind::IbCompletion => "ib_completion",
            NcclKind::PeerReset => "peer_reset",
            NcclKind::ConnectFailed => "connect_failed",
            NcclKind::WatchdogTimeout => "watchdog_timeout",
            NcclKind::WatchdogProgress => "watchdog_progress",
            NcclKind::CommError => "comm_error",
            NcclKind::AsyncEvent => "async_event",
        }
    }

    /// The event class a line of this kind becomes.
    pub fn event_class(self) -> EventClass {
        match self {
            NcclKind::IbCompletion => EventClass::IbCompletionError,
            NcclKind::PeerReset | NcclKind::ConnectFailed => EventClass::NcclPeerConnection,
            NcclKind::WatchdogTimeout | NcclKind::WatchdogProgress => EventClass::NcclTimeout,
            NcclKind::CommError | NcclKind::AsyncEvent => EventClass::NcclError,
        }
    }
}

/// What one NCCL/distributed line says. Every field is what the line itself printed; nothing is
/// guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NcclLine {
    pub kind: NcclKind,
    /// Host name from NCCL's prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Process id from NCCL's prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// CUDA device index from NCCL's `[N]` (as the process numbers it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// Local rank, from torchrun's `[defaultN]:` tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<u32>,
    /// Global rank, from PyTorch's `[rankN]:` tag or `[Rank N]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// The peer as printed: an IPv4/IPv6 address (scope dropped) or a host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Local GID (RoCE), an IPv4-mapped one written as the IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_gid: Option<String>,
    /// Remote GID (RoCE): the peer NIC's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_gid: Option<String>,
    /// Local IB device (`hca mlx5_0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hca: Option<String>,
    /// Work-completion status code (12 = IBV_WC_RETRY_EXC_ERR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wc_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_err: Option<u32>,
    /// Collective sequence number (`SeqNum=`, `at work: N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Collective (`ALLREDUCE`, `_REDUCE_SCATTER_BASE`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The watchdog's timeout, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How long the collective ran before the watchdog gave up, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_enqueued: Option<u64>,
    /// The last collective this rank completed: the job waits on the rank whose number is lowest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<u64>,
    /// The error: an NCCL result name (`ncclRemoteError`), a socket error (`Connection reset by
    /// peer`), a completion status name or an async event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Process group of a watchdog line (`[PG 1 Rank 3]`, `[PG ID 0 PG GUID 0(default_pg) Rank 1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<String>,
}

impl NcclLine {
    fn new(kind: NcclKind) -> Self {
        NcclLine {
            kind,
            hostname: None,
            pid: None,
            device: None,
            local_rank: None,
            rank: None,
            peer: None,
            peer_port: None,
            local_gid: None,
            remote_gid: None,
            hca: None,
            wc_status: None,
            vendor_err: None,
            seq: None,
            op: None,
            timeout_ms: None,
            ran_ms: None,
            last_enqueued: None,
            last_completed: None,
            error: None,
            pg: None,
        }
    }

    pub fn class(&self) -> EventClass {
        self.kind.event_class()
    }
}

/// NCCL's own prefix: host, pid and CUDA device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NcclPrefix {
    pub hostname: Option<String>,
    pub pid: Option<u32>,
    pub device: Option<u32>,
    /// `INFO`, `WARN`, `TRACE`, `ABORT`, `ERROR`.
    pub level: String,
    /// Byte offset of the message after `NCCL <LEVEL> `.
    pub body_at: usize,
}

const LEVELS: [&str; 5] = ["WARN", "INFO", "TRACE", "ABORT", "ERROR"];

/// NCCL's prefix of `line`, when it has one.
pub fn parse_prefix(line: &str) -> Option<NcclPrefix> {
    let (at, level) = LEVELS.iter().find_map(|l| line.find(&format!("NCCL {l}")).map(|i| (i, *l)))?;
    let body_at = (at + 5 + level.len()).min(line.len());
    let body_at = if line[body_at..].starts_with(' ') { body_at + 1 } else { body_at };
    let mut p = NcclPrefix { level: level.to_string(), body_at, ..Default::default() };
    let mut toks: Vec<&str> = line[..at].split_whitespace().collect();
    // `misc/socket.cc:46` (WARN lines carry their source position).
    if toks.last().is_some_and(|t| is_source_position(t)) {
        toks.pop();
    }
    if let Some(dev) = toks.last().and_then(|t| bracketed_number(t)) {
        p.device = Some(dev);
        toks.pop();
    } else {
        return None;
    }
    if let Some(id) = toks.last() {
        // A launcher tag may be glued in front: `[1,0]<stdout>:host:pid:tid`, `[default0]:host:…`.
        let id = id.rsplit(['>', ']']).next().unwrap_or(id).trim_start_matches(':');
        let parts: Vec<&str> = id.split(':').collect();
        let n = parts.len();
        if n >= 3 && parts[n - 1].parse::<u32>().is_ok() && parts[n - 2].parse::<u32>().is_ok() {
            p.pid = parts[n - 2].parse().ok();
            p.hostname = Some(parts[..n - 2].join(":")).filter(|h| is_hostname(h));
        } else if n == 1 && is_hostname(id) && !is_timestamp_like(id) {
            p.hostname = Some(id.to_string());
        }
    }
    Some(p)
}

fn is_source_position(t: &str) -> bool {
    match t.rsplit_once(':') {
        Some((file, line)) => file.contains('.') && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

fn bracketed_number(t: &str) -> Option<u32> {
    t.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && h.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_timestamp_like(h: &str) -> bool {
    h.bytes().filter(|b| b.is_ascii_digit()).count() * 2 > h.len()
}

/// The number after `key` (digits only).
fn num_after(s: &str, key: &str) -> Option<u64> {
    let i = s.find(key)? + key.len();
    let digits: String = s[i..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The whitespace-free token after `key`, trimmed of trailing punctuation.
fn token_after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)? + key.len();
    let t = s[i..].split_whitespace().next()?;
    let t = t.trim_end_matches([',', ';', '.', ')']);
    (!t.is_empty()).then_some(t)
}

/// `host<port>` (NCCL's socket address form) starting at the first token after `key`, or anywhere
/// in `s` when `key` is empty.
fn nccl_addr(s: &str) -> Option<(String, Option<u16>)> {
    for tok in s.split_whitespace() {
        let Some(lt) = tok.find('<') else { continue };
        let rest = &tok[lt + 1..];
        let Some(gt) = rest.find('>') else { continue };
        let port = &rest[..gt];
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let host = tok[..lt].trim_start_matches(['(', '[', '\'', '"']);
        if host.is_empty() {
            continue;
        }
        return Some((clean_host(host), port.parse().ok()));
    }
    None
}

/// Gloo's `[a.b.c.d]:port`.
fn gloo_addr(s: &str) -> Option<(String, Option<u16>)> {
    let mut from = 0;
    while let Some(i) = s[from..].find('[') {
        let start = from + i + 1;
        let j = s[start..].find("]:")?;
        let host = &s[start..start + j];
        let port: String = s[start + j + 2..].chars().take_while(|c| c.is_ascii_digit()).collect();
        if !port.is_empty() && host.parse::<std::net::IpAddr>().is_ok() {
            return Some((host.to_string(), port.parse().ok()));
        }
        from = start;
    }
    None
}

/// An address as NCCL prints it, scope (`%ib0`) dropped.
fn clean_host(h: &str) -> String {
    h.split('%').next().unwrap_or(h).to_string()
}

/// A GID as an address: `::ffff:a.b.c.d` is the IPv4 address it maps.
pub fn gid_addr(g: &str) -> String {
    match g.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Err(_) => g.to_string(),
    }
}

/// The GID glued after `key` (`remoteGids::ffff:…`, `remoteGidsfd00:…`, ` remoteGid ::ffff:…`).
fn gid_after(s: &str, key: &str) -> Option<String> {
    let i = s.find(key)? + key.len();
    let t = s[i..].split_whitespace().next()?;
    (t.contains(':')).then(|| gid_addr(t))
}

/// Lines that come from NCCL, Gloo or c10d (a "Connection reset by peer" from an HTTP client in the
/// same log is not the fabric).
fn is_distributed(s: &str) -> bool {
    const MARKS: [&str; 12] = [
        "NCCL",
        "nccl",
        "socketProgress",
        "socketStartConnect",
        "socketPollConnect",
        "NET/",
        "Net : ",
        "gloo",
        "c10d",
        "TCPStore",
        "ProcessGroup",
        "WorkNCCL",
    ];
    MARKS.iter().any(|m| s.contains(m))
}

/// NCCL result names and the text PyTorch and NCCL print for them.
const RESULTS: [(&str, &str); 10] = [
    ("ncclSystemError", "ncclSystemError"),
    ("ncclRemoteError", "ncclRemoteError"),
    ("ncclInternalError", "ncclInternalError"),
    ("ncclUnhandledCudaError", "ncclUnhandledCudaError"),
    ("ncclInvalidUsage", "ncclInvalidUsage"),
    ("ncclInvalidArgument", "ncclInvalidArgument"),
    ("unhandled system error", "ncclSystemError"),
    ("remote process exited or there was a network error", "ncclRemoteError"),
    ("internal error - please report this issue", "ncclInternalError"),
    ("unhandled cuda error", "ncclUnhandledCudaError"),
];

fn result_name(s: &str) -> Option<&'static str> {
    RESULTS.iter().find(|(needle, _)| s.contains(needle)).map(|(_, name)| *name)
}

/// Socket failures, as `strerror` words them.
const SOCKET_ERRORS: [&str; 8] = [
    "Connection reset by peer",
    "Connection closed by remote peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "Connection timed out",
    "Software caused connection abort",
    "No route to host",
];

/// The `error` of a line from PyTorch's NaN check: a collective's input held a NaN on this rank.
pub const NAN_CHECK_FAILED: &str = "nan_check_failed";

/// Words that make an NCCL warning a failure.
const WARN_FAILURE_WORDS: [&str; 9] =
    ["fail", "error", "abort", "timeout", "timed out", "closed", "refused", "reset", "invalid"];

/// Parse one line; `None` for a line that is no NCCL/distributed evidence (NCCL INFO chatter
/// included).
pub fn parse(line: &str) -> Option<NcclLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    if !is_distributed(line) {
        return None;
    }
    let prefix = parse_prefix(line);
    // INFO lines are NCCL's narration (`transport/net.cc:1302 -> 6`); the WARN beside them says it.
    if prefix.as_ref().is_some_and(|p| p.level == "INFO" || p.level == "TRACE") {
        return None;
    }
    let body = prefix.as_ref().map(|p| &line[p.body_at..]).unwrap_or(line);
    let mut out = classify_body(line, body)?;
    if let Some(p) = prefix {
        out.hostname = p.hostname;
        out.pid = p.pid;
        out.device = p.device;
    }
    out.local_rank = tag_number(line, "[default");
    out.rank = tag_number(line, "[rank").or_else(|| rank_in_brackets(line));
    out.pg = process_group(line);
    if out.error.is_none() {
        out.error = result_name(line).map(str::to_string);
    }
    Some(out)
}

fn classify_body(line: &str, body: &str) -> Option<NcclLine> {
    if let Some(i) = line.find("Got completion from peer") {
        let rest = &line[i + "Got completion from peer".len()..];
        let mut o = NcclLine::new(NcclKind::IbCompletion);
        if let Some((h, p)) = nccl_addr(rest) {
            o.peer = Some(h);
            o.peer_port = p;
        }
        // `status=12`, `status=IBV_WC_RETRY_EXC_ERR(12)`, `with error 12,`
        if let Some(st) = token_after(rest, "status=") {
            match st.split_once('(') {
                Some((name, code)) => {
                    o.wc_status = code.trim_end_matches(')').parse().ok();
                    o.error = Some(name.to_string());
                }
                None => o.wc_status = st.parse().ok(),
            }
        } else {
            o.wc_status = num_after(rest, "with error").and_then(|n| u32::try_from(n).ok());
        }
        o.vendor_err = num_after(rest, "vendor err")
            .or_else(|| num_after(rest, "vendor_err="))
            .and_then(|n| u32::try_from(n).ok());
        o.local_gid = gid_after(rest, "localGid");
        o.remote_gid = gid_after(rest, "remoteGids").or_else(|| gid_after(rest, "remoteGid"));
        o.hca = token_after(rest, " hca ").map(str::to_string);
        if o.error.is_none() {
            o.error = o.wc_status.and_then(wc_status_name).map(str::to_string);
        }
        return Some(o);
    }
    // PyTorch's NaN check (`TORCH_NCCL_NAN_CHECK=1`) is a device-side assertion in c10d's
    // `checkForNaN` kernel on a collective's input, printed by the CUDA runtime in its assertion
    // format (`file:line: function: block: [x,y,z], thread: [x,y,z] Assertion `cond` failed.`).
    if line.contains("checkForNaN") && line.contains("Assertion") {
        let mut o = NcclLine::new(NcclKind::CommError);
        o.error = Some(NAN_CHECK_FAILED.to_string());
        return Some(o);
    }
    if line.contains("Watchdog caught collective operation timeout") || line.contains("WorkNCCL(SeqNum=") {
        let mut o = NcclLine::new(NcclKind::WatchdogTimeout);
        o.seq = num_after(line, "SeqNum=");
        o.op = token_after(line, "OpType=").map(str::to_string);
        o.timeout_ms = num_after(line, "Timeout(ms)=");
        o.ran_ms = num_after(line, "ran for");
        return Some(o);
    }
    if line.contains("last completed NCCL work") {
        let mut o = NcclLine::new(NcclKind::WatchdogProgress);
        o.seq = num_after(line, "at work:").or_else(|| num_after(line, "NCCL work:"));
        o.last_enqueued = num_after(line, "last enqueued NCCL work:");
        o.last_completed = num_after(line, "last completed NCCL work:");
        return Some(o);
    }
    if let Some(i) = line.find("Got async event") {
        let mut o = NcclLine::new(NcclKind::AsyncEvent);
        let ev = line[i + "Got async event".len()..].trim_start_matches([' ', ':']).trim();
        o.error = (!ev.is_empty()).then(|| ev.to_string());
        // Newer NCCL names the port in front: `NET/IB : mlx5_0:1 Got async event : port error`.
        o.hca = line[..i]
            .split_whitespace()
            .last()
            .and_then(|t| t.split_once(':'))
            .filter(|(dev, port)| is_device_name(dev) && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .map(|(dev, _)| dev.to_string());
        return Some(o);
    }
    // PyTorch's heartbeat monitor: the watchdog itself is stuck (an NCCL or CUDA call that hangs).
    if let Some(i) = line.find("watchdog got stuck for") {
        let mut o = NcclLine::new(NcclKind::WatchdogTimeout);
        o.timeout_ms = num_after(&line[i..], "stuck for").map(|s| s.saturating_mul(1000));
        o.error = Some("watchdog stuck".into());
        return Some(o);
    }
    if let Some(err) = SOCKET_ERRORS.iter().find(|e| line.contains(*e)) {
        let connect = line.contains("Connect to ") || line.contains("connect returned") || line.contains("Connect(");
        let kind = if connect { NcclKind::ConnectFailed } else { NcclKind::PeerReset };
        let mut o = NcclLine::new(kind);
        if let Some((h, p)) = nccl_addr(body).or_else(|| gloo_addr(body)) {
            o.peer = Some(h);
            o.peer_port = p;
        }
        o.error = Some(err.to_string());
        return Some(o);
    }
    if let Some(name) = result_name(line) {
        let mut o = NcclLine::new(NcclKind::CommError);
        o.error = Some(name.to_string());
        return Some(o);
    }
    // Other warnings count when they report a failure: NCCL also warns about a missing net plugin
    // or an unknown CPU affinity at start, which break nothing.
    if (line.contains("NCCL WARN") || line.contains("NCCL ERROR") || line.contains("NCCL ABORT"))
        && WARN_FAILURE_WORDS.iter().any(|w| body.to_ascii_lowercase().contains(w))
    {
        return Some(NcclLine::new(NcclKind::CommError));
    }
    if line.contains("NCCL communicator was aborted") || line.contains("DistBackendError") {
        return Some(NcclLine::new(NcclKind::CommError));
    }
    None
}

/// `[default3]:` / `[rank3]:` tags.
fn tag_number(line: &str, tag: &str) -> Option<u32> {
    let i = line.find(tag)? + tag.len();
    let digits: String = line[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let after = &line[i + digits.len()..];
    (after.starts_with("]:") || after.starts_with(']')).then_some(())?;
    digits.parse().ok()
}

/// `[PG 1 Rank 0]` → `1`, `[PG ID 0 PG GUID 0(default_pg) Rank 1]` → `0`.
fn process_group(line: &str) -> Option<String> {
    let i = line.find("[PG ")? + 4;
    let rest = line[i..].strip_prefix("ID ").unwrap_or(&line[i..]);
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!id.is_empty()).then_some(id)
}

/// `[Rank 3]`, `[PG 1 Rank 0]`, `[PG ID 0 PG GUID 0(default_pg) Rank 1]`.
fn rank_in_brackets(line: &str) -> Option<u32> {
    let i = line.find(" Rank ").map(|i| i + 6).or_else(|| line.find("[Rank ").map(|i| i + 6))?;
    let digits: String = line[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    line[i + digits.len()..].starts_with(']').then_some(())?;
    digits.parse().ok()
}

/// An RDMA device name as the kernel gives it (`mlx5_3`, `bnxt_re0`, `irdma1`).
pub fn is_device_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `ibv_wc_status` names (verbs.h), for the lines that print only the number.
pub fn wc_status_name(code: u32) -> Option<&'static str> {
    Some(match code {
        1 => "IBV_WC_LOC_LEN_ERR",
        2 => "IBV_WC_LOC_QP_OP_ERR",
        4 => "IBV_WC_LOC_PROT_ERR",
        5 => "IBV_WC_WR_FLUSH_ERR",
        7 => "IBV_WC_BAD_RESP_ERR",
        8 => "IBV_WC_LOC_ACCESS_ERR",
        9 => "IBV_WC_REM_INV_REQ_ERR",
        10 => "IBV_WC_REM_ACCESS_ERR",
        11 => "IBV_WC_REM_OP_ERR",
        12 => "IBV_WC_RETRY_EXC_ERR",
        13 => "IBV_WC_RNR_RETRY_EXC_ERR",
        _ => return None,
    })
}

/// Strip the CRI log prefix a container runtime writes (`2024-05-01T10:00:00.123456789Z stdout F
/// <line>`): the line and whether it is complete (`F`) or a part to be joined with the next (`P`).
pub fn strip_cri(line: &str) -> Option<(&str, bool)> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let rest = it.next().unwrap_or("");
    let ts_ok = ts.len() >= 20 && ts.as_bytes().get(4) == Some(&b'-') && ts.contains('T');
    if !ts_ok || !(stream == "stdout" || stream == "stderr") {
        return None;
    }
    match tag.split(':').next() {
        Some("F") => Some((rest, true)),
        Some("P") => Some((rest, false)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "nccl_tests.rs"]
mod tests;
