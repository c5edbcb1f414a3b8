//! The records written by vigil's BPF programs into ring buffers (layouts in
//! `privhelper/bpf/vigil_records.h`; the flow table's entries are `flowmap.rs`'s), parsed from
//! ring buffer bytes. Parsing never panics: a short or unknown record is `None`.

pub const KIND_EXEC: u32 = 1;
pub const KIND_EXIT: u32 = 2;
/// `sizeof(struct vigil_proc_event)`.
pub const PROC_EVENT_SIZE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcEventKind {
    Exec,
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: ProcEventKind,
    /// Thread id.
    pub tid: u32,
    /// Process id (thread group id).
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Raw wait status (exit only): `(code << 8) | signal`.
    pub exit_status: i32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    pub comm: String,
    /// Records the ring lost so far (ring full) when this one was written (wraps at 2^32).
    pub drops: u32,
    /// cgroup v2 id of the task (the inode number of its cgroup directory).
    pub cgroup_id: u64,
}

impl ProcEvent {
    /// Exit code as a shell sees it (`None` when killed by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        (self.exit_status & 0x7f == 0).then_some((self.exit_status >> 8) & 0xff)
    }

    /// Terminating signal, if any.
    pub fn exit_signal(&self) -> Option<i32> {
        let s = self.exit_status & 0x7f;
        (s != 0).then_some(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// OpenTelemetry `network.io.direction` value.
    pub fn as_otel(self) -> &'static str {
        match self {
            Direction::Ingress => "receive",
            Direction::Egress => "transmit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowSource {
    Socket,
    Tc,
    Tracepoint,
    Unknown,
}

/// Any record of the ring buffers (more kinds may come).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BpfRecord {
    Proc(ProcEvent),
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Parse one ring buffer record.
pub fn parse(rec: &[u8]) -> Option<BpfRecord> {
    match u32_at(rec, 0)? {
        k @ (KIND_EXEC | KIND_EXIT) => {
            if rec.len() < PROC_EVENT_SIZE {
                return None;
            }
            let comm = rec.get(40..56)?;
            let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
            Some(BpfRecord::Proc(ProcEvent {
                kind: if k == KIND_EXEC {
                    ProcEventKind::Exec
                } else {
                    ProcEventKind::Exit
                },
                tid: u32_at(rec, 4)?,
                pid: u32_at(rec, 8)?,
                ppid: u32_at(rec, 12)?,
                uid: u32_at(rec, 16)?,
                gid: u32_at(rec, 20)?,
                exit_status: u32_at(rec, 24)? as i32,
                drops: u32_at(rec, 28)?,
                ktime_ns: u64_at(rec, 32)?,
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
                cgroup_id: u64_at(rec, 56)?,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_records_are_none() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[1, 0, 0, 0]), None);
        assert_eq!(parse(&[9; 72]), None);
        // The flows' old record kind is not a record any more.
        let mut flow = [0u8; 72];
        flow[0] = 3;
        assert_eq!(parse(&flow), None);
        let mut exec = [0u8; PROC_EVENT_SIZE];
        exec[0] = 1;
        assert!(parse(&exec).is_some());
        assert_eq!(parse(&exec[..PROC_EVENT_SIZE - 1]), None);
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing returns a value or None, never panics; a record that
        /// parses re-parses identically from a longer buffer (trailing bytes ignored).
        #[test]
        fn parse_never_panics(
            kind in 0u32..5,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
        ) {
            let mut bytes = kind.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&tail);
            let r = parse(&bytes);
            if let Some(r) = r {
                let mut longer = bytes.clone();
                longer.extend_from_slice(&[0xff; 16]);
                proptest::prop_assert_eq!(parse(&longer), Some(r));
            }
        }
    }

    #[test]
    fn exit_status_decoding() {
        let mut e = ProcEvent {
            kind: ProcEventKind::Exit,
            tid: 1,
            pid: 1,
            ppid: 0,
            uid: 0,
            gid: 0,
            exit_status: 3 << 8,
            ktime_ns: 0,
            comm: String::new(),
            drops: 0,
            cgroup_id: 0,
        };
        assert_eq!(e.exit_code(), Some(3));
        assert_eq!(e.exit_signal(), None);
        e.exit_status = 9;
        assert_eq!(e.exit_code(), None);
        assert_eq!(e.exit_signal(), Some(9));
    }
}
