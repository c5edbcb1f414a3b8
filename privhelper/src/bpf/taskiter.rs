//! The task iterator (`bpf/task_iter.bpf.c`), answering `PrivRequest::TaskIterLink`: loaded
//! and attached once, with CAP_BPF + CAP_PERFMON (a tracing program reading kernel memory),
//! during start-up. Its link lives as long as the privhelper; the collector gets a duplicate
//! of the link descriptor and makes one iterator from it per cycle (BPF_ITER_CREATE needs no
//! capability), so nothing here runs per cycle and no capability outlives start-up.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use aya::programs::{Iter, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader};
use vigil_ipc_proto::{FdKind, PrivResponse};

use super::{BpfError, TASK_ITER_OBJ};

const PROGRAM: &str = "vigil_task_iter";
const BPF_TRACE_ITER: u32 = 28;
/// Loads tried while the verifier answers EAGAIN.
const LOAD_TRIES: u32 = 5;

/// The loaded program and its link.
struct TaskIter {
    link: OwnedFd,
    /// Program and its maps; kept with the link (the link holds the program too).
    _ebpf: Ebpf,
}

static STATE: Mutex<Option<TaskIter>> = Mutex::new(None);

/// `bpf(BPF_LINK_CREATE)` for an iterator program with no parameters (every task of the pid
/// namespace of whoever creates an iterator from it). aya keeps the descriptors of the links
/// it makes to itself, and the collector needs this one.
fn iter_link(prog: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // union bpf_attr, link_create member: prog_fd, target_fd (0), attach_type, flags (0),
    // then iter_info and iter_info_len left zero (no parameters).
    let mut attr = [0u64; 8];
    attr[0] = u64::from(prog.as_raw_fd() as u32);
    attr[1] = u64::from(BPF_TRACE_ITER);
    super::link_create(attr)
}

fn load() -> Result<TaskIter, BpfError> {
    let btf = Btf::from_sys_fs().map_err(|e| BpfError::Io {
        what: "reading the kernel's BTF",
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut ebpf = EbpfLoader::new().btf(Some(&btf)).load(TASK_ITER_OBJ)?;
    let p = ebpf
        .program_mut(PROGRAM)
        .ok_or(BpfError::Missing(PROGRAM))?;
    let it: &mut Iter = p.try_into().map_err(|source| BpfError::Program {
        name: PROGRAM,
        source,
    })?;
    // The verifier gives up with EAGAIN when a signal is pending for the loading thread (seen
    // in the tests, whose harness forks concurrently): try again, as libbpf does, a few times.
    let mut tries = 1;
    loop {
        match it.load("task", &btf) {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_TRIES =>
            {
                tries += 1;
            }
            r => {
                r.map_err(|source| BpfError::Program {
                    name: PROGRAM,
                    source,
                })?;
                break;
            }
        }
    }
    let fd = it.fd().map_err(|source| BpfError::Program {
        name: PROGRAM,
        source,
    })?;
    let link = iter_link(fd.as_fd()).map_err(|source| BpfError::Io {
        what: "BPF_LINK_CREATE (task iterator)",
        source,
    })?;
    Ok(TaskIter { link, _ebpf: ebpf })
}

/// The task iterator's link (loaded and attached at the first call), duplicated
/// (`F_DUPFD_CLOEXEC`) for the collector.
pub fn link() -> Result<OwnedFd, BpfError> {
    let mut guard = STATE.lock().map_err(|_| BpfError::Poisoned)?;
    if guard.is_none() {
        let loaded = load()?;
        tracing::info!("BPF task iterator attached");
        *guard = Some(loaded);
    }
    let t = guard.as_ref().ok_or(BpfError::Missing("task iterator"))?;
    t.link
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| BpfError::Io {
            what: "dup of the task iterator's link",
            source,
        })
}

/// The whole answer to `PrivRequest::TaskIterLink`: the response and the descriptor to attach.
pub fn respond() -> (PrivResponse, Option<OwnedFd>) {
    match link() {
        Ok(fd) => (
            PrivResponse::Fd {
                kind: FdKind::BpfIterLink,
            },
            Some(fd),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "TaskIterLink refused");
            (PrivResponse::Error(e.to_priv_error()), None)
        }
    }
}
