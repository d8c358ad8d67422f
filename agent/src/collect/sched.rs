//! A job's state and exit code from its scheduler, the only party that knows why a job ended:
//! Slurm (`scontrol show job -o <id>`, else `sacct` once the controller has purged the job) and
//! Kubernetes (the kubelet's pod list, `/pods`). A rank that merely vanished has no exit code; this is
//! where one comes from.
//!
//! The queries run on a thread of their own, so a slow controller never delays a report. Every job of
//! the latest report is asked about every `poll_interval`; a job with a rank that is gone is asked
//! every second until the scheduler says it ended, and the report that follows is pushed at once.
//! An ended job is not asked again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_proto::{JobSample, ProcState, SchedState, Scheduler};
use serde::Deserialize;

use crate::events::EventQueue;

/// While a job has a rank that is gone, its scheduler is asked this often: Slurm moves a job through
/// COMPLETING to its end state within a second or two of its last task's exit.
const ENDING_POLL: Duration = Duration::from_secs(1);
/// For this long after a rank of a job went away it is asked every `ENDING_POLL`; after that (a job
/// that lost a rank and goes on, such as an elastic one) at the usual interval again, so that a
/// cluster of agents does not keep its controller busy.
const ENDING_FAST_FOR: Duration = Duration::from_secs(60);
/// How long the query thread sleeps between looks at what is due.
const TICK: Duration = Duration::from_millis(250);
/// Largest scheduler answer read (a pod list of a busy node is a few hundred KiB).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where job states come from (`[jobs.scheduler]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedConfig {
    /// Ask Slurm about Slurm jobs. Default true (nothing happens on a host without Slurm jobs).
    pub slurm: bool,
    /// The `scontrol` program. Default `scontrol` (found through `PATH`); `SLURM_CONF` is passed on.
    pub scontrol: PathBuf,
    /// The `sacct` program, asked when `scontrol` no longer knows the job. Default `sacct`.
    pub sacct: PathBuf,
    /// The kubelet's pod list: a URL (`https://127.0.0.1:10250/pods`) or a file holding the same
    /// JSON. Default: none (Kubernetes pod status is not read).
    pub kubelet_pods: Option<String>,
    /// Bearer token file for the kubelet URL (a service account token).
    pub kubelet_token_file: Option<PathBuf>,
    /// PEM CA that signed the kubelet's serving certificate. Default: the system roots.
    pub kubelet_ca_cert: Option<PathBuf>,
    /// How often a running job's state is asked again, e.g. `5m`. Default `5m`: what matters is
    /// asked at once anyway (a job with a rank gone is asked every second for a minute).
    pub poll_interval: String,
    /// Longest one scheduler query may take, e.g. `5s`. Default `5s`.
    pub timeout: String,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            slurm: true,
            scontrol: PathBuf::from("scontrol"),
            sacct: PathBuf::from("sacct"),
            kubelet_pods: None,
            kubelet_token_file: None,
            kubelet_ca_cert: None,
            poll_interval: "5m".into(),
            timeout: "5s".into(),
        }
    }
}

/// What the scheduler said about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedStatus {
    pub state: SchedState,
    /// Set once the job ended: its exit code, negative for a signal.
    pub exit_code: Option<i32>,
}

// ---------------------------------------------------------------------------------------------------
// Slurm

/// A Slurm job state word (`scontrol` `JobState=`, `sacct` `State`, which may add ` by <uid>`).
pub fn slurm_state(word: &str) -> Option<SchedState> {
    let w = word.split_whitespace().next()?.trim_end_matches('+');
    Some(match w {
        "PENDING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "CONFIGURING" => SchedState::Pending,
        "RUNNING" | "SUSPENDED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED" => SchedState::Running,
        "COMPLETING" => SchedState::Completing,
        "COMPLETED" => SchedState::Completed,
        "FAILED" | "SPECIAL_EXIT" => SchedState::Failed,
        "CANCELLED" | "REVOKED" => SchedState::Cancelled,
        "TIMEOUT" | "DEADLINE" => SchedState::Timeout,
        "NODE_FAIL" | "BOOT_FAIL" => SchedState::NodeFail,
        "OUT_OF_MEMORY" => SchedState::OutOfMemory,
        "PREEMPTED" => SchedState::Preempted,
        _ => return None,
    })
}

/// Slurm's `ExitCode=<code>:<signal>`: the signal wins (as `-signal`), else the code.
pub fn slurm_exit_code(s: &str) -> Option<i32> {
    let (code, sig) = s.trim().split_once(':')?;
    let code: i32 = code.parse().ok()?;
    let sig: i32 = sig.parse().ok()?;
    Some(if sig != 0 { -sig } else { code })
}

fn with_exit(state: SchedState, exit: Option<i32>) -> SchedStatus {
    SchedStatus { state, exit_code: if state.is_ended() { exit } else { None } }
}

/// One job's line of `scontrol show job -o <id>` (`Key=Value` words; the first line whose `JobId` is
/// `id`, since an array or heterogeneous job prints several).
pub fn parse_scontrol(out: &str, id: &str) -> Option<SchedStatus> {
    for line in out.lines() {
        let mut job = None;
        let mut state = None;
        let mut exit = None;
        for w in line.split_whitespace() {
            if let Some(v) = w.strip_prefix("JobId=") {
                job = Some(v);
            } else if let Some(v) = w.strip_prefix("JobState=") {
                state = slurm_state(v);
            } else if let Some(v) = w.strip_prefix("ExitCode=") {
                exit = slurm_exit_code(v);
            }
        }
        if job == Some(id)
            && let Some(state) = state
        {
            return Some(with_exit(state, exit));
        }
    }
    None
}

/// `sacct -j <id> -X -n -P -o JobID,State,ExitCode`: `id|STATE|code:signal` lines.
pub fn parse_sacct(out: &str, id: &str) -> Option<SchedStatus> {
    out.lines().find_map(|l| {
        let mut f = l.split('|');
        let (job, state, exit) = (f.next()?.trim(), f.next()?, f.next()?);
        (job == id).then_some(())?;
        Some(with_exit(slurm_state(state)?, slurm_exit_code(exit)))
    })
}

/// Run a program with a deadline; its stdout when it exits 0.
pub(crate) fn run(program: &std::path::Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not answer within {timeout:?}", program.display()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(MAX_ANSWER_BYTES)]).to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{}: {}", program.display(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn query_slurm(cfg: &SchedConfig, id: &str, timeout: Duration) -> Result<Option<SchedStatus>, String> {
    let scontrol = run(&cfg.scontrol, &["show", "job", "-o", id], timeout);
    if let Ok(out) = &scontrol
        && let Some(s) = parse_scontrol(out, id)
    {
        return Ok(Some(s));
    }
    // Purged from the controller (MinJobAge): the accounting database still knows.
    match run(&cfg.sacct, &["-j", id, "-X", "-n", "-P", "-o", "JobID,State,ExitCode"], timeout) {
        Ok(out) => Ok(parse_sacct(&out, id)),
        Err(e) => match scontrol {
            Ok(_) => Ok(None),
            Err(e0) => Err(format!("{e0}; {e}")),
        },
    }
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes

/// The kubelet's pod list (`/pods`), as far as the agent reads it: the jobs here, the pods'
/// addresses in `trainlog/pod_ips.rs`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodList {
    #[serde(default)]
    pub(crate) items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Pod {
    #[serde(default)]
    metadata: PodMeta,
    #[serde(default)]
    pub(crate) status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
struct PodMeta {
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    #[serde(default)]
    pub(crate) phase: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default, rename = "podIP")]
    pub(crate) pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub(crate) pod_ips: Vec<PodIp>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodIp {
    #[serde(default)]
    pub(crate) ip: String,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerStatus {
    #[serde(default)]
    state: ContainerState,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerState {
    #[serde(default)]
    terminated: Option<Terminated>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Terminated {
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    reason: Option<String>,
}

/// Pod uid → status, from the kubelet's `/pods` JSON. Phases map onto Slurm's states: `Succeeded` is
/// `completed`, `Failed` is `failed` (`out_of_memory` when a container was OOM-killed, `preempted`
/// when the pod was evicted); the exit code is the first non-zero one of its terminated containers.
pub fn parse_pod_list(json: &str) -> Result<BTreeMap<String, SchedStatus>, String> {
    let list: PodList = serde_json::from_str(json).map_err(|e| format!("pod list: {e}"))?;
    let mut out = BTreeMap::new();
    for pod in list.items {
        if pod.metadata.uid.is_empty() {
            continue;
        }
        let terminated: Vec<&Terminated> =
            pod.status.container_statuses.iter().filter_map(|c| c.state.terminated.as_ref()).collect();
        let code = |t: &&Terminated| match t.signal {
            Some(s) if s != 0 => -s,
            _ => t.exit_code,
        };
        let exit = terminated.iter().map(code).find(|c| *c != 0).or_else(|| terminated.first().map(code));
        let oom = terminated.iter().any(|t| t.reason.as_deref() == Some("OOMKilled"));
        let state = match pod.status.phase.as_str() {
            "Pending" => SchedState::Pending,
            "Running" => SchedState::Running,
            "Succeeded" => SchedState::Completed,
            "Failed" if pod.status.reason.as_deref() == Some("Evicted") => SchedState::Preempted,
            "Failed" if oom => SchedState::OutOfMemory,
            "Failed" => SchedState::Failed,
            _ => continue,
        };
        out.insert(pod.metadata.uid, with_exit(state, exit));
    }
    Ok(out)
}

/// A job spread over several pods of this node: failed if one failed, completed when all completed,
/// else the least advanced state.
pub fn combine_pods(states: &[SchedStatus]) -> Option<SchedStatus> {
    if let Some(bad) = states.iter().find(|s| s.state.is_ended() && s.state != SchedState::Completed) {
        return Some(*bad);
    }
    if !states.is_empty() && states.iter().all(|s| s.state == SchedState::Completed) {
        return Some(states[0]);
    }
    states.iter().find(|s| !s.state.is_ended()).copied()
}

pub(crate) fn fetch_pods(cfg: &SchedConfig, source: &str, timeout: Duration) -> Result<String, String> {
    if !(source.starts_with("http://") || source.starts_with("https://")) {
        return std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"));
    }
    let mut b = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(ca) = &cfg.kubelet_ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.tls_certs_only([cert]);
    }
    let client = b.build().map_err(|e| e.to_string())?;
    let mut req = client.get(source);
    if let Some(t) = &cfg.kubelet_token_file {
        let token = std::fs::read_to_string(t).map_err(|e| format!("{}: {e}", t.display()))?;
        req = req.bearer_auth(token.trim());
    }
    let resp = req.send().map_err(|e| format!("{source}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{source}: HTTP {}", resp.status()));
    }
    resp.text().map_err(|e| format!("{source}: {e}"))
}

/// Put what the scheduler said on a job. A rank's exit code comes from the scheduler only where the
/// scheduler's answer is that rank's: a job of one rank whose process is gone and whose code is not
/// known otherwise.
pub fn apply(j: &mut JobSample, s: SchedStatus) {
    j.sched_state = Some(s.state);
    j.sched_exit_code = s.exit_code;
    let single = j.ranks.len() == 1 && j.world_size.unwrap_or(1) <= 1;
    if single
        && let Some(r) = j.ranks.first_mut()
        && r.exit_code.is_none()
        && matches!(r.state, ProcState::Exited | ProcState::Unknown)
    {
        r.exit_code = s.exit_code;
    }
}

// ---------------------------------------------------------------------------------------------------
// The query thread

/// One job the latest report holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub scheduler: Scheduler,
    /// Pod uids of its ranks on this node (Kubernetes).
    pub pods: BTreeSet<String>,
    /// A rank of it is gone: ask often until the scheduler says the job ended.
    pub ending: bool,
}

#[derive(Default)]
struct Shared {
    wanted: BTreeMap<String, Wanted>,
    known: BTreeMap<String, SchedStatus>,
}

/// The scheduler side of the jobs collector: give it the jobs of each cycle, read what is known.
pub struct SchedWatch {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SchedWatch {
    /// Start the query thread. `events` is woken when a job's end becomes known.
    pub fn spawn(cfg: SchedConfig, events: Option<Arc<EventQueue>>) -> std::io::Result<SchedWatch> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        std::thread::Builder::new().name("sched-query".into()).spawn(move || query_loop(&cfg, &sh, &st, events))?;
        Ok(SchedWatch { shared, stop })
    }

    /// The jobs of this cycle (jobs no longer listed are forgotten), and what is known of each.
    pub fn update(&self, wanted: BTreeMap<String, Wanted>) -> BTreeMap<String, SchedStatus> {
        let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        sh.known.retain(|j, _| wanted.contains_key(j));
        sh.wanted = wanted;
        sh.known.clone()
    }
}

impl Drop for SchedWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn parse_duration(s: &str, default: Duration) -> Duration {
    humantime::parse_duration(s).ok().filter(|d| !d.is_zero()).unwrap_or(default)
}

fn query_loop(
    cfg: &SchedConfig,
    shared: &Mutex<Shared>,
    stop: &std::sync::atomic::AtomicBool,
    events: Option<Arc<EventQueue>>,
) {
    let every = parse_duration(&cfg.poll_interval, Duration::from_secs(300));
    let timeout = parse_duration(&cfg.timeout, Duration::from_secs(5));
    let mut asked: BTreeMap<String, Instant> = BTreeMap::new();
    // When each job was first seen with a rank gone.
    let mut ending_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut pods_asked: Option<Instant> = None;
    let mut warned: BTreeSet<String> = BTreeSet::new();
    let mut warn = |key: &str, msg: &str| {
        if warned.len() < 64 && warned.insert(key.to_string()) {
            tracing::warn!(error = msg, "scheduler query failed (logged once)");
        }
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let (wanted, known) = {
            let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
            (sh.wanted.clone(), sh.known.clone())
        };
        asked.retain(|j, _| wanted.contains_key(j));
        ending_since.retain(|j, _| wanted.get(j).is_some_and(|w| w.ending));
        for (j, w) in &wanted {
            if w.ending {
                ending_since.entry(j.clone()).or_insert_with(Instant::now);
            }
        }
        let due = |job: &str, w: &Wanted, asked: &BTreeMap<String, Instant>| {
            if known.get(job).is_some_and(|s| s.state.is_ended()) {
                return false;
            }
            let fast = w.ending && ending_since.get(job).is_some_and(|t| t.elapsed() < ENDING_FAST_FOR);
            let gap = if fast { ENDING_POLL } else { every };
            asked.get(job).is_none_or(|t| t.elapsed() >= gap)
        };
        let mut found: Vec<(String, SchedStatus)> = Vec::new();
        for (job, w) in &wanted {
            if w.scheduler != Scheduler::Slurm || !cfg.slurm || !due(job, w, &asked) {
                continue;
            }
            asked.insert(job.clone(), Instant::now());
            match query_slurm(cfg, job, timeout) {
                Ok(Some(s)) => found.push((job.clone(), s)),
                Ok(None) => {}
                Err(e) => warn("slurm", &e),
            }
        }
        let k8s: Vec<(&String, &Wanted)> =
            wanted.iter().filter(|(_, w)| w.scheduler == Scheduler::Kubernetes && !w.pods.is_empty()).collect();
        if let Some(source) = &cfg.kubelet_pods
            && k8s.iter().any(|(j, w)| due(j, w, &asked))
            && pods_asked.is_none_or(|t| t.elapsed() >= ENDING_POLL)
        {
            pods_asked = Some(Instant::now());
            match fetch_pods(cfg, source, timeout).and_then(|t| parse_pod_list(&t)) {
                Ok(pods) => {
                    for (job, w) in k8s {
                        asked.insert(job.clone(), Instant::now());
                        let states: Vec<SchedStatus> = w.pods.iter().filter_map(|p| pods.get(p).copied()).collect();
                        if let Some(s) = combine_pods(&states) {
                            found.push((job.clone(), s));
                        }
                    }
                }
                Err(e) => warn("kubernetes", &e),
            }
        }
        if found.is_empty() {
            continue;
        }
        let mut ended_now = false;
        {
            let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
            for (job, s) in found {
                if !sh.wanted.contains_key(&job) {
                    continue;
                }
                let before = sh.known.insert(job.clone(), s);
                if s.state.is_ended() && before.is_none_or(|b| !b.state.is_ended()) {
                    tracing::info!(job, state = ?s.state, exit_code = ?s.exit_code, "the scheduler says the job ended");
                    ended_now = true;
                }
            }
        }
        if ended_now && let Some(q) = &events {
            q.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_give_state_and_exit_code() {
        let failed = "JobId=17 JobName=train UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 Nice=0 \
                      Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) \
                      Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=1:0 RunTime=00:00:02";
        assert_eq!(parse_scontrol(failed, "17"), Some(SchedStatus { state: SchedState::Failed, exit_code: Some(1) }));
        assert_eq!(parse_scontrol(failed, "18"), None, "another job's line");
        let killed = "JobId=9 JobState=CANCELLED Reason=None ExitCode=0:15";
        assert_eq!(parse_scontrol(killed, "9").unwrap().exit_code, Some(-15));
        let running = "JobId=5 JobState=RUNNING Reason=None ExitCode=0:0";
        assert_eq!(parse_scontrol(running, "5"), Some(SchedStatus { state: SchedState::Running, exit_code: None }));
        assert_eq!(parse_scontrol("JobId=3 JobState=COMPLETED ExitCode=0:0", "3").unwrap().exit_code, Some(0));
        assert_eq!(slurm_state("NODE_FAIL"), Some(SchedState::NodeFail));
        assert_eq!(slurm_state("OUT_OF_MEMORY"), Some(SchedState::OutOfMemory));
        assert_eq!(slurm_state("WHATEVER"), None);
    }

    #[test]
    fn sacct_lines_give_state_and_exit_code() {
        let out = "41|CANCELLED by 0|0:9\n42|TIMEOUT|0:0\n";
        assert_eq!(parse_sacct(out, "41"), Some(SchedStatus { state: SchedState::Cancelled, exit_code: Some(-9) }));
        assert_eq!(parse_sacct(out, "42").unwrap().state, SchedState::Timeout);
        assert_eq!(parse_sacct(out, "43"), None);
    }

    const PODS: &str = include_str!("../../tests/fixtures/kubelet-pods.json");

    #[test]
    fn kubelet_pod_list_gives_phase_and_container_exit_codes() {
        let pods = parse_pod_list(PODS).unwrap();
        let get = |uid: &str| pods.get(uid).copied();
        assert_eq!(
            get("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1"),
            Some(SchedStatus { state: SchedState::Running, exit_code: None })
        );
        assert_eq!(
            get("1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"),
            Some(SchedStatus { state: SchedState::Failed, exit_code: Some(1) })
        );
        assert_eq!(
            get("2b3c4d5e-6f70-4b9c-8d1e-2f3a4b5c6d7e"),
            Some(SchedStatus { state: SchedState::Completed, exit_code: Some(0) })
        );
        assert_eq!(get("3c4d5e6f-7081-4cad-9e2f-3a4b5c6d7e8f").unwrap().state, SchedState::OutOfMemory);
        assert_eq!(get("3c4d5e6f-7081-4cad-9e2f-3a4b5c6d7e8f").unwrap().exit_code, Some(137));
        assert!(parse_pod_list("not json").is_err());
    }

    #[test]
    fn a_single_ranks_exit_code_comes_from_the_scheduler_only_when_unambiguous() {
        let rank = |state| faultline_proto::RankSample { rank: 0, state, ..Default::default() };
        let failed = SchedStatus { state: SchedState::Failed, exit_code: Some(1) };
        let mut j = JobSample {
            job_id: "7".into(),
            world_size: Some(1),
            ranks: vec![rank(ProcState::Exited)],
            ..Default::default()
        };
        apply(&mut j, failed);
        assert_eq!(
            (j.sched_state, j.sched_exit_code, j.ranks[0].exit_code),
            (Some(SchedState::Failed), Some(1), Some(1))
        );
        // Several ranks: the job's code is not any one rank's.
        let mut j = JobSample { world_size: Some(16), ranks: vec![rank(ProcState::Exited)], ..Default::default() };
        apply(&mut j, failed);
        assert_eq!((j.sched_exit_code, j.ranks[0].exit_code), (Some(1), None));
        // A rank still running keeps no exit code.
        let mut j = JobSample { world_size: Some(1), ranks: vec![rank(ProcState::Running)], ..Default::default() };
        apply(&mut j, failed);
        assert_eq!(j.ranks[0].exit_code, None);
    }

    #[test]
    fn pods_of_one_job_combine() {
        let s = |state, exit_code| SchedStatus { state, exit_code };
        let ok = s(SchedState::Completed, Some(0));
        let bad = s(SchedState::Failed, Some(2));
        let run = s(SchedState::Running, None);
        assert_eq!(combine_pods(&[ok, bad]), Some(bad));
        assert_eq!(combine_pods(&[ok, ok]), Some(ok));
        assert_eq!(combine_pods(&[ok, run]), Some(run));
        assert_eq!(combine_pods(&[]), None);
    }

    /// The query thread reading a kubelet pod list from a file: a job whose two pods on this node
    /// are one failed (exit 1) and one still running is failed with code 1.
    #[test]
    fn the_query_thread_reads_pod_status_from_the_kubelet_list() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods.json");
        std::fs::write(&pods, PODS).unwrap();
        let cfg = SchedConfig { kubelet_pods: Some(pods.display().to_string()), slurm: false, ..Default::default() };
        let w = SchedWatch::spawn(cfg, None).unwrap();
        let wanted = || {
            let mut m = BTreeMap::new();
            let pods: BTreeSet<String> =
                ["0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1", "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"]
                    .map(String::from)
                    .into();
            m.insert("llm-train".to_string(), Wanted { scheduler: Scheduler::Kubernetes, pods, ending: true });
            let pods: BTreeSet<String> = ["4d5e6f70-8192-4dbe-8f30-4b5c6d7e8f90".to_string()].into();
            m.insert("queued".to_string(), Wanted { scheduler: Scheduler::Kubernetes, pods, ending: false });
            m
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = BTreeMap::new();
        while Instant::now() < deadline && got.len() < 2 {
            got = w.update(wanted());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got.get("llm-train"), Some(&SchedStatus { state: SchedState::Failed, exit_code: Some(1) }));
        assert_eq!(got.get("queued"), Some(&SchedStatus { state: SchedState::Pending, exit_code: None }));
    }

    /// The query thread against a stand-in `scontrol` (a shell script printing a fixed line).
    #[test]
    fn the_query_thread_learns_a_slurm_jobs_end() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("scontrol");
        std::fs::write(&script, "#!/bin/sh\necho \"JobId=$4 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0\"\n")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = SchedConfig { scontrol: script, sacct: dir.path().join("no-sacct"), ..Default::default() };
        let w = SchedWatch::spawn(cfg, None).unwrap();
        let wanted = || {
            let mut m = BTreeMap::new();
            m.insert("77".to_string(), Wanted { scheduler: Scheduler::Slurm, pods: BTreeSet::new(), ending: true });
            m.insert("k".to_string(), Wanted { scheduler: Scheduler::Torchrun, pods: BTreeSet::new(), ending: true });
            m
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = BTreeMap::new();
        while Instant::now() < deadline && got.is_empty() {
            got = w.update(wanted());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got.get("77"), Some(&SchedStatus { state: SchedState::Failed, exit_code: Some(3) }));
        assert!(!got.contains_key("k"), "a job without a scheduler is not asked about");
    }
}
