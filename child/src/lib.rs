//! `vigil __child ROLE`: the first code of every child. Hello on the control channel, receive
//! the Init (what to drop, what to run), apply the sandbox to ourselves, say Ready, then run the
//! role. Nothing from a peer is read before the sandbox is in place.

mod selftest;

use vigil_ipc_proto::{Attached, Channel, ChildToSupervisor, Role, SupervisorToChild, fds};

pub use selftest::{ENV as SELFTEST_ENV, supervisor_probes};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] vigil_policies::SandboxError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Take an inherited channel end.
fn inherited(fd: i32) -> Channel {
    // SAFETY: the supervisor placed our channel ends at these fixed numbers (spawn.rs) and
    // nothing else in this fresh process refers to them.
    unsafe { Channel::from_raw_fd(fd) }
}

/// Allocations of 256 KiB and more get their own mapping, returned to the kernel when freed,
/// and free memory above 256 KiB at the top of the heap is given back. glibc's default raises
/// both thresholds after the first large free (up to 32 MiB), so one burst (a journal replayed
/// at start, a backlog read after an outage, events held while the disk was full) would stay
/// resident for the process's life; fixed, a role's memory follows its working set. Large
/// allocations are few (batches, journal reads, request bodies), so the extra mmap/munmap is
/// cheap.
fn bound_heap_retention() {
    const THRESHOLD: libc::c_int = 256 * 1024;
    // SAFETY: mallopt only sets the allocator's parameters; nothing else runs yet (one thread).
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

pub fn main(role_name: &str) -> Result<()> {
    bound_heap_retention();
    let role = match Role::parse(role_name) {
        Some(r @ (Role::Privhelper | Role::Collector | Role::Shipper)) => r,
        _ => return Err(Error::Other(format!("unknown child role {role_name:?}"))),
    };
    let mut control = inherited(fds::CONTROL);
    control.handshake(role, Some(Role::Supervisor))?;
    let (msg, fds) =
        control.recv_with_fds::<SupervisorToChild>(vigil_ipc_proto::channel::MAX_FDS)?;
    let init = match msg {
        SupervisorToChild::Init(init) if init.role == role => *init,
        other => {
            return Err(Error::Other(format!(
                "expected Init for {role}, got {other:?}"
            )));
        }
    };
    if fds.len() != init.attached.len() {
        return Err(Error::Other(format!(
            "Init for {role} lists {} descriptors but carries {}",
            init.attached.len(),
            fds.len()
        )));
    }
    let mut attachments = vigil_shipper::Attachments::default();
    for (a, fd) in init.attached.iter().zip(fds) {
        match a {
            Attached::ShipperInputs => attachments.inputs = Some(fd),
            Attached::PrometheusListener => attachments.prometheus = Some(fd),
        }
    }
    if role == Role::Collector {
        // It keeps two descriptors per process between cycles; its filter allows reading
        // limits only.
        if let Err(e) = vigil_collector::procs::raise_fd_limit() {
            tracing::warn!("collector: cannot raise RLIMIT_NOFILE: {e}");
        }
    }
    let report = vigil_policies::apply(role, &init.sandbox, fds::CONTROL)?;
    tracing::debug!(%role, ?report, "sandbox applied");
    control.send(&ChildToSupervisor::Ready(report))?;
    selftest::run_from_env(role, &init, &control);

    let res = match role {
        Role::Privhelper => {
            vigil_privhelper::run(&init, control, inherited(fds::PEER_A)).map_err(|e| e.to_string())
        }
        Role::Collector => match vigil_collector::run(
            &init,
            control,
            inherited(fds::PEER_A),
            inherited(fds::PEER_B),
        ) {
            // Already told to the supervisor, which reports it once and stops the agent.
            Err(vigil_collector::CollectorError::Config(_)) => std::process::exit(1),
            r => r.map_err(|e| e.to_string()),
        },
        Role::Shipper => {
            match vigil_shipper::run(&init, control, inherited(fds::PEER_A), attachments) {
                // Already told to the supervisor, which reports it once and stops the agent.
                Err(vigil_shipper::ShipperError::Config(_)) => std::process::exit(1),
                r => r.map_err(|e| e.to_string()),
            }
        }
        _ => unreachable!("checked above"),
    };
    res.map_err(|e| Error::Other(format!("{role}: {e}")))
}
