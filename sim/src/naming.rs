//! Component names in a simulated cluster (scenario.md "Naming"): the one place the scenario parser,
//! the cluster builder and the telemetry take them from.

/// The only disk of a simulated node.
pub const DISK: &str = "nvme0n1";

fn width(total: u32, min: usize) -> usize {
    let digits = total.saturating_sub(1).max(1).to_string().len();
    digits.max(min)
}

/// `node-0000` … (4 digits, more when the cluster needs them).
pub fn node(i: u32, total: u32) -> String {
    format!("node-{i:0w$}", w = width(total, 4))
}
/// `leaf-00` …
pub fn leaf(i: u32, total: u32) -> String {
    format!("leaf-{i:0w$}", w = width(total, 2))
}
/// `spine-00` …
pub fn spine(i: u32, total: u32) -> String {
    format!("spine-{i:0w$}", w = width(total, 2))
}
/// `mlx5_<i>`: the IB device of NIC i.
pub fn nic(i: u32) -> String {
    let mut s = String::new();
    write_nic(i, &mut s);
    s
}

/// `nic(i)`, written into `out` (its old text replaced).
pub fn write_nic(i: u32, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    write!(out, "mlx5_{i}").expect("writing to a String cannot fail");
}
