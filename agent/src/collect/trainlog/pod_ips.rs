//! Pod addresses: on Kubernetes NCCL names its peers by pod IP, an address that lives in the pod's
//! network namespace and that `getifaddrs` on the host never sees. The kubelet's pod list (the
//! `[jobs.scheduler]` `kubelet_pods` source, a URL or a file) gives each pod's `status.podIPs`; the
//! addresses of this node's running pods go on the host sample, so the analyzer can trace a peer
//! address to this node.

use std::time::{Duration, Instant};

use crate::collect::sched::PodList;

/// How often the pod list is fetched for addresses: a pod keeps its IP for its life, and a minute is
/// well inside the hold of the evidence that needs it.
pub const REFRESH: Duration = Duration::from_secs(60);
/// Most pod addresses kept.
const MAX_POD_ADDRS: usize = 256;

/// The addresses of the running (or starting) pods in a kubelet `/pods` answer.
pub fn parse(json: &str) -> Result<Vec<String>, String> {
    let list: PodList = serde_json::from_str(json).map_err(|e| format!("pod list: {e}"))?;
    let mut out = Vec::new();
    for p in list.items.iter().filter(|p| matches!(p.status.phase.as_str(), "Running" | "Pending")) {
        let ips = p.status.pod_ips.iter().map(|x| x.ip.clone()).chain(p.status.pod_ip.clone());
        for ip in ips.filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
            if !out.contains(&ip) && out.len() < MAX_POD_ADDRS {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// The pod addresses, fetched at most every `REFRESH`.
#[derive(Debug, Default)]
pub struct PodIps {
    addrs: Vec<String>,
    fetched: Option<Instant>,
    warned: bool,
}

impl PodIps {
    /// The current addresses, fetching the list again when due (a failure keeps the last ones and
    /// is logged once).
    pub fn get(&mut self, sched: &crate::collect::sched::SchedConfig) -> &[String] {
        let Some(source) = sched.kubelet_pods.as_deref() else { return &[] };
        if self.fetched.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.fetched = Some(Instant::now());
            let timeout =
                humantime::parse_duration(&sched.timeout).unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(2));
            match crate::collect::sched::fetch_pods(sched, source, timeout).and_then(|t| parse(&t)) {
                Ok(a) => self.addrs = a,
                Err(e) if !self.warned => {
                    self.warned = true;
                    tracing::warn!(error = %e, "pod addresses not read (logged once); NCCL peers named by pod IP stay unresolved");
                }
                Err(_) => {}
            }
        }
        &self.addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_pods_give_their_addresses() {
        let json = r#"{"kind":"PodList","items":[
            {"metadata":{"uid":"a"},"status":{"phase":"Running","podIP":"10.244.1.7","podIPs":[{"ip":"10.244.1.7"},{"ip":"fd00::7"}]}},
            {"metadata":{"uid":"b"},"status":{"phase":"Succeeded","podIP":"10.244.1.8"}},
            {"metadata":{"uid":"c"},"status":{"phase":"Pending"}},
            {"metadata":{"uid":"d"},"status":{"phase":"Running","podIP":"not an address"}}]}"#;
        assert_eq!(parse(json).unwrap(), ["10.244.1.7", "fd00::7"]);
        assert!(parse("nope").is_err());
    }

    #[test]
    fn a_file_source_is_read_and_refreshed_at_most_every_minute() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pods.json");
        std::fs::write(&f, r#"{"items":[{"status":{"phase":"Running","podIP":"10.244.2.3"}}]}"#).unwrap();
        let sched =
            crate::collect::sched::SchedConfig { kubelet_pods: Some(f.display().to_string()), ..Default::default() };
        let mut p = PodIps::default();
        assert_eq!(p.get(&sched), ["10.244.2.3"]);
        std::fs::write(&f, r#"{"items":[]}"#).unwrap();
        assert_eq!(p.get(&sched), ["10.244.2.3"], "not fetched again within a minute");
        assert!(PodIps::default().get(&Default::default()).is_empty(), "no source, no addresses");
    }
}
