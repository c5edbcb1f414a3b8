//! The thin syscall layer of the virtual root: perform a [`RootPlan`] in a new mount
//! namespace and pivot into the result (tested for real by the end-to-end tests, which read a
//! child's /proc/PID/mountinfo).

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::plan::{Op, RootPlan};
use super::resolve::resolve_in;
use crate::error::{Error, Result};

fn merr(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Mount { step, path, source }
}

/// Enter a new mount namespace whose mounts do not propagate back to the host.
pub fn unshare_mount_ns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(merr("unshare", Path::new("/")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(merr("make rslave", Path::new("/")))
}

/// Perform the plan's mounts, then pivot into the new root.
pub fn apply(plan: &RootPlan) -> Result<()> {
    std::fs::create_dir_all(&plan.new_root).map_err(Error::fs("mkdir", &plan.new_root))?;
    for op in &plan.ops {
        apply_op(op, &plan.new_root)?;
    }
    pivot(&plan.new_root)
}

fn apply_op(op: &Op, new_root: &Path) -> Result<()> {
    match op {
        Op::Tmpfs { target } => mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m"),
        )
        .map_err(merr("tmpfs", target)),
        Op::Mkdir { path } => std::fs::create_dir_all(path).map_err(Error::fs("mkdir", path)),
        Op::Symlink { target, link } => {
            std::os::unix::fs::symlink(target, link).map_err(Error::fs("symlink", link))
        }
        Op::Bind {
            source,
            target,
            recursive,
        } => {
            // Targets are paths of the host view: resolve its symlinks inside the view.
            let target = match target.strip_prefix(new_root) {
                Ok(rel) if !rel.as_os_str().is_empty() => {
                    resolve_in(new_root, &Path::new("/").join(rel))
                }
                _ => target.clone(),
            };
            let target = &target;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(source), target, None::<&str>, flags, None::<&str>)
                .map_err(merr("bind", target))
        }
        Op::MaskDir { target } => mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0000,size=4k"),
        )
        .map_err(merr("mask", target)),
        Op::MaskFile { target } => mount(
            Some("/dev/null"),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(merr("mask file", target)),
        Op::ReadOnly { target } => make_read_only(target),
        Op::ExposeBinary { dir } => expose_binary(dir),
    }
}

fn expose_binary(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        // The host has no such directory; nothing to shadow, and we must not create one on
        // the host's filesystem.
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=64k"),
    )
    .map_err(merr("tmpfs for the binary", dir))?;
    let target = dir.join("vigil");
    std::fs::File::create(&target).map_err(Error::fs("create mount point", &target))?;
    // By path, not /proc/self/exe: that magic link resolves to the mount of the namespace we
    // left, and bind mounts must come from our own.
    let exe = std::fs::read_link("/proc/self/exe").map_err(Error::fs("read", "/proc/self/exe"))?;
    mount(
        Some(&exe),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(merr("bind the binary", &target))
}

/// `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`: every mount of the tree, in one call.
fn make_read_only(target: &Path) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Other(format!("path with NUL: {}", target.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path and `attr` a correctly sized mount_attr that
    // outlives the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let source = nix::Error::last();
        if source == nix::Error::ENOSYS {
            // Kernels before 5.12: one remount per mount of the tree.
            return remount_each_read_only(target);
        }
        return Err(Error::Mount {
            step: "mount_setattr read-only",
            path: target.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// The fallback of [`make_read_only`]: a read-only bind remount of every mount at or below
/// `target`, parents first, keeping each mount's nosuid/nodev/noexec flags (a user namespace
/// may not clear them, and we do not want to).
fn remount_each_read_only(target: &Path) -> Result<()> {
    let mi = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map_err(Error::fs("read", "/proc/thread-self/mountinfo"))?;
    for m in super::remount::mounts_under(&mi, target) {
        let st = nix::sys::statvfs::statvfs(&m).map_err(merr("statvfs", &m))?;
        let f = st.flags();
        use nix::sys::statvfs::FsFlags;
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                flags |= ms;
            }
        }
        mount(None::<&str>, &m, None::<&str>, flags, None::<&str>)
            .map_err(merr("remount read-only", &m))?;
    }
    Ok(())
}

/// pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
/// the new root (no directory for the old root needed, nothing of the host left reachable).
fn pivot(new_root: &Path) -> Result<()> {
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(new_root),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(merr("bind new root onto itself", new_root))?;
    nix::unistd::chdir(new_root).map_err(merr("chdir", new_root))?;
    nix::unistd::pivot_root(".", ".").map_err(merr("pivot_root", new_root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(merr("detach old root", Path::new("/")))?;
    nix::unistd::chdir("/").map_err(merr("chdir", Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_opts(point: &Path) -> Option<String> {
        let mi = std::fs::read_to_string("/proc/thread-self/mountinfo").ok()?;
        mi.lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (Path::new(f.get(4)?) == point).then(|| f.get(5).map(|s| s.to_string()))?
        })
    }

    /// The per-mount fallback, for real: in a thread of its own mount namespace (unshare
    /// affects only the calling thread, so the host and the other tests see nothing), a
    /// tmpfs with a nested tmpfs and a nosuid,nodev bind is made read-only mount by mount.
    #[test]
    fn fallback_remounts_every_mount_read_only_keeping_locked_flags() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts in a private namespace: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let top = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let res = std::thread::spawn(move || -> std::result::Result<(), String> {
            unshare_mount_ns().map_err(|e| e.to_string())?;
            let sub = top.join("sub");
            mount(
                Some("tmpfs"),
                &top,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=64k"),
            )
            .map_err(|e| format!("tmpfs: {e}"))?;
            std::fs::create_dir(&sub).map_err(|e| e.to_string())?;
            mount(
                Some("tmpfs"),
                &sub,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("size=64k"),
            )
            .map_err(|e| format!("nested tmpfs: {e}"))?;
            remount_each_read_only(&top).map_err(|e| e.to_string())?;
            for p in [&top, &sub] {
                let o = mount_opts(p).ok_or(format!("{} not mounted", p.display()))?;
                if !o.split(',').any(|x| x == "ro") {
                    return Err(format!("{} still {o}", p.display()));
                }
            }
            let sub_opts = mount_opts(&sub).unwrap_or_default();
            if !(sub_opts.contains("nosuid") && sub_opts.contains("nodev")) {
                return Err(format!("nested mount lost its flags: {sub_opts}"));
            }
            match std::fs::write(sub.join("f"), b"x") {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
                other => Err(format!("write in the read-only tree: {other:?}")),
            }
        })
        .join()
        .expect("test thread");
        res.unwrap();
        // Nothing leaked into our namespace: the directory is empty and writable here.
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
