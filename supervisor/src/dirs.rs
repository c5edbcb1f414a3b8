//! The runtime directory (status socket, virtual root, journal) and the journal directory:
//! created with explicit modes, the runtime dir refused when someone else could have planted
//! it (a rootless default lives in /tmp), the journal handed to the agent user.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
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

/// Create the runtime and journal directories; the journal belongs to the agent user.
pub fn prepare(
    cfg: &AgentConfig,
    journal: &Path,
    owner: Option<&users::HostUser>,
) -> Result<PathBuf> {
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
    }
    Ok(rt)
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
        assert_eq!(got, std::fs::canonicalize(&rt).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&rt) & 0o022, 0);
        assert_eq!(mode(&journal), 0o700);
        // A runtime dir others may write is refused.
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&cfg, &journal, None).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }
}
