//! Unit tests of the remediation policy, targets, ownership rule, guard and resume hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_proto::remediation::{
    ActionOrigin, ActionRecord, ActionResult, NodeAction, PendingState, RemediationMode,
};
use faultline_proto::{ComponentId, FaultClass, Incident, IncidentStatus, Severity, rfc3339};

use super::*;
use crate::config::Config;

pub(super) const T0: f64 = 1_700_000_000.0;

fn incident(id: &str, root: ComponentId, class: FaultClass) -> Incident {
    Incident {
        id: id.into(),
        root,
        class,
        severity: crate::incident::severity_for(class),
        confidence: 0.9,
        status: IncidentStatus::Open,
        summary: String::new(),
        onset_s: T0,
        opened_s: T0,
        opened_at: rfc3339(T0),
        updated_s: T0,
        resolved_s: None,
        affected_jobs: vec![],
        paths: vec![],
        evidence: vec![],
        timeline: vec![],
        action: crate::incident::action_for(class, None),
    }
}

pub(super) fn gpu_fault(id: &str, host: &str) -> Incident {
    incident(id, ComponentId::gpu(host, 1), FaultClass::GpuLost)
}

fn settings(toml: &str) -> RemediationSettings {
    Config::parse(toml).unwrap().remediation.build().unwrap()
}

/// A planner that acts on everything, with a Slurm-like adapter present.
fn acting(share: f64, hold: &str) -> Planner {
    let s = settings(&format!(
        "[remediation]\ndefault = \"act\"\nadapter = \"none\"\ndry_run = true\nmax_drain_share = {share}\nhealthy_hold = \"{hold}\"\n"
    ));
    let mut s = s;
    s.dry_run = false;
    Planner::new(s, true)
}

pub(super) fn ident(n: &str) -> String {
    n.to_string()
}

fn drains_of(steps: &[Step]) -> Vec<String> {
    steps.iter().filter_map(|s| if let Step::Drain { node, .. } = s { Some(node.clone()) } else { None }).collect()
}

fn results_of(steps: &[Step]) -> Vec<ActionResult> {
    steps.iter().filter_map(|s| if let Step::Record(r) = s { Some(r.result) } else { None }).collect()
}

#[test]
fn the_most_specific_rule_wins() {
    let s = settings(
        r#"
        [remediation]
        default = "suggest"
        adapter = "none"
        dry_run = true
        [[remediation.rule]]
        severity = "warning"
        mode = "off"
        [[remediation.rule]]
        class = "gpu_lost"
        mode = "act"
        [[remediation.rule]]
        class = "gpu_lost"
        severity = "warning"
        mode = "suggest"
        [[remediation.rule]]
        class = "nic_flap"
        mode = "act"
        "#,
    );
    let p = &s.policy;
    assert_eq!(p.mode_for(FaultClass::GpuLost, Severity::Critical), RemediationMode::Act);
    assert_eq!(p.mode_for(FaultClass::GpuLost, Severity::Warning), RemediationMode::Suggest);
    // Class alone beats severity alone.
    assert_eq!(p.mode_for(FaultClass::NicFlap, Severity::Warning), RemediationMode::Act);
    assert_eq!(p.mode_for(FaultClass::GpuSlow, Severity::Warning), RemediationMode::Off);
    assert_eq!(p.mode_for(FaultClass::NodeDown, Severity::Critical), RemediationMode::Suggest);
}

#[test]
fn defaults_suggest_with_no_adapter_and_the_documented_guard() {
    let c = Config::parse("").unwrap();
    let s = c.build().unwrap().remediation;
    assert_eq!(s.policy.default, RemediationMode::Suggest);
    assert_eq!(s.adapter, AdapterKind::None);
    assert!(!s.dry_run);
    assert_eq!(s.max_drain_share, 0.10);
    assert_eq!(s.window_s, 3600.0);
    assert_eq!(s.healthy_hold_s, 600.0);
}

#[test]
fn bad_remediation_settings_are_named() {
    let err = |toml: &str| Config::parse(toml).map(|c| c.build().map(|_| ()).map_err(|e| e.to_string()));
    let e = err("[remediation]\ndefault = \"act\"\n").unwrap().unwrap_err();
    assert!(e.contains("adapter") && e.contains("default"), "{e}");
    let e = err("[remediation]\n[[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"act\"\n").unwrap().unwrap_err();
    assert!(e.contains("rule[0]"), "{e}");
    let e = err("[remediation]\nmax_drain_share = 1.5\n").unwrap().unwrap_err();
    assert!(e.contains("max_drain_share"), "{e}");
    let e = err("[remediation]\nwindow = \"0s\"\n").unwrap().unwrap_err();
    assert!(e.contains("window"), "{e}");
    let e = err(
        "[remediation]\n[[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"off\"\n[[remediation.rule]]\nclass = \"gpu_lost\"\nmode = \"act\"\n",
    )
    .unwrap()
    .unwrap_err();
    assert!(e.contains("rule[1]") && e.contains("rule[0]"), "{e}");
    let e = err("[remediation]\nadapter = \"slurm\"\n[remediation.slurm]\nscontrol = \"/nonexistent/scontrol\"\n")
        .unwrap()
        .unwrap_err();
    assert!(e.contains("/nonexistent/scontrol"), "{e}");
    // Unknown keys, classes and modes are refused by the parser with the key named.
    for (toml, needle) in [
        ("[remediation]\nmode = \"act\"\n", "mode"),
        ("[remediation]\n[[remediation.rule]]\nclass = \"gpu_gone\"\nmode = \"act\"\n", "gpu_gone"),
        ("[remediation]\ndefault = \"always\"\n", "always"),
        ("[remediation]\nhealthy_hold = \"soon\"\n", "soon"),
    ] {
        let e = Config::parse(toml).unwrap_err();
        assert!(e.contains(needle), "{toml}: {e}");
    }
    // A dry run may "act" without an adapter: it only logs.
    assert!(err("[remediation]\ndefault = \"act\"\ndry_run = true\n").unwrap().is_ok());
}

#[test]
fn slurm_settings_resolve_and_check_names() {
    let Some(sh) = ["/bin/sh", "/usr/bin/sh"].into_iter().find(|p| std::path::Path::new(p).is_file()) else {
        return;
    };
    let ok = format!(
        "[remediation]\nadapter = \"slurm\"\ndefault = \"act\"\n[remediation.slurm]\nscontrol = \"{sh}\"\ntimeout = \"3s\"\n\
         env = {{ SLURM_CONF = \"/etc/slurm/slurm.conf\" }}\nnode_map = {{ \"gpu-a-01\" = \"a01\" }}\n"
    );
    let s = settings(&ok);
    assert_eq!(s.slurm.timeout, Duration::from_secs(3));
    assert_eq!(s.slurm.node_map["gpu-a-01"], "a01");
    let bad = ok.replace("\"a01\"", "\"a 01\"");
    let e = Config::parse(&bad).unwrap().build().unwrap_err().to_string();
    assert!(e.contains("node_map") && e.contains("a 01"), "{e}");
    let bad = ok.replace("SLURM_CONF", "\"SLURM CONF\"");
    let e = Config::parse(&bad).unwrap().build().unwrap_err().to_string();
    assert!(e.contains("env"), "{e}");
}

#[test]
fn which_classes_drain() {
    use FaultClass::*;
    for c in FaultClass::ALL {
        let expect = !matches!(c, LeafCongestion | AgentDown | HostOom | HostCpuContention | JobHang | JobCrash);
        assert_eq!(drains(*c), expect, "{c}");
    }
}

#[test]
fn targets_are_the_host_or_every_node_behind_the_switch() {
    let none = |_: &str| BTreeSet::new();
    assert_eq!(targets(&gpu_fault("inc-1", "node-0003"), none), ["node-0003"]);
    let nic = incident("inc-2", ComponentId::nic("node-0004", "mlx5_0"), FaultClass::NicFlap);
    assert_eq!(targets(&nic, none), ["node-0004"]);
    let job = incident("inc-3", ComponentId::job("llm"), FaultClass::JobHang);
    assert!(targets(&job, none).is_empty());
    let oom = incident("inc-4", ComponentId::node("node-0001"), FaultClass::HostOom);
    assert!(targets(&oom, none).is_empty(), "an OOM restarts the job; the node is fine");
    let leaf = incident("inc-5", ComponentId::switch("leaf-01"), FaultClass::LeafSwitchDown);
    let behind = |sw: &str| {
        assert_eq!(sw, "leaf-01");
        (5..10).map(|i| format!("node-{i:04}")).collect::<BTreeSet<_>>()
    };
    assert_eq!(targets(&leaf, behind).len(), 5);
    let congested = incident("inc-6", ComponentId::switch("leaf-01"), FaultClass::LeafCongestion);
    assert!(targets(&congested, behind).is_empty());
    // A contained memory error (XID 94) needs only a job restart: the node stays in service.
    let mut contained = incident("inc-7", ComponentId::gpu("node-0002", 0), FaultClass::GpuHbmUncorrectable);
    contained.action = crate::incident::action_for(FaultClass::GpuHbmUncorrectable, Some(94));
    assert!(targets(&contained, none).is_empty());
    contained.action = crate::incident::action_for(FaultClass::GpuHbmUncorrectable, Some(95));
    assert_eq!(targets(&contained, none), ["node-0002"]);
}

#[test]
fn reasons_and_the_ownership_rule() {
    let inc = gpu_fault("inc-000007", "node-0003");
    assert_eq!(drain_reason(&inc), "faultline: gpu_lost node-0003/gpu1 inc-000007");
    assert!(owned_by_faultline(Some(&drain_reason(&inc))));
    assert!(!manual_drain(Some(&drain_reason(&inc))));
    let m = manual_reason(Some("bad \"fan\"\nnoise"));
    assert_eq!(m, "faultline: manual: bad  fan  noise");
    assert!(owned_by_faultline(Some(&m)) && manual_drain(Some(&m)));
    assert_eq!(manual_reason(None), "faultline: manual: drained by hand with faultline");
    for foreign in ["maintenance by alice", "Not responding", "FAULTLINE: x", "xfaultline: y", ""] {
        assert!(!owned_by_faultline(Some(foreign)), "{foreign:?}");
    }
    assert!(!owned_by_faultline(None));
    assert!(manual_reason(Some(&"x".repeat(500))).chars().count() <= MAX_REASON_CHARS);
}

#[test]
fn suggest_records_and_never_drains() {
    let s = settings("");
    let mut p = Planner::new(s, true);
    let steps = p.plan_incident(&gpu_fault("inc-1", "node-0003"), &["node-0003".into()], 10, &ident, T0);
    assert!(drains_of(&steps).is_empty());
    assert_eq!(results_of(&steps), [ActionResult::Suggested]);
    let Step::Record(r) = &steps[0] else { panic!() };
    assert!(
        r.detail.contains("suggest: drain node-0003") && r.detail.contains("faultline drain node-0003"),
        "{}",
        r.detail
    );
    assert_eq!(r.reason.as_deref(), Some("faultline: gpu_lost node-0003/gpu1 inc-1"));
    // Decided once.
    assert!(p.plan_incident(&gpu_fault("inc-1", "node-0003"), &["node-0003".into()], 10, &ident, T0 + 1.0).is_empty());
    let open: BTreeSet<String> = ["inc-1".to_string()].into();
    let pending = p.pending_view(&open);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, PendingState::Suggested);
    // Once the incident resolves the suggestion is no longer pending.
    p.plan_resumes(&BTreeSet::new(), &|_| Some(true), T0 + 5.0);
    assert!(p.pending_view(&BTreeSet::new()).is_empty());
}

#[test]
fn off_does_nothing() {
    let s = settings("[remediation]\ndefault = \"off\"\n");
    let mut p = Planner::new(s, true);
    assert!(p.plan_incident(&gpu_fault("inc-1", "n1"), &["n1".into()], 10, &ident, T0).is_empty());
}

#[test]
fn act_drains_within_the_guard() {
    let mut p = acting(0.2, "60s");
    let steps = p.plan_incident(&gpu_fault("inc-1", "node-0003"), &["node-0003".into()], 10, &ident, T0);
    assert_eq!(drains_of(&steps), ["node-0003"]);
    let Step::Drain { reason, dry_run, incident, .. } = &steps[0] else { panic!() };
    assert_eq!(reason, "faultline: gpu_lost node-0003/gpu1 inc-1");
    assert_eq!(incident, "inc-1");
    assert!(!dry_run);
    assert_eq!(p.drained_in_window(T0), 1);
}

#[test]
fn the_guard_blocks_a_leaf_that_would_exceed_the_share_and_pages() {
    // 10 nodes known, 20%: at most 2 drained within the window.
    let mut p = acting(0.2, "60s");
    assert_eq!(p.limit(10), 2);
    let steps = p.plan_incident(&gpu_fault("inc-1", "node-0002"), &["node-0002".into()], 10, &ident, T0);
    assert_eq!(drains_of(&steps), ["node-0002"]);
    p.drain_done("node-0002", "inc-1", "r", ActionResult::Ok, false, T0);
    let leaf = incident("inc-2", ComponentId::switch("leaf-01"), FaultClass::LeafSwitchDown);
    let behind: Vec<String> = (5..10).map(|i| format!("node-{i:04}")).collect();
    let steps = p.plan_incident(&leaf, &behind, 10, &ident, T0 + 10.0);
    assert!(drains_of(&steps).is_empty(), "nothing past the limit is drained: {steps:?}");
    assert_eq!(results_of(&steps), vec![ActionResult::Blocked; 5]);
    let page = steps.iter().find_map(|s| if let Step::Page { detail, .. } = s { Some(detail.clone()) } else { None });
    let page = page.expect("a person is paged");
    assert!(page.contains("limit of 2") && page.contains("20% of 10 known nodes") && page.contains("inc-2"), "{page}");
    assert!(page.contains("6 drained"), "{page}");
    let open: BTreeSet<String> = ["inc-1".to_string(), "inc-2".to_string()].into();
    let blocked = p.pending_view(&open).into_iter().filter(|a| a.state == PendingState::Blocked).count();
    assert_eq!(blocked, 5);
    assert_eq!(p.drained_in_window(T0 + 10.0), 1);
    // A second single-node fault still fits (2 of 2).
    let steps = p.plan_incident(&gpu_fault("inc-3", "node-0001"), &["node-0001".into()], 10, &ident, T0 + 20.0);
    assert_eq!(drains_of(&steps), ["node-0001"]);
    // A third does not.
    let steps = p.plan_incident(&gpu_fault("inc-4", "node-0004"), &["node-0004".into()], 10, &ident, T0 + 30.0);
    assert!(drains_of(&steps).is_empty());
    assert_eq!(results_of(&steps), [ActionResult::Blocked]);
}

#[test]
fn the_window_slides() {
    let mut p = acting(0.1, "60s");
    assert_eq!(p.limit(10), 1);
    assert_eq!(p.limit(9), 0, "below ten nodes a 10% guard never drains on its own");
    let s = p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    assert_eq!(drains_of(&s), ["a"]);
    let s = p.plan_incident(&gpu_fault("inc-2", "b"), &["b".into()], 10, &ident, T0 + 3599.0);
    assert!(drains_of(&s).is_empty());
    let s = p.plan_incident(&gpu_fault("inc-3", "c"), &["c".into()], 10, &ident, T0 + 3601.0);
    assert_eq!(drains_of(&s), ["c"], "an hour later the first drain has left the window");
}

#[test]
fn a_node_already_held_is_not_drained_twice() {
    let mut p = acting(0.5, "60s");
    let s = p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    assert_eq!(drains_of(&s), ["a"]);
    p.drain_done("a", "inc-1", "r", ActionResult::Ok, false, T0);
    let nic = incident("inc-2", ComponentId::nic("a", "mlx5_0"), FaultClass::NicDown);
    let s = p.plan_incident(&nic, &["a".into()], 10, &ident, T0 + 1.0);
    assert!(drains_of(&s).is_empty());
    assert_eq!(results_of(&s), [ActionResult::Skipped]);
    assert_eq!(p.held()["a"].incidents, ["inc-1".to_string(), "inc-2".to_string()].into());
}

#[test]
fn resume_waits_for_resolution_and_the_healthy_hold() {
    let mut p = acting(0.5, "60s");
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "r", ActionResult::Ok, false, T0);
    let open: BTreeSet<String> = ["inc-1".to_string()].into();
    let none = BTreeSet::new();
    let healthy: BTreeMap<&str, bool> = [("a", true)].into();
    let h = |n: &str| healthy.get(n).copied();
    // Open incident: no resume, however long.
    assert!(p.plan_resumes(&open, &h, T0 + 1000.0).is_empty());
    assert_eq!(p.pending_view(&open)[0].state, PendingState::AwaitingResolve);
    // Resolved: the hold starts now.
    assert!(p.plan_resumes(&none, &h, T0 + 1001.0).is_empty());
    let v = p.pending_view(&none);
    assert_eq!((v[0].state, v[0].due_s), (PendingState::AwaitingHealthy, Some(T0 + 1061.0)));
    assert!(p.plan_resumes(&none, &h, T0 + 1060.0).is_empty());
    // Sick again in between: the hold starts over.
    assert!(p.plan_resumes(&none, &|_| Some(false), T0 + 1030.0).is_empty());
    assert!(p.plan_resumes(&none, &h, T0 + 1040.0).is_empty());
    assert!(p.plan_resumes(&none, &h, T0 + 1099.0).is_empty());
    // A node the analyzer no longer hears is not healthy.
    assert!(p.plan_resumes(&none, &|_| None, T0 + 1100.0).is_empty());
    assert!(p.plan_resumes(&none, &h, T0 + 1101.0).is_empty());
    let s = p.plan_resumes(&none, &h, T0 + 1161.0);
    assert_eq!(s, [Step::Resume { node: "a".into(), incidents: vec!["inc-1".into()], dry_run: false }]);
    // A failed resume is retried later, not at once.
    p.resume_done("a", ActionResult::Failed, T0 + 1161.0);
    assert!(p.plan_resumes(&none, &h, T0 + 1162.0).is_empty());
    assert_eq!(p.plan_resumes(&none, &h, T0 + 1161.0 + RETRY_AFTER_S).len(), 1);
    p.resume_done("a", ActionResult::Ok, T0 + 1200.0);
    assert!(p.held().is_empty());
}

#[test]
fn every_incident_on_a_node_must_resolve_before_it_resumes() {
    let mut p = acting(0.5, "0s");
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "r", ActionResult::Ok, false, T0);
    let nic = incident("inc-2", ComponentId::nic("a", "mlx5_0"), FaultClass::NicDown);
    p.plan_incident(&nic, &["a".into()], 10, &ident, T0);
    let only_2: BTreeSet<String> = ["inc-2".to_string()].into();
    assert!(p.plan_resumes(&only_2, &|_| Some(true), T0 + 10.0).is_empty());
    assert_eq!(p.plan_resumes(&BTreeSet::new(), &|_| Some(true), T0 + 20.0).len(), 1);
}

#[test]
fn failed_drains_are_retried_then_given_up() {
    let mut p = acting(0.5, "60s");
    let open: BTreeSet<String> = ["inc-1".to_string()].into();
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "faultline: r", ActionResult::Failed, false, T0);
    assert_eq!(p.drained_in_window(T0), 0, "a failed drain does not count against the guard");
    assert!(p.due_retries(&open, 10, T0 + 1.0).is_empty());
    let mut t = T0 + RETRY_AFTER_S;
    for attempt in 2..=MAX_DRAIN_ATTEMPTS {
        let s = p.due_retries(&open, 10, t);
        assert_eq!(s.len(), 1, "attempt {attempt}");
        let Step::Drain { reason, .. } = &s[0] else { panic!() };
        assert_eq!(reason, "faultline: r");
        p.drain_done("a", "inc-1", reason, ActionResult::Failed, false, t);
        t += RETRY_AFTER_S;
    }
    assert!(p.due_retries(&open, 10, t + 1000.0).is_empty(), "given up");
    let v = p.pending_view(&open);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].state, PendingState::Blocked);
    assert!(v[0].detail.contains("a person must do it"), "{}", v[0].detail);
}

#[test]
fn someone_elses_drain_is_not_held_and_faultlines_own_is_adopted() {
    let mut p = acting(0.5, "0s");
    p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    p.drain_done("a", "inc-1", "r", ActionResult::Skipped, false, T0);
    assert!(p.held().is_empty(), "never resumed: it is not ours");
    assert_eq!(p.drained_in_window(T0), 0);
    p.plan_incident(&gpu_fault("inc-2", "b"), &["b".into()], 10, &ident, T0);
    p.drain_done("b", "inc-2", "r", ActionResult::Skipped, true, T0);
    assert!(p.held().contains_key("b"));
}

#[test]
fn dry_run_plans_on_paper_and_resumes_on_paper() {
    let s =
        settings("[remediation]\ndefault = \"act\"\ndry_run = true\nmax_drain_share = 0.5\nhealthy_hold = \"0s\"\n");
    let mut p = Planner::new(s, false);
    let steps = p.plan_incident(&gpu_fault("inc-1", "a"), &["a".into()], 10, &ident, T0);
    assert!(matches!(&steps[0], Step::Drain { dry_run: true, .. }), "{steps:?}");
    p.drain_done("a", "inc-1", "r", ActionResult::DryRun, false, T0);
    // The guard counts paper drains too, so a dry run shows what it would block.
    assert_eq!(p.drained_in_window(T0), 1);
    let s = p.plan_resumes(&BTreeSet::new(), &|_| Some(true), T0 + 1.0);
    assert!(matches!(&s[0], Step::Resume { dry_run: true, .. }), "{s:?}");
}

fn rec(
    n: u64,
    at: f64,
    action: NodeAction,
    node: &str,
    inc: Option<&str>,
    origin: ActionOrigin,
    result: ActionResult,
) -> ActionRecord {
    let mut r = record(at, action, node, node, inc, origin, result, None, String::new());
    r.id = n;
    r
}

#[test]
fn restore_rebuilds_holds_window_and_decisions() {
    use ActionOrigin::*;
    use ActionResult as R;
    use NodeAction::*;
    let records = vec![
        rec(1, T0 - 7200.0, Drain, "old", Some("inc-1"), Auto, R::Ok),
        rec(2, T0 - 7000.0, Resume, "old", Some("inc-1"), Auto, R::Ok),
        rec(3, T0 - 100.0, Drain, "a", Some("inc-2"), Auto, R::Ok),
        rec(4, T0 - 90.0, Drain, "b", Some("inc-3"), Auto, R::Suggested),
        rec(5, T0 - 80.0, Drain, "c", None, Manual, R::Ok),
        rec(6, T0 - 70.0, Drain, "d", Some("inc-4"), Auto, R::Ok),
        rec(7, T0 - 60.0, Resume, "d", None, Manual, R::Ok),
    ];
    let mut p = acting(0.5, "60s");
    p.restore(&records, T0);
    assert_eq!(p.held().keys().cloned().collect::<Vec<_>>(), ["a"]);
    assert_eq!(p.drained_in_window(T0), 2, "a and d were drained within the hour");
    for i in ["inc-1", "inc-2", "inc-3", "inc-4"] {
        assert!(!p.wants(i), "{i} was decided before the restart");
    }
    assert!(p.wants("inc-5"));
}

#[test]
fn the_deploy_example_parses_and_says_what_it_means() {
    let c = Config::parse(include_str!("../../../deploy/slurm/analyzer.toml")).unwrap();
    let r = &c.remediation;
    assert_eq!(r.adapter, AdapterKind::Slurm);
    assert_eq!(r.slurm.env["SLURM_CONF"], "/etc/slurm/slurm.conf");
    let p = Policy { default: r.default, rules: r.rule.clone() };
    assert_eq!(p.mode_for(FaultClass::GpuLost, Severity::Critical), RemediationMode::Act);
    assert_eq!(p.mode_for(FaultClass::LeafSwitchDown, Severity::Critical), RemediationMode::Act);
    assert_eq!(p.mode_for(FaultClass::GpuSlow, Severity::Warning), RemediationMode::Suggest);
    assert_eq!(p.mode_for(FaultClass::DiskFailure, Severity::Critical), RemediationMode::Suggest);
    // Check before delivery: the built-in checks are on; the command checks are offered, commented.
    let v = r.validation.build(&r.slurm.env).unwrap();
    assert_eq!(v.names(), "gpu-count, fabric");
    assert_eq!((v.retry_s, v.retry_max_s, v.max_attempts), (300.0, 3600.0, 6));
}
