//! Progress API (stub).
