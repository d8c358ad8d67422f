//! The disk spool: reports the analyzer could not take yet, one file per report named by its `seq`,
//! replayed oldest first. Bounded in bytes (the oldest are dropped and counted), and it survives agent
//! restarts. Also the persisted report sequence number (`seq` in the spool directory).
//!
//! Layout of the spool directory:
//! - `seq`: the next sequence number, decimal (overwritten in place, see [`SeqFile`]).
//! - `seq.hwm`: the reserved high-water mark and the boot id it was written in.
//! - `reports/00000000000000000042.json`: a spooled report (the exact bytes that will be posted).
//!
//! Reports (and `seq.hwm`) are written to a `.tmp` name and renamed, so a crash leaves either the whole
//! file or none.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sequence file {path} holds {content:?}, not a number")]
    BadSeq { path: PathBuf, content: String },
}

fn io_err(path: &Path, source: io::Error) -> SpoolError {
    SpoolError::Io { path: path.to_path_buf(), source }
}

/// Spooled reports on disk, in `seq` order.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// seq → file size.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
}

impl Spool {
    /// Open (creating it if needed) the spool under `spool_dir/reports`, and index what a previous run
    /// left there. Half-written `.tmp` files are removed; files that are not ours are left alone.
    pub fn open(spool_dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = spool_dir.join("reports");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            if is_disk_full(&e) {
                // A full disk must not stop the agent: it starts with an empty spool, and each
                // report tries the disk again (kept in memory meanwhile).
                tracing::warn!(path = %dir.display(), error = %e, "spool directory cannot be created (disk full); starting without it");
                return Ok(Spool { dir, max_bytes, entries: BTreeMap::new(), bytes: 0 });
            }
            return Err(io_err(&dir, e));
        }
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for e in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let Ok(e) = e else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some(seq) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            entries.insert(seq, size);
            bytes += size;
        }
        Ok(Spool { dir, max_bytes, entries, bytes })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Store one report. Returns how many reports were dropped to make room (the oldest first; a report
    /// larger than the whole spool is itself dropped). The room is made both for `max_bytes` and for
    /// a full disk: when the filesystem answers "no space left", the oldest spooled reports are
    /// deleted one by one until this one fits, so the newest are kept and every loss is counted.
    pub fn push(&mut self, seq: u64, body: &[u8]) -> Result<u64, SpoolError> {
        let size = body.len() as u64;
        if size > self.max_bytes {
            return Ok(1);
        }
        let mut dropped = 0;
        while self.bytes + size > self.max_bytes {
            let Some(oldest) = self.oldest() else { break };
            self.remove(oldest)?;
            dropped += 1;
        }
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        }
        loop {
            match write_new(&tmp, &path, body) {
                Ok(()) => break,
                Err(e) if is_disk_full(&e) => {
                    let _ = std::fs::remove_file(&tmp);
                    // Never drop the report being stored (a replay of the same seq).
                    match self.oldest().filter(|&o| o != seq) {
                        Some(oldest) => {
                            self.remove(oldest)?;
                            dropped += 1;
                        }
                        None => return Err(io_err(&tmp, e)),
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_err(&tmp, e));
                }
            }
        }
        if let Some(old) = self.entries.insert(seq, size) {
            self.bytes -= old;
        }
        self.bytes += size;
        Ok(dropped)
    }

    /// The oldest spooled report's seq.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    /// The newest spooled report's seq.
    pub fn newest(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }

    /// The bytes of a spooled report.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let p = self.path(seq);
        std::fs::read(&p).map_err(|e| io_err(&p, e))
    }

    /// Forget a report (sent, refused, or unreadable).
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        if let Some(size) = self.entries.remove(&seq) {
            self.bytes -= size;
        }
        let p = self.path(seq);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Write `body` to `tmp` and rename it to `path`, so a crash leaves the whole file or none.
fn write_new(tmp: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    std::fs::write(tmp, body)?;
    std::fs::rename(tmp, path)
}

/// "No space left on device" or "disk quota exceeded": room can be made by deleting old reports.
fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// How many sequence numbers one durable reservation covers. `seq.hwm` (written and fsynced) is
/// rewritten once per this many reports instead of once per report; a power loss skips at most this
/// many numbers, never reuses one. 1000 reports is 17 minutes at a 1 s interval.
pub const SEQ_BLOCK: u64 = 1000;
/// Changes at every boot: tells whether the page cache (and so `seq`, written without fsync) survived
/// since the last agent ran.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The persisted report sequence number: `take_next()` hands out one number per report, so numbering
/// continues across restarts and never goes backwards, even after a power loss.
///
/// Two files: `seq` holds the exact next number, overwritten in place for each report (one `pwrite`,
/// no rename, no fsync: what an agent killed by SIGKILL wrote is still in the page cache for the next
/// one); `seq.hwm` holds a reserved high-water mark with the boot id, fsynced whenever the numbers
/// handed out reach it (every [`SEQ_BLOCK`]) and on a clean stop. After a reboot the `seq` file may
/// be stale, so numbering resumes at the high-water mark.
#[derive(Debug)]
pub struct SeqFile {
    path: Option<PathBuf>,
    next: u64,
    /// `seq`, open for in-place writes.
    file: Option<std::fs::File>,
    /// First number not covered by the durable `seq.hwm`.
    reserved: u64,
    boot_id: Option<String>,
    /// `seq` and `seq.hwm` are written (false while the disk was full).
    on_disk: bool,
}

impl SeqFile {
    /// Load `spool_dir/seq`. The next number is also kept above anything still in the spool, so a lost
    /// or stale seq file can never make two reports share a number. A missing file starts at 1.
    pub fn open(spool_dir: &Path, spool: Option<&Spool>) -> Result<SeqFile, SpoolError> {
        let boot = std::fs::read_to_string(BOOT_ID).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Self::open_in_boot(spool_dir, spool, boot)
    }

    fn open_in_boot(spool_dir: &Path, spool: Option<&Spool>, boot: Option<String>) -> Result<SeqFile, SpoolError> {
        let path = spool_dir.join("seq");
        let stored = match std::fs::read_to_string(&path) {
            // An empty file is what a power loss between write and rename can leave: start over
            // rather than refuse to run (the spool, if any, still keeps numbers increasing).
            Ok(s) if s.trim().is_empty() => {
                tracing::warn!(path = %path.display(), "sequence file is empty; numbering restarts after the spool");
                1
            }
            Ok(s) => s.trim().parse::<u64>().map_err(|_| SpoolError::BadSeq { path: path.clone(), content: s })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io_err(&path, e)),
        };
        let hwm_path = spool_dir.join("seq.hwm");
        let hwm = match std::fs::read_to_string(&hwm_path) {
            Ok(s) => {
                let mut it = s.split_whitespace();
                let h = it.next().and_then(|v| v.parse::<u64>().ok());
                if h.is_none() {
                    tracing::warn!(path = %hwm_path.display(), "sequence high-water mark unreadable; ignored");
                }
                h.map(|h| (h, it.next().map(str::to_string)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&hwm_path, e)),
        };
        let resume = match hwm {
            // Same boot: `seq` is exact (the page cache outlives a killed agent).
            Some((_, Some(b))) if boot.as_deref() == Some(b.as_str()) => stored,
            // Another boot (or unknown): `seq` may be stale; the reservation is not.
            Some((h, _)) => stored.max(h),
            None => stored,
        };
        let after_spool = spool.and_then(Spool::newest).map(|s| s + 1).unwrap_or(1);
        let next = resume.max(after_spool).max(1);
        let mut q = SeqFile { path: Some(path), next, file: None, reserved: next, boot_id: boot, on_disk: false };
        match q.persist() {
            Ok(()) => {}
            // A full disk must not stop the agent (the spool's own full-disk rule drops old reports,
            // not new ones): numbering continues in memory and the disk is tried again per report.
            Err(SpoolError::Io { path, source }) if is_disk_full(&source) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %source,
                    "cannot persist the report sequence (disk full); numbering continues in memory and the disk is retried"
                );
            }
            Err(e) => return Err(e),
        }
        Ok(q)
    }

    /// Writes `seq` and reserves the next block on disk; sets `on_disk` once both worked.
    fn persist(&mut self) -> Result<(), SpoolError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let text = format!("{}\n", self.next);
        write_at_start(&file, text.as_bytes()).map_err(|e| io_err(&path, e))?;
        file.set_len(text.len() as u64).map_err(|e| io_err(&path, e))?;
        self.file = Some(file);
        self.reserve(self.next.saturating_add(SEQ_BLOCK))?;
        self.on_disk = true;
        Ok(())
    }

    /// Whether the sequence is persisted (false after a full disk at start, until it has room).
    pub fn on_disk(&self) -> bool {
        self.on_disk || self.path.is_none()
    }

    /// A sequence that is never written to disk (`--once` must not disturb a running agent's numbering).
    pub fn read_only(spool_dir: &Path) -> SeqFile {
        let next = std::fs::read_to_string(spool_dir.join("seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
        SeqFile { path: None, next, file: None, reserved: u64::MAX, boot_id: None, on_disk: false }
    }

    /// Persist `upto` as the high-water mark (write, fsync, rename, fsync the directory) before any
    /// number at or above the old one is handed out.
    fn reserve(&mut self, upto: u64) -> Result<(), SpoolError> {
        let Some(path) = &self.path else { return Ok(()) };
        let hwm = path.with_extension("hwm");
        let tmp = path.with_extension("hwm.tmp");
        let text = format!("{upto} {}\n", self.boot_id.as_deref().unwrap_or("-"));
        let write = || -> io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &hwm)?;
            if let Some(dir) = hwm.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| io_err(&hwm, e))?;
        self.reserved = upto;
        Ok(())
    }

    /// The number for the next report; the one after it is written to `seq` before this returns.
    /// While the disk is full it still hands out numbers (from memory) and tries the disk again.
    pub fn take_next(&mut self) -> Result<u64, SpoolError> {
        if self.path.is_some() && !self.on_disk {
            if self.persist().is_ok() {
                tracing::info!("report sequence persisted again");
            } else {
                let seq = self.next;
                self.next += 1;
                return Ok(seq);
            }
        }
        if self.path.is_some() && self.next >= self.reserved {
            self.reserve(self.next.saturating_add(SEQ_BLOCK))?;
        }
        let seq = self.next;
        self.next += 1;
        if let (Some(path), Some(f)) = (&self.path, &self.file) {
            write_at_start(f, format!("{}\n", self.next).as_bytes()).map_err(|e| io_err(path, e))?;
        }
        Ok(seq)
    }

    pub fn peek(&self) -> u64 {
        self.next
    }
}

impl Drop for SeqFile {
    /// A clean stop makes `seq` durable and moves the high-water mark down to it, so the next start,
    /// even after a reboot, continues without a gap.
    fn drop(&mut self) {
        let (Some(f), Some(path)) = (&self.file, &self.path) else { return };
        if let Err(e) = f.sync_all() {
            tracing::warn!(path = %path.display(), error = %e, "cannot persist the report sequence on exit");
            return;
        }
        if let Err(e) = self.reserve(self.next) {
            tracing::warn!(error = %e, "cannot persist the report sequence on exit");
        }
    }
}

/// Overwrite the start of `f` with `bytes` (numbers only grow, so what follows is never left over).
fn write_at_start(f: &std::fs::File, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_come_back_oldest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for seq in [3, 1, 2] {
            s.push(seq, format!("{{\"seq\":{seq}}}").as_bytes()).unwrap();
        }
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.oldest(), Some(1));
        assert_eq!(s.read(1).unwrap(), b"{\"seq\":1}");
        s.remove(1).unwrap();
        assert_eq!(s.oldest(), Some(2));
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 25).unwrap();
        assert_eq!(s.push(1, &[b'x'; 10]).unwrap(), 0);
        assert_eq!(s.push(2, &[b'x'; 10]).unwrap(), 0);
        assert_eq!(s.push(3, &[b'x'; 10]).unwrap(), 1);
        assert_eq!(s.oldest(), Some(2));
        assert_eq!(s.bytes(), 20);
        assert_eq!(s.push(4, &[b'x'; 100]).unwrap(), 1, "a report bigger than the spool is dropped itself");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn half_written_files_are_cleaned_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("reports")).unwrap();
        std::fs::write(dir.path().join("reports/00000000000000000007.tmp"), b"{").unwrap();
        let s = Spool::open(dir.path(), 1000).unwrap();
        assert!(s.is_empty());
        assert!(!dir.path().join("reports/00000000000000000007.tmp").exists());
    }

    #[test]
    fn seq_continues_across_restarts_and_stays_above_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = SeqFile::open(dir.path(), None).unwrap();
        assert_eq!(q.take_next().unwrap(), 1);
        assert_eq!(q.take_next().unwrap(), 2);
        let mut q = SeqFile::open(dir.path(), None).unwrap();
        assert_eq!(q.take_next().unwrap(), 3);
        let mut s = Spool::open(dir.path(), 1000).unwrap();
        s.push(10, b"{}").unwrap();
        let mut q = SeqFile::open(dir.path(), Some(&s)).unwrap();
        assert_eq!(q.take_next().unwrap(), 11);
        let ro = SeqFile::read_only(dir.path());
        assert_eq!(ro.peek(), 12);
    }

    #[test]
    fn seq_survives_a_kill_exactly_and_a_reboot_without_going_back() {
        let dir = tempfile::tempdir().unwrap();
        let boot = |b: &str| Some(b.to_string());
        let hwm = || std::fs::read_to_string(dir.path().join("seq.hwm")).unwrap();
        let mut q = SeqFile::open_in_boot(dir.path(), None, boot("b1")).unwrap();
        assert_eq!(hwm(), format!("{} b1\n", 1 + SEQ_BLOCK), "a block is reserved before the first number");
        for want in 1..=5 {
            assert_eq!(q.take_next().unwrap(), want);
        }
        // Killed (no Drop): the same boot continues exactly from `seq`.
        std::mem::forget(q);
        let mut q = SeqFile::open_in_boot(dir.path(), None, boot("b1")).unwrap();
        assert_eq!(q.take_next().unwrap(), 6);
        // Crossing the reservation writes a new one first.
        for _ in 0..SEQ_BLOCK {
            q.take_next().unwrap();
        }
        assert_eq!(q.peek(), 7 + SEQ_BLOCK);
        assert_eq!(hwm(), format!("{} b1\n", 6 + 2 * SEQ_BLOCK));
        // A power loss lost the page cache: `seq` on disk is old. Another boot resumes at the
        // reservation, above every number handed out.
        std::mem::forget(q);
        std::fs::write(dir.path().join("seq"), "3\n").unwrap();
        let mut q = SeqFile::open_in_boot(dir.path(), None, boot("b2")).unwrap();
        let after_reboot = q.take_next().unwrap();
        assert_eq!(after_reboot, 6 + 2 * SEQ_BLOCK);
        // A clean stop lowers the mark to the exact next number: no gap even across a reboot.
        drop(q);
        assert_eq!(hwm(), format!("{} b2\n", after_reboot + 1));
        let mut q = SeqFile::open_in_boot(dir.path(), None, boot("b3")).unwrap();
        assert_eq!(q.take_next().unwrap(), after_reboot + 1);
        drop(q);
        assert_eq!(SeqFile::read_only(dir.path()).peek(), after_reboot + 2);
    }

    #[test]
    fn a_corrupt_seq_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seq"), "banana").unwrap();
        let e = SeqFile::open(dir.path(), None).unwrap_err();
        assert!(e.to_string().contains("banana"), "{e}");
    }
}
