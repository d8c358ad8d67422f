//! TLS and per-node tokens with real processes. A CA and a server certificate for 127.0.0.1 are made
//! in the test (rcgen). Checked:
//! - the analyzer serves HTTPS with `--tls-cert/--tls-key` and says `listening on https://…`;
//! - an agent with `--ca-cert` (that CA pinned) pushes over HTTPS with its own node token;
//! - an agent that pins another CA, or trusts only the system roots, cannot push: the analyzer never
//!   hears of it, and it keeps its reports in the spool;
//! - an agent whose node token belongs to another node is refused (403) and drops the report;
//! - plain HTTP to the TLS port gets no answer, and a client that connects and says nothing does
//!   not hold up anyone else;
//! - without TLS on a non-loopback address the analyzer warns loudly.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, wait_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const SHARED: &str = "tls-shared-token";
const NODE_A: &str = "tls-node-a";
const NODE_A_TOKEN: &str = "node-a-own-token";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`: (cert PEM, key PEM).
fn server_cert(ca: &Ca) -> (String, String) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "faultline-analyzer");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn agent(dir: &Path, node: &str, analyzer: &str, token: &str, ca: Option<&Path>) -> Proc {
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.args(["--node-name", node, "--interval", "200ms", "--no-gpu", "--kmsg", "/nonexistent/kmsg"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .args(["--analyzer", analyzer, "--token", token])
        .arg("--spool-dir")
        .arg(dir.join(format!("spool-{node}")))
        .env("RUST_LOG", "info");
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    Proc::spawn(cmd)
}

fn agent_metric(agent: &str, name: &str) -> Option<f64> {
    let body = reqwest::blocking::get(format!("{agent}/metrics")).ok()?.text().ok()?;
    body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn https_with_a_pinned_ca_and_node_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca("faultline test CA");
    let (cert, key) = server_cert(&ca);
    let ca_pem = write(dir.path(), "ca.pem", &ca.pem);
    let cert_pem = write(dir.path(), "server.pem", &cert);
    let key_pem = write(dir.path(), "server.key", &key);
    let other_ca = write(dir.path(), "other-ca.pem", &make_ca("someone else's CA").pem);
    let config = write(
        dir.path(),
        "analyzer.toml",
        &format!("[auth.node_tokens]\n\"{NODE_A}\" = \"{NODE_A_TOKEN}\"\n\"tls-node-b\" = \"node-b-own-token\"\n"),
    );

    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--token", SHARED])
        .arg("--db")
        .arg(dir.path().join("f.db"))
        .arg("--tls-cert")
        .arg(&cert_pem)
        .arg("--tls-key")
        .arg(&key_pem)
        .env("RUST_LOG", "info");
    let analyzer = Proc::spawn(cmd);
    assert!(analyzer.url.starts_with("https://127.0.0.1:"), "{}", analyzer.url);
    let url = analyzer.url.clone();

    // A client that trusts our CA only.
    let ca_cert = reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only([ca_cert])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let nodes = |c: &reqwest::blocking::Client| -> Option<serde_json::Value> {
        c.get(format!("{url}/api/v1/nodes")).bearer_auth(SHARED).send().ok()?.json().ok()
    };
    assert_eq!(nodes(&client).expect("HTTPS read with the pinned CA"), serde_json::json!([]));

    // A silent client holding a connection open does not block the handshakes of others.
    let addr = url.strip_prefix("https://").unwrap();
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    assert!(nodes(&client).is_some(), "a silent connection blocked others");

    // Plain HTTP to the TLS port: no HTTP answer.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut buf);
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"), "plain HTTP was served on the TLS port");

    // The agent that pins our CA pushes with its own node token.
    let good = agent(dir.path(), NODE_A, &url, NODE_A_TOKEN, Some(&ca_pem));
    wait_for(Duration::from_secs(60), "node a's reports over HTTPS", || {
        let n = nodes(&client)?;
        n.as_array()?.iter().find(|x| x["node"] == NODE_A).filter(|x| x["reports"].as_u64() >= Some(3)).cloned()
    });

    // Agents that pin another CA, or trust only the system roots, cannot deliver.
    let wrong_ca = agent(dir.path(), "tls-node-c", &url, SHARED, Some(&other_ca));
    let system_roots = agent(dir.path(), "tls-node-d", &url, SHARED, None);
    for (a, what) in [(&wrong_ca, "pinned another CA"), (&system_roots, "system roots only")] {
        wait_for(Duration::from_secs(60), &format!("the agent that {what} to fail and spool"), || {
            let errors = agent_metric(&a.url, "faultline_agent_push_errors_total")?;
            let spooled = agent_metric(&a.url, "faultline_agent_spool_reports")?;
            (errors >= 3.0 && spooled >= 3.0).then_some(())
        });
        assert_eq!(agent_metric(&a.url, "faultline_agent_pushed_reports_total"), Some(0.0), "{what}");
    }

    // An agent with node b's token claiming to be node e: refused (403). A token problem is not a
    // problem in the report, so the agent holds its reports in the spool and says so.
    let impostor = agent(dir.path(), "tls-node-e", &url, "node-b-own-token", Some(&ca_pem));
    wait_for(Duration::from_secs(60), "the impostor's reports to be refused and held", || {
        let held = agent_metric(&impostor.url, "faultline_agent_push_held")?;
        let spooled = agent_metric(&impostor.url, "faultline_agent_spool_reports")?;
        (held == 1.0 && spooled >= 2.0).then_some(())
    });
    assert_eq!(agent_metric(&impostor.url, "faultline_agent_refused_reports_total"), Some(0.0));
    assert_eq!(agent_metric(&impostor.url, "faultline_agent_pushed_reports_total"), Some(0.0));
    let imp_log = impostor.stderr();
    assert!(
        imp_log.contains("403") || imp_log.contains("tls-node-b"),
        "the agent logs the analyzer's reason:\n{imp_log}"
    );

    let listed = nodes(&client).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, [NODE_A], "only the good agent got through");
    let log = analyzer.stderr();
    assert!(!log.contains("PLAIN HTTP"), "warned about plain HTTP while serving HTTPS");
    for secret in [SHARED, NODE_A_TOKEN, "node-b-own-token"] {
        assert!(!log.contains(secret), "a token is in the analyzer's log");
    }
    drop(good);
}

#[test]
fn plain_http_on_a_non_loopback_address_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "0.0.0.0:0", "--token", SHARED]).arg("--db").arg(dir.path().join("f.db"));
    cmd.env("RUST_LOG", "info");
    let a = Proc::spawn(cmd);
    wait_for(Duration::from_secs(30), "the plain-HTTP warning", || a.stderr().contains("PLAIN HTTP").then_some(()));
    // On loopback it stays quiet.
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let b = faultline_tests::start_analyzer(&dir.path().join("b"), Some(SHARED), &[]);
    // The warning would come before "analyzer started" (main.rs logs it while it checks the
    // settings): wait for that later line, then nothing else may have come before it.
    wait_for(Duration::from_secs(30), "the loopback analyzer's start line", || {
        b.stderr().contains("analyzer started").then_some(())
    });
    assert!(!b.stderr().contains("PLAIN HTTP"), "{}", b.stderr());
}
