//! Every alert name that `alerts/alertmanager.example.yml` matches on (routes and inhibit rules)
//! exists: an alert of the Prometheus rules in `alerts/*.rules.yml`, or `FaultlineIncident`, the
//! alert the analyzer posts itself. A matcher naming an alert nobody raises (it once named
//! `FaultlineHostFanStopped`, which never existed) inhibits nothing and fails here instead.

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `alert: NAME` lines of both rule files, plus the analyzer's own alert.
fn known_alerts() -> BTreeSet<String> {
    let mut names = BTreeSet::from(["FaultlineIncident".to_string()]);
    for f in ["alerts/agent.rules.yml", "alerts/analyzer.rules.yml"] {
        for line in read(f).lines() {
            if let Some(n) = line.trim().strip_prefix("- alert:") {
                names.insert(n.trim().to_string());
            }
        }
    }
    names
}

/// The values of every `alertname="…"` and `alertname=~"…"` matcher, with whether it is a regex.
fn alertname_matchers(config: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = config;
    while let Some(i) = rest.find("alertname") {
        rest = &rest[i + "alertname".len()..];
        let (regex, after) = if let Some(r) = rest.strip_prefix("=~\"") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("=\"") {
            (false, r)
        } else {
            continue;
        };
        let end = after.find('"').expect("closing quote");
        out.push((after[..end].to_string(), regex));
        rest = &after[end..];
    }
    out
}

/// A regex alternative without metacharacters is a name; `Prefix.*` matches names by prefix.
fn matches_some(alt: &str, known: &BTreeSet<String>) -> bool {
    match alt.strip_suffix(".*") {
        Some(prefix) => known.iter().any(|k| k.starts_with(prefix)),
        None => known.contains(alt),
    }
}

#[test]
fn every_alertname_in_the_alertmanager_example_exists() {
    let known = known_alerts();
    assert!(known.len() > 20, "{known:?}");
    let matchers = alertname_matchers(&read("alerts/alertmanager.example.yml"));
    assert!(matchers.len() >= 8, "{matchers:?}");
    let mut missing = Vec::new();
    for (value, regex) in &matchers {
        let alts: Vec<&str> = if *regex { value.split('|').collect() } else { vec![value.as_str()] };
        for alt in alts {
            if !matches_some(alt, &known) {
                missing.push(alt.to_string());
            }
        }
    }
    assert!(missing.is_empty(), "alertmanager.example.yml matches alerts that no rule raises: {missing:?}");
}

#[test]
fn the_checker_catches_a_name_that_does_not_exist() {
    let known = known_alerts();
    let m = alertname_matchers(r#"source_matchers: ['alertname="FaultlineHostFanStopped"']"#);
    assert_eq!(m, vec![("FaultlineHostFanStopped".to_string(), false)]);
    assert!(!matches_some("FaultlineHostFanStopped", &known));
    assert!(matches_some("FaultlineHostFan.*", &known));
}
