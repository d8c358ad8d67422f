//! Field extraction: PCI addresses, XID codes, pids, NIC and disk names from a message.

use super::*;

pub(super) fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Every PCI address in `s` (`0000:3b:00.0`, `00000000:3B:00.0`, `PCI:0000:cb:00`), as `pci_key`s,
/// with their byte offsets.
pub(super) fn pci_addresses(s: &str) -> Vec<(usize, String)> {
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

pub(super) fn first_pci(s: &str) -> Option<String> {
    pci_addresses(s).into_iter().next().map(|(_, k)| k)
}

/// The number that starts `s` (after spaces).
pub(super) fn leading_number(s: &str) -> Option<u32> {
    let t = s.trim_start();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    t[..end].parse().ok()
}

/// The number after the first `key` in `s`.
pub(super) fn number_after(s: &str, key: &str) -> Option<u32> {
    let pos = s.find(key)?;
    leading_number(&s[pos + key.len()..])
}

/// `NVRM: Xid (PCI:0000:3b:00): 79, pid=…` → (code, device). Also `Xid 79` without the device. `SXid`
/// is not an XID.
pub(super) fn parse_xid(s: &str) -> Option<(u32, Option<String>)> {
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
pub(super) fn parse_pid(s: &str) -> Option<u32> {
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
pub(super) fn looks_like_nic(t: &str) -> bool {
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
pub(super) fn parse_nic(s: &str) -> Option<String> {
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
pub(super) fn disk_base(d: &str) -> String {
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

pub(super) fn is_dev_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `dev sda,`, `on dev nvme0n1p1`, `(device sdb1)`, `XFS (dm-0)`, `nvme nvme0:`, `sd 2:0:0:0: [sdb]`.
pub(super) fn parse_disk(s: &str) -> Option<String> {
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
