//! The Prometheus rules page for exactly the incidents the analyzer's own notifications page for.
//!
//! For every recommended action and every severity (a `job_hang` whose action is `restart_job`
//! among them), one open incident is rendered by the analyzer's real `/metrics` code; its
//! `faultline_incident_info` line becomes a promtool input series; `promtool test rules` then checks
//! that `alerts/analyzer.rules.yml` fires exactly one incident alert for it whose `severity` label is
//! `notify::notify_severity` of the same incident, the severity its webhook, Alertmanager and Slack
//! notifications carry. Needs promtool (installed by scripts/install-test-deps.sh; fails under CI
//! when missing).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use faultline_analyzer::metrics::{Metrics, Snapshot};
use faultline_analyzer::notify::notify_severity;
use faultline_proto::{Action, ComponentId, FaultClass, Incident, IncidentStatus, Severity, rfc3339};
use faultline_tests::external;

const ACTIONS: [Action; 6] = [
    Action::None,
    Action::RestartJob,
    Action::ResetGpu,
    Action::RebootNode,
    Action::ReplacePart,
    Action::InspectCableOrSwitch,
];
const SEVERITIES: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

fn incident(n: usize, action: Action, severity: Severity) -> Incident {
    let (root, class) = match action {
        Action::RestartJob | Action::None => (ComponentId::job("llm-70b"), FaultClass::JobHang),
        Action::InspectCableOrSwitch => (ComponentId::nic("node-0007", "mlx5_2"), FaultClass::CableBitErrors),
        _ => (ComponentId::gpu("node-0003", 5), FaultClass::GpuLost),
    };
    Incident {
        id: format!("inc-{n:06}"),
        root,
        class,
        severity,
        confidence: 0.9,
        status: IncidentStatus::Open,
        summary: String::new(),
        onset_s: 100.0,
        opened_s: 101.0,
        opened_at: rfc3339(101.0),
        updated_s: 101.0,
        resolved_s: None,
        affected_jobs: vec![],
        paths: vec![],
        evidence: vec![],
        timeline: vec![],
        action,
    }
}

fn alert_for(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "FaultlineIncidentCritical",
        Severity::Warning => "FaultlineIncidentWarning",
        Severity::Info => "FaultlineIncidentInfo",
    }
}

#[test]
fn rules_page_exactly_when_the_analyzer_notifications_page() {
    let Some(promtool) = external("promtool") else { return };
    let incidents: Vec<Incident> = ACTIONS
        .iter()
        .flat_map(|a| SEVERITIES.iter().map(move |s| (*a, *s)))
        .enumerate()
        .map(|(n, (a, s))| incident(n + 1, a, s))
        .collect();
    assert!(incidents.iter().any(|i| i.class == FaultClass::JobHang && i.action == Action::RestartJob));
    let metrics = Metrics::new(100);
    let text = metrics
        .render(&Snapshot { open_incidents: incidents.iter().collect(), ..Default::default() }, false)
        .unwrap()
        .0;
    let info: Vec<&str> = text.lines().filter(|l| l.starts_with("faultline_incident_info{")).collect();
    assert_eq!(info.len(), incidents.len(), "{text}");

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts/analyzer.rules.yml");
    let mut yml = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        rules.canonicalize().unwrap().display()
    );
    for line in &info {
        let series = line.rsplit_once(' ').unwrap().0;
        writeln!(yml, "      - series: '{series}'\n        values: '1x10'").unwrap();
    }
    yml.push_str("    promql_expr_test:\n");
    for inc in &incidents {
        let sev = notify_severity(inc);
        let id = &inc.id;
        // Exactly one firing incident alert, of the notification's severity.
        writeln!(
            yml,
            "      - expr: 'count by (alertname, severity) (ALERTS{{alertstate=\"firing\",id=\"{id}\",alertname=~\"FaultlineIncident.*\"}})'\n        eval_time: 5m\n        exp_samples:\n          - labels: '{{alertname=\"{}\",severity=\"{}\"}}'\n            value: 1",
            alert_for(sev),
            sev.as_str()
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("paging_test.yml");
    std::fs::write(&file, &yml).unwrap();
    let out = Command::new(promtool).args(["test", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "the rules and the analyzer's paging policy disagree:\n{}{}\n{yml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Both outcomes occur: some incidents page, the restart_job and none ones do not.
    assert!(incidents.iter().any(|i| notify_severity(i) == Severity::Critical));
    assert!(incidents.iter().filter(|i| !i.action.needs_person()).all(|i| notify_severity(i) == Severity::Info));
}
