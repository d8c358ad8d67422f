//! `[probe]`: the active fabric probes (pingmesh). Off by default; `enabled = true` turns them on with
//! defaults that cost a few packets per second per node.

use std::time::Duration;

use serde::Deserialize;

use super::packet;

/// Default UDP port of the probe responder on each fabric address (next to the agent's 9430 and 9431).
pub const DEFAULT_PORT: u16 = 9432;

/// `[probe]` as written in the agent's config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Probe peers over the fabric NICs and answer their probes. Default false.
    pub enabled: bool,
    /// UDP port the responder listens on at each fabric address; probes go to the same port on the
    /// peers. Default 9432.
    pub port: u16,
    /// Probes sent per second, all peers together (the rate limit). Default 40: the analyzer's
    /// pinglist gives 8 peers on each of up to 8 rails (64 paths), and the detector judges a path
    /// on at least 20 probes a minute; 40/s gives each of 64 paths about 37.
    pub rate_pps: u32,
    /// Size of one probe datagram, bytes (24–1472). Default 64.
    pub size_bytes: usize,
    /// A probe not answered within this counts as lost. Default 1s.
    pub timeout: String,
    /// How often the agent fetches its pinglist (the peers to probe) from the analyzer. Default 5m.
    pub pinglist_refresh: String,
    /// Peers to probe when the analyzer gives no pinglist (no analyzer, or an older one): each a node
    /// name and an address of its fabric NIC. Default none.
    pub peers: Vec<StaticPeer>,
    /// Replies sent per second at most, to all peers together, so that a misbehaving peer cannot
    /// make this node flood. Default 1000.
    pub responder_max_pps: u32,
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    /// The peer's node name, as in its reports.
    pub node: String,
    /// An address of the peer's fabric NIC.
    pub addr: String,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: false,
            port: DEFAULT_PORT,
            rate_pps: 40,
            size_bytes: 64,
            timeout: "1s".into(),
            pinglist_refresh: "5m".into(),
            peers: Vec::new(),
            responder_max_pps: 1000,
        }
    }
}

/// Checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub port: u16,
    pub rate_pps: u32,
    pub size_bytes: usize,
    pub timeout: Duration,
    pub pinglist_refresh: Duration,
    pub peers: Vec<(String, std::net::IpAddr)>,
    pub responder_max_pps: u32,
}

/// Highest probe rate accepted: 1000 probes/s of 64 bytes is 64 kB/s, already far more than a
/// pingmesh needs.
pub const MAX_RATE_PPS: u32 = 1000;

impl ProbeConfig {
    /// `None` when probing is off; an error names the bad key.
    pub fn check(&self) -> Result<Option<ProbeSettings>, String> {
        if !self.enabled {
            return Ok(None);
        }
        if self.port == 0 {
            return Err("[probe] port must not be 0".into());
        }
        if !(1..=MAX_RATE_PPS).contains(&self.rate_pps) {
            return Err(format!("[probe] rate_pps must be 1..={MAX_RATE_PPS}"));
        }
        if !(packet::HEADER..=packet::MAX_LEN).contains(&self.size_bytes) {
            return Err(format!("[probe] size_bytes must be {}..={}", packet::HEADER, packet::MAX_LEN));
        }
        let dur = |k: &str, v: &str, lo: Duration, hi: Duration| -> Result<Duration, String> {
            let d = humantime::parse_duration(v).map_err(|e| format!("[probe] {k} {v:?}: {e}"))?;
            if !(lo..=hi).contains(&d) {
                return Err(format!("[probe] {k} {v} is outside {lo:?}..={hi:?}"));
            }
            Ok(d)
        };
        let timeout = dur("timeout", &self.timeout, Duration::from_millis(10), Duration::from_secs(10))?;
        let pinglist_refresh =
            dur("pinglist_refresh", &self.pinglist_refresh, Duration::from_secs(1), Duration::from_secs(86_400))?;
        let mut peers = Vec::new();
        for p in &self.peers {
            if !faultline_proto::id::valid_host(&p.node) {
                return Err(format!("[probe] peers: {:?} is not a node name", p.node));
            }
            let a = p.addr.parse().map_err(|_| format!("[probe] peers: {:?} is not an IP address", p.addr))?;
            peers.push((p.node.clone(), a));
        }
        Ok(Some(ProbeSettings {
            port: self.port,
            rate_pps: self.rate_pps,
            size_bytes: self.size_bytes,
            timeout,
            pinglist_refresh,
            peers,
            responder_max_pps: self.responder_max_pps.max(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_on_with_one_line() {
        let c: ProbeConfig = toml::from_str("").unwrap();
        assert_eq!(c.check(), Ok(None));
        let c: ProbeConfig = toml::from_str("enabled = true").unwrap();
        let s = c.check().unwrap().unwrap();
        assert_eq!((s.port, s.rate_pps, s.timeout), (DEFAULT_PORT, 40, Duration::from_secs(1)));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        assert!(toml::from_str::<ProbeConfig>("enabld = true").is_err());
        let c: ProbeConfig = toml::from_str("enabled = true\nrate_pps = 0").unwrap();
        assert!(c.check().unwrap_err().contains("rate_pps"));
        let c: ProbeConfig =
            toml::from_str("enabled = true\npeers = [{ node = \"b\", addr = \"not-an-ip\" }]").unwrap();
        assert!(c.check().unwrap_err().contains("peers"));
    }
}
