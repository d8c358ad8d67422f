//! The deployment files under `deploy/` against the real binaries. Checked:
//! - `deploy/analyzer.example.toml` starts a real analyzer (HTTPS, every token kind, receivers pointed
//!   at loopback, the example topology), its `[auth]` split holds, `/metrics` needs no token, and a
//!   real agent started from `deploy/agent.example.toml` pushes to it over the pinned CA;
//! - `deploy/agent.example.toml` collects once and exits 0; so do both examples with every
//!   commented-out `# key = value` line switched on (so the alternatives they offer exist too);
//! - an unknown key in either example stops the binary with exit 2 naming it (the checks above can fail);
//! - `deploy/topology.example.toml` loads through `faultline-analyzer --topology` and cables the NICs
//!   the way its comments say; a dangling leaf in a copy of it is refused by name;
//! - the Kubernetes manifests are well-formed YAML, their objects reference each other consistently,
//!   the configs embedded in their ConfigMaps start the real binaries, and every flag they pass exists;
//! - the systemd units pass only existing flags, keep state and credentials where the example configs
//!   look for them, and stop gracefully;
//! - the Prometheus scrape configs use the job names the rules and dashboards select, and promtool
//!   accepts them;
//! - every `faultline-agent`/`faultline-analyzer` flag in `deploy/README.md` and
//!   `README.md` exists.
//!
//! The YAML files are read by a small reader for the block-YAML subset they are written in (no YAML
//! crate is in the dependency tree); anything outside that subset is an error, never ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, external, wait_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------------
// Certificates, tokens and file trees for the example configs

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, "deploy-test-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "faultline-analyzer");
    let key = KeyPair::generate().unwrap();
    let cert = sp.signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// The double-quoted strings on one TOML line (the example files use no escapes).
fn quoted(line: &str) -> Vec<String> {
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// The key of a `key = value` TOML line, unquoted.
fn toml_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    Some(k.trim().trim_matches('"').to_string())
}

/// The example with every commented-out setting (`# key = value`, `# "key" = value`) switched on.
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest.to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_setting(s: &str) -> bool {
    let Some((k, _)) = s.split_once(" = ") else { return false };
    let k = k.trim();
    let bare = !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let quoted = k.len() > 2 && k.starts_with('"') && k.ends_with('"') && !k[1..k.len() - 1].contains(' ');
    bare || quoted
}

/// An analyzer config made runnable in `dir`: every absolute path moves under `dir/root`, every
/// receiver URL points at a closed loopback port, and the files it names exist: tokens (each a
/// different value), the TLS certificate and key, the topology (`topology`). Returns the config's
/// path and the token written for each token file, by file name.
struct Materialized {
    config: PathBuf,
    tokens: BTreeMap<String, String>,
    root: PathBuf,
}

fn materialize_analyzer(dir: &Path, name: &str, text: &str, topology: &str, pki: &Pki) -> Materialized {
    let root = dir.join("root");
    let mut out = String::new();
    let mut tokens = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') || !t.contains('=') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = toml_key(t).unwrap_or_default();
        let mut new = line.to_string();
        for q in quoted(t) {
            if key == "url" && (q.starts_with("http://") || q.starts_with("https://")) {
                new = new.replace(&format!("\"{q}\""), "\"http://127.0.0.1:9/receiver\"");
            } else if q.starts_with('/') && key != "env" && key != "SLURM_CONF" {
                let moved = root.join(q.trim_start_matches('/'));
                std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
                let file_name = moved.file_name().unwrap().to_string_lossy().to_string();
                match key.as_str() {
                    "db" => {}
                    "topology" => std::fs::write(&moved, topology).unwrap(),
                    "tls_cert" => std::fs::write(&moved, &pki.cert_pem).unwrap(),
                    "tls_key" => std::fs::write(&moved, &pki.key_pem).unwrap(),
                    _ => {
                        let token = format!("{file_name}-{}-value", tokens.len());
                        std::fs::write(&moved, format!("{token}\n")).unwrap();
                        tokens.insert(file_name, token);
                    }
                }
                new = new.replace(&format!("\"{q}\""), &format!("\"{}\"", moved.display()));
            }
        }
        out.push_str(&new);
        out.push('\n');
    }
    let config = dir.join(name);
    std::fs::write(&config, out).unwrap();
    Materialized { config, tokens, root }
}

impl Materialized {
    /// The token written for the first token file whose name starts with `prefix`.
    fn token(&self, prefix: &str) -> &str {
        self.tokens
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {prefix}* token file in the config: {:?}", self.tokens.keys()))
    }
}

fn start_analyzer_with(config: &Path, dir: &Path) -> Proc {
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--config").arg(config).args(["--listen", "127.0.0.1:0"]).arg("--db").arg(dir.join("test.db"));
    cmd.env("RUST_LOG", "info");
    Proc::spawn(cmd)
}

fn tls_client(pki: &Pki) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    reqwest::blocking::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(10)).build().unwrap()
}

fn get(client: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

/// `faultline-agent --config <config> --once --no-gpu` with the given extra flags; the report's JSON.
fn agent_once(config: &Path, extra: &[&str]) -> Value {
    let out = Command::new(bin("faultline-agent"))
        .arg("--config")
        .arg(config)
        .args(["--once", "--no-gpu"])
        .args(extra)
        .output()
        .expect("run faultline-agent");
    assert!(
        out.status.success(),
        "faultline-agent --once with {} exited {:?}:\n{}",
        config.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("--once printed no NodeReport JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Flags the agent example needs overridden to run here: the token, the pinned CA, the spool.
fn agent_overrides(dir: &Path, pki: &Pki) -> Vec<String> {
    let token = dir.join("agent.token");
    std::fs::write(&token, "agent-token-value\n").unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    vec![
        "--token-file".into(),
        token.display().to_string(),
        "--ca-cert".into(),
        ca.display().to_string(),
        "--spool-dir".into(),
        dir.join("spool").display().to_string(),
    ]
}

// ---------------------------------------------------------------------------------------------------
// The example configs

#[test]
fn analyzer_example_starts_and_an_agent_from_the_agent_example_pushes_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let topology = read("deploy/topology.example.toml");
    let m = materialize_analyzer(dir.path(), "analyzer.toml", &read("deploy/analyzer.example.toml"), &topology, &pki);
    let analyzer = start_analyzer_with(&m.config, dir.path());
    assert!(analyzer.url.starts_with("https://127.0.0.1:"), "the example serves HTTPS: {}", analyzer.url);
    let url = analyzer.url.clone();
    let c = tls_client(&pki);

    // Prometheus scrapes /metrics and /healthz without a token (deploy/prometheus/*.yml rely on it).
    assert_eq!(get(&c, &format!("{url}/healthz"), None).0, 200);
    let (status, metrics) = get(&c, &format!("{url}/metrics"), None);
    assert_eq!(status, 200, "/metrics must not need a token");
    assert!(metrics.contains("faultline_"), "{metrics}");

    // [auth]: the read token reads, the ingest token cannot, no token is refused.
    let topo_url = format!("{url}/api/v1/topology");
    let (status, body) = get(&c, &topo_url, Some(m.token("read")));
    assert_eq!(status, 200, "{body}");
    for sw in ["switch:spine-00", "switch:rail-3", "switch:tor-a", "switch:tor-b"] {
        assert!(body.contains(sw), "{sw} from the example topology is missing: {body}");
    }
    assert_eq!(get(&c, &topo_url, Some(m.token("ingest"))).0, 403, "an ingest token must not read");
    assert_eq!(get(&c, &topo_url, None).0, 401);
    // [remediation]: suggest only, no adapter.
    let (status, body) = get(&c, &format!("{url}/api/v1/actions"), Some(m.token("admin")));
    assert_eq!(status, 200, "{body}");
    let actions: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(actions["default_mode"], "suggest", "{actions}");
    assert_eq!(actions["adapter"], Value::Null, "{actions}");

    // An agent from the agent example, pointed at this analyzer, pushes with the ingest token over
    // the pinned CA, and serves its progress socket.
    let ingest_file = m
        .tokens
        .keys()
        .find(|k| k.starts_with("ingest"))
        .map(|k| m.root.join("run/credentials/faultline-analyzer.service").join(k))
        .unwrap();
    assert!(ingest_file.is_file(), "{}", ingest_file.display());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let socket = dir.path().join("progress.sock");
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.arg("--config")
        .arg(repo().join("deploy/agent.example.toml"))
        .args(["--node-name", "deploy-example-node", "--no-gpu", "--analyzer", &url])
        .arg("--token-file")
        .arg(&ingest_file)
        .arg("--ca-cert")
        .arg(&ca)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0"])
        .arg("--progress-socket")
        .arg(&socket)
        .arg("--kmsg")
        .arg(dir.path().join("no-kmsg"))
        .env("RUST_LOG", "info");
    let mut agent = Proc::spawn(cmd);
    let read_token = m.token("read").to_string();
    wait_for(Duration::from_secs(60), "the example agent to appear in /api/v1/nodes", || {
        let (status, body) = get(&c, &format!("{url}/api/v1/nodes"), Some(&read_token));
        (status == 200 && body.contains("deploy-example-node")).then_some(())
    });
    assert!(socket.exists(), "the progress socket was not created; agent stderr:\n{}", agent.stderr());
    let st = agent.terminate(Duration::from_secs(60)).expect("the agent stops on SIGTERM");
    assert!(st.success(), "agent exit {st:?}; stderr:\n{}", agent.stderr());
}

#[test]
fn analyzer_example_with_every_commented_setting_switched_on_starts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let text = uncomment(&read("deploy/analyzer.example.toml"));
    assert!(text.contains("\n\"node-0001\" = "), "the example offers a per-node token file");
    let m = materialize_analyzer(dir.path(), "analyzer.toml", &text, &read("deploy/topology.example.toml"), &pki);
    let analyzer = start_analyzer_with(&m.config, dir.path());
    let c = tls_client(&pki);
    let (status, _) = get(&c, &format!("{}/api/v1/summary", analyzer.url), Some(m.token("read")));
    assert_eq!(status, 200);
}

#[test]
fn agent_example_collects_once_as_is_and_with_every_commented_setting_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let flags = agent_overrides(dir.path(), &pki);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let report = agent_once(&repo().join("deploy/agent.example.toml"), &flags);
    assert!(report["node"].as_str().is_some_and(|n| !n.is_empty()), "{report}");
    assert_eq!(report["interval_ms"], 10_000, "interval = \"10s\" in the example");

    let all_on = dir.path().join("agent-all-on.toml");
    let text = uncomment(&read("deploy/agent.example.toml"));
    assert!(text.contains("\nnode_name = "), "the example offers node_name");
    std::fs::write(&all_on, text).unwrap();
    let report = agent_once(&all_on, &flags);
    assert_eq!(report["node"], "node-0001", "{report}");
}

#[test]
fn an_unknown_key_in_an_example_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut text = read("deploy/analyzer.example.toml");
    text = text.replacen("tick_interval = ", "tick_intervall = ", 1);
    let m = materialize_analyzer(dir.path(), "bad.toml", &text, &read("deploy/topology.example.toml"), &pki);
    let out = Command::new(bin("faultline-analyzer"))
        .arg("--config")
        .arg(&m.config)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tick_intervall"), "{err}");
    assert!(!dir.path().join("x.db").exists(), "a refused config must not create the database");

    let bad_agent = dir.path().join("agent.toml");
    std::fs::write(&bad_agent, read("deploy/agent.example.toml").replacen("[jobs]", "[jobs]\nrank_envs = []", 1))
        .unwrap();
    let flags = agent_overrides(dir.path(), &pki);
    let out = Command::new(bin("faultline-agent"))
        .arg("--config")
        .arg(&bad_agent)
        .args(["--once", "--no-gpu"])
        .args(&flags)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rank_envs"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn topology_example_loads_and_cables_as_its_comments_say() {
    let path = repo().join("deploy/topology.example.toml");
    let t = faultline_analyzer::config::load_topology(&path).expect("the example topology is valid");
    let leaf = |host: &str, nic: &str| t.leaf_of(host, nic).map(str::to_string);
    // Rails: mlx5_<r> of the rail-optimised nodes goes to rail-<r>.
    for (host, nic, want) in [
        ("gpu-a-0001", "mlx5_0", "rail-0"),
        ("gpu-a-0004", "mlx5_1", "rail-1"),
        ("gpu-a-0002", "mlx5_2", "rail-2"),
        ("gpu-a-0003", "mlx5_3", "rail-3"),
        // Their other NICs: the rack's top-of-rack leaf.
        ("gpu-a-0002", "mlx5_4", "tor-a"),
        // Rack B: every NIC to tor-b, except the re-cabled link.
        ("gpu-b-0001", "mlx5_0", "tor-b"),
        ("gpu-b-0004", "mlx5_0", "tor-b"),
        ("gpu-b-0004", "mlx5_1", "rail-3"),
    ] {
        assert_eq!(leaf(host, nic).as_deref(), Some(want), "{host}/nic:{nic}");
    }
    assert_eq!(leaf("gpu-c-0001", "mlx5_0"), None, "a node in no rack, rail or link has no leaf");
    for l in t.leaves() {
        assert_eq!(t.uplinks_of(l), ["spine-00".to_string(), "spine-01".to_string()], "{l}");
    }

    // Through the real binary's --topology flag.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.args(["--listen", "127.0.0.1:0", "--token", "topo-test-token"])
        .arg("--db")
        .arg(dir.path().join("t.db"))
        .arg("--topology")
        .arg(&path);
    let analyzer = Proc::spawn(cmd);
    let view = faultline_tests::get_json(&format!("{}/api/v1/topology", analyzer.url), Some("topo-test-token"))
        .expect("topology view");
    let tiers: BTreeMap<String, String> = view["switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["tier"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(tiers.len(), 8, "{tiers:?}");
    assert_eq!(tiers["switch:spine-01"], "spine");
    assert_eq!(tiers["switch:rail-0"], "leaf");
    assert_eq!(tiers["switch:tor-b"], "leaf");

    // A copy with a rail on an undeclared leaf is refused by name.
    let bad = dir.path().join("bad-topology.toml");
    std::fs::write(&bad, read("deploy/topology.example.toml").replacen("leaf = \"rail-2\"", "leaf = \"rail-9\"", 1))
        .unwrap();
    let out = Command::new(bin("faultline-analyzer"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("b.db"))
        .arg("--topology")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rail-9") && err.contains("bad-topology.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// Flags

/// Every `--flag` the binary's help (and its subcommands' help) lists.
fn help_flags(binary: &str, sub: Option<&str>) -> BTreeSet<String> {
    let mut cmd = Command::new(bin(binary));
    if let Some(s) = sub {
        cmd.args(s.split_whitespace());
    }
    let out = cmd.arg("--help").output().unwrap();
    assert!(out.status.success(), "{binary} {sub:?} --help failed");
    flags_in(&String::from_utf8_lossy(&out.stdout))
}

fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-' || b[i - 1] == b'/');
        if boundary && b[i] == b'-' && b[i + 1] == b'-' && b[i + 2].is_ascii_lowercase() {
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-') {
                j += 1;
            }
            out.insert(text[i..j].trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn flag_reader_finds_flags_and_skips_paths_and_dashes() {
    let f = flags_in("run --config /a--b --node-name $(X) -- --x-y2 --- a--b --");
    assert_eq!(f, ["--config", "--node-name", "--x-y2"].into_iter().map(String::from).collect());
}

/// Flags used in command lines of `binary` (a line starting the binary, with `\` continuations)
/// in `text`, grouped by the subcommand they follow.
fn invocations(text: &str, binary: &str, subs: &[&str]) -> Vec<(Option<String>, BTreeSet<String>, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let mut continued = 0;
        for (pos, _) in line.match_indices(binary) {
            let after = &line[pos + binary.len()..];
            // The binary as a command, not as part of another word (faultline-agent.service).
            if !(after.starts_with(' ') || after.is_empty()) || line[..pos].ends_with(['-', '/', '.']) {
                continue;
            }
            let mut cmdline = after.to_string();
            while cmdline.trim_end().ends_with('\\') && i + continued + 1 < lines.len() {
                continued += 1;
                cmdline.push(' ');
                cmdline.push_str(lines[i + continued]);
            }
            // Only up to a shell separator or the end of a code span.
            let cut = cmdline.find(['|', ';', '`', '#']).unwrap_or(cmdline.len());
            let cmdline = &cmdline[..cut];
            // One-word subcommands (`report-progress`) and two-word ones (`cert init`).
            let words: Vec<&str> = cmdline.split_whitespace().take(2).collect();
            let two = words.join(" ");
            let sub = if subs.contains(&two.as_str()) {
                Some(two)
            } else {
                words.first().filter(|w| subs.contains(w)).map(|w| w.to_string())
            };
            out.push((sub, flags_in(cmdline), line.to_string()));
        }
        i += 1 + continued;
    }
    out
}

fn check_flags_in(file: &str, text: &str) -> usize {
    let mut checked = 0;
    for (binary, subs) in
        [("faultline-agent", &["classify-log", "report-progress"][..]), ("faultline-analyzer", &["cert init"][..])]
    {
        let mut known: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
        for (sub, flags, line) in invocations(text, binary, subs) {
            let have = known.entry(sub.clone()).or_insert_with(|| help_flags(binary, sub.as_deref()));
            for f in flags {
                assert!(have.contains(&f), "{file}: `{binary}` has no flag {f} (line: {line})");
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn flags_in_the_deployment_docs_exist() {
    let mut checked = 0;
    for file in ["deploy/README.md", "README.md"] {
        checked += check_flags_in(file, &read(file));
    }
    assert!(checked >= 10, "only {checked} flags found in the docs: is the reader broken?");
}

// ---------------------------------------------------------------------------------------------------
// systemd units

/// `[Section]` → key → values (a key may repeat), comments and blank lines skipped.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(name: &str, text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = None;
    for (no, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            section = Some(l[1..l.len() - 1].to_string());
            unit.entry(section.clone().unwrap()).or_default();
            continue;
        }
        let s = section.as_ref().unwrap_or_else(|| panic!("{name}:{}: setting outside a section", no + 1));
        let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{name}:{}: not key=value: {l}", no + 1));
        assert!(!l.ends_with('\\'), "{name}:{}: continuation lines are not used here", no + 1);
        unit.get_mut(s).unwrap().entry(k.trim().to_string()).or_default().push(v.trim().to_string());
    }
    unit
}

fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let v = unit.get(section).and_then(|s| s.get(key)).unwrap_or_else(|| panic!("[{section}] {key}= is missing"));
    assert_eq!(v.len(), 1, "[{section}] {key}= is given {} times", v.len());
    &v[0]
}

fn seconds(v: &str) -> u64 {
    if let Some(m) = v.strip_suffix("min") {
        m.parse::<u64>().unwrap() * 60
    } else {
        v.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("not seconds: {v}"))
    }
}

/// The value of a top-level `key = "..."` line in a TOML text.
fn toml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(&format!("{key} = "))).and_then(|l| quoted(l).into_iter().next())
}

/// Credential names a config reads from `/run/credentials/<unit>/`.
fn credentials_used(config: &str, unit_name: &str) -> BTreeSet<String> {
    let prefix = format!("/run/credentials/{unit_name}/");
    config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(quoted)
        .filter_map(|q| q.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[test]
fn systemd_units_run_real_flags_and_keep_state_where_the_configs_look() {
    for (unit_name, binary, config_file) in [
        ("faultline-agent.service", "faultline-agent", "deploy/agent.example.toml"),
        ("faultline-analyzer.service", "faultline-analyzer", "deploy/analyzer.example.toml"),
    ] {
        let text = read(&format!("deploy/systemd/{unit_name}"));
        let unit = parse_unit(unit_name, &text);
        let config = read(config_file);

        // ExecStart runs the binary with flags it has.
        let exec = one(&unit, "Service", "ExecStart");
        assert!(exec.starts_with(&format!("/usr/bin/{binary} ")), "{unit_name}: ExecStart={exec}");
        let known = help_flags(binary, None);
        for f in flags_in(exec) {
            assert!(known.contains(&f), "{unit_name}: {binary} has no flag {f}");
        }
        assert!(exec.contains("--config /etc/faultline/"), "{unit_name}: {exec}");

        assert_eq!(one(&unit, "Service", "Restart"), "always", "{unit_name}");
        assert_eq!(one(&unit, "Service", "KillSignal"), "SIGTERM", "{unit_name}");
        assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target", "{unit_name}");

        // Every credential the example config reads is loaded by the unit, and nothing else.
        let loaded: BTreeSet<String> = unit["Service"]
            .get("LoadCredential")
            .map(|v| v.iter().map(|c| c.split_once(':').expect("LoadCredential=NAME:PATH").0.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(loaded, credentials_used(&config, unit_name), "{unit_name} vs {config_file}");
        assert!(!loaded.is_empty(), "{unit_name}: secrets travel as credentials");

        // State lives in the unit's StateDirectory.
        let state = format!("/var/lib/{}/", one(&unit, "Service", "StateDirectory"));
        let kept = if binary == "faultline-agent" {
            format!("{}/", toml_value(&config, "spool_dir").expect("spool_dir"))
        } else {
            toml_value(&config, "db").expect("db")
        };
        assert!(kept.starts_with(&state), "{config_file} keeps state in {kept}, the unit gives {state}");
    }

    // The agent: capabilities for /dev/kmsg and other users' environ, a runtime directory for the
    // progress socket, and time for the last report.
    let unit = parse_unit("faultline-agent.service", &read("deploy/systemd/faultline-agent.service"));
    let caps: BTreeSet<&str> = one(&unit, "Service", "AmbientCapabilities").split_whitespace().collect();
    assert_eq!(caps, BTreeSet::from(["CAP_SYSLOG", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]));
    let bounding: BTreeSet<&str> = one(&unit, "Service", "CapabilityBoundingSet").split_whitespace().collect();
    assert_eq!(bounding, caps);
    // These hide /dev/kmsg, /dev/nvidia* or other users' processes (ProtectClock adds a DeviceAllow=,
    // which closes every device not listed).
    for forbidden in
        ["ProtectKernelLogs", "PrivateDevices", "ProtectProc", "ProtectClock", "DevicePolicy", "DeviceAllow"]
    {
        assert!(!unit["Service"].contains_key(forbidden), "{forbidden} would hide what the agent reads");
    }
    let run = format!("/run/{}/", one(&unit, "Service", "RuntimeDirectory"));
    let socket = toml_value(&read("deploy/agent.example.toml"), "progress_socket").unwrap();
    assert!(socket.starts_with(&run), "progress socket {socket} outside RuntimeDirectory {run}");
    // Shutdown: up to 20 s for a collection stuck in the driver, then 15 s + 5 s for the pusher.
    assert!(seconds(one(&unit, "Service", "TimeoutStopSec")) >= 45, "TimeoutStopSec too short for the last report");
}

// ---------------------------------------------------------------------------------------------------
// A reader for the block-YAML subset the deployment files are written in

mod yaml {
    use serde_json::{Map, Value};

    struct Line {
        no: usize,
        indent: usize,
        /// The text after the indentation, comments included.
        text: String,
    }

    impl Line {
        fn significant(&self) -> bool {
            !self.text.is_empty() && !self.text.starts_with('#')
        }
    }

    /// Every document of a multi-document YAML text; documents holding only comments are skipped.
    pub fn documents(src: &str) -> Result<Vec<Value>, String> {
        let mut docs = Vec::new();
        let mut cur: Vec<Line> = Vec::new();
        for (i, raw) in src.lines().enumerate() {
            if raw.trim_end() == "---" {
                docs.push(std::mem::take(&mut cur));
                continue;
            }
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            if raw[indent..].starts_with('\t') {
                return Err(format!("line {}: a tab in the indentation", i + 1));
            }
            cur.push(Line { no: i + 1, indent, text: raw[indent..].trim_end().to_string() });
        }
        docs.push(cur);
        let mut out = Vec::new();
        for lines in docs {
            let mut p = Parser { lines, pos: 0 };
            if p.peek().is_none() {
                continue;
            }
            let v = p.node(0)?;
            if let Some(l) = p.peek() {
                return Err(format!("line {}: unexpected content {:?}", p.lines[l].no, p.lines[l].text));
            }
            out.push(v);
        }
        Ok(out)
    }

    struct Parser {
        lines: Vec<Line>,
        pos: usize,
    }

    impl Parser {
        /// Index of the next significant line.
        fn peek(&mut self) -> Option<usize> {
            while self.pos < self.lines.len() && !self.lines[self.pos].significant() {
                self.pos += 1;
            }
            (self.pos < self.lines.len()).then_some(self.pos)
        }

        fn node(&mut self, min_indent: usize) -> Result<Value, String> {
            let i = self.peek().ok_or("expected a value, found the end")?;
            let l = &self.lines[i];
            if l.indent < min_indent {
                return Err(format!("line {}: expected a value indented by at least {min_indent}", l.no));
            }
            let indent = l.indent;
            if is_item(&l.text) { self.seq(indent) } else { self.map(indent) }
        }

        fn map(&mut self, indent: usize) -> Result<Value, String> {
            let mut map = Map::new();
            while let Some(i) = self.peek() {
                let (no, ind) = (self.lines[i].no, self.lines[i].indent);
                if ind < indent || (ind == indent && is_item(&self.lines[i].text)) {
                    break;
                }
                if ind > indent {
                    return Err(format!("line {no}: unexpected indentation"));
                }
                let text = strip_comment(&self.lines[i].text);
                let (key, rest) =
                    split_key(&text).ok_or_else(|| format!("line {no}: expected `key: value`, found {text:?}"))?;
                self.pos += 1;
                let value = if rest.is_empty() {
                    match self.peek() {
                        Some(j) if self.lines[j].indent > indent => self.node(indent + 1)?,
                        Some(j) if self.lines[j].indent == indent && is_item(&self.lines[j].text) => {
                            self.seq(indent)?
                        }
                        _ => Value::Null,
                    }
                } else if rest == "|" || rest == "|-" {
                    self.block_scalar(indent, rest == "|-")?
                } else {
                    scalar(&rest).map_err(|e| format!("line {no}: {e}"))?
                };
                if map.insert(key.clone(), value).is_some() {
                    return Err(format!("line {no}: key {key:?} repeated"));
                }
            }
            Ok(Value::Object(map))
        }

        fn seq(&mut self, indent: usize) -> Result<Value, String> {
            let mut items = Vec::new();
            while let Some(i) = self.peek() {
                let (no, ind) = (self.lines[i].no, self.lines[i].indent);
                if ind < indent || !is_item(&self.lines[i].text) {
                    if ind > indent {
                        return Err(format!("line {no}: unexpected indentation"));
                    }
                    break;
                }
                if ind > indent {
                    return Err(format!("line {no}: unexpected indentation"));
                }
                let text = self.lines[i].text.clone();
                let rest = text[1..].trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    self.pos += 1;
                    items.push(self.node(indent + 1)?);
                    continue;
                }
                let offset = text.len() - rest.len();
                let rest_clean = strip_comment(rest);
                if is_item(rest) || split_key(&rest_clean).is_some() {
                    // `- key: value` (or `- - x`): the rest of the line starts a nested block at the
                    // column where it stands.
                    self.lines[i] = Line { no, indent: indent + offset, text: rest.to_string() };
                    items.push(self.node(indent + offset)?);
                } else {
                    self.pos += 1;
                    items.push(scalar(&rest_clean).map_err(|e| format!("line {no}: {e}"))?);
                }
            }
            Ok(Value::Array(items))
        }

        /// A literal block (`|`): the following lines indented deeper, newlines kept.
        fn block_scalar(&mut self, indent: usize, strip: bool) -> Result<Value, String> {
            let mut body: Vec<String> = Vec::new();
            let mut block_indent = None;
            while self.pos < self.lines.len() {
                let l = &self.lines[self.pos];
                if l.text.is_empty() {
                    body.push(String::new());
                    self.pos += 1;
                    continue;
                }
                if l.indent <= indent {
                    break;
                }
                let bi = *block_indent.get_or_insert(l.indent);
                if l.indent < bi {
                    return Err(format!("line {}: less indented than its block", l.no));
                }
                body.push(format!("{}{}", " ".repeat(l.indent - bi), l.text));
                self.pos += 1;
            }
            while body.last().is_some_and(String::is_empty) {
                body.pop();
            }
            let mut s = body.join("\n");
            if !strip {
                s.push('\n');
            }
            Ok(Value::String(s))
        }
    }

    fn is_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    /// The text without a trailing comment (`#` at the start or after a space, outside quotes).
    fn strip_comment(s: &str) -> String {
        let (mut single, mut double) = (false, false);
        let mut prev = ' ';
        for (i, c) in s.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double && prev.is_whitespace() => return s[..i].trim_end().to_string(),
                _ => {}
            }
            prev = c;
        }
        s.trim_end().to_string()
    }

    /// `key: rest` with the key unquoted; `None` when the line is not a mapping entry.
    fn split_key(text: &str) -> Option<(String, String)> {
        let (mut single, mut double) = (false, false);
        let b = text.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'\'' if !double => single = !single,
                b'"' if !single => double = !double,
                b':' if !single && !double && (i + 1 == b.len() || b[i + 1] == b' ') => {
                    let key = text[..i].trim();
                    if key.is_empty() || key.starts_with(['[', '{']) {
                        return None;
                    }
                    let key = match scalar(key).ok()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    return Some((key, text[i + 1..].trim().to_string()));
                }
                _ => {}
            }
        }
        None
    }

    /// A scalar or a one-line flow collection.
    pub fn scalar(s: &str) -> Result<Value, String> {
        let s = s.trim();
        if let Some(body) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = body.chars();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated string {s:?}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c @ ('"' | '\\' | '/')) => out.push(c),
                        other => return Err(format!("unsupported escape {other:?} in {s:?}")),
                    },
                    Some(c) => out.push(c),
                }
            }
            let tail: String = chars.collect();
            if !tail.trim().is_empty() {
                return Err(format!("text after a quoted string: {s:?}"));
            }
            return Ok(Value::String(out));
        }
        if let Some(body) = s.strip_prefix('\'') {
            let end = body.rfind('\'').ok_or_else(|| format!("unterminated string {s:?}"))?;
            if !body[end + 1..].trim().is_empty() {
                return Err(format!("text after a quoted string: {s:?}"));
            }
            return Ok(Value::String(body[..end].replace("''", "'")));
        }
        if let Some(body) = s.strip_prefix('[') {
            let body = body.strip_suffix(']').ok_or_else(|| format!("unterminated flow sequence {s:?}"))?;
            return split_flow(body)?.iter().map(|item| scalar(item)).collect::<Result<Vec<_>, _>>().map(Value::Array);
        }
        if let Some(body) = s.strip_prefix('{') {
            let body = body.strip_suffix('}').ok_or_else(|| format!("unterminated flow mapping {s:?}"))?;
            let mut map = Map::new();
            for item in split_flow(body)? {
                let (k, v) = split_key(&item).ok_or_else(|| format!("flow mapping entry {item:?} is not `k: v`"))?;
                map.insert(k, scalar(&v)?);
            }
            return Ok(Value::Object(map));
        }
        if s.starts_with(['&', '*', '!', '%', '@', '`', '|', '>', ']', '}', ',']) {
            return Err(format!("{s:?} uses YAML outside the subset these files are written in"));
        }
        if s.contains(": ") || s.ends_with(':') || s.contains(" #") {
            return Err(format!("ambiguous plain scalar {s:?}: quote it"));
        }
        let unsigned = s.trim_start_matches(['+', '-']);
        let numeric =
            s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && s.chars().any(|c| c.is_ascii_digit());
        // `0440` is octal in YAML 1.1 and a string in 1.2: kept as written.
        let leading_zero = unsigned.len() > 1 && unsigned.starts_with('0') && !unsigned.starts_with("0.");
        Ok(match s {
            "" | "~" | "null" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ if numeric && !leading_zero => match (s.parse::<i64>(), s.parse::<f64>()) {
                (Ok(n), _) => Value::from(n),
                (_, Ok(f)) => Value::from(f),
                _ => Value::String(s.to_string()),
            },
            _ => Value::String(s.to_string()),
        })
    }

    /// Top-level comma-separated items of a flow collection's body.
    fn split_flow(body: &str) -> Result<Vec<String>, String> {
        let mut items = Vec::new();
        let (mut depth, mut single, mut double) = (0i32, false, false);
        let mut cur = String::new();
        for c in body.chars() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '[' | '{' if !single && !double => depth += 1,
                ']' | '}' if !single && !double => depth -= 1,
                ',' if depth == 0 && !single && !double => {
                    items.push(std::mem::take(&mut cur).trim().to_string());
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        if depth != 0 || single || double {
            return Err(format!("unbalanced flow collection {body:?}"));
        }
        if !cur.trim().is_empty() {
            items.push(cur.trim().to_string());
        } else if !items.is_empty() {
            return Err(format!("trailing comma in {body:?}"));
        }
        Ok(items)
    }
}

#[test]
fn yaml_reader_reads_the_subset_and_refuses_the_rest() {
    let docs = yaml::documents(
        "# c\na: 1\nb:\n  - x\n  - k: v # note\n    j: \"q # not a comment\"\n  -\n    - n\nc: [1, \"two\", {}]\n\
         d: |\n  line one\n    indented # kept\n\n  last\ne: 'it''s'\nf:\n- same-indent\n---\n# only a comment\n---\ng: 0440\n",
    )
    .unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0],
        serde_json::json!({
            "a": 1,
            "b": ["x", {"k": "v", "j": "q # not a comment"}, ["n"]],
            "c": [1, "two", {}],
            "d": "line one\n  indented # kept\n\nlast\n",
            "e": "it's",
            "f": ["same-indent"],
        })
    );
    assert_eq!(docs[1], serde_json::json!({"g": "0440"}));
    for bad in [
        "a: 1\n  b: 2\n",
        "a:\n\t- x\n",
        "a: [1, 2\n",
        "a: 1\na: 2\n",
        "a: &anchor x\n",
        "a: b: c\n",
        "- a\nb: 1\n",
        "a: \"x\" y\n",
    ] {
        assert!(yaml::documents(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes

fn k8s_objects() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in yaml::documents(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), doc));
        }
    }
    out
}

fn find<'a>(objs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn parent(p: &str) -> String {
    Path::new(p).parent().unwrap().display().to_string()
}

/// The pod's volumes by name, and the container's mounts by volume name (every mount names a volume,
/// every volume is mounted).
fn volumes_and_mounts(what: &str, pod: &Value) -> (BTreeMap<String, Value>, BTreeMap<String, String>) {
    let volumes: BTreeMap<String, Value> = pod["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no volumes"))
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}: one container");
    let mut mounts = BTreeMap::new();
    for m in containers[0]["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap().to_string();
        assert!(volumes.contains_key(&name), "{what}: volumeMount {name} names no volume");
        assert!(mounts.insert(name.clone(), m["mountPath"].as_str().unwrap().to_string()).is_none(), "{name} twice");
    }
    for v in volumes.keys() {
        assert!(mounts.contains_key(v), "{what}: volume {v} is never mounted");
    }
    (volumes, mounts)
}

#[test]
fn kubernetes_manifests_are_well_formed_and_consistent() {
    let objs = k8s_objects();
    let mut seen = BTreeSet::new();
    for (file, o) in &objs {
        let kind = o["kind"].as_str().unwrap_or_else(|| panic!("{file}: an object without kind"));
        assert!(o["apiVersion"].is_string(), "{file}: {kind} without apiVersion");
        if kind == "Kustomization" {
            for r in strs(&o["resources"]) {
                assert!(repo().join("deploy/kubernetes").join(&r).is_file(), "kustomization names missing {r}");
            }
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{file}: {kind} without a name"));
        assert!(seen.insert((kind.to_string(), name.to_string())), "{file}: {kind} {name} defined twice");
        if kind != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "faultline", "{file}: {kind} {name}");
        }
    }
    let secret = find(&objs, "Secret", "faultline-tokens");
    let secret_keys: BTreeSet<String> = secret["stringData"].as_object().unwrap().keys().cloned().collect();

    // The analyzer: one replica, never two at once, its config's files where the volumes are.
    let dep = find(&objs, "Deployment", "faultline-analyzer");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "faultline-analyzer");
    assert_eq!(dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], "faultline-analyzer");
    let (volumes, mounts) = volumes_and_mounts("analyzer", pod);
    let container = &pod["containers"][0];
    let args = strs(&container["args"]);
    let known = help_flags("faultline-analyzer", None);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(known.contains(a), "analyzer has no flag {a}");
    }
    let cm_name = volumes["config"]["configMap"]["name"].as_str().unwrap();
    let cm = find(&objs, "ConfigMap", cm_name);
    let config_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    assert_eq!(parent(config_path), mounts["config"]);
    let analyzer_toml = cm["data"][Path::new(config_path).file_name().unwrap().to_str().unwrap()].as_str().unwrap();
    let topology = toml_value(analyzer_toml, "topology").unwrap();
    assert_eq!(parent(&topology), mounts["config"]);
    assert!(cm["data"][Path::new(&topology).file_name().unwrap().to_str().unwrap()].is_string());
    assert_eq!(parent(&toml_value(analyzer_toml, "db").unwrap()), mounts["db"]);
    assert_eq!(
        volumes["db"]["persistentVolumeClaim"]["claimName"].as_str().unwrap(),
        find(&objs, "PersistentVolumeClaim", "faultline-analyzer-db")["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(volumes["tokens"]["secret"]["secretName"], "faultline-tokens");
    for line in analyzer_toml.lines().filter(|l| l.contains("token_file")) {
        for q in quoted(line) {
            assert_eq!(parent(&q), mounts["tokens"], "{line}");
            assert!(secret_keys.contains(Path::new(&q).file_name().unwrap().to_str().unwrap()), "{line}");
        }
    }
    let listen = toml_value(analyzer_toml, "listen").unwrap();
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(container["ports"][0]["containerPort"], port);
    let svc = find(&objs, "Service", "faultline-analyzer");
    assert_eq!(svc["spec"]["ports"][0]["port"], port);
    assert_eq!(svc["spec"]["selector"], dep["spec"]["selector"]["matchLabels"]);

    // The agent DaemonSet.
    let ds = find(&objs, "DaemonSet", "faultline-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "the agent reads the training processes' /proc");
    assert_eq!(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "faultline-agent");
    assert_eq!(ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], "faultline-agent");
    let (volumes, mounts) = volumes_and_mounts("agent", pod);
    let container = &pod["containers"][0];
    let env: BTreeMap<String, Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"]["value"], "all");
    assert_eq!(env["NVIDIA_DRIVER_CAPABILITIES"]["value"], "utility");
    let args = strs(&container["args"]);
    let known = help_flags("faultline-agent", None);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(known.contains(a), "agent has no flag {a}");
    }
    assert_eq!(args[args.iter().position(|a| a == "--node-name").unwrap() + 1], "$(NODE_NAME)");
    let config_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    assert_eq!(parent(config_path), mounts["config"]);
    let cm = find(&objs, "ConfigMap", volumes["config"]["configMap"]["name"].as_str().unwrap());
    let agent_toml = cm["data"][Path::new(config_path).file_name().unwrap().to_str().unwrap()].as_str().unwrap();
    // The token: the Secret's ingest key, where token_file looks.
    let token = &volumes["token"]["secret"];
    assert_eq!(token["secretName"], "faultline-tokens");
    let item = &token["items"][0];
    assert!(secret_keys.contains(item["key"].as_str().unwrap()));
    assert_eq!(
        toml_value(agent_toml, "token_file").unwrap(),
        format!("{}/{}", mounts["token"], item["path"].as_str().unwrap())
    );
    // Host paths where the config looks for them.
    let host = |v: &str| {
        volumes[v]["hostPath"]["path"].as_str().unwrap_or_else(|| panic!("{v} is not a hostPath")).to_string()
    };
    assert_eq!(host("host-sys"), "/sys");
    assert_eq!(toml_value(agent_toml, "sysfs_root").unwrap(), mounts["host-sys"]);
    assert_eq!(host("kmsg"), "/dev/kmsg");
    assert_eq!(toml_value(agent_toml, "kmsg").unwrap(), mounts["kmsg"]);
    assert_eq!(toml_value(agent_toml, "spool_dir").unwrap(), mounts["spool"]);
    assert_eq!(parent(&toml_value(agent_toml, "progress_socket").unwrap()), mounts["progress"]);
    assert_eq!(host("progress"), "/run/faultline", "the host directory training pods mount");
    // The analyzer's address and the metrics port.
    let analyzer_url = toml_value(agent_toml, "analyzer").unwrap();
    assert_eq!(analyzer_url, format!("http://faultline-analyzer.faultline.svc:{port}"));
    let agent_port: u64 = toml_value(agent_toml, "listen").unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(container["ports"][0]["containerPort"], agent_port);
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], agent_port.to_string());

    // ServiceMonitors: the Services are named after the scrape jobs the rules select.
    for job in ["faultline-agent", "faultline-analyzer"] {
        let sm = find(&objs, "ServiceMonitor", job);
        let svc = find(&objs, "Service", job);
        for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor {job} does not select Service {job}");
        }
        let port_names: Vec<&Value> = svc["spec"]["ports"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
        for ep in sm["spec"]["endpoints"].as_array().unwrap() {
            assert!(port_names.contains(&&ep["port"]), "ServiceMonitor {job}: port {} not on the Service", ep["port"]);
            assert_eq!(ep["honorLabels"], false);
        }
    }
}

#[test]
fn kubernetes_configmaps_start_the_real_binaries() {
    let objs = k8s_objects();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cm = find(&objs, "ConfigMap", "faultline-analyzer-config");
    let m = materialize_analyzer(
        dir.path(),
        "analyzer.toml",
        cm["data"]["analyzer.toml"].as_str().unwrap(),
        cm["data"]["topology.toml"].as_str().unwrap(),
        &pki,
    );
    let analyzer = start_analyzer_with(&m.config, dir.path());
    assert!(analyzer.url.starts_with("http://"), "{}", analyzer.url);
    let topo = faultline_tests::get_json(&format!("{}/api/v1/topology", analyzer.url), Some(m.token("read")))
        .expect("the read token from the Secret reads");
    assert!(topo.to_string().contains("switch:leaf-00"), "{topo}");

    let cm = find(&objs, "ConfigMap", "faultline-agent-config");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(&agent_toml, cm["data"]["agent.toml"].as_str().unwrap()).unwrap();
    let flags = agent_overrides(dir.path(), &pki);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(["--sysfs-root", "/sys", "--node-name", "k8s-node"]);
    let report = agent_once(&agent_toml, &flags);
    assert_eq!(report["node"], "k8s-node");
}

// ---------------------------------------------------------------------------------------------------
// Prometheus

fn jobs_of(config: &Value) -> BTreeMap<String, Value> {
    config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_name"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

#[test]
fn prometheus_configs_scrape_the_jobs_the_rules_select() {
    let rules = read("alerts/analyzer.rules.yml") + &read("alerts/agent.rules.yml");
    for job in ["faultline-agent", "faultline-analyzer"] {
        assert!(rules.contains(&format!("job=\"{job}\"")), "the rules no longer select {job}");
    }
    for file in ["deploy/prometheus/prometheus.yml", "deploy/prometheus/prometheus-kubernetes.yml"] {
        let docs = yaml::documents(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(docs.len(), 1, "{file}");
        let jobs = jobs_of(&docs[0]);
        assert_eq!(jobs.keys().collect::<Vec<_>>(), ["faultline-agent", "faultline-analyzer"], "{file}");
        for (name, j) in &jobs {
            assert_ne!(j["honor_labels"], true, "{file}: {name} must keep honor_labels false");
            assert!(
                j.get("authorization").is_none() && j.get("bearer_token").is_none(),
                "{file}: /metrics needs no token"
            );
        }
        let analyzer_targets = strs(&jobs["faultline-analyzer"]["static_configs"][0]["targets"]);
        assert!(analyzer_targets.iter().all(|t| t.ends_with(":9440")), "{file}: {analyzer_targets:?}");
        assert!(strs(&docs[0]["rule_files"]).iter().all(|r| r.ends_with(".rules.yml")), "{file}");
    }
    let sd = yaml::documents(&read("deploy/prometheus/agents.example.yml")).unwrap();
    let targets = strs(&sd[0][0]["targets"]);
    assert!(!targets.is_empty() && targets.iter().all(|t| t.ends_with(":9430")), "{targets:?}");
}

#[test]
fn promtool_accepts_the_prometheus_configs_with_the_real_rules() {
    let Some(promtool) = external("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("faultline");
    std::fs::create_dir_all(&etc).unwrap();
    for rules in ["agent.rules.yml", "analyzer.rules.yml"] {
        std::fs::copy(repo().join("alerts").join(rules), etc.join(rules)).unwrap();
    }
    std::fs::copy(repo().join("deploy/prometheus/agents.example.yml"), etc.join("agents.yml")).unwrap();
    std::fs::write(etc.join("ca.pem"), pki().ca_pem).unwrap();
    for file in ["prometheus.yml", "prometheus-kubernetes.yml"] {
        let text = read(&format!("deploy/prometheus/{file}"))
            .replace("/etc/prometheus/faultline/", &format!("{}/", etc.display()));
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&promtool).arg("check").arg("config").arg(&path).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Every Prometheus build must accept both files (the Kubernetes one uses DNS discovery, which
        // Debian's build has, rather than Kubernetes discovery, which it lacks).
        assert!(out.status.success(), "promtool check config {file}:\n{said}");
        assert!(said.contains("2 rule files found"), "{file}: the rules were not loaded:\n{said}");
    }
}
