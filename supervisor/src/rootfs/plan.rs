//! The plan of the trimmed virtual root: from the mount mode and the host's top-level
//! entries, which mounts make the view. Pure data, unit-tested without root; applied by
//! [`super::apply`].

use std::path::{Path, PathBuf};

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
/// The top-level kernel image and initramfs links distributions install (Debian, Ubuntu), for
/// a service manager that matches no prefixes: `vigil doctor --emit systemd`'s
/// `InaccessiblePaths=` (the unit lets systemd build the read-only view).
pub const PRUNE_FILES_KNOWN: &[&str] = &["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"];
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
    fn known_kernel_files_are_what_the_prefixes_prune() {
        for f in PRUNE_FILES_KNOWN {
            assert!(
                PRUNE_FILE_PREFIXES.iter().any(|p| f.starts_with(p)),
                "{f} would not be pruned by the view itself"
            );
        }
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
