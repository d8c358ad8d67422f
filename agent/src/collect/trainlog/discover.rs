//! Where training logs are: a Slurm job's `StdOut`/`StdErr` (as `scontrol show job -o` prints them),
//! the kubelet's container logs (`<dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`), and
//! configured glob patterns.

use std::path::{Path, PathBuf};

/// The `StdOut` and `StdErr` paths of job `id` in `scontrol show job -o` output, Slurm's filename
/// patterns (`%j`, `%A`, `%a`, `%x`, `%u`, `%%`) expanded where an older `scontrol` left them.
pub fn slurm_log_paths(out: &str, id: &str) -> Vec<PathBuf> {
    for line in out.lines() {
        let mut fields = std::collections::HashMap::new();
        for w in line.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                fields.insert(k, v);
            }
        }
        if fields.get("JobId").copied() != Some(id) {
            continue;
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for key in ["StdOut", "StdErr"] {
            let Some(v) = fields.get(key).filter(|v| v.starts_with('/')) else { continue };
            let p = PathBuf::from(expand(v, &fields));
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        return paths;
    }
    Vec::new()
}

fn expand(pattern: &str, f: &std::collections::HashMap<&str, &str>) -> String {
    if !pattern.contains('%') {
        return pattern.to_string();
    }
    let user = f.get("UserId").map(|u| u.split('(').next().unwrap_or(u)).unwrap_or("");
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('j') => out.push_str(f.get("JobId").copied().unwrap_or("")),
            Some('A') => out.push_str(f.get("ArrayJobId").or(f.get("JobId")).copied().unwrap_or("")),
            Some('a') => out.push_str(f.get("ArrayTaskId").copied().unwrap_or("")),
            Some('x') => out.push_str(f.get("JobName").copied().unwrap_or("")),
            Some('u') => out.push_str(user),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The kubelet's container log files under `dir`, with the pod uid of each.
pub fn pod_logs(dir: &Path, max: usize) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for pod in crate::collect::list_dir(dir).unwrap_or_default() {
        // `<namespace>_<pod>_<uid>`: namespace and pod names cannot hold `_`, so the uid is the rest.
        let Some(uid) = pod.splitn(3, '_').nth(2) else { continue };
        for container in crate::collect::list_dir(&dir.join(&pod)).unwrap_or_default() {
            let cdir = dir.join(&pod).join(&container);
            for f in crate::collect::list_dir(&cdir).unwrap_or_default() {
                if f.ends_with(".log") && out.len() < max {
                    out.push((cdir.join(f), uid.to_string()));
                }
            }
        }
    }
    out
}

/// Files matching `pattern` (absolute; `*` and `?` in any component), at most `max`.
pub fn glob(pattern: &str, max: usize) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    if !pattern.starts_with('/') {
        return Vec::new();
    }
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        for base in &found {
            if part.contains(['*', '?']) {
                for name in crate::collect::list_dir(base).unwrap_or_default() {
                    if (part.starts_with('.') || !name.starts_with('.')) && wildcard(part, &name) {
                        next.push(base.join(name));
                    }
                }
            } else {
                next.push(base.join(part));
            }
            if next.len() > max * 4 {
                break;
            }
        }
        found = next.into_iter().filter(|p| if last { p.is_file() } else { p.is_dir() }).collect();
    }
    found.truncate(max);
    found
}

/// Shell wildcard match of one path component: `*` any run, `?` one character.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_gives_the_jobs_output_files() {
        // `scontrol show job -o` of a batch job (Slurm 23.02), shortened to the fields that matter.
        let out = "JobId=4242 JobName=pretrain UserId=alice(1001) GroupId=alice(1001) JobState=RUNNING \
                   WorkDir=/home/alice StdErr=/home/alice/logs/pretrain-4242.err StdIn=/dev/null \
                   StdOut=/home/alice/logs/pretrain-4242.out Power=\n\
                   JobId=4243 JobName=other StdOut=/tmp/o StdErr=/tmp/o\n";
        assert_eq!(
            slurm_log_paths(out, "4242"),
            [PathBuf::from("/home/alice/logs/pretrain-4242.out"), PathBuf::from("/home/alice/logs/pretrain-4242.err")]
        );
        assert_eq!(slurm_log_paths(out, "4243"), [PathBuf::from("/tmp/o")], "one file for both streams");
        assert!(slurm_log_paths(out, "9").is_empty());
    }

    #[test]
    fn unexpanded_patterns_are_expanded() {
        let out =
            "JobId=77 ArrayJobId=70 ArrayTaskId=7 JobName=sweep UserId=bob(5) StdOut=/l/%x-%A_%a.%u.out StdErr=/l/%j%%";
        assert_eq!(slurm_log_paths(out, "77"), [PathBuf::from("/l/sweep-70_7.bob.out"), PathBuf::from("/l/77%")]);
    }

    #[test]
    fn pod_logs_carry_their_pod_uid() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("train_llm-worker-1_6f1c2d3e-aaaa-bbbb-cccc-0123456789ab/pytorch");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "").unwrap();
        std::fs::write(c.join("0.log.20240501-101010.gz"), "").unwrap();
        let got = pod_logs(d.path(), 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab");
        assert!(got[0].0.ends_with("pytorch/0.log"));
    }

    #[test]
    fn globs_match_components() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a/rank0.log", "a/rank1.log", "b/rank0.log", "b/other.txt", "a/.hidden.log"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let pat = format!("{}/*/rank?.log", d.path().display());
        let mut got = glob(&pat, 10);
        got.sort();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(glob(&pat, 2).len(), 2);
        assert!(glob("relative/*.log", 10).is_empty());
        assert!(wildcard("*.log", "x.log") && !wildcard("*.log", "x.log.1") && wildcard("r?n*", "rank3"));
    }
}
