//! Active fabric probes for real: six nodes, each a network namespace running a real
//! `faultline-agent` with `[probe] enabled = true`, cabled to two Linux bridges acting as leaf
//! switches (three nodes each) inside a fabric namespace that routes between them (the spine). A
//! real `faultline-analyzer` listens on a management bridge the nodes reach over a second veth; no
//! outside network is involved. Once the healthy matrix has run without an incident, one node's
//! fabric link is impaired (`tc netem loss` where the kernel has netem, else a `tbf` rate limit low
//! enough to drop a steady share of the probes), and the analyzer must name that link (the node's
//! fabric NIC) and no other component.
//!
//! Needs root and `ip`/`tc`: under `CI=true` their absence fails the test; elsewhere it is skipped
//! with a loud message. Namespaces and links are named per run and removed on drop, also when the
//! test fails.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, get_json, in_ci, wait_for};
use serde_json::Value;

const LEAVES: usize = 2;
const PER_LEAF: usize = 3;
/// The node whose link is impaired.
const BAD: usize = 4;

/// Runs a command, panicking with its output when it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn try_sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

/// The namespaces and root-namespace links of one run; all removed on drop.
struct Net {
    id: String,
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

impl Net {
    fn ns(&mut self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.id);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = try_sh(&["ip", "netns", "del", ns]);
        }
        for l in &self.host_links {
            let _ = try_sh(&["ip", "link", "del", l]);
        }
    }
}

/// Whether this machine can run the test; under CI it must.
fn prerequisites() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["ip", "tc"].iter().all(|t| Command::new(t).arg("-V").output().is_ok_and(|o| o.status.success()));
    if root && tools {
        return true;
    }
    let why =
        format!("needs root ({}) and ip/tc ({})", if root { "yes" } else { "no" }, if tools { "yes" } else { "no" });
    if in_ci() {
        panic!("pingmesh_netns {why}: required under CI");
    }
    eprintln!("\n*** NOT RUN: pingmesh_netns {why}; run it as root to test the fabric probes for real ***\n");
    false
}

fn node(i: usize) -> String {
    format!("n{i}")
}

fn fabric_addr(i: usize) -> String {
    format!("10.77.{}.{}", i / PER_LEAF, 10 + i % PER_LEAF)
}

/// Impairs egress of `dev` in namespace `ns`: netem loss when the kernel has it, else a tbf rate
/// limit (the probes' and replies' rate is several times the limit, so a steady share is dropped).
/// Returns which one ran.
fn impair(ns: &str, dev: &str) -> String {
    match try_sh(&["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "40%"]) {
        Ok(()) => "netem loss 40%".into(),
        Err(netem) => {
            sh(&[
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "12kbit", "burst",
                "1600", "limit", "1600",
            ]);
            format!("tbf rate 12kbit burst 1600 limit 1600 (no netem: {netem})")
        }
    }
}

fn open_incidents(url: &str) -> Vec<Value> {
    get_json(&format!("{url}/api/v1/incidents"), None)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["status"] == "open")
        .collect()
}

/// Every node's newest report sequence number, once all have reported.
fn seqs(url: &str) -> Option<Vec<u64>> {
    let nodes = get_json(&format!("{url}/api/v1/nodes"), None)?;
    let v: Vec<u64> = (0..LEAVES * PER_LEAF)
        .map(|i| nodes.as_array()?.iter().find(|n| n["node"] == node(i).as_str()).and_then(|n| n["last_seq"].as_u64()))
        .collect::<Option<_>>()?;
    Some(v)
}

/// Waits until every node has sent `more` reports after now: a sentinel for "the analyzer has seen
/// that much more", instead of sleeping.
fn wait_reports(url: &str, more: u64, what: &str) {
    let start = wait_for(Duration::from_secs(60), "every node's reports", || seqs(url));
    wait_for(Duration::from_secs(120), what, || {
        let now = seqs(url)?;
        now.iter().zip(&start).all(|(n, s)| *n >= s + more).then_some(())
    });
}

#[test]
fn pingmesh_names_the_impaired_link_and_nothing_else() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = format!("flp{}", std::process::id() % 100_000);
    let mut net = Net { id: id.clone(), namespaces: Vec::new(), host_links: Vec::new() };

    // Fabric namespace: one bridge per leaf, routing between them (the spine).
    let fab = net.ns("f");
    for l in 0..LEAVES {
        let br = format!("leaf{l}");
        sh(&["ip", "-n", &fab, "link", "add", &br, "type", "bridge"]);
        sh(&["ip", "-n", &fab, "addr", "add", &format!("10.77.{l}.1/24"), "dev", &br]);
        sh(&["ip", "-n", &fab, "link", "set", &br, "up"]);
    }
    sh(&["ip", "netns", "exec", &fab, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);

    // Management bridge in the root namespace, where the analyzer listens (no uplink: loopback-only).
    let mgmt = format!("{id}m");
    sh(&["ip", "link", "add", &mgmt, "type", "bridge"]);
    net.host_links.push(mgmt.clone());
    let octet = 100 + std::process::id() % 100;
    let mgmt_ip = format!("172.31.{octet}.1");
    sh(&["ip", "addr", "add", &format!("{mgmt_ip}/24"), "dev", &mgmt]);
    sh(&["ip", "link", "set", &mgmt, "up"]);

    let topo = dir.path().join("topology.toml");
    let mut t = String::from("[[switch]]\nname = \"spine-0\"\ntier = \"spine\"\n");
    for l in 0..LEAVES {
        t += &format!("[[switch]]\nname = \"leaf{l}\"\ntier = \"leaf\"\nuplinks = [\"spine-0\"]\n");
        let nodes: Vec<String> = (0..PER_LEAF).map(|k| format!("\"{}\"", node(l * PER_LEAF + k))).collect();
        t += &format!("[[rack]]\nleaf = \"leaf{l}\"\nnodes = [{}]\n", nodes.join(", "));
    }
    std::fs::write(&topo, t).unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--listen").arg(format!("{mgmt_ip}:0")).arg("--db").arg(dir.path().join("faultline.db"));
    cmd.arg("--topology").arg(&topo).env("RUST_LOG", "info");
    let analyzer = Proc::spawn(cmd);
    let url = analyzer.url.clone();

    let mut agents = Vec::new();
    let mut node_ns = Vec::new();
    for i in 0..LEAVES * PER_LEAF {
        let ns = net.ns(&format!("n{i}"));
        let leaf = i / PER_LEAF;
        // Fabric link: fab0 in the node, its port on the leaf bridge.
        let port = format!("{id}p{i}");
        sh(&["ip", "link", "add", &port, "type", "veth", "peer", "name", "fab0", "netns", &ns]);
        sh(&["ip", "link", "set", &port, "netns", &fab]);
        sh(&["ip", "-n", &fab, "link", "set", &port, "master", &format!("leaf{leaf}")]);
        sh(&["ip", "-n", &fab, "link", "set", &port, "up"]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", fabric_addr(i)), "dev", "fab0"]);
        sh(&["ip", "-n", &ns, "link", "set", "fab0", "up"]);
        sh(&["ip", "-n", &ns, "route", "add", "10.77.0.0/16", "via", &format!("10.77.{leaf}.1")]);
        // Management link to the analyzer's bridge.
        let m = format!("{id}m{i}");
        sh(&["ip", "link", "add", &m, "type", "veth", "peer", "name", "mgmt0", "netns", &ns]);
        net.host_links.push(m.clone());
        sh(&["ip", "link", "set", &m, "master", &mgmt]);
        sh(&["ip", "link", "set", &m, "up"]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("172.31.{octet}.{}/24", 10 + i), "dev", "mgmt0"]);
        sh(&["ip", "-n", &ns, "link", "set", "mgmt0", "up"]);

        let spool = dir.path().join(node(i));
        std::fs::create_dir_all(&spool).unwrap();
        let cfg = spool.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "node_name = \"{n}\"\nanalyzer = \"{url}\"\ninterval = \"1s\"\nlisten = \"127.0.0.1:0\"\n\
                 progress_listen = \"127.0.0.1:0\"\nno_gpu = true\nkmsg = \"/nonexistent/kmsg\"\n\
                 spool_dir = \"{s}\"\n\n[nics]\nfabric_include = [\"fab0\"]\n\n\
                 [probe]\nenabled = true\nrate_pps = 20\ntimeout = \"500ms\"\npinglist_refresh = \"5s\"\n",
                n = node(i),
                s = spool.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).arg(bin("faultline-agent")).arg("--config").arg(&cfg);
        cmd.env("RUST_LOG", "info");
        agents.push(Proc::spawn(cmd));
        node_ns.push(ns);
    }

    // Every node's pinglist names the other five: the analyzer has seen every fabric address.
    for i in 0..LEAVES * PER_LEAF {
        wait_for(Duration::from_secs(60), &format!("{}'s pinglist to hold all peers", node(i)), || {
            let l = get_json(&format!("{url}/api/v1/pinglist?node={}", node(i)), None)?;
            (l["targets"].as_array()?.len() == LEAVES * PER_LEAF - 1).then_some(())
        });
    }
    // The healthy matrix: a minute of probes (the detector's view) without an incident.
    wait_reports(&url, 60, "a minute of healthy probing");
    let open = open_incidents(&url);
    assert!(open.is_empty(), "a healthy fabric opened incidents: {open:#?}");

    let how = impair(&node_ns[BAD], "fab0");
    eprintln!("pingmesh_netns: impaired {}'s fab0 with {how}", node(BAD));
    let want = format!("{}/nic:fab0", node(BAD));
    let inc = wait_for(Duration::from_secs(180), &format!("an incident on {want} ({how})"), || {
        open_incidents(&url).into_iter().find(|i| i["root"] == want.as_str())
    });
    assert_eq!(inc["class"], "nic_connection_resets", "{inc:#?}");
    eprintln!("pingmesh_netns: {} opened: {}", inc["id"], inc["summary"]);
    // Twenty more reports from everyone: still that incident, and no other component named.
    wait_reports(&url, 20, "twenty more reports after the incident");
    let open = open_incidents(&url);
    let roots: Vec<&str> = open.iter().filter_map(|i| i["root"].as_str()).collect();
    assert_eq!(roots, [want.as_str()], "only the impaired link is named ({how}): {open:#?}");
    // Agents and analyzer go before the namespaces they run in (`net` drops last).
    drop(agents);
    drop(analyzer);
}
