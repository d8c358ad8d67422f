//! faultline-agent: the node agent (entry point; being written).

fn main() {}
