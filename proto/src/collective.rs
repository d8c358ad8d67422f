//! `CollectiveInfo`: what a collective-communication library's log line said (NCCL, PyTorch
//! distributed, Gloo), carried on the event the agent makes of it. Every field is what the line
//! printed; the analyzer maps the peer address to a node and NIC through the inventory.

use serde::{Deserialize, Serialize};

/// The structured part of an NCCL / PyTorch-distributed event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveInfo {
    /// What the line was: `ib_completion`, `peer_reset`, `connect_failed`, `watchdog_timeout`,
    /// `watchdog_progress`, `comm_error`, `async_event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The job whose log it came from (the scheduler's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Global rank (`[rank3]:`, `[Rank 3]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Local rank (torchrun's `[default3]:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<u32>,
    /// CUDA device as the process numbers it (NCCL's `[3]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// Host name from NCCL's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The peer as printed: an IP address or a host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u32>,
    /// The local NIC's address (a RoCE GID), when printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<String>,
    /// The peer NIC's address (a RoCE GID), when printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// The local IB device (`mlx5_3`), when printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hca: Option<String>,
    /// The collective's sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The collective (`ALLREDUCE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The watchdog's timeout, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The last collective this rank completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<u64>,
    /// The error as named (`ncclRemoteError`, `IBV_WC_RETRY_EXC_ERR`, `Connection reset by peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process group the sequence number counts in (`[PG 1 Rank 3]`): numbers of different
    /// groups are not comparable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg: Option<String>,
}

impl CollectiveInfo {
    /// Every string field with its name, for validation.
    pub fn strings(&self) -> [(&'static str, Option<&str>); 10] {
        [
            ("kind", self.kind.as_deref()),
            ("job", self.job.as_deref()),
            ("hostname", self.hostname.as_deref()),
            ("peer", self.peer.as_deref()),
            ("local_addr", self.local_addr.as_deref()),
            ("remote_addr", self.remote_addr.as_deref()),
            ("hca", self.hca.as_deref()),
            ("op", self.op.as_deref()),
            ("error", self.error.as_deref()),
            ("pg", self.pg.as_deref()),
        ]
    }
}
