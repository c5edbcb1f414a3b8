//! `PrivRequest::ProcFdStats`: how many descriptors, and how many of them sockets, each process
//! has open. Listing another user's /proc/PID/fd needs CAP_DAC_READ_SEARCH, reading its links
//! (to tell sockets apart) CAP_SYS_PTRACE as well. A process that vanished, or whose directory cannot be read, is reported with
//! `None`: that is normal on a live host, not an error.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::readlinkat;

use vigil_ipc_proto::ProcFdStat;

/// Counting stops here: the answer stays small (each count fits a 3-byte varint, so
/// [`vigil_ipc_proto::MAX_FD_STAT_PIDS`] entries always fit one frame) and one process with a
/// huge table cannot stall the privhelper for long. `fs.nr_open` defaults to 2^20.
pub const MAX_COUNTED_FDS: u32 = 1 << 20;

/// Count the entries of /proc/PID/fd and, with `sockets`, how many of them are sockets.
/// Syscalls: openat, getdents64 and readlinkat relative to the directory (no path
/// re-resolution per entry).
pub fn fd_stat(pid: u32, sockets_wanted: bool) -> ProcFdStat {
    let unknown = ProcFdStat {
        pid,
        fds: None,
        sockets: None,
    };
    let dir_fd: OwnedFd = match File::open(format!("/proc/{pid}/fd")) {
        Ok(f) => f.into(),
        Err(_) => return unknown,
    };
    let mut dir = match dir_fd.try_clone().ok().and_then(|d| Dir::from_fd(d).ok()) {
        Some(d) => d,
        None => return unknown,
    };
    let mut fds: u32 = 0;
    let mut sockets: u32 = 0;
    let mut sockets_known = sockets_wanted;
    for entry in dir.iter() {
        let entry = match entry {
            Ok(e) => e,
            // The process exited while we were reading its table.
            Err(_) => return unknown,
        };
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        if fds >= MAX_COUNTED_FDS {
            break;
        }
        fds += 1;
        if !sockets_known {
            continue;
        }
        match readlinkat(&dir_fd, name) {
            Ok(target) => {
                if target.as_encoded_bytes().starts_with(b"socket:[") {
                    sockets += 1;
                }
            }
            // Closed between readdir and readlink: it is gone, not counted as a socket.
            Err(Errno::ENOENT) => {}
            // No ptrace access to the links: the count of sockets is unknown.
            Err(_) => sockets_known = false,
        }
    }
    ProcFdStat {
        pid,
        fds: Some(fds),
        sockets: sockets_known.then_some(sockets),
    }
}

/// How long one `ProcFdStats` request may take in all: processes with huge descriptor tables
/// must not keep the privhelper from the supervisor's `Shutdown` or the next request.
pub const FD_STATS_BUDGET: Duration = Duration::from_secs(2);

/// [`fd_stat`] for every pid, in order (the pids are validated and deduplicated by the caller).
/// Pids not reached before `deadline` are reported unknown (`None`), never skipped.
pub fn fd_stats(pids: &[u32], sockets: bool, deadline: Instant) -> Vec<ProcFdStat> {
    pids.iter()
        .map(|&pid| {
            if Instant::now() < deadline {
                fd_stat(pid, sockets)
            } else {
                ProcFdStat {
                    pid,
                    fds: None,
                    sockets: None,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::{MAX_FD_STAT_PIDS, PrivResponse, frame};

    #[test]
    fn worst_case_answer_fits_one_frame() {
        let worst: Vec<ProcFdStat> = (0..MAX_FD_STAT_PIDS as u32)
            .map(|i| ProcFdStat {
                pid: crate::validate::PID_MAX_LIMIT - i,
                fds: Some(MAX_COUNTED_FDS),
                sockets: Some(MAX_COUNTED_FDS),
            })
            .collect();
        let len = frame::encoded_len(&PrivResponse::FdStats(worst.clone())).unwrap();
        assert!(len <= frame::MAX_FRAME, "{len} > {}", frame::MAX_FRAME);
        frame::encode(&PrivResponse::FdStats(worst)).unwrap();
    }

    #[test]
    fn own_process() {
        let (_a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let s = fd_stat(std::process::id(), true);
        assert!(s.fds.unwrap() >= 3);
        assert!(s.sockets.unwrap() >= 2);
        let counts_only = fd_stat(std::process::id(), false);
        assert!(counts_only.fds.is_some_and(|n| n >= 3) && counts_only.sockets.is_none());
        let gone = fd_stat(crate::validate::PID_MAX_LIMIT, true);
        assert_eq!((gone.fds, gone.sockets), (None, None));
    }

    #[test]
    fn budget_exhausted_reports_unknown_for_the_rest() {
        let me = std::process::id();
        let v = fd_stats(&[me, 1], true, Instant::now() + FD_STATS_BUDGET);
        assert!(v.iter().all(|s| s.fds.is_some()), "{v:?}");
        let v = fd_stats(&[me, 1], true, Instant::now());
        assert_eq!(v.len(), 2);
        assert!(
            v.iter().all(|s| s.fds.is_none() && s.sockets.is_none()),
            "{v:?}"
        );
    }
}
