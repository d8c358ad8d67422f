//! faultline-logging: the agent's and the analyzer's log output on stderr, in one place (`proto`
//! does no I/O, and the two binaries never import each other): human-readable text (the default)
//! or one JSON object per line (`--log-format json`) for log shippers (Loki, Elasticsearch,
//! journald's JSON collectors). `RUST_LOG` picks the level either way (default `info`). Also the
//! throttle both use to log a failing background export at most once a minute.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields (message included), spans.
    Json,
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// Failures of a background export (OTLP metrics, spans) are logged at most this often: a collector
/// that is down for an hour must not fill the journal.
pub const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs an export failure unless one was logged less than `ERROR_LOG_EVERY` ago; counts the rest.
#[derive(Debug, Default)]
pub struct ErrorThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorThrottle {
    /// True when this failure should be logged now; `suppressed()` then says how many were not.
    pub fn should_log(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.duration_since(t) < ERROR_LOG_EVERY => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// Failures not logged since the last logged one (reset by reading).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_logged_at_most_once_a_minute() {
        let mut t = ErrorThrottle::default();
        let t0 = Instant::now();
        assert!(t.should_log(t0));
        assert!(!t.should_log(t0 + Duration::from_secs(1)));
        assert!(!t.should_log(t0 + Duration::from_secs(59)));
        assert_eq!(t.take_suppressed(), 2);
        assert!(t.should_log(t0 + Duration::from_secs(61)));
    }
}
