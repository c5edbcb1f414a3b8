//! Loading and attaching vigil's BPF programs (sources in `privhelper/bpf/`, compiled by
//! `build.rs`), answering `PrivRequest::BpfAttach`.
//!
//! The privhelper keeps every loaded object (programs, links, the packet socket) for as long as it
//! lives: nothing is pinned (no bpffs), so when the privhelper exits the kernel detaches and frees
//! everything. What leaves this process is only a duplicate of a ring buffer map descriptor, which
//! the unprivileged collector consumes with mmap (no bpf() call needed there).
//!
//! | program                       | feature             | capabilities                    |
//! |-------------------------------|---------------------|---------------------------------|
//! | [`BpfProgram::ExecExit`]      | `ebpf_exec`         | BPF, PERFMON (raw tracepoints)  |
//! | [`BpfProgram::FlowsSocketFilter`] | `ebpf_flows_socket` | BPF, NET_RAW (AF_PACKET socket) |
//! | [`BpfProgram::FlowsTc`]       | `ebpf_flows_tc`     | BPF, NET_ADMIN (tcx links)      |
//!
//! (Measured as uid 65534 with exactly those capabilities, `privhelper/tests/ebpf.rs`; tc needs
//! no PERFMON because the programs read packets with `bpf_skb_load_bytes` only.)
//!
//! The socket filter sees every interface of the privhelper's network namespace: one packet
//! socket for what every interface receives (`PACKET_IGNORE_OUTGOING`: no per-packet clone on
//! any transmit path, loopback traffic counted once, as received) and one per non-loopback
//! interface present at the first request for what it transmits. The tc programs attach
//! (ingress + egress) to `collector.flow_interfaces`, or every interface but `lo` present at
//! the first request. A program is loaded once: later requests get a new descriptor of the
//! same ring. Records: `privhelper/bpf/vigil_records.h`.

mod loader;
mod packet_socket;
pub mod taskiter;
mod tcx;

use std::os::fd::OwnedFd;
use std::sync::Mutex;

use vigil_ipc_proto::{
    BpfProgram, FdKind, Feature, InitConfig, PrivError, PrivErrorCode, PrivResponse,
};

pub use loader::BpfManager;

/// The compiled objects, embedded.
pub(crate) static EXEC_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec.bpf.o"));
pub(crate) static FLOWS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows.bpf.o"));
pub(crate) static TASK_ITER_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/task_iter.bpf.o"));

/// A program attached (now or earlier) and a fresh duplicate of its ring buffer descriptor, to
/// be sent to the collector.
#[derive(Debug)]
pub struct Attached {
    pub program: BpfProgram,
    /// Duplicate (`O_CLOEXEC`) of the ring buffer map descriptor; the privhelper keeps its own.
    pub fd: OwnedFd,
    /// Data area of the ring buffer in bytes (power of two, multiple of the page size).
    pub ring_size: u32,
    /// Kernel ids of the loaded programs (diagnostics, tests).
    pub prog_ids: Vec<u32>,
}

impl Attached {
    /// What the descriptor is, for a plain `PrivResponse::Fd`.
    pub fn kind(&self) -> FdKind {
        FdKind::BpfRingbuf
    }

    /// The answer to send with `self.fd` attached (SCM_RIGHTS).
    pub fn response(&self) -> PrivResponse {
        PrivResponse::BpfRingbuf {
            program: self.program,
            ring_size: self.ring_size,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("feature {0} is disabled")]
    FeatureDisabled(Feature),
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF object has no {0}")]
    Missing(&'static str),
    #[error("ring buffer {0} has an unusable size {1}")]
    BadRingSize(&'static str, u32),
    #[error("invalid interface name {0:?}")]
    BadInterface(String),
    #[error("no interface to attach the tc programs to")]
    NoInterface,
    #[error("tc attach failed on every interface: {0}")]
    TcAttach(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("internal state lock poisoned")]
    Poisoned,
}

impl BpfError {
    /// The first errno found along the error's source chain.
    fn errno(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(n) = io.raw_os_error()
            {
                return Some(n);
            }
            cur = e.source();
        }
        None
    }

    /// The error as the collector sees it.
    pub fn to_priv_error(&self) -> PrivError {
        let code = match self {
            BpfError::FeatureDisabled(_) => PrivErrorCode::FeatureDisabled,
            BpfError::BadInterface(_) => PrivErrorCode::BadRequest,
            BpfError::NoInterface => PrivErrorCode::NotFound,
            _ => match self.errno() {
                Some(libc::EPERM) | Some(libc::EACCES) => PrivErrorCode::PermissionDenied,
                _ => PrivErrorCode::Failed,
            },
        };
        PrivError {
            code,
            message: self.to_string(),
        }
    }
}

/// The privhelper's loaded programs (one per [`BpfProgram`]), alive until the process exits.
static STATE: Mutex<Option<BpfManager>> = Mutex::new(None);

/// Load and attach `program` if its feature is enabled (once; later calls return a new
/// duplicate of the same ring buffer descriptor).
pub fn attach(program: BpfProgram, init: &InitConfig) -> Result<Attached, BpfError> {
    let mut guard = STATE.lock().map_err(|_| BpfError::Poisoned)?;
    guard
        .get_or_insert_with(BpfManager::new)
        .attach(program, init)
}

/// The whole answer to `PrivRequest::BpfAttach { program }` for the privhelper's dispatch: the
/// response to send and the descriptor to attach to it (SCM_RIGHTS), if any.
pub fn respond(program: BpfProgram, init: &InitConfig) -> (PrivResponse, Option<OwnedFd>) {
    match attach(program, init) {
        Ok(a) => (a.response(), Some(a.fd)),
        Err(e) => {
            tracing::warn!(?program, error = %e, "BpfAttach refused");
            (PrivResponse::Error(e.to_priv_error()), None)
        }
    }
}
