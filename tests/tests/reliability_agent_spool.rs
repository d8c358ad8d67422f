//! The agent's spool under faults, with real processes.
//!
//! 1. The agent is restarted — once cleanly (SIGTERM), once with `kill -9` — while the analyzer is
//!    down. When the analyzer comes back, everything spooled by all three agent processes is
//!    replayed oldest first: the analyzer sees the seqs in order (no report arrives after a later
//!    one), nothing twice, and no hole except at most one report per `kill -9` (a report whose seq
//!    was taken but that had not reached the disk when the process died; a clean stop loses none).
//! 2. The disk under the spool fills up (a real 64 KiB tmpfs when running as root; otherwise
//!    `--spool-max-bytes` below the data, with a printed note). The agent keeps collecting, drops the
//!    OLDEST spooled reports, counts them in `faultline_agent_dropped_reports_total`, keeps the
//!    newest, and replays what it kept, in order, when the analyzer is back. Lost: exactly the
//!    dropped (oldest) reports, and the agent says how many.

mod reliability_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, free_port, get_json, http, wait_for};

const TOKEN: &str = "spool-fault-token";

fn start_analyzer_on(port: u16, dir: &Path) -> Proc {
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("faultline.db"))
        .args(["--token", TOKEN])
        .env("RUST_LOG", "info");
    Proc::spawn(cmd)
}

fn start_agent(node: &str, port: u16, spool: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", node, "--interval", "200ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--analyzer")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--token", TOKEN])
        .arg("--spool-dir")
        .arg(spool)
        .args(extra)
        .env("RUST_LOG", "info");
    Proc::spawn(cmd)
}

fn agent_metric(agent: &str, name: &str) -> Option<f64> {
    let body = http().get(format!("{agent}/metrics")).send().ok()?.text().ok()?;
    body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn node_entry(analyzer: &str, node: &str) -> Option<serde_json::Value> {
    let nodes = get_json(&format!("{analyzer}/api/v1/nodes"), Some(TOKEN))?;
    nodes.as_array()?.iter().find(|n| n["node"] == node).cloned()
}

/// Seqs of the spooled report files, sorted.
fn spooled(spool: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = std::fs::read_dir(spool.join("reports"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok()).collect())
        .unwrap_or_default();
    seqs.sort_unstable();
    seqs
}

fn u(v: &serde_json::Value, f: &str) -> u64 {
    v[f].as_u64().unwrap_or_else(|| panic!("no numeric {f} in {v}"))
}

#[test]
fn agent_restarted_while_the_analyzer_is_down_replays_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let node = "spool-restart-node";
    let port = free_port();
    let mut analyzer = start_analyzer_on(port, dir.path());
    let mut agent = start_agent(node, port, &spool, &[]);
    wait_for(Duration::from_secs(60), "the agent's first reports", || {
        node_entry(&analyzer.url, node).filter(|n| u(n, "reports") >= 3)
    });

    // Analyzer down; the agent spools.
    analyzer.kill9();
    wait_for(Duration::from_secs(60), "reports piling up in the spool", || (spooled(&spool).len() >= 5).then_some(()));
    // The first agent numbered from 1 and every push before the outage was accepted in order, so
    // the last delivered seq is the number of accepted pushes.
    let last_before_outage = agent_metric(&agent.url, "faultline_agent_pushed_reports_total").unwrap() as u64;

    // A clean restart of the agent while the analyzer is still down.
    let st = agent.terminate(Duration::from_secs(60)).expect("the agent stops on SIGTERM");
    assert!(st.success(), "{st}");
    let after_clean = spooled(&spool);
    assert!(after_clean.len() >= 5, "the spool survived the clean stop: {after_clean:?}");
    agent = start_agent(node, port, &spool, &[]);
    wait_for(Duration::from_secs(60), "the second agent to spool more", || {
        (spooled(&spool).last().copied()? >= after_clean.last().copied()? + 5).then_some(())
    });

    // A crash of the agent, still with the analyzer down.
    agent.kill9();
    let after_crash = spooled(&spool);
    agent = start_agent(node, port, &spool, &[]);
    wait_for(Duration::from_secs(60), "the third agent to spool more", || {
        (spooled(&spool).last().copied()? >= after_crash.last().copied()? + 5).then_some(())
    });
    let spooled_now = spooled(&spool);
    let oldest = spooled_now[0];
    let missing_in_spool: Vec<u64> =
        (oldest..=*spooled_now.last().unwrap()).filter(|s| spooled_now.binary_search(s).is_err()).collect();
    println!(
        "spooled {} reports ({}..={}) across three agent processes; seqs missing from the spool: {missing_in_spool:?}",
        spooled_now.len(),
        oldest,
        spooled_now.last().unwrap()
    );
    // Nothing was lost between the last report the analyzer heard and the spool.
    assert_eq!(oldest, last_before_outage + 1, "the spool starts right after the last delivered report");
    assert!(missing_in_spool.len() <= 1, "more than one report lost to a single kill -9: {missing_in_spool:?}");

    // The analyzer is back (a fresh process on the same port and database): the spool drains.
    let analyzer = start_analyzer_on(port, dir.path());
    let target = *spooled_now.last().unwrap();
    let entry = wait_for(Duration::from_secs(120), "the spool to drain into the analyzer", || {
        let n = node_entry(&analyzer.url, node)?;
        (u(&n, "last_seq") >= target && agent_metric(&agent.url, "faultline_agent_spool_reports")? == 0.0).then_some(n)
    });
    println!("analyzer after the replay: {entry}");
    // Oldest first: the restarted analyzer's first report was the oldest spooled one, and nothing
    // arrived after a later seq, twice, or with a hole beyond what the kill -9 lost.
    assert_eq!(u(&entry, "late"), 0, "a report arrived after a later one: {entry}");
    assert_eq!(u(&entry, "duplicates"), 0, "{entry}");
    assert_eq!(u(&entry, "seqs_missing"), missing_in_spool.len() as u64, "{entry}");
    let span = u(&entry, "last_seq") - oldest + 1;
    assert_eq!(u(&entry, "reports"), span - missing_in_spool.len() as u64, "{entry}");
}

/// A tiny tmpfs mounted for the test, unmounted on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(at: &Path) -> Option<TinyFs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "faultline-test-spool"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| TinyFs(at.to_path_buf()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_spool_disk_drops_the_oldest_counts_them_and_keeps_collecting() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let node = "spool-full-node";
    let port = free_port();
    let fs = TinyFs::mount(&spool);
    let extra: Vec<String> = match &fs {
        Some(_) => {
            println!("spool on a real 64 KiB tmpfs: the disk fills up");
            Vec::new()
        }
        None => {
            println!(
                "NOTE: cannot mount a tmpfs here (not root?); falling back to --spool-max-bytes 16384, \
                 which tests the byte cap, not a full disk"
            );
            vec!["--spool-max-bytes".into(), "16384".into()]
        }
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let agent = start_agent(node, port, &spool, &extra);

    // The analyzer is not there: the spool fills the disk, then the oldest go.
    wait_for(Duration::from_secs(120), "reports dropped for lack of space", || {
        agent_metric(&agent.url, "faultline_agent_dropped_reports_total").filter(|n| *n >= 10.0)
    });
    let first_view = spooled(&spool);
    // Still collecting and still spooling the newest.
    let newer = wait_for(Duration::from_secs(60), "newer reports spooled on the full disk", || {
        let now = spooled(&spool);
        (now.first()? > first_view.first()? && now.last()? > first_view.last()?).then_some(now)
    });
    assert!(newer.windows(2).all(|w| w[1] == w[0] + 1), "what is kept is the newest, contiguous: {newer:?}");
    let health = http().get(format!("{}/healthz", agent.url)).send().unwrap().text().unwrap();
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let dropped = agent_metric(&agent.url, "faultline_agent_dropped_reports_total").unwrap();
    println!("kept {} reports ({:?}..), dropped {dropped} so far", newer.len(), newer.first());

    // The analyzer comes: what was kept is replayed oldest first, and the rest flows live.
    let analyzer = start_analyzer_on(port, dir.path());
    let live = wait_for(Duration::from_secs(120), "the kept reports and live ones to arrive", || {
        let n = node_entry(&analyzer.url, node)?;
        (u(&n, "last_seq") > *newer.last().unwrap() + 5).then_some(n)
    });
    println!("analyzer after the replay: {live}");
    assert_eq!(u(&live, "late"), 0, "{live}");
    assert_eq!(u(&live, "duplicates"), 0, "{live}");
    // Everything from the oldest kept report on arrived (the dropped ones were older than it).
    assert_eq!(u(&live, "seqs_missing"), 0, "{live}");
    drop(agent);
    drop(fs);
}
