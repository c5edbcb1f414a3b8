//! The privilege plan: what each child drops and keeps, as pure data computed from the config,
//! the feature evaluation and the agent user. Applied by the child itself
//! (`vigil_policies::apply`) before it reads any peer input.

use vigil_ipc_proto::delivery::NetNeeds;
use vigil_ipc_proto::{
    AgentConfig, Attached, BpfProgram, Feature, Ids, InitConfig, Role, SandboxPlan,
};
use vigil_policies::LandlockVars;
use vigil_policies::features::Evaluation;

use crate::error::Result;
use crate::users::HostUser;

/// Facts of this run that shape the plan.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Children switch to the agent user (user_switch enabled and non_root_mode).
    pub switch_user: bool,
    /// The virtual root is in place: the host view is `/` for the children.
    pub virtual_root: bool,
    pub hostname: String,
    pub journal_dir: String,
    /// What the shipper's delivery settings need from its sandbox.
    pub net: NetNeeds,
    /// The supervisor holds a memfd of shipper inputs (OTLP on).
    pub shipper_inputs: bool,
    /// The supervisor holds the Prometheus endpoint's listening socket.
    pub prometheus: bool,
    /// This kernel gives fd counts by stat (Linux >= 6.2).
    pub fd_count_by_stat: bool,
}

/// Where a supervisor that confines its own writes (`launch::write_confinement`) may still
/// write: the runtime dir (status socket) and the journal dir, which the shipper, inside the
/// supervisor's Landlock domain, must be able to write.
pub fn supervisor_writable(runtime_dir: &str, journal_dir: &str) -> Vec<String> {
    let mut v = vec![runtime_dir.to_string()];
    let beneath = std::path::Path::new(journal_dir).starts_with(runtime_dir);
    if !beneath {
        v.push(journal_dir.to_string());
    }
    v
}

/// The seccomp policy files of a role for this run: its own, then `shipper-dns` (UDP to the
/// nameservers) only when a name must be resolved, `shipper-listen` (accept4 on the socket the
/// supervisor bound) only with the Prometheus endpoint, `collector-flows` (bpf() map lookups
/// only) only with a flow feature on, `collector-taskiter` (bpf(BPF_ITER_CREATE) only) with the
/// task iterator.
fn seccomp_files(role: Role, eval: &Evaluation, facts: &RunFacts) -> Vec<String> {
    let mut v: Vec<String> = vigil_policies::seccomp::policy_name(role)
        .map(str::to_string)
        .into_iter()
        .collect();
    let flows = BpfProgram::FLOW_SOURCES.map(|(_, p)| p.feature());
    if role == Role::Collector && flows.iter().any(|f| eval.is_enabled(*f)) {
        v.push("collector-flows".to_string());
    }
    if role == Role::Shipper {
        if facts.net.dns {
            v.push("shipper-dns".to_string());
        }
        if facts.prometheus {
            v.push("shipper-listen".to_string());
        }
    }
    if role == Role::Collector && eval.is_enabled(Feature::ProcessIter) {
        v.push("collector-taskiter".to_string());
    }
    v
}

/// Descriptors sent with a role's Init, in order.
pub fn attached(role: Role, facts: &RunFacts) -> Vec<Attached> {
    let mut v = Vec::new();
    if role == Role::Shipper {
        if facts.shipper_inputs {
            v.push(Attached::ShipperInputs);
        }
        if facts.prometheus {
            v.push(Attached::PrometheusListener);
        }
    }
    v
}

/// The capabilities the supervisor keeps once the view is built: what restarting its children
/// needs and nothing else. Every child's start-up set (a child gets them from the supervisor
/// through fork and exec), CAP_SETUID/CAP_SETGID when a child switches to the agent user,
/// CAP_KILL to signal children that run under another uid, and CAP_SETPCAP (when held) so a
/// child can empty its own bounding set. Mounting, chroot, raw I/O, module loading, file
/// ownership and the rest go.
pub fn supervisor_steady_caps(
    inits: &[InitConfig],
    euid: u32,
    held_setpcap: bool,
) -> Result<std::collections::HashSet<caps::Capability>> {
    use caps::Capability as C;
    let mut keep = std::collections::HashSet::new();
    for init in inits {
        keep.extend(vigil_policies::caps_from_numbers(&init.sandbox.keep_caps)?);
        if let Some(ids) = &init.sandbox.ids {
            keep.extend([C::CAP_SETUID, C::CAP_SETGID]);
            if ids.uid != euid {
                keep.insert(C::CAP_KILL);
            }
        }
    }
    if held_setpcap {
        keep.insert(C::CAP_SETPCAP);
    }
    Ok(keep)
}

pub fn journal_dir(cfg: &AgentConfig) -> String {
    cfg.shipper
        .journal_dir
        .clone()
        .unwrap_or_else(|| format!("{}/journal", cfg.runtime_dir.trim_end_matches('/')))
}

pub fn sandbox_plan(
    role: Role,
    cfg: &AgentConfig,
    eval: &Evaluation,
    user: Option<&HostUser>,
    facts: &RunFacts,
) -> Result<SandboxPlan> {
    let ids = match (facts.switch_user, user) {
        (true, Some(u)) => Some(Ids {
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }),
        _ => None,
    };
    let numbers = |caps: Vec<caps::Capability>| caps.iter().map(|c| c.index()).collect();
    let (keep_caps, steady_caps) = match role {
        Role::Privhelper => (
            numbers(eval.privhelper_caps()),
            numbers(eval.privhelper_steady_caps()),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let vars = LandlockVars {
        host_root: if facts.virtual_root {
            "/".into()
        } else {
            cfg.host_root.clone()
        },
        runtime_dir: cfg.runtime_dir.clone(),
        journal_dir: facts.journal_dir.clone(),
        connect_ports: facts.net.connect_tcp.clone(),
    };
    let mut landlock = vigil_policies::landlock_plan(role, &vars)?;
    // A Landlock domain may not inspect processes outside it (ptrace access mode checks, which
    // capabilities do not override): /proc/PID/fd links, /proc/PID/ns/net, /proc/PID/io and
    // /proc/PID/exe of other processes become EACCES. The privhelper exists to read exactly
    // those, so it goes without Landlock when those features are on; its read-only view,
    // seccomp policy and trimmed capability sets still confine it.
    if role == Role::Privhelper && eval.privhelper_inspects_others() {
        landlock.enabled = false;
    }
    Ok(SandboxPlan {
        ids,
        // A process that keeps capabilities must not be inspectable by its same-uid peers:
        // non-dumpable makes its /proc entries root-owned.
        non_dumpable: role == Role::Privhelper || !keep_caps.is_empty(),
        keep_caps,
        steady_caps,
        seccomp: seccomp_files(role, eval, facts),
        landlock,
    })
}

pub fn init_config(
    role: Role,
    cfg: &AgentConfig,
    eval: &Evaluation,
    user: Option<&HostUser>,
    facts: &RunFacts,
) -> Result<InitConfig> {
    let mut shipper = cfg.shipper.clone();
    shipper.journal_dir = Some(facts.journal_dir.clone());
    Ok(InitConfig {
        role,
        sandbox: sandbox_plan(role, cfg, eval, user, facts)?,
        host_root: if facts.virtual_root {
            "/".into()
        } else {
            cfg.host_root.clone()
        },
        runtime_dir: cfg.runtime_dir.clone(),
        hostname: facts.hostname.clone(),
        enabled_features: eval.enabled(),
        fd_count_by_stat: facts.fd_count_by_stat,
        collector: cfg.collector.clone(),
        shipper,
        attached: attached(role, facts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability::*;
    use std::collections::HashSet;
    use vigil_policies::features::{KernelFacts, evaluate};

    fn facts() -> KernelFacts {
        KernelFacts::reference()
    }

    fn run() -> RunFacts {
        RunFacts {
            switch_user: true,
            virtual_root: true,
            hostname: "h".into(),
            journal_dir: "/run/vigil/journal".into(),
            net: NetNeeds {
                connect_tcp: vec![4318],
                dns: false,
                tls: false,
            },
            shipper_inputs: true,
            prometheus: false,
            fd_count_by_stat: true,
        }
    }

    fn user() -> HostUser {
        HostUser {
            name: "vigil".into(),
            uid: 990,
            gid: 985,
            groups: vec![985],
        }
    }

    #[test]
    fn supervisor_writes_the_runtime_and_journal_dirs_only() {
        assert_eq!(
            supervisor_writable("/run/vigil", "/run/vigil/journal"),
            vec!["/run/vigil".to_string()]
        );
        // A journal elsewhere is writable too (the shipper lives inside the domain); a
        // sibling whose name merely starts the same is not beneath.
        assert_eq!(
            supervisor_writable("/run/vigil", "/var/lib/vigil-journal"),
            vec![
                "/run/vigil".to_string(),
                "/var/lib/vigil-journal".to_string()
            ]
        );
        assert_eq!(supervisor_writable("/run/vigil", "/run/vigil2").len(), 2);
    }

    #[test]
    fn roles_get_their_plans() {
        let cfg = AgentConfig::default();
        let all: HashSet<_> = caps::all().into_iter().collect();
        let ev = evaluate(&cfg, &all, &facts());
        let ph = sandbox_plan(Role::Privhelper, &cfg, &ev, Some(&user()), &run()).unwrap();
        assert_eq!(ph.ids.as_ref().unwrap().uid, 990);
        for c in [CAP_SYSLOG, CAP_BPF, CAP_PERFMON] {
            assert!(ph.keep_caps.contains(&c.index()), "{c}");
        }
        // Flows come from tracepoints by default: no network capability.
        assert!(!ph.keep_caps.contains(&CAP_NET_RAW.index()));
        assert!(!ph.keep_caps.contains(&CAP_SETUID.index()));
        assert!(!ph.keep_caps.contains(&CAP_SYS_ADMIN.index()));
        for role in [Role::Collector, Role::Shipper] {
            let p = sandbox_plan(role, &cfg, &ev, Some(&user()), &run()).unwrap();
            assert!(p.keep_caps.is_empty());
            assert_eq!(p.ids.as_ref().unwrap().gid, 985);
            assert_eq!(p.seccomp[0], role.as_str());
            // The task iterator (on by default) adds bpf(BPF_ITER_CREATE) to the collector.
            assert_eq!(
                p.seccomp.iter().any(|f| f == "collector-taskiter"),
                role == Role::Collector,
                "{:?}",
                p.seccomp
            );
            assert!(p.landlock.enabled);
            assert!(!p.non_dumpable);
        }
        let mut off = cfg.clone();
        off.collector.process_iter = false;
        let ev_off = evaluate(&off, &all, &facts());
        let p = sandbox_plan(Role::Collector, &off, &ev_off, Some(&user()), &run()).unwrap();
        assert_eq!(p.seccomp, ["collector", "collector-flows"]);
        let s = sandbox_plan(Role::Shipper, &cfg, &ev, Some(&user()), &run()).unwrap();
        assert_eq!(
            s.landlock.read_write,
            vec!["/run/vigil/journal".to_string()]
        );
        assert_eq!(s.landlock.connect_tcp, vec![4318]);
        assert_eq!(s.seccomp, ["shipper"]);
        let c = sandbox_plan(Role::Collector, &cfg, &ev, Some(&user()), &run()).unwrap();
        assert!(c.landlock.read_only.contains(&"/".to_string()));
        // Flows and the task iterator are on by default: the collector may read the flow maps
        // (bpf() lookups only) and make iterators (BPF_ITER_CREATE only).
        assert!(
            c.landlock.connect_tcp.is_empty()
                && c.seccomp == ["collector", "collector-flows", "collector-taskiter"]
        );
        let mut no_flows = cfg.clone();
        no_flows.collector.ebpf_flows = false;
        let ev2 = evaluate(&no_flows, &all, &facts());
        let c2 = sandbox_plan(Role::Collector, &no_flows, &ev2, Some(&user()), &run()).unwrap();
        assert_eq!(c2.seccomp, ["collector", "collector-taskiter"]);
        // By default the privhelper inspects no other process: Landlock stays on.
        assert!(ph.landlock.enabled);
        assert!(ph.non_dumpable && ph.seccomp == ["privhelper"]);
        // Socket counts and setns need other processes' fd links and namespaces, which
        // Landlock would hide from it.
        for (sockets, source) in [(true, "proc"), (false, "setns")] {
            let mut cfg2 = cfg.clone();
            cfg2.collector.process_sockets = sockets;
            cfg2.collector.netns_source = source.into();
            let ev2 = evaluate(&cfg2, &all, &facts());
            let ph2 = sandbox_plan(Role::Privhelper, &cfg2, &ev2, Some(&user()), &run()).unwrap();
            assert!(!ph2.landlock.enabled, "{sockets} {source}");
            assert!(ph2.keep_caps.contains(&CAP_SYS_PTRACE.index()));
        }
    }

    #[test]
    fn delivery_needs_shape_the_shipper_sandbox_only() {
        let cfg = AgentConfig::default();
        let all: HashSet<_> = caps::all().into_iter().collect();
        let ev = evaluate(&cfg, &all, &facts());
        let mut r = run();
        r.net = NetNeeds {
            connect_tcp: vec![53, 443, 3128],
            dns: true,
            tls: true,
        };
        r.prometheus = true;
        let s = sandbox_plan(Role::Shipper, &cfg, &ev, Some(&user()), &r).unwrap();
        assert_eq!(s.landlock.connect_tcp, vec![53, 443, 3128]);
        assert_eq!(s.seccomp, ["shipper", "shipper-dns", "shipper-listen"]);
        assert_eq!(
            attached(Role::Shipper, &r),
            vec![Attached::ShipperInputs, Attached::PrometheusListener]
        );
        for role in [Role::Collector, Role::Privhelper] {
            let p = sandbox_plan(role, &cfg, &ev, Some(&user()), &r).unwrap();
            assert!(p.seccomp[0] == role.as_str() && p.landlock.connect_tcp.is_empty());
            assert!(!p.seccomp.iter().any(|f| f.starts_with("shipper")));
            assert!(attached(role, &r).is_empty());
        }
    }

    #[test]
    fn root_fallback_keeps_ids() {
        let cfg = AgentConfig::default();
        let ev = evaluate(&cfg, &HashSet::new(), &facts());
        let mut r = run();
        r.switch_user = false;
        let p = sandbox_plan(Role::Collector, &cfg, &ev, Some(&user()), &r).unwrap();
        assert_eq!(p.ids, None);
        let ph = sandbox_plan(Role::Privhelper, &cfg, &ev, Some(&user()), &r).unwrap();
        assert!(ph.keep_caps.is_empty(), "nothing held, nothing kept");
    }

    #[test]
    fn supervisor_keeps_only_the_restart_set() {
        let cfg = AgentConfig::default();
        let all: HashSet<_> = caps::all().into_iter().collect();
        let ev = evaluate(&cfg, &all, &facts());
        let inits = |r: &RunFacts| -> Vec<InitConfig> {
            Role::CHILDREN
                .iter()
                .map(|role| init_config(*role, &cfg, &ev, Some(&user()), r).unwrap())
                .collect()
        };
        // Root switching to the agent user: the children's ids and signals, the privhelper's
        // start-up set, CAP_SETPCAP when held.
        let keep = supervisor_steady_caps(&inits(&run()), 0, true).unwrap();
        let want: HashSet<_> = [
            CAP_KILL,
            CAP_SETUID,
            CAP_SETGID,
            CAP_SETPCAP,
            CAP_SYSLOG,
            CAP_BPF,
            CAP_PERFMON,
        ]
        .into();
        assert_eq!(keep, want);
        for gone in [
            CAP_SYS_ADMIN,
            CAP_SYS_CHROOT,
            CAP_DAC_OVERRIDE,
            CAP_CHOWN,
            CAP_SYS_MODULE,
        ] {
            assert!(!keep.contains(&gone), "{gone}");
        }
        // Already the agent user (no switch): no ids to set, nobody else to signal.
        let mut same = run();
        same.switch_user = false;
        let keep = supervisor_steady_caps(&inits(&same), 990, false).unwrap();
        assert_eq!(keep, [CAP_SYSLOG, CAP_BPF, CAP_PERFMON].into());
    }
}
