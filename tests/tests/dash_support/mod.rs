//! Shared by `metrics_names.rs` and `prometheus_e2e.rs`: read the PromQL out of `dashboards/` and
//! `alerts/`, name the metrics it uses, and stand up real agents (fake NVML library, fixture sysfs
//! tree) and a real analyzer for them to be checked against.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, bin, fake_nvml_lib, http, start_analyzer, wait_for};
use serde_json::{Value, json};

/// The token the test analyzer and agents share.
pub const TOKEN: &str = "dash-test-token";

/// The repository root (`tests/..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// Files under `dir` (relative to the repo root) whose names end in `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------------------------------------------
// PromQL
// ------------------------------------------------------------------------------------------------

/// Words of PromQL that are not metric names when they stand alone.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Skip a quoted string starting at `i` (the quote); returns the index after the closing quote.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return j + 1;
        }
        j += 1;
    }
    j
}

/// Skip from an opening bracket at `i` to after its matching `close`, stepping over strings.
fn skip_group(b: &[u8], i: usize, open: u8, close: u8) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The metric names a PromQL expression selects: identifiers that stand as series selectors (alone,
/// or followed by `{` or `[`), leaving out functions and aggregations (followed by `(`), keywords,
/// label names (inside `{…}` or in `by (…)`-style lists), strings, numbers and durations, and Grafana
/// variables (`$node`, `${node}`, `$__rate_interval`).
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'{' => i = skip_group(b, i, b'{', b'}'),
            b'[' => i = skip_group(b, i, b'[', b']'),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = skip_group(b, i, b'{', b'}');
                } else {
                    while i < b.len() && ident_char(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                // Numbers (1e6, 0x1f, .5) and durations (10m, 1h30m).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut k = i;
                while k < b.len() && b[k].is_ascii_whitespace() {
                    k += 1;
                }
                let next = b.get(k).copied();
                let lower = word.to_ascii_lowercase();
                // `sum by (x) (…)` / `max without (y) (…)`: an aggregation with its grouping first.
                let next_word: String = b[k..]
                    .iter()
                    .take_while(|c| ident_char(**c))
                    .map(|c| *c as char)
                    .collect::<String>()
                    .to_ascii_lowercase();
                let aggregation = next_word == "by" || next_word == "without";
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if next == Some(b'(') {
                        i = skip_group(b, k, b'(', b')');
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || next == Some(b'(') || aggregation {
                    // keyword, or a function / aggregation call
                } else {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Grafana's `label_values(expr, label)` → `(Some(expr), label)`; `label_values(label)` → `(None, label)`.
/// Anything else is taken as a plain PromQL query with no label.
pub fn parse_label_values(q: &str) -> (Option<String>, Option<String>) {
    let t = q.trim();
    let Some(inner) = t.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')) else {
        return (Some(t.to_string()), None);
    };
    // The label is after the last top-level comma.
    let b = inner.as_bytes();
    let (mut depth, mut last_comma, mut j) = (0i32, None, 0);
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b',' if depth == 0 => last_comma = Some(j),
            _ => {}
        }
        j += 1;
    }
    match last_comma {
        Some(c) => (Some(inner[..c].trim().to_string()), Some(inner[c + 1..].trim().to_string())),
        None => (None, Some(inner.trim().to_string())),
    }
}

// ------------------------------------------------------------------------------------------------
// Where the PromQL lives
// ------------------------------------------------------------------------------------------------

/// Every `expr:` of a Prometheus rule file, with its alert name. A small reader for the two forms
/// the rule files use: `expr: <inline>` and `expr: |` followed by a more-indented block.
pub fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some(name) = trimmed.strip_prefix("alert:").or_else(|| trimmed.strip_prefix("record:")) {
            alert = name.trim().trim_matches('"').to_string();
        }
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let ind = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && ind <= indent {
                        break;
                    }
                    block.push(l.trim());
                    i += 1;
                }
                out.push((alert.clone(), block.join("\n").trim().to_string()));
                continue;
            }
            let unquoted =
                if (rest.starts_with('\'') && rest.ends_with('\'')) || (rest.starts_with('"') && rest.ends_with('"')) {
                    rest[1..rest.len() - 1].to_string()
                } else {
                    rest.to_string()
                };
            out.push((alert.clone(), unquoted));
        }
        i += 1;
    }
    out
}

/// One panel query of a dashboard.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// The panel's `faultline.may_be_empty` reason: why it can legitimately show no data.
    pub may_be_empty: Option<String>,
}

fn walk_panels(dashboard: &str, panels: &Value, out: &mut Vec<PanelQuery>) {
    for p in panels.as_array().into_iter().flatten() {
        if let Some(nested) = p.get("panels") {
            walk_panels(dashboard, nested, out);
        }
        let title = p.get("title").and_then(Value::as_str).unwrap_or("").to_string();
        let may_be_empty = p.pointer("/faultline/may_be_empty").and_then(Value::as_str).map(str::to_string);
        for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
            if t.get("hide").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(expr) = t.get("expr").and_then(Value::as_str) {
                out.push(PanelQuery {
                    dashboard: dashboard.to_string(),
                    panel: title.clone(),
                    ref_id: t.get("refId").and_then(Value::as_str).unwrap_or("").to_string(),
                    expr: expr.to_string(),
                    may_be_empty: may_be_empty.clone(),
                });
            }
        }
    }
}

/// Every panel query of a dashboard JSON, rows' nested panels included.
pub fn dashboard_queries(name: &str, dash: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    walk_panels(name, &dash["panels"], &mut out);
    out
}

/// `(name, type, query)` of each templating variable.
pub fn dashboard_variables(dash: &Value) -> Vec<(String, String, String)> {
    dash.pointer("/templating/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let q = v.get("query");
            let query = match q {
                Some(Value::String(s)) => s.clone(),
                Some(o) => o.get("query").and_then(Value::as_str).unwrap_or("").to_string(),
                None => String::new(),
            };
            (v["name"].as_str().unwrap_or("").to_string(), v["type"].as_str().unwrap_or("").to_string(), query)
        })
        .collect()
}

/// Every dashboard under `dashboards/`: (file name, parsed JSON).
pub fn dashboards() -> Vec<(String, Value)> {
    files("dashboards", ".json")
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// The expressions of `dashboards/compat/dcgm-12239-queries.txt` and its required label names.
pub fn dcgm_compat() -> (Vec<String>, Vec<String>) {
    let p = repo_root().join("dashboards/compat/dcgm-12239-queries.txt");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut exprs = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(l) = line.strip_prefix("labels:") {
            labels.extend(l.split_whitespace().map(str::to_string));
        } else {
            exprs.push(line.to_string());
        }
    }
    (exprs, labels)
}

/// Replace Grafana variables with concrete values: `${name}`, `$name` (longest names first), and the
/// built-ins `$__rate_interval`, `$__interval`, `$__range`.
pub fn fill_variables(expr: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut all: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.push(("__rate_interval".into(), "10s".into()));
    all.push(("__interval".into(), "2s".into()));
    all.push(("__range".into(), "5m".into()));
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = expr.to_string();
    for (k, v) in &all {
        out = out.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
    }
    out
}

// ------------------------------------------------------------------------------------------------
// What is exported
// ------------------------------------------------------------------------------------------------

/// Metric names a Prometheus text exposition offers: every sample's name, plus the names its
/// `# TYPE` lines promise (a counter `x` as `x` and `x_total`, a histogram as `x_bucket`, `x_sum`,
/// `x_count`, a summary as `x_sum`, `x_count`), so a family with no samples yet still counts.
pub fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let base = name.strip_suffix("_total").unwrap_or(name);
            match kind {
                "counter" => {
                    names.insert(base.to_string());
                    names.insert(format!("{base}_total"));
                }
                "histogram" | "gaugehistogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                "summary" => {
                    for s in ["_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                    names.insert(name.to_string());
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// GET `url` as text (None on any error or non-2xx).
pub fn get_text(url: &str) -> Option<String> {
    let resp = http().get(url).send().ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().ok()
}

// ------------------------------------------------------------------------------------------------
// A node to scrape: fixture sysfs tree, fake NVML state, real agent process
// ------------------------------------------------------------------------------------------------

fn write(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("{value}\n")).unwrap();
}

/// The IB error counters a fixture port carries; `healthy` ports have old non-zero counts (as real
/// healthy ports do), a `bad` one gets fresh errors on each `tick`.
pub struct SysfsNode {
    pub root: PathBuf,
    pub nics: Vec<String>,
}

impl SysfsNode {
    /// A sysfs tree under `root`: four ConnectX-7 InfiniBand ports (`mlx5_0..3`, 400 Gb/s NDR,
    /// ACTIVE) with counters, their netdevs (`ibp0..3`), and one hwmon chip with two fans and two
    /// temperature sensors.
    pub fn create(root: &Path) -> SysfsNode {
        let mut nics = Vec::new();
        for i in 0..4 {
            let dev = format!("mlx5_{i}");
            let port = format!("class/infiniband/{dev}/ports/1");
            write(root, &format!("{port}/state"), "4: ACTIVE");
            write(root, &format!("{port}/phys_state"), "5: LinkUp");
            write(root, &format!("{port}/rate"), "400 Gb/sec (4X NDR)");
            write(root, &format!("{port}/link_layer"), "InfiniBand");
            write(root, &format!("class/infiniband/{dev}/fw_ver"), "28.41.1000");
            let netdev = format!("ibp{i}");
            write(root, &format!("class/infiniband/{dev}/device/net/{netdev}/ifindex"), &format!("{}", 10 + i));
            write(root, &format!("class/net/{netdev}/operstate"), "up");
            write(root, &format!("class/net/{netdev}/carrier"), "1");
            write(root, &format!("class/net/{netdev}/carrier_changes"), "2");
            write(root, &format!("class/net/{netdev}/speed"), "400000");
            write(root, &format!("class/net/{netdev}/mtu"), "4092");
            for (k, v) in [("rx_bytes", 0u64), ("tx_bytes", 0), ("rx_packets", 0), ("tx_packets", 0), ("rx_errors", 0)]
            {
                write(root, &format!("class/net/{netdev}/statistics/{k}"), &v.to_string());
            }
            nics.push(dev);
        }
        write(root, "class/hwmon/hwmon0/name", "nct6779");
        for (n, rpm) in [(1, 9120), (2, 8840)] {
            write(root, &format!("class/hwmon/hwmon0/fan{n}_input"), &rpm.to_string());
            write(root, &format!("class/hwmon/hwmon0/fan{n}_min"), "1200");
            write(root, &format!("class/hwmon/hwmon0/fan{n}_alarm"), "0");
        }
        for (n, label, milli) in [(1, "CPU", 54000), (2, "Inlet", 27000)] {
            write(root, &format!("class/hwmon/hwmon0/temp{n}_input"), &milli.to_string());
            write(root, &format!("class/hwmon/hwmon0/temp{n}_label"), label);
            write(root, &format!("class/hwmon/hwmon0/temp{n}_crit"), "95000");
        }
        let node = SysfsNode { root: root.to_path_buf(), nics };
        node.tick(0, false);
        node
    }

    /// Move the counters as traffic would at second `t`: data counters grow (4-byte words), old error
    /// counts stay as they were, and with `bad_cable` port `mlx5_1` gains symbol and receive errors.
    pub fn tick(&self, t: u64, bad_cable: bool) {
        for (i, dev) in self.nics.iter().enumerate() {
            let c = format!("class/infiniband/{dev}/ports/1/counters");
            let words = 1_000_000_000 + t * 2_500_000_000;
            let pkts = 5_000_000 + t * 1_200_000;
            let bad = bad_cable && i == 1;
            let errs = if bad { 12 + t * 7 } else { 12 };
            for (k, v) in [
                ("port_rcv_data", words),
                ("port_xmit_data", words + 17),
                ("port_rcv_packets", pkts),
                ("port_xmit_packets", pkts + 3),
                ("port_xmit_wait", 2_489_603_687 + t * 1000),
                // Healthy ports often carry old error counts: alerts and panels must use rates.
                ("symbol_error", errs),
                ("port_rcv_errors", if bad { 14 + t * 3 } else { 14 }),
                ("link_downed", 1),
                ("link_error_recovery", 0),
                ("local_link_integrity_errors", 0),
                ("excessive_buffer_overrun_errors", 3),
            ] {
                write(&self.root, &format!("{c}/{k}"), &v.to_string());
            }
            let netdev = format!("class/net/ibp{i}/statistics");
            write(&self.root, &format!("{netdev}/rx_bytes"), &(words * 4).to_string());
            write(&self.root, &format!("{netdev}/tx_bytes"), &(words * 4 + 68).to_string());
        }
    }
}

/// A fake NVML state with `n` GPUs: busy, warm, some throttling and error counts so that every GPU
/// panel has something to show. `lost` marks slots lost; `events` are queued XID/ECC events.
pub fn nvml_state(n: usize, lost: &[usize], events: Value) -> Value {
    let gpus: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "util_gpu": 90 + (i as u32 % 5),
                "util_mem": 40,
                "mem_used": 60_000_000_000u64 + i as u64 * 1_000_000,
                "temp": 60 + i as u32,
                "mem_temp": 55 + i as u32,
                "power_mw": 550_000 + i as u32 * 1000,
                "sm_clock": 1980,
                "mem_clock": 2619,
                // GPU 2 is power-capped (sw_power_cap), the others run free.
                "throttle_mask": if i == 2 { 0x4 } else { 0x0 },
                "ecc": {"sbe_volatile": 3, "sbe_aggregate": 17},
                "row_remap": {"correctable": 1},
                "pcie": {"replay": 2},
                "lost": lost.contains(&i),
            })
        })
        .collect();
    json!({ "gpus": gpus, "events": events })
}

/// Write a fake NVML state file atomically (the library re-reads it when it changes).
pub fn write_state(path: &Path, state: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running agent and what it needs.
pub struct Agent {
    pub name: String,
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` of /metrics.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the progress API.
    pub progress_url: String,
    pub state_file: PathBuf,
    pub sysfs: SysfsNode,
    /// The file the agent follows as its kernel log (`--kmsg`).
    pub kmsg: PathBuf,
}

impl Agent {
    /// Append a line to the agent's kernel log, as the kernel would print it.
    pub fn kernel_log(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.kmsg).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// The kernel line NVIDIA's driver prints for XID `xid` on the GPU in fake-NVML slot `slot` (the fake
/// library's default bus ids), as real nodes show next to the NVML event.
pub fn xid_kernel_line(slot: usize, xid: u32) -> String {
    const BUSES: [u32; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];
    let what = if xid == 79 { "GPU has fallen off the bus." } else { "Graphics Exception" };
    format!("[ 8123.456789] NVRM: Xid (PCI:0000:{:02x}:00): {xid}, pid=4242, name=python3, {what}", BUSES[slot])
}

/// Start a real `faultline-agent` named `name` under `dir`: fake NVML with `state`, the fixture sysfs
/// tree, a 1 s interval, pushing to `analyzer` with [`TOKEN`].
pub fn start_agent(dir: &Path, name: &str, analyzer: &str, state: &Value) -> Agent {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let sysfs = SysfsNode::create(&home.join("sys"));
    let state_file = home.join("nvml.json");
    write_state(&state_file, state);
    let kmsg = home.join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let mut cmd = Command::new(bin("faultline-agent"));
    cmd.arg("--node-name")
        .arg(name)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--progress-listen")
        .arg("127.0.0.1:0")
        .arg("--progress-socket")
        .arg(home.join("progress.sock"))
        .arg("--analyzer")
        .arg(analyzer)
        .arg("--token")
        .arg(TOKEN)
        .arg("--interval")
        .arg("1s")
        .arg("--spool-dir")
        .arg(home.join("spool"))
        .arg("--sysfs-root")
        .arg(&sysfs.root)
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .arg("--kmsg")
        .arg(&kmsg)
        .env("FAKE_NVML_STATE", &state_file)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    let mut proc = Proc::spawn(cmd);
    let url = proc.url.clone();
    let progress_url = proc
        .next_line(Duration::from_secs(30))
        .and_then(|l| l.strip_prefix("progress on ").map(|s| s.trim().to_string()))
        .unwrap_or_else(|| panic!("agent {name} printed no `progress on` line; stderr:\n{}", proc.stderr()));
    Agent { name: name.to_string(), proc, url, progress_url, state_file, sysfs, kmsg }
}

/// Post one progress record for `job`/`rank` to an agent's progress API.
pub fn post_progress(agent: &Agent, job: &str, rank: u32, step: u64, compute_ms: f64) {
    let body =
        json!({"job": job, "rank": rank, "step": step, "step_time_ms": compute_ms + 40.0, "compute_ms": compute_ms});
    let resp = http()
        .post(format!("{}/progress", agent.progress_url))
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("progress post to {} failed: {e}", agent.name));
    assert!(resp.status().is_success(), "progress post to {} refused: {}", agent.name, resp.status());
}

/// Start the analyzer the agents push to (token [`TOKEN`], database in `dir`), with a topology file
/// putting every node's NICs under `leaf-00`/`leaf-01`.
pub fn start_test_analyzer(dir: &Path, nodes: &[&str]) -> Proc {
    let topo = dir.join("topology.toml");
    let list = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &topo,
        format!(
            "[[switch]]\nname = \"leaf-00\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\n\
             [[switch]]\nname = \"leaf-01\"\ntier = \"leaf\"\nuplinks = [\"spine-00\"]\n\n\
             [[switch]]\nname = \"spine-00\"\ntier = \"spine\"\n\n\
             [[rail]]\nleaf = \"leaf-00\"\nnic = \"mlx5_0\"\nnodes = [{list}]\n\n\
             [[rail]]\nleaf = \"leaf-00\"\nnic = \"mlx5_1\"\nnodes = [{list}]\n\n\
             [[rail]]\nleaf = \"leaf-01\"\nnic = \"mlx5_2\"\nnodes = [{list}]\n\n\
             [[rail]]\nleaf = \"leaf-01\"\nnic = \"mlx5_3\"\nnodes = [{list}]\n"
        ),
    )
    .unwrap();
    start_analyzer(dir, Some(TOKEN), &["--topology", topo.to_str().unwrap()])
}

/// Poll `f` until it yields `Some`, up to `timeout`; `None` when it never did (the caller reports
/// what was missing instead of a bare timeout).
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Re-exported for the test files.
pub fn wait<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, what, f)
}
