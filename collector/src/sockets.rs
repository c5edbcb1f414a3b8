//! Connection counts: `system.network.connection.count` by `network.transport` (tcp, udp) and
//! `network.connection.state`, from NETLINK_SOCK_DIAG dumps (any user may ask; the answers are
//! fixed-size binary records, no text to format or parse), IPv4 and IPv6 summed. A dump walks
//! the kernel's whole hash table whatever it holds (≈ 0.6 ms each on a 24 GiB machine), so
//! /proc/net/sockstat{,6}'s per-namespace counters decide which of the four dumps to make (none
//! for a family and protocol without sockets), and TIME_WAIT, often most of a busy server's
//! sockets, is counted there (`tw`) instead of dumped one record each. And the
//! conntrack table's size and limit where nf_conntrack is loaded
//! (`system.network.conntrack.count` / `.max`, the hostmetrics receiver's names).
//!
//! [`count_proc_net`] reads the same counts from /proc/net/{tcp,tcp6,udp,udp6}: the benchmark
//! compares both (`cargo bench -p vigil-collector --bench cycle`, BENCHMARKS.md), and the tests
//! check they agree.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use vigil_ipc_proto::pagebuf::PageBuf;
use vigil_ipc_proto::{KeyValue, Metric};

use crate::util::{Stamp, i, parse_u64, read_into, updown_i64};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The older TCP request (`struct inet_diag_req`), which the kernel answers for IPv4 and IPv6
/// together (it asks with family AF_UNSPEC): one walk of the hash for both families where
/// SOCK_DIAG_BY_FAMILY needs one per family.
const TCPDIAG_GETSOCK: u16 = 18;
/// `struct inet_diag_req`: family, src_len, dst_len, ext, id (48 bytes), states, dbs.
const COMPAT_REQ_LEN: usize = 60;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` (family, state, timer, retrans, sockid, expires, rqueue, wqueue,
/// uid, inode).
const MSG_LEN: usize = 72;
/// Sockets counted per dump at most (a bound on a hostile or runaway answer).
pub const MAX_SOCKETS: u64 = 1 << 24;

/// Kernel TCP states (include/net/tcp_states.h) → the conventions' `network.connection.state`.
/// Index = state number. UDP sockets use the same numbers: a connected one is `established`,
/// an unconnected one `closed` (`ss` shows UNCONN). NEW_SYN_RECV (12, request sockets) is
/// reported as `syn_received`.
pub const STATES: [&str; 13] = [
    "closed",
    "established",
    "syn_sent",
    "syn_received",
    "fin_wait_1",
    "fin_wait_2",
    "time_wait",
    "closed",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "syn_received",
];

/// Counts per kernel state number (0..=12), per transport.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub tcp: [u64; 13],
    pub udp: [u64; 13],
}

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("socket: {0}")]
    Io(#[from] nix::errno::Errno),
    #[error("kernel answered error {0}")]
    Kernel(i32),
    #[error("truncated or malformed answer")]
    Malformed,
    #[error("no answer within 1 s")]
    Timeout,
}

/// LISTEN only: the kernel walks just the (small) listening hash.
const LISTEN: u32 = 1 << 10;
/// Every state but TIME_WAIT (counted from /proc/net/sockstat) and LISTEN (dumped first).
const CONNECTED: u32 = !(1 << 6) & !LISTEN;

/// The counters of /proc/net/sockstat and sockstat6 that decide the dumps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SockStat {
    pub tcp: u64,
    pub tcp6: u64,
    pub udp: u64,
    pub udp6: u64,
    /// TIME_WAIT sockets of both families.
    pub tw: u64,
}

/// `TCP: inuse 3 orphan 0 tw 2 alloc 5 mem 1` / `UDP: inuse 0 mem 0` lines (sockstat, then
/// sockstat6 appended).
pub fn parse_sockstat(buf: &[u8]) -> Option<SockStat> {
    let mut s = SockStat::default();
    let mut seen = 0;
    for line in buf.split(|&c| c == b'\n') {
        let mut f = line.split(|&c| c == b' ').filter(|x| !x.is_empty());
        let proto = f.next();
        let fields: Vec<&[u8]> = f.collect();
        let get = |k: &[u8]| {
            fields
                .windows(2)
                .find(|w| w[0] == k)
                .and_then(|w| parse_u64(w[1]))
        };
        match proto {
            Some(b"TCP:") => {
                s.tcp = get(b"inuse")?;
                s.tw = get(b"tw")?;
            }
            Some(b"TCP6:") => s.tcp6 = get(b"inuse")?,
            Some(b"UDP:") => s.udp = get(b"inuse")?,
            Some(b"UDP6:") => s.udp6 = get(b"inuse")?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(s)
}

/// What to dump.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// SOCK_DIAG_BY_FAMILY: one family, one protocol.
    Family { family: u8, protocol: u8 },
    /// TCPDIAG_GETSOCK: TCP, both families.
    TcpBoth,
}

fn request(seq: u32, ask: Ask, states: u32) -> Vec<u8> {
    let (ty, len) = match ask {
        Ask::Family { .. } => (SOCK_DIAG_BY_FAMILY, HDR + REQ_LEN),
        Ask::TcpBoth => (TCPDIAG_GETSOCK, HDR + COMPAT_REQ_LEN),
    };
    let mut b = vec![0u8; len];
    b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&ty.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // idiag_ext 0: no extensions, the fixed record only.
    match ask {
        Ask::Family { family, protocol } => {
            b[HDR] = family;
            b[HDR + 1] = protocol;
            b[HDR + 4..HDR + 8].copy_from_slice(&states.to_ne_bytes());
        }
        // Family 0 (both), no address filter; the states after the 48-byte socket id.
        Ask::TcpBoth => b[HDR + 52..HDR + 56].copy_from_slice(&states.to_ne_bytes()),
    }
    b
}

/// Count the inet_diag_msg records of one datagram into `per_state`; true at NLMSG_DONE.
pub fn parse_datagram(b: &[u8], per_state: &mut [u64; 13]) -> Result<bool, SockDiagError> {
    let mut o = 0;
    while o + HDR <= b.len() {
        let len = u32::from_ne_bytes(
            b[o..o + 4]
                .try_into()
                .map_err(|_| SockDiagError::Malformed)?,
        ) as usize;
        let ty = u16::from_ne_bytes([b[o + 4], b[o + 5]]);
        if len < HDR || o + len > b.len() {
            return Err(SockDiagError::Malformed);
        }
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = b
                    .get(o + HDR..o + HDR + 4)
                    .and_then(|x| x.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or(SockDiagError::Malformed)?;
                if code != 0 {
                    return Err(SockDiagError::Kernel(code));
                }
            }
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                if len < HDR + MSG_LEN {
                    return Err(SockDiagError::Malformed);
                }
                let state = usize::from(b[o + HDR + 1]);
                if let Some(c) = per_state.get_mut(state) {
                    *c += 1;
                }
            }
            _ => {}
        }
        o += (len + 3) & !3;
    }
    Ok(false)
}

/// The TCP hash is walked again after this long even when no TCP socket changed state: the
/// request sockets of half-open connections (`syn_received`) come and go without the
/// tracepoint that counts the changes.
pub const MAX_WALK_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the last walk of the TCP hash counted, and under which conditions.
#[derive(Debug, Clone, Copy)]
struct LastWalk {
    /// TCP state changes counted in the kernel, read before the walk.
    changes: u64,
    /// sockstat's TCP and TCP6 `inuse`.
    inuse: (u64, u64),
    tcp: [u64; 13],
    at: std::time::Instant,
}

/// A NETLINK_SOCK_DIAG socket kept between cycles.
pub struct SockDiag {
    sock: OwnedFd,
    buf: PageBuf,
    seq: u32,
    /// TCP of both families in one dump (TCPDIAG_GETSOCK) until the kernel refuses it
    /// (tests and benchmarks set it to compare).
    pub tcp_both: bool,
    /// Dumps made (each one walk of a hash table).
    pub dumps: u64,
    last: Option<LastWalk>,
    /// Cycles whose TCP counts were the last walk's (no state change since).
    pub reused: u64,
    /// [`MAX_WALK_AGE`] (tests shorten it).
    pub max_walk_age: std::time::Duration,
}

impl SockDiag {
    pub fn open() -> Result<Self, SockDiagError> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(SockDiagError::Io(nix::errno::Errno::last()));
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(SockDiag {
            sock,
            buf: PageBuf::new(64 * 1024),
            seq: 0,
            tcp_both: true,
            dumps: 0,
            last: None,
            reused: 0,
            max_walk_age: MAX_WALK_AGE,
        })
    }

    fn dump(
        &mut self,
        ask: Ask,
        states: u32,
        per_state: &mut [u64; 13],
    ) -> Result<(), SockDiagError> {
        use nix::sys::socket::{MsgFlags, recv, send};
        self.seq = self.seq.wrapping_add(1);
        self.dumps += 1;
        send(
            self.sock.as_raw_fd(),
            &request(self.seq, ask, states),
            MsgFlags::empty(),
        )?;
        loop {
            let mut pfd = [nix::poll::PollFd::new(
                self.sock.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16))? == 0 {
                return Err(SockDiagError::Timeout);
            }
            let n = recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT)?;
            if parse_datagram(&self.buf[..n], per_state)? {
                return Ok(());
            }
            if per_state.iter().sum::<u64>() > MAX_SOCKETS {
                return Err(SockDiagError::Malformed);
            }
        }
    }

    /// TCP and UDP sockets of this network namespace by state, IPv4 and IPv6: `sockstat` is
    /// /proc/net/sockstat followed by sockstat6 of the same namespace. For TCP, the listening
    /// sockets first (a walk of the small listening hash); the established hash, whose walk
    /// costs the same empty or full (≈ 2.3 ms for the 262,144 buckets of a 24 GiB machine),
    /// only when sockstat's `inuse` (hashed sockets, TIME_WAIT apart) says there are more
    /// than listeners, and once for both families (per family where the kernel refuses
    /// that request). `changes`: the kernel's count of TCP state changes
    /// ([`crate::ebpf::tcpchanges`]) read before this call, when there is one: while it, and
    /// sockstat's sockets in use, are what they were before the last walk, and that walk is
    /// younger than [`MAX_WALK_AGE`], its TCP counts stand and nothing is walked.
    pub fn counts(
        &mut self,
        sockstat: &SockStat,
        changes: Option<u64>,
    ) -> Result<Counts, SockDiagError> {
        let mut c = Counts::default();
        let inuse = (sockstat.tcp, sockstat.tcp6);
        match self.last {
            Some(l)
                if changes == Some(l.changes)
                    && l.inuse == inuse
                    && l.at.elapsed() < self.max_walk_age =>
            {
                c.tcp = l.tcp;
                self.reused += 1;
            }
            _ => {
                self.last = None;
                self.walk_tcp(sockstat, &mut c.tcp)?;
                self.last = changes.map(|changes| LastWalk {
                    changes,
                    inuse,
                    tcp: c.tcp,
                    at: std::time::Instant::now(),
                });
            }
        }
        let udp = libc::IPPROTO_UDP as u8;
        for (family, inuse) in [
            (libc::AF_INET, sockstat.udp),
            (libc::AF_INET6, sockstat.udp6),
        ] {
            if inuse > 0 {
                let family = family as u8;
                self.dump(
                    Ask::Family {
                        family,
                        protocol: udp,
                    },
                    u32::MAX,
                    &mut c.udp,
                )?;
            }
        }
        c.tcp[6] = sockstat.tw;
        Ok(c)
    }

    /// TCP sockets by state (TIME_WAIT apart): one request for both families, or one per
    /// family.
    fn walk_tcp(
        &mut self,
        sockstat: &SockStat,
        tcp_counts: &mut [u64; 13],
    ) -> Result<(), SockDiagError> {
        let (v4, v6) = (libc::AF_INET as u8, libc::AF_INET6 as u8);
        let tcp = libc::IPPROTO_TCP as u8;
        let per_family = [
            (
                Ask::Family {
                    family: v4,
                    protocol: tcp,
                },
                sockstat.tcp,
            ),
            (
                Ask::Family {
                    family: v6,
                    protocol: tcp,
                },
                sockstat.tcp6,
            ),
        ];
        let both = [(Ask::TcpBoth, sockstat.tcp + sockstat.tcp6)];
        if self.tcp_both {
            match self.tcp(&both, tcp_counts) {
                Err(SockDiagError::Kernel(_)) => {
                    self.tcp_both = false;
                    *tcp_counts = [0; 13];
                }
                other => other?,
            }
        }
        if !self.tcp_both {
            self.tcp(&per_family, tcp_counts)?;
        }
        Ok(())
    }

    /// Per request and its sockets in use: the listeners, then the rest when there are more.
    fn tcp(&mut self, asks: &[(Ask, u64)], per_state: &mut [u64; 13]) -> Result<(), SockDiagError> {
        for &(ask, inuse) in asks {
            if inuse == 0 {
                continue;
            }
            let before = per_state[10];
            self.dump(ask, LISTEN, per_state)?;
            if inuse > per_state[10] - before {
                self.dump(ask, CONNECTED, per_state)?;
            }
        }
        Ok(())
    }
}

/// The same counts from /proc/net/{tcp,tcp6,udp,udp6} under `proc_root` (the `st` column,
/// hex). For the benchmark and the tests.
pub fn count_proc_net(proc_root: &Path, buf: &mut Vec<u8>) -> std::io::Result<Counts> {
    let mut c = Counts::default();
    for (file, slot) in [("tcp", 0), ("tcp6", 0), ("udp", 1), ("udp6", 1)] {
        read_into(&proc_root.join("net").join(file), buf)?;
        let per = if slot == 0 { &mut c.tcp } else { &mut c.udp };
        for line in buf.split(|&b| b == b'\n').skip(1) {
            let st = line.split(|&b| b == b' ').filter(|f| !f.is_empty()).nth(3);
            if let Some(s) =
                st.and_then(|s| u8::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok())
                && let Some(n) = per.get_mut(usize::from(s))
            {
                *n += 1;
            }
        }
    }
    Ok(c)
}

/// /proc/net/sockstat and sockstat6 under `proc_root`.
pub fn read_sockstat(proc_root: &Path, buf: &mut Vec<u8>) -> Option<SockStat> {
    read_into(&proc_root.join("net/sockstat"), buf).ok()?;
    let mut six = Vec::new();
    read_into(&proc_root.join("net/sockstat6"), &mut six).ok()?;
    buf.extend_from_slice(&six);
    parse_sockstat(buf)
}

/// `system.network.connection.count` points, one per (transport, state) seen (states of the
/// same name summed).
pub fn metrics(st: Stamp, c: &Counts, out: &mut Vec<Metric>) {
    for (transport, per) in [("tcp", &c.tcp), ("udp", &c.udp)] {
        let mut by_name: Vec<(&str, u64)> = Vec::new();
        for (n, name) in per.iter().zip(STATES) {
            match by_name.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) => *v += n,
                None => by_name.push((name, *n)),
            }
        }
        for (state, n) in by_name.into_iter().filter(|(_, n)| *n > 0) {
            let a = vec![
                KeyValue::str("network.transport", transport),
                KeyValue::str("network.connection.state", state),
            ];
            out.push(updown_i64(
                "system.network.connection.count",
                "{connection}",
                st,
                i(n),
                a,
            ));
        }
    }
}

/// `system.network.conntrack.count` and `.max` from /proc/sys/net/netfilter, when present.
pub fn conntrack(proc_root: &Path, st: Stamp, buf: &mut Vec<u8>, out: &mut Vec<Metric>) {
    let dir = proc_root.join("sys/net/netfilter");
    for (file, name) in [
        ("nf_conntrack_count", "system.network.conntrack.count"),
        ("nf_conntrack_max", "system.network.conntrack.max"),
    ] {
        if read_into(&dir.join(file), buf).is_ok()
            && let Some(v) = parse_u64(buf.trim_ascii())
        {
            out.push(updown_i64(name, "{entries}", st, i(v), Vec::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_files() {
        let s = parse_sockstat(
            b"sockets: used 120\nTCP: inuse 3 orphan 0 tw 9000 alloc 5 mem 1\nUDP: inuse 2 mem 0\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\nTCP6: inuse 1\nUDP6: inuse 0\n",
        )
        .unwrap();
        assert_eq!(
            s,
            SockStat {
                tcp: 3,
                tcp6: 1,
                udp: 2,
                udp6: 0,
                tw: 9000
            }
        );
        assert_eq!(
            parse_sockstat(b"TCP: inuse x tw 1\nUDP: inuse 0\nTCP6: inuse 0\nUDP6: inuse 0\n"),
            None
        );
        assert_eq!(parse_sockstat(b"TCP: inuse 1 tw 1\n"), None);
    }

    #[test]
    fn hostile_datagrams() {
        let mut c = [0u64; 13];
        assert!(parse_datagram(&[0xff; 40], &mut c).is_err());
        let mut b = vec![0u8; HDR + 8];
        b[0..4].copy_from_slice(&((HDR + 8) as u32).to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(
            parse_datagram(&b, &mut c).is_err(),
            "record shorter than inet_diag_msg"
        );
        let mut ok = vec![0u8; HDR + MSG_LEN];
        ok[0..4].copy_from_slice(&((HDR + MSG_LEN) as u32).to_ne_bytes());
        ok[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ok[HDR + 1] = 200; // unknown state: not counted, no panic
        assert!(!parse_datagram(&ok, &mut c).unwrap());
        ok[HDR + 1] = 10;
        parse_datagram(&ok, &mut c).unwrap();
        assert_eq!(c[10], 1);
    }

    /// In a network namespace of its own (a thread's): IPv4 and IPv6 listeners and
    /// connections counted exactly, by the one-walk request and per family alike, the first
    /// with half the dumps; walked again only when the count of state changes or the sockets
    /// in use moved, or the last walk is too old.
    #[test]
    fn both_families_in_one_walk() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            let mut keep = Vec::new();
            for addr in ["127.0.0.1:0", "[::1]:0"] {
                let l = std::net::TcpListener::bind(addr).unwrap();
                keep.push(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
                keep.push(l.accept().unwrap().0);
                std::mem::forget(l);
            }
            let _idle = std::net::TcpListener::bind("[::1]:0").unwrap();
            let mut buf = Vec::new();
            let proc_root = Path::new("/proc/thread-self");
            let ss = read_sockstat(proc_root, &mut buf).unwrap();
            assert_eq!((ss.tcp, ss.tcp6), (3, 4), "{ss:?}");
            let mut want = [0u64; 13];
            want[1] = 4;
            want[10] = 3;
            let mut d = SockDiag::open().unwrap();
            let one = d.counts(&ss, None).unwrap();
            assert_eq!((one.tcp, d.dumps), (want, 2), "one walk");
            d.tcp_both = false;
            let per = d.counts(&ss, None).unwrap();
            assert_eq!((per.tcp, d.dumps - 2), (want, 4), "per family");
            assert_eq!(
                count_proc_net(proc_root, &mut buf).unwrap().tcp,
                want,
                "/proc/net"
            );

            // The kernel's count of state changes decides whether to walk again.
            d.tcp_both = true;
            let walks = |d: &mut SockDiag, ss: &SockStat, changes: Option<u64>| {
                let (dumps, reused) = (d.dumps, d.reused);
                let c = d.counts(ss, changes).unwrap();
                assert_eq!(c.tcp, want);
                assert_eq!(d.reused - reused, u64::from(d.dumps == dumps));
                d.dumps - dumps
            };
            assert_eq!(walks(&mut d, &ss, Some(5)), 2, "first");
            assert_eq!(walks(&mut d, &ss, Some(5)), 0, "no change since");
            assert_eq!(walks(&mut d, &ss, Some(5)), 0, "still none");
            assert_eq!(walks(&mut d, &ss, Some(6)), 2, "a change");
            let other = SockStat { tcp: 4, ..ss };
            assert_eq!(walks(&mut d, &other, Some(6)), 2, "a socket more in use");
            assert_eq!(walks(&mut d, &other, None), 2, "no count: every time");
            assert_eq!(walks(&mut d, &other, None), 2, "no count: every time");
            assert_eq!(walks(&mut d, &other, Some(6)), 2);
            d.max_walk_age = std::time::Duration::ZERO;
            assert_eq!(walks(&mut d, &other, Some(6)), 2, "too old");
        })
        .join()
        .unwrap();
    }

    /// Sockets opened here show up in both sources with the same states.
    #[test]
    fn sock_diag_counts_what_proc_net_shows() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut d = SockDiag::open().unwrap();
        let mut buf = Vec::new();
        let ss = read_sockstat(Path::new("/proc"), &mut buf).unwrap();
        assert!(ss.tcp >= 3 && ss.udp >= 1, "{ss:?}");
        let a = d.counts(&ss, None).unwrap();
        assert!(a.tcp[10] >= 1 && a.tcp[1] >= 2 && a.udp[7] >= 1, "{a:?}");
        let b = count_proc_net(Path::new("/proc"), &mut buf).unwrap();
        // Other tests open and close sockets meanwhile: compare the ones this test holds.
        assert!(b.tcp[10] >= 1 && b.tcp[1] >= 2 && b.udp[7] >= 1, "{b:?}");
        let mut m = Vec::new();
        metrics(Stamp { start: 0, now: 1 }, &a, &mut m);
        assert!(
            m.iter()
                .any(|x| x.attributes[1].value == vigil_ipc_proto::AttrValue::Str("listen".into()))
        );
    }
}
