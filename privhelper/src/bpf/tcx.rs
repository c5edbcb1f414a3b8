//! tc attachment through tcx links (Linux >= 6.6): one `bpf(BPF_LINK_CREATE)` per program and
//! interface, found by index from /sys/class/net. Closing the link descriptor detaches. Done
//! here rather than through aya's name-based attach so the privhelper needs no
//! `ioctl(SIOCGIFINDEX)` (glibc's if_nametoindex), which its seccomp policy does not allow.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Index of interface `name` (already validated: no `/`) in this network namespace.
pub(crate) fn ifindex(name: &str) -> std::io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    s.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad ifindex {s:?} for {name}")))
}

/// Attach the loaded SCHED_CLS program `prog` to `ifindex`, ingress or egress, after the
/// programs already there. Returns the link.
pub(crate) fn attach(prog: BorrowedFd<'_>, ifindex: u32, egress: bool) -> std::io::Result<OwnedFd> {
    // union bpf_attr, link_create member: prog_fd, target_ifindex, attach_type, flags, then
    // tcx { relative_fd, expected_revision } left zero (append, any revision).
    let mut attr = [0u64; 8];
    let at = if egress {
        BPF_TCX_EGRESS
    } else {
        BPF_TCX_INGRESS
    };
    attr[0] = u64::from(prog.as_raw_fd() as u32) | (u64::from(ifindex) << 32);
    attr[1] = u64::from(at);
    super::link_create(attr)
}
