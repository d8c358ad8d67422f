//! Prefix stripping: the record, timestamp, facility and syslog headers a kernel line may come
//! with, so the rules see the driver's message.

/// How far into a line a syslog header may reach before `kernel:`.
pub(super) const MAX_SYSLOG_HEADER: usize = 120;

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
pub(super) fn strip_kmsg_record(s: &str) -> &str {
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
pub(super) fn strip_priority(s: &str) -> &str {
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

pub(super) fn has_clock_time(s: &str) -> bool {
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
pub(super) fn strip_bracket_time(s: &str) -> &str {
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
pub(super) fn strip_iso_time(s: &str) -> &str {
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

pub(super) const FACILITIES: [&str; 20] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "local0",
    "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
pub(super) const LEVELS: [&str; 8] = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];

/// `kern  :warn  : ` (dmesg --decode).
pub(super) fn strip_decode_facility(s: &str) -> &str {
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
pub(super) fn strip_syslog_header(s: &str) -> &str {
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

pub(super) fn find_clock(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(7)).find(|&i| {
        let w = &b[i..i + 8];
        w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b':' && w[5] == b':' && w[7].is_ascii_digit()
    })
}
