//! Collector: GPUs through NVML (nvml-wrapper): readings, lost and unresponsive GPUs, and XID/ECC
//! events pushed the moment NVML reports them.
//!
//! Shape:
//! - One `Nvml` in an `Arc`, shared by every thread; devices are looked up again on each poll.
//! - Each NVML device index has a worker thread that runs that GPU's queries. `collect` hands every
//!   worker a poll and waits until a common deadline: a GPU whose worker has not answered by then (a
//!   hung GSP blocks inside the driver) is reported `unresponsive`, and its worker gets no new poll
//!   until the stuck one returns. The collector itself never waits longer than the deadline, and one
//!   hung GPU does not delay the others. `nvmlDeviceGetCount` runs on a worker of its own the same way.
//! - A query a GPU answered NotSupported is remembered per GPU and not asked again; its name is listed
//!   in `GpuSample.not_supported`.
//! - GPUs are identified by UUID and keep the index they had when first seen. One answering
//!   GPU_IS_LOST, or missing from the device list, is reported with `state: lost` (identity from when
//!   it was last seen), never dropped, and one urgent `gpu_lost` event is pushed per loss.
//! - A separate thread (`gpu_events.rs`) waits on an NVML event set for XIDs and single/double-bit ECC
//!   events and pushes each as an urgent event, rate-limited by the same coalescer as the kernel log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_proto::{
    EccCounts, Event, EventClass, EventSource, GpuProcess, GpuSample, GpuState, NodeReport, NvLinkSample, PcieLink,
    RetiredPages, RowRemap, Severity,
};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, MemoryLocation, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;

use crate::collect::gpu_events::UuidIndex;
use crate::collect::gpu_health::{ExpectedGpus, clock_events, nvml_words, pci_present};
use crate::collect::{CollectError, Collector, PciMap, pci_key};
use crate::events::EventQueue;

/// How long one poll of all GPUs may take before a GPU that has not answered is called unresponsive.
/// A healthy H100 answers the ~60 queries of a poll in well under 100 ms; NVIDIA's GSP RPC timeout
/// (XID 119) is 6–45 s, so 2 s separates "slow" from "hung" with margin on both sides.
pub const POLL_DEADLINE: Duration = Duration::from_secs(2);
/// NVLink links NVML can report per GPU (`NVML_NVLINK_MAX_LINKS`, 18 on H100).
pub const NVLINK_MAX_LINKS: u32 = 18;
/// `NVML_FI_DEV_MEMORY_TEMP`: HBM temperature, only reachable as a field value.
const FI_DEV_MEMORY_TEMP: u32 = 82;

pub use faultline_proto::decode_throttle;

use faultline_proto::time::now_ms;

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// Queries each GPU (by UUID) answered NotSupported: not asked again. Shared by the workers, since
/// a GPU can move to another NVML index when one before it vanishes.
type NotSupportedMemory = Arc<Mutex<BTreeMap<String, BTreeSet<&'static str>>>>;

type Job = Box<dyn FnOnce(&Nvml) + Send>;

/// A thread that runs NVML calls for one device index, so a call that hangs blocks only it.
struct Worker {
    tx: Sender<Job>,
    busy: Arc<AtomicBool>,
}

impl Worker {
    fn spawn(nvml: Arc<Nvml>, name: String) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let b = busy.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            for job in rx {
                job(&nvml);
                b.store(false, Ordering::SeqCst);
            }
        })?;
        Ok(Worker { tx, busy })
    }

    /// Start `f` on the worker. `None` while it is still stuck in an earlier call.
    fn submit<R: Send + 'static>(&self, f: impl FnOnce(&Nvml) -> R + Send + 'static) -> Option<Receiver<R>> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |n| {
            let _ = rtx.send(f(n));
        });
        if self.tx.send(job).is_err() {
            self.busy.store(false, Ordering::SeqCst);
            return None;
        }
        Some(rrx)
    }
}

// ---------------------------------------------------------------------------------------------
// One GPU's poll (runs on its worker)
// ---------------------------------------------------------------------------------------------

/// Query bookkeeping for one poll: NotSupported memory, and whether the GPU is lost or hung (after
/// which no further query is sent this cycle).
struct Poll {
    not_supported: BTreeSet<&'static str>,
    lost: bool,
    hung: bool,
    /// The first GPU-level error (GPU_IS_LOST, Timeout, Unknown Error), in NVML's words; no further
    /// query is sent this cycle once there is one.
    nvml_error: Option<String>,
    errors: Vec<String>,
}

impl Poll {
    fn q<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T, NvmlError>) -> Option<T> {
        if self.lost || self.hung || self.nvml_error.is_some() || self.not_supported.contains(name) {
            return None;
        }
        match f() {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(name, e);
                None
            }
        }
    }

    fn fail(&mut self, name: &'static str, e: NvmlError) {
        match e {
            NvmlError::NotSupported => {
                self.not_supported.insert(name);
            }
            NvmlError::GpuLost => {
                self.lost = true;
                self.nvml_error.get_or_insert_with(|| nvml_words(&e));
            }
            NvmlError::Timeout => {
                self.hung = true;
                self.nvml_error.get_or_insert_with(|| nvml_words(&e));
            }
            // A GPU that fell off the bus often answers Unknown Error: reported as what NVML said,
            // with the PCI presence, for the analyzer to weigh against the kernel log. Not called
            // lost or hung here.
            NvmlError::Unknown => {
                self.nvml_error.get_or_insert_with(|| nvml_words(&e));
            }
            other => self.errors.push(format!("{name}: {other}")),
        }
    }
}

fn sample_f64(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => x as f64,
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

/// Poll the GPU at NVML index `index`. The returned sample's `index` is the NVML index; the collector
/// maps it to the stable one.
fn poll_device(nvml: &Nvml, index: u32, memory: &NotSupportedMemory) -> GpuSample {
    let mut s = GpuSample { index, ..Default::default() };
    let dev = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(NvmlError::GpuLost) => {
            s.state = GpuState::Lost;
            s.nvml_error = Some(nvml_words(&NvmlError::GpuLost));
            return s;
        }
        Err(e) => {
            tracing::debug!(gpu = index, error = %e, "device handle lookup failed");
            // A timeout is a hung GPU; another error (Unknown Error) is only reported as said.
            if matches!(e, NvmlError::Timeout) {
                s.state = GpuState::Unresponsive;
            }
            s.nvml_error = Some(nvml_words(&e));
            return s;
        }
    };
    let mut p = Poll { not_supported: BTreeSet::new(), lost: false, hung: false, nvml_error: None, errors: Vec::new() };

    let uuid = p.q("uuid", || dev.uuid());
    if let Some(u) = &uuid {
        p.not_supported = memory.lock().unwrap_or_else(|e| e.into_inner()).get(u).cloned().unwrap_or_default();
        s.uuid = u.clone();
    }
    s.name = p.q("name", || dev.name()).unwrap_or_default();
    s.serial = p.q("serial", || dev.serial());
    s.pci_bus_id = p.q("pci", || dev.pci_info()).map(|i| i.bus_id);

    if let Some(u) = p.q("utilization", || dev.utilization_rates()) {
        s.util_gpu_pct = Some(u.gpu.min(100) as f64);
        s.util_mem_pct = Some(u.memory.min(100) as f64);
    }
    if let Some(m) = p.q("memory", || dev.memory_info()) {
        s.mem_total_bytes = Some(m.total);
        s.mem_used_bytes = Some(m.used.min(m.total));
        s.mem_free_bytes = Some(m.free);
    }
    s.mig = p.q("mig", || super::gpu_mig::instances(nvml, &dev)).flatten();
    s.temp_c = p.q("temperature", || dev.temperature(TemperatureSensor::Gpu)).map(f64::from);
    if let Some(vals) = p.q("memory_temperature", || dev.field_values_for(&[FieldId(FI_DEV_MEMORY_TEMP)])) {
        match vals.into_iter().next().map(|r| r.and_then(|f| f.value)) {
            Some(Ok(v)) => s.mem_temp_c = Some(sample_f64(&v)).filter(|t| (1.0..250.0).contains(t)),
            Some(Err(e)) => p.fail("memory_temperature", e),
            None => {}
        }
    }
    s.power_w = p.q("power", || dev.power_usage()).map(|mw| mw as f64 / 1000.0);
    s.power_limit_w = p.q("power_limit", || dev.enforced_power_limit()).map(|mw| mw as f64 / 1000.0);
    s.energy_mj = p.q("energy", || dev.total_energy_consumption());
    s.sm_clock_mhz = p.q("clocks", || dev.clock_info(Clock::SM));
    s.mem_clock_mhz = p.q("clocks", || dev.clock_info(Clock::Memory));
    s.sm_clock_max_mhz = p.q("max_clocks", || dev.max_clock_info(Clock::SM));
    s.mem_clock_max_mhz = p.q("max_clocks", || dev.max_clock_info(Clock::Memory));
    if let Some(t) = p.q("throttle", || dev.current_throttle_reasons()) {
        s.throttle_mask = Some(t.bits());
        s.throttle_reasons = decode_throttle(t.bits());
    }
    s.clock_event_ns = p.q("clock_events", || clock_events(&dev)).unwrap_or_default();

    s.ecc = EccCounts {
        sbe_volatile: p.q("ecc", || dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)),
        dbe_volatile: p.q("ecc", || dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)),
        sbe_aggregate: p.q("ecc", || dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)),
        dbe_aggregate: p.q("ecc", || dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)),
        sram_uncorrectable: p.q("sram_ecc", || {
            dev.memory_error_counter(MemoryError::Uncorrected, EccCounter::Volatile, MemoryLocation::SRAM)
        }),
    };
    let sbe = p.q("retired_pages", || dev.retired_pages(RetirementCause::MultipleSingleBitEccErrors));
    let dbe = p.q("retired_pages", || dev.retired_pages(RetirementCause::DoubleBitEccError));
    let pending = p.q("retired_pages", || dev.are_pages_pending_retired());
    if let (Some(sbe), Some(dbe)) = (sbe, dbe) {
        s.retired_pages =
            Some(RetiredPages { sbe: sbe.len() as u64, dbe: dbe.len() as u64, pending: pending.unwrap_or(false) });
    }
    s.row_remap = p.q("row_remap", || remapped_rows(nvml, &dev));

    let generation = p.q("pcie", || dev.current_pcie_link_gen());
    let max_generation = p.q("pcie", || dev.max_pcie_link_gen());
    let width = p.q("pcie", || dev.current_pcie_link_width());
    let max_width = p.q("pcie", || dev.max_pcie_link_width());
    let replay_count = p.q("pcie_replay", || dev.pcie_replay_counter()).map(u64::from);
    if generation.is_some() || width.is_some() || replay_count.is_some() {
        s.pcie = Some(PcieLink { generation, max_generation, width, max_width, replay_count });
    }

    let mut nvlinks = poll_nvlinks(&dev, &mut p);
    let links: Vec<u32> = nvlinks.iter().map(|l| l.link).collect();
    if let Some(bytes) = p.q("nvlink_bytes", || super::gpu_nvlink_bytes::read(nvml, &dev, &links)) {
        for (l, (tx, rx)) in nvlinks.iter_mut().zip(bytes) {
            (l.tx_bytes, l.rx_bytes) = (tx, rx);
        }
    }
    s.nvlinks = nvlinks;

    if let Some(procs) = p.q("processes", || dev.running_compute_processes()) {
        s.processes = procs
            .into_iter()
            .take(faultline_proto::limits::MAX_PROCESSES_PER_GPU)
            .map(|pi| GpuProcess {
                pid: pi.pid,
                used_mem_bytes: match pi.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
    }

    if !p.errors.is_empty() {
        tracing::debug!(gpu = index, errors = ?p.errors, "some NVML queries failed");
    }
    s.state = if p.lost {
        GpuState::Lost
    } else if p.hung {
        GpuState::Unresponsive
    } else {
        GpuState::Ok
    };
    s.nvml_error = p.nvml_error.take();
    s.not_supported = p.not_supported.iter().map(|n| n.to_string()).collect();
    if let Some(u) = uuid {
        memory.lock().unwrap_or_else(|e| e.into_inner()).insert(u, p.not_supported);
    }
    s
}

/// Row remapping (A100 and later): nvml-wrapper has no method for it, so call the C function through
/// the loaded library.
fn remapped_rows(nvml: &Nvml, dev: &nvml_wrapper::Device) -> Result<RowRemap, NvmlError> {
    let Ok(sym) = nvml.lib().nvmlDeviceGetRemappedRows.as_ref() else {
        return Err(NvmlError::NotSupported);
    };
    let (mut corr, mut unc, mut pending, mut failure) = (0u32, 0u32, 0u32, 0u32);
    // SAFETY: the handle comes from this `Nvml`, and the four out-pointers are valid for writes.
    let ret = unsafe { sym(dev.handle(), &mut corr, &mut unc, &mut pending, &mut failure) };
    nvml_wrapper::error::nvml_try(ret)?;
    Ok(RowRemap { correctable: corr as u64, uncorrectable: unc as u64, pending: pending != 0, failure: failure != 0 })
}

fn poll_nvlinks(dev: &nvml_wrapper::Device, p: &mut Poll) -> Vec<NvLinkSample> {
    let mut out = Vec::new();
    if p.lost || p.hung || p.not_supported.contains("nvlink") {
        return out;
    }
    for link in 0..NVLINK_MAX_LINKS {
        let l = dev.link_wrapper_for(link);
        let active = match l.is_active() {
            Ok(a) => a,
            // Past the last link, or a GPU without NVLink.
            Err(NvmlError::InvalidArg) => break,
            Err(NvmlError::NotSupported) if link == 0 => {
                p.not_supported.insert("nvlink");
                break;
            }
            Err(NvmlError::NotSupported) => break,
            Err(e) => {
                p.fail("nvlink", e);
                break;
            }
        };
        let mut counter = |c: ErrorCounter| match l.error_counter(c) {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) | Err(NvmlError::InvalidArg) => None,
            Err(e) => {
                p.fail("nvlink", e);
                None
            }
        };
        let flit = counter(ErrorCounter::DlCrcFlit);
        let data = counter(ErrorCounter::DlCrcData);
        let replay = counter(ErrorCounter::DlReplay);
        let recovery = counter(ErrorCounter::DlRecovery);
        let crc = match (flit, data) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        out.push(NvLinkSample {
            link,
            active,
            crc_errors: crc,
            replay_errors: replay,
            recovery_errors: recovery,
            crc_flit_errors: flit,
            crc_data_errors: data,
            ..Default::default()
        });
        if p.lost || p.hung {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The collector
// ---------------------------------------------------------------------------------------------

/// A GPU as first seen, so it keeps its index and identity when it disappears.
#[derive(Debug, Clone)]
struct Known {
    index: u32,
    nvml_index: u32,
    uuid: Option<String>,
    name: String,
    serial: Option<String>,
    pci_bus_id: Option<String>,
}

/// The GPU collector. Built once; looks the devices up again on each poll.
pub struct GpuCollector {
    nvml: Arc<Nvml>,
    events: Arc<EventQueue>,
    pci: PciMap,
    deadline: Duration,
    system: Worker,
    workers: Vec<Worker>,
    known: Vec<Known>,
    uuid_index: UuidIndex,
    not_supported: NotSupportedMemory,
    /// Stable indexes for which a `gpu_lost` event went out and the GPU has not come back since.
    lost_announced: BTreeSet<u32>,
    stop: Arc<AtomicBool>,
    /// Where `bus/pci/devices` is looked up for a GPU that answers with an error.
    sysfs: std::path::PathBuf,
    expected: ExpectedGpus,
    /// The driver version NVML gave at start (`NodeReport.driver_version`).
    driver: Option<String>,
}

impl GpuCollector {
    /// Load NVML (from `lib` when given, else the system `libnvidia-ml.so`) and start the event thread.
    /// `None` when NVML cannot load; the reason is logged once.
    pub fn new(lib: Option<&Path>, events: Arc<EventQueue>, pci: PciMap) -> Option<GpuCollector> {
        let nvml = match lib {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        };
        let nvml = match nvml {
            Ok(n) => Arc::new(n),
            Err(e) => {
                tracing::warn!(reason = %e, "GPU collector off: {e}");
                return None;
            }
        };
        let driver = nvml.sys_driver_version().ok().filter(|d| !d.is_empty());
        let system = match Worker::spawn(nvml.clone(), "nvml-system".to_string()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(reason = %e, "GPU collector off: cannot start a thread: {e}");
                return None;
            }
        };
        let uuid_index: UuidIndex = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        super::gpu_events::spawn_event_thread(nvml.clone(), events.clone(), uuid_index.clone(), stop.clone());
        tracing::info!(driver = driver.as_deref().unwrap_or("unknown"), "GPU collector on");
        Some(GpuCollector {
            nvml,
            events,
            pci,
            deadline: POLL_DEADLINE,
            system,
            workers: Vec::new(),
            known: Vec::new(),
            uuid_index,
            not_supported: NotSupportedMemory::default(),
            lost_announced: BTreeSet::new(),
            stop,
            sysfs: std::path::PathBuf::from("/sys"),
            expected: ExpectedGpus::new(None, None, false),
            driver,
        })
    }

    /// Read PCI presence under this sysfs root instead of `/sys`.
    pub fn with_sysfs_root(mut self, root: std::path::PathBuf) -> Self {
        self.sysfs = root;
        self
    }

    /// The expected GPU count: `configured`, else learned at the first start and kept in
    /// `state_dir` (written only when `persist`).
    pub fn with_expected(mut self, configured: Option<u32>, state_dir: Option<&Path>, persist: bool) -> Self {
        self.expected = ExpectedGpus::new(configured, state_dir, persist);
        self
    }

    /// Use another poll deadline (tests, and the agent's per-call timeout setting).
    pub fn with_poll_deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    fn worker(&mut self, nvml_index: u32) -> Option<&Worker> {
        while self.workers.len() <= nvml_index as usize {
            let i = self.workers.len();
            match Worker::spawn(self.nvml.clone(), format!("nvml-gpu{i}")) {
                Ok(w) => self.workers.push(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start an NVML worker thread");
                    return None;
                }
            }
        }
        self.workers.get(nvml_index as usize)
    }

    /// `nvmlDeviceGetCount` on the system worker, bounded by `deadline`.
    fn device_count(&self, deadline: Instant) -> Result<u32, CollectError> {
        let rx = self
            .system
            .submit(|nvml| nvml.device_count())
            .ok_or_else(|| CollectError::Other("nvmlDeviceGetCount is still hung from an earlier poll".into()))?;
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(n)) => Ok(n.min(faultline_proto::limits::MAX_GPUS as u32)),
            Ok(Err(e)) => Err(CollectError::Other(format!("nvmlDeviceGetCount: {e}"))),
            Err(_) => Err(CollectError::Other("nvmlDeviceGetCount did not answer in time".into())),
        }
    }

    /// Find (or make) the `known` entry a polled sample belongs to; returns its position.
    fn match_known(&mut self, s: &GpuSample, nvml_index: u32, claimed: &BTreeSet<usize>) -> usize {
        if !s.uuid.is_empty() {
            if let Some(k) = self.known.iter().position(|k| k.uuid.as_deref() == Some(s.uuid.as_str())) {
                return k;
            }
            let len = self.known.len();
            if let Some(k) = (0..len).find(|&k| {
                self.known[k].uuid.is_none() && self.known[k].nvml_index == nvml_index && !claimed.contains(&k)
            }) {
                return k;
            }
        } else if let Some(k) =
            (0..self.known.len()).find(|k| self.known[*k].nvml_index == nvml_index && !claimed.contains(k))
        {
            return k;
        }
        let taken: BTreeSet<u32> = self.known.iter().map(|k| k.index).collect();
        let index = if taken.contains(&nvml_index) {
            (0..).find(|i| !taken.contains(i)).unwrap_or(nvml_index)
        } else {
            nvml_index
        };
        self.known.push(Known { index, nvml_index, uuid: None, name: String::new(), serial: None, pci_bus_id: None });
        self.known.len() - 1
    }

    fn lost_event(&mut self, k: &Known, why: &str) {
        if !self.lost_announced.insert(k.index) {
            return;
        }
        let ev = Event {
            ts_ms: now_ms(),
            source: EventSource::Agent,
            class: EventClass::GpuLost,
            severity: Severity::Critical,
            component: Some(format!("gpu{}", k.index)),
            device: k.pci_bus_id.as_deref().and_then(pci_key),
            count: 1,
            message: format!("GPU {} ({}) {why}", k.index, k.uuid.as_deref().unwrap_or("uuid unknown")),
            ..Default::default()
        };
        tracing::warn!(gpu = k.index, uuid = ?k.uuid, "GPU lost: {why}");
        self.events.push(ev, true);
    }
}

impl Drop for GpuCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Collector for GpuCollector {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let deadline = Instant::now() + self.deadline;
        report.driver_version = self.driver.clone();
        let count = self.device_count(deadline);
        report.expected_gpus = self.expected.expected(count.as_ref().ok().copied());
        let count = match count {
            Ok(n) => n,
            Err(e) => {
                // NVML itself is stuck or broken: every GPU we know is unresponsive, not gone.
                for k in &self.known {
                    report.gpus.push(identity_sample(k, GpuState::Unresponsive));
                }
                report.gpus.sort_by_key(|g| g.index);
                return Err(e);
            }
        };

        // Hand every GPU its poll, then collect answers until the common deadline.
        let mut pending: Vec<(u32, Option<Receiver<GpuSample>>)> = Vec::new();
        for j in 0..count {
            let memory = self.not_supported.clone();
            let rx = self.worker(j).and_then(|w| w.submit(move |nvml| poll_device(nvml, j, &memory)));
            pending.push((j, rx));
        }
        let mut polled: Vec<(u32, GpuSample)> = Vec::new();
        for (j, rx) in pending {
            let hung = || GpuSample { index: j, state: GpuState::Unresponsive, ..Default::default() };
            let sample = match rx {
                None => hung(),
                Some(rx) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(s) => s,
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => hung(),
                },
            };
            polled.push((j, sample));
        }

        // Map to stable indexes: answers with a UUID first, so UUID-less ones (lost, hung) match what is left.
        polled.sort_by_key(|(_, s)| s.uuid.is_empty());
        let mut claimed: BTreeSet<usize> = BTreeSet::new();
        let mut out: Vec<GpuSample> = Vec::new();
        for (j, mut s) in polled {
            let k = self.match_known(&s, j, &claimed);
            if !claimed.insert(k) {
                continue; // two answers for one GPU cannot happen with stable UUIDs; keep the first
            }
            let known = &mut self.known[k];
            known.nvml_index = j;
            if !s.uuid.is_empty() {
                known.uuid = Some(s.uuid.clone());
                if !s.name.is_empty() {
                    known.name = s.name.clone();
                }
                known.serial = s.serial.clone().or(known.serial.take());
                known.pci_bus_id = s.pci_bus_id.clone().or(known.pci_bus_id.take());
            } else {
                s.uuid = known.uuid.clone().unwrap_or_default();
                s.name = known.name.clone();
                s.serial = known.serial.clone();
                s.pci_bus_id = known.pci_bus_id.clone();
            }
            s.index = known.index;
            out.push(s);
        }
        // GPUs seen before and missing from the device list now.
        let vanished: Vec<Known> =
            (0..self.known.len()).filter(|k| !claimed.contains(k)).map(|k| self.known[k].clone()).collect();
        for k in &vanished {
            out.push(identity_sample(k, GpuState::Lost));
            self.lost_event(k, "vanished from the NVML device list");
        }
        let lost_now: Vec<Known> = out
            .iter()
            .filter(|s| s.state == GpuState::Lost)
            .filter_map(|s| self.known.iter().find(|k| k.index == s.index).cloned())
            .collect();
        for k in &lost_now {
            self.lost_event(k, "answered GPU_IS_LOST");
        }
        for s in &out {
            if s.state == GpuState::Ok {
                self.lost_announced.remove(&s.index);
            }
        }

        // Share identities with the event thread and the kernel-log watcher.
        {
            let mut ui = self.uuid_index.write().unwrap_or_else(|p| p.into_inner());
            let mut pci = self.pci.write().unwrap_or_else(|p| p.into_inner());
            for k in &self.known {
                if let Some(u) = &k.uuid {
                    ui.insert(u.clone(), k.index);
                }
                if let Some(key) = k.pci_bus_id.as_deref().and_then(pci_key) {
                    pci.insert(key, k.index);
                }
            }
        }

        for s in &mut out {
            if s.nvml_error.is_some() || s.state != GpuState::Ok {
                s.pci_present = pci_present(&self.sysfs, s.pci_bus_id.as_deref());
            }
        }
        out.sort_by_key(|g| g.index);
        report.gpus.extend(out);
        Ok(())
    }
}

fn identity_sample(k: &Known, state: GpuState) -> GpuSample {
    GpuSample {
        index: k.index,
        uuid: k.uuid.clone().unwrap_or_default(),
        name: k.name.clone(),
        serial: k.serial.clone(),
        pci_bus_id: k.pci_bus_id.clone(),
        state,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvml_wrapper::bitmasks::device::ThrottleReasons;

    #[test]
    fn the_throttle_table_in_proto_has_nvmls_bits() {
        let nvml = [
            ThrottleReasons::GPU_IDLE,
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            ThrottleReasons::SW_POWER_CAP,
            ThrottleReasons::HW_SLOWDOWN,
            ThrottleReasons::SYNC_BOOST,
            ThrottleReasons::SW_THERMAL_SLOWDOWN,
            ThrottleReasons::HW_THERMAL_SLOWDOWN,
            ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
            ThrottleReasons::DISPLAY_CLOCK_SETTING,
        ];
        for ((bit, name), n) in faultline_proto::THROTTLE_REASONS.iter().zip(nvml) {
            assert_eq!(*bit, n.bits(), "{name}");
        }
    }

    #[test]
    fn throttle_masks_decode_to_names() {
        assert_eq!(decode_throttle(0), Vec::<String>::new());
        assert_eq!(decode_throttle(0x1), vec!["gpu_idle"]);
        assert_eq!(decode_throttle(0x4 | 0x40), vec!["sw_power_cap", "hw_thermal_slowdown"]);
        assert_eq!(decode_throttle(0x8 | 0x80), vec!["hw_slowdown", "hw_power_brake_slowdown"]);
    }
}
