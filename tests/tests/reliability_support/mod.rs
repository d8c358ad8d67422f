//! Shared helpers for the reliability tests (`bad_input.rs`, `reliability_*.rs`): report builders,
//! a raw poster that keeps status, headers and the JSON error, and an analyzer started from a config
//! file.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use faultline_proto::time::now_ms;
use faultline_tests::{Proc, bin, http};
use serde_json::{Value, json};

/// One GPU sample; `lost` ones carry no readings.
pub fn gpu(i: u32, lost: bool) -> Value {
    let v = |x: Value| if lost { Value::Null } else { x };
    json!({
        "index": i, "uuid": format!("GPU-{i:04}"), "name": "NVIDIA H100 80GB HBM3", "serial": null,
        "pci_bus_id": format!("00000000:{:02X}:00.0", 0x18 + i * 16),
        "state": if lost { "lost" } else { "ok" },
        "util_gpu_pct": v(json!(98.0)), "util_mem_pct": v(json!(35.0)),
        "mem_total_bytes": 85899345920u64, "mem_used_bytes": v(json!(60000000000u64)), "mem_free_bytes": null,
        "temp_c": v(json!(62.0)), "mem_temp_c": null, "power_w": v(json!(650.0)), "power_limit_w": 700.0,
        "energy_mj": v(json!(123456)), "sm_clock_mhz": v(json!(1980)), "sm_clock_max_mhz": 1980,
        "mem_clock_mhz": null, "mem_clock_max_mhz": null, "throttle_mask": v(json!(0)),
    })
}

/// A whole report of `node` with `gpus` GPUs (those in `lost` reported lost), one NIC, a host
/// sample, one job rank per GPU, and `events`. `interval_ms` is long so that a test that pauses never
/// sees the node go silent.
pub fn report(node: &str, seq: u64, gpus: u32, lost: &[u32], events: Vec<Value>, interval_ms: u64) -> Value {
    let ranks: Vec<Value> = (0..gpus)
        .map(|i| {
            json!({"rank": i, "local_rank": i, "pid": 1000 + i, "gpus": [i], "state": "running",
                   "cpu_seconds": 10.0 * seq as f64, "rss_bytes": 1_000_000_000u64})
        })
        .collect();
    json!({
        "schema_version": 1, "node": node, "agent_version": "0.1.0", "seq": seq, "timestamp_ms": now_ms(),
        "interval_ms": interval_ms, "urgent": !events.is_empty(),
        "host": {"cpu_count": 64, "cpu_util_pct": 12.5, "load1": 3.0, "load5": 2.0, "load15": 1.0,
                 "mem_total_bytes": 1000000, "mem_used_bytes": 5000, "mem_available_bytes": 900000,
                 "swap_total_bytes": 0, "swap_used_bytes": 0, "uptime_s": 1000},
        "gpus": (0..gpus).map(|i| gpu(i, lost.contains(&i))).collect::<Vec<_>>(),
        "nics": [{"name": "mlx5_0", "netdev": "ibp24s0", "port": 1, "operstate": "up", "carrier": true,
                  "carrier_changes": 2, "speed_mbps": 400000, "mtu": 4096, "link_layer": "InfiniBand",
                  "ib_state": "ACTIVE", "ib_phys_state": "LinkUp", "rate_gbps": 400.0,
                  "counters": {"symbol_error": 0, "port_rcv_errors": 0}}],
        "jobs": [{"job_id": format!("job-{node}"), "scheduler": "torchrun", "world_size": gpus, "ranks": ranks}],
        "events": events,
    })
}

/// An XID event on `gpu`.
pub fn xid(gpu: u32, code: u32, text: &str) -> Value {
    json!({"ts_ms": now_ms(), "source": "nvml", "class": "xid", "severity": "critical",
           "component": format!("gpu{gpu}"), "xid": code, "count": 1,
           "message": format!("NVRM: Xid (PCI:0000:{:02x}:00): {code}, pid=1003, {text}", 0x18 + gpu * 16)})
}

/// What the analyzer answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub text: String,
}

impl Answer {
    /// The `error` string of a JSON error answer; panics with the whole answer when there is none.
    pub fn error(&self, what: &str) -> String {
        let v: Value = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{what}: answer {} is not JSON ({e}): {:?}", self.status, self.text));
        v["error"].as_str().unwrap_or_else(|| panic!("{what}: no `error` string in {}", self.text)).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// POST raw bytes to `/api/v1/reports`. `None` means the connection failed.
pub fn post_raw(
    client: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Option<Answer> {
    let mut req = client.post(format!("{url}/api/v1/reports")).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().ok()?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.text().unwrap_or_default();
    Some(Answer { status, retry_after, text })
}

/// POST a JSON report with `token`; panics when the analyzer cannot be reached.
pub fn post(url: &str, token: &str, body: &Value) -> Answer {
    post_raw(&http(), url, Some(token), Some("application/json"), body.to_string().into_bytes())
        .expect("the analyzer answers")
}

/// GET with a bearer token; status and body text.
pub fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("the analyzer answers");
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

/// Start an analyzer on `127.0.0.1:0` with `config` (TOML) written to `dir/analyzer.toml`, its
/// database in `dir`, and `extra` flags.
pub fn analyzer_with_config(dir: &Path, config: &str, extra: &[&str]) -> Proc {
    let cfg = dir.join("analyzer.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(bin("faultline-analyzer"));
    cmd.arg("--config").arg(&cfg).arg("--listen").arg("127.0.0.1:0").arg("--db").arg(dir.join("faultline.db"));
    cmd.args(extra).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd)
}

/// A value from the analyzer's `/metrics` text: the first line starting with `prefix` (name and
/// labels), parsed as a number.
pub fn metric(url: &str, prefix: &str) -> Option<f64> {
    let text = http().get(format!("{url}/metrics")).send().ok()?.text().ok()?;
    text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok())
}

/// How many engine ticks the analyzer has run (the tick histogram's count).
pub fn ticks(url: &str) -> u64 {
    metric(url, "faultline_engine_tick_duration_seconds_count ").unwrap_or(0.0) as u64
}

/// Wait until the analyzer has run `n` more ticks.
pub fn wait_ticks(url: &str, n: u64) {
    let start = ticks(url);
    faultline_tests::wait_for(Duration::from_secs(60), "engine ticks", || (ticks(url) >= start + n).then_some(()));
}
