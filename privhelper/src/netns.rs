//! Network namespaces: `PrivRequest::ListNetns` and `PrivRequest::NetlinkRouteInNetns`.
//!
//! A NETLINK_ROUTE socket stays bound to the namespace it was created in, so the privhelper
//! enters the target namespace (`setns`, CAP_SYS_ADMIN), creates the socket, comes back, and
//! hands the socket to the collector, which then dumps links and addresses of that namespace
//! with no privilege at all. Coming back is checked: a failure is fatal for the process
//! ([`NetnsError::Restore`]), never a privhelper left running in a container's namespace.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
use nix::sys::statfs::fstatfs;
use vigil_ipc_proto::{NetnsInfo, NetnsTarget};

use crate::error::{PrivhelperError, RequestError};
use crate::validate;

/// Directories `ip netns` keeps named namespaces in (the second is usually a symlink to the
/// first; entries are deduplicated by inode).
pub const NETNS_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];
/// Most entries in one `PrivResponse::Netns` (each at most ~85 bytes encoded, so the answer
/// always fits one frame).
pub const MAX_NETNS_LIST: usize = 512;
/// Most entries read from one netns directory (a hostile /run/netns cannot stall us).
const MAX_DIR_ENTRIES: usize = 4096;
/// `NSFS_MAGIC` from linux/magic.h: the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The namespace the privhelper lives in, kept open to come back to.
#[derive(Debug)]
pub struct HomeNetns {
    fd: OwnedFd,
    inode: u64,
}

/// Failure of [`HomeNetns::socket_in`]: either the request failed (answered as an error) or
/// the thread could not come back (fatal).
#[derive(Debug)]
pub enum NetnsError {
    Request(RequestError),
    Restore(nix::errno::Errno),
}

impl From<RequestError> for NetnsError {
    fn from(e: RequestError) -> Self {
        NetnsError::Request(e)
    }
}

impl HomeNetns {
    /// Open the calling thread's network namespace (`/proc/thread-self/ns/net`).
    pub fn open() -> Result<Self, PrivhelperError> {
        const PATH: &str = "/proc/thread-self/ns/net";
        let f =
            File::open(PATH).map_err(|source| PrivhelperError::OwnNetns { path: PATH, source })?;
        let inode = f
            .metadata()
            .map_err(|source| PrivhelperError::OwnNetns { path: PATH, source })?
            .ino();
        Ok(HomeNetns {
            fd: OwnedFd::from(f),
            inode,
        })
    }

    /// Inode of the own namespace (excluded from [`list`]).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// A NETLINK_ROUTE socket created inside `target` (validated here again).
    pub fn socket_in(&self, target: &NetnsTarget, pid_max: u32) -> Result<OwnedFd, NetnsError> {
        validate::check_netns_target(target, pid_max)?;
        let ns = open_target(target)?;
        // Check that the file is a namespace at all; setns(CLONE_NEWNET) below then refuses
        // (EINVAL) any namespace that is not a network namespace, before anything changes.
        let st = fstatfs(&ns).map_err(|e| RequestError::errno("fstatfs namespace", e))?;
        if st.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(
                RequestError::BadRequest(format!("{target:?} is not a namespace file")).into(),
            );
        }
        match setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) => {
                return Err(RequestError::BadRequest(format!(
                    "{target:?} is not a network namespace"
                ))
                .into());
            }
            Err(e) => return Err(RequestError::errno("setns into target", e).into()),
        }
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        );
        // Always come back, whether the socket was created or not.
        if let Err(e) = setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            return Err(NetnsError::Restore(e));
        }
        sock.map_err(|e| RequestError::errno("socket(AF_NETLINK, NETLINK_ROUTE)", e).into())
    }
}

fn open_target(target: &NetnsTarget) -> Result<File, RequestError> {
    match target {
        NetnsTarget::Pid(pid) => {
            let path = format!("/proc/{pid}/ns/net");
            File::open(&path).map_err(|e| RequestError::io(path, e))
        }
        NetnsTarget::Named(name) => {
            let mut last = None;
            for dir in NETNS_DIRS {
                let path = format!("{dir}/{name}");
                match OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&path)
                {
                    Ok(f) => return Ok(f),
                    Err(e) => last = Some(RequestError::io(path, e)),
                }
            }
            Err(last.unwrap_or_else(|| RequestError::NotFound {
                what: format!("netns {name}"),
            }))
        }
    }
}

/// Inode of a namespace file, if `path` is one (a stale file under /run/netns is not).
fn ns_inode(path: &str) -> Option<u64> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let st = fstatfs(&f).ok()?;
    if st.filesystem_type().0 as i64 != NSFS_MAGIC {
        return None;
    }
    f.metadata().ok().map(|m| m.ino())
}

/// Named namespaces (under [`NETNS_DIRS`]) and the namespaces of processes, one entry per
/// namespace, without the privhelper's own; named ones first; at most [`MAX_NETNS_LIST`].
pub fn list(own_inode: u64) -> Vec<NetnsInfo> {
    let mut out: Vec<NetnsInfo> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();

    for dir in NETNS_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate::check_netns_name(&name).is_err() {
                continue;
            }
            let Some(inode) = ns_inode(&format!("{dir}/{name}")) else {
                continue;
            };
            if inode == own_inode || index.contains_key(&inode) || out.len() >= MAX_NETNS_LIST {
                continue;
            }
            index.insert(inode, out.len());
            out.push(NetnsInfo {
                inode,
                name: Some(name),
                pid: None,
            });
        }
    }

    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // stat() follows the magic link to the namespace inode (ptrace read access needed).
        let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let inode = meta.ino();
        if inode == own_inode {
            continue;
        }
        match index.get(&inode) {
            Some(&i) if out[i].pid.is_none() => out[i].pid = Some(pid),
            Some(_) => {}
            None if out.len() < MAX_NETNS_LIST => {
                index.insert(inode, out.len());
                out.push(NetnsInfo {
                    inode,
                    name: None,
                    pid: Some(pid),
                });
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::{MAX_NETNS_NAME, PrivResponse, frame};

    #[test]
    fn worst_case_list_fits_one_frame() {
        let worst: Vec<NetnsInfo> = (0..MAX_NETNS_LIST)
            .map(|_| NetnsInfo {
                inode: u64::MAX,
                name: Some("x".repeat(MAX_NETNS_NAME)),
                pid: Some(u32::MAX),
            })
            .collect();
        let len = frame::encoded_len(&PrivResponse::Netns(worst)).unwrap();
        assert!(len <= frame::MAX_FRAME, "{len}");
    }

    #[test]
    fn own_namespace_is_not_listed() {
        let home = HomeNetns::open().unwrap();
        assert!(list(home.inode()).iter().all(|n| n.inode != home.inode()));
    }
}
