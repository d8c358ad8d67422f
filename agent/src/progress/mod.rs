//! The progress API: training loops post `{job, rank, step, …}` to the agent; the store keeps the latest
//! state per (job, rank) for the jobs collector and `/metrics`.
//!
//! Two ways in, same record, same checks, same store:
//! - UDP datagrams on `127.0.0.1:9431` (the `--progress-listen` address; [`serve_udp`]): one JSON
//!   object per datagram, no answer. The cheap path, and the default of `report-progress` and of the
//!   snippet in `PROGRESS.md`: a post costs the agent a fraction of a `recvmmsg` call and the parse,
//!   against an HTTP request's parsing, routing and response. A refused datagram changes nothing, is
//!   counted (`faultline_agent_progress_rejected_total`) and the first is logged; there is nobody to
//!   tell. Only reachable from the host's network namespace.
//! - `POST /progress` over HTTP on the same address, or on the Unix socket `--progress-socket`
//!   (reachable from a container it is mounted into), answering each post.
//!
//! The contract of a post (its fields, types and limits) is `faultline_proto::progress`, shared with
//! `agent/PROGRESS.md`.
//!
//! Decisions:
//! - A step lower than the last one is accepted: it is a restart from a checkpoint. It counts as
//!   progress and restarts the step-time average. A repeated step is not progress (the time of last
//!   progress stays) but its other fields are stored.
//! - `nonfinite_loss` is latched: it stays set for [`NONFINITE_HOLD_MS`] after the last non-finite loss
//!   or gradient norm, so a report taken every interval cannot miss a single bad step.
//! - A refused post (4xx, with the reason in `{"error": "..."}`) changes nothing. Success is `204`.
//! - The store holds at most [`DEFAULT_MAX_ENTRIES`] (job, rank) entries; a post for a new entry when
//!   it is full is refused with 429 and counted in `dropped()`. Entries expire [`STALE_AFTER_MS`]
//!   after their last post unless the jobs collector still sees the rank's process
//!   ([`ProgressStore::touch`]); `exited` entries expire after [`EXITED_RETAIN_MS`].

//!
//! Files: `store.rs` keeps the state, `server.rs` the HTTP and Unix-socket servers, `udp.rs` the
//! datagram server, `client.rs` the `report-progress` client.

mod client;
mod server;
mod store;
mod udp;

pub use client::*;
pub use faultline_proto::progress::*;
pub use server::*;
pub use store::*;
pub use udp::*;

#[cfg(test)]
mod tests;
