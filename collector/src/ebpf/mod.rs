//! eBPF data in the collector, through descriptors the privhelper passed over the IPC channel
//! (`PrivRequest::BpfAttach`): exec/exit's ring buffer (`PrivResponse::BpfRingbuf` + fd),
//! consumed with mmap only, and the flow programs' table and totals (`PrivResponse::BpfFlowMap`
//! with two fds), read-only maps read with the two bpf() lookup commands the collector's
//! seccomp policy allows when flows are on (`collector-flows.policy`).
//!
//! - [`ringbuf`]: the mmap consumer;
//! - [`records`]: the binary records of `privhelper/bpf/vigil_records.h`;
//! - [`exec`]: exec/exit events → `Record::Log` (`process.exec` / `process.exit`);
//! - [`flowmap`]: the flow table and totals, read by batch;
//! - [`flows`]: the kernel's per-flow counters as deltas and cumulative sums →
//!   `vigil.network.flow.bytes` / `.packets` metrics on eviction (every `collector.flow_evict_ms`).
//!
//! Integration: [`attach_all`] asks the privhelper for every enabled program; a ring
//! [`EbpfSource`] is pollable ([`EbpfSource::ring_fd`] is readable when records are pending)
//! and [`EbpfSource::drain`] turns pending records into [`Record`]s; a flow source is read on
//! the eviction timer. [`EbpfSource::set_process_hook`] lets the process table see exec/exit
//! events.

pub mod cgroup;
pub mod exec;
pub mod flowmap;
pub mod flows;
pub mod mapping;
pub mod records;
pub mod ringbuf;
pub mod tcpchanges;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::event_loop::Source;
use crate::privclient::{PrivClient, PrivClientError};
use vigil_ipc_proto::{
    BpfProgram, Feature, InitConfig, KeyValue, Metric, MetricKind, MetricValue, PrivErrorCode,
    PrivResponse, ProtoError, Record,
};

pub use cgroup::CgroupResolver;
pub use flowmap::{FlowMap, FlowMapError};
pub use flows::FlowTable;
pub use records::{BpfRecord, ProcEvent, ProcEventKind};
pub use ringbuf::{RingBuf, RingBufError};
pub use tcpchanges::{TcpChanges, TcpChangesError};

/// Ring buffers are drained on a timer at least this often too (besides their wakeups).
pub const FLOW_DRAIN_INTERVAL_MS: u64 = 500;

/// Records taken from one ring buffer per [`EbpfSource::drain`] call, so one busy ring cannot
/// starve the event loop.
pub const DRAIN_BUDGET: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("ipc: {0}")]
    Proto(#[from] ProtoError),
    #[error("privhelper refused {program:?}: {code:?}: {message}")]
    Refused {
        program: BpfProgram,
        code: PrivErrorCode,
        message: String,
    },
    #[error("unexpected answer from the privhelper to BpfAttach({0:?})")]
    Unexpected(BpfProgram),
    #[error("ring buffer: {0}")]
    Ring(#[from] RingBufError),
    #[error("flow table: {0}")]
    FlowMap(#[from] FlowMapError),
    #[error("TCP state change counters: {0}")]
    TcpChanges(#[from] TcpChangesError),
    #[error("{program:?}: answer {answer} with {fds} descriptors")]
    BadAnswer {
        program: BpfProgram,
        answer: &'static str,
        fds: usize,
    },
}

/// Wall clock from CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime - monotonic, in ns.
    offset: i128,
    now_unix_nano: u64,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset: real - mono,
            now_unix_nano: u64::try_from(real).unwrap_or(0),
        }
    }
    pub fn unix_nano(&self, ktime_ns: u64) -> u64 {
        u64::try_from(i128::from(ktime_ns) + self.offset).unwrap_or(0)
    }
    pub fn now_unix_nano(&self) -> u64 {
        self.now_unix_nano
    }
}

type ProcessHook = Box<dyn FnMut(&ProcEvent) + Send>;

/// Counters of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Ring records consumed.
    pub records: u64,
    /// Ring records, or flow table entries, that were not what the programs write.
    pub malformed: u64,
    pub proc_events: u64,
    /// Packets the flow programs counted (their totals at the last read).
    pub flow_packets: u64,
    /// Records the kernel could not write because the ring was full (latest count carried by
    /// the records themselves).
    pub kernel_drops: u64,
    /// Reads of the flow table.
    pub flow_reads: u64,
}

/// What a source reads.
enum Input {
    /// Exec/exit records.
    Ring(RingBuf),
    /// The flow programs' table and totals.
    Flows(FlowMap),
}

/// One BPF program's output and what it becomes.
pub struct EbpfSource {
    pub program: BpfProgram,
    input: Input,
    flows: FlowTable,
    hook: Option<ProcessHook>,
    cgroups: Option<CgroupResolver>,
    pub stats: SourceStats,
    /// Wall clock when the source was made (start of its cumulative counters).
    started_unix_nano: u64,
}

impl std::fmt::Debug for EbpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let input: &dyn std::fmt::Debug = match &self.input {
            Input::Ring(r) => r,
            Input::Flows(m) => m,
        };
        f.debug_struct("EbpfSource")
            .field("program", &self.program)
            .field("input", input)
            .field("stats", &self.stats)
            .finish()
    }
}

impl EbpfSource {
    /// A ring buffer source (exec/exit).
    pub fn new(program: BpfProgram, fd: OwnedFd, ring_size: u32) -> Result<Self, EbpfError> {
        Ok(Self::with_input(
            program,
            Input::Ring(RingBuf::new(fd, ring_size)?),
        ))
    }

    /// A flow table source.
    pub fn flow_map(
        program: BpfProgram,
        flows: OwnedFd,
        totals: OwnedFd,
        max_entries: u32,
    ) -> Result<Self, EbpfError> {
        Ok(Self::with_input(
            program,
            Input::Flows(FlowMap::new(flows, totals, max_entries)?),
        ))
    }

    /// The source a `BpfAttach` answer describes, with the descriptors that came with it.
    pub fn from_response(resp: &PrivResponse, mut fds: Vec<OwnedFd>) -> Result<Self, EbpfError> {
        let n = fds.len();
        match *resp {
            PrivResponse::BpfRingbuf { program, ring_size } if n == 1 => {
                Self::new(program, fds.remove(0), ring_size)
            }
            PrivResponse::BpfFlowMap {
                program,
                max_entries,
            } if n == 2 => {
                let totals = fds.remove(1);
                Self::flow_map(program, fds.remove(0), totals, max_entries)
            }
            PrivResponse::BpfRingbuf { program, .. } => Err(EbpfError::BadAnswer {
                program,
                answer: "BpfRingbuf",
                fds: n,
            }),
            PrivResponse::BpfFlowMap { program, .. } => Err(EbpfError::BadAnswer {
                program,
                answer: "BpfFlowMap",
                fds: n,
            }),
            _ => Err(EbpfError::Unexpected(BpfProgram::ExecExit)),
        }
    }

    fn with_input(program: BpfProgram, input: Input) -> Self {
        EbpfSource {
            program,
            input,
            flows: FlowTable::new(),
            hook: None,
            cgroups: None,
            stats: SourceStats::default(),
            started_unix_nano: Clock::now().now_unix_nano(),
        }
    }

    /// The ring buffer's descriptor, readable when records are pending (ring sources only; a
    /// map descriptor is not pollable).
    pub fn ring_fd(&self) -> Option<RawFd> {
        match &self.input {
            Input::Ring(r) => Some(r.as_raw_fd()),
            Input::Flows(_) => None,
        }
    }

    /// Attribute exec/exit events and tc egress flows to containers / pods by cgroup.
    pub fn set_cgroup_resolver(&mut self, r: CgroupResolver) {
        self.cgroups = Some(r);
    }

    /// Called for every exec/exit event, before it becomes a log record.
    pub fn set_process_hook(&mut self, hook: impl FnMut(&ProcEvent) + Send + 'static) {
        self.hook = Some(Box::new(hook));
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The flow table, e.g. to [`FlowTable::set_attributor`] container attribution.
    pub fn flows_mut(&mut self) -> &mut FlowTable {
        &mut self.flows
    }

    /// Consume pending records (at most [`DRAIN_BUDGET`]): exec/exit events are appended to
    /// `out` as log records. A flow source reads the kernel's table into the flow table
    /// instead ([`read_flows`](Self::read_flows)). Returns the records (entries) read.
    pub fn drain(
        &mut self,
        out: &mut Vec<Record>,
        resource: &[KeyValue],
    ) -> Result<usize, EbpfError> {
        let clock = Clock::now();
        let Self {
            input,
            hook,
            cgroups,
            stats,
            ..
        } = self;
        let ring = match input {
            Input::Ring(r) => r,
            Input::Flows(_) => return self.read_flows(),
        };
        let n = ring.consume(DRAIN_BUDGET, |bytes| {
            stats.records += 1;
            match records::parse(bytes) {
                Some(BpfRecord::Proc(e)) => {
                    stats.proc_events += 1;
                    stats.kernel_drops = stats.kernel_drops.max(u64::from(e.drops));
                    if let Some(h) = hook.as_mut() {
                        h(&e);
                    }
                    let extra = cgroups
                        .as_mut()
                        .map(|r| r.attributes(e.cgroup_id))
                        .unwrap_or_default();
                    out.push(exec::to_record(
                        &e,
                        clock.unix_nano(e.ktime_ns),
                        clock.now_unix_nano(),
                        resource,
                        extra,
                    ));
                }
                None => stats.malformed += 1,
            }
        })?;
        Ok(n)
    }

    /// Read the kernel's flow table into the flow table (flow sources; 0 for a ring): the
    /// totals first, then every entry, with the runs the CPUs counted and did not add to their
    /// entries yet, so that a packet in the totals is in its entry unless the entry is gone
    /// (`FlowMap::read`). Returns the entries read.
    pub fn read_flows(&mut self) -> Result<usize, EbpfError> {
        let Input::Flows(map) = &mut self.input else {
            return Ok(0);
        };
        let clock = Clock::now();
        let flows = &mut self.flows;
        flows.begin_read();
        let (totals, present, skipped) = map.read(|e| flows.apply(e, &clock))?;
        flows.end_read(totals, present.saturating_sub(skipped));
        self.stats.flow_reads += 1;
        self.stats.malformed += skipped as u64;
        self.stats.flow_packets = totals.packets;
        Ok(present)
    }

    /// Like [`drain`](Self::drain) but hands the parsed records to `f` (ring sources; tests,
    /// benchmarks).
    pub fn drain_raw(
        &mut self,
        max: usize,
        mut f: impl FnMut(BpfRecord),
    ) -> Result<usize, EbpfError> {
        let Input::Ring(ring) = &mut self.input else {
            return Ok(0);
        };
        let stats = &mut self.stats;
        Ok(ring.consume(max, |bytes| {
            stats.records += 1;
            match records::parse(bytes) {
                Some(r) => f(r),
                None => stats.malformed += 1,
            }
        })?)
    }

    /// Flow metrics for the interval from the last read (call every `collector.flow_evict_ms`,
    /// after [`read_flows`](Self::read_flows)), then the table's own: `vigil.network.flow.
    /// evictions` and `vigil.network.flow.lost` (flow sources).
    pub fn evict_flows(&mut self, resource: &[KeyValue]) -> Vec<Record> {
        let now = Clock::now().now_unix_nano();
        let mut out = self.flows.evict_with(now, resource, self.cgroups.as_mut());
        if let Input::Flows(_) = self.input {
            let source = self.program.flows_source_name().unwrap_or("socket");
            let metric = |name: &str, unit: &str, v: u64| Metric {
                name: name.into(),
                unit: unit.into(),
                kind: MetricKind::Sum { monotonic: true },
                start_time_unix_nano: self.started_unix_nano,
                time_unix_nano: now,
                value: MetricValue::I64(i64::try_from(v).unwrap_or(i64::MAX)),
                attributes: vec![KeyValue::str("vigil.flow.source", source)],
            };
            out.push(Record::Metrics {
                resource: resource.to_vec(),
                metrics: vec![
                    metric(
                        "vigil.network.flow.evictions",
                        "{flow}",
                        self.flows.evicted_flows,
                    ),
                    metric(
                        "vigil.network.flow.lost",
                        "{packet}",
                        self.flows.lost_packets,
                    ),
                ],
            });
        }
        out
    }

    /// Bytes of records not consumed yet (ring sources).
    pub fn pending_bytes(&self) -> u64 {
        match &self.input {
            Input::Ring(r) => r.pending(),
            Input::Flows(_) => 0,
        }
    }
}

/// Programs the collector's configuration asks for, by feature name (see the privhelper's
/// feature gates `ebpf_exec`, `ebpf_flows_tracepoint`, `ebpf_flows_socket`, `ebpf_flows_tc`):
/// the flow program `collector.flows_source` names, if its feature is on.
pub fn wanted_programs(init: &InitConfig) -> Vec<BpfProgram> {
    let mut v = Vec::new();
    if init.collector.ebpf_exec && init.feature_enabled(Feature::EbpfExec) {
        v.push(BpfProgram::ExecExit);
    }
    if init.collector.ebpf_flows {
        // (The supervisor refuses other names at start.)
        let flows = BpfProgram::flows_source(&init.collector.flows_source)
            .unwrap_or(BpfProgram::FlowsTracepoint);
        if init.feature_enabled(flows.feature()) {
            v.push(flows);
        }
    }
    v
}

/// Ask the privhelper to attach `program` and map (or check) what it sends back. Blocks for the
/// answer (use at start-up, before the event loop, on a blocking channel).
pub fn request(privhelper: &mut PrivClient, program: BpfProgram) -> Result<EbpfSource, EbpfError> {
    let (resp, fds) = attach(privhelper, program)?;
    EbpfSource::from_response(&resp, fds)
}

/// The TCP state change counters (`ebpf_tcp_changes`), attached and mapped read-only.
pub fn request_tcp_changes(privhelper: &mut PrivClient) -> Result<TcpChanges, EbpfError> {
    let program = BpfProgram::TcpChanges;
    match attach(privhelper, program)? {
        (PrivResponse::BpfCounters { value_size, .. }, mut fds) if fds.len() == 1 => {
            Ok(TcpChanges::new(fds.remove(0), value_size)?)
        }
        _ => Err(EbpfError::Unexpected(program)),
    }
}

/// `BpfAttach(program)`: the answer and its descriptors, or why not.
fn attach(
    privhelper: &mut PrivClient,
    program: BpfProgram,
) -> Result<(PrivResponse, Vec<OwnedFd>), EbpfError> {
    match privhelper.bpf_attach(program) {
        Ok(answer) => Ok(answer),
        Err(PrivClientError::Refused { code, message, .. }) => Err(EbpfError::Refused {
            program,
            code,
            message,
        }),
        Err(PrivClientError::Proto(e)) => Err(e.into()),
        Err(PrivClientError::Unexpected(_)) => Err(EbpfError::Unexpected(program)),
    }
}

/// Attach every wanted program; failures are returned next to the sources (a refused feature
/// must not stop the collector).
pub fn attach_all(
    privhelper: &mut PrivClient,
    init: &InitConfig,
) -> (Vec<EbpfSource>, Vec<(BpfProgram, EbpfError)>) {
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for p in wanted_programs(init) {
        match request(privhelper, p) {
            Ok(s) => ok.push(s),
            Err(e) => errs.push((p, e)),
        }
    }
    (ok, errs)
}

/// Every eBPF source of the collector and its timers: one [`Source`] of the event loop (its
/// ring buffers watched, [`EbpfSources::service`] when one is readable or when
/// [`EbpfSources::next_deadline`] passes).
pub struct EbpfSources {
    sources: Vec<EbpfSource>,
    /// The features whose program could not be attached, and why.
    failed: Vec<(Feature, String)>,
    /// The resource attributes of the records it makes (`host.name`).
    resource: Vec<KeyValue>,
    evict_every: std::time::Duration,
    next_evict: std::time::Instant,
    next_drain: std::time::Instant,
}

impl std::fmt::Debug for EbpfSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.sources).finish()
    }
}

impl EbpfSources {
    /// `flow_evict_ms` is `collector.flow_evict_ms` (at least 100 ms).
    pub fn new(sources: Vec<EbpfSource>, flow_evict_ms: u64) -> Self {
        let now = std::time::Instant::now();
        let evict_every = std::time::Duration::from_millis(flow_evict_ms.max(100));
        EbpfSources {
            sources,
            failed: Vec::new(),
            resource: Vec::new(),
            evict_every,
            next_evict: now + evict_every,
            next_drain: now + std::time::Duration::from_millis(FLOW_DRAIN_INTERVAL_MS),
        }
    }

    /// The resource attributes of the records it makes.
    pub fn with_resource(mut self, resource: Vec<KeyValue>) -> Self {
        self.resource = resource;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The features whose program [`start`] could not attach, and why (taken once).
    pub fn take_failures(&mut self) -> Vec<(Feature, String)> {
        std::mem::take(&mut self.failed)
    }

    /// [`EbpfSources::service`] with its own resource, failures logged.
    fn service_logged(&mut self, now: std::time::Instant, out: &mut Vec<Record>) {
        let resource = std::mem::take(&mut self.resource);
        for e in self.service(now, out, &resource) {
            tracing::warn!("eBPF: {e}");
        }
        self.resource = resource;
    }

    pub fn sources(&self) -> &[EbpfSource] {
        &self.sources
    }

    pub fn sources_mut(&mut self) -> &mut [EbpfSource] {
        &mut self.sources
    }

    /// When the event loop must call [`service`](Self::service) at the latest.
    pub fn next_deadline(&self) -> std::time::Instant {
        self.next_evict.min(self.next_drain)
    }

    /// Drain every ring (exec/exit records are appended to `out` at once), and when the eviction
    /// interval has passed read every flow table and append the flow metrics. A failing source
    /// is reported and the others still serviced.
    pub fn service(
        &mut self,
        now: std::time::Instant,
        out: &mut Vec<Record>,
        resource: &[KeyValue],
    ) -> Vec<EbpfError> {
        let mut errors = Vec::new();
        for s in self.sources.iter_mut().filter(|s| s.ring_fd().is_some()) {
            if let Err(e) = s.drain(out, resource) {
                errors.push(e);
            }
        }
        self.next_drain = now + std::time::Duration::from_millis(FLOW_DRAIN_INTERVAL_MS);
        if now >= self.next_evict {
            for s in self.sources.iter_mut().filter(|s| s.ring_fd().is_none()) {
                if let Err(e) = s.read_flows() {
                    errors.push(e);
                }
                out.extend(s.evict_flows(resource));
            }
            self.next_evict = now + self.evict_every;
        }
        errors
    }

    /// Counters summed over the sources, for the role's stats (`ebpf_records`, ...).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut c = SourceStats::default();
        let (mut flows, mut lost, mut lost_bytes, mut evicted, mut not_stored) = (0, 0, 0, 0, 0);
        for s in &self.sources {
            c.records += s.stats.records;
            c.malformed += s.stats.malformed;
            c.proc_events += s.stats.proc_events;
            c.flow_packets += s.stats.flow_packets;
            c.kernel_drops += s.stats.kernel_drops;
            c.flow_reads += s.stats.flow_reads;
            let t = s.flows();
            flows += t.len() as u64;
            lost += t.lost_packets;
            lost_bytes += t.lost_bytes;
            evicted += t.evicted_flows;
            not_stored += t.totals.not_stored;
        }
        vec![
            ("ebpf_records".into(), c.records),
            ("ebpf_malformed".into(), c.malformed),
            ("ebpf_proc_events".into(), c.proc_events),
            ("ebpf_flow_packets".into(), c.flow_packets),
            ("ebpf_kernel_drops".into(), c.kernel_drops),
            ("ebpf_flows".into(), flows),
            ("ebpf_flow_reads".into(), c.flow_reads),
            // Packets counted in no flow: evicted before their last counts were read, or no
            // room in the kernel's table (`ebpf_flow_not_stored`, part of it) or here.
            ("ebpf_flow_overflow_packets".into(), lost),
            ("ebpf_flow_lost_bytes".into(), lost_bytes),
            ("ebpf_flow_not_stored".into(), not_stored),
            ("ebpf_flow_evictions".into(), evicted),
        ]
    }
}

impl Source for EbpfSources {
    fn watch(&self, out: &mut Vec<RawFd>) {
        out.extend(self.sources.iter().filter_map(|s| s.ring_fd()));
    }

    fn on_readable(&mut self, out: &mut Vec<Record>) {
        self.service_logged(std::time::Instant::now(), out);
    }

    fn on_tick(&mut self, now: std::time::Instant, out: &mut Vec<Record>) {
        if !self.is_empty() && now >= self.next_deadline() {
            self.service_logged(now, out);
        }
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        (!self.is_empty()).then(|| self.next_deadline())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        EbpfSources::counters(self)
    }
}

/// Start-up in one call: ask the privhelper for every enabled program (blocking on the
/// channel), log the refusals, and return the sources ready for the event loop.
pub fn start(privhelper: &mut PrivClient, init: &InitConfig) -> EbpfSources {
    let (mut sources, errors) = attach_all(privhelper, init);
    for s in &mut sources {
        if let Some(mut r) = CgroupResolver::discover() {
            if init.collector.k8s_names && init.feature_enabled(Feature::K8sNames) {
                let root = std::path::Path::new(&init.host_root);
                r.set_k8s_names(crate::k8s::K8sNames::new(root));
            }
            s.set_cgroup_resolver(r);
        }
    }
    for (_, e) in &errors {
        tracing::warn!("eBPF source unavailable: {e}");
    }
    for s in &sources {
        match &s.input {
            Input::Ring(r) => {
                tracing::info!(program = ?s.program, ring_bytes = r.size(), "eBPF ring buffer mapped")
            }
            Input::Flows(m) => tracing::info!(
                program = ?s.program,
                max_entries = m.max_entries(),
                "eBPF flow table ready"
            ),
        }
    }
    let mut set = EbpfSources::new(sources, init.collector.flow_evict_ms)
        .with_resource(crate::host_resource(init));
    set.failed = errors
        .into_iter()
        .map(|(p, e)| (p.feature(), e.to_string()))
        .collect();
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    /// An answer with the wrong number of descriptors, or descriptors that are not the maps
    /// it names, is refused before anything is mapped or looked up.
    #[test]
    fn answers_are_checked_against_their_descriptors() {
        let flows = PrivResponse::BpfFlowMap {
            program: BpfProgram::FlowsSocketFilter,
            max_entries: 16384,
        };
        let ring = PrivResponse::BpfRingbuf {
            program: BpfProgram::ExecExit,
            ring_size: 4096,
        };
        for (resp, n) in [(&flows, 1), (&flows, 3), (&ring, 0), (&ring, 2)] {
            let fds = (0..n).map(|_| devnull()).collect();
            assert!(
                matches!(
                    EbpfSource::from_response(resp, fds),
                    Err(EbpfError::BadAnswer { fds, .. }) if fds == n
                ),
                "{resp:?} with {n}"
            );
        }
        assert!(matches!(
            EbpfSource::from_response(&flows, vec![devnull(), devnull()]),
            Err(EbpfError::FlowMap(FlowMapError::NotFlowMap { .. }))
        ));
        let big = PrivResponse::BpfFlowMap {
            program: BpfProgram::FlowsTc,
            max_entries: flowmap::MAX_ENTRIES + 1,
        };
        assert!(matches!(
            EbpfSource::from_response(&big, vec![devnull(), devnull()]),
            Err(EbpfError::FlowMap(FlowMapError::BadSize(_)))
        ));
        assert!(matches!(
            EbpfSource::from_response(&ring, vec![devnull()]),
            Err(EbpfError::Ring(_))
        ));
    }
}
