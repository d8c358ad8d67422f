//! Collector: kmsg (stub, being written).
