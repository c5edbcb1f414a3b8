//! Who may do what. [`plan`]: the feature/capability table and the per-role seccomp allowlists
//! and Landlock rulesets (readable files under `policies/seccomp/` and `policies/landlock/`,
//! compiled in), pure data. [`apply`]: the code that makes the kernel enforce a
//! [`SandboxPlan`](vigil_ipc_proto::SandboxPlan) on the calling process (and narrows the
//! supervisor), every syscall behind one [`Kernel`](apply::Kernel) trait. [`probe`]: what the
//! running kernel and process can do, read without changing anything.

pub mod apply;
pub mod plan;
pub mod probe;

pub use apply::seccomp::syscall_name;
pub use apply::{Narrowed, SandboxError, apply, caps_from_numbers, narrow_supervisor};
pub use plan::landlock::{LandlockVars, landlock_plan};
pub use plan::{features, seccomp};

/// Landlock: the per-role templates (plan) and what restricts a process with them (apply).
pub mod landlock {
    pub use crate::apply::landlock::{kernel_abi, restrict_writes};
    pub use crate::plan::landlock::*;
}
