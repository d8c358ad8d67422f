//! Command-line and config-file errors: exit code 2 and a message that names what is wrong.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "interval = \"5s\"\nanalyser = \"http://typo:9440\"\n").unwrap();
    let (code, err) = run(&["--once", "--no-gpu", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("analyser"), "the message names the unknown key: {err}");
}

#[test]
fn a_bad_interval_is_refused() {
    let (code, err) = run(&["--once", "--no-gpu", "--interval", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--interval"), "{err}");
}

#[test]
fn the_config_file_is_used_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!("node_name = \"from-file\"\ninterval = \"3s\"\nspool_dir = {:?}\n", dir.path().join("s")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["--once", "--no-gpu", "--kmsg", "/nonexistent", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: faultline_proto::NodeReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r.node.as_str(), r.interval_ms), ("from-file", 3000));
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args([
            "--once",
            "--no-gpu",
            "--kmsg",
            "/nonexistent",
            "--node-name",
            "from-flag",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let r: faultline_proto::NodeReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.node, "from-flag");
}
