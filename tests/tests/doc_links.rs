//! Every Markdown file of the repository points at things that exist:
//! - every relative link `[text](path)` and every relative path in inline code (`deploy/README.md`,
//!   `alerts/`) names a file or directory of the repository (relative to the Markdown file or to the
//!   repository root);
//! - every `faultline …`, `faultline-agent …` and `faultline-analyzer …` command, in code blocks and
//!   inline code, names subcommands that exist (each level answers `--help`) and flags that the
//!   deepest one lists in its help.
//!
//! Runs in `cargo test --workspace`, so in `.ci/run`. Placeholders (`<scenario>`, `$VAR`, `*`) and
//! absolute paths (host paths of a deployment) are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use faultline_tests::bin;

const BINARIES: [&str; 3] = ["faultline-analyzer", "faultline-agent", "faultline"];

/// Extensions a path in inline code must end with to be checked (or end with `/`).
const PATH_EXTS: [&str; 12] = ["md", "toml", "yml", "yaml", "rs", "sh", "json", "py", "service", "csv", "txt", "lock"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if p.is_dir() {
            markdown_files(&p, out);
        } else if name.ends_with(".md") {
            out.push(p);
        }
    }
}

/// `(code blocks joined, inline code spans, link targets)` of a Markdown text.
fn parts(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut inline = Vec::new();
    let mut links = Vec::new();
    let mut in_block = false;
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            if in_block {
                blocks.push(std::mem::take(&mut cur));
            }
            in_block = !in_block;
            continue;
        }
        if in_block {
            cur.push_str(line);
            cur.push('\n');
            continue;
        }
        // Inline code spans.
        let mut rest = line;
        while let Some(a) = rest.find('`') {
            let after = &rest[a + 1..];
            let Some(b) = after.find('`') else { break };
            inline.push(after[..b].to_string());
            rest = &after[b + 1..];
        }
        // Links outside code spans.
        let no_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = no_code.as_str();
        while let Some(a) = rest.find("](") {
            let after = &rest[a + 2..];
            let Some(b) = after.find(')') else { break };
            links.push(after[..b].trim().to_string());
            rest = &after[b + 1..];
        }
    }
    (blocks, inline, links)
}

fn is_placeholder(s: &str) -> bool {
    s.contains(['<', '>', '*', '$', '{', '}', '…', ' ', '=']) || s.contains("...")
}

/// The path exists relative to the Markdown file or to the repository root.
fn exists(md: &Path, p: &str) -> bool {
    let p = p.split('#').next().unwrap_or(p).trim_end_matches(':');
    if p.is_empty() {
        return true;
    }
    let dir = md.parent().unwrap();
    dir.join(p).exists() || repo().join(p).exists()
}

fn looks_like_repo_path(s: &str) -> bool {
    // Build outputs (`target/release/...`) exist only after a build, never in a clean clone.
    if s.starts_with("target/") || s.starts_with("./target/") {
        return false;
    }
    if s.starts_with('/') || s.starts_with("~") || s.starts_with("../shared") || is_placeholder(s) || s.contains("://")
    {
        return false;
    }
    if !s.contains('/') && !s.ends_with(".md") {
        return false;
    }
    s.ends_with('/') || PATH_EXTS.iter().any(|e| s.ends_with(&format!(".{e}")))
}

/// Commands named in `text` (code blocks: one per line, continuation lines joined; inline code: the
/// span): `(binary, words after it)`.
fn commands(blocks: &[String], inline: &[String]) -> Vec<(String, Vec<String>)> {
    let mut lines: Vec<String> = Vec::new();
    for b in blocks {
        let mut cur = String::new();
        for l in b.lines() {
            let l = l.trim_end();
            if let Some(x) = l.strip_suffix('\\') {
                cur.push_str(x);
                cur.push(' ');
            } else {
                cur.push_str(l);
                lines.push(std::mem::take(&mut cur));
            }
        }
    }
    lines.extend(inline.iter().cloned());
    let mut out = Vec::new();
    for line in lines {
        let line = line.split(" # ").next().unwrap_or(&line).trim();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        let line = line
            .replace("cargo run --release -p faultline --", "faultline")
            .replace("./target/release/", "")
            .replace("target/release/", "");
        // Only lines that start with a command (after env assignments), never prose mentions.
        let mut words = line.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with('-')).peekable();
        let Some(first) = words.next() else { continue };
        let Some(binary) = BINARIES.iter().find(|b| first == **b) else { continue };
        let rest: Vec<String> = words.map(str::to_string).collect();
        if rest.is_empty() {
            continue;
        }
        out.push((binary.to_string(), rest));
    }
    out
}

#[derive(Default)]
struct Helps {
    cache: BTreeMap<(String, Vec<String>), Option<String>>,
}

impl Helps {
    /// `binary SUB... --help`, or `None` when it fails.
    fn help(&mut self, binary: &str, subs: &[String]) -> Option<String> {
        self.cache
            .entry((binary.to_string(), subs.to_vec()))
            .or_insert_with(|| {
                let out = Command::new(bin(binary)).args(subs).arg("--help").output().ok()?;
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
            })
            .clone()
    }
}

/// Subcommand names listed under `Commands:` in a help text.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.split("Commands:")
        .nth(1)
        .map(|s| {
            s.lines()
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What is wrong with one command, if anything.
fn check_command(helps: &mut Helps, binary: &str, words: &[String]) -> Option<String> {
    let mut subs: Vec<String> = Vec::new();
    let mut help = helps.help(binary, &subs).unwrap_or_else(|| panic!("{binary} --help fails"));
    let mut flags = Vec::new();
    let mut positional_seen = false;
    for w in words {
        if let Some(f) = w.strip_prefix("--") {
            let f = f.split('=').next().unwrap_or(f);
            if !f.is_empty() {
                flags.push(format!("--{f}"));
            }
            continue;
        }
        if w.starts_with('-') || positional_seen || is_placeholder(w) {
            positional_seen = positional_seen || !w.starts_with('-');
            continue;
        }
        // Only lowercase words can be subcommands; anything else is a flag's value or an argument
        // (URL, node-0003/gpu3, "$SLURM_JOB_ID") and does not end the subcommand path.
        if !w.split('|').all(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_lowercase() || c == '-')) {
            continue;
        }
        let known = subcommands(&help);
        if known.is_empty() {
            positional_seen = true;
            continue;
        }
        // Alternatives written `drain|resume|actions`.
        let alts: Vec<&str> = w.split('|').collect();
        if alts.iter().all(|a| known.contains(*a)) {
            if alts.len() > 1 {
                return None;
            }
            subs.push(w.clone());
            help = helps.help(binary, &subs)?;
        } else if w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && subs.is_empty() {
            return Some(format!(
                "`{binary} {w}` is no subcommand (it has: {})",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ));
        } else {
            positional_seen = true;
        }
    }
    for f in flags {
        if f == "--help" || f == "--version" {
            continue;
        }
        let listed = help.lines().any(|l| l.split(|c: char| c == ',' || c.is_whitespace()).any(|t| t == f));
        if !listed {
            return Some(format!("`{binary} {}` has no flag {f}", subs.join(" ")));
        }
    }
    None
}

#[test]
fn markdown_paths_and_commands_exist() {
    let root = repo();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let mut helps = Helps::default();
    let mut problems = Vec::new();
    let mut checked = (0usize, 0usize);
    for md in &files {
        let rel = md.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(md).unwrap();
        let (blocks, inline, links) = parts(&text);
        for l in &links {
            if l.contains("://") || l.starts_with('#') || l.starts_with("mailto:") || is_placeholder(l) {
                continue;
            }
            checked.0 += 1;
            if !exists(md, l) {
                problems.push(format!("{rel}: link to {l}, which does not exist"));
            }
        }
        for s in &inline {
            let s = s.trim();
            if looks_like_repo_path(s) {
                checked.0 += 1;
                if !exists(md, s) {
                    problems.push(format!("{rel}: names `{s}`, which does not exist"));
                }
            }
        }
        for (binary, words) in commands(&blocks, &inline) {
            checked.1 += 1;
            if let Some(p) = check_command(&mut helps, &binary, &words) {
                problems.push(format!("{rel}: {p} (in `{binary} {}`)", words.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems in the Markdown files:\n{}", problems.len(), problems.join("\n"));
    assert!(checked.0 > 20 && checked.1 > 20, "checked too little: {checked:?}");
    eprintln!("checked {} paths and {} commands in {} Markdown files", checked.0, checked.1, files.len());
}

#[test]
fn the_checker_finds_what_is_wrong() {
    let mut helps = Helps::default();
    let w = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert!(check_command(&mut helps, "faultline", &w("status --json")).is_none());
    assert!(check_command(&mut helps, "faultline", &w("sim run x.toml --speed 20 --analyzer URL")).is_none());
    assert!(check_command(&mut helps, "faultline", &w("stauts")).is_some());
    assert!(check_command(&mut helps, "faultline", &w("--analyzer URL stauts")).is_some());
    assert!(check_command(&mut helps, "faultline", &w("--analyzer http://x:9440 incidents --all")).is_none());
    assert!(check_command(&mut helps, "faultline", &w("explain node-0003/gpu3 --jsn")).is_some());
    assert!(check_command(&mut helps, "faultline", &w("status --jsn")).is_some());
    assert!(check_command(&mut helps, "faultline-analyzer", &w("cert init DIR --name x")).is_none());
    let (blocks, inline, links) =
        parts("see [a](docs/missing.md) and `alerts/README.md`\n```sh\nfaultline watch \\\n  --count 3\n```\n");
    assert_eq!(links, ["docs/missing.md"]);
    assert_eq!(inline, ["alerts/README.md"]);
    assert_eq!(commands(&blocks, &inline), [("faultline".to_string(), w("watch --count 3"))]);
    assert!(looks_like_repo_path("deploy/README.md") && !looks_like_repo_path("node-0003/gpu3"));
    assert!(!looks_like_repo_path("/etc/faultline/agent.toml") && !looks_like_repo_path("sim/scenarios/<s>.toml"));
    assert!(!looks_like_repo_path("target/release/") && looks_like_repo_path("deploy/target.md"));
}
