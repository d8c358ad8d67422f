//! `faultline-analyzer cert init DIR`: a private CA, a server certificate for the analyzer's DNS
//! names and IP addresses signed by it, and the tokens agents and people present, written with
//! private files readable by their owner only. Enough for TLS with your own CA and no other tool.
//!
//! What it writes (see `analyzer/SECURITY.md`, "TLS with your own CA"):
//! - `ca.pem` (give to every agent and CLI: `--ca-cert`), `ca.key` (keep offline);
//! - `analyzer.pem`, `analyzer.key` (`--tls-cert`, `--tls-key`);
//! - `admin.token` (ingest and read; `--token-file` of the analyzer, the CLI's `FAULTLINE_TOKEN`),
//!   `read.token` (read only, for people and dashboards);
//! - `nodes/NODE.token` for every `--node`, and `analyzer-auth.toml` naming them.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA lasts ten years: it is copied to every node, and replacing it means touching them all.
pub const CA_DAYS: u64 = 3650;

/// Default server certificate lifetime: 825 days, the longest most TLS clients accept for a
/// certificate that is not a CA.
pub const SERVER_DAYS: u64 = 825;

/// Random bytes in each token (hex-encoded: 64 characters), as strong as a 256-bit key.
pub const TOKEN_BYTES: usize = 32;

/// `faultline-analyzer cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a CA, a server certificate signed by it and client tokens in DIR
    Init(InitArgs),
}

#[derive(Debug, Args)]
#[command(after_help = INIT_HELP)]
pub struct InitArgs {
    /// Directory to write into (made if missing); existing files are never overwritten without --force
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name or IP address agents and the CLI use to reach the analyzer; repeat for more
    /// [default: localhost and 127.0.0.1]
    #[arg(long = "name", value_name = "NAME|IP")]
    pub names: Vec<String>,
    /// Also make a node token for this node (as the agent's --node-name); repeat for more
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Days the server certificate is valid
    #[arg(long, value_name = "N", default_value_t = SERVER_DAYS)]
    pub days: u64,
    /// Replace files that already exist
    #[arg(long)]
    pub force: bool,
}

const INIT_HELP: &str = "\
Then, on the analyzer host:
  faultline-analyzer --listen 0.0.0.0:9440 --tls-cert DIR/analyzer.pem --tls-key DIR/analyzer.key \\
      --token-file DIR/admin.token
on every node (copy ca.pem and the token):
  faultline-agent --analyzer https://NAME:9440 --ca-cert DIR/ca.pem --token-file DIR/admin.token
and for the CLI:
  faultline --analyzer https://NAME:9440 --ca-cert DIR/ca.pem --token \"$(cat DIR/read.token)\" status";

/// Runs a `cert` subcommand, printing what it wrote.
pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Init(a) => {
            let written = init(&a)?;
            let mut out = std::io::stdout().lock();
            for (path, what) in &written {
                writeln!(out, "wrote {}  ({what})", path.display())?;
            }
            writeln!(out, "\n{}", INIT_HELP.replace("DIR", &a.dir.display().to_string()))?;
            Ok(())
        }
    }
}

/// One file `init` wrote and what it is for.
pub type Written = (PathBuf, &'static str);

/// Writes the CA, the server certificate and the tokens into `a.dir`.
pub fn init(a: &InitArgs) -> anyhow::Result<Vec<Written>> {
    let names =
        if a.names.is_empty() { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { a.names.clone() };
    for n in &names {
        if n.parse::<IpAddr>().is_err() && !valid_dns_name(n) {
            bail!("--name {n:?} is neither an IP address nor a DNS name");
        }
    }
    for n in &a.nodes {
        if n.is_empty() || n.contains(['/', '\\', '\0']) || n.starts_with('.') {
            bail!("--node {n:?} cannot be a file name");
        }
    }
    if a.days == 0 {
        bail!("--days must be at least 1");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot make {}", a.dir.display()))?;
    let mut files: Vec<(PathBuf, String, bool, &'static str)> = Vec::new();

    // The CA.
    let now = time::OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, "faultline CA");
    ca.distinguished_name.push(DnType::OrganizationName, "faultline");
    ca.not_before = now - Duration::from_secs(3600);
    ca.not_after = now + Duration::from_secs(CA_DAYS * 86_400);
    let ca_key = KeyPair::generate().context("cannot make the CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA certificate")?;
    files.push((a.dir.join("ca.pem"), ca_cert.pem(), false, "CA certificate: --ca-cert of every agent and CLI"));
    files.push((a.dir.join("ca.key"), ca_key.serialize_pem(), true, "CA private key: keep it offline"));
    let issuer = Issuer::new(ca, ca_key);

    // The analyzer's certificate, for every name and address given.
    let mut server = CertificateParams::new(names.clone())?;
    server.distinguished_name.push(DnType::CommonName, names[0].as_str());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::from_secs(3600);
    server.not_after = now + Duration::from_secs(a.days.min(CA_DAYS) * 86_400);
    let server_key = KeyPair::generate().context("cannot make the server key")?;
    let server_cert = server.signed_by(&server_key, &issuer).context("cannot sign the server certificate")?;
    files.push((a.dir.join("analyzer.pem"), server_cert.pem(), false, "server certificate: --tls-cert"));
    files.push((a.dir.join("analyzer.key"), server_key.serialize_pem(), true, "server private key: --tls-key"));

    // Tokens.
    files.push((a.dir.join("admin.token"), token(), true, "ingest and read token: the analyzer's --token-file"));
    files.push((a.dir.join("read.token"), token(), true, "read-only token: people, dashboards, the CLI"));
    if !a.nodes.is_empty() {
        let mut auth = String::from(
            "# Paste into the analyzer's TOML config: the read token, and one token per node that is good\n\
             # for that node's reports only (analyzer/SECURITY.md).\n[auth]\n",
        );
        auth.push_str(&format!(
            "read_token_files = [{:?}]\n\n[auth.node_token_files]\n",
            path_str(&a.dir.join("read.token"))
        ));
        for n in &a.nodes {
            let p = a.dir.join("nodes").join(format!("{n}.token"));
            auth.push_str(&format!("{:?} = {:?}\n", n, path_str(&p)));
            files.push((p, token(), true, "node token: that node's agent --token-file"));
        }
        files.push((a.dir.join("analyzer-auth.toml"), auth, false, "[auth] section naming the token files"));
    }

    if !a.force {
        let existing: Vec<String> = files.iter().filter(|f| f.0.exists()).map(|f| f.0.display().to_string()).collect();
        if !existing.is_empty() {
            bail!("{} already exist; pass --force to replace them", existing.join(", "));
        }
    }
    let mut written = Vec::new();
    for (path, text, private, what) in files {
        write_file(&path, &text, private)?;
        written.push((path, what));
    }
    Ok(written)
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A random token, hex.
fn token() -> String {
    let mut b = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b) + "\n"
}

/// Letters, digits, hyphens and dots, labels of 1–63 characters, a leading `*.` allowed.
fn valid_dns_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Writes `text` to `path`, private files with mode 0600 from the start (never world-readable,
/// not even for a moment).
fn write_file(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot make {}", parent.display()))?;
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if private {
        // An existing file (--force) keeps its old mode through open(); set it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> InitArgs {
        InitArgs {
            dir: dir.to_path_buf(),
            names: vec!["analyzer.example".into(), "10.1.2.3".into()],
            nodes: vec!["node-0001".into()],
            days: 30,
            force: false,
        }
    }

    #[test]
    fn init_writes_ca_server_cert_and_private_tokens() {
        let d = tempfile::tempdir().unwrap();
        let written = init(&args(d.path())).unwrap();
        let names: Vec<String> = written.iter().map(|w| w.0.file_name().unwrap().to_string_lossy().into()).collect();
        for want in ["ca.pem", "ca.key", "analyzer.pem", "analyzer.key", "admin.token", "read.token", "node-0001.token"]
        {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        let tok = std::fs::read_to_string(d.path().join("admin.token")).unwrap();
        assert_eq!(tok.trim().len(), TOKEN_BYTES * 2);
        assert_ne!(tok, std::fs::read_to_string(d.path().join("read.token")).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| std::fs::metadata(d.path().join(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("ca.key"), 0o600);
            assert_eq!(mode("analyzer.key"), 0o600);
            assert_eq!(mode("nodes/node-0001.token"), 0o600);
            assert_eq!(mode("ca.pem"), 0o644);
        }
        let auth = std::fs::read_to_string(d.path().join("analyzer-auth.toml")).unwrap();
        let t: toml::Table = toml::from_str(&auth).unwrap();
        assert!(t["auth"]["node_token_files"]["node-0001"].as_str().unwrap().ends_with("node-0001.token"), "{auth}");
        // The server certificate is accepted by the analyzer's own TLS loader.
        let loaded = crate::tls::server_config(&d.path().join("analyzer.pem"), &d.path().join("analyzer.key"));
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn init_refuses_to_overwrite_and_bad_names() {
        let d = tempfile::tempdir().unwrap();
        init(&args(d.path())).unwrap();
        let e = init(&args(d.path())).unwrap_err().to_string();
        assert!(e.contains("--force") && e.contains("ca.pem"), "{e}");
        let mut a = args(d.path());
        a.force = true;
        init(&a).unwrap();
        a.names = vec!["not a name".into()];
        assert!(init(&a).unwrap_err().to_string().contains("neither an IP"));
        a.names = vec![];
        a.nodes = vec!["../x".into()];
        assert!(init(&a).is_err());
    }

    #[test]
    fn dns_names() {
        assert!(valid_dns_name("analyzer.example") && valid_dns_name("*.svc.cluster.local") && valid_dns_name("a"));
        assert!(!valid_dns_name("-a") && !valid_dns_name("a..b") && !valid_dns_name("a b") && !valid_dns_name(""));
    }
}
