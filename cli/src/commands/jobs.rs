//! `faultline jobs`: the jobs the analyzer knows (running, or finished: every rank exited), their
//! size and health, and the incidents that touch them.

use clap::Args;
use faultline_proto::api::JobView;

use super::{Ctx, Verdict, emit, emit_json};
use crate::render::{self, Style, Table};

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Print the jobs as JSON (the API objects)
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, a: &JobsArgs) -> anyhow::Result<Verdict> {
    let got = ctx.client.jobs()?;
    if a.json {
        emit_json(&got.raw)?;
    } else {
        emit(&text(&got.value, &ctx.style))?;
    }
    Ok(Verdict::of(got.value.iter().any(|j| !j.healthy)))
}

/// A job whose every rank has exited: over, though the analyzer still lists it for a while.
pub fn finished(j: &JobView) -> bool {
    !j.ranks.is_empty() && j.ranks.iter().all(|r| matches!(r.state.as_str(), "exited" | "zombie"))
}

pub fn text(jobs: &[JobView], style: &Style) -> String {
    if jobs.is_empty() {
        return "no jobs reported\n".to_string();
    }
    let mut t = Table::new(&["JOB", "STATE", "HEALTH", "RANKS", "NODES", "STEP TIME", "INCIDENTS"]);
    for j in jobs {
        let mut nodes: Vec<&str> = j.ranks.iter().map(|r| r.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let sick = j.ranks.iter().filter(|r| !r.healthy).count();
        t.row(vec![
            j.id.clone(),
            if finished(j) { style.dim("finished") } else { "running".to_string() },
            if j.healthy {
                style.green("✓ ok")
            } else if sick > 0 {
                style.red(&format!("✗ {sick} rank{} unhealthy", if sick == 1 { "" } else { "s" }))
            } else {
                style.red("✗ unhealthy")
            },
            j.ranks.len().to_string(),
            nodes.len().to_string(),
            j.step_time_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "-".into()),
            render::list(&j.incidents, 3),
        ]);
    }
    t.render(style)
}
