//! The shipper: unprivileged journal and exporters.
//!
//! [`run`] is the one child loop (`vigil_ipc_proto::runtime`), single-threaded, over the
//! control channel (supervisor), the collector channel, while an OTLP request is in flight its TCP connection and, when the
//! Prometheus endpoint is on, its listening socket and connections:
//! - every `Batch` from the collector is appended to the [`journal`] (durable per the fsync
//!   policy) and only then acknowledged; a batch that cannot be journaled (full disk) is
//!   answered with `Nack`, counted, and the next batch tries again;
//! - exporters ([`export`]) read the journal from their own acknowledged position, so nothing
//!   is lost while a backend is down or across restarts (replay; duplicates possible);
//! - `StatsRequest` is answered with the counters of [`stats::Stats`], which are also
//!   journaled as `vigil.shipper.*` metrics once per collection interval;
//! - every metric record journaled (the collector's and those self-metrics) also updates the
//!   latest-value store of the Prometheus endpoint ([`export::prometheus`]), which answers
//!   scrapes from it without blocking the loop.
//!
//! Sandbox contract: single-threaded (no clone); files only under the journal directory
//! (plus the JSON-lines file when it is not stdout); TCP connect only to the ports of the OTLP
//! endpoints (or their proxy) and 53; everything else it needs for delivery (CA bundles,
//! client certificates, resolv.conf, hosts) arrives in one sealed memfd the supervisor filled
//! before the view was built, and the Prometheus listening socket is bound by the supervisor.
//! Names are resolved here (UDP to the nameservers: the `shipper-dns` policy, only when a name
//! must be resolved). Syscalls run() makes on x86_64, as
//! traced under Landlock (`strace -f` of `tests/sandboxed.rs`) plus the error paths:
//! poll, recvmsg, sendmsg, recvfrom (MSG_PEEK), sendto, read, write, pread64, pwrite64, openat,
//! close, fcntl, ioctl (FIONBIO), fsync, fdatasync, ftruncate, rename, unlink, mkdir,
//! getdents64, statx, newfstatat, lseek, socket, connect, getsockopt, setsockopt,
//! clock_gettime, getrandom (HashMap seeds), getpid, mmap, munmap, mremap, mprotect, madvise,
//! brk, futex, rt_sigprocmask, sigaltstack, exit.

pub mod backoff;
pub mod convert;
pub mod export;
pub mod http;
pub mod journal;
pub mod net;
pub mod order;
mod run;
pub mod stats;

pub use run::run;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_ipc_proto::InitConfig;
use vigil_ipc_proto::delivery::ShipperInputs;

use journal::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("poll: {0}")]
    Poll(#[from] nix::Error),
    #[error("socket setup: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// Descriptors the supervisor attached to the Init frame.
#[derive(Debug, Default)]
pub struct Attachments {
    /// Sealed memfd of [`ShipperInputs`] (OTLP on).
    pub inputs: Option<OwnedFd>,
    /// Listening socket of the Prometheus endpoint.
    pub prometheus: Option<OwnedFd>,
}

/// Read the sealed memfd the supervisor filled (bounded, from offset 0 whatever its position).
pub fn read_inputs(fd: &OwnedFd) -> Result<ShipperInputs, String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("shipper inputs: fstat: {e}"))?;
    let len = usize::try_from(st.st_size).unwrap_or(usize::MAX);
    if len > ShipperInputs::MAX_BYTES {
        return Err(format!("shipper inputs: {len} bytes is too large"));
    }
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        match nix::sys::uio::pread(fd, &mut buf[off..], off as libc::off_t) {
            Ok(0) => return Err("shipper inputs: short read".into()),
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("shipper inputs: read: {e}")),
        }
    }
    ShipperInputs::decode(&buf).map_err(|e| format!("shipper inputs: decode: {e}"))
}

/// Syscalls [`run`] makes on x86_64 (see the module documentation); `tests/sandboxed.rs` runs
/// the shipper under a seccomp filter allowing exactly these, so the list stays complete for the
/// paths the tests exercise. The role's policy file must allow at least these.
pub const SYSCALLS: &[&str] = &[
    "poll",
    "ppoll",
    "recvmsg",
    "sendmsg",
    "recvfrom",
    "sendto",
    "read",
    "write",
    "pread64",
    "pwrite64",
    "openat",
    "close",
    "fcntl",
    "ioctl",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "getdents64",
    "statx",
    "newfstatat",
    "fstat",
    "lseek",
    "socket",
    "connect",
    "getsockopt",
    "setsockopt",
    "clock_gettime",
    "getrandom",
    "getpid",
    "gettid",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "brk",
    "futex",
    "rt_sigprocmask",
    "sigaltstack",
    "exit",
    "sched_yield",
];

/// What the Prometheus endpoint adds to [`SYSCALLS`]: `accept4` (the `shipper-listen`
/// policy, only when the endpoint is on) and `shutdown` (after a refusal).
pub const LISTEN_SYSCALLS: &[&str] = &["accept4", "shutdown"];

/// Most collector batches handled in one loop turn before exporters get a turn.
const MAX_BATCHES_PER_TURN: usize = 64;

/// A duration from configuration, capped at one day (no `Instant` overflow whatever the
/// value).
pub fn config_ms(ms: u64) -> Duration {
    Duration::from_millis(ms.min(86_400_000))
}

/// The journal directory for this configuration.
pub fn journal_dir(init: &InitConfig) -> PathBuf {
    match &init.shipper.journal_dir {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(&init.runtime_dir).join("journal"),
    }
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
