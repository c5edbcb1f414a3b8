//! `PrivRequest::OpenKmsg`: open /dev/kmsg for the collector, which reads kernel events from
//! the descriptor (reading /dev/kmsg needs CAP_SYSLOG when `kernel.dmesg_restrict=1`).

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::error::RequestError;

pub const KMSG_PATH: &str = "/dev/kmsg";

/// /dev/kmsg, read-only, non-blocking, close-on-exec. Nothing is read here.
pub fn open_kmsg() -> Result<OwnedFd, RequestError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(KMSG_PATH)
        .map_err(|e| RequestError::io(format!("open {KMSG_PATH}"), e))?;
    Ok(OwnedFd::from(f))
}
