//! The runtime directory (status socket, virtual root, journal) and the journal directory:
//! created with explicit modes, the runtime dir refused when someone else could have planted
//! it (a rootless default lives in /tmp), locked by one agent at a time, the journal handed to
//! the agent user, and every directory on the way to it checked to be enterable by that user.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vigil_ipc_proto::AgentConfig;

use crate::error::{Error, Result};
use crate::users;

/// A runtime dir we did not create must belong to us or to root and be writable by its owner
/// only: anyone else could swap the journal or the status socket under us.
pub fn check_owner(owner: u32, mode: u32, euid: u32) -> std::result::Result<(), String> {
    if owner != euid && owner != 0 {
        return Err(format!(
            "owned by uid {owner}, not by us ({euid}) or root: refusing to use it"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:o}): refusing to use it",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The prepared runtime directory and the lock that makes it this agent's.
#[derive(Debug)]
pub struct Runtime {
    pub dir: PathBuf,
    /// `vigil.lock`, flock'ed exclusively for the supervisor's life (close-on-exec: the
    /// children do not hold it).
    _lock: std::fs::File,
}

/// Take `<rt>/vigil.lock` or say which agent holds it.
fn lock(rt: &Path) -> Result<std::fs::File> {
    let path = rt.join("vigil.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(Error::fs("open lock", &path))?;
    // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::fs("lock", &path)(err));
        }
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(Error::Other(format!(
            "runtime dir {} is in use by another vigil (pid {}): stop it, or give this one \
             its own --runtime-dir",
            rt.display(),
            if holder.is_empty() { "unknown" } else { holder }
        )));
    }
    f.set_len(0).map_err(Error::fs("truncate lock", &path))?;
    f.rewind().map_err(Error::fs("rewind lock", &path))?;
    writeln!(f, "{}", std::process::id()).map_err(Error::fs("write lock", &path))?;
    Ok(f)
}

/// Whether `user` may enter (search) a directory with this owner and mode.
fn can_enter(user: &users::HostUser, uid: u32, gid: u32, mode: u32) -> bool {
    if user.uid == uid {
        mode & 0o100 != 0
    } else if user.groups.contains(&gid) || user.gid == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Every directory from `/` down to `journal`'s parent must let the agent user through. The
/// runtime dir is ours: made enterable (search only, never writable) when it is not. Anything
/// above it is the operator's: one error naming the path and the fix.
fn check_reachable(rt: &Path, journal: &Path, user: &users::HostUser) -> Result<()> {
    let Some(parent) = journal.parent() else {
        return Ok(());
    };
    for dir in parent.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let md = std::fs::metadata(dir).map_err(Error::fs("stat", dir))?;
        if can_enter(user, md.uid(), md.gid(), md.mode()) {
            continue;
        }
        if dir == rt && md.uid() == nix::unistd::geteuid().as_raw() {
            let mode = (md.mode() & 0o7777) | 0o011;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(Error::fs("chmod runtime dir", dir))?;
            tracing::info!(
                "runtime dir {}: made enterable ({mode:o}) so {} reaches its journal",
                dir.display(),
                user.name
            );
            continue;
        }
        return Err(Error::Other(format!(
            "{}: the agent user {} (uid {}) cannot enter it (owner {}, mode {:o}), so it could \
             not reach its journal {}: allow it (chmod o+x {}) or choose another --runtime-dir",
            dir.display(),
            user.name,
            user.uid,
            md.uid(),
            md.mode() & 0o7777,
            journal.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Create the runtime and journal directories and lock the runtime dir; the journal belongs to
/// the agent user, who must be able to reach it.
pub fn prepare(
    cfg: &AgentConfig,
    journal: &Path,
    owner: Option<&users::HostUser>,
) -> Result<Runtime> {
    let rt = Path::new(&cfg.runtime_dir);
    // Explicit modes: a umask of 0 must not leave a world-writable runtime dir.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(rt)
        .map_err(Error::fs("create runtime dir", rt))?;
    let rt = std::fs::canonicalize(rt).map_err(Error::fs("resolve runtime dir", rt))?;
    let md = std::fs::metadata(&rt).map_err(Error::fs("stat runtime dir", &rt))?;
    check_owner(md.uid(), md.mode(), nix::unistd::geteuid().as_raw())
        .map_err(|why| Error::Other(format!("runtime dir {}: {why}", rt.display())))?;
    // Before anything in it is touched: a second agent on the same dir stops here.
    let lock = lock(&rt)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(journal)
        .map_err(Error::fs("create journal dir", journal))?;
    let md = std::fs::metadata(journal).map_err(Error::fs("stat journal dir", journal))?;
    if md.permissions().mode() & 0o7777 != 0o700 {
        // A journal left by an earlier run belongs to the agent user; without CAP_FOWNER we
        // may only chmod what we own, so take it back first (CAP_CHOWN), then hand it over.
        if md.uid() != nix::unistd::geteuid().as_raw() {
            nix::unistd::chown(journal, Some(nix::unistd::geteuid()), None).map_err(|e| {
                Error::Fs {
                    step: "take journal dir back",
                    path: journal.to_path_buf(),
                    source: e.into(),
                }
            })?;
        }
        std::fs::set_permissions(journal, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::fs("chmod journal dir", journal))?;
    }
    if let Some(u) = owner {
        nix::unistd::chown(
            journal,
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        )
        .map_err(|e| Error::Fs {
            step: "chown journal dir",
            path: journal.to_path_buf(),
            source: e.into(),
        })?;
        let journal = std::fs::canonicalize(journal).map_err(Error::fs("resolve", journal))?;
        check_reachable(&rt, &journal, u)?;
    }
    Ok(Runtime {
        dir: rt,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_or_roots_private_dir_is_accepted() {
        assert!(check_owner(0, 0o40755, 0).is_ok());
        assert!(check_owner(1000, 0o40700, 1000).is_ok());
        assert!(check_owner(0, 0o40755, 1000).is_ok());
        let e = check_owner(1001, 0o40700, 1000).unwrap_err();
        assert!(e.contains("uid 1001"), "{e}");
        let e = check_owner(1000, 0o41777, 1000).unwrap_err();
        assert!(e.contains("1777"), "{e}");
        assert!(check_owner(0, 0o40775, 0).is_err());
    }

    #[test]
    fn creates_private_dirs_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = dir.path().join("a/rt");
        let journal = rt.join("journal");
        let cfg = AgentConfig {
            runtime_dir: rt.display().to_string(),
            ..AgentConfig::default()
        };
        let got = prepare(&cfg, &journal, None).expect("prepare");
        assert_eq!(got.dir, std::fs::canonicalize(&rt).unwrap());
        drop(got);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&rt) & 0o022, 0);
        assert_eq!(mode(&journal), 0o700);
        // A runtime dir others may write is refused.
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&cfg, &journal, None).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }

    #[test]
    fn one_agent_per_runtime_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = dir.path().join("rt");
        let cfg = AgentConfig {
            runtime_dir: rt.display().to_string(),
            ..AgentConfig::default()
        };
        let first = prepare(&cfg, &rt.join("journal"), None).expect("first");
        let e = prepare(&cfg, &rt.join("journal"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "in use by another vigil (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        assert!(e.contains(&rt.display().to_string()), "{e}");
        drop(first);
        prepare(&cfg, &rt.join("journal"), None).expect("free again");
    }

    fn user(uid: u32, gid: u32) -> users::HostUser {
        users::HostUser {
            name: "vigil".into(),
            uid,
            gid,
            groups: vec![gid, 4242],
        }
    }

    #[test]
    fn who_may_enter() {
        let u = user(990, 985);
        assert!(can_enter(&u, 990, 0, 0o700));
        assert!(!can_enter(&u, 0, 0, 0o770));
        assert!(can_enter(&u, 0, 4242, 0o710));
        assert!(can_enter(&u, 0, 0, 0o711));
        assert!(!can_enter(&u, 0, 0, 0o700));
    }

    #[test]
    fn an_unreachable_runtime_dir_is_fixed_when_ours_and_named_when_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = dir.path().join("rt");
        std::fs::DirBuilder::new().mode(0o700).create(&rt).unwrap();
        let journal = rt.join("journal");
        std::fs::create_dir(&journal).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // Someone else than us (the agent user is not the owner of anything here).
        let u = user(me.wrapping_add(12345), 54321);
        check_reachable(&rt, &journal, &u).expect("fixed");
        let mode = std::fs::metadata(&rt).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o711);
        // A parent that is not the runtime dir: an error naming it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_reachable(&rt, &journal, &u).unwrap_err().to_string();
        assert!(
            e.contains(&dir.path().display().to_string()) && e.contains("chmod o+x"),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
