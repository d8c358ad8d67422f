//! Kernel-log watcher: reads `/dev/kmsg` from the start of the ring buffer and follows it (records
//! already handled in this boot are skipped, see `kmsg_record`; each event carries its record's own
//! time), or a regular file: one in `/dev/kmsg` record format (a dump of the ring buffer) the same
//! way from its start, a plain text log tailed from its current end. Each line is classified with
//! `classify::classify` and the faults are pushed as events. Floods (an XID 45
//! storm, a flapping link) are coalesced: the first of a kind goes out at once, repeats within
//! `events::COALESCE_WINDOW` are counted and sent as one event carrying the count.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::time::now_ms;

use crate::classify::{Class, Classification, classify};
use crate::collect::PciMap;
use crate::collect::kmsg_record::{Cursor, Record, boot_wall_ms, parse_record, record_ms};
use crate::events::{Coalescer, EventQueue};
use crate::observe::{MAX_MESSAGE, truncate};
use crate::xid::XidTracker;

/// How often a tailed regular file is checked for new lines.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a caught-up `/dev/kmsg` watcher waits for the next record while a coalescing window is
/// open (its summary is then at most this late, against a 10 s window), and while none is: a new
/// record wakes it at once either way. Waking every 100 ms to find nothing was a sixth of an idle
/// agent's CPU.
const KMSG_WAIT_OPEN: Duration = Duration::from_secs(1);
const KMSG_WAIT_IDLE: Duration = Duration::from_secs(5);
/// The three lines of NVRM's "fallen off the bus" message arrive together; later lines of it within
/// this long are the same fault and are not sent again.
const MULTILINE_WINDOW: Duration = Duration::from_secs(2);

/// The component a classified line concerns, as the part after `<host>/` (`observe::component`).
/// A netdev named by a RoCE link line is resolved to the RDMA device behind it through `sysfs`
/// (`/sys/class/net/<netdev>/device/infiniband/<ibdev>`), so `eth1` is reported as `nic:mlx5_1`, the
/// name the NIC collector and the fabric know.
pub fn component_of(c: &Classification, pci: &PciMap, sysfs: &Path) -> Option<String> {
    let gpu_of = |dev: &str| pci.read().unwrap_or_else(|p| p.into_inner()).get(dev).copied();
    crate::observe::component(c, &gpu_of, &|netdev| ib_device_of_netdev(sysfs, netdev))
}

/// The RDMA device behind `netdev`, when exactly one backs it.
pub fn ib_device_of_netdev(sysfs: &Path, netdev: &str) -> Option<String> {
    if netdev.is_empty() || netdev.contains('/') || netdev.starts_with('.') {
        return None;
    }
    let dir = sysfs.join("class/net").join(netdev).join("device/infiniband");
    let mut names: Vec<String> =
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    (names.len() == 1).then(|| names.remove(0))
}

/// Turns lines into events: classification, component mapping, XID workflows, multi-line merging
/// and coalescing. Shared by the `/dev/kmsg` and file readers (and usable directly in tests).
pub struct LineHandler {
    events: Arc<EventQueue>,
    pci: PciMap,
    coalescer: Coalescer,
    tracker: XidTracker,
    /// Device and time of the last "fallen off the bus" line, to merge the rest of its message.
    last_fallen: Option<(Instant, Option<String>)>,
    /// The time of the record being handled, when it carries one (`line_at`).
    record_ts: Option<i64>,
    /// Where netdev → RDMA device links are read.
    sysfs: PathBuf,
}

impl LineHandler {
    pub fn new(events: Arc<EventQueue>, pci: PciMap) -> Self {
        Self::with_sysfs(events, pci, PathBuf::from("/sys"))
    }

    /// A handler that resolves netdevs to RDMA devices under `sysfs` (a fixture tree in tests).
    pub fn with_sysfs(events: Arc<EventQueue>, pci: PciMap, sysfs: PathBuf) -> Self {
        LineHandler {
            events,
            pci,
            sysfs,
            coalescer: Coalescer::default(),
            tracker: XidTracker::new(),
            last_fallen: None,
            record_ts: None,
        }
    }

    /// Handle one log line that carries its own time (a `/dev/kmsg` record), Unix ms.
    pub fn line_at(&mut self, line: &str, now: Instant, ts_ms: i64) {
        self.record_ts = Some(ts_ms);
        self.line(line, now);
        self.record_ts = None;
    }

    /// Handle one log line.
    pub fn line(&mut self, line: &str, now: Instant) {
        let c = classify(line);
        if c.class == Class::None {
            return;
        }
        if c.class == Class::GpuFallenOffBus {
            if let Some((at, dev)) = &self.last_fallen
                && now.duration_since(*at) < MULTILINE_WINDOW
                && (c.device.is_none() || c.device == *dev)
            {
                return; // the rest of a message already sent
            }
            self.last_fallen = Some((now, c.device.clone()));
        }
        let ts = self.record_ts.unwrap_or_else(now_ms);
        let component = component_of(&c, &self.pci, &self.sysfs);
        let mut ev = crate::observe::line_event(&c, component.clone(), ts);
        if let Some(code) = c.xid {
            let key = component.or(c.device.clone()).unwrap_or_default();
            let a = self.tracker.assess(ts, &key, code, c.pid, c.caused_by_xid);
            ev.severity = a.severity;
            ev.caused_by_xid = a.caused_by_xid;
            if !a.note.is_empty() {
                ev.message = truncate(&format!("[{}] {}", a.note, c.message), MAX_MESSAGE);
            }
        }
        // Every classified line is urgent, Info ones too (XID 92, corrected PCIe/EDAC errors): a storm
        // of them is the evidence, and waiting a whole interval for it delays the diagnosis. The
        // coalescer passes the first of a flood and counts the rest, and the pusher sends at most one
        // urgent report per `URGENT_MIN_GAP`, so a storm does not become a report storm.
        for out in self.coalescer.offer(ev, now) {
            self.events.push(out, true);
        }
    }

    /// Nothing is being coalesced: no summary can come due before the next line.
    pub fn is_idle(&self) -> bool {
        self.coalescer.is_idle()
    }

    /// Send the counts of floods whose window ended.
    pub fn tick(&mut self, now: Instant) {
        for out in self.coalescer.flush_due(now) {
            self.events.push(out, false);
        }
    }
}

/// Where the watcher keeps its place (see `kmsg_record`).
#[derive(Debug, Clone)]
pub struct KmsgOptions {
    /// Directory for `kmsg-seq`, the last record handled in this boot. `None`: nothing is kept, and
    /// a restarted watcher reads the ring buffer from its start again.
    pub state_dir: Option<PathBuf>,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id_file: PathBuf,
    /// `/sys`, where a RoCE line's netdev is resolved to its RDMA device.
    pub sysfs: PathBuf,
}

impl Default for KmsgOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            boot_id_file: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            sysfs: PathBuf::from("/sys"),
        }
    }
}

/// `spawn_watcher_with` and no state directory.
pub fn spawn_watcher(path: &Path, events: Arc<EventQueue>, pci: PciMap) -> std::io::Result<()> {
    spawn_watcher_with(path, events, pci, KmsgOptions::default())
}

/// Start reading `path` on a thread of its own: `/dev/kmsg` (a character device) or a file in its
/// record format from the start, skipping records handled before in this boot; a plain text file
/// from its current end (truncation and rotation are followed). An error (no such file, no
/// permission) is logged once and returned; nothing is started.
pub fn spawn_watcher_with(path: &Path, events: Arc<EventQueue>, pci: PciMap, opts: KmsgOptions) -> std::io::Result<()> {
    let fail = |e: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %e, "kernel-log watcher off: cannot read {}: {e}", path.display());
        e
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    let handler = LineHandler::with_sysfs(events, pci, opts.sysfs.clone());
    let path_buf = path.to_path_buf();
    let cursor = Cursor::load(opts.state_dir.as_deref(), &opts.boot_id_file);
    if meta.file_type().is_char_device() {
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(fail)?;
        // A fresh /dev/kmsg reader starts at the oldest record still in the ring buffer.
        spawn("kmsg-watcher", move || follow_kmsg(file, handler, cursor))
    } else {
        let mut file = File::open(path).map_err(fail)?;
        let records = starts_with_record(&mut file).map_err(fail)?;
        let pos = if records { 0 } else { file.seek(SeekFrom::End(0)).map_err(fail)? };
        file.seek(SeekFrom::Start(pos)).map_err(fail)?;
        let cursor = records.then_some(cursor);
        spawn("kmsg-watcher", move || tail_file(path_buf, file, pos, handler, cursor))
    }
    .map_err(fail)?;
    tracing::info!(path = %path.display(), "kernel-log watcher on");
    Ok(())
}

/// Whether a regular file holds `/dev/kmsg` records (its first line parses as one).
fn starts_with_record(file: &mut File) -> std::io::Result<bool> {
    let mut head = vec![0u8; 4096];
    let n = file.read(&mut head)?;
    let text = String::from_utf8_lossy(&head[..n]);
    Ok(text.lines().next().is_some_and(|l| parse_record(l).is_some()))
}

/// Handle one record unless it was handled before; true when it was new.
fn handle_record(h: &mut LineHandler, cursor: &mut Cursor, boot_ms: i64, rec: &Record<'_>) -> bool {
    if cursor.seen(rec.seq) {
        return false;
    }
    cursor.advance(rec.seq);
    h.line_at(rec.message, Instant::now(), record_ms(boot_ms, rec.usec, now_ms()));
    true
}

/// Persist the cursor; a failure is logged once.
fn save_cursor(cursor: &mut Cursor, warned: &mut bool) {
    if let Err(e) = cursor.save()
        && !*warned
    {
        *warned = true;
        tracing::warn!(error = %e, "cannot keep the kernel-log position; records may be sent again after a restart");
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).map(|_| ())
}

/// `/dev/kmsg`: each read returns one record (`prio,seq,usec,flags;message` plus dictionary lines).
fn follow_kmsg(file: File, mut h: LineHandler, mut cursor: Cursor) {
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 16 * 1024];
    let boot_ms = boot_wall_ms();
    let mut warned = false;
    let mut since_save = 0u32;
    loop {
        // SAFETY: reading into our own buffer from a descriptor we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let rec = String::from_utf8_lossy(&buf[..n as usize]);
            if let Some(r) = rec.lines().next().and_then(parse_record) {
                since_save += u32::from(handle_record(&mut h, &mut cursor, boot_ms, &r));
            }
            if since_save >= 1000 {
                save_cursor(&mut cursor, &mut warned);
                since_save = 0;
            }
            h.tick(Instant::now());
            continue;
        }
        if n == 0 {
            // End of file: errno is not set, so there is no OS error to print ("Success").
            tracing::warn!(
                "kernel-log watcher stopped: the kernel log reached end of file (not the /dev/kmsg character device?)"
            );
            return;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            // Records were overwritten before we read them: go on with the next.
            Some(libc::EPIPE) | Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                // Caught up: keep the place, then wait for the next record.
                save_cursor(&mut cursor, &mut warned);
                since_save = 0;
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                let wait = if h.is_idle() { KMSG_WAIT_IDLE } else { KMSG_WAIT_OPEN };
                unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
                h.tick(Instant::now());
            }
            _ => {
                tracing::warn!(error = %err, "kernel-log watcher stopped: reading /dev/kmsg failed");
                return;
            }
        }
    }
}

/// A regular file: read what was appended; start over when it shrinks or is replaced. With a cursor
/// the lines are `/dev/kmsg` records, handled once each.
fn tail_file(path: PathBuf, mut file: File, mut pos: u64, mut h: LineHandler, mut cursor: Option<Cursor>) {
    let boot_ms = boot_wall_ms();
    let mut warned = false;
    let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    let mut partial: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => {
                if let Some(c) = &mut cursor {
                    save_cursor(c, &mut warned);
                }
                h.tick(Instant::now());
                std::thread::sleep(POLL_INTERVAL);
                if let Ok(meta) = std::fs::metadata(&path)
                    && (meta.ino() != ino || meta.len() < pos)
                    // Rotated or truncated: read the new content from its start.
                    && let Ok(f) = File::open(&path)
                {
                    file = f;
                    ino = meta.ino();
                    pos = 0;
                    partial.clear();
                }
            }
            Ok(n) => {
                pos += n as u64;
                partial.extend_from_slice(&chunk[..n]);
                while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    match &mut cursor {
                        Some(c) => {
                            // Dictionary lines (leading space) and anything else that is no record.
                            if let Some(r) = parse_record(text) {
                                handle_record(&mut h, c, boot_ms, &r);
                            }
                        }
                        None => h.line(text, Instant::now()),
                    }
                }
                h.tick(Instant::now());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kernel-log watcher stopped: read failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::Severity;

    #[test]
    fn lines_become_events_on_the_right_component() {
        let q = Arc::new(EventQueue::new(100));
        let pci: PciMap = Arc::default();
        pci.write().unwrap().insert("0000:3b:00".to_string(), 3);
        let mut h = LineHandler::new(q.clone(), pci);
        let t = Instant::now();
        h.line("[  1.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=12, GPU has fallen off the bus.", t);
        h.line("[  1.0] NVRM: Xid (PCI:0000:3b:00): 45, pid=12, Ch 00000008", t);
        h.line("mlx5_core 0000:53:00.0 mlx5_3: Port: 1 Link DOWN", t);
        h.line("hello world", t);
        h.line("[ 1843.308145] NVRM: The NVIDIA GPU 0000:3b:00.0", t);
        h.line("NVRM: (PCI ID: 10de:2330) installed in this system has", t);
        h.line("NVRM: fallen off the bus and is not responding to commands.", t);
        let evs = q.drain();
        assert_eq!(evs.len(), 4, "{evs:#?}");
        assert_eq!(evs[0].component.as_deref(), Some("gpu3"));
        assert_eq!(evs[0].xid, Some(79));
        assert_eq!(evs[0].severity, Severity::Critical);
        assert_eq!(evs[1].caused_by_xid, Some(79), "XID 45 right after 79 is its consequence");
        assert_eq!(evs[2].component.as_deref(), Some("nic:mlx5_3"));
        assert_eq!(evs[3].class, faultline_proto::EventClass::GpuFallenOffBus);
        assert_eq!(evs[3].component.as_deref(), Some("gpu3"));
    }

    #[test]
    fn info_xid_line_is_urgent() {
        // XID 92 (high single-bit ECC rate) is Info, yet a storm of it is the evidence of a failing GPU.
        let q = Arc::new(EventQueue::new(10));
        let mut h = LineHandler::new(q.clone(), Arc::default());
        h.line("[  1.0] NVRM: Xid (PCI:0000:3b:00): 92, pid=12, High single-bit ECC error rate", Instant::now());
        let evs = q.drain();
        assert_eq!(evs.len(), 1, "{evs:#?}");
        assert_eq!(evs[0].xid, Some(92));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let woke = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), q.urgent()).await.is_ok() });
        assert!(woke, "an Info XID line must wake the pusher");
    }

    #[test]
    fn missing_file_is_an_error_not_a_panic() {
        let q = Arc::new(EventQueue::new(10));
        assert!(spawn_watcher(Path::new("/nonexistent/kmsg"), q, Arc::default()).is_err());
    }

    #[test]
    fn tailing_a_file_sees_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, "NVRM: Xid (PCI:0000:3b:00): 79, old line before the watcher\n").unwrap();
        let q = Arc::new(EventQueue::new(10));
        spawn_watcher(&path, q.clone(), Arc::default()).unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            writeln!(f, "[ 5.0] NVRM: Xid (PCI:0000:3b:00): 48, pid=1, DBE").unwrap();
            write!(f, "[ 6.0] EDAC MC0: 1 UE memory read err").unwrap(); // partial line: not yet
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while Instant::now() < deadline && got.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            got.extend(q.drain());
        }
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].xid, Some(48));
    }

    /// Regression: a RoCE port's link line names its netdev (`eth1`); the real agent reported it as
    /// `nic:eth1`, a NIC the collector and the fabric do not know. It is the RDMA device behind it.
    #[test]
    fn a_roce_link_line_is_attributed_to_the_rdma_device_behind_its_netdev() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("class/net/eth1/device/infiniband/mlx5_1")).unwrap();
        std::fs::create_dir_all(sys.path().join("class/net/eth5/device")).unwrap();
        let q = Arc::new(EventQueue::new(100));
        let mut h = LineHandler::with_sysfs(q.clone(), Arc::default(), sys.path().to_path_buf());
        let t = Instant::now();
        h.line("mlx5_core 0000:01:00.1 eth1: Link down", t);
        h.line("[39210.778735] igc 0000:05:00.0 eth5: NIC Link is Down", t);
        let evs = q.drain();
        assert_eq!(evs.len(), 2, "{evs:#?}");
        assert_eq!(evs[0].component.as_deref(), Some("nic:mlx5_1"));
        // A netdev with no RDMA device behind it keeps its own name.
        assert_eq!(evs[1].component.as_deref(), Some("nic:eth5"));
        assert_eq!(ib_device_of_netdev(sys.path(), "../eth1"), None);
    }
}
