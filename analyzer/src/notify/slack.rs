//! Slack-compatible incoming webhooks: `{"text": ..., "blocks": [...]}` with a header, the root
//! cause, the recommended action, affected jobs, the first evidence and a link to the incident.
//! `text` is the fallback shown in notifications and by clients without blocks.

use faultline_proto::{Incident, rfc3339};
use serde_json::{Value, json};

use super::alertmanager::{action_str, truncate_chars};
use super::config::Event;

/// Slack refuses a header block text over 150 characters.
const MAX_HEADER_CHARS: usize = 150;
/// Slack refuses a section text over 3000 characters.
const MAX_SECTION_CHARS: usize = 3000;
/// Evidence lines shown; the full list is one click away.
const MAX_EVIDENCE_LINES: usize = 5;
/// Job names listed before "and N more".
const MAX_JOBS_LISTED: usize = 10;

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn headline(event: Event, inc: &Incident) -> String {
    let tag = match event {
        Event::Resolved => "RESOLVED".to_string(),
        _ => super::notify_severity(inc).as_str().to_uppercase(),
    };
    format!("[{tag}] {} {}: {}", inc.id, event, inc.summary)
}

/// The message for `event` about `inc`.
pub fn payload(event: Event, inc: &Incident, link: &str) -> Result<String, serde_json::Error> {
    let head = headline(event, inc);
    let jobs = if inc.affected_jobs.is_empty() {
        "none".to_string()
    } else {
        let shown: Vec<String> =
            inc.affected_jobs.iter().take(MAX_JOBS_LISTED).map(|j| format!("`{}`", escape(j))).collect();
        let more = inc.affected_jobs.len().saturating_sub(MAX_JOBS_LISTED);
        if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
    };
    let mut main = format!(
        "*Root cause:* `{}` ({}, confidence {:.2})\n*Recommended action:* {}\n*Affected jobs:* {}",
        escape(&inc.root.to_string()),
        inc.class,
        inc.confidence,
        action_str(inc),
        jobs
    );
    if let Some(r) = inc.resolved_s {
        main.push_str(&format!("\n*Resolved at:* {}", rfc3339(r)));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate_chars(&head, MAX_HEADER_CHARS)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate_chars(&main, MAX_SECTION_CHARS)}}),
    ];
    if !inc.evidence.is_empty() {
        let mut ev = String::from("*Evidence*");
        for e in inc.evidence.iter().take(MAX_EVIDENCE_LINES) {
            ev.push_str(&format!(
                "\n• `{}` {}: {}",
                escape(&e.component.to_string()),
                escape(&e.kind),
                escape(&e.detail)
            ));
        }
        if inc.evidence.len() > MAX_EVIDENCE_LINES {
            ev.push_str(&format!("\n• … and {} more", inc.evidence.len() - MAX_EVIDENCE_LINES));
        }
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate_chars(&ev, MAX_SECTION_CHARS)}}),
        );
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("<{}|{}> · opened {}", link, escape(&inc.id), escape(&inc.opened_at))}]}));
    let body: Value = json!({"text": format!("{} {}", escape(&head), link), "blocks": blocks});
    serde_json::to_string(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::incident;
    use faultline_proto::IncidentStatus;

    #[test]
    fn message_has_text_and_blocks_with_the_root_cause() {
        let inc = incident();
        let body = payload(Event::Opened, &inc, "http://fl/api/v1/incidents/inc-000007").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("[CRITICAL] inc-000007 opened: node-0003/gpu5 fell off the bus"), "{text}");
        assert!(text.ends_with("http://fl/api/v1/incidents/inc-000007"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let main = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(main.contains("`node-0003/gpu5` (gpu_lost, confidence 0.97)"), "{main}");
        assert!(main.contains("reboot_node") && main.contains("`llm-70b`, `vit-h`"), "{main}");
        assert!(blocks[2]["text"]["text"].as_str().unwrap().contains("XID 79"));
        let ctx = blocks.last().unwrap()["elements"][0]["text"].as_str().unwrap();
        assert!(ctx.starts_with("<http://fl/api/v1/incidents/inc-000007|inc-000007>"), "{ctx}");
    }

    #[test]
    fn resolved_and_escaping_and_limits() {
        let mut inc = incident();
        inc.status = IncidentStatus::Resolved;
        inc.resolved_s = Some(1_700_000_300.0);
        inc.summary = format!("<b>&{}", "x".repeat(400));
        inc.evidence[0].detail = "a <script> & more".into();
        let v: Value = serde_json::from_str(&payload(Event::Resolved, &inc, "http://fl/x").unwrap()).unwrap();
        let head = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(head.starts_with("[RESOLVED] inc-000007 resolved"), "{head}");
        assert!(head.chars().count() <= MAX_HEADER_CHARS);
        assert!(v["text"].as_str().unwrap().contains("&lt;b&gt;&amp;"));
        assert!(v["blocks"][1]["text"]["text"].as_str().unwrap().contains("Resolved at:* 2023-11-14T22:18:20.000Z"));
        assert!(v["blocks"][2]["text"]["text"].as_str().unwrap().contains("a &lt;script&gt; &amp; more"));
    }
}
