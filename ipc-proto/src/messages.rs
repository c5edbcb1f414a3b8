//! Every message exchanged between vigil's processes. Adding a variant at the end is compatible
//! with the decoder of the same build only; any change here bumps [`crate::PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

use crate::config::InitConfig;
use crate::records::Batch;

/// The four roles of the process tree (plus the `vigil status` client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Role {
    Supervisor,
    Privhelper,
    Collector,
    Shipper,
    StatusClient,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Privhelper => "privhelper",
            Role::Collector => "collector",
            Role::Shipper => "shipper",
            Role::StatusClient => "status-client",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "supervisor" => Role::Supervisor,
            "privhelper" => Role::Privhelper,
            "collector" => Role::Collector,
            "shipper" => Role::Shipper,
            _ => return None,
        })
    }

    /// The three roles the supervisor starts.
    pub const CHILDREN: [Role; 3] = [Role::Privhelper, Role::Collector, Role::Shipper];
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// First frame on every channel, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u16,
    pub role: Role,
}

pub const HELLO_MAGIC: [u8; 4] = *b"VGIL";

impl Hello {
    pub fn new(role: Role) -> Self {
        Hello {
            magic: HELLO_MAGIC,
            version: crate::PROTOCOL_VERSION,
            role,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// supervisor <-> child (control channel, fd 3 in the child)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SupervisorToChild {
    /// Sent once, right after the hello: what to drop, what to run.
    Init(Box<InitConfig>),
    /// Ask for a [`ChildToSupervisor::Stats`] answer.
    StatsRequest,
    /// Finish current work, flush, exit 0.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildToSupervisor {
    /// The sandbox is in place; the child reports what it could apply.
    Ready(SandboxReport),
    /// Pipeline counters of the role (records accepted, shipped, ...).
    Stats(RoleStats),
    /// A warning the operator should see once (a feature that turned off at run time, ...).
    Warning(String),
    /// Written by the SIGSYS handler just before the role dies: the syscall the seccomp filter
    /// refused. Fixed-width fields so the handler can patch a pre-encoded frame without
    /// allocating.
    SeccompViolation {
        #[serde(with = "postcard::fixint::le")]
        syscall: u32,
        #[serde(with = "postcard::fixint::le")]
        arch: u32,
    },
    /// The configuration cannot work and restarting will not change that (a certificate that
    /// does not parse, a key that does not match its certificate, ...). Sent before the child
    /// exits; the supervisor then stops the agent with this message instead of restarting.
    ConfigError(String),
    /// A feature the supervisor turned on did not work in the child (the privhelper refused
    /// it, the runtime's seccomp profile denied a syscall, ...): `vigil status` shows it off
    /// with this reason until the child is started again.
    FeatureOff {
        feature: crate::Feature,
        reason: String,
    },
}

/// What a child actually applied to itself, as it saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub uid: u32,
    pub gid: u32,
    /// Landlock: "enforced (ABI n)", "partially enforced (ABI n)", "not supported", "off".
    pub landlock: String,
    /// Seccomp policy name applied, or "off".
    pub seccomp: String,
    pub no_new_privs: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStats {
    /// Named counters and gauges (`records_accepted`, `journal_bytes`, ...).
    pub counters: Vec<(String, u64)>,
}

impl RoleStats {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

// ---------------------------------------------------------------------------------------------
// collector <-> privhelper. This enum is the privhelper's whole attack surface.
// ---------------------------------------------------------------------------------------------

/// Most pids accepted in one [`PrivRequest::ProcFdStats`].
pub const MAX_FD_STAT_PIDS: usize = 4096;
/// Longest network namespace name accepted (as `ip netns` names under /run/netns).
pub const MAX_NETNS_NAME: usize = 64;
/// Most pids accepted in one [`PrivRequest::ProcIoStats`] (the worst-case answer fits a frame).
pub const MAX_IO_STAT_PIDS: usize = 1024;
/// Most pids accepted in one [`PrivRequest::ProcExePaths`].
pub const MAX_EXE_PIDS: usize = 48;
/// Longest executable path answered (bytes); longer ones are answered as unknown, never cut.
pub const MAX_EXE_PATH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivRequest {
    /// Open /dev/kmsg read-only, non-blocking; answered with the fd.
    OpenKmsg,
    /// Count open fds and sockets of these processes (other users' /proc/PID/fd).
    ProcFdStats { pids: Vec<u32> },
    /// List network namespaces on the host (named ones under /run/netns and those of processes).
    ListNetns,
    /// Create a NETLINK_ROUTE socket inside that network namespace; answered with the fd.
    NetlinkRouteInNetns { target: NetnsTarget },
    /// Load and attach a BPF program; answered with its ring buffer map fd (exec) or its flow
    /// map fds (flows).
    BpfAttach { program: BpfProgram },
    /// Storage I/O counters (/proc/PID/io) of these processes (feature `process_io`).
    ProcIoStats { pids: Vec<u32> },
    /// Executable paths (/proc/PID/exe) of these processes (feature `process_io`).
    ProcExePaths { pids: Vec<u32> },
    /// The collector's start-up is over: start-up requests are refused from now on, and the
    /// privhelper drops every capability no steady-state request needs. Answered `Ready`.
    Ready,
    /// Load and attach the task iterator (feature `process_iter`); answered with its BPF link
    /// descriptor ([`FdKind::BpfIterLink`]), from which the collector creates one iterator
    /// per cycle (bpf(BPF_ITER_CREATE), the only bpf() command its seccomp filter allows).
    TaskIterLink,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetnsTarget {
    /// The network namespace of this process.
    Pid(u32),
    /// A name under /run/netns (as made by `ip netns add`).
    Named(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BpfProgram {
    /// Process exec/exit from the sched raw tracepoints.
    ExecExit,
    /// Network flows from a socket filter on an AF_PACKET socket.
    FlowsSocketFilter,
    /// Network flows from the tracepoints every received and transmitted packet passes
    /// (tp_btf netif_receive_skb, net_dev_start_xmit).
    FlowsTracepoint,
    /// Network flows from tc (cls_bpf) on an interface.
    FlowsTc,
    /// TCP state changes counted from the raw tracepoint inet_sock_set_state.
    TcpChanges,
}

impl BpfProgram {
    /// The flow programs by their `collector.flows_source` name (the default first).
    pub const FLOW_SOURCES: [(&'static str, BpfProgram); 3] = [
        ("tracepoint", BpfProgram::FlowsTracepoint),
        ("socket", BpfProgram::FlowsSocketFilter),
        ("tc", BpfProgram::FlowsTc),
    ];

    /// The flow program `collector.flows_source` names.
    pub fn flows_source(name: &str) -> Option<BpfProgram> {
        Self::FLOW_SOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }

    /// A flow program's `collector.flows_source` name (`None` for the other programs).
    pub fn flows_source_name(self) -> Option<&'static str> {
        Self::FLOW_SOURCES
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
    }

    /// The feature the program serves.
    pub fn feature(self) -> crate::Feature {
        match self {
            BpfProgram::ExecExit => crate::Feature::EbpfExec,
            BpfProgram::FlowsSocketFilter => crate::Feature::EbpfFlowsSocket,
            BpfProgram::FlowsTracepoint => crate::Feature::EbpfFlowsTracepoint,
            BpfProgram::FlowsTc => crate::Feature::EbpfFlowsTc,
            BpfProgram::TcpChanges => crate::Feature::EbpfTcpChanges,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivResponse {
    /// The answer is the descriptor(s) attached to this datagram.
    Fd {
        kind: FdKind,
    },
    FdStats(Vec<ProcFdStat>),
    IoStats(Vec<ProcIoStat>),
    ExePaths(Vec<ProcExePath>),
    Netns(Vec<NetnsInfo>),
    Error(PrivError),
    /// Start-up is over on both sides; the capabilities the privhelper still holds.
    Ready {
        caps: Vec<u8>,
    },
    /// Answer to [`PrivRequest::BpfAttach`]: the descriptor attached to this datagram is the
    /// program's BPF ring buffer map (what [`FdKind::BpfRingbuf`] names). The collector may
    /// not call bpf() to learn the ring's size, so it comes here: the data area is
    /// `ring_size` bytes (a power of two, a multiple of the page size); mmap the consumer page
    /// read-write at offset 0 and the producer page plus `2 * ring_size` bytes read-only at
    /// offset one page.
    BpfRingbuf {
        program: BpfProgram,
        ring_size: u32,
    },
    /// Answer to [`PrivRequest::BpfAttach`] for a flow program: two descriptors are attached
    /// (both [`FdKind::BpfMap`], read-only from user space), the flows (an LRU hash of at most
    /// `max_entries` entries from `struct vigil_flow_key` to `struct vigil_flow_value`) and
    /// the per-CPU totals (`struct vigil_flow_totals`), in that order. The collector reads
    /// them with `BPF_MAP_LOOKUP_BATCH` / `BPF_MAP_LOOKUP_ELEM` only.
    BpfFlowMap {
        program: BpfProgram,
        max_entries: u32,
    },
    /// Answer to [`PrivRequest::BpfAttach`] for [`BpfProgram::TcpChanges`]: one descriptor
    /// is attached ([`FdKind::BpfMap`]: an array of one value, `struct vigil_tcp_changes` of
    /// `value_size` bytes, read-only from user space and mmap-able): the collector maps it
    /// read-only and sums its per-CPU counters; no bpf() call.
    BpfCounters {
        program: BpfProgram,
        value_size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    Kmsg,
    NetlinkRoute,
    BpfRingbuf,
    BpfMap,
    /// A BPF iterator link: BPF_ITER_CREATE on it gives a fresh dump to read.
    BpfIterLink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcFdStat {
    pub pid: u32,
    /// `None` when the process vanished or could not be read.
    pub fds: Option<u32>,
    /// `None` when sockets could not be told apart (no CAP_SYS_PTRACE).
    pub sockets: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcIoStat {
    pub pid: u32,
    /// `None` when the process vanished or could not be read.
    pub io: Option<crate::records::ProcessIo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcExePath {
    pub pid: u32,
    /// `None` when the process vanished, is a kernel thread, or the path is longer than
    /// [`MAX_EXE_PATH`].
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsInfo {
    /// Inode of the namespace (`ls -i /proc/PID/ns/net`).
    pub inode: u64,
    /// Name under /run/netns, if it has one.
    pub name: Option<String>,
    /// One process living in it, if any.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivError {
    pub code: PrivErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivErrorCode {
    /// The request failed validation (bad pid, bad name, too many items).
    BadRequest,
    /// The feature is off (missing capability or disabled in config).
    FeatureDisabled,
    /// The target does not exist (vanished process, unknown namespace).
    NotFound,
    /// The kernel refused.
    PermissionDenied,
    /// Any other failure of the operation.
    Failed,
    /// A start-up request after start-up, or a once-only request again.
    OutOfPhase,
}

// ---------------------------------------------------------------------------------------------
// collector <-> shipper (data path)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CollectorToShipper {
    Batch(Batch),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipperToCollector {
    /// Sent by the shipper right after the hello: what the journal already holds, so a
    /// restarted collector does not send kernel events again.
    Resume { last_kmsg_seq: Option<u64> },
    /// The batch with this sequence number is in the journal; the collector may forget it.
    Ack { seq: u64 },
    /// The batch was refused (malformed); it is not in the journal. Also sent when the
    /// journal's filesystem is full (`reason` starts with "not journaled: no space"): the
    /// collector may send it again later or drop it with its own counter.
    Nack { seq: u64, reason: String },
}

// ---------------------------------------------------------------------------------------------
// `vigil status` client <-> supervisor (root-only socket in the runtime dir)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    Status,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    Status(StatusReport),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub mount_mode: String,
    /// Whether the trimmed virtual root is in place (false: no CAP_SYS_ADMIN, or disabled).
    pub virtual_root: bool,
    pub non_root_mode: bool,
    pub user: String,
    pub processes: Vec<ProcessStatus>,
    pub features: Vec<FeatureState>,
    pub stats: Vec<(Role, RoleStats)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub role: Role,
    pub pid: u32,
    /// Ids (translated to the host's), capability sets, NoNewPrivs and seccomp mode, as in
    /// /proc/PID/status (also reachable through `Deref`: `p.cap_eff`).
    pub kernel: crate::procstatus::ProcStatusFields,
    /// As reported by the child (the kernel does not show Landlock in /proc).
    pub landlock: String,
    /// The seccomp policy files the child loaded (`shipper+shipper-dns`), as it reported.
    pub seccomp_policy: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

impl std::ops::Deref for ProcessStatus {
    type Target = crate::procstatus::ProcStatusFields;
    fn deref(&self) -> &Self::Target {
        &self.kernel
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureState {
    pub name: crate::Feature,
    pub enabled: bool,
    /// Why it is off (missing capabilities, kernel setting, config), empty when on.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::BpfProgram;

    #[test]
    fn flow_source_names_map_both_ways() {
        for (name, program) in BpfProgram::FLOW_SOURCES {
            assert_eq!(BpfProgram::flows_source(name), Some(program));
            assert_eq!(program.flows_source_name(), Some(name));
        }
        assert_eq!(BpfProgram::flows_source("pcap"), None);
        assert_eq!(BpfProgram::ExecExit.flows_source_name(), None);
        assert_eq!(
            BpfProgram::FLOW_SOURCES[0].0,
            "tracepoint",
            "the default first"
        );
    }
}
