//! Collector: gpu (stub, being written).
