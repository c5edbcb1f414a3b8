//! Validation of every field of a [`vigil_ipc_proto::PrivRequest`]. Pure functions: the
//! request is checked completely before any file is opened or any namespace entered.

use std::collections::HashSet;

use vigil_ipc_proto::{MAX_FD_STAT_PIDS, MAX_NETNS_NAME, NetnsTarget};

use crate::error::RequestError;

/// Largest `kernel.pid_max` the kernel allows on 64-bit (`PID_MAX_LIMIT`); also the fallback
/// when /proc/sys/kernel/pid_max cannot be read.
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// Read `kernel.pid_max` (once, at start), clamped to `1..=PID_MAX_LIMIT`.
pub fn read_pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|n| n.clamp(1, PID_MAX_LIMIT))
        .unwrap_or(PID_MAX_LIMIT)
}

/// A pid is valid when it is in `1..=pid_max` (pids are always below `pid_max`, the bound is
/// inclusive only to stay lenient with the kernel's off-by-one history).
pub fn check_pid(pid: u32, pid_max: u32) -> Result<u32, RequestError> {
    if pid == 0 || pid > pid_max {
        return Err(RequestError::BadRequest(format!(
            "pid {pid} out of range 1..={pid_max}"
        )));
    }
    Ok(pid)
}

/// At most [`MAX_FD_STAT_PIDS`] pids, each valid; duplicates dropped (first occurrence kept).
pub fn check_pids(pids: &[u32], pid_max: u32) -> Result<Vec<u32>, RequestError> {
    check_pids_at_most(pids, MAX_FD_STAT_PIDS, pid_max)
}

/// At most `max` pids, each valid; duplicates dropped (first occurrence kept).
pub fn check_pids_at_most(
    pids: &[u32],
    max: usize,
    pid_max: u32,
) -> Result<Vec<u32>, RequestError> {
    if pids.len() > max {
        return Err(RequestError::BadRequest(format!(
            "{} pids, at most {max} allowed",
            pids.len()
        )));
    }
    let mut seen = HashSet::with_capacity(pids.len());
    let mut out = Vec::with_capacity(pids.len());
    for &pid in pids {
        check_pid(pid, pid_max)?;
        if seen.insert(pid) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// A network namespace name as `ip netns` makes them: 1..=[`MAX_NETNS_NAME`] bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..` (so never a path component that moves).
pub fn check_netns_name(name: &str) -> Result<&str, RequestError> {
    if name.is_empty() || name.len() > MAX_NETNS_NAME {
        return Err(RequestError::BadRequest(format!(
            "netns name of {} bytes, must be 1..={MAX_NETNS_NAME}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(RequestError::BadRequest(format!(
            "netns name {name:?} is not allowed"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(RequestError::BadRequest(format!(
            "netns name contains {c:?}; allowed: A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(name)
}

/// Validate a [`NetnsTarget`] completely.
pub fn check_netns_target(target: &NetnsTarget, pid_max: u32) -> Result<(), RequestError> {
    match target {
        NetnsTarget::Pid(pid) => check_pid(*pid, pid_max).map(|_| ()),
        NetnsTarget::Named(name) => check_netns_name(name).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids() {
        assert!(check_pid(0, 100).is_err());
        assert!(check_pid(101, 100).is_err());
        assert!(check_pid(u32::MAX, PID_MAX_LIMIT).is_err());
        assert_eq!(check_pid(1, 100).unwrap(), 1);
        assert_eq!(check_pid(100, 100).unwrap(), 100);
        assert_eq!(check_pids(&[5, 3, 5, 3, 7], 100).unwrap(), vec![5, 3, 7]);
        assert!(check_pids(&[5, 0], 100).is_err());
        assert!(check_pids(&vec![1; MAX_FD_STAT_PIDS], 100).is_ok());
        assert!(check_pids(&vec![1; MAX_FD_STAT_PIDS + 1], 100).is_err());
        assert!(check_pids(&[], 100).unwrap().is_empty());
        assert!(check_pids_at_most(&[1, 2, 3], 2, 100).is_err());
        assert_eq!(check_pids_at_most(&[1, 1], 2, 100).unwrap(), vec![1]);
    }

    #[test]
    fn pid_max_is_sane() {
        let m = read_pid_max();
        assert!((1..=PID_MAX_LIMIT).contains(&m));
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "vigil-ph-test-1",
            "cni-1234.abcd_EF",
            &"x".repeat(MAX_NETNS_NAME),
        ] {
            assert!(check_netns_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc",
            "a b",
            "a\0b",
            "é",
            "a\n",
            &"x".repeat(MAX_NETNS_NAME + 1),
            &"y".repeat(200),
        ] {
            let e = check_netns_name(bad).unwrap_err();
            assert_eq!(
                e.code(),
                vigil_ipc_proto::PrivErrorCode::BadRequest,
                "{bad:?}"
            );
        }
        assert!(check_netns_target(&NetnsTarget::Pid(0), 100).is_err());
        assert!(check_netns_target(&NetnsTarget::Named("../x".into()), 100).is_err());
        assert!(check_netns_target(&NetnsTarget::Pid(1), 100).is_ok());
    }
}
