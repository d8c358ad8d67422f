//! Tests of scenario parsing: the spec example, refusals naming their line, placement.
use super::*;

const OK: &str = r#"
name = "two-faults"
seed = 7
duration_s = 1800
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = 32
nodes_per_leaf = 8
spines = 2
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"

[[job]]
id = "llm-70b"
hosts = ["node-0000", "node-0001", "node-0008", "node-0009"]
step_time_s = 2.0

[[job]]
id = "auto"
nodes = 4
gpus_per_node = 4
step_time_s = 1.5
start_s = 60
end_s = 900

[[fault]]
kind = "gpu_lost"
target = "node-0008/gpu3"
at_s = 600
duration_s = 0
"#;

#[test]
fn the_spec_example_parses_and_places() {
    let s = Scenario::parse(OK, "s.toml").unwrap();
    assert_eq!(s.name, "two-faults");
    assert_eq!(s.cluster.leaves(), 4);
    assert_eq!(s.jobs[0].hosts, ["node-0000", "node-0001", "node-0008", "node-0009"]);
    assert_eq!(s.jobs[0].gpus[0], (0..8).collect::<Vec<_>>());
    assert_eq!(s.jobs[1].hosts.len(), 4);
    assert!(s.jobs[1].hosts.iter().all(|h| !s.jobs[0].hosts.contains(h)), "auto placement avoids busy nodes");
    assert_eq!(s.faults[0].kind, FaultClass::GpuLost);
    // Same seed, same placement.
    assert_eq!(Scenario::parse(OK, "s.toml").unwrap(), s);
}

/// `check(input, line, words)`: the error names the line and says what is wrong.
fn check(src: &str, line: usize, words: &[&str]) {
    let e = Scenario::parse(src, "scenario.toml").expect_err("must be refused");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("scenario.toml:{line}: ")), "wrong line in {msg:?} (want {line})");
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[test]
fn unknown_key_names_line_and_table() {
    check("name = \"x\"\nduration_s = 60\n\n[cluster]\nnodez = 4\n", 5, &["unknown key `nodez` in [cluster]"]);
    check("name = \"x\"\nduration_s = 60\ncolour = 1\n[cluster]\nnodes = 4\n", 3, &["unknown key `colour`"]);
    check(
        "name = \"x\"\nduration_s = 60\n[cluster]\nnodes = 4\n[[fault]]\nkind = \"gpu_lost\"\ntarget = \"node-0000/gpu0\"\nat = 5\n",
        8,
        &["unknown key `at` in [[fault]]"],
    );
}

#[test]
fn bad_values_name_their_line() {
    let base = "name = \"x\"\nduration_s = 600\n[cluster]\nnodes = 4\nnodes_per_leaf = 2\n";
    check(
        &format!("{base}[[fault]]\nkind = \"gpu_melted\"\ntarget = \"node-0000/gpu0\"\nat_s = 5\n"),
        7,
        &["unknown fault kind `gpu_melted`"],
    );
    check(
        &format!("{base}[[fault]]\nkind = \"gpu_lost\"\ntarget = \"node-0000/nic:mlx5_0\"\nat_s = 5\n"),
        8,
        &["needs a GPU"],
    );
    check(
        &format!("{base}[[fault]]\nkind = \"gpu_lost\"\ntarget = \"node-0099/gpu0\"\nat_s = 5\n"),
        8,
        &["node-0099", "not in the cluster"],
    );
    check(
        &format!("{base}[[fault]]\nkind = \"gpu_lost\"\ntarget = \"node-0001/gpu0\"\nat_s = 900\n"),
        9,
        &["beyond the run"],
    );
    check(
        &format!("{base}[[fault]]\nkind = \"leaf_switch_down\"\ntarget = \"switch:leaf-07\"\nat_s = 5\n"),
        8,
        &["leaf-07"],
    );
    check(&format!("{base}[[fault]]\nkind = \"job_hang\"\ntarget = \"job:nope\"\nat_s = 5\n"), 8, &["nope"]);
    check(
        &format!("{base}[[job]]\nid = \"a\"\nhosts = [\"node-0000\", \"node-0042\"]\nstep_time_s = 1\n"),
        8,
        &["node-0042"],
    );
    check("name = \"x\"\nduration_s = 600\n[cluster]\nfabric = \"mesh\"\nnodes = 4\n", 4, &["mesh"]);
    check("name = \"x\"\nduration_s = -5\n[cluster]\nnodes = 4\n", 2, &["duration_s"]);
    check("name = \"x\"\nduration_s = 60\n[cluster]\nnodes = \"four\"\n", 4, &["invalid type"]);
    check(
        "name = \"x\"\nduration_s = 60\n[cluster]\nfabric = \"rail\"\nnodes = 4\nnodes_per_leaf = 2\n",
        6,
        &["fabric = \"tor\" only"],
    );
}

#[test]
fn overbooked_hosts_are_refused() {
    let src = "name = \"x\"\nduration_s = 600\n[cluster]\nnodes = 2\n\
               [[job]]\nid = \"a\"\nhosts = [\"node-0000\"]\nstep_time_s = 1\n\
               [[job]]\nid = \"b\"\nhosts = [\"node-0000\"]\nstep_time_s = 1\n";
    check(src, 11, &["node-0000", "0 free GPUs"]);
    let src = "name = \"x\"\nduration_s = 600\n[cluster]\nnodes = 2\n\
               [[job]]\nid = \"a\"\nnodes = 3\nstep_time_s = 1\n";
    check(src, 7, &["nodes = 3"]);
    // Back to back is fine.
    let src = "name = \"x\"\nduration_s = 600\n[cluster]\nnodes = 1\n\
               [[job]]\nid = \"a\"\nhosts = [\"node-0000\"]\nstep_time_s = 1\nend_s = 300\n\
               [[job]]\nid = \"b\"\nnodes = 1\nstep_time_s = 1\nstart_s = 300\n";
    Scenario::parse(src, "s").unwrap();
}

#[test]
fn missing_required_keys_are_named() {
    check("duration_s = 60\n[cluster]\nnodes = 4\n", 1, &["missing key `name`"]);
    let e = Scenario::parse("name = \"x\"\nduration_s = 60\n", "s").unwrap_err();
    assert!(e.to_string().contains("cluster"), "{e}");
}
