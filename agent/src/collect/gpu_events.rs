//! The GPU collector's NVML event thread: waits on an event set over every device for XIDs and
//! single/double-bit ECC events and pushes each as an urgent event, rate-limited by the same
//! coalescer as the kernel log. Started by `GpuCollector::new`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use faultline_proto::time::now_ms;
use faultline_proto::{Event, EventClass, EventSource, Severity};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;

use super::pci_key;
use crate::events::{Coalescer, EventQueue};
use crate::xid::XidTracker;

/// How long one `nvmlEventSetWait` blocks before the event thread checks for shutdown and flushes
/// rate-limited events. Short enough that a flush is never late by more than half a second.
pub const EVENT_WAIT_MS: u32 = 500;
/// After the event thread loses its event set, wait this long before building a new one.
pub(super) const EVENT_RETRY: Duration = Duration::from_secs(5);
/// UUID → stable report index, shared with the event thread.
pub(super) type UuidIndex = Arc<RwLock<BTreeMap<String, u32>>>;

/// What the event thread knows about a registered device handle.
#[derive(Debug, Clone)]
struct Registered {
    nvml_index: u32,
    uuid: Option<String>,
    pci: Option<String>,
}

pub(super) fn spawn_event_thread(
    nvml: Arc<Nvml>,
    events: Arc<EventQueue>,
    uuid_index: UuidIndex,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new().name("nvml-events".to_string()).spawn(move || {
        let mut coalescer = Coalescer::default();
        let mut tracker = XidTracker::new();
        let mut warned = false;
        while !stop.load(Ordering::SeqCst) {
            match event_loop(&nvml, &events, &uuid_index, &stop, &mut coalescer, &mut tracker) {
                Ok(()) => return,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "NVML event set unavailable; XID events come from the kernel log only");
                        warned = true;
                    }
                    if matches!(e, NvmlError::FailedToLoadSymbol(_)) {
                        return;
                    }
                    std::thread::sleep(EVENT_RETRY);
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the NVML event thread");
    }
}

/// Build an event set over every device (re-creating it when one registration fails, since the
/// wrapper frees the set then), and deliver events until `stop`.
fn event_loop(
    nvml: &Nvml,
    events: &EventQueue,
    uuid_index: &UuidIndex,
    stop: &AtomicBool,
    coalescer: &mut Coalescer,
    tracker: &mut XidTracker,
) -> Result<(), NvmlError> {
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::SINGLE_BIT_ECC_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let count = nvml.device_count()?;
    let mut candidates: Vec<u32> = (0..count).collect();
    let (set, handles) = 'build: loop {
        let mut set = nvml.create_event_set()?;
        let mut handles: BTreeMap<usize, Registered> = BTreeMap::new();
        for (pos, &j) in candidates.iter().enumerate() {
            let Ok(dev) = nvml.device_by_index(j) else { continue };
            let types = match dev.supported_event_types() {
                Ok(t) => t & wanted,
                Err(_) => continue,
            };
            if types.is_empty() {
                continue;
            }
            match dev.register_events(types, set) {
                Ok(s) => set = s,
                Err(e) => {
                    tracing::debug!(gpu = j, error = %e.error, "cannot register NVML events");
                    candidates.remove(pos);
                    continue 'build;
                }
            }
            // SAFETY: reading the raw handle only to compare it with the one events carry.
            let h = unsafe { dev.handle() } as usize;
            let pci = dev.pci_info().ok().and_then(|p| pci_key(&p.bus_id));
            handles.insert(h, Registered { nvml_index: j, uuid: dev.uuid().ok(), pci });
        }
        break (set, handles);
    };
    tracing::info!(gpus = handles.len(), "waiting for NVML XID and ECC events");

    while !stop.load(Ordering::SeqCst) {
        match set.wait(EVENT_WAIT_MS) {
            Ok(data) => {
                // SAFETY: as above.
                let h = unsafe { data.device.handle() } as usize;
                let reg =
                    handles.get(&h).cloned().unwrap_or(Registered { nvml_index: u32::MAX, uuid: None, pci: None });
                let index = reg
                    .uuid
                    .as_ref()
                    .and_then(|u| uuid_index.read().unwrap_or_else(|p| p.into_inner()).get(u).copied())
                    .unwrap_or(reg.nvml_index);
                let component = (index != u32::MAX).then(|| format!("gpu{index}"));
                let ts = now_ms();
                let mut ev = Event {
                    ts_ms: ts,
                    source: EventSource::Nvml,
                    component: component.clone(),
                    device: reg.pci.clone(),
                    count: 1,
                    ..Default::default()
                };
                if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    ev.class = EventClass::Xid;
                    match data.event_data {
                        Some(XidError::Value(code)) => {
                            let code = u32::try_from(code).unwrap_or(u32::MAX);
                            let key = component.clone().or(reg.pci.clone()).unwrap_or_default();
                            let a = tracker.assess(ts, &key, code, None, None);
                            ev.xid = Some(code);
                            ev.severity = a.severity;
                            ev.caused_by_xid = a.caused_by_xid;
                            ev.message = format!("XID {} from NVML{}", crate::xid::describe(code), note(&a.note));
                        }
                        _ => {
                            ev.severity = crate::xid::UNKNOWN_XID_SEVERITY;
                            ev.message = "XID of unknown code from NVML".to_string();
                        }
                    }
                } else if data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                    ev.class = EventClass::EccDbe;
                    ev.severity = Severity::Critical;
                    ev.message = "double-bit (uncorrectable) ECC error from NVML".to_string();
                } else if data.event_type.contains(EventTypes::SINGLE_BIT_ECC_ERROR) {
                    ev.class = EventClass::EccSbe;
                    ev.severity = Severity::Info;
                    ev.message = "single-bit (corrected) ECC error from NVML".to_string();
                } else {
                    continue;
                }
                tracing::info!(class = %ev.class, xid = ?ev.xid, gpu = ?ev.component, "NVML event");
                for out in coalescer.offer(ev, Instant::now()) {
                    events.push(out, true);
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(NvmlError::GpuLost) => {}
            Err(e) => return Err(e),
        }
        for out in coalescer.flush_due(Instant::now()) {
            events.push(out, false);
        }
    }
    Ok(())
}

fn note(n: &str) -> String {
    if n.is_empty() { String::new() } else { format!(" ({n})") }
}
