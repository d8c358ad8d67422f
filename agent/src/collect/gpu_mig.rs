//! MIG (Multi-Instance GPU) instances of one GPU through NVML: whether MIG mode is on and, when it
//! is, each MIG device's GPU instance id, compute instance id, profile, UUID and memory. These become
//! dcgm-exporter's `GPU_I_ID` and `GPU_I_PROFILE` labels on the GPU's memory series.
//!
//! nvml-wrapper has no call for the instance ids, so `nvmlDeviceGetGpuInstanceId` and
//! `nvmlDeviceGetComputeInstanceId` are called through its loaded library.

use faultline_proto::MigInstance;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::{nvmlDevice_t, nvmlReturn_t};
use std::os::raw::c_uint;

/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;

/// The profile in a MIG device's name: NVML names one `NVIDIA A100-SXM4-40GB MIG 1g.5gb`, and the
/// part after `MIG ` is what `nvidia-smi` and dcgm-exporter call the profile.
pub fn profile_of(name: &str) -> String {
    match name.rsplit_once("MIG ") {
        Some((_, p)) => p.trim().to_string(),
        None => String::new(),
    }
}

/// An NVML "get id of this MIG device" entry point, as the loaded library holds it.
type IdFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;

fn instance_id(dev: &Device, sym: Option<&IdFn>) -> Result<u32, NvmlError> {
    let sym = sym.ok_or_else(|| NvmlError::FailedToLoadSymbol("MIG instance id".into()))?;
    let mut id: c_uint = 0;
    // SAFETY: the handle comes from the `Nvml` that loaded `sym`, and `id` outlives the call.
    nvml_try(unsafe { sym(dev.handle(), &mut id) })?;
    Ok(id)
}

/// `Ok(None)`: MIG is off. `Ok(Some(list))`: MIG is on, with these MIG devices (empty before any is
/// made). `Err(NotSupported)` on a GPU without MIG, which the caller remembers and stops asking.
pub fn instances(nvml: &Nvml, dev: &Device) -> Result<Option<Vec<MigInstance>>, NvmlError> {
    if dev.mig_mode()?.current != MIG_ENABLED {
        return Ok(None);
    }
    let max = dev.mig_device_count()?;
    let mut out = Vec::new();
    for i in 0..max.min(faultline_proto::limits::MAX_MIG_PER_GPU as u32) {
        // Empty slots answer NotFound or InvalidArg: skip them.
        let Ok(mig) = dev.mig_device_by_index(i) else { continue };
        let Ok(gpu_instance_id) = instance_id(&mig, nvml.lib().nvmlDeviceGetGpuInstanceId.as_ref().ok()) else {
            continue;
        };
        let memory = mig.memory_info().ok();
        out.push(MigInstance {
            gpu_instance_id,
            compute_instance_id: instance_id(&mig, nvml.lib().nvmlDeviceGetComputeInstanceId.as_ref().ok()).ok(),
            profile: mig.name().map(|n| profile_of(&n)).unwrap_or_default(),
            uuid: mig.uuid().unwrap_or_default(),
            mem_total_bytes: memory.as_ref().map(|m| m.total),
            mem_used_bytes: memory.as_ref().map(|m| m.used.min(m.total)),
        });
    }
    out.sort_by_key(|m| (m.gpu_instance_id, m.compute_instance_id));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_the_mig_device_name() {
        assert_eq!(profile_of("NVIDIA A100-SXM4-40GB MIG 1g.5gb"), "1g.5gb");
        assert_eq!(profile_of("NVIDIA H100 80GB HBM3 MIG 3g.40gb"), "3g.40gb");
        assert_eq!(profile_of("NVIDIA H100 80GB HBM3"), "");
    }
}
