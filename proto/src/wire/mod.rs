//! The compact encoding of a `NodeReport`: Protocol Buffers (`prost`, messages written by hand, no
//! `protoc`), sent as `Content-Type: application/x-protobuf`. JSON (`report.rs`) stays the reference
//! form; this carries exactly the same report (`decode(&encode(r)) == r`), only smaller:
//!
//! - Every string (names, enum values, counter names) goes once into the report's string table
//!   (`Report.strings`) and is referred to by index, so the 30-odd counter names of eight NICs cost
//!   their bytes once, and an enum value costs one byte.
//! - Maps of counters are two packed columns (name indices, values).
//! - A GPU's NVLinks are packed columns (`Links`), one per field, with a bitset of the links whose
//!   value is absent, instead of one message per link.
//!
//! Field numbers are the contract: never reuse one; add new fields with new numbers. A decoder
//! ignores fields it does not know, so an older analyzer accepts a newer agent's report.
//!
//! Files: `messages.rs` holds the message definitions (the field numbers), `encode.rs` turns a
//! `NodeReport` into them (the reference) and keeps the string table, `write.rs` writes the same
//! bytes straight from the report, `read.rs` reads bodies in that form straight into a report, and
//! `decode.rs` turns any valid body's messages back and names the field that is wrong.

mod decode;
pub mod delta;
mod encode;
mod messages;
mod names;
mod read;
mod write;

pub use messages::*;

use crate::ReportError;
use crate::report::NodeReport;

/// The media type agents send.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Media types taken as this encoding.
pub const CONTENT_TYPES: &[&str] =
    &["application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"];

/// Encodes a report. Never fails: every `NodeReport` has a compact form.
pub fn encode(r: &NodeReport) -> Vec<u8> {
    write::encode(r)
}

/// Decodes a compact report. Errors name the field that is wrong; the report is not validated here
/// (the analyzer's ingest validates every report, whatever its encoding, once).
pub fn decode(body: &[u8]) -> Result<NodeReport, ReportError> {
    // The body as `encode` writes it, read in place; anything else (or anything wrong) goes the
    // general way, which names the field that is wrong.
    if let Some(r) = read::report(body) {
        return Ok(r);
    }
    let w = <Report as prost::Message>::decode(body).map_err(|e| ReportError::Decode {
        field: "(protobuf body)".into(),
        message: format!("not a faultline protobuf NodeReport: {e}"),
    })?;
    decode::from_wire(w)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
