//! Applying a sandbox plan to the calling process. (API skeleton; filled in by the sandbox work.)

use vigil_ipc_proto::{Role, SandboxPlan, SandboxReport};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: std::io::Error,
    },
}

/// Drop to the plan's ids and capabilities, set NoNewPrivs, restrict with Landlock, then load
/// the role's seccomp policy (whose violations are reported on `report_fd` before the role
/// dies). Must run before the process starts any thread.
pub fn apply(
    role: Role,
    plan: &SandboxPlan,
    report_fd: std::os::fd::RawFd,
) -> Result<SandboxReport, SandboxError> {
    let _ = (role, plan, report_fd);
    Ok(SandboxReport::default())
}
