//! NVLink data bytes per link from NVML's throughput field values
//! (`NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`/`_RX`, cumulative KiB, the link named by the field's
//! `scopeId`). nvml-wrapper's `field_values_for` always asks for scope 0, so the C function is called
//! through the loaded library. The analyzer's hang detector needs these: a collective stuck in NCCL
//! leaves them flat while its GPU stays busy.

use nvml_wrapper::Nvml;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings::{
    field_id, nvmlFieldValue_t, nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG, nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
};

/// `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX` (nvml.h): data payload sent, KiB, per link (`scopeId`).
pub const FI_NVLINK_THROUGHPUT_DATA_TX: u32 = field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX;
/// `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX` (nvml.h): data payload received, KiB, per link.
pub const FI_NVLINK_THROUGHPUT_DATA_RX: u32 = field_id::NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX;

/// Sent and received bytes of each of `links` (`None` where the driver answered no value for one).
pub fn read(
    nvml: &Nvml,
    dev: &nvml_wrapper::Device,
    links: &[u32],
) -> Result<Vec<(Option<u64>, Option<u64>)>, NvmlError> {
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(sym) = nvml.lib().nvmlDeviceGetFieldValues.as_ref() else {
        return Err(NvmlError::NotSupported);
    };
    let mut vals: Vec<nvmlFieldValue_t> = links
        .iter()
        .flat_map(|l| [FI_NVLINK_THROUGHPUT_DATA_TX, FI_NVLINK_THROUGHPUT_DATA_RX].map(|f| (f, *l)))
        .map(|(f, l)| {
            // SAFETY: a plain C struct of integers and a union of integers/double: all-zero is valid.
            let mut v: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
            v.fieldId = f;
            v.scopeId = l;
            v
        })
        .collect();
    // SAFETY: the handle comes from this `Nvml`; `vals` holds `len` initialised entries.
    let ret = unsafe { sym(dev.handle(), vals.len() as i32, vals.as_mut_ptr()) };
    nvml_try(ret)?;
    let kib = |v: &nvmlFieldValue_t| -> Option<u64> {
        if v.nvmlReturn != 0 {
            return None;
        }
        // SAFETY: the union member read is the one `valueType` names.
        let x = unsafe {
            match v.valueType {
                t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => v.value.ullVal,
                t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG => v.value.ulVal as u64,
                t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT => u64::from(v.value.uiVal),
                _ => return None,
            }
        };
        Some(x.saturating_mul(1024))
    };
    Ok(vals.chunks(2).map(|c| (kib(&c[0]), kib(&c[1]))).collect())
}
