//! `vigil status`, as any user: connect to the supervisor's socket and ask once.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use vigil_ipc_proto::{Channel, ClientRequest, ClientResponse, Role, StatusReport};

use super::socket_path;
use crate::error::{Error, Result};

/// Client side: ask the supervisor listening under `runtime_dir`.
pub fn query(runtime_dir: &Path) -> Result<StatusReport> {
    let path = socket_path(runtime_dir);
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(Error::sys("socket"))?;
    let addr = UnixAddr::new(&path).map_err(Error::sys("socket path"))?;
    socket::connect(fd.as_raw_fd(), &addr)
        .map_err(|e| Error::Other(format!("cannot reach the agent at {}: {e}", path.display())))?;
    let mut ch = Channel::from_fd(fd);
    ch.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error::Sys {
            step: "timeout",
            source: e,
        })?;
    ch.handshake(Role::StatusClient, Some(Role::Supervisor))?;
    ch.send(&ClientRequest::Status)?;
    match ch.recv::<ClientResponse>()? {
        ClientResponse::Status(r) => Ok(r),
        ClientResponse::Error(e) => Err(Error::Other(format!("agent refused: {e}"))),
    }
}
