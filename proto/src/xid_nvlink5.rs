//! Decoding NVLink5 XIDs 144–150 from the two words the driver prints after the link number:
//! `NVRM: Xid (PCI:0000:01:00): 144, SAW_MVB Nonfatal XC0 i0 Link 0 (0x00000001 0x00000008 …)`.
//! The first word is the interrupt info, matched against the unit patterns of NVIDIA's decode table
//! (`proto/data/xid-nvlink5-decode.csv`); the second is the error status, which selects the row that
//! says whether the error is fatal. Most of these XIDs are non-fatal and need no action.

use std::sync::OnceLock;

/// NVIDIA's NVLink5 decode table, compiled in (provenance: `proto/data/README.md`).
const DECODE_CSV: &str = include_str!("../data/xid-nvlink5-decode.csv");

/// One row of the decode table.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvlink5Row {
    pub xid: u32,
    /// The unit that raised it (`SAW_MVB`, `RLW_REMAP`, `NETIR_LINK_EVT/NETIR_LINK_DOWN`, …).
    pub unit: String,
    /// Interrupt-info bit patterns, most significant bit first, `-` for "any".
    patterns: Vec<String>,
    pub error_status: u32,
    /// NVIDIA's immediate action (`IGNORE`, `RESET_GPU`, `XID_154_EVAL`).
    pub immediate_action: String,
    /// The table's severity words (`Non-fatal`, `Fatal`, `Link Fatal`, …).
    pub severity: String,
    /// `HW`, `SW`, `FW`, `HW/SW`.
    pub hw_sw: String,
}

impl Nvlink5Row {
    /// Fatal unless the table says non-fatal.
    pub fn fatal(&self) -> bool {
        !self.severity.trim().to_ascii_lowercase().starts_with("non")
    }
}

/// What one NVLink5 XID decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvlink5Decode {
    pub unit: String,
    /// True when any matching row is fatal.
    pub fatal: bool,
    pub immediate_action: String,
    pub hw_sw: String,
}

fn table() -> &'static [Nvlink5Row] {
    static TABLE: OnceLock<Vec<Nvlink5Row>> = OnceLock::new();
    TABLE.get_or_init(|| parse(DECODE_CSV))
}

fn hex(s: &str) -> Option<u32> {
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?, 16).ok()
}

fn parse(text: &str) -> Vec<Nvlink5Row> {
    let mut out = Vec::new();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    for rec in rdr.records().flatten() {
        let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
        let (Ok(xid), Some(error_status)) = (get(0).parse::<u32>(), hex(&get(4))) else { continue };
        let patterns = [get(2), get(3)].into_iter().filter(|p| p.len() == 32).collect();
        out.push(Nvlink5Row {
            xid,
            unit: get(1),
            patterns,
            error_status,
            immediate_action: get(5),
            severity: get(7),
            hw_sw: get(9),
        });
    }
    out
}

fn pattern_matches(pattern: &str, word: u32) -> bool {
    pattern.bytes().enumerate().all(|(i, c)| {
        let bit = (word >> (31 - i)) & 1;
        match c {
            b'0' => bit == 0,
            b'1' => bit == 1,
            _ => true,
        }
    })
}

/// Decode XID `xid` (144–150) from its interrupt info and error status. `None` when no row of the
/// table matches (a newer driver's unit or status): the caller falls back to the line's own words.
pub fn decode(xid: u32, intrinfo: u32, status: u32) -> Option<Nvlink5Decode> {
    let units: Vec<&Nvlink5Row> =
        table().iter().filter(|r| r.xid == xid && r.patterns.iter().any(|p| pattern_matches(p, intrinfo))).collect();
    // Status values are exact codes for some units (NETIR_BER_EVENT 0–3) and bits for others.
    let mut rows: Vec<&&Nvlink5Row> = units.iter().filter(|r| r.error_status == status).collect();
    if rows.is_empty() && status != 0 {
        rows = units.iter().filter(|r| r.error_status & status != 0).collect();
    }
    let first = rows.first()?;
    let fatal_row = rows.iter().find(|r| r.fatal());
    let pick = fatal_row.unwrap_or(first);
    Some(Nvlink5Decode {
        unit: pick.unit.clone(),
        fatal: fatal_row.is_some(),
        immediate_action: pick.immediate_action.clone(),
        hw_sw: pick.hw_sw.clone(),
    })
}

/// The interrupt info and error status words of a kernel line: the first two hex numbers inside the
/// parentheses after `Link`.
pub fn words_in(message: &str) -> Option<(u32, u32)> {
    let at = message.find(" Link ")?;
    let rest = &message[at..];
    let open = rest.find('(')?;
    let close = rest[open..].find(')').map(|c| open + c).unwrap_or(rest.len());
    let mut words = rest[open + 1..close].split_whitespace().filter_map(hex);
    Some((words.next()?, words.next()?))
}

/// The driver's own word in the line: `Fatal` → true, `Nonfatal`/`Non-fatal` → false.
pub fn fatal_word(message: &str) -> Option<bool> {
    let lower = message.to_ascii_lowercase();
    let head = lower.split(" link ").next().unwrap_or(&lower);
    let words: Vec<&str> = head.split(|c: char| !c.is_ascii_alphanumeric() && c != '-').collect();
    if words.iter().any(|w| *w == "nonfatal" || *w == "non-fatal") {
        Some(false)
    } else if words.contains(&"fatal") {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xid::{XidClass, classify_event};

    /// Lines from the project's kernel-log samples (gpud test data).
    const SAW_NONFATAL: &str = "NVRM: Xid (PCI:0000:01:00): 144, SAW_MVB Nonfatal XC0 i0 Link 0 (0x00000001 0x00000008 0x00000000 0x00000000 0x00000000 0x00000000)";
    const NETIR_LINK: &str = "NVRM: Xid (PCI:0000:00:00): 149, NETIR_LINK_EVT Fatal XC0 i0 Link 00 (0x026001c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)";
    const NETIR_INT: &str = "NVRM: Xid (PCI:0019:01:00): 149, NETIR Fatal XC0 i0 Link -1 (0x000fe406 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)";

    #[test]
    fn table_loads() {
        assert!(table().len() >= 90, "{}", table().len());
        assert!(table().iter().all(|r| (144..=150).contains(&r.xid)));
    }

    #[test]
    fn words_and_decode_of_real_lines() {
        assert_eq!(words_in(SAW_NONFATAL), Some((0x1, 0x8)));
        let d = decode(144, 0x1, 0x8).unwrap();
        assert_eq!(d.unit, "SAW_MVB");
        assert!(!d.fatal);
        // Status bit 0x2 of the same unit is fatal (RESET_GPU).
        assert!(decode(144, 0x1, 0x2).unwrap().fatal);
        // Several bits set: fatal if any of them is.
        assert!(decode(144, 0x1, 0x8 | 0x10).unwrap().fatal);
        let d = decode(149, 0x026001c6, 0).unwrap();
        assert_eq!(d.unit, "NETIR_LINK_EVT/NETIR_LINK_DOWN");
        let d = decode(149, 0x000fe406, 0).unwrap();
        assert_eq!(d.unit, "NETIR/NETIR_INT");
        assert!(d.fatal);
        assert_eq!(decode(150, 0, 0).map(|d| d.fatal), Some(true));
        assert!(decode(144, 0xffff_ffff, 1).is_none());
        assert_eq!(words_in("NVRM: Xid (PCI:0000:01:00): 144, no words"), None);
    }

    #[test]
    fn the_drivers_own_word() {
        assert_eq!(fatal_word(SAW_NONFATAL), Some(false));
        assert_eq!(fatal_word(NETIR_INT), Some(true));
        assert_eq!(fatal_word("NVRM: Xid (PCI:0000:01:00): 145, RLW"), None);
    }

    #[test]
    fn nonfatal_nvlink5_xids_page_nobody() {
        use crate::FaultClass::NvlinkDown;
        assert_eq!(classify_event(144, SAW_NONFATAL), XidClass::Info);
        assert_eq!(classify_event(149, NETIR_INT), XidClass::Fatal(NvlinkDown));
        assert_eq!(classify_event(149, NETIR_LINK), XidClass::Fatal(NvlinkDown));
        // No words, no word: the code alone.
        assert_eq!(classify_event(145, "Xid 145"), XidClass::Fatal(NvlinkDown));
        // A decode that fails falls back to the driver's word.
        assert_eq!(classify_event(146, "146, TLW Nonfatal XC0 i0 Link 3 (0xffffffff 0x1)"), XidClass::Info);
        assert_eq!(classify_event(79, ""), XidClass::Fatal(crate::FaultClass::GpuLost));
    }
}
