//! The standard `process_*` metrics that every Prometheus client library exports (CPU time, memory,
//! file descriptors, start time) for the current process, read from `/proc/self` on Linux and
//! rendered as exposition text that the agent and the analyzer append to their `/metrics`.
//! Elsewhere (no `/proc`) nothing is rendered.

use std::fmt::Write;

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): fixed at 100 by the Linux ABI
/// on every architecture faultline runs on, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says, where it says it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,fd,limits}` and `/proc/stat`.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        Self::parse(stat.as_deref(), status.as_deref(), limits.as_deref(), boot.as_deref(), open_fds)
    }

    /// The same from the files' text (for tests).
    pub fn parse(
        stat: Option<&str>,
        status: Option<&str>,
        limits: Option<&str>,
        proc_stat: Option<&str>,
        open_fds: Option<u64>,
    ) -> Self {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after: Vec<&str> = stat
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // `after[0]` is field 3 (state): field n is after[n - 3].
        let field = |n: usize| after.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = match (field(14), field(15)) {
            (Some(u), Some(s)) => Some((u + s) / USER_HZ),
            _ => None,
        };
        let kib = |key: &str| {
            status?
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let btime = proc_stat
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let max_fds = limits
            .and_then(|l| l.lines().find(|l| l.starts_with("Max open files")))
            .and_then(|l| l["Max open files".len()..].split_whitespace().next()?.parse::<u64>().ok());
        Self {
            cpu_seconds,
            resident_bytes: kib("VmRSS:").map(|k| k * 1024),
            virtual_bytes: kib("VmSize:").map(|k| k * 1024),
            open_fds,
            max_fds,
            start_time_seconds: btime.zip(field(22)).map(|(b, ticks)| b + ticks / USER_HZ),
        }
    }

    /// Exposition text: OpenMetrics (counter family named without `_total`) or Prometheus 0.0.4.
    pub fn exposition(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            let Some(v) = value else { return };
            let family = if openmetrics && kind == "counter" { name.trim_end_matches("_total") } else { name };
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}\n{name} {v}");
        };
        one(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v as f64),
        );
        one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v as f64),
        );
        one("process_open_fds", "gauge", "Number of open file descriptors.", self.open_fds.map(|v| v as f64));
        one("process_max_fds", "gauge", "Maximum number of open file descriptors.", self.max_fds.map(|v| v as f64));
        one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        out
    }
}

/// Appends the current process's metrics to an encoded exposition (before OpenMetrics' `# EOF`).
pub fn append_to(body: &mut String, openmetrics: bool) {
    let text = ProcessStats::read().exposition(openmetrics);
    if openmetrics && let Some(i) = body.rfind("# EOF") {
        body.insert_str(i, &text);
    } else {
        body.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 123400 0";
        let status = "Name:\tx\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let p =
            ProcessStats::parse(Some(stat), Some(status), Some(limits), Some("cpu 1 2\nbtime 1700000000\n"), Some(7));
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.resident_bytes, Some(10240 * 1024));
        assert_eq!(p.virtual_bytes, Some(204800 * 1024));
        assert_eq!(p.max_fds, Some(1024));
        assert_eq!(p.open_fds, Some(7));
        assert_eq!(p.start_time_seconds, Some(1_700_000_000.0 + 1234.0));
        let text = p.exposition(false);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"), "{text}");
        let om = p.exposition(true);
        assert!(om.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 3\n"), "{om}");
    }

    #[test]
    fn nothing_without_proc() {
        assert_eq!(ProcessStats::parse(None, None, None, None, None).exposition(false), "");
        let mut body = String::from("a 1\n# EOF\n");
        body.insert_str(body.rfind("# EOF").unwrap(), "b 2\n");
        assert_eq!(body, "a 1\nb 2\n# EOF\n");
    }

    #[test]
    fn reads_this_process_on_linux() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let p = ProcessStats::read();
            assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
            assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        }
    }
}
