//! Following one log file from its end: new complete lines each call, at most a byte budget per
//! call, across rotation (the path names a new inode: the rest of the old file is read first, then
//! the new one from its start) and truncation (the file got shorter than where we were: start over).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest line kept. A longer one (a tensor printed whole) is cut here and its rest skipped up to
/// the next newline: NCCL and PyTorch error lines are a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One followed file.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
    /// Inside an over-long line whose rest is being skipped.
    skipping: bool,
}

impl Tail {
    /// Start following `path` at its current end (what was written before the agent started is not
    /// read). A file that does not exist yet is followed from its start once it appears.
    pub fn at_end(path: &Path) -> Tail {
        let mut t = Tail { path: path.to_path_buf(), file: None, ino: 0, pos: 0, partial: Vec::new(), skipping: false };
        if let Ok(mut f) = File::open(path)
            && let Ok(meta) = f.metadata()
            && let Ok(end) = f.seek(SeekFrom::End(0))
        {
            t.ino = meta.ino();
            t.pos = end;
            t.file = Some(f);
        }
        t
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what was appended since the last call, at most `budget` bytes, and hand each complete
    /// line to `line`. Returns the bytes read. A read error ends this call (the next one tries again).
    pub fn poll(&mut self, budget: usize, line: &mut dyn FnMut(&str)) -> std::io::Result<usize> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut read = 0;
        if let Some(meta) = &meta {
            if self.file.is_some() && meta.ino() != self.ino {
                // Rotated: finish the old file (still open), then switch to the new one.
                read += self.read_some(budget, line)?;
                if read >= budget {
                    return Ok(read);
                }
                self.flush_partial(line);
                self.file = None;
            }
            if self.file.is_none() {
                self.file = Some(File::open(&self.path)?);
                self.ino = meta.ino();
                self.pos = 0;
                self.partial.clear();
                self.skipping = false;
            } else if meta.len() < self.pos {
                // Truncated in place (`> file`, copytruncate): start over.
                if let Some(f) = &mut self.file {
                    f.seek(SeekFrom::Start(0))?;
                }
                self.pos = 0;
                self.partial.clear();
                self.skipping = false;
            }
        }
        read += self.read_some(budget.saturating_sub(read), line)?;
        Ok(read)
    }

    fn read_some(&mut self, budget: usize, line: &mut dyn FnMut(&str)) -> std::io::Result<usize> {
        let Some(f) = &mut self.file else { return Ok(0) };
        let mut chunk = vec![0u8; budget.min(64 * 1024)];
        let mut total = 0;
        while total < budget {
            let want = (budget - total).min(chunk.len());
            let n = match f.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n;
            self.pos += n as u64;
            for &b in &chunk[..n] {
                if b == b'\n' {
                    if !self.skipping {
                        emit(&self.partial, line);
                    }
                    self.partial.clear();
                    self.skipping = false;
                } else if self.partial.len() < MAX_LINE_BYTES {
                    self.partial.push(b);
                } else if !self.skipping {
                    emit(&self.partial, line);
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
        Ok(total)
    }

    /// The last line of a rotated-away file may have had no newline.
    fn flush_partial(&mut self, line: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() && !self.skipping {
            emit(&self.partial, line);
        }
        self.partial.clear();
        self.skipping = false;
    }
}

fn emit(bytes: &[u8], line: &mut dyn FnMut(&str)) {
    let s = String::from_utf8_lossy(bytes);
    line(s.trim_end_matches('\r'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(t: &mut Tail, budget: usize) -> Vec<String> {
        let mut v = Vec::new();
        t.poll(budget, &mut |l| v.push(l.to_string())).unwrap();
        v
    }

    fn append(p: &Path, s: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn starts_at_the_end_and_returns_only_complete_new_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("job.out");
        append(&p, "old line\n");
        let mut t = Tail::at_end(&p);
        assert!(lines(&mut t, 1 << 20).is_empty());
        append(&p, "one\ntwo\nthr");
        assert_eq!(lines(&mut t, 1 << 20), ["one", "two"]);
        append(&p, "ee\n");
        assert_eq!(lines(&mut t, 1 << 20), ["three"]);
    }

    #[test]
    fn the_budget_bounds_each_poll_and_the_rest_comes_next_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("job.out");
        std::fs::write(&p, "").unwrap();
        let mut t = Tail::at_end(&p);
        append(&p, "aaaa\nbbbb\ncccc\n");
        assert_eq!(lines(&mut t, 7), ["aaaa"]);
        assert_eq!(lines(&mut t, 7), ["bbbb"]);
        assert_eq!(lines(&mut t, 7), ["cccc"]);
        assert!(lines(&mut t, 7).is_empty());
    }

    #[test]
    fn rotation_finishes_the_old_file_then_reads_the_new_from_its_start() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "").unwrap();
        let mut t = Tail::at_end(&p);
        append(&p, "before\n");
        assert_eq!(lines(&mut t, 1 << 20), ["before"]);
        append(&p, "last of old\n");
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();
        append(&p, "first of new\n");
        assert_eq!(lines(&mut t, 1 << 20), ["last of old", "first of new"]);
    }

    #[test]
    fn truncation_starts_over() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("job.out");
        std::fs::write(&p, "").unwrap();
        let mut t = Tail::at_end(&p);
        append(&p, "a fairly long first line\n");
        assert_eq!(lines(&mut t, 1 << 20).len(), 1);
        std::fs::write(&p, "short\n").unwrap();
        assert_eq!(lines(&mut t, 1 << 20), ["short"]);
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start_and_long_lines_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("later.out");
        let mut t = Tail::at_end(&p);
        assert!(lines(&mut t, 1 << 20).is_empty());
        let long = "x".repeat(MAX_LINE_BYTES + 100);
        append(&p, &format!("hello\n{long}\nafter\n"));
        let got = lines(&mut t, 1 << 20);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "hello");
        assert_eq!(got[1].len(), MAX_LINE_BYTES);
        assert_eq!(got[2], "after");
    }
}
