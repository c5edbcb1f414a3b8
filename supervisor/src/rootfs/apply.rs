//! Performing a [`RootPlan`] in a new mount namespace and pivoting into the result. Every
//! syscall goes through [`Mounts`]: [`Linux`] in production (proven by the end-to-end tests,
//! which read a child's /proc/PID/mountinfo), a recording one in the unit tests below (the
//! order, and that a failure stops before the pivot).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::plan::{Op, RootPlan};
use super::resolve::resolve_in;
use crate::error::{Error, Result};

fn merr(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Mount { step, path, source }
}

/// The mount-namespace syscalls of the virtual root.
pub trait Mounts {
    /// Enter a new mount namespace whose mounts do not propagate back to the host.
    fn unshare(&mut self) -> Result<()>;
    /// mount(2) with a source path (a bind) or a file system type (`fstype`, e.g. tmpfs).
    fn mount(
        &mut self,
        step: &'static str,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn mkdir_all(&mut self, path: &Path) -> Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()>;
    /// An empty file to bind a file onto.
    fn create_file(&mut self, path: &Path) -> Result<()>;
    /// Every mount of the tree at `target` read-only.
    fn make_read_only(&mut self, target: &Path) -> Result<()>;
    /// pivot_root into `new_root` (already a mount point) and detach the old root.
    fn pivot_root(&mut self, new_root: &Path) -> Result<()>;
    fn is_dir(&self, path: &Path) -> bool;
    /// Path of our own binary in the namespace we left.
    fn self_exe(&self) -> Result<PathBuf>;
}

/// The running kernel.
pub struct Linux;

impl Mounts for Linux {
    fn unshare(&mut self) -> Result<()> {
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
    fn mount(
        &mut self,
        step: &'static str,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        // A file system type names its own source ("tmpfs"); a bind has a source path.
        match source {
            Some(src) => mount(Some(src), target, fstype, flags, data),
            None => mount(fstype, target, fstype, flags, data),
        }
        .map_err(merr(step, target))
    }
    fn mkdir_all(&mut self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(Error::fs("mkdir", path))
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<()> {
        std::os::unix::fs::symlink(target, link).map_err(Error::fs("symlink", link))
    }
    fn create_file(&mut self, path: &Path) -> Result<()> {
        std::fs::File::create(path)
            .map(drop)
            .map_err(Error::fs("create mount point", path))
    }
    fn make_read_only(&mut self, target: &Path) -> Result<()> {
        make_read_only(target)
    }
    fn pivot_root(&mut self, new_root: &Path) -> Result<()> {
        nix::unistd::chdir(new_root).map_err(merr("chdir", new_root))?;
        nix::unistd::pivot_root(".", ".").map_err(merr("pivot_root", new_root))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(merr("detach old root", Path::new("/")))?;
        nix::unistd::chdir("/").map_err(merr("chdir", Path::new("/")))
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn self_exe(&self) -> Result<PathBuf> {
        std::fs::read_link("/proc/self/exe").map_err(Error::fs("read", "/proc/self/exe"))
    }
}

/// Enter a new mount namespace whose mounts do not propagate back to the host.
pub fn unshare_mount_ns() -> Result<()> {
    Linux.unshare()
}

/// Perform the plan's mounts, then pivot into the new root.
pub fn apply(plan: &RootPlan) -> Result<()> {
    apply_with(&mut Linux, plan)
}

/// [`apply`] through the given [`Mounts`]: every op in plan order, the pivot only when all
/// succeeded (a half-built view is never entered).
pub fn apply_with(m: &mut impl Mounts, plan: &RootPlan) -> Result<()> {
    m.mkdir_all(&plan.new_root)?;
    for op in &plan.ops {
        apply_op(m, op, &plan.new_root)?;
    }
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root (no directory for the old root needed, nothing of the host left
    // reachable). pivot_root needs the new root to be a mount point.
    m.mount(
        "bind new root onto itself",
        Some(&plan.new_root),
        &plan.new_root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    m.pivot_root(&plan.new_root)
}

fn apply_op(m: &mut impl Mounts, op: &Op, new_root: &Path) -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match op {
        Op::Tmpfs { target } => m.mount(
            "tmpfs",
            None,
            target,
            Some("tmpfs"),
            nodev,
            Some("mode=0755,size=1m"),
        ),
        Op::Mkdir { path } => m.mkdir_all(path),
        Op::Symlink { target, link } => m.symlink(target, link),
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
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            m.mount("bind", Some(source), &target, None, flags, None)
        }
        Op::MaskDir { target } => m.mount(
            "mask",
            None,
            target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | nodev | MsFlags::MS_NOEXEC,
            Some("mode=0000,size=4k"),
        ),
        Op::MaskFile { target } => m.mount(
            "mask file",
            Some(Path::new("/dev/null")),
            target,
            None,
            MsFlags::MS_BIND,
            None,
        ),
        Op::ReadOnly { target } => m.make_read_only(target),
        Op::ExposeBinary { dir } => expose_binary(m, dir),
    }
}

fn expose_binary(m: &mut impl Mounts, dir: &Path) -> Result<()> {
    if !m.is_dir(dir) {
        // The host has no such directory; nothing to shadow, and we must not create one on
        // the host's filesystem.
        return Ok(());
    }
    m.mount(
        "tmpfs for the binary",
        None,
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=64k"),
    )?;
    let target = dir.join("vigil");
    m.create_file(&target)?;
    // By path, not /proc/self/exe: that magic link resolves to the mount of the namespace we
    // left, and bind mounts must come from our own.
    let exe = m.self_exe()?;
    m.mount(
        "bind the binary",
        Some(&exe),
        &target,
        None,
        MsFlags::MS_BIND,
        None,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each call as `step: target`, fails the first whose step is `fail`.
    #[derive(Default)]
    struct Recording {
        calls: Vec<String>,
        fail: Option<&'static str>,
    }

    impl Recording {
        fn call(&mut self, step: &'static str, path: &Path) -> Result<()> {
            self.calls.push(format!("{step}: {}", path.display()));
            if self.fail == Some(step) {
                return Err(Error::Mount {
                    step,
                    path: path.to_path_buf(),
                    source: nix::Error::EPERM,
                });
            }
            Ok(())
        }
    }

    impl Mounts for Recording {
        fn unshare(&mut self) -> Result<()> {
            self.call("unshare", Path::new("/"))
        }
        fn mount(
            &mut self,
            step: &'static str,
            _source: Option<&Path>,
            target: &Path,
            _fstype: Option<&str>,
            _flags: MsFlags,
            _data: Option<&str>,
        ) -> Result<()> {
            self.call(step, target)
        }
        fn mkdir_all(&mut self, path: &Path) -> Result<()> {
            self.call("mkdir", path)
        }
        fn symlink(&mut self, _target: &Path, link: &Path) -> Result<()> {
            self.call("symlink", link)
        }
        fn create_file(&mut self, path: &Path) -> Result<()> {
            self.call("create", path)
        }
        fn make_read_only(&mut self, target: &Path) -> Result<()> {
            self.call("read-only", target)
        }
        fn pivot_root(&mut self, new_root: &Path) -> Result<()> {
            self.call("pivot_root", new_root)
        }
        fn is_dir(&self, _path: &Path) -> bool {
            true
        }
        fn self_exe(&self) -> Result<PathBuf> {
            Ok(PathBuf::from("/usr/bin/vigil"))
        }
    }

    fn read_only_plan() -> RootPlan {
        let entries = [
            super::super::plan::Entry::Dir("boot".into()),
            super::super::plan::Entry::Dir("usr".into()),
            super::super::plan::Entry::File("vmlinuz".into()),
        ];
        super::super::plan(
            vigil_ipc_proto::MountMode::ReadOnly,
            Path::new("/"),
            Path::new("/run/vigil"),
            Path::new("/run/vigil/.root"),
            &entries,
        )
    }

    #[test]
    fn the_view_is_built_in_plan_order_then_entered() {
        let mut m = Recording::default();
        apply_with(&mut m, &read_only_plan()).unwrap();
        let steps: Vec<&str> = m
            .calls
            .iter()
            .map(|c| c.split(':').next().unwrap())
            .collect();
        assert_eq!(steps.first(), Some(&"mkdir"));
        let at = |s: &str| steps.iter().position(|x| *x == s).unwrap_or(usize::MAX);
        // Masks before the read-only pass (a read-only tree takes no new mount points), the
        // binary before it too, then the new root made a mount point and entered, last.
        assert!(
            at("mask") < at("read-only") && at("mask file") < at("read-only"),
            "{:#?}",
            m.calls
        );
        assert!(at("tmpfs for the binary") < at("read-only"), "{steps:?}");
        // The runtime directory is bound writable on top of the read-only tree.
        let runtime = m
            .calls
            .iter()
            .position(|c| c == "bind: /run/vigil/.root/run/vigil");
        assert!(runtime > Some(at("read-only")), "{:#?}", m.calls);
        assert_eq!(
            &m.calls[m.calls.len() - 2..],
            [
                "bind new root onto itself: /run/vigil/.root",
                "pivot_root: /run/vigil/.root"
            ]
        );
    }

    #[test]
    fn a_failed_mount_is_named_and_never_entered() {
        for fail in ["bind", "mask", "mask file", "read-only", "bind the binary"] {
            let mut m = Recording {
                fail: Some(fail),
                ..Recording::default()
            };
            let err = apply_with(&mut m, &read_only_plan()).unwrap_err();
            assert!(
                matches!(&err, Error::Mount { step, .. } if *step == fail),
                "{fail}: {err}"
            );
            assert!(
                !m.calls.iter().any(|c| c.starts_with("pivot_root:")),
                "{fail}: pivoted into a half-built view: {:?}",
                m.calls
            );
        }
    }

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
