//! The collector registry: one module per telemetry source, all behind the `Collector` trait.
//! This file is the only place that lists them: `Registry::all` builds every collector the agent
//! runs each cycle, and `spawn_watchers` starts the watchers that push events as they happen.

pub mod addrs;
pub mod ethtool;
pub mod fabric;
pub mod gpu;
mod gpu_events;
pub mod gpu_health;
pub mod gpu_mig;
pub mod gpu_nvlink_bytes;
pub mod host;
pub mod infiniband;
pub mod jobs;
pub mod kmsg;
pub mod kmsg_record;
pub mod net;
pub mod pod_resources;
pub mod sched;
pub mod trainlog;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use faultline_proto::NodeReport;

use crate::events::EventQueue;
use crate::progress::ProgressStore;

/// The agent's settings that decide which collectors run and where they read.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Where the kernel's files are read.
    pub roots: Roots,
    /// Which NICs are fabric NICs and which netdevs are reported (`[nics]`).
    pub nics: fabric::NicsConfig,
    /// Run the GPU collector (false: `no_gpu`).
    pub gpu: bool,
    /// NVML library to load instead of the system's.
    pub nvml_lib: Option<PathBuf>,
    /// Configured expected GPU count; `None`: learned at the first start.
    pub expected_gpus: Option<u32>,
    /// Training-job discovery (`[jobs]`).
    pub jobs: jobs::JobsConfig,
}

/// What collectors and watchers share with the rest of the agent: the event queue they push to, the
/// PCI → GPU map the GPU collector fills and the kernel-log watcher reads, and the progress store
/// the jobs collector reads.
#[derive(Clone)]
pub struct Shared {
    pub events: std::sync::Arc<EventQueue>,
    pub pci: PciMap,
    pub progress: ProgressStore,
}

/// Which watchers run (threads that push events the moment they happen, not once per cycle).
#[derive(Debug, Clone, Copy, Default)]
pub struct Watchers {
    /// The kernel-log watcher started (it is then where XIDs are counted, see `export::xids`).
    pub kernel_log: bool,
}

/// Start the watchers: the kernel log at `kmsg`. (NVML's event thread belongs to the GPU collector
/// and starts with it in `Registry::all`.) A watcher that cannot start is logged and left off.
pub fn spawn_watchers(kmsg_path: &Path, opts: kmsg::KmsgOptions, shared: &Shared) -> Watchers {
    let kernel_log = match kmsg::spawn_watcher_with(kmsg_path, shared.events.clone(), shared.pci.clone(), opts) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %kmsg_path.display(), error = %e, "kernel-log watcher not running");
            false
        }
    };
    Watchers { kernel_log }
}

/// A collector failure. Errors are data: counted per collector, logged once, and the others go on.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A counter that went backwards (it wrapped or was reset). The value is still reported; this
    /// only counts and logs the event.
    #[error("counter {counter} of {nic}: {problem}")]
    Counter { nic: String, counter: String, problem: &'static str },
    #[error("{0}")]
    Other(String),
    /// Several independent failures in one cycle (each is counted on its own).
    #[error("{} errors, first: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    Many(Vec<CollectError>),
}

impl CollectError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }

    /// A key that stays the same while the same problem repeats, so it is logged once.
    fn log_key(&self) -> String {
        match self {
            Self::Io { what, source } => format!("{what}: {:?}", source.kind()),
            Self::Counter { nic, counter, problem } => format!("{nic}/{counter}: {problem}"),
            Self::Other(m) => m.clone(),
            Self::Many(_) => String::new(),
        }
    }

    /// Turn a list of problems gathered during one cycle into a result.
    pub fn from_list(mut errors: Vec<CollectError>) -> Result<(), CollectError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Many(errors)),
        }
    }
}

/// One telemetry source. `collect` fills its part of the report for this cycle; collectors run in
/// registry order, so a later one (jobs) may read what an earlier one (gpu) wrote.
pub trait Collector: Send {
    /// Stable name, used as the `collector` label of `faultline_agent_collector_errors_total`.
    fn name(&self) -> &'static str;
    /// Fill this collector's part of `report`. Partial data plus an error is allowed: whatever was
    /// written stays in the report.
    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError>;
}

/// Where the collectors read the kernel's files. Tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `/sys` on a live host.
    pub sysfs: PathBuf,
    /// `/proc` on a live host.
    pub procfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self { sysfs: PathBuf::from("/sys"), procfs: PathBuf::from("/proc") }
    }
}

/// How many distinct problems are logged per collector before the agent stops logging new ones (they
/// are still counted). Keeps a host whose sensors all fail from filling the journal.
const MAX_LOGGED_PROBLEMS: usize = 1024;

/// How long one collector may take in one cycle before the report goes out without it. Above the GPU
/// collector's own NVML poll deadline (2 s), so a hung GPU is still reported by that collector as
/// unresponsive; anything slower is a read that blocks (a FIFO or a hung NFS mount under `/proc` or
/// `/sys`, a wedged driver file), and waiting longer only delays every other reading.
pub const DEFAULT_COLLECTOR_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// One collector on its own thread: each cycle it gets a copy of the report so far and hands it
/// back filled in. A collector stuck past its deadline keeps its thread; the cycle goes on without
/// it, and later cycles skip it (counting an error) until it comes back.
struct Worker {
    name: &'static str,
    tx: std::sync::mpsc::Sender<NodeReport>,
    rx: std::sync::mpsc::Receiver<(NodeReport, Result<(), CollectError>)>,
    /// When the unanswered request was sent, while the collector is still on it.
    busy_since: Option<std::time::Instant>,
}

impl Worker {
    fn spawn(mut c: Box<dyn Collector>) -> Result<Self, CollectError> {
        let name = c.name();
        let (tx, req_rx) = std::sync::mpsc::channel::<NodeReport>();
        let (resp_tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("collect-{name}"))
            .spawn(move || {
                while let Ok(mut report) = req_rx.recv() {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.collect(&mut report)))
                        .unwrap_or_else(|_| Err(CollectError::Other("collector panicked".into())));
                    if resp_tx.send((report, result)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| CollectError::io(format!("cannot start the {name} collector thread"), e))?;
        Ok(Self { name, tx, rx, busy_since: None })
    }

    /// Runs the collector on `report` with a deadline.
    fn run(&mut self, report: &mut NodeReport, deadline: std::time::Duration) -> Result<(), CollectError> {
        use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
        if self.busy_since.is_some() {
            match self.rx.try_recv() {
                // It finished late: that cycle's report is gone, this one gets a fresh run.
                Ok(_) => self.busy_since = None,
                Err(TryRecvError::Empty) => {
                    return Err(CollectError::Other("still stuck past its deadline; reports go out without it".into()));
                }
                Err(TryRecvError::Disconnected) => return Err(CollectError::Other("collector thread is gone".into())),
            }
        }
        if self.tx.send(report.clone()).is_err() {
            return Err(CollectError::Other("collector thread is gone".into()));
        }
        match self.rx.recv_timeout(deadline) {
            Ok((filled, result)) => {
                *report = filled;
                result
            }
            Err(RecvTimeoutError::Timeout) => {
                self.busy_since = Some(std::time::Instant::now() - deadline);
                Err(CollectError::Other(format!(
                    "did not finish within its {} ms deadline (a blocking read?); the report goes out without it",
                    deadline.as_millis()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(CollectError::Other("collector thread is gone".into())),
        }
    }
}

/// How one collector did in the last cycle: the agent's `faultline_agent_collector_success` and
/// `faultline_agent_collector_duration_seconds`, as node_exporter's `node_scrape_collector_*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectorStatus {
    /// The collector ran and returned no error. False for one that could not start (NVML did not
    /// load), so it is a visible 0 rather than a missing series.
    pub success: bool,
    /// How long it took (0 for one that did not run).
    pub duration: std::time::Duration,
}

/// The collectors of this agent, run in order, with their error counts.
///
/// Order matters and is fixed here: host, infiniband, net (merges netdevs into IB ports), gpu, then
/// jobs (reads `gpus[].processes`). Each runs on its own thread with a deadline
/// (`DEFAULT_COLLECTOR_DEADLINE`), so one blocking read never holds up the report.
pub struct Registry {
    workers: Vec<Worker>,
    errors: faultline_proto::CounterMap,
    logged: HashSet<String>,
    deadline: std::time::Duration,
    /// Collectors past their deadline in the last cycle.
    stalled: Vec<&'static str>,
    /// Every collector's last cycle, including those that could not start.
    status: BTreeMap<&'static str, CollectorStatus>,
}

impl Registry {
    /// The collectors that need nothing but the file roots: host, infiniband and net, with the
    /// default `[nics]` settings.
    pub fn base(roots: &Roots) -> Self {
        Self::base_with(roots, &fabric::NicsConfig::default())
    }

    /// As `base`, with `nics` deciding which NICs are fabric and which are reported.
    pub fn base_with(roots: &Roots, nics: &fabric::NicsConfig) -> Self {
        let mut r = Self::empty();
        r.push(Box::new(host::HostCollector::new(roots.clone())));
        r.push(Box::new(infiniband::InfinibandCollector::new(roots.sysfs.clone()).with_config(nics.clone())));
        r.push(Box::new(net::NetCollector::new(roots.sysfs.clone()).with_config(nics.clone(), roots.procfs.clone())));
        // The host's own interfaces: only when reading the host's own sysfs.
        if roots.sysfs == Path::new("/sys") {
            r.push(Box::new(addrs::AddrCollector));
        }
        r
    }

    /// Every collector the agent runs, in order: host, infiniband, net, gpu (when `sources.gpu`),
    /// jobs. `state_dir` keeps what the agent learns (the expected GPU count), written only when
    /// `persist`. A GPU collector whose NVML does not load is listed as unavailable, so its
    /// `faultline_agent_collector_success` is a visible 0 rather than a missing series.
    pub fn all(sources: &Sources, shared: &Shared, state_dir: &Path, persist: bool) -> Self {
        let roots = &sources.roots;
        let mut reg = Self::base_with(roots, &sources.nics);
        if sources.gpu {
            match gpu::GpuCollector::new(sources.nvml_lib.as_deref(), shared.events.clone(), shared.pci.clone()) {
                Some(g) => reg.push(Box::new(g.with_sysfs_root(roots.sysfs.clone()).with_expected(
                    sources.expected_gpus,
                    Some(state_dir),
                    persist,
                ))),
                // Logged by `GpuCollector::new`.
                None => reg.unavailable("gpu"),
            }
        }
        reg.push(Box::new(jobs::JobsCollector::new(
            roots.procfs.clone(),
            shared.progress.clone(),
            sources.jobs.clone(),
        )));
        // After jobs: it reads this cycle's job list to find their logs.
        reg.push(Box::new(trainlog::TrainLogCollector::new(
            sources.jobs.logs.clone(),
            sources.jobs.scheduler.clone(),
            shared.events.clone(),
        )));
        reg
    }

    pub fn empty() -> Self {
        Self {
            workers: Vec::new(),
            errors: faultline_proto::CounterMap::new(),
            logged: HashSet::new(),
            deadline: DEFAULT_COLLECTOR_DEADLINE,
            stalled: Vec::new(),
            status: BTreeMap::new(),
        }
    }

    /// Sets how long each collector may take per cycle.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Append a collector (it runs after those already registered).
    pub fn push(&mut self, c: Box<dyn Collector>) {
        let name = c.name();
        self.errors.entry(faultline_proto::counter_name(name)).or_insert(0);
        match Worker::spawn(c) {
            Ok(w) => self.workers.push(w),
            Err(e) => {
                *self.errors.entry(faultline_proto::counter_name(name)).or_insert(0) += 1;
                tracing::error!(collector = name, error = %e, "collector not running");
                self.unavailable(name);
            }
        }
    }

    /// List a collector that was wanted but could not start (its reason is logged where it failed):
    /// it never runs, and its status stays failed.
    pub fn unavailable(&mut self, name: &'static str) {
        self.status.insert(name, CollectorStatus { success: false, duration: std::time::Duration::ZERO });
    }

    /// Every collector's last cycle (those that could not start included), by name.
    pub fn status(&self) -> &BTreeMap<&'static str, CollectorStatus> {
        &self.status
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.workers.iter().map(|w| w.name).collect()
    }

    /// Collectors that missed their deadline in the last cycle (or are still stuck from before).
    pub fn stalled(&self) -> &[&'static str] {
        &self.stalled
    }

    /// Run every collector into `report`, count and log (once) what failed, and copy the error counts
    /// into `report.collector_errors`. A failing or stuck collector never stops the ones after it.
    pub fn collect(&mut self, report: &mut NodeReport) {
        self.stalled.clear();
        for w in &mut self.workers {
            let name = w.name;
            let started = std::time::Instant::now();
            let result = w.run(report, self.deadline);
            let status = CollectorStatus { success: result.is_ok(), duration: started.elapsed() };
            self.status.insert(name, status);
            let err = match result {
                Ok(()) => continue,
                Err(e) => e,
            };
            if w.busy_since.is_some() {
                self.stalled.push(name);
            }
            let mut flat = Vec::new();
            flatten(err, &mut flat);
            for e in flat {
                *self.errors.entry(faultline_proto::counter_name(name)).or_insert(0) += 1;
                let key = format!("{name}\u{0}{}", e.log_key());
                if self.logged.len() < MAX_LOGGED_PROBLEMS && self.logged.insert(key) {
                    tracing::warn!(collector = name, error = %e, "collector problem (logged once, counted every time)");
                    if self.logged.len() == MAX_LOGGED_PROBLEMS {
                        tracing::warn!(
                            collector = name,
                            "too many distinct collector problems; only counting from now on"
                        );
                    }
                }
            }
        }
        report.collector_errors = self.errors.clone();
    }

    /// Errors per collector since start.
    pub fn errors(&self) -> &faultline_proto::CounterMap {
        &self.errors
    }
}

fn flatten(e: CollectError, out: &mut Vec<CollectError>) {
    match e {
        CollectError::Many(list) => list.into_iter().for_each(|e| flatten(e, out)),
        e => out.push(e),
    }
}

/// An empty report for this cycle: header filled, every section empty, for the collectors to fill.
pub fn blank_report(node: &str, seq: u64, interval_ms: u64) -> NodeReport {
    NodeReport {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        seq,
        timestamp_ms: now_ms(),
        interval_ms,
        ..NodeReport::empty(node)
    }
}

/// Wall-clock now, Unix milliseconds: the one clock of the workspace.
pub use faultline_proto::time::now_ms;

/// Watches raw counters across cycles: a counter that went backwards (wrapped, or the driver reset it)
/// is counted every time it happens. A counter sitting at the top of its hardware width is not a
/// collector problem but data: the collector lists it in `NicSample::saturated`.
#[derive(Debug, Default)]
pub struct CounterWatch {
    prev: std::collections::HashMap<String, u64>,
    next: std::collections::HashMap<String, u64>,
}

impl CounterWatch {
    /// Note `value` of `nic`/`counter`.
    pub fn observe(&mut self, nic: &str, counter: &str, value: u64, errs: &mut Vec<CollectError>) {
        let key = format!("{nic}\u{0}{counter}");
        if let Some(&old) = self.prev.get(&key)
            && value < old
        {
            errs.push(CollectError::Counter {
                nic: nic.into(),
                counter: counter.into(),
                problem: "went backwards (wrapped or reset)",
            });
        }
        self.next.insert(key, value);
    }

    /// End a cycle: what was observed becomes the baseline; counters of vanished NICs are forgotten.
    pub fn end_cycle(&mut self) {
        self.prev = std::mem::take(&mut self.next);
    }
}

/// Most bytes read from one sysfs or small procfs file. A sysfs attribute is at most one page
/// (4 KB) by the kernel's own rule; 64 KB leaves room for procfs files read the same way. A file
/// longer than this is not what the collector expects (a bind mount, a fixture gone wrong).
pub const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;

/// Read a sysfs/procfs file and trim the trailing newline; a file over `MAX_SMALL_FILE_BYTES` is
/// an error, never copied into a report.
pub fn read_trimmed(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_SMALL_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_SMALL_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {MAX_SMALL_FILE_BYTES} bytes; not a sysfs attribute"),
        ));
    }
    let s = String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))?;
    Ok(s.trim().to_string())
}

/// Read a file holding one unsigned decimal number.
pub fn read_u64(path: &Path) -> io::Result<u64> {
    let s = read_trimmed(path)?;
    parse_u64(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a counter: {s:?}")))
}

/// Parse a counter as sysfs writes it: decimal, or `0x…` hex as a few drivers do.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    s.parse().ok()
}

/// The entries of a directory, sorted by name; a missing directory is empty.
pub fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    Ok(names)
}

/// The PCI address (`0000:3b:00.0`) of a sysfs device link such as `/sys/class/net/eth0/device`: the
/// deepest path component that looks like one (virtio and USB devices sit below their PCI parent).
pub fn pci_address_of(device_link: &Path) -> Option<String> {
    let real = std::fs::canonicalize(device_link).ok()?;
    real.components().rev().filter_map(|c| c.as_os_str().to_str()).find(|c| is_pci_address(c)).map(str::to_string)
}

fn is_pci_address(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

pub use crate::pci::{PciMap, pci_key};

#[cfg(test)]
mod tests {
    #[test]
    fn counters_parse_in_decimal_and_hex() {
        assert_eq!(super::parse_u64("42\n"), Some(42));
        assert_eq!(super::parse_u64("0x10"), Some(16));
        assert_eq!(super::parse_u64("-1"), None);
        assert_eq!(super::parse_u64("N/A"), None);
    }

    #[test]
    fn counter_watch_counts_each_wrap() {
        let mut w = super::CounterWatch::default();
        let mut errs = Vec::new();
        w.observe("mlx5_0", "link_downed", 10, &mut errs);
        w.end_cycle();
        w.observe("mlx5_0", "link_downed", 3, &mut errs);
        w.end_cycle();
        assert_eq!(errs.len(), 1, "one wrap");
        w.observe("mlx5_0", "link_downed", 255, &mut errs);
        w.end_cycle();
        w.observe("mlx5_0", "link_downed", 255, &mut errs);
        w.end_cycle();
        assert_eq!(errs.len(), 1, "a counter at its maximum is data, not a collector problem: {errs:?}");
    }

    #[test]
    fn pci_addresses_are_recognized() {
        assert!(super::is_pci_address("0000:3b:00.0"));
        assert!(!super::is_pci_address("virtio2"));
        assert!(!super::is_pci_address("pci0000:00"));
    }

    struct Failing(u32);
    impl super::Collector for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn collect(&mut self, _r: &mut faultline_proto::NodeReport) -> Result<(), super::CollectError> {
            Err(super::CollectError::Many(
                (0..self.0).map(|i| super::CollectError::Other(format!("problem {i}"))).collect(),
            ))
        }
    }
    struct Writes;
    impl super::Collector for Writes {
        fn name(&self) -> &'static str {
            "writes"
        }
        fn collect(&mut self, r: &mut faultline_proto::NodeReport) -> Result<(), super::CollectError> {
            r.disks.push(faultline_proto::DiskSample { device: "sda".into(), ..Default::default() });
            Ok(())
        }
    }

    #[test]
    fn a_failing_collector_is_counted_per_problem_and_the_next_one_still_runs() {
        let mut reg = super::Registry::empty();
        reg.push(Box::new(Failing(3)));
        reg.push(Box::new(Writes));
        let mut report = super::blank_report("n1", 1, 1000);
        reg.collect(&mut report);
        reg.collect(&mut report);
        assert_eq!(report.collector_errors.get("failing"), Some(&6));
        assert_eq!(report.collector_errors.get("writes"), Some(&0));
        assert_eq!(report.disks.len(), 2);
        let st = reg.status();
        assert_eq!(st.get("failing").map(|s| s.success), Some(false));
        assert_eq!(st.get("writes").map(|s| s.success), Some(true));
    }

    #[test]
    fn a_collector_that_could_not_start_has_a_failed_status_and_no_error_count() {
        let mut reg = super::Registry::empty();
        reg.unavailable("gpu");
        let mut report = super::blank_report("n1", 1, 1000);
        reg.collect(&mut report);
        assert_eq!(reg.status().get("gpu").map(|s| s.success), Some(false));
        assert!(report.collector_errors.is_empty(), "the report is unchanged: {:?}", report.collector_errors);
    }
}
