//! Tests of the progress API: parsing, the store, the servers and the client.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use faultline_proto::ProgressStatus;

use super::client::split_http_url;
use super::*;
use crate::events::EventQueue;

fn post(body: &str) -> Result<ProgressPost, PostError> {
    ProgressPost::from_json(body.as_bytes())
}

fn err(body: &str) -> String {
    match post(body) {
        Err(e) => e.to_string(),
        Ok(p) => panic!("expected refusal of {body}, got {p:?}"),
    }
}

#[test]
fn minimal_post_defaults_to_running() {
    let p = post(r#"{"job":"4242","rank":3,"step":10}"#).unwrap();
    assert_eq!((p.job.as_str(), p.rank, p.step, p.status), ("4242", 3, 10, ProgressStatus::Running));
    assert_eq!(p.loss, None);
}

#[test]
fn numeric_job_id_is_taken_as_its_text() {
    assert_eq!(post(r#"{"job":4242,"rank":0,"step":1}"#).unwrap().job, "4242");
}

#[test]
fn field_parsing_reads_escaped_keys_keeps_the_last_repeat_and_names_unknown_keys_in_order() {
    let p = post(r#"{"j\u006fb":"j","rank":0,"step":1,"step":5}"#).unwrap();
    assert_eq!((p.job.as_str(), p.step), ("j", 5));
    assert!(err(r#"{"zz":1,"job":"j","rank":0,"step":1,"aa":2}"#).contains("unknown field `aa`"));
    assert!(err(r#"{"zz":1,"job":"j","rank":0,"step":1,"aa":}"#).contains("malformed JSON"));
    assert!(err("  7").contains("JSON object"));
    assert!(err("").contains("malformed JSON"));
}

#[test]
fn bad_posts_name_the_field() {
    assert!(err("{").contains("malformed JSON"));
    assert!(err("[1]").contains("JSON object"));
    assert!(err(r#"{"rank":0,"step":1}"#).contains("`job`"));
    assert!(err(r#"{"job":"j","step":1}"#).contains("`rank`"));
    assert!(err(r#"{"job":"j","rank":0}"#).contains("`step`"));
    assert!(err(r#"{"job":"j","rank":0,"step":-1}"#).contains("`step` must be a non-negative"));
    assert!(err(r#"{"job":"j","rank":-2,"step":1}"#).contains("`rank`"));
    assert!(err(r#"{"job":"j","rank":0,"step":1.5}"#).contains("integer"));
    assert!(err(r#"{"job":"j","rank":0,"step":"7"}"#).contains("integer"));
    assert!(err(r#"{"job":"a/b","rank":0,"step":1}"#).contains("not a valid id"));
    assert!(err(r#"{"job":"","rank":0,"step":1}"#).contains("not a valid id"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"status":"paused"}"#).contains("unknown `status`"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"stpe":2}"#).contains("unknown field `stpe`"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"step_time_ms":-5}"#).contains("step_time_ms"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"compute_ms":"fast"}"#).contains("compute_ms"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"loss":"low"}"#).contains("`loss`"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"status":"exited"}"#).contains("exit_code"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"exit_code":1}"#).contains("only allowed"));
    assert!(err(r#"{"job":"j","rank":0,"step":1,"loss":1.0,"loss_nonfinite":true}"#).contains("finite number"));
    let big = format!(r#"{{"job":"{}","rank":0,"step":1}}"#, "x".repeat(MAX_BODY_BYTES));
    assert!(matches!(post(&big), Err(PostError::TooLarge(_))));
}

#[test]
fn nonfinite_loss_forms_are_all_accepted() {
    for body in [
        r#"{"job":"j","rank":0,"step":1,"loss":"nan"}"#,
        r#"{"job":"j","rank":0,"step":1,"loss":"-Inf"}"#,
        r#"{"job":"j","rank":0,"step":1,"loss":null,"loss_nonfinite":true}"#,
        r#"{"job":"j","rank":0,"step":1,"loss":NaN}"#,
        r#"{"job":"j","rank":0,"step":1,"loss":-Infinity}"#,
    ] {
        assert_eq!(post(body).unwrap().loss, Some(Metric::NonFinite), "{body}");
    }
    // A string that merely contains the token stays a string.
    assert_eq!(post(r#"{"job":"NaN-run","rank":0,"step":1}"#).unwrap().job, "NaN-run");
    assert_eq!(post(r#"{"job":"a\"NaN","rank":0,"step":1}"#).unwrap().job, "a\"NaN");
}

fn apply(s: &ProgressStore, body: &str, now: i64) {
    s.apply(post(body).unwrap(), now).unwrap();
}

#[test]
fn store_tracks_steps_ewma_and_derived_step_time() {
    let s = ProgressStore::new();
    apply(&s, r#"{"job":"j","rank":0,"step":1,"step_time_ms":100,"compute_ms":60,"loss":2.5}"#, 1_000);
    apply(&s, r#"{"job":"j","rank":0,"step":2,"step_time_ms":200}"#, 1_200);
    let p = s.get("j", 0, 1_200).unwrap();
    assert_eq!(p.step, 2);
    assert_eq!(p.last_progress_ms, 1_200);
    assert_eq!(p.step_time_ms, Some(200.0));
    assert!((p.step_time_avg_ms.unwrap() - (100.0 + STEP_TIME_EWMA_ALPHA * 100.0)).abs() < 1e-9);
    assert_eq!(p.compute_ms, Some(60.0), "compute_ms keeps the last value given");
    assert_eq!(p.loss, Some(2.5));
    // No step_time_ms: derived from the spacing of posts, per step.
    apply(&s, r#"{"job":"j","rank":0,"step":4}"#, 1_800);
    assert_eq!(s.get("j", 0, 1_800).unwrap().step_time_ms, Some(300.0));
    // Same step again: not progress.
    apply(&s, r#"{"job":"j","rank":0,"step":4,"status":"checkpointing"}"#, 5_000);
    let p = s.get("j", 0, 5_000).unwrap();
    assert_eq!((p.last_progress_ms, p.status), (1_800, ProgressStatus::Checkpointing));
}

#[test]
fn step_going_back_is_a_restart_from_checkpoint() {
    let s = ProgressStore::new();
    apply(&s, r#"{"job":"j","rank":0,"step":1000,"step_time_ms":100}"#, 1_000);
    apply(&s, r#"{"job":"j","rank":0,"step":900,"step_time_ms":300}"#, 2_000);
    let p = s.get("j", 0, 2_000).unwrap();
    assert_eq!((p.step, p.last_progress_ms, p.step_time_avg_ms), (900, 2_000, Some(300.0)));
}

#[test]
fn nonfinite_flag_latches_then_clears() {
    let s = ProgressStore::new();
    apply(&s, r#"{"job":"j","rank":0,"step":1,"loss":1.5}"#, 1_000);
    apply(&s, r#"{"job":"j","rank":0,"step":2,"loss":"nan"}"#, 2_000);
    apply(&s, r#"{"job":"j","rank":0,"step":3,"loss":1.4}"#, 3_000);
    let p = s.get("j", 0, 3_000).unwrap();
    assert!(p.nonfinite_loss);
    assert_eq!(p.loss, Some(1.4), "last finite loss kept");
    assert!(!s.get("j", 0, 2_000 + NONFINITE_HOLD_MS + 1).unwrap().nonfinite_loss);
}

#[test]
fn exited_then_running_again() {
    let s = ProgressStore::new();
    apply(&s, r#"{"job":"j","rank":1,"step":5,"status":"exited","exit_code":-9}"#, 1_000);
    let p = s.get("j", 1, 1_000).unwrap();
    assert_eq!((p.status, p.exit_code), (ProgressStatus::Exited, Some(-9)));
    apply(&s, r#"{"job":"j","rank":1,"step":6}"#, 2_000);
    let p = s.get("j", 1, 2_000).unwrap();
    assert_eq!((p.status, p.exit_code), (ProgressStatus::Running, None));
}

#[test]
fn full_store_refuses_new_keys_and_keeps_old_ones() {
    let s = ProgressStore::with_capacity(2);
    apply(&s, r#"{"job":"j","rank":0,"step":1}"#, 1_000);
    apply(&s, r#"{"job":"j","rank":1,"step":1}"#, 1_000);
    let e = s.apply(post(r#"{"job":"j","rank":2,"step":1}"#).unwrap(), 1_000).unwrap_err();
    assert_eq!(http_status(&e), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.dropped(), 1);
    apply(&s, r#"{"job":"j","rank":1,"step":2}"#, 1_001);
    // Once the old ones are stale, a new key gets in.
    apply(&s, r#"{"job":"j","rank":2,"step":1}"#, 1_000 + STALE_AFTER_MS + 10);
    assert_eq!(s.len(), 1);
}

#[test]
fn touched_entries_do_not_expire_exited_ones_do() {
    let s = ProgressStore::new();
    apply(&s, r#"{"job":"j","rank":0,"step":1}"#, 0);
    apply(&s, r#"{"job":"j","rank":1,"step":1,"status":"exited","exit_code":0}"#, 0);
    s.touch([("j", 0)], STALE_AFTER_MS);
    assert_eq!(s.expire(STALE_AFTER_MS + 1), 1);
    assert!(s.get("j", 0, 0).is_some());
    assert!(s.get("j", 1, 0).is_none());
}

#[test]
fn refused_post_changes_nothing() {
    let s = ProgressStore::new();
    s.post_json(br#"{"job":"j","rank":0,"step":7,"loss":1.0}"#).unwrap();
    let before = s.snapshot(0);
    assert!(s.post_json(br#"{"job":"j","rank":0,"step":8,"loss":"x"}"#).is_err());
    assert_eq!(s.snapshot(0), before);
    assert_eq!(s.rejected(), 1);
}

#[test]
fn first_nonfinite_and_bad_exit_are_urgent_events() {
    let q = Arc::new(EventQueue::new(64));
    let s = ProgressStore::new().with_events(q.clone());
    apply(&s, r#"{"job":"j","rank":3,"step":1,"loss":1.5}"#, 0);
    assert!(q.drain().is_empty(), "a finite loss is no news");
    apply(&s, r#"{"job":"j","rank":3,"step":2,"loss":"nan"}"#, 1_000);
    apply(&s, r#"{"job":"j","rank":3,"step":3,"loss":"nan"}"#, 2_000);
    let evs = q.drain();
    assert_eq!(evs.len(), 1, "only the first non-finite loss of a latch is news: {evs:#?}");
    assert_eq!(evs[0].class, faultline_proto::EventClass::NonfiniteLoss);
    assert_eq!(evs[0].ts_ms, 1_000);
    assert!(evs[0].message.contains("rank 3 of job j"), "{}", evs[0].message);
    // After the latch ran out, a new non-finite value is news again.
    apply(&s, r#"{"job":"j","rank":3,"step":4,"grad_norm":"inf"}"#, 2_000 + NONFINITE_HOLD_MS);
    assert_eq!(q.drain().len(), 1);

    apply(&s, r#"{"job":"j","rank":0,"step":9,"status":"exited","exit_code":0}"#, 3_000);
    assert!(q.drain().is_empty(), "a clean exit is no news");
    apply(&s, r#"{"job":"j","rank":1,"step":9,"status":"exited","exit_code":-9}"#, 3_000);
    apply(&s, r#"{"job":"j","rank":1,"step":9,"status":"exited","exit_code":-9}"#, 4_000);
    let evs = q.drain();
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].class, faultline_proto::EventClass::RankExit);
    assert!(evs[0].message.contains("killed by signal 9"), "{}", evs[0].message);

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let woke = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), q.urgent()).await.is_ok() });
    assert!(woke, "the news must wake the pusher");
}

#[test]
fn urls_split_into_authority_and_path() {
    assert_eq!(
        split_http_url("http://127.0.0.1:9431/progress").unwrap(),
        ("127.0.0.1:9431".into(), "/progress".into())
    );
    assert_eq!(split_http_url("http://localhost").unwrap(), ("localhost:80".into(), "/progress".into()));
    assert!(split_http_url("https://x/progress").is_err());
}

#[test]
fn progress_md_lists_exactly_the_fields_of_the_schema() {
    let md = include_str!("../../PROGRESS.md");
    let table = md.split("| field | required | meaning |").nth(1).expect("PROGRESS.md has the field table");
    let mut listed = std::collections::BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let first = row.split('|').nth(1).unwrap_or("");
        listed.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    let known: std::collections::BTreeSet<String> = FIELD_NAMES.iter().map(|f| f.to_string()).collect();
    assert_eq!(listed, known, "agent/PROGRESS.md and faultline_proto::progress disagree");
}
