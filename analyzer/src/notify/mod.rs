//! Notifications that reach on-call: the planner turns each incident change into outbox rows (one
//! per receiver that wants it) written in the same transaction as the incident, and the delivery
//! worker (`deliver`) sends them, in order per receiver, with capped exponential backoff.
//!
//! Receiver kinds, one file each: `webhook` (signed JSON), `alertmanager` (API v2 alerts, re-posted
//! while open), `slack` (incoming-webhook messages). `config` is the `[notify]` config section.
//!
//! **Architecture Invariant:** nothing here sends anything the outbox has not recorded first, except
//! Alertmanager re-posts of still-open incidents, which are keep-alives of alerts already delivered.
//! Delivery is at least once: every row carries an idempotency key that is the same on every retry,
//! after a crash too, so receivers can drop duplicates.

pub mod alertmanager;
pub mod config;
pub mod deliver;
pub mod slack;
pub mod webhook;

use std::sync::Arc;

use faultline_proto::{Incident, Severity};

pub use config::{Event, NotifyConfig, NotifyConfigError, NotifySettings, Receiver, ReceiverKind, RetryPolicy};
pub use deliver::{DeliveryResult, Host, Workers, spawn};

use crate::engine::IncidentChange;
use crate::store::NewOutbox;
use crate::store::OutboxPlanner;

/// The event and incident of a change.
pub fn event_of(change: &IncidentChange) -> (Event, &Incident) {
    match change {
        IncidentChange::Opened(i) => (Event::Opened, i),
        IncidentChange::Updated(i) => (Event::Updated, i),
        IncidentChange::Resolved(i) => (Event::Resolved, i),
    }
}

/// The severity notifications carry: the incident's own when its recommended action needs a person
/// (`Action::needs_person`), `info` otherwise, so a job restart or nothing-to-do never pages anyone.
/// Filters, Alertmanager's `severity` label and Slack's headline all use it.
pub fn notify_severity(inc: &Incident) -> Severity {
    if inc.action.needs_person() { inc.severity } else { Severity::Info }
}

/// The key that identifies one notification across retries and restarts:
/// `<receiver>/<incident>/<event>/<revision>`, the revision being the incident's `updated_s` in
/// milliseconds (each change of an incident gets a new one; the same change planned twice, as when
/// the store refused it and the tick retried, gets the same key and is stored once).
pub fn idempotency_key(receiver: &str, event: Event, inc: &Incident) -> String {
    let rev = if inc.updated_s.is_finite() { (inc.updated_s * 1000.0).round() as i64 } else { 0 };
    format!("{receiver}/{}/{event}/{rev}", inc.id)
}

/// Builds the outbox rows for incident changes from the `[notify]` settings.
#[derive(Debug, Clone)]
pub struct Planner {
    settings: Arc<NotifySettings>,
}

impl Planner {
    pub fn new(settings: Arc<NotifySettings>) -> Self {
        Self { settings }
    }

    /// The stored payload for `receiver` about `event` on `inc`.
    pub fn payload(&self, receiver: &Receiver, event: Event, inc: &Incident) -> Result<String, serde_json::Error> {
        let link = self.settings.incident_link(&inc.id);
        let cluster = self.settings.cluster.as_deref();
        match &receiver.kind {
            ReceiverKind::Webhook { .. } => {
                webhook::payload(event, inc, &link, &alertmanager::identity_labels(inc, cluster))
            }
            ReceiverKind::Slack { .. } => slack::payload(event, inc, &link),
            ReceiverKind::Alertmanager { runbook_base, labels, .. } => alertmanager::payload(
                inc,
                alertmanager::AlertContext {
                    link: &self.settings.generator_url(&inc.id),
                    runbook_base: runbook_base.as_deref(),
                    extra_labels: labels,
                    cluster,
                },
            ),
        }
    }
}

impl OutboxPlanner for Planner {
    fn plan(&self, change: &IncidentChange, now_s: f64) -> Vec<NewOutbox> {
        let (event, inc) = event_of(change);
        let mut out = Vec::new();
        for r in &self.settings.receivers {
            if !r.filter.matches(event, inc) {
                continue;
            }
            match self.payload(r, event, inc) {
                Ok(payload) => out.push(NewOutbox {
                    receiver: r.name.clone(),
                    incident_id: inc.id.clone(),
                    event: event.as_str().into(),
                    payload,
                    idempotency_key: idempotency_key(&r.name, event, inc),
                    next_attempt_s: now_s,
                }),
                Err(e) => {
                    tracing::error!(receiver = %r.name, incident = %inc.id, error = %e, "cannot encode notification")
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::notify::config::{Filter, Secret};
    use faultline_proto::{
        Action, ComponentId, Evidence, FaultClass, IncidentStatus, Severity, TimelineEntry, rfc3339,
    };

    /// A GPU that fell off the bus under two jobs, opened at 1_700_000_000 s.
    pub(crate) fn incident() -> Incident {
        let opened_s = 1_700_000_000.0;
        Incident {
            id: "inc-000007".into(),
            root: ComponentId::gpu("node-0003", 5),
            class: FaultClass::GpuLost,
            severity: Severity::Critical,
            confidence: 0.97,
            status: IncidentStatus::Open,
            summary: "node-0003/gpu5 fell off the bus (gpu_lost); 2 jobs affected".into(),
            onset_s: opened_s - 0.4,
            opened_s,
            opened_at: rfc3339(opened_s),
            updated_s: opened_s,
            resolved_s: None,
            affected_jobs: vec!["llm-70b".into(), "vit-h".into()],
            paths: vec![vec![
                "job:llm-70b".into(),
                "job:llm-70b/rank5".into(),
                "node-0003/gpu5".into(),
                "node-0003".into(),
            ]],
            evidence: vec![Evidence {
                at_s: opened_s - 0.4,
                component: ComponentId::gpu("node-0003", 5),
                kind: "xid".into(),
                detail: "XID 79 (GPU has fallen off the bus)".into(),
            }],
            timeline: vec![TimelineEntry { at_s: opened_s, what: "opened".into(), detail: "XID 79".into() }],
            action: Action::RebootNode,
        }
    }

    fn settings() -> Arc<NotifySettings> {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        Arc::new(NotifySettings {
            public_url: "http://fl:9440".into(),
            public_url_is_default: false,
            cluster: None,
            grafana_url: None,
            retry: RetryPolicy::default(),
            timeout: std::time::Duration::from_secs(1),
            receivers: vec![
                Receiver {
                    name: "hook".into(),
                    filter: Filter::all(),
                    kind: ReceiverKind::Webhook { url: url("http://h/x"), secret: Some(Secret::new("k")) },
                },
                Receiver {
                    name: "am".into(),
                    filter: Filter::all(),
                    kind: ReceiverKind::Alertmanager {
                        alerts_url: url("http://am/api/v2/alerts"),
                        repost_interval: std::time::Duration::from_secs(60),
                        runbook_base: None,
                        labels: Default::default(),
                    },
                },
                Receiver {
                    name: "chat".into(),
                    filter: Filter { events: [Event::Opened, Event::Resolved].into_iter().collect(), ..Filter::all() },
                    kind: ReceiverKind::Slack { url: url("http://s/x") },
                },
                Receiver {
                    name: "nics".into(),
                    filter: Filter { classes: [FaultClass::NicDown].into_iter().collect(), ..Filter::all() },
                    kind: ReceiverKind::Webhook { url: url("http://n/x"), secret: None },
                },
            ],
        })
    }

    #[test]
    fn each_change_becomes_one_row_per_matching_receiver() {
        let p = Planner::new(settings());
        let inc = incident();
        let rows = p.plan(&IncidentChange::Opened(inc.clone()), 5.0);
        let names: Vec<&str> = rows.iter().map(|r| r.receiver.as_str()).collect();
        assert_eq!(names, ["hook", "am", "chat"]);
        for r in &rows {
            assert_eq!((r.event.as_str(), r.incident_id.as_str(), r.next_attempt_s), ("opened", "inc-000007", 5.0));
        }
        assert_eq!(rows[0].idempotency_key, "hook/inc-000007/opened/1700000000000");
        let wh: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
        assert_eq!(wh["link"], "http://fl:9440/api/v1/incidents/inc-000007");
        let am: serde_json::Value = serde_json::from_str(&rows[1].payload).unwrap();
        assert_eq!(am[0]["labels"]["alertname"], "FaultlineIncident");
        let slack: serde_json::Value = serde_json::from_str(&rows[2].payload).unwrap();
        assert!(slack["blocks"].is_array());

        // An update: not for the chat receiver (opened and resolved only); a new revision in the key.
        let mut upd = inc.clone();
        upd.updated_s += 1.5;
        let rows = p.plan(&IncidentChange::Updated(upd.clone()), 6.0);
        let names: Vec<&str> = rows.iter().map(|r| r.receiver.as_str()).collect();
        assert_eq!(names, ["hook", "am"]);
        assert_eq!(rows[0].idempotency_key, "hook/inc-000007/updated/1700000001500");
        // Planned again (the store refused the first time): the same keys, so one row each.
        let again = p.plan(&IncidentChange::Updated(upd), 7.0);
        assert_eq!(
            again.iter().map(|r| &r.idempotency_key).collect::<Vec<_>>(),
            rows.iter().map(|r| &r.idempotency_key).collect::<Vec<_>>()
        );
    }
}
