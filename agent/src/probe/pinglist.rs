//! The analyzer's pinglist: which peers this node probes, fetched every `pinglist_refresh` (sooner
//! while the analyzer has none for it yet, as right after the fleet starts).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Pingmesh, Target};
use crate::export::push::Client;

/// Retry delay while the pinglist is empty or cannot be fetched.
const RETRY: Duration = Duration::from_secs(10);

/// `GET /api/v1/pinglist?node=…` as the analyzer answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct Pinglist {
    #[serde(default)]
    pub targets: Vec<PinglistTarget>,
}

/// One path the analyzer asks this node to probe.
#[derive(Debug, Clone, Deserialize)]
pub struct PinglistTarget {
    pub peer: String,
    pub peer_addr: String,
    /// The local fabric address to send from (the analyzer pairs NICs of the same rail).
    #[serde(default)]
    pub local_addr: Option<String>,
}

impl Pinglist {
    /// The targets whose addresses parse.
    pub fn targets(&self) -> Vec<Target> {
        self.targets
            .iter()
            .filter_map(|t| {
                Some(Target {
                    peer: t.peer.clone(),
                    peer_addr: t.peer_addr.parse::<IpAddr>().ok()?,
                    local_addr: t.local_addr.as_deref().and_then(|a| a.parse().ok()),
                })
            })
            .collect()
    }
}

/// Runs forever on the agent's runtime: fetch, hand the targets to the prober, wait.
pub async fn run(client: Client, node: String, pm: Arc<Pingmesh>, refresh: Duration) {
    let path = format!("/api/v1/pinglist?node={}", urlencode(&node));
    loop {
        let wait = match client.get_json::<Pinglist>(&path).await {
            Ok(list) => {
                let t = list.targets();
                let empty = t.is_empty();
                pm.set_targets(t);
                if empty { RETRY.min(refresh) } else { refresh }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot fetch the probe pinglist; probing the configured peers");
                RETRY.min(refresh)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinglist_reads_into_targets_and_bad_addresses_are_skipped() {
        let l: Pinglist = serde_json::from_str(
            r#"{"node":"a","targets":[{"peer":"b","peer_addr":"10.0.0.2","local_addr":"10.0.0.1"},
                {"peer":"c","peer_addr":"nope"}]}"#,
        )
        .unwrap();
        let t = l.targets();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].local_addr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(urlencode("node 1/x"), "node%201%2Fx");
    }
}
