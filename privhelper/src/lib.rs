//! The privhelper: the only vigil process that keeps capabilities.
//!
//! It answers the collector's narrow requests ([`vigil_ipc_proto::PrivRequest`], the whole
//! attack surface), validates every field before touching anything, prefers handing back a
//! descriptor (SCM_RIGHTS) over doing work, and logs and counts every refusal. The table of
//! accepted requests is in [`server`]. By the time [`run`] is called the supervisor's bootstrap
//! has applied the sandbox (agent user, only the capabilities of enabled features, NoNewPrivs,
//! Landlock, seccomp).
//!
//! Measured limit (`tests/sandboxed.rs`): Landlock scopes ptrace, so a Landlocked privhelper
//! fails `ptrace_may_access` on every process outside its Landlock domain, whatever its
//! capabilities. Other processes' `/proc/PID/fd/N` links (socket counts → `None`) and
//! `/proc/PID/ns/net` (`NetnsTarget::Pid` → `PermissionDenied`; unnamed namespaces missing
//! from `ListNetns`) are then refused. Descriptor counts, /dev/kmsg and named namespaces
//! (`/run/netns`) still work. Without Landlock (uid, capabilities, NoNewPrivs and seccomp
//! kept) everything works.

pub mod bpf;
pub mod caps;
pub mod error;
pub mod fdstats;
pub mod kmsg;
pub mod netns;
pub mod procio;
pub mod server;
pub mod validate;

use vigil_ipc_proto::{Channel, InitConfig};

pub use error::{PrivhelperError, RequestError};
pub use server::Server;

/// Serve the collector's requests until the supervisor says shut down (`Ok`). An `Err` means
/// the process must exit non-zero (control channel gone, or it could not return to its own
/// network namespace) and be restarted by the supervisor.
pub fn run(init: &InitConfig, control: Channel, collector: Channel) -> Result<(), PrivhelperError> {
    let mut server = Server::new(init.clone())?;
    let result = server.serve(control, collector);
    if let Err(e) = &result {
        tracing::error!(error = %e, "privhelper stops");
    }
    result
}
