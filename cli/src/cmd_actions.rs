//! `faultline drain NODE`, `faultline resume NODE` and `faultline actions`: a person's drain and
//! resume through the analyzer's scheduler adapter, and the list of pending and taken remediation
//! actions.
//!
//! Exit codes: `drain`/`resume` 0 when done (or already so, or a dry run), 2 when refused or failed.
//! `actions` 0 when nothing waits for a person, 1 when a drain is suggested or blocked, 2 on error.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use faultline_proto::remediation::{
    ActionRecord, ActionResult, ActionsView, DrainRequest, PendingState, ResumeRequest,
};
use serde_json::Value;

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::commands::{ConnArgs, EXIT_ERROR, emit, emit_json};
use crate::config;
use crate::render::{self, Style, Table};

/// Exit codes of `drain` and `resume`, shown under `--help`.
pub const WRITE_EXIT_CODES: &str = "\
Exit codes:
  0  done: drained/resumed, already so, or logged only (the analyzer runs with --dry-run)
  2  error: refused (someone else's drain, not drained, no scheduler adapter), the scheduler failed,
     or the analyzer is unreachable or refused the token";

/// Exit codes of `actions`, shown under `--help`.
pub const ACTIONS_EXIT_CODES: &str = "\
Exit codes:
  0  nothing waits for a person
  1  a drain is suggested (policy `suggest`) or blocked (blast-radius guard, or it kept failing)
  2  error: the analyzer is unreachable or refused the token";

/// Most taken actions drawn in the table (`--json` has all the analyzer returned).
const MAX_TAKEN_SHOWN: usize = 30;

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Cluster node name, as the agents report it (the analyzer maps it to the scheduler's name)
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Why; recorded in the scheduler after `faultline: manual:`
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print the recorded action as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// Cluster node name
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Resume even a drain someone else set (its reason does not start with `faultline:`)
    #[arg(long)]
    pub force: bool,
    /// Print the recorded action as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ActionsArgs {
    /// Print the analyzer's answer as JSON (`pending` and `taken`)
    #[arg(long)]
    pub json: bool,
}

fn finish(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

pub fn run_drain(conn: &ConnArgs, a: &DrainArgs) -> ExitCode {
    finish((|| {
        let body = serde_json::to_value(DrainRequest { node: a.node.clone(), reason: a.reason.clone() })?;
        let rec = post(conn, "/api/v1/actions/drain", &body)?;
        show_record(&rec, a.json)?;
        Ok(0)
    })())
}

pub fn run_resume(conn: &ConnArgs, a: &ResumeArgs) -> ExitCode {
    finish((|| {
        let body = serde_json::to_value(ResumeRequest { node: a.node.clone(), force: a.force })?;
        let rec = post(conn, "/api/v1/actions/resume", &body)?;
        show_record(&rec, a.json)?;
        Ok(0)
    })())
}

pub fn run_list(conn: &ConnArgs, a: &ActionsArgs) -> ExitCode {
    finish((|| {
        let settings = config::from_env(conn.analyzer.as_deref(), conn.flag_token()?.as_deref())?;
        let client = Client::new(&settings.analyzer, settings.token, conn.ca_cert.as_deref())?;
        let got = client.get::<ActionsView>("/api/v1/actions")?;
        if a.json {
            emit_json(&got.raw)?;
        } else {
            emit(&text(&got.value, &Style::detect()))?;
        }
        let needs_person =
            got.value.pending.iter().any(|p| matches!(p.state, PendingState::Suggested | PendingState::Blocked));
        Ok(u8::from(needs_person))
    })())
}

fn show_record(rec: &(Value, ActionRecord), json: bool) -> anyhow::Result<()> {
    if json {
        return emit_json(&rec.0);
    }
    let r = &rec.1;
    let word = match r.result {
        ActionResult::Ok => "done",
        ActionResult::Skipped => "nothing to do",
        ActionResult::DryRun => "dry run, nothing changed",
        other => other.as_str(),
    };
    emit(&format!("{} {}: {word}\n{}\n", r.action, r.node, r.detail))
}

/// POSTs JSON to the analyzer; the answer as JSON and as an action record. Non-2xx answers become
/// errors carrying the analyzer's own words.
fn post(conn: &ConnArgs, path: &str, body: &Value) -> anyhow::Result<(Value, ActionRecord)> {
    let settings = config::from_env(conn.analyzer.as_deref(), conn.flag_token()?.as_deref())?;
    let http = crate::client::builder(conn.ca_cert.as_deref())?
        // The analyzer waits for the scheduler (scontrol may take its own timeout) before answering.
        .timeout(REQUEST_TIMEOUT * 2)
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}{path}", settings.analyzer);
    let mut req = http.post(&url).json(body);
    if let Some(t) = &settings.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| crate::client::unreachable(&settings.analyzer, &e))?;
    let status = resp.status();
    let text = resp.text().context("cannot read the analyzer's answer")?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg =
            value.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| text.trim().to_string());
        return Err(match status.as_u16() {
            401 | 403 => anyhow::anyhow!(
                "the analyzer refused the token (HTTP {status}: {msg}); drain and resume need the analyzer's token: set --token or FAULTLINE_TOKEN"
            ),
            _ => anyhow::anyhow!("{msg} (HTTP {})", status.as_u16()),
        });
    }
    let rec: ActionRecord = serde_json::from_value(value.clone())
        .with_context(|| format!("the analyzer's answer to {path} is not an action record: {text}"))?;
    Ok((value, rec))
}

/// The text form of `GET /api/v1/actions`.
pub fn text(v: &ActionsView, style: &Style) -> String {
    let mut out = String::new();
    let adapter = v.adapter.as_deref().unwrap_or("no scheduler adapter");
    out.push_str(&format!(
        "remediation: {adapter}, default mode {}{}; guard: {} of {} drains used in the last {}\n",
        v.default_mode,
        if v.dry_run { ", DRY RUN" } else { "" },
        v.drained_in_window,
        v.drain_limit,
        render::span(v.window_s),
    ));
    out.push('\n');
    if v.pending.is_empty() {
        out.push_str("no pending actions\n");
    } else {
        out.push_str(&format!("{}\n", style.bold("pending")));
        let mut t = Table::new(&["ACTION", "NODE", "INCIDENT", "STATE", "DUE", "DETAIL"]);
        for p in &v.pending {
            let state = match p.state {
                PendingState::Blocked => style.red(p.state.as_str()),
                PendingState::Suggested => style.yellow(p.state.as_str()),
                _ => p.state.as_str().to_string(),
            };
            t.row(vec![
                p.action.to_string(),
                p.node.clone(),
                p.incident.clone().unwrap_or_else(|| "-".into()),
                state,
                p.due_s.map(render::time).unwrap_or_else(|| "-".into()),
                p.detail.clone(),
            ]);
        }
        out.push_str(&t.render(style));
    }
    out.push('\n');
    if v.taken.is_empty() {
        out.push_str("no actions taken\n");
    } else {
        let skip = v.taken.len().saturating_sub(MAX_TAKEN_SHOWN);
        out.push_str(&format!("{}\n", style.bold("taken")));
        let mut t = Table::new(&["TIME", "ACTION", "NODE", "INCIDENT", "RESULT", "BY", "DETAIL"]);
        for r in &v.taken[skip..] {
            let result = match r.result {
                ActionResult::Ok => style.green("ok"),
                ActionResult::Failed | ActionResult::Blocked => style.red(r.result.as_str()),
                other => other.as_str().to_string(),
            };
            t.row(vec![
                render::time(r.at_s),
                r.action.to_string(),
                r.node.clone(),
                r.incident.clone().unwrap_or_else(|| "-".into()),
                result,
                match r.origin {
                    faultline_proto::remediation::ActionOrigin::Auto => "faultline".into(),
                    faultline_proto::remediation::ActionOrigin::Manual => "person".into(),
                },
                // Only the sentence: a validation's command output follows it on later lines, which
                // `faultline incident ID` shows.
                r.detail.lines().next().unwrap_or_default().to_string(),
            ]);
        }
        out.push_str(&t.render(style));
        if skip > 0 {
            out.push_str(&format!("… {skip} older actions not shown (--json has them)\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::remediation::{ActionOrigin, NodeAction, PendingAction, RemediationMode};

    #[test]
    fn text_lists_pending_and_taken() {
        let v = ActionsView {
            adapter: Some("slurm".into()),
            dry_run: false,
            default_mode: RemediationMode::Act,
            drain_limit: 2,
            drained_in_window: 1,
            window_s: 3600.0,
            pending: vec![PendingAction {
                action: NodeAction::Drain,
                node: "node-0005".into(),
                incident: Some("inc-000002".into()),
                state: PendingState::Blocked,
                since_s: 1_700_000_000.0,
                due_s: None,
                detail: "blocked: too many".into(),
            }],
            taken: vec![ActionRecord {
                id: 1,
                at_s: 1_700_000_000.0,
                at: faultline_proto::rfc3339(1_700_000_000.0),
                action: NodeAction::Drain,
                node: "node-0002".into(),
                target: "node-0002".into(),
                incident: Some("inc-000001".into()),
                origin: ActionOrigin::Auto,
                result: ActionResult::Ok,
                reason: Some("faultline: gpu_lost node-0002/gpu1 inc-000001".into()),
                detail: "drained node-0002".into(),
            }],
        };
        let s = text(&v, &Style::plain());
        assert!(s.contains("slurm, default mode act; guard: 1 of 2 drains used in the last 1h0m"), "{s}");
        assert!(s.contains("node-0005") && s.contains("blocked: too many"), "{s}");
        assert!(s.contains("drained node-0002") && s.contains("faultline"), "{s}");
    }
}
