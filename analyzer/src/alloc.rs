//! Settings of the allocator (mimalloc) that the analyzer's processes install as their global
//! allocator: `faultline-analyzer`, and `faultline` for its in-process simulator and demo.

use libmimalloc_sys as mi;

/// mimalloc's `purge_delay` option: its place in mimalloc v3's option list, which the bindings do not
/// name. A test checks that this option holds purge_delay's documented default (1,000 ms).
const PURGE_DELAY: mi::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc hands it back to the kernel: one default
/// report interval. The analyzer frees and allocates a round of reports every interval; given back
/// after mimalloc's default second, the same pages came back as page faults the kernel zeroed. In
/// `scale-100k` (600 virtual s in about 60 s of wall time, so an interval is a wall second there):
/// 1.39M minor faults -> 0.58M, system time 3.4 -> 2.1 s, wall 59.4 -> 57.1 s (2 cores), peak RSS
/// 1,859 -> 1,876 MiB.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// Keeps freed pages for `PURGE_DELAY_MS` (call once, first thing in `main`), unless the operator
/// set `MIMALLOC_PURGE_DELAY`, which mimalloc read at start.
pub fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets an integer option; mimalloc reads it on its next purge.
    unsafe { mi::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_with_its_documented_default() {
        // SAFETY: reads an integer option.
        let before = unsafe { mi::mi_option_get(PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(before, 1_000, "option {PURGE_DELAY} is not mimalloc's purge_delay (default 1000 ms)");
        }
        // Its neighbours hold other defaults: a renumbered list would not pass by chance.
        let neighbours = unsafe { (mi::mi_option_get(PURGE_DELAY - 1), mi::mi_option_get(PURGE_DELAY + 1)) };
        assert_ne!(neighbours, (1_000, 1_000));
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            keep_freed_pages();
            assert_eq!(unsafe { mi::mi_option_get(PURGE_DELAY) }, PURGE_DELAY_MS as std::ffi::c_long);
        }
    }
}
