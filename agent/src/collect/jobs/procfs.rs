//! Reading `/proc`: `stat` lines, cgroup paths, and small files read with a bound.

use super::*;

/// What one `/proc/<pid>/stat` line says.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ProcStat {
    pub(super) pid: u32,
    pub(super) comm: String,
    pub(super) state: char,
    pub(super) ppid: u32,
    /// utime + stime, clock ticks.
    pub(super) ticks: u64,
    /// Start time after boot, clock ticks.
    pub(super) starttime: u64,
    pub(super) rss_pages: u64,
    /// The wait status (field 52, Linux ≥ 3.5): meaningful for a zombie.
    pub(super) exit_status: Option<i32>,
    /// Changes when the process calls `execve` (see [`ExecSig`]).
    pub(super) exec_sig: ExecSig,
}

/// Fields of `stat` that `execve` changes while pid and start time stay: where the code, the stack
/// and the environment block (fields 26, 28, 50, 51) were mapped. The environment block's size
/// (`env_end - env_start`) changes whenever a launcher adds `RANK` before it execs a worker, even with
/// address randomisation off. All zero when the reader may not see them (then `environ` is
/// unreadable too) or in fixtures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ExecSig {
    pub(super) start_code: u64,
    pub(super) start_stack: u64,
    pub(super) env_start: u64,
    pub(super) env_end: u64,
}

impl ExecSig {
    pub(super) fn known(&self) -> bool {
        *self != ExecSig::default()
    }
}

/// Parse `/proc/<pid>/stat`. The command name sits in parentheses and may hold spaces and `)`, so
/// the fields are counted from the last `)`.
pub(super) fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut rest = [""; 50];
    let mut n = 0;
    for (slot, v) in rest.iter_mut().zip(s.get(close + 1..)?.split_ascii_whitespace()) {
        *slot = v;
        n += 1;
    }
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let field = |f: usize| rest[..n].get(f - 3).copied();
    let num = |f: usize| field(f).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        ticks: num(14)?.saturating_add(num(15)?),
        starttime: num(22)?,
        rss_pages: field(24).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64).unwrap_or(0),
        exit_status: field(52).and_then(|v| v.parse().ok()),
        exec_sig: ExecSig {
            start_code: num(26).unwrap_or(0),
            start_stack: num(28).unwrap_or(0),
            env_start: num(50).unwrap_or(0),
            env_end: num(51).unwrap_or(0),
        },
    })
}

pub(super) fn proc_state(c: char) -> ProcState {
    match c {
        'R' => ProcState::Running,
        'S' | 'I' => ProcState::Sleeping,
        'D' => ProcState::DiskSleep,
        'Z' => ProcState::Zombie,
        'T' | 't' => ProcState::Stopped,
        'X' | 'x' => ProcState::Exited,
        _ => ProcState::Unknown,
    }
}

/// Decode a `waitpid` status: the exit code, or `-signal` when a signal killed the process.
pub(super) fn decode_wait_status(st: i32) -> i32 {
    let sig = st & 0x7f;
    if sig == 0 { (st >> 8) & 0xff } else { -sig }
}

/// The Slurm job id and the Kubernetes pod uid found in `/proc/<pid>/cgroup`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct CgroupIds {
    pub(super) slurm_job: Option<String>,
    pub(super) pod_uid: Option<String>,
}

pub(super) fn parse_cgroup(text: &str) -> CgroupIds {
    let mut ids = CgroupIds::default();
    for line in text.lines() {
        // hierarchy-id:controllers:path
        let Some(path) = line.splitn(3, ':').nth(2) else { continue };
        for comp in path.split('/') {
            if ids.slurm_job.is_none()
                && let Some(id) = comp.strip_prefix("job_")
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
            {
                ids.slurm_job = Some(id.to_string());
            }
            if ids.pod_uid.is_none() {
                ids.pod_uid = pod_uid_of(comp);
            }
        }
    }
    ids
}

/// `pod1b2c…` (cgroupfs driver) or `kubepods-burstable-pod1b2c_…​.slice` (systemd driver, `_` for `-`).
pub(super) fn pod_uid_of(comp: &str) -> Option<String> {
    let comp = comp.strip_suffix(".slice").unwrap_or(comp);
    let start = if comp.starts_with("pod") { 3 } else { comp.rfind("-pod")? + 4 };
    let uid = comp[start..].replace('_', "-");
    let ok = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && uid.matches('-').count() == 4;
    ok.then_some(uid)
}

/// Read a small file from offset 0 with `pread` into `buf` (see [`read_small`]).
pub(super) fn read_small_at(f: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        let len = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        let n = match f.read_at(&mut buf[len..], len as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(len);
                continue;
            }
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        };
        buf.truncate(len + n);
        if n == 0 || len + n < cap || buf.len() >= MAX_SMALL_FILE {
            return Ok(());
        }
        buf.reserve(cap);
    }
}

/// Read a small file (procfs `stat`, `cgroup`) into `buf`, reusing its allocation. A short read ends
/// it: procfs hands out such a file in one read, and a regular file short-reads only at its end.
pub(super) fn read_small(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    read_small_at(&std::fs::File::open(path)?, buf)
}

pub(super) fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `write_bytes` of `<procfs>/<pid>/io`: bytes this process caused to be sent to storage.
pub(super) fn io_write_bytes(procfs: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(procfs.join(pid.to_string()).join("io")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// The `cpu` line of `/proc/stat`: (busy, total) ticks of all CPUs. Busy is all but idle and iowait,
/// as in the host collector's CPU utilisation.
pub(super) fn cpu_ticks(procfs: &Path, buf: &mut Vec<u8>) -> Option<(u64, u64)> {
    read_small(&procfs.join("stat"), buf).ok()?;
    let text = std::str::from_utf8(buf).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest is already inside user).
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|v| v.parse::<u64>().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

pub(super) fn uptime_secs(procfs: &Path, buf: &mut Vec<u8>) -> Option<f64> {
    read_small(&procfs.join("uptime"), buf).ok()?;
    std::str::from_utf8(buf).ok()?.split_whitespace().next()?.parse().ok()
}
