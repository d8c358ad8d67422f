//! The kernel-log watcher on a file in `/dev/kmsg` record format (a ring-buffer dump from a node whose
//! GPU fell off the bus before the agent started): records are read from the start, each event
//! carries its record's own time (boot + usec), and a watcher restarted with the same state directory
//! in the same boot sends nothing twice, only what was logged since.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::collect::kmsg::{KmsgOptions, spawn_watcher_with};
use faultline_agent::collect::kmsg_record::boot_wall_ms;
use faultline_agent::events::EventQueue;
use faultline_proto::{Event, EventClass};

const DUMP: &str = include_str!("fixtures/kmsg-records.txt");

/// Events until one whose message contains `sentinel` arrived (absence is checked by a later sentinel).
fn until(q: &EventQueue, sentinel: &str) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        got.extend(q.drain());
        if got.iter().any(|e| e.message.contains(sentinel)) {
            return got;
        }
        assert!(Instant::now() < deadline, "{sentinel:?} never arrived; got {got:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(f, "{line}").unwrap();
}

#[test]
fn an_xid_logged_before_the_agent_started_is_sent_once_with_its_own_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kmsg.dump");
    std::fs::write(&log, DUMP).unwrap();
    let boot_id = dir.path().join("boot_id");
    std::fs::write(&boot_id, "6a3c1f7e-0d2b-4c8a-9e11-5b7d2f0c4e99\n").unwrap();
    let opts =
        KmsgOptions { state_dir: Some(dir.path().join("state")), boot_id_file: boot_id.clone(), ..Default::default() };
    std::fs::create_dir_all(dir.path().join("state")).unwrap();

    let q = Arc::new(EventQueue::new(100));
    spawn_watcher_with(&log, q.clone(), Arc::default(), opts.clone()).unwrap();
    let got = until(&q, "fallen off the bus");
    let xid = got.iter().find(|e| e.xid == Some(79)).unwrap_or_else(|| panic!("XID 79 replayed: {got:#?}"));
    let boot = boot_wall_ms();
    // 17712094 µs after boot; the boot time is computed again here, so allow for a little drift.
    let expect = boot + 17_712;
    assert!((xid.ts_ms - expect).abs() < 2_000, "XID at boot+17.7 s: {} vs {expect}", xid.ts_ms);
    assert!(got.iter().all(|e| e.class != EventClass::Xid || e.xid == Some(79)));
    // The cursor is kept once the watcher caught up.
    let cursor = dir.path().join("state/kmsg-seq");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&cursor).map(|s| !s.ends_with(" 1842\n")).unwrap_or(true) {
        assert!(Instant::now() < deadline, "cursor never written");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A restarted agent (a second watcher, same state, same boot) sends only what is new. The first
    // watcher is still running and takes the new line too: give the second its own queue.
    let q2 = Arc::new(EventQueue::new(100));
    spawn_watcher_with(&log, q2.clone(), Arc::default(), opts.clone()).unwrap();
    append(&log, "4,1843,18000000,-;NVRM: Xid (PCI:0000:2a:00): 48, pid=1923, name=python, DBE (0x1)");
    let got2 = until(&q2, "DBE");
    assert!(got2.iter().all(|e| e.xid != Some(79) && e.class != EventClass::GpuFallenOffBus), "replayed: {got2:#?}");

    // After a reboot (another boot id) the dump's records are new again.
    std::fs::write(&boot_id, "1f0c2e7d-aaaa-4bbb-8ccc-0d9e8f7a6b5c\n").unwrap();
    let q3 = Arc::new(EventQueue::new(100));
    spawn_watcher_with(&log, q3.clone(), Arc::default(), opts).unwrap();
    let got3 = until(&q3, "DBE");
    assert!(got3.iter().any(|e| e.xid == Some(79)), "{got3:#?}");
}
