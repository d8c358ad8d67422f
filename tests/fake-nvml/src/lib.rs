//! A stand-in `libnvidia-ml.so` for tests: the subset of NVML's C API that faultline's GPU collector
//! calls through nvml-wrapper, answered from a JSON state file named by `FAKE_NVML_STATE`.
//!
//! The file is re-read whenever its modification time or size changes, and at every
//! `nvmlDeviceGetCount_v2`, so a test can change readings, lose a GPU, mark queries NotSupported, make
//! a GPU hang, or queue XID/ECC events while the agent runs. Without `FAKE_NVML_STATE` the library
//! shows 8 healthy H100 80GB GPUs. The format is documented in `README.md` next to this file.
//!
//! Device handles are `slot + 1` (the GPU's position in the state's `gpus` list), so a handle keeps
//! naming the same physical GPU when another one vanishes and the indexes shift, as with real NVML.

#![allow(non_snake_case, non_upper_case_globals)]
#![allow(clippy::missing_safety_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_char;
use std::os::raw::{c_int, c_uint, c_ulonglong};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nvml_wrapper_sys::bindings::*;
use serde::Deserialize;

mod mig;

/// NVML's return codes, as plain numbers.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const UNINITIALIZED: u32 = 1;
    pub const INVALID_ARGUMENT: u32 = 2;
    pub const NOT_SUPPORTED: u32 = 3;
    pub const INSUFFICIENT_SIZE: u32 = 7;
    pub const TIMEOUT: u32 = 10;
    pub const GPU_IS_LOST: u32 = 15;
    pub const UNKNOWN: u32 = 999;
}

/// NVML event type bits (`nvmlEventType*`).
mod ev {
    pub const SINGLE_BIT_ECC: u64 = 0x1;
    pub const DOUBLE_BIT_ECC: u64 = 0x2;
    pub const XID_CRITICAL: u64 = 0x8;
}

/// NVLink links an H100 SXM has.
const H100_NVLINKS: usize = 18;
/// How often `nvmlEventSetWait_v2` looks at the state file while it waits.
const EVENT_POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// The state file
// ---------------------------------------------------------------------------------------------

/// The whole fake system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default = "default_driver")]
    pub driver_version: String,
    /// GPUs in slot order. Absent: 8 healthy H100s.
    #[serde(default = "default_gpus")]
    pub gpus: Vec<Gpu>,
    /// Events to deliver once each through `nvmlEventSetWait_v2`.
    #[serde(default)]
    pub events: Vec<QueuedEvent>,
}

fn default_driver() -> String {
    "550.54.15".to_string()
}

fn default_gpus() -> Vec<Gpu> {
    (0..8).map(|_| Gpu::default()).collect()
}

impl Default for State {
    fn default() -> Self {
        State { driver_version: default_driver(), gpus: default_gpus(), events: Vec::new() }
    }
}

/// One GPU. Every field has a healthy H100 80GB default; identity defaults derive from the slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gpu {
    pub uuid: Option<String>,
    pub name: String,
    pub serial: Option<String>,
    /// `00000000:18:00.0`; default derives from the slot.
    pub pci_bus_id: Option<String>,
    /// false: gone from the device list (indexes after it shift down).
    pub present: bool,
    /// true: every call for it returns GPU_IS_LOST.
    pub lost: bool,
    /// Every call for it sleeps this long first (a hung GSP).
    pub delay_ms: u64,
    /// `timeout` or `unknown`: every call for it returns that error.
    pub error: Option<String>,
    /// Query names answered NOT_SUPPORTED (see README).
    pub not_supported: BTreeSet<String>,
    pub util_gpu: u32,
    pub util_mem: u32,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_reserved: u64,
    pub temp: u32,
    pub mem_temp: u32,
    pub power_mw: u32,
    pub power_limit_mw: u32,
    pub energy_mj: u64,
    pub sm_clock: u32,
    pub sm_clock_max: u32,
    pub mem_clock: u32,
    pub mem_clock_max: u32,
    pub throttle_mask: u64,
    pub ecc: Ecc,
    pub retired_pages: Retired,
    pub row_remap: RowRemap,
    pub pcie: Pcie,
    /// Absent: 18 active links with zero errors. Empty list: no NVLink (NOT_SUPPORTED).
    pub nvlinks: Option<Vec<NvLink>>,
    pub processes: Vec<Process>,
    /// `nvmlDeviceGetHandleByIndex_v2` answers this error (`timeout`, `unknown`): a GPU whose handle
    /// cannot be had, as a fallen-off GPU often answers `Unknown Error`.
    pub handle_error: Option<String>,
    /// Cumulative clocks-event time per reason, ns, through the field values
    /// `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` (`sw_power_cap`, `sync_boost`, `sw_thermal_slowdown`,
    /// `hw_thermal_slowdown`, `hw_power_brake_slowdown`); a reason not listed reads 0.
    pub clock_event_ns: BTreeMap<String, u64>,
    /// MIG mode on, with these MIG devices (`mig.rs`). Absent: MIG off.
    pub mig: Option<Vec<mig::MigDev>>,
}

impl Default for Gpu {
    fn default() -> Self {
        Gpu {
            uuid: None,
            name: "NVIDIA H100 80GB HBM3".to_string(),
            serial: None,
            pci_bus_id: None,
            present: true,
            lost: false,
            delay_ms: 0,
            error: None,
            not_supported: BTreeSet::new(),
            util_gpu: 0,
            util_mem: 0,
            mem_total: 85_520_809_984,
            mem_used: 566_755_328,
            mem_reserved: 0,
            temp: 32,
            mem_temp: 30,
            power_mw: 71_000,
            power_limit_mw: 700_000,
            energy_mj: 123_456_789,
            sm_clock: 345,
            sm_clock_max: 1980,
            mem_clock: 2619,
            mem_clock_max: 2619,
            throttle_mask: 0x1,
            ecc: Ecc::default(),
            retired_pages: Retired::default(),
            row_remap: RowRemap::default(),
            pcie: Pcie::default(),
            nvlinks: None,
            processes: Vec::new(),
            handle_error: None,
            clock_event_ns: BTreeMap::new(),
            mig: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ecc {
    pub sbe_volatile: u64,
    pub dbe_volatile: u64,
    pub sbe_aggregate: u64,
    pub dbe_aggregate: u64,
    pub sram_uncorrectable: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retired {
    pub sbe: u32,
    pub dbe: u32,
    pub pending: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RowRemap {
    pub correctable: u32,
    pub uncorrectable: u32,
    pub pending: bool,
    pub failure: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pcie {
    pub generation: u32,
    pub max_gen: u32,
    pub width: u32,
    pub max_width: u32,
    pub replay: u32,
}

impl Default for Pcie {
    fn default() -> Self {
        Pcie { generation: 5, max_gen: 5, width: 16, max_width: 16, replay: 0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvLink {
    pub active: bool,
    pub crc_flit: u64,
    pub crc_data: u64,
    pub replay: u64,
    pub recovery: u64,
    /// Data KiB sent and received (`NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`/`_RX`, scope = link).
    pub tx_kib: u64,
    pub rx_kib: u64,
}

impl Default for NvLink {
    fn default() -> Self {
        NvLink { active: true, crc_flit: 0, crc_data: 0, replay: 0, recovery: 0, tx_kib: 0, rx_kib: 0 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Process {
    pub pid: u32,
    pub used_mem: u64,
}

/// An event waiting in the state file. `id` makes delivery once-only across re-reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedEvent {
    pub id: u64,
    /// The GPU's slot in `gpus`.
    pub gpu: usize,
    /// `xid`, `ecc_sbe` or `ecc_dbe`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub xid: u64,
}

impl Gpu {
    fn uuid_for(&self, slot: usize) -> String {
        self.uuid.clone().unwrap_or_else(|| format!("GPU-fa0e0000-0000-4000-8000-{slot:012x}"))
    }
    fn serial_for(&self, slot: usize) -> String {
        self.serial.clone().unwrap_or_else(|| format!("16520230{slot:05}"))
    }
    /// H100 HGX boards put their GPUs on these buses.
    fn bus_id_for(&self, slot: usize) -> String {
        const BUSES: [u32; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];
        self.pci_bus_id.clone().unwrap_or_else(|| {
            let bus = BUSES.get(slot).copied().unwrap_or(0x100u32.saturating_sub(slot as u32) & 0xff);
            format!("00000000:{bus:02X}:00.0")
        })
    }
    fn links(&self) -> Vec<NvLink> {
        self.nvlinks.clone().unwrap_or_else(|| (0..H100_NVLINKS).map(|_| NvLink::default()).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Process-wide library state
// ---------------------------------------------------------------------------------------------

struct Lib {
    init_count: u32,
    state: State,
    /// (mtime, len) of the state file when last read.
    seen: Option<(SystemTime, u64)>,
    delivered: BTreeSet<u64>,
    /// Event set id → (slot → registered event mask).
    sets: BTreeMap<usize, BTreeMap<usize, u64>>,
    next_set: usize,
}

static LIB: Mutex<Option<Lib>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Lib>> {
    LIB.lock().unwrap_or_else(|p| p.into_inner())
}

fn state_path() -> Option<PathBuf> {
    std::env::var_os("FAKE_NVML_STATE").map(PathBuf::from)
}

impl Lib {
    fn new() -> Lib {
        let mut lib = Lib {
            init_count: 0,
            state: State::default(),
            seen: None,
            delivered: BTreeSet::new(),
            sets: BTreeMap::new(),
            next_set: 1,
        };
        lib.reload(true);
        lib
    }

    /// Re-read the state file when it changed (or always, with `force`). A file that does not parse
    /// (a test half-way through writing it) leaves the previous state in place and is tried again.
    fn reload(&mut self, force: bool) {
        let Some(path) = state_path() else { return };
        let Ok(meta) = std::fs::metadata(&path) else { return };
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if !force && self.seen == Some(stamp) {
            return;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { return };
        match serde_json::from_str::<State>(&text) {
            Ok(s) => {
                self.state = s;
                self.seen = Some(stamp);
            }
            Err(e) => eprintln!("fake-nvml: {} does not parse, keeping the previous state: {e}", path.display()),
        }
    }

    /// Slots of the GPUs in the device list, in index order.
    fn present(&self) -> Vec<usize> {
        self.state.gpus.iter().enumerate().filter(|(_, g)| g.present).map(|(i, _)| i).collect()
    }
}

fn slot_of(device: nvmlDevice_t) -> Option<usize> {
    // MIG device handles (`mig.rs`) are not GPU handles.
    if mig::is_mig_handle(device) {
        return None;
    }
    (device as usize).checked_sub(1)
}

/// Common entry of every per-device call: re-read the state, apply the GPU's delay (without the
/// lock held), its lost/error flags and NotSupported list, then answer with `f`.
fn with_gpu(device: nvmlDevice_t, query: &str, f: impl FnOnce(&Gpu, usize) -> u32) -> nvmlReturn_t {
    let Some(slot) = slot_of(device) else { return rc::INVALID_ARGUMENT };
    let delay = {
        let mut g = lock();
        let Some(lib) = g.as_mut().filter(|l| l.init_count > 0) else { return rc::UNINITIALIZED };
        lib.reload(false);
        match lib.state.gpus.get(slot) {
            Some(gpu) => gpu.delay_ms,
            None => return rc::INVALID_ARGUMENT,
        }
    };
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let g = lock();
    let Some(lib) = g.as_ref() else { return rc::UNINITIALIZED };
    let Some(gpu) = lib.state.gpus.get(slot) else { return rc::INVALID_ARGUMENT };
    if gpu.lost || !gpu.present {
        return rc::GPU_IS_LOST;
    }
    match gpu.error.as_deref() {
        Some("timeout") => return rc::TIMEOUT,
        Some(_) => return rc::UNKNOWN,
        None => {}
    }
    if gpu.not_supported.contains(query) {
        return rc::NOT_SUPPORTED;
    }
    f(gpu, slot)
}

/// Copy `s` into a C buffer of `len` bytes, NUL-terminated.
unsafe fn put_str(s: &str, buf: *mut c_char, len: c_uint) -> nvmlReturn_t {
    if buf.is_null() {
        return rc::INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return rc::INSUFFICIENT_SIZE;
    }
    // SAFETY: the caller gave a buffer of `len` bytes and we checked the string plus NUL fits.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buf, bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    rc::SUCCESS
}

/// Write `v` through `p` when it is not NULL.
unsafe fn put<T>(p: *mut T, v: T) -> nvmlReturn_t {
    if p.is_null() {
        return rc::INVALID_ARGUMENT;
    }
    // SAFETY: non-NULL out-pointer handed to us by the caller for exactly this type.
    unsafe { p.write(v) };
    rc::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Library and system
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    let mut g = lock();
    let lib = g.get_or_insert_with(Lib::new);
    lib.init_count += 1;
    rc::SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    nvmlInit_v2()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut g = lock();
    match g.as_mut() {
        Some(lib) if lib.init_count > 0 => {
            lib.init_count -= 1;
            rc::SUCCESS
        }
        _ => rc::UNINITIALIZED,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(_result: nvmlReturn_t) -> *const c_char {
    c"fake-nvml error".as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    let v = match lock().as_ref() {
        Some(lib) if lib.init_count > 0 => lib.state.driver_version.clone(),
        _ => return rc::UNINITIALIZED,
    };
    // SAFETY: forwarded caller buffer.
    unsafe { put_str(&v, version, length) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    // SAFETY: forwarded caller buffer.
    unsafe { put_str("12.550.54.15", version, length) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    let mut g = lock();
    let Some(lib) = g.as_mut().filter(|l| l.init_count > 0) else { return rc::UNINITIALIZED };
    lib.reload(true);
    let n = lib.present().len() as c_uint;
    // SAFETY: caller's out-pointer.
    unsafe { put(count, n) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    let mut g = lock();
    let Some(lib) = g.as_mut().filter(|l| l.init_count > 0) else { return rc::UNINITIALIZED };
    lib.reload(false);
    let Some(&slot) = lib.present().get(index as usize) else { return rc::INVALID_ARGUMENT };
    if lib.state.gpus[slot].lost {
        return rc::GPU_IS_LOST;
    }
    match lib.state.gpus[slot].handle_error.as_deref() {
        Some("timeout") => return rc::TIMEOUT,
        Some(_) => return rc::UNKNOWN,
        None => {}
    }
    // SAFETY: caller's out-pointer.
    unsafe { put(device, (slot + 1) as nvmlDevice_t) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    let Some(slot) = slot_of(device) else { return rc::INVALID_ARGUMENT };
    let pos = match lock().as_ref() {
        Some(lib) => lib.present().iter().position(|&s| s == slot),
        None => return rc::UNINITIALIZED,
    };
    match pos {
        // SAFETY: caller's out-pointer.
        Some(i) => unsafe { put(index, i as c_uint) },
        None => rc::GPU_IS_LOST,
    }
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    if let Some(rc) = mig::with_mig(device, |m, g, s| unsafe { put_str(&m.uuid_for(g, s), uuid, length) }) {
        return rc;
    }
    // SAFETY: forwarded caller buffer.
    with_gpu(device, "uuid", |g, s| unsafe { put_str(&g.uuid_for(s), uuid, length) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    if let Some(rc) = mig::with_mig(device, |m, g, _| unsafe { put_str(&m.name_for(g), name, length) }) {
        return rc;
    }
    // SAFETY: forwarded caller buffer.
    with_gpu(device, "name", |g, _| unsafe { put_str(&g.name, name, length) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSerial(
    device: nvmlDevice_t,
    serial: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller buffer.
    with_gpu(device, "serial", |g, s| unsafe { put_str(&g.serial_for(s), serial, length) })
}

/// Parse `dddddddd:bb:dd.f` into (domain, bus, device).
fn parse_bus_id(s: &str) -> (u32, u32, u32) {
    let mut it = s.split([':', '.']);
    let mut next = || it.next().and_then(|p| u32::from_str_radix(p, 16).ok()).unwrap_or(0);
    (next(), next(), next())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    with_gpu(device, "pci", |g, s| {
        let bus_id = g.bus_id_for(s);
        let (domain, bus, dev) = parse_bus_id(&bus_id);
        // SAFETY: all-zero is a valid nvmlPciInfo_t (integers and char arrays).
        let mut info: nvmlPciInfo_t = unsafe { std::mem::zeroed() };
        info.domain = domain;
        info.bus = bus;
        info.device = dev;
        info.pciDeviceId = 0x2330_10de;
        info.pciSubSystemId = 0x16c1_10de;
        for (dst, src) in info.busId.iter_mut().zip(bus_id.bytes().take(31)) {
            *dst = src as c_char;
        }
        let legacy = format!("{domain:04X}:{bus:02X}:{dev:02X}.0");
        for (dst, src) in info.busIdLegacy.iter_mut().zip(legacy.bytes().take(15)) {
            *dst = src as c_char;
        }
        // SAFETY: caller's out-pointer.
        unsafe { put(pci, info) }
    })
}

// ---------------------------------------------------------------------------------------------
// Readings
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    u: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "utilization", |g, _| unsafe { put(u, nvmlUtilization_t { gpu: g.util_gpu, memory: g.util_mem }) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(device: nvmlDevice_t, m: *mut nvmlMemory_v2_t) -> nvmlReturn_t {
    if let Some(rc) = mig::with_mig(device, |d, _, _| {
        if m.is_null() {
            return rc::INVALID_ARGUMENT;
        }
        let free = d.mem_total.saturating_sub(d.mem_used);
        // SAFETY: non-NULL caller struct; keep the version the caller set.
        unsafe {
            let version = (*m).version;
            m.write(nvmlMemory_v2_t { version, total: d.mem_total, reserved: 0, free, used: d.mem_used });
        }
        rc::SUCCESS
    }) {
        return rc;
    }
    with_gpu(device, "memory", |g, _| {
        if m.is_null() {
            return rc::INVALID_ARGUMENT;
        }
        let free = g.mem_total.saturating_sub(g.mem_used).saturating_sub(g.mem_reserved);
        // SAFETY: non-NULL caller struct; keep the version the caller set.
        unsafe {
            let version = (*m).version;
            m.write(nvmlMemory_v2_t { version, total: g.mem_total, reserved: g.mem_reserved, free, used: g.mem_used });
        }
        rc::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, m: *mut nvmlMemory_t) -> nvmlReturn_t {
    with_gpu(device, "memory", |g, _| {
        let free = g.mem_total.saturating_sub(g.mem_used);
        // SAFETY: caller's out-pointer.
        unsafe { put(m, nvmlMemory_t { total: g.mem_total, free, used: g.mem_used }) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor: c_uint,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    if sensor != 0 {
        return rc::INVALID_ARGUMENT;
    }
    // SAFETY: caller's out-pointer.
    with_gpu(device, "temperature", |g, _| unsafe { put(temp, g.temp) })
}

/// The reason name of an `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` field id (driver r550+ numbering: the
/// two with older perf-policy ids, 74 and 76, and 251–253).
fn clock_event_reason(id: u32) -> Option<&'static str> {
    Some(match id {
        74 => "sw_power_cap",
        76 => "sync_boost",
        251 => "sw_thermal_slowdown",
        252 => "hw_thermal_slowdown",
        253 => "hw_power_brake_slowdown",
        _ => return None,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    count: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    if values.is_null() || count < 0 {
        return rc::INVALID_ARGUMENT;
    }
    with_gpu(device, "field_values", |g, _| {
        // SAFETY: the caller passes `count` initialized entries.
        let values = unsafe { std::slice::from_raw_parts_mut(values, count as usize) };
        for v in values {
            let id = v.fieldId;
            let (ret, val): (u32, Option<u64>) = match id {
                field_id::NVML_FI_DEV_MEMORY_TEMP if g.not_supported.contains("memory_temperature") => {
                    (rc::NOT_SUPPORTED, None)
                }
                field_id::NVML_FI_DEV_MEMORY_TEMP => (rc::SUCCESS, Some(g.mem_temp as u64)),
                field_id::NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION if g.not_supported.contains("energy") => {
                    (rc::NOT_SUPPORTED, None)
                }
                field_id::NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION => (rc::SUCCESS, Some(g.energy_mj)),
                field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX | field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX
                    if g.not_supported.contains("nvlink") =>
                {
                    (rc::NOT_SUPPORTED, None)
                }
                field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX | field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX => {
                    match g.links().get(v.scopeId as usize) {
                        Some(l) if id == field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX => {
                            (rc::SUCCESS, Some(l.tx_kib))
                        }
                        Some(l) => (rc::SUCCESS, Some(l.rx_kib)),
                        None => (rc::INVALID_ARGUMENT, None),
                    }
                }
                _ if g.not_supported.contains("clock_events") && clock_event_reason(id).is_some() => {
                    (rc::NOT_SUPPORTED, None)
                }
                _ => match clock_event_reason(id) {
                    Some(r) => (rc::SUCCESS, Some(g.clock_event_ns.get(r).copied().unwrap_or(0))),
                    None => (rc::NOT_SUPPORTED, None),
                },
            };
            v.nvmlReturn = ret;
            v.latencyUsec = 3;
            v.timestamp =
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
            if let Some(x) = val {
                v.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
                v.value = nvmlValue_t { ullVal: x };
            }
        }
        rc::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: nvmlDevice_t, power: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "power", |g, _| unsafe { put(power, g.power_mw) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(device: nvmlDevice_t, limit: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "power_limit", |g, _| unsafe { put(limit, g.power_limit_mw) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(device: nvmlDevice_t, limit: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "power_limit", |g, _| unsafe { put(limit, g.power_limit_mw) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "energy", |g, _| unsafe { put(energy, g.energy_mj) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, "clocks", |g, _| {
        let v = match kind {
            nvmlClockType_enum_NVML_CLOCK_GRAPHICS | nvmlClockType_enum_NVML_CLOCK_SM => g.sm_clock,
            nvmlClockType_enum_NVML_CLOCK_MEM => g.mem_clock,
            nvmlClockType_enum_NVML_CLOCK_VIDEO => 1305,
            _ => return rc::INVALID_ARGUMENT,
        };
        // SAFETY: caller's out-pointer.
        unsafe { put(clock, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, "max_clocks", |g, _| {
        let v = match kind {
            nvmlClockType_enum_NVML_CLOCK_GRAPHICS | nvmlClockType_enum_NVML_CLOCK_SM => g.sm_clock_max,
            nvmlClockType_enum_NVML_CLOCK_MEM => g.mem_clock_max,
            nvmlClockType_enum_NVML_CLOCK_VIDEO => 1755,
            _ => return rc::INVALID_ARGUMENT,
        };
        // SAFETY: caller's out-pointer.
        unsafe { put(clock, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: nvmlDevice_t,
    r: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "throttle", |g, _| unsafe { put(r, g.throttle_mask) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(
    device: nvmlDevice_t,
    r: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded.
    unsafe { nvmlDeviceGetCurrentClocksThrottleReasons(device, r) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedClocksThrottleReasons(
    device: nvmlDevice_t,
    r: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "throttle", |_, _| unsafe { put(r, 0x1ff) })
}

// ---------------------------------------------------------------------------------------------
// Memory errors
// ---------------------------------------------------------------------------------------------

fn ecc_count(g: &Gpu, error_type: c_uint, counter: c_uint) -> Option<u64> {
    match (error_type, counter) {
        (nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_CORRECTED, nvmlEccCounterType_enum_NVML_VOLATILE_ECC) => {
            Some(g.ecc.sbe_volatile)
        }
        (nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvmlEccCounterType_enum_NVML_VOLATILE_ECC) => {
            Some(g.ecc.dbe_volatile)
        }
        (nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_CORRECTED, nvmlEccCounterType_enum_NVML_AGGREGATE_ECC) => {
            Some(g.ecc.sbe_aggregate)
        }
        (nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvmlEccCounterType_enum_NVML_AGGREGATE_ECC) => {
            Some(g.ecc.dbe_aggregate)
        }
        _ => None,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter: c_uint,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    with_gpu(device, "ecc", |g, _| match ecc_count(g, error_type, counter) {
        // SAFETY: caller's out-pointer.
        Some(v) => unsafe { put(count, v) },
        None => rc::INVALID_ARGUMENT,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryErrorCounter(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter: c_uint,
    location: c_uint,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    let query = if location == nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_SRAM { "sram_ecc" } else { "ecc" };
    with_gpu(device, query, |g, _| {
        let v = match location {
            nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_SRAM => {
                if error_type == nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_UNCORRECTED
                    && counter == nvmlEccCounterType_enum_NVML_VOLATILE_ECC
                {
                    g.ecc.sram_uncorrectable
                } else {
                    0
                }
            }
            nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_DEVICE_MEMORY => match ecc_count(g, error_type, counter) {
                Some(v) => v,
                None => return rc::INVALID_ARGUMENT,
            },
            l if l < nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_COUNT => 0,
            _ => return rc::INVALID_ARGUMENT,
        };
        // SAFETY: caller's out-pointer.
        unsafe { put(count, v) }
    })
}

fn retired_count(g: &Gpu, cause: c_uint) -> Option<u32> {
    match cause {
        nvmlPageRetirementCause_enum_NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS => {
            Some(g.retired_pages.sbe)
        }
        nvmlPageRetirementCause_enum_NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR => Some(g.retired_pages.dbe),
        _ => None,
    }
}

/// Both retired-page calls: a count query (`*count == 0`) answers the count; otherwise fill up to
/// `*count` addresses (and timestamps).
unsafe fn retired(
    device: nvmlDevice_t,
    cause: c_uint,
    count: *mut c_uint,
    addrs: *mut c_ulonglong,
    ts: *mut c_ulonglong,
) -> nvmlReturn_t {
    with_gpu(device, "retired_pages", |g, _| {
        let Some(n) = retired_count(g, cause) else { return rc::INVALID_ARGUMENT };
        if count.is_null() {
            return rc::INVALID_ARGUMENT;
        }
        // SAFETY: non-NULL caller pointer; buffers have `*count` entries as NVML requires.
        unsafe {
            let cap = *count;
            *count = n;
            if cap < n {
                return if cap == 0 { rc::SUCCESS } else { rc::INSUFFICIENT_SIZE };
            }
            for i in 0..n as usize {
                if !addrs.is_null() {
                    *addrs.add(i) = 0x1_2bac_0000 + (i as u64) * 0x1000;
                }
                if !ts.is_null() {
                    *ts.add(i) = 1_700_000_000 + i as u64;
                }
            }
        }
        rc::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages(
    device: nvmlDevice_t,
    cause: c_uint,
    count: *mut c_uint,
    addrs: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller pointers.
    unsafe { retired(device, cause, count, addrs, std::ptr::null_mut()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages_v2(
    device: nvmlDevice_t,
    cause: c_uint,
    count: *mut c_uint,
    addrs: *mut c_ulonglong,
    ts: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller pointers.
    unsafe { retired(device, cause, count, addrs, ts) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPagesPendingStatus(
    device: nvmlDevice_t,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "retired_pages", |g, _| unsafe { put(pending, g.retired_pages.pending as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRemappedRows(
    device: nvmlDevice_t,
    corr: *mut c_uint,
    unc: *mut c_uint,
    pending: *mut c_uint,
    failure: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, "row_remap", |g, _| {
        let r = &g.row_remap;
        // SAFETY: caller's out-pointers.
        unsafe {
            for ret in [
                put(corr, r.correctable),
                put(unc, r.uncorrectable),
                put(pending, r.pending as c_uint),
                put(failure, r.failure as c_uint),
            ] {
                if ret != rc::SUCCESS {
                    return ret;
                }
            }
        }
        rc::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// PCIe and NVLink
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkGeneration(device: nvmlDevice_t, v: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "pcie", |g, _| unsafe { put(v, g.pcie.generation) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkGeneration(device: nvmlDevice_t, v: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "pcie", |g, _| unsafe { put(v, g.pcie.max_gen) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkWidth(device: nvmlDevice_t, v: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "pcie", |g, _| unsafe { put(v, g.pcie.width) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkWidth(device: nvmlDevice_t, v: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "pcie", |g, _| unsafe { put(v, g.pcie.max_width) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieReplayCounter(device: nvmlDevice_t, v: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "pcie_replay", |g, _| unsafe { put(v, g.pcie.replay) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: c_uint,
    active: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, "nvlink", |g, _| {
        let links = g.links();
        if links.is_empty() {
            return rc::NOT_SUPPORTED;
        }
        match links.get(link as usize) {
            // SAFETY: caller's out-pointer.
            Some(l) => unsafe { put(active, l.active as c_uint) },
            None => rc::INVALID_ARGUMENT,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkErrorCounter(
    device: nvmlDevice_t,
    link: c_uint,
    counter: c_uint,
    value: *mut c_ulonglong,
) -> nvmlReturn_t {
    with_gpu(device, "nvlink", |g, _| {
        let links = g.links();
        if links.is_empty() {
            return rc::NOT_SUPPORTED;
        }
        let Some(l) = links.get(link as usize) else { return rc::INVALID_ARGUMENT };
        let v = match counter {
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_REPLAY => l.replay,
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_RECOVERY => l.recovery,
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_FLIT => l.crc_flit,
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_DATA => l.crc_data,
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_ECC_DATA => 0,
            _ => return rc::INVALID_ARGUMENT,
        };
        // SAFETY: caller's out-pointer.
        unsafe { put(value, v) }
    })
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    with_gpu(device, "processes", |g, _| {
        if count.is_null() {
            return rc::INVALID_ARGUMENT;
        }
        let n = g.processes.len();
        // SAFETY: non-NULL caller pointer; `infos` holds `*count` entries when not NULL.
        unsafe {
            let cap = *count as usize;
            *count = n as c_uint;
            if infos.is_null() || cap < n {
                return if n == 0 { rc::SUCCESS } else { rc::INSUFFICIENT_SIZE };
            }
            for (i, p) in g.processes.iter().enumerate() {
                infos.add(i).write(nvmlProcessInfo_t {
                    pid: p.pid,
                    usedGpuMemory: p.used_mem,
                    gpuInstanceId: 0xFFFF_FFFF,
                    computeInstanceId: 0xFFFF_FFFF,
                });
            }
        }
        rc::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

fn event_bit(kind: &str) -> u64 {
    match kind {
        "xid" => ev::XID_CRITICAL,
        "ecc_sbe" => ev::SINGLE_BIT_ECC,
        "ecc_dbe" => ev::DOUBLE_BIT_ECC,
        _ => 0,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    types: *mut c_ulonglong,
) -> nvmlReturn_t {
    with_gpu(device, "events", |_, _| {
        // SAFETY: caller's out-pointer.
        unsafe { put(types, ev::SINGLE_BIT_ECC | ev::DOUBLE_BIT_ECC | ev::XID_CRITICAL | 0x4 | 0x10) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    let mut g = lock();
    let Some(lib) = g.as_mut().filter(|l| l.init_count > 0) else { return rc::UNINITIALIZED };
    let id = lib.next_set;
    lib.next_set += 1;
    lib.sets.insert(id, BTreeMap::new());
    // SAFETY: caller's out-pointer.
    unsafe { put(set, id as nvmlEventSet_t) }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    let mut g = lock();
    let Some(lib) = g.as_mut() else { return rc::UNINITIALIZED };
    match lib.sets.remove(&(set as usize)) {
        Some(_) => rc::SUCCESS,
        None => rc::INVALID_ARGUMENT,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    let ret = with_gpu(device, "events", |_, _| rc::SUCCESS);
    if ret != rc::SUCCESS {
        return ret;
    }
    let Some(slot) = slot_of(device) else { return rc::INVALID_ARGUMENT };
    let mut g = lock();
    let Some(lib) = g.as_mut() else { return rc::UNINITIALIZED };
    match lib.sets.get_mut(&(set as usize)) {
        Some(regs) => {
            *regs.entry(slot).or_insert(0) |= types;
            rc::SUCCESS
        }
        None => rc::INVALID_ARGUMENT,
    }
}

/// Deliver the first undelivered queued event whose GPU is registered in `set` for its type, or
/// wait (re-reading the state file) until one appears or `timeout_ms` passes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    if data.is_null() {
        return rc::INVALID_ARGUMENT;
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    loop {
        {
            let mut g = lock();
            let Some(lib) = g.as_mut().filter(|l| l.init_count > 0) else { return rc::UNINITIALIZED };
            lib.reload(false);
            let Some(regs) = lib.sets.get(&(set as usize)) else { return rc::INVALID_ARGUMENT };
            let found = lib.state.events.iter().find(|e| {
                !lib.delivered.contains(&e.id) && regs.get(&e.gpu).is_some_and(|m| m & event_bit(&e.kind) != 0)
            });
            if let Some(e) = found.cloned() {
                lib.delivered.insert(e.id);
                let bit = event_bit(&e.kind);
                let out = nvmlEventData_t {
                    device: (e.gpu + 1) as nvmlDevice_t,
                    eventType: bit,
                    eventData: if bit == ev::XID_CRITICAL { e.xid } else { 0 },
                    gpuInstanceId: 0xFFFF_FFFF,
                    computeInstanceId: 0xFFFF_FFFF,
                };
                // SAFETY: non-NULL caller out-pointer.
                unsafe { data.write(out) };
                return rc::SUCCESS;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return rc::TIMEOUT;
        }
        std::thread::sleep(EVENT_POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_eight_healthy_h100s() {
        let s = State::default();
        assert_eq!(s.gpus.len(), 8);
        assert_eq!(s.gpus[3].bus_id_for(3), "00000000:5D:00.0");
        assert_eq!(s.gpus[0].links().len(), H100_NVLINKS);
    }

    #[test]
    fn state_file_format_parses_with_partial_gpus() {
        let s: State = serde_json::from_str(
            r#"{"gpus":[{"lost":true},{"temp":90,"not_supported":["ecc"],"pcie":{"width":8}}],
                "events":[{"id":1,"gpu":0,"type":"xid","xid":79}]}"#,
        )
        .unwrap();
        assert!(s.gpus[0].lost);
        assert_eq!(s.gpus[1].temp, 90);
        assert_eq!(s.gpus[1].pcie.width, 8);
        assert_eq!(s.gpus[1].pcie.max_width, 16);
        assert_eq!(s.events[0].xid, 79);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<State>(r#"{"gpus":[{"temperature":3}]}"#).is_err());
    }

    #[test]
    fn bus_ids_parse() {
        assert_eq!(parse_bus_id("00000000:3B:00.0"), (0, 0x3b, 0));
    }
}
