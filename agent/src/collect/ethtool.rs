//! A netdev's driver statistics (what `ethtool -S` prints) through the `SIOCETHTOOL` ioctl:
//! `ETHTOOL_GSSET_INFO` for how many there are, `ETHTOOL_GSTRINGS` for their names and
//! `ETHTOOL_GSTATS` for their 64-bit values. mlx5 exposes its physical-layer counters only here
//! (`rx_symbol_err_phy`, `rx_pcs_symbol_err_phy`, `rx_corrected_bits_phy`, `link_down_events_phy`),
//! 64 bits wide where the IB PortCounters of a RoCE port are 16 bits and saturate.
//!
//! A netdev without statistics (`lo`, most virtual devices) answers `EOPNOTSUPP`: that is an empty
//! list, not an error.

use std::io;

/// `SIOCETHTOOL` (linux/sockios.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GSTRINGS` (linux/ethtool.h).
const ETHTOOL_GSTRINGS: u32 = 0x1b;
/// `ETHTOOL_GSTATS`.
const ETHTOOL_GSTATS: u32 = 0x1d;
/// `ETHTOOL_GSSET_INFO`.
const ETHTOOL_GSSET_INFO: u32 = 0x37;
/// `ETH_SS_STATS`: the string set of `ethtool -S`.
const ETH_SS_STATS: u32 = 1;
/// `ETH_GSTRING_LEN`: each name is a NUL-padded 32-byte field.
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any driver has (mlx5 with many channels shows a few thousand); bounds the
/// buffers when a driver answers nonsense.
const MAX_STATS: u32 = 65_536;

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

struct Sock(libc::c_int);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this guard owns.
        unsafe { libc::close(self.0) };
    }
}

fn ioctl(sock: &Sock, ifname: &str, data: *mut libc::c_void) -> io::Result<()> {
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    let b = ifname.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an interface name"));
    }
    req.name[..b.len()].copy_from_slice(b);
    // SAFETY: `req` is a valid ifreq whose data pointer points at a buffer sized for the command,
    // which the caller built; the kernel writes only within it.
    let rc = unsafe { libc::ioctl(sock.0, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// True for the errors a netdev without ethtool statistics answers.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENODEV))
}

/// Every `ethtool -S` statistic of `ifname` as (name, value), in the driver's order. Empty when the
/// netdev has none or does not exist.
pub fn stats(ifname: &str) -> io::Result<Vec<(String, u64)>> {
    // SAFETY: a plain socket call; the descriptor is owned by the guard below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = Sock(fd);

    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
    let mut info = [0u64; 3];
    write_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
    write_u32(&mut info, 1, 0);
    info[1] = 1u64 << ETH_SS_STATS;
    match ioctl(&sock, ifname, info.as_mut_ptr().cast()) {
        Ok(()) => {}
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    if info[1] & (1u64 << ETH_SS_STATS) == 0 {
        return Ok(Vec::new());
    }
    let n = read_u32(&info, 4);
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_STATS {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{n} ethtool statistics")));
    }
    let n_us = n as usize;

    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
    let mut strings = vec![0u64; (12 + n_us * ETH_GSTRING_LEN).div_ceil(8)];
    write_u32(&mut strings, 0, ETHTOOL_GSTRINGS);
    write_u32(&mut strings, 1, ETH_SS_STATS);
    write_u32(&mut strings, 2, n);
    ioctl(&sock, ifname, strings.as_mut_ptr().cast())?;
    let got_strings = read_u32(&strings, 2).min(n) as usize;

    // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
    let mut values = vec![0u64; 1 + n_us];
    write_u32(&mut values, 0, ETHTOOL_GSTATS);
    write_u32(&mut values, 1, n);
    ioctl(&sock, ifname, values.as_mut_ptr().cast())?;
    let got_values = read_u32(&values, 1).min(n) as usize;

    let names = as_bytes(&strings);
    Ok(parse(&names[12..12 + got_strings * ETH_GSTRING_LEN], &values[1..1 + got_values]))
}

/// Pair the NUL-padded 32-byte names of `ETHTOOL_GSTRINGS` with the values of `ETHTOOL_GSTATS`.
/// Names that are empty or not text are skipped.
pub fn parse(names: &[u8], values: &[u64]) -> Vec<(String, u64)> {
    names
        .chunks(ETH_GSTRING_LEN)
        .zip(values)
        .filter_map(|(raw, &v)| {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let name = std::str::from_utf8(&raw[..end]).ok()?.trim();
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic())).then(|| (name.to_string(), v))
        })
        .collect()
}

fn as_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// The `i`-th 32-bit field of a buffer kept as u64 words (for alignment), in native byte order.
fn read_u32(buf: &[u64], i: usize) -> u32 {
    let bytes = as_bytes(&buf[i / 2..i / 2 + 1]);
    let off = (i % 2) * 4;
    u32::from_ne_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

fn write_u32(buf: &mut [u64], i: usize, v: u32) {
    let mut bytes = buf[i / 2].to_ne_bytes();
    let off = (i % 2) * 4;
    bytes[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    buf[i / 2] = u64::from_ne_bytes(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_field(s: &str) -> Vec<u8> {
        let mut f = s.as_bytes().to_vec();
        f.resize(ETH_GSTRING_LEN, 0);
        f
    }

    #[test]
    fn names_and_values_pair_up_as_mlx5_gives_them() {
        let mut names = Vec::new();
        for n in ["rx_packets", "rx_symbol_err_phy", "", "rx_corrected_bits_phy", "link_down_events_phy"] {
            names.extend(name_field(n));
        }
        let values = [10u64, 7, 99, u64::MAX - 1, 3];
        let got = parse(&names, &values);
        assert_eq!(
            got,
            vec![
                ("rx_packets".to_string(), 10),
                ("rx_symbol_err_phy".to_string(), 7),
                ("rx_corrected_bits_phy".to_string(), u64::MAX - 1),
                ("link_down_events_phy".to_string(), 3),
            ]
        );
        // Fewer values than names: only the pairs.
        assert_eq!(parse(&names, &values[..1]).len(), 1);
    }

    #[test]
    fn u32_fields_round_trip() {
        let mut buf = [0u64; 2];
        write_u32(&mut buf, 0, 0x37);
        write_u32(&mut buf, 1, 5);
        write_u32(&mut buf, 2, 7);
        assert_eq!((read_u32(&buf, 0), read_u32(&buf, 1), read_u32(&buf, 2)), (0x37, 5, 7));
    }

    /// The real ioctl on this machine's netdevs: `lo` has no statistics and must answer an empty
    /// list; every other netdev answers a list (possibly empty) without an error; a missing one too.
    #[test]
    fn the_ioctl_works_on_this_hosts_netdevs() {
        assert_eq!(stats("lo").expect("lo answers without an error"), Vec::new());
        assert_eq!(stats("faultline-none0").expect("a missing netdev is empty"), Vec::new());
        let mut seen = 0;
        for ent in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
            let name = ent.file_name().to_string_lossy().to_string();
            let got = stats(&name).unwrap_or_else(|e| panic!("ethtool stats of {name}: {e}"));
            seen += got.len();
            eprintln!("{name}: {} ethtool statistics, first {:?}", got.len(), got.first());
        }
        eprintln!("{seen} statistics in all");
    }
}
