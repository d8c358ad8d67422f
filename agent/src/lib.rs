//! faultline-agent library: collectors, exporters, the event queue and the progress API. The binary in
//! `main.rs` wires them together; tests and benchmarks use them directly.

pub mod classify;
pub mod collect;
pub mod events;
pub mod export;
pub mod observe;
pub mod pci;
pub mod probe;
pub mod progress;
pub mod sanitize;
pub mod xid;
