//! Applying a [`SandboxPlan`] to the calling process, in the one safe order:
//! ids (with the bounding set trimmed while CAP_SETPCAP is still there) → capability sets →
//! NoNewPrivs → Landlock → seccomp. Must run before the process starts any thread.

use std::collections::HashSet;
use std::os::fd::RawFd;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};
use vigil_ipc_proto::{Role, SandboxPlan, SandboxReport};

use crate::landlock::LandlockError;
use crate::report::ReportError;
use crate::seccomp::{Policy, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("capabilities ({step}): {source}")]
    Caps {
        step: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("capability number {0} is unknown")]
    UnknownCap(u8),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error(transparent)]
    Seccomp(#[from] PolicyError),
    #[error("seccomp reporter: {0}")]
    Report(#[from] ReportError),
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
    move |e| SandboxError::Step {
        step,
        source: e.into(),
    }
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> SandboxError {
    move |source| SandboxError::Caps { step, source }
}

/// Map capability numbers (linux/capability.h) to the caps crate's names.
pub fn caps_from_numbers(nums: &[u8]) -> Result<HashSet<Capability>, SandboxError> {
    nums.iter()
        .map(|n| {
            caps::all()
                .into_iter()
                .find(|c| c.index() == *n)
                .ok_or(SandboxError::UnknownCap(*n))
        })
        .collect()
}

/// Drop to the plan's ids and capabilities, set NoNewPrivs, restrict with Landlock, then load
/// the role's seccomp policy (whose violations are reported on `report_fd` before the role
/// dies). Must run before the process starts any thread.
pub fn apply(
    role: Role,
    plan: &SandboxPlan,
    report_fd: RawFd,
) -> Result<SandboxReport, SandboxError> {
    let keep = caps_from_numbers(&plan.keep_caps)?;
    // The bounding set only limits what exec could grant, and nothing here execs: it holds
    // at once no more than what outlives start-up (the permitted set keeps the start-up ones).
    let bound = caps_from_numbers(&plan.steady_caps)?;

    // 1. Bounding set first: dropping from it needs CAP_SETPCAP, which goes away below.
    let can_setpcap = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(caps_err("read effective set"))?;
    if can_setpcap {
        let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding"))?;
        for c in bounding.difference(&bound) {
            caps::drop(None, CapSet::Bounding, *c).map_err(caps_err("drop bounding"))?;
        }
    } else {
        // No CAP_SETPCAP (started as the agent user with the unit's CapabilityBoundingSet=,
        // rootless, or an add list without it): the bounding set stays as inherited. It is
        // inert here: below, inheritable and ambient are emptied, permitted is `keep`, and
        // NoNewPrivs caps whatever an exec could compute at the permitted set we already
        // have. The supervisor says so once at start (not every child at every restart), and
        // `vigil status` shows each process's CapBnd.
        tracing::debug!(%role, "no CAP_SETPCAP: bounding set left as inherited");
    }

    // 2. Identity. Keep the permitted set across setresuid only if something must be kept.
    if let Some(ids) = &plan.ids {
        if !keep.is_empty() {
            nix::sys::prctl::set_keepcaps(true).map_err(step("PR_SET_KEEPCAPS"))?;
        }
        let groups: Vec<Gid> = ids.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(step("setgroups"))?;
        let gid = Gid::from_raw(ids.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
        let uid = Uid::from_raw(ids.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
        if !keep.is_empty() {
            nix::sys::prctl::set_keepcaps(false).map_err(step("PR_SET_KEEPCAPS off"))?;
        }
    }

    // 3. Capability sets: exactly `keep` in permitted and effective, nothing inheritable or
    //    ambient.
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient"))?;
    caps::set(None, CapSet::Inheritable, &HashSet::new()).map_err(caps_err("inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("permitted"))?;

    // A process that keeps capabilities must not be inspectable by its same-uid peers
    // (ptrace, /proc/PID/mem, /proc/PID/fd): non-dumpable makes its /proc entries root-owned.
    if role == Role::Privhelper || !keep.is_empty() {
        nix::sys::prctl::set_dumpable(false).map_err(step("PR_SET_DUMPABLE"))?;
    }

    // 4. No privilege can be gained through exec from here on.
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;

    // 5. Landlock.
    let landlock = crate::landlock::apply(&plan.landlock)?;
    let no_new_privs = nix::sys::prctl::get_no_new_privs().unwrap_or(false);

    // 6. Seccomp last (it must allow everything above has already done).
    let seccomp = if plan.seccomp {
        let policy = Policy::for_plan(role, &plan.seccomp_extra)?;
        let filter = policy.compile()?;
        crate::report::install(report_fd)?;
        filter.load().map_err(PolicyError::from)?;
        policy.name
    } else {
        "off".into()
    };

    Ok(SandboxReport {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        landlock,
        seccomp,
        no_new_privs,
    })
}

/// What the supervisor held before and keeps after [`narrow_supervisor`] (effective sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub before: HashSet<Capability>,
    pub after: HashSet<Capability>,
}

/// Narrow the calling process (the supervisor, once the view is built and the children's plans
/// are known) to `keep`: bounding set (while CAP_SETPCAP is still effective), ambient and
/// inheritable (the sets an unprivileged launch hands its children through exec), then
/// effective and permitted. A capability in `keep` that is not held stays not held.
pub fn narrow_supervisor(keep: &HashSet<Capability>) -> Result<Narrowed, SandboxError> {
    let before = caps::read(None, CapSet::Effective).map_err(caps_err("read effective"))?;
    if before.contains(&Capability::CAP_SETPCAP) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding"))?;
        for c in bounding.difference(keep) {
            caps::drop(None, CapSet::Bounding, *c).map_err(caps_err("drop bounding"))?;
        }
    }
    let ambient = caps::read(None, CapSet::Ambient).map_err(caps_err("read ambient"))?;
    for c in ambient.difference(keep) {
        caps::drop(None, CapSet::Ambient, *c).map_err(caps_err("drop ambient"))?;
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set).map_err(caps_err("read set"))?;
        let narrowed: HashSet<Capability> = now.intersection(keep).copied().collect();
        if narrowed != now {
            caps::set(None, set, &narrowed).map_err(caps_err("narrow set"))?;
        }
    }
    let after = caps::read(None, CapSet::Effective).map_err(caps_err("read effective"))?;
    Ok(Narrowed { before, after })
}
