//! Starting one child: re-execute our own binary (through the descriptor of /proc/self/exe
//! opened before the virtual root existed, so the binary need not be visible inside it) with
//! its channel ends at the fixed descriptor numbers of `ipc_proto::fds`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::unistd::Pid;
use vigil_ipc_proto::{Channel, Role, fds};

use crate::error::{Error, Result};

/// Environment passed on to children; everything else is dropped.
const PASS_ENV: &[&str] = &["RUST_LOG", "RUST_BACKTRACE", vigil_child::SELFTEST_ENV];

/// Open our own executable for later re-execution. The descriptor is moved above the fixed
/// child numbers (3..=5) so remapping the channels in the child cannot clobber it.
pub fn open_self_exe() -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        "/proc/self/exe",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(Error::sys("open /proc/self/exe"))?;
    let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
        .map_err(Error::sys("move exe descriptor"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that only we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
}

/// The child's ends: control (fd 3) and up to two peers (fds 4 and 5).
pub struct ChildFds {
    pub control: Channel,
    pub peer_a: Option<Channel>,
    pub peer_b: Option<Channel>,
}

/// glibc's allocator settings for a child (`GLIBC_TUNABLES`: read once, at exec, so set here).
/// The privhelper runs without the per-thread cache: loading a BPF object parses the kernel's
/// BTF (≈ 20 MB of small allocations, freed at once), and the cache keeps up to seven freed
/// chunks of every small size — scattered over those 20 MB, where they pin pages that
/// `malloc_trim` cannot give back (≈ 0.7 MB for life, ≈ 120 kB in use). Its steady-state work is
/// a few requests a cycle: the cache's speed buys nothing there.
fn malloc_tunables(role: Role) -> Option<&'static str> {
    match role {
        Role::Privhelper => Some("glibc.malloc.tcache_count=0"),
        _ => None,
    }
}

pub fn spawn(role: Role, exe: &OwnedFd, ends: ChildFds) -> Result<Pid> {
    let src: [RawFd; 3] = [
        ends.control.as_raw_fd(),
        ends.peer_a.as_ref().map_or(-1, |c| c.as_raw_fd()),
        ends.peer_b.as_ref().map_or(-1, |c| c.as_raw_fd()),
    ];
    let dst: [RawFd; 3] = [fds::CONTROL, fds::PEER_A, fds::PEER_B];
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("vigil")
        .arg("__child")
        .arg(role.as_str())
        .env_clear()
        .stdin(Stdio::null());
    for k in PASS_ENV {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    if let Some(t) = malloc_tunables(role) {
        cmd.env("GLIBC_TUNABLES", t);
    }
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (fcntl, dup2, close, close_range) on descriptor numbers computed before fork.
    unsafe {
        cmd.pre_exec(move || remap_fds(&src, &dst));
    }
    let child = cmd.spawn().map_err(|source| Error::Sys {
        step: "spawn child",
        source,
    })?;
    // Our copies of the child's ends close here (dropped with `ends`).
    drop(ends);
    Ok(Pid::from_raw(child.id() as i32))
}

/// Move `src[i]` to `dst[i]` without clobbering (sources may sit on target numbers), without
/// close-on-exec; mark everything above the last target close-on-exec.
fn remap_fds(src: &[RawFd; 3], dst: &[RawFd; 3]) -> std::io::Result<()> {
    let mut high = [-1; 3];
    for i in 0..3 {
        if src[i] >= 0 {
            // SAFETY: F_DUPFD on a descriptor we own; returns a new descriptor >= 100.
            let fd = unsafe { libc::fcntl(src[i], libc::F_DUPFD, 100) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            high[i] = fd;
        }
    }
    for i in 0..3 {
        if high[i] >= 0 {
            // SAFETY: dup2 onto a fixed small number and close the temporary; both ours.
            if unsafe { libc::dup2(high[i], dst[i]) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: closing our own temporary duplicate.
            unsafe { libc::close(high[i]) };
        }
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors >= 6.
    unsafe { libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 4u32) };
    Ok(())
}
