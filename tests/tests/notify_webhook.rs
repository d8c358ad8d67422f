//! Signed webhooks from a real analyzer process to a receiver run by the test: every request's
//! `X-Faultline-Signature` checks out against the raw body; a receiver that is down while an
//! incident opens and resolves gets every event afterwards, in order, each exactly once after
//! deduplication by `Idempotency-Key`; an analyzer killed (`kill -9`) while a delivery is in flight
//! delivers it after a restart on the same database; a receiver answering 4xx is not retried.

mod notify_support;

use std::collections::BTreeSet;
use std::time::Duration;

use faultline_tests::{free_port, start_analyzer, wait_for};
use hmac::{Hmac, Mac};
use notify_support::{EVENT_HOLD_MS, Mode, Receiver, Request, incidents, metric, push, report, xid};
use serde_json::Value;
use sha2::Sha256;

const TOKEN: &str = "webhook-e2e-token";
const SECRET: &str = "whsec-3f9a0c1e-test";
const NODE: &str = "node-0021";
const JOB: &str = "llm-hook";

/// What a receiver would do: HMAC-SHA256 the raw body with the shared secret, compare to the header.
fn signature_ok(r: &Request) -> bool {
    let Some(sig) = r.header("x-faultline-signature").and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&sig).is_ok()
}

/// Requests about `incident`, deduplicated by idempotency key (first arrival kept), in order.
fn events_for(reqs: &[Request], incident: &str) -> Vec<(String, Value)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in reqs {
        let v = r.json();
        if v["incident"]["id"] != incident {
            continue;
        }
        let key = r.header("idempotency-key").expect("Idempotency-Key header").to_string();
        if seen.insert(key.clone()) {
            out.push((key, v));
        }
    }
    out
}

fn write_config(dir: &std::path::Path, port: u16) -> String {
    let secret_file = dir.join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let path = dir.join("analyzer.toml");
    std::fs::write(
        &path,
        format!(
            "resolve_after_s = 2.0\n\
             [notify]\npublic_url = \"https://faultline.example.org\"\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\ntimeout = \"30s\"\n\
             [[notify.webhook]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{port}/hooks/faultline\"\nsecret_file = \"{}\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_receiver_down_then_up_gets_everything_in_order_and_a_kill9_mid_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--config", &config]);
    let url = analyzer.url.clone();

    // The receiver is down. GPU 3 falls off the bus, then comes back and the incident resolves.
    let mut seq = 0;
    for _ in 0..3 {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[], vec![]));
    }
    seq += 1;
    let age = EVENT_HOLD_MS - 15_000;
    push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[3], vec![xid(3, 79, "GPU has fallen off the bus.", age)]));
    let root = format!("{NODE}/gpu3");
    let first = wait_for(Duration::from_secs(60), "an incident for the lost GPU", || {
        incidents(&url, TOKEN, "all").into_iter().find(|i| i["root"] == root.as_str())
    });
    let first_id = first["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(120), "the incident to resolve", || {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 4, seq, &[], vec![]));
        std::thread::sleep(Duration::from_millis(400));
        incidents(&url, TOKEN, "resolved").into_iter().find(|i| i["id"] == first_id.as_str())
    });
    // Retried while down (connection refused), nothing delivered.
    wait_for(Duration::from_secs(60), "retries against the dead receiver", || {
        (metric(&url, r#"faultline_notifications_total{receiver="oncall",result="retry"}"#)? >= 3.0).then_some(())
    });
    assert_eq!(metric(&url, r#"faultline_notifications_total{receiver="oncall",result="delivered"}"#), Some(0.0));
    assert!(metric(&url, r#"faultline_outbox_depth{receiver="oncall"}"#).unwrap() >= 2.0);

    // The receiver comes up: everything arrives, in order, signed, each event once.
    let hook = Receiver::start(port, Mode::Ok);
    let events = wait_for(Duration::from_secs(60), "the backlog, ending with the resolve", || {
        let ev = events_for(&hook.requests(), &first_id);
        (ev.last().is_some_and(|(_, v)| v["event"] == "resolved")).then_some(ev)
    });
    let names: Vec<&str> = events.iter().map(|(_, v)| v["event"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"opened"), "{names:?}");
    assert!(names[1..names.len() - 1].iter().all(|e| *e == "updated"), "{names:?}");
    let revisions: Vec<f64> = events.iter().map(|(_, v)| v["incident"]["updated_s"].as_f64().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "events out of order: {revisions:?}");
    for (key, v) in &events {
        assert!(key.starts_with(&format!("oncall/{first_id}/{}/", v["event"].as_str().unwrap())), "{key}");
        assert_eq!(v["link"], format!("https://faultline.example.org/api/v1/incidents/{first_id}"));
        assert!(v["sent_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{v}");
    }
    let reqs = hook.requests();
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/faultline");
        assert!(signature_ok(r), "bad signature on {:?}", r.header("idempotency-key"));
        assert_eq!(r.header("x-faultline-event"), r.json()["event"].as_str());
    }
    // No crash happened, so not even a duplicate delivery.
    let keys: BTreeSet<&str> = reqs.iter().filter_map(|r| r.header("idempotency-key")).collect();
    assert_eq!(keys.len(), reqs.len(), "a notification was delivered twice without a crash");
    let resolved = &events.last().unwrap().1;
    assert_eq!(resolved["incident"]["status"], "resolved");
    wait_for(Duration::from_secs(30), "an empty outbox", || {
        (metric(&url, r#"faultline_outbox_depth{receiver="oncall"}"#)? == 0.0).then_some(())
    });

    // kill -9 while a delivery is in flight: the receiver reads the request and never answers.
    hook.set_mode(Mode::Hang);
    let before = hook.requests().len();
    seq += 1;
    push(
        &url,
        TOKEN,
        &report(
            NODE,
            JOB,
            4,
            seq,
            &[],
            vec![xid(1, 48, "An uncorrectable double bit error (DBE) has been detected.", 0)],
        ),
    );
    let second = wait_for(Duration::from_secs(60), "an incident for the DBE", || {
        incidents(&url, TOKEN, "open").into_iter().find(|i| i["root"] == format!("{NODE}/gpu1"))
    });
    let second_id = second["id"].as_str().unwrap().to_string();
    let in_flight = wait_for(Duration::from_secs(60), "the DBE notification to reach the receiver", || {
        hook.requests()[before..].iter().find(|r| r.json()["incident"]["id"] == second_id.as_str()).cloned()
    });
    let in_flight_key = in_flight.header("idempotency-key").unwrap().to_string();
    analyzer.kill9();

    hook.set_mode(Mode::Ok);
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--config", &config]);
    let url = analyzer.url.clone();
    let again = wait_for(Duration::from_secs(60), "the in-flight notification again after the restart", || {
        let reqs = hook.requests();
        let n = reqs.iter().filter(|r| r.header("idempotency-key") == Some(in_flight_key.as_str())).count();
        (n >= 2).then_some(reqs)
    });
    assert!(again.iter().all(signature_ok));
    let second_events = events_for(&again, &second_id);
    assert_eq!(second_events[0].0, in_flight_key);
    assert_eq!(second_events[0].1["event"], "opened");
    assert_eq!(second_events.iter().filter(|(_, v)| v["event"] == "opened").count(), 1);
    wait_for(Duration::from_secs(30), "the restarted analyzer to count it delivered", || {
        (metric(&url, r#"faultline_notifications_total{receiver="oncall",result="delivered"}"#)? >= 1.0).then_some(())
    });
    // The first incident's events were not sent again: they were marked sent before the crash.
    let first_again = again.iter().filter(|r| r.json()["incident"]["id"] == first_id.as_str()).count();
    assert_eq!(first_again, events.len(), "delivered notifications were sent again after the restart");
}

#[test]
fn a_receiver_refusing_with_4xx_is_not_retried_and_later_events_still_go() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(0, Mode::Status(422));
    let config = write_config(dir.path(), hook.port());
    let analyzer = start_analyzer(dir.path(), Some(TOKEN), &["--config", &config]);
    let url = analyzer.url.clone();
    let mut seq = 0;
    for _ in 0..2 {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 2, seq, &[], vec![]));
    }
    seq += 1;
    let age = EVENT_HOLD_MS - 15_000;
    push(&url, TOKEN, &report(NODE, JOB, 2, seq, &[0], vec![xid(0, 79, "GPU has fallen off the bus.", age)]));
    let id = wait_for(Duration::from_secs(60), "the refusal to be counted", || {
        let failed = metric(&url, r#"faultline_notifications_total{receiver="oncall",result="failed"}"#)?;
        (failed >= 1.0).then_some(())?;
        incidents(&url, TOKEN, "all").into_iter().next()?["id"].as_str().map(str::to_string)
    });
    // From now on the receiver accepts: the resolve is delivered, the refused one never comes again.
    hook.set_mode(Mode::Ok);
    wait_for(Duration::from_secs(120), "the resolve to be delivered", || {
        seq += 1;
        push(&url, TOKEN, &report(NODE, JOB, 2, seq, &[], vec![]));
        std::thread::sleep(Duration::from_millis(400));
        hook.requests()
            .iter()
            .any(|r| r.json()["incident"]["id"] == id.as_str() && r.json()["event"] == "resolved")
            .then_some(())
    });
    let reqs = hook.requests();
    let opened: Vec<&Request> = reqs.iter().filter(|r| r.json()["event"] == "opened").collect();
    assert_eq!(opened.len(), 1, "the refused notification was retried");
    assert_eq!(metric(&url, r#"faultline_notifications_total{receiver="oncall",result="retry"}"#), Some(0.0));
}
