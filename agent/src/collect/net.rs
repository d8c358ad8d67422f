//! Collector: net (stub, being written).
