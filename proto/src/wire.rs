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

use std::collections::{BTreeMap, HashMap};

use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

use crate::report::*;
use crate::{Event, ReportError};

/// The media type agents send.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Media types taken as this encoding.
pub const CONTENT_TYPES: &[&str] =
    &["application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"];

#[derive(Clone, PartialEq, prost::Message)]
pub struct Report {
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
    #[prost(uint32, tag = "2")]
    pub schema_version: u32,
    #[prost(uint32, tag = "3")]
    pub node: u32,
    #[prost(uint32, tag = "4")]
    pub agent_version: u32,
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
    #[prost(uint64, tag = "7")]
    pub interval_ms: u64,
    #[prost(bool, tag = "8")]
    pub shutdown: bool,
    #[prost(bool, tag = "9")]
    pub urgent: bool,
    #[prost(message, optional, tag = "10")]
    pub host: Option<Host>,
    #[prost(message, repeated, tag = "11")]
    pub gpus: Vec<Gpu>,
    #[prost(message, repeated, tag = "12")]
    pub nics: Vec<Nic>,
    #[prost(message, repeated, tag = "13")]
    pub disks: Vec<Disk>,
    #[prost(message, repeated, tag = "14")]
    pub jobs: Vec<Job>,
    #[prost(message, repeated, tag = "15")]
    pub events: Vec<WireEvent>,
    #[prost(uint64, tag = "16")]
    pub dropped_reports: u64,
    #[prost(uint64, tag = "17")]
    pub dropped_events: u64,
    #[prost(uint64, tag = "18")]
    pub dropped_progress: u64,
    #[prost(uint32, repeated, tag = "19")]
    pub collector_error_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "20")]
    pub collector_error_values: Vec<u64>,
    #[prost(uint32, optional, tag = "21")]
    pub expected_gpus: Option<u32>,
    #[prost(uint32, optional, tag = "22")]
    pub driver_version: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Host {
    #[prost(uint32, optional, tag = "1")]
    pub cpu_count: Option<u32>,
    #[prost(double, optional, tag = "2")]
    pub cpu_util_pct: Option<f64>,
    #[prost(double, optional, tag = "3")]
    pub cpu_non_job_pct: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub load1: Option<f64>,
    #[prost(double, optional, tag = "5")]
    pub load5: Option<f64>,
    #[prost(double, optional, tag = "6")]
    pub load15: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "8")]
    pub mem_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    pub mem_available_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    pub swap_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub swap_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "12")]
    pub uptime_s: Option<u64>,
    #[prost(message, repeated, tag = "13")]
    pub fans: Vec<Fan>,
    #[prost(message, repeated, tag = "14")]
    pub temps: Vec<Temp>,
    #[prost(uint32, repeated, tag = "15")]
    pub addrs: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Fan {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(double, optional, tag = "2")]
    pub rpm: Option<f64>,
    #[prost(double, optional, tag = "3")]
    pub min_rpm: Option<f64>,
    #[prost(bool, tag = "4")]
    pub alarm: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Temp {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(double, tag = "2")]
    pub celsius: f64,
    #[prost(double, optional, tag = "3")]
    pub crit_celsius: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Gpu {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(uint32, tag = "2")]
    pub uuid: u32,
    #[prost(uint32, tag = "3")]
    pub name: u32,
    #[prost(uint32, optional, tag = "4")]
    pub serial: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub pci_bus_id: Option<u32>,
    #[prost(uint32, tag = "6")]
    pub state: u32,
    #[prost(double, optional, tag = "7")]
    pub util_gpu_pct: Option<f64>,
    #[prost(double, optional, tag = "8")]
    pub util_mem_pct: Option<f64>,
    #[prost(uint64, optional, tag = "9")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    pub mem_used_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub mem_free_bytes: Option<u64>,
    #[prost(double, optional, tag = "12")]
    pub temp_c: Option<f64>,
    #[prost(double, optional, tag = "13")]
    pub mem_temp_c: Option<f64>,
    #[prost(double, optional, tag = "14")]
    pub power_w: Option<f64>,
    #[prost(double, optional, tag = "15")]
    pub power_limit_w: Option<f64>,
    #[prost(uint64, optional, tag = "16")]
    pub energy_mj: Option<u64>,
    #[prost(uint32, optional, tag = "17")]
    pub sm_clock_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "18")]
    pub sm_clock_max_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "19")]
    pub mem_clock_mhz: Option<u32>,
    #[prost(uint32, optional, tag = "20")]
    pub mem_clock_max_mhz: Option<u32>,
    #[prost(uint64, optional, tag = "21")]
    pub throttle_mask: Option<u64>,
    #[prost(uint32, repeated, tag = "22")]
    pub throttle_reasons: Vec<u32>,
    #[prost(double, optional, tag = "23")]
    pub tensor_active_pct: Option<f64>,
    #[prost(uint64, optional, tag = "24")]
    pub ecc_sbe_volatile: Option<u64>,
    #[prost(uint64, optional, tag = "25")]
    pub ecc_dbe_volatile: Option<u64>,
    #[prost(uint64, optional, tag = "26")]
    pub ecc_sbe_aggregate: Option<u64>,
    #[prost(uint64, optional, tag = "27")]
    pub ecc_dbe_aggregate: Option<u64>,
    #[prost(uint64, optional, tag = "28")]
    pub ecc_sram_uncorrectable: Option<u64>,
    #[prost(message, optional, tag = "29")]
    pub retired_pages: Option<Retired>,
    #[prost(message, optional, tag = "30")]
    pub row_remap: Option<Remap>,
    #[prost(message, optional, tag = "31")]
    pub pcie: Option<Pcie>,
    #[prost(message, optional, tag = "32")]
    pub nvlinks: Option<Links>,
    #[prost(message, repeated, tag = "33")]
    pub processes: Vec<Proc>,
    #[prost(uint32, repeated, tag = "34")]
    pub not_supported: Vec<u32>,
    #[prost(uint32, repeated, tag = "35")]
    pub clock_event_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "36")]
    pub clock_event_values: Vec<u64>,
    #[prost(uint32, optional, tag = "37")]
    pub nvml_error: Option<u32>,
    #[prost(bool, optional, tag = "38")]
    pub pci_present: Option<bool>,
    /// `Some(true)`: MIG on, with the instances in `mig`.
    #[prost(bool, optional, tag = "39")]
    pub mig_on: Option<bool>,
    #[prost(message, repeated, tag = "40")]
    pub mig: Vec<Mig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mig {
    #[prost(uint32, tag = "1")]
    pub gpu_instance_id: u32,
    #[prost(uint32, optional, tag = "2")]
    pub compute_instance_id: Option<u32>,
    #[prost(uint32, tag = "3")]
    pub profile: u32,
    #[prost(uint32, tag = "4")]
    pub uuid: u32,
    #[prost(uint64, optional, tag = "5")]
    pub mem_total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pub mem_used_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Retired {
    #[prost(uint64, tag = "1")]
    pub sbe: u64,
    #[prost(uint64, tag = "2")]
    pub dbe: u64,
    #[prost(bool, tag = "3")]
    pub pending: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Remap {
    #[prost(uint64, tag = "1")]
    pub correctable: u64,
    #[prost(uint64, tag = "2")]
    pub uncorrectable: u64,
    #[prost(bool, tag = "3")]
    pub pending: bool,
    #[prost(bool, tag = "4")]
    pub failure: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pcie {
    #[prost(uint32, optional, tag = "1")]
    pub generation: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub max_generation: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub width: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub max_width: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub replay_count: Option<u64>,
}

/// A GPU's NVLinks as columns: entry `i` of every column is link `i` of the report's list. A value
/// column holds 0 where the value is absent, and its `*_absent` bitset (64 links per word) says
/// which entries those are; a value column with no value at all is empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Links {
    #[prost(uint32, repeated, tag = "1")]
    pub link: Vec<u32>,
    #[prost(bool, repeated, tag = "2")]
    pub active: Vec<bool>,
    #[prost(uint64, repeated, tag = "3")]
    pub crc_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub crc_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub replay_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    pub replay_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "7")]
    pub recovery_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "8")]
    pub recovery_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "9")]
    pub tx_bytes: Vec<u64>,
    #[prost(uint64, repeated, tag = "10")]
    pub tx_bytes_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "11")]
    pub rx_bytes: Vec<u64>,
    #[prost(uint64, repeated, tag = "12")]
    pub rx_bytes_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "13")]
    pub crc_flit_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "14")]
    pub crc_flit_errors_absent: Vec<u64>,
    #[prost(uint64, repeated, tag = "15")]
    pub crc_data_errors: Vec<u64>,
    #[prost(uint64, repeated, tag = "16")]
    pub crc_data_errors_absent: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Proc {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint64, optional, tag = "2")]
    pub used_mem_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Nic {
    #[prost(uint32, tag = "1")]
    pub name: u32,
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(uint32, optional, tag = "3")]
    pub netdev: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub port: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub pci_bus_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub operstate: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub carrier: Option<bool>,
    #[prost(uint64, optional, tag = "8")]
    pub carrier_changes: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    pub speed_mbps: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub mtu: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub link_layer: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    pub ib_state: Option<u32>,
    #[prost(uint32, optional, tag = "13")]
    pub ib_phys_state: Option<u32>,
    #[prost(double, optional, tag = "14")]
    pub rate_gbps: Option<f64>,
    #[prost(double, optional, tag = "15")]
    pub max_rate_gbps: Option<f64>,
    #[prost(uint32, repeated, tag = "16")]
    pub counter_keys: Vec<u32>,
    #[prost(uint64, repeated, tag = "17")]
    pub counter_values: Vec<u64>,
    #[prost(bool, optional, tag = "18")]
    pub fabric: Option<bool>,
    #[prost(uint32, repeated, tag = "19")]
    pub saturated: Vec<u32>,
    #[prost(uint32, repeated, tag = "20")]
    pub addrs: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Disk {
    #[prost(uint32, tag = "1")]
    pub device: u32,
    #[prost(uint32, optional, tag = "2")]
    pub mount: Option<u32>,
    #[prost(uint64, optional, tag = "3")]
    pub total_bytes: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    pub available_bytes: Option<u64>,
    #[prost(bool, tag = "5")]
    pub read_only: bool,
    #[prost(uint64, optional, tag = "6")]
    pub write_bytes: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    #[prost(uint32, tag = "1")]
    pub job_id: u32,
    #[prost(uint32, tag = "2")]
    pub scheduler: u32,
    #[prost(uint32, optional, tag = "3")]
    pub world_size: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub sched_state: Option<u32>,
    #[prost(sint32, optional, tag = "5")]
    pub sched_exit_code: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub ranks: Vec<Rank>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Rank {
    #[prost(uint32, tag = "1")]
    pub rank: u32,
    #[prost(uint32, optional, tag = "2")]
    pub local_rank: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub pid: Option<u32>,
    #[prost(uint32, repeated, tag = "4")]
    pub gpus: Vec<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub nic: Option<u32>,
    #[prost(uint32, tag = "6")]
    pub state: u32,
    #[prost(double, optional, tag = "7")]
    pub cpu_seconds: Option<f64>,
    #[prost(uint64, optional, tag = "8")]
    pub rss_bytes: Option<u64>,
    #[prost(sint32, optional, tag = "9")]
    pub exit_code: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub io_write_bytes: Option<u64>,
    #[prost(message, optional, tag = "11")]
    pub progress: Option<WireProgress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireProgress {
    #[prost(uint64, tag = "1")]
    pub step: u64,
    #[prost(int64, tag = "2")]
    pub last_progress_ms: i64,
    #[prost(double, optional, tag = "3")]
    pub step_time_ms: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub step_time_avg_ms: Option<f64>,
    #[prost(double, optional, tag = "5")]
    pub compute_ms: Option<f64>,
    #[prost(double, optional, tag = "6")]
    pub loss: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub loss_step: Option<u64>,
    #[prost(double, optional, tag = "8")]
    pub grad_norm: Option<f64>,
    #[prost(bool, tag = "9")]
    pub nonfinite_loss: bool,
    #[prost(uint32, tag = "10")]
    pub status: u32,
    #[prost(sint32, optional, tag = "11")]
    pub exit_code: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEvent {
    #[prost(int64, tag = "1")]
    pub ts_ms: i64,
    #[prost(uint32, tag = "2")]
    pub source: u32,
    #[prost(uint32, tag = "3")]
    pub class: u32,
    #[prost(uint32, tag = "4")]
    pub severity: u32,
    #[prost(uint32, optional, tag = "5")]
    pub component: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub xid: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub caused_by_xid: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub device: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub pid: Option<u32>,
    #[prost(uint64, tag = "10")]
    pub count: u64,
    #[prost(uint32, tag = "11")]
    pub message: u32,
    #[prost(message, optional, tag = "12")]
    pub collective: Option<WireCollective>,
}

/// `CollectiveInfo`: strings are string-table indices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireCollective {
    #[prost(uint32, optional, tag = "1")]
    pub kind: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub job: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub rank: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub local_rank: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub device: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub hostname: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub peer: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub peer_port: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub local_addr: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub remote_addr: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    pub hca: Option<u32>,
    #[prost(uint64, optional, tag = "12")]
    pub seq: Option<u64>,
    #[prost(uint32, optional, tag = "13")]
    pub op: Option<u32>,
    #[prost(uint64, optional, tag = "14")]
    pub timeout_ms: Option<u64>,
    #[prost(uint64, optional, tag = "15")]
    pub last_completed: Option<u64>,
    #[prost(uint32, optional, tag = "16")]
    pub error: Option<u32>,
    #[prost(uint32, optional, tag = "17")]
    pub pg: Option<u32>,
}

/// Encodes a report. Never fails: every `NodeReport` has a compact form.
pub fn encode(r: &NodeReport) -> Vec<u8> {
    prost::Message::encode_to_vec(&to_wire(r))
}

/// Decodes a compact report. Errors name the field that is wrong; the report is not validated here
/// (the analyzer's ingest validates every report, whatever its encoding, once).
pub fn decode(body: &[u8]) -> Result<NodeReport, ReportError> {
    let w = <Report as prost::Message>::decode(body).map_err(|e| ReportError::Decode {
        field: "(protobuf body)".into(),
        message: format!("not a faultline protobuf NodeReport: {e}"),
    })?;
    from_wire(w)
}

// ---- encoding ----

/// The report's string table while encoding: strings borrowed from the report, looked up with a
/// cheap hash (FNV-1a; names are short and the table lives for one report).
#[derive(Default)]
struct Strings<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32, std::hash::BuildHasherDefault<Fnv>>,
}

impl<'a> Strings<'a> {
    fn put(&mut self, s: &'a str) -> u32 {
        let list = &mut self.list;
        *self.index.entry(s).or_insert_with(|| {
            list.push(s);
            (list.len() - 1) as u32
        })
    }
    fn opt(&mut self, s: &'a Option<String>) -> Option<u32> {
        s.as_deref().map(|s| self.put(s))
    }
    fn all(&mut self, v: &'a [String]) -> Vec<u32> {
        v.iter().map(|s| self.put(s)).collect()
    }
    /// A unit enum by its serde (JSON) name.
    fn name<T: Serialize>(&mut self, v: &T) -> u32 {
        self.put(v.serialize(VariantName).unwrap_or(""))
    }
    fn map(&mut self, m: &'a BTreeMap<String, u64>) -> (Vec<u32>, Vec<u64>) {
        m.iter().map(|(k, v)| (self.put(k), *v)).unzip()
    }
    fn into_owned(self) -> Vec<String> {
        self.list.into_iter().map(str::to_owned).collect()
    }
}

/// FNV-1a, for the string table's short keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A serializer that only answers the name of a unit enum variant (what serde writes to JSON for
/// it), without building a string.
struct VariantName;

#[derive(Debug)]
struct NotAUnitVariant;

impl std::fmt::Display for NotAUnitVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a unit enum variant")
    }
}

impl std::error::Error for NotAUnitVariant {}

impl serde::ser::Error for NotAUnitVariant {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAUnitVariant
    }
}

macro_rules! not_a_variant {
    ($($f:ident($($t:ty),*);)*) => {
        $(fn $f(self, $(_: $t),*) -> Result<Self::Ok, Self::Error> { Err(NotAUnitVariant) })*
    };
}

impl serde::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotAUnitVariant;
    type SerializeSeq = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTuple = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleStruct = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeTupleVariant = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeMap = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeStruct = serde::ser::Impossible<&'static str, NotAUnitVariant>;
    type SerializeStructVariant = serde::ser::Impossible<&'static str, NotAUnitVariant>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, NotAUnitVariant> {
        Ok(variant)
    }

    not_a_variant! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit(); serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Self::Error> {
        Err(NotAUnitVariant)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Err(NotAUnitVariant)
    }
}

/// A column of optional values: the values (0 where absent) and a bitset of the absent entries
/// (empty when none is). A column with no value at all is sent empty.
fn column(values: impl Iterator<Item = Option<u64>> + Clone) -> (Vec<u64>, Vec<u64>) {
    if values.clone().all(|v| v.is_none()) {
        return (Vec::new(), Vec::new());
    }
    let mut out = Vec::new();
    let mut absent: Vec<u64> = Vec::new();
    for (i, v) in values.enumerate() {
        if v.is_none() {
            let w = i / 64;
            if absent.len() <= w {
                absent.resize(w + 1, 0);
            }
            absent[w] |= 1 << (i % 64);
        }
        out.push(v.unwrap_or(0));
    }
    (out, absent)
}

fn to_wire(r: &NodeReport) -> Report {
    let mut s = Strings::default();
    let node = s.put(&r.node);
    let agent_version = s.put(&r.agent_version);
    let host = r.host.as_ref().map(|h| Host {
        cpu_count: h.cpu_count,
        cpu_util_pct: h.cpu_util_pct,
        cpu_non_job_pct: h.cpu_non_job_pct,
        load1: h.load1,
        load5: h.load5,
        load15: h.load15,
        mem_total_bytes: h.mem_total_bytes,
        mem_used_bytes: h.mem_used_bytes,
        mem_available_bytes: h.mem_available_bytes,
        swap_total_bytes: h.swap_total_bytes,
        swap_used_bytes: h.swap_used_bytes,
        uptime_s: h.uptime_s,
        fans: h
            .fans
            .iter()
            .map(|f| Fan { name: s.put(&f.name), rpm: f.rpm, min_rpm: f.min_rpm, alarm: f.alarm })
            .collect(),
        temps: h
            .temps
            .iter()
            .map(|t| Temp { name: s.put(&t.name), celsius: t.celsius, crit_celsius: t.crit_celsius })
            .collect(),
        addrs: s.all(&h.addrs),
    });
    let gpus = r.gpus.iter().map(|g| gpu_to_wire(g, &mut s)).collect();
    let nics = r
        .nics
        .iter()
        .map(|n| {
            let (counter_keys, counter_values) = s.map(&n.counters);
            Nic {
                name: s.put(&n.name),
                kind: s.name(&n.kind),
                netdev: s.opt(&n.netdev),
                port: n.port,
                pci_bus_id: s.opt(&n.pci_bus_id),
                operstate: s.opt(&n.operstate),
                carrier: n.carrier,
                carrier_changes: n.carrier_changes,
                speed_mbps: n.speed_mbps,
                mtu: n.mtu,
                link_layer: s.opt(&n.link_layer),
                ib_state: s.opt(&n.ib_state),
                ib_phys_state: s.opt(&n.ib_phys_state),
                rate_gbps: n.rate_gbps,
                max_rate_gbps: n.max_rate_gbps,
                counter_keys,
                counter_values,
                fabric: n.fabric,
                saturated: s.all(&n.saturated),
                addrs: s.all(&n.addrs),
            }
        })
        .collect();
    let disks = r
        .disks
        .iter()
        .map(|d| Disk {
            device: s.put(&d.device),
            mount: s.opt(&d.mount),
            total_bytes: d.total_bytes,
            available_bytes: d.available_bytes,
            read_only: d.read_only,
            write_bytes: d.write_bytes,
        })
        .collect();
    let jobs = r
        .jobs
        .iter()
        .map(|j| Job {
            job_id: s.put(&j.job_id),
            scheduler: s.name(&j.scheduler),
            world_size: j.world_size,
            sched_state: j.sched_state.as_ref().map(|x| s.name(x)),
            sched_exit_code: j.sched_exit_code,
            ranks: j
                .ranks
                .iter()
                .map(|k| Rank {
                    rank: k.rank,
                    local_rank: k.local_rank,
                    pid: k.pid,
                    gpus: k.gpus.clone(),
                    nic: s.opt(&k.nic),
                    state: s.name(&k.state),
                    cpu_seconds: k.cpu_seconds,
                    rss_bytes: k.rss_bytes,
                    exit_code: k.exit_code,
                    io_write_bytes: k.io_write_bytes,
                    progress: k.progress.as_ref().map(|p| WireProgress {
                        step: p.step,
                        last_progress_ms: p.last_progress_ms,
                        step_time_ms: p.step_time_ms,
                        step_time_avg_ms: p.step_time_avg_ms,
                        compute_ms: p.compute_ms,
                        loss: p.loss,
                        loss_step: p.loss_step,
                        grad_norm: p.grad_norm,
                        nonfinite_loss: p.nonfinite_loss,
                        status: s.name(&p.status),
                        exit_code: p.exit_code,
                    }),
                })
                .collect(),
        })
        .collect();
    let events = r
        .events
        .iter()
        .map(|e| WireEvent {
            ts_ms: e.ts_ms,
            source: s.name(&e.source),
            class: s.put(e.class.as_str()),
            severity: s.put(e.severity.as_str()),
            component: s.opt(&e.component),
            xid: e.xid,
            caused_by_xid: e.caused_by_xid,
            device: s.opt(&e.device),
            pid: e.pid,
            count: e.count,
            message: s.put(&e.message),
            collective: e.collective.as_ref().map(|c| WireCollective {
                kind: s.opt(&c.kind),
                job: s.opt(&c.job),
                rank: c.rank,
                local_rank: c.local_rank,
                device: c.device,
                hostname: s.opt(&c.hostname),
                peer: s.opt(&c.peer),
                peer_port: c.peer_port,
                local_addr: s.opt(&c.local_addr),
                remote_addr: s.opt(&c.remote_addr),
                hca: s.opt(&c.hca),
                seq: c.seq,
                op: s.opt(&c.op),
                timeout_ms: c.timeout_ms,
                last_completed: c.last_completed,
                error: s.opt(&c.error),
                pg: s.opt(&c.pg),
            }),
        })
        .collect();
    let (collector_error_keys, collector_error_values) = s.map(&r.collector_errors);
    Report {
        strings: Vec::new(),
        schema_version: r.schema_version,
        node,
        agent_version,
        seq: r.seq,
        timestamp_ms: r.timestamp_ms,
        interval_ms: r.interval_ms,
        shutdown: r.shutdown,
        urgent: r.urgent,
        host,
        gpus,
        nics,
        disks,
        jobs,
        events,
        dropped_reports: r.dropped.reports,
        dropped_events: r.dropped.events,
        dropped_progress: r.dropped.progress,
        collector_error_keys,
        collector_error_values,
        expected_gpus: r.expected_gpus,
        driver_version: s.opt(&r.driver_version),
    }
    .with_strings(s.into_owned())
}

impl Report {
    fn with_strings(mut self, strings: Vec<String>) -> Self {
        self.strings = strings;
        self
    }
}

fn gpu_to_wire<'a>(g: &'a GpuSample, s: &mut Strings<'a>) -> Gpu {
    let nvlinks = (!g.nvlinks.is_empty()).then(|| {
        let l = &g.nvlinks;
        let (crc_errors, crc_errors_absent) = column(l.iter().map(|x| x.crc_errors));
        let (replay_errors, replay_errors_absent) = column(l.iter().map(|x| x.replay_errors));
        let (recovery_errors, recovery_errors_absent) = column(l.iter().map(|x| x.recovery_errors));
        let (tx_bytes, tx_bytes_absent) = column(l.iter().map(|x| x.tx_bytes));
        let (rx_bytes, rx_bytes_absent) = column(l.iter().map(|x| x.rx_bytes));
        let (crc_flit_errors, crc_flit_errors_absent) = column(l.iter().map(|x| x.crc_flit_errors));
        let (crc_data_errors, crc_data_errors_absent) = column(l.iter().map(|x| x.crc_data_errors));
        Links {
            link: l.iter().map(|x| x.link).collect(),
            active: l.iter().map(|x| x.active).collect(),
            crc_errors,
            crc_errors_absent,
            replay_errors,
            replay_errors_absent,
            recovery_errors,
            recovery_errors_absent,
            tx_bytes,
            tx_bytes_absent,
            rx_bytes,
            rx_bytes_absent,
            crc_flit_errors,
            crc_flit_errors_absent,
            crc_data_errors,
            crc_data_errors_absent,
        }
    });
    let (clock_event_keys, clock_event_values) = s.map(&g.clock_event_ns);
    Gpu {
        index: g.index,
        uuid: s.put(&g.uuid),
        name: s.put(&g.name),
        serial: s.opt(&g.serial),
        pci_bus_id: s.opt(&g.pci_bus_id),
        state: s.name(&g.state),
        util_gpu_pct: g.util_gpu_pct,
        util_mem_pct: g.util_mem_pct,
        mem_total_bytes: g.mem_total_bytes,
        mem_used_bytes: g.mem_used_bytes,
        mem_free_bytes: g.mem_free_bytes,
        temp_c: g.temp_c,
        mem_temp_c: g.mem_temp_c,
        power_w: g.power_w,
        power_limit_w: g.power_limit_w,
        energy_mj: g.energy_mj,
        sm_clock_mhz: g.sm_clock_mhz,
        sm_clock_max_mhz: g.sm_clock_max_mhz,
        mem_clock_mhz: g.mem_clock_mhz,
        mem_clock_max_mhz: g.mem_clock_max_mhz,
        throttle_mask: g.throttle_mask,
        throttle_reasons: s.all(&g.throttle_reasons),
        tensor_active_pct: g.tensor_active_pct,
        ecc_sbe_volatile: g.ecc.sbe_volatile,
        ecc_dbe_volatile: g.ecc.dbe_volatile,
        ecc_sbe_aggregate: g.ecc.sbe_aggregate,
        ecc_dbe_aggregate: g.ecc.dbe_aggregate,
        ecc_sram_uncorrectable: g.ecc.sram_uncorrectable,
        retired_pages: g.retired_pages.as_ref().map(|p| Retired { sbe: p.sbe, dbe: p.dbe, pending: p.pending }),
        row_remap: g.row_remap.as_ref().map(|m| Remap {
            correctable: m.correctable,
            uncorrectable: m.uncorrectable,
            pending: m.pending,
            failure: m.failure,
        }),
        pcie: g.pcie.as_ref().map(|p| Pcie {
            generation: p.generation,
            max_generation: p.max_generation,
            width: p.width,
            max_width: p.max_width,
            replay_count: p.replay_count,
        }),
        nvlinks,
        processes: g.processes.iter().map(|p| Proc { pid: p.pid, used_mem_bytes: p.used_mem_bytes }).collect(),
        not_supported: s.all(&g.not_supported),
        clock_event_keys,
        clock_event_values,
        nvml_error: s.opt(&g.nvml_error),
        pci_present: g.pci_present,
        mig_on: g.mig.as_ref().map(|_| true),
        mig: g
            .mig
            .iter()
            .flatten()
            .map(|m| Mig {
                gpu_instance_id: m.gpu_instance_id,
                compute_instance_id: m.compute_instance_id,
                profile: s.put(&m.profile),
                uuid: s.put(&m.uuid),
                mem_total_bytes: m.mem_total_bytes,
                mem_used_bytes: m.mem_used_bytes,
            })
            .collect(),
    }
}

// ---- decoding ----

fn bad(field: impl Into<String>, message: impl Into<String>) -> ReportError {
    ReportError::Decode { field: field.into(), message: message.into() }
}

struct Table<'a>(&'a [String]);

impl Table<'_> {
    fn get(&self, i: u32, field: &dyn Fn() -> String) -> Result<String, ReportError> {
        self.0.get(i as usize).cloned().ok_or_else(|| {
            bad(field(), format!("string index {i} is past the end of the string table ({} entries)", self.0.len()))
        })
    }
    fn opt(&self, i: Option<u32>, field: &dyn Fn() -> String) -> Result<Option<String>, ReportError> {
        i.map(|i| self.get(i, field)).transpose()
    }
    fn all(&self, v: &[u32], field: &dyn Fn() -> String) -> Result<Vec<String>, ReportError> {
        v.iter().map(|&i| self.get(i, field)).collect()
    }
    fn name<T: for<'de> Deserialize<'de>>(&self, i: u32, field: &dyn Fn() -> String) -> Result<T, ReportError> {
        let s = self.get(i, field)?;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.as_str().into_deserializer();
        T::deserialize(de).map_err(|e| bad(field(), e.to_string()))
    }
    fn map(
        &self,
        keys: &[u32],
        values: &[u64],
        field: &dyn Fn() -> String,
    ) -> Result<BTreeMap<String, u64>, ReportError> {
        if keys.len() != values.len() {
            return Err(bad(field(), format!("{} names but {} values", keys.len(), values.len())));
        }
        keys.iter().zip(values).map(|(&k, &v)| Ok((self.get(k, field)?, v))).collect()
    }
}

/// Entry `i` of an optional column.
fn cell(values: &[u64], absent: &[u64], i: usize) -> Option<u64> {
    let gone = absent.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
    if gone { None } else { values.get(i).copied() }
}

fn from_wire(w: Report) -> Result<NodeReport, ReportError> {
    let t = Table(&w.strings);
    let f = |name: &'static str| move || name.to_string();
    let host = match &w.host {
        None => None,
        Some(h) => Some(HostSample {
            cpu_count: h.cpu_count,
            cpu_util_pct: h.cpu_util_pct,
            cpu_non_job_pct: h.cpu_non_job_pct,
            load1: h.load1,
            load5: h.load5,
            load15: h.load15,
            mem_total_bytes: h.mem_total_bytes,
            mem_used_bytes: h.mem_used_bytes,
            mem_available_bytes: h.mem_available_bytes,
            swap_total_bytes: h.swap_total_bytes,
            swap_used_bytes: h.swap_used_bytes,
            uptime_s: h.uptime_s,
            fans: h
                .fans
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    Ok(FanSample {
                        name: t.get(x.name, &|| format!("host.fans[{i}].name"))?,
                        rpm: x.rpm,
                        min_rpm: x.min_rpm,
                        alarm: x.alarm,
                    })
                })
                .collect::<Result<_, ReportError>>()?,
            temps: h
                .temps
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    Ok(TempSample {
                        name: t.get(x.name, &|| format!("host.temps[{i}].name"))?,
                        celsius: x.celsius,
                        crit_celsius: x.crit_celsius,
                    })
                })
                .collect::<Result<_, ReportError>>()?,
            addrs: t.all(&h.addrs, &|| "host.addrs".to_string())?,
        }),
    };
    let gpus = w.gpus.iter().enumerate().map(|(i, g)| gpu_from_wire(g, i, &t)).collect::<Result<_, _>>()?;
    let nics = w
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = |k: &'static str| move || format!("nics[{i}].{k}");
            Ok(NicSample {
                name: t.get(n.name, &p("name"))?,
                kind: t.name(n.kind, &p("kind"))?,
                netdev: t.opt(n.netdev, &p("netdev"))?,
                port: n.port,
                pci_bus_id: t.opt(n.pci_bus_id, &p("pci_bus_id"))?,
                operstate: t.opt(n.operstate, &p("operstate"))?,
                carrier: n.carrier,
                carrier_changes: n.carrier_changes,
                speed_mbps: n.speed_mbps,
                mtu: n.mtu,
                link_layer: t.opt(n.link_layer, &p("link_layer"))?,
                ib_state: t.opt(n.ib_state, &p("ib_state"))?,
                ib_phys_state: t.opt(n.ib_phys_state, &p("ib_phys_state"))?,
                rate_gbps: n.rate_gbps,
                max_rate_gbps: n.max_rate_gbps,
                counters: t.map(&n.counter_keys, &n.counter_values, &p("counters"))?,
                fabric: n.fabric,
                saturated: t.all(&n.saturated, &p("saturated"))?,
                addrs: t.all(&n.addrs, &p("addrs"))?,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let disks = w
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = |k: &'static str| move || format!("disks[{i}].{k}");
            Ok(DiskSample {
                device: t.get(d.device, &p("device"))?,
                mount: t.opt(d.mount, &p("mount"))?,
                total_bytes: d.total_bytes,
                available_bytes: d.available_bytes,
                read_only: d.read_only,
                write_bytes: d.write_bytes,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let jobs = w
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let p = |k: &'static str| move || format!("jobs[{i}].{k}");
            let ranks = j
                .ranks
                .iter()
                .enumerate()
                .map(|(r, k)| {
                    let q = |f: &'static str| move || format!("jobs[{i}].ranks[{r}].{f}");
                    let progress = match &k.progress {
                        None => None,
                        Some(x) => Some(Progress {
                            step: x.step,
                            last_progress_ms: x.last_progress_ms,
                            step_time_ms: x.step_time_ms,
                            step_time_avg_ms: x.step_time_avg_ms,
                            compute_ms: x.compute_ms,
                            loss: x.loss,
                            loss_step: x.loss_step,
                            grad_norm: x.grad_norm,
                            nonfinite_loss: x.nonfinite_loss,
                            status: t.name(x.status, &q("progress.status"))?,
                            exit_code: x.exit_code,
                        }),
                    };
                    Ok(RankSample {
                        rank: k.rank,
                        local_rank: k.local_rank,
                        pid: k.pid,
                        gpus: k.gpus.clone(),
                        nic: t.opt(k.nic, &q("nic"))?,
                        state: t.name(k.state, &q("state"))?,
                        cpu_seconds: k.cpu_seconds,
                        rss_bytes: k.rss_bytes,
                        exit_code: k.exit_code,
                        io_write_bytes: k.io_write_bytes,
                        progress,
                    })
                })
                .collect::<Result<_, ReportError>>()?;
            Ok(JobSample {
                job_id: t.get(j.job_id, &p("job_id"))?,
                scheduler: t.name(j.scheduler, &p("scheduler"))?,
                world_size: j.world_size,
                sched_state: j.sched_state.map(|x| t.name(x, &p("sched_state"))).transpose()?,
                sched_exit_code: j.sched_exit_code,
                ranks,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let events = w
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = |k: &'static str| move || format!("events[{i}].{k}");
            let class_name = t.get(e.class, &p("class"))?;
            let class = crate::EventClass::parse(&class_name)
                .ok_or_else(|| bad(p("class")(), format!("unknown event class {class_name:?}")))?;
            Ok(Event {
                ts_ms: e.ts_ms,
                source: t.name(e.source, &p("source"))?,
                class,
                severity: t.name(e.severity, &p("severity"))?,
                component: t.opt(e.component, &p("component"))?,
                xid: e.xid,
                caused_by_xid: e.caused_by_xid,
                device: t.opt(e.device, &p("device"))?,
                pid: e.pid,
                count: e.count,
                message: t.get(e.message, &p("message"))?,
                collective: e
                    .collective
                    .as_ref()
                    .map(|c| -> Result<crate::CollectiveInfo, ReportError> {
                        let q = |k: &'static str| move || format!("events[{i}].collective.{k}");
                        Ok(crate::CollectiveInfo {
                            kind: t.opt(c.kind, &q("kind"))?,
                            job: t.opt(c.job, &q("job"))?,
                            rank: c.rank,
                            local_rank: c.local_rank,
                            device: c.device,
                            hostname: t.opt(c.hostname, &q("hostname"))?,
                            peer: t.opt(c.peer, &q("peer"))?,
                            peer_port: c.peer_port,
                            local_addr: t.opt(c.local_addr, &q("local_addr"))?,
                            remote_addr: t.opt(c.remote_addr, &q("remote_addr"))?,
                            hca: t.opt(c.hca, &q("hca"))?,
                            seq: c.seq,
                            op: t.opt(c.op, &q("op"))?,
                            timeout_ms: c.timeout_ms,
                            last_completed: c.last_completed,
                            error: t.opt(c.error, &q("error"))?,
                            pg: t.opt(c.pg, &q("pg"))?,
                        })
                    })
                    .transpose()?,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    Ok(NodeReport {
        schema_version: w.schema_version,
        node: t.get(w.node, &f("node"))?,
        agent_version: t.get(w.agent_version, &f("agent_version"))?,
        seq: w.seq,
        timestamp_ms: w.timestamp_ms,
        interval_ms: w.interval_ms,
        shutdown: w.shutdown,
        urgent: w.urgent,
        host,
        gpus,
        nics,
        disks,
        jobs,
        events,
        dropped: Dropped { reports: w.dropped_reports, events: w.dropped_events, progress: w.dropped_progress },
        collector_errors: t.map(&w.collector_error_keys, &w.collector_error_values, &f("collector_errors"))?,
        expected_gpus: w.expected_gpus,
        driver_version: t.opt(w.driver_version, &f("driver_version"))?,
    })
}

fn gpu_from_wire(g: &Gpu, i: usize, t: &Table<'_>) -> Result<GpuSample, ReportError> {
    let p = |k: &'static str| move || format!("gpus[{i}].{k}");
    let nvlinks = match &g.nvlinks {
        None => Vec::new(),
        Some(l) => {
            let n = l.link.len();
            // An empty value column is one whose every entry is absent (and what a sender from
            // before a column was added sends).
            let cols = [
                &l.crc_errors,
                &l.replay_errors,
                &l.recovery_errors,
                &l.tx_bytes,
                &l.rx_bytes,
                &l.crc_flit_errors,
                &l.crc_data_errors,
            ];
            if l.active.len() != n || cols.iter().any(|c| !c.is_empty() && c.len() != n) {
                return Err(bad(p("nvlinks")(), format!("columns of different lengths for {n} links")));
            }
            (0..n)
                .map(|k| NvLinkSample {
                    link: l.link[k],
                    active: l.active[k],
                    crc_errors: cell(&l.crc_errors, &l.crc_errors_absent, k),
                    replay_errors: cell(&l.replay_errors, &l.replay_errors_absent, k),
                    recovery_errors: cell(&l.recovery_errors, &l.recovery_errors_absent, k),
                    tx_bytes: cell(&l.tx_bytes, &l.tx_bytes_absent, k),
                    rx_bytes: cell(&l.rx_bytes, &l.rx_bytes_absent, k),
                    crc_flit_errors: cell(&l.crc_flit_errors, &l.crc_flit_errors_absent, k),
                    crc_data_errors: cell(&l.crc_data_errors, &l.crc_data_errors_absent, k),
                })
                .collect()
        }
    };
    Ok(GpuSample {
        index: g.index,
        uuid: t.get(g.uuid, &p("uuid"))?,
        name: t.get(g.name, &p("name"))?,
        serial: t.opt(g.serial, &p("serial"))?,
        pci_bus_id: t.opt(g.pci_bus_id, &p("pci_bus_id"))?,
        state: t.name(g.state, &p("state"))?,
        util_gpu_pct: g.util_gpu_pct,
        util_mem_pct: g.util_mem_pct,
        mem_total_bytes: g.mem_total_bytes,
        mem_used_bytes: g.mem_used_bytes,
        mem_free_bytes: g.mem_free_bytes,
        temp_c: g.temp_c,
        mem_temp_c: g.mem_temp_c,
        power_w: g.power_w,
        power_limit_w: g.power_limit_w,
        energy_mj: g.energy_mj,
        sm_clock_mhz: g.sm_clock_mhz,
        sm_clock_max_mhz: g.sm_clock_max_mhz,
        mem_clock_mhz: g.mem_clock_mhz,
        mem_clock_max_mhz: g.mem_clock_max_mhz,
        throttle_mask: g.throttle_mask,
        throttle_reasons: t.all(&g.throttle_reasons, &p("throttle_reasons"))?,
        tensor_active_pct: g.tensor_active_pct,
        ecc: EccCounts {
            sbe_volatile: g.ecc_sbe_volatile,
            dbe_volatile: g.ecc_dbe_volatile,
            sbe_aggregate: g.ecc_sbe_aggregate,
            dbe_aggregate: g.ecc_dbe_aggregate,
            sram_uncorrectable: g.ecc_sram_uncorrectable,
        },
        retired_pages: g.retired_pages.as_ref().map(|x| RetiredPages { sbe: x.sbe, dbe: x.dbe, pending: x.pending }),
        row_remap: g.row_remap.as_ref().map(|x| RowRemap {
            correctable: x.correctable,
            uncorrectable: x.uncorrectable,
            pending: x.pending,
            failure: x.failure,
        }),
        pcie: g.pcie.as_ref().map(|x| PcieLink {
            generation: x.generation,
            max_generation: x.max_generation,
            width: x.width,
            max_width: x.max_width,
            replay_count: x.replay_count,
        }),
        nvlinks,
        processes: g.processes.iter().map(|x| GpuProcess { pid: x.pid, used_mem_bytes: x.used_mem_bytes }).collect(),
        not_supported: t.all(&g.not_supported, &p("not_supported"))?,
        clock_event_ns: t.map(&g.clock_event_keys, &g.clock_event_values, &p("clock_event_ns"))?,
        nvml_error: t.opt(g.nvml_error, &p("nvml_error"))?,
        pci_present: g.pci_present,
        mig: match g.mig_on {
            Some(true) => Some(
                g.mig
                    .iter()
                    .map(|m| {
                        Ok(MigInstance {
                            gpu_instance_id: m.gpu_instance_id,
                            compute_instance_id: m.compute_instance_id,
                            profile: t.get(m.profile, &p("mig.profile"))?,
                            uuid: t.get(m.uuid, &p("mig.uuid"))?,
                            mem_total_bytes: m.mem_total_bytes,
                            mem_used_bytes: m.mem_used_bytes,
                        })
                    })
                    .collect::<Result<Vec<_>, ReportError>>()?,
            ),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of everything, with absent values among present ones.
    fn sample() -> NodeReport {
        let link = |l: u32, crc: Option<u64>| NvLinkSample {
            link: l,
            active: l != 3,
            crc_errors: crc,
            replay_errors: Some(0),
            recovery_errors: None,
            tx_bytes: Some(u64::MAX),
            rx_bytes: Some(1 << 40),
            crc_flit_errors: crc.map(|c| c / 2),
            crc_data_errors: None,
        };
        let json = r#"{
            "schema_version": 1, "node": "node-7", "agent_version": "0.1.0", "seq": 42,
            "timestamp_ms": 1700000000123, "interval_ms": 10000, "urgent": true,
            "host": {"cpu_count": 64, "cpu_util_pct": 12.5, "load1": 3.0, "load5": null, "load15": 1.0,
                     "mem_total_bytes": 1099511627776, "mem_used_bytes": null, "mem_available_bytes": 7,
                     "swap_total_bytes": 0, "swap_used_bytes": 0, "uptime_s": 1000,
                     "fans": [{"name": "fan1", "rpm": 9000.0, "min_rpm": null, "alarm": true}],
                     "temps": [{"name": "cpu", "celsius": 55.5, "crit_celsius": 95.0}]},
            "gpus": [{"index": 0, "uuid": "GPU-1", "name": "H100", "serial": null, "pci_bus_id": "0000:17:00.0",
                      "state": "ok", "util_gpu_pct": 99.0, "util_mem_pct": null, "mem_total_bytes": 80,
                      "mem_used_bytes": 1, "mem_free_bytes": 79, "temp_c": 61.25, "mem_temp_c": null,
                      "power_w": 700.1, "power_limit_w": 700.0, "energy_mj": 123, "sm_clock_mhz": 1980,
                      "sm_clock_max_mhz": 1980, "mem_clock_mhz": null, "mem_clock_max_mhz": 2619,
                      "throttle_mask": 4, "throttle_reasons": ["sw_power_cap"], "ecc": {"sbe_volatile": 1,
                      "dbe_volatile": 0, "sbe_aggregate": null, "dbe_aggregate": 0},
                      "retired_pages": {"sbe": 1, "dbe": 0, "pending": false},
                      "row_remap": {"correctable": 0, "uncorrectable": 1, "pending": true, "failure": false},
                      "pcie": {"generation": 5, "max_generation": 5, "width": 16, "max_width": 16, "replay_count": null},
                      "processes": [{"pid": 10, "used_mem_bytes": null}], "not_supported": ["fan"],
                      "clock_event_ns": {"sw_thermal": 5}, "nvml_error": "timeout", "pci_present": true,
                      "mig": [{"gpu_instance_id": 7, "compute_instance_id": 0, "profile": "1g.10gb",
                               "uuid": "MIG-1", "mem_total_bytes": 10, "mem_used_bytes": null}]}],
            "nics": [{"name": "mlx5_0", "kind": "infiniband", "netdev": "ib0", "port": 1, "operstate": "up",
                      "carrier": true, "carrier_changes": 2, "speed_mbps": null, "mtu": 4096,
                      "link_layer": "InfiniBand", "ib_state": "ACTIVE", "ib_phys_state": "LinkUp",
                      "rate_gbps": 400.0, "counters": {"port_xmit_data": 99, "symbol_error": 0},
                      "fabric": true, "saturated": ["port_xmit_wait"]}],
            "disks": [{"device": "nvme0n1", "mount": "/", "total_bytes": 1, "available_bytes": null,
                       "read_only": true, "write_bytes": 5}],
            "jobs": [{"job_id": "j1", "scheduler": "slurm", "world_size": 16, "sched_state": "running",
                      "sched_exit_code": -9, "ranks": [{"rank": 3, "local_rank": 3, "pid": 77, "gpus": [3],
                      "nic": "mlx5_0", "state": "running", "cpu_seconds": 1.5, "rss_bytes": null,
                      "exit_code": -1, "io_write_bytes": 8,
                      "progress": {"step": 100, "last_progress_ms": 1700000000000, "step_time_ms": 2.5,
                                   "step_time_avg_ms": null, "compute_ms": 1.0, "loss": 2.25, "loss_step": 99,
                                   "grad_norm": null, "nonfinite_loss": false, "status": "checkpointing",
                                   "exit_code": null}}]}],
            "events": [{"ts_ms": 1700000000000, "source": "kmsg", "class": "xid", "severity": "critical",
                        "component": "gpu0", "xid": 79, "device": "0000:17:00.0", "pid": null, "count": 2,
                        "message": "NVRM: Xid 79"}],
            "dropped": {"reports": 1, "events": 2, "progress": 3},
            "collector_errors": {"nvml": 4},
            "driver_version": "550.54.15",
            "expected_gpus": 8
}"#;
        let mut r: NodeReport = serde_json::from_str(json).unwrap();
        r.gpus[0].nvlinks = vec![link(0, Some(5)), link(1, None), link(3, Some(0))];
        r
    }

    #[test]
    fn a_report_survives_the_round_trip() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(decode(&bytes).unwrap(), r);
    }

    #[test]
    fn garbage_and_bad_indices_are_refused_with_the_field() {
        let e = decode(b"\xff\xff\xff").unwrap_err();
        assert!(e.to_string().contains("protobuf"), "{e}");
        let mut w = to_wire(&sample());
        w.node = 10_000;
        let e = decode(&prost::Message::encode_to_vec(&w)).unwrap_err();
        assert_eq!(e.field(), "node");
        let mut w = to_wire(&sample());
        if let Some(n) = w.nics.first_mut() {
            n.counter_values.push(1);
            let e = decode(&prost::Message::encode_to_vec(&w)).unwrap_err();
            assert_eq!(e.field(), "nics[0].counters", "{e}");
        }
    }
}
