//! No import circle between the modules of one crate. Reads every crate's sources (no build, no
//! dependency) and fails on a cycle.
//!
//! Granularity: for every module directory (the crate root `src/` included) the nodes are its
//! child modules, a child directory counting as one node; `a` → `b` when code in `a` (or below it)
//! names a path into `b` (or below it) with `crate::…`, `super::…` or a bare child name. Paths
//! through a re-export (`pub use x::Y` in the parent's own file) count as paths into `x`. The
//! parent's own file (`lib.rs`, `main.rs`, `mod.rs`) is not a node: children using items it
//! defines is the usual shape of a Rust module. Code under `#[cfg(test)]` (inline test modules and
//! files declared `#[cfg(test)] mod x;`) is left out: tests sit above what they test.
//!
//! `cargo test -p faultline-tests --test no_import_cycles -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module of one crate, by its path from the crate root (`["telemetry", "nics"]`).
type ModPath = Vec<String>;

/// One crate's modules: each module's own source (test code removed), its child modules, and the
/// names its own file re-exports from a child.
#[derive(Default)]
struct Crate {
    /// module path → source text of its own file, with comments, strings and test code removed
    source: BTreeMap<ModPath, String>,
    /// module path → names of its child modules
    children: BTreeMap<ModPath, BTreeSet<String>>,
    /// (module path, re-exported name) → the child module it comes from
    reexports: BTreeMap<(ModPath, String), String>,
}

/// Removes comments, string and char literals (kept as `""`), so that braces and paths inside them
/// do not count.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) && !ident_byte(b, i) {
            // raw string r"…" / r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // a char literal ('x', '\n', '\u{..}') or a lifetime ('a)
            let close = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&x| x == b'\'').map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            // keep multi-byte characters whole
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Whether the byte before `i` continues an identifier (so `r` at `i` is not a raw-string prefix).
fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The tokens of stripped source: identifiers, `::`, and single punctuation characters.
fn tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Removes items marked `#[cfg(test)]` (the attribute and the item after it, up to its closing
/// brace or semicolon). Returns the rest and the names of `#[cfg(test)] mod x;` declarations.
fn drop_test_code(toks: Vec<String>) -> (Vec<String>, BTreeSet<String>) {
    let mut out = Vec::new();
    let mut test_mods = BTreeSet::new();
    let mut i = 0;
    let is = |toks: &[String], i: usize, s: &[&str]| {
        s.iter().enumerate().all(|(k, x)| toks.get(i + k).is_some_and(|t| t == x))
    };
    while i < toks.len() {
        if is(&toks, i, &["#", "[", "cfg", "(", "test", ")", "]"]) {
            let mut j = i + 7;
            // skip further attributes
            while is(&toks, j, &["#", "["]) {
                let mut depth = 0;
                while j < toks.len() {
                    if toks[j] == "[" {
                        depth += 1;
                    } else if toks[j] == "]" {
                        depth -= 1;
                        if depth == 0 {
                            j += 1;
                            break;
                        }
                    }
                    j += 1;
                }
            }
            // `mod name;` → a test-only file
            let k = if toks.get(j).is_some_and(|t| t == "pub") { j + 1 } else { j };
            if toks.get(k).is_some_and(|t| t == "mod") && toks.get(k + 2).is_some_and(|t| t == ";") {
                test_mods.insert(toks[k + 1].clone());
            }
            // skip the item: to the first `;` at depth 0, or the close of the first `{`
            let mut depth = 0;
            while j < toks.len() {
                match toks[j].as_str() {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            j += 1;
                            break;
                        }
                    }
                    ";" if depth == 0 => {
                        j += 1;
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            out.push(toks[i].clone());
            i += 1;
        }
    }
    (out, test_mods)
}

/// The file of a declared module `name` of the module whose own file is `file`.
fn child_file(file: &Path, is_dir_owner: bool, name: &str) -> Option<PathBuf> {
    let dir = if is_dir_owner { file.parent()?.to_path_buf() } else { file.parent()?.join(file.file_stem()?) };
    let flat = dir.join(format!("{name}.rs"));
    let nested = dir.join(name).join("mod.rs");
    if flat.exists() {
        Some(flat)
    } else if nested.exists() {
        Some(nested)
    } else {
        None
    }
}

/// Reads the module at `file` (path `at`) and, recursively, the files it declares.
fn load(krate: &mut Crate, file: &Path, is_dir_owner: bool, at: ModPath) {
    let Ok(text) = std::fs::read_to_string(file) else { return };
    let (toks, test_mods) = drop_test_code(tokens(&strip(&text)));
    let mut children = BTreeSet::new();
    // `mod name;` declarations (inline `mod name { … }` stays part of this file)
    for (i, t) in toks.iter().enumerate() {
        if t == "mod" && toks.get(i + 2).is_some_and(|t| t == ";") {
            let name = toks[i + 1].clone();
            if test_mods.contains(&name) {
                continue;
            }
            if let Some(f) = child_file(file, is_dir_owner, &name) {
                let owner = f.file_name().is_some_and(|n| n == "mod.rs");
                let mut p = at.clone();
                p.push(name.clone());
                load(krate, &f, owner, p);
                children.insert(name);
            }
        }
    }
    // `pub use child::…` re-exports
    for (i, t) in toks.iter().enumerate() {
        if t != "use" || i == 0 || !(toks[i - 1] == "pub" || toks[i - 1] == ")") {
            continue;
        }
        let mut j = i + 1;
        if toks.get(j).is_some_and(|t| t == "self") && toks.get(j + 1).is_some_and(|t| t == "::") {
            j += 2;
        }
        let Some(first) = toks.get(j) else { continue };
        if !children.contains(first) {
            continue;
        }
        let end = toks[j..].iter().position(|t| t == ";").map_or(toks.len(), |p| j + p);
        // every identifier followed by `,`, `}` or `;`, or the alias after `as`
        for k in j + 1..end {
            let next = toks.get(k + 1).map(String::as_str);
            let name = &toks[k];
            if name.chars().all(|c| c.is_alphanumeric() || c == '_')
                && matches!(next, Some(",") | Some("}") | Some(";"))
            {
                krate.reexports.insert((at.clone(), name.clone()), first.clone());
            }
        }
    }
    krate.children.insert(at.clone(), children);
    krate.source.insert(at, toks.join(" "));
}

impl Crate {
    /// Follows `rest` from module `base` as far as it names modules (or re-exports of a child).
    fn resolve(&self, mut base: ModPath, rest: &[String]) -> ModPath {
        for name in rest {
            let kids = self.children.get(&base);
            if kids.is_some_and(|k| k.contains(name)) {
                base.push(name.clone());
            } else if let Some(child) = self.reexports.get(&(base.clone(), name.clone())) {
                base.push(child.clone());
                // the item itself may be a re-export again one level down
                if let Some(deeper) = self.reexports.get(&(base.clone(), name.clone())) {
                    base.push(deeper.clone());
                }
                break;
            } else {
                break;
            }
        }
        base
    }

    /// Every module path that the source of module `at` names.
    fn targets(&self, at: &ModPath) -> BTreeSet<ModPath> {
        let mut out = BTreeSet::new();
        let toks: Vec<String> = self.source[at].split(' ').map(str::to_string).collect();
        let mut i = 0;
        while i < toks.len() {
            let t = &toks[i];
            let prev = if i > 0 { toks[i - 1].as_str() } else { "" };
            let starts_path = prev != "::" && prev != "$";
            let base = if t == "crate" && starts_path && toks.get(i + 1).is_some_and(|x| x == "::") {
                Some((Vec::new(), i + 2))
            } else if t == "super" && starts_path && toks.get(i + 1).is_some_and(|x| x == "::") {
                let mut base = at.clone();
                let mut j = i;
                while toks.get(j).is_some_and(|x| x == "super") && toks.get(j + 1).is_some_and(|x| x == "::") {
                    base.pop();
                    j += 2;
                }
                Some((base, j))
            } else if t == "self" && starts_path && toks.get(i + 1).is_some_and(|x| x == "::") {
                Some((at.clone(), i + 2))
            } else if starts_path && self.children[at].contains(t) && toks.get(i + 1).is_some_and(|x| x == "::") {
                Some((at.clone(), i))
            } else {
                None
            };
            let Some((base, j)) = base else {
                i += 1;
                continue;
            };
            self.walk(&toks, j, base, &mut out);
            i = j.max(i + 1);
        }
        out
    }

    /// Reads the path (or use tree) starting at token `j` below module `base`.
    fn walk(&self, toks: &[String], j: usize, base: ModPath, out: &mut BTreeSet<ModPath>) {
        if toks.get(j).is_some_and(|t| t == "{") {
            // a group: each entry at depth 1 starts a path
            let mut depth = 0;
            let mut k = j;
            let mut entry_start = true;
            while k < toks.len() {
                match toks[k].as_str() {
                    "{" => {
                        depth += 1;
                        if depth == 1 {
                            entry_start = true;
                            k += 1;
                            continue;
                        }
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            return;
                        }
                    }
                    "," if depth == 1 => {
                        entry_start = true;
                        k += 1;
                        continue;
                    }
                    _ => {}
                }
                if entry_start && depth == 1 {
                    self.walk(toks, k, base.clone(), out);
                    entry_start = false;
                }
                k += 1;
            }
            return;
        }
        let mut names = Vec::new();
        let mut k = j;
        while let Some(t) = toks.get(k) {
            if t == "{" {
                let inner = self.resolve(base.clone(), &names);
                if inner.len() == base.len() + names.len() {
                    self.walk(toks, k, inner.clone(), out);
                }
                out.insert(inner);
                return;
            }
            if !t.chars().all(|c| c.is_alphanumeric() || c == '_') {
                break;
            }
            names.push(t.clone());
            if toks.get(k + 1).is_some_and(|x| x == "::") {
                k += 2;
            } else {
                break;
            }
        }
        out.insert(self.resolve(base, &names));
    }
}

/// The cycles of one crate, each as the names of the nodes on it (`parent: a → b → a`).
fn cycles(krate: &Crate) -> (Vec<String>, Vec<String>) {
    // level (a module directory) → child → children it uses
    let mut graph: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for from in krate.source.keys() {
        for to in krate.targets(from) {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                let level = from[..common].to_vec();
                graph.entry(level).or_default().entry(from[common].clone()).or_default().insert(to[common].clone());
            }
        }
    }
    let mut found = Vec::new();
    let mut edges = Vec::new();
    for (level, g) in &graph {
        let prefix = if level.is_empty() { "crate".to_string() } else { format!("crate::{}", level.join("::")) };
        for (a, bs) in g {
            edges.push(format!("{prefix}: {a} -> {}", bs.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        // strongly connected components with more than one node (Tarjan's, recursive: graphs are small)
        for scc in strongly_connected(g) {
            if scc.len() > 1 {
                found.push(format!("{prefix}: {}", scc.join(" <-> ")));
            }
        }
    }
    (found, edges)
}

fn strongly_connected(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            scc.sort();
            t.out.push(scc);
        }
    }
    let mut t =
        T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Every crate root of the workspace: `lib.rs` and `main.rs` of each member (binaries are crates
/// of their own).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn crate_roots() -> Vec<PathBuf> {
    let ws = workspace();
    let mut roots = Vec::new();
    for member in ["proto", "logging", "agent", "analyzer", "cli", "sim", "tests", "tests/fake-nvml"] {
        for root in ["src/lib.rs", "src/main.rs"] {
            let p = ws.join(member).join(root);
            if p.exists() {
                roots.push(p);
            }
        }
    }
    roots
}

/// Cycles allowed to stay, each with the reason. None: every cycle found when this check was written
/// has been broken. The check fails on any cycle not listed here, and on a listed one that is gone,
/// so a list that ever grows again can only shrink.
const KNOWN: &[&str] = &[];

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let ws = workspace();
    let roots = crate_roots();
    assert!(roots.len() >= 6, "found only {roots:?}");
    let mut all = Vec::new();
    let mut total_edges = 0;
    for root in &roots {
        let mut krate = Crate::default();
        load(&mut krate, root, true, Vec::new());
        let (found, edges) = cycles(&krate);
        println!("{} ({} modules):", root.display(), krate.source.len());
        for e in &edges {
            println!("  {e}");
        }
        total_edges += edges.len();
        let name = root.strip_prefix(&ws).unwrap_or(root).display().to_string();
        all.extend(found.into_iter().map(|c| format!("{name}: {c}")));
    }
    assert!(total_edges > 20, "the scan found almost no imports ({total_edges}); the parser is broken");
    let new: Vec<&String> = all.iter().filter(|c| !KNOWN.contains(&c.as_str())).collect();
    let gone: Vec<&&str> = KNOWN.iter().filter(|k| !all.iter().any(|c| c == *k)).collect();
    assert!(new.is_empty(), "import cycles:\n{}", new.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("\n"));
    assert!(gone.is_empty(), "cycles listed in KNOWN that are gone (or changed): remove them from the list\n{gone:?}");
}

/// The scanner itself: a cycle written into a scratch crate is found, through `crate::`, `super::`,
/// a use group and a re-export; a test-only import is not counted.
#[test]
fn the_scan_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\npub use c::Thing;\n").unwrap();
    std::fs::write(src.join("a.rs"), "//! a\nuse crate::{b::{inner::X}, Thing};\n").unwrap();
    std::fs::write(src.join("b/mod.rs"), "//! b\nmod inner;\n").unwrap();
    std::fs::write(src.join("b/inner.rs"), "//! inner\npub fn f() -> super::super::a::Y { todo!() }\n").unwrap();
    std::fs::write(src.join("c.rs"), "//! c \"crate::a::Z\"\n#[cfg(test)]\nmod tests { use crate::a::Y; }\n").unwrap();
    let mut krate = Crate::default();
    load(&mut krate, &src.join("lib.rs"), true, Vec::new());
    let (found, edges) = cycles(&krate);
    assert_eq!(found, vec!["crate: a <-> b".to_string()], "{edges:?}");
    assert!(edges.contains(&"crate: a -> b, c".to_string()), "{edges:?}");
}
