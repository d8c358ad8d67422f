//! Collector: infiniband (stub, being written).
