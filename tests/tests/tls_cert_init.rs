//! The whole TLS path of analyzer/SECURITY.md with real processes and nothing made in the test:
//! `faultline-analyzer cert init` writes a CA, a server certificate and tokens; the analyzer serves
//! HTTPS with them; an agent trusting the CA (`--ca-cert`) pushes with a node token; the CLI
//! trusting the CA reads with the read token; a CLI that does not trust it is told
//! "certificate not trusted: pass --ca-cert", not to start the analyzer.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, wait_for};

const NODE: &str = "tls-init-node";

#[test]
fn cert_init_then_analyzer_agent_and_cli_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = Command::new(bin("faultline-analyzer"))
        .args(["cert", "init"])
        .arg(&pki)
        .args(["--name", "localhost", "--name", "127.0.0.1", "--node", NODE])
        .output()
        .unwrap();
    assert!(out.status.success(), "cert init failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ca.pem") && said.contains("--ca-cert"), "{said}");

    // The analyzer with the generated certificate, admin token and [auth] section (node tokens).
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--config")
        .arg(pki.join("analyzer-auth.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("f.db"))
        .arg("--token-file")
        .arg(pki.join("admin.token"))
        .arg("--tls-cert")
        .arg(pki.join("analyzer.pem"))
        .arg("--tls-key")
        .arg(pki.join("analyzer.key"))
        .env("RUST_LOG", "info");
    let analyzer = Proc::spawn(cmd);
    assert!(analyzer.url.starts_with("https://127.0.0.1:"), "{}", analyzer.url);
    let url = analyzer.url.clone();

    // An agent trusting the CA, pushing with its own node token.
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", NODE, "--interval", "200ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .args(["--analyzer", &url])
        .arg("--token-file")
        .arg(pki.join("nodes").join(format!("{NODE}.token")))
        .arg("--ca-cert")
        .arg(pki.join("ca.pem"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .env("RUST_LOG", "info");
    let _agent = Proc::spawn(cmd);

    // The CLI trusting the CA, with the read token, sees the node's reports.
    let read_token = std::fs::read_to_string(pki.join("read.token")).unwrap().trim().to_string();
    let cli = |ca: bool| {
        let mut c = Command::new(bin("faultline"));
        c.args(["--analyzer", &url, "--token", &read_token]).env_remove("FAULTLINE_CA_CERT");
        if ca {
            c.arg("--ca-cert").arg(pki.join("ca.pem"));
        }
        c.args(["status", "--json"]);
        c.output().unwrap()
    };
    let status = wait_for(Duration::from_secs(60), "the agent's reports, read by the CLI over HTTPS", || {
        let out = cli(true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let text = v.to_string();
        text.contains(NODE).then_some(text)
    });
    assert!(status.contains(NODE), "{status}");

    // Without the CA: told what to do about it.
    let out = cli(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate not trusted: pass --ca-cert"), "{err}");
    assert!(!err.contains("Is faultline-analyzer running"), "{err}");
}
