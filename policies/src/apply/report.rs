//! The SIGSYS reporter: when the seccomp filter traps a syscall, tell the supervisor which one
//! (a pre-encoded `ChildToSupervisor::SeccompViolation` datagram on the control socket) and die
//! by SIGSYS. Everything the handler does is async-signal-safe: no allocation, no locks.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use vigil_ipc_proto::ChildToSupervisor;
use vigil_ipc_proto::frame;

const FRAME_CAP: usize = 32;

/// The frame with zeroed fields, written once before the filter is loaded.
static mut FRAME: [u8; FRAME_CAP] = [0; FRAME_CAP];
static FRAME_LEN: AtomicUsize = AtomicUsize::new(0);
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Offsets of `si_syscall` and `si_arch` in `siginfo_t` for SIGSYS on 64-bit Linux: the
/// common header (signo, errno, code, padding) is 16 bytes, then `_sigsys { void *call_addr;
/// int syscall; unsigned arch; }`.
const SI_SYSCALL_OFFSET: usize = 24;
const SI_ARCH_OFFSET: usize = 28;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("encoding the violation frame: {0}")]
    Encode(#[from] vigil_ipc_proto::ProtoError),
    #[error("the SeccompViolation frame ({0} bytes) does not end with the two fixint u32 fields")]
    Layout(usize),
    #[error("sigaltstack/sigaction: {0}")]
    Signal(#[from] std::io::Error),
}

/// Prepare the frame and install the handler. Call once, before loading the filter.
pub fn install(report_fd: RawFd) -> Result<(), ReportError> {
    // Encode with marker values and check they sit in the last 8 bytes (fixint LE), where the
    // handler patches them; then zero them.
    let (nr_mark, arch_mark) = (0x1122_3344_u32, 0x5566_7788_u32);
    let mut bytes = frame::encode(&ChildToSupervisor::SeccompViolation {
        syscall: nr_mark,
        arch: arch_mark,
    })?;
    let len = bytes.len();
    if !(8 + frame::HEADER_LEN..=FRAME_CAP).contains(&len)
        || bytes[len - 8..len - 4] != nr_mark.to_le_bytes()
        || bytes[len - 4..] != arch_mark.to_le_bytes()
    {
        return Err(ReportError::Layout(len));
    }
    bytes[len - 8..].fill(0);
    // SAFETY: written once here, before the handler that reads it can run (the filter that
    // triggers it is loaded afterwards) and before any other thread exists.
    unsafe {
        let dst = (&raw mut FRAME).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
    }
    FRAME_LEN.store(bytes.len(), Ordering::SeqCst);
    REPORT_FD.store(report_fd, Ordering::SeqCst);
    install_handler()?;
    Ok(())
}

fn install_handler() -> std::io::Result<()> {
    // An alternate stack, so a trap during stack exhaustion is still reported. Its own
    // mapping: memory only once a signal runs on it (from the heap it was 64 KiB resident).
    const STACK: usize = 64 * 1024;
    let stack = Box::leak(Box::new(vigil_ipc_proto::pagebuf::PageBuf::new(STACK)));
    let ss = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: STACK,
    };
    // SAFETY: `ss` points at a leaked buffer that lives for the rest of the process.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a zeroed sigaction is a valid starting point; we fill handler, flags and mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
    // SAFETY: sa_mask is a plain sigset_t owned by `sa`.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: installs a handler for SIGSYS only; the handler is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let len = FRAME_LEN.load(Ordering::Relaxed);
    let fd = REPORT_FD.load(Ordering::Relaxed);
    let mut buf = [0u8; FRAME_CAP];
    if !(8..=FRAME_CAP).contains(&len) {
        // Not installed (cannot happen once install() succeeded): just die by SIGSYS.
        // SAFETY: raising a signal at ourselves is async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                libc::SIGSYS,
            );
        }
        return;
    }
    // SAFETY: the kernel hands us a valid siginfo_t for SIGSYS; the offsets are those of the
    // `_sigsys` member on 64-bit Linux. FRAME is only read here (written before the filter).
    unsafe {
        let base = info as *const u8;
        let nr = std::ptr::read_unaligned(base.add(SI_SYSCALL_OFFSET) as *const u32);
        let arch = std::ptr::read_unaligned(base.add(SI_ARCH_OFFSET) as *const u32);
        let src = (&raw const FRAME).cast::<u8>();
        std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), len);
        buf[len - 8..len - 4].copy_from_slice(&nr.to_le_bytes());
        buf[len - 4..len].copy_from_slice(&arch.to_le_bytes());
        if fd >= 0 {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                len,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            );
        }
        // SA_RESETHAND restored the default action (terminate): deliver it to ourselves.
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGSYS,
        );
    }
}
