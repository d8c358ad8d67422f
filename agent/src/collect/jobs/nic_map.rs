//! GPU → NIC: the configured map, else PCIe affinity read from sysfs, else round-robin.

use super::*;

/// Sort key for natural name order: `mlx5_2` < `mlx5_10`.
pub(super) fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(u64::from(d)));
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

/// `00000000:3B:00.0` → `0000:3b:00.0` (sysfs form).
pub(super) fn sysfs_pci_name(bus_id: &str) -> Option<String> {
    let b = bus_id.trim().to_ascii_lowercase();
    let (dom, rest) = b.split_once(':')?;
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let rest = if rest.contains('.') { rest.to_string() } else { format!("{rest}.0") };
    Some(format!("{:04x}:{rest}", dom & 0xffff))
}

/// Where a PCI device sits: its bridge chain under `/sys/devices` and its NUMA node.
#[derive(Debug, Clone)]
pub(super) struct PciPlace {
    pub(super) chain: Vec<String>,
    pub(super) numa: Option<i64>,
}

pub(super) fn pci_place(dev_dir: &Path) -> Option<PciPlace> {
    let real = std::fs::canonicalize(dev_dir).ok()?;
    let comps: Vec<String> = real.components().filter_map(|c| c.as_os_str().to_str().map(str::to_string)).collect();
    let start = comps.iter().position(|c| c.starts_with("pci"))?;
    let numa = std::fs::read_to_string(real.join("numa_node")).ok().and_then(|s| s.trim().parse::<i64>().ok());
    Some(PciPlace { chain: comps[start..].to_vec(), numa: numa.filter(|&n| n >= 0) })
}

pub(super) fn common_prefix(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// GPU index → NIC name for every GPU of the report.
pub(super) fn gpu_nic_map(report: &NodeReport, cfg: &JobsConfig, sysfs: &Path) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let mut gpu_idx: Vec<u32> = report.gpus.iter().map(|g| g.index).collect();
    gpu_idx.sort_unstable();
    if !cfg.gpu_nics.is_empty() {
        for (i, nic) in cfg.gpu_nics.iter().enumerate() {
            if !nic.is_empty() {
                out.insert(i as u32, nic.clone());
            }
        }
        return out;
    }
    let mut nics: Vec<&faultline_proto::NicSample> =
        report.nics.iter().filter(|n| n.kind == NicKind::Infiniband).collect();
    nics.sort_by_key(|n| natural_key(&n.name));
    if nics.is_empty() {
        return out;
    }
    let default_for = |i: u32| nics[i as usize % nics.len()].name.clone();

    // PCIe places of the NICs (from the IB class link, else their PCI address).
    let nic_places: Vec<Option<PciPlace>> = nics
        .iter()
        .map(|n| {
            let base = n.name.split_once('p').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
            let mut dirs = vec![sysfs.join("class/infiniband").join(&n.name).join("device")];
            if let Some((dev, _)) = base {
                dirs.push(sysfs.join("class/infiniband").join(dev).join("device"));
            }
            if let Some(p) = n.pci_bus_id.as_deref().and_then(sysfs_pci_name) {
                dirs.push(sysfs.join("bus/pci/devices").join(p));
            }
            dirs.iter().find_map(|d| pci_place(d))
        })
        .collect();
    let any_nic_place = nic_places.iter().any(Option::is_some);
    // For each GPU, the set of best NICs; GPUs with the same best set share them round-robin.
    let mut tie_sets: Vec<(u32, Vec<usize>)> = Vec::new();
    for g in report.gpus.iter() {
        let place = g
            .pci_bus_id
            .as_deref()
            .and_then(sysfs_pci_name)
            .and_then(|p| if any_nic_place { pci_place(&sysfs.join("bus/pci/devices").join(p)) } else { None });
        let Some(place) = place else {
            out.insert(g.index, default_for(g.index));
            continue;
        };
        let scores: Vec<Option<(usize, bool)>> = nic_places
            .iter()
            .map(|np| {
                np.as_ref()
                    .map(|np| (common_prefix(&place.chain, &np.chain), place.numa.is_some() && place.numa == np.numa))
            })
            .collect();
        let best = scores.iter().flatten().max().copied();
        let Some(best) = best else {
            out.insert(g.index, default_for(g.index));
            continue;
        };
        let set: Vec<usize> = scores.iter().enumerate().filter(|(_, s)| **s == Some(best)).map(|(i, _)| i).collect();
        tie_sets.push((g.index, set));
    }
    tie_sets.sort_by_key(|(g, _)| *g);
    let mut seen: HashMap<Vec<usize>, usize> = HashMap::new();
    for (g, set) in tie_sets {
        let ord = seen.entry(set.clone()).or_insert(0);
        out.insert(g, nics[set[*ord % set.len()]].name.clone());
        *ord += 1;
    }
    out
}
