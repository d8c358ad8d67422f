//! The kernel-log watcher on the real `/dev/kmsg`: it reads the ring buffer from its start (a record
//! logged before it started arrives, with the record's own time), a watcher restarted with the same
//! state directory sends nothing it sent before, and a record written afterwards arrives as an event.
//! Writing to `/dev/kmsg` needs root; without it the test says NOT RUN, and under CI it fails. The
//! written records are info-level link-up lines for NIC names no machine has (`eth99<pid>`), so anything
//! else reading the kernel log sees nothing alarming.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::collect::kmsg::{KmsgOptions, spawn_watcher_with};
use faultline_agent::events::EventQueue;
use faultline_proto::Event;

fn write_kmsg(line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).open("/dev/kmsg").and_then(|mut f| f.write_all(line.as_bytes()))
}

fn until(q: &EventQueue, marker: &str) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        got.extend(q.drain());
        if got.iter().any(|e| e.message.contains(marker)) {
            return got;
        }
        assert!(Instant::now() < deadline, "the record {marker:?} never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Skipping is only for a developer's machine: under CI (`CI=true`) a test that cannot run fails,
/// so a runner without root does not turn this test into a silent pass.
fn not_run(why: &str) {
    assert!(!faultline_tests::in_ci(), "{why}: this test must run under CI (root, /dev/kmsg)");
    eprintln!("NOT RUN: {why}");
}

#[test]
fn dev_kmsg_is_read_from_the_start_and_once() {
    let kmsg = Path::new("/dev/kmsg");
    if let Err(e) = std::fs::File::open(kmsg) {
        not_run(&format!("/dev/kmsg cannot be read here ({e})"));
        return;
    }
    // A NIC name of its own per run, so earlier runs' records (still in the ring buffer) are another
    // component and are not coalesced with this one.
    let nic = format!("eth99{}", std::process::id());
    let before = format!("faultline-selftest-before-{}", std::process::id());
    if let Err(e) = write_kmsg(&format!("<6>{before}: {nic}: Link is Up\n")) {
        not_run(&format!("cannot write to /dev/kmsg ({e})"));
        return;
    }
    let written_at = faultline_agent::collect::now_ms();
    let state = tempfile::tempdir().unwrap();
    let opts = KmsgOptions { state_dir: Some(state.path().to_path_buf()), ..Default::default() };

    // Started after the record was logged: it still arrives, with the record's time.
    let q = Arc::new(EventQueue::new(10_000));
    spawn_watcher_with(kmsg, q.clone(), Arc::default(), opts.clone()).expect("/dev/kmsg opens");
    let got = until(&q, &before);
    let e = got.iter().find(|e| e.message.contains(&before)).unwrap();
    assert_eq!(e.class, faultline_proto::EventClass::NicLinkUp);
    assert_eq!(e.component.as_deref(), Some(format!("nic:{nic}").as_str()));
    assert!((e.ts_ms - written_at).abs() < 5_000, "record time {} vs written at {written_at}", e.ts_ms);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.path().join("kmsg-seq").exists() {
        assert!(Instant::now() < deadline, "the watcher never kept its place");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A restarted watcher with the same state: the old record does not come again, a new one does.
    let q2 = Arc::new(EventQueue::new(10_000));
    spawn_watcher_with(kmsg, q2.clone(), Arc::default(), opts).expect("/dev/kmsg opens");
    let after = format!("faultline-selftest-after-{}", std::process::id());
    write_kmsg(&format!("<6>{after}: {nic}: Link is Up\n")).unwrap();
    // The watcher reads records in order: `before` would have come again ahead of `after`.
    let got2 = until(&q2, &after);
    assert!(got2.iter().all(|e| !e.message.contains(&before)), "sent twice: {got2:#?}");
}
