//! `faultline status`: the cluster at a glance, from `/api/v1/summary`, `/api/v1/nodes` and the open
//! incidents.

use clap::Args;
use faultline_proto::Incident;
use faultline_proto::api::{NodeEntry, Summary};
use serde_json::{Value, json};

use super::{Ctx, Verdict, emit, emit_json, now_s};
use crate::client::{Client, StatusFilter};
use crate::render::{self, Style};

/// Silent nodes named in full before the list is cut short.
const MAX_SILENT_NAMED: usize = 8;
/// Open incidents listed one per line before "… and N more".
const MAX_OPEN_LISTED: usize = 20;
/// Most affected jobs listed.
const MAX_JOBS_LISTED: usize = 5;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the summary, nodes and open incidents as JSON
    #[arg(long)]
    pub json: bool,
}

/// Everything `status` shows, fetched in one go (also what `watch` refreshes).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub base: String,
    pub summary: Summary,
    pub summary_raw: Value,
    pub nodes: Vec<NodeEntry>,
    pub nodes_raw: Value,
    pub open: Vec<Incident>,
    pub open_raw: Value,
    /// Jobs whose every rank has exited (still known to the analyzer until they linger out);
    /// `None` when the job list could not be read.
    pub finished_jobs: Option<usize>,
}

impl Snapshot {
    pub fn fetch(client: &Client) -> Result<Self, crate::client::ClientError> {
        let s = client.summary()?;
        let n = client.nodes()?;
        let o = client.incidents(StatusFilter::Open, None)?;
        let finished_jobs = client.jobs().ok().map(|j| j.value.iter().filter(|j| super::jobs::finished(j)).count());
        Ok(Self {
            base: client.base().to_string(),
            summary: s.value,
            summary_raw: s.raw,
            nodes: n.value,
            nodes_raw: n.raw,
            open: o.value,
            open_raw: o.raw,
            finished_jobs,
        })
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::of(!self.open.is_empty() || self.summary.open_incidents > 0)
    }

    pub fn json(&self) -> Value {
        json!({ "summary": self.summary_raw, "nodes": self.nodes_raw, "open_incidents": self.open_raw })
    }

    pub fn render(&self, style: &Style, now: f64) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let mut version = String::new();
        if let Some(v) = self.summary_raw.get("analyzer_version").and_then(Value::as_str) {
            version = format!("v{v}");
        }
        if let Some(up) = self.summary_raw.get("uptime_s").and_then(Value::as_f64) {
            version = format!("{version}{}up {}", if version.is_empty() { "" } else { ", " }, render::span(up));
        }
        out.push_str(&format!(
            "{}  {}{}\n",
            style.bold("analyzer "),
            self.base,
            if version.is_empty() { String::new() } else { format!("  ({version})") }
        ));

        // Nodes: reporting, silent (not heard and not shut down), stopped cleanly.
        let reporting = self.nodes.iter().filter(|n| n.reporting == Some(true)).count();
        let stopped: Vec<&NodeEntry> = self.nodes.iter().filter(|n| n.summary.shutdown).collect();
        let silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.reporting == Some(false) && !n.summary.shutdown)
            .map(|n| n.summary.node.clone())
            .collect();
        let total_nodes = (s.nodes as usize).max(self.nodes.len());
        let mut line = format!("{total_nodes} known, {reporting} reporting");
        if silent.is_empty() {
            line.push_str(", 0 silent");
        } else {
            line.push_str(&format!(", {}", style.red(&format!("{} silent", silent.len()))));
            line.push_str(&format!(" ({})", render::list(&silent, MAX_SILENT_NAMED)));
        }
        if !stopped.is_empty() {
            line.push_str(&format!(", {} stopped cleanly", stopped.len()));
        }
        let unhealthy = total_nodes.saturating_sub(s.nodes_healthy as usize);
        if unhealthy > 0 && s.nodes > 0 {
            line.push_str(&format!("; {}", style.red(&format!("{unhealthy} unhealthy"))));
        }
        out.push_str(&format!("{}  {line}\n", style.bold("nodes    ")));

        let healthy_gpus = s.gpus.saturating_sub(s.gpus_faulty);
        let faulty =
            if s.gpus_faulty > 0 { style.red(&format!("{} faulty", s.gpus_faulty)) } else { "0 faulty".to_string() };
        out.push_str(&format!("{}  {} total, {healthy_gpus} healthy, {faulty}\n", style.bold("GPUs     "), s.gpus));
        match self.finished_jobs.filter(|f| *f > 0) {
            Some(f) => out.push_str(&format!(
                "{}  {} running, {f} finished\n",
                style.bold("jobs     "),
                (s.jobs as usize).saturating_sub(f)
            )),
            None => out.push_str(&format!("{}  {} running\n", style.bold("jobs     "), s.jobs)),
        }

        let open_n = self.open.len().max(s.open_incidents as usize);
        if open_n == 0 {
            out.push_str(&format!("{}  {}\n", style.bold("incidents"), style.green("none open")));
        } else {
            let by_sev: Vec<String> =
                s.open_by_severity.iter().rev().map(|(sev, n)| format!("{n} {}", style.severity(*sev))).collect();
            out.push_str(&format!(
                "{}  {}{}\n",
                style.bold("incidents"),
                style.red(&format!("{open_n} open")),
                if by_sev.is_empty() { String::new() } else { format!(" ({})", by_sev.join(", ")) }
            ));
            for i in self.open.iter().take(MAX_OPEN_LISTED) {
                out.push_str(&format!(
                    "  {} {}  {}  {}  {}  {}  {}\n",
                    style.mark(Some(false)),
                    i.id,
                    style.severity(i.severity),
                    i.class,
                    i.root,
                    render::percent(i.confidence),
                    style.dim(&format!("{} (opened {})", i.summary, render::ago(now, i.opened_s))),
                ));
            }
            if self.open.len() > MAX_OPEN_LISTED {
                out.push_str(&format!("  … and {} more: `faultline incidents`\n", self.open.len() - MAX_OPEN_LISTED));
            }
        }

        if !s.most_affected_jobs.is_empty() {
            out.push_str(&format!("{}\n", style.bold("most affected jobs")));
            for j in s.most_affected_jobs.iter().take(MAX_JOBS_LISTED) {
                out.push_str(&format!(
                    "  {}  {} open incident{}, {} rank{}\n",
                    j.job,
                    j.open_incidents,
                    if j.open_incidents == 1 { "" } else { "s" },
                    j.ranks,
                    if j.ranks == 1 { "" } else { "s" }
                ));
            }
        }
        out
    }
}

pub fn run(ctx: &Ctx, a: &StatusArgs) -> anyhow::Result<Verdict> {
    let snap = Snapshot::fetch(&ctx.client)?;
    if a.json {
        emit_json(&snap.json())?;
    } else {
        emit(&snap.render(&ctx.style, now_s()))?;
    }
    Ok(snap.verdict())
}
