//! Kernel-log watcher: follows `/dev/kmsg` from now on (or tails a regular file from its current end),
//! classifies each line with `classify::classify`, and pushes the faults as events. Floods (an XID 45
//! storm, a flapping link) are coalesced: the first of a kind goes out at once, repeats within
//! `COALESCE_WINDOW` are counted and sent as one event carrying the count.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::{Event, EventSource};

use crate::classify::{Class, Classification, classify};
use crate::collect::PciMap;
use crate::events::EventQueue;
use crate::xid::XidTracker;

/// Identical events (class, XID, component) within this window become one event with a count: one
/// default report interval, so a storm costs at most one extra event per interval.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(10);
/// Longest message kept from a line, in bytes (the wire limit is far larger; a line is rarely longer).
pub const MAX_MESSAGE: usize = 512;
/// How often a tailed regular file is checked for new lines, and how long a `/dev/kmsg` read waits.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The three lines of NVRM's "fallen off the bus" message arrive together; later lines of it within
/// this long are the same fault and are not sent again.
const MULTILINE_WINDOW: Duration = Duration::from_secs(2);

type Key = (faultline_proto::EventClass, Option<u32>, Option<String>);

/// Set once a watcher runs: the kernel log then is where XIDs are counted (see `gpu_metrics`).
static WATCHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when a kernel-log watcher is running in this process.
pub fn watching() -> bool {
    WATCHING.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug)]
struct Open {
    started: Instant,
    suppressed: u64,
    last: Option<Event>,
}

/// Rate limiter for event floods that never loses a count.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    open: HashMap<Key, Open>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::with_window(COALESCE_WINDOW)
    }
}

impl Coalescer {
    pub fn with_window(window: Duration) -> Self {
        Coalescer { window, open: HashMap::new() }
    }

    /// Offer an event. Returns what to send now: the event itself when it opens a window (plus the
    /// summary of an expired window of the same kind), nothing when it is a repeat being counted.
    pub fn offer(&mut self, ev: Event, now: Instant) -> Vec<Event> {
        let key: Key = (ev.class, ev.xid, ev.component.clone());
        let mut out = Vec::new();
        if let Some(o) = self.open.get_mut(&key) {
            if now.duration_since(o.started) < self.window {
                o.suppressed += ev.count.max(1);
                o.last = Some(ev);
                return out;
            }
            if let Some(summary) = Self::summary(o) {
                out.push(summary);
            }
        }
        self.open.insert(key, Open { started: now, suppressed: 0, last: None });
        out.push(ev);
        out
    }

    /// Summaries of windows that have ended with repeats in them. Call periodically.
    pub fn flush_due(&mut self, now: Instant) -> Vec<Event> {
        let window = self.window;
        let mut out = Vec::new();
        self.open.retain(|_, o| {
            if now.duration_since(o.started) < window {
                return true;
            }
            if let Some(s) = Self::summary(o) {
                out.push(s);
            }
            false
        });
        out
    }

    /// Everything still counted, at shutdown.
    pub fn flush_all(&mut self) -> Vec<Event> {
        let out = self.open.values_mut().filter_map(Self::summary).collect();
        self.open.clear();
        out
    }

    fn summary(o: &mut Open) -> Option<Event> {
        if o.suppressed == 0 {
            return None;
        }
        let mut ev = o.last.take()?;
        ev.count = o.suppressed;
        ev.message = truncate(&format!("{} more like this: {}", o.suppressed, ev.message), MAX_MESSAGE);
        o.suppressed = 0;
        Some(ev)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(1)
}

/// The component a classified line concerns, as the part after `<host>/`.
pub fn component_of(c: &Classification, pci: &PciMap) -> Option<String> {
    let gpu_of = |dev: &Option<String>| {
        let dev = dev.as_ref()?;
        pci.read().unwrap_or_else(|p| p.into_inner()).get(dev).map(|i| format!("gpu{i}"))
    };
    match c.class {
        Class::Xid
        | Class::GpuFallenOffBus
        | Class::GpuDriverError
        | Class::NvlinkError
        | Class::PcieAerCorrected
        | Class::PcieAerUncorrected => gpu_of(&c.device),
        Class::NicLinkDown
        | Class::NicLinkUp
        | Class::NicDriverError
        | Class::NetdevWatchdog
        | Class::IbCompletionError => c.nic.as_ref().map(|n| format!("nic:{n}")),
        Class::IoError => c.disk.as_ref().map(|d| format!("disk:{d}")),
        _ => None,
    }
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
}

impl LineHandler {
    pub fn new(events: Arc<EventQueue>, pci: PciMap) -> Self {
        LineHandler { events, pci, coalescer: Coalescer::default(), tracker: XidTracker::new(), last_fallen: None }
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
        let ts = now_ms();
        let component = component_of(&c, &self.pci);
        let mut ev = Event {
            ts_ms: ts,
            source: EventSource::Kmsg,
            class: c.class,
            severity: c.severity,
            component: component.clone(),
            xid: c.xid,
            caused_by_xid: c.caused_by_xid,
            device: c.device.clone(),
            pid: c.pid,
            count: 1,
            message: truncate(&c.message, MAX_MESSAGE),
        };
        if let Some(code) = c.xid {
            if let Some(i) = crate::export::gpu_metrics::gpu_index_of(component.as_deref()) {
                crate::export::gpu_metrics::record_xid(i, code, 1);
            }
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

    /// Send the counts of floods whose window ended.
    pub fn tick(&mut self, now: Instant) {
        for out in self.coalescer.flush_due(now) {
            self.events.push(out, false);
        }
    }
}

/// Start following `path` from its current end on a thread of its own: `/dev/kmsg` (a character
/// device: existing records are skipped) or a regular file (tailed; truncation and rotation are
/// followed). An error (no such file, no permission) is logged once and returned; nothing is started.
pub fn spawn_watcher(path: &Path, events: Arc<EventQueue>, pci: PciMap) -> std::io::Result<()> {
    let fail = |e: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %e, "kernel-log watcher off: cannot read {}: {e}", path.display());
        e
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    let handler = LineHandler::new(events, pci);
    let path_buf = path.to_path_buf();
    if meta.file_type().is_char_device() {
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(fail)?;
        // SAFETY: a valid open descriptor; SEEK_END on /dev/kmsg skips to the next new record.
        if unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        spawn("kmsg-watcher", move || follow_kmsg(file, handler))
    } else {
        let mut file = File::open(path).map_err(fail)?;
        let pos = file.seek(SeekFrom::End(0)).map_err(fail)?;
        spawn("kmsg-watcher", move || tail_file(path_buf, file, pos, handler))
    }
    .map_err(fail)?;
    WATCHING.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(path = %path.display(), "kernel-log watcher on");
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).map(|_| ())
}

/// `/dev/kmsg`: each read returns one record (`prio,seq,ts,flags;message` plus dictionary lines).
fn follow_kmsg(file: File, mut h: LineHandler) {
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: reading into our own buffer from a descriptor we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let rec = String::from_utf8_lossy(&buf[..n as usize]);
            if let Some(first) = rec.lines().next() {
                h.line(first, Instant::now());
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
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
                h.tick(Instant::now());
            }
            _ => {
                tracing::warn!(error = %err, "kernel-log watcher stopped: reading /dev/kmsg failed");
                return;
            }
        }
    }
}

/// A regular file: read what was appended; start over when it shrinks or is replaced.
fn tail_file(path: PathBuf, mut file: File, mut pos: u64, mut h: LineHandler) {
    let mut ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
    let mut partial: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => {
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
                    h.line(text.trim_end_matches(['\n', '\r']), Instant::now());
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

    fn ev(class: &str, xid: Option<u32>, comp: &str) -> Event {
        Event {
            ts_ms: 1,
            class: faultline_proto::EventClass::parse(class).expect("a known event class"),
            xid,
            component: Some(comp.to_string()),
            count: 1,
            message: "m".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn a_storm_becomes_one_event_plus_one_count() {
        let mut c = Coalescer::with_window(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(c.offer(ev("xid", Some(45), "gpu1"), t0).len(), 1);
        for i in 1..=500u64 {
            assert!(c.offer(ev("xid", Some(45), "gpu1"), t0 + Duration::from_millis(i)).is_empty());
        }
        // Another GPU or another code is not part of the storm.
        assert_eq!(c.offer(ev("xid", Some(45), "gpu2"), t0).len(), 1);
        assert_eq!(c.offer(ev("xid", Some(13), "gpu1"), t0).len(), 1);
        assert!(c.flush_due(t0 + Duration::from_secs(5)).is_empty());
        let out = c.flush_due(t0 + Duration::from_secs(11));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 500);
        // The next one opens a fresh window.
        assert_eq!(c.offer(ev("xid", Some(45), "gpu1"), t0 + Duration::from_secs(12)).len(), 1);
    }

    #[test]
    fn counts_survive_a_late_repeat_and_shutdown() {
        let mut c = Coalescer::with_window(Duration::from_secs(1));
        let t0 = Instant::now();
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0);
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_millis(10));
        // Arrives after the window without a flush in between: summary plus the new one.
        let out = c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_secs(2));
        assert_eq!(out.iter().map(|e| e.count).sum::<u64>(), 2);
        c.offer(ev("nic_link_down", None, "nic:mlx5_0"), t0 + Duration::from_millis(2100));
        assert_eq!(c.flush_all().iter().map(|e| e.count).sum::<u64>(), 1);
    }

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
}
