//! The feature/capability table: for every feature, the process that needs privileges for it,
//! the capabilities it needs there, the kernel settings that matter, and the config switch that
//! turns it on. Everything here is pure data and pure functions over (config, held capabilities,
//! kernel facts), so `vigil run`, `vigil doctor` and the deployment files agree.

use std::collections::HashSet;

use caps::{CapSet, Capability};
use vigil_ipc_proto::{AgentConfig, FeatureState};

use Capability::*;

/// Which process does the privileged part of a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Supervisor,
    Privhelper,
    Collector,
}

impl Proc {
    pub fn as_str(self) -> &'static str {
        match self {
            Proc::Supervisor => "supervisor",
            Proc::Privhelper => "privhelper",
            Proc::Collector => "collector",
        }
    }
}

#[derive(Debug)]
pub struct Feature {
    pub name: &'static str,
    pub process: Proc,
    /// All of these are needed (see [`needed_caps`] for the kernel-dependent cases).
    pub caps: &'static [Capability],
    pub what: &'static str,
}

/// The table. Seeds: OBI/Beyla (BPF program types), SmartAgent (kmsg, setns, user switching).
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "virtual_root",
        process: Proc::Supervisor,
        caps: &[CAP_SYS_ADMIN],
        what: "trimmed read-only host view: mount namespace, bind mounts, pivot_root",
    },
    Feature {
        name: "user_switch",
        process: Proc::Supervisor,
        caps: &[CAP_SETUID, CAP_SETGID],
        what: "collector, shipper and privhelper run as the named host user",
    },
    Feature {
        name: "host_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "CPU, memory, load, uptime from /proc",
    },
    Feature {
        name: "process_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "per-process CPU, memory, threads, state, command line, owner",
    },
    Feature {
        name: "process_fds",
        // Linux >= 6.2 reports the number of open descriptors as the st_size of /proc/PID/fd,
        // which stat(2) gives any user: no capability, no privhelper. Older kernels: the
        // privhelper lists the directory, a permission check (0500, owner) that needs
        // CAP_DAC_READ_SEARCH for other users' processes (see `needed_caps`).
        process: Proc::Collector,
        caps: &[],
        what: "open fd counts of every process (st_size of /proc/PID/fd; before Linux 6.2 \
               the privhelper lists the directory with CAP_DAC_READ_SEARCH)",
    },
    Feature {
        name: "process_sockets",
        // Telling sockets apart reads every fd link: a ptrace access check (SYS_PTRACE) after
        // the directory search (DAC_READ_SEARCH). Off by default: SYS_PTRACE also reads any
        // process's memory, too much to ask for a count.
        process: Proc::Privhelper,
        caps: &[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE],
        what: "socket counts of every process (readlink of /proc/PID/fd/*; opt-in)",
    },
    Feature {
        name: "container_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "cgroup v1/v2 CPU, memory, pids, I/O per container and pod",
    },
    Feature {
        name: "disk_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "space and inodes of the host's filesystems",
    },
    Feature {
        name: "net_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "host network interface counters",
    },
    Feature {
        name: "netns_metrics",
        // /proc/PID/net/dev shows the counters of PID's network namespace to any user (what
        // cAdvisor reads); st_ino of that file tells namespaces apart. No capability.
        process: Proc::Collector,
        caps: &[],
        what: "interface counters of every network namespace that has a process \
               (/proc/PID/net/dev; netns_source = \"proc\")",
    },
    Feature {
        name: "netns_metrics_setns",
        process: Proc::Privhelper,
        caps: &[CAP_SYS_ADMIN, CAP_SYS_PTRACE],
        what: "interface counters of network namespaces, named ones without a process \
               included (setns + netlink socket made by the privhelper; netns_source = \"setns\")",
    },
    Feature {
        name: "disk_io",
        process: Proc::Collector,
        caps: &[],
        what: "block device I/O from /proc/diskstats (system.disk.*)",
    },
    Feature {
        name: "paging_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "swap usage, page faults, paging operations (/proc/swaps, /proc/vmstat)",
    },
    Feature {
        name: "pressure_metrics",
        process: Proc::Collector,
        caps: &[],
        what: "pressure stall information of the host (/proc/pressure) and of every cgroup v2 \
               container (*.pressure)",
    },
    Feature {
        name: "connection_metrics",
        // sock_diag dumps are open to any user (what `ss` does); conntrack's size is in /proc.
        process: Proc::Collector,
        caps: &[],
        what: "TCP/UDP socket counts by state (netlink sock_diag), conntrack table size",
    },
    Feature {
        name: "process_io",
        // /proc/PID/io is 0400 (DAC_READ_SEARCH for other users') and, like the /proc/PID/exe
        // link, behind a ptrace access check (SYS_PTRACE). Off by default, as socket counts.
        process: Proc::Privhelper,
        caps: &[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE],
        what: "disk I/O (/proc/PID/io) and executable path (/proc/PID/exe) of every process \
               (opt-in)",
    },
    Feature {
        name: "k8s_names",
        process: Proc::Collector,
        caps: &[],
        what: "Kubernetes namespace, pod and container names from the kubelet's \
               <host_root>/var/log/pods and /var/log/containers (no API access, no token)",
    },
    Feature {
        name: "kmsg_events",
        process: Proc::Privhelper,
        caps: &[CAP_SYSLOG],
        what: "kernel events from /dev/kmsg: node-problem-detector's rules and vigil's \
               (OOMKilling, PodOOMKilling, TaskHung, KernelOops, FilesystemIsReadOnly, ...), \
               their conditions and counters, plain lines >= warning (CAP_SYSLOG only when \
               dmesg_restrict=1)",
    },
    Feature {
        name: "ebpf_exec",
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_PERFMON],
        what: "process exec/exit events (raw tracepoints sched_process_exec/exit; no tracefs)",
    },
    Feature {
        name: "ebpf_flows_socket",
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_NET_RAW],
        what: "network flows from a socket filter on an AF_PACKET socket",
    },
    Feature {
        name: "ebpf_flows_tc",
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON],
        what: "network flows from tc (cls_bpf) on the interfaces",
    },
];

/// Capabilities a supervisor started as root needs whatever features are on: trimming the
/// children's bounding sets, preparing the journal directory for the agent user, signalling
/// children that run as another user. A supervisor started as the agent user needs none of
/// them (see [`Launch`]).
pub const SUPERVISOR_BASE: &[Capability] = &[CAP_SETPCAP, CAP_CHOWN, CAP_KILL];

/// How the supervisor is started, which decides what it needs besides the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// As uid 0 with a capability list (a container's add list, plain root): it builds the
    /// virtual root itself (CAP_SYS_ADMIN), switches its children to the agent user
    /// (CAP_SETUID/SETGID) and needs [`SUPERVISOR_BASE`].
    Root,
    /// Already as the agent user, holding the features' capabilities (systemd `User=` with
    /// `AmbientCapabilities=`, or file capabilities): no user switch, no chown, no signals
    /// across users; the service manager builds the read-only view (`no_remount_root`).
    AgentUser,
}

/// Kernel settings and facilities that decide what works.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelFacts {
    pub perf_event_paranoid: Option<i32>,
    pub dmesg_restrict: Option<i32>,
    pub unprivileged_bpf_disabled: Option<i32>,
    pub btf: bool,
    pub landlock_abi: i32,
    pub kmsg: bool,
    /// "v2", "v1", "hybrid (v1 controllers + v2)", or "none".
    pub cgroup: String,
    pub unprivileged_userns: Option<bool>,
    /// `stat("/proc/PID/fd").st_size` is the number of open descriptors (Linux >= 6.2).
    pub fd_count_stat: bool,
    /// Pressure stall information is readable (/proc/pressure/cpu; CONFIG_PSI, not psi=0).
    pub psi: bool,
}

fn read_int(path: &str) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl KernelFacts {
    pub fn probe() -> KernelFacts {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let v2 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup2"));
        let v1 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup"));
        KernelFacts {
            perf_event_paranoid: read_int("/proc/sys/kernel/perf_event_paranoid"),
            dmesg_restrict: read_int("/proc/sys/kernel/dmesg_restrict"),
            unprivileged_bpf_disabled: read_int("/proc/sys/kernel/unprivileged_bpf_disabled"),
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            landlock_abi: crate::landlock::kernel_abi(),
            kmsg: std::path::Path::new("/dev/kmsg").exists(),
            cgroup: match (v1, v2) {
                (true, true) => "hybrid (v1 controllers + v2)".into(),
                (false, true) => "v2".into(),
                (true, false) => "v1".into(),
                (false, false) => "none".into(),
            },
            unprivileged_userns: read_int("/proc/sys/user/max_user_namespaces").map(|n| n > 0),
            fd_count_stat: fd_count_by_stat(),
            psi: std::fs::read("/proc/pressure/cpu").is_ok(),
        }
    }
}

/// Whether this kernel reports a process's open descriptor count as the size of its
/// /proc/PID/fd directory: our own has at least stdin..stderr or the probe's descriptor open.
pub fn fd_count_by_stat() -> bool {
    std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.len() > 0)
}

/// The capabilities the calling process can hand on (its effective set).
pub fn held_capabilities() -> HashSet<Capability> {
    caps::read(None, CapSet::Effective)
        .map(|s| s.into_iter().collect())
        .unwrap_or_default()
}

/// Whether the config asks for a feature.
pub fn configured(cfg: &AgentConfig, name: &str) -> bool {
    let c = &cfg.collector;
    match name {
        "virtual_root" => !cfg.no_remount_root,
        "user_switch" => cfg.non_root_mode,
        "host_metrics" => c.host,
        "process_metrics" => c.processes,
        "process_fds" => c.processes && c.process_fds,
        "process_sockets" => c.processes && c.process_sockets,
        "container_metrics" => c.containers,
        "disk_metrics" => c.disks,
        "net_metrics" => c.network,
        "netns_metrics" => c.network && c.netns && c.netns_source == "proc",
        "netns_metrics_setns" => c.network && c.netns && c.netns_source == "setns",
        "disk_io" => c.disk_io,
        "paging_metrics" => c.host && c.paging,
        "pressure_metrics" => c.pressure && (c.host || c.containers),
        "connection_metrics" => c.host && c.connections,
        "process_io" => c.processes && c.process_io,
        "k8s_names" => c.k8s_names,
        "kmsg_events" => c.kmsg,
        "ebpf_exec" => c.ebpf_exec,
        "ebpf_flows_socket" => c.ebpf_flows && c.flows_source == "socket",
        "ebpf_flows_tc" => c.ebpf_flows && c.flows_source == "tc",
        _ => false,
    }
}

/// Capabilities a feature needs on this kernel (all of the main set).
pub fn needed_caps(f: &Feature, facts: &KernelFacts) -> Vec<Capability> {
    match f.name {
        // Without dmesg_restrict, any process that may open /dev/kmsg may read it.
        "kmsg_events" if facts.dmesg_restrict == Some(0) => Vec::new(),
        "process_fds" if !facts.fd_count_stat => vec![CAP_DAC_READ_SEARCH],
        _ => f.caps.to_vec(),
    }
}

/// The process that does a feature's privileged part on this kernel.
pub fn feature_process(f: &Feature, facts: &KernelFacts) -> Proc {
    match f.name {
        "process_fds" if !facts.fd_count_stat => Proc::Privhelper,
        _ => f.process,
    }
}

/// A kernel condition that makes a feature impossible whatever the capabilities.
fn kernel_blocker(f: &Feature, facts: &KernelFacts) -> Option<String> {
    match f.name {
        "kmsg_events" if !facts.kmsg => Some("/dev/kmsg does not exist".into()),
        "pressure_metrics" if !facts.psi => Some(
            "no pressure stall information: /proc/pressure is absent (CONFIG_PSI off, or psi=0 \
             on the kernel command line)"
                .into(),
        ),
        "ebpf_exec" if !facts.btf => {
            Some("no BTF (/sys/kernel/btf/vmlinux) for the CO-RE exec/exit program".into())
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureEval {
    pub name: &'static str,
    pub process: Proc,
    pub configured: bool,
    pub enabled: bool,
    /// Capabilities it uses in its process (empty for unprivileged features).
    pub using: Vec<Capability>,
    /// What is missing, when it is off for lack of capabilities.
    pub missing: Vec<Capability>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub features: Vec<FeatureEval>,
}

/// Decide every feature for this config, these capabilities, this kernel.
pub fn evaluate(cfg: &AgentConfig, held: &HashSet<Capability>, facts: &KernelFacts) -> Evaluation {
    let features = FEATURES
        .iter()
        .map(|f| {
            let configured = configured(cfg, f.name);
            let needed = needed_caps(f, facts);
            let missing: Vec<Capability> = needed
                .iter()
                .filter(|c| !held.contains(c))
                .copied()
                .collect();
            let mut ev = FeatureEval {
                name: f.name,
                process: feature_process(f, facts),
                configured,
                enabled: false,
                using: Vec::new(),
                missing: Vec::new(),
                reason: String::new(),
            };
            if !configured {
                ev.reason = "disabled in config".into();
            } else if let Some(b) = kernel_blocker(f, facts) {
                ev.reason = b;
            } else if missing.is_empty() {
                ev.enabled = true;
                ev.using = needed;
            } else {
                ev.missing = missing;
                ev.reason = format!("missing {}", names(&ev.missing));
            }
            ev
        })
        .collect();
    Evaluation { features }
}

/// Deduplicated, in capability-number order (stable output for files and tests).
pub fn sorted(caps: impl IntoIterator<Item = Capability>) -> Vec<Capability> {
    let mut v: Vec<Capability> = caps
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    v.sort_by_key(|c| c.index());
    v
}

pub fn names(caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Evaluation {
    pub fn is_enabled(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.enabled)
    }

    pub fn enabled_names(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|f| f.enabled)
            .map(|f| f.name.to_string())
            .collect()
    }

    pub fn states(&self) -> Vec<FeatureState> {
        self.features
            .iter()
            .map(|f| FeatureState {
                name: f.name.to_string(),
                enabled: f.enabled,
                reason: f.reason.clone(),
            })
            .collect()
    }

    /// Exactly the capabilities the privhelper keeps: those of its enabled features.
    pub fn privhelper_caps(&self) -> Vec<Capability> {
        sorted(
            self.features
                .iter()
                .filter(|f| f.enabled && f.process == Proc::Privhelper)
                .flat_map(|f| f.using.iter().copied()),
        )
    }

    /// Configured features turned off for lack of capabilities, with what they miss.
    pub fn missing(&self) -> Vec<(&'static str, Vec<Capability>)> {
        self.features
            .iter()
            .filter(|f| f.configured && !f.missing.is_empty())
            .map(|f| (f.name, f.missing.clone()))
            .collect()
    }

    /// All capabilities missing for configured features.
    pub fn missing_caps(&self) -> Vec<Capability> {
        sorted(self.missing().into_iter().flat_map(|(_, c)| c))
    }

    /// The one warning naming disabled features and their capabilities (Beyla/OBI style), or
    /// `None` when nothing configured is missing.
    pub fn warning(&self) -> Option<String> {
        let missing = self.missing();
        if missing.is_empty() {
            return None;
        }
        let per: Vec<String> = missing
            .iter()
            .map(|(n, c)| format!("{n} (needs {})", names(c)))
            .collect();
        Some(format!(
            "required system capabilities not present: {}; these features are off: {}",
            names(&self.missing_caps()),
            per.join(", ")
        ))
    }
}

/// The minimal capability add-list for the configured features on this kernel, including what
/// the supervisor needs itself when started that way. Independent of what is held now.
pub fn required_caps(cfg: &AgentConfig, facts: &KernelFacts, launch: Launch) -> Vec<Capability> {
    let mut all: Vec<Capability> = match launch {
        Launch::Root => SUPERVISOR_BASE.to_vec(),
        Launch::AgentUser => Vec::new(),
    };
    for f in FEATURES {
        let supervisor_only = matches!(f.name, "virtual_root" | "user_switch");
        if launch == Launch::AgentUser && supervisor_only {
            continue;
        }
        if configured(cfg, f.name) && kernel_blocker(f, facts).is_none() {
            all.extend(needed_caps(f, facts));
        }
    }
    sorted(all)
}

fn lower(c: &Capability) -> String {
    c.to_string().to_lowercase()
}

/// `setcap cap_a,cap_b+ep /usr/local/bin/vigil`
pub fn render_setcap(caps: &[Capability], binary: &str) -> String {
    let list: Vec<String> = caps.iter().map(lower).collect();
    format!("setcap {}+ep {binary}", list.join(","))
}

/// `AmbientCapabilities=` and `CapabilityBoundingSet=` lines for a systemd unit.
pub fn render_systemd(caps: &[Capability]) -> String {
    let list: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    format!(
        "AmbientCapabilities={0}\nCapabilityBoundingSet={0}\n",
        list.join(" ")
    )
}

/// A Kubernetes container `securityContext` granting exactly these capabilities.
pub fn render_k8s(caps: &[Capability]) -> String {
    let mut s = String::from(
        "securityContext:\n  privileged: false\n  allowPrivilegeEscalation: false\n  \
         readOnlyRootFilesystem: true\n  runAsUser: 0\n  capabilities:\n    drop: [\"ALL\"]\n    add:\n",
    );
    for c in caps {
        s.push_str(&format!(
            "      - {}\n",
            c.to_string().trim_start_matches("CAP_")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> KernelFacts {
        KernelFacts {
            perf_event_paranoid: Some(2),
            dmesg_restrict: Some(1),
            unprivileged_bpf_disabled: Some(2),
            btf: true,
            landlock_abi: 6,
            kmsg: true,
            cgroup: "v2".into(),
            unprivileged_userns: Some(true),
            fd_count_stat: true,
            psi: true,
        }
    }

    fn all_caps() -> HashSet<Capability> {
        caps::all().into_iter().collect()
    }

    #[test]
    fn root_enables_every_configured_feature() {
        let ev = evaluate(&AgentConfig::default(), &all_caps(), &facts());
        for f in &ev.features {
            if matches!(
                f.name,
                "ebpf_flows_tc" | "process_sockets" | "netns_metrics_setns" | "process_io"
            ) {
                assert!(!f.enabled && f.reason == "disabled in config", "{f:?}");
            } else {
                assert!(f.enabled, "{f:?}");
            }
        }
        assert_eq!(ev.warning(), None);
        // The default features need only these four in the privhelper.
        assert_eq!(
            ev.privhelper_caps(),
            vec![CAP_NET_RAW, CAP_SYSLOG, CAP_PERFMON, CAP_BPF]
        );
    }

    #[test]
    fn opt_in_features_name_their_capabilities() {
        let mut cfg = AgentConfig::default();
        cfg.collector.process_sockets = true;
        cfg.collector.netns_source = "setns".into();
        let ev = evaluate(&cfg, &all_caps(), &facts());
        assert!(ev.is_enabled("process_sockets") && ev.is_enabled("netns_metrics_setns"));
        assert!(
            !ev.is_enabled("netns_metrics"),
            "one netns source at a time"
        );
        let ph = ev.privhelper_caps();
        for c in [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN] {
            assert!(ph.contains(&c), "{c}");
        }
        let mut held = all_caps();
        held.remove(&CAP_SYS_PTRACE);
        let ev = evaluate(&cfg, &held, &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(off, vec!["process_sockets", "netns_metrics_setns"]);
    }

    #[test]
    fn missing_syslog_turns_off_exactly_kmsg() {
        let mut held = all_caps();
        held.remove(&CAP_SYSLOG);
        let ev = evaluate(&AgentConfig::default(), &held, &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(off, vec!["kmsg_events"]);
        let w = ev.warning().unwrap();
        assert!(w.contains("CAP_SYSLOG") && w.contains("kmsg_events"), "{w}");
        assert!(!ev.privhelper_caps().contains(&CAP_SYSLOG));
        // Without dmesg_restrict no capability is needed at all.
        let mut f = facts();
        f.dmesg_restrict = Some(0);
        assert!(evaluate(&AgentConfig::default(), &held, &f).is_enabled("kmsg_events"));
    }

    #[test]
    fn fd_counts_need_the_privhelper_only_before_linux_6_2() {
        let none = HashSet::new();
        let ev = evaluate(&AgentConfig::default(), &none, &facts());
        let f = ev
            .features
            .iter()
            .find(|f| f.name == "process_fds")
            .unwrap();
        assert!(f.enabled && f.process == Proc::Collector && f.using.is_empty());
        let mut old = facts();
        old.fd_count_stat = false;
        let ev = evaluate(&AgentConfig::default(), &none, &old);
        assert!(!ev.is_enabled("process_fds"));
        let held: HashSet<_> = [CAP_DAC_READ_SEARCH].into_iter().collect();
        let ev = evaluate(&AgentConfig::default(), &held, &old);
        let f = ev
            .features
            .iter()
            .find(|f| f.name == "process_fds")
            .unwrap();
        assert!(f.enabled && f.process == Proc::Privhelper);
        assert_eq!(ev.privhelper_caps(), vec![CAP_DAC_READ_SEARCH]);
        let add = required_caps(&AgentConfig::default(), &old, Launch::AgentUser);
        assert!(add.contains(&CAP_DAC_READ_SEARCH));
    }

    #[test]
    fn rootless_has_only_unprivileged_features() {
        let ev = evaluate(&AgentConfig::default(), &HashSet::new(), &facts());
        for name in [
            "host_metrics",
            "process_metrics",
            "process_fds",
            "disk_metrics",
            "net_metrics",
            "netns_metrics",
        ] {
            assert!(ev.is_enabled(name), "{name}");
        }
        for name in ["kmsg_events", "ebpf_exec", "virtual_root", "user_switch"] {
            assert!(!ev.is_enabled(name), "{name}");
        }
        assert!(ev.privhelper_caps().is_empty());
    }

    #[test]
    fn absent_psi_is_a_reason_not_an_error() {
        let mut f = facts();
        f.psi = false;
        let ev = evaluate(&AgentConfig::default(), &all_caps(), &f);
        let p = ev
            .features
            .iter()
            .find(|x| x.name == "pressure_metrics")
            .unwrap();
        assert!(!p.enabled && p.reason.contains("/proc/pressure"), "{p:?}");
        assert!(ev.missing().is_empty() && ev.warning().is_none());
        let mut cfg = AgentConfig::default();
        cfg.collector.process_io = true;
        let ev = evaluate(&cfg, &HashSet::new(), &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert!(
            off.contains(&"process_io") && !off.contains(&"pressure_metrics"),
            "{off:?}"
        );
        assert!(evaluate(&cfg, &all_caps(), &facts()).is_enabled("process_io"));
    }

    #[test]
    fn config_switches_and_kernel_blockers() {
        let mut cfg = AgentConfig::default();
        cfg.collector.kmsg = false;
        cfg.collector.flows_source = "tc".into();
        let ev = evaluate(&cfg, &all_caps(), &facts());
        assert!(!ev.is_enabled("kmsg_events"));
        assert!(ev.is_enabled("ebpf_flows_tc") && !ev.is_enabled("ebpf_flows_socket"));
        assert!(ev.missing().is_empty(), "config-off is not 'missing'");
        let mut f = facts();
        f.btf = false;
        let ev = evaluate(&AgentConfig::default(), &all_caps(), &f);
        assert!(!ev.is_enabled("ebpf_exec"));
        assert!(
            ev.features
                .iter()
                .any(|x| x.name == "ebpf_exec" && x.reason.contains("BTF"))
        );
    }

    #[test]
    fn add_list_per_launch_and_renderers() {
        let cfg = AgentConfig::default();
        let root = required_caps(&cfg, &facts(), Launch::Root);
        assert_eq!(
            root,
            vec![
                CAP_CHOWN,
                CAP_KILL,
                CAP_SETGID,
                CAP_SETUID,
                CAP_SETPCAP,
                CAP_NET_RAW,
                CAP_SYS_ADMIN,
                CAP_SYSLOG,
                CAP_PERFMON,
                CAP_BPF
            ]
        );
        // Started as the agent user: exactly what the features use, nothing for the
        // supervisor (no user switch, no chown, no virtual root of its own).
        let agent = required_caps(&cfg, &facts(), Launch::AgentUser);
        assert_eq!(agent, vec![CAP_NET_RAW, CAP_SYSLOG, CAP_PERFMON, CAP_BPF]);
        let s = render_setcap(&[CAP_BPF, CAP_NET_RAW], "/usr/bin/vigil");
        assert_eq!(s, "setcap cap_bpf,cap_net_raw+ep /usr/bin/vigil");
        let sd = render_systemd(&[CAP_BPF, CAP_NET_RAW]);
        assert!(sd.contains("AmbientCapabilities=CAP_BPF CAP_NET_RAW\n"));
        assert!(sd.contains("CapabilityBoundingSet=CAP_BPF CAP_NET_RAW\n"));
        let k = render_k8s(&[CAP_BPF]);
        assert!(k.contains("      - BPF\n") && k.contains("drop: [\"ALL\"]"));
    }
}
