//! `PrivRequest::ProcIoStats` and `PrivRequest::ProcExePaths` (feature `process_io`): another
//! user's /proc/PID/io (mode 0400: CAP_DAC_READ_SEARCH) and the targets of /proc/PID/exe, both
//! behind a ptrace access check (CAP_SYS_PTRACE). A process that vanished or cannot be read is
//! answered with `None`: normal on a live host, not an error.

use std::io::Read;
use std::time::Instant;

use vigil_ipc_proto::{MAX_EXE_PATH, ProcExePath, ProcIoStat, ProcessIo};

/// /proc/PID/io is about 100 bytes; nothing longer is read.
const MAX_IO_FILE: u64 = 4096;

/// `read_bytes`, `write_bytes`, `syscr`, `syscw` of /proc/PID/io.
pub fn parse_io(text: &str) -> Option<ProcessIo> {
    let mut v = [None; 4];
    for line in text.lines() {
        let (k, n) = line.split_once(':')?;
        let slot = match k {
            "read_bytes" => 0,
            "write_bytes" => 1,
            "syscr" => 2,
            "syscw" => 3,
            _ => continue,
        };
        v[slot] = Some(n.trim().parse::<u64>().ok()?);
    }
    Some(ProcessIo {
        read_bytes: v[0]?,
        write_bytes: v[1]?,
        read_ops: v[2]?,
        write_ops: v[3]?,
    })
}

fn io_of(pid: u32) -> Option<ProcessIo> {
    let mut s = String::new();
    std::fs::File::open(format!("/proc/{pid}/io"))
        .ok()?
        .take(MAX_IO_FILE)
        .read_to_string(&mut s)
        .ok()?;
    parse_io(&s)
}

/// /proc/PID/io of every pid, in order (validated and deduplicated by the caller). Pids not
/// reached before `deadline` are answered `None`.
pub fn io_stats(pids: &[u32], deadline: Instant) -> Vec<ProcIoStat> {
    pids.iter()
        .map(|&pid| ProcIoStat {
            pid,
            io: (Instant::now() < deadline).then(|| io_of(pid)).flatten(),
        })
        .collect()
}

/// The target of /proc/PID/exe; `None` for a kernel thread, a vanished process, a path longer
/// than [`MAX_EXE_PATH`] or one that is not UTF-8 (never cut: a wrong path is worse than none).
pub fn exe_of(pid: u32) -> Option<String> {
    // readlinkat, the call the seccomp policy allows (std's read_link is readlink).
    let path = format!("/proc/{pid}/exe");
    let p = nix::fcntl::readlinkat(nix::fcntl::AT_FDCWD, path.as_str()).ok()?;
    let s = p.into_string().ok()?;
    (s.len() <= MAX_EXE_PATH).then_some(s)
}

pub fn exe_paths(pids: &[u32]) -> Vec<ProcExePath> {
    pids.iter()
        .map(|&pid| ProcExePath {
            pid,
            path: exe_of(pid),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::{MAX_EXE_PIDS, MAX_IO_STAT_PIDS, PrivResponse, frame};

    #[test]
    fn worst_case_answers_fit_one_frame() {
        let io: Vec<ProcIoStat> = (0..MAX_IO_STAT_PIDS as u32)
            .map(|i| ProcIoStat {
                pid: crate::validate::PID_MAX_LIMIT - i,
                io: Some(ProcessIo {
                    read_bytes: u64::MAX,
                    write_bytes: u64::MAX,
                    read_ops: u64::MAX,
                    write_ops: u64::MAX,
                }),
            })
            .collect();
        assert!(frame::encoded_len(&PrivResponse::IoStats(io)).unwrap() <= frame::MAX_FRAME);
        let exe: Vec<ProcExePath> = (0..MAX_EXE_PIDS as u32)
            .map(|i| ProcExePath {
                pid: crate::validate::PID_MAX_LIMIT - i,
                path: Some("é".repeat(MAX_EXE_PATH / 2)),
            })
            .collect();
        assert!(frame::encoded_len(&PrivResponse::ExePaths(exe)).unwrap() <= frame::MAX_FRAME);
    }

    #[test]
    fn own_process_and_hostile_text() {
        let me = std::process::id();
        let v = io_stats(
            &[me, crate::validate::PID_MAX_LIMIT],
            Instant::now() + std::time::Duration::from_secs(2),
        );
        assert!(v[0].io.is_some_and(|x| x.read_ops > 0), "{v:?}");
        assert_eq!(v[1].io, None);
        assert!(
            io_stats(&[me], Instant::now())[0].io.is_none(),
            "past the deadline"
        );
        assert!(exe_of(me).is_some_and(|p| p.starts_with('/')));
        assert_eq!(exe_of(2), None, "kthreadd has no executable");
        assert_eq!(parse_io("read_bytes: 1\nwrite_bytes: 2\nsyscr: 3\n"), None);
        assert_eq!(
            parse_io("read_bytes: x\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n"),
            None
        );
        assert_eq!(
            parse_io(
                "rchar: 9\nread_bytes: 1\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\ncancelled_write_bytes: 0\n"
            ),
            Some(ProcessIo {
                read_bytes: 1,
                write_bytes: 2,
                read_ops: 3,
                write_ops: 4
            })
        );
    }
}
