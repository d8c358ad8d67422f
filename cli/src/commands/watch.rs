//! `faultline watch`: `status`, refreshed. On a terminal the screen is redrawn; otherwise each
//! snapshot is printed after the last, separated by a blank line, so logs and tests can read them.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::status::Snapshot;
use super::{Ctx, Reported, Verdict, emit, now_s};
use crate::render;

/// Shortest refresh interval accepted: faster only loads the analyzer without showing anything new
/// (it ticks its engine once a second).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Time between refreshes (500ms, 2s, 1m)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after N refreshes (default: run until interrupted)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print each snapshot as one line of JSON instead of text
    #[arg(long)]
    pub json: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 500ms, 2s or 1m: {e}"))?;
    if d < MIN_INTERVAL {
        return Err(format!("{s} is shorter than the shortest interval, {}ms", MIN_INTERVAL.as_millis()));
    }
    Ok(d)
}

/// Refreshes until `--count` is reached. A failed refresh is shown and retried, not fatal: a watch
/// should outlive an analyzer restart. The exit code is that of the last refresh.
pub fn run(ctx: &Ctx, a: &WatchArgs) -> anyhow::Result<Verdict> {
    let tty = std::io::stdout().is_terminal();
    let mut n = 0u64;
    let mut last: Result<Verdict, String>;
    loop {
        n += 1;
        let now = now_s();
        let header = format!(
            "every {} · {} · refresh {n}{}\n",
            humantime::format_duration(a.interval),
            render::time(now),
            a.count.map(|c| format!("/{c}")).unwrap_or_default()
        );
        let (body, verdict) = match Snapshot::fetch(&ctx.client) {
            Ok(s) if a.json => {
                let mut line = serde_json::to_string(&s.json())?;
                line.push('\n');
                (line, Ok(s.verdict()))
            }
            Ok(s) => (format!("{}{}", ctx.style.dim(&header), s.render(&ctx.style, now)), Ok(s.verdict())),
            Err(e) => {
                let msg = format!("error: {e}");
                eprintln!("{msg}");
                (format!("{}{}\n", ctx.style.dim(&header), ctx.style.red(&msg)), Err(msg))
            }
        };
        last = verdict;
        let frame = if tty {
            format!("\x1b[2J\x1b[H{body}")
        } else if n > 1 && !a.json {
            format!("\n{body}")
        } else {
            body
        };
        emit(&frame)?;
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
        std::thread::sleep(a.interval);
    }
    // The error was printed to stderr when it happened.
    last.map_err(|_| anyhow::Error::new(Reported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_tiny_ones_are_refused() {
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("1ms").unwrap_err().contains("shortest"));
        assert!(parse_interval("soon").unwrap_err().contains("soon"));
    }
}
