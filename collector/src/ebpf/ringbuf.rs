//! Consumer of a BPF ring buffer map through its descriptor alone: two mmaps, no bpf() call.
//!
//! Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (mapped read-write), page 1
//! the producer position, then the data area mapped twice in a row so a record that wraps is
//! still contiguous (mapped read-only: one page + 2 × ring size from offset one page). Each record
//! starts with an 8-byte header whose first u32 is the length, with bit 31 "busy" (being written)
//! and bit 30 "discarded"; records are 8-byte aligned.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::mapping::Mapping;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HDR_SZ: usize = 8;
/// Largest ring accepted (the kernel's own limit is far above what vigil uses).
pub const MAX_RING_SIZE: u32 = 256 * 1024 * 1024;
/// BPF_MAP_TYPE_RINGBUF in /proc/self/fdinfo.
const MAP_TYPE_RINGBUF: u32 = 27;

#[derive(Debug, thiserror::Error)]
pub enum RingBufError {
    #[error(
        "ring size {0} is not a power of two multiple of the page size (at most {MAX_RING_SIZE})"
    )]
    BadSize(u32),
    #[error("descriptor is not a ring buffer of {expected} bytes ({found})")]
    NotRingbuf { expected: u32, found: String },
    #[error("mmap of the {what}: {source}")]
    Mmap {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record header at position {pos}: length {len}")]
    Corrupt { pos: u64, len: u32 },
}

/// Check what /proc/self/fdinfo says about the descriptor, when it is readable: a map of type
/// ring buffer with `max_entries == ring_size`. (The collector's Landlock rules allow /proc.)
fn check_fdinfo(fd: RawFd, ring_size: u32) -> Result<(), RingBufError> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
        return Ok(());
    };
    let field = |name: &str| -> Option<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("map_type:"), field("max_entries:")) {
        (Some(MAP_TYPE_RINGBUF), Some(n)) if n == ring_size => Ok(()),
        (t, n) => Err(RingBufError::NotRingbuf {
            expected: ring_size,
            found: format!("map_type {t:?}, max_entries {n:?}"),
        }),
    }
}

/// An mmapped BPF ring buffer, consumed by this process only.
pub struct RingBuf {
    fd: OwnedFd,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    size: usize,
    mask: u64,
}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf")
            .field("fd", &self.fd.as_raw_fd())
            .field("size", &self.size)
            .finish()
    }
}

impl RingBuf {
    /// Map the ring buffer behind `fd`, whose data area is `ring_size` bytes.
    pub fn new(fd: OwnedFd, ring_size: u32) -> Result<Self, RingBufError> {
        let page = vigil_ipc_proto::heap::page_size();
        if ring_size == 0
            || ring_size > MAX_RING_SIZE
            || !ring_size.is_power_of_two()
            || !(ring_size as usize).is_multiple_of(page)
        {
            return Err(RingBufError::BadSize(ring_size));
        }
        check_fdinfo(fd.as_raw_fd(), ring_size)?;
        let size = ring_size as usize;
        let consumer =
            Mapping::new(fd.as_fd(), page, true, 0).map_err(|source| RingBufError::Mmap {
                what: "consumer page",
                source,
            })?;
        // Read-only: the producer page and the data pages.
        let producer =
            Mapping::new(fd.as_fd(), page + 2 * size, false, page).map_err(|source| {
                RingBufError::Mmap {
                    what: "producer and data pages",
                    source,
                }
            })?;
        Ok(RingBuf {
            fd,
            consumer,
            producer,
            page,
            size,
            mask: (size as u64) - 1,
        })
    }

    /// Data area size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped, page aligned, and lives as long as self.
        unsafe { &*self.consumer.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the producer page is mapped, page aligned, and lives as long as self.
        unsafe { &*self.producer.as_ptr().cast::<AtomicU64>() }
    }

    /// Bytes written by the producer and not consumed yet.
    pub fn pending(&self) -> u64 {
        let prod = self.producer_pos().load(Ordering::Acquire);
        let cons = self.consumer_pos().load(Ordering::Relaxed);
        prod.saturating_sub(cons)
    }

    /// Hand every committed record to `f` (discarded ones are skipped), advancing the consumer
    /// position after each, until the ring is empty or a record is still being written; at most
    /// `max` records. Returns how many records were passed to `f`.
    pub fn consume(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, RingBufError> {
        let data = self.page; // data starts one page into the producer mapping
        let mut n = 0;
        let mut cons = self.consumer_pos().load(Ordering::Relaxed);
        while n < max {
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod {
                break;
            }
            let off = (cons & self.mask) as usize;
            // SAFETY: off < size and the data area is mapped twice, so off + 8 is in bounds;
            // headers are 8-byte aligned.
            let hdr = unsafe { &*self.producer.as_ptr().add(data + off).cast::<AtomicU32>() };
            let word = hdr.load(Ordering::Acquire);
            if word & BUSY_BIT != 0 {
                break;
            }
            let len = (word & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len > self.size - HDR_SZ {
                return Err(RingBufError::Corrupt {
                    pos: cons,
                    len: word,
                });
            }
            if word & DISCARD_BIT == 0 {
                // SAFETY: off + 8 + len <= 2 * size, within the double mapping of the data area;
                // the producer finished writing (busy bit clear, acquire load above).
                let rec = unsafe {
                    std::slice::from_raw_parts(self.producer.as_ptr().add(data + off + HDR_SZ), len)
                };
                f(rec);
                n += 1;
            }
            cons += ((len + HDR_SZ + 7) & !7) as u64;
            self.consumer_pos().store(cons, Ordering::Release);
        }
        Ok(n)
    }
}

impl AsFd for RingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RingBuf {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
