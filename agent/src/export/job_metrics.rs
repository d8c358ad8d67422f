//! Job and rank metrics (`faultline_job_*`, `faultline_rank_*`), read from the latest report at scrape
//! time. Labels are `job_id`, `rank` and `Hostname` (not `job`: Prometheus sets `job` to the scrape
//! job's name and would rename ours `exported_job`); at most [`MAX_EXPORTED_JOBS`] jobs are exported (in
//! job-id order) and the rest are counted in `faultline_agent_jobs_not_exported`, so a node that runs
//! many short jobs cannot blow up Prometheus' series count.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use faultline_proto::{JobSample, NodeReport, ProcState, RankSample};

use super::Snapshot;
use crate::progress::ProgressStore;

/// Most jobs exported per node. A node runs a handful of jobs at once; 64 bounds the series at
/// 64 × ranks-per-node × 8 metrics even when jobs are tiny and many.
pub const MAX_EXPORTED_JOBS: usize = 64;

/// Scrape-time collector of job and rank metrics.
#[derive(Debug)]
pub struct JobMetrics {
    snapshot: Snapshot,
    /// The progress store and the node name, for the `faultline_agent_progress_*` counters.
    progress: Option<(ProgressStore, String)>,
}

impl JobMetrics {
    pub fn new(snapshot: Snapshot) -> JobMetrics {
        JobMetrics { snapshot, progress: None }
    }

    /// Also export the progress API's counters (posts stored, refused, lost), labelled `Hostname`.
    pub fn with_progress(mut self, store: ProgressStore, node: &str) -> JobMetrics {
        self.progress = Some((store, node.to_string()));
        self
    }
}

fn encode_progress_counters(store: &ProgressStore, node: &str, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    let labels = [("Hostname", node.to_string())];
    for (name, help, v) in [
        ("faultline_agent_progress_posts", "Progress posts stored (HTTP and datagrams).", store.accepted()),
        (
            "faultline_agent_progress_rejected",
            "Progress posts refused as invalid or too large (HTTP answers 4xx; datagrams have no answer).",
            store.rejected(),
        ),
        (
            "faultline_agent_progress_dropped",
            "Progress posts lost: the store was full, or the datagram receive buffer overflowed.",
            store.dropped(),
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

type RankLabels = [(&'static str, String); 3];

/// One gauge family over every exported rank; ranks without a value are left out.
fn rank_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ranks: &[(RankLabels, &RankSample)],
    value: impl Fn(&RankSample) -> Option<f64>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, r) in ranks {
        if let Some(v) = value(r) {
            m.encode_family(labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

fn alive(r: &RankSample) -> bool {
    matches!(r.state, ProcState::Running | ProcState::Sleeping | ProcState::DiskSleep | ProcState::Stopped)
}

fn encode_report(report: &NodeReport, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    let host = report.node.clone();
    let exported = report.jobs.len().min(MAX_EXPORTED_JOBS);
    // Jobs with a live process here first (then by id), so ids that only post progress cannot crowd
    // real jobs out; exported in id order.
    let mut jobs: Vec<&JobSample> = report.jobs.iter().collect();
    if jobs.len() > MAX_EXPORTED_JOBS {
        jobs.sort_by(|a, b| {
            let live = |j: &JobSample| j.ranks.iter().any(alive);
            (!live(a), &a.job_id).cmp(&(!live(b), &b.job_id))
        });
        jobs.truncate(MAX_EXPORTED_JOBS);
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    }
    let ranks: Vec<(RankLabels, &RankSample)> = jobs
        .iter()
        .flat_map(|j| {
            let host = host.clone();
            j.ranks.iter().map(move |r| {
                ([("Hostname", host.clone()), ("job_id", j.job_id.clone()), ("rank", r.rank.to_string())], r)
            })
        })
        .collect();

    rank_gauge(enc, "faultline_rank_step", "Last training step the rank reported.", &ranks, |r| {
        r.progress.as_ref().map(|p| p.step as f64)
    })?;
    rank_gauge(
        enc,
        "faultline_rank_step_time_seconds",
        "Wall time of the rank's last reported step, seconds.",
        &ranks,
        |r| r.progress.as_ref().and_then(|p| p.step_time_ms).map(|v| v / 1000.0),
    )?;
    rank_gauge(
        enc,
        "faultline_rank_compute_seconds",
        "Compute time of the rank's last step before it waited in collectives, seconds.",
        &ranks,
        |r| r.progress.as_ref().and_then(|p| p.compute_ms).map(|v| v / 1000.0),
    )?;
    rank_gauge(
        enc,
        "faultline_rank_last_progress_timestamp_seconds",
        "Unix time the rank's step last advanced.",
        &ranks,
        |r| r.progress.as_ref().map(|p| p.last_progress_ms as f64 / 1000.0),
    )?;
    rank_gauge(
        enc,
        "faultline_rank_nonfinite_loss",
        "1 when the rank reported a NaN/Inf loss or gradient norm in the last minute.",
        &ranks,
        |r| r.progress.as_ref().map(|p| if p.nonfinite_loss { 1.0 } else { 0.0 }),
    )?;
    rank_gauge(enc, "faultline_rank_up", "1 while the rank's process is alive, 0 once it is gone.", &ranks, |r| {
        Some(if alive(r) { 1.0 } else { 0.0 })
    })?;
    {
        let mut m = enc.encode_descriptor(
            "faultline_rank_cpu_seconds",
            "CPU time (user + system) of the rank's process, seconds.",
            None,
            MetricType::Counter,
        )?;
        for (labels, r) in &ranks {
            if let Some(v) = r.cpu_seconds {
                m.encode_family(labels)?.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
            }
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "faultline_job_ranks",
            "Ranks of the job seen on this node (alive, exited, or only reporting progress).",
            None,
            MetricType::Gauge,
        )?;
        for j in &jobs {
            let labels = [("Hostname", host.clone()), ("job_id", j.job_id.clone())];
            m.encode_family(&labels)?.encode_gauge(&(j.ranks.len() as i64))?;
        }
    }
    let mut m = enc.encode_descriptor(
        "faultline_agent_jobs_not_exported",
        &format!("Jobs on this node left out of the job metrics (more than {MAX_EXPORTED_JOBS})."),
        None,
        MetricType::Gauge,
    )?;
    let labels = [("Hostname", host)];
    m.encode_family(&labels)?.encode_gauge(&((report.jobs.len() - exported) as i64))?;
    Ok(())
}

impl Collector for JobMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((store, node)) = &self.progress {
            encode_progress_counters(store, node, &mut encoder)?;
        }
        let guard = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(report) => encode_report(report, &mut encoder),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::Progress;
    use prometheus_client::registry::Registry;

    fn scrape(report: Option<NodeReport>) -> String {
        let snap: Snapshot = std::sync::Arc::new(std::sync::RwLock::new(report));
        let mut reg = Registry::default();
        reg.register_collector(Box::new(JobMetrics::new(snap)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    fn report_with_jobs(n: usize) -> NodeReport {
        let mut r = crate::collect::blank_report("node-7", 1, 1000);
        for j in 0..n {
            r.jobs.push(JobSample {
                job_id: format!("job{j:03}"),
                ranks: vec![RankSample {
                    rank: 3,
                    pid: Some(100),
                    state: ProcState::Sleeping,
                    cpu_seconds: Some(12.5),
                    progress: Some(Progress {
                        step: 42,
                        last_progress_ms: 1_700_000_000_000,
                        step_time_ms: Some(250.0),
                        compute_ms: Some(200.0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        r
    }

    #[test]
    fn rank_metrics_carry_job_rank_and_hostname() {
        let text = scrape(Some(report_with_jobs(1)));
        let l = r#"{Hostname="node-7",job_id="job000",rank="3"}"#;
        for want in [
            format!("faultline_rank_step{l} 42"),
            format!("faultline_rank_step_time_seconds{l} 0.25"),
            format!("faultline_rank_compute_seconds{l} 0.2"),
            format!("faultline_rank_last_progress_timestamp_seconds{l} 1700000000"),
            format!("faultline_rank_up{l} 1"),
            format!("faultline_rank_cpu_seconds_total{l} 12.5"),
            r#"faultline_job_ranks{Hostname="node-7",job_id="job000"} 1"#.to_string(),
            r#"faultline_agent_jobs_not_exported{Hostname="node-7"} 0"#.to_string(),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn jobs_over_the_cap_are_counted_not_exported() {
        let text = scrape(Some(report_with_jobs(MAX_EXPORTED_JOBS + 6)));
        assert!(text.contains(r#"faultline_agent_jobs_not_exported{Hostname="node-7"} 6"#), "{text}");
        assert_eq!(text.matches("faultline_job_ranks{").count(), MAX_EXPORTED_JOBS);
    }

    #[test]
    fn a_live_job_is_exported_even_when_progress_only_jobs_fill_the_cap() {
        let mut r = report_with_jobs(MAX_EXPORTED_JOBS + 1);
        for j in &mut r.jobs {
            j.ranks[0].state = ProcState::Unknown;
            j.ranks[0].pid = None;
        }
        r.jobs.last_mut().unwrap().ranks[0].state = ProcState::Running;
        let live = r.jobs.last().unwrap().job_id.clone();
        let text = scrape(Some(r));
        assert!(text.contains(&format!(r#"faultline_job_ranks{{Hostname="node-7",job_id="{live}"}} 1"#)), "{text}");
        assert!(text.contains(r#"faultline_agent_jobs_not_exported{Hostname="node-7"} 1"#));
    }

    #[test]
    fn no_report_yet_exports_nothing() {
        assert!(!scrape(None).contains("faultline_rank_step{"));
    }
}
