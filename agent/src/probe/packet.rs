//! The probe datagram: a fixed header (magic, version, kind, sequence number, sender timestamp)
//! padded to the configured size. A reply is the request with its kind flipped, so the prober reads
//! its own sequence number and send time back and needs no clock agreement with the peer.

/// First bytes of every probe datagram: anything else on the port is ignored.
pub const MAGIC: &[u8; 4] = b"FLPM";
/// This format's version.
pub const VERSION: u8 = 1;
/// Header length: magic (4), version (1), kind (1), reserved (2), seq (8), sent (8).
pub const HEADER: usize = 24;
/// Largest datagram sent or answered: one Ethernet frame's payload, so no probe is fragmented.
pub const MAX_LEN: usize = 1472;

/// Request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 1,
    Reply = 2,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub seq: u64,
    /// The prober's monotonic send time, µs since its start (echoed back untouched).
    pub sent_us: u64,
}

/// A request of `len` bytes (at least the header, at most `MAX_LEN`).
pub fn request(seq: u64, sent_us: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.clamp(HEADER, MAX_LEN)];
    b[..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5] = Kind::Request as u8;
    b[8..16].copy_from_slice(&seq.to_be_bytes());
    b[16..24].copy_from_slice(&sent_us.to_be_bytes());
    b
}

/// Reads a datagram's header; `None` for anything that is not a probe of this version.
pub fn parse(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER || b.len() > MAX_LEN || &b[..4] != MAGIC || b[4] != VERSION {
        return None;
    }
    let kind = match b[5] {
        1 => Kind::Request,
        2 => Kind::Reply,
        _ => return None,
    };
    let seq = u64::from_be_bytes(b[8..16].try_into().ok()?);
    let sent_us = u64::from_be_bytes(b[16..24].try_into().ok()?);
    Some(Header { kind, seq, sent_us })
}

/// Turns a request (in place) into its reply.
pub fn make_reply(b: &mut [u8]) {
    if b.len() > 5 {
        b[5] = Kind::Reply as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_its_reply_echoes_it() {
        let mut b = request(7, 123_456, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse(&b), Some(Header { kind: Kind::Request, seq: 7, sent_us: 123_456 }));
        make_reply(&mut b);
        assert_eq!(parse(&b), Some(Header { kind: Kind::Reply, seq: 7, sent_us: 123_456 }));
        assert_eq!(request(1, 1, 3).len(), HEADER);
    }

    #[test]
    fn foreign_datagrams_are_ignored() {
        assert_eq!(parse(b"hello"), None);
        let mut b = request(1, 1, 32);
        b[4] = 9;
        assert_eq!(parse(&b), None);
        let mut b = request(1, 1, 32);
        b[5] = 3;
        assert_eq!(parse(&b), None);
        assert_eq!(parse(&vec![0u8; MAX_LEN + 1]), None);
    }
}
