//! Kernel-log and training-log line classifier, shared by the kmsg watcher and `classify-log`.
//!
//! `classify` is one pure function: a line in, a `Classification` out. It first strips whatever
//! prefix the line came with (`/dev/kmsg` records, `[  123.456]`, `[Fri Aug 30 11:43:09 2024]`,
//! ISO stamps, `dmesg --decode` facility/level, syslog headers up to `kernel:`), then applies rules
//! written for the message formats of the drivers that print them (NVRM, nvidia-nvswitch, mlx5,
//! bonding, netdev, PCIe AER/DPC, EDAC/MCE, the OOM killer, the block layer, NCCL, UCX/verbs). It
//! never panics, whatever the bytes.

use std::io::{BufRead, Write};

use faultline_proto::Severity;
use serde::Serialize;

use crate::collect::pci_key;

/// What a line shows: the one event-class list of `faultline_proto`, whose `None` is a benign line.
pub use faultline_proto::EventClass as Class;

/// What `classify` found in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    pub severity: Severity,
    pub xid: Option<u32>,
    /// NVSwitch SXid code.
    pub sxid: Option<u32>,
    /// "caused by previous Xid N".
    pub caused_by_xid: Option<u32>,
    /// PCI device as `0000:3b:00` (domain:bus:device, function and MIG suffixes dropped).
    pub device: Option<String>,
    /// NIC: IB device (`mlx5_3`) or netdev (`eth0`, `enp83s0f0np0`).
    pub nic: Option<String>,
    /// The killed, hung or faulting process.
    pub pid: Option<u32>,
    /// Block device, partition dropped (`nvme0n1`, `sda`).
    pub disk: Option<String>,
    /// The line with its timestamp/syslog prefix removed.
    pub message: String,
}

impl Classification {
    fn new(class: Class, message: &str) -> Self {
        Classification {
            class,
            severity: class.default_severity(),
            xid: None,
            sxid: None,
            caused_by_xid: None,
            device: None,
            nic: None,
            pid: None,
            disk: None,
            message: message.to_string(),
        }
    }

    fn none(message: &str) -> Self {
        Self::new(Class::None, message)
    }
}

/// The JSON line `classify-log` prints.
#[derive(Debug, Serialize)]
struct JsonOut<'a> {
    class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sxid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caused_by_xid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<&'a str>,
}

/// One JSON object for `c`: `{"class":"none"}` when nothing was found.
pub fn to_json(c: &Classification) -> String {
    let out = if c.class == Class::None {
        JsonOut {
            class: "none",
            xid: None,
            sxid: None,
            device: None,
            severity: None,
            caused_by_xid: None,
            nic: None,
            pid: None,
            disk: None,
        }
    } else {
        JsonOut {
            class: c.class.as_str(),
            xid: c.xid,
            sxid: c.sxid,
            device: c.device.as_deref(),
            severity: Some(c.severity.as_str()),
            caused_by_xid: c.caused_by_xid,
            nic: c.nic.as_deref(),
            pid: c.pid,
            disk: c.disk.as_deref(),
        }
    };
    serde_json::to_string(&out).unwrap_or_else(|_| r#"{"class":"none"}"#.to_string())
}

/// `faultline-agent classify-log`: one JSON object per stdin line on stdout. Bytes that are not UTF-8
/// are replaced, never fatal.
pub fn classify_log_stdin() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        writeln!(out, "{}", to_json(&classify(line))).map_err(|e| anyhow::anyhow!("writing stdout: {e}"))?;
    }
    out.flush().map_err(|e| anyhow::anyhow!("writing stdout: {e}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Prefix stripping
// ---------------------------------------------------------------------------------------------

/// How far into a line a syslog header may reach before `kernel:`.
const MAX_SYSLOG_HEADER: usize = 120;

/// Remove timestamps and log headers from the front of `line`, in any order and nesting.
pub fn strip_prefixes(line: &str) -> &str {
    let mut s = line;
    for _ in 0..8 {
        let before = s.len();
        s = s.trim_start();
        s = strip_kmsg_record(s);
        s = strip_priority(s);
        s = strip_bracket_time(s);
        s = strip_iso_time(s);
        s = strip_decode_facility(s);
        s = strip_syslog_header(s);
        if s.len() == before {
            break;
        }
    }
    s.trim()
}

/// `6,1234,5678,-;message` (the /dev/kmsg record header; the dictionary lines that follow a record
/// start with a space and are ignored by the watcher).
fn strip_kmsg_record(s: &str) -> &str {
    let Some(semi) = s.find(';') else { return s };
    let head = &s[..semi];
    let parts: Vec<&str> = head.split(',').collect();
    if parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        &s[semi + 1..]
    } else {
        s
    }
}

/// `<4>` syslog priority.
fn strip_priority(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('<')
        && let Some(end) = rest.find('>')
        && end > 0
        && end <= 3
        && rest[..end].bytes().all(|b| b.is_ascii_digit())
    {
        return &rest[end + 1..];
    }
    s
}

fn has_clock_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(8).any(|w| {
        w[0].is_ascii_digit()
            && w[1].is_ascii_digit()
            && w[2] == b':'
            && w[3].is_ascii_digit()
            && w[4].is_ascii_digit()
            && w[5] == b':'
            && w[6].is_ascii_digit()
            && w[7].is_ascii_digit()
    })
}

/// `[  123.456789]`, `[+0.000844]`, `[Fri Aug 30 11:43:09 2024]`, `kernel:[...]` forms.
fn strip_bracket_time(s: &str) -> &str {
    let Some(rest) = s.strip_prefix('[') else { return s };
    let Some(end) = rest.find(']') else { return s };
    if end > 48 {
        return s;
    }
    let inner = rest[..end].trim();
    let mono = {
        let t = inner.trim_start_matches(['+', '-']);
        !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
            && t.bytes().any(|b| b.is_ascii_digit())
    };
    if mono || has_clock_time(inner) { &rest[end + 1..] } else { s }
}

/// `2024-11-15T12:02:03,470068+00:00` (dmesg --time-format iso) or `2024-11-15 12:02:03`.
fn strip_iso_time(s: &str) -> &str {
    let b = s.as_bytes();
    let is_date = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    if !is_date {
        return s;
    }
    let mut rest = &s[10..];
    if rest.starts_with(['T', ' ']) && has_clock_time(rest.get(..10).unwrap_or(rest)) {
        rest = &rest[1..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[end..];
    } else if let Some(r) = rest.strip_prefix(|c: char| c.is_whitespace()) {
        rest = r;
    } else {
        return s;
    }
    rest
}

const FACILITIES: [&str; 20] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "local0",
    "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
const LEVELS: [&str; 8] = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];

/// `kern  :warn  : ` (dmesg --decode).
fn strip_decode_facility(s: &str) -> &str {
    let Some(c1) = s.find(':') else { return s };
    if !FACILITIES.contains(&s[..c1].trim()) {
        return s;
    }
    let rest = &s[c1 + 1..];
    let Some(c2) = rest.find(':') else { return s };
    if LEVELS.contains(&rest[..c2].trim()) { &rest[c2 + 1..] } else { s }
}

/// A syslog/journal header (`Feb 23 03:28:16 host kernel: `, `Mon Jul 28 10:19:15 2025 kern.crit
/// kernel: `, `фев 12 00:48:02 kernel: `): everything up to `kernel:` when what precedes it is short
/// and has a clock time or is only the word itself.
fn strip_syslog_header(s: &str) -> &str {
    let limit = s.len().min(MAX_SYSLOG_HEADER);
    let window = match s.get(..limit) {
        Some(w) => w,
        None => {
            // `limit` fell inside a multi-byte character: back off to a boundary.
            let mut l = limit;
            while l > 0 && !s.is_char_boundary(l) {
                l -= 1;
            }
            &s[..l]
        }
    };
    if let Some(pos) = window.find("kernel:") {
        let head = &s[..pos];
        if head.trim().is_empty() || has_clock_time(head) {
            return &s[pos + "kernel:".len()..];
        }
    }
    // A syslog header without `kernel:` (another daemon): `Mon DD HH:MM:SS host tag[pid]: msg`.
    let mut it = s.splitn(4, ' ').filter(|t| !t.is_empty());
    if let (Some(mon), Some(day)) = (it.next(), it.next()) {
        let day_ok = day.len() <= 2 && day.bytes().all(|b| b.is_ascii_digit());
        if day_ok
            && mon.chars().count() <= 5
            && mon.chars().all(char::is_alphabetic)
            && let Some(tpos) = find_clock(s)
        {
            let after = &s[tpos + 8..];
            return after.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        }
    }
    s
}

fn find_clock(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(7)).find(|&i| {
        let w = &b[i..i + 8];
        w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b':' && w[5] == b':' && w[7].is_ascii_digit()
    })
}

// ---------------------------------------------------------------------------------------------
// Field extraction
// ---------------------------------------------------------------------------------------------

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Every PCI address in `s` (`0000:3b:00.0`, `00000000:3B:00.0`, `PCI:0000:cb:00`), as `pci_key`s,
/// with their byte offsets.
fn pci_addresses(s: &str) -> Vec<(usize, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary && is_hex(b[i]) {
            let mut j = i;
            while j < b.len() && is_hex(b[j]) {
                j += 1;
            }
            let dom_len = j - i;
            if (4..=8).contains(&dom_len)
                && b.len() >= j + 6
                && b[j] == b':'
                && is_hex(b[j + 1])
                && is_hex(b[j + 2])
                && b[j + 3] == b':'
                && is_hex(b[j + 4])
                && is_hex(b[j + 5])
                && b.get(j + 6).is_none_or(|c| !c.is_ascii_alphanumeric())
            {
                if let Some(k) = pci_key(&s[i..j + 6]) {
                    out.push((i, k));
                }
                i = j + 6;
                continue;
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

fn first_pci(s: &str) -> Option<String> {
    pci_addresses(s).into_iter().next().map(|(_, k)| k)
}

/// The number that starts `s` (after spaces).
fn leading_number(s: &str) -> Option<u32> {
    let t = s.trim_start();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    t[..end].parse().ok()
}

/// The number after the first `key` in `s`.
fn number_after(s: &str, key: &str) -> Option<u32> {
    let pos = s.find(key)?;
    leading_number(&s[pos + key.len()..])
}

/// `NVRM: Xid (PCI:0000:3b:00): 79, pid=…` → (code, device). Also `Xid 79` without the device. `SXid`
/// is not an XID.
fn parse_xid(s: &str) -> Option<(u32, Option<String>)> {
    let mut from = 0;
    while let Some(off) = s[from..].find("Xid").or_else(|| s[from..].find("XID")) {
        let pos = from + off;
        from = pos + 3;
        let before = s[..pos].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric()) {
            continue; // SXid, NVXid, …
        }
        if s[..pos].ends_with("previous ") {
            continue;
        }
        let mut rest = s[pos + 3..].trim_start();
        let mut device = None;
        if let Some(r) = rest.strip_prefix('(') {
            let close = r.find(')')?;
            device = first_pci(&r[..close]);
            rest = &r[close + 1..];
        }
        let rest = rest.trim_start().trim_start_matches(':');
        if let Some(code) = leading_number(rest) {
            return Some((code, device));
        }
    }
    None
}

/// `pid=1234` (not `pid='<unknown>'`), `pid 1234`, `Killed process 1234`, `reaped process 1234`.
fn parse_pid(s: &str) -> Option<u32> {
    for key in ["Killed process ", "reaped process ", "pid=", "pid: ", "pid "] {
        if let Some(p) = number_after(s, key) {
            return Some(p);
        }
    }
    None
}

/// Interface or RDMA device names as drivers print them: `mlx5_3`, `mlx5_bond_0`, `eth0`, `eth0.100`,
/// `ib0`, `ibp12s0`, `ibs1`, `enp83s0f0np0`, `ens1f0`, `eno1`, `bond0`, `hfi1_0`, `efa_0`, `irdma0`,
/// `bnxt_re0`, `rocep1s0f0`. Driver and module names (`mlx5_core`, `ib_core`) and source files are not.
fn looks_like_nic(t: &str) -> bool {
    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    fn alnum_with_digit(s: &str) -> bool {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && s.bytes().any(|b| b.is_ascii_digit())
    }
    if t.len() < 3 || t.len() > 32 {
        return false;
    }
    // A VLAN suffix is numeric: `eth0.100`.
    let t = match t.split_once('.') {
        Some((base, vlan)) if digits(vlan) => base,
        Some(_) => return false,
        None => t,
    };
    for p in ["mlx5_", "mlx4_", "hfi1_", "efa_", "erdma_", "qedr"] {
        if let Some(rest) = t.strip_prefix(p) {
            return digits(rest) || rest.strip_prefix("bond_").is_some_and(digits);
        }
    }
    for p in ["eth", "bond", "irdma", "bnxt_re", "em", "ib"] {
        if let Some(rest) = t.strip_prefix(p)
            && digits(rest)
        {
            return true;
        }
    }
    for p in ["ibp", "ibs", "enp", "ens", "eno", "enx", "rocep"] {
        if let Some(rest) = t.strip_prefix(p) {
            return rest.starts_with(|c: char| c.is_ascii_digit()) && alnum_with_digit(rest);
        }
    }
    false
}

/// The NIC a line is about: `(slave X)` first, then the first token that looks like an interface or
/// an RDMA device (`mlx5_0:1/IB` → `mlx5_0`).
fn parse_nic(s: &str) -> Option<String> {
    if let Some(pos) = s.find("slave ") {
        let t: String = s[pos + 6..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
            .collect();
        if !t.is_empty() {
            return Some(t);
        }
    }
    for tok in
        s.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '[' | ']' | '\'' | '"' | '<' | '>' | '='))
    {
        let t = tok.split([':', '/']).next().unwrap_or("").trim_end_matches('.');
        if looks_like_nic(t) {
            return Some(t.to_string());
        }
    }
    None
}

/// Whole-disk name from a partition: `nvme0n1p2` → `nvme0n1`, `sda3` → `sda`.
fn disk_base(d: &str) -> String {
    if d.starts_with("nvme") || d.starts_with("mmcblk") {
        // `nvme0n1p2`, `mmcblk0p1`: the partition is `p<digits>` after a name ending in a digit.
        if let Some(p) = d.rfind('p')
            && p > 0
            && !d[p + 1..].is_empty()
            && d[p + 1..].bytes().all(|b| b.is_ascii_digit())
            && d[..p].bytes().last().is_some_and(|b| b.is_ascii_digit())
        {
            return d[..p].to_string();
        }
        return d.to_string();
    }
    if d.starts_with("sd") || d.starts_with("vd") || d.starts_with("xvd") || d.starts_with("hd") {
        return d.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    }
    d.to_string()
}

fn is_dev_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `dev sda,`, `on dev nvme0n1p1`, `(device sdb1)`, `XFS (dm-0)`, `nvme nvme0:`, `sd 2:0:0:0: [sdb]`.
fn parse_disk(s: &str) -> Option<String> {
    for key in ["dev ", "device ", "(device "] {
        let mut from = 0;
        while let Some(off) = s[from..].find(key) {
            let pos = from + off;
            from = pos + key.len();
            if pos > 0 && s[..pos].chars().next_back().is_some_and(|c| c.is_alphanumeric()) {
                continue;
            }
            let t: String = s[pos + key.len()..].chars().take_while(|c| is_dev_char(*c)).collect();
            if t.len() >= 2 && t.bytes().any(|b| b.is_ascii_alphabetic()) {
                return Some(disk_base(&t));
            }
        }
    }
    for (key, close) in [("XFS (", ')'), ("EXT4-fs (", ')'), ("EXT4-fs error (device ", ')'), ("] [", ']')] {
        if let Some(pos) = s.find(key) {
            let t: String = s[pos + key.len()..].chars().take_while(|c| *c != close && is_dev_char(*c)).collect();
            if !t.is_empty() {
                return Some(disk_base(&t));
            }
        }
    }
    if let Some(pos) = s.find("nvme nvme") {
        let t: String = s[pos + 5..].chars().take_while(|c| is_dev_char(*c)).collect();
        if !t.is_empty() {
            return Some(t);
        }
    }
    if let Some(pos) = s.find(": [sd") {
        let t: String = s[pos + 3..].chars().take_while(|c| is_dev_char(*c)).collect();
        if !t.is_empty() {
            return Some(disk_base(&t));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

fn any(s: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| s.contains(n))
}

/// Words that turn an informational driver line into an error report.
const FAILURE_WORDS: [&str; 12] = [
    "fail",
    "error",
    "timeout",
    "timed out",
    "mismatch",
    "fatal",
    "assert",
    "not responding",
    "unable",
    "corrupt",
    "exception",
    "invalid",
];

fn has_failure_word(lower: &str) -> bool {
    FAILURE_WORDS.iter().any(|w| lower.contains(w))
}

/// Drivers of the NICs found on GPU nodes (and common onboard ones), as they prefix their lines.
const NIC_DRIVERS: [&str; 18] = [
    "mlx5_core",
    "mlx4_core",
    "mlx5_ib",
    "mlx4_en",
    "bnxt_en",
    "bnxt_re",
    "ixgbe",
    "i40e",
    "ice",
    "igb",
    "igc",
    "e1000e",
    "tg3",
    "ena",
    "efa",
    "irdma",
    "ionic",
    "hfi1",
];

fn nic_driver_line(s: &str) -> bool {
    let first = s.split([' ', ':']).next().unwrap_or("");
    NIC_DRIVERS.contains(&first)
}

/// Classify one line. Pure; never panics.
pub fn classify(line: &str) -> Classification {
    let m = strip_prefixes(line);
    if m.is_empty() {
        return Classification::none(m);
    }
    let lower = m.to_ascii_lowercase();

    // GPU: XID first; its line may also say "fallen off the bus".
    if let Some((code, device)) = parse_xid(m) {
        let mut c = Classification::new(Class::Xid, m);
        c.xid = Some(code);
        c.severity = crate::xid::severity(code);
        c.device = device.or_else(|| first_pci(m));
        c.caused_by_xid =
            number_after(m, "caused by previous Xid").or_else(|| number_after(m, "caused by previous XID"));
        c.pid = parse_pid(m);
        return c;
    }
    // NVSwitch: `nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 28 …`.
    if let Some(pos) = m.find("SXid") {
        let mut c = Classification::new(Class::NvswitchSxid, m);
        let rest = &m[pos + 4..];
        let rest = match rest.trim_start().strip_prefix('(') {
            Some(r) => r.find(')').map(|e| &r[e + 1..]).unwrap_or(r),
            None => rest,
        };
        c.sxid = leading_number(rest.trim_start().trim_start_matches(':'));
        c.device = first_pci(m);
        c.severity = if lower.contains("non-fatal") || lower.contains("nonfatal") {
            Severity::Warning
        } else if lower.contains("fatal") {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return c;
    }

    // NVSwitch errors reported without an SXid (Fabric Manager, nvswitch driver).
    if lower.contains("nvswitch") && has_failure_word(&lower) {
        let mut c = Classification::new(Class::NvswitchSxid, m);
        c.device = first_pci(m);
        c.severity = if lower.contains("non-fatal") || lower.contains("nonfatal") {
            Severity::Warning
        } else if lower.contains("fatal") {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return c;
    }

    // Training-job logs: NCCL, PyTorch, UCX, verbs.
    if any(
        &lower,
        &[
            "got completion with error",
            "got completion from peer",
            "transport retry count exceeded",
            "transport retry counter exceeded",
            "cqe error",
            "ibv_wc_retry_exc_err",
            "wc_retry_exc",
            "remote access error",
            "local protection error",
            "rnr retry counter exceeded",
            "completion with error",
        ],
    ) || (lower.contains("ibv_poll_cq") && has_failure_word(&lower))
    {
        let mut c = Classification::new(Class::IbCompletionError, m);
        c.nic = parse_nic(m);
        return c;
    }
    if any(
        &lower,
        &[
            "watchdog caught collective operation timeout",
            "collective operation timeout",
            "nccl timeout",
            "ncclcommwatchdog",
            "timed out waiting for nccl",
            "nccl watchdog",
            "timeout at nccl work",
        ],
    ) || (lower.contains("processgroupnccl") && (lower.contains("timeout") || lower.contains("timed out")))
    {
        return Classification::new(Class::NcclTimeout, m);
    }
    if any(
        &lower,
        &[
            "nccl error",
            "ncclsystemerror",
            "ncclinternalerror",
            "ncclunhandledcudaerror",
            "ncclinvalidusage",
            "ncclremoteerror",
            "nccl failure",
            "distbackenderror",
            "nccl communicator was aborted",
        ],
    ) || (m.contains("NCCL WARN") && has_failure_word(&lower))
    {
        return Classification::new(Class::NcclError, m);
    }

    // PCIe AER and DPC. `pcieport …: AER: …`, `nvidia 0000:03:00.0: AER: can't recover`.
    if lower.contains("aer") || lower.contains("pcie bus error") || lower.contains("dpc:") || lower.contains("pciehp") {
        let corrected = lower.contains("severity=corrected")
            || lower.contains("corrected error received")
            || lower.contains("correctable error message received")
            || lower.contains("correctable error received")
            || lower.contains("multiple corrected error");
        let uncorrected = lower.contains("uncorrect")
            || lower.contains("severity=fatal")
            || lower.contains("non-fatal")
            || lower.contains("can't recover")
            || lower.contains("cannot recover")
            || lower.contains("device recovery failed")
            || lower.contains("containment event")
            || (lower.contains("pciehp") && lower.contains("link down"));
        if lower.contains("pciehp") && !uncorrected {
            return Classification::none(m);
        }
        if uncorrected || corrected {
            let class = if uncorrected && !lower.contains("severity=corrected") {
                Class::PcieAerUncorrected
            } else {
                Class::PcieAerCorrected
            };
            let mut c = Classification::new(class, m);
            // The reporting device: "received: X" / "received from X" names the source.
            let addrs = pci_addresses(m);
            c.device = match m.find("received") {
                Some(r) => addrs.iter().find(|(o, _)| *o > r).or(addrs.first()).map(|(_, k)| k.clone()),
                None => addrs.first().map(|(_, k)| k.clone()),
            };
            return c;
        }
    }

    // NVRM (the NVIDIA kernel driver).
    if m.contains("NVRM") || lower.starts_with("nvidia") || lower.contains("nvidia-nvlink") {
        let device = first_pci(m);
        if lower.contains("fallen off the bus") || lower.contains("fell off the bus") {
            let mut c = Classification::new(Class::GpuFallenOffBus, m);
            c.device = device;
            return c;
        }
        // First line of the three-line "fallen off the bus" message: the address and nothing else.
        if let Some(pos) = m.find("The NVIDIA GPU ") {
            let rest = m[pos + "The NVIDIA GPU ".len()..].trim();
            if device.is_some() && !rest.contains(' ') {
                let mut c = Classification::new(Class::GpuFallenOffBus, m);
                c.device = device;
                return c;
            }
            // "The NVIDIA GPU X (PCI ID: …) installed in this system is not supported": driver trouble.
            if rest.contains("(PCI ID") {
                let mut c = Classification::new(Class::GpuDriverError, m);
                c.device = device;
                return c;
            }
        }
        if lower.contains("nvlink") && has_failure_word(&lower) {
            let mut c = Classification::new(Class::NvlinkError, m);
            c.device = device;
            return c;
        }
        if has_failure_word(&lower) || lower.contains("not supported by") || lower.contains("gsp timeout") {
            let mut c = Classification::new(Class::GpuDriverError, m);
            c.device = device;
            return c;
        }
        return Classification::none(m);
    }

    // NICs.
    if lower.contains("netdev watchdog")
        || (lower.contains("transmit queue") && lower.contains("timed out"))
        || lower.contains("tx timeout")
    {
        let mut c = Classification::new(Class::NetdevWatchdog, m);
        c.nic = parse_nic(m);
        c.device = first_pci(m);
        return c;
    }
    let link_down = any(
        &lower,
        &[
            "link is down",
            "link down",
            "link status definitely down",
            "carrier lost",
            "changed to down",
            "port state changed to down",
            "lost carrier",
            "without any active interface",
        ],
    );
    let link_up = any(
        &lower,
        &[
            "link is up",
            "link up",
            "link active",
            "link status definitely up",
            "link status up",
            "link becomes ready",
            "changed to active",
            "gained carrier",
        ],
    );
    // Only for lines about a NIC: `ata1: SATA link down` is a disk port, not the network.
    if (link_down || link_up) && (parse_nic(m).is_some() || nic_driver_line(m)) {
        let mut c = Classification::new(if link_down { Class::NicLinkDown } else { Class::NicLinkUp }, m);
        c.nic = parse_nic(m);
        c.device = first_pci(m);
        return c;
    }
    if nic_driver_line(m) && has_failure_word(&lower) && !lower.contains("port module event") {
        let mut c = Classification::new(Class::NicDriverError, m);
        c.nic = parse_nic(m).filter(|n| !NIC_DRIVERS.contains(&n.as_str()));
        c.device = first_pci(m);
        return c;
    }

    // Host memory and CPU.
    if lower.contains("edac") {
        let words: Vec<&str> = m.split_whitespace().collect();
        let count_of = |tag: &str| words.windows(2).any(|w| w[1] == tag && w[0].bytes().all(|b| b.is_ascii_digit()));
        if count_of("UE") || lower.contains("uncorrected error") || lower.contains("uncorrectable error") {
            return Classification::new(Class::EdacUe, m);
        }
        if count_of("CE") || lower.contains("corrected error") || lower.contains("correctable error") {
            return Classification::new(Class::EdacCe, m);
        }
    }
    if lower.contains("[hardware error]")
        || any(
            &lower,
            &[
                "machine check event",
                "machine check exception",
                "machine check:",
                "machine check from",
                "machine check error",
            ],
        )
        || lower.contains("mce memory error")
        || lower.contains("handling mce")
        || (lower.contains("mc") && lower.contains("_status["))
    {
        return Classification::new(Class::Mce, m);
    }
    // A cgroup (job, container) that hit its own memory limit: the kernel names the memcg in the kill
    // line or its summary (`constraint=CONSTRAINT_MEMCG`, `oom_memcg=`). It concerns that job, not the
    // node; a global OOM (`Out of memory: Killed`, `global_oom`) is the node's.
    if lower.contains("memory cgroup out of memory")
        || (lower.contains("oom-kill") && (lower.contains("constraint_memcg") || lower.contains("oom_memcg=")))
    {
        let mut c = Classification::new(Class::CgroupOomKill, m);
        c.pid = parse_pid(m);
        return c;
    }
    if lower.contains("oom-kill")
        || lower.contains("out of memory: kill")
        || lower.contains("oom_reaper")
        || lower.contains("invoked oom-killer")
    {
        let mut c = Classification::new(Class::OomKill, m);
        c.pid = parse_pid(m);
        return c;
    }
    if (lower.contains("blocked for more than") && lower.contains("task")) || lower.contains("hung_task") {
        let mut c = Classification::new(Class::HungTask, m);
        // `INFO: task python:1234 blocked for more than 120 seconds.`
        if let Some(pos) = m.find("task ") {
            let tok = m[pos + 5..].split_whitespace().next().unwrap_or("");
            c.pid = tok.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        return c;
    }
    if any(
        &lower,
        &[
            "i/o error",
            "medium error",
            "critical target error",
            "blk_update_request",
            "buffer i/o error",
            "print_req_error",
            "failed result:",
        ],
    ) || (lower.contains("ext4-fs error") || (lower.contains("xfs") && lower.contains("error")))
        || (lower.starts_with("nvme nvme")
            && any(&lower, &["timeout", "controller is down", "reset", "failed", "removing"]))
    {
        let mut c = Classification::new(Class::IoError, m);
        c.disk = parse_disk(m);
        return c;
    }

    Classification::none(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, class: Class) -> Classification {
        let c = classify(line);
        assert_eq!(c.class, class, "{line:?} → {c:?}");
        c
    }

    #[test]
    fn prefixes_of_every_kind_are_stripped() {
        for (line, want) in [
            ("[  123.456] NVRM: hi", "NVRM: hi"),
            ("[Fri Aug 30 11:43:09 2024] NVRM: hi", "NVRM: hi"),
            ("6,1234,5678,-;NVRM: hi", "NVRM: hi"),
            ("<4>[   1.0] NVRM: hi", "NVRM: hi"),
            ("2024-11-15T12:02:03,470068+00:00 NVRM: hi", "NVRM: hi"),
            ("kern  :warn  : 2025-01-21T04:41:44,283575+00:00 NVRM: hi", "NVRM: hi"),
            ("Feb 23 03:28:16 host kernel: NVRM: hi", "NVRM: hi"),
            ("Dec  2 11:38:46 worker4 kernel: [  218.250668] NVRM: hi", "NVRM: hi"),
            ("Mon Jul 28 10:19:15 2025 kern.crit kernel: [ 7013.909286] eth0: hi", "eth0: hi"),
            ("[  +0.000844] nvidia x", "nvidia x"),
            ("kernel: [680111.646286] NVRM: hi", "NVRM: hi"),
        ] {
            assert_eq!(strip_prefixes(line), want, "{line}");
        }
        // A bracket that is not a time stays.
        assert_eq!(strip_prefixes("[Hardware Error]: x"), "[Hardware Error]: x");
    }

    #[test]
    fn xid_lines_give_code_device_pid_and_cause() {
        let c = check(
            "[Fri Aug 30 11:43:14 2024] NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008",
            Class::Xid,
        );
        assert_eq!(c.xid, Some(109));
        assert_eq!(c.device.as_deref(), Some("0000:cb:00"));
        assert_eq!(c.pid, Some(1797828));
        let c = check(
            "kernel: NVRM: Xid (PCI:0000:ed:00): 45, pid=1818992, name=python3, Ch 0000000c caused by previous Xid 145",
            Class::Xid,
        );
        assert_eq!((c.xid, c.caused_by_xid), (Some(45), Some(145)));
        let c =
            check("NVRM: Xid (PCI:0000:13:00 GPU-I:05): 31, pid='<unknown>', name=<unknown>, Ch 00000008", Class::Xid);
        assert_eq!(c.device.as_deref(), Some("0000:13:00"));
        assert_eq!(c.pid, None);
        let c = check("NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus", Class::Xid);
        assert_eq!(c.severity, Severity::Critical);
    }

    #[test]
    fn sxid_is_nvswitch() {
        let c = check(
            "nvidia-nvswitch3: SXid (PCI:0000:86:00.0): 12028, Non-fatal, Link 28 egress non-posted PRIV error",
            Class::NvswitchSxid,
        );
        assert_eq!(c.sxid, Some(12028));
        assert_eq!(c.device.as_deref(), Some("0000:86:00"));
        assert_eq!(c.severity, Severity::Warning);
        let c = check(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, Link 30 sourcetrack TCEN0 crumbstore ECC DBE Error",
            Class::NvswitchSxid,
        );
        assert_eq!(c.severity, Severity::Critical);
    }

    #[test]
    fn fallen_off_the_bus_without_xid() {
        let c = check("[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0", Class::GpuFallenOffBus);
        assert_eq!(c.device.as_deref(), Some("0000:b3:00"));
        check("               NVRM: fallen off the bus and is not responding to commands.", Class::GpuFallenOffBus);
        check("NVRM: (PCI ID: 10de:2330) installed in this system has", Class::None);
        check("NVRM: The NVIDIA GPU 0000:01:00.0 (PCI ID: 10de:1eb8)", Class::GpuDriverError);
    }

    #[test]
    fn nic_lines_name_the_nic() {
        let c = check(
            "[ 4444.035309] bond0: (slave enp83s0f0np0): link status definitely down, disabling slave",
            Class::NicLinkDown,
        );
        assert_eq!(c.nic.as_deref(), Some("enp83s0f0np0"));
        let c = check("[ 4443.974372] mlx5_core 0000:53:00.0 mlx5_3: Port: 1 Link DOWN", Class::NicLinkDown);
        assert_eq!(c.nic.as_deref(), Some("mlx5_3"));
        let c = check("mlx5_core 0000:01:00.1 eth1: Link up", Class::NicLinkUp);
        assert_eq!(c.nic.as_deref(), Some("eth1"));
        let c = check(
            "ib_mlx5_log.c:143  Transport retry count exceeded on mlx5_0:1/IB (synd 0x15 vend 0x81 hw_synd 0/0)",
            Class::IbCompletionError,
        );
        assert_eq!(c.nic.as_deref(), Some("mlx5_0"));
        check("[   11.097374] mlx5_core 0004:01:00.0: Port module event: module 0, Cable plugged", Class::None);
        check(
            "mlx5_core 0000:3b:00.0: mlx5_health_check_fatal_sensors:  health compromised - reached miss count",
            Class::NicDriverError,
        );
    }

    #[test]
    fn host_lines() {
        let c = check("[ 1234.5] Out of memory: Killed process 1440763 (perl) total-vm:87033376kB", Class::OomKill);
        assert_eq!(c.pid, Some(1440763));
        let c = check("[ 2000.1] INFO: task python3:4242 blocked for more than 120 seconds.", Class::HungTask);
        assert_eq!(c.pid, Some(4242));
        let c =
            check("[ 99.1] blk_update_request: I/O error, dev nvme0n1, sector 12345 op 0x1:(WRITE)", Class::IoError);
        assert_eq!(c.disk.as_deref(), Some("nvme0n1"));
        let c = check("[ 99.1] Buffer I/O error on dev sda1, logical block 0, async page read", Class::IoError);
        assert_eq!(c.disk.as_deref(), Some("sda"));
        let c = check(
            "EXT4-fs error (device nvme1n1p2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
            Class::IoError,
        );
        assert_eq!(c.disk.as_deref(), Some("nvme1n1"));
        check("EDAC MC0: 1 CE memory read error on CPU_SrcID#0", Class::EdacCe);
        check("EDAC MC0: 1 UE memory read error on CPU_SrcID#0", Class::EdacUe);
        check("mce: [Hardware Error]: Machine check events logged", Class::Mce);
        check("pcieport 0000:00:01.0: DPC: containment event, status:0x1f01 source:0x0000", Class::PcieAerUncorrected);
    }

    #[test]
    fn benign_lines_are_none() {
        for l in [
            "[Fri Aug  9 13:32:56 2024] NVRM: GPU Board Serial Number: 1652923018111",
            "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
            "Feb 14 05:03:41 host kernel: workqueue: ib_cache_event_task [ib_core] hogged CPU for >10000us 4 times",
            "",
            "   ",
            "[  0.000000] Linux version 6.5.0",
        ] {
            check(l, Class::None);
        }
    }

    #[test]
    fn json_output() {
        let c = classify("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.");
        assert_eq!(to_json(&c), r#"{"class":"xid","xid":79,"device":"0000:3b:00","severity":"critical"}"#);
        assert_eq!(to_json(&classify("hello")), r#"{"class":"none"}"#);
    }

    #[test]
    fn odd_bytes_do_not_panic() {
        for l in [
            "[",
            "]",
            "[ ]",
            "Xid (",
            "Xid (PCI:",
            "SXid (",
            "1,2,3;",
            "<>",
            "фев 12 00:48:02 ядро:",
            "0000:",
            "task :",
            "slave ",
        ] {
            let _ = classify(l);
        }
    }
}

#[cfg(test)]
mod more_formats {
    //! Lines in the formats the drivers print, beyond the sample file.
    use super::*;

    #[test]
    fn real_world_shapes() {
        for (line, class, nic) in [
            (
                "mlx5_core 0000:0c:00.0: mlx5_cmd_out_err:838:(pid 1234): CREATE_MKEY(0x200) op_mod(0x0) failed, status bad parameter(0x3)",
                Class::NicDriverError,
                None,
            ),
            ("mlx5_core 0000:86:00.0: poll_health:822:(pid 0): Fatal error 1 detected", Class::NicDriverError, None),
            (
                "e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None",
                Class::NicLinkUp,
                Some("eno1"),
            ),
            ("IPv6: ADDRCONF(NETDEV_CHANGE): ens1f0: link becomes ready", Class::NicLinkUp, Some("ens1f0")),
            ("bond0: (slave ens1f1): link status up again after 0 ms", Class::NicLinkUp, Some("ens1f1")),
            ("bond0: now running without any active interface!", Class::NicLinkDown, Some("bond0")),
            ("mlx5_core 0000:3b:00.0 enp59s0f0np0: TX timeout detected", Class::NetdevWatchdog, Some("enp59s0f0np0")),
            ("NETDEV WATCHDOG: enp1s0 (r8169): transmit queue 0 timed out", Class::NetdevWatchdog, Some("enp1s0")),
            ("ata1: SATA link down (SStatus 0 SControl 300)", Class::None, None),
            ("pcieport 0000:00:01.0: pciehp: Slot(1): Link Up", Class::None, None),
            ("pcieport 0000:00:01.0: pciehp: Slot(1): Link Down", Class::PcieAerUncorrected, None),
            (
                "nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)",
                Class::PcieAerUncorrected,
                None,
            ),
            (
                "pcieport 0000:00:01.1: AER: Multiple Corrected error received: 0000:00:01.1",
                Class::PcieAerCorrected,
                None,
            ),
            ("[    0.393919] mce: CPU0: Thermal monitoring enabled (TM1)", Class::None, None),
            ("MCE: In-kernel MCE decoding enabled.", Class::None, None),
            ("{2}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0", Class::Mce, None),
            ("Memory cgroup out of memory: Killed process 2345 (python) total-vm:1kB", Class::CgroupOomKill, None),
            (
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/slurm/uid_0/job_77,task_memcg=/slurm/uid_0/job_77/step_0,task=python,pid=4242,uid=0",
                Class::CgroupOomKill,
                None,
            ),
            ("[ 1234.5] Out of memory: Killed process 1440763 (perl) total-vm:87033376kB", Class::OomKill, None),
            ("INFO: task kworker/u256:1:1234 blocked for more than 122 seconds.", Class::HungTask, None),
            ("nvme nvme0: I/O 512 QID 7 timeout, aborting", Class::IoError, None),
            ("sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_SENSE", Class::IoError, None),
            (
                "XFS (nvme0n1p1): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x1 len 8 error 5",
                Class::IoError,
                None,
            ),
            ("NCCL WARN Call to ibv_modify_qp failed with error Connection timed out", Class::NcclError, None),
            (
                "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled system error",
                Class::NcclError,
                None,
            ),
            (
                "[Rank 3] Timeout at NCCL work: 12345, last enqueued NCCL work: 12345, last completed NCCL work: 12344.",
                Class::NcclTimeout,
                None,
            ),
            ("NVRM: API mismatch: the client has the version 535.104.05, but", Class::GpuDriverError, None),
            ("NVRM: GPU at PCI:0000:3b:00: GPU-5c7c4a3e-1111-2222-3333-444455556666", Class::None, None),
            ("nvidia-nvlink: Unregistered Nvlink Core, major device number 511", Class::None, None),
            (
                "[ERROR] detected NVSwitch fatal error 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 5 port 32",
                Class::NvswitchSxid,
                None,
            ),
            (
                "NVRM: Xid (PCI:0000:b7:00): 74, pid=12345, name=python, NVLink: fatal error detected on link 3(0x0, 0x0)",
                Class::Xid,
                None,
            ),
        ] {
            let c = classify(line);
            assert_eq!(c.class, class, "{line}: {c:?}");
            if let Some(n) = nic {
                assert_eq!(c.nic.as_deref(), Some(n), "{line}");
            }
        }
        assert_eq!(classify("nvme nvme0: I/O 512 QID 7 timeout, aborting").disk.as_deref(), Some("nvme0"));
        assert_eq!(classify("sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK").disk.as_deref(), Some("sda"));
        assert_eq!(classify("XFS (nvme0n1p1): metadata I/O error").disk.as_deref(), Some("nvme0n1"));
        assert_eq!(classify("mlx5_core 0000:0c:00.0: mlx5_cmd_out_err:838:(pid 1234): failed").nic, None);
    }
}
