//! Disk space and inodes of the host's real filesystems (statvfs through the host view),
//! mounts from `<host_root>/proc/1/mountinfo` (falling back to /proc/self/mountinfo).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use vigil_ipc_proto::{KeyValue, Record};

use crate::mountinfo::Mount;
use crate::util::{Stamp, i, read_into, updown_i64};

/// Filesystem types that are not storage.
pub const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "pstore",
    "bpf",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "ramfs",
    "overlay",
    "squashfs",
    "fuse.lxcfs",
    "selinuxfs",
    "nfsd",
];

/// Real filesystems, one per device (the first mount of a device wins).
pub fn real_filesystems(mounts: &[Mount]) -> Vec<&Mount> {
    let mut seen = HashSet::new();
    mounts
        .iter()
        .filter(|m| !PSEUDO_FS.contains(&m.fstype.as_str()) && seen.insert(m.dev.clone()))
        .collect()
}

pub struct DiskCollector {
    host_root: PathBuf,
    proc_root: PathBuf,
    buf: Vec<u8>,
    pub parse_errors: u64,
}

impl DiskCollector {
    pub fn new(host_root: &Path, proc_root: &Path) -> Self {
        DiskCollector {
            host_root: host_root.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            buf: Vec::new(),
            parse_errors: 0,
        }
    }

    pub fn collect(&mut self, st: Stamp, host_name: &str, out: &mut Vec<Record>) {
        let ok = read_into(&self.proc_root.join("1/mountinfo"), &mut self.buf).is_ok_and(|n| n > 0)
            || read_into(&self.proc_root.join("self/mountinfo"), &mut self.buf).is_ok();
        if !ok {
            return;
        }
        let (mounts, bad) = crate::mountinfo::parse(&self.buf);
        self.parse_errors += bad;
        for m in real_filesystems(&mounts) {
            let rel = m.mount_point.trim_start_matches('/');
            let path = if rel.is_empty() {
                self.host_root.clone()
            } else {
                self.host_root.join(rel)
            };
            let Ok(v) = nix::sys::statvfs::statvfs(&path) else {
                continue;
            };
            let frag = v.fragment_size();
            let (blocks, bfree, bavail) = (v.blocks(), v.blocks_free(), v.blocks_available());
            let (files, ffree) = (v.files(), v.files_free());
            let resource = vec![KeyValue::str("host.name", host_name)];
            let base = || {
                vec![
                    KeyValue::str("system.device", m.source.as_str()),
                    KeyValue::str("system.filesystem.mountpoint", m.mount_point.as_str()),
                    KeyValue::str("system.filesystem.type", m.fstype.as_str()),
                    KeyValue::str("system.filesystem.mode", m.mode()),
                ]
            };
            let a = |state: &str| {
                let mut v = base();
                v.push(KeyValue::str("system.filesystem.state", state));
                v
            };
            let by = |blocks: u64| i(blocks.saturating_mul(frag));
            let metrics = vec![
                updown_i64(
                    "system.filesystem.usage",
                    "By",
                    st,
                    by(blocks.saturating_sub(bfree)),
                    a("used"),
                ),
                updown_i64("system.filesystem.usage", "By", st, by(bavail), a("free")),
                updown_i64(
                    "system.filesystem.usage",
                    "By",
                    st,
                    by(bfree.saturating_sub(bavail)),
                    a("reserved"),
                ),
                updown_i64("system.filesystem.limit", "By", st, by(blocks), base()),
                updown_i64(
                    "system.filesystem.inodes.usage",
                    "{inodes}",
                    st,
                    i(files.saturating_sub(ffree)),
                    a("used"),
                ),
                updown_i64(
                    "system.filesystem.inodes.usage",
                    "{inodes}",
                    st,
                    i(ffree),
                    a("free"),
                ),
            ];
            out.push(Record::Metrics { resource, metrics });
        }
    }
}
