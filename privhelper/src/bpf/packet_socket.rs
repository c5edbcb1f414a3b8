//! The AF_PACKET socket the flow socket filter is attached to.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::BpfError;

/// Smallest receive buffer the kernel accepts (it clamps to its own minimum): the filter returns
/// 0 for every packet, so nothing is ever queued; this only bounds the damage if it did.
const RCVBUF: libc::c_int = 1;

fn last_os_error(what: &'static str) -> BpfError {
    BpfError::Io {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// An AF_PACKET socket receiving nothing yet (protocol 0); call [`bind`] once the filter is
/// attached, so no packet reaches it unfiltered.
pub(crate) fn open() -> Result<OwnedFd, BpfError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(last_os_error("socket(AF_PACKET)"));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let v: libc::c_int = RCVBUF;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os_error("setsockopt(SO_RCVBUF)"));
    }
    Ok(sock)
}

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux >= 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Stop seeing transmitted packets: the kernel then skips this socket before it would clone
/// every outgoing packet for it (dev_queue_xmit_nit), the larger part of a packet tap's cost.
pub(crate) fn ignore_outgoing(sock: &OwnedFd) -> Result<(), BpfError> {
    let v: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os_error("setsockopt(PACKET_IGNORE_OUTGOING)"));
    }
    Ok(())
}

/// Start receiving every protocol on every interface of this network namespace
/// (`ifindex` 0), or on one interface.
pub(crate) fn bind(sock: &OwnedFd, ifindex: u32) -> Result<(), BpfError> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| BpfError::Io {
        what: "interface index",
        source: std::io::Error::other(format!("{ifindex} out of range")),
    })?;
    // SAFETY: bind with a pointer to a live sockaddr_ll and its size.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os_error("bind(AF_PACKET, ETH_P_ALL)"));
    }
    Ok(())
}
