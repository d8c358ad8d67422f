//! The README's quickstart, run as written and in order against a fresh `demo --serve`:
//! every command of its "Quickstart: the demo" section, with `cargo run --release -p faultline --`
//! standing for the built `faultline` binary. Two changes, both for a test machine: the scored runs
//! are `--short` (15 virtual minutes instead of 54), and the served demo listens on a free port, which
//! the CLI commands get through `FAULTLINE_ANALYZER` instead of the default 127.0.0.1:9440.
//!
//! Checked: the live cluster has at least one open incident (the first live fault, node-0003's GPU 3
//! falling off the bus); `status`, `explain`, `path` and `watch` show it; and a real Prometheus run
//! on the configuration `--prometheus` prints, with the repository's rules, fires an incident alert
//! for it. Needs Prometheus (scripts/install-test-deps.sh; fails under CI when missing).

use std::process::{Command, Output};
use std::time::Duration;

use faultline_tests::{Proc, bin, external, free_port, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(240);
const LIVE_GPU: &str = "node-0003/gpu3";

/// The shell commands of the README's quickstart section, in order.
fn quickstart_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("## Quickstart: the demo").nth(1).expect("a Quickstart section");
    let section = section.split("\n## ").next().unwrap();
    let mut cmds = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let body = block.split("```").next().unwrap();
        cmds.extend(body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string));
    }
    cmds
}

/// `cargo run --release -p faultline -- ARGS` or `faultline ARGS` → the binary's arguments.
fn faultline_args(cmd: &str) -> Vec<String> {
    let rest = cmd
        .strip_prefix("cargo run --release -p faultline --")
        .or_else(|| cmd.strip_prefix("faultline"))
        .unwrap_or_else(|| panic!("the quickstart runs something other than faultline: {cmd}"));
    rest.split_whitespace().map(str::to_string).collect()
}

fn run(args: &[String], url: &str) -> Output {
    Command::new(bin("faultline"))
        .args(args)
        .env("FAULTLINE_ANALYZER", url)
        .env_remove("FAULTLINE_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn readme_quickstart_against_a_fresh_live_demo() {
    let cmds = quickstart_commands();
    assert!(cmds.len() >= 6, "{cmds:?}");
    let serve_at = cmds.iter().position(|c| c.contains("demo --serve")).expect("a demo --serve command");
    let prometheus = external("prometheus");

    // 1. The plain demo, then the served one (the README runs them one after the other).
    let mut demo: Option<(Proc, String, Vec<String>)> = None;
    for (i, cmd) in cmds.iter().enumerate() {
        let mut args = faultline_args(cmd);
        if args.first().map(String::as_str) == Some("demo") {
            args.push("--short".into());
            if i == serve_at {
                args.extend(["--listen".into(), "127.0.0.1:0".into()]);
                let mut c = Command::new(bin("faultline"));
                c.args(&args).env("NO_COLOR", "1");
                let mut p = Proc::spawn_plain(c);
                let url = wait_for(DEADLINE, "the demo's `listening on` line", || {
                    let line = p.next_line(Duration::from_secs(1))?;
                    line.strip_prefix("listening on ").map(|u| u.trim().to_string())
                });
                // What follows: the Prometheus configuration, up to the blank line after it.
                let mut config = Vec::new();
                let mut started = false;
                while let Some(line) = p.next_line(Duration::from_secs(10)) {
                    if line.starts_with("# Prometheus configuration") {
                        started = true;
                    } else if started && line.trim().is_empty() {
                        break;
                    }
                    if started {
                        config.push(line);
                    }
                }
                assert!(!config.is_empty(), "--prometheus printed no configuration");
                demo = Some((p, url, config));
            } else {
                let out = run(&args, "http://127.0.0.1:9");
                assert_eq!(out.status.code(), Some(0), "{cmd}:\n{}", text(&out));
                assert!(text(&out).contains("DEMO RESULT"), "{cmd}:\n{}", text(&out));
            }
        }
    }
    let (mut p, url, config) = demo.expect("the served demo");

    // 2. The live cluster opens an incident for its first live fault.
    let id = wait_for(DEADLINE, "an open incident for the first live fault", || {
        let out = run(&["incidents".into(), "--json".into()], &url);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find(|i| i["root"] == LIVE_GPU).and_then(|i| i["id"].as_str().map(str::to_string))
    });

    // 3. The CLI commands, as written and in order.
    for cmd in &cmds[serve_at + 1..] {
        let args = faultline_args(cmd);
        let out = run(&args, &url);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: exit 1 means open incidents found:\n{said}");
        match args[0].as_str() {
            "status" => assert!(said.contains("open") && said.contains(LIVE_GPU), "{cmd}:\n{said}"),
            "explain" => assert!(
                said.contains("UNHEALTHY") && said.contains(&id) && said.contains("held until"),
                "{cmd}: unhealthy, its incident, and how long the fatal XID holds it:\n{said}"
            ),
            "path" => assert!(said.contains(&format!("✗ {LIVE_GPU}")), "{cmd}:\n{said}"),
            "watch" => assert!(said.contains(&id) && said.contains(LIVE_GPU), "{cmd}:\n{said}"),
            other => panic!("the quickstart runs `faultline {other}`; teach this test what it shows"),
        }
    }

    // 4. Prometheus on the printed configuration fires an incident alert for it.
    if let Some(prom) = prometheus {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config.join("\n") + "\n").unwrap();
        let port = free_port();
        let mut c = Command::new(prom);
        c.arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let _prom = Proc::spawn_plain(c);
        let alert = wait_for(DEADLINE, "Prometheus to fire an incident alert for the live GPU", || {
            let v = faultline_tests::get_json(&format!("http://127.0.0.1:{port}/api/v1/alerts"), None)?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["state"] == "firing" && a["labels"]["root"] == LIVE_GPU && a["labels"]["id"] == id.as_str())
                .cloned()
        });
        assert_eq!(alert["labels"]["alertname"], "FaultlineIncidentCritical", "{alert:#}");
    }

    let status = p.terminate(Duration::from_secs(30)).expect("the demo stops on SIGTERM");
    assert!(status.success(), "{status:?}; stderr:\n{}", p.stderr());
}
