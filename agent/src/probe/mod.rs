//! Active fabric probes (pingmesh): a UDP responder on each fabric NIC address, and a prober that
//! sends a rate-limited stream of small datagrams to a rotating set of peers (the analyzer's
//! pinglist, or configured peers), matches replies by sequence number and counts, per path (local
//! NIC, peer address), what was sent, what came back and how long it took. The next report carries
//! one `ProbeSample` per path probed since the last one.
//!
//! Threads: one sender (paces the probes, gives up on unanswered ones after the timeout) and one
//! reader per local address (answers requests, matches replies). Sockets are plain blocking UDP
//! sockets bound to the fabric address, so probes leave through that NIC and replies come back to it.

pub mod config;
mod endpoint;
pub mod packet;
pub mod pinglist;
mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use faultline_proto::{NicSample, ProbeSample};

pub use config::{ProbeConfig, ProbeSettings};
use stats::PathStats;

/// One path to probe: from a local fabric address (its NIC) to a peer's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub peer: String,
    pub peer_addr: IpAddr,
    /// The local address to send from; `None`: the first local fabric address of the same family.
    pub local_addr: Option<IpAddr>,
}

/// Most paths counted between two reports; more targets than this are not probed.
pub const MAX_PATHS: usize = 1024;

/// The path a probe counts toward.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PathKey {
    peer: String,
    iface: String,
    local: IpAddr,
    peer_addr: IpAddr,
}

struct Pending {
    key: PathKey,
    sent: Instant,
}

#[derive(Default)]
struct Inner {
    /// Local fabric addresses with a bound socket, and their NIC.
    endpoints: HashMap<IpAddr, (String, Arc<UdpSocket>)>,
    /// Addresses a bind failed on (logged once).
    failed: HashSet<IpAddr>,
    /// From the analyzer's pinglist; empty: the configured peers.
    targets: Vec<Target>,
    cursor: usize,
    pending: HashMap<u64, Pending>,
    paths: BTreeMap<PathKey, PathStats>,
}

/// The running pingmesh of this node. Dropping it stops its threads within about a second.
pub struct Pingmesh {
    node: String,
    cfg: ProbeSettings,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pingmesh {
    /// Starts the sender; responders start as fabric addresses appear (`update_local`).
    pub fn start(node: &str, cfg: ProbeSettings) -> std::io::Result<Arc<Pingmesh>> {
        let pm = Arc::new(Pingmesh {
            node: node.to_string(),
            cfg,
            inner: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
        });
        let weak = Arc::downgrade(&pm);
        std::thread::Builder::new().name("probe-send".into()).spawn(move || {
            while let Some(pm) = weak.upgrade() {
                if pm.stop.load(Ordering::Relaxed) {
                    return;
                }
                pm.send_one();
                let gap = Duration::from_secs_f64(1.0 / f64::from(pm.cfg.rate_pps));
                drop(pm);
                std::thread::sleep(gap);
            }
        })?;
        tracing::info!(node, port = pm.cfg.port, rate_pps = pm.cfg.rate_pps, "fabric probes on");
        Ok(pm)
    }

    /// Binds a responder on every fabric address not yet bound (called with each report's NICs).
    /// IPv6 link-local addresses are skipped: they need a scope, and fabrics are routed.
    pub fn update_local(&self, nics: &[NicSample]) {
        for n in nics.iter().filter(|n| n.is_fabric()) {
            for a in n.addrs.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                if a.is_loopback() || matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80) {
                    continue;
                }
                self.add_endpoint(a, &n.name);
            }
        }
    }

    /// Binds the responder on `a` (NIC `iface`) unless done or failed before.
    fn add_endpoint(&self, a: IpAddr, iface: &str) {
        let mut g = lock(&self.inner);
        if g.endpoints.contains_key(&a) || g.failed.contains(&a) {
            return;
        }
        match endpoint::bind(SocketAddr::new(a, self.cfg.port)) {
            Ok(sock) => {
                let sock = Arc::new(sock);
                g.endpoints.insert(a, (iface.to_string(), sock.clone()));
                drop(g);
                tracing::info!(addr = %a, nic = %iface, port = self.cfg.port, "probe responder bound");
                endpoint::spawn_reader(sock, self.inner.clone(), self.stop.clone(), self.cfg.responder_max_pps);
            }
            Err(e) => {
                g.failed.insert(a);
                tracing::warn!(addr = %a, nic = %iface, port = self.cfg.port, error = %e, "cannot bind the probe responder");
            }
        }
    }

    /// Replaces the peers to probe (the analyzer's pinglist). An empty list falls back to the
    /// configured peers.
    pub fn set_targets(&self, mut targets: Vec<Target>) {
        targets.retain(|t| t.peer != self.node);
        targets.sort();
        targets.dedup();
        targets.truncate(MAX_PATHS);
        let mut g = lock(&self.inner);
        if g.targets != targets {
            tracing::info!(targets = targets.len(), "probe pinglist updated");
            g.targets = targets;
        }
    }

    /// Every path probed since the last call, with what it measured; counting starts over.
    pub fn take_samples(&self) -> Vec<ProbeSample> {
        let mut g = lock(&self.inner);
        self.expire(&mut g, Instant::now());
        let paths = std::mem::take(&mut g.paths);
        paths
            .into_iter()
            .filter(|(_, s)| s.sent > 0)
            .take(faultline_proto::probe::MAX_PROBES)
            .map(|(k, s)| s.sample(k.peer, k.iface, k.local.to_string(), k.peer_addr.to_string()))
            .collect()
    }

    fn targets(&self, g: &Inner) -> Vec<Target> {
        if !g.targets.is_empty() {
            return g.targets.clone();
        }
        self.cfg
            .peers
            .iter()
            .filter(|(n, _)| *n != self.node)
            .map(|(n, a)| Target { peer: n.clone(), peer_addr: *a, local_addr: None })
            .collect()
    }

    /// Counts probes older than the timeout as lost.
    fn expire(&self, g: &mut Inner, now: Instant) {
        let timeout = self.cfg.timeout;
        let mut lost = Vec::new();
        g.pending.retain(|_, p| {
            let keep = now.duration_since(p.sent) < timeout;
            if !keep {
                lost.push(p.key.clone());
            }
            keep
        });
        for k in lost {
            stats::entry(&mut g.paths, k).sent += 1;
        }
    }

    fn send_one(&self) {
        let now = Instant::now();
        let mut g = lock(&self.inner);
        self.expire(&mut g, now);
        let targets = self.targets(&g);
        if targets.is_empty() || g.endpoints.is_empty() {
            return;
        }
        let t = &targets[g.cursor % targets.len()];
        g.cursor = g.cursor.wrapping_add(1);
        let local = t.local_addr.filter(|a| g.endpoints.contains_key(a)).or_else(|| {
            let mut same: Vec<&IpAddr> = g.endpoints.keys().filter(|a| a.is_ipv4() == t.peer_addr.is_ipv4()).collect();
            same.sort();
            same.first().copied().copied()
        });
        let Some(local) = local else { return };
        let Some((iface, sock)) = g.endpoints.get(&local).cloned() else { return };
        let key = PathKey { peer: t.peer.clone(), iface, local, peer_addr: t.peer_addr };
        if !g.paths.contains_key(&key) && g.paths.len() >= MAX_PATHS {
            return;
        }
        // Bounded: at most rate × timeout probes are ever in flight, plus slack.
        let max_pending = (f64::from(self.cfg.rate_pps) * self.cfg.timeout.as_secs_f64()) as usize * 2 + 16;
        if g.pending.len() >= max_pending {
            return;
        }
        let seq = stats::next_seq();
        let sent_us = now.duration_since(self.epoch).as_micros() as u64;
        g.pending.insert(seq, Pending { key: key.clone(), sent: now });
        drop(g);
        let buf = packet::request(seq, sent_us, self.cfg.size_bytes);
        if let Err(e) = sock.send_to(&buf, SocketAddr::new(t.peer_addr, self.cfg.port)) {
            // Unreachable or no route: the probe is lost now rather than at its timeout.
            tracing::debug!(peer = %t.peer, addr = %t.peer_addr, error = %e, "probe not sent");
            let mut g = lock(&self.inner);
            if g.pending.remove(&seq).is_some() {
                stats::entry(&mut g.paths, key).sent += 1;
            }
        }
    }
}

impl Drop for Pingmesh {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: u16) -> ProbeSettings {
        ProbeSettings {
            port,
            rate_pps: 200,
            size_bytes: 64,
            timeout: Duration::from_millis(300),
            pinglist_refresh: Duration::from_secs(60),
            peers: Vec::new(),
            responder_max_pps: 1000,
        }
    }

    /// Two probers on two loopback addresses (Linux answers all of 127/8): one probes the other,
    /// replies come back matched, and a peer nobody answers on counts as all lost.
    #[test]
    fn probes_are_answered_matched_and_counted_and_silence_is_loss() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let a = Pingmesh::start("a", settings(port)).unwrap();
        let b = Pingmesh::start("b", settings(port)).unwrap();
        let (la, lb, nobody): (IpAddr, IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        a.add_endpoint(la, "lo-a");
        b.add_endpoint(lb, "lo-b");
        a.set_targets(vec![
            Target { peer: "b".into(), peer_addr: lb, local_addr: Some(la) },
            Target { peer: "c".into(), peer_addr: nobody, local_addr: Some(la) },
            Target { peer: "a".into(), peer_addr: la, local_addr: None },
        ]);
        let mut got: BTreeMap<String, ProbeSample> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline
            && !(got.get("b").is_some_and(|s| s.received >= 10) && got.get("c").is_some_and(|s| s.sent >= 5))
        {
            std::thread::sleep(Duration::from_millis(100));
            for s in a.take_samples() {
                let e = got.entry(s.peer.clone()).or_insert_with(|| ProbeSample { sent: 0, received: 0, ..s.clone() });
                e.sent += s.sent;
                e.received += s.received;
                if s.rtt_p50_us.is_some() {
                    (e.rtt_p50_us, e.rtt_max_us) = (s.rtt_p50_us, s.rtt_max_us);
                }
            }
        }
        let toward_b = &got["b"];
        assert!(toward_b.received >= 10, "{got:?}");
        assert_eq!((toward_b.iface.as_str(), toward_b.local_addr.as_str()), ("lo-a", "127.0.0.1"));
        assert!(toward_b.rtt_p50_us.is_some() && toward_b.rtt_p50_us <= toward_b.rtt_max_us);
        let toward_c = &got["c"];
        assert!(toward_c.sent >= 5 && toward_c.received == 0, "nobody answers 127.0.0.3: {got:?}");
        assert!(!got.contains_key("a"), "a node never probes itself");
        assert!(b.take_samples().is_empty(), "b answered but probed nobody");
    }
}
