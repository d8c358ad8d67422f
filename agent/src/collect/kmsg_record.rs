//! `/dev/kmsg` records and where the agent left off reading them.
//!
//! A record is `prio,seq,usec,flags[,…];message` followed by dictionary lines that start with a space.
//! `seq` numbers records since boot; `usec` is the kernel's monotonic clock at the time of logging.
//! The watcher reads the ring buffer from its start, so a fault logged before the agent started (an
//! XID 79 at boot) is not lost, and skips records at or below the last sequence number it handled
//! during this boot (`/proc/sys/kernel/random/boot_id`), persisted in the agent's state directory, so
//! an agent restart sends nothing twice. An event's time is the record's own: boot time + `usec`.

use std::path::{Path, PathBuf};

/// One parsed record header and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    /// Kernel monotonic time of the record, microseconds since boot.
    pub usec: u64,
    pub message: &'a str,
}

/// Parse the first line of a record; `None` for dictionary lines and anything else.
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    let (head, message) = line.split_once(';')?;
    let mut f = head.split(',');
    let prio = f.next()?;
    let seq = f.next()?;
    let usec = f.next()?;
    if prio.is_empty() || !prio.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Record { seq: seq.parse().ok()?, usec: usec.parse().ok()?, message: message.trim_end_matches(['\n', '\r']) })
}

/// Wall-clock time of boot as the kernel log counts it, Unix ms: now less `CLOCK_MONOTONIC` (the
/// printk clock does not advance during suspend, and neither does this one).
pub fn boot_wall_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono_ms = ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000;
    crate::collect::now_ms() - mono_ms
}

/// A record's wall-clock time, Unix ms, never later than `now_ms`.
pub fn record_ms(boot_ms: i64, usec: u64, now_ms: i64) -> i64 {
    boot_ms.saturating_add((usec / 1000) as i64).min(now_ms)
}

/// The last record handled, per boot, kept in `<state>/kmsg-seq` as `<boot id> <seq>`.
#[derive(Debug)]
pub struct Cursor {
    path: Option<PathBuf>,
    boot_id: String,
    last: Option<u64>,
    saved: Option<u64>,
}

impl Cursor {
    /// Load the cursor of this boot from `state_dir` (none: nothing is remembered across restarts).
    /// `boot_id_file` is `/proc/sys/kernel/random/boot_id`.
    pub fn load(state_dir: Option<&Path>, boot_id_file: &Path) -> Cursor {
        let boot_id = std::fs::read_to_string(boot_id_file).map(|s| s.trim().to_string()).unwrap_or_default();
        let path = state_dir.map(|d| d.join("kmsg-seq"));
        let last = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|text| {
            let (id, seq) = text.trim().split_once(' ')?;
            (id == boot_id && !boot_id.is_empty()).then(|| seq.trim().parse().ok()).flatten()
        });
        Cursor { path, boot_id, last, saved: last }
    }

    /// True when `seq` was handled already (this run or an earlier one in the same boot).
    pub fn seen(&self, seq: u64) -> bool {
        self.last.is_some_and(|l| seq <= l)
    }

    pub fn advance(&mut self, seq: u64) {
        self.last = Some(self.last.map_or(seq, |l| l.max(seq)));
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Write the cursor if it moved (temporary file, then rename). Errors are logged once by the
    /// caller; a lost cursor only means records may be sent again after a restart.
    pub fn save(&mut self) -> std::io::Result<()> {
        let (Some(path), Some(last)) = (&self.path, self.last) else { return Ok(()) };
        if self.saved == Some(last) || self.boot_id.is_empty() {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {last}\n", self.boot_id))?;
        std::fs::rename(&tmp, path)?;
        self.saved = Some(last);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_dictionary_lines_do_not() {
        let r = parse_record("4,1843,17712094,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.")
            .unwrap();
        assert_eq!((r.seq, r.usec), (1843, 17_712_094));
        assert!(r.message.starts_with("NVRM: Xid"));
        let r = parse_record("6,7,100,c,caller=T1;eth0: link up\n").unwrap();
        assert_eq!((r.seq, r.message), (7, "eth0: link up"));
        assert_eq!(parse_record(" SUBSYSTEM=pci"), None);
        assert_eq!(parse_record("[  1.0] NVRM: Xid; not a record"), None);
        assert_eq!(parse_record("plain text"), None);
    }

    #[test]
    fn record_time_is_boot_plus_usec_and_never_in_the_future() {
        assert_eq!(record_ms(1_000_000, 2_500_000, 9_999_999), 1_002_500);
        assert_eq!(record_ms(1_000_000, 2_500_000, 1_001_000), 1_001_000);
        let boot = boot_wall_ms();
        assert!(boot <= crate::collect::now_ms() && boot > 0);
    }

    #[test]
    fn the_cursor_survives_a_restart_only_within_one_boot() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot_id");
        std::fs::write(&boot, "aaaa-1\n").unwrap();
        let mut c = Cursor::load(Some(dir.path()), &boot);
        assert!(!c.seen(0));
        c.advance(41);
        c.advance(40);
        c.save().unwrap();
        let c = Cursor::load(Some(dir.path()), &boot);
        assert!(c.seen(41) && !c.seen(42));
        // Another boot: sequence numbers start over, nothing was seen.
        std::fs::write(&boot, "bbbb-2\n").unwrap();
        let c = Cursor::load(Some(dir.path()), &boot);
        assert!(!c.seen(1));
        // No state directory: nothing remembered, nothing written.
        let mut c = Cursor::load(None, &boot);
        c.advance(5);
        c.save().unwrap();
    }
}
