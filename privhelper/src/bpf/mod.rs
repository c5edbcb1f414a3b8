//! Loading and attaching vigil's BPF programs (sources in `privhelper/bpf/`, compiled by
//! `build.rs`), answering `PrivRequest::BpfAttach`.
//!
//! The privhelper keeps every loaded object (programs, links, the packet socket) for as long as it
//! lives: nothing is pinned (no bpffs), so when the privhelper exits the kernel detaches and frees
//! everything. What leaves this process are duplicates of map descriptors: exec/exit's ring
//! buffer, which the unprivileged collector consumes with mmap, and the flow programs' flow table
//! and totals, created read-only from user space (`BPF_F_RDONLY`), which the collector reads
//! with the two lookup commands its seccomp policy allows (`collector-flows.policy`).
//!
//! | program                       | feature             | capabilities                    |
//! |-------------------------------|---------------------|---------------------------------|
//! | [`BpfProgram::ExecExit`]      | `ebpf_exec`         | BPF, PERFMON (raw tracepoints)  |
//! | [`BpfProgram::FlowsTracepoint`] | `ebpf_flows_tracepoint` | BPF, PERFMON (tp_btf) |
//! | [`BpfProgram::FlowsSocketFilter`] | `ebpf_flows_socket` | BPF, NET_RAW (AF_PACKET socket) |
//! | [`BpfProgram::FlowsTc`]       | `ebpf_flows_tc`     | BPF, NET_ADMIN (tcx links)      |
//! | [`BpfProgram::TcpChanges`]    | `ebpf_tcp_changes`  | BPF, PERFMON (raw tracepoint)   |
//!
//! (Measured as uid 65534 with exactly those capabilities, `privhelper/tests/ebpf_loader.rs`; tc needs
//! no PERFMON because the programs read packets with `bpf_skb_load_bytes` only.)
//!
//! The flow tracepoints (netif_receive_skb, net_dev_start_xmit) fire for every namespace's
//! devices; the programs count those of the privhelper's network namespace (its inode number,
//! set at load), loopback's packets once, as received. The socket filter sees every interface
//! of the privhelper's network namespace: one packet
//! socket for what every interface receives (`PACKET_IGNORE_OUTGOING`: no per-packet clone on
//! any transmit path, loopback traffic counted once, as received) and one per non-loopback
//! interface present at the first request for what it transmits. The tc programs attach
//! (ingress + egress) to `collector.flow_interfaces`, or every interface but `lo` present at
//! the first request. A program is loaded once: later requests get new descriptors of the
//! same maps. Layouts: `privhelper/bpf/vigil_records.h`.

mod loader;
mod packet_socket;
pub mod taskiter;
mod tcx;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use vigil_ipc_proto::{BpfProgram, Feature, InitConfig, PrivError, PrivErrorCode, PrivResponse};

pub use loader::BpfManager;

/// The compiled objects, embedded.
pub(crate) static EXEC_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec.bpf.o"));
pub(crate) static FLOWS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows.bpf.o"));
pub(crate) static TCP_CHANGES_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp_changes.bpf.o"));
pub(crate) static TASK_ITER_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/task_iter.bpf.o"));

/// A program attached (now or earlier) and fresh duplicates of the maps the collector reads.
#[derive(Debug)]
pub struct Attached {
    pub program: BpfProgram,
    /// `BpfRingbuf` (exec/exit) or `BpfFlowMap` (flows).
    pub response: PrivResponse,
    /// Duplicates (`O_CLOEXEC`) of the map descriptors, in the order the response names them;
    /// the privhelper keeps its own.
    pub fds: Vec<OwnedFd>,
    /// Kernel ids of the loaded programs (diagnostics, tests).
    pub prog_ids: Vec<u32>,
}

impl Attached {
    /// The ring's data size (ring buffer programs).
    pub fn ring_size(&self) -> Option<u32> {
        match self.response {
            PrivResponse::BpfRingbuf { ring_size, .. } => Some(ring_size),
            _ => None,
        }
    }
}

/// `struct vigil_flow_totals` (`bpf/vigil_records.h`), summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTotals {
    pub packets: u64,
    pub bytes: u64,
    pub not_stored: u64,
    pub created: u64,
}

impl FlowTotals {
    /// Add one CPU's `struct vigil_flow_totals` as 14 u64: `[packets, bytes, not_stored,
    /// created, run_key × 6, run_first_ns, run_packets, run_bytes, run_seq]`; its run's
    /// packets are in no other counter yet.
    fn plus(self, o: &[u64; 14]) -> FlowTotals {
        FlowTotals {
            packets: self.packets.wrapping_add(o[0]).wrapping_add(o[11]),
            bytes: self.bytes.wrapping_add(o[1]).wrapping_add(o[12]),
            not_stored: self.not_stored.wrapping_add(o[2]),
            created: self.created.wrapping_add(o[3]),
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
/// response to send and the descriptors to attach to it (SCM_RIGHTS).
pub fn respond(program: BpfProgram, init: &InitConfig) -> (PrivResponse, Vec<OwnedFd>) {
    match attach(program, init) {
        Ok(a) => (a.response, a.fds),
        Err(e) => {
            tracing::warn!(?program, error = %e, "BpfAttach refused");
            (PrivResponse::Error(e.to_priv_error()), Vec::new())
        }
    }
}

const BPF_MAP_FREEZE: libc::c_long = 22;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `bpf(cmd)` with `attr` as its member of `union bpf_attr` (zero-padded); the kernel only
/// reads it. The call's result.
fn bpf(cmd: libc::c_long, mut attr: [u64; 8]) -> std::io::Result<i64> {
    // SAFETY: bpf(2) with a live, zero-padded attribute buffer of the size passed; the kernel
    // only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// `bpf(BPF_MAP_FREEZE)`: from now on no descriptor of the map can change it from user space
/// (no update, no writable mmap); its programs still can.
fn map_freeze(map: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = u32::try_from(map.as_raw_fd()).map_err(|_| std::io::Error::other("bad fd"))?;
    bpf(BPF_MAP_FREEZE, [u64::from(fd), 0, 0, 0, 0, 0, 0, 0]).map(|_| ())
}

/// `bpf(BPF_LINK_CREATE)` with `attr` as the `link_create` member of `union bpf_attr` (the
/// tcx and iterator links, which aya would keep to itself). Returns the link.
fn link_create(attr: [u64; 8]) -> std::io::Result<OwnedFd> {
    let r = bpf(BPF_LINK_CREATE, attr)?;
    let fd = i32::try_from(r).map_err(|_| std::io::Error::other("bad link descriptor"))?;
    // SAFETY: the kernel just returned this descriptor (close-on-exec) to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
