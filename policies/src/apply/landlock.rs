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
