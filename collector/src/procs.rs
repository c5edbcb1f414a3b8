//! Processes from /proc: the collector's hot path (thousands of processes per cycle).
//!
//! Per process and cycle, once it is known: `pread` of its /proc/PID/stat (kept open between
//! cycles), `fstat` of its /proc/PID directory (kept open: the owner, current even after a
//! setuid, since procfs computes it at stat time) and, when fd counts are on, `fstatat(dir,
//! "fd")`, whose st_size is the number of open descriptors (Linux >= 6.2, any user). A new
//! process also costs two opens and one read of its command line, cached per (pid, start
//! time, read again after an exec: the `comm` changed), and of its cgroup (container id, pod
//! UID). With context switches on, /proc/PID/schedstat (kept open too) tells whether the
//! main thread ran since the last cycle — its `pcount` moved — and only then is its
//! /proc/PID/status (kept open as well) read for the switch counts (they cannot change while
//! it does not run); a single-threaded process that did not run keeps its fd count and owner.
//! Nothing is allocated per process per cycle: samples are plain numbers, strings are
//! lent to the record encoder. Descriptors are bounded by `RLIMIT_NOFILE`: past the budget,
//! processes are read by path (open, read, close) like any other collector.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstat, fstatat};
use vigil_ipc_proto::{
    MAX_UNCHANGED_PIDS, ProcFdStat, ProcIoStat, ProcessRecord, Record, process_field,
};

use crate::sink::Sink;
use crate::users::Users;
use crate::util::{Stamp, parse_i64, parse_u64};

/// Longest command line kept (bytes); longer ones are cut.
pub const MAX_CMDLINE: usize = 4096;
/// Descriptors kept free for everything else the collector opens.
const FD_RESERVE: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("no ') ' after the command name")]
    NoComm,
    #[error("field {0} missing or not a number")]
    Field(usize),
}

/// The fields of /proc/PID/stat the collector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat<'a> {
    pub pid: u32,
    pub comm: &'a [u8],
    pub state: u8,
    pub ppid: u32,
    pub minflt: u64,
    pub majflt: u64,
    /// Clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub num_threads: i64,
    /// Clock ticks after boot.
    pub starttime: u64,
    /// Bytes.
    pub vsize: u64,
    /// Pages.
    pub rss: i64,
}

/// Parse one /proc/PID/stat line. The command name may hold spaces and parentheses: it ends at
/// the last ')'.
pub fn parse_stat(buf: &[u8]) -> Result<ProcStat<'_>, StatError> {
    let open = buf
        .iter()
        .position(|&c| c == b'(')
        .ok_or(StatError::NoComm)?;
    let close = buf
        .iter()
        .rposition(|&c| c == b')')
        .ok_or(StatError::NoComm)?;
    if close < open {
        return Err(StatError::NoComm);
    }
    let pid = parse_u64(buf[..open].trim_ascii())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(StatError::Field(1))?;
    let comm = &buf[open + 1..close];
    let rest = buf.get(close + 1..).ok_or(StatError::NoComm)?;
    let mut s = ProcStat {
        pid,
        comm,
        ..Default::default()
    };
    // Field numbers as in proc(5): 3 = state.
    let mut n = 3usize;
    for f in rest.split(|&c| c == b' ').filter(|f| !f.is_empty()) {
        let f = f.trim_ascii_end();
        match n {
            3 => s.state = *f.first().ok_or(StatError::Field(3))?,
            4 => {
                s.ppid = parse_u64(f)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(StatError::Field(4))?
            }
            10 => s.minflt = parse_u64(f).ok_or(StatError::Field(10))?,
            12 => s.majflt = parse_u64(f).ok_or(StatError::Field(12))?,
            14 => s.utime = parse_u64(f).ok_or(StatError::Field(14))?,
            15 => s.stime = parse_u64(f).ok_or(StatError::Field(15))?,
            20 => s.num_threads = parse_i64(f).ok_or(StatError::Field(20))?,
            22 => s.starttime = parse_u64(f).ok_or(StatError::Field(22))?,
            23 => s.vsize = parse_u64(f).ok_or(StatError::Field(23))?,
            24 => {
                s.rss = parse_i64(f).ok_or(StatError::Field(24))?;
                return Ok(s);
            }
            _ => {}
        }
        n += 1;
    }
    Err(StatError::Field(n))
}

/// `cmdline` as kept: each argument followed by NUL (lossy UTF-8, bounded; a cut command line
/// ends with its cut argument, NUL-terminated too).
pub fn cmdline_args(buf: &[u8]) -> String {
    let b = &buf[..buf.len().min(MAX_CMDLINE)];
    let b = b.strip_suffix(b"\0").unwrap_or(b);
    if b.is_empty() {
        return String::new();
    }
    // Sized exactly: kept per process for its life (pushing the NUL onto the lossy copy
    // doubled its capacity, ≈ 170 kB at 4,000 processes).
    let lossy = String::from_utf8_lossy(b);
    let mut s = String::with_capacity(lossy.len() + 1);
    s.push_str(&lossy);
    s.push('\0');
    s
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of /proc/PID/status.
pub fn parse_status_switches(buf: &[u8]) -> Option<(u64, u64)> {
    let (mut v, mut n) = (None, None);
    for (k, val) in crate::util::kv_lines(buf) {
        match k {
            b"voluntary_ctxt_switches" => v = parse_u64(val),
            b"nonvoluntary_ctxt_switches" => n = parse_u64(val),
            _ => {}
        }
    }
    Some((v?, n?))
}

/// `pcount` (times run on a CPU), the third number of /proc/PID/schedstat.
pub fn parse_schedstat_pcount(buf: &[u8]) -> Option<u64> {
    buf.trim_ascii()
        .split(|&c| c == b' ')
        .nth(2)
        .and_then(parse_u64)
}

/// One process as sampled in a cycle: numbers only.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub pid: u32,
    pub ppid: u32,
    pub state: u8,
    pub utime: u64,
    pub stime: u64,
    pub threads: u32,
    pub starttime: u64,
    pub vsize: u64,
    pub rss_bytes: u64,
    pub uid: u32,
    pub gid: u32,
    /// Open descriptors, when counted here (st_size of /proc/PID/fd).
    pub fds: Option<u32>,
    pub minflt: u64,
    pub majflt: u64,
    /// Context switches of the main thread (voluntary, involuntary), when read.
    pub switches: Option<(u64, u64)>,
    /// User and system time in ns, when known finer than clock ticks (the task iterator).
    pub cpu_ns: Option<(u64, u64)>,
    comm: [u8; 16],
    comm_len: u8,
}

impl ProcSample {
    pub fn comm(&self) -> &[u8] {
        &self.comm[..usize::from(self.comm_len)]
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub processes: u64,
    /// Processes that exited between the directory listing and the read (normal).
    pub vanished: u64,
    pub parse_errors: u64,
    /// Processes read by path because the descriptor budget was spent.
    pub uncached: u64,
    /// Processes sampled from the task iterator's dump.
    pub from_iter: u64,
    /// Processes /proc shows but the iterator did not (sampled through /proc).
    pub iter_missed: u64,
    /// Failed iterator dumps (the cycle read /proc instead).
    pub iter_errors: u64,
}

/// Hashes a pid for the process table: one multiply (Fibonacci hashing). Pids are small,
/// dense and not attacker-chosen in a way that matters here (the kernel assigns them), so
/// SipHash's flooding resistance buys nothing on the hot path.
#[derive(Default)]
pub struct PidHasher(u64);

impl std::hash::Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PidMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<PidHasher>>;

/// Descriptors kept for a process: /proc/PID (O_PATH), /proc/PID/stat and, with context
/// switches on, /proc/PID/schedstat and /proc/PID/status.
#[derive(Debug)]
struct ProcFds {
    dir: OwnedFd,
    stat: OwnedFd,
    schedstat: Option<OwnedFd>,
    status: Option<OwnedFd>,
}

/// What the scanner keeps about a process between cycles.
#[derive(Debug)]
struct Tracked {
    starttime: u64,
    /// Kept while the descriptor budget lasts.
    fds: Option<ProcFds>,
    /// `comm` when the strings below were read: a new one means an exec.
    comm: [u8; 16],
    /// NUL-terminated arguments. The strings are boxed (no capacity word, no spare room):
    /// they change only on exec.
    cmdline: Box<str>,
    /// From /proc/PID/cgroup: container id and pod UID (empty when none).
    container_id: Box<str>,
    pod_uid: Box<str>,
    /// Target of /proc/PID/exe (from the privhelper); empty until known.
    exe: Box<str>,
    /// Asked the privhelper for the executable path since the last exec.
    exe_asked: bool,
    /// st_ino of /proc/PID/net/dev: the same for every process of one network namespace.
    netns: Option<NonZeroU64>,
    /// schedstat `pcount` and the switch counts read when it was last seen to move.
    pcount: Option<u64>,
    switches: Option<(u64, u64)>,
    /// Threads, fd count and owner of the last sample.
    threads: u32,
    fd_count: Option<u32>,
    owner: (u32, u32),
    /// /proc/PID/io from the privhelper this cycle.
    io: Option<vigil_ipc_proto::ProcessIo>,
    /// User and system ns last reported from the iterator (they never go back).
    cpu_ns: (u64, u64),
    generation: u32,
    /// [`fingerprint`] of the last record sent in full, and when (unix ns) it is due again
    /// even if unchanged; `resend_at` 0: never sent.
    sent: u64,
    resend_at: u64,
    /// [`number_hashes`] of the last record sent: numbers that repeat are marked unchanged
    /// in the next one, until the refresh.
    numbers: [u32; process_field::COUNT],
}

impl Tracked {
    /// A process first seen (or seen again after its pid was reused): nothing read yet.
    /// Boxed: the table's buckets hold a pointer, not ≈ 310 bytes, and it runs at most 7/8
    /// full in power-of-two sizes (8,192 buckets for 4,080 processes: 2.6 MB unboxed, half
    /// of it empty buckets); a cycle's remove + insert moves 8 bytes instead of the struct.
    fn new(
        starttime: u64,
        fds: Option<ProcFds>,
        netns: Option<NonZeroU64>,
        generation: u32,
    ) -> Box<Self> {
        Box::new(Tracked {
            starttime,
            fds,
            comm: [0; 16],
            cmdline: Box::default(),
            container_id: Box::default(),
            pod_uid: Box::default(),
            exe: Box::default(),
            exe_asked: false,
            netns,
            pcount: None,
            switches: None,
            threads: 0,
            fd_count: None,
            owner: (0, 0),
            io: None,
            cpu_ns: (0, 0),
            generation,
            sent: 0,
            resend_at: 0,
            numbers: [0; process_field::COUNT],
        })
    }
}

/// Scans /proc; keeps its descriptors, buffers and caches between cycles.
pub struct ProcScanner {
    proc_dir: OwnedFd,
    buf: Vec<u8>,
    pids: Vec<u32>,
    tracked: PidMap<Box<Tracked>>,
    pub samples: Vec<ProcSample>,
    /// Processes sampled by the last scan (the next one's room, reserved at once).
    last_count: usize,
    page_size: u64,
    generation: u32,
    /// Count fds here (fstatat st_size) instead of asking the privhelper.
    pub count_fds: bool,
    /// Learn each new process's network namespace (for netns_metrics).
    pub track_netns: bool,
    /// Read context switches (schedstat-gated /proc/PID/status).
    pub switches: bool,
    /// Processes that may hold cached descriptors (two each, four with `switches`).
    fd_budget: usize,
    descriptor_limit: u64,
    cached: usize,
    /// /proc/PID/status reads this scan (the main thread had run).
    pub status_reads: u64,
    /// The task iterator, when the privhelper attached it: processes come from its dump, not
    /// from /proc/PID/stat (no descriptors kept per process).
    iter: Option<crate::taskiter::TaskIter>,
    /// Pids of the last dump, sorted.
    dumped: Vec<u32>,
    /// Processes /proc lists that the iterator does not show (on this test VM: pid 1's
    /// thread group); sampled through /proc each cycle, looked for every LIST_EVERY cycles.
    hidden: Vec<u32>,
    list_countdown: u32,
}

/// With the task iterator, /proc is listed every this many cycles to find processes the
/// iterator does not show.
const LIST_EVERY: u32 = 10;

fn err_io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Read a whole small file at offset 0 into `buf` (cleared first), bounded by `MAX_FILE`.
fn pread_all(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> Result<usize, Errno> {
    buf.clear();
    buf.resize(4096, 0);
    let mut len = 0;
    loop {
        match nix::sys::uio::pread(fd, &mut buf[len..], len as i64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
                if buf.len() >= crate::util::MAX_FILE {
                    break;
                }
                let grown = (buf.len() * 2).min(crate::util::MAX_FILE);
                buf.resize(grown, 0);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(len)
}

fn open_at(dir: BorrowedFd<'_>, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    openat(dir, path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

/// The descriptors this process may open (its soft `RLIMIT_NOFILE`; the child bootstrap
/// raised it to the hard limit before the sandbox, see [`raise_fd_limit`]).
fn descriptor_budget() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (any process may). Called before the
/// seccomp filter, which allows reading limits only.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(err_io)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(err_io)?;
    }
    Ok(hard)
}

impl ProcScanner {
    pub fn new(proc_root: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let proc_dir = nix::fcntl::open(
            proc_root.as_ref(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err_io)?;
        let limit = descriptor_budget().min(1 << 22);
        Ok(ProcScanner {
            proc_dir,
            buf: Vec::with_capacity(4096),
            pids: Vec::new(),
            tracked: PidMap::default(),
            samples: Vec::new(),
            last_count: 0,
            page_size: vigil_ipc_proto::heap::page_size() as u64,
            generation: 0,
            count_fds: false,
            track_netns: false,
            switches: false,
            fd_budget: (limit.saturating_sub(FD_RESERVE) / 2) as usize,
            descriptor_limit: limit,
            cached: 0,
            status_reads: 0,
            iter: None,
            dumped: Vec::new(),
            hidden: Vec::new(),
            list_countdown: 0,
        })
    }

    /// Take processes from the task iterator behind `link` from now on.
    pub fn set_task_iter(&mut self, link: OwnedFd) {
        self.iter = Some(crate::taskiter::TaskIter::new(link));
        self.list_countdown = 0;
    }

    /// Back to /proc for every process.
    pub fn clear_task_iter(&mut self) {
        self.iter = None;
    }

    /// Whether processes come from the task iterator.
    pub fn has_task_iter(&self) -> bool {
        self.iter.is_some()
    }

    /// One dump of the task iterator (the start-up's check that it works).
    pub fn dump_task_iter(&mut self) -> Option<Result<Vec<crate::taskiter::TaskRecord>, String>> {
        let it = self.iter.as_mut()?;
        let mut records = Vec::new();
        Some(
            it.dump(&mut records)
                .map(|_| records)
                .map_err(|e| e.to_string()),
        )
    }

    /// Read context switches: two more descriptors per process (schedstat, status), so the
    /// budget of processes keeping descriptors shrinks to a quarter of the limit.
    pub fn set_switches(&mut self, on: bool) {
        self.switches = on;
        let per = if on { 4 } else { 2 };
        self.fd_budget = (self.descriptor_limit.saturating_sub(FD_RESERVE) / per) as usize;
    }

    /// At most this many processes keep descriptors between cycles (tests use small ones).
    pub fn set_fd_budget(&mut self, processes: usize) {
        self.fd_budget = processes;
    }

    /// Processes holding cached descriptors now.
    pub fn cached(&self) -> usize {
        self.cached
    }

    fn list_pids(&mut self) -> std::io::Result<()> {
        self.pids.clear();
        let mut dir = nix::dir::Dir::openat(
            self.proc_dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err_io)?;
        for ent in dir.iter().flatten() {
            let name = ent.file_name().to_bytes();
            // parse_u64 takes digits only: "." and "self" are not pids.
            if let Some(pid) = parse_u64(name).and_then(|v| u32::try_from(v).ok()) {
                self.pids.push(pid);
            }
        }
        Ok(())
    }

    /// Sample every process into `self.samples`.
    pub fn scan(&mut self) -> std::io::Result<ScanStats> {
        let mut stats = ScanStats::default();
        self.samples.clear();
        // Room for as many as last time and a few more: one allocation, not a doubling series.
        self.samples
            .reserve(self.last_count + self.last_count / 32 + 16);
        self.status_reads = 0;
        self.generation = self.generation.wrapping_add(1);
        let from_iter = match self.iter.is_some() {
            true => match self.scan_iter(&mut stats) {
                Ok(()) => true,
                Err(e) => {
                    stats.iter_errors += 1;
                    tracing::debug!("task iterator: {e}; reading /proc this cycle");
                    false
                }
            },
            false => false,
        };
        if !from_iter {
            self.scan_proc(&mut stats)?;
        }
        // Forget processes that are gone (closing their descriptors).
        let g = self.generation;
        let mut freed = 0;
        self.tracked.retain(|_, t| {
            let keep = t.generation == g;
            if !keep && t.fds.is_some() {
                freed += 1;
            }
            keep
        });
        self.cached -= freed;
        Ok(stats)
    }

    /// The cycle is over: give the samples' memory back (152 bytes a process, 612 kB at
    /// 4,000 processes — a mapping of its own past glibc's 256 KiB threshold, unmapped when
    /// freed). The next [`scan`](Self::scan) reserves as much again at once; the page faults of
    /// refilling it cost ≈ 0.1 ms a cycle at that size (BENCHMARKS.md).
    pub fn release_samples(&mut self) {
        self.last_count = self.samples.len();
        self.samples = Vec::new();
    }

    /// One process's outcome, counted; whether it gave a sample.
    fn keep<E>(&mut self, res: Result<Option<ProcSample>, E>, stats: &mut ScanStats) -> bool {
        match res {
            Ok(Some(s)) => {
                self.samples.push(s);
                stats.processes += 1;
                true
            }
            Ok(None) => {
                stats.parse_errors += 1;
                false
            }
            Err(_) => {
                stats.vanished += 1;
                false
            }
        }
    }

    /// Every process through /proc/PID/*.
    fn scan_proc(&mut self, stats: &mut ScanStats) -> std::io::Result<()> {
        self.list_pids()?;
        let pids = std::mem::take(&mut self.pids);
        for &pid in &pids {
            let res = self.sample(pid, stats);
            self.keep(res, stats);
        }
        self.pids = pids;
        Ok(())
    }

    /// Every process from one task iterator dump, each sampled as its chunk of the dump is
    /// read; those it does not show through /proc. A dump that fails leaves no sample (the
    /// cycle reads /proc instead).
    fn scan_iter(&mut self, stats: &mut ScanStats) -> Result<(), crate::taskiter::TaskIterError> {
        let mut it = self.iter.take().ok_or_else(|| {
            crate::taskiter::TaskIterError::Create(std::io::Error::other("no iterator"))
        })?;
        self.dumped.clear();
        let res = it.dump_each(&mut |r| {
            self.dumped.push(r.pid);
            let res = self.sample_record(&r, stats);
            if self.keep(res, stats) {
                stats.from_iter += 1;
            }
        });
        self.iter = Some(it);
        let bad = match res {
            Ok(bad) => bad,
            Err(e) => {
                self.samples.clear();
                *stats = ScanStats::default();
                return Err(e);
            }
        };
        if bad > 0 {
            stats.parse_errors += 1;
        }
        self.dumped.sort_unstable();
        if self.list_countdown == 0 {
            self.list_countdown = LIST_EVERY;
            if self.list_pids().is_ok() {
                let dumped = &self.dumped;
                self.hidden.clear();
                self.hidden.extend(
                    self.pids
                        .iter()
                        .filter(|p| dumped.binary_search(p).is_err()),
                );
            }
        }
        self.list_countdown -= 1;
        let mut hidden = std::mem::take(&mut self.hidden);
        // A process born after the dump was listed shows in the next dump.
        hidden.retain(|p| self.dumped.binary_search(p).is_err());
        for &pid in &hidden {
            let res = self.sample(pid, stats);
            if self.keep(res, stats) {
                stats.iter_missed += 1;
            }
        }
        hidden.retain(|p| {
            self.tracked
                .get(p)
                .is_some_and(|t| t.generation == self.generation)
        });
        self.hidden = hidden;
        Ok(())
    }

    /// One process from its iterator record. Its strings (command line, cgroup identity) are
    /// read through /proc once per (pid, start time) and again after an exec, as on the /proc
    /// path; a record whose thread walk was cut (more threads than the program's bound) is
    /// sampled through /proc instead.
    fn sample_record(
        &mut self,
        r: &crate::taskiter::TaskRecord,
        stats: &mut ScanStats,
    ) -> Result<Option<ProcSample>, Errno> {
        use crate::taskiter::{F_FDS, F_FDS_CUT, F_THREADS_CUT};
        let pid = r.pid;
        if r.flags & F_THREADS_CUT != 0 || (self.count_fds && r.flags & F_FDS_CUT != 0) {
            return self.sample(pid, stats);
        }
        let starttime = r.start_ticks();
        let mut fresh = false;
        let mut t = match self.tracked.remove(&pid) {
            Some(t) if t.starttime == starttime => t,
            old => {
                if old.is_some_and(|o| o.fds.is_some()) {
                    self.cached -= 1;
                }
                fresh = true;
                Tracked::new(starttime, None, None, self.generation)
            }
        };
        // A process that was on the /proc path before keeps no descriptors now.
        if t.fds.take().is_some() {
            self.cached -= 1;
        }
        let cpu = r.cputime_ns(t.cpu_ns);
        let mut comm = [0u8; 16];
        let name = r.comm();
        comm[..name.len()].copy_from_slice(name);
        const NS_PER_TICK: u64 = 1_000_000_000 / crate::util::USER_HZ;
        let s = ProcSample {
            pid,
            ppid: r.ppid,
            state: r.state_letter(),
            utime: cpu.0 / NS_PER_TICK,
            stime: cpu.1 / NS_PER_TICK,
            threads: r.nr_threads,
            starttime,
            vsize: r.vm_pages.saturating_mul(self.page_size),
            rss_bytes: r.rss_pages.saturating_mul(self.page_size),
            uid: r.euid,
            gid: r.egid,
            fds: (self.count_fds && r.flags & F_FDS != 0).then_some(r.fds),
            minflt: r.min_flt,
            majflt: r.maj_flt,
            switches: self.switches.then_some((r.nvcsw, r.nivcsw)),
            cpu_ns: Some(cpu),
            comm,
            comm_len: name.len() as u8,
        };
        if fresh && self.track_netns {
            let path = format!("{pid}/net/dev");
            t.netns = fstatat(self.proc_dir.as_fd(), path.as_str(), AtFlags::empty())
                .ok()
                .and_then(|st| NonZeroU64::new(st.st_ino));
        }
        if fresh || s.comm != t.comm {
            self.describe(pid, &mut t, &s);
        }
        t.cpu_ns = cpu;
        t.threads = s.threads;
        t.fd_count = s.fds;
        t.owner = (s.uid, s.gid);
        t.switches = s.switches;
        t.generation = self.generation;
        self.tracked.insert(pid, t);
        Ok(Some(s))
    }

    /// One process: `Ok(None)` for an unparsable stat, `Err` when it vanished.
    fn sample(&mut self, pid: u32, stats: &mut ScanStats) -> Result<Option<ProcSample>, Errno> {
        let Some(mut t) = self.tracked.remove(&pid) else {
            return self.sample_new(pid, stats);
        };
        // Known: pread + fstat (+ fstatat for the fd count) through its kept descriptors;
        // past the descriptor budget, through descriptors opened for this cycle, kept if the
        // budget has room again. Its strings stay cached either way.
        let opened = match t.fds.take() {
            Some(f) => Ok((f, true)),
            None => {
                stats.uncached += 1;
                self.open_process(pid).map(|f| (f, false))
            }
        };
        let mut idle = false;
        let read = opened.and_then(|(f, kept)| {
            // Whether the main thread ran since the last cycle (schedstat's pcount). A
            // single-threaded process that did not run cannot have opened or closed a
            // descriptor nor changed its credentials: its last fd count and owner stand.
            let pcount = if self.switches {
                self.pcount(pid, &f)
            } else {
                None
            };
            idle = pcount.is_some() && pcount == t.pcount;
            t.pcount = pcount;
            let reuse = idle && t.threads == 1 && (t.fd_count.is_some() || !self.count_fds);
            let count = self.count_fds && !reuse;
            let owner = reuse.then_some(t.owner);
            let r = read_sample(&f, &mut self.buf, count, owner, self.page_size);
            if kept {
                t.fds = Some(f);
            } else if self.cached < self.fd_budget && matches!(r, Ok(Some(_))) {
                self.cached += 1;
                t.fds = Some(f);
            }
            r.map(|o| {
                o.map(|mut s| {
                    if reuse {
                        s.fds = t.fd_count;
                    }
                    s
                })
            })
        });
        match read {
            Ok(Some(mut s)) if s.starttime == t.starttime => {
                if s.comm != t.comm {
                    // An exec: new command line, executable, maybe a new cgroup.
                    self.describe(pid, &mut t, &s);
                }
                if self.switches {
                    s.switches = self.switches_of(pid, &mut t, idle);
                }
                t.threads = s.threads;
                t.fd_count = s.fds;
                t.owner = (s.uid, s.gid);
                t.generation = self.generation;
                self.tracked.insert(pid, t);
                Ok(Some(s))
            }
            Ok(None) => {
                t.generation = self.generation;
                self.tracked.insert(pid, t);
                Ok(None)
            }
            // ESRCH: the process this descriptor belongs to is gone; a new one may have its
            // pid. Start over.
            _ => {
                if t.fds.is_some() {
                    self.cached -= 1;
                }
                self.sample_new(pid, stats)
            }
        }
    }

    fn sample_new(&mut self, pid: u32, stats: &mut ScanStats) -> Result<Option<ProcSample>, Errno> {
        let fds = self.open_process(pid)?;
        let Some(mut sample) =
            read_sample(&fds, &mut self.buf, self.count_fds, None, self.page_size)?
        else {
            return Ok(None);
        };
        let netns = if self.track_netns {
            fstatat(fds.dir.as_fd(), "net/dev", AtFlags::empty())
                .ok()
                .and_then(|s| NonZeroU64::new(s.st_ino))
        } else {
            None
        };
        let mut t = Tracked::new(sample.starttime, Some(fds), netns, self.generation);
        self.describe(pid, &mut t, &sample);
        if self.switches {
            if let Some(f) = t.fds.take() {
                t.pcount = self.pcount(pid, &f);
                t.fds = Some(f);
            }
            sample.switches = self.switches_of(pid, &mut t, false);
        }
        t.threads = sample.threads;
        t.fd_count = sample.fds;
        t.owner = (sample.uid, sample.gid);
        if self.cached < self.fd_budget {
            self.cached += 1;
        } else {
            stats.uncached += 1;
            t.fds = None;
        }
        self.tracked.insert(pid, t);
        Ok(Some(sample))
    }

    /// The strings of a new (or newly exec'd) process: command line and cgroup identity; the
    /// executable path is asked of the privhelper later.
    fn describe(&mut self, pid: u32, t: &mut Tracked, s: &ProcSample) {
        t.comm = s.comm;
        t.exe = Box::default();
        t.exe_asked = false;
        let opened;
        let dir = match &t.fds {
            Some(f) => f.dir.as_fd(),
            None => match self.open_dir(pid) {
                Ok(f) => {
                    opened = f;
                    opened.as_fd()
                }
                Err(_) => return,
            },
        };
        let (cmdline, id) = self.strings(dir);
        t.cmdline = cmdline.into_boxed_str();
        t.container_id = id.container_id.unwrap_or_default().into_boxed_str();
        t.pod_uid = id.pod_uid.unwrap_or_default().into_boxed_str();
    }

    /// Command line and cgroup identity read through a /proc/PID directory.
    fn strings(&mut self, dir: BorrowedFd<'_>) -> (String, crate::cgroups::Identity) {
        let cmdline = match open_at(dir, "cmdline", OFlag::O_RDONLY)
            .and_then(|f| pread_all(f.as_fd(), &mut self.buf))
        {
            Ok(_) => cmdline_args(&self.buf),
            Err(_) => String::new(),
        };
        let id = match open_at(dir, "cgroup", OFlag::O_RDONLY)
            .and_then(|f| pread_all(f.as_fd(), &mut self.buf))
        {
            Ok(_) => identity_of(&self.buf),
            Err(_) => crate::cgroups::Identity::default(),
        };
        (cmdline, id)
    }

    /// schedstat's `pcount` of the main thread, through the kept descriptor or by path.
    fn pcount(&mut self, pid: u32, f: &ProcFds) -> Option<u64> {
        match &f.schedstat {
            Some(fd) => pread_all(fd.as_fd(), &mut self.buf).ok(),
            None => self.read_by_path(pid, "schedstat").ok(),
        }
        .and_then(|_| parse_schedstat_pcount(&self.buf))
    }

    /// Switch counts of the main thread: the last ones when it did not run (`idle`), else
    /// /proc/PID/status.
    fn switches_of(&mut self, pid: u32, t: &mut Tracked, idle: bool) -> Option<(u64, u64)> {
        if idle && t.switches.is_some() {
            return t.switches;
        }
        self.status_reads += 1;
        let kept = t.fds.as_ref().and_then(|f| f.status.as_ref());
        let read = match kept {
            Some(fd) => pread_all(fd.as_fd(), &mut self.buf),
            None => self.read_by_path(pid, "status"),
        };
        t.switches = read.ok().and_then(|_| parse_status_switches(&self.buf));
        t.switches
    }

    /// /proc/PID (`O_PATH`).
    fn open_dir(&self, pid: u32) -> Result<OwnedFd, Errno> {
        let name = itoa_buf(pid);
        open_at(
            self.proc_dir.as_fd(),
            name.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
    }

    /// /proc/PID/`file` opened, read and closed.
    fn read_by_path(&mut self, pid: u32, file: &str) -> Result<usize, Errno> {
        let dir = self.open_dir(pid)?;
        let f = open_at(dir.as_fd(), file, OFlag::O_RDONLY)?;
        pread_all(f.as_fd(), &mut self.buf)
    }

    /// The descriptors of one process: /proc/PID (`O_PATH`), /proc/PID/stat and, with context
    /// switches on, /proc/PID/schedstat.
    fn open_process(&self, pid: u32) -> Result<ProcFds, Errno> {
        let dir = self.open_dir(pid)?;
        let stat = open_at(dir.as_fd(), "stat", OFlag::O_RDONLY)?;
        let (schedstat, status) = if self.switches {
            let open = |f| open_at(dir.as_fd(), f, OFlag::O_RDONLY).ok();
            (open("schedstat"), open("status"))
        } else {
            (None, None)
        };
        Ok(ProcFds {
            dir,
            stat,
            schedstat,
            status,
        })
    }

    /// The command line (NUL-terminated arguments) of a sampled process.
    pub fn cmdline(&self, pid: u32) -> &str {
        self.tracked.get(&pid).map(|t| &*t.cmdline).unwrap_or("")
    }

    /// (container id, pod UID) from the process's cgroup; empty when none.
    pub fn identity(&self, pid: u32) -> (&str, &str) {
        self.tracked
            .get(&pid)
            .map(|t| (&*t.container_id, &*t.pod_uid))
            .unwrap_or(("", ""))
    }

    /// Network namespace id (st_ino of /proc/PID/net/dev) of a sampled process, if learnt.
    pub fn netns(&self, pid: u32) -> Option<u64> {
        self.tracked
            .get(&pid)
            .and_then(|t| t.netns)
            .map(NonZeroU64::get)
    }

    /// Sampled processes whose executable path was not asked for yet (new, or exec'd).
    pub fn exe_wanted(&self) -> Vec<u32> {
        self.samples
            .iter()
            .filter(|s| self.tracked.get(&s.pid).is_some_and(|t| !t.exe_asked))
            .map(|s| s.pid)
            .collect()
    }

    /// Record the privhelper's answer for executable paths (`None`: unknown, not asked again
    /// until the next exec).
    pub fn set_exe(&mut self, pid: u32, path: Option<String>) {
        if let Some(t) = self.tracked.get_mut(&pid) {
            t.exe_asked = true;
            t.exe = path.unwrap_or_default().into_boxed_str();
        }
    }

    /// Record this cycle's /proc/PID/io answers (every sampled pid; `None` when unknown).
    pub fn set_io(&mut self, answers: &[ProcIoStat]) {
        for a in answers {
            if let Some(t) = self.tracked.get_mut(&a.pid) {
                t.io = a.io;
            }
        }
    }

    /// The /proc/PID directory of a tracked process, when its descriptor is cached.
    pub fn dir_fd(&self, pid: u32) -> Option<BorrowedFd<'_>> {
        self.tracked
            .get(&pid)
            .and_then(|t| t.fds.as_ref())
            .map(|f| f.dir.as_fd())
    }

    /// /proc itself.
    pub fn proc_fd(&self) -> BorrowedFd<'_> {
        self.proc_dir.as_fd()
    }

    /// (state letter, processes) of the last scan, for `system.process.count`.
    pub fn state_counts(&self) -> Vec<(u8, u64)> {
        let mut v: Vec<(u8, u64)> = Vec::new();
        for s in &self.samples {
            match v.iter_mut().find(|(l, _)| *l == s.state) {
                Some((_, n)) => *n += 1,
                None => v.push((s.state, 1)),
            }
        }
        v
    }

    /// Emit the last scan's processes. `boot_time_ns`: wall clock of boot; `fds`: fd and
    /// socket counts from the privhelper, when it gave them (they win over our own count);
    /// `names`: Kubernetes names by pod UID / container id. A process whose record would
    /// repeat the last one sent (its [`fingerprint`]) is listed in `Record::ProcessesUnchanged`
    /// instead, until `refresh_ns` after that one (0: every process is sent every time). The
    /// first refresh of a process comes at a point of that period set by its pid, so that
    /// processes seen together are not all sent again together. Returns how many were
    /// unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn records(
        &mut self,
        st: Stamp,
        boot_time_ns: u64,
        users: &mut Users,
        fds: Option<&HashMap<u32, ProcFdStat>>,
        names: &crate::k8s::K8sNames,
        refresh_ns: u64,
        sink: &mut dyn Sink,
    ) -> u64 {
        const NS_PER_TICK: u64 = 1_000_000_000 / crate::util::USER_HZ;
        let mut unchanged = Vec::new();
        let mut n_unchanged = 0;
        for p in &self.samples {
            let Some(t) = self.tracked.get_mut(&p.pid) else {
                continue;
            };
            let helper = fds.and_then(|m| m.get(&p.pid));
            let comm = String::from_utf8_lossy(p.comm());
            let (user, group) = users.names(p.uid, p.gid);
            let (ns, pod, container) = names.names(
                crate::util::non_empty(&t.pod_uid),
                crate::util::non_empty(&t.container_id),
            );
            let mut rec = ProcessRecord {
                time_unix_nano: st.now,
                start_time_unix_nano: boot_time_ns
                    .saturating_add(p.starttime.saturating_mul(NS_PER_TICK)),
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                gid: p.gid,
                state: p.state,
                threads: p.threads,
                cpu_user_ns: p
                    .cpu_ns
                    .map_or(p.utime.saturating_mul(NS_PER_TICK), |c| c.0),
                cpu_system_ns: p
                    .cpu_ns
                    .map_or(p.stime.saturating_mul(NS_PER_TICK), |c| c.1),
                memory_rss_bytes: p.rss_bytes,
                memory_virtual_bytes: p.vsize,
                open_fds: helper.and_then(|f| f.fds).or(p.fds),
                sockets: helper.and_then(|f| f.sockets),
                minor_faults: p.minflt,
                major_faults: p.majflt,
                voluntary_switches: p.switches.map(|s| s.0),
                involuntary_switches: p.switches.map(|s| s.1),
                io: t.io,
                executable_name: &*comm,
                executable_path: &t.exe,
                command_args: &t.cmdline,
                user_name: user,
                group_name: group,
                container_id: &t.container_id,
                k8s_pod_uid: &t.pod_uid,
                k8s_namespace: ns,
                k8s_pod_name: pod,
                k8s_container_name: container,
                unchanged: 0,
            };
            let fp = fingerprint(&rec);
            // (A wall clock set back by more than a period sends everything.)
            let due = refresh_ns == 0
                || t.resend_at <= st.now
                || t.resend_at > st.now.saturating_add(refresh_ns);
            if !due && fp == t.sent {
                unchanged.push(p.pid);
                n_unchanged += 1;
                if unchanged.len() == MAX_UNCHANGED_PIDS {
                    sink.record(Record::ProcessesUnchanged {
                        time_unix_nano: st.now,
                        pids: std::mem::take(&mut unchanged),
                    });
                }
                continue;
            }
            let numbers = number_hashes(&rec);
            if !due {
                // A busy process: only what moved is exported, the rest waits for the refresh
                // (which therefore does not move).
                rec.unchanged = numbers
                    .iter()
                    .zip(&t.numbers)
                    .enumerate()
                    .filter(|(_, (a, b))| a == b)
                    .fold(0, |m, (i, _)| m | 1 << i);
            }
            sink.process(&rec);
            t.sent = fp;
            t.numbers = numbers;
            if !due {
                continue;
            }
            let first = t.resend_at == 0;
            t.resend_at = st
                .now
                .saturating_add(refresh_ns)
                .saturating_sub(if first {
                    // Spread over the period: Fibonacci hashing of the pid.
                    let h = u64::from(p.pid).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    ((u128::from(h) * u128::from(refresh_ns)) >> 64) as u64
                } else {
                    0
                })
                .max(1);
        }
        if !unchanged.is_empty() {
            sink.record(Record::ProcessesUnchanged {
                time_unix_nano: st.now,
                pids: unchanged,
            });
        }
        n_unchanged
    }

    /// Send every process in full next time (records already sent may not have reached the
    /// shipper: superseded or refused).
    pub fn forget_sent(&mut self) {
        for t in self.tracked.values_mut() {
            t.resend_at = 0;
        }
    }
}

/// A 32-bit hash of each of the record's [`ProcessRecord::numbers`] (0: not read), compared
/// with the last record's to mark the numbers that repeat. A collision (2⁻³² per changed
/// number) only delays that number until the process's refresh.
fn number_hashes(r: &ProcessRecord<&str>) -> [u32; process_field::COUNT] {
    r.numbers().map(|v| {
        v.map_or(0, |v| {
            let h = (v ^ 0x5bd1_e995_7669_6769).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            ((h >> 32) as u32).max(1)
        })
    })
}

/// What a process record says besides its time: records with equal fingerprints carry the
/// same values and attributes (the uptime follows from the time). Every field but the time
/// goes in, strings whole (foldhash, 64 bits: a collision, crafted or not, only delays that
/// process's record until its refresh).
fn fingerprint(r: &ProcessRecord<&str>) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::quality::FixedState::with_seed(0x7669_6769_6c00).build_hasher();
    (
        r.start_time_unix_nano,
        r.pid,
        r.ppid,
        r.uid,
        r.gid,
        r.state,
        r.threads,
        r.cpu_user_ns,
        r.cpu_system_ns,
        r.memory_rss_bytes,
        r.memory_virtual_bytes,
    )
        .hash(&mut h);
    (
        r.open_fds,
        r.sockets,
        r.minor_faults,
        r.major_faults,
        r.voluntary_switches,
        r.involuntary_switches,
        r.io.map(|i| (i.read_bytes, i.write_bytes, i.read_ops, i.write_ops)),
    )
        .hash(&mut h);
    (
        r.executable_name,
        r.executable_path,
        r.command_args,
        r.user_name,
        r.group_name,
        r.container_id,
        r.k8s_pod_uid,
        r.k8s_namespace,
        r.k8s_pod_name,
        r.k8s_container_name,
    )
        .hash(&mut h);
    h.finish()
}

/// Container id and pod UID from /proc/PID/cgroup (the first line that has either).
pub fn identity_of(cgroup_file: &[u8]) -> crate::cgroups::Identity {
    String::from_utf8_lossy(cgroup_file)
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(crate::cgroups::identify)
        .find(|i| i.container_id.is_some() || i.pod_uid.is_some())
        .unwrap_or_default()
}

/// One sample through a process's descriptors: `pread` of the stat line, `fstat` of the
/// directory (owner) unless `known` gives it, `fstatat(dir, "fd")` (fd count) when asked.
/// `Err(ESRCH)` when the process is gone, `Ok(None)` when its stat line does not parse.
fn read_sample(
    f: &ProcFds,
    buf: &mut Vec<u8>,
    count_fds: bool,
    known: Option<(u32, u32)>,
    page_size: u64,
) -> Result<Option<ProcSample>, Errno> {
    if pread_all(f.stat.as_fd(), buf)? == 0 {
        return Err(Errno::ESRCH);
    }
    let owner = match known {
        Some(o) => o,
        None => {
            let st = fstat(f.dir.as_fd())?;
            (st.st_uid, st.st_gid)
        }
    };
    let fds = if count_fds {
        fd_count(f.dir.as_fd())
    } else {
        None
    };
    Ok(parse_stat(buf)
        .ok()
        .map(|st| make_sample(&st, owner, fds, page_size)))
}

fn make_sample(
    st: &ProcStat<'_>,
    owner: (u32, u32),
    fds: Option<u32>,
    page_size: u64,
) -> ProcSample {
    let mut comm = [0u8; 16];
    let n = st.comm.len().min(16);
    comm[..n].copy_from_slice(&st.comm[..n]);
    ProcSample {
        pid: st.pid,
        ppid: st.ppid,
        state: st.state,
        utime: st.utime,
        stime: st.stime,
        threads: u32::try_from(st.num_threads.max(0)).unwrap_or(u32::MAX),
        starttime: st.starttime,
        vsize: st.vsize,
        rss_bytes: (st.rss.max(0) as u64).saturating_mul(page_size),
        uid: owner.0,
        gid: owner.1,
        fds,
        minflt: st.minflt,
        majflt: st.majflt,
        switches: None,
        cpu_ns: None,
        comm,
        comm_len: n as u8,
    }
}

/// st_size of /proc/PID/fd: the number of open descriptors (Linux >= 6.2; 0 before).
fn fd_count(dir: BorrowedFd<'_>) -> Option<u32> {
    fstatat(dir, "fd", AtFlags::empty())
        .ok()
        .and_then(|s| u32::try_from(s.st_size).ok())
}

/// A pid as decimal text without allocating per call.
struct PidName {
    buf: [u8; 10],
    len: usize,
}

impl PidName {
    fn as_str(&self) -> &str {
        // Only ASCII digits are ever written.
        std::str::from_utf8(&self.buf[10 - self.len..]).unwrap_or("0")
    }
}

fn itoa_buf(mut v: u32) -> PidName {
    let mut buf = [0u8; 10];
    let mut i = 10;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    PidName { buf, len: 10 - i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_a_name_with_spaces_and_parens() {
        let line = b"4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 12345 1048576 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, b"we ird) (x)");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!((s.utime, s.stime), (17, 5));
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.starttime, 12345);
        assert_eq!(s.vsize, 1048576);
        assert_eq!(s.rss, 250);
    }

    #[test]
    fn hostile_stat_lines_are_errors() {
        for bad in [
            &b""[..],
            b"12 (x",
            b"12 x) S",
            b")( 1 2",
            b"12 (x) S 1 2 3",
            b"12 (x) S zz 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            b"\xff\xfe (\x00) \xff",
            b"99999999999 (x) S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cmdline() {
        assert_eq!(cmdline_args(b"sleep\x00100\x00"), "sleep\x00100\x00");
        assert_eq!(cmdline_args(b""), "");
        assert_eq!(cmdline_args(b"\xff\x00a").len(), 6);
        assert!(cmdline_args(&vec![b'a'; 100_000]).len() <= MAX_CMDLINE + 1);
        // Kept for the process's life: no spare capacity.
        let s = cmdline_args(b"loadgen\x002000\x00");
        assert_eq!(s.capacity(), s.len());
    }

    /// One per process for its life: at most 312 bytes, a 320-byte glibc chunk (it was 352, a
    /// 368-byte one: ≈ 200 kB more at 4,000 processes).
    #[test]
    fn tracked_stays_small() {
        let size = std::mem::size_of::<Tracked>();
        assert!(size <= 312, "Tracked is {size} bytes");
    }

    #[test]
    fn status_and_schedstat() {
        assert_eq!(
            parse_status_switches(
                b"Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n"
            ),
            Some((12, 3))
        );
        assert_eq!(parse_status_switches(b"voluntary_ctxt_switches: x\n"), None);
        assert_eq!(parse_schedstat_pcount(b"123 456 789\n"), Some(789));
        assert_eq!(parse_schedstat_pcount(b"1 2\n"), None);
    }

    /// A process that did not run keeps its counts without its status being read again; one
    /// that ran (and opened descriptors) is counted again.
    #[test]
    fn idle_processes_keep_their_counts_and_busy_ones_are_recounted() {
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut busy = std::process::Command::new("sh")
            .args([
                "-c",
                // 7-9: inherited descriptors (a `flock` or jobserver's 3, 4, ...) are
                // not replaced.
                "sleep 0.4; exec 7</dev/null 8</dev/null 9</dev/null sleep 30",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut s = ProcScanner::new("/proc").unwrap();
        s.count_fds = true;
        s.set_switches(true);
        let get = |s: &ProcScanner, pid: u32| *s.samples.iter().find(|p| p.pid == pid).unwrap();
        s.scan().unwrap();
        let (i0, b0) = (get(&s, idle.id()), get(&s, busy.id()));
        let reads0 = s.status_reads;
        std::thread::sleep(std::time::Duration::from_millis(800));
        s.scan().unwrap();
        let (i1, b1) = (get(&s, idle.id()), get(&s, busy.id()));
        assert_eq!((i1.fds, i1.switches), (i0.fds, i0.switches));
        assert!(i0.switches.is_some());
        assert!(s.status_reads < reads0, "{} vs {reads0}", s.status_reads);
        assert_eq!(b1.fds, b0.fds.map(|n| n + 3), "{b0:?} → {b1:?}");
        assert_eq!(b1.comm(), b"sleep");
        assert_ne!(b1.switches, b0.switches);
        for c in [&mut idle, &mut busy] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A process whose record would repeat the last one sent is listed as unchanged until
    /// its refresh is due; one that changed is sent in full; a refresh of 0, a forgotten
    /// state or a wall clock set back send everything.
    #[test]
    fn unchanged_processes_are_listed_until_their_refresh() {
        /// Killed when the test ends, also by a failed assertion.
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let spawn = |args: &[&str]| {
            Child(
                std::process::Command::new(args[0])
                    .args(&args[1..])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let idle = spawn(&["sleep", "30"]);
        let busy = spawn(&["sh", "-c", "while :; do :; done"]);
        let (ip, bp) = (idle.0.id(), busy.0.id());
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut s = ProcScanner::new("/proc").unwrap();
        s.count_fds = true;
        let mut users = Users::new(std::path::Path::new("/"));
        let names = crate::k8s::K8sNames::default();
        const HOUR: u64 = 3_600_000_000_000;
        let t0 = 1_000 * HOUR;
        let mut cycle = |s: &mut ProcScanner, now: u64, refresh: u64| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            s.scan().unwrap();
            let mut out: Vec<Record> = Vec::new();
            let st = Stamp { start: t0, now };
            let n = s.records(st, 0, &mut users, None, &names, refresh, &mut out);
            let sent = |pid| {
                out.iter().find_map(|r| match r {
                    Record::Process(p) if p.pid == pid => Some(p.unchanged),
                    _ => None,
                })
            };
            let full = |pid| sent(pid).is_some();
            let listed: Vec<u32> = out
                .iter()
                .filter_map(|r| match r {
                    Record::ProcessesUnchanged {
                        time_unix_nano,
                        pids,
                    } => {
                        assert_eq!(*time_unix_nano, now);
                        Some(pids.clone())
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(n, listed.len() as u64);
            for pid in [ip, bp] {
                assert!(
                    full(pid) != listed.contains(&pid),
                    "{pid}: one or the other"
                );
            }
            ((full(ip), full(bp)), sent(bp).unwrap_or(u16::MAX))
        };
        use process_field as f;
        // What the busy loop does not move: marked, so the exporters leave it out.
        let steady = f::THREADS | f::MEMORY_VIRTUAL | f::OPEN_FDS | f::MAJOR_FAULTS;
        assert_eq!(cycle(&mut s, t0, HOUR), ((true, true), 0), "first sight");
        assert_eq!(cycle(&mut s, t0 + 1, HOUR).0, (false, true), "busy changed");
        assert_eq!(cycle(&mut s, t0 + 2, 0), ((true, true), 0), "refresh 0");
        assert_eq!(
            cycle(&mut s, t0 + 3, HOUR),
            ((true, true), 0),
            "refresh 0 was due at once"
        );
        let (seen, busy) = cycle(&mut s, t0 + 4, HOUR);
        assert_eq!(seen, (false, true));
        assert_eq!(
            busy & steady,
            steady,
            "{busy:#x}: the busy one's steady numbers"
        );
        assert_eq!(busy & f::CPU_USER, 0, "{busy:#x}: its CPU time moved");
        // A process sent every cycle for what moved still has its refresh in full, on time.
        let (seen, busy) = cycle(&mut s, t0 + HOUR + 2, HOUR);
        assert_eq!((seen, busy & steady), ((false, true), steady));
        assert_eq!(
            cycle(&mut s, t0 + HOUR + 3, HOUR),
            ((true, true), 0),
            "refresh due for both"
        );
        assert_eq!(
            cycle(&mut s, t0 + 2 * HOUR + 3, HOUR),
            ((true, true), 0),
            "refresh due"
        );
        assert_eq!(cycle(&mut s, t0 + 2 * HOUR + 4, HOUR).0, (false, true));
        assert_eq!(
            cycle(&mut s, t0 - 2 * HOUR, HOUR),
            ((true, true), 0),
            "clock set back"
        );
        s.forget_sent();
        assert_eq!(
            cycle(&mut s, t0 - 2 * HOUR + 1, HOUR),
            ((true, true), 0),
            "forgotten"
        );
        // The first refresh of every process falls within one period of its first sight.
        assert!(s.tracked.values().all(|t| t.resend_at <= t0 - HOUR + 1));
    }

    /// Between cycles the samples hold no memory; the next scan reserves room for as many as
    /// the last one saw, at once, and samples the same processes.
    #[test]
    fn samples_released_between_cycles() {
        let mut s = ProcScanner::new("/proc").unwrap();
        s.scan().unwrap();
        let first = s.samples.len();
        let me = std::process::id();
        assert!(first > 1 && s.samples.iter().any(|p| p.pid == me));
        s.release_samples();
        assert_eq!((s.samples.len(), s.samples.capacity()), (0, 0));
        s.scan().unwrap();
        assert!(s.samples.capacity() >= first + first / 32 + 16);
        assert!(s.samples.iter().any(|p| p.pid == me));
    }

    #[test]
    fn pid_names() {
        for v in [0u32, 7, 10, 4242, u32::MAX] {
            assert_eq!(itoa_buf(v).as_str(), v.to_string());
        }
    }

    /// The cached path and the by-path path agree with /proc as a plain reader sees it, a
    /// process that exits is forgotten with its descriptors, and a budget of zero still samples
    /// everything.
    #[test]
    fn cached_and_uncached_scans_agree() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut a = ProcScanner::new("/proc").unwrap();
        a.count_fds = true;
        let mut b = ProcScanner::new("/proc").unwrap();
        b.count_fds = true;
        b.set_fd_budget(0);
        for _ in 0..2 {
            a.scan().unwrap();
            let st = b.scan().unwrap();
            assert!(st.uncached > 0 || b.samples.len() < 2);
        }
        assert_eq!(b.cached(), 0);
        assert!(a.cached() >= 2);
        for s in [&a, &b] {
            let me = s
                .samples
                .iter()
                .find(|p| p.pid == std::process::id())
                .unwrap();
            let want = std::fs::read_dir("/proc/self/fd").unwrap().count() as u32;
            // The scanner's own descriptors may differ by the ones it opened meanwhile.
            assert!(me.fds.unwrap().abs_diff(want) < 8, "{:?} vs {want}", me.fds);
            let c = s.samples.iter().find(|p| p.pid == pid).unwrap();
            assert_eq!(c.comm(), b"sleep");
            assert_eq!(c.ppid, std::process::id());
            assert_eq!(s.cmdline(pid), "sleep\x0030\x00");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            a.tracked[&pid].fds.is_some(),
            "the child's descriptors are kept"
        );
        a.scan().unwrap();
        assert!(a.samples.iter().all(|p| p.pid != pid));
        assert_eq!(a.cmdline(pid), "");
        // (Other processes come and go meanwhile: the count as a whole proves nothing.)
        assert!(
            !a.tracked.contains_key(&pid),
            "the dead child's descriptors are closed"
        );
    }
}
