//! [`BpfManager`]: the loaded objects, one per program kind, kept alive by the privhelper.

use std::os::fd::{AsFd, OwnedFd};

use aya::maps::{Array, Map, PerCpuArray};
use aya::programs::{BtfTracePoint, RawTracePoint, SchedClassifier, SocketFilter, TcAttachType};
use aya::{Btf, Ebpf, EbpfLoader};
use vigil_ipc_proto::{BpfProgram, InitConfig, PrivResponse};

use super::{
    Attached, BpfError, EXEC_OBJ, FLOWS_OBJ, FlowTotals, TCP_CHANGES_OBJ, map_freeze,
    packet_socket, tcx,
};

const PROC_RING: &str = "vigil_proc_rb";
const PROC_DROPS: &str = "vigil_proc_drops";
const FLOWS: &str = "vigil_flows";
const FLOW_TOTALS: &str = "vigil_flow_totals";
const TCP_CHANGES: &str = "vigil_tcp_changes";
/// Longest interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// Most interfaces the tc programs are attached to.
const MAX_TC_INTERFACES: usize = 256;

/// What the collector reads of a loaded program.
enum Output {
    /// A ring buffer of records (exec/exit) and the array counting what did not fit.
    Ring {
        map: &'static str,
        size: u32,
        drops_map: &'static str,
    },
    /// The flows and their totals (flow programs).
    Flows { max_entries: u32 },
    /// An mmap-able array of one value of counters (TCP state changes).
    Counters { map: &'static str, value_size: u32 },
}

struct Loaded {
    program: BpfProgram,
    output: Output,
    prog_ids: Vec<u32>,
    /// Interfaces the tc programs are attached to (tc only).
    interfaces: Vec<String>,
    /// The packet sockets carrying the socket filters (socket filter only). Closing them
    /// detaches.
    _sockets: Vec<OwnedFd>,
    /// tcx links (tc only). Closing them detaches.
    _links: Vec<OwnedFd>,
    /// Programs, links and maps; dropping it detaches and unloads everything.
    ebpf: Ebpf,
}

/// The programs this privhelper loaded. Dropping it detaches them all (nothing is pinned).
#[derive(Default)]
pub struct BpfManager {
    loaded: Vec<Loaded>,
}

impl std::fmt::Debug for BpfManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.loaded
                    .iter()
                    .map(|l| (l.program, &l.prog_ids, &l.interfaces)),
            )
            .finish()
    }
}

fn prog_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    move |source| BpfError::Program { name, source }
}

fn program_id(p: &aya::programs::Program, name: &'static str) -> Result<u32, BpfError> {
    Ok(p.info().map_err(prog_err(name))?.id())
}

/// A loaded map's own description (`BPF_OBJ_GET_INFO_BY_FD`); `what` names it in the error.
fn map_info(data: &aya::maps::MapData, what: &'static str) -> Result<aya::maps::MapInfo, BpfError> {
    data.info().map_err(|e| BpfError::Io {
        what,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Ring size from the map's own description, checked (power of two, whole pages).
fn ring_size(ebpf: &Ebpf, name: &'static str) -> Result<u32, BpfError> {
    let Some(Map::RingBuf(data)) = ebpf.map(name) else {
        return Err(BpfError::Missing(name));
    };
    let size = map_info(data, "BPF_OBJ_GET_INFO_BY_FD (ring buffer)")?.max_entries();
    let page = u32::try_from(vigil_ipc_proto::heap::page_size()).unwrap_or(4096);
    if size == 0 || !size.is_power_of_two() || !size.is_multiple_of(page) {
        return Err(BpfError::BadRingSize(name, size));
    }
    Ok(size)
}

/// The flow map's size from its own description (what the collector is told to expect).
fn flow_entries(ebpf: &Ebpf) -> Result<u32, BpfError> {
    let Some(Map::LruHashMap(data)) = ebpf.map(FLOWS) else {
        return Err(BpfError::Missing(FLOWS));
    };
    Ok(map_info(data, "BPF_OBJ_GET_INFO_BY_FD (flows)")?.max_entries())
}

fn dup_map(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, BpfError> {
    let map = ebpf.map(name).ok_or(BpfError::Missing(name))?;
    let data = match map {
        Map::RingBuf(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) | Map::Array(d) => d,
        _ => return Err(BpfError::Missing(name)),
    };
    // F_DUPFD_CLOEXEC: the duplicate is close-on-exec.
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| BpfError::Io {
            what: "dup of a map descriptor",
            source,
        })
}

/// `name` is a plausible network interface name (what the kernel accepts, minus oddities).
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Interfaces of this network namespace but loopback, from /sys/class/net.
fn default_interfaces() -> Result<Vec<String>, BpfError> {
    let dir = std::fs::read_dir("/sys/class/net").map_err(|source| BpfError::Io {
        what: "listing /sys/class/net",
        source,
    })?;
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo" && valid_ifname(n))
        .take(MAX_TC_INTERFACES)
        .collect();
    names.sort();
    Ok(names)
}

impl BpfManager {
    pub fn new() -> Self {
        BpfManager::default()
    }

    /// Load and attach `program` once; every call returns new duplicates of its maps.
    pub fn attach(&mut self, program: BpfProgram, init: &InitConfig) -> Result<Attached, BpfError> {
        let feature = program.feature();
        if !init.feature_enabled(feature) {
            return Err(BpfError::FeatureDisabled(feature));
        }
        if !self.loaded.iter().any(|l| l.program == program) {
            let loaded = match program {
                BpfProgram::ExecExit => load_exec()?,
                BpfProgram::FlowsTracepoint => load_flows_tracepoint()?,
                BpfProgram::FlowsSocketFilter => load_flows_socket()?,
                BpfProgram::FlowsTc => load_flows_tc(&init.collector.flow_interfaces)?,
                BpfProgram::TcpChanges => load_tcp_changes()?,
            };
            tracing::info!(
                ?program,
                prog_ids = ?loaded.prog_ids,
                interfaces = ?loaded.interfaces,
                "BPF program attached"
            );
            self.loaded.push(loaded);
        }
        let loaded = self
            .loaded
            .iter()
            .find(|l| l.program == program)
            .ok_or(BpfError::Missing("loaded program"))?;
        let (response, fds) = match loaded.output {
            Output::Ring { map, size, .. } => (
                PrivResponse::BpfRingbuf {
                    program,
                    ring_size: size,
                },
                vec![dup_map(&loaded.ebpf, map)?],
            ),
            Output::Flows { max_entries } => (
                PrivResponse::BpfFlowMap {
                    program,
                    max_entries,
                },
                vec![
                    dup_map(&loaded.ebpf, FLOWS)?,
                    dup_map(&loaded.ebpf, FLOW_TOTALS)?,
                ],
            ),
            Output::Counters { map, value_size } => (
                PrivResponse::BpfCounters {
                    program,
                    value_size,
                },
                vec![dup_map(&loaded.ebpf, map)?],
            ),
        };
        Ok(Attached {
            program,
            response,
            fds,
            prog_ids: loaded.prog_ids.clone(),
        })
    }

    /// Kernel ids of every program loaded here.
    pub fn prog_ids(&self) -> Vec<u32> {
        self.loaded
            .iter()
            .flat_map(|l| l.prog_ids.iter().copied())
            .collect()
    }

    /// Interfaces the tc programs are attached to.
    pub fn tc_interfaces(&self) -> Vec<String> {
        self.loaded
            .iter()
            .filter(|l| l.program == BpfProgram::FlowsTc)
            .flat_map(|l| l.interfaces.iter().cloned())
            .collect()
    }

    /// Records the program could not write because its ring buffer was full (exec/exit).
    pub fn drops(&self, program: BpfProgram) -> Option<u64> {
        let l = self.loaded.iter().find(|l| l.program == program)?;
        let Output::Ring { drops_map, .. } = l.output else {
            return None;
        };
        let map = l.ebpf.map(drops_map)?;
        let arr: Array<&aya::maps::MapData, u64> = Array::try_from(map).ok()?;
        arr.get(&0, 0).ok()
    }

    /// A flow program's totals, summed over the CPUs, the runs not yet in the table included
    /// (tests, benchmarks; exact when no packet is being counted).
    pub fn flow_totals(&self, program: BpfProgram) -> Option<FlowTotals> {
        let l = self.loaded.iter().find(|l| l.program == program)?;
        let map = l.ebpf.map(FLOW_TOTALS)?;
        let arr: PerCpuArray<&aya::maps::MapData, [u64; 14]> = PerCpuArray::try_from(map).ok()?;
        let per_cpu = arr.get(&0, 0).ok()?;
        Some(per_cpu.iter().fold(FlowTotals::default(), |a, t| a.plus(t)))
    }

    /// Detach and unload one program (no-op if not loaded).
    pub fn detach(&mut self, program: BpfProgram) {
        self.loaded.retain(|l| l.program != program);
    }
}

fn load_exec() -> Result<Loaded, BpfError> {
    let mut ebpf = EbpfLoader::new().load(EXEC_OBJ)?;
    let prog_ids = attach_raw_tracepoints(
        &mut ebpf,
        &[
            ("vigil_exec", "sched_process_exec"),
            ("vigil_exit", "sched_process_exit"),
        ],
    )?;
    let size = ring_size(&ebpf, PROC_RING)?;
    Ok(Loaded {
        program: BpfProgram::ExecExit,
        output: Output::Ring {
            map: PROC_RING,
            size,
            drops_map: PROC_DROPS,
        },
        prog_ids,
        interfaces: Vec::new(),
        _sockets: Vec::new(),
        _links: Vec::new(),
        ebpf,
    })
}

/// Load and attach each (program, raw tracepoint); their kernel ids.
fn attach_raw_tracepoints(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &str)],
) -> Result<Vec<u32>, BpfError> {
    let mut prog_ids = Vec::new();
    for &(name, tp) in programs {
        let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
        let rtp: &mut RawTracePoint = p.try_into().map_err(prog_err(name))?;
        rtp.load().map_err(prog_err(name))?;
        rtp.attach(tp).map_err(prog_err(name))?;
        let p = ebpf.program(name).ok_or(BpfError::Missing(name))?;
        prog_ids.push(program_id(p, name)?);
    }
    Ok(prog_ids)
}

/// The TCP state change counters: a raw tracepoint program and its one-value array, whose
/// size the collector is told (it maps the value read-only).
fn load_tcp_changes() -> Result<Loaded, BpfError> {
    let mut ebpf = EbpfLoader::new().load(TCP_CHANGES_OBJ)?;
    let prog_ids =
        attach_raw_tracepoints(&mut ebpf, &[("vigil_tcp_change", "inet_sock_set_state")])?;
    let Some(Map::Array(data)) = ebpf.map(TCP_CHANGES) else {
        return Err(BpfError::Missing(TCP_CHANGES));
    };
    let value_size = map_info(data, "BPF_OBJ_GET_INFO_BY_FD (tcp changes)")?.value_size();
    // The collector maps it: read-only for good (a frozen map refuses writable mappings).
    map_freeze(data.fd().as_fd()).map_err(|source| BpfError::Io {
        what: "BPF_MAP_FREEZE (tcp changes)",
        source,
    })?;
    Ok(Loaded {
        program: BpfProgram::TcpChanges,
        output: Output::Counters {
            map: TCP_CHANGES,
            value_size,
        },
        prog_ids,
        interfaces: Vec::new(),
        _sockets: Vec::new(),
        _links: Vec::new(),
        ebpf,
    })
}

/// The tracepoint programs: what every device of this network namespace receives, and what
/// every one but loopback transmits (loopback's packets are counted once, as received).
fn load_flows_tracepoint() -> Result<Loaded, BpfError> {
    const PROGS: [(&str, &str); 2] = [
        ("vigil_flow_tp_rx", "netif_receive_skb"),
        ("vigil_flow_tp_tx", "net_dev_start_xmit"),
    ];
    let btf = Btf::from_sys_fs().map_err(|e| BpfError::Io {
        what: "reading the kernel's BTF",
        source: std::io::Error::other(e.to_string()),
    })?;
    // The namespace's inode number, as the kernel's `net->ns.inum`: the tracepoints fire for
    // every namespace's devices.
    let netns = std::fs::metadata("/proc/self/ns/net").map_err(|source| BpfError::Io {
        what: "stat /proc/self/ns/net",
        source,
    })?;
    let inum =
        u32::try_from(std::os::unix::fs::MetadataExt::ino(&netns)).map_err(|_| BpfError::Io {
            what: "network namespace inode",
            source: std::io::Error::other("beyond 32 bits"),
        })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("vigil_netns_inum", &inum, true)
        .load(FLOWS_OBJ)?;
    let mut prog_ids = Vec::new();
    for (name, tp) in PROGS {
        let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
        let prog: &mut BtfTracePoint = p.try_into().map_err(prog_err(name))?;
        prog.load(tp, &btf).map_err(prog_err(name))?;
        prog.attach().map_err(prog_err(name))?;
        let p = ebpf.program(name).ok_or(BpfError::Missing(name))?;
        prog_ids.push(program_id(p, name)?);
    }
    let max_entries = flow_entries(&ebpf)?;
    Ok(Loaded {
        program: BpfProgram::FlowsTracepoint,
        output: Output::Flows { max_entries },
        prog_ids,
        interfaces: Vec::new(),
        _sockets: Vec::new(),
        _links: Vec::new(),
        ebpf,
    })
}

/// The socket filter on packet sockets: one on every interface that ignores outgoing packets
/// (everything received, loopback traffic once), and one per other interface for what it
/// transmits — so no interface's transmit path clones packets for loopback traffic, the larger
/// part of what a packet tap costs. Interfaces that appear later are seen receiving, not
/// transmitting (as tc, attached to the interfaces present at the first request).
fn load_flows_socket() -> Result<Loaded, BpfError> {
    const ALL: &str = "vigil_flow_sock";
    const EGRESS: &str = "vigil_flow_sock_eg";
    let mut ebpf = EbpfLoader::new().load(FLOWS_OBJ)?;
    for name in [ALL, EGRESS] {
        let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
        let sf: &mut SocketFilter = p.try_into().map_err(prog_err(name))?;
        sf.load().map_err(prog_err(name))?;
    }
    let mut sockets = Vec::new();
    let all = packet_socket::open()?;
    packet_socket::ignore_outgoing(&all)?;
    attach_socket(&mut ebpf, ALL, &all)?;
    // Only now start receiving: no packet ever reaches a socket unfiltered.
    packet_socket::bind(&all, 0)?;
    sockets.push(all);
    let mut interfaces = Vec::new();
    for iface in default_interfaces()? {
        // Gone since the listing: nothing to watch there.
        let Ok(index) = tcx::ifindex(&iface) else {
            continue;
        };
        let s = packet_socket::open()?;
        attach_socket(&mut ebpf, EGRESS, &s)?;
        match packet_socket::bind(&s, index) {
            Ok(()) => {}
            // Removed since the listing.
            Err(BpfError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                continue;
            }
            Err(e) => return Err(e),
        }
        sockets.push(s);
        interfaces.push(iface);
    }
    let mut prog_ids = Vec::new();
    for name in [ALL, EGRESS] {
        let p = ebpf.program(name).ok_or(BpfError::Missing(name))?;
        prog_ids.push(program_id(p, name)?);
    }
    let max_entries = flow_entries(&ebpf)?;
    Ok(Loaded {
        program: BpfProgram::FlowsSocketFilter,
        output: Output::Flows { max_entries },
        prog_ids,
        interfaces,
        _sockets: sockets,
        _links: Vec::new(),
        ebpf,
    })
}

fn attach_socket(ebpf: &mut Ebpf, name: &'static str, sock: &OwnedFd) -> Result<(), BpfError> {
    let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
    let sf: &mut SocketFilter = p.try_into().map_err(prog_err(name))?;
    sf.attach(sock.as_fd()).map_err(prog_err(name))?;
    Ok(())
}

fn load_flows_tc(configured: &[String]) -> Result<Loaded, BpfError> {
    const PROGS: [(&str, TcAttachType); 2] = [
        ("vigil_flow_tc_in", TcAttachType::Ingress),
        ("vigil_flow_tc_eg", TcAttachType::Egress),
    ];
    let interfaces = if configured.is_empty() {
        default_interfaces()?
    } else {
        if configured.len() > MAX_TC_INTERFACES {
            return Err(BpfError::BadInterface(format!(
                "{} interfaces (at most {MAX_TC_INTERFACES})",
                configured.len()
            )));
        }
        if let Some(bad) = configured.iter().find(|n| !valid_ifname(n)) {
            return Err(BpfError::BadInterface(bad.clone()));
        }
        configured.to_vec()
    };
    if interfaces.is_empty() {
        return Err(BpfError::NoInterface);
    }
    let mut ebpf = EbpfLoader::new().load(FLOWS_OBJ)?;
    let mut prog_ids = Vec::new();
    for (name, _) in PROGS {
        let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
        let cls: &mut SchedClassifier = p.try_into().map_err(prog_err(name))?;
        cls.load().map_err(prog_err(name))?;
        let p = ebpf.program(name).ok_or(BpfError::Missing(name))?;
        prog_ids.push(program_id(p, name)?);
    }
    let mut attached = Vec::new();
    let mut errors = Vec::new();
    let mut links = Vec::new();
    for iface in &interfaces {
        let idx = match tcx::ifindex(iface) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(interface = %iface, error = %e, "tc: no such interface");
                errors.push(format!("{iface}: {e}"));
                continue;
            }
        };
        let mut ok = true;
        for (name, at) in PROGS {
            let p = ebpf.program_mut(name).ok_or(BpfError::Missing(name))?;
            let cls: &mut SchedClassifier = p.try_into().map_err(prog_err(name))?;
            let egress = matches!(at, TcAttachType::Egress);
            let fd = cls.fd().map_err(prog_err(name))?;
            let res = match tcx::attach(fd.as_fd(), idx, egress) {
                Ok(link) => {
                    links.push(link);
                    Ok(())
                }
                // Kernels before 6.6 have no tcx: aya's netlink path (clsact qdisc + filter).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                    let _ = aya::programs::tc::qdisc_add_clsact(iface);
                    cls.attach(iface, at).map(|_| ()).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = res {
                tracing::warn!(interface = %iface, program = name, error = %e, "tc attach failed");
                errors.push(format!("{iface}: {e}"));
                ok = false;
            }
        }
        if ok {
            attached.push(iface.clone());
        }
    }
    if attached.is_empty() {
        return Err(BpfError::TcAttach(errors.join("; ")));
    }
    let max_entries = flow_entries(&ebpf)?;
    Ok(Loaded {
        program: BpfProgram::FlowsTc,
        output: Output::Flows { max_entries },
        prog_ids,
        interfaces: attached,
        _sockets: Vec::new(),
        _links: links,
        ebpf,
    })
}
