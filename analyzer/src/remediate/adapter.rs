//! The scheduler adapter: the `Remediator` trait every scheduler implements (Slurm in `slurm`), the
//! node state it answers with, and why a call failed.

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The scheduler's state words, e.g. `IDLE+DRAIN`, `ALLOCATED`, `DOWN+DRAIN+NOT_RESPONDING`.
    pub state: String,
    /// Drained or draining: no new jobs go there.
    pub drained: bool,
    /// The reason set with the drain (or down), without the scheduler's `[user@time]` suffix.
    pub reason: Option<String>,
}

/// Why a scheduler call failed.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    #[error("{node:?} is not a node name the scheduler accepts (letters, digits, '-', '_', '.')")]
    BadNodeName { node: String },
    #[error("the scheduler does not know node {node}")]
    UnknownNode { node: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} {args} did not finish within {timeout_s} s; killed")]
    Timeout { program: String, args: String, timeout_s: f64 },
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed { program: String, args: String, status: String, stderr: String },
    #[error("cannot read the answer of {program}: {message}")]
    Parse { program: String, message: String },
    #[error("no scheduler adapter is configured (set [remediation] adapter = \"slurm\")")]
    NoAdapter,
}

/// A scheduler that can take nodes out of service and put them back. Calls block (they run a
/// program or talk to a server); callers run them off the async runtime. Node names are cluster
/// names; the adapter maps them to its own (`target`).
///
/// Slurm implements it (`slurm::SlurmRemediator`). A Kubernetes adapter (cordon, taint, a
/// NodeCondition) would implement the same three calls.
pub trait Remediator: Send + Sync + std::fmt::Debug + 'static {
    /// Short name for logs and the API (`slurm`).
    fn name(&self) -> &'static str;
    /// The scheduler's name for a cluster node.
    fn target(&self, node: &str) -> String;
    /// Take the node out of scheduling with this reason.
    fn drain(&self, node: &str, reason: &str) -> Result<(), RemediateError>;
    /// Put the node back into scheduling.
    fn resume(&self, node: &str) -> Result<(), RemediateError>;
    /// The node's state and drain reason.
    fn node_state(&self, node: &str) -> Result<NodeState, RemediateError>;
}
