//! A shared mapping of a BPF map's descriptor: the one `mmap` and `munmap` of the collector's
//! eBPF readers (the ring buffer's two regions, the TCP change counters). No bpf() call.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// `len` bytes of a map, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region belongs to this value alone; what is read or written through it is up to
// its owner (atomics for memory the kernel changes), not to the thread it lives on.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` from `offset` (a multiple of the page size), shared,
    /// read-write when `writable`, else read-only.
    pub fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        offset: usize,
    ) -> std::io::Result<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: mmap of a fresh region (addr NULL) backed by a live descriptor; the result is
        // checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // mmap never returns NULL on success for a NULL hint.
        let ptr = NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap gave NULL"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte (page aligned); `len` bytes from it are mapped while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped, which nothing borrows past `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
