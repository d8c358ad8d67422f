//! Tests of the SQLite store (kept apart so that store.rs stays readable).
use super::*;
use faultline_proto::{Action, ComponentId, FaultClass, Severity, rfc3339};

fn incident(n: u64, opened_s: f64, status: IncidentStatus) -> Incident {
    Incident {
        id: format!("inc-{n:06}"),
        root: ComponentId::gpu("node-0008", 3),
        class: FaultClass::GpuLost,
        severity: Severity::Critical,
        confidence: 0.98,
        status,
        summary: "node-0008/gpu3 fell off the bus (XID 79)".into(),
        onset_s: opened_s - 0.5,
        opened_s,
        opened_at: rfc3339(opened_s),
        updated_s: opened_s,
        resolved_s: None,
        affected_jobs: vec!["llm-70b".into()],
        paths: vec![vec!["job:llm-70b".into(), "job:llm-70b/rank19".into(), "node-0008/gpu3".into()]],
        evidence: vec![],
        timeline: vec![TimelineEntry { at_s: opened_s, what: "opened".into(), detail: "XID 79".into() }],
        action: Action::ResetGpu,
    }
}

fn all(limit: usize) -> IncidentQuery {
    IncidentQuery { status: None, since_s: None, limit }
}

#[test]
fn incidents_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let a = incident(1, 100.0, IncidentStatus::Open);
    let mut b = incident(2, 200.0, IncidentStatus::Open);
    {
        let mut s = Store::open(&path).unwrap();
        s.record(&[IncidentChange::Opened(a.clone()), IncidentChange::Opened(b.clone())], &[], 200.0).unwrap();
        b.status = IncidentStatus::Resolved;
        b.resolved_s = Some(300.0);
        b.updated_s = 300.0;
        b.timeline.push(TimelineEntry { at_s: 300.0, what: "resolved".into(), detail: "gone".into() });
        s.record(&[IncidentChange::Resolved(b.clone())], &[], 300.0).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.load_open().unwrap(), vec![a.clone()]);
    assert_eq!(s.get("inc-000002").unwrap().unwrap(), b);
    assert_eq!(s.list(&all(100)).unwrap(), vec![a, b]);
    assert_eq!(s.timeline("inc-000002").unwrap().len(), 2);
    assert_eq!(s.next_incident_id().unwrap(), 3);
    assert_eq!(s.counts().unwrap(), StoreCounts { incidents: 2, open: 1, outbox_pending: 0 });
    assert!(s.get("inc-000009").unwrap().is_none());
    assert_eq!(s.by_root("node-0008/gpu3").unwrap().len(), 2);
    assert!(s.by_root("node-0008/gpu4").unwrap().is_empty());
}

#[test]
fn list_filters_by_status_since_and_limit() {
    let mut s = Store::open_in_memory().unwrap();
    let mut old = incident(1, 100.0, IncidentStatus::Resolved);
    old.resolved_s = Some(150.0);
    old.updated_s = 150.0;
    let open_old = incident(2, 120.0, IncidentStatus::Open);
    let new = incident(3, 500.0, IncidentStatus::Open);
    let changes: Vec<_> = [&old, &open_old, &new].iter().map(|i| IncidentChange::Opened((*i).clone())).collect();
    s.record(&changes, &[], 500.0).unwrap();
    let ids = |q: IncidentQuery| s.list(&q).unwrap().into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(IncidentQuery { status: Some(IncidentStatus::Open), ..all(10) }), ["inc-000002", "inc-000003"]);
    assert_eq!(ids(IncidentQuery { status: Some(IncidentStatus::Resolved), ..all(10) }), ["inc-000001"]);
    // Since 200: the old resolved one is out; the old open one is still active.
    assert_eq!(ids(IncidentQuery { since_s: Some(200.0), ..all(10) }), ["inc-000002", "inc-000003"]);
    // The newest `limit`, oldest first.
    assert_eq!(ids(all(2)), ["inc-000002", "inc-000003"]);
}

#[test]
fn next_id_never_goes_back_even_if_rows_are_deleted() {
    let mut s = Store::open_in_memory().unwrap();
    assert_eq!(s.next_incident_id().unwrap(), 1);
    s.record(&[IncidentChange::Opened(incident(41, 1.0, IncidentStatus::Open))], &[], 1.0).unwrap();
    s.record(&[IncidentChange::Opened(incident(7, 2.0, IncidentStatus::Open))], &[], 2.0).unwrap();
    s.conn.execute("DELETE FROM incidents", []).unwrap();
    assert_eq!(s.next_incident_id().unwrap(), 42);
}

#[test]
fn outbox_rows_are_written_with_the_change_and_deduplicated() {
    let mut s = Store::open_in_memory().unwrap();
    let inc = incident(1, 10.0, IncidentStatus::Open);
    let note = NewOutbox {
        receiver: "oncall".into(),
        incident_id: inc.id.clone(),
        event: "opened".into(),
        payload: "{}".into(),
        idempotency_key: "oncall/inc-000001/opened".into(),
        next_attempt_s: 10.0,
    };
    s.record(&[IncidentChange::Opened(inc.clone())], std::slice::from_ref(&note), 10.0).unwrap();
    s.record(&[IncidentChange::Updated(inc)], std::slice::from_ref(&note), 11.0).unwrap();
    assert!(s.outbox_due(9.0, 10).unwrap().is_empty());
    let due = s.outbox_due(10.0, 10).unwrap();
    assert_eq!(due.len(), 1);
    s.outbox_failed(due[0].id, "connection refused", Some(20.0)).unwrap();
    assert!(s.outbox_due(15.0, 10).unwrap().is_empty());
    let due = s.outbox_due(20.0, 10).unwrap();
    assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (1, Some("connection refused")));
    s.outbox_sent(due[0].id).unwrap();
    assert!(s.outbox_due(100.0, 10).unwrap().is_empty());
    assert_eq!(s.counts().unwrap().outbox_pending, 0);
}

#[test]
fn the_head_of_a_receiver_is_its_oldest_pending_row_due_or_not() {
    let mut s = Store::open_in_memory().unwrap();
    let inc = incident(1, 10.0, IncidentStatus::Open);
    let note = |receiver: &str, event: &str, at: f64| NewOutbox {
        receiver: receiver.into(),
        incident_id: inc.id.clone(),
        event: event.into(),
        payload: "{}".into(),
        idempotency_key: format!("{receiver}/{event}"),
        next_attempt_s: at,
    };
    s.record(&[IncidentChange::Opened(inc.clone())], &[note("a", "opened", 10.0), note("b", "opened", 10.0)], 10.0)
        .unwrap();
    s.record(&[IncidentChange::Resolved(inc.clone())], &[note("a", "resolved", 20.0)], 20.0).unwrap();
    let head = s.outbox_head("a").unwrap().unwrap();
    assert_eq!((head.event.as_str(), head.created_s), ("opened", 10.0));
    // The first row waits for a retry: it stays the head, the later row does not overtake it.
    s.outbox_failed(head.id, "503", Some(100.0)).unwrap();
    assert_eq!(s.outbox_head("a").unwrap().unwrap().id, head.id);
    assert_eq!(s.outbox_depth().unwrap(), vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    s.outbox_failed(head.id, "HTTP 400", None).unwrap();
    let next = s.outbox_head("a").unwrap().unwrap();
    assert_eq!(next.event, "resolved");
    s.outbox_sent(next.id).unwrap();
    assert!(s.outbox_head("a").unwrap().is_none());
    let rows = s.outbox_rows("a").unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.event.as_str(), r.state)).collect::<Vec<_>>(),
        [("opened", OutboxState::Dead), ("resolved", OutboxState::Sent)]
    );
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 400"));
    assert_eq!(s.outbox_depth().unwrap(), vec![("b".to_string(), 1)]);
    assert!(s.outbox_head("nobody").unwrap().is_none());
    // Pruning keeps what is pending and what is recent.
    assert_eq!(s.outbox_prune(15.0).unwrap(), 1);
    assert_eq!(s.outbox_rows("a").unwrap().len(), 1);
    assert_eq!(s.outbox_prune(1e12).unwrap(), 1);
    assert_eq!(s.outbox_rows("b").unwrap().len(), 1);
}

#[test]
fn a_failed_transaction_keeps_nothing() {
    let mut s = Store::open_in_memory().unwrap();
    s.conn
        .execute_batch("CREATE TRIGGER no_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .unwrap();
    let inc = incident(1, 10.0, IncidentStatus::Open);
    let note = NewOutbox {
        receiver: "r".into(),
        incident_id: inc.id.clone(),
        event: "opened".into(),
        payload: "{}".into(),
        idempotency_key: "k".into(),
        next_attempt_s: 0.0,
    };
    assert!(s.record(&[IncidentChange::Opened(inc)], &[note], 10.0).is_err());
    assert_eq!(s.counts().unwrap().incidents, 0);
}

#[test]
fn corrupt_rows_are_named_and_skipped_at_load() {
    let mut s = Store::open_in_memory().unwrap();
    s.record(&[IncidentChange::Opened(incident(1, 1.0, IncidentStatus::Open))], &[], 1.0).unwrap();
    s.record(&[IncidentChange::Opened(incident(2, 2.0, IncidentStatus::Open))], &[], 2.0).unwrap();
    s.conn.execute("UPDATE incidents SET json = '{' WHERE id = 'inc-000001'", []).unwrap();
    assert_eq!(s.load_open().unwrap().len(), 1);
    let e = s.get("inc-000001").unwrap_err().to_string();
    assert!(e.contains("inc-000001"), "{e}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    drop(Store::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(c);
    let e = Store::open(&path).unwrap_err().to_string();
    assert!(e.contains("99"), "{e}");
}

#[test]
fn a_reused_id_never_overwrites_a_recorded_incident() {
    let mut s = Store::open_in_memory().unwrap();
    let first = incident(1, 100.0, IncidentStatus::Open);
    s.record(&[IncidentChange::Opened(first.clone())], &[], 100.0).unwrap();
    let mut impostor = incident(1, 900.0, IncidentStatus::Open);
    impostor.summary = "someone else".into();
    s.record(&[IncidentChange::Opened(impostor)], &[], 900.0).unwrap();
    assert_eq!(s.get("inc-000001").unwrap().unwrap(), first);
    // Updates of the same incident (same opening time) go through.
    let mut upd = first.clone();
    upd.updated_s = 150.0;
    s.record(&[IncidentChange::Updated(upd.clone())], &[], 150.0).unwrap();
    assert_eq!(s.get("inc-000001").unwrap().unwrap(), upd);
}

#[test]
fn incident_numbers() {
    assert_eq!(incident_number("inc-000042"), Some(42));
    assert_eq!(incident_number("inc-"), None);
    assert_eq!(incident_number("inc-12a"), None);
    assert_eq!(incident_number("x-1"), None);
}
