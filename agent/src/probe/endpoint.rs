//! One local fabric address: its UDP socket and the thread that reads it, answering peers' requests
//! (rate-limited) and matching replies to this node's pending probes by sequence number.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::packet::{self, Kind};
use super::{Inner, lock, stats};

/// How long a read waits before looking at the stop flag.
const READ_WAKE: Duration = Duration::from_millis(500);

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_read_timeout(Some(READ_WAKE))?;
    Ok(s)
}

pub(super) fn spawn_reader(sock: Arc<UdpSocket>, inner: Arc<Mutex<Inner>>, stop: Arc<AtomicBool>, max_reply_pps: u32) {
    let name = format!("probe-{}", sock.local_addr().map(|a| a.ip().to_string()).unwrap_or_default());
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let mut buf = vec![0u8; packet::MAX_LEN + 1];
        // Token bucket for replies: `max_reply_pps` per second, a burst of one second's worth.
        let (mut tokens, mut refilled) = (f64::from(max_reply_pps), Instant::now());
        while !stop.load(Ordering::Relaxed) {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                    tracing::trace!(error = %e, "probe socket read");
                    continue;
                }
            };
            let now = Instant::now();
            let Some(h) = packet::parse(&buf[..n]) else { continue };
            match h.kind {
                Kind::Request => {
                    let rate = f64::from(max_reply_pps);
                    tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(rate);
                    refilled = now;
                    if tokens < 1.0 {
                        continue;
                    }
                    tokens -= 1.0;
                    packet::make_reply(&mut buf[..n]);
                    let _ = sock.send_to(&buf[..n], from);
                }
                Kind::Reply => {
                    let mut g = lock(&inner);
                    let matches = g.pending.get(&h.seq).is_some_and(|p| p.key.peer_addr == from.ip());
                    if !matches {
                        continue; // late (already counted lost), duplicate or foreign
                    }
                    if let Some(p) = g.pending.remove(&h.seq) {
                        let rtt = now.duration_since(p.sent).as_micros().min(u128::from(u32::MAX)) as u32;
                        stats::entry(&mut g.paths, p.key).answered(rtt);
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a probe reader thread");
    }
}
