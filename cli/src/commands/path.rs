//! `faultline path JOB`: the job's dependency tree (job → rank → GPU → node → NIC → leaf switch, with
//! the leaf's uplinks) with a health mark on every component.
//!
//! Health comes cheaply where it can: ranks from the job view, switches from the topology, nodes from
//! the node list, open incident roots from the incident list. Only on a node the node list calls
//! unhealthy are the node, its GPUs and its NICs looked up one by one, so a healthy 1000-rank job
//! costs four requests.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use faultline_proto::ComponentId;
use faultline_proto::api::JobView;
use serde_json::{Value, json};

use super::{Ctx, Verdict, emit, emit_json, not_found};
use crate::client::{Client, ClientError, StatusFilter};
use crate::render::{Style, Tree};

/// Per-component lookups allowed on unhealthy nodes; past this, components there are marked `?`.
const MAX_COMPONENT_LOOKUPS: usize = 256;

#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Job id (llm-70b or job:llm-70b)
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Draw only the paths that pass through an unhealthy component (big jobs)
    #[arg(long)]
    pub faulty: bool,
    /// Print the job and the health of every component on its paths as JSON
    #[arg(long)]
    pub json: bool,
}

/// Health of every component on a job's paths: `None` when it could not be known.
#[derive(Debug, Clone, Default)]
pub struct HealthBook {
    pub health: BTreeMap<String, Option<bool>>,
    /// Leaf switch → its uplinks.
    pub uplinks: BTreeMap<String, Vec<String>>,
}

impl HealthBook {
    pub fn get(&self, id: &str) -> Option<bool> {
        self.health.get(id).copied().flatten()
    }

    pub fn any_faulty(&self) -> bool {
        self.health.values().any(|h| *h == Some(false))
    }
}

/// The rank paths of a job: the analyzer's own, or built from the ranks when it sent none.
pub fn job_paths(j: &JobView) -> Vec<Vec<String>> {
    if !j.paths.is_empty() {
        return j.paths.clone();
    }
    let job = format!("job:{}", j.id);
    let mut out = Vec::new();
    for r in &j.ranks {
        let rank = format!("job:{}/rank{}", j.id, r.rank);
        let tail: Vec<String> = std::iter::once(r.node.clone()).chain(r.nic.clone()).chain(r.leaf.clone()).collect();
        if r.gpus.is_empty() {
            out.push([job.clone(), rank.clone()].into_iter().chain(tail.iter().cloned()).collect());
        }
        for g in &r.gpus {
            out.push([job.clone(), rank.clone(), g.clone()].into_iter().chain(tail.iter().cloned()).collect());
        }
    }
    out
}

/// Gathers the health of everything on `paths`.
pub fn health_book(client: &Client, j: &JobView, paths: &[Vec<String>]) -> Result<HealthBook, ClientError> {
    let mut book = HealthBook::default();
    let ids: BTreeSet<&str> = paths.iter().flatten().map(String::as_str).collect();
    let topo = client.topology()?.value;
    let nodes = client.nodes()?.value;
    let open = client.incidents(StatusFilter::Open, None)?.value;
    let switch_health: BTreeMap<&str, bool> = topo.switches.iter().map(|s| (s.id.as_str(), s.healthy)).collect();
    for s in &topo.switches {
        book.uplinks.insert(s.id.clone(), s.uplinks.clone());
    }
    let node_health: BTreeMap<&str, bool> =
        nodes.iter().map(|n| (n.summary.node.as_str(), n.summary.healthy)).collect();
    let roots: BTreeSet<String> = open.iter().map(|i| i.root.to_string()).collect();
    let rank_health: BTreeMap<String, bool> =
        j.ranks.iter().map(|r| (format!("job:{}/rank{}", j.id, r.rank), r.healthy)).collect();

    let mut lookups = 0usize;
    for id in ids.iter().copied().chain(book.uplinks.values().flatten().map(String::as_str).collect::<Vec<_>>()) {
        if book.health.contains_key(id) {
            continue;
        }
        let h = if roots.contains(id) {
            Some(false)
        } else if let Some(h) = switch_health.get(id) {
            Some(*h)
        } else if let Some(h) = rank_health.get(id) {
            Some(*h)
        } else if id == format!("job:{}", j.id) {
            Some(j.healthy)
        } else {
            match id.parse::<ComponentId>().ok().as_ref().and_then(|c| c.host().map(|h| (c, h.to_string()))) {
                // On a healthy node everything is healthy: the node list says "no current symptom on
                // the node or anything on it".
                Some((_, host)) if node_health.get(host.as_str()) == Some(&true) => Some(true),
                Some((c, _)) if lookups < MAX_COMPONENT_LOOKUPS => {
                    lookups += 1;
                    match client.component(c) {
                        Ok(f) => Some(f.value.healthy),
                        Err(ClientError::NotFound { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            }
        };
        book.health.insert(id.to_string(), h);
    }
    Ok(book)
}

pub fn run(ctx: &Ctx, a: &PathArgs) -> anyhow::Result<Verdict> {
    let job = a.job.trim();
    let job = job.strip_prefix("job:").unwrap_or(job);
    let got = ctx
        .client
        .job(job)
        .map_err(|e| not_found(e, &format!("job {job}"), "list running jobs with `faultline jobs`"))?;
    let paths = job_paths(&got.value);
    let book = health_book(&ctx.client, &got.value, &paths)?;
    let findings = !got.value.healthy || book.any_faulty();
    if a.json {
        let health: BTreeMap<&String, Value> =
            book.health.iter().map(|(k, v)| (k, v.map(Value::Bool).unwrap_or(Value::Null))).collect();
        emit_json(&json!({ "job": got.raw, "health": health }))?;
    } else if a.faulty {
        // The job line itself is unhealthy whenever anything under it is, so it does not count.
        let job_id = format!("job:{}", got.value.id);
        let through: Vec<Vec<String>> =
            paths.iter().filter(|p| p.iter().any(|c| *c != job_id && book.get(c) == Some(false))).cloned().collect();
        if through.is_empty() {
            emit(&format!(
                "no path of job:{} passes through an unhealthy component ({} paths checked)\n",
                got.value.id,
                paths.len()
            ))?;
        } else {
            emit(&tree_text(&got.value, &through, &book, &ctx.style))?;
        }
    } else {
        emit(&tree_text(&got.value, &paths, &book, &ctx.style))?;
    }
    Ok(Verdict::of(findings))
}

/// The tree, one line per component, with marks and a little context on ranks and leaves.
pub fn tree_text(j: &JobView, paths: &[Vec<String>], book: &HealthBook, style: &Style) -> String {
    if paths.is_empty() {
        return format!("job:{} {}\n  (no ranks reported yet)\n", j.id, style.mark(Some(j.healthy)));
    }
    let ranks: BTreeMap<String, &faultline_proto::api::RankView> =
        j.ranks.iter().map(|r| (format!("job:{}/rank{}", j.id, r.rank), r)).collect();
    let forest = Tree::forest(paths, |k| {
        let mut line = format!(
            "{} {}",
            style.mark(book.get(k)),
            if book.get(k) == Some(false) { style.red(k) } else { k.to_string() }
        );
        if let Some(r) = ranks.get(k) {
            let step = r.step.map(|s| format!(", step {s}")).unwrap_or_default();
            line.push_str(&style.dim(&format!(" ({}{step})", r.state)));
        }
        if let Some(up) = book.uplinks.get(k).filter(|u| !u.is_empty()) {
            let ups: Vec<String> = up.iter().map(|u| format!("{} {u}", style.mark(book.get(u)))).collect();
            line.push_str(&format!("  uplinks: {}", ups.join(", ")));
        }
        line
    });
    let mut out = String::new();
    for t in &forest {
        out.push_str(&t.render());
    }
    let faulty: Vec<&String> = book.health.iter().filter(|(_, h)| **h == Some(false)).map(|(k, _)| k).collect();
    if faulty.is_empty() {
        out.push_str(&format!("{}\n", style.green("every component on the path is healthy")));
    } else {
        let names: Vec<String> = faulty.iter().map(|s| s.to_string()).collect();
        out.push_str(&format!(
            "{} {}\n",
            style.red(&format!("{} faulty:", names.len())),
            crate::render::list(&names, 10)
        ));
        out.push_str(&format!("{}\n", style.dim("why: faultline explain COMPONENT")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::api::RankView;

    fn rank(r: u32, node: &str, gpus: &[&str], healthy: bool) -> RankView {
        RankView {
            rank: r,
            node: node.into(),
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
            nic: Some(format!("{node}/nic:mlx5_{r}")),
            leaf: Some("switch:leaf-1".into()),
            healthy,
            step: Some(10),
            state: "running".into(),
        }
    }

    #[test]
    fn paths_are_built_from_ranks_when_the_analyzer_sends_none() {
        let j = JobView {
            id: "a".into(),
            ranks: vec![rank(0, "n1", &["n1/gpu0"], true), rank(1, "n2", &["n2/gpu0", "n2/gpu1"], false)],
            paths: vec![],
            healthy: false,
            incidents: vec![],
            step_time_ms: None,
        };
        let p = job_paths(&j);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], vec!["job:a", "job:a/rank0", "n1/gpu0", "n1", "n1/nic:mlx5_0", "switch:leaf-1"]);
        assert_eq!(p[2][2], "n2/gpu1");
    }

    #[test]
    fn tree_marks_faulty_and_unknown_components() {
        let j = JobView {
            id: "a".into(),
            ranks: vec![rank(0, "n1", &["n1/gpu0"], false)],
            paths: vec![],
            healthy: false,
            incidents: vec![],
            step_time_ms: None,
        };
        let paths = job_paths(&j);
        let mut book = HealthBook::default();
        for (k, v) in
            [("job:a", Some(false)), ("job:a/rank0", Some(false)), ("n1/gpu0", Some(false)), ("n1", Some(true))]
        {
            book.health.insert(k.into(), v);
        }
        book.health.insert("n1/nic:mlx5_0".into(), None);
        book.health.insert("switch:leaf-1".into(), Some(true));
        book.health.insert("switch:spine-1".into(), Some(true));
        book.uplinks.insert("switch:leaf-1".into(), vec!["switch:spine-1".into()]);
        let s = tree_text(&j, &paths, &book, &Style::plain());
        let expect = "\
✗ job:a
└── ✗ job:a/rank0 (running, step 10)
    └── ✗ n1/gpu0
        └── ✓ n1
            └── ? n1/nic:mlx5_0
                └── ✓ switch:leaf-1  uplinks: ✓ switch:spine-1
3 faulty: job:a, job:a/rank0, n1/gpu0
why: faultline explain COMPONENT
";
        assert_eq!(s, expect);
        assert!(book.any_faulty());
    }
}
