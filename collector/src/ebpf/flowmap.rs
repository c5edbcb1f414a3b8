//! The flow programs' maps, read through the descriptors the privhelper passed: the flows (an
//! LRU hash, `struct vigil_flow_key` → `struct vigil_flow_value`) with
//! `BPF_MAP_LOOKUP_BATCH`, the per-CPU totals and runs (`struct vigil_flow_totals`) with
//! `BPF_MAP_LOOKUP_ELEM`, once before and once after the table (see [`FlowMap::read`]). These two commands are all of bpf() this process may call (seccomp:
//! `policies/seccomp/collector-flows.policy`), and both descriptors are read-only (the maps
//! were created with `BPF_F_RDONLY`; checked here), so it could not change them anyway. No capability is needed: since
//! Linux 6.5 the kernel checks privileges when maps and programs are created, not when a map
//! descriptor someone handed over is read (measured: `bench/flowmap_read.c`).
//!
//! Every size is bounded: the flow count by the map's `max_entries` (checked in
//! /proc/self/fdinfo against what the privhelper said); the per-CPU lookup writes one value per
//! possible CPU, so its buffer has room for [`MAX_CPUS`] of them whatever
//! /sys/devices/system/cpu/possible says (which must say at most that many).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use vigil_ipc_proto::pagebuf::PageBuf;

use super::records::{Direction, FlowSource};

/// `sizeof(struct vigil_flow_key)`.
pub const KEY_SIZE: usize = 48;
/// `sizeof(struct vigil_flow_value)`.
pub const VALUE_SIZE: usize = 32;
/// `sizeof(struct vigil_flow_totals)`.
pub const TOTALS_SIZE: usize = 112;
/// Offsets in `struct vigil_flow_totals` of this CPU's run: key, first_ns, packets, bytes, seq.
const RUN_KEY: usize = 32;
const RUN_FIRST_NS: usize = 80;
const RUN_PACKETS: usize = 88;
const RUN_BYTES: usize = 96;
const RUN_SEQ: usize = 104;
/// Largest flow table accepted.
pub const MAX_ENTRIES: u32 = 1 << 20;
/// Most possible CPUs accepted (the per-CPU lookup writes one value per possible CPU; the
/// kernel's own limit, NR_CPUS, is at most this on x86_64 and aarch64).
pub const MAX_CPUS: usize = 8192;
/// Entries asked for per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH: u32 = 4096;

/// `enum bpf_cmd`.
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `enum bpf_map_type`.
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const MAP_TYPE_LRU_HASH: u32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    #[error("{what}: not the expected map ({found})")]
    NotFlowMap { what: &'static str, found: String },
    #[error("flow table of {0} entries (at most {MAX_ENTRIES})")]
    BadSize(u32),
    #[error("possible CPUs: {0}")]
    Cpus(String),
    #[error("{what}: {source}")]
    Bpf {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The flow programs' totals since they were loaded, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Every packet counted, in a flow or not (the CPUs' runs that were read included).
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose flow found no room in the table.
    pub not_stored: u64,
    /// Flows inserted; minus the flows present, the flows the kernel evicted.
    pub created: u64,
}

/// One entry of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFlow {
    pub ifindex: u32,
    pub direction: Direction,
    pub proto: u8,
    pub source: FlowSource,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Counters since the entry was created.
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC ns of the entry's first packet (a re-created entry differs).
    pub first_ns: u64,
    /// cgroup v2 id of the sending socket (tc egress), else 0.
    pub cgroup_id: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// One key and value as the kernel wrote them; `None` when the key is not one the programs
/// write (unknown family).
pub fn parse_entry(key: &[u8], value: &[u8]) -> Option<KernelFlow> {
    let family = *key.get(6)?;
    let addr = |off: usize| -> Option<IpAddr> {
        match family {
            4 => {
                let a: [u8; 4] = key.get(off..off + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(a)))
            }
            6 => {
                let a: [u8; 16] = key.get(off..off + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => None,
        }
    };
    Some(KernelFlow {
        ifindex: u32_at(key, 0)?,
        direction: if *key.get(4)? == 1 {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        proto: *key.get(5)?,
        source: match key.get(7)? {
            1 => FlowSource::Socket,
            2 => FlowSource::Tc,
            3 => FlowSource::Tracepoint,
            _ => FlowSource::Unknown,
        },
        sport: u16_at(key, 8)?,
        dport: u16_at(key, 10)?,
        saddr: addr(16)?,
        daddr: addr(32)?,
        packets: u64_at(value, 0)?,
        bytes: u64_at(value, 8)?,
        first_ns: u64_at(value, 16)?,
        cgroup_id: u64_at(value, 24)?,
    })
}

/// Number of possible CPUs from a `/sys/devices/system/cpu/possible` text ("0-3", "0,2-5").
pub fn parse_possible(text: &str) -> Option<usize> {
    let mut highest = None;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        highest = Some(highest.map_or(n, |h: usize| h.max(n)));
    }
    highest.and_then(|h| h.checked_add(1))
}

fn possible_cpus() -> Result<usize, FlowMapError> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| FlowMapError::Cpus(e.to_string()))?;
    match parse_possible(&text) {
        Some(n) if (1..=MAX_CPUS).contains(&n) => Ok(n),
        _ => Err(FlowMapError::Cpus(format!("{text:?}"))),
    }
}

/// How user space is kept from writing to a map handed to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoWrites {
    /// The descriptor is read-only (the map was created with BPF_F_RDONLY).
    ReadOnlyFd,
    /// The map is frozen (BPF_MAP_FREEZE): no update, no writable mmap, whatever the
    /// descriptor (an mmap-able map must be mapped through a descriptor open for writing).
    Frozen,
}

/// What /proc/self/fdinfo says about a map descriptor must be exactly this (the per-CPU lookup
/// writes `value_size × CPUs` bytes: the sizes must be right before any lookup).
pub(crate) fn check_fdinfo(
    fd: RawFd,
    what: &'static str,
    map_type: u32,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
    no_writes: NoWrites,
) -> Result<(), FlowMapError> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|e| {
        FlowMapError::NotFlowMap {
            what,
            found: format!("fdinfo unreadable: {e}"),
        }
    })?;
    let field = |name: &str| -> Option<u64> {
        let v = text.lines().find_map(|l| l.strip_prefix(name))?.trim();
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    };
    let found = (
        field("map_type:"),
        field("key_size:"),
        field("value_size:"),
        field("max_entries:"),
    );
    let want = (
        Some(u64::from(map_type)),
        Some(key_size as u64),
        Some(value_size as u64),
        Some(u64::from(max_entries)),
    );
    // The descriptor itself is read-only (the map was created with BPF_F_RDONLY, which the
    // kernel keeps as the file's access mode, octal in the `flags:` line, not in `map_flags`).
    let mode = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 8).ok());
    let read_only = mode.is_some_and(|m| m & (libc::O_ACCMODE as u64) == libc::O_RDONLY as u64);
    let frozen = field("frozen:");
    let no_writes_ok = match no_writes {
        NoWrites::ReadOnlyFd => read_only,
        NoWrites::Frozen => frozen == Some(1),
    };
    if found != want || !no_writes_ok {
        return Err(FlowMapError::NotFlowMap {
            what,
            found: format!(
                "type, key, value, entries {found:?}, file flags {mode:?}, frozen {frozen:?}; \
                 expected {want:?}, {no_writes:?}"
            ),
        });
    }
    Ok(())
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// bpf(BPF_MAP_LOOKUP_ELEM) of `key` into `value`, which must hold what the kernel writes
/// (the caller checked the map's sizes).
fn lookup_elem(fd: RawFd, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: attr points at live buffers; the kernel reads key_size bytes of `key` and writes
    // value_size (× possible CPUs for a per-CPU map) bytes into `value`; the caller checked the
    // sizes against fdinfo and sized the buffers for them (for MAX_CPUS CPUs).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One bpf(BPF_MAP_LOOKUP_BATCH) call: up to `keys.len() / KEY_SIZE` entries into `keys` and
/// `values` from the position in `pos` (None: the start). Returns the entries copied and
/// whether the walk is over.
fn lookup_batch(
    fd: RawFd,
    pos: Option<u64>,
    next: &mut u64,
    keys: &mut [u8],
    values: &mut [u8],
) -> std::io::Result<(usize, bool)> {
    let room = (keys.len() / KEY_SIZE).min(values.len() / VALUE_SIZE);
    let mut in_batch = pos.unwrap_or(0);
    let mut attr = BatchAttr {
        in_batch: if pos.is_some() {
            &mut in_batch as *mut u64 as u64
        } else {
            0
        },
        out_batch: next as *mut u64 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(room).unwrap_or(u32::MAX),
        map_fd: fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: attr points at live buffers of `room` keys and values of the sizes checked
    // against fdinfo; the batch position is a u32 for hash maps, written into a u64.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    let got = (attr.count as usize).min(room);
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // The end of the table: what was copied is valid.
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok((got, true));
        }
        return Err(e);
    }
    Ok((got, false))
}

/// One CPU's `struct vigil_flow_totals` as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cpu {
    packets: u64,
    bytes: u64,
    not_stored: u64,
    created: u64,
    run_key: [u8; KEY_SIZE],
    run_first_ns: u64,
    run_packets: u64,
    run_bytes: u64,
    run_seq: u64,
}

impl Cpu {
    fn parse(b: &[u8]) -> Cpu {
        let at = |off| u64_at(b, off).unwrap_or(0);
        let mut run_key = [0; KEY_SIZE];
        if let Some(k) = b.get(RUN_KEY..RUN_KEY + KEY_SIZE) {
            run_key.copy_from_slice(k);
        }
        Cpu {
            packets: at(0),
            bytes: at(8),
            not_stored: at(16),
            created: at(24),
            run_key,
            run_first_ns: at(RUN_FIRST_NS),
            run_packets: at(RUN_PACKETS),
            run_bytes: at(RUN_BYTES),
            run_seq: at(RUN_SEQ),
        }
    }

    /// The run's (packets, bytes) when it did not change between `before` (read before the
    /// table) and `self` (after): then it is not in the table yet as read, and counted nowhere
    /// else. A run that changed meanwhile may be in the table already: it is left out (read
    /// next time, or found in its entry).
    fn steady_run(&self, before: &Cpu) -> Option<(u64, u64)> {
        let steady = self.run_seq == before.run_seq
            && self.run_seq.is_multiple_of(2)
            && self.run_first_ns != 0
            && self.run_first_ns == before.run_first_ns
            && self.run_key == before.run_key;
        (steady && self.run_packets > 0).then_some((self.run_packets, self.run_bytes))
    }
}

/// The flow table and totals of one flow program.
pub struct FlowMap {
    flows: OwnedFd,
    totals: OwnedFd,
    max_entries: u32,
    /// Possible CPUs: the values the per-CPU lookup writes.
    cpus: usize,
    /// The batch buffers: resident only as far as the most flows one read returned.
    keys: PageBuf,
    values: PageBuf,
    per_cpu: PageBuf,
    before: Vec<Cpu>,
    after: Vec<Cpu>,
}

impl std::fmt::Debug for FlowMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowMap")
            .field("flows", &self.flows.as_raw_fd())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl FlowMap {
    /// The two descriptors of a `BpfFlowMap` answer, checked to be what it says.
    pub fn new(flows: OwnedFd, totals: OwnedFd, max_entries: u32) -> Result<Self, FlowMapError> {
        if max_entries == 0 || max_entries > MAX_ENTRIES {
            return Err(FlowMapError::BadSize(max_entries));
        }
        check_fdinfo(
            flows.as_raw_fd(),
            "flow table",
            MAP_TYPE_LRU_HASH,
            KEY_SIZE,
            VALUE_SIZE,
            max_entries,
            NoWrites::ReadOnlyFd,
        )?;
        check_fdinfo(
            totals.as_raw_fd(),
            "flow totals",
            MAP_TYPE_PERCPU_ARRAY,
            4,
            TOTALS_SIZE,
            1,
            NoWrites::ReadOnlyFd,
        )?;
        // More possible CPUs than the buffer holds is refused. The buffer has room for
        // MAX_CPUS values whatever the count (the kernel writes one per possible CPU); the
        // count (the highest possible CPU + 1, at least the kernel's) bounds what is parsed.
        let cpus = possible_cpus()?;
        let chunk = BATCH.min(max_entries) as usize;
        Ok(FlowMap {
            flows,
            totals,
            max_entries,
            cpus,
            keys: PageBuf::new(chunk * KEY_SIZE),
            values: PageBuf::new(chunk * VALUE_SIZE),
            per_cpu: PageBuf::new(MAX_CPUS * TOTALS_SIZE),
            before: Vec::with_capacity(cpus),
            after: Vec::with_capacity(cpus),
        })
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Every CPU's totals and run into `out` (the values are zeroed first, so a CPU the kernel
    /// did not write adds nothing).
    fn read_cpus(&mut self, after: bool) -> Result<(), FlowMapError> {
        let used = self.cpus * TOTALS_SIZE;
        self.per_cpu[..used].fill(0);
        lookup_elem(
            self.totals.as_raw_fd(),
            &0u32.to_ne_bytes(),
            &mut self.per_cpu,
        )
        .map_err(|source| FlowMapError::Bpf {
            what: "BPF_MAP_LOOKUP_ELEM (flow totals)",
            source,
        })?;
        let out = if after {
            &mut self.after
        } else {
            &mut self.before
        };
        out.clear();
        out.extend(
            self.per_cpu[..used]
                .chunks_exact(TOTALS_SIZE)
                .map(Cpu::parse),
        );
        Ok(())
    }

    /// One read of the table: the per-CPU totals and runs, every entry (handed to `f`;
    /// entries whose key the programs would not write are counted and skipped), then, when
    /// some CPU had a run, the per-CPU runs again: the entries a run may belong to are handed
    /// to `f` last, with the steady runs (see `Cpu::steady_run`) that name them added. The
    /// totals returned are those read first plus the steady runs, so that every packet in
    /// them is in an entry handed over or lost. Returns (totals, entries, skipped). At most
    /// `max_entries` plus one batch are read (the table changes while it is walked).
    pub fn read(
        &mut self,
        mut f: impl FnMut(&KernelFlow),
    ) -> Result<(Totals, usize, usize), FlowMapError> {
        self.read_cpus(false)?;
        let mut t = Totals::default();
        for c in &self.before {
            t.packets = t.packets.wrapping_add(c.packets);
            t.bytes = t.bytes.wrapping_add(c.bytes);
            t.not_stored = t.not_stored.wrapping_add(c.not_stored);
            t.created = t.created.wrapping_add(c.created);
        }
        // The runs that may be added to an entry: (key, first_ns), sorted for the walk.
        let mut runs: Vec<([u8; KEY_SIZE], u64)> = self
            .before
            .iter()
            .filter(|c| c.run_seq.is_multiple_of(2) && c.run_first_ns != 0)
            .map(|c| (c.run_key, c.run_first_ns))
            .collect();
        runs.sort_unstable();
        runs.dedup();
        let mut with_run: Vec<([u8; KEY_SIZE], KernelFlow)> = Vec::new();
        let fd = self.flows.as_raw_fd();
        let limit = self.max_entries as usize + self.keys.len() / KEY_SIZE;
        let (mut seen, mut skipped) = (0usize, 0usize);
        let mut pos = None;
        loop {
            let mut next = 0u64;
            let (got, end) = lookup_batch(fd, pos, &mut next, &mut self.keys, &mut self.values)
                .map_err(|source| FlowMapError::Bpf {
                    what: "BPF_MAP_LOOKUP_BATCH (flow table)",
                    source,
                })?;
            let entries = self
                .keys
                .chunks_exact(KEY_SIZE)
                .zip(self.values.chunks_exact(VALUE_SIZE))
                .take(got);
            for (k, v) in entries {
                match parse_entry(k, v) {
                    Some(e) => match <[u8; KEY_SIZE]>::try_from(k) {
                        // Handed over after the second read, with the steady runs added.
                        Ok(key) if runs.binary_search(&(key, e.first_ns)).is_ok() => {
                            with_run.push((key, e))
                        }
                        _ => f(&e),
                    },
                    None => skipped += 1,
                }
            }
            seen += got;
            if end || got == 0 || seen >= limit {
                break;
            }
            pos = Some(next);
        }
        if runs.is_empty() {
            return Ok((t, seen, skipped));
        }
        if let Err(err) = self.read_cpus(true) {
            // Without the runs: the entries as the table has them.
            for (_, e) in &with_run {
                f(e);
            }
            return Err(err);
        }
        for (c, before) in self.after.iter().zip(&self.before) {
            let Some((packets, bytes)) = c.steady_run(before) else {
                continue;
            };
            t.packets = t.packets.wrapping_add(packets);
            t.bytes = t.bytes.wrapping_add(bytes);
            for (key, e) in with_run.iter_mut() {
                if *key == c.run_key && e.first_ns == c.run_first_ns {
                    e.packets = e.packets.wrapping_add(packets);
                    e.bytes = e.bytes.wrapping_add(bytes);
                }
            }
        }
        for (_, e) in &with_run {
            f(e);
        }
        Ok((t, seen, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpus_parse() {
        assert_eq!(parse_possible("0-1\n"), Some(2));
        assert_eq!(parse_possible("0"), Some(1));
        assert_eq!(parse_possible("0,2-5"), Some(6));
        assert_eq!(parse_possible(""), None);
        assert_eq!(parse_possible("x"), None);
    }

    #[test]
    fn entry_parses() {
        let mut k = [0u8; KEY_SIZE];
        k[0..4].copy_from_slice(&7u32.to_ne_bytes());
        k[4] = 1;
        k[5] = 17;
        k[6] = 4;
        k[7] = 2;
        k[8..10].copy_from_slice(&40000u16.to_ne_bytes());
        k[10..12].copy_from_slice(&53u16.to_ne_bytes());
        k[16..20].copy_from_slice(&[10, 0, 0, 1]);
        k[32..36].copy_from_slice(&[10, 0, 0, 2]);
        let mut v = [0u8; VALUE_SIZE];
        v[0..8].copy_from_slice(&3u64.to_ne_bytes());
        v[8..16].copy_from_slice(&300u64.to_ne_bytes());
        v[16..24].copy_from_slice(&99u64.to_ne_bytes());
        v[24..32].copy_from_slice(&5u64.to_ne_bytes());
        let e = parse_entry(&k, &v).unwrap();
        assert_eq!(e.ifindex, 7);
        assert_eq!(e.direction, Direction::Egress);
        assert_eq!(e.source, FlowSource::Tc);
        assert_eq!((e.sport, e.dport), (40000, 53));
        assert_eq!(e.saddr.to_string(), "10.0.0.1");
        assert_eq!(e.daddr.to_string(), "10.0.0.2");
        assert_eq!(
            (e.packets, e.bytes, e.first_ns, e.cgroup_id),
            (3, 300, 99, 5)
        );
        k[6] = 5;
        assert_eq!(parse_entry(&k, &v), None, "unknown family");
        k[6] = 6;
        assert!(parse_entry(&k, &v).unwrap().saddr.is_ipv6());
        assert_eq!(parse_entry(&k[..40], &v), None, "short key");
        assert_eq!(parse_entry(&k, &v[..31]), None, "short value");
    }

    /// One CPU's `struct vigil_flow_totals` as the kernel lays it out.
    fn cpu_bytes(counters: [u64; 4], key: u8, run: [u64; 4]) -> Vec<u8> {
        let mut b = Vec::new();
        for c in counters {
            b.extend(c.to_ne_bytes());
        }
        b.extend([key; KEY_SIZE]);
        for r in run {
            b.extend(r.to_ne_bytes());
        }
        assert_eq!(b.len(), TOTALS_SIZE);
        b
    }

    #[test]
    fn cpu_values_parse_at_their_offsets() {
        let c = Cpu::parse(&cpu_bytes([1, 2, 3, 4], 9, [5, 6, 7, 8]));
        assert_eq!((c.packets, c.bytes, c.not_stored, c.created), (1, 2, 3, 4));
        assert_eq!(c.run_key, [9; KEY_SIZE]);
        assert_eq!(
            (c.run_first_ns, c.run_packets, c.run_bytes, c.run_seq),
            (5, 6, 7, 8)
        );
        // Short: what is missing reads as 0 (never from the kernel: sizes are checked).
        let c = Cpu::parse(&[0xff; 16]);
        assert_eq!((c.not_stored, c.run_first_ns, c.run_seq), (0, 0, 0));
    }

    #[test]
    fn only_a_run_unchanged_across_the_walk_is_counted() {
        // [first_ns, packets, bytes, seq]
        let before = Cpu::parse(&cpu_bytes([0; 4], 1, [77, 10, 640, 4]));
        let at = |key: u8, run: [u64; 4]| Cpu::parse(&cpu_bytes([0; 4], key, run));
        // Same run, grown meanwhile: the later counts.
        assert_eq!(at(1, [77, 12, 768, 4]).steady_run(&before), Some((12, 768)));
        // Changed (flushed into its entry, maybe read there) or changing: left out.
        assert_eq!(at(1, [77, 3, 192, 6]).steady_run(&before), None);
        assert_eq!(at(1, [77, 12, 768, 5]).steady_run(&before), None);
        let odd = Cpu::parse(&cpu_bytes([0; 4], 1, [77, 10, 640, 5]));
        assert_eq!(odd.steady_run(&odd), None);
        // Another flow or another entry of it under the same seq (torn read): left out.
        assert_eq!(at(2, [77, 12, 768, 4]).steady_run(&before), None);
        assert_eq!(at(1, [78, 12, 768, 4]).steady_run(&before), None);
        // No run, or an empty one.
        let none = at(1, [0, 0, 0, 4]);
        assert_eq!(none.steady_run(&none), None);
        let empty = at(1, [77, 0, 0, 4]);
        assert_eq!(empty.steady_run(&empty), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_entry_never_panics(
            k in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            v in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let _ = parse_entry(&k, &v);
        }
    }
}
