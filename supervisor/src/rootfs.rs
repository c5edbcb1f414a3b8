//! The trimmed virtual root. [`plan`] decides, from the mount mode and the host's top-level
//! entries, which mounts make the view (pure data, unit-tested); [`apply`] performs them in a
//! new mount namespace and pivots into the result (tested for real by the end-to-end tests,
//! which read a child's /proc/PID/mountinfo).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use vigil_ipc_proto::MountMode;

use crate::error::{Error, Result};

/// Top-level host entries the read-only view hides (SmartAgent prunes boot, initrd, root,
/// vmlinuz; we also hide users' homes and removable-media mount points).
pub const PRUNE_DIRS: &[&str] = &[
    "boot",
    "efi",
    "root",
    "home",
    "lost+found",
    "media",
    "mnt",
    "srv",
];
/// File name prefixes hidden at the top level (kernel images and initramfs).
pub const PRUNE_FILE_PREFIXES: &[&str] = &["vmlinuz", "initrd", "initramfs"];
/// What the minimal view contains from the host (the re-executed binary needs the loader
/// and libraries: /usr, /lib*; user resolution needs /etc).
pub const MINIMAL_ENTRIES: &[&str] = &["etc", "usr", "bin", "sbin", "lib", "lib32", "lib64", "run"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A fresh tmpfs (mode 0755) at `target`.
    Tmpfs {
        target: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        recursive: bool,
    },
    /// Hide a directory behind an empty read-only tmpfs.
    MaskDir {
        target: PathBuf,
    },
    /// Hide a file behind /dev/null.
    MaskFile {
        target: PathBuf,
    },
    /// Make the tree at `target` read-only (recursively).
    ReadOnly {
        target: PathBuf,
    },
    /// Make our own binary visible at `dir/vigil` inside the view (a small tmpfs over `dir`
    /// holding a bind of /proc/self/exe), so `vigil status` run by an exec probe — which
    /// joins the supervisor's mount namespace — finds the binary where the image has it.
    ExposeBinary {
        dir: PathBuf,
    },
}

/// Where the view shows the running binary (the image's and the packages' path).
pub const BINARY_DIR: &str = "usr/local/bin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    pub new_root: PathBuf,
    pub ops: Vec<Op>,
}

/// One entry of the host root, as the planner needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir(String),
    File(String),
    Symlink(String, PathBuf),
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::Dir(n) | Entry::File(n) | Entry::Symlink(n, _) => n,
        }
    }
}

/// List the top level of the host root.
pub fn host_entries(host_root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(host_root).map_err(Error::fs("list", host_root))? {
        let e = e.map_err(Error::fs("list", host_root))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().map_err(Error::fs("stat", e.path()))?;
        out.push(if ft.is_symlink() {
            Entry::Symlink(name, std::fs::read_link(e.path()).unwrap_or_default())
        } else if ft.is_dir() {
            Entry::Dir(name)
        } else {
            Entry::File(name)
        });
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(out)
}

fn join(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Decide the mounts of the view. `new_root` is where it is assembled; `runtime_dir` stays
/// writable; when `host_root` is not `/` the container's own /proc, /sys and /dev are used.
pub fn plan(
    mode: MountMode,
    host_root: &Path,
    runtime_dir: &Path,
    new_root: &Path,
    entries: &[Entry],
) -> RootPlan {
    let mut ops = Vec::new();
    let in_container = host_root != Path::new("/");
    match mode {
        MountMode::Full | MountMode::ReadOnly => {
            ops.push(Op::Bind {
                source: host_root.to_path_buf(),
                target: new_root.to_path_buf(),
                recursive: true,
            });
            if in_container {
                for d in ["proc", "sys", "dev"] {
                    ops.push(Op::Bind {
                        source: Path::new("/").join(d),
                        target: new_root.join(d),
                        recursive: true,
                    });
                }
            }
            ops.push(Op::ExposeBinary {
                dir: new_root.join(BINARY_DIR),
            });
            if mode == MountMode::ReadOnly {
                for e in entries {
                    match e {
                        Entry::Dir(n) if PRUNE_DIRS.contains(&n.as_str()) => {
                            ops.push(Op::MaskDir {
                                target: new_root.join(n),
                            })
                        }
                        Entry::File(n) if PRUNE_FILE_PREFIXES.iter().any(|p| n.starts_with(p)) => {
                            ops.push(Op::MaskFile {
                                target: new_root.join(n),
                            })
                        }
                        _ => {}
                    }
                }
                ops.push(Op::ReadOnly {
                    target: new_root.to_path_buf(),
                });
            }
        }
        MountMode::Minimal => {
            ops.push(Op::Tmpfs {
                target: new_root.to_path_buf(),
            });
            for e in entries {
                if !MINIMAL_ENTRIES.contains(&e.name()) {
                    continue;
                }
                match e {
                    Entry::Symlink(n, to) => ops.push(Op::Symlink {
                        target: to.clone(),
                        link: new_root.join(n),
                    }),
                    Entry::Dir(n) => {
                        ops.push(Op::Mkdir {
                            path: new_root.join(n),
                        });
                        ops.push(Op::Bind {
                            source: host_root.join(n),
                            target: new_root.join(n),
                            recursive: true,
                        });
                    }
                    Entry::File(_) => {}
                }
            }
            for d in ["proc", "sys", "dev"] {
                ops.push(Op::Mkdir {
                    path: new_root.join(d),
                });
                ops.push(Op::Bind {
                    source: Path::new("/").join(d),
                    target: new_root.join(d),
                    recursive: true,
                });
            }
            ops.push(Op::Mkdir {
                path: join(new_root, runtime_dir),
            });
            ops.push(Op::ExposeBinary {
                dir: new_root.join(BINARY_DIR),
            });
            ops.push(Op::ReadOnly {
                target: new_root.to_path_buf(),
            });
        }
    }
    // The runtime directory (journal, status socket) is the one writable place.
    ops.push(Op::Bind {
        source: runtime_dir.to_path_buf(),
        target: join(new_root, runtime_dir),
        recursive: false,
    });
    RootPlan {
        new_root: new_root.to_path_buf(),
        ops,
    }
}

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

/// Resolve `path` (absolute) as seen from inside `root`: symlinks are followed with absolute
/// targets taken relative to `root`, never to our own root (a host's `/var/run -> /run` must
/// land on the host's /run, not the container's).
pub fn resolve_in(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        let next = out.join(&name);
        match std::fs::read_link(&next) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                for c in target.components().rev() {
                    match c {
                        std::path::Component::Normal(n) => pending.push(n.to_os_string()),
                        std::path::Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ if name == ".." => {
                if out != root {
                    out.pop();
                }
            }
            _ => out = next,
        }
    }
    out
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
        return Err(Error::Mount {
            step: "mount_setattr read-only",
            path: target.to_path_buf(),
            source: nix::Error::last(),
        });
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

    fn host() -> Vec<Entry> {
        vec![
            Entry::Symlink("bin".into(), "usr/bin".into()),
            Entry::Dir("boot".into()),
            Entry::Dir("etc".into()),
            Entry::Dir("home".into()),
            Entry::File("initrd.img".into()),
            Entry::Symlink("lib".into(), "usr/lib".into()),
            Entry::Dir("opt".into()),
            Entry::Dir("root".into()),
            Entry::Dir("usr".into()),
            Entry::Dir("var".into()),
            Entry::File("vmlinuz".into()),
        ]
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn read_only_prunes_and_keeps_runtime_writable() {
        let plan = plan(
            MountMode::ReadOnly,
            &p("/"),
            &p("/run/vigil"),
            &p("/run/vigil/.root"),
            &host(),
        );
        let ops = &plan.ops;
        assert_eq!(
            ops[0],
            Op::Bind {
                source: p("/"),
                target: p("/run/vigil/.root"),
                recursive: true
            }
        );
        for d in ["boot", "home", "root"] {
            assert!(
                ops.contains(&Op::MaskDir {
                    target: p("/run/vigil/.root").join(d)
                }),
                "{d}"
            );
        }
        for f in ["vmlinuz", "initrd.img"] {
            assert!(
                ops.contains(&Op::MaskFile {
                    target: p("/run/vigil/.root").join(f)
                }),
                "{f}"
            );
        }
        assert!(!ops.iter().any(|o| matches!(o, Op::MaskDir { target } if target.ends_with("opt") || target.ends_with("etc"))));
        let ro = ops
            .iter()
            .position(|o| matches!(o, Op::ReadOnly { .. }))
            .unwrap();
        let rt = ops
            .iter()
            .position(|o| {
                o == &Op::Bind {
                    source: p("/run/vigil"),
                    target: p("/run/vigil/.root/run/vigil"),
                    recursive: false,
                }
            })
            .unwrap();
        assert!(
            rt > ro,
            "runtime dir is bound after the read-only pass, so it stays writable"
        );
        assert_eq!(rt, ops.len() - 1);
    }

    #[test]
    fn full_mode_prunes_nothing_and_stays_writable() {
        let plan = plan(
            MountMode::Full,
            &p("/"),
            &p("/run/vigil"),
            &p("/x"),
            &host(),
        );
        assert!(!plan.ops.iter().any(|o| matches!(
            o,
            Op::ReadOnly { .. } | Op::MaskDir { .. } | Op::MaskFile { .. }
        )));
    }

    #[test]
    fn minimal_mode_has_only_the_essentials() {
        let plan = plan(
            MountMode::Minimal,
            &p("/"),
            &p("/run/vigil"),
            &p("/x"),
            &host(),
        );
        assert_eq!(plan.ops[0], Op::Tmpfs { target: p("/x") });
        let bound: Vec<PathBuf> = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Bind { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        for want in [
            "/x/etc",
            "/x/usr",
            "/x/proc",
            "/x/sys",
            "/x/dev",
            "/x/run/vigil",
        ] {
            assert!(bound.contains(&p(want)), "{want} in {bound:?}");
        }
        for not in ["/x/var", "/x/opt", "/x/home", "/x/root", "/x/boot"] {
            assert!(!bound.contains(&p(not)), "{not}");
        }
        assert!(plan.ops.contains(&Op::Symlink {
            target: p("usr/bin"),
            link: p("/x/bin")
        }));
        assert!(plan.ops.iter().any(|o| matches!(o, Op::ReadOnly { .. })));
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("run/vigil")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("var/rel")).unwrap();
        assert_eq!(
            resolve_in(root, &p("/var/run/vigil")),
            root.join("run/vigil")
        );
        assert_eq!(
            resolve_in(root, &p("/var/rel/vigil")),
            root.join("run/vigil")
        );
        assert_eq!(resolve_in(root, &p("/../../etc")), root.join("etc"));
    }

    #[test]
    fn binary_is_exposed_before_the_read_only_pass() {
        for mode in [MountMode::ReadOnly, MountMode::Minimal, MountMode::Full] {
            let plan = plan(mode, &p("/"), &p("/run/vigil"), &p("/x"), &host());
            let e = plan.ops.iter().position(|o| {
                o == &Op::ExposeBinary {
                    dir: p("/x/usr/local/bin"),
                }
            });
            let ro = plan
                .ops
                .iter()
                .position(|o| matches!(o, Op::ReadOnly { .. }));
            assert!(e.is_some(), "{mode:?}");
            if let Some(ro) = ro {
                assert!(e.unwrap() < ro, "{mode:?}");
            }
        }
    }

    #[test]
    fn container_uses_its_own_proc_sys_dev() {
        let plan = plan(
            MountMode::ReadOnly,
            &p("/hostfs"),
            &p("/var/run/vigil"),
            &p("/var/run/vigil/.root"),
            &host(),
        );
        assert_eq!(
            plan.ops[0],
            Op::Bind {
                source: p("/hostfs"),
                target: p("/var/run/vigil/.root"),
                recursive: true
            }
        );
        for d in ["proc", "sys", "dev"] {
            assert!(plan.ops.contains(&Op::Bind {
                source: p("/").join(d),
                target: p("/var/run/vigil/.root").join(d),
                recursive: true
            }));
        }
    }
}
