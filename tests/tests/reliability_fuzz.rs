//! Bounded property tests ("fuzzing" with proptest) of every parser that reads outside input, run
//! through the code the binaries use. None may panic; what they accept must be usable downstream.
//!
//! - Reports: structured reports with extreme but well-typed values, then mutated (fields removed,
//!   values swapped for other JSON types). Whatever `NodeReport::from_json` accepts is ingested by
//!   the real engine and ticked through detectors and localizer, several reports per node in a row.
//! - Topology files: TOML and JSON through the analyzer's own loader (`config::load_topology`).
//! - Scenario files: `faultline_sim::Scenario::parse` on mutated real scenarios and on TOML-shaped
//!   noise; a small scenario that parses yields a topology the analyzer's loader accepts.
//!
//! The kernel-log classifier has its own proptests next to its sample file
//! (`agent/tests/classify_samples.rs`), and `proto/tests/fuzz.rs` fuzzes raw bytes into the decoder.

use std::io::Write;

use faultline_analyzer::config::load_topology;
use faultline_analyzer::{Analyzer, EngineConfig};
use faultline_proto::{NodeReport, TopologyFile};
use faultline_sim::Scenario;
use faultline_sim::cluster::Cluster;
use proptest::prelude::*;
use serde_json::{Value, json};

const T0: i64 = 1_750_000_000_000;

/// A number from the places values break: zero, boundaries, huge, negative, fractional.
fn edgy_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u32::MAX)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(5e-324)),
        Just(json!(100.0)),
        Just(json!(100.000001)),
        (0u64..1_000_000).prop_map(|n| json!(n)),
        (-1000.0f64..1000.0).prop_map(|f| json!(f)),
    ]
}

/// Any JSON value of small depth.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edgy_number(),
        "[a-z0-9/:_-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn gpu(i: u32, state: &'static str, temp: Value, power: Value, xid_counter: Value) -> Value {
    json!({
        "index": i, "uuid": format!("GPU-{i:04}"), "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": format!("00000000:{:02X}:00.0", 0x18 + i * 16), "state": state,
        "util_gpu_pct": 50.0, "temp_c": temp, "power_w": power, "power_limit_w": 700.0,
        "mem_total_bytes": 85899345920u64, "mem_used_bytes": 1000,
        "energy_mj": xid_counter, "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "throttle_mask": 0,
    })
}

prop_compose! {
    fn report_value()(
        node in prop::sample::select(vec!["node-0001", "node-0002", "n", "x-1.example"]),
        seq in prop_oneof![0u64..5, Just(u64::MAX)],
        dt in -5_000i64..600_000,
        interval in prop_oneof![Just(1u64), Just(10_000u64), Just(3_600_000u64)],
        gpus in prop::collection::vec(
            (prop::sample::select(vec!["ok", "lost", "unresponsive", "missing"]), edgy_number(), edgy_number(), edgy_number()),
            0..4),
        counters in prop::collection::btree_map(
            prop::sample::select(vec!["symbol_error", "port_rcv_errors", "link_downed", "port_xmit_wait", "weird"]),
            prop_oneof![Just(0u64), Just(u64::MAX), 0u64..1_000_000], 0..5),
        operstate in prop::sample::select(vec!["up", "down", "unknown", ""]),
        events in prop::collection::vec(
            (prop::sample::select(vec!["xid", "ecc_dbe", "gpu_lost", "nic_link_down", "oom_kill", "mce", "made_up"]),
             prop::option::of(prop_oneof![Just(79u32), Just(48), Just(13), Just(u32::MAX), 0u32..200]),
             prop::option::of(prop::sample::select(vec!["gpu0", "gpu7", "gpu999", "nic:mlx5_0", "disk:nvme0n1", "", "bogus"]))),
            0..4),
        ranks in 0u32..4,
    ) -> Value {
        let gpus: Vec<Value> = gpus.into_iter().enumerate()
            .map(|(i, (st, t, p, e))| gpu(i as u32, st, t, p, e)).collect();
        let events: Vec<Value> = events.into_iter().map(|(class, xid, comp)| json!({
            "ts_ms": T0 + dt, "class": class, "xid": xid, "component": comp, "severity": "critical",
            "message": "NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.",
        })).collect();
        let ranks: Vec<Value> = (0..ranks).map(|r| json!({
            "rank": r, "local_rank": r, "pid": 100 + r, "gpus": [r], "state": "running",
            "cpu_seconds": 1.0, "rss_bytes": 1,
        })).collect();
        json!({
            "schema_version": 1, "node": node, "agent_version": "fuzz", "seq": seq,
            "timestamp_ms": T0 + dt, "interval_ms": interval,
            "host": {"cpu_count": 8, "cpu_util_pct": 10.0, "load1": 0.1, "load5": 0.1, "load15": 0.1,
                     "mem_total_bytes": 1000, "mem_used_bytes": 10, "mem_available_bytes": 990,
                     "swap_total_bytes": 0, "swap_used_bytes": 0, "uptime_s": 10},
            "gpus": gpus,
            "nics": [{"name": "mlx5_0", "netdev": "ib0", "port": 1, "operstate": operstate, "carrier": true,
                      "speed_mbps": 400000, "counters": counters}],
            "jobs": if ranks.is_empty() { json!([]) } else {
                json!([{"job_id": "fuzz-job", "scheduler": "slurm", "world_size": ranks.len(), "ranks": ranks}])
            },
            "events": events,
        })
    }
}

/// Remove a key or swap a value somewhere in `v`, steered by `path` (a list of choices).
fn mutate(v: &mut Value, path: &[usize], replacement: Value, remove: bool) {
    let Some((&choice, rest)) = path.split_first() else {
        *v = replacement;
        return;
    };
    let last = rest.is_empty();
    match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(choice % m.len()).cloned().unwrap();
            if last && remove {
                m.remove(&key);
            } else if last {
                m.insert(key, replacement);
            } else {
                mutate(m.get_mut(&key).unwrap(), rest, replacement, remove);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = choice % a.len();
            if last && remove {
                a.remove(i);
            } else if last {
                a[i] = replacement;
            } else {
                mutate(&mut a[i], rest, replacement, remove);
            }
        }
        other => *other = replacement,
    }
}

/// Decode each body; feed what is accepted to one engine, ticking after each, as the server does.
fn run_engine(bodies: &[Vec<u8>]) -> usize {
    let mut engine = Analyzer::new(EngineConfig::default(), TopologyFile::default());
    let mut accepted = 0;
    for (k, body) in bodies.iter().enumerate() {
        let now = T0 + 1_000 * k as i64;
        match NodeReport::from_json(body) {
            Ok(r) => {
                // The engine may refuse (e.g. a seq going back); it must not panic.
                if engine.ingest(r, now).is_ok() {
                    accepted += 1;
                }
            }
            Err(e) => {
                // A refusal names a field or the body.
                assert!(!e.field().is_empty(), "{e}");
            }
        }
        let _ = engine.tick(now);
    }
    // Time passes with no reports: heartbeats lapse, incidents resolve.
    let _ = engine.tick(T0 + 3_600_000);
    let _ = engine.tick(T0 + 7_300_000_000);
    let _ = engine.nodes();
    let _ = engine.jobs();
    accepted
}

/// A report that is fine as it is.
const SCENARIO: &str = include_str!("../../sim/scenarios/smoke.toml");

const TOPOLOGY_TOML: &str = r#"
[[switch]]
name = "leaf-00"
tier = "leaf"
uplinks = ["spine-00"]

[[switch]]
name = "spine-00"
tier = "spine"

[[rack]]
leaf = "leaf-00"
nodes = ["node-0000", "node-0001"]

[[rail]]
leaf = "leaf-00"
nic = "mlx5_1"

[[link]]
nic = "node-0001/nic:mlx5_0"
switch = "leaf-00"
"#;

fn load_text(text: &str, ext: &str) -> Result<TopologyFile, String> {
    let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    load_topology(f.path()).map_err(|e| e.to_string())
}

/// Mutate text line by line: drop, duplicate, or rewrite the value of line `i`.
fn mutate_lines(text: &str, edits: &[(usize, u8, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (i, op, s) in edits {
        if lines.is_empty() {
            break;
        }
        let i = i % lines.len();
        match op % 4 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{k}= {s}");
                }
            }
            _ => lines.insert(i, s.clone()),
        }
    }
    lines.join("\n")
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e309".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("18446744073709551615".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("\"node-9999/gpu99\"".to_string()),
        Just("\"node-0001\"".to_string()),
        Just("\"leaf\"".to_string()),
        Just("[\"spine-00\", \"spine-00\"]".to_string()),
        Just("[[switch]]".to_string()),
        Just("[cluster]".to_string()),
        Just("[[fault]]".to_string()),
        "[a-z_]{1,10} = [0-9]{1,4}",
        "\"[ -~]{0,12}\"",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, .. ProptestConfig::default() })]

    #[test]
    fn engine_survives_every_report_the_decoder_accepts(
        reports in prop::collection::vec(report_value(), 1..6),
        edits in prop::collection::vec((prop::collection::vec(any::<usize>(), 1..5), any_json(), any::<bool>(), any::<bool>()), 0..6),
    ) {
        let mut bodies = Vec::new();
        for (i, mut r) in reports.into_iter().enumerate() {
            if let Some((path, repl, remove, apply)) = edits.get(i).cloned()
                && apply
            {
                mutate(&mut r, &path, repl, remove);
            }
            bodies.push(r.to_string().into_bytes());
        }
        run_engine(&bodies);
    }

    #[test]
    fn well_formed_extreme_reports_are_accepted_or_refused_with_a_field(r in report_value()) {
        let body = r.to_string().into_bytes();
        match NodeReport::from_json(&body) {
            Ok(rep) => {
                // What is accepted round-trips through the wire format.
                let again = NodeReport::from_json(&serde_json::to_vec(&rep).unwrap()).unwrap();
                prop_assert_eq!(again, rep);
            }
            Err(e) => prop_assert!(!e.field().is_empty()),
        }
    }

    #[test]
    fn topology_loader_never_panics(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), toml_value()), 0..6),
        json_noise in any_json(),
    ) {
        let text = mutate_lines(TOPOLOGY_TOML, &edits);
        if let Ok(t) = load_text(&text, ".toml") {
            // Whatever is accepted is consistent: every rack's leaf is a declared leaf.
            for r in &t.racks {
                prop_assert!(t.leaves().contains(r.leaf.as_str()));
            }
            // And the JSON form of it is accepted too.
            let json = serde_json::to_string(&t).unwrap();
            prop_assert!(TopologyFile::from_json(&json).is_ok());
        }
        let _ = load_text(&json_noise.to_string(), ".json");
        let wrapped = json!({"switch": [json_noise.clone()], "rack": json_noise});
        let _ = load_text(&wrapped.to_string(), ".json");
    }

    #[test]
    fn scenario_parser_never_panics_and_small_scenarios_give_a_loadable_topology(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), toml_value()), 0..5),
    ) {
        let text = mutate_lines(SCENARIO, &edits);
        match Scenario::parse(&text, "fuzz.toml") {
            Ok(sc) => {
                if sc.cluster.nodes <= 64 {
                    let topo = Cluster::build(&sc).topology_toml().unwrap();
                    prop_assert!(load_text(&topo, ".toml").is_ok(), "sim topology refused:\n{}", topo);
                }
            }
            Err(e) => {
                // Every refusal names the file, and a line when it can.
                prop_assert!(e.to_string().starts_with("fuzz.toml"), "{}", e);
            }
        }
    }

    #[test]
    fn scenario_parser_never_panics_on_toml_shaped_noise(
        lines in prop::collection::vec(toml_value(), 0..20),
    ) {
        let _ = Scenario::parse(&lines.join("\n"), "noise.toml");
    }
}

/// Pinned from a fuzz find: a report with `seq = u64::MAX` followed by any other report overflowed
/// the engine's gap arithmetic (a panic in debug builds, a bogus gap count in release).
#[test]
fn seq_u64_max_followed_by_another_report_is_handled() {
    let a = json!({"schema_version": 1, "node": "n", "agent_version": "x", "seq": u64::MAX,
                   "timestamp_ms": T0, "interval_ms": 1000});
    let mut b = a.clone();
    b["seq"] = json!(0);
    b["timestamp_ms"] = json!(T0 + 1000);
    assert_eq!(run_engine(&[a.to_string().into_bytes(), b.to_string().into_bytes()]), 2);
}

/// Pinned from the bad-input battery: the decoder ignored whatever followed the first JSON value,
/// so `{report}}}` or two reports glued together were accepted as one.
#[test]
fn trailing_data_after_a_report_is_refused() {
    let r = json!({"schema_version": 1, "node": "n", "agent_version": "x", "seq": 1,
                   "timestamp_ms": T0, "interval_ms": 1000})
    .to_string();
    assert!(NodeReport::from_json(r.as_bytes()).is_ok());
    assert!(NodeReport::from_json(format!("{r} \n").as_bytes()).is_ok(), "trailing whitespace is fine");
    for bad in [format!("{r}}}"), format!("{r}{r}"), format!("{r} x"), format!("{r}[")] {
        let e = NodeReport::from_json(bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{bad}: {e}");
    }
}
