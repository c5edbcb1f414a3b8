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

/// An AF_PACKET socket receiving nothing yet (protocol 0); call [`bind_all`] once the filter is
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

/// Start receiving every protocol on every interface of this network namespace.
pub(crate) fn bind_all(sock: &OwnedFd) -> Result<(), BpfError> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = 0;
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
