//! The agent's settings: an optional TOML file (`--config`), overridden by command-line flags, checked
//! as a whole before anything starts. Zero flags must work on any Linux host.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The shortest report interval accepted: IB counters refresh about once a second and /proc/stat
/// counts in 10 ms ticks, so faster only burns CPU.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest report interval accepted (`proto` refuses `interval_ms` above one hour).
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Default spool size bound: 256 MiB holds about a day of 10 s reports of a busy 8-GPU node.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Where the spool and the sequence file live when nothing is configured.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/faultline-agent";

/// The TOML config file. Every field is optional in the file; flags override it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Node name, the root of every component id of this host. Default: the host name.
    pub node_name: Option<String>,
    /// Address for `/metrics` and `/healthz`. Default `0.0.0.0:9430`.
    pub listen: String,
    /// Analyzer base URL (`http://analyzer:9440`). Default: none (no pushing, `/metrics` only).
    pub analyzer: Option<String>,
    /// Bearer token for the analyzer. Prefer `token_file`, which keeps it out of config dumps.
    pub token: Option<String>,
    /// File holding the bearer token (surrounding whitespace is ignored).
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the analyzer's TLS certificate. When set, only this CA is
    /// trusted for an `https://` analyzer (the system roots are not). Default: the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Report interval, e.g. `500ms`, `10s`, `2m`. Default `10s`.
    pub interval: String,
    /// Spool directory (also holds the persisted `seq`). Default `/var/lib/faultline-agent`, or
    /// `$TMPDIR/faultline-agent` when that is not writable.
    pub spool_dir: Option<PathBuf>,
    /// Upper bound on the spool's size in bytes; the oldest reports are dropped past it. Default 256 MiB.
    pub spool_max_bytes: u64,
    /// Root of sysfs. Default `/sys`.
    pub sysfs_root: PathBuf,
    /// Root of procfs. Default `/proc`.
    pub procfs_root: PathBuf,
    /// NVML library to load instead of the system's `libnvidia-ml.so.1`.
    pub nvml_lib: Option<PathBuf>,
    /// Do not load NVML at all. Default false.
    pub no_gpu: bool,
    /// Kernel log to follow. Default `/dev/kmsg`.
    pub kmsg: PathBuf,
    /// Address of the local progress API for training loops. Default `127.0.0.1:9431`.
    pub progress_listen: String,
    /// Also serve the progress API on this Unix socket. Default: none.
    pub progress_socket: Option<PathBuf>,
    /// Training-job discovery settings (`[jobs]`).
    pub jobs: faultline_agent::collect::jobs::JobsConfig,
    /// OpenTelemetry collector base URL (`http://otel-collector:4318`): metrics are also sent there as
    /// OTLP/HTTP protobuf to `<url>/v1/metrics` every interval. Default: none (no OTLP export).
    pub otlp_endpoint: Option<String>,
    /// Which NICs are fabric NICs and which netdevs are reported (`[nics]`).
    pub nics: faultline_agent::collect::fabric::NicsConfig,
    /// How many GPUs this node should have; fewer in a report is a GPU missing. Default: the count
    /// NVML showed at the agent's first start, persisted in the spool directory (`expected-gpus`).
    pub expected_gpus: Option<u32>,
    /// Export the GPU series under dcgm-exporter's `DCGM_FI_*` names too. Default true: faultline's
    /// dashboards and alerts read them and most nodes run no dcgm-exporter. Set false where
    /// dcgm-exporter runs on the node, so that no series are exported twice; the dashboards then read
    /// dcgm-exporter's (same names and labels).
    pub dcgm_compat: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            listen: "0.0.0.0:9430".into(),
            analyzer: None,
            token: None,
            token_file: None,
            ca_cert: None,
            interval: "10s".into(),
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            sysfs_root: PathBuf::from("/sys"),
            procfs_root: PathBuf::from("/proc"),
            nvml_lib: None,
            no_gpu: false,
            kmsg: PathBuf::from("/dev/kmsg"),
            progress_listen: "127.0.0.1:9431".into(),
            progress_socket: None,
            jobs: Default::default(),
            otlp_endpoint: None,
            nics: Default::default(),
            expected_gpus: None,
            dcgm_compat: true,
        }
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {} is invalid", path.display()))
    }
}

/// Command-line flags that override the file (all optional here; clap lives in main.rs).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub node_name: Option<String>,
    pub listen: Option<String>,
    pub analyzer: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub interval: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: Option<u64>,
    pub sysfs_root: Option<PathBuf>,
    pub procfs_root: Option<PathBuf>,
    pub nvml_lib: Option<PathBuf>,
    pub no_gpu: bool,
    pub kmsg: Option<PathBuf>,
    pub progress_listen: Option<String>,
    pub progress_socket: Option<PathBuf>,
    /// `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
}

/// Checked settings, ready to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub listen: SocketAddr,
    pub analyzer: Option<String>,
    pub token: Option<String>,
    /// CA to pin for an `https://` analyzer.
    pub ca_cert: Option<PathBuf>,
    pub interval: Duration,
    /// As configured; `None` means the default with its fallback (see `spool_dir()`).
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub sysfs_root: PathBuf,
    pub procfs_root: PathBuf,
    pub nvml_lib: Option<PathBuf>,
    pub no_gpu: bool,
    pub kmsg: PathBuf,
    pub progress_listen: SocketAddr,
    pub progress_socket: Option<PathBuf>,
    pub jobs: faultline_agent::collect::jobs::JobsConfig,
    /// OTLP/HTTP collector base URL; `None`: no OTLP export.
    pub otlp_endpoint: Option<String>,
    pub nics: faultline_agent::collect::fabric::NicsConfig,
    /// Configured expected GPU count; `None`: learned at the first start.
    pub expected_gpus: Option<u32>,
    /// Whether the `DCGM_FI_*` families are exported (`dcgm_compat`).
    pub dcgm_compat: bool,
}

impl Settings {
    /// Merge flags over the file and check every value; nothing is started yet.
    pub fn build(file: FileConfig, o: Overrides) -> anyhow::Result<Settings> {
        let node = match o.node_name.or(file.node_name) {
            Some(n) => n,
            None => hostname().context("cannot learn the host name; pass --node-name")?,
        };
        if !faultline_proto::id::valid_name(&node) {
            bail!("node name {node:?} is not usable: it must be 1-128 bytes without '/', spaces or control characters");
        }
        let listen = resolve("--listen", &o.listen.unwrap_or(file.listen))?;
        let progress_listen = resolve("--progress-listen", &o.progress_listen.unwrap_or(file.progress_listen))?;
        let interval_s = o.interval.unwrap_or(file.interval);
        let interval = humantime::parse_duration(&interval_s)
            .with_context(|| format!("--interval {interval_s:?} is not a duration like 500ms, 10s or 2m"))?;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            bail!("--interval {interval_s} is outside {MIN_INTERVAL:?}..={MAX_INTERVAL:?}");
        }
        let token_file = o.token_file.or(file.token_file);
        let token = match (o.token.or(file.token), token_file) {
            (Some(_), Some(_)) => bail!("give the analyzer token either directly or as a file, not both"),
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            bail!("the analyzer token is empty");
        }
        let analyzer = o.analyzer.or(file.analyzer);
        if let Some(a) = &analyzer
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            bail!("--analyzer {a:?} must be a URL starting with http:// or https://");
        }
        let ca_cert = o.ca_cert.or(file.ca_cert);
        if let Some(p) = &ca_cert
            && !p.is_file()
        {
            bail!("--ca-cert {} is not a readable file", p.display());
        }
        let spool_max_bytes = o.spool_max_bytes.unwrap_or(file.spool_max_bytes);
        if spool_max_bytes == 0 {
            bail!("--spool-max-bytes must be above 0");
        }
        let sysfs_root = o.sysfs_root.unwrap_or(file.sysfs_root);
        let otlp_endpoint = o.otlp_endpoint.or(file.otlp_endpoint).filter(|e| !e.trim().is_empty());
        if let Some(e) = &otlp_endpoint
            && let Err(err) = faultline_agent::export::otlp::metrics_url(e)
        {
            bail!("--otlp-endpoint: {err}");
        }
        Ok(Settings {
            node,
            listen,
            analyzer,
            token,
            ca_cert,
            interval,
            spool_dir: o.spool_dir.or(file.spool_dir),
            spool_max_bytes,
            sysfs_root: sysfs_root.clone(),
            procfs_root: o.procfs_root.unwrap_or(file.procfs_root),
            nvml_lib: o.nvml_lib.or(file.nvml_lib),
            no_gpu: o.no_gpu || file.no_gpu,
            kmsg: o.kmsg.unwrap_or(file.kmsg),
            progress_listen,
            progress_socket: o.progress_socket.or(file.progress_socket),
            jobs: faultline_agent::collect::jobs::JobsConfig {
                sysfs_root: file.jobs.sysfs_root.clone().or_else(|| Some(sysfs_root.clone())),
                ..file.jobs
            },
            otlp_endpoint,
            nics: file.nics,
            expected_gpus: file.expected_gpus,
            dcgm_compat: file.dcgm_compat,
        })
    }

    /// The spool directory, created if needed. A configured one must be writable; the default falls
    /// back to `$TMPDIR/faultline-agent` when `/var/lib` is not writable (an unprivileged run).
    pub fn spool_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.spool_dir {
            writable_dir(d).with_context(|| format!("spool directory {} is not writable", d.display()))?;
            return Ok(d.clone());
        }
        let default = PathBuf::from(DEFAULT_SPOOL_DIR);
        match writable_dir(&default) {
            Ok(()) => Ok(default),
            Err(e) => {
                let fallback = std::env::temp_dir().join("faultline-agent");
                writable_dir(&fallback).with_context(|| {
                    format!(
                        "neither {} ({e}) nor {} is a writable spool directory",
                        default.display(),
                        fallback.display()
                    )
                })?;
                tracing::info!(default = %default.display(), used = %fallback.display(), reason = %e, "default spool directory not writable; using the fallback");
                Ok(fallback)
            }
        }
    }

    /// The spool directory `--once` reads the sequence number from, without creating anything.
    pub fn spool_dir_read_only(&self) -> PathBuf {
        if let Some(d) = &self.spool_dir {
            return d.clone();
        }
        let default = PathBuf::from(DEFAULT_SPOOL_DIR);
        if default.join("seq").exists() { default } else { std::env::temp_dir().join("faultline-agent") }
    }
}

fn writable_dir(d: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(d)?;
    let probe = d.join(".write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

fn resolve(flag: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("{flag} {addr:?} is not a host:port address"))?
        .next()
        .with_context(|| format!("{flag} {addr:?} resolves to no address"))
}

/// The kernel's host name (the node name default).
fn hostname() -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        bail!("the host name is empty");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_flags_give_working_defaults() {
        let s = Settings::build(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(s.listen.port(), 9430);
        assert_eq!(s.progress_listen.port(), 9431);
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.spool_max_bytes, DEFAULT_SPOOL_MAX_BYTES);
        assert!(!s.node.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig =
            toml::from_str("interval = \"2s\"\nnode_name = \"from-file\"\nanalyzer = \"http://a:1\"\n").unwrap();
        let o = Overrides { node_name: Some("from-flag".into()), ..Default::default() };
        let s = Settings::build(file, o).unwrap();
        assert_eq!(s.node, "from-flag");
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.analyzer.as_deref(), Some("http://a:1"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_a_reason() {
        assert!(toml::from_str::<FileConfig>("intervall = \"2s\"").is_err());
        let bad = |o: Overrides| Settings::build(FileConfig::default(), o).unwrap_err().to_string();
        assert!(bad(Overrides { interval: Some("soon".into()), ..Default::default() }).contains("--interval"));
        assert!(bad(Overrides { interval: Some("1ms".into()), ..Default::default() }).contains("outside"));
        assert!(bad(Overrides { analyzer: Some("analyzer:9440".into()), ..Default::default() }).contains("http://"));
        assert!(bad(Overrides { node_name: Some("a/b".into()), ..Default::default() }).contains("node name"));
        assert!(bad(Overrides { listen: Some("nowhere".into()), ..Default::default() }).contains("--listen"));
    }

    #[test]
    fn nics_scheduler_and_expected_gpus_come_from_the_file() {
        let file: FileConfig = toml::from_str(
            "expected_gpus = 8\n[nics]\nfabric_include = [\"ens1f*\"]\ncollect_nonfabric_netdevs = true\n\
             [jobs.scheduler]\nscontrol = \"/opt/slurm/bin/scontrol\"\nkubelet_pods = \"/run/pods.json\"\n",
        )
        .unwrap();
        let s = Settings::build(file, Overrides::default()).unwrap();
        assert_eq!(s.expected_gpus, Some(8));
        assert!(s.dcgm_compat, "dcgm_compat defaults to on");
        assert_eq!(s.nics.fabric_include, vec!["ens1f*".to_string()]);
        assert!(s.nics.collect_nonfabric_netdevs);
        assert!(s.nics.netdev_excluded("docker0"), "defaults kept for keys not given");
        assert_eq!(s.jobs.scheduler.scontrol, PathBuf::from("/opt/slurm/bin/scontrol"));
        assert_eq!(s.jobs.scheduler.kubelet_pods.as_deref(), Some("/run/pods.json"));
        assert!(s.jobs.scheduler.slurm);
        assert!(toml::from_str::<FileConfig>("[nics]\nfabric = true\n").is_err());
        assert!(toml::from_str::<FileConfig>("[jobs.scheduler]\nslurmm = true\n").is_err());
        let d = Settings::build(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!((d.expected_gpus, d.nics.collect_nonfabric_netdevs), (None, false));
    }

    #[test]
    fn otlp_endpoint_from_file_or_flag_must_be_a_url() {
        let file: FileConfig = toml::from_str("otlp_endpoint = \"http://collector:4318\"\n").unwrap();
        let s = Settings::build(file.clone(), Overrides::default()).unwrap();
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        let o = Overrides { otlp_endpoint: Some("http://other:4318".into()), ..Default::default() };
        assert_eq!(Settings::build(file, o).unwrap().otlp_endpoint.as_deref(), Some("http://other:4318"));
        let o = Overrides { otlp_endpoint: Some("collector:4318".into()), ..Default::default() };
        assert!(Settings::build(FileConfig::default(), o).unwrap_err().to_string().contains("--otlp-endpoint"));
        // An empty value (OTEL_EXPORTER_OTLP_ENDPOINT= in an environment) means no export.
        let o = Overrides { otlp_endpoint: Some(String::new()), ..Default::default() };
        assert_eq!(Settings::build(FileConfig::default(), o).unwrap().otlp_endpoint, None);
        assert_eq!(Settings::build(FileConfig::default(), Overrides::default()).unwrap().otlp_endpoint, None);
    }
}
