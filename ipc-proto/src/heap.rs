//! The allocator's housekeeping, shared by every vigil process (they all link this crate).

/// Give the heap's free pages back to the kernel (glibc's `malloc_trim`; nothing elsewhere).
/// For a process after a burst it will not repeat soon: the callers say which.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim takes no pointer and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
