//! Terminal output for the diagnosis commands: colour (only on a TTY without `NO_COLOR`), health
//! marks, aligned tables, box-drawn trees, and human times. Pure string building: nothing here
//! writes to stdout, so every renderer is testable.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use faultline_proto::{Action, IncidentStatus, Severity};

/// How to decorate output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BOLD: &str = "1";
const DIM: &str = "2";

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if !no_color && std::io::stdout().is_terminal() { Self { color: true } } else { Self::plain() }
    }

    pub fn plain() -> Self {
        Self { color: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }

    pub fn red(&self, s: &str) -> String {
        self.paint(RED, s)
    }
    pub fn green(&self, s: &str) -> String {
        self.paint(GREEN, s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint(YELLOW, s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint(BOLD, s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint(DIM, s)
    }

    /// `✓` for healthy, `✗` for not, `?` when unknown.
    pub fn mark(&self, healthy: Option<bool>) -> String {
        match healthy {
            Some(true) => self.green("✓"),
            Some(false) => self.red("✗"),
            None => self.dim("?"),
        }
    }

    pub fn severity(&self, s: Severity) -> String {
        match s {
            Severity::Critical => self.red(s.as_str()),
            Severity::Warning => self.yellow(s.as_str()),
            Severity::Info => s.as_str().to_string(),
        }
    }

    pub fn status(&self, s: IncidentStatus) -> String {
        match s {
            IncidentStatus::Open => self.red("open"),
            IncidentStatus::Resolved => self.green("resolved"),
        }
    }
}

/// Terminal columns a string takes: ANSI colour sequences (`ESC [ … m`, which `Style` writes) take
/// none; the rest is measured by `unicode-width`, so a wide CJK or emoji character (in a node or job
/// name) counts two and a combining mark none.
pub fn width(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s;
    while let Some(esc) = rest.find('\x1b') {
        n += unicode_width::UnicodeWidthStr::width(&rest[..esc]);
        rest = match rest[esc..].find('m') {
            Some(m) => &rest[esc + m + 1..],
            None => "",
        };
    }
    n + unicode_width::UnicodeWidthStr::width(rest)
}

/// A table with a header row; columns are left-aligned and two spaces apart.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, style: &Style) -> String {
        let cols = self.headers.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0; cols];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String], header: bool| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                l.push_str(&if header { style.bold(c) } else { c.clone() });
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(widths[i].saturating_sub(width(c))));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, &self.headers, true);
        for r in &self.rows {
            line(&mut out, r, false);
        }
        out
    }
}

/// A tree of labelled nodes, built by merging paths that share a prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    pub key: String,
    pub label: String,
    pub children: Vec<Tree>,
    index: BTreeMap<String, usize>,
}

impl Tree {
    pub fn new(key: impl Into<String>, label: impl Into<String>) -> Self {
        Self { key: key.into(), label: label.into(), children: Vec::new(), index: BTreeMap::new() }
    }

    /// The child with `key`, created (with `label`) at the end if missing.
    pub fn child(&mut self, key: &str, label: impl FnOnce() -> String) -> &mut Tree {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.children.push(Tree::new(key, label()));
                self.index.insert(key.to_string(), self.children.len() - 1);
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }

    /// Merges `paths` (each a list of keys) into a forest; `label` turns a key into its line.
    pub fn forest(paths: &[Vec<String>], mut label: impl FnMut(&str) -> String) -> Vec<Tree> {
        let mut root = Tree::new("", "");
        for p in paths {
            let mut at = &mut root;
            for k in p {
                at = at.child(k, || label(k));
            }
        }
        root.children
    }

    /// Box-drawn lines, starting with this node's label on its own line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.label);
        out.push('\n');
        self.render_children("", &mut out);
        out
    }

    fn render_children(&self, prefix: &str, out: &mut String) {
        let n = self.children.len();
        for (i, c) in self.children.iter().enumerate() {
            let last = i + 1 == n;
            out.push_str(prefix);
            out.push_str(if last { "└── " } else { "├── " });
            out.push_str(&c.label);
            out.push('\n');
            let next = format!("{prefix}{}", if last { "    " } else { "│   " });
            c.render_children(&next, out);
        }
    }
}

/// `2024-05-01T12:00:03Z`: RFC 3339 to the second, UTC.
pub fn time(unix_s: f64) -> String {
    let full = faultline_proto::rfc3339(unix_s);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` → drop the milliseconds.
    match full.get(..19) {
        Some(head) => format!("{head}Z"),
        None => full,
    }
}

/// A span in its two largest units: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub fn span(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".to_string();
    }
    let s = secs.abs().round() as u64;
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// `3m12s ago` (or `in 5s` for a time ahead of `now_s`, when clocks disagree).
pub fn ago(now_s: f64, t: f64) -> String {
    if t > now_s + 1.0 { format!("in {}", span(t - now_s)) } else { format!("{} ago", span(now_s - t)) }
}

/// A confidence in 0..=1 as a whole percentage.
pub fn percent(x: f64) -> String {
    if x.is_finite() { format!("{:.0}%", (x * 100.0).clamp(0.0, 100.0)) } else { "?".to_string() }
}

/// Up to `max` items joined by `, `, then `+N more`.
pub fn list(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "-".to_string();
    }
    let mut s = items.iter().take(max).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > max {
        s.push_str(&format!(" +{} more", items.len() - max));
    }
    s
}

/// What a recommended action asks of people, in words.
pub fn action(a: Action) -> &'static str {
    match a {
        Action::None => "none: informational, nothing to do by hand",
        Action::RestartJob => "restart the job (from its last checkpoint)",
        Action::ResetGpu => "drain the node and reset the GPU",
        Action::RebootNode => "drain and reboot the node",
        Action::ReplacePart => "drain the node and replace the part (contact the vendor)",
        Action::InspectCableOrSwitch => "inspect the cable, transceiver and switch port",
    }
}

/// The snake_case name of an action, as the API writes it.
pub fn action_name(a: Action) -> String {
    serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{a:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_visible_width() {
        let style = Style { color: true };
        let mut t = Table::new(&["ID", "STATUS", "ROOT"]);
        t.row(vec!["inc-1".into(), style.red("open"), "node-0001/gpu3".into()]);
        t.row(vec!["inc-100".into(), style.green("resolved"), "n".into()]);
        let plain = t.render(&Style::plain());
        let expect = "ID       STATUS    ROOT\n\
                      inc-1    \x1b[31mopen\x1b[0m      node-0001/gpu3\n\
                      inc-100  \x1b[32mresolved\x1b[0m  n\n";
        assert_eq!(plain, expect);
    }

    #[test]
    fn trees_merge_shared_prefixes_and_draw_boxes() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let paths =
            vec![p(&["job", "r0", "gpu0", "n1"]), p(&["job", "r1", "gpu1", "n1"]), p(&["job", "r0", "gpu2", "n1"])];
        let forest = Tree::forest(&paths, |k| k.to_uppercase());
        assert_eq!(forest.len(), 1);
        let expect = "\
JOB
├── R0
│   ├── GPU0
│   │   └── N1
│   └── GPU2
│       └── N1
└── R1
    └── GPU1
        └── N1
";
        assert_eq!(forest[0].render(), expect);
    }

    #[test]
    fn width_ignores_colour_codes() {
        assert_eq!(width(&Style { color: true }.red("✗ fault")), 7);
        assert_eq!(width("├── a"), 5);
        assert_eq!(width("训练-节点"), 9, "wide characters take two columns");
        assert_eq!(width("e\u{301}"), 1, "a combining accent takes none");
        let mut t = Table::new(&["JOB", "NODE"]);
        t.row(vec!["训练".into(), "n1".into()]);
        t.row(vec!["abcde".into(), "n2".into()]);
        assert_eq!(t.render(&Style::plain()), "JOB    NODE\n训练   n1\nabcde  n2\n");
    }

    #[test]
    fn human_times() {
        assert_eq!(time(1_700_000_000.5), "2023-11-14T22:13:20Z");
        assert_eq!(span(45.0), "45s");
        assert_eq!(span(192.0), "3m12s");
        assert_eq!(span(7_500.0), "2h5m");
        assert_eq!(span(273_600.0), "3d4h");
        assert_eq!(ago(100.0, 40.0), "1m0s ago");
        assert_eq!(ago(100.0, 110.0), "in 10s");
        assert_eq!(percent(0.934), "93%");
        assert_eq!(list(&["a".into(), "b".into(), "c".into()], 2), "a, b +1 more");
        assert_eq!(action_name(Action::InspectCableOrSwitch), "inspect_cable_or_switch");
    }

    #[test]
    fn no_colour_means_no_escape_codes() {
        let s = Style::plain();
        for x in [s.red("a"), s.mark(Some(false)), s.severity(Severity::Critical), s.status(IncidentStatus::Open)] {
            assert!(!x.contains('\x1b'), "{x:?}");
        }
    }
}
