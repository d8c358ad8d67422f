//! The exit watcher: a thread that holds a pidfd per live rank and wakes the pusher the moment one
//! exits.

use super::*;

/// How often the exit watcher takes up a changed set of rank pids, and, where `pidfd_open` is not
/// available (Linux before 5.3), how often it checks each pid with `kill(pid, 0)`. Half a second keeps
/// an exit under a second old when the pusher hears of it, at two wake-ups a second of a small thread.
pub(super) const EXIT_WATCH_TICK_MS: i32 = 500;

/// A small thread that holds a pidfd for each live rank process and wakes the pusher (an urgent
/// report, whose jobs collection then finds the exit, the exit code when the process is a zombie, and
/// emits `process_exit`) as soon as one becomes readable, that is, the process ended.
pub(super) struct ExitWatch {
    pub(super) wanted: Arc<std::sync::Mutex<Vec<u32>>>,
    pub(super) stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ExitWatch {
    pub(super) fn spawn(events: Arc<crate::events::EventQueue>) -> std::io::Result<ExitWatch> {
        let wanted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, st) = (wanted.clone(), stop.clone());
        std::thread::Builder::new().name("exit-watch".into()).spawn(move || exit_watch_loop(&w, &st, &events))?;
        Ok(ExitWatch { wanted, stop })
    }

    /// The pids to watch from now on (the live ranks of the latest cycle).
    pub(super) fn set(&self, pids: Vec<u32>) {
        *self.wanted.lock().unwrap_or_else(|p| p.into_inner()) = pids;
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a watched pid is followed.
pub(super) enum Watched {
    Pidfd(std::os::fd::OwnedFd),
    /// No pidfd support: `kill(pid, 0)` and the `stat` state every tick.
    Probe,
}

/// Open a pidfd for `pid`: `Ok(None)` when the kernel has no `pidfd_open`, an error `ESRCH` when the
/// process is already gone.
pub(super) fn pidfd_open(pid: u32) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let Ok(p) = libc::pid_t::try_from(pid) else { return Err(std::io::Error::from_raw_os_error(libc::ESRCH)) };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
}

/// Whether `pid` is gone or a zombie, by `kill(pid, 0)` and `/proc/<pid>/stat`.
pub(super) fn probe_gone(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else { return true };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => st.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

pub(super) fn exit_watch_loop(
    wanted: &std::sync::Mutex<Vec<u32>>,
    stop: &std::sync::atomic::AtomicBool,
    events: &crate::events::EventQueue,
) {
    use std::os::fd::AsRawFd;
    let mut watched: HashMap<u32, Watched> = HashMap::new();
    let mut gone: Vec<u32> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let want: HashSet<u32> = wanted.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        watched.retain(|p, _| want.contains(p));
        for &p in &want {
            if watched.contains_key(&p) {
                continue;
            }
            match pidfd_open(p) {
                Ok(Some(fd)) => {
                    watched.insert(p, Watched::Pidfd(fd));
                }
                Ok(None) => {
                    watched.insert(p, Watched::Probe);
                }
                Err(_) => gone.push(p), // gone between the cycle and now
            }
        }
        let mut fds: Vec<(u32, libc::pollfd)> = watched
            .iter()
            .filter_map(|(p, w)| match w {
                Watched::Pidfd(fd) => Some((*p, libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })),
                Watched::Probe => None,
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(EXIT_WATCH_TICK_MS as u64));
        } else {
            let mut raw: Vec<libc::pollfd> = fds.iter().map(|(_, f)| *f).collect();
            // SAFETY: `raw` is a valid array of `raw.len()` pollfd structs for the duration of the call.
            let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, EXIT_WATCH_TICK_MS) };
            if n > 0 {
                for (i, f) in raw.iter().enumerate() {
                    if f.revents != 0 {
                        gone.push(fds[i].0);
                    }
                }
            }
            fds.clear();
        }
        for (p, w) in &watched {
            if matches!(w, Watched::Probe) && probe_gone(*p) {
                gone.push(*p);
            }
        }
        if !gone.is_empty() {
            {
                let mut w = wanted.lock().unwrap_or_else(|p| p.into_inner());
                w.retain(|p| !gone.contains(p));
            }
            for p in &gone {
                watched.remove(p);
            }
            tracing::info!(pids = ?gone, "rank process exited: urgent report");
            gone.clear();
            events.wake();
        }
    }
}

pub(super) fn exit_event(now: i64, job: &str, s: &RankSample, code: Option<i32>) -> Event {
    let how = match code {
        Some(0) => "exited with code 0".to_string(),
        Some(c) if c < 0 => format!("was killed by signal {}", -c),
        Some(c) => format!("exited with code {c}"),
        None => "is gone (exit code unknown)".to_string(),
    };
    Event {
        ts_ms: now,
        source: EventSource::Agent,
        class: faultline_proto::EventClass::ProcessExit,
        severity: if code == Some(0) { Severity::Info } else { Severity::Warning },
        // The exit concerns the rank, not its GPU: naming the GPU would read as GPU evidence.
        component: None,
        pid: s.pid,
        count: 1,
        message: format!(
            "rank {} of job {job} (pid {}) {how}",
            s.rank,
            s.pid.map(|p| p.to_string()).unwrap_or_default()
        ),
        ..Default::default()
    }
}
