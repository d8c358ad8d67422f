//! The agent's settings: `Options` names each one once, as a flag and as a key of the optional TOML
//! file (`--config`); flags override the file (`Options::merge`), and `Settings::build` checks the
//! whole and applies the defaults before anything starts. Zero flags must work on any Linux host.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The shortest report interval accepted: IB counters refresh about once a second and /proc/stat
/// counts in 10 ms ticks, so faster only burns CPU.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest report interval accepted (`proto` refuses `interval_ms` above one hour).
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Default spool size bound: 256 MiB holds about a day of 10 s reports of a busy 8-GPU node.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Where the spool and the sequence file live when nothing is configured.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/faultline-agent";

/// Default address for `/metrics` and `/healthz`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9430";
/// Default address of the local progress API.
pub const DEFAULT_PROGRESS_LISTEN: &str = "127.0.0.1:9431";
/// Default report interval.
pub const DEFAULT_INTERVAL: &str = "10s";

/// Every agent setting, written once: each field is a command-line flag (clap, flattened into the
/// CLI) and a key of the TOML config file (serde), except the tables and file-only keys marked
/// `arg(skip)`. A field is `None` (or false) where it was not given; `Settings::build` applies the
/// defaults. Precedence is flag > file > default, merged in one place (`Options::merge`).
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Node name, the root of every component id of this host (default: the host name).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Address for /metrics and /healthz (default 0.0.0.0:9430).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Analyzer base URL, e.g. http://analyzer:9440 (default: do not push, /metrics only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyzer: Option<String>,
    /// Analyzer bearer token. Prefer the token file, which keeps it out of config dumps.
    #[arg(long, env = "FAULTLINE_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// File holding the analyzer bearer token (surrounding whitespace is ignored).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate that alone may vouch for an https:// analyzer (pins it; system roots off).
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Report interval: 500ms, 10s, 2m (default 10s).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Spool directory, also holds the persisted report sequence number (default
    /// /var/lib/faultline-agent, or $TMPDIR/faultline-agent when that is not writable).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Spool size bound in bytes (default 256 MiB); the oldest reports are dropped past it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<u64>,
    /// Root of sysfs (default /sys).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysfs_root: Option<PathBuf>,
    /// Root of procfs (default /proc).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procfs_root: Option<PathBuf>,
    /// NVML library to load instead of libnvidia-ml.so.1.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml_lib: Option<PathBuf>,
    /// Do not load NVML (default false).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_gpu: bool,
    /// Kernel log to follow (default /dev/kmsg).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmsg: Option<PathBuf>,
    /// Progress API address for training loops (default 127.0.0.1:9431).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_listen: Option<String>,
    /// Also serve the progress API on this Unix socket (default: none).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_socket: Option<PathBuf>,
    /// OpenTelemetry collector base URL: also export metrics as OTLP/HTTP protobuf to URL/v1/metrics
    /// every interval through the OpenTelemetry SDK, which honours the OTEL_EXPORTER_OTLP_* variables
    /// (default: none, no OTLP export).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Training-job discovery settings (`[jobs]`; file only).
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub jobs: Option<faultline_agent::collect::jobs::JobsConfig>,
    /// Which NICs are fabric NICs and which netdevs are reported (`[nics]`; file only).
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub nics: Option<faultline_agent::collect::fabric::NicsConfig>,
    /// How many GPUs this node should have; fewer in a report is a GPU missing. Default: the count
    /// NVML showed at the agent's first start, persisted in the spool directory (`expected-gpus`).
    /// File only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub expected_gpus: Option<u32>,
    /// Export the GPU series under dcgm-exporter's `DCGM_FI_*` names too. Default true: faultline's
    /// dashboards and alerts read them and most nodes run no dcgm-exporter. Set false where
    /// dcgm-exporter runs on the node, so that no series are exported twice; the dashboards then read
    /// dcgm-exporter's (same names and labels). File only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub dcgm_compat: Option<bool>,
    /// The cluster's name: the `cluster` resource attribute of the OTLP export (the analyzer's
    /// `[notify] cluster` and Prometheus's `cluster` label should say the same). Not a `/metrics`
    /// label: Prometheus gives scraped series their `cluster` from the target or external labels, and
    /// an exported one would clash with it. Default: none. File only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub cluster: Option<String>,
    /// The kubelet's pod-resources socket: label GPU series with the `pod`, `namespace` and
    /// `container` holding each GPU (or MIG device), as dcgm-exporter does on Kubernetes. Usually
    /// `/var/lib/kubelet/pod-resources/kubelet.sock` (mount it into the agent's pod). Default: none.
    /// File only.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub pod_resources_socket: Option<PathBuf>,
    /// Active fabric probes (`[probe]`; file only). Off unless `enabled = true`.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub probe: Option<faultline_agent::probe::ProbeConfig>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A config file as read: checked against `Options` (an unknown key or a bad value is refused by
/// name), and kept as its table so that `Options::merge` lays the flags over exactly the keys it has.
#[derive(Debug, Clone, Default)]
pub struct FileConfig(toml::Table);

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {} is invalid", path.display()))
    }

    /// Parse and check config text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        toml::from_str::<Options>(text)?;
        Ok(FileConfig(toml::from_str(text)?))
    }
}

impl Options {
    /// `self` (the flags) over `file` over nothing: a flag that was given replaces the file's key.
    pub fn merge(&self, file: FileConfig) -> anyhow::Result<Options> {
        let mut table = file.0;
        let toml::Value::Table(flags) = toml::Value::try_from(self).context("cannot read the flags")? else {
            bail!("the flags are not a table");
        };
        table.extend(flags);
        toml::Value::Table(table).try_into().context("the flags and the config file do not merge")
    }
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
    /// `cluster`, empty treated as unset.
    pub cluster: Option<String>,
    /// `pod_resources_socket`: where GPU owners are read from; `None`: no pod labels.
    pub pod_resources_socket: Option<PathBuf>,
    /// Fabric probes; `None`: off.
    pub probe: Option<faultline_agent::probe::ProbeSettings>,
}

impl Settings {
    /// Check every merged value and apply the defaults; nothing is started yet.
    pub fn build(o: Options) -> anyhow::Result<Settings> {
        let node = match o.node_name {
            Some(n) => n,
            None => hostname().context("cannot learn the host name; pass --node-name")?,
        };
        if !faultline_proto::id::valid_name(&node) {
            bail!("node name {node:?} is not usable: it must be 1-128 bytes without '/', spaces or control characters");
        }
        let listen = resolve("--listen", o.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
        let progress_listen =
            resolve("--progress-listen", o.progress_listen.as_deref().unwrap_or(DEFAULT_PROGRESS_LISTEN))?;
        let interval_s = o.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
        let interval = humantime::parse_duration(interval_s)
            .with_context(|| format!("--interval {interval_s:?} is not a duration like 500ms, 10s or 2m"))?;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            bail!("--interval {interval_s} is outside {MIN_INTERVAL:?}..={MAX_INTERVAL:?}");
        }
        let token = match (o.token, o.token_file) {
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
        if let Some(a) = &o.analyzer
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            bail!("--analyzer {a:?} must be a URL starting with http:// or https://");
        }
        if let Some(p) = &o.ca_cert
            && !p.is_file()
        {
            bail!("--ca-cert {} is not a readable file", p.display());
        }
        let spool_max_bytes = o.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
        if spool_max_bytes == 0 {
            bail!("--spool-max-bytes must be above 0");
        }
        let sysfs_root = o.sysfs_root.unwrap_or_else(|| PathBuf::from("/sys"));
        let otlp_endpoint = o.otlp_endpoint.filter(|e| !e.trim().is_empty());
        if let Some(e) = &otlp_endpoint
            && let Err(err) = faultline_agent::export::otlp::metrics_url(e)
        {
            bail!("--otlp-endpoint: {err}");
        }
        let jobs = o.jobs.unwrap_or_default();
        let probe = o.probe.unwrap_or_default().check().map_err(anyhow::Error::msg)?;
        Ok(Settings {
            node,
            listen,
            analyzer: o.analyzer,
            token,
            ca_cert: o.ca_cert,
            interval,
            spool_dir: o.spool_dir,
            spool_max_bytes,
            procfs_root: o.procfs_root.unwrap_or_else(|| PathBuf::from("/proc")),
            nvml_lib: o.nvml_lib,
            no_gpu: o.no_gpu,
            kmsg: o.kmsg.unwrap_or_else(|| PathBuf::from("/dev/kmsg")),
            progress_listen,
            progress_socket: o.progress_socket,
            jobs: faultline_agent::collect::jobs::JobsConfig {
                sysfs_root: jobs.sysfs_root.clone().or_else(|| Some(sysfs_root.clone())),
                ..jobs
            },
            sysfs_root,
            otlp_endpoint,
            nics: o.nics.unwrap_or_default(),
            expected_gpus: o.expected_gpus,
            dcgm_compat: o.dcgm_compat.unwrap_or(true),
            cluster: o.cluster.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()),
            pod_resources_socket: o.pod_resources_socket.filter(|p| !p.as_os_str().is_empty()),
            probe,
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

    /// Flags `o` over config text `file`, built.
    fn build(file: &str, o: Options) -> anyhow::Result<Settings> {
        Settings::build(o.merge(FileConfig::parse(file)?)?)
    }

    #[test]
    fn zero_flags_give_working_defaults() {
        let s = build("", Options::default()).unwrap();
        assert_eq!(s.listen.port(), 9430);
        assert_eq!(s.progress_listen.port(), 9431);
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.spool_max_bytes, DEFAULT_SPOOL_MAX_BYTES);
        assert_eq!(s.kmsg, PathBuf::from("/dev/kmsg"));
        assert_eq!(s.jobs.sysfs_root.as_deref(), Some(Path::new("/sys")));
        assert!(!s.node.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let file = "interval = \"2s\"\nnode_name = \"from-file\"\nanalyzer = \"http://a:1\"\nno_gpu = true\n";
        let o = Options { node_name: Some("from-flag".into()), ..Default::default() };
        let s = build(file, o).unwrap();
        assert_eq!(s.node, "from-flag");
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.analyzer.as_deref(), Some("http://a:1"));
        assert!(s.no_gpu, "a flag left off does not turn the file's no_gpu off");
        let s = build("sysfs_root = \"/fx/sys\"\n", Options { no_gpu: true, ..Default::default() }).unwrap();
        assert!(s.no_gpu);
        assert_eq!(s.jobs.sysfs_root.as_deref(), Some(Path::new("/fx/sys")), "jobs follow sysfs_root");
    }

    #[test]
    fn every_flag_is_a_config_key_and_back() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: Options,
        }
        let cmd = Cli::command();
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if long == "help" {
                continue;
            }
            let key = long.replace('-', "_");
            let value = if long == "no-gpu" { "true".to_string() } else { "\"x\"".to_string() };
            let value = if long == "spool-max-bytes" { "1".to_string() } else { value };
            let text = format!("{key} = {value}\n");
            assert!(FileConfig::parse(&text).is_ok(), "--{long} has no config key {key}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_a_reason() {
        let e = format!("{:#}", FileConfig::parse("intervall = \"2s\"").unwrap_err());
        assert!(e.contains("intervall"), "{e}");
        let e = format!("{:#}", FileConfig::parse("spool_max_bytes = \"big\"").unwrap_err());
        assert!(e.contains("spool_max_bytes"), "{e}");
        let bad = |o: Options| build("", o).unwrap_err().to_string();
        assert!(bad(Options { interval: Some("soon".into()), ..Default::default() }).contains("--interval"));
        assert!(bad(Options { interval: Some("1ms".into()), ..Default::default() }).contains("outside"));
        assert!(bad(Options { analyzer: Some("analyzer:9440".into()), ..Default::default() }).contains("http://"));
        assert!(bad(Options { node_name: Some("a/b".into()), ..Default::default() }).contains("node name"));
        assert!(bad(Options { listen: Some("nowhere".into()), ..Default::default() }).contains("--listen"));
    }

    #[test]
    fn nics_scheduler_and_expected_gpus_come_from_the_file() {
        let s = build(
            "expected_gpus = 8\n[nics]\nfabric_include = [\"ens1f*\"]\ncollect_nonfabric_netdevs = true\n\
             [jobs.scheduler]\nscontrol = \"/opt/slurm/bin/scontrol\"\nkubelet_pods = \"/run/pods.json\"\n",
            Options::default(),
        )
        .unwrap();
        assert_eq!(s.expected_gpus, Some(8));
        assert!(s.dcgm_compat, "dcgm_compat defaults to on");
        assert_eq!(s.nics.fabric_include, vec!["ens1f*".to_string()]);
        assert!(s.nics.collect_nonfabric_netdevs);
        assert!(s.nics.netdev_excluded("docker0"), "defaults kept for keys not given");
        assert_eq!(s.jobs.scheduler.scontrol, PathBuf::from("/opt/slurm/bin/scontrol"));
        assert_eq!(s.jobs.scheduler.kubelet_pods.as_deref(), Some("/run/pods.json"));
        assert!(s.jobs.scheduler.slurm);
        assert!(FileConfig::parse("[nics]\nfabric = true\n").is_err());
        assert!(FileConfig::parse("[jobs.scheduler]\nslurmm = true\n").is_err());
        assert!(!build("dcgm_compat = false\n", Options::default()).unwrap().dcgm_compat);
        assert_eq!(build("cluster = \"train-a\"\n", Options::default()).unwrap().cluster.as_deref(), Some("train-a"));
        assert_eq!(build("cluster = \" \"\n", Options::default()).unwrap().cluster, None);
        let d = build("", Options::default()).unwrap();
        assert_eq!((d.expected_gpus, d.nics.collect_nonfabric_netdevs), (None, false));
    }

    #[test]
    fn otlp_endpoint_from_file_or_flag_must_be_a_url() {
        let file = "otlp_endpoint = \"http://collector:4318\"\n";
        let s = build(file, Options::default()).unwrap();
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        let o = Options { otlp_endpoint: Some("http://other:4318".into()), ..Default::default() };
        assert_eq!(build(file, o).unwrap().otlp_endpoint.as_deref(), Some("http://other:4318"));
        let o = Options { otlp_endpoint: Some("collector:4318".into()), ..Default::default() };
        assert!(build("", o).unwrap_err().to_string().contains("--otlp-endpoint"));
        // An empty value (OTEL_EXPORTER_OTLP_ENDPOINT= in an environment) means no export.
        let o = Options { otlp_endpoint: Some(String::new()), ..Default::default() };
        assert_eq!(build("", o).unwrap().otlp_endpoint, None);
        assert_eq!(build("", Options::default()).unwrap().otlp_endpoint, None);
    }
}
