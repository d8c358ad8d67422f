//! The shipped benchmark suite (`sim/scenarios/*.toml`) parses, and the catalog files cover every
//! kind of the fault catalog at least three times on different targets, on both fabrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use faultline_proto::FaultClass;
use faultline_sim::Scenario;
use faultline_sim::scenario::Fabric;

fn load(name: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    Scenario::from_path(&p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            Scenario::from_path(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 7, "{n} scenarios");
}

#[test]
fn the_catalog_covers_every_kind_three_times_on_both_fabrics() {
    for (file, fabric) in [("catalog.toml", Fabric::Tor), ("catalog-rail.toml", Fabric::Rail)] {
        let sc = load(file);
        assert_eq!(sc.cluster.fabric, fabric);
        let mut targets: BTreeMap<FaultClass, BTreeSet<String>> = BTreeMap::new();
        for f in &sc.faults {
            targets.entry(f.kind).or_default().insert(f.target.to_string());
            assert!(f.duration_s > 0.0 && f.at_s + f.duration_s < sc.duration_s, "{file}: {:?} clears", f.kind);
        }
        for k in FaultClass::ALL {
            let n = targets.get(k).map_or(0, BTreeSet::len);
            assert!(n >= 3, "{file}: {k} has {n} distinct targets");
        }
        // One at a time: no two faults overlap.
        let mut spans: Vec<(f64, f64)> = sc.faults.iter().map(|f| (f.at_s, f.at_s + f.duration_s)).collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{file}: faults overlap");
    }
}

#[test]
fn the_scale_scenarios_have_their_size() {
    let s = load("scale-16k.toml");
    assert_eq!(s.cluster.nodes * s.cluster.gpus_per_node, 16_384);
    let s = load("scale-100k.toml");
    assert_eq!(s.cluster.nodes * s.cluster.gpus_per_node, 100_000);
    let c = load("clean.toml");
    assert_eq!((c.cluster.nodes, c.duration_s), (256, 86_400.0));
    assert!(c.faults.is_empty() && c.jobs.len() > 50 && c.noise > 0.0);
}
