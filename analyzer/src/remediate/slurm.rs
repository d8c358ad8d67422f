//! The Slurm adapter: drains, resumes and reads nodes with `scontrol`, one process per call with a
//! timeout, with the configured environment (`SLURM_CONF`, …) and the cluster-to-Slurm name map.
//!
//! - drain: `scontrol update NodeName=<n> State=DRAIN Reason=<reason>`
//! - resume: `scontrol update NodeName=<n> State=RESUME`
//! - state: `scontrol show node -o <n>`, one line of `Key=Value` words; `Reason=` holds spaces and
//!   ends with Slurm's ` [user@time]` stamp.
//!
//! Calls block; the runner makes them from a blocking thread, never from the async runtime.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{NodeState, RemediateError, Remediator, SlurmConfig};

/// How often a running scontrol is checked for having exited. Calls take tens of milliseconds, so
/// this adds little latency and costs nothing measurable.
const POLL: Duration = Duration::from_millis(10);

/// Most bytes of scontrol output kept (one node's `show node -o` line is well under 2 KiB).
const MAX_OUTPUT_BYTES: u64 = 64 * 1024;

/// Slurm NodeNames as faultline will pass them: letters, digits, `-`, `_`, `.`; at most 128 bytes.
/// Anything else (spaces, `=`, `,`, brackets) could change what scontrol is asked to do.
pub fn valid_node_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The Slurm adapter.
#[derive(Debug, Clone)]
pub struct SlurmRemediator {
    scontrol: PathBuf,
    env: BTreeMap<String, String>,
    timeout: Duration,
    node_map: BTreeMap<String, String>,
}

impl SlurmRemediator {
    /// From checked settings (`RemediationConfig::build` resolved the scontrol path).
    pub fn new(cfg: &SlurmConfig) -> Self {
        Self {
            scontrol: cfg.scontrol.clone(),
            env: cfg.env.clone(),
            timeout: cfg.timeout,
            node_map: cfg.node_map.clone(),
        }
    }

    fn slurm_name(&self, node: &str) -> Result<String, RemediateError> {
        let name = self.target(node);
        if valid_node_name(&name) { Ok(name) } else { Err(RemediateError::BadNodeName { node: name }) }
    }

    /// Runs scontrol with `args`; its stdout on success.
    fn run(&self, args: &[String]) -> Result<String, RemediateError> {
        let program = self.scontrol.display().to_string();
        let shown = args.join(" ");
        let mut child = Command::new(&self.scontrol)
            .args(args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RemediateError::Spawn { program: program.clone(), source })?;
        let out = child.stdout.take().map(|s| std::thread::spawn(move || read_capped(s)));
        let err = child.stderr.take().map(|s| std::thread::spawn(move || read_capped(s)));
        let deadline = Instant::now() + self.timeout;
        let status: ExitStatus = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    tracing::warn!(program = %program, args = %shown, timeout_s = self.timeout.as_secs_f64(), "scontrol timed out; killed");
                    return Err(RemediateError::Timeout {
                        program,
                        args: shown,
                        timeout_s: self.timeout.as_secs_f64(),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RemediateError::Spawn { program, source: e });
                }
            }
        };
        let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        tracing::debug!(program = %program, args = %shown, status = %status, "scontrol ran");
        if status.success() {
            Ok(stdout)
        } else {
            let mut msg = stderr.trim().to_string();
            if msg.is_empty() {
                msg = stdout.trim().to_string();
            }
            Err(RemediateError::Failed { program, args: shown, status: status.to_string(), stderr: msg })
        }
    }
}

fn read_capped(r: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = r.take(MAX_OUTPUT_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl Remediator for SlurmRemediator {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn target(&self, node: &str) -> String {
        self.node_map.get(node).cloned().unwrap_or_else(|| node.to_string())
    }

    fn drain(&self, node: &str, reason: &str) -> Result<(), RemediateError> {
        let name = self.slurm_name(node)?;
        let args = vec![
            "update".to_string(),
            format!("NodeName={name}"),
            "State=DRAIN".to_string(),
            format!("Reason={reason}"),
        ];
        self.run(&args).map(|_| ()).map_err(|e| unknown_node(e, &name))
    }

    fn resume(&self, node: &str) -> Result<(), RemediateError> {
        let name = self.slurm_name(node)?;
        let args = vec!["update".to_string(), format!("NodeName={name}"), "State=RESUME".to_string()];
        self.run(&args).map(|_| ()).map_err(|e| unknown_node(e, &name))
    }

    fn node_state(&self, node: &str) -> Result<NodeState, RemediateError> {
        let name = self.slurm_name(node)?;
        let args = vec!["show".to_string(), "node".to_string(), "-o".to_string(), name.clone()];
        let out = self.run(&args).map_err(|e| unknown_node(e, &name))?;
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(&format!("NodeName={name}"))).ok_or_else(
            || RemediateError::Parse {
                program: self.scontrol.display().to_string(),
                message: format!("no `NodeName={name}` line in: {}", out.trim()),
            },
        )?;
        parse_show_node(line).ok_or_else(|| RemediateError::Parse {
            program: self.scontrol.display().to_string(),
            message: format!("no State= in: {line}"),
        })
    }
}

/// scontrol says `Node X not found` (exit 1) for a name it does not know.
fn unknown_node(e: RemediateError, name: &str) -> RemediateError {
    match e {
        RemediateError::Failed { ref stderr, .. }
            if stderr.contains("not found") || stderr.contains("Invalid node name") =>
        {
            RemediateError::UnknownNode { node: name.to_string() }
        }
        other => other,
    }
}

/// Parses one `scontrol show node -o` line: the `State=` word and the `Reason=` text.
pub fn parse_show_node(line: &str) -> Option<NodeState> {
    let state = line.split_whitespace().find_map(|w| w.strip_prefix("State="))?.to_string();
    let drained = state.split('+').any(|w| {
        let w = w.trim_end_matches('*').trim_end_matches('~').trim_end_matches('#');
        w == "DRAIN" || w == "DRAINED" || w == "DRAINING"
    });
    Some(NodeState { state, drained, reason: reason_of(line) })
}

/// The text after ` Reason=`: up to Slurm's ` [user@time]` stamp, or, without one, up to the next
/// ` Key=` word.
fn reason_of(line: &str) -> Option<String> {
    let start = if let Some(rest) = line.strip_prefix("Reason=") {
        rest
    } else {
        let i = line.find(" Reason=")?;
        &line[i + " Reason=".len()..]
    };
    let mut text = start;
    if let Some(open) = stamp_start(start) {
        text = &start[..open];
    } else if let Some(next) = next_key(start) {
        text = &start[..next];
    }
    let text = text.trim();
    if text.is_empty() || text == "(null)" || text.eq_ignore_ascii_case("none") { None } else { Some(text.to_string()) }
}

/// Byte offset of ` [user@time]` in a reason, if present.
fn stamp_start(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(" [") {
        let at = from + i;
        let rest = &s[at + 2..];
        if let Some(close) = rest.find(']')
            && rest[..close].contains('@')
        {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

/// Byte offset of the next ` Key=` word (CamelCase key) in `s`.
fn next_key(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(' ') {
        let at = from + i;
        let word = s[at + 1..].split(' ').next().unwrap_or("");
        if let Some((k, _)) = word.split_once('=')
            && k.len() > 1
            && k.starts_with(|c: char| c.is_ascii_uppercase())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real lines from `scontrol show node -o` (Slurm 22.05) with the node fields trimmed.
    const IDLE: &str = "NodeName=node-0003 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=1 CPUTot=1 CPULoad=4.29 \
        AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=localhost NodeHostName=localhost  \
        RealMemory=100 AllocMem=0 FreeMem=12652 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 \
        Weight=1 Owner=N/A MCS_label=N/A Partitions=main  BootTime=None SlurmdStartTime=None \
        LastBusyTime=2026-11-29T13:31:44 CfgTRES=cpu=1,mem=100M,billing=1 AllocTRES= CapWatts=n/a \
        CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s";

    fn with(state: &str, reason: Option<&str>) -> String {
        let mut l = IDLE.replace("State=IDLE", &format!("State={state}"));
        if let Some(r) = reason {
            l.push_str(&format!(" Reason={r}"));
        }
        l
    }

    fn check(line: &str, state: &str, drained: bool, reason: Option<&str>) {
        let s = parse_show_node(line).unwrap_or_else(|| panic!("no parse: {line}"));
        assert_eq!(s.state, state, "{line}");
        assert_eq!(s.drained, drained, "{line}");
        assert_eq!(s.reason.as_deref(), reason, "{line}");
    }

    #[test]
    fn states_and_reasons() {
        check(IDLE, "IDLE", false, None);
        check(
            &with("IDLE+DRAIN", Some("faultline: gpu_lost node-0003/gpu1 inc-000001 [root@2026-11-29T13:31:52]")),
            "IDLE+DRAIN",
            true,
            Some("faultline: gpu_lost node-0003/gpu1 inc-000001"),
        );
        check(
            &with("ALLOCATED+DRAIN", Some("maintenance by alice [alice@2026-11-29T13:40:00]")),
            "ALLOCATED+DRAIN",
            true,
            Some("maintenance by alice"),
        );
        check(&with("DRAINED", Some("x [slurm@2024-01-01T00:00:00]")), "DRAINED", true, Some("x"));
        check(
            &with("DOWN+NOT_RESPONDING", Some("Not responding [slurm@2026-11-29T13:40:00]")),
            "DOWN+NOT_RESPONDING",
            false,
            Some("Not responding"),
        );
        check(&with("MIXED", None), "MIXED", false, None);
        check(&with("DOWN*+DRAIN", Some("a [b] c [root@t]")), "DOWN*+DRAIN", true, Some("a [b] c"));
        // A reason followed by more fields (newer Slurm versions) and no stamp.
        check(&format!("{} Reason=hand set Comment=x", with("IDLE+DRAIN", None)), "IDLE+DRAIN", true, Some("hand set"));
        assert!(parse_show_node("Node nope not found").is_none());
    }

    #[test]
    fn node_names_that_could_change_the_command_are_refused() {
        assert!(valid_node_name("node-0003"));
        assert!(valid_node_name("gpu_a.01"));
        for bad in ["", "a b", "a=b", "n[1-3]", "n1,n2", "n\n", &"x".repeat(129)] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
        let r = SlurmRemediator::new(&SlurmConfig {
            node_map: [("bad".to_string(), "x y".to_string())].into(),
            ..SlurmConfig::default()
        });
        assert!(matches!(r.drain("bad", "r"), Err(RemediateError::BadNodeName { .. })));
        assert_eq!(r.target("other"), "other");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let r = SlurmRemediator::new(&SlurmConfig {
            scontrol: PathBuf::from("/nonexistent/scontrol"),
            ..SlurmConfig::default()
        });
        let e = r.node_state("n1").unwrap_err();
        assert!(matches!(e, RemediateError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/scontrol"), "{e}");
    }
}
