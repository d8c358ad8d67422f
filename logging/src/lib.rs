//! faultline-logging: the agent's and the analyzer's log output on stderr, in one place (`proto`
//! does no I/O, and the two binaries never import each other): human-readable text (the default)
//! or one JSON object per line (`--log-format json`) for log shippers (Loki, Elasticsearch,
//! journald's JSON collectors). `RUST_LOG` picks the level either way (default `info`).

use std::io::IsTerminal;

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
