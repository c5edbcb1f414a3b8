//! How the supervisor was started, which decides what it must do itself: as uid 0 (plain root
//! or a container's add list) it builds the view (CAP_SYS_ADMIN; unless `no_remount_root`,
//! when it confines its own writes instead, see [`write_confinement`]), switches its children
//! to the agent user and needs CAP_SETUID/SETGID/SETPCAP/CHOWN/KILL for that; already as the agent user
//! (systemd `User=` + `AmbientCapabilities=`, or file capabilities) it holds only the
//! features' capabilities and switches nobody; as an ordinary user with no capability at all
//! (rootless) it builds its view in a user namespace.

use std::collections::HashSet;

use caps::Capability;
use vigil_ipc_proto::Feature;
use vigil_policies::features::{self, Evaluation, Launch, names};

/// Reason shown for `user_switch` when no switch is needed.
pub const ALREADY_AGENT_USER: &str = "already the agent user";

/// This process's launch: its real and effective uids, whether it holds any capability,
/// against the agent user's uid.
pub fn current(held: &HashSet<Capability>, agent_uid: u32) -> Launch {
    Launch::detect(
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getuid().as_raw(),
        !held.is_empty(),
        agent_uid,
    )
}

/// Fit the feature evaluation to the launch. Started as the agent user, the supervisor needs
/// neither CAP_SETUID/SETGID (no switch: `user_switch` is satisfied) nor, by itself, a view
/// (`virtual_root` is the service manager's or, with CAP_SYS_ADMIN, still ours): neither is a
/// missing capability, so neither appears in the warning or fails `enforce_sys_caps`.
/// Launched as root nothing changes.
pub fn adjust(eval: &mut Evaluation, launch: Launch) {
    if !launch.agent_user {
        return;
    }
    for f in &mut eval.features {
        match f.feature {
            Feature::UserSwitch if f.configured => {
                f.enabled = true;
                f.using.clear();
                f.missing.clear();
                f.reason = ALREADY_AGENT_USER.into();
            }
            Feature::VirtualRoot if !f.configured => {
                f.reason = "no_remount_root: the host view is the service manager's \
                            (ProtectSystem=, InaccessiblePaths=)"
                    .into();
            }
            Feature::VirtualRoot if !f.missing.is_empty() => {
                f.missing.clear();
                f.reason = "started as the agent user without CAP_SYS_ADMIN: not remounted \
                            (NO_REMOUNT_ROOT)"
                    .into();
            }
            _ => {}
        }
    }
}

/// Who the children run as when no switch happens, for the one line that says so. `None`
/// when they run as the agent user (switched, or the supervisor already is that user).
pub fn identity_warning(
    launch: Launch,
    switch_user: bool,
    non_root_mode: bool,
    euid: u32,
    user: &str,
) -> Option<String> {
    // Rootless, the invoking user is as unprivileged as the agent user would be; the feature
    // table and the missing-capabilities warning already say user_switch is off.
    if switch_user || launch.agent_user || launch.rootless {
        return None;
    }
    let why = if !non_root_mode {
        "non-root mode is off"
    } else {
        "CAP_SETUID/CAP_SETGID are missing (feature user_switch)"
    };
    let who = if euid == 0 {
        "root (uid 0)".to_string()
    } else {
        format!("uid {euid}")
    };
    Some(format!(
        "collector, shipper and privhelper run as {who} instead of {user}: {why}; they still drop every capability they do not need"
    ))
}

/// Without CAP_SETPCAP the children cannot trim their bounding sets. After their sandbox they
/// hold empty inheritable and ambient sets, only their own permitted set, and NoNewPrivs, so
/// exec cannot raise anything from the bounding set: what it still lists is inert (and
/// `vigil status` shows it as CapBnd). Said once at start instead of by every child:
/// `Some((true, ..))` is a warning (a root launch, whose add list includes CAP_SETPCAP),
/// `Some((false, ..))` information (the agent user's bounding set is the one the service
/// manager set, e.g. the unit's `CapabilityBoundingSet=`; rootless it is the invoking user's).
pub fn bounding_note(
    launch: Launch,
    held: &HashSet<Capability>,
    bounding: &HashSet<Capability>,
) -> Option<(bool, String)> {
    if held.contains(&Capability::CAP_SETPCAP) {
        return None;
    }
    let list = features::sorted(bounding.iter().copied());
    let shown = if list.is_empty() {
        "empty".to_string()
    } else if list.len() > 12 {
        format!("{} capabilities", list.len())
    } else {
        names(&list)
    };
    let text = format!(
        "no CAP_SETPCAP: the children keep the inherited bounding set ({shown}); nothing in it \
         can be regained (empty inheritable/ambient sets, NoNewPrivs)"
    );
    Some((launch.root, text))
}

/// Why the supervisor leaves its own writes unconfined (see [`write_confinement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconfined {
    /// Not uid 0: DAC already keeps it out of root's files (and the service manager's
    /// ProtectSystem= or the rootless view does the rest).
    NotRoot,
    /// It lives in its own trimmed view, read-only all the way down.
    OwnView,
    /// An enabled opt-in feature has the privhelper read other processes' /proc links or
    /// namespaces, which a Landlock domain (inherited from the supervisor) forbids.
    PrivhelperInspects,
}

/// Whether the supervisor confines its own writes with Landlock (`Ok`) before it starts the
/// children. Only a uid-0 supervisor without a view of its own needs it: a container
/// runtime's read-only mounts (readOnlyRootFilesystem, readOnly hostPath) are read-only at
/// their top only, so the host's /proc, /sys, /dev/shm or container storage mounted beneath
/// /hostfs stay writable for uid 0.
pub fn write_confinement(
    launch: Launch,
    virtual_root: bool,
    privhelper_inspects_others: bool,
) -> Result<(), Unconfined> {
    if !launch.root {
        Err(Unconfined::NotRoot)
    } else if virtual_root {
        Err(Unconfined::OwnView)
    } else if privhelper_inspects_others {
        Err(Unconfined::PrivhelperInspects)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability::*;
    use vigil_ipc_proto::AgentConfig;
    use vigil_policies::features::{KernelFacts, evaluate, required_caps};

    fn facts() -> KernelFacts {
        KernelFacts::reference()
    }

    const VIGIL: u32 = 999;

    #[test]
    fn detects_the_launch() {
        let root = Launch::detect(0, 0, true, VIGIL);
        assert_eq!(
            (root.root, root.rootless, root.agent_user),
            (true, false, false)
        );
        // Root with every capability dropped is still root, not rootless.
        assert!(!Launch::detect(0, 0, false, VIGIL).rootless);
        // systemd User=vigil + AmbientCapabilities=: capabilities are real, no user namespace.
        let unit = Launch::detect(VIGIL, VIGIL, true, VIGIL);
        assert_eq!(
            (unit.root, unit.rootless, unit.agent_user),
            (false, false, true)
        );
        // An ordinary user with nothing: rootless.
        let plain = Launch::detect(1000, 1000, false, VIGIL);
        assert_eq!((plain.rootless, plain.agent_user), (true, false));
        // ... and as the agent user itself (e.g. `--user nobody` run by nobody).
        let same = Launch::detect(1000, 1000, false, 1000);
        assert_eq!((same.rootless, same.agent_user), (true, true));
        // Another user with file capabilities: neither rootless nor the agent user.
        let other = Launch::detect(1000, 1000, true, VIGIL);
        assert_eq!((other.rootless, other.agent_user), (false, false));
        // A real uid that differs (setuid-style) is not "already the agent user".
        assert!(!Launch::detect(VIGIL, 1000, true, VIGIL).agent_user);
    }

    fn unit_caps() -> HashSet<Capability> {
        [CAP_SYSLOG, CAP_PERFMON, CAP_BPF].into()
    }

    #[test]
    fn agent_user_launch_needs_no_switch_and_warns_about_nothing() {
        let mut cfg = AgentConfig {
            no_remount_root: true,
            ..AgentConfig::default()
        };
        // Exactly the agent user's add list of the doctor.
        let held: HashSet<_> = required_caps(&cfg, &facts(), Launch::AGENT_USER)
            .into_iter()
            .collect();
        assert_eq!(held, unit_caps());
        let launch = Launch::detect(VIGIL, VIGIL, true, VIGIL);
        let mut ev = evaluate(&cfg, &held, &facts());
        assert!(
            ev.warning().unwrap().contains(Feature::UserSwitch.as_str()),
            "before"
        );
        adjust(&mut ev, launch);
        assert_eq!(ev.warning(), None, "{:?}", ev.missing());
        let f = |n: Feature| ev.get(n).unwrap().clone();
        assert!(f(Feature::UserSwitch).enabled);
        assert_eq!(f(Feature::UserSwitch).reason, ALREADY_AGENT_USER);
        assert!(!f(Feature::VirtualRoot).enabled);
        assert!(f(Feature::VirtualRoot).reason.contains("no_remount_root"));
        for n in [
            Feature::KmsgEvents,
            Feature::EbpfExec,
            Feature::EbpfFlowsTracepoint,
            Feature::ProcessMetrics,
        ] {
            assert!(f(n).enabled, "{n}");
        }
        assert_eq!(ev.privhelper_caps(), vec![CAP_SYSLOG, CAP_PERFMON, CAP_BPF]);

        // One capability fewer: exactly its feature in the warning, nothing of the
        // supervisor's (SETUID/SETGID, SYS_ADMIN, SETPCAP, CHOWN, KILL).
        let mut less = held.clone();
        less.remove(&CAP_SYSLOG);
        let mut ev = evaluate(&cfg, &less, &facts());
        adjust(&mut ev, launch);
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(off, vec![Feature::KmsgEvents]);
        let w = ev.warning().unwrap();
        for c in ["SETUID", "SETGID", "SYS_ADMIN", "SETPCAP", "CHOWN", "KILL"] {
            assert!(!w.contains(c), "{w}");
        }

        // Without no_remount_root and without CAP_SYS_ADMIN: no view, but not "missing".
        cfg.no_remount_root = false;
        let mut ev = evaluate(&cfg, &held, &facts());
        adjust(&mut ev, launch);
        assert_eq!(ev.warning(), None);
        assert!(!ev.is_enabled(Feature::VirtualRoot));
        // With it the supervisor may still build its own view.
        let mut more = held.clone();
        more.insert(CAP_SYS_ADMIN);
        let mut ev = evaluate(&cfg, &more, &facts());
        adjust(&mut ev, launch);
        assert!(ev.is_enabled(Feature::VirtualRoot));
    }

    #[test]
    fn only_a_root_supervisor_without_its_own_view_confines_its_writes() {
        let root = Launch::detect(0, 0, true, VIGIL);
        let unit = Launch::detect(VIGIL, VIGIL, true, VIGIL);
        let rootless = Launch::detect(1000, 1000, false, VIGIL);
        assert_eq!(write_confinement(root, false, false), Ok(()));
        assert_eq!(
            write_confinement(root, true, false),
            Err(Unconfined::OwnView)
        );
        assert_eq!(
            write_confinement(root, false, true),
            Err(Unconfined::PrivhelperInspects)
        );
        for l in [unit, rootless] {
            assert_eq!(write_confinement(l, false, false), Err(Unconfined::NotRoot));
        }
    }

    #[test]
    fn root_launch_is_left_as_it_was() {
        let cfg = AgentConfig::default();
        let launch = Launch::detect(0, 0, true, VIGIL);
        for held in [HashSet::new(), unit_caps(), caps::all()] {
            let before = evaluate(&cfg, &held, &facts());
            let mut after = before.clone();
            adjust(&mut after, launch);
            assert_eq!(before, after);
        }
        // non_root_mode off as the agent user: user_switch stays "disabled in config".
        let cfg = AgentConfig {
            non_root_mode: false,
            ..AgentConfig::default()
        };
        let mut ev = evaluate(&cfg, &unit_caps(), &facts());
        adjust(&mut ev, Launch::detect(VIGIL, VIGIL, true, VIGIL));
        assert!(!ev.is_enabled(Feature::UserSwitch));
    }

    #[test]
    fn identity_warning_only_when_children_end_up_root_or_foreign() {
        let root = Launch::detect(0, 0, true, VIGIL);
        assert_eq!(identity_warning(root, true, true, 0, "vigil"), None);
        let w = identity_warning(root, false, true, 0, "vigil").unwrap();
        assert!(
            w.contains("root (uid 0)") && w.contains("CAP_SETUID"),
            "{w}"
        );
        let w = identity_warning(root, false, false, 0, "vigil").unwrap();
        assert!(w.contains("non-root mode is off"), "{w}");
        let unit = Launch::detect(VIGIL, VIGIL, true, VIGIL);
        assert_eq!(identity_warning(unit, false, true, VIGIL, "vigil"), None);
        let other = Launch::detect(1000, 1000, true, VIGIL);
        let w = identity_warning(other, false, true, 1000, "vigil").unwrap();
        assert!(w.contains("uid 1000") && !w.contains("root"), "{w}");
        let plain = Launch::detect(1000, 1000, false, VIGIL);
        assert_eq!(identity_warning(plain, false, true, 1000, "vigil"), None);
    }

    #[test]
    fn bounding_note_once_and_at_the_right_level() {
        let root = Launch::detect(0, 0, true, VIGIL);
        let unit = Launch::detect(VIGIL, VIGIL, true, VIGIL);
        let all: HashSet<_> = caps::all();
        assert_eq!(
            bounding_note(root, &all, &all),
            None,
            "trimmed by the children"
        );
        let (warn, text) = bounding_note(unit, &unit_caps(), &unit_caps()).unwrap();
        assert!(
            !warn,
            "the unit's CapabilityBoundingSet= is the normal case"
        );
        assert!(text.contains("CAP_SYSLOG, CAP_PERFMON, CAP_BPF"), "{text}");
        let mut no_setpcap = all.clone();
        no_setpcap.remove(&CAP_SETPCAP);
        let (warn, text) = bounding_note(root, &no_setpcap, &no_setpcap).unwrap();
        assert!(warn, "root without the SETPCAP of its add list");
        assert!(text.contains("capabilities"), "{text}");
        let (_, text) = bounding_note(unit, &unit_caps(), &HashSet::new()).unwrap();
        assert!(text.contains("(empty)"), "{text}");
    }
}
