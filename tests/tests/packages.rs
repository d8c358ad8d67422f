//! The Debian packages work as an operator would use them, and every binary reports one version.
//!
//! - `versions_agree`: `faultline-agent --version`, `faultline-analyzer --version`, `faultline
//!   --version`, the workspace version and `faultline_build_info{version=...}` on both `/metrics`
//!   endpoints are the same string (runs anywhere).
//! - `debs_install_run_and_purge`: `scripts/package-debs.sh` (`cargo deb`) builds the three packages
//!   from the binaries this test run built (`PROFILE=dev NO_BUILD=1`), with the CLI's completions and
//!   man page, `dpkg -i` installs them on this machine, the installed
//!   binaries run (`faultline-agent --once --no-gpu`, the analyzer on loopback, `faultline status`
//!   against it), the maintainer scripts made the users and directories, and `dpkg --purge` leaves
//!   none of the packaged files behind. Needs root, dpkg and cargo-deb: under CI (`CI=true`) a missing
//!   one fails the test; elsewhere it is skipped with a loud NOT RUN line. It refuses to touch a
//!   machine where a faultline package is already installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use faultline_tests::{Proc, bin, http, in_ci, wait_for};

const PACKAGES: [&str; 3] = ["faultline-agent", "faultline-analyzer", "faultline"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `NAME VERSION` from `<binary> --version`: the version.
fn version_of(binary: &Path) -> String {
    let out = run(Command::new(binary).arg("--version"));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or_default();
    assert_eq!(Some(name), binary.file_name().and_then(|n| n.to_str()), "{text:?}");
    words.next().unwrap_or_else(|| panic!("{} --version printed {text:?}", binary.display())).to_string()
}

/// The `version` label of `faultline_build_info` in a Prometheus text exposition.
fn build_info_version(metrics: &str) -> Option<String> {
    let line = metrics.lines().find(|l| l.starts_with("faultline_build_info{"))?;
    let rest = line.split("version=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn scrape(url: &str) -> String {
    wait_for(Duration::from_secs(30), &format!("{url}/metrics"), || {
        let body = http().get(format!("{url}/metrics")).send().ok()?.text().ok()?;
        body.contains("faultline_build_info").then_some(body)
    })
}

fn analyzer(binary: &Path, dir: &Path) -> Proc {
    let mut cmd = Command::new(binary);
    cmd.args(["--listen", "127.0.0.1:0", "--db"]).arg(dir.join("faultline.db"));
    Proc::spawn(cmd)
}

fn agent(binary: &Path, dir: &Path) -> Proc {
    let mut cmd = Command::new(binary);
    cmd.args(["--no-gpu", "--kmsg", "/nonexistent/kmsg", "--interval", "200ms"])
        .args(["--listen", "127.0.0.1:0", "--progress-listen", "127.0.0.1:0", "--spool-dir"])
        .arg(dir.join("spool"));
    Proc::spawn(cmd)
}

/// Checks that the three binaries at `agent`, `analyzer`, `cli` report `want` everywhere.
fn check_versions(agent_bin: &Path, analyzer_bin: &Path, cli_bin: &Path, want: &str) {
    for b in [agent_bin, analyzer_bin, cli_bin] {
        assert_eq!(version_of(b), want, "{} --version", b.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(analyzer_bin, dir.path());
    assert_eq!(build_info_version(&scrape(&a.url)).as_deref(), Some(want), "analyzer faultline_build_info");
    let g = agent(agent_bin, dir.path());
    assert_eq!(build_info_version(&scrape(&g.url)).as_deref(), Some(want), "agent faultline_build_info");
}

/// The workspace version, from the root Cargo.toml's `[workspace.package]`.
fn workspace_version() -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = text.split("[workspace.package]").nth(1).expect("[workspace.package]");
    let line = section.lines().find(|l| l.trim_start().starts_with("version")).expect("version =");
    line.split('"').nth(1).expect("quoted version").to_string()
}

#[test]
fn versions_agree() {
    let want = workspace_version();
    assert_eq!(want, env!("CARGO_PKG_VERSION"));
    check_versions(&bin("faultline-agent"), &bin("faultline-analyzer"), &bin("faultline"), &want);
    let changelog = std::fs::read_to_string(repo().join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains(&format!("## [{want}]")), "CHANGELOG.md has no section for {want}");
}

/// Why the package test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref().ok() != Some("0") {
        return Some("it must run as root (dpkg -i)".into());
    }
    for tool in ["dpkg", "dpkg-query"] {
        if Command::new(tool).arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
            return Some(format!("{tool} is not available"));
        }
    }
    let deb = Command::new("cargo").args(["deb", "--version"]).output();
    if deb.map(|o| !o.status.success()).unwrap_or(true) {
        return Some("cargo-deb is not installed (scripts/install-test-deps.sh installs it)".into());
    }
    None
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Purges the packages when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
    }
}

#[test]
fn debs_install_run_and_purge() {
    if let Some(why) = missing_prerequisite() {
        if in_ci() {
            panic!("the package test must run under CI, but {why}");
        }
        eprintln!("NOT RUN: debs_install_run_and_purge: {why}");
        return;
    }
    if let Some(p) = PACKAGES.iter().find(|p| installed(p)) {
        if in_ci() {
            panic!("{p} is already installed on the CI machine; the package test will not replace it");
        }
        eprintln!("NOT RUN: debs_install_run_and_purge: {p} is already installed here; not touching it");
        return;
    }
    // The binaries this test run built, packaged as they are (cargo-deb maps target/release/ in the
    // asset lists to the profile's directory).
    for p in ["faultline-agent", "faultline-analyzer", "faultline"] {
        bin(p);
    }
    // scripts/package-debs.sh, as a release is packaged, on this run's binaries.
    let out = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(repo().join("scripts/package-debs.sh"))
        .env("PROFILE", "dev")
        .env("NO_BUILD", "1")
        .env("FAST", "1")
        .env("OUT", out.path()));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    assert_eq!(debs.len(), 3, "{debs:?}");
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").args(&debs));

    // What the packages and their maintainer scripts put on the machine.
    for f in [
        "/usr/bin/faultline-agent",
        "/usr/bin/faultline-analyzer",
        "/usr/bin/faultline",
        "/lib/systemd/system/faultline-agent.service",
        "/lib/systemd/system/faultline-analyzer.service",
        "/etc/faultline/agent.toml",
        "/etc/faultline/analyzer.toml",
        "/etc/faultline/topology.toml",
        "/usr/share/bash-completion/completions/faultline",
        "/usr/share/man/man1/faultline.1.gz",
    ] {
        assert!(Path::new(f).is_file(), "{f} is not installed");
    }
    for user in ["faultline-agent", "faultline-analyzer"] {
        run(Command::new("getent").args(["passwd", user]));
        let dir = format!("/var/lib/{user}");
        let o = run(Command::new("stat").args(["-c", "%U %a"]).arg(&dir));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("{user} 700"), "{dir}");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/faultline-agent.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/faultline-agent "), "the unit starts a binary that is not installed");

    // The installed binaries run.
    let report = run(Command::new("/usr/bin/faultline-agent").args(["--once", "--no-gpu", "--kmsg", "/nonexistent"]));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("--once prints a JSON report");
    assert!(report["node"].as_str().is_some_and(|n| !n.is_empty()), "{report}");
    let dir = tempfile::tempdir().unwrap();
    let a = analyzer(Path::new("/usr/bin/faultline-analyzer"), dir.path());
    let status = run(Command::new("/usr/bin/faultline").args(["--analyzer", &a.url, "status"]));
    assert!(!status.stdout.is_empty(), "faultline status printed nothing");
    drop(a);
    check_versions(
        Path::new("/usr/bin/faultline-agent"),
        Path::new("/usr/bin/faultline-analyzer"),
        Path::new("/usr/bin/faultline"),
        &workspace_version(),
    );

    // Removal leaves nothing of ours behind (the system users stay, as Debian packages do).
    run(Command::new("dpkg").arg("--purge").args(PACKAGES));
    for p in PACKAGES {
        assert!(!installed(p), "{p} is still installed after dpkg --purge");
    }
    for f in [
        "/usr/bin/faultline-agent",
        "/usr/bin/faultline-analyzer",
        "/usr/bin/faultline",
        "/lib/systemd/system/faultline-agent.service",
        "/lib/systemd/system/faultline-analyzer.service",
        "/etc/faultline",
        "/var/lib/faultline-agent",
        "/var/lib/faultline-analyzer",
    ] {
        assert!(!Path::new(f).exists(), "{f} is left after dpkg --purge");
    }
}
