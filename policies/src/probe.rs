//! What the running kernel and this process can do, read without changing anything: the facts
//! the feature table is evaluated against, and the capabilities held.

use std::collections::HashSet;

use caps::{CapSet, Capability};

use crate::plan::features::KernelFacts;

fn read_int(path: &str) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl KernelFacts {
    pub fn probe() -> KernelFacts {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let v2 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup2"));
        let v1 = mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("cgroup"));
        KernelFacts {
            perf_event_paranoid: read_int("/proc/sys/kernel/perf_event_paranoid"),
            dmesg_restrict: read_int("/proc/sys/kernel/dmesg_restrict"),
            unprivileged_bpf_disabled: read_int("/proc/sys/kernel/unprivileged_bpf_disabled"),
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            landlock_abi: crate::apply::landlock::kernel_abi(),
            kmsg: std::path::Path::new("/dev/kmsg").exists(),
            cgroup: match (v1, v2) {
                (true, true) => "hybrid (v1 controllers + v2)".into(),
                (false, true) => "v2".into(),
                (true, false) => "v1".into(),
                (false, false) => "none".into(),
            },
            unprivileged_userns: read_int("/proc/sys/user/max_user_namespaces").map(|n| n > 0),
            fd_count_stat: fd_count_by_stat(),
            psi: std::fs::read("/proc/pressure/cpu").is_ok(),
        }
    }
}

/// Whether this kernel reports a process's open descriptor count as the size of its
/// /proc/PID/fd directory: our own has at least stdin..stderr or the probe's descriptor open.
pub fn fd_count_by_stat() -> bool {
    std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.len() > 0)
}

/// The capabilities the calling process can hand on (its effective set).
pub fn held_capabilities() -> HashSet<Capability> {
    caps::read(None, CapSet::Effective)
        .map(|s| s.into_iter().collect())
        .unwrap_or_default()
}
