//! Process metrics from the BPF task iterator (`privhelper/bpf/task_iter.bpf.c`): the
//! privhelper attached it at start-up and passed its link; each cycle the collector makes a
//! fresh iterator from the link (`bpf(BPF_ITER_CREATE)`, the one bpf() command its seccomp
//! filter allows, which needs no capability) and reads it to the end: one fixed-size record
//! per thread group, [`TaskRecord`], decoded here byte for byte. Nothing in a dump is
//! trusted: sizes are bounded, every record is checked, and garbage is counted, never a panic.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `VIGIL_TASK_RECORD_SIZE` (privhelper/bpf/vigil_records.h).
pub const RECORD_SIZE: usize = 176;
/// `VIGIL_TASK_MAGIC`: layout version 1.
pub const MAGIC: u32 = 0x7a5b_0001;
/// Largest dump read in one cycle: 16 MiB, about 95,000 processes. A longer one is cut
/// (counted); the processes past it are missing from that cycle.
pub const MAX_DUMP: usize = 16 << 20;

pub const F_KTHREAD: u32 = 1;
pub const F_NO_MM: u32 = 2;
pub const F_THREADS_CUT: u32 = 4;
pub const F_FDS: u32 = 8;
pub const F_FDS_CUT: u32 = 16;

const BPF_ITER_CREATE: libc::c_long = 33;

#[derive(Debug, thiserror::Error)]
pub enum TaskIterError {
    #[error("BPF_ITER_CREATE: {0}")]
    Create(std::io::Error),
    #[error("reading the task iterator: {0}")]
    Read(std::io::Error),
}

/// One thread group as the iterator saw it (field meanings in vigil_records.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskRecord {
    pub pid: u32,
    pub ppid: u32,
    pub flags: u32,
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
    pub state: u32,
    pub exit_state: u32,
    pub nr_threads: u32,
    pub threads_seen: u32,
    pub start_boottime_ns: u64,
    pub utime_ns: u64,
    pub stime_ns: u64,
    pub runtime_ns: u64,
    pub prev_utime_ns: u64,
    pub prev_stime_ns: u64,
    pub min_flt: u64,
    pub maj_flt: u64,
    pub rss_pages: u64,
    pub vm_pages: u64,
    pub cgroup_id: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
    pub fds: u32,
    pub comm: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes (want {RECORD_SIZE})")]
    Short(usize),
    #[error("bad magic {0:#x}")]
    Magic(u32),
    #[error("pid 0")]
    NoPid,
}

fn u32_at(b: &[u8; RECORD_SIZE], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8; RECORD_SIZE], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl TaskRecord {
    /// Decode one record (exactly [`RECORD_SIZE`] bytes).
    pub fn decode(bytes: &[u8]) -> Result<TaskRecord, RecordError> {
        let b: &[u8; RECORD_SIZE] = bytes
            .try_into()
            .map_err(|_| RecordError::Short(bytes.len()))?;
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(RecordError::Magic(magic));
        }
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&b[160..176]);
        let r = TaskRecord {
            pid: u32_at(b, 4),
            ppid: u32_at(b, 8),
            flags: u32_at(b, 12),
            ruid: u32_at(b, 16),
            euid: u32_at(b, 20),
            rgid: u32_at(b, 24),
            egid: u32_at(b, 28),
            state: u32_at(b, 32),
            exit_state: u32_at(b, 36),
            nr_threads: u32_at(b, 40),
            threads_seen: u32_at(b, 44),
            start_boottime_ns: u64_at(b, 48),
            utime_ns: u64_at(b, 56),
            stime_ns: u64_at(b, 64),
            runtime_ns: u64_at(b, 72),
            prev_utime_ns: u64_at(b, 80),
            prev_stime_ns: u64_at(b, 88),
            min_flt: u64_at(b, 96),
            maj_flt: u64_at(b, 104),
            rss_pages: u64_at(b, 112),
            vm_pages: u64_at(b, 120),
            cgroup_id: u64_at(b, 128),
            nvcsw: u64_at(b, 136),
            nivcsw: u64_at(b, 144),
            fds: u32_at(b, 152),
            comm,
        };
        if r.pid == 0 {
            return Err(RecordError::NoPid);
        }
        Ok(r)
    }

    /// The command name: up to its first NUL.
    pub fn comm(&self) -> &[u8] {
        let n = self.comm.iter().position(|&c| c == 0).unwrap_or(16);
        &self.comm[..n]
    }

    /// The state letter /proc/PID/stat shows (`get_task_state` of fs/proc/array.c).
    pub fn state_letter(&self) -> u8 {
        state_letter(self.state, self.exit_state)
    }

    /// Start time in clock ticks after boot, as /proc/PID/stat's field 22.
    pub fn start_ticks(&self) -> u64 {
        self.start_boottime_ns / (1_000_000_000 / crate::util::USER_HZ)
    }

    /// User and system time as /proc reports them: the tick-sampled split scaled to the
    /// scheduler's precise runtime, never below what the kernel last reported
    /// (`cputime_adjust`, kernel/sched/cputime.c), nor below `floor` (this collector's
    /// last answer for the process).
    pub fn cputime_ns(&self, floor: (u64, u64)) -> (u64, u64) {
        let prev = (
            self.prev_utime_ns.max(floor.0),
            self.prev_stime_ns.max(floor.1),
        );
        cputime_adjust(self.utime_ns, self.stime_ns, self.runtime_ns, prev)
    }
}

/// `cputime_adjust`: split `rtime` in the proportion of the sampled `utime`:`stime`, keeping
/// both parts monotonic against `prev`.
pub fn cputime_adjust(utime: u64, stime: u64, rtime: u64, prev: (u64, u64)) -> (u64, u64) {
    let (pu, ps) = prev;
    // The kernel's runtime is behind what it already reported: keep that.
    if pu.saturating_add(ps) >= rtime {
        return (pu, ps);
    }
    let mut s = if stime == 0 {
        0
    } else if utime == 0 {
        rtime
    } else {
        (u128::from(stime) * u128::from(rtime) / (u128::from(stime) + u128::from(utime))) as u64
    };
    s = s.max(ps).min(rtime);
    let mut u = rtime - s;
    if u < pu {
        u = pu;
        s = rtime - u;
    }
    (u, s)
}

/// The letter of `fs/proc/array.c`'s `task_state_array` for a task's `__state | exit_state`.
pub fn state_letter(state: u32, exit_state: u32) -> u8 {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u32 = 0x2;
    const TASK_NOLOAD: u32 = 0x400;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const TASK_FROZEN: u32 = 0x8000;
    const LETTERS: &[u8; 9] = b"RSDTtXZPI";
    let idle = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
    let report = if state & idle == idle {
        0x80
    } else if state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        TASK_UNINTERRUPTIBLE
    } else {
        (state | exit_state) & TASK_REPORT
    };
    // fls(): 0 for running, else the highest bit's position counted from one.
    let i = (u32::BITS - report.leading_zeros()) as usize;
    LETTERS.get(i).copied().unwrap_or(b'?')
}

/// Decode a whole dump: the good records, and how many bytes were garbage (bad records and a
/// trailing partial one).
pub fn decode_dump(dump: &[u8], out: &mut Vec<TaskRecord>) -> usize {
    decode_each(dump, &mut |r| out.push(r))
}

/// [`decode_dump`], each good record handed to `each` as it is decoded.
pub fn decode_each(dump: &[u8], each: &mut impl FnMut(TaskRecord)) -> usize {
    let mut bad = 0;
    let mut chunks = dump.chunks_exact(RECORD_SIZE);
    for c in &mut chunks {
        match TaskRecord::decode(c) {
            Ok(r) => each(r),
            Err(_) => bad += RECORD_SIZE,
        }
    }
    bad + chunks.remainder().len()
}

/// The iterator's link, from the privhelper; makes one iterator per cycle.
#[derive(Debug)]
pub struct TaskIter {
    link: OwnedFd,
    buf: Vec<u8>,
    /// Dumps cut at [`MAX_DUMP`].
    pub cut: u64,
}

/// `bpf(BPF_ITER_CREATE)` on a link: a new iterator to read to its end.
fn iter_create(link: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // union bpf_attr, iter_create member: link_fd, flags (0).
    let mut attr = [0u64; 2];
    attr[0] = u64::from(link.as_raw_fd() as u32);
    // SAFETY: bpf(2) with a live, zero-padded attribute buffer of the size passed; the kernel
    // only reads it. The result is checked before being owned.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ITER_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| std::io::Error::other("bad iterator descriptor"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Iterators are not created close-on-exec; this process never execs, but say so anyway.
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(std::io::Error::from)?;
    Ok(fd)
}

impl TaskIter {
    pub fn new(link: OwnedFd) -> TaskIter {
        TaskIter {
            link,
            buf: Vec::new(),
            cut: 0,
        }
    }

    /// One dump: a fresh iterator read to its end (at most [`MAX_DUMP`] bytes), decoded into
    /// `out` (cleared first). Returns the bytes that did not decode.
    pub fn dump(&mut self, out: &mut Vec<TaskRecord>) -> Result<usize, TaskIterError> {
        out.clear();
        self.dump_each(&mut |r| out.push(r))
    }

    /// [`dump`](Self::dump), each record handed to `each` as its chunk is read: no table of
    /// the dump's records is kept (≈ 670 KB at 4,000 processes). After an error, `each` may
    /// have seen part of the dump.
    pub fn dump_each(&mut self, each: &mut impl FnMut(TaskRecord)) -> Result<usize, TaskIterError> {
        let it = iter_create(self.link.as_fd()).map_err(TaskIterError::Create)?;
        let read = |b: &mut [u8]| nix::unistd::read(it.as_fd(), b);
        let (bad, cut) = read_dump(read, &mut self.buf, MAX_DUMP, each)
            .map_err(|e| TaskIterError::Read(e.into()))?;
        self.cut += u64::from(cut);
        Ok(bad)
    }
}

/// Read a dump through `buf` one chunk at a time, decoding the whole records of each chunk as
/// it comes (a record the read cut is carried to the next one): memory stays at one chunk
/// whatever the number of processes. Returns the bytes that did not decode and whether the
/// dump was cut at `max` bytes.
fn read_dump(
    mut read: impl FnMut(&mut [u8]) -> nix::Result<usize>,
    buf: &mut Vec<u8>,
    max: usize,
    each: &mut impl FnMut(TaskRecord),
) -> nix::Result<(usize, bool)> {
    // The kernel fills at most its seq_file buffer (8 pages) per read.
    const CHUNK: usize = 64 << 10;
    buf.resize(CHUNK, 0);
    let (mut have, mut total, mut bad) = (0usize, 0usize, 0usize);
    loop {
        if total >= max {
            return Ok((bad + have, true));
        }
        match read(&mut buf[have..]) {
            Ok(0) => return Ok((bad + have, false)),
            Ok(n) => {
                total += n;
                have += n;
                let whole = have - have % RECORD_SIZE;
                bad += decode_each(&buf[..whole], each);
                buf.copy_within(whole..have, 0);
                have -= whole;
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&pid.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[20..24].copy_from_slice(&1000u32.to_le_bytes());
        b[48..56].copy_from_slice(&2_500_000_000u64.to_le_bytes());
        b[152..156].copy_from_slice(&7u32.to_le_bytes());
        b[160..165].copy_from_slice(b"sleep");
        b
    }

    /// Records cut by the reads' ends anywhere come out whole; a garbage record and a partial
    /// tail are counted; a dump past the limit is cut.
    #[test]
    fn a_dump_read_in_odd_pieces_decodes_every_record() {
        let mut dump = Vec::new();
        for pid in 1..=1000 {
            dump.extend_from_slice(&record(pid));
        }
        dump.extend_from_slice(&[0xee; RECORD_SIZE]);
        dump.extend_from_slice(&record(1001)[..100]);
        for piece in [1, 97, RECORD_SIZE, 4096, 65_536] {
            let mut at = 0;
            let read = |b: &mut [u8]| {
                let n = piece.min(b.len()).min(dump.len() - at);
                b[..n].copy_from_slice(&dump[at..at + n]);
                at += n;
                Ok(n)
            };
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            let (bad, cut) = read_dump(read, &mut buf, MAX_DUMP, &mut |r| out.push(r)).unwrap();
            assert_eq!(out.len(), 1000, "piece {piece}");
            assert!(out.iter().zip(1..).all(|(r, pid)| r.pid == pid));
            assert_eq!((bad, cut), (RECORD_SIZE + 100, false));
            assert_eq!(buf.len(), 64 << 10, "one chunk of memory");
        }
        let mut at = 0;
        let read = |b: &mut [u8]| {
            let n = b.len().min(dump.len() - at);
            b[..n].copy_from_slice(&dump[at..at + n]);
            at += n;
            Ok(n)
        };
        let mut out = Vec::new();
        let (_, cut) = read_dump(read, &mut Vec::new(), 10 * RECORD_SIZE, &mut |r| {
            out.push(r)
        })
        .unwrap();
        assert!(cut && out.len() >= 10 && out.len() < 1000);
        let err = read_dump(
            |_: &mut [u8]| Err(nix::errno::Errno::EIO),
            &mut Vec::new(),
            MAX_DUMP,
            &mut |_| {},
        );
        assert_eq!(err, Err(nix::errno::Errno::EIO));
    }

    /// The Rust offsets follow the C header's: its size define, and the static asserts the
    /// BPF build checks.
    #[test]
    fn layout_matches_the_header() {
        let h = include_str!("../../privhelper/bpf/vigil_records.h");
        let size = h
            .lines()
            .find_map(|l| l.strip_prefix("#define VIGIL_TASK_RECORD_SIZE "))
            .and_then(|v| v.trim().parse::<usize>().ok());
        assert_eq!(size, Some(RECORD_SIZE));
        let magic = h
            .lines()
            .find_map(|l| l.strip_prefix("#define VIGIL_TASK_MAGIC 0x"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| u32::from_str_radix(v.trim_end_matches('u'), 16).ok());
        assert_eq!(magic, Some(MAGIC));
        for (field, off) in [
            ("start_boottime", 48),
            ("nivcsw", 144),
            ("fds", 152),
            ("comm", 160),
        ] {
            let want = format!("vigil_task_record, {field}) == {off},");
            assert!(h.contains(&want), "{want}");
        }
    }

    #[test]
    fn decodes_a_record() {
        let r = TaskRecord::decode(&record(42)).unwrap();
        assert_eq!((r.pid, r.ppid, r.euid, r.fds), (42, 1, 1000, 7));
        assert_eq!(r.comm(), b"sleep");
        assert_eq!(r.start_ticks(), 250);
        assert_eq!(r.state_letter(), b'R');
    }

    #[test]
    fn garbage_is_counted_never_a_panic() {
        let mut out = Vec::new();
        assert_eq!(decode_dump(&[], &mut out), 0);
        assert!(out.is_empty());
        // Short input, trailing partial record, wrong magic, pid 0.
        assert_eq!(decode_dump(&[1, 2, 3], &mut out), 3);
        let mut d = record(7).to_vec();
        d.extend_from_slice(&record(8)[..100]);
        assert_eq!(decode_dump(&d, &mut out), 100);
        assert_eq!(out.len(), 1);
        let mut bad = record(9);
        bad[0] ^= 1;
        assert_eq!(TaskRecord::decode(&bad), Err(RecordError::Magic(MAGIC ^ 1)));
        assert_eq!(TaskRecord::decode(&record(0)), Err(RecordError::NoPid));
        assert_eq!(TaskRecord::decode(&[0; 8]), Err(RecordError::Short(8)));
        let mut comm = record(5);
        comm[160..176].copy_from_slice(&[b'x'; 16]);
        assert_eq!(TaskRecord::decode(&comm).unwrap().comm().len(), 16);
    }

    #[test]
    fn state_letters_as_proc_shows_them() {
        for (state, exit, want) in [
            (0, 0, b'R'),
            (0x1, 0, b'S'),
            (0x2, 0, b'D'),
            (0x402, 0, b'I'),
            (0x4, 0, b'T'),
            (0x8, 0, b't'),
            (0x0, 0x20, b'Z'),
            (0x0, 0x10, b'X'),
            (0x40, 0, b'P'),
            (0x8000 | 0x1, 0, b'D'),
            (0x1000, 0, b'D'),
            (0x100, 0, b'R'),
        ] {
            assert_eq!(state_letter(state, exit), want, "{state:#x} {exit:#x}");
        }
    }

    #[test]
    fn cputime_is_scaled_and_monotonic() {
        // Scaled to the runtime in the sampled proportion.
        assert_eq!(cputime_adjust(30, 10, 400, (0, 0)), (300, 100));
        assert_eq!(cputime_adjust(0, 10, 400, (0, 0)), (0, 400));
        assert_eq!(cputime_adjust(10, 0, 400, (0, 0)), (400, 0));
        // Never below what was reported; a runtime behind it keeps that.
        assert_eq!(cputime_adjust(30, 10, 400, (350, 0)), (350, 50));
        assert_eq!(cputime_adjust(30, 10, 400, (0, 200)), (200, 200));
        assert_eq!(cputime_adjust(30, 10, 400, (300, 200)), (300, 200));
        assert_eq!(
            cputime_adjust(u64::MAX, u64::MAX, u64::MAX, (0, 0)).0,
            u64::MAX / 2 + 1
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(0u8..=255, 0..2000)) {
            let mut out = Vec::new();
            let bad = decode_dump(&bytes, &mut out);
            proptest::prop_assert_eq!(bad + out.len() * RECORD_SIZE, bytes.len());
        }

        #[test]
        fn cputime_parts_sum_to_the_runtime_or_the_last_answer(
            u in 0u64..1 << 50, s in 0u64..1 << 50, r in 0u64..1 << 50,
            pu in 0u64..1 << 49, ps in 0u64..1 << 49,
        ) {
            let (a, b) = cputime_adjust(u, s, r, (pu, ps));
            proptest::prop_assert!(a >= pu && b >= ps);
            proptest::prop_assert!(a + b == r.max(pu + ps));
        }
    }
}
