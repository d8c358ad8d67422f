//! Alertmanager API v2: an incident becomes one alert (`alertname="FaultlineIncident"`) posted to
//! `<url>/api/v2/alerts`, re-posted while it is open and posted once more with `endsAt` when it
//! resolves.
//!
//! Labels identify an alert in Alertmanager, so they hold only what identifies the fault, in the one
//! scheme faultline's Prometheus rules and webhooks share (alerts/README.md, "One label scheme"):
//! `alertname`, `cluster` (when configured), `node` (when the root is on a node), `component` (the
//! root) and `gpu` (its index, when the root is a GPU), `class`, `severity` (`info` when no person
//! needs to act) and `incident`. What changes during an incident's life goes in annotations: the
//! affected jobs (a changing `jobs` label would make the alert resolve and fire again), the
//! recommended action, the root cause story (evidence, affected job paths).
//! When an update still changes an incident's labels (its class was upgraded), the alert under the
//! old labels is ended in the same post (`Supersede`), so it does not linger until Alertmanager's
//! `resolve_timeout`.

use std::collections::{BTreeMap, HashMap};

use faultline_proto::{ComponentId, Incident, IncidentStatus, rfc3339};
use serde::{Deserialize, Serialize};

/// `alertname` of every incident alert.
pub const ALERT_NAME: &str = "FaultlineIncident";

/// Labels faultline sets itself; configured extra labels may not use these names.
/// (`cluster` is not among them: it may come from a receiver's `labels` or from `[notify] cluster`.)
pub const OWN_LABELS: [&str; 7] = ["alertname", "severity", "class", "component", "gpu", "node", "incident"];

/// Longest `jobs` annotation value: a few job names fit, the full list is in the `description`
/// annotation. 200 characters keeps a chat message's first line readable.
pub const MAX_JOBS_LABEL_CHARS: usize = 200;

/// Evidence lines in the `description` annotation; the first ones convinced the analyzer.
const MAX_EVIDENCE_LINES: usize = 8;

/// Affected-path lines in the `description` annotation.
const MAX_PATH_LINES: usize = 8;

/// Longest `description` annotation. Chat and paging bridges behind Alertmanager cut long texts
/// anyway; 4000 characters fits a Slack message and an email preview.
const MAX_DESCRIPTION_CHARS: usize = 4000;

/// One element of the `POST /api/v2/alerts` array (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// Absent while firing: Alertmanager then keeps the alert for its `resolve_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// What one Alertmanager receiver adds to every alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertContext<'a> {
    /// `<public_url>/api/v1/incidents/<id>` comes from this.
    pub link: &'a str,
    pub runbook_base: Option<&'a str>,
    pub extra_labels: &'a BTreeMap<String, String>,
    /// `[notify] cluster`: the `cluster` label, over one in `extra_labels`.
    pub cluster: Option<&'a str>,
}

/// The identity labels of the incident's alert (no configured extras): the scheme shared with the
/// Prometheus rules and the webhook payloads' `labels`.
pub fn identity_labels(inc: &Incident, cluster: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".into(), ALERT_NAME.into());
    if let Some(c) = cluster.filter(|c| !c.is_empty()) {
        labels.insert("cluster".into(), c.to_string());
    }
    // `info` when no person needs to act (`notify_severity`): routes that page match on severity.
    labels.insert("severity".into(), super::notify_severity(inc).as_str().into());
    labels.insert("class".into(), inc.class.as_str().into());
    labels.insert("component".into(), inc.root.to_string());
    if let Some(host) = inc.root.host().filter(|h| !h.is_empty()) {
        labels.insert("node".into(), host.to_string());
    }
    if let ComponentId::Gpu { index, .. } = &inc.root {
        labels.insert("gpu".into(), index.to_string());
    }
    labels.insert("incident".into(), inc.id.clone());
    labels
}

/// The alert for `inc` as it is now: firing while open, with `endsAt` once resolved.
pub fn alert(inc: &Incident, ctx: AlertContext<'_>) -> PostableAlert {
    let mut labels = ctx.extra_labels.clone();
    labels.extend(identity_labels(inc, ctx.cluster));
    let mut annotations = BTreeMap::new();
    annotations.insert("jobs".into(), jobs_label(&inc.affected_jobs));
    // The recommended action, a fixed set (`replace_part`, `reboot_node`, ...).
    annotations.insert("action".into(), action_str(inc));
    annotations.insert("summary".into(), inc.summary.clone());
    annotations.insert("description".into(), description(inc));
    if let Some(base) = ctx.runbook_base {
        annotations.insert("runbook_url".into(), runbook_url(base, inc.class.as_str()));
    }
    let ends_at = match inc.status {
        IncidentStatus::Resolved => Some(rfc3339(inc.resolved_s.unwrap_or(inc.updated_s).max(inc.opened_s))),
        IncidentStatus::Open => None,
    };
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(inc.opened_s),
        ends_at,
        generator_url: ctx.link.to_string(),
    }
}

/// The stored body for one outbox row: a JSON array holding the incident's alert.
pub fn payload(inc: &Incident, ctx: AlertContext<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string(&[alert(inc, ctx)])
}

/// Sorted job names joined by commas, cut at `MAX_JOBS_LABEL_CHARS` with a `+N` count of the rest.
pub fn jobs_label(jobs: &[String]) -> String {
    let mut sorted: Vec<&str> = jobs.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    let mut out = String::new();
    for (i, j) in sorted.iter().enumerate() {
        let sep = usize::from(!out.is_empty());
        let left_after = n - i - 1;
        // Room for this job and, if more follow, for the count of those left out.
        let suffix = if left_after > 0 { format!(",+{left_after}").len() } else { 0 };
        if out.len() + sep + j.len() + suffix > MAX_JOBS_LABEL_CHARS {
            // The previous step left room for exactly this suffix.
            let left = n - i;
            return if out.is_empty() { format!("+{left}") } else { format!("{out},+{left}") };
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(j);
    }
    out
}

/// `base` with the class appended, or with `{class}` replaced when the base has it.
pub fn runbook_url(base: &str, class: &str) -> String {
    if base.contains("{class}") { base.replace("{class}", class) } else { format!("{base}{class}") }
}

/// Root cause, evidence and affected job paths, bounded.
pub fn description(inc: &Incident) -> String {
    let mut s = format!(
        "Root cause: {} ({}, confidence {:.2}). Recommended action: {}.",
        inc.root,
        inc.class,
        inc.confidence,
        action_str(inc)
    );
    if !inc.evidence.is_empty() {
        s.push_str("\nEvidence:");
        for e in inc.evidence.iter().take(MAX_EVIDENCE_LINES) {
            s.push_str(&format!("\n- {} {}: {}", e.component, e.kind, e.detail));
        }
        if inc.evidence.len() > MAX_EVIDENCE_LINES {
            s.push_str(&format!("\n- … and {} more", inc.evidence.len() - MAX_EVIDENCE_LINES));
        }
    }
    if inc.affected_jobs.is_empty() {
        s.push_str("\nNo job affected.");
    } else {
        s.push_str(&format!("\nAffected jobs ({}): {}", inc.affected_jobs.len(), inc.affected_jobs.join(", ")));
    }
    if !inc.paths.is_empty() {
        s.push_str("\nPaths:");
        for p in inc.paths.iter().take(MAX_PATH_LINES) {
            s.push_str(&format!("\n- {}", p.join(" → ")));
        }
        if inc.paths.len() > MAX_PATH_LINES {
            s.push_str(&format!("\n- … and {} more", inc.paths.len() - MAX_PATH_LINES));
        }
    }
    truncate_chars(&s, MAX_DESCRIPTION_CHARS)
}

pub(crate) fn action_str(inc: &Incident) -> String {
    serde_json::to_value(inc.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| "none".into())
}

pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Remembers, per incident, the labels last posted to one Alertmanager, so that an alert whose
/// labels changed is ended under its old labels in the same post. Memory only: after a restart an
/// old label set (if any) expires on Alertmanager's `resolve_timeout` instead.
#[derive(Debug, Default)]
pub struct Supersede {
    last: HashMap<String, BTreeMap<String, String>>,
}

impl Supersede {
    /// `alerts` plus, for each whose labels differ from the ones last posted for its incident, the
    /// old alert ended at `now_s`.
    pub fn expand(&self, alerts: &[PostableAlert], now_s: f64) -> Vec<PostableAlert> {
        let mut out = alerts.to_vec();
        for a in alerts {
            let Some(id) = a.labels.get("incident") else { continue };
            if let Some(prev) = self.last.get(id)
                && *prev != a.labels
            {
                out.push(PostableAlert {
                    labels: prev.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.starts_at.clone(),
                    ends_at: Some(rfc3339(now_s).max(a.starts_at.clone())),
                    generator_url: a.generator_url.clone(),
                });
            }
        }
        out
    }

    /// `alerts` were delivered: remember firing ones, forget resolved ones.
    pub fn delivered(&mut self, alerts: &[PostableAlert]) {
        for a in alerts {
            let Some(id) = a.labels.get("incident") else { continue };
            if a.ends_at.is_some() {
                // Ended: forget it, unless what is remembered is a newer label set of the incident.
                if self.last.get(id) == Some(&a.labels) {
                    self.last.remove(id);
                }
            } else {
                self.last.insert(id.clone(), a.labels.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::incident;
    use faultline_proto::{ComponentId, FaultClass, Severity};

    fn ctx<'a>(labels: &'a BTreeMap<String, String>) -> AlertContext<'a> {
        AlertContext {
            link: "http://fl:9440/api/v1/incidents/inc-000007",
            runbook_base: Some("https://runbooks.example.org/faultline#"),
            extra_labels: labels,
            cluster: None,
        }
    }

    #[test]
    fn an_incident_no_person_must_act_on_does_not_page() {
        let mut inc = incident();
        inc.class = FaultClass::HostOom;
        inc.root = ComponentId::node("node-0003");
        inc.action = faultline_proto::Action::RestartJob;
        let none = BTreeMap::new();
        let a = alert(&inc, ctx(&none));
        assert_eq!(a.labels["severity"], "info");
        assert_eq!(a.annotations["action"], "restart_job");
        assert!(!a.labels.contains_key("gpu"), "{:?}", a.labels);
        inc.action = faultline_proto::Action::RebootNode;
        assert_eq!(alert(&inc, ctx(&none)).labels["severity"], "critical");
    }

    #[test]
    fn a_firing_alert_carries_our_labels_and_annotations() {
        let extra = BTreeMap::from([("cluster".to_string(), "train-a".to_string())]);
        let inc = incident();
        let a = alert(&inc, ctx(&extra));
        let want: BTreeMap<String, String> = [
            ("alertname", "FaultlineIncident"),
            ("severity", "critical"),
            ("class", "gpu_lost"),
            ("component", "node-0003/gpu5"),
            ("node", "node-0003"),
            ("gpu", "5"),
            ("incident", "inc-000007"),
            ("cluster", "train-a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a.labels, want);
        assert_eq!(a.annotations["jobs"], "llm-70b,vit-h");
        assert_eq!(a.annotations["action"], "reboot_node");
        // `[notify] cluster` wins over a receiver's `cluster` label.
        let b = alert(&inc, AlertContext { cluster: Some("train-b"), ..ctx(&extra) });
        assert_eq!(b.labels["cluster"], "train-b");
        assert_eq!(a.annotations["summary"], inc.summary);
        assert_eq!(a.annotations["runbook_url"], "https://runbooks.example.org/faultline#gpu_lost");
        let d = &a.annotations["description"];
        assert!(d.starts_with("Root cause: node-0003/gpu5 (gpu_lost, confidence 0.97)"), "{d}");
        assert!(d.contains("Recommended action: reboot_node"), "{d}");
        assert!(d.contains("node-0003/gpu5 xid: XID 79"), "{d}");
        assert!(d.contains("job:llm-70b → job:llm-70b/rank5 → node-0003/gpu5"), "{d}");
        assert_eq!(a.starts_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(a.ends_at, None);
        assert_eq!(a.generator_url, "http://fl:9440/api/v1/incidents/inc-000007");
        let v = serde_json::to_value(&a).unwrap();
        assert!(v.get("endsAt").is_none(), "{v}");
        assert_eq!(v["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["generatorURL"], "http://fl:9440/api/v1/incidents/inc-000007");
    }

    #[test]
    fn a_resolved_alert_ends_when_the_incident_resolved() {
        let mut inc = incident();
        inc.status = IncidentStatus::Resolved;
        inc.resolved_s = Some(1_700_000_300.0);
        let extra = BTreeMap::new();
        let body = payload(&inc, ctx(&extra)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:18:20.000Z");
        assert_eq!(v[0]["labels"]["incident"], "inc-000007");
    }

    #[test]
    fn no_node_label_off_a_node_and_no_runbook_without_a_base() {
        let mut inc = incident();
        inc.root = ComponentId::switch("leaf-02");
        inc.class = FaultClass::LeafSwitchDown;
        inc.affected_jobs.clear();
        inc.paths.clear();
        let extra = BTreeMap::new();
        let a = alert(&inc, AlertContext { runbook_base: None, ..ctx(&extra) });
        assert!(!a.labels.contains_key("node"), "{:?}", a.labels);
        assert_eq!(a.labels["component"], "switch:leaf-02");
        assert_eq!(a.annotations["jobs"], "");
        assert!(!a.annotations.contains_key("runbook_url"));
        assert!(a.annotations["description"].contains("No job affected."));
    }

    #[test]
    fn jobs_label_is_bounded() {
        assert_eq!(jobs_label(&[]), "");
        assert_eq!(jobs_label(&["b".into(), "a".into(), "a".into()]), "a,b");
        let many: Vec<String> = (0..100).map(|i| format!("job-{i:03}")).collect();
        let l = jobs_label(&many);
        assert!(l.len() <= MAX_JOBS_LABEL_CHARS, "{} {l}", l.len());
        assert!(l.starts_with("job-000,job-001,"), "{l}");
        let shown = l.split(',').filter(|p| p.starts_with("job-")).count();
        assert!(l.ends_with(&format!(",+{}", 100 - shown)), "{l}");
        let huge = vec!["x".repeat(500)];
        assert_eq!(jobs_label(&huge), "+1");
    }

    #[test]
    fn runbook_urls() {
        assert_eq!(runbook_url("https://r/x#", "nic_down"), "https://r/x#nic_down");
        assert_eq!(runbook_url("https://r/{class}.md", "nic_down"), "https://r/nic_down.md");
    }

    #[test]
    fn description_is_bounded() {
        let mut inc = incident();
        let ev = inc.evidence[0].clone();
        inc.evidence = vec![ev; 40];
        inc.paths = vec![vec!["p".repeat(900)]; 40];
        let d = description(&inc);
        assert!(d.chars().count() <= MAX_DESCRIPTION_CHARS);
        assert!(d.contains("… and 32 more"), "{d}");
    }

    #[test]
    fn a_job_joining_does_not_change_the_alert_identity() {
        let extra = BTreeMap::new();
        let mut inc = incident();
        let before = alert(&inc, ctx(&extra));
        inc.affected_jobs.push("new-job".into());
        inc.action = faultline_proto::Action::ReplacePart;
        let after = alert(&inc, ctx(&extra));
        assert_eq!(before.labels, after.labels);
        assert_ne!(before.annotations["jobs"], after.annotations["jobs"]);
    }

    #[test]
    fn changed_labels_end_the_old_alert_in_the_same_post() {
        let extra = BTreeMap::new();
        let mut inc = incident();
        inc.class = FaultClass::GpuThermalThrottle;
        inc.severity = Severity::Warning;
        let first = alert(&inc, ctx(&extra));
        let mut sup = Supersede::default();
        assert_eq!(sup.expand(std::slice::from_ref(&first), 1_700_000_010.0).len(), 1);
        sup.delivered(std::slice::from_ref(&first));
        // Same labels again (a re-post): nothing extra.
        assert_eq!(sup.expand(std::slice::from_ref(&first), 1_700_000_020.0).len(), 1);
        inc.class = FaultClass::GpuLost;
        inc.severity = Severity::Critical;
        let second = alert(&inc, ctx(&extra));
        let out = sup.expand(std::slice::from_ref(&second), 1_700_000_030.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], second);
        assert_eq!(out[1].labels, first.labels);
        assert_eq!(out[1].ends_at.as_deref(), Some("2023-11-14T22:13:50.000Z"));
        sup.delivered(&out);
        assert_eq!(sup.len(), 1);
        inc.status = IncidentStatus::Resolved;
        inc.resolved_s = Some(1_700_000_040.0);
        let end = alert(&inc, ctx(&extra));
        assert_eq!(sup.expand(std::slice::from_ref(&end), 1_700_000_040.0).len(), 1);
        sup.delivered(&[end]);
        assert!(sup.is_empty());
    }
}
