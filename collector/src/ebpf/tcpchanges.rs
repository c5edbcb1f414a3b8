//! TCP state changes counted in the kernel (`privhelper/bpf/tcp_changes.bpf.c`: the raw
//! tracepoint `inet_sock_set_state` adds one to its CPU's slot), read through the map's
//! descriptor alone: one read-only mmap of its value, no bpf() call. The connection counts
//! ([`crate::sockets::SockDiag::counts`]) walk the kernel's TCP hash again only when the sum
//! moved.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::mapping::Mapping;

/// `VIGIL_TCP_CHANGE_SLOTS` of `privhelper/bpf/vigil_records.h`.
pub const SLOTS: usize = 256;
/// A slot is a cache line: its counter, then padding.
const SLOT_BYTES: usize = 64;
/// `sizeof(struct vigil_tcp_changes)`.
pub const VALUE_SIZE: usize = SLOTS * SLOT_BYTES;
/// BPF_MAP_TYPE_ARRAY in /proc/self/fdinfo.
const MAP_TYPE_ARRAY: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum TcpChangesError {
    #[error("value of {0} bytes, expected {VALUE_SIZE}")]
    BadSize(u32),
    #[error("descriptor: {0}")]
    NotCounters(String),
    #[error("mmap of the counters: {0}")]
    Mmap(std::io::Error),
}

/// The program's counters, mapped read-only.
pub struct TcpChanges {
    _fd: OwnedFd,
    /// The value, [`VALUE_SIZE`] bytes, read-only.
    map: Mapping,
}

impl std::fmt::Debug for TcpChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpChanges")
            .field("count", &self.count())
            .finish()
    }
}

impl TcpChanges {
    /// Map the counters behind `fd`, an array of one value of `value_size` bytes (what the
    /// privhelper's `BpfCounters` answer says; /proc/self/fdinfo must agree, and show the map
    /// frozen: mapped read-only here, writable by no one but its program).
    pub fn new(fd: OwnedFd, value_size: u32) -> Result<Self, TcpChangesError> {
        if value_size as usize != VALUE_SIZE {
            return Err(TcpChangesError::BadSize(value_size));
        }
        super::flowmap::check_fdinfo(
            fd.as_raw_fd(),
            "tcp changes",
            MAP_TYPE_ARRAY,
            4,
            VALUE_SIZE,
            1,
            super::flowmap::NoWrites::Frozen,
        )
        .map_err(|e| TcpChangesError::NotCounters(e.to_string()))?;
        let map = Mapping::new(fd.as_fd(), VALUE_SIZE, false, 0).map_err(TcpChangesError::Mmap)?;
        Ok(TcpChanges { _fd: fd, map })
    }

    /// Changes counted since the program was attached (wrapping), summed over the slots.
    pub fn count(&self) -> u64 {
        (0..SLOTS).fold(0u64, |sum, i| {
            // SAFETY: slot `i`'s counter lies within the mapping (i * 64 + 8 <= VALUE_SIZE),
            // 8-byte aligned (the mapping is page aligned), and the kernel only changes it
            // with atomic adds.
            let n = unsafe { &*self.map.as_ptr().add(i * SLOT_BYTES).cast::<AtomicU64>() };
            sum.wrapping_add(n.load(Ordering::Relaxed))
        })
    }
}
