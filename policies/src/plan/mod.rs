//! What each process may do, as data and without a syscall: the feature table and its
//! evaluation, the per-role Landlock templates and seccomp policy files. The supervisor turns
//! them into each child's `SandboxPlan`; [`crate::apply`] makes the kernel enforce one.

pub mod features;
pub mod landlock;
pub mod seccomp;
