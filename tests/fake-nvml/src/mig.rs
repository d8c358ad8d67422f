//! MIG in the fake NVML: a GPU whose state has `mig` is in MIG mode with those MIG devices.
//!
//! A MIG device handle is `(slot + 1) | (k + 1) << MIG_SHIFT` for the `k`th MIG device of the GPU in
//! `slot`, so it never equals a GPU handle (`slot + 1`, far below `1 << MIG_SHIFT`). The identity and
//! memory calls (`nvmlDeviceGetUUID`, `nvmlDeviceGetName`, `nvmlDeviceGetMemoryInfo_v2`) answer for a
//! MIG handle from its entry; the MIG calls are here.

use std::os::raw::c_uint;

use nvml_wrapper_sys::bindings::*;
use serde::Deserialize;

use super::{Gpu, lock, put, rc, with_gpu};

const MIG_SHIFT: u32 = 20;
/// NVML's `NVML_ERROR_NOT_FOUND`.
const NOT_FOUND: u32 = 6;
/// MIG devices an H100 can hold (`nvmlDeviceGetMaxMigDeviceCount`).
const H100_MAX_MIG: u32 = 7;

/// One MIG device.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigDev {
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    pub profile: String,
    pub uuid: Option<String>,
    pub mem_total: u64,
    pub mem_used: u64,
}

impl Default for MigDev {
    fn default() -> Self {
        MigDev {
            gpu_instance_id: 0,
            compute_instance_id: 0,
            profile: "1g.10gb".into(),
            uuid: None,
            mem_total: 10_200_547_328,
            mem_used: 13_107_200,
        }
    }
}

impl MigDev {
    pub fn uuid_for(&self, _gpu: &Gpu, slot: usize) -> String {
        self.uuid
            .clone()
            .unwrap_or_else(|| format!("MIG-fa0e0000-0000-4000-8000-{slot:06x}{:06x}", self.gpu_instance_id))
    }

    /// As NVML names a MIG device: the GPU's name, `MIG`, the profile.
    pub fn name_for(&self, gpu: &Gpu) -> String {
        format!("{} MIG {}", gpu.name, self.profile)
    }
}

pub fn is_mig_handle(device: nvmlDevice_t) -> bool {
    (device as usize) >> MIG_SHIFT != 0
}

fn mig_handle(slot: usize, k: usize) -> nvmlDevice_t {
    ((slot + 1) | ((k + 1) << MIG_SHIFT)) as nvmlDevice_t
}

/// `Some(answer)` when `device` is a MIG handle: `f` answers from its entry, or the handle is unknown.
pub fn with_mig(device: nvmlDevice_t, f: impl FnOnce(&MigDev, &Gpu, usize) -> u32) -> Option<nvmlReturn_t> {
    if !is_mig_handle(device) {
        return None;
    }
    let h = device as usize;
    let (slot, k) = ((h & ((1 << MIG_SHIFT) - 1)).checked_sub(1)?, (h >> MIG_SHIFT) - 1);
    let g = lock();
    let Some(lib) = g.as_ref() else { return Some(rc::UNINITIALIZED) };
    let Some(gpu) = lib.state.gpus.get(slot) else { return Some(rc::INVALID_ARGUMENT) };
    match gpu.mig.as_ref().and_then(|m| m.get(k)) {
        Some(m) => Some(f(m, gpu, slot)),
        None => Some(rc::INVALID_ARGUMENT),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, "mig", |g, _| {
        let on = c_uint::from(g.mig.is_some());
        // SAFETY: caller's out-pointers.
        unsafe {
            let r = put(current, on);
            if r != rc::SUCCESS { r } else { put(pending, on) }
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(device: nvmlDevice_t, count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_gpu(device, "mig", |g, _| unsafe { put(count, if g.mig.is_some() { H100_MAX_MIG } else { 0 }) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    mig: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    with_gpu(device, "mig", |g, slot| match g.mig.as_ref() {
        None => rc::INVALID_ARGUMENT,
        Some(list) if index as usize >= list.len() => NOT_FOUND,
        // SAFETY: caller's out-pointer.
        Some(_) => unsafe { put(mig, mig_handle(slot, index as usize)) },
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(device: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_mig(device, |m, _, _| unsafe { put(id, m.gpu_instance_id) }).unwrap_or(rc::INVALID_ARGUMENT)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(device: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: caller's out-pointer.
    with_mig(device, |m, _, _| unsafe { put(id, m.compute_instance_id) }).unwrap_or(rc::INVALID_ARGUMENT)
}
