//! What the GPU collector adds for diagnosis on real machines: cumulative clocks-event (throttle)
//! time from NVML field values, NVML errors in NVML's own words with the GPU's PCI presence, and the
//! node's expected GPU count.

use std::path::{Path, PathBuf};

use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;

/// `NVML_FI_DEV_CLOCKS_EVENT_REASON_*` field ids and the reason names of `throttle_reasons` they
/// count, in nanoseconds since driver load. SW power cap and sync boost reuse the older perf-policy
/// ids (74, 76); the three slowdowns have 251–253 in the r550–r580 drivers' numbering (the one
/// `nvidia-smi -q` asks for). There is no separate counter for `hw_slowdown`: it is the thermal and
/// power-brake slowdowns together.
pub const CLOCK_EVENT_FIELDS: [(u32, &str); 5] = [
    (74, "sw_power_cap"),
    (76, "sync_boost"),
    (251, "sw_thermal_slowdown"),
    (252, "hw_thermal_slowdown"),
    (253, "hw_power_brake_slowdown"),
];

/// The clocks-event counters this GPU answers. A field the driver does not know answers
/// NotSupported on its own and is left out; all five missing is NotSupported for the query.
pub fn clock_events(dev: &nvml_wrapper::Device) -> Result<faultline_proto::CounterMap, NvmlError> {
    let ids: Vec<FieldId> = CLOCK_EVENT_FIELDS.iter().map(|(id, _)| FieldId(*id)).collect();
    let vals = dev.field_values_for(&ids)?;
    let mut out = faultline_proto::CounterMap::new();
    let mut first_err = None;
    for ((_, name), v) in CLOCK_EVENT_FIELDS.iter().zip(vals) {
        match v.and_then(|f| f.value) {
            Ok(SampleValue::U64(x)) => {
                out.insert(faultline_proto::counter_name(name), x);
            }
            Ok(SampleValue::U32(x)) => {
                out.insert(faultline_proto::counter_name(name), u64::from(x));
            }
            Ok(SampleValue::I64(x)) if x >= 0 => {
                out.insert(faultline_proto::counter_name(name), x as u64);
            }
            Ok(_) => {}
            Err(NvmlError::NotSupported) | Err(NvmlError::InvalidArg) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(NvmlError::NotSupported),
        (false, _) => Ok(out),
    }
}

/// An NVML error as `nvmlErrorString` words it (`Unknown Error`, `GPU is lost`, `Timeout`), the form
/// real tools and logs show.
pub fn nvml_words(e: &NvmlError) -> String {
    match e {
        NvmlError::Unknown => "Unknown Error".into(),
        NvmlError::GpuLost => "GPU is lost".into(),
        NvmlError::Timeout => "Timeout".into(),
        NvmlError::Uninitialized => "Uninitialized".into(),
        NvmlError::InvalidArg => "Invalid Argument".into(),
        NvmlError::NoPermission => "Insufficient Permissions".into(),
        NvmlError::ResetRequired => "GPU requires reset".into(),
        NvmlError::OperatingSystem => "The operating system has blocked the request".into(),
        NvmlError::DriverNotLoaded => "Driver Not Loaded".into(),
        NvmlError::IrqIssue => "Interrupt request issue".into(),
        NvmlError::LibRmVersionMismatch => "RM has detected an NVML/RM version mismatch".into(),
        other => other.to_string(),
    }
}

/// Whether the GPU's PCI function is still in sysfs (`<sysfs>/bus/pci/devices/0000:3b:00.0`).
/// `None` when the bus id is unknown or not a PCI address.
pub fn pci_present(sysfs: &Path, bus_id: Option<&str>) -> Option<bool> {
    let b = bus_id?.trim().to_ascii_lowercase();
    // NVML writes `00000000:3B:00.0` (8-digit domain); sysfs `0000:3b:00.0`.
    let (dom, rest) = b.split_once(':')?;
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let name = format!("{:04x}:{rest}", dom & 0xffff);
    if name.len() != 12 {
        return None;
    }
    Some(sysfs.join("bus/pci/devices").join(name).exists())
}

/// The node's expected GPU count: configured, else the count seen at the agent's first start, kept
/// in `<state>/expected-gpus` so that a GPU missing at a later boot is noticed.
#[derive(Debug, Clone)]
pub struct ExpectedGpus {
    configured: Option<u32>,
    file: Option<PathBuf>,
    /// Write what is learned (false for `--once`, which changes nothing on disk).
    persist: bool,
    learned: Option<u32>,
}

impl ExpectedGpus {
    pub fn new(configured: Option<u32>, state_dir: Option<&Path>, persist: bool) -> ExpectedGpus {
        let file = state_dir.map(|d| d.join("expected-gpus"));
        let learned = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).and_then(|s| s.trim().parse().ok());
        ExpectedGpus { configured, file, persist, learned }
    }

    /// The expected count, given that NVML now lists `seen` GPUs (`None`: NVML did not answer).
    pub fn expected(&mut self, seen: Option<u32>) -> Option<u32> {
        if let Some(c) = self.configured {
            return Some(c);
        }
        if self.learned.is_none()
            && let Some(n) = seen
        {
            self.learned = Some(n);
            if self.persist
                && let Some(f) = &self.file
            {
                let tmp = f.with_extension("tmp");
                let written = std::fs::write(&tmp, format!("{n}\n")).and_then(|()| std::fs::rename(&tmp, f));
                match written {
                    Ok(()) => {
                        tracing::info!(gpus = n, file = %f.display(), "expected GPU count learned at first start")
                    }
                    Err(e) => tracing::warn!(error = %e, file = %f.display(), "cannot keep the expected GPU count"),
                }
            }
        }
        self.learned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_presence_follows_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bus/pci/devices/0000:3b:00.0")).unwrap();
        assert_eq!(pci_present(dir.path(), Some("00000000:3B:00.0")), Some(true));
        assert_eq!(pci_present(dir.path(), Some("00000000:5D:00.0")), Some(false));
        assert_eq!(pci_present(dir.path(), None), None);
        assert_eq!(pci_present(dir.path(), Some("garbage")), None);
    }

    #[test]
    fn the_expected_count_is_configured_or_learned_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = ExpectedGpus::new(None, Some(dir.path()), true);
        assert_eq!(e.expected(None), None, "nothing seen yet");
        assert_eq!(e.expected(Some(8)), Some(8));
        assert_eq!(e.expected(Some(7)), Some(8), "a GPU missing later does not lower it");
        // The next start (a reboot with a GPU missing) remembers 8.
        let mut e = ExpectedGpus::new(None, Some(dir.path()), true);
        assert_eq!(e.expected(Some(7)), Some(8));
        // The config wins.
        let mut e = ExpectedGpus::new(Some(4), Some(dir.path()), true);
        assert_eq!(e.expected(Some(8)), Some(4));
        // --once learns nothing on disk.
        let other = tempfile::tempdir().unwrap();
        let mut e = ExpectedGpus::new(None, Some(other.path()), false);
        assert_eq!(e.expected(Some(2)), Some(2));
        assert!(!other.path().join("expected-gpus").exists());
    }

    #[test]
    fn nvml_errors_read_as_nvml_words_them() {
        assert_eq!(nvml_words(&NvmlError::Unknown), "Unknown Error");
        assert_eq!(nvml_words(&NvmlError::GpuLost), "GPU is lost");
        assert_eq!(nvml_words(&NvmlError::Timeout), "Timeout");
    }
}
