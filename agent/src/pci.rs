//! PCI addresses in the one key form the GPU collector and the kernel-log readers share, and the
//! map from that key to a GPU index.

/// PCI bus id → GPU index, filled by the GPU collector from NVML and read by the kernel-log watcher
/// to turn `NVRM: Xid (PCI:0000:3b:00)` into `gpu3`. Keys are lower-case `dddd:bb:dd` (domain, bus,
/// device; no function), see `pci_key`.
pub type PciMap = std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<String, u32>>>;

/// Normalize a PCI address as NVML (`00000000:3B:00.0`) or the kernel (`0000:3b:00`, `3b:00.0`)
/// writes it into the `PciMap` key form `0000:3b:00`.
pub fn pci_key(addr: &str) -> Option<String> {
    let a = addr.trim().to_ascii_lowercase();
    let a = a.split('.').next()?; // drop the function
    let parts: Vec<&str> = a.split(':').collect();
    let (dom, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0", *b, *v),
        _ => return None,
    };
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let dev = u32::from_str_radix(dev, 16).ok()?;
    Some(format!("{:04x}:{:02x}:{:02x}", dom & 0xffff, bus, dev))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pci_keys_from_nvml_and_kernel_forms_agree() {
        assert_eq!(super::pci_key("00000000:3B:00.0").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("0000:3b:00").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("3b:00.0").as_deref(), Some("0000:3b:00"));
        assert_eq!(super::pci_key("zz"), None);
    }
}
