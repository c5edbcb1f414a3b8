//! Restricting the calling process with a [`LandlockPlan`]: the ruleset syscalls (through the
//! landlock crate), best effort on older ABIs.

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use vigil_ipc_proto::LandlockPlan;

/// Newest ABI whose rights this code was written and tested against.
const TARGET_ABI: ABI = ABI::V6;

/// The Landlock ABI of the running kernel (0: none).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr and size 0 only queries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if rc < 0 { 0 } else { rc as i32 }
}

/// Restrict the calling thread (and its future children) to the plan. Returns the text
/// reported to the supervisor.
/// `abi` is the kernel's ([`kernel_abi`], > 0).
pub fn restrict_self(plan: &LandlockPlan, abi: i32) -> Result<String, landlock::RulesetError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))?;
    if abi >= 4 {
        ruleset = ruleset.handle_access(AccessNet::from_all(TARGET_ABI))?;
    }
    if abi >= 6 {
        ruleset = ruleset.scope(Scope::from_all(TARGET_ABI))?;
    }
    let mut created = ruleset.create()?;
    let read = AccessFs::from_read(TARGET_ABI);
    let all = AccessFs::from_all(TARGET_ABI);
    for (paths, access) in [(&plan.read_only, read), (&plan.read_write, all)] {
        for p in paths {
            let Ok(fd) = PathFd::new(p) else {
                tracing::debug!(path = %p, "landlock: path absent, no rule");
                continue;
            };
            let is_file = std::fs::metadata(p).map(|m| !m.is_dir()).unwrap_or(false);
            let access = if is_file {
                access & AccessFs::from_file(TARGET_ABI)
            } else {
                access
            };
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    if abi >= 4 {
        for port in &plan.connect_tcp {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }
    let status = created.restrict_self()?;
    let effective = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as i32,
        _ => abi,
    };
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => format!("enforced (ABI {effective})"),
        RulesetStatus::PartiallyEnforced => format!("partially enforced (ABI {effective})"),
        RulesetStatus::NotEnforced => "not enforced".into(),
    })
}

/// What [`restrict_writes`] confines: every right that changes the filesystem (files written,
/// truncated, created, removed, linked, renamed), not reading, executing or device ioctls.
fn write_rights() -> landlock::BitFlags<AccessFs> {
    AccessFs::from_write(TARGET_ABI) & !AccessFs::IoctlDev
}

/// Restrict the calling thread (and every process it starts later) to writing beneath
/// `writable` only; reads, exec and the network stay as they are. For a supervisor running as
/// uid 0 without a view of its own: the container runtime's read-only mounts are read-only at
/// their top only, so the host's /proc, /sys, /dev/shm or container storage under them stay
/// writable for uid 0. Sets NoNewPrivs (Landlock's condition). Returns the text `vigil status`
/// shows.
pub fn restrict_writes(writable: &[String]) -> Result<String, super::SandboxError> {
    let abi = kernel_abi();
    if abi <= 0 {
        return Ok("not supported".into());
    }
    let rights = write_rights();
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(rights)?
        .create()?;
    for p in writable {
        let Ok(fd) = PathFd::new(p) else {
            tracing::debug!(path = %p, "landlock: path absent, no rule");
            continue;
        };
        let is_file = std::fs::metadata(p).map(|m| !m.is_dir()).unwrap_or(false);
        let access = if is_file {
            rights & AccessFs::from_file(TARGET_ABI)
        } else {
            rights
        };
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = created.restrict_self()?;
    let effective = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as i32,
        _ => abi,
    };
    let beneath = writable.join(", ");
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => format!("writes: {beneath} only (ABI {effective})"),
        RulesetStatus::PartiallyEnforced => {
            format!("writes: {beneath} only, partially (ABI {effective})")
        }
        RulesetStatus::NotEnforced => "not enforced".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_confines_writes_only() {
        let w = write_rights();
        for a in [
            AccessFs::WriteFile,
            AccessFs::MakeReg,
            AccessFs::MakeDir,
            AccessFs::RemoveFile,
            AccessFs::Truncate,
            AccessFs::Refer,
        ] {
            assert!(w.contains(a), "{a:?}");
        }
        for a in [
            AccessFs::ReadFile,
            AccessFs::ReadDir,
            AccessFs::Execute,
            AccessFs::IoctlDev,
        ] {
            assert!(!w.contains(a), "{a:?}");
        }
    }
}
