//! A minimal NETLINK_ROUTE client: RTM_GETLINK dump request encoder and a bounded decoder of
//! the answers (IFLA_IFNAME, IFLA_STATS64). Used on sockets the privhelper created inside other
//! network namespaces.

use std::os::fd::{AsFd, OwnedFd};

use crate::netdev::IfStats;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_STATS64: u16 = 23;
const IFINFOMSG_LEN: usize = 16;
/// Interfaces accepted per dump at most.
pub const MAX_LINKS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    #[error("truncated netlink message")]
    Truncated,
    #[error("netlink error {0}")]
    Kernel(i32),
    #[error("io: {0}")]
    Io(nix::errno::Errno),
    #[error("no answer in time")]
    Timeout,
    #[error("too many links")]
    TooMany,
}

/// The RTM_GETLINK dump request.
pub fn getlink_request(seq: u32) -> [u8; NLMSG_HDRLEN + IFINFOMSG_LEN] {
    let mut b = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    b[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // ifi_family = AF_UNSPEC (0).
    b
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One RTM_NEWLINK payload (after the netlink header).
pub fn parse_link(p: &[u8]) -> Result<IfStats, NetlinkError> {
    if p.len() < IFINFOMSG_LEN {
        return Err(NetlinkError::Truncated);
    }
    let mut s = IfStats::default();
    let mut o = IFINFOMSG_LEN;
    while o + 4 <= p.len() {
        let len = usize::from(u16_at(p, o).ok_or(NetlinkError::Truncated)?);
        let ty = u16_at(p, o + 2).ok_or(NetlinkError::Truncated)? & 0x3fff;
        if len < 4 || o + len > p.len() {
            return Err(NetlinkError::Truncated);
        }
        let v = &p[o + 4..o + len];
        match ty {
            IFLA_IFNAME => {
                let end = v.iter().position(|&c| c == 0).unwrap_or(v.len()).min(64);
                s.name = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_STATS64 if v.len() >= 64 => {
                let g = |i: usize| u64_at(v, i * 8).unwrap_or(0);
                s.rx_packets = g(0);
                s.tx_packets = g(1);
                s.rx_bytes = g(2);
                s.tx_bytes = g(3);
                s.rx_errors = g(4);
                s.tx_errors = g(5);
                s.rx_dropped = g(6);
                s.tx_dropped = g(7);
            }
            _ => {}
        }
        o += align4(len);
    }
    Ok(s)
}

/// Parse one datagram of the dump; returns true when NLMSG_DONE was seen.
pub fn parse_datagram(b: &[u8], out: &mut Vec<IfStats>) -> Result<bool, NetlinkError> {
    let mut o = 0;
    while o + NLMSG_HDRLEN <= b.len() {
        let len = u32_at(b, o).ok_or(NetlinkError::Truncated)? as usize;
        let ty = u16_at(b, o + 4).ok_or(NetlinkError::Truncated)?;
        if len < NLMSG_HDRLEN || o + len > b.len() {
            return Err(NetlinkError::Truncated);
        }
        let payload = &b[o + NLMSG_HDRLEN..o + len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(payload, 0).ok_or(NetlinkError::Truncated)? as i32;
                if code != 0 {
                    return Err(NetlinkError::Kernel(code));
                }
            }
            RTM_NEWLINK => {
                if out.len() >= MAX_LINKS {
                    return Err(NetlinkError::TooMany);
                }
                out.push(parse_link(payload)?);
            }
            _ => {}
        }
        o += align4(len);
    }
    Ok(false)
}

/// Dump every link's counters through `sock` (waits at most 1 s per datagram).
pub fn dump_links(
    sock: &OwnedFd,
    seq: u32,
    buf: &mut Vec<u8>,
) -> Result<Vec<IfStats>, NetlinkError> {
    use nix::sys::socket::{MsgFlags, recv, send};
    use std::os::fd::AsRawFd;
    send(sock.as_raw_fd(), &getlink_request(seq), MsgFlags::empty()).map_err(NetlinkError::Io)?;
    buf.resize(64 * 1024, 0);
    let mut out = Vec::new();
    for _ in 0..1024 {
        let mut pfd = [nix::poll::PollFd::new(
            sock.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16)) {
            Ok(0) => return Err(NetlinkError::Timeout),
            Ok(_) => {}
            Err(e) => return Err(NetlinkError::Io(e)),
        }
        let n = recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(NetlinkError::Io)?;
        if parse_datagram(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
    Err(NetlinkError::TooMany)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_datagrams() {
        let mut v = Vec::new();
        assert!(parse_datagram(&[0xff; 40], &mut v).is_err());
        let mut b = vec![0u8; 32];
        b[0..4].copy_from_slice(&32u32.to_ne_bytes());
        b[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        assert_eq!(parse_datagram(&b, &mut v), Ok(false));
        // An attribute claiming more than there is.
        let mut c = b.clone();
        c.extend_from_slice(&[200, 0, 3, 0]);
        c[0..4].copy_from_slice(&36u32.to_ne_bytes());
        assert!(parse_datagram(&c, &mut v).is_err());
        assert_eq!(parse_link(&[1, 2]), Err(NetlinkError::Truncated));
    }

    #[test]
    fn dump_of_this_namespace() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
        let s = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .unwrap();
        let mut buf = Vec::new();
        let links = dump_links(&s, 1, &mut buf).unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo listed");
        // Compare with /proc/net/dev (counters only grow).
        let text = std::fs::read("/proc/net/dev").unwrap();
        let (ifs, _) = crate::netdev::parse_net_dev(&text);
        let plo = ifs.iter().find(|l| l.name == "lo").unwrap();
        assert!(plo.rx_packets >= lo.rx_packets);
        assert_eq!(links.len(), ifs.len());
    }
}
