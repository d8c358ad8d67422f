//! A real agent pushing to a real analyzer over loopback: reports arrive, an analyzer outage is
//! bridged by the disk spool and replayed in order with no gap in `seq`, SIGTERM sends a last report
//! with `shutdown: true`, `seq` continues across an agent restart, and a report refused for its
//! content (422) is dropped rather than retried forever. Reports travel as deltas against the last
//! acknowledged one; after the outage the agent sends in full first, then deltas again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, free_port, get_json, http, wait_for};

const TOKEN: &str = "push-test-token";

fn start_analyzer_on(port: u16, dir: &Path, token: &str) -> Proc {
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("faultline.db"))
        .arg("--token")
        .arg(token)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd)
}

fn start_agent(node: &str, analyzer_port: u16, spool: &Path, token: &str) -> Proc {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", node, "--interval", "200ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--analyzer")
        .arg(format!("http://127.0.0.1:{analyzer_port}"))
        .arg("--token")
        .arg(token)
        .arg("--spool-dir")
        .arg(spool)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd)
}

/// The analyzer's `GET /api/v1/nodes` row for `node`.
fn node_entry(analyzer: &str, node: &str) -> Option<serde_json::Value> {
    let nodes = get_json(&format!("{analyzer}/api/v1/nodes"), Some(TOKEN))?;
    nodes.as_array()?.iter().find(|n| n["node"] == node).cloned()
}

/// One unlabelled-by-anything-but-Hostname sample from the agent's `/metrics`.
fn agent_metric(agent: &str, name: &str) -> Option<f64> {
    let body = http().get(format!("{agent}/metrics")).send().ok()?.text().ok()?;
    body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn u(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("node entry has no numeric `{field}`: {v}"))
}

#[test]
fn outage_is_replayed_in_order_without_gaps_and_sigterm_sends_a_last_report() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let node = "push-node-1";
    let port = free_port();
    let mut analyzer = start_analyzer_on(port, dir.path(), TOKEN);
    let mut agent = start_agent(node, port, &spool, TOKEN);

    let first = wait_for(Duration::from_secs(60), "three reports at the analyzer", || {
        node_entry(&analyzer.url, node).filter(|e| u(e, "reports") >= 3)
    });
    assert_eq!(u(&first, "gaps"), 0, "{first}");

    // Analyzer away: the agent keeps collecting and spools.
    analyzer.kill9();
    wait_for(Duration::from_secs(60), "reports piling up in the agent's spool", || {
        agent_metric(&agent.url, "faultline_agent_spool_reports").filter(|n| *n >= 5.0)
    });
    let accepted_before = agent_metric(&agent.url, "faultline_agent_pushed_reports_total").unwrap() as u64;
    assert!(accepted_before >= 3);
    let spooled_files = std::fs::read_dir(spool.join("reports")).unwrap().count();
    assert!(spooled_files >= 5, "the spool is files on disk ({spooled_files})");

    // Back on the same port: the spool drains oldest first.
    let analyzer = start_analyzer_on(port, dir.path(), TOKEN);
    wait_for(Duration::from_secs(90), "the spool to drain into the restarted analyzer", || {
        let drained = agent_metric(&agent.url, "faultline_agent_spool_reports")? == 0.0;
        let e = node_entry(&analyzer.url, node)?;
        (drained && u(&e, "last_seq") > accepted_before + 5).then_some(())
    });

    // The restarted analyzer holds no base: after the failed posts the agent sent in full, and
    // deltas follow again.
    wait_for(Duration::from_secs(30), "deltas at the restarted analyzer", || {
        let m = http().get(format!("{}/metrics", analyzer.url)).send().ok()?.text().ok()?;
        let n = |enc: &str| {
            m.lines()
                .find(|l| l.starts_with(&format!("faultline_ingest_encoding_reports_total{{encoding=\"{enc}\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (n("delta") >= 2.0 && n("protobuf") >= 1.0).then_some(())
    });

    // SIGTERM: a last report with shutdown=true, then exit 0.
    let status = agent.terminate(Duration::from_secs(30)).expect("agent exits after SIGTERM");
    assert!(status.success(), "agent exit status {status:?}; stderr:\n{}", agent.stderr());
    let next_seq: u64 = std::fs::read_to_string(spool.join("seq")).unwrap().trim().parse().unwrap();
    let last = next_seq - 1;
    let e = wait_for(Duration::from_secs(10), "the shutdown report", || {
        node_entry(&analyzer.url, node).filter(|e| u(e, "last_seq") == last)
    });
    assert_eq!(e["shutdown"], true, "the last report says shutdown: {e}");
    // In order, no gap, nothing twice: every seq after what the first analyzer took arrived once.
    assert_eq!((u(&e, "gaps"), u(&e, "seqs_missing"), u(&e, "late"), u(&e, "duplicates")), (0, 0, 0, 0), "{e}");
    let reports = u(&e, "reports");
    eprintln!("first analyzer took {accepted_before}; last seq {last}; restarted analyzer: {e}");
    // The restarted analyzer either starts its ledger afresh (it then saw exactly seqs
    // accepted_before+1 ..= last) or restores it from its database (then it saw 1 ..= last).
    assert!(
        reports == last - accepted_before || reports == last,
        "reports {reports}, last seq {last}, first analyzer took {accepted_before}: {e}"
    );

    // seq survives an agent restart: numbering goes on, the analyzer sees no gap.
    let agent = start_agent(node, port, &spool, TOKEN);
    let e = wait_for(Duration::from_secs(60), "reports from the restarted agent", || {
        node_entry(&analyzer.url, node).filter(|e| u(e, "last_seq") >= last + 2)
    });
    assert_eq!(e["shutdown"], false, "{e}");
    assert_eq!((u(&e, "gaps"), u(&e, "duplicates")), (0, 0), "seq continued from {last}: {e}");
    drop(agent);
}

#[test]
fn a_refused_report_is_dropped_not_retried_or_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // A node name the analyzer cannot use (a `job:` prefix): 422, a problem in the report itself.
    // (A wrong token is not: those reports are kept, see hostile_agent.rs.)
    let node = "job:push-node-refused";
    let port = free_port();
    let analyzer = start_analyzer_on(port, dir.path(), TOKEN);
    let agent = start_agent(node, port, &spool, TOKEN);
    wait_for(Duration::from_secs(60), "the agent to see three refusals", || {
        agent_metric(&agent.url, "faultline_agent_refused_reports_total").filter(|n| *n >= 3.0)
    });
    assert_eq!(agent_metric(&agent.url, "faultline_agent_spool_reports"), Some(0.0));
    assert_eq!(std::fs::read_dir(spool.join("reports")).unwrap().count(), 0, "refused reports are not spooled");
    assert!(agent.stderr().contains("refused"), "the refusal is logged: {}", agent.stderr());
    assert!(node_entry(&analyzer.url, node).is_none(), "nothing was accepted");
}
