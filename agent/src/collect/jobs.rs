//! Collector: jobs (stub, being written).
