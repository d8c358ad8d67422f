//! The progress API's datagram path over a real UDP socket on 127.0.0.1:0: a valid datagram lands in
//! the store, bad ones (malformed, unknown field, out of range, oversized) change nothing and are
//! counted, and `report-progress` sends datagrams by default.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Parser;
use faultline_agent::progress::{self, MAX_BODY_BYTES, ProgressStore, ReportProgressArgs};

/// Generous: datagrams are read by another thread, and the machine may be busy building.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ReportProgressArgs,
}

fn cli(args: &[&str]) -> ReportProgressArgs {
    let mut v = vec!["report-progress"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap().args
}

fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sender(to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s
}

#[test]
fn a_valid_datagram_lands_in_the_store_and_bad_ones_change_nothing_and_are_counted() {
    let store = ProgressStore::new();
    let addr = progress::serve_udp(store.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let s = sender(addr);

    // Python's json.dumps writes NaN bare; it is accepted like over HTTP.
    s.send(br#"{"job":"dg","rank":3,"step":10,"step_time_ms":250.0,"compute_ms":200,"loss":NaN}"#).unwrap();
    wait_until("the first datagram", || store.get("dg", 3, progress::now_ms()).is_some());
    let p = store.get("dg", 3, progress::now_ms()).unwrap();
    assert_eq!((p.step, p.step_time_ms, p.compute_ms, p.nonfinite_loss), (10, Some(250.0), Some(200.0), true));
    assert_eq!((store.accepted(), store.rejected()), (1, 0));

    let oversized = format!(r#"{{"job":"dg","rank":3,"step":99,"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let bad: [&[u8]; 5] = [
        b"{not json",
        br#"{"job":"dg","rank":3,"step":11,"stepp":1}"#,
        br#"{"job":"dg","rank":3,"step":-1}"#,
        br#"{"job":"dg","rank":3,"step":12,"status":"exited"}"#,
        oversized.as_bytes(),
    ];
    for b in bad {
        s.send(b).unwrap();
    }
    wait_until("the bad datagrams to be counted", || store.rejected() == bad.len() as u64);
    let after = store.get("dg", 3, progress::now_ms()).unwrap();
    assert_eq!(after, p, "refused datagrams change nothing");
    assert_eq!(store.len(), 1);
    assert_eq!(store.accepted(), 1);

    // The reader is still there after the refusals.
    s.send(br#"{"job":"dg","rank":3,"step":13}"#).unwrap();
    wait_until("a good datagram after bad ones", || {
        store.get("dg", 3, progress::now_ms()).is_some_and(|p| p.step == 13)
    });
    assert_eq!(store.dropped(), 0);
}

#[test]
fn many_datagrams_from_many_ranks_all_land() {
    let store = ProgressStore::new();
    let addr = progress::serve_udp(store.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let ranks = 200u32;
    let socks: Vec<UdpSocket> = (0..ranks).map(|_| sender(addr)).collect();
    for step in 0..5u32 {
        for (r, s) in socks.iter().enumerate() {
            s.send(format!(r#"{{"job":"many","rank":{r},"step":{step}}}"#).as_bytes()).unwrap();
        }
        // Paced like ranks posting at a few hundred steps per second, well within the buffer.
        std::thread::sleep(Duration::from_millis(20));
    }
    let want = u64::from(ranks) * 5;
    wait_until("every datagram", || store.accepted() + store.dropped() == want);
    assert_eq!(store.dropped(), 0, "a 4 MiB (or rmem_max) buffer holds 1,000 small datagrams");
    assert!((0..ranks).all(|r| store.get("many", r, progress::now_ms()).is_some_and(|p| p.step == 4)));
}

#[test]
fn report_progress_sends_a_datagram_by_default_and_says_when_nobody_listens() {
    let store = ProgressStore::new();
    let addr = progress::serve_udp(store.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let a = addr.to_string();
    progress::report_progress(cli(&["--job", "cli", "--rank", "1", "--step", "5", "--loss", "inf", "--udp", &a]))
        .unwrap();
    wait_until("the command's datagram", || store.get("cli", 1, progress::now_ms()).is_some());
    let p = store.get("cli", 1, progress::now_ms()).unwrap();
    assert_eq!((p.step, p.nonfinite_loss), (5, true));

    // Bad command lines fail before anything is sent.
    let err = progress::report_progress(cli(&["--job", "cli", "--rank", "1", "--step", "6", "--status", "exited"]))
        .unwrap_err();
    assert!(format!("{err:#}").contains("exit_code"), "{err:#}");

    // Nobody on the port: loopback answers "port unreachable", which the command reports.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let err = progress::report_progress(cli(&["--job", "cli", "--rank", "1", "--step", "7", "--udp", &dead_addr]))
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot reach the agent"), "{err:#}");
    assert_eq!(store.get("cli", 1, progress::now_ms()).unwrap().step, 5);

    // --url and --udp together are a usage error.
    let both =
        Cli::try_parse_from(["report-progress", "--step", "1", "--udp", &a, "--url", "http://127.0.0.1:1/progress"]);
    assert!(both.is_err());
}
