//! The systemd units and the analyzer configs meant to run under them work together.
//!
//! - `systemd-analyze verify` accepts both units (with ExecStart pointed at the built binaries), with
//!   no warning at all: an unknown or misspelt directive is only a warning to systemd, and a
//!   sandbox setting that is silently ignored is worse than none.
//! - A dry run of each analyzer config under deploy/ meant for the unit (`analyzer.example.toml`,
//!   `slurm/analyzer.toml`) in a tree that holds only what the unit gives the service: its
//!   StateDirectory (empty, writable), its LoadCredential= files under /run/credentials/UNIT/, and
//!   world-readable files under /etc. Every absolute path of the config is moved into that tree; the
//!   analyzer must start. A database outside the StateDirectory (read-only under
//!   ProtectSystem=strict) or a token in a root-only file that DynamicUser cannot read has no place
//!   in the tree, and the analyzer stops with exit code 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, external, wait_for};

const UNIT: &str = "faultline-analyzer.service";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=Value` lines of a unit's [Service] section, in order (keys may repeat).
fn service_keys(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn systemd_analyze_verify_accepts_both_units_without_a_warning() {
    let Some(sa) = external("systemd-analyze") else { return };
    let dir = tempfile::tempdir().unwrap();
    for (unit, binary) in
        [("faultline-analyzer.service", "faultline-analyzer"), ("faultline-agent.service", "faultline-agent")]
    {
        let text = read(&format!("deploy/systemd/{unit}"))
            .replace(&format!("/usr/bin/{binary}"), &bin(binary).display().to_string());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&sa).arg("verify").arg(&path).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Lines about the host's own units (this machine may not boot with systemd) are not ours.
        let ours: Vec<&str> = said.lines().filter(|l| l.contains(unit)).collect();
        assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify {unit}:\n{said}");
    }
}

/// Moves the config's absolute paths into `root` as the unit lays them out; returns the config.
fn in_unit_tree(config: &str, unit: &str, root: &Path) -> String {
    let keys = service_keys(unit);
    let state = keys.iter().find(|(k, _)| k == "StateDirectory").map(|(_, v)| v.clone()).expect("StateDirectory");
    assert!(keys.iter().any(|(k, v)| k == "ProtectSystem" && v == "strict"), "the unit is expected to be strict");
    // The StateDirectory exists and is the service's.
    std::fs::create_dir_all(root.join("var/lib").join(&state)).unwrap();
    // Credentials: a copy of each, under /run/credentials/UNIT/NAME.
    let creds: BTreeMap<String, String> = keys
        .iter()
        .filter(|(k, _)| k == "LoadCredential")
        .map(|(_, v)| {
            let (name, src) = v.split_once(':').expect("LoadCredential=NAME:PATH");
            (name.to_string(), src.to_string())
        })
        .collect();
    let cred_dir = root.join("run/credentials").join(UNIT);
    std::fs::create_dir_all(&cred_dir).unwrap();
    for name in creds.keys() {
        let body = if name.starts_with("tls") { faultline_tls_key() } else { format!("{name}-value\n") };
        std::fs::write(cred_dir.join(name), body).unwrap();
    }
    // World-readable files the configs name under /etc.
    let etc = root.join("etc/faultline");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    std::fs::write(etc.join("topology.toml"), read("deploy/topology.example.toml")).unwrap();
    std::fs::write(etc.join("tls/analyzer.pem"), faultline_tls_cert()).unwrap();
    // Everything absolute in the config moves under the root; what the unit does not provide is
    // simply not there.
    let mut out = String::new();
    for line in config.lines() {
        let mut l = line.to_string();
        if !line.trim_start().starts_with('#') {
            for prefix in ["/var/lib/", "/run/credentials/", "/etc/faultline/"] {
                l = l.replace(&format!("\"{prefix}"), &format!("\"{}/{}", root.display(), &prefix[1..]));
            }
            // The Slurm adapter's scontrol and SLURM_CONF are the host's, not the unit's business.
            if l.trim_start().starts_with("scontrol") {
                l = "scontrol = \"/bin/true\"".into();
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

static PKI: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// A certificate and key made by `faultline-analyzer cert init`, for configs with TLS.
fn pki() -> &'static (String, String) {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new(bin("faultline-analyzer")).args(["cert", "init"]).arg(dir.path()).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        (
            std::fs::read_to_string(dir.path().join("analyzer.pem")).unwrap(),
            std::fs::read_to_string(dir.path().join("analyzer.key")).unwrap(),
        )
    })
}

fn faultline_tls_cert() -> String {
    pki().0.clone()
}

fn faultline_tls_key() -> String {
    pki().1.clone()
}

fn dry_run(config_file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let unit = read(&format!("deploy/systemd/{UNIT}"));
    let text = in_unit_tree(&read(config_file), &unit, &root);
    // Receivers point at hosts that do not exist here; the analyzer only needs them to parse.
    let config = dir.path().join("analyzer.toml");
    std::fs::write(&config, &text).unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--config").arg(&config).args(["--listen", "127.0.0.1:0", "--dry-run"]).env("RUST_LOG", "warn");
    let mut p = Proc::spawn_plain(cmd);
    let line = wait_for(Duration::from_secs(60), "the analyzer to start or stop", || {
        if let Some(l) = p.next_line(Duration::from_millis(500)) {
            return Some(l);
        }
        p.child.try_wait().ok().flatten().map(|st| format!("exited {st:?}: {}", p.stderr()))
    });
    assert!(line.starts_with("listening on "), "{config_file} under {UNIT}: {line}\nconfig:\n{text}");
    // The database was made where the unit lets the service write.
    let state_db = std::fs::read_dir(root.join("var/lib/faultline-analyzer")).unwrap().count();
    assert!(state_db > 0, "{config_file}: nothing written in the StateDirectory");
}

#[test]
fn analyzer_example_config_runs_in_the_units_tree() {
    dry_run("deploy/analyzer.example.toml");
}

#[test]
fn slurm_analyzer_config_runs_in_the_units_tree() {
    dry_run("deploy/slurm/analyzer.toml");
}
