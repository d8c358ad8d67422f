//! Collector: the host itself — CPU, load, memory, swap and uptime from procfs, fans and temperatures
//! from hwmon in sysfs, and mounted disks (space, read-only) from sysinfo.
//!
//! CPU, memory, load and uptime are parsed from `<procfs-root>` rather than taken from sysinfo's
//! `System`, because sysinfo always reads the live `/proc`: `--procfs-root` must be able to point the
//! agent at a fixture tree, and these four files are simple and stable. Disks do come from sysinfo
//! (mount table plus `statvfs`), which is inherently about the live host; its default filter already
//! skips network file systems whose `statvfs` can hang.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use faultline_proto::{DiskSample, FanSample, HostSample, NodeReport, TempSample};

use crate::collect::{CollectError, Collector, Roots, list_dir, read_trimmed};

/// The shortest window over which CPU utilisation is computed. /proc/stat counts in USER_HZ ticks
/// (100/s on every mainstream kernel), so below ~250 ms a 2-CPU host has ~50 ticks and one tick is 2%:
/// the first sample waits until this much time has passed since the baseline.
const MIN_CPU_WINDOW: Duration = Duration::from_millis(250);

/// hwmon reports temperatures in millidegrees Celsius and fan speed in RPM (Documentation/hwmon/sysfs-interface).
const MILLI: f64 = 1000.0;

/// Readings above this are not temperatures but a sensor's "no data" marker (some chips report
/// 127.875 °C or 255 °C for a disconnected probe, others far more); they are skipped.
const MAX_PLAUSIBLE_TEMP_C: f64 = 250.0;

/// Jiffies of the aggregate `cpu` line of /proc/stat that count as busy and in total.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

pub struct HostCollector {
    roots: Roots,
    prev_cpu: Option<(CpuTimes, Instant)>,
    disks: Option<sysinfo::Disks>,
    /// Read disks from the live host (only when procfs is the real one; a fixture tree has no disks).
    live_disks: bool,
    /// No sample was taken yet.
    first: bool,
}

impl HostCollector {
    pub fn new(roots: Roots) -> Self {
        let prev_cpu = read_cpu_times(&roots.procfs.join("stat")).ok().map(|(t, _)| (t, Instant::now()));
        let live_disks = roots.procfs == Path::new("/proc");
        Self { roots, prev_cpu, disks: None, live_disks, first: true }
    }

    fn cpu(&mut self, h: &mut HostSample, errs: &mut Vec<CollectError>) {
        let path = self.roots.procfs.join("stat");
        let (mut now, mut count) = match read_cpu_times(&path) {
            Ok(v) => v,
            Err(e) => return errs.push(CollectError::io(path.display().to_string(), e)),
        };
        h.cpu_count = Some(count);
        // Only the first sample can have a baseline younger than the window (taken in `new`); later
        // ones use whatever interval the agent runs at.
        if let (Some((_, at)), true) = (self.prev_cpu, self.first) {
            let age = at.elapsed();
            if age < MIN_CPU_WINDOW {
                std::thread::sleep(MIN_CPU_WINDOW - age);
                if let Ok(v) = read_cpu_times(&path) {
                    (now, count) = v;
                    h.cpu_count = Some(count);
                }
            }
        }
        if let Some((prev, _)) = self.prev_cpu {
            h.cpu_util_pct = cpu_util_pct(prev, now);
        }
        self.prev_cpu = Some((now, Instant::now()));
        self.first = false;
    }

    fn disks(&mut self, report: &mut NodeReport, errs: &mut Vec<CollectError>) {
        if !self.live_disks {
            return;
        }
        let kind = sysinfo::DiskRefreshKind::nothing().with_storage();
        let disks = match &mut self.disks {
            Some(d) => {
                d.refresh_specifics(true, kind);
                d
            }
            None => match sysinfo::Disks::new_with_refreshed_list_specifics(kind) {
                Ok(d) => self.disks.insert(d),
                Err(e) => return errs.push(CollectError::Other(format!("disk list: {e}"))),
            },
        };
        let mut by_device: BTreeMap<String, DiskSample> = BTreeMap::new();
        for d in disks.iter() {
            let Some(device) = disk_device_name(&d.name().to_string_lossy()) else { continue };
            let mount = d.mount_point().to_string_lossy().to_string();
            let sample = DiskSample {
                device: device.clone(),
                mount: Some(mount.clone()),
                total_bytes: Some(d.total_space()),
                available_bytes: Some(d.available_space().min(d.total_space())),
                read_only: d.is_read_only(),
                write_bytes: None,
            };
            // A device mounted several times (bind mounts) is one disk: keep its shortest mount point.
            match by_device.get(&device) {
                Some(old) if old.mount.as_deref().map(str::len).unwrap_or(usize::MAX) <= mount.len() => {}
                _ => {
                    by_device.insert(device, sample);
                }
            }
        }
        let mut disks: Vec<DiskSample> = by_device.into_values().take(faultline_proto::limits::MAX_DISKS).collect();
        match std::fs::read_to_string(self.roots.procfs.join("diskstats")) {
            Ok(text) => fill_write_bytes(&mut disks, &text, &dm_names(&self.roots.sysfs)),
            Err(e) => errs.push(CollectError::io("diskstats", e)),
        }
        report.disks.extend(disks);
    }
}

/// Device-mapper names (`vg-root`) → kernel names (`dm-0`), from `<sysfs>/block/dm-*/dm/name`.
fn dm_names(sysfs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for dev in crate::collect::list_dir(&sysfs.join("block")).unwrap_or_default() {
        if dev.starts_with("dm-")
            && let Ok(name) = crate::collect::read_trimmed(&sysfs.join("block").join(&dev).join("dm/name"))
        {
            out.insert(name, dev);
        }
    }
    out
}

/// `/proc/diskstats` (major minor name, then the I/O fields; the 7th after the name is sectors
/// written, always in 512-byte units) → bytes written per kernel device name.
pub fn parse_diskstats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sectors: u64 = f.get(9)?.parse().ok()?;
            Some((f.get(2)?.to_string(), sectors.saturating_mul(512)))
        })
        .collect()
}

/// Set `write_bytes` of each disk from `diskstats`, through the device-mapper names where needed.
fn fill_write_bytes(disks: &mut [DiskSample], diskstats: &str, dm: &BTreeMap<String, String>) {
    let written = parse_diskstats(diskstats);
    for d in disks {
        let kernel = dm.get(&d.device).map(String::as_str).unwrap_or(&d.device);
        d.write_bytes = written.get(kernel).copied();
    }
}

impl Collector for HostCollector {
    fn name(&self) -> &'static str {
        "host"
    }

    fn collect(&mut self, report: &mut NodeReport) -> Result<(), CollectError> {
        let mut errs = Vec::new();
        let mut h = HostSample::default();
        self.cpu(&mut h, &mut errs);
        let p = &self.roots.procfs;
        match read_trimmed(&p.join("loadavg")).map(|s| parse_loadavg(&s)) {
            Ok(Some((a, b, c))) => (h.load1, h.load5, h.load15) = (Some(a), Some(b), Some(c)),
            Ok(None) => errs.push(CollectError::Other(format!("{}: unexpected format", p.join("loadavg").display()))),
            Err(e) => errs.push(CollectError::io(p.join("loadavg").display().to_string(), e)),
        }
        match std::fs::read_to_string(p.join("meminfo")) {
            Ok(s) => apply_meminfo(&parse_meminfo(&s), &mut h),
            Err(e) => errs.push(CollectError::io(p.join("meminfo").display().to_string(), e)),
        }
        match read_trimmed(&p.join("uptime")) {
            Ok(s) => {
                h.uptime_s = s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).map(|v| v.max(0.0) as u64)
            }
            Err(e) => errs.push(CollectError::io(p.join("uptime").display().to_string(), e)),
        }
        read_hwmon(&self.roots.sysfs.join("class/hwmon"), &mut h, &mut errs);
        report.host = Some(h);
        self.disks(report, &mut errs);
        CollectError::from_list(errs)
    }
}

/// The aggregate CPU times and the number of CPUs from /proc/stat.
fn read_cpu_times(path: &Path) -> std::io::Result<(CpuTimes, u32)> {
    let s = std::fs::read_to_string(path)?;
    parse_proc_stat(&s).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no `cpu` line"))
}

fn parse_proc_stat(s: &str) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut count = 0u32;
    for line in s.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
                // already included in user/nice, so it is not added again.
                let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let total: u64 = v.iter().sum();
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                times = Some(CpuTimes { busy: total.saturating_sub(idle), total });
            }
            Some(name) if name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) => count += 1,
            _ => {}
        }
    }
    times.map(|t| (t, count))
}

fn cpu_util_pct(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let busy = now.busy.checked_sub(prev.busy)?;
    if total == 0 {
        return None;
    }
    Some((busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

fn parse_loadavg(s: &str) -> Option<(f64, f64, f64)> {
    let mut f = s.split_whitespace().map(|x| x.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    Some((f.next()??, f.next()??, f.next()??))
}

/// `/proc/meminfo` as key → bytes (values are in kB).
fn parse_meminfo(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|line| {
            let (k, rest) = line.split_once(':')?;
            let mut f = rest.split_whitespace();
            let v: u64 = f.next()?.parse().ok()?;
            let mult = if f.next() == Some("kB") { 1024 } else { 1 };
            Some((k.trim().to_string(), v.saturating_mul(mult)))
        })
        .collect()
}

fn apply_meminfo(m: &BTreeMap<String, u64>, h: &mut HostSample) {
    let total = m.get("MemTotal").copied();
    // MemAvailable exists since Linux 3.14; before that, free + buffers + cache is the usual estimate.
    let available = m.get("MemAvailable").copied().or_else(|| {
        Some(m.get("MemFree")? + m.get("Buffers").copied().unwrap_or(0) + m.get("Cached").copied().unwrap_or(0))
    });
    h.mem_total_bytes = total;
    h.mem_available_bytes = match (available, total) {
        (Some(a), Some(t)) => Some(a.min(t)),
        (a, _) => a,
    };
    h.mem_used_bytes = match (total, h.mem_available_bytes) {
        (Some(t), Some(a)) => Some(t - a),
        _ => None,
    };
    h.swap_total_bytes = m.get("SwapTotal").copied();
    h.swap_used_bytes = match (m.get("SwapTotal"), m.get("SwapFree")) {
        (Some(t), Some(f)) => Some(t.saturating_sub(*f)),
        _ => None,
    };
}

/// Read every `hwmonN` chip: `tempN_input` (+ `_label`, `_crit`) and `fanN_input` (+ `_label`, `_min`,
/// `_alarm`, `_fault`). A sensor that cannot be read is counted and skipped; a host without hwmon
/// (a VM) simply has no fans or temperatures.
fn read_hwmon(dir: &Path, h: &mut HostSample, errs: &mut Vec<CollectError>) {
    let chips = match list_dir(dir) {
        Ok(c) => c,
        Err(e) => return errs.push(CollectError::io(dir.display().to_string(), e)),
    };
    let mut seen = std::collections::BTreeSet::new();
    for chip in chips {
        let cdir = dir.join(&chip);
        // Older drivers put the attributes under `device/`.
        let base = if cdir.join("name").exists() || !cdir.join("device/name").exists() {
            cdir.clone()
        } else {
            cdir.join("device")
        };
        let chip_name = read_trimmed(&base.join("name")).ok().filter(|n| !n.is_empty()).unwrap_or_else(|| chip.clone());
        let files = match list_dir(&base) {
            Ok(f) => f,
            Err(e) => {
                errs.push(CollectError::io(base.display().to_string(), e));
                continue;
            }
        };
        let mut unique = |label: String, id: &str| -> String {
            let name = format!("{chip_name}/{label}");
            if seen.insert(name.clone()) {
                return name;
            }
            let name = format!("{chip}/{id}");
            seen.insert(name.clone());
            name
        };
        for f in &files {
            if let Some(id) = f.strip_prefix("temp").and_then(|r| r.strip_suffix("_input")) {
                let sensor = format!("temp{id}");
                let path = base.join(f);
                let milli = match read_trimmed(&path).map(|s| s.parse::<f64>()) {
                    Ok(Ok(v)) => v,
                    Ok(Err(_)) => {
                        errs.push(CollectError::Other(format!("{}: not a number", path.display())));
                        continue;
                    }
                    Err(e) => {
                        errs.push(CollectError::io(path.display().to_string(), e));
                        continue;
                    }
                };
                let celsius = milli / MILLI;
                if !celsius.is_finite() || !(-100.0..=MAX_PLAUSIBLE_TEMP_C).contains(&celsius) {
                    continue;
                }
                let label = read_trimmed(&base.join(format!("{sensor}_label"))).ok().filter(|l| !l.is_empty());
                let crit = read_trimmed(&base.join(format!("{sensor}_crit")))
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|v| v / MILLI)
                    .filter(|c| c.is_finite() && (-100.0..=MAX_PLAUSIBLE_TEMP_C).contains(c));
                let name = unique(label.unwrap_or_else(|| sensor.clone()), &sensor);
                if h.temps.len() < faultline_proto::limits::MAX_FANS_OR_TEMPS {
                    h.temps.push(TempSample { name, celsius, crit_celsius: crit });
                }
            } else if let Some(id) = f.strip_prefix("fan").and_then(|r| r.strip_suffix("_input")) {
                let fan = format!("fan{id}");
                let path = base.join(f);
                let rpm = match read_trimmed(&path).map(|s| s.parse::<f64>()) {
                    Ok(Ok(v)) if v.is_finite() && v >= 0.0 => Some(v),
                    Ok(_) => {
                        errs.push(CollectError::Other(format!("{}: not a fan speed", path.display())));
                        None
                    }
                    Err(e) => {
                        errs.push(CollectError::io(path.display().to_string(), e));
                        None
                    }
                };
                let min_rpm = read_trimmed(&base.join(format!("{fan}_min")))
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0);
                let flag = |suffix: &str| {
                    read_trimmed(&base.join(format!("{fan}_{suffix}"))).map(|s| s != "0").unwrap_or(false)
                };
                let alarm = flag("alarm") || flag("fault");
                let label = read_trimmed(&base.join(format!("{fan}_label"))).ok().filter(|l| !l.is_empty());
                let name = unique(label.unwrap_or_else(|| fan.clone()), &fan);
                if h.fans.len() < faultline_proto::limits::MAX_FANS_OR_TEMPS {
                    h.fans.push(FanSample { name, rpm, min_rpm, alarm });
                }
            }
        }
    }
}

/// `/dev/nvme0n1p1` → `nvme0n1p1`, `/dev/mapper/vg-root` → `vg-root`, `overlay` → `overlay`. Names that
/// cannot be a component id part are skipped.
fn disk_device_name(raw: &str) -> Option<String> {
    let name = raw.rsplit('/').next().unwrap_or(raw).trim();
    faultline_proto::id::valid_name(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_busy_total_and_cpu_count() {
        let s =
            "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\ncpu1 50 3 25 400 10 2 1 5 4 0\nintr 1 2\n";
        let (t, n) = parse_proc_stat(s).unwrap();
        assert_eq!(n, 2);
        assert_eq!(t.total, 100 + 5 + 50 + 800 + 20 + 3 + 2 + 10);
        assert_eq!(t.busy, t.total - 820);
        let later = CpuTimes { busy: t.busy + 50, total: t.total + 200 };
        assert_eq!(cpu_util_pct(t, later), Some(25.0));
        assert_eq!(cpu_util_pct(later, t), None, "counters going backwards give no value, not a negative one");
    }

    #[test]
    fn meminfo_used_is_total_minus_available() {
        let m = parse_meminfo(
            "MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    600 kB\nSwapTotal: 50 kB\nSwapFree: 20 kB\nHugePages_Total: 0\n",
        );
        let mut h = HostSample::default();
        apply_meminfo(&m, &mut h);
        assert_eq!(h.mem_total_bytes, Some(1000 * 1024));
        assert_eq!(h.mem_used_bytes, Some(400 * 1024));
        assert_eq!(h.swap_used_bytes, Some(30 * 1024));
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        assert_eq!(parse_loadavg("0.50 1.00 2.25 1/234 5678"), Some((0.5, 1.0, 2.25)));
        assert_eq!(parse_loadavg("x y z"), None);
    }

    #[test]
    fn diskstats_give_bytes_written_also_for_device_mapper_names() {
        let text = "   8       0 sda 1000 0 80000 100 2000 0 160000 200 0 300 300 0 0 0 0 0 0\n\
                     259       0 nvme0n1 5 0 40 1 7 0 4096 2 0 3 3\n\
                     253       0 dm-0 1 0 8 0 3 0 24 0 0 0 0\n\
                     bad line\n";
        let w = parse_diskstats(text);
        assert_eq!(w["sda"], 160_000 * 512);
        assert_eq!(w["nvme0n1"], 4096 * 512);
        let mut disks = vec![
            DiskSample { device: "nvme0n1".into(), ..Default::default() },
            DiskSample { device: "vg-root".into(), ..Default::default() },
            DiskSample { device: "overlay".into(), ..Default::default() },
        ];
        let dm: BTreeMap<String, String> = [("vg-root".to_string(), "dm-0".to_string())].into();
        fill_write_bytes(&mut disks, text, &dm);
        assert_eq!(disks[0].write_bytes, Some(4096 * 512));
        assert_eq!(disks[1].write_bytes, Some(24 * 512));
        assert_eq!(disks[2].write_bytes, None, "no block device behind it: unknown, not 0");
    }

    #[test]
    fn disk_names_become_id_parts() {
        assert_eq!(disk_device_name("/dev/nvme0n1p1").as_deref(), Some("nvme0n1p1"));
        assert_eq!(disk_device_name("/dev/mapper/vg-root").as_deref(), Some("vg-root"));
        assert_eq!(disk_device_name("overlay").as_deref(), Some("overlay"));
        assert_eq!(disk_device_name(""), None);
    }

    #[test]
    fn hwmon_fans_temps_and_alarms_are_read_and_a_broken_sensor_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let chip = dir.path().join("class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).unwrap();
        for (f, v) in [
            ("name", "nct6775"),
            ("temp1_input", "45500"),
            ("temp1_label", "CPU"),
            ("temp1_crit", "95000"),
            ("temp2_input", "garbage"),
            ("fan1_input", "1200"),
            ("fan1_min", "300"),
            ("fan1_alarm", "0"),
            ("fan2_input", "0"),
            ("fan2_fault", "1"),
        ] {
            std::fs::write(chip.join(f), format!("{v}\n")).unwrap();
        }
        let mut h = HostSample::default();
        let mut errs = Vec::new();
        read_hwmon(&dir.path().join("class/hwmon"), &mut h, &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(h.temps, vec![TempSample { name: "nct6775/CPU".into(), celsius: 45.5, crit_celsius: Some(95.0) }]);
        assert_eq!(h.fans.len(), 2);
        assert_eq!(
            h.fans[0],
            FanSample { name: "nct6775/fan1".into(), rpm: Some(1200.0), min_rpm: Some(300.0), alarm: false }
        );
        assert!(h.fans[1].alarm, "fan2_fault=1 is an alarm");
    }

    #[test]
    fn a_fixture_procfs_tree_is_read_instead_of_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proc");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("stat"), "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\n").unwrap();
        std::fs::write(p.join("loadavg"), "3.00 2.00 1.00 1/1 1\n").unwrap();
        std::fs::write(p.join("meminfo"), "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n").unwrap();
        std::fs::write(p.join("uptime"), "12345.67 1.0\n").unwrap();
        let mut c = HostCollector::new(Roots { sysfs: dir.path().join("sys"), procfs: p.clone() });
        std::fs::write(p.join("stat"), "cpu  40 0 40 120 0 0 0 0 0 0\ncpu0 40 0 40 120 0 0 0 0 0 0\n").unwrap();
        let mut r = crate::collect::blank_report("n", 1, 1000);
        c.collect(&mut r).unwrap();
        let h = r.host.unwrap();
        assert_eq!(h.cpu_count, Some(1));
        assert_eq!(h.cpu_util_pct, Some(60.0));
        assert_eq!(h.load1, Some(3.0));
        assert_eq!(h.mem_used_bytes, Some(1024 * 1024));
        assert_eq!(h.uptime_s, Some(12345));
        assert!(r.disks.is_empty(), "a fixture procfs has no live disks");
    }
}
