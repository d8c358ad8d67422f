//! Validation before a resume: the checks a node faultline drained must pass before it goes back
//! into service. Built-in checks judge what the node's latest report said (`NodeFacts`, taken from
//! the engine's state); command checks run a program on the analyzer's host (`srun -w {node} ...`,
//! `ssh {node} ...`) with a timeout, and pass on exit 0. Each outcome keeps a bounded tail of the
//! program's output for the incident's timeline.
//!
//! Evaluating built-in checks is pure; running commands blocks, so the runner does it on a thread of
//! its own, never inside a remediation round.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_proto::GpuState as WireGpuState;

use super::config::{Check, CheckSpec};
use crate::state::NodeState as EngineNode;

/// Most bytes of a command's output kept while it runs (the newest ones).
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// Most lines of output recorded in the timeline, and most bytes of them: the end of a `dcgmi diag`
/// table or an `all_reduce_perf` summary fits.
pub const TIMELINE_OUTPUT_LINES: usize = 20;
pub const TIMELINE_OUTPUT_BYTES: usize = 2048;

/// How long a command that timed out gets between SIGTERM and SIGKILL: `srun` uses it to cancel its
/// step on the node.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How often a running command is checked for having exited.
const POLL: Duration = Duration::from_millis(20);

/// What the node's latest report said, as the built-in checks need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    /// GPUs listed in the latest report and working (not lost, unresponsive or missing).
    pub gpus_working: u32,
    /// GPUs listed in the latest report.
    pub gpus_listed: u32,
    /// The agent's word on how many GPUs the node should have.
    pub expected_gpus: Option<u32>,
    /// Fabric ports.
    pub ports: Vec<PortFacts>,
}

/// One fabric port in the latest report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortFacts {
    pub name: String,
    /// IB port state (`ACTIVE`) or netdev operstate (`up`), as last reported.
    pub state: Option<String>,
    /// Gb/s, as last reported.
    pub rate_gbps: Option<f64>,
    /// What it should run at: topology file, analyzer config or the fleet's majority.
    pub expected_rate_gbps: Option<f64>,
    /// The port was up in an earlier report but is absent from the latest one (the engine keeps a
    /// port's last state when it vanishes, so its state word alone would still say ACTIVE).
    pub gone: bool,
}

impl NodeFacts {
    /// From the engine's state of a node; `expected_rate(nic)` is the engine's expected rate.
    pub fn from_state(n: &EngineNode, expected_rate: impl Fn(&str) -> Option<f64>) -> NodeFacts {
        let working =
            n.gpus.values().filter(|g| g.seen && g.missing_since.is_none() && g.state == WireGpuState::Ok).count();
        let ports = n
            .nics
            .iter()
            .filter(|(_, s)| s.fabric)
            .map(|(name, s)| PortFacts {
                name: name.clone(),
                state: s.state_word.clone(),
                rate_gbps: s.rates.back().map(|(_, r)| *r),
                expected_rate_gbps: expected_rate(name),
                // A port that is up gets a rate sample with every report that lists it.
                gone: s.rates.back().is_some_and(|(t, _)| *t < n.last_report_ms)
                    && s.state_word.as_deref().is_some_and(port_up),
            })
            .collect();
        NodeFacts {
            gpus_working: u32::try_from(working).unwrap_or(u32::MAX),
            gpus_listed: u32::try_from(n.gpus_reported).unwrap_or(u32::MAX),
            expected_gpus: n.expected_gpus,
            ports,
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// A few words with the numbers: `7 of 8 GPUs`, `exit status 1 after 2.3 s`.
    pub summary: String,
    /// The end of the command's output (stdout and stderr as they came), at most
    /// `TIMELINE_OUTPUT_LINES` lines; empty for built-in checks.
    pub output: String,
}

impl CheckOutcome {
    fn new(name: &str, passed: bool, summary: String) -> Self {
        Self { name: name.to_string(), passed, summary, output: String::new() }
    }
}

/// Evaluates a built-in check against the node's facts (`None`: the analyzer holds no report of
/// the node). `None` for a command check.
pub fn builtin(check: &Check, facts: Option<&NodeFacts>) -> Option<CheckOutcome> {
    let name = check.name.as_str();
    let no_report = || CheckOutcome::new(name, false, "no report from the node".into());
    match &check.spec {
        CheckSpec::Command { .. } => None,
        CheckSpec::GpuCount { expected } => Some(match facts {
            None => no_report(),
            Some(f) => match expected.or(f.expected_gpus) {
                None => CheckOutcome::new(
                    name,
                    false,
                    format!(
                        "expected GPU count unknown ({} GPUs listed): set `expected` on the check or expected_gpus in the agent",
                        f.gpus_listed
                    ),
                ),
                Some(want) => {
                    let passed = f.gpus_working >= want;
                    let mut s = format!("{} of {want} GPUs", f.gpus_working);
                    if f.gpus_listed > f.gpus_working {
                        s.push_str(&format!(" ({} listed but not working)", f.gpus_listed - f.gpus_working));
                    }
                    CheckOutcome::new(name, passed, s)
                }
            },
        }),
        CheckSpec::FabricPorts { rate_gbps } => Some(match facts {
            None => no_report(),
            Some(f) if f.ports.is_empty() => CheckOutcome::new(name, false, "no fabric ports reported".into()),
            Some(f) => {
                let mut bad = Vec::new();
                let mut unrated = 0;
                for p in &f.ports {
                    let state = p.state.as_deref().unwrap_or("unknown");
                    if p.gone {
                        bad.push(format!("{} missing from the latest report", p.name));
                        continue;
                    }
                    if !port_up(state) {
                        bad.push(format!("{} {state}", p.name));
                        continue;
                    }
                    match (rate_gbps.or(p.expected_rate_gbps), p.rate_gbps) {
                        (Some(want), Some(got)) if got + 1e-6 < want => {
                            bad.push(format!("{} at {} Gb/s, expected {}", p.name, num(got), num(want)))
                        }
                        (Some(want), None) => bad.push(format!("{} rate unknown, expected {}", p.name, num(want))),
                        (None, _) => unrated += 1,
                        _ => {}
                    }
                }
                if bad.is_empty() {
                    let mut s = format!("{} fabric ports active", f.ports.len());
                    if unrated > 0 {
                        s.push_str(&format!(", rate of {unrated} not checked (no expected rate known)"));
                    } else {
                        s.push_str(" at the expected rate");
                    }
                    CheckOutcome::new(name, true, s)
                } else {
                    CheckOutcome::new(name, false, bad.join(", "))
                }
            }
        }),
    }
}

/// IB `ACTIVE` or netdev `up`.
fn port_up(state: &str) -> bool {
    state.eq_ignore_ascii_case("active") || state.eq_ignore_ascii_case("up")
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

/// The arguments with `{node}` and `{target}` filled in. Both are names the scheduler adapter
/// accepts (letters, digits, `-`, `_`, `.`), so they cannot change what a shell would run.
pub fn substitute(argv: &[String], node: &str, target: &str) -> Vec<String> {
    argv.iter().map(|a| a.replace("{node}", node).replace("{target}", target)).collect()
}

/// Runs a command check for `node`; blocks until it exits or times out (then its process group is
/// sent SIGTERM and, `KILL_GRACE` later, SIGKILL).
pub fn run_command(check: &Check, node: &str, target: &str) -> CheckOutcome {
    let CheckSpec::Command { argv, timeout, env } = &check.spec else {
        return CheckOutcome::new(&check.name, false, "not a command check".into());
    };
    let argv = substitute(argv, node, target);
    let shown = argv.join(" ");
    let started = Instant::now();
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return CheckOutcome::new(&check.name, false, format!("cannot make a pipe for `{shown}`: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return CheckOutcome::new(&check.name, false, format!("cannot make a pipe for `{shown}`: {e}")),
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env).stdin(Stdio::null()).stdout(writer).stderr(writer2).process_group(0);
    let spawned = cmd.spawn();
    // The command holds the pipe's write ends: drop it so the reader sees the end of the output.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return CheckOutcome::new(&check.name, false, format!("cannot run `{shown}`: {e}")),
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let t2 = tail.clone();
    let reading = std::thread::spawn(move || {
        let mut r = reader;
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => t2.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]),
            }
        }
    });
    let deadline = started + *timeout;
    let pgid = child.id() as i32;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if Instant::now() >= deadline && !timed_out => {
                timed_out = true;
                signal_group(pgid, libc::SIGTERM);
                let grace = Instant::now() + KILL_GRACE;
                loop {
                    match child.try_wait() {
                        Ok(None) if Instant::now() < grace => std::thread::sleep(POLL),
                        _ => break,
                    }
                }
                signal_group(pgid, libc::SIGKILL);
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => break Err(e),
        }
    };
    // Whatever the process group left behind may hold the pipe open: wait for the output briefly.
    let read_deadline = Instant::now() + Duration::from_secs(2);
    while !reading.is_finished() && Instant::now() < read_deadline {
        std::thread::sleep(POLL);
    }
    let output = timeline_output(&tail.lock().unwrap_or_else(|p| p.into_inner()).text());
    let took = started.elapsed().as_secs_f64();
    let (passed, summary) = match status {
        _ if timed_out => (false, format!("did not finish within {} s; killed", num(timeout.as_secs_f64()))),
        Ok(st) if st.success() => (true, format!("exit 0 after {took:.1} s")),
        Ok(st) => (false, format!("{st} after {took:.1} s")),
        Err(e) => (false, format!("cannot wait for `{shown}`: {e}")),
    };
    tracing::debug!(check = %check.name, node = %node, command = %shown, passed, summary = %summary, "validation command ran");
    CheckOutcome { name: check.name.clone(), passed, summary, output }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The newest `MAX_OUTPUT_BYTES` of a stream.
#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let over = self.bytes.len().saturating_sub(MAX_OUTPUT_BYTES);
        self.bytes.drain(..over);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// The last `TIMELINE_OUTPUT_LINES` non-empty lines of `text`, at most `TIMELINE_OUTPUT_BYTES`, with
/// control characters (terminal escapes) replaced.
pub fn timeline_output(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end().chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut kept: Vec<String> = Vec::new();
    let mut bytes = 0;
    for l in lines.iter().rev().take(TIMELINE_OUTPUT_LINES) {
        if bytes + l.len() + 1 > TIMELINE_OUTPUT_BYTES {
            if kept.is_empty() {
                // One huge line: keep its end.
                let cut = l.len() - TIMELINE_OUTPUT_BYTES.saturating_sub(1).min(l.len());
                let start = (cut..=l.len()).find(|i| l.is_char_boundary(*i)).unwrap_or(l.len());
                kept.push(l[start..].to_string());
            }
            break;
        }
        bytes += l.len() + 1;
        kept.push(l.clone());
    }
    kept.reverse();
    kept.join("\n")
}

/// The sentence a failed validation writes into the drain reason: the failed checks with their
/// summaries, `gpu-count: 7 of 8 GPUs; dcgm-diag: exit status: 1 after 61.0 s`.
pub fn failure_words(outcomes: &[CheckOutcome]) -> String {
    outcomes.iter().filter(|o| !o.passed).map(|o| format!("{}: {}", o.name, o.summary)).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediate::config::Check;

    fn gpu(expected: Option<u32>) -> Check {
        Check { name: "gpu-count".into(), spec: CheckSpec::GpuCount { expected } }
    }

    fn fabric(rate: Option<f64>) -> Check {
        Check { name: "fabric".into(), spec: CheckSpec::FabricPorts { rate_gbps: rate } }
    }

    fn port(name: &str, state: &str, rate: f64, expected: Option<f64>) -> PortFacts {
        PortFacts {
            name: name.into(),
            state: Some(state.into()),
            rate_gbps: Some(rate),
            expected_rate_gbps: expected,
            gone: false,
        }
    }

    fn check(c: &Check, f: Option<&NodeFacts>, passed: bool, summary: &str) {
        let o = builtin(c, f).unwrap();
        assert_eq!((o.passed, o.summary.as_str()), (passed, summary), "{c:?} on {f:?}");
    }

    #[test]
    fn gpu_count_compares_working_gpus_with_the_expected_count() {
        let f = |working, listed, expected| NodeFacts {
            gpus_working: working,
            gpus_listed: listed,
            expected_gpus: expected,
            ports: vec![],
        };
        check(&gpu(None), Some(&f(8, 8, Some(8))), true, "8 of 8 GPUs");
        check(&gpu(None), Some(&f(7, 7, Some(8))), false, "7 of 8 GPUs");
        check(&gpu(None), Some(&f(7, 8, Some(8))), false, "7 of 8 GPUs (1 listed but not working)");
        // The check's own number wins over the agent's.
        check(&gpu(Some(4)), Some(&f(4, 4, Some(8))), true, "4 of 4 GPUs");
        let o = builtin(&gpu(None), Some(&f(8, 8, None))).unwrap();
        assert!(!o.passed && o.summary.contains("expected GPU count unknown"), "{o:?}");
        check(&gpu(None), None, false, "no report from the node");
    }

    #[test]
    fn fabric_ports_must_be_active_at_the_expected_rate() {
        let f = |ports| NodeFacts { ports, ..NodeFacts::default() };
        let good = f(vec![port("mlx5_0", "ACTIVE", 400.0, Some(400.0)), port("mlx5_1", "ACTIVE", 400.0, Some(400.0))]);
        check(&fabric(None), Some(&good), true, "2 fabric ports active at the expected rate");
        let down = f(vec![port("mlx5_0", "DOWN", 400.0, Some(400.0)), port("mlx5_1", "ACTIVE", 200.0, Some(400.0))]);
        check(&fabric(None), Some(&down), false, "mlx5_0 DOWN, mlx5_1 at 200 Gb/s, expected 400");
        // The check's rate wins over the topology's.
        check(&fabric(Some(200.0)), Some(&down), false, "mlx5_0 DOWN");
        let unrated = f(vec![port("eth1", "up", 100.0, None)]);
        check(
            &fabric(None),
            Some(&unrated),
            true,
            "1 fabric ports active, rate of 1 not checked (no expected rate known)",
        );
        check(&fabric(None), Some(&f(vec![])), false, "no fabric ports reported");
        let gone = PortFacts { gone: true, ..port("mlx5_1", "ACTIVE", 400.0, Some(400.0)) };
        let vanished = f(vec![port("mlx5_0", "ACTIVE", 400.0, Some(400.0)), gone]);
        check(&fabric(None), Some(&vanished), false, "mlx5_1 missing from the latest report");
        check(&fabric(None), None, false, "no report from the node");
    }

    #[test]
    fn the_output_kept_is_the_end_bounded_and_clean() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let out = timeline_output(&text);
        assert_eq!(out.lines().count(), TIMELINE_OUTPUT_LINES);
        assert!(out.ends_with("line 99") && out.starts_with("line 80"), "{out}");
        let long = "x".repeat(10_000) + "END";
        let out = timeline_output(&long);
        assert!(out.len() < TIMELINE_OUTPUT_BYTES && out.ends_with("END"), "{}", out.len());
        assert_eq!(timeline_output("a\x1b[31mred\r\n\n\nb"), "a [31mred\nb");
        let mut t = Tail::default();
        t.push(&vec![b'a'; MAX_OUTPUT_BYTES]);
        t.push(b"zz");
        assert_eq!(t.text().len(), MAX_OUTPUT_BYTES);
        assert!(t.text().ends_with("azz"));
    }

    fn command(argv: &[&str], timeout_ms: u64) -> Check {
        Check {
            name: "cmd".into(),
            spec: CheckSpec::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                timeout: Duration::from_millis(timeout_ms),
                env: [("FAULTLINE_TEST_VAR".to_string(), "from-env".to_string())].into(),
            },
        }
    }

    #[test]
    fn a_command_passes_on_exit_zero_with_node_substituted_and_its_output_kept() {
        let o = run_command(
            &command(
                &["/bin/sh", "-c", "echo checking {node} as {target} $FAULTLINE_TEST_VAR; echo oops >&2", "x"],
                10_000,
            ),
            "node-0003",
            "n3",
        );
        assert!(o.passed, "{o:?}");
        assert!(o.summary.starts_with("exit 0 after"), "{o:?}");
        assert_eq!(o.output, "checking node-0003 as n3 from-env\noops");
    }

    #[test]
    fn a_command_fails_on_a_nonzero_exit_and_says_so() {
        let o = run_command(&command(&["/bin/sh", "-c", "echo 7 of 8 GPUs; exit 3"], 10_000), "n", "n");
        assert!(!o.passed);
        assert!(o.summary.contains("exit status: 3"), "{o:?}");
        assert_eq!(o.output, "7 of 8 GPUs");
        let o = run_command(&command(&["/nonexistent/dcgmi"], 10_000), "n", "n");
        assert!(!o.passed && o.summary.contains("/nonexistent/dcgmi"), "{o:?}");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        // The shell's child sleeps too: killing the group ends both, so the pipe closes.
        let o = run_command(&command(&["/bin/sh", "-c", "echo started; sleep 30; echo never"], 300), "n", "n");
        assert!(!o.passed);
        assert!(o.summary.contains("did not finish within 0.3 s"), "{o:?}");
        assert_eq!(o.output, "started");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
