//! A typed channel over a `SOCK_SEQPACKET` Unix socket: one frame per datagram, optional file
//! descriptors attached with `SCM_RIGHTS`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::cmsg_space;
use nix::sys::socket::{
    self, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixCredentials,
    sockopt,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ProtoError;
use crate::frame::{self, HEADER_LEN, MAX_FRAME};
use crate::messages::{HELLO_MAGIC, Hello, Role};
use crate::pagebuf::PageBuf;

/// Most descriptors one datagram may carry, in either direction.
pub const MAX_FDS: usize = 4;

/// The kernel's own limit of descriptors in one datagram (`SCM_MAX_FD`, include/net/scm.h).
const SCM_MAX_FD: usize = 253;

#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    /// Resident only as far as the largest datagram received wrote (most are a page or two of
    /// its 64 KiB).
    buf: PageBuf,
}

impl Channel {
    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel {
            fd,
            // One extra byte so a datagram exactly one byte too long is still seen as too long.
            buf: PageBuf::new(HEADER_LEN + MAX_FRAME + 1),
        }
    }

    /// Take ownership of a descriptor inherited at exec (see [`crate::fds`]).
    ///
    /// # Safety
    /// `fd` must be open, owned by nobody else in this process, and a `SOCK_SEQPACKET` socket.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller guarantees exclusive ownership of an open descriptor.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A connected pair, close-on-exec (the supervisor clears the flag on the child's end).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socket::socketpair(
            socket::AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL touch only its status flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Bound how long a blocking `recv` waits (`None`: forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        let tv = match t {
            Some(d) => nix::sys::time::TimeVal::new(
                d.as_secs() as libc::time_t,
                d.subsec_micros() as libc::suseconds_t,
            ),
            None => nix::sys::time::TimeVal::new(0, 0),
        };
        socket::setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)
    }

    /// Credentials of the process at the other end (as of connect / socketpair).
    pub fn peer_credentials(&self) -> io::Result<UnixCredentials> {
        socket::getsockopt(&self.fd, sockopt::PeerCredentials).map_err(io::Error::from)
    }

    pub fn send<T: Serialize>(&self, msg: &T) -> Result<(), ProtoError> {
        self.send_with_fds(msg, &[])
    }

    pub fn send_with_fds<T: Serialize>(
        &self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ProtoError> {
        let bytes = frame::encode(msg)?;
        self.send_raw_with_fds(&bytes, fds)
    }

    /// Send bytes as they are (used by the SIGSYS reporter and by hostile-peer tests).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), ProtoError> {
        self.send_raw_with_fds(bytes, &[])
    }

    fn send_raw_with_fds(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ProtoError> {
        if fds.len() > MAX_FDS {
            return Err(ProtoError::TooManyFds {
                got: fds.len(),
                max: MAX_FDS,
            });
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        let iov = [IoSlice::new(bytes)];
        loop {
            match socket::sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => {
                    return Err(ProtoError::Closed);
                }
                Err(e) => return Err(ProtoError::Io(e.into())),
            }
        }
    }

    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        let (msg, fds) = self.recv_with_fds(0)?;
        debug_assert!(fds.is_empty());
        Ok(msg)
    }

    /// Receive one message and at most `max_fds` descriptors. A datagram carrying more is
    /// refused (its descriptors are closed).
    pub fn recv_with_fds<T: DeserializeOwned>(
        &mut self,
        max_fds: usize,
    ) -> Result<(T, Vec<OwnedFd>), ProtoError> {
        let (len, fds) = self.recv_raw(max_fds)?;
        let msg = frame::decode(&self.buf[..len])?;
        Ok((msg, fds))
    }

    /// Receive one datagram carrying no descriptor and lend its bytes (a whole frame, header
    /// unchecked: see [`frame::payload`]).
    pub fn recv_bytes(&mut self) -> Result<&[u8], ProtoError> {
        let (len, _) = self.recv_raw(0)?;
        Ok(&self.buf[..len])
    }

    /// Receive one datagram into the internal buffer; returns its length and descriptors.
    pub fn recv_raw(&mut self, max_fds: usize) -> Result<(usize, Vec<OwnedFd>), ProtoError> {
        // Room for every descriptor the kernel lets one datagram carry (SCM_MAX_FD = 253), not
        // just MAX_FDS: with a smaller buffer the kernel still installs what fits, sets
        // MSG_CTRUNC, nix then refuses to list the cmsgs and those descriptors would leak.
        // Here every received descriptor is owned, and dropped when more than `max_fds`.
        let mut cmsg_buf = cmsg_space!([RawFd; SCM_MAX_FD]);
        // A peer that died with our last datagram unread makes the kernel report ECONNRESET
        // once, *before* the datagrams it sent are read: read on past it, so a dying peer's last
        // words (a Ready, a violation report) are not lost; then end-of-file follows.
        let mut reset_seen = false;
        let (len, flags, received) = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut received = Vec::new();
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(list) = c {
                                for fd in list {
                                    // SAFETY: the kernel just installed this descriptor in our
                                    // table for us; nothing else refers to it.
                                    received.push(unsafe { OwnedFd::from_raw_fd(fd) });
                                }
                            }
                        }
                    }
                    break (m.bytes, m.flags, received);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => reset_seen = true,
                Err(e) => return Err(ProtoError::Io(e.into())),
            }
        };
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ProtoError::TooManyFds {
                got: MAX_FDS + 1,
                max: max_fds,
            });
        }
        if received.len() > max_fds {
            return Err(ProtoError::TooManyFds {
                got: received.len(),
                max: max_fds,
            });
        }
        if flags.contains(MsgFlags::MSG_TRUNC) || len > HEADER_LEN + MAX_FRAME {
            return Err(ProtoError::KernelTruncated);
        }
        if len == 0 {
            // SOCK_SEQPACKET reports end-of-file and an empty datagram the same way; only a
            // hang-up on the socket tells them apart. An empty datagram is a malformed frame.
            return Err(if self.peer_hung_up() {
                ProtoError::Closed
            } else {
                ProtoError::Truncated {
                    got: 0,
                    want: HEADER_LEN,
                }
            });
        }
        Ok((len, received))
    }

    fn peer_hung_up(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor we own, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc < 0 || pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0
    }

    /// Exchange hellos: send ours, read theirs, check magic, version and (if given) role.
    pub fn handshake(&mut self, me: Role, expect: Option<Role>) -> Result<Role, ProtoError> {
        self.send(&Hello::new(me))?;
        self.expect_hello(expect)
    }

    /// Read the peer's hello only (the side that answers second calls this, then `send`s).
    pub fn expect_hello(&mut self, expect: Option<Role>) -> Result<Role, ProtoError> {
        let hello: Hello = match self.recv() {
            Ok(h) => h,
            Err(ProtoError::Decode(_)) => return Err(ProtoError::BadHello),
            Err(e) => return Err(e),
        };
        if hello.magic != HELLO_MAGIC {
            return Err(ProtoError::BadHello);
        }
        if hello.version != crate::PROTOCOL_VERSION {
            return Err(ProtoError::VersionMismatch {
                peer: hello.version,
                ours: crate::PROTOCOL_VERSION,
            });
        }
        if let Some(want) = expect
            && hello.role != want
        {
            return Err(ProtoError::UnexpectedPeer {
                got: hello.role,
                want,
            });
        }
        Ok(hello.role)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn message_and_fd_cross() {
        let (a, mut b) = Channel::pair().unwrap();
        let mut tmp = tempfile_in_tmp();
        tmp.write_all(b"hello fd").unwrap();
        tmp.rewind().unwrap();
        a.send_with_fds(&PrivResponse::Fd { kind: FdKind::Kmsg }, &[tmp.as_fd()])
            .unwrap();
        let (msg, fds): (PrivResponse, _) = b.recv_with_fds(1).unwrap();
        assert_eq!(msg, PrivResponse::Fd { kind: FdKind::Kmsg });
        assert_eq!(fds.len(), 1);
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello fd");
    }

    #[test]
    fn refuses_unwanted_fds() {
        let (a, mut b) = Channel::pair().unwrap();
        let tmp = tempfile_in_tmp();
        a.send_with_fds(&PrivRequest::OpenKmsg, &[tmp.as_fd()])
            .unwrap();
        assert!(matches!(
            b.recv::<PrivRequest>(),
            Err(ProtoError::TooManyFds { got: 1, max: 0 })
        ));
    }

    #[test]
    fn handshake_checks_version_and_role() {
        let (mut a, mut b) = Channel::pair().unwrap();
        let t = std::thread::spawn(move || b.handshake(Role::Privhelper, Some(Role::Collector)));
        assert_eq!(
            a.handshake(Role::Collector, Some(Role::Privhelper))
                .unwrap(),
            Role::Privhelper
        );
        assert_eq!(t.join().unwrap().unwrap(), Role::Collector);

        let (a, mut b) = Channel::pair().unwrap();
        let mut h = Hello::new(Role::Collector);
        h.version = 999;
        a.send(&h).unwrap();
        assert!(matches!(
            b.expect_hello(None),
            Err(ProtoError::VersionMismatch { peer: 999, .. })
        ));

        let (a, mut b) = Channel::pair().unwrap();
        a.send(&Hello::new(Role::Shipper)).unwrap();
        assert!(matches!(
            b.expect_hello(Some(Role::Collector)),
            Err(ProtoError::UnexpectedPeer { .. })
        ));

        let (a, mut b) = Channel::pair().unwrap();
        a.send_raw(b"\x03\0\0\0abc").unwrap();
        assert!(matches!(b.expect_hello(None), Err(ProtoError::BadHello)));
    }

    #[test]
    fn oversized_datagram_is_refused() {
        let (a, mut b) = Channel::pair().unwrap();
        // Fits the default socket buffer, so the kernel delivers it; the receiver must refuse.
        let big = vec![0u8; HEADER_LEN + MAX_FRAME + 100];
        a.send_raw(&big).unwrap();
        assert!(matches!(
            b.recv::<PrivRequest>(),
            Err(ProtoError::KernelTruncated)
        ));
        // And the channel is still usable after the refusal.
        a.send(&PrivRequest::OpenKmsg).unwrap();
        assert_eq!(b.recv::<PrivRequest>().unwrap(), PrivRequest::OpenKmsg);
    }

    #[test]
    fn empty_datagram_is_not_end_of_file() {
        let (a, mut b) = Channel::pair().unwrap();
        a.send_raw(&[]).unwrap();
        assert!(matches!(
            b.recv::<PrivRequest>(),
            Err(ProtoError::Truncated { got: 0, .. })
        ));
        a.send(&PrivRequest::OpenKmsg).unwrap();
        assert_eq!(b.recv::<PrivRequest>().unwrap(), PrivRequest::OpenKmsg);
        drop(a);
        assert!(matches!(b.recv::<PrivRequest>(), Err(ProtoError::Closed)));
    }

    #[test]
    fn a_dead_peers_last_datagrams_survive_its_reset() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&PrivRequest::OpenKmsg).unwrap();
        // `a` dies with b's datagram unread: the kernel flags ECONNRESET on `b`.
        b.send(&PrivRequest::ListNetns).unwrap();
        drop(a.recv::<PrivRequest>().ok());
        b.send(&PrivRequest::ListNetns).unwrap();
        drop(a);
        assert_eq!(b.recv::<PrivRequest>().unwrap(), PrivRequest::OpenKmsg);
        assert!(matches!(b.recv::<PrivRequest>(), Err(ProtoError::Closed)));
    }

    #[test]
    fn closed_peer() {
        let (a, mut b) = Channel::pair().unwrap();
        drop(a);
        assert!(matches!(b.recv::<PrivRequest>(), Err(ProtoError::Closed)));
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "vigil-ipc-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
