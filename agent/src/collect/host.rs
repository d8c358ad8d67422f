//! Collector: host (stub, being written).
