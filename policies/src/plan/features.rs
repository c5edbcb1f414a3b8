//! The feature/capability table: for every feature, the process that needs privileges for it,
//! the capabilities it needs there, the kernel settings that matter, and the config switch that
//! turns it on. Everything here is pure data and pure functions over (config, held capabilities,
//! kernel facts), so `vigil run`, `vigil doctor` and the deployment files agree.

use std::collections::HashSet;

use caps::Capability;
use vigil_ipc_proto::{AgentConfig, BpfProgram, Feature, FeatureState};

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

/// Everything about one feature: the one place a feature's facts are written.
pub struct FeatureRow {
    pub feature: Feature,
    /// The process that does its privileged part (on a current kernel; see `on_kernel`).
    pub process: Proc,
    /// All of these are needed there.
    pub caps: &'static [Capability],
    /// Whether the configuration asks for it.
    pub configured: fn(&AgentConfig) -> bool,
    /// What this kernel changes for it.
    pub on_kernel: fn(&KernelFacts) -> OnKernel,
    /// It reads other processes' `/proc/PID/*` links or namespaces through the privhelper,
    /// which a Landlock domain forbids whatever the capabilities: the privhelper then goes
    /// without Landlock.
    pub inspects_other_processes: bool,
    /// What it is, for `vigil doctor`.
    pub what: &'static str,
}

/// How a kernel changes a feature's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnKernel {
    /// As the row says.
    AsWritten,
    /// Impossible here whatever the capabilities, and why.
    Blocked(&'static str),
    /// Done by another process, with other capabilities.
    Needs(Proc, &'static [Capability]),
}

fn as_written(_: &KernelFacts) -> OnKernel {
    OnKernel::AsWritten
}

/// Flows on, from the program `collector.flows_source` names (BpfProgram::FLOW_SOURCES).
fn flows_from(c: &AgentConfig, program: BpfProgram) -> bool {
    c.collector.ebpf_flows && BpfProgram::flows_source(&c.collector.flows_source) == Some(program)
}

/// The table. Seeds: OBI/Beyla (BPF program types), SmartAgent (kmsg, setns, user switching).
pub const FEATURES: &[FeatureRow] = &[
    FeatureRow {
        feature: Feature::VirtualRoot,
        process: Proc::Supervisor,
        caps: &[CAP_SYS_ADMIN],
        configured: |c| !c.no_remount_root,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "trimmed read-only host view: mount namespace, bind mounts, pivot_root",
    },
    FeatureRow {
        feature: Feature::UserSwitch,
        process: Proc::Supervisor,
        caps: &[CAP_SETUID, CAP_SETGID],
        configured: |c| c.non_root_mode,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "collector, shipper and privhelper run as the named host user",
    },
    FeatureRow {
        feature: Feature::HostMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.host,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "CPU, memory, load, uptime from /proc",
    },
    FeatureRow {
        feature: Feature::ProcessMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.processes,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "per-process CPU, memory, threads, state, command line, owner",
    },
    FeatureRow {
        feature: Feature::ProcessIter,
        // A task iterator is a tracing program that reads kernel memory: CAP_BPF and
        // CAP_PERFMON to load it, at start-up only. Creating an iterator from its link needs
        // no capability (measured on Linux 6.18 as uid 65534 holding none, ARCHITECTURE.md):
        // the collector does that itself each cycle, its seccomp filter allowing
        // bpf(BPF_ITER_CREATE) and no other bpf() command. Off: /proc, as before.
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_PERFMON],
        configured: |c| c.collector.processes && c.collector.process_iter,
        on_kernel: |k| {
            if k.btf {
                OnKernel::AsWritten
            } else {
                OnKernel::Blocked(
                    "no BTF (/sys/kernel/btf/vmlinux) for the CO-RE task iterator: processes \
                     are read from /proc",
                )
            }
        },
        inspects_other_processes: false,
        what: "process metrics from a BPF task iterator, one dump per cycle instead of \
               /proc/PID/* (the /proc path where it is off)",
    },
    FeatureRow {
        feature: Feature::ProcessFds,
        // Linux >= 6.2 reports the number of open descriptors as the st_size of /proc/PID/fd,
        // which stat(2) gives any user: no capability, no privhelper. Older kernels: the
        // privhelper lists the directory, a permission check (0500, owner) that needs
        // CAP_DAC_READ_SEARCH for other users' processes.
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.processes && c.collector.process_fds,
        on_kernel: |k| {
            if k.fd_count_stat {
                OnKernel::AsWritten
            } else {
                OnKernel::Needs(Proc::Privhelper, &[CAP_DAC_READ_SEARCH])
            }
        },
        inspects_other_processes: true,
        what: "open fd counts of every process (st_size of /proc/PID/fd; before Linux 6.2 \
               the privhelper lists the directory with CAP_DAC_READ_SEARCH)",
    },
    FeatureRow {
        feature: Feature::ProcessSockets,
        // Telling sockets apart reads every fd link: a ptrace access check (SYS_PTRACE) after
        // the directory search (DAC_READ_SEARCH). Off by default: SYS_PTRACE also reads any
        // process's memory, too much to ask for a count.
        process: Proc::Privhelper,
        caps: &[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE],
        configured: |c| c.collector.processes && c.collector.process_sockets,
        on_kernel: as_written,
        inspects_other_processes: true,
        what: "socket counts of every process (readlink of /proc/PID/fd/*; opt-in)",
    },
    FeatureRow {
        feature: Feature::ContainerMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.containers,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "cgroup v1/v2 CPU, memory, pids, I/O per container and pod",
    },
    FeatureRow {
        feature: Feature::DiskMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.disks,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "space and inodes of the host's filesystems",
    },
    FeatureRow {
        feature: Feature::NetMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.network,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "host network interface counters",
    },
    FeatureRow {
        feature: Feature::NetnsMetrics,
        // /proc/PID/net/dev shows the counters of PID's network namespace to any user (what
        // cAdvisor reads); st_ino of that file tells namespaces apart. No capability.
        process: Proc::Collector,
        caps: &[],
        configured: |c| {
            c.collector.network && c.collector.netns && c.collector.netns_source == "proc"
        },
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "interface counters of every network namespace that has a process \
               (/proc/PID/net/dev; netns_source = \"proc\")",
    },
    FeatureRow {
        feature: Feature::NetnsMetricsSetns,
        process: Proc::Privhelper,
        caps: &[CAP_SYS_ADMIN, CAP_SYS_PTRACE],
        configured: |c| {
            c.collector.network && c.collector.netns && c.collector.netns_source == "setns"
        },
        on_kernel: as_written,
        inspects_other_processes: true,
        what: "interface counters of network namespaces, named ones without a process \
               included (setns + netlink socket made by the privhelper; netns_source = \"setns\")",
    },
    FeatureRow {
        feature: Feature::DiskIo,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.disk_io,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "block device I/O from /proc/diskstats (system.disk.*)",
    },
    FeatureRow {
        feature: Feature::PagingMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.host && c.collector.paging,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "swap usage, page faults, paging operations (/proc/swaps, /proc/vmstat)",
    },
    FeatureRow {
        feature: Feature::PressureMetrics,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.pressure && (c.collector.host || c.collector.containers),
        on_kernel: |k| {
            if k.psi {
                OnKernel::AsWritten
            } else {
                OnKernel::Blocked(
                    "no pressure stall information: /proc/pressure is absent (CONFIG_PSI off, \
                     or psi=0 on the kernel command line)",
                )
            }
        },
        inspects_other_processes: false,
        what: "pressure stall information of the host (/proc/pressure) and of every cgroup v2 \
               container (*.pressure)",
    },
    FeatureRow {
        feature: Feature::ConnectionMetrics,
        // sock_diag dumps are open to any user (what `ss` does); conntrack's size is in /proc.
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.host && c.collector.connections,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "TCP/UDP socket counts by state (netlink sock_diag), conntrack table size",
    },
    FeatureRow {
        feature: Feature::EbpfTcpChanges,
        // A raw tracepoint (no tracefs, no BTF, no kernel memory read): CAP_BPF + CAP_PERFMON
        // to load and attach it, at start-up only. The collector maps the counters read-only
        // (mmap, no bpf() call). Off: the TCP hash is walked every cycle, as before.
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_PERFMON],
        configured: |c| c.collector.host && c.collector.connections && c.collector.ebpf_tcp_changes,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "TCP state changes counted (raw tracepoint inet_sock_set_state), so that the \
               connection counts walk the kernel's TCP hash only after one (or 10 s after the \
               last walk)",
    },
    FeatureRow {
        feature: Feature::ProcessIo,
        // /proc/PID/io is 0400 (DAC_READ_SEARCH for other users') and, like the /proc/PID/exe
        // link, behind a ptrace access check (SYS_PTRACE). Off by default, as socket counts.
        process: Proc::Privhelper,
        caps: &[CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE],
        configured: |c| c.collector.processes && c.collector.process_io,
        on_kernel: as_written,
        inspects_other_processes: true,
        what: "disk I/O (/proc/PID/io) and executable path (/proc/PID/exe) of every process \
               (opt-in)",
    },
    FeatureRow {
        feature: Feature::K8sNames,
        process: Proc::Collector,
        caps: &[],
        configured: |c| c.collector.k8s_names,
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "Kubernetes namespace, pod and container names from the kubelet's \
               <host_root>/var/log/pods and /var/log/containers (no API access, no token)",
    },
    FeatureRow {
        feature: Feature::KmsgEvents,
        process: Proc::Privhelper,
        caps: &[CAP_SYSLOG],
        configured: |c| c.collector.kmsg,
        // Without dmesg_restrict, any process that may open /dev/kmsg may read it.
        on_kernel: |k| {
            if !k.kmsg {
                OnKernel::Blocked("/dev/kmsg does not exist")
            } else if k.dmesg_restrict == Some(0) {
                OnKernel::Needs(Proc::Privhelper, &[])
            } else {
                OnKernel::AsWritten
            }
        },
        inspects_other_processes: false,
        what: "kernel events from /dev/kmsg: node-problem-detector's rules and vigil's \
               (OOMKilling, PodOOMKilling, TaskHung, KernelOops, FilesystemIsReadOnly, ...), \
               their conditions and counters, plain lines >= warning (CAP_SYSLOG only when \
               dmesg_restrict=1)",
    },
    FeatureRow {
        feature: Feature::EbpfExec,
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_PERFMON],
        configured: |c| c.collector.ebpf_exec,
        on_kernel: |k| {
            if k.btf {
                OnKernel::AsWritten
            } else {
                OnKernel::Blocked(
                    "no BTF (/sys/kernel/btf/vmlinux) for the CO-RE exec/exit program",
                )
            }
        },
        inspects_other_processes: false,
        what: "process exec/exit events (raw tracepoints sched_process_exec/exit; no tracefs)",
    },
    FeatureRow {
        feature: Feature::EbpfFlowsTracepoint,
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_PERFMON],
        configured: |c| flows_from(c, BpfProgram::FlowsTracepoint),
        on_kernel: |k| {
            if k.btf {
                OnKernel::AsWritten
            } else {
                OnKernel::Blocked(
                    "no BTF (/sys/kernel/btf/vmlinux) for the flow tracepoints; \
                     flows_source = \"socket\" needs none",
                )
            }
        },
        inspects_other_processes: false,
        what: "network flows from the tracepoints every packet passes (netif_receive_skb, \
               net_dev_start_xmit; no packet tap, no network capability)",
    },
    FeatureRow {
        feature: Feature::EbpfFlowsSocket,
        process: Proc::Privhelper,
        caps: &[CAP_BPF, CAP_NET_RAW],
        configured: |c| flows_from(c, BpfProgram::FlowsSocketFilter),
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "network flows from a socket filter on an AF_PACKET socket",
    },
    FeatureRow {
        feature: Feature::EbpfFlowsTc,
        process: Proc::Privhelper,
        // No PERFMON: the programs read packets with bpf_skb_load_bytes only (measured as
        // uid 65534 with BPF + NET_ADMIN, privhelper/tests/ebpf_loader.rs).
        caps: &[CAP_BPF, CAP_NET_ADMIN],
        configured: |c| flows_from(c, BpfProgram::FlowsTc),
        on_kernel: as_written,
        inspects_other_processes: false,
        what: "network flows from tc (cls_bpf) on the interfaces",
    },
];

/// Capabilities a supervisor started as root needs whatever features are on: trimming the
/// children's bounding sets, preparing the journal directory for the agent user, signalling
/// children that run as another user. A supervisor started as the agent user needs none of
/// them (see [`Launch`]).
pub const SUPERVISOR_BASE: &[Capability] = &[CAP_SETPCAP, CAP_CHOWN, CAP_KILL];

/// How the supervisor was started, which decides what it must do itself: as uid 0 (plain
/// root or a container's add list) it builds the view, switches its children to the agent
/// user and needs [`SUPERVISOR_BASE`] for that; already as the agent user (systemd `User=` +
/// `AmbientCapabilities=`, or file capabilities) it holds only the features' capabilities
/// and switches nobody; as an ordinary user with no capability at all (rootless) it builds
/// its view in a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Effective uid 0, whatever capabilities it holds.
    pub root: bool,
    /// Not root and holding no effective capability: only a user namespace gives a view.
    /// (Not root but holding capabilities is not rootless: a user namespace would turn them
    /// into namespaced ones that no longer work on the host.)
    pub rootless: bool,
    /// Real and effective uid are the configured agent user's: the children are already who
    /// they must be.
    pub agent_user: bool,
}

impl Launch {
    /// As uid 0 with a capability list: builds the view, switches users.
    pub const ROOT: Launch = Launch {
        root: true,
        rootless: false,
        agent_user: false,
    };
    /// As the agent user with the features' capabilities: no switch, no chown, no signals
    /// across users; the service manager builds the read-only view (`no_remount_root`).
    pub const AGENT_USER: Launch = Launch {
        root: false,
        rootless: false,
        agent_user: true,
    };

    pub fn detect(euid: u32, uid: u32, holds_caps: bool, agent_uid: u32) -> Launch {
        let root = euid == 0;
        Launch {
            root,
            rootless: !root && !holds_caps,
            agent_user: !root && euid == agent_uid && uid == agent_uid,
        }
    }
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

impl KernelFacts {
    /// The kernel the deployment files are written for and the tests assume unless they say
    /// otherwise: Linux >= 6.2 (fd counts by stat) with BTF, Landlock ABI 6, cgroup v2, PSI,
    /// /dev/kmsg behind dmesg_restrict=1, perf_event_paranoid=2, unprivileged BPF off.
    pub fn reference() -> KernelFacts {
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
}

/// The row of a feature.
pub fn row(f: Feature) -> &'static FeatureRow {
    FEATURES
        .iter()
        .find(|r| r.feature == f)
        .expect("every feature has its row (tested)")
}

impl FeatureRow {
    /// Capabilities it needs on this kernel (all of them).
    pub fn needed_caps(&self, facts: &KernelFacts) -> &'static [Capability] {
        match (self.on_kernel)(facts) {
            OnKernel::Needs(_, caps) => caps,
            _ => self.caps,
        }
    }

    /// The process that does its privileged part on this kernel.
    pub fn process_on(&self, facts: &KernelFacts) -> Proc {
        match (self.on_kernel)(facts) {
            OnKernel::Needs(p, _) => p,
            _ => self.process,
        }
    }

    /// Why this kernel makes it impossible whatever the capabilities.
    pub fn blocker(&self, facts: &KernelFacts) -> Option<&'static str> {
        match (self.on_kernel)(facts) {
            OnKernel::Blocked(why) => Some(why),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureEval {
    pub feature: Feature,
    pub process: Proc,
    pub configured: bool,
    pub enabled: bool,
    /// Capabilities it uses in its process (empty for unprivileged features).
    pub using: Vec<Capability>,
    /// What is missing, when it is off for lack of capabilities.
    pub missing: Vec<Capability>,
    pub reason: String,
    /// Reads other processes' /proc links or namespaces (see [`FeatureRow`]).
    pub inspects_other_processes: bool,
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
            let configured = (f.configured)(cfg);
            let needed = f.needed_caps(facts);
            let missing: Vec<Capability> = needed
                .iter()
                .filter(|c| !held.contains(c))
                .copied()
                .collect();
            let mut ev = FeatureEval {
                feature: f.feature,
                process: f.process_on(facts),
                configured,
                enabled: false,
                using: Vec::new(),
                missing: Vec::new(),
                reason: String::new(),
                inspects_other_processes: f.inspects_other_processes,
            };
            if !configured {
                ev.reason = "disabled in config".into();
            } else if let Some(b) = f.blocker(facts) {
                ev.reason = b.into();
            } else if missing.is_empty() {
                ev.enabled = true;
                ev.using = needed.to_vec();
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
    pub fn is_enabled(&self, feature: Feature) -> bool {
        self.features
            .iter()
            .any(|f| f.feature == feature && f.enabled)
    }

    pub fn get(&self, feature: Feature) -> Option<&FeatureEval> {
        self.features.iter().find(|f| f.feature == feature)
    }

    pub fn enabled(&self) -> Vec<Feature> {
        self.features
            .iter()
            .filter(|f| f.enabled)
            .map(|f| f.feature)
            .collect()
    }

    /// The privhelper reads other processes' /proc links or namespaces for an enabled
    /// feature: it must go without Landlock.
    pub fn privhelper_inspects_others(&self) -> bool {
        self.features
            .iter()
            .any(|f| f.enabled && f.process == Proc::Privhelper && f.inspects_other_processes)
    }

    pub fn states(&self) -> Vec<FeatureState> {
        self.features
            .iter()
            .map(|f| FeatureState {
                name: f.feature,
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

    /// Of those, the capabilities the privhelper still needs once start-up is over: its
    /// enabled features that serve requests after it (`ipc_proto::privtable`).
    pub fn privhelper_steady_caps(&self) -> Vec<Capability> {
        sorted(
            self.features
                .iter()
                .filter(|f| {
                    f.enabled
                        && f.process == Proc::Privhelper
                        && vigil_ipc_proto::privtable::needs_privilege_after_startup(f.feature)
                })
                .flat_map(|f| f.using.iter().copied()),
        )
    }

    /// Configured features turned off for lack of capabilities, with what they miss.
    pub fn missing(&self) -> Vec<(Feature, Vec<Capability>)> {
        self.features
            .iter()
            .filter(|f| f.configured && !f.missing.is_empty())
            .map(|f| (f.feature, f.missing.clone()))
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
    let mut all: Vec<Capability> = if launch.agent_user {
        Vec::new()
    } else {
        SUPERVISOR_BASE.to_vec()
    };
    for f in FEATURES {
        // Started as the agent user, the supervisor neither builds a view nor switches users.
        if launch.agent_user && f.process == Proc::Supervisor {
            continue;
        }
        if (f.configured)(cfg) && f.blocker(facts).is_none() {
            all.extend(f.needed_caps(facts));
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
        KernelFacts::reference()
    }

    fn all_caps() -> HashSet<Capability> {
        caps::all().into_iter().collect()
    }

    #[test]
    fn every_feature_has_exactly_one_row() {
        for f in Feature::ALL {
            assert_eq!(
                FEATURES.iter().filter(|r| r.feature == *f).count(),
                1,
                "{f}"
            );
        }
        assert_eq!(FEATURES.len(), Feature::ALL.len());
    }

    #[test]
    fn root_enables_every_configured_feature() {
        let ev = evaluate(&AgentConfig::default(), &all_caps(), &facts());
        for f in &ev.features {
            if matches!(
                f.feature,
                Feature::EbpfFlowsTc
                    | Feature::EbpfFlowsSocket
                    | Feature::ProcessSockets
                    | Feature::NetnsMetricsSetns
                    | Feature::ProcessIo
            ) {
                assert!(!f.enabled && f.reason == "disabled in config", "{f:?}");
            } else {
                assert!(f.enabled, "{f:?}");
            }
        }
        assert_eq!(ev.warning(), None);
        // The default features need only these three in the privhelper (no network
        // capability: flows come from tracepoints), and none of them after start-up.
        assert_eq!(ev.privhelper_caps(), vec![CAP_SYSLOG, CAP_PERFMON, CAP_BPF]);
        assert!(ev.privhelper_steady_caps().is_empty());
    }

    #[test]
    fn opt_in_features_name_their_capabilities() {
        let mut cfg = AgentConfig::default();
        cfg.collector.process_sockets = true;
        cfg.collector.netns_source = "setns".into();
        let ev = evaluate(&cfg, &all_caps(), &facts());
        assert!(
            ev.is_enabled(Feature::ProcessSockets) && ev.is_enabled(Feature::NetnsMetricsSetns)
        );
        assert!(
            !ev.is_enabled(Feature::NetnsMetrics),
            "one netns source at a time"
        );
        let ph = ev.privhelper_caps();
        for c in [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN] {
            assert!(ph.contains(&c), "{c}");
        }
        // Exactly the per-cycle ones outlive start-up.
        assert_eq!(
            ev.privhelper_steady_caps(),
            vec![CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN]
        );
        let mut held = all_caps();
        held.remove(&CAP_SYS_PTRACE);
        let ev = evaluate(&cfg, &held, &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            off,
            vec![Feature::ProcessSockets, Feature::NetnsMetricsSetns]
        );
    }

    #[test]
    fn missing_syslog_turns_off_exactly_kmsg() {
        let mut held = all_caps();
        held.remove(&CAP_SYSLOG);
        let ev = evaluate(&AgentConfig::default(), &held, &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(off, vec![Feature::KmsgEvents]);
        let w = ev.warning().unwrap();
        assert!(w.contains("CAP_SYSLOG") && w.contains("kmsg_events"), "{w}");
        assert!(!ev.privhelper_caps().contains(&CAP_SYSLOG));
        // Without dmesg_restrict no capability is needed at all.
        let mut f = facts();
        f.dmesg_restrict = Some(0);
        assert!(evaluate(&AgentConfig::default(), &held, &f).is_enabled(Feature::KmsgEvents));
    }

    #[test]
    fn fd_counts_need_the_privhelper_only_before_linux_6_2() {
        let none = HashSet::new();
        let ev = evaluate(&AgentConfig::default(), &none, &facts());
        let f = ev
            .features
            .iter()
            .find(|f| f.feature == Feature::ProcessFds)
            .unwrap();
        assert!(f.enabled && f.process == Proc::Collector && f.using.is_empty());
        let mut old = facts();
        old.fd_count_stat = false;
        let ev = evaluate(&AgentConfig::default(), &none, &old);
        assert!(!ev.is_enabled(Feature::ProcessFds));
        let held: HashSet<_> = [CAP_DAC_READ_SEARCH].into_iter().collect();
        let ev = evaluate(&AgentConfig::default(), &held, &old);
        let f = ev
            .features
            .iter()
            .find(|f| f.feature == Feature::ProcessFds)
            .unwrap();
        assert!(f.enabled && f.process == Proc::Privhelper);
        assert_eq!(ev.privhelper_caps(), vec![CAP_DAC_READ_SEARCH]);
        let add = required_caps(&AgentConfig::default(), &old, Launch::AGENT_USER);
        assert!(add.contains(&CAP_DAC_READ_SEARCH));
    }

    #[test]
    fn rootless_has_only_unprivileged_features() {
        let ev = evaluate(&AgentConfig::default(), &HashSet::new(), &facts());
        for name in [
            Feature::HostMetrics,
            Feature::ProcessMetrics,
            Feature::ProcessFds,
            Feature::DiskMetrics,
            Feature::NetMetrics,
            Feature::NetnsMetrics,
        ] {
            assert!(ev.is_enabled(name), "{name}");
        }
        for name in [
            Feature::KmsgEvents,
            Feature::EbpfExec,
            Feature::VirtualRoot,
            Feature::UserSwitch,
        ] {
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
            .find(|x| x.feature == Feature::PressureMetrics)
            .unwrap();
        assert!(!p.enabled && p.reason.contains("/proc/pressure"), "{p:?}");
        assert!(ev.missing().is_empty() && ev.warning().is_none());
        let mut cfg = AgentConfig::default();
        cfg.collector.process_io = true;
        let ev = evaluate(&cfg, &HashSet::new(), &facts());
        let off: Vec<_> = ev.missing().into_iter().map(|(n, _)| n).collect();
        assert!(
            off.contains(&Feature::ProcessIo) && !off.contains(&Feature::PressureMetrics),
            "{off:?}"
        );
        assert!(evaluate(&cfg, &all_caps(), &facts()).is_enabled(Feature::ProcessIo));
    }

    #[test]
    fn config_switches_and_kernel_blockers() {
        let mut cfg = AgentConfig::default();
        cfg.collector.kmsg = false;
        cfg.collector.flows_source = "tc".into();
        let ev = evaluate(&cfg, &all_caps(), &facts());
        assert!(!ev.is_enabled(Feature::KmsgEvents));
        assert!(ev.is_enabled(Feature::EbpfFlowsTc) && !ev.is_enabled(Feature::EbpfFlowsSocket));
        assert!(!ev.is_enabled(Feature::EbpfFlowsTracepoint));
        assert!(ev.missing().is_empty(), "config-off is not 'missing'");
        cfg.collector.flows_source = "socket".into();
        let ev = evaluate(&cfg, &all_caps(), &facts());
        assert!(ev.is_enabled(Feature::EbpfFlowsSocket) && !ev.is_enabled(Feature::EbpfFlowsTc));
        assert!(ev.privhelper_caps().contains(&CAP_NET_RAW));
        let mut f = facts();
        f.btf = false;
        let ev = evaluate(&AgentConfig::default(), &all_caps(), &f);
        for blocked in [Feature::EbpfExec, Feature::EbpfFlowsTracepoint] {
            assert!(!ev.is_enabled(blocked));
            assert!(
                ev.features
                    .iter()
                    .any(|x| x.feature == blocked && x.reason.contains("BTF"))
            );
        }
    }

    #[test]
    fn add_list_per_launch_and_renderers() {
        let cfg = AgentConfig::default();
        let root = required_caps(&cfg, &facts(), Launch::ROOT);
        assert_eq!(
            root,
            vec![
                CAP_CHOWN,
                CAP_KILL,
                CAP_SETGID,
                CAP_SETUID,
                CAP_SETPCAP,
                CAP_SYS_ADMIN,
                CAP_SYSLOG,
                CAP_PERFMON,
                CAP_BPF
            ]
        );
        // Started as the agent user: exactly what the features use, nothing for the
        // supervisor (no user switch, no chown, no virtual root of its own).
        let agent = required_caps(&cfg, &facts(), Launch::AGENT_USER);
        assert_eq!(agent, vec![CAP_SYSLOG, CAP_PERFMON, CAP_BPF]);
        let s = render_setcap(&[CAP_BPF, CAP_NET_RAW], "/usr/bin/vigil");
        assert_eq!(s, "setcap cap_bpf,cap_net_raw+ep /usr/bin/vigil");
        let sd = render_systemd(&[CAP_BPF, CAP_NET_RAW]);
        assert!(sd.contains("AmbientCapabilities=CAP_BPF CAP_NET_RAW\n"));
        assert!(sd.contains("CapabilityBoundingSet=CAP_BPF CAP_NET_RAW\n"));
        let k = render_k8s(&[CAP_BPF]);
        assert!(k.contains("      - BPF\n") && k.contains("drop: [\"ALL\"]"));
    }
}
