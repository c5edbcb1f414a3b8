//! Who may do what: the per-role seccomp allowlists and Landlock rulesets (readable files under
//! `policies/seccomp/` and `policies/landlock/`, compiled in), the feature/capability table, and
//! the code that applies a [`SandboxPlan`](vigil_ipc_proto::SandboxPlan) to the calling process.

pub mod features;
pub mod landlock;
pub mod report;
pub mod sandbox;
pub mod seccomp;

pub use landlock::{LandlockVars, landlock_plan};
pub use sandbox::{Narrowed, SandboxError, apply, caps_from_numbers, narrow_supervisor};
pub use seccomp::syscall_name;
