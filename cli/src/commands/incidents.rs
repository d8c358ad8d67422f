//! `faultline incidents` (a table) and `faultline incident ID` (one incident in full, with its
//! affected job paths drawn as trees).

use clap::Args;
use faultline_proto::{ComponentId, Incident, IncidentStatus};

use super::{Ctx, Verdict, emit, emit_json, not_found, now_s};
use crate::client::StatusFilter;
use crate::render::{self, Style, Table, Tree};

/// Affected jobs named in a table cell before "+N more".
const MAX_JOBS_IN_CELL: usize = 3;
/// Affected paths drawn in full; a big job can have thousands, and the first ones tell the story.
const MAX_PATHS_DRAWN: usize = 64;

#[derive(Debug, Clone, Args)]
pub struct IncidentsArgs {
    /// Include resolved incidents
    #[arg(long)]
    pub all: bool,
    /// Only incidents opened since TIME: RFC 3339 (2024-05-01T12:00:00Z), Unix seconds, or a
    /// duration meaning that long ago (30m, 2h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Print the incidents as JSON (the API objects)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IncidentArgs {
    /// Incident id, e.g. inc-000001
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print the incident as JSON (the API object)
    #[arg(long)]
    pub json: bool,
}

/// Parses `--since`: a duration back from `now` (`2h`), Unix seconds, or RFC 3339.
pub fn parse_since(s: &str, now: f64) -> anyhow::Result<f64> {
    let t = s.trim();
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(now - d.as_secs_f64());
    }
    let unix = t.parse::<f64>().ok().filter(|v| v.is_finite());
    unix.or_else(|| faultline_proto::parse_rfc3339(t)).ok_or_else(|| {
        anyhow::anyhow!(
            "--since {s:?} is neither a duration (30m, 2h, 7d), an RFC 3339 time (2024-05-01T12:00:00Z) nor Unix seconds"
        )
    })
}

pub fn run_list(ctx: &Ctx, a: &IncidentsArgs) -> anyhow::Result<Verdict> {
    let now = now_s();
    let since = a.since.as_deref().map(|s| parse_since(s, now)).transpose()?;
    let filter = if a.all { StatusFilter::All } else { StatusFilter::Open };
    let got = ctx.client.incidents(filter, since)?;
    let findings = got.value.iter().any(|i| i.status == IncidentStatus::Open);
    if a.json {
        emit_json(&got.raw)?;
    } else {
        emit(&table(&got.value, &ctx.style, a.all, since))?;
    }
    Ok(Verdict::of(findings))
}

fn table(list: &[Incident], style: &Style, all: bool, since: Option<f64>) -> String {
    if list.is_empty() {
        let what = if all { "no incidents" } else { "no open incidents" };
        return match since {
            Some(t) => format!("{what} since {}\n", render::time(t)),
            None => format!("{what}\n"),
        };
    }
    let mut t = Table::new(&["ID", "STATUS", "CLASS", "ROOT", "SEVERITY", "CONF", "OPENED", "AFFECTED JOBS"]);
    for i in list {
        t.row(vec![
            i.id.clone(),
            style.status(i.status),
            i.class.to_string(),
            i.root.to_string(),
            style.severity(i.severity),
            render::percent(i.confidence),
            render::time(i.opened_s),
            render::list(&i.affected_jobs, MAX_JOBS_IN_CELL),
        ]);
    }
    t.render(style)
}

pub fn run_one(ctx: &Ctx, a: &IncidentArgs) -> anyhow::Result<Verdict> {
    let id = a.id.trim();
    let got = ctx
        .client
        .incident(id)
        .map_err(|e| not_found(e, &format!("incident {id}"), "list them with `faultline incidents --all`"))?;
    if a.json {
        emit_json(&got.raw)?;
    } else {
        emit(&detail(&got.value, &ctx.style, now_s()))?;
    }
    Ok(Verdict::of(got.value.status == IncidentStatus::Open))
}

/// The full text of one incident.
pub fn detail(i: &Incident, style: &Style, now: f64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{}  {}  {}  {}\n",
        style.bold(&i.id),
        style.status(i.status),
        style.severity(i.severity),
        i.class
    ));
    if !i.summary.is_empty() {
        out.push_str(&format!("{}\n", i.summary));
    }
    out.push('\n');
    let field =
        |out: &mut String, k: &str, v: String| out.push_str(&format!("  {}  {v}\n", style.bold(&format!("{k:<12}"))));
    field(&mut out, "root cause", format!("{} ({})", style.red(&i.root.to_string()), i.root.kind()));
    field(&mut out, "class", i.class.to_string());
    field(&mut out, "severity", style.severity(i.severity));
    field(&mut out, "confidence", render::percent(i.confidence));
    let who = if i.action.needs_person() { "needs a person" } else { "no person needed" };
    field(&mut out, "action", format!("{}: {} ({who})", render::action_name(i.action), render::action(i.action)));
    field(&mut out, "onset", format!("{} ({})", render::time(i.onset_s), render::ago(now, i.onset_s)));
    field(&mut out, "opened", format!("{} ({})", render::time(i.opened_s), render::ago(now, i.opened_s)));
    if let Some(r) = i.resolved_s {
        field(&mut out, "resolved", format!("{} ({})", render::time(r), render::ago(now, r)));
    }
    field(
        &mut out,
        "affected",
        if i.affected_jobs.is_empty() { "no jobs".to_string() } else { i.affected_jobs.join(", ") },
    );

    if !i.evidence.is_empty() {
        out.push_str(&format!("\n{}\n", style.bold("evidence")));
        let mut ev = i.evidence.clone();
        ev.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut t = Table::new(&["TIME", "COMPONENT", "KIND", "DETAIL"]);
        for e in &ev {
            t.row(vec![render::time(e.at_s), e.component.to_string(), e.kind.clone(), e.detail.clone()]);
        }
        out.push_str(&indent(&t.render(style)));
    }
    if !i.timeline.is_empty() {
        out.push_str(&format!("\n{}\n", style.bold("timeline")));
        let mut tl = i.timeline.clone();
        tl.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut t = Table::new(&["TIME", "WHAT", "DETAIL"]);
        // A detail's first line is its sentence; lines after it are a program's output (the end of
        // a validation command's), shown below the table so the table stays one line per entry.
        let mut outputs = Vec::new();
        for e in &tl {
            let (first, rest) = e.detail.split_once('\n').unwrap_or((e.detail.as_str(), ""));
            let shown = if rest.is_empty() { first.to_string() } else { format!("{first} (output below)") };
            t.row(vec![render::time(e.at_s), e.what.clone(), shown]);
            if !rest.is_empty() {
                outputs.push((e.at_s, first, rest));
            }
        }
        out.push_str(&indent(&t.render(style)));
        if !outputs.is_empty() {
            out.push_str(&format!("\n{}\n", style.bold("check output")));
            for (at, first, rest) in outputs {
                out.push_str(&format!("  {}  {first}\n", render::time(at)));
                for l in rest.lines() {
                    out.push_str(&format!("    | {l}\n"));
                }
            }
        }
    }
    if !i.paths.is_empty() {
        out.push_str(&format!("\n{}\n", style.bold("affected paths")));
        out.push_str(&paths_tree(&i.paths, &i.root, style));
    }
    out
}

/// Draws paths as trees, marking the root cause.
pub fn paths_tree(paths: &[Vec<String>], root: &ComponentId, style: &Style) -> String {
    let root_s = root.to_string();
    let shown = &paths[..paths.len().min(MAX_PATHS_DRAWN)];
    let forest = Tree::forest(shown, |k| {
        if k == root_s { format!("{} {}", style.red(k), style.red("✗ root cause")) } else { k.to_string() }
    });
    let mut out = String::new();
    for t in &forest {
        out.push_str(&t.render());
    }
    if paths.len() > MAX_PATHS_DRAWN {
        out.push_str(&format!("… and {} more paths (--json has them all)\n", paths.len() - MAX_PATHS_DRAWN));
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_rfc3339_and_unix_seconds() {
        let now = 1_700_000_000.0;
        assert_eq!(parse_since("2h", now).unwrap(), now - 7200.0);
        assert_eq!(parse_since("30m", now).unwrap(), now - 1800.0);
        assert_eq!(parse_since("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000.0);
        assert_eq!(parse_since("1699990000", now).unwrap(), 1_699_990_000.0);
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("yesterday") && err.contains("2h"), "{err}");
    }

    #[test]
    fn a_checks_output_is_shown_under_the_timeline_not_inside_it() {
        use faultline_proto::{Action, FaultClass, IncidentStatus, Severity, TimelineEntry};
        let entry = |at_s: f64, detail: &str| TimelineEntry { at_s, what: "action".into(), detail: detail.into() };
        let i = Incident {
            id: "inc-000007".into(),
            root: "node-0001/gpu1".parse().unwrap(),
            class: FaultClass::GpuLost,
            severity: Severity::Critical,
            confidence: 0.9,
            status: IncidentStatus::Resolved,
            summary: String::new(),
            onset_s: 1_700_000_000.0,
            opened_s: 1_700_000_000.0,
            opened_at: String::new(),
            updated_s: 1_700_000_000.0,
            resolved_s: Some(1_700_000_100.0),
            affected_jobs: vec![],
            paths: vec![],
            evidence: vec![],
            timeline: vec![
                entry(1_700_000_200.0, "validation of node-0001: gpu-count passed: 8 of 8 GPUs"),
                entry(
                    1_700_000_201.0,
                    "validation of node-0001: dcgm-diag FAILED: exit status: 1 after 2.0 s\nMemory  Fail - GPU 3\nDone",
                ),
            ],
            action: Action::ResetGpu,
        };
        let text = detail(&i, &Style::plain(), 1_700_000_300.0);
        let (table, output) = text.split_once("check output").expect(&text);
        assert!(table.contains("gpu-count passed: 8 of 8 GPUs"), "{text}");
        assert!(table.contains("dcgm-diag FAILED: exit status: 1 after 2.0 s (output below)"), "{text}");
        assert!(!table.contains("Memory  Fail"), "the output stays out of the table: {text}");
        assert!(
            output.contains("dcgm-diag FAILED") && output.contains("    | Memory  Fail - GPU 3\n    | Done\n"),
            "{text}"
        );
        assert!(!output.contains("gpu-count"), "a check without output is not repeated: {text}");
    }

    #[test]
    fn paths_tree_marks_the_root() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let paths = vec![
            p(&["job:a", "job:a/rank0", "n1/gpu0", "n1", "n1/nic:mlx5_0", "switch:leaf-1"]),
            p(&["job:a", "job:a/rank1", "n1/gpu1", "n1", "n1/nic:mlx5_1", "switch:leaf-1"]),
        ];
        let s = paths_tree(&paths, &"n1/gpu1".parse().unwrap(), &Style::plain());
        let expect = "\
job:a
├── job:a/rank0
│   └── n1/gpu0
│       └── n1
│           └── n1/nic:mlx5_0
│               └── switch:leaf-1
└── job:a/rank1
    └── n1/gpu1 ✗ root cause
        └── n1
            └── n1/nic:mlx5_1
                └── switch:leaf-1
";
        assert_eq!(s, expect);
    }
}
