//! Kernel-log line classifier (stub).
