//! Who may do what: the per-role seccomp allowlists and Landlock rulesets (readable files under
//! `policies/`, compiled in), the feature/capability table, and the code that applies a
//! [`SandboxPlan`](vigil_ipc_proto::SandboxPlan) to the calling process.

pub mod features;
pub mod sandbox;

pub use sandbox::{SandboxError, apply};
