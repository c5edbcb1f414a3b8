//! Applying a [`SandboxPlan`] to the calling process, in the one safe order: bounding set
//! (while CAP_SETPCAP is still there) → ids → capability sets → non-dumpable → NoNewPrivs →
//! Landlock → seccomp. Must run before the process starts any thread. Every syscall goes
//! through a [`Kernel`]: [`Linux`] in production, a recording one in the unit tests below.

pub mod kernel;
pub mod landlock;
pub mod report;
pub mod seccomp;

use std::collections::HashSet;
use std::os::fd::RawFd;

use caps::{CapSet, Capability};
use vigil_ipc_proto::{Role, SandboxPlan, SandboxReport};

pub use kernel::{Kernel, Linux};

use crate::plan::seccomp::{Policy, PolicyError};

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
    #[error("landlock ruleset: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::CompileError),
    #[error("seccomp reporter: {0}")]
    Report(#[from] report::ReportError),
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
/// the plan's seccomp policy (whose violations are reported on `report_fd` before the role
/// dies). Must run before the process starts any thread.
pub fn apply(
    role: Role,
    plan: &SandboxPlan,
    report_fd: RawFd,
) -> Result<SandboxReport, SandboxError> {
    apply_with(&mut Linux, role, plan, report_fd)
}

/// [`apply`] through the given kernel.
pub fn apply_with(
    k: &mut impl Kernel,
    role: Role,
    plan: &SandboxPlan,
    report_fd: RawFd,
) -> Result<SandboxReport, SandboxError> {
    // Everything that can be checked without the kernel first: a bad plan changes nothing.
    let keep = caps_from_numbers(&plan.keep_caps)?;
    // The bounding set only limits what exec could grant, and nothing here execs: it holds
    // at once no more than what outlives start-up (the permitted set keeps the start-up ones).
    let bound = caps_from_numbers(&plan.steady_caps)?;
    let policy = if plan.seccomp.is_empty() {
        None
    } else {
        Some(Policy::from_files(&plan.seccomp)?)
    };

    // 1. Bounding set first: dropping from it needs CAP_SETPCAP, which goes away below.
    if k.caps(CapSet::Effective)?
        .contains(&Capability::CAP_SETPCAP)
    {
        for c in k.caps(CapSet::Bounding)?.difference(&bound) {
            k.drop_bounding(*c)?;
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
            k.set_keepcaps(true)?;
        }
        k.setgroups(&ids.groups)?;
        k.setresgid(ids.gid)?;
        k.setresuid(ids.uid)?;
        if !keep.is_empty() {
            k.set_keepcaps(false)?;
        }
    }

    // 3. Capability sets: exactly `keep` in permitted and effective, nothing inheritable or
    //    ambient.
    for c in k.caps(CapSet::Ambient)? {
        k.drop_ambient(c)?;
    }
    k.set_caps(CapSet::Inheritable, &HashSet::new())?;
    k.set_caps(CapSet::Effective, &keep)?;
    k.set_caps(CapSet::Permitted, &keep)?;

    // 4. Not inspectable by same-uid peers (ptrace, /proc/PID/mem, /proc/PID/fd), as the plan
    //    says.
    if plan.non_dumpable {
        k.set_non_dumpable()?;
    }

    // 5. No privilege can be gained through exec from here on.
    k.set_no_new_privs()?;

    // 6. Landlock, best effort on older kernels.
    let landlock = if !plan.landlock.enabled {
        "off".to_string()
    } else {
        match k.landlock_abi() {
            abi if abi <= 0 => "not supported".to_string(),
            abi => k.landlock_restrict(&plan.landlock, abi)?,
        }
    };
    let no_new_privs = k.no_new_privs();

    // 7. Seccomp last (it must allow everything above has already done).
    let seccomp = match policy {
        Some(p) => {
            k.seccomp_load(&p, report_fd)?;
            p.name
        }
        None => "off".into(),
    };

    let (uid, gid) = k.ids();
    Ok(SandboxReport {
        uid,
        gid,
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
    narrow_with(&mut Linux, keep)
}

/// [`narrow_supervisor`] through the given kernel.
pub fn narrow_with(
    k: &mut impl Kernel,
    keep: &HashSet<Capability>,
) -> Result<Narrowed, SandboxError> {
    let before = k.caps(CapSet::Effective)?;
    if before.contains(&Capability::CAP_SETPCAP) {
        for c in k.caps(CapSet::Bounding)?.difference(keep) {
            k.drop_bounding(*c)?;
        }
    }
    for c in k.caps(CapSet::Ambient)?.difference(keep) {
        k.drop_ambient(*c)?;
    }
    // Effective before permitted: the effective set may never exceed the permitted one.
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = k.caps(set)?;
        let narrowed: HashSet<Capability> = now.intersection(keep).copied().collect();
        if narrowed != now {
            k.set_caps(set, &narrowed)?;
        }
    }
    let after = k.caps(CapSet::Effective)?;
    Ok(Narrowed { before, after })
}

#[cfg(test)]
mod tests {
    use super::kernel::recording::Recording;
    use super::*;
    use vigil_ipc_proto::{Ids, LandlockPlan};

    fn plan() -> SandboxPlan {
        SandboxPlan {
            ids: Some(Ids {
                uid: 990,
                gid: 985,
                groups: vec![985],
            }),
            keep_caps: vec![Capability::CAP_SYSLOG.index(), Capability::CAP_BPF.index()],
            steady_caps: Vec::new(),
            non_dumpable: true,
            seccomp: vec!["privhelper".into()],
            landlock: LandlockPlan {
                enabled: true,
                read_only: vec!["/proc".into()],
                read_write: Vec::new(),
                connect_tcp: Vec::new(),
            },
        }
    }

    #[test]
    fn the_drop_happens_in_the_one_safe_order() {
        let mut k = Recording::root(6);
        let r = apply_with(&mut k, Role::Privhelper, &plan(), 3).unwrap();
        assert_eq!(
            k.steps(),
            [
                "drop_bounding",
                "set_keepcaps",
                "setgroups",
                "setresgid",
                "setresuid",
                "set_keepcaps",
                "set_caps",
                "set_non_dumpable",
                "set_no_new_privs",
                "landlock_restrict",
                "seccomp_load",
            ]
        );
        // Every bounding capability went (steady set empty); permitted holds exactly `keep`.
        assert!(k.get(CapSet::Bounding).is_empty());
        let keep: HashSet<_> = [Capability::CAP_SYSLOG, Capability::CAP_BPF].into();
        assert_eq!(k.get(CapSet::Permitted), &keep);
        assert_eq!(k.get(CapSet::Effective), &keep);
        assert_eq!((r.uid, r.gid), (990, 985));
        assert_eq!(r.seccomp, "privhelper");
        assert_eq!(r.landlock, "enforced (ABI 6)");
        assert!(r.no_new_privs);
        // Effective is lowered before permitted (capset refuses effective ⊄ permitted).
        let sets: Vec<&String> = k
            .calls
            .iter()
            .filter(|c| c.starts_with("set_caps"))
            .collect();
        assert_eq!(
            sets,
            [
                "set_caps(Inheritable, 0)",
                "set_caps(Effective, 2)",
                "set_caps(Permitted, 2)"
            ]
        );
    }

    #[test]
    fn a_failing_step_stops_the_drop_there() {
        for (fail, last_ok) in [
            ("setresuid", "setresgid"),
            ("setgroups", "set_keepcaps"),
            ("set_no_new_privs", "set_non_dumpable"),
            ("landlock_restrict", "set_no_new_privs"),
            ("seccomp_load", "landlock_restrict"),
        ] {
            let mut k = Recording::root(6);
            k.fail = Some(fail);
            let err = apply_with(&mut k, Role::Privhelper, &plan(), 3).unwrap_err();
            assert!(matches!(err, SandboxError::Step { .. }), "{fail}: {err}");
            let steps = k.steps();
            assert_eq!(
                steps.last(),
                Some(&fail),
                "{fail}: nothing after the failure"
            );
            assert_eq!(steps[steps.len() - 2], last_ok, "{fail}: {steps:?}");
        }
    }

    #[test]
    fn a_bad_plan_changes_nothing() {
        for bad in [
            SandboxPlan {
                keep_caps: vec![200],
                ..plan()
            },
            SandboxPlan {
                seccomp: vec!["shipper-dns".into()],
                ..plan()
            },
            SandboxPlan {
                seccomp: vec!["collector".into(), "nope".into()],
                ..plan()
            },
        ] {
            let mut k = Recording::root(6);
            assert!(apply_with(&mut k, Role::Collector, &bad, 3).is_err());
            assert!(k.calls.is_empty(), "{:?}", k.calls);
        }
    }

    #[test]
    fn without_landlock_or_setpcap_or_a_filter() {
        // A kernel without Landlock: reported, and seccomp still loads.
        let mut k = Recording::root(0);
        let r = apply_with(&mut k, Role::Privhelper, &plan(), 3).unwrap();
        assert_eq!(r.landlock, "not supported");
        assert!(!k.steps().contains(&"landlock_restrict"));
        assert_eq!(k.steps().last(), Some(&"seccomp_load"));
        // No CAP_SETPCAP: the bounding set is left alone; no ids, no filter, no dumpable
        // change asked for: none made.
        let mut k = Recording::root(6);
        k.set(CapSet::Effective).remove(&Capability::CAP_SETPCAP);
        let p = SandboxPlan {
            ids: None,
            keep_caps: Vec::new(),
            non_dumpable: false,
            seccomp: Vec::new(),
            ..plan()
        };
        let r = apply_with(&mut k, Role::Collector, &p, 3).unwrap();
        assert_eq!(
            k.steps(),
            ["set_caps", "set_no_new_privs", "landlock_restrict"]
        );
        assert_eq!(r.seccomp, "off");
        assert_eq!(k.get(CapSet::Bounding).len(), caps::all().len());
    }

    #[test]
    fn the_supervisor_narrows_every_set() {
        let mut k = Recording::root(6);
        *k.set(CapSet::Ambient) = [Capability::CAP_SYS_ADMIN].into();
        *k.set(CapSet::Inheritable) = [Capability::CAP_SYS_ADMIN].into();
        let keep: HashSet<_> = [Capability::CAP_KILL, Capability::CAP_SETPCAP].into();
        let n = narrow_with(&mut k, &keep).unwrap();
        assert_eq!(n.after, keep);
        assert_eq!(n.before.len(), caps::all().len());
        for set in [CapSet::Bounding, CapSet::Permitted, CapSet::Effective] {
            assert_eq!(k.get(set), &keep, "{set:?}");
        }
        assert!(k.get(CapSet::Ambient).is_empty() && k.get(CapSet::Inheritable).is_empty());
        assert_eq!(
            k.steps(),
            ["drop_bounding", "drop_ambient", "set_caps"],
            "bounding while CAP_SETPCAP is effective, then the rest"
        );
    }
}
