//! Zero-filled buffers whose pages take memory only once written.
//!
//! A receive buffer must be as large as the largest message (a channel's 64 KiB frame, a
//! netlink dump's chunk, a batch of BPF map entries), but most messages fill its first page or
//! two. Taken from the heap, such a buffer is resident whole: `calloc` clears memory the heap
//! had used before, and that write makes every page of it present for life (14 channel
//! buffers alone held ≈ 0.9 MB over the four processes; BENCHMARKS.md). A buffer of its own
//! anonymous mapping starts as untouched pages: the kernel gives a page memory on its first
//! write (a read sees its shared zero page), so the buffer costs what the largest message
//! received so far wrote, not its size.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// `len` zero bytes: an anonymous mapping of their own, or, when the kernel refuses one (no
/// address space left, a size of 0), a zeroed heap allocation; both read and write the same.
pub struct PageBuf {
    mem: Mem,
}

enum Mem {
    Mapped { ptr: NonNull<u8>, len: usize },
    Heap(Box<[u8]>),
}

// SAFETY: the mapping is owned by this value alone (never aliased, unmapped only in drop), so
// moving it to another thread or sharing `&PageBuf` is as safe as for a `Box<[u8]>`.
unsafe impl Send for PageBuf {}
// SAFETY: as above; `&PageBuf` only gives `&[u8]`.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    pub fn new(len: usize) -> Self {
        let mem = map_anonymous(len).map_or_else(
            || Mem::Heap(vec![0u8; len].into_boxed_slice()),
            |ptr| Mem::Mapped { ptr, len },
        );
        PageBuf { mem }
    }

    /// Whether the bytes are a mapping of their own (for tests).
    pub fn is_mapped(&self) -> bool {
        matches!(self.mem, Mem::Mapped { .. })
    }
}

/// A private anonymous read-write mapping of `len` bytes (`None` for 0 or when mmap fails).
fn map_anonymous(len: usize) -> Option<NonNull<u8>> {
    if len == 0 {
        return None;
    }
    // SAFETY: a new private anonymous mapping at an address the kernel picks: it aliases no
    // existing memory, and the kernel zero-fills its pages.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast::<u8>())
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.mem {
            // SAFETY: `ptr` is the start of a live read-write mapping of `len` bytes owned by
            // `self`; the borrow of `self` bounds the slice's life.
            Mem::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
            Mem::Heap(b) => b,
        }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.mem {
            // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
            Mem::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            Mem::Heap(b) => b,
        }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if let Mem::Mapped { ptr, len } = self.mem {
            // SAFETY: the mapping `map_anonymous` made for this value; no slice of it outlives
            // `self`. A failure would leave the mapping in place, nothing worse.
            unsafe {
                libc::munmap(ptr.as_ptr().cast(), len);
            }
        }
    }
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBuf")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident kB of `buf`'s mapping by /proc/self/smaps (as PSS counts: the shared zero
    /// page that reads map is not counted).
    fn resident_kb(buf: &PageBuf) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", buf.as_ptr() as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "no mapping at {start}");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn zeroed_and_resident_only_where_written() {
        let mut b = PageBuf::new(64 * 1024 + 17);
        assert!(b.is_mapped());
        assert_eq!(b.len(), 64 * 1024 + 17);
        assert!(b.iter().all(|&x| x == 0));
        // Reads mapped the zero page at most; nothing written yet.
        assert_eq!(resident_kb(&b), 0);
        b[..100].fill(7);
        let last = b.len() - 1;
        b[last] = 9;
        let page_kb = (crate::heap::page_size() / 1024) as u64;
        assert_eq!(resident_kb(&b), 2 * page_kb);
        assert_eq!(&b[..3], &[7, 7, 7]);
        assert_eq!(b[100], 0);
        assert_eq!(b[last], 9);
    }

    #[test]
    fn empty_falls_back_to_the_heap() {
        let b = PageBuf::new(0);
        assert!(!b.is_mapped());
        assert!(b.is_empty());
    }
}
