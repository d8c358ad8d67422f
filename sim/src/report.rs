//! The run report (`--json`, spec/scenario.md "Run report") and its table for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::score::{FaultResult, Group, RunIncident, Summary, Tally};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlacement {
    pub id: String,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub nodes: usize,
    pub gpus: usize,
    pub nics: usize,
    pub switches: usize,
    pub jobs: Vec<JobPlacement>,
}

/// What feeding the analyzer cost (real time), and what it was fed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyzerStats {
    /// `in_process` or `wire`.
    pub mode: String,
    pub reports: u64,
    pub report_bytes: u64,
    /// Reports the analyzer refused (should be 0: the simulator writes valid reports).
    pub rejected: u64,
    pub first_rejection: Option<String>,
    /// Report intervals simulated; a round is every report of every node once, with its ticks.
    pub rounds: u64,
    /// Most reports in one round.
    pub reports_per_round_max: u64,
    /// Analyzer time (ingest of the round's reports + its ticks) per round, milliseconds.
    /// In-process only (wire mode cannot see inside the analyzer).
    pub round_ms_p50: Option<f64>,
    pub round_ms_p95: Option<f64>,
    pub round_ms_max: Option<f64>,
    /// The same rounds in the analyzer thread's CPU time: its work, without the time it waited for a
    /// core the simulator's threads held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_cpu_ms_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_cpu_ms_p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_cpu_ms_max: Option<f64>,
    /// Each round's analyzer CPU time, milliseconds, in order (which rounds cost most: the first,
    /// with every node's full report, or those of a fault).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub round_cpu_ms: Vec<f64>,
    /// CPU seconds of each in-process thread over the run: the simulator (physics, reports, the
    /// agents' encoding), decode (rebuild, decode, validation, and freeing the reports once
    /// applied) and the analyzer (apply, ledger, ticks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<ThreadCpu>,
    pub ingest_ms_total: Option<f64>,
    /// Decoding and validating every report (`ingest::decode`), done on its own thread outside the
    /// engine, as the HTTP server's request threads do; not part of the round times above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_ms_total: Option<f64>,
    pub tick_ms_total: Option<f64>,
    /// Slowest single tick, milliseconds.
    pub tick_ms_max: Option<f64>,
    /// The simulator's own time (world physics, report building, JSON serialization), milliseconds.
    pub sim_ms_total: f64,
    /// The simulator's own time per round, milliseconds.
    pub sim_round_ms_p50: Option<f64>,
    pub sim_round_ms_max: Option<f64>,
    /// Wire mode: the pace asked for (virtual seconds per real second).
    #[serde(default)]
    pub speed: Option<f64>,
    /// Wire mode: how far behind virtual time the reports reached the analyzer, in virtual seconds
    /// (a post's answer time minus when its virtual time was due, times the speed).
    #[serde(default)]
    pub lag_virtual_s_p50: Option<f64>,
    #[serde(default)]
    pub lag_virtual_s_p99: Option<f64>,
    #[serde(default)]
    pub lag_virtual_s_max: Option<f64>,
    /// Set when the run does not measure the analyzer: reports fell further behind virtual time than
    /// the bound (`runner::WIRE_LAG_BOUND_INTERVALS` report intervals at p99), so diagnosis times
    /// and misses say more about the machine than about the analyzer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// In-process runs: the process's resident set size (VmRSS) at regular virtual times
    /// (`runner::rss_every_s`), as (virtual s, bytes), so a long run shows whether memory stays flat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rss_samples: Vec<(f64, u64)>,
}

/// CPU seconds per thread of an in-process run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadCpu {
    pub simulator: f64,
    pub decode: f64,
    pub analyzer: f64,
}

/// The whole run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub cluster: ClusterInfo,
    pub virtual_s: f64,
    pub wall_s: f64,
    pub peak_rss_bytes: u64,
    pub faults: Vec<FaultResult>,
    pub incidents: Vec<RunIncident>,
    pub summary: Summary,
    pub analyzer: AnalyzerStats,
    /// Check before delivery (in-process runs): the validators' verdict on each faulty node while
    /// its fault lasts and after it cleared (`validation.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<crate::validation::ValidationRow>,
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn tally_row(out: &mut String, t: &Tally) {
    let _ = writeln!(
        out,
        "{:<24} {:>4} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        t.name,
        t.faults,
        t.detected,
        t.correct,
        opt(t.ttd_p50_s),
        opt(t.ttd_max_s),
        opt(t.diagnose_p50_s),
        opt(t.diagnose_p95_s),
        opt(t.diagnose_max_s)
    );
}

impl RunReport {
    /// The results as text tables: per fault, per kind, per group, summary.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scenario {} (seed {}): {} nodes, {} GPUs, {} jobs; {:.0} virtual s in {:.1} s wall; peak RSS {:.0} MiB",
            self.scenario,
            self.seed,
            self.cluster.nodes,
            self.cluster.gpus,
            self.cluster.jobs.len(),
            self.virtual_s,
            self.wall_s,
            self.peak_rss_bytes as f64 / 1_048_576.0
        );
        let a = &self.analyzer;
        let _ = writeln!(
            o,
            "analyzer ({}): {} reports ({:.1} KiB avg), {} rejected; {} rounds, up to {} reports/round",
            a.mode,
            a.reports,
            if a.reports > 0 { a.report_bytes as f64 / a.reports as f64 / 1024.0 } else { 0.0 },
            a.rejected,
            a.rounds,
            a.reports_per_round_max
        );
        if let (Some(p50), Some(p95), Some(max)) = (a.round_ms_p50, a.round_ms_p95, a.round_ms_max) {
            let _ = writeln!(
                o,
                "analyzer time per round (ingest + ticks): p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms; ingest total {:.0} ms, ticks total {:.0} ms, slowest tick {:.1} ms",
                a.ingest_ms_total.unwrap_or(0.0),
                a.tick_ms_total.unwrap_or(0.0),
                a.tick_ms_max.unwrap_or(0.0)
            );
        }
        if let (Some(p50), Some(p95), Some(max)) = (a.round_cpu_ms_p50, a.round_cpu_ms_p95, a.round_cpu_ms_max) {
            let _ = writeln!(
                o,
                "analyzer CPU per round (its thread's CPU time, without waits for a core): p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms"
            );
        }
        if let Some(c) = &a.cpu_s {
            let _ = writeln!(
                o,
                "CPU by thread: simulator {:.1} s, decode and free {:.1} s, analyzer {:.1} s",
                c.simulator, c.decode, c.analyzer
            );
        }
        if let Some(d) = a.decode_ms_total {
            let _ = writeln!(o, "decode + validation, on its own thread outside the engine: total {d:.0} ms");
        }
        if let (Some(p50), Some(max)) = (a.sim_round_ms_p50, a.sim_round_ms_max) {
            let _ = writeln!(
                o,
                "simulator time per round (physics + reports + encoding): p50 {p50:.1} ms, max {max:.1} ms; total {:.0} ms",
                a.sim_ms_total
            );
        }
        if let (Some(p50), Some(p99), Some(max)) = (a.lag_virtual_s_p50, a.lag_virtual_s_p99, a.lag_virtual_s_max) {
            let _ = writeln!(
                o,
                "wire lag at {}x: reports reached the analyzer p50 {p50:.1} s, p99 {p99:.1} s, max {max:.1} s of virtual time late",
                a.speed.unwrap_or(1.0)
            );
        }
        if !a.rss_samples.is_empty() {
            let v: Vec<String> =
                a.rss_samples.iter().map(|(t, b)| format!("{t:.0} s {:.0} MiB", *b as f64 / 1_048_576.0)).collect();
            let _ = writeln!(o, "RSS by virtual time: {}", v.join(", "));
        }
        if let Some(why) = &a.invalid {
            let _ = writeln!(o, "INVALID RUN: {why}");
        }
        if let Some(e) = &a.first_rejection {
            let _ = writeln!(o, "first rejection: {e}");
        }
        if !self.faults.is_empty() {
            let _ = writeln!(o, "\nFAULTS");
            let _ = writeln!(
                o,
                "{:<24} {:<28} {:>7} {:>4} {:>4} {:>7} {:>7} {:>9}  {}",
                "kind", "target", "at_s", "det", "ok", "ttd_s", "diag_s", "jobs e/r", "diagnosed root (incident)"
            );
            for f in &self.faults {
                let jobs_ok = {
                    let mut e = f.expected_jobs.clone();
                    e.sort();
                    e == f.reported_jobs
                };
                let _ = writeln!(
                    o,
                    "{:<24} {:<28} {:>7.0} {:>4} {:>4} {:>7} {:>7} {:>5}/{:<3}{} {}",
                    f.kind.as_str(),
                    f.target,
                    f.at_s,
                    if f.detected { "yes" } else { "NO" },
                    if f.correct { "yes" } else { "NO" },
                    opt(f.time_to_detect_s),
                    opt(f.time_to_diagnose_s),
                    f.expected_jobs.len(),
                    f.reported_jobs.len(),
                    if jobs_ok { " " } else { "*" },
                    match (&f.diagnosed_root, &f.incident) {
                        (Some(r), Some(i)) => {
                            let class =
                                self.incidents.iter().find(|x| &x.id == i).map(|x| x.class.as_str()).unwrap_or("?");
                            format!("{r} [{class}] ({i})")
                        }
                        _ => "-".to_string(),
                    }
                );
            }
            if self.faults.iter().any(|f| {
                let mut e = f.expected_jobs.clone();
                e.sort();
                e != f.reported_jobs
            }) {
                let _ = writeln!(o, "(* reported jobs differ from the ground truth)");
            }
            let header = format!(
                "{:<24} {:>4} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "", "n", "det", "ok", "ttd_p50", "ttd_max", "diag_p50", "diag_p95", "diag_max"
            );
            let _ = writeln!(
                o,
                "\nPER KIND\n{}",
                header.replacen("                        ", "kind                    ", 1)
            );
            for t in &self.summary.kinds {
                tally_row(&mut o, t);
            }
            let _ = writeln!(o, "\nPER GROUP (targets: hard diag p95 <= 5 s, slow diag p95 <= 60 s)");
            let _ = writeln!(o, "{}", header.replacen("                        ", "group                   ", 1));
            for t in &self.summary.groups {
                tally_row(&mut o, t);
            }
            for t in &self.summary.groups {
                let g = match t.name.as_str() {
                    "hard" => Group::Hard,
                    "slow" => Group::Slow,
                    _ => Group::Silence,
                };
                if let (Some(target), Some(p95)) = (g.target_p95_s(), t.diagnose_p95_s) {
                    let _ = writeln!(
                        o,
                        "  {}: diagnose p95 {p95:.1} s vs target {target:.0} s: {}",
                        t.name,
                        if p95 <= target { "met" } else { "MISSED" }
                    );
                }
            }
        }
        if !self.validation.is_empty() {
            let _ = writeln!(
                o,
                "\nCHECK BEFORE DELIVERY (gpu_count, fabric_ports, nccl all_reduce_perf -c 1 on the faulty node)"
            );
            let _ = writeln!(o, "{:<26} {:>16} {:>16}", "kind", "during: held", "after: resumed");
            for (k, d, held, a, resumed) in crate::validation::tally(&self.validation) {
                let _ =
                    writeln!(o, "{:<26} {:>16} {:>16}", k.as_str(), format!("{held}/{d}"), format!("{resumed}/{a}"));
            }
        }
        let s = &self.summary;
        let _ = writeln!(o, "\nSUMMARY");
        let _ = writeln!(
            o,
            "faults {}  detected {}  correct {}  coverage {}  weighted coverage {}",
            s.faults,
            s.detected,
            s.correct,
            pct(s.coverage),
            pct(s.weighted_coverage)
        );
        let _ = writeln!(
            o,
            "time to detect p50 {} s  p95 {} s  max {} s",
            opt(s.ttd_p50_s),
            opt(s.ttd_p95_s),
            opt(s.ttd_max_s)
        );
        let _ = writeln!(o, "job precision {:.3}  job recall {:.3}", s.job_precision, s.job_recall);
        let _ = writeln!(
            o,
            "incidents {}  false incidents {} ({:.2} per 1000 node-days){}",
            self.incidents.len(),
            s.false_incidents,
            s.false_per_1000_node_days,
            if s.false_incident_ids.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = s
                    .false_incident_ids
                    .iter()
                    .take(10)
                    .map(|id| {
                        let i = self.incidents.iter().find(|x| &x.id == id);
                        i.map_or(id.clone(), |i| format!("{id} {} [{}] at {:.0} s", i.root, i.class, i.opened_s))
                    })
                    .collect();
                format!(": {}", list.join("; "))
            }
        );
        // Why each false incident opened, in the analyzer's words.
        for id in s.false_incident_ids.iter().take(10) {
            if let Some(i) = self.incidents.iter().find(|x| &x.id == id) {
                for e in i.evidence.iter().take(3) {
                    let _ = writeln!(o, "  {id}: {e}");
                }
            }
        }
        o
    }
}

/// Peak resident set size of this process (VmHWM), bytes; 0 where /proc is not there.
pub fn peak_rss_bytes() -> u64 {
    status_kb("VmHWM:") * 1024
}

/// Resident set size of this process now (VmRSS), bytes; 0 where /proc is not there.
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .unwrap_or(0)
}
