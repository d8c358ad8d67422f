//! The rule for "is this node still reporting", shared by the engine's heartbeat scan and the
//! ingest ledger's `reporting` flag: how long a node may be silent, and when so many are silent at
//! once that silence says more about the analyzer than about the nodes. Below both.

/// Silence shorter than this never counts as a lost node, whatever the agents' interval. At a 1 s
/// interval the allowance would otherwise be 2 s, and the 2,000-agent load test (BENCHMARKS.md) saw
/// reports wait up to a second behind a slow tick, which opened 143 false `node_down` incidents. A
/// real node_down (power, kernel panic) lasts minutes, so 10 s costs nothing in coverage.
pub const HEARTBEAT_MIN_SILENCE_MS: i64 = 10_000;
/// Added to every node's silence allowance: the longest a report may be held up on its way without
/// the node being in trouble. A push the network drops is re-sent from the agent's spool after its
/// 10 s request deadline and a back-off, and a slow POST or a busy analyzer delays one by seconds
/// more; 20 s covers one such failure. With the default two intervals of 10 s a node is called lost
/// after 40 s of silence, Kubernetes' `node-monitor-grace-period` for its 10 s node status updates.
pub const HEARTBEAT_TRANSIT_MS: i64 = 20_000;

/// How long a node reporting every `interval_ms` may be silent (by the analyzer's clock, from its
/// newest arrival) before its agent counts as lost: `intervals` missed reports plus the transit
/// allowance, never under `HEARTBEAT_MIN_SILENCE_MS`. One late or re-sent report never exceeds it.
pub fn silence_allowance_ms(intervals: f64, interval_ms: u64) -> i64 {
    let missed = (intervals * interval_ms as f64).min(i64::MAX as f64 / 2.0) as i64;
    missed.saturating_add(HEARTBEAT_TRANSIT_MS).max(HEARTBEAT_MIN_SILENCE_MS)
}

/// When at least this many nodes are silent at once…
pub const MASS_SILENCE_MIN_NODES: usize = 16;
/// …and they are more than this share of the nodes that should be reporting, the silence says the
/// analyzer is behind or its management network is cut, not that many nodes died in the same
/// second (the catalog's node_down is one node; a rack power loss is a few percent of a cluster).
/// Heartbeat loss is then not judged until the silence breaks up.
pub const MASS_SILENCE_FRACTION: f64 = 0.3;

/// Past its silence allowance (shutdown aside): what the engine's heartbeat scan looks for.
pub fn silent(last_heard_ms: i64, interval_ms: u64, now_ms: i64, intervals: f64) -> bool {
    now_ms.saturating_sub(last_heard_ms) > silence_allowance_ms(intervals, interval_ms)
}
