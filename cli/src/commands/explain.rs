//! `faultline explain COMPONENT|job:ID`: why something is unhealthy (its symptoms with evidence), the
//! incidents that name it, and its neighbours in the dependency graph.

use clap::Args;
use faultline_proto::api::{ComponentView, JobView};
use faultline_proto::{ComponentId, ComponentKind, Incident};

use super::{Ctx, Verdict, emit, emit_json, not_found, now_s};
use crate::client::{Client, ClientError};
use crate::render::{self, Style, Table};

/// Neighbours whose health is looked up one request each; past this they are listed unmarked
/// (a spine switch can have hundreds of dependents, and a mark is not worth hundreds of requests).
const MAX_NEIGHBOUR_LOOKUPS: usize = 32;
/// Incidents fetched in full to show their class and summary; the rest are listed by id.
const MAX_INCIDENTS_SHOWN: usize = 10;
/// Unhealthy ranks listed for a job before "… and N more".
const MAX_RANKS_LISTED: usize = 32;

const ID_HELP: &str = "ids look like node-0003, node-0003/gpu5, node-0003/gpu5/nvlink3, node-0003/nic:mlx5_2, \
node-0003/disk:nvme0n1, node-0003/agent, switch:leaf-02, job:llm-70b, job:llm-70b/rank17";

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Component id (node-0003/gpu5, node-0003/nic:mlx5_2, switch:leaf-02, …) or job:ID (a bare
    /// job id that names no node works too)
    #[arg(value_name = "COMPONENT|job:ID")]
    pub target: String,
    /// Print the component (or job) as JSON (the API object)
    #[arg(long)]
    pub json: bool,
}

/// Parses a component id, with advice on the format when it is wrong.
pub fn parse_id(s: &str) -> anyhow::Result<ComponentId> {
    s.trim().parse::<ComponentId>().map_err(|e| anyhow::anyhow!("{e}; {ID_HELP}"))
}

pub fn run(ctx: &Ctx, a: &ExplainArgs) -> anyhow::Result<Verdict> {
    let id = parse_id(&a.target)?;
    if let ComponentId::Job { id: job } = &id {
        return run_job(ctx, job, a.json);
    }
    let got = match ctx.client.component(&id) {
        Ok(g) => g,
        // A bare name that is no node may be a job id given without `job:`, as `path` takes it.
        Err(ClientError::NotFound { message }) => match &id {
            ComponentId::Node { host } if ctx.client.job(host).is_ok() => return run_job(ctx, host, a.json),
            _ => {
                return Err(not_found(
                    ClientError::NotFound { message },
                    &format!("component {id}"),
                    "see `faultline status`, `faultline topology`, `faultline jobs` or `faultline path JOB` for known ids",
                ));
            }
        },
        Err(e) => {
            return Err(not_found(
                e,
                &format!("component {id}"),
                "see `faultline status`, `faultline topology` or `faultline path JOB` for known ids",
            ));
        }
    };
    if a.json {
        emit_json(&got.raw)?;
    } else {
        emit(&component_text(&ctx.client, &got.value, &ctx.style, now_s())?)?;
    }
    Ok(Verdict::of(!got.value.healthy))
}

fn component_text(client: &Client, v: &ComponentView, style: &Style, now: f64) -> anyhow::Result<String> {
    let mut out = String::new();
    let health = if v.healthy { style.green("healthy ✓") } else { style.red("UNHEALTHY ✗") };
    out.push_str(&format!("{} ({}): {health}\n", style.bold(&v.id.to_string()), v.kind));
    out.push_str(&symptoms_text(v, style, now));
    out.push_str(&incidents_text(client, &v.incidents, style)?);
    out.push_str(&neighbours_text(client, "depends on", &v.depends_on, style)?);
    out.push_str(&neighbours_text(client, "depended on by", &v.dependents, style)?);
    Ok(out)
}

fn symptoms_text(v: &ComponentView, style: &Style, now: f64) -> String {
    if v.symptoms.is_empty() {
        return if v.healthy {
            String::new()
        } else {
            format!("\n{}\n  none of its own (unhealthy through an incident)\n", style.bold("symptoms"))
        };
    }
    let mut t = Table::new(&["SEVERITY", "KIND", "SINCE", "EVIDENCE"]);
    let mut symptoms = v.symptoms.clone();
    symptoms.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.onset_s.total_cmp(&b.onset_s)));
    for s in &symptoms {
        t.row(vec![
            style.severity(s.severity),
            s.kind.clone(),
            format!("{} ({})", render::time(s.onset_s), render::ago(now, s.onset_s)),
            s.detail.clone(),
        ]);
    }
    let mut out = format!("\n{}\n{}", style.bold("symptoms"), indent(&t.render(style)));
    for s in &symptoms {
        if let (Some(until), Some(why)) = (s.held_until_s, s.held_because.as_deref()) {
            let left = if until > now { render::ago(now, until) } else { "passed".to_string() };
            out.push_str(&format!("  {} held until {} ({left}), because {why}\n", s.kind, render::time(until)));
        }
    }
    out
}

fn incidents_text(client: &Client, ids: &[String], style: &Style) -> anyhow::Result<String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    let mut out = format!("\n{}\n", style.bold("incidents"));
    let mut t = Table::new(&["ID", "STATUS", "CLASS", "ROOT", "SUMMARY"]);
    // Newest ids last in the API; show the newest first.
    for id in ids.iter().rev().take(MAX_INCIDENTS_SHOWN) {
        match client.incident(id) {
            Ok(f) => {
                let i: Incident = f.value;
                t.row(vec![i.id, style.status(i.status), i.class.to_string(), i.root.to_string(), i.summary]);
            }
            Err(ClientError::NotFound { .. }) => t.row(vec![id.clone(), "?".into(), "".into(), "".into(), "".into()]),
            Err(e) => return Err(e.into()),
        }
    }
    out.push_str(&indent(&t.render(style)));
    if ids.len() > MAX_INCIDENTS_SHOWN {
        out.push_str(&format!("  … and {} older\n", ids.len() - MAX_INCIDENTS_SHOWN));
    }
    out.push_str(&format!("  {}\n", style.dim("details: faultline incident ID")));
    Ok(out)
}

fn neighbours_text(client: &Client, title: &str, ids: &[ComponentId], style: &Style) -> anyhow::Result<String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    let lookups = ids.len() <= MAX_NEIGHBOUR_LOOKUPS;
    let mut out = format!("\n{}\n", style.bold(title));
    for id in ids {
        if lookups {
            let healthy = match client.component(id) {
                Ok(f) => Some(f.value.healthy),
                Err(ClientError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            out.push_str(&format!("  {} {id}\n", style.mark(healthy)));
        } else {
            out.push_str(&format!("  {id}\n"));
        }
    }
    Ok(out)
}

fn run_job(ctx: &Ctx, job: &str, json: bool) -> anyhow::Result<Verdict> {
    let got = ctx
        .client
        .job(job)
        .map_err(|e| not_found(e, &format!("job {job}"), "list running jobs with `faultline jobs`"))?;
    if json {
        emit_json(&got.raw)?;
        return Ok(Verdict::of(!got.value.healthy));
    }
    // The job as a graph component carries job-level symptoms (hang, crash); not every analyzer
    // has it in the graph, so a 404 just means "no job-level symptoms".
    let comp = match ctx.client.component(&ComponentId::job(job)) {
        Ok(f) => Some(f.value),
        Err(ClientError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let text = job_text(&ctx.client, &got.value, comp.as_ref(), &ctx.style, now_s())?;
    emit(&text)?;
    let healthy = got.value.healthy && comp.as_ref().is_none_or(|c| c.healthy);
    Ok(Verdict::of(!healthy))
}

fn job_text(
    client: &Client,
    j: &JobView,
    comp: Option<&ComponentView>,
    style: &Style,
    now: f64,
) -> anyhow::Result<String> {
    let healthy = j.healthy && comp.is_none_or(|c| c.healthy);
    let mut out = String::new();
    let health = if healthy { style.green("healthy ✓") } else { style.red("UNHEALTHY ✗") };
    let mut nodes: Vec<&str> = j.ranks.iter().map(|r| r.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let step = j.step_time_ms.map(|ms| format!(", step time {ms:.0} ms")).unwrap_or_default();
    out.push_str(&format!(
        "{} ({}): {health}\n  {} rank{} on {} node{}{step}\n",
        style.bold(&format!("job:{}", j.id)),
        ComponentKind::Job,
        j.ranks.len(),
        if j.ranks.len() == 1 { "" } else { "s" },
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
    ));
    if let Some(c) = comp {
        out.push_str(&symptoms_text(c, style, now));
    }
    let sick: Vec<_> = j.ranks.iter().filter(|r| !r.healthy).collect();
    if !sick.is_empty() {
        out.push_str(&format!("\n{}\n", style.bold("ranks not healthy")));
        let mut t = Table::new(&["RANK", "NODE", "GPUS", "NIC", "STATE", "STEP"]);
        for r in sick.iter().take(MAX_RANKS_LISTED) {
            t.row(vec![
                format!("{} {}", style.mark(Some(false)), r.rank),
                r.node.clone(),
                render::list(&r.gpus, 8),
                r.nic.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                r.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&indent(&t.render(style)));
        if sick.len() > MAX_RANKS_LISTED {
            out.push_str(&format!("  … and {} more\n", sick.len() - MAX_RANKS_LISTED));
        }
    }
    let mut incidents = j.incidents.clone();
    if let Some(c) = comp {
        for i in &c.incidents {
            if !incidents.contains(i) {
                incidents.push(i.clone());
            }
        }
    }
    out.push_str(&incidents_text(client, &incidents, style)?);
    out.push_str(&format!("\n  {}\n", style.dim(&format!("its full dependency tree: faultline path {}", j.id))));
    Ok(out)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ids_get_format_advice() {
        let err = parse_id("node-1/gpuX").unwrap_err().to_string();
        assert!(err.contains("node-1/gpuX") && err.contains("switch:leaf-02"), "{err}");
        assert_eq!(parse_id(" node-1/nic:mlx5_0 ").unwrap(), ComponentId::nic("node-1", "mlx5_0"));
        assert_eq!(parse_id("job:llm").unwrap(), ComponentId::job("llm"));
    }
}
