//! The calling thread's CPU time, so that the in-process runner can tell the analyzer's work per
//! round apart from the time its thread waited for a core that the simulator's threads held (four
//! threads share the two cores of the machine the benchmarks run on; an analyzer has its own).

use std::time::Duration;

/// CPU time the calling thread has used since it started.
pub fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Lowers the calling thread's scheduling priority by `nice` steps (Linux: a thread is a task with
/// its own nice value). The in-process runner does this on the simulator's thread: it stands for
/// thousands of remote machines, and on a shared two-core box it should not take the analyzer's
/// core in the middle of a round. Raising one's own nice value needs no privilege; a refusal is
/// ignored (the run is then only slower).
pub fn lower_thread_priority(nice: i32) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_moves_with_work_and_not_with_sleep() {
        let t0 = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu() - t0;
        let t1 = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - t1 < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(thread_cpu() - t1 >= Duration::from_millis(20));
        assert!(slept < Duration::from_millis(20), "sleeping used {slept:?} of CPU");
    }

    #[test]
    fn lowering_a_threads_priority_leaves_the_others_alone() {
        let own = || unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let before = own();
        let lowered = std::thread::spawn(move || {
            lower_thread_priority(5);
            own()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(own(), before, "the calling thread keeps its priority");
    }
}
