//! Unit tests of `[remediation.validation]`: parsing and its errors, and how the planner validates a
//! node before resuming it (pass, fail with backoff, give up, stale passes).

use std::collections::BTreeSet;

use faultline_proto::remediation::{ActionResult, PendingState};

use super::tests::{T0, gpu_fault, ident};
use super::*;
use crate::config::Config;

fn build(toml: &str) -> Result<RemediationSettings, String> {
    Config::parse(toml)?.remediation.build().map_err(|e| e.to_string())
}

const SH: &str = "/bin/sh";

#[test]
fn no_checks_means_no_validation() {
    let s = build("").unwrap();
    assert!(!s.validation.enabled());
    assert_eq!(s.validation.max_attempts, DEFAULT_VALIDATION_ATTEMPTS);
    let s = build("[remediation.validation]\nretry = \"1m\"\n").unwrap();
    assert!(!s.validation.enabled(), "settings without a check turn nothing on");
}

#[test]
fn checks_parse_with_their_defaults() {
    let s = build(&format!(
        r#"
        [remediation.slurm]
        env = {{ SLURM_CONF = "/etc/slurm/slurm.conf" }}
        [remediation.validation]
        retry = "2m"
        retry_max = "30m"
        max_attempts = 3
        [[remediation.validation.check]]
        name = "gpu-count"
        kind = "gpu_count"
        [[remediation.validation.check]]
        name = "fabric"
        kind = "fabric_ports"
        rate_gbps = 400
        [[remediation.validation.check]]
        name = "dcgm-diag"
        kind = "command"
        command = ["{SH}", "-c", "srun -w {{target}} dcgmi diag -r 1", "{{node}}"]
        timeout = "90s"
        env = {{ EXTRA = "1" }}
        "#
    ))
    .unwrap();
    let v = &s.validation;
    assert!(v.enabled());
    assert_eq!((v.retry_s, v.retry_max_s, v.max_attempts), (120.0, 1800.0, 3));
    assert_eq!(v.names(), "gpu-count, fabric, dcgm-diag");
    assert_eq!(v.checks[0].spec, CheckSpec::GpuCount { expected: None });
    assert_eq!(v.checks[1].spec, CheckSpec::FabricPorts { rate_gbps: Some(400.0) });
    let CheckSpec::Command { argv, timeout, env } = &v.checks[2].spec else { panic!("{:?}", v.checks[2]) };
    assert_eq!(argv[0], SH);
    assert_eq!(*timeout, std::time::Duration::from_secs(90));
    // The Slurm adapter's environment reaches commands (srun needs SLURM_CONF), plus the check's own.
    // (Without adapter = "slurm" the env is still passed: it is the operator's environment for Slurm.)
    assert_eq!(env["SLURM_CONF"], "/etc/slurm/slurm.conf");
    assert_eq!(env["EXTRA"], "1");
    assert!(!v.checks[2].is_builtin() && v.checks[0].is_builtin());
    // Backoff doubles and stops at retry_max.
    assert_eq!([1, 2, 3, 4, 5, 40].map(|n| v.backoff_s(n)), [120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]);
}

#[test]
fn bad_checks_are_refused_naming_the_key() {
    let check = |body: &str| format!("[[remediation.validation.check]]\n{body}\n");
    for (toml, needles) in [
        (check("name = \"a b\"\nkind = \"gpu_count\""), &["check[0]", "name", "\"a b\""][..]),
        (check("name = \"\"\nkind = \"gpu_count\""), &["check[0]", "name"]),
        (
            check("name = \"x\"\nkind = \"gpu_count\"") + &check("name = \"x\"\nkind = \"fabric_ports\""),
            &["check[1]", "repeats check[0]"],
        ),
        (check("name = \"g\"\nkind = \"gpu_count\"\nexpected = 0"), &["check[0]", "expected = 0"]),
        (check("name = \"g\"\nkind = \"gpu_count\"\nrate_gbps = 400"), &["check[0]", "rate_gbps", "fabric_ports"]),
        (check("name = \"f\"\nkind = \"fabric_ports\"\nrate_gbps = -1"), &["check[0]", "rate_gbps = -1"]),
        (check("name = \"f\"\nkind = \"fabric_ports\"\ncommand = [\"true\"]"), &["check[0]", "`command`"]),
        (check("name = \"c\"\nkind = \"command\""), &["check[0]", "command is missing"]),
        (
            check("name = \"c\"\nkind = \"command\"\ncommand = [\"/nonexistent/dcgmi\", \"diag\"]"),
            &["check[0]", "command", "/nonexistent/dcgmi"],
        ),
        (
            check("name = \"c\"\nkind = \"command\"\ncommand = [\"no-such-program-xyz\"]"),
            &["check[0]", "no-such-program-xyz", "PATH"],
        ),
        (
            check(&format!("name = \"c\"\nkind = \"command\"\ncommand = [\"{SH}\", \"-c\", \"ssh {{host}} true\"]")),
            &["check[0]", "{host}", "{node}"],
        ),
        (
            check(&format!("name = \"c\"\nkind = \"command\"\ncommand = [\"{SH}\"]\ntimeout = \"0s\"")),
            &["check[0]", "timeout"],
        ),
        (
            check(&format!("name = \"c\"\nkind = \"command\"\ncommand = [\"{SH}\"]\nenv = {{ \"A B\" = \"1\" }}")),
            &["check[0]", "env", "A B"],
        ),
        ("[remediation.validation]\nretry = \"0s\"\n".to_string(), &["remediation.validation.retry"]),
        (
            "[remediation.validation]\nretry = \"10m\"\nretry_max = \"1m\"\n".to_string(),
            &["remediation.validation.retry_max"],
        ),
        ("[remediation.validation]\nmax_attempts = 0\n".to_string(), &["remediation.validation.max_attempts"]),
    ] {
        let e = build(&toml).unwrap_err();
        for n in needles {
            assert!(e.contains(n), "{toml}\n=> {e}\n(missing {n:?})");
        }
        if toml.contains("[[remediation.validation.check]]") {
            assert!(e.contains("remediation.validation.check["), "{e}");
        }
    }
    // The parser names unknown keys and kinds.
    for (toml, needle) in [
        (check("name = \"g\"\nkind = \"gpu_count\"\nexpect = 8"), "expect"),
        (check("name = \"g\"\nkind = \"nccl\""), "nccl"),
        ("[remediation.validation]\nretries = 3\n".to_string(), "retries"),
        ("[remediation.validation]\nretry = \"often\"\n".to_string(), "often"),
    ] {
        let e = build(&toml).unwrap_err();
        assert!(e.contains(needle), "{toml}: {e}");
    }
}

/// An acting planner (with an adapter) that validates with one built-in check, `retry` 60 s,
/// `retry_max` 200 s, 3 attempts, and a 10 s hold; node `a` drained for `inc-1`.
fn validating() -> Planner {
    let mut s = build(
        "[remediation]\ndefault = \"act\"\ndry_run = true\nhealthy_hold = \"10s\"\nmax_drain_share = 0.5\n\
         [remediation.validation]\nretry = \"60s\"\nretry_max = \"200s\"\nmax_attempts = 3\n\
         [[remediation.validation.check]]\nname = \"gpu-count\"\nkind = \"gpu_count\"\n",
    )
    .unwrap();
    s.dry_run = false;
    let mut p = Planner::new(s, true);
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "r", ActionResult::Ok, false, T0);
    p
}

fn validate_step() -> Step {
    Step::Validate { node: "a".into(), incidents: vec!["inc-1".into()] }
}

fn resume_step() -> Step {
    Step::Resume { node: "a".into(), incidents: vec!["inc-1".into()], dry_run: false }
}

#[test]
fn a_node_is_resumed_only_after_its_validation_passed() {
    let mut p = validating();
    let none = BTreeSet::new();
    let ok = |_: &str| Some(true);
    assert!(p.plan_resumes(&none, &ok, T0 + 100.0).is_empty(), "the hold starts");
    // After the hold: validate first, once; no resume while it runs.
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 110.0), [validate_step()]);
    assert!(p.plan_resumes(&none, &ok, T0 + 111.0).is_empty(), "no second validation while one runs");
    assert!(p.pending_view(&none)[0].detail.contains("validating a (gpu-count)"), "{:?}", p.pending_view(&none));
    assert_eq!(p.validation_done("a", T0 + 110.0, "", T0 + 115.0), None);
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 116.0), [resume_step()]);
}

#[test]
fn a_failed_validation_keeps_the_node_drained_backs_off_and_gives_up() {
    let mut p = validating();
    let none = BTreeSet::new();
    let ok = |_: &str| Some(true);
    p.plan_resumes(&none, &ok, T0 + 100.0);
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 110.0), [validate_step()]);
    let step = p.validation_done("a", T0 + 110.0, "gpu-count: 7 of 8 GPUs", T0 + 111.0).unwrap();
    let Step::KeepDrained { node, incidents, reason, detail } = step else { panic!("{step:?}") };
    assert_eq!((node.as_str(), incidents), ("a", vec!["inc-1".to_string()]));
    assert_eq!(reason, "faultline: validation failed: gpu-count: 7 of 8 GPUs");
    assert!(owned_by_faultline(Some(&reason)) && !manual_drain(Some(&reason)), "still faultline's own drain");
    assert!(detail.contains("validating again in 1m (attempt 2 of 3)"), "{detail}");
    let v = p.pending_view(&none);
    assert_eq!((v[0].state, v[0].due_s), (PendingState::AwaitingHealthy, Some(T0 + 171.0)));
    assert!(v[0].detail.contains("7 of 8 GPUs"), "{v:?}");
    // Not again before the backoff, however often the round runs.
    for t in 112..171 {
        assert!(p.plan_resumes(&none, &ok, T0 + t as f64).is_empty(), "at +{t}");
    }
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 171.0), [validate_step()]);
    let step = p.validation_done("a", T0 + 171.0, "gpu-count: 7 of 8 GPUs", T0 + 172.0).unwrap();
    let Step::KeepDrained { detail, .. } = step else { panic!() };
    assert!(detail.contains("validating again in 2m (attempt 3 of 3)"), "{detail}");
    assert!(p.plan_resumes(&none, &ok, T0 + 291.0).is_empty());
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 292.0), [validate_step()]);
    let step = p.validation_done("a", T0 + 292.0, "gpu-count: 7 of 8 GPUs", T0 + 293.0).unwrap();
    let Step::KeepDrained { detail, .. } = step else { panic!() };
    assert!(detail.contains("gave up after 3 failed validations") && detail.contains("faultline resume a"), "{detail}");
    // Given up: never validated or resumed on its own again; a person is asked.
    assert!(p.plan_resumes(&none, &ok, T0 + 100_000.0).is_empty());
    assert_eq!(p.pending_view(&none)[0].state, PendingState::Blocked);
    // A person resumes it by hand: faultline lets go.
    p.forget("a");
    assert!(p.held().is_empty());
}

#[test]
fn a_pass_counts_only_while_the_node_stays_healthy() {
    let mut p = validating();
    let none = BTreeSet::new();
    let ok = |_: &str| Some(true);
    p.plan_resumes(&none, &ok, T0 + 100.0);
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 110.0), [validate_step()]);
    // The node turns sick while its validation runs, then healthy again.
    assert!(p.plan_resumes(&none, &|_| Some(false), T0 + 112.0).is_empty());
    assert_eq!(p.validation_done("a", T0 + 110.0, "", T0 + 113.0), None);
    assert!(p.plan_resumes(&none, &ok, T0 + 114.0).is_empty(), "a new hold starts");
    // The old pass predates the new healthy stretch: validate again.
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 124.0), [validate_step()]);
    p.validation_done("a", T0 + 124.0, "", T0 + 125.0);
    assert_eq!(p.plan_resumes(&none, &ok, T0 + 125.0), [resume_step()]);
}

#[test]
fn a_new_incident_on_a_held_node_starts_validation_over() {
    let mut p = validating();
    let none = BTreeSet::new();
    let ok = |_: &str| Some(true);
    p.plan_resumes(&none, &ok, T0 + 100.0);
    p.plan_resumes(&none, &ok, T0 + 110.0);
    p.validation_done("a", T0 + 110.0, "gpu-count: 7 of 8 GPUs", T0 + 111.0);
    p.validation_done("a", T0 + 110.0, "gpu-count: 7 of 8 GPUs", T0 + 112.0);
    assert_eq!(p.held()["a"].check.failures, 2);
    p.plan_incident(&gpu_fault("inc-2", "a"), &["a".into()], 10, &ident, T0 + 120.0);
    assert_eq!(p.held()["a"].check.failures, 0, "a new fault resets the attempts");
    let open: BTreeSet<String> = ["inc-2".to_string()].into();
    assert!(p.plan_resumes(&open, &ok, T0 + 130.0).is_empty());
    p.plan_resumes(&none, &ok, T0 + 140.0);
    let s = p.plan_resumes(&none, &ok, T0 + 150.0);
    assert_eq!(s, [Step::Validate { node: "a".into(), incidents: vec!["inc-1".into(), "inc-2".into()] }]);
}

#[test]
fn without_checks_or_in_a_dry_run_resumes_are_as_before() {
    // No checks: resume after the hold, as before validation existed.
    let mut s = build("[remediation]\ndefault = \"act\"\ndry_run = true\nhealthy_hold = \"10s\"\n").unwrap();
    s.dry_run = false;
    let mut p = Planner::new(s, true);
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "r", ActionResult::Ok, false, T0);
    let none = BTreeSet::new();
    p.plan_resumes(&none, &|_| Some(true), T0 + 100.0);
    assert_eq!(p.plan_resumes(&none, &|_| Some(true), T0 + 110.0), [resume_step()]);
    // A dry run drained nothing, so it runs no checks on the node either.
    let mut p = validating();
    p.drain_done("b", "inc-9", "r", ActionResult::DryRun, false, T0);
    p.plan_resumes(&none, &|_| Some(true), T0 + 100.0);
    let s = p.plan_resumes(&none, &|_| Some(true), T0 + 110.0);
    assert!(s.contains(&Step::Resume { node: "b".into(), incidents: vec!["inc-9".into()], dry_run: true }), "{s:?}");
    assert!(s.contains(&validate_step()), "{s:?}");
}

#[test]
fn action_rows_from_before_validation_still_load_next_to_validate_rows() {
    use faultline_proto::remediation::{ActionOrigin, ActionRecord, NodeAction};
    let mut store = crate::store::Store::open_in_memory().unwrap();
    // A row as an analyzer without validation wrote it: no field was added, only an action kind.
    let old: ActionRecord = serde_json::from_str(
        r#"{"id":0,"at_s":1700000000.0,"at":"2023-11-14T22:13:20.000Z","action":"drain","node":"a",
            "target":"a","incident":"inc-1","origin":"auto","result":"ok",
            "reason":"faultline: gpu_lost a/gpu1 inc-1","detail":"drained a in slurm"}"#,
    )
    .unwrap();
    store.record_action(&old).unwrap();
    let new = record(
        T0,
        NodeAction::Validate,
        "a",
        "a",
        Some("inc-1"),
        ActionOrigin::Auto,
        ActionResult::Failed,
        None,
        "validation of a: diag FAILED: exit status: 1 after 1.0 s\nGPU 1: memory test FAILED".into(),
    );
    store.record_action(&new).unwrap();
    let rows = store.actions_for_incident("inc-1").unwrap();
    assert_eq!(rows.iter().map(|r| r.action).collect::<Vec<_>>(), [NodeAction::Drain, NodeAction::Validate]);
    assert_eq!(rows[1].detail, new.detail, "the output survives the store");
    // Restoring from them holds the node again; the validate row changes nothing.
    let mut p = Planner::new(RemediationSettings::default(), true);
    p.restore(&rows, T0 + 10.0);
    assert_eq!(p.held()["a"].incidents, ["inc-1".to_string()].into());
}

#[test]
fn the_built_in_checks_read_what_the_engine_holds_of_the_node() {
    use super::validate::{NodeFacts, builtin};
    use crate::engine::{Analyzer, EngineConfig};
    use faultline_proto::{GpuSample, GpuState, NicSample, NodeReport, TopologyFile};

    let topo = TopologyFile { expected_rate_gbps: Some(400.0), ..TopologyFile::default() };
    let mut a = Analyzer::new(EngineConfig::default(), topo);
    let nic = |name: &str, rate: f64| NicSample {
        name: name.into(),
        ib_state: Some("ACTIVE".into()),
        operstate: Some("up".into()),
        link_layer: Some("InfiniBand".into()),
        rate_gbps: Some(rate),
        ..NicSample::default()
    };
    let report = |seq: u64, gpus: Vec<GpuSample>, nics: Vec<NicSample>| {
        let mut r = NodeReport::empty("n1");
        r.seq = seq;
        r.timestamp_ms = 1_700_000_000_000 + seq as i64 * 1000;
        r.interval_ms = 1000;
        r.expected_gpus = Some(2);
        r.gpus = gpus;
        r.nics = nics;
        r
    };
    let gpu = |index: u32, state: GpuState| GpuSample { index, state, ..GpuSample::default() };
    let now = |seq: u64| 1_700_000_000_000 + seq as i64 * 1000;
    a.ingest(
        report(1, vec![gpu(0, GpuState::Ok), gpu(1, GpuState::Lost)], vec![nic("mlx5_0", 400.0), nic("mlx5_1", 200.0)]),
        now(1),
    )
    .unwrap();
    let facts = |a: &Analyzer| {
        let n = a.node_state("n1").unwrap();
        NodeFacts::from_state(n, |nic| a.expected_rate("n1", nic))
    };
    let f = facts(&a);
    assert_eq!((f.gpus_working, f.gpus_listed, f.expected_gpus), (1, 2, Some(2)));
    let settings = build(
        "[[remediation.validation.check]]\nname = \"gpu-count\"\nkind = \"gpu_count\"\n\
         [[remediation.validation.check]]\nname = \"fabric\"\nkind = \"fabric_ports\"\n",
    )
    .unwrap();
    let [gpus, fabric] = &settings.validation.checks[..] else { panic!() };
    assert_eq!(builtin(gpus, Some(&f)).unwrap().summary, "1 of 2 GPUs (1 listed but not working)");
    assert_eq!(builtin(fabric, Some(&f)).unwrap().summary, "mlx5_1 at 200 Gb/s, expected 400");
    // Repaired, but mlx5_1 is no longer listed at all: its old ACTIVE must not pass.
    a.ingest(report(2, vec![gpu(0, GpuState::Ok), gpu(1, GpuState::Ok)], vec![nic("mlx5_0", 400.0)]), now(2)).unwrap();
    let f = facts(&a);
    assert!(builtin(gpus, Some(&f)).unwrap().passed, "{f:?}");
    assert_eq!(builtin(fabric, Some(&f)).unwrap().summary, "mlx5_1 missing from the latest report");
    a.ingest(
        report(3, vec![gpu(0, GpuState::Ok), gpu(1, GpuState::Ok)], vec![nic("mlx5_0", 400.0), nic("mlx5_1", 400.0)]),
        now(3),
    )
    .unwrap();
    let o = builtin(fabric, Some(&facts(&a))).unwrap();
    assert!(o.passed, "{o:?}");
}
