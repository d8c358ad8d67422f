//! The progress API over UDP, the cheap path: one JSON post per datagram, read in batches with
//! `recvmmsg`, no answer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

/// Datagrams taken per `recvmmsg` call: a full batch is followed at once by the next call, so this
/// only bounds the buffer (64 × 16 KiB of address space; only the touched pages are resident).
pub const DATAGRAM_BATCH: usize = 64;
/// After a batch that did not fill up, the reader waits before the next `recvmmsg`, so datagrams
/// queue and are taken many per call: a wake-up per datagram costs more than the post itself. The
/// wait is what fills a quarter of the receive buffer at [`DATAGRAM_DESIGN_RATE`], within these
/// bounds: 20 ms at most (a post shows up that much later; reports go out every few seconds).
pub const DATAGRAM_COALESCE_MAX: Duration = Duration::from_millis(20);
/// Shortest coalescing wait (a small receive buffer).
pub const DATAGRAM_COALESCE_MIN: Duration = Duration::from_millis(1);
/// Posts per second the coalescing wait is sized for: 1,000 ranks × 10 posts/s, the load this path
/// was built for. Faster senders fill batches, and a full batch is followed at once by the next.
pub const DATAGRAM_DESIGN_RATE: f64 = 10_000.0;
/// Kernel memory one small datagram takes in a receive queue (its buffer's `truesize`), to turn the
/// receive buffer's size into a count of datagrams. ~1 KiB for a 100–300 byte post.
const DATAGRAM_TRUESIZE: f64 = 1280.0;
/// Receive buffer asked for the UDP socket: 4 MiB queues ~5,000 small posts (each takes ~800 bytes of
/// kernel memory), half a second of 1,000 ranks × 10 posts/s, so a busy host that delays the
/// receiving thread does not lose posts. Without root the kernel caps it at `net.core.rmem_max`.
pub const DATAGRAM_RCVBUF: libc::c_int = 4 << 20;

/// Take progress posts as UDP datagrams on `addr` (the HTTP listener's address: UDP and TCP ports are
/// separate, so both use 9431): one JSON object per datagram, the same fields and checks as
/// `POST /progress`. There is no answer: a refused datagram is counted in [`ProgressStore::rejected`]
/// and the first one is logged; datagrams the kernel dropped because the receive buffer was full are
/// counted in [`ProgressStore::dropped`]. One thread reads them in batches (`recvmmsg`).
pub fn serve_udp(store: ProgressStore, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let local = sock.local_addr()?;
    let fd = std::os::fd::OwnedFd::from(sock);
    set_int_opt(&fd, libc::SO_RCVBUFFORCE, DATAGRAM_RCVBUF)
        .or_else(|_| set_int_opt(&fd, libc::SO_RCVBUF, DATAGRAM_RCVBUF))?;
    // Ask the kernel to attach its count of dropped datagrams to each one received.
    set_int_opt(&fd, libc::SO_RXQ_OVFL, 1)?;
    let rcvbuf = get_int_opt(&fd, libc::SO_RCVBUF)?;
    let queue = f64::from(rcvbuf.max(0)) / DATAGRAM_TRUESIZE;
    let coalesce =
        Duration::from_secs_f64(queue / 4.0 / DATAGRAM_DESIGN_RATE).clamp(DATAGRAM_COALESCE_MIN, DATAGRAM_COALESCE_MAX);
    let name = format!("udp://{local}");
    tracing::debug!(listen = %name, rcvbuf, ?coalesce, "progress datagram socket");
    std::thread::Builder::new()
        .name("progress-udp".into())
        .spawn(move || datagram_loop(&fd, &store, &name, coalesce))?;
    Ok(local)
}

fn set_int_opt(fd: &std::os::fd::OwnedFd, opt: libc::c_int, v: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn get_int_opt(fd: &std::os::fd::OwnedFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
    if rc == 0 { Ok(v) } else { Err(std::io::Error::last_os_error()) }
}

/// The kernel's running count of datagrams dropped on this socket (`SO_RXQ_OVFL`), if attached.
fn overflow_count(hdr: &libc::msghdr) -> Option<u32> {
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros, bounded by
    // `msg_controllen`; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

fn datagram_loop(fd: &std::os::fd::OwnedFd, store: &ProgressStore, name: &str, coalesce: Duration) {
    use std::os::fd::AsRawFd;
    // One byte over the limit, so an oversized datagram shows as truncated.
    const SLOT: usize = MAX_BODY_BYTES + 1;
    // SAFETY: CMSG_SPACE only computes a size.
    let cmsg_space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u32>() as u32) } as usize;
    let mut data = vec![0u8; DATAGRAM_BATCH * SLOT];
    // u64 elements: control messages must be aligned like `cmsghdr`.
    let mut ctrl = vec![0u64; (DATAGRAM_BATCH * cmsg_space).div_ceil(8)];
    // SAFETY: iovec and mmsghdr are plain C structs; all-zero is a valid (empty) value for both.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; DATAGRAM_BATCH];
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; DATAGRAM_BATCH];
    let mut drops_seen: Option<u32> = None;
    let mut logged_refusal = false;
    tracing::info!(listen = name, "progress datagrams accepted");
    loop {
        let base = data.as_mut_ptr();
        let ctrl_base = ctrl.as_mut_ptr().cast::<u8>();
        for (i, (m, v)) in msgs.iter_mut().zip(iov.iter_mut()).enumerate() {
            // SAFETY: every offset stays inside `data` / `ctrl`, sized for DATAGRAM_BATCH slots.
            *v = libc::iovec { iov_base: unsafe { base.add(i * SLOT) }.cast(), iov_len: SLOT };
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            // SAFETY: as above.
            m.msg_hdr.msg_control = unsafe { ctrl_base.add(i * cmsg_space) }.cast();
            m.msg_hdr.msg_controllen = cmsg_space as _;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds DATAGRAM_BATCH headers whose buffers point into `data` and `ctrl`,
        // which outlive the call and are not otherwise borrowed meanwhile. Blocks for the first
        // datagram, then takes what is queued without waiting (MSG_WAITFORONE).
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                DATAGRAM_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(listen = name, error = %e, "progress datagram socket failed; datagrams no longer read");
            return;
        }
        let full = n as usize == DATAGRAM_BATCH;
        let now = now_ms();
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            if let Some(total) = overflow_count(&m.msg_hdr) {
                let new = total.wrapping_sub(drops_seen.unwrap_or(0));
                if new > 0 {
                    store.dropped.fetch_add(u64::from(new), Ordering::Relaxed);
                    tracing::warn!(listen = name, dropped = new, "progress datagrams dropped: receive buffer full");
                }
                drops_seen = Some(total);
            }
            let len = (m.msg_len as usize).min(SLOT);
            let res = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > MAX_BODY_BYTES {
                store.rejected.fetch_add(1, Ordering::Relaxed);
                Err(PostError::TooLarge(len))
            } else {
                // SAFETY: the kernel wrote `len` bytes at the start of slot i.
                let body = unsafe { std::slice::from_raw_parts(base.add(i * SLOT), len) };
                store.post_json_at(body, now)
            };
            if let Err(e) = res {
                if !logged_refusal {
                    logged_refusal = true;
                    tracing::warn!(
                        listen = name,
                        error = %e,
                        "progress datagram refused; there is no reply channel, so further refusals are only \
                         counted (faultline_agent_progress_rejected_total) and logged at debug level"
                    );
                } else {
                    tracing::debug!(listen = name, error = %e, "progress datagram refused");
                }
            }
        }
        if !full {
            std::thread::sleep(coalesce);
        }
    }
}
