//! Started by an ordinary user: a user namespace in which we are root gives us the mount
//! namespace for the virtual root; nothing else is gained (the host sees our own uid).

use crate::error::{Error, Result};

/// Enter a new user + mount namespace mapping our uid/gid to 0 inside.
pub fn enter_user_namespace() -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(Error::sys("unshare(CLONE_NEWUSER)"))?;
    let w = |path: &str, data: String| std::fs::write(path, data).map_err(Error::fs("write", path));
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("0 {uid} 1"))?;
    w("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Default runtime directory of an unprivileged user.
pub fn default_runtime_dir() -> String {
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(d) if !d.is_empty() => format!("{d}/vigil"),
        _ => format!("/tmp/vigil-{}", nix::unistd::getuid()),
    }
}
