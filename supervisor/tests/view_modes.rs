//! The virtual root of each mount mode, applied for real (root): start `vigil run`, read the
//! collector's /proc/PID/mountinfo and look through /proc/PID/root. Read-only mode is covered
//! by the workspace's end-to-end tests (tests/foundation_tree.rs); here: minimal and full.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    runtime: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM to the supervisor we started, by its pid; it stops its children.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mode: &str) -> Agent {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds mount namespaces: run it as root (CI does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--mount-mode", mode, "--json-lines", ""])
        .arg("--runtime-dir")
        .arg(&runtime)
        .env_remove("VIGIL_ENFORCE_SYS_CAPS")
        .env_remove("VIGIL_NO_REMOUNT_ROOT")
        .env_remove("VIGIL_HOST_ROOT")
        .env_remove("VIGIL_MOUNT_MODE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vigil run");
    Agent {
        child,
        runtime,
        _dir: dir,
    }
}

/// The pid of the supervisor's child running `role`.
fn role_pid(agent: &Agent, role: &str) -> u32 {
    let sup = agent.child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").expect("procfs").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let ppid_ok = vigil_testkit::proc_status_line(pid, "PPid").as_ref() == Some(&sup);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if ppid_ok && args.get(2) == Some(&role.as_bytes()) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {role} child of the supervisor {sup} within 30 s");
}

/// (mount point, options) of each mount the process sees.
fn mounts(pid: u32) -> Vec<(String, Vec<String>)> {
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    mi.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.get(4)?.to_string(),
                f.get(5)?.split(',').map(String::from).collect(),
            ))
        })
        .collect()
}

fn opts_of<'a>(m: &'a [(String, Vec<String>)], point: &str) -> Option<&'a Vec<String>> {
    m.iter().rev().find(|(p, _)| p == point).map(|(_, o)| o)
}

#[test]
fn minimal_view_has_only_the_essentials_read_only() {
    let agent = start("minimal");
    let pid = role_pid(&agent, "collector");
    let m = mounts(pid);
    let dump = format!("{m:#?}");
    let root = opts_of(&m, "/").expect("a root mount");
    assert!(root.iter().any(|o| o == "ro"), "root read-only: {dump}");
    for d in ["usr", "etc", "proc", "sys", "dev"] {
        assert!(
            opts_of(&m, &format!("/{d}")).is_some()
                || Path::new(&format!("/proc/{pid}/root/{d}")).exists(),
            "/{d} in the minimal view: {dump}"
        );
    }
    // Everything else of the host is simply absent.
    for d in ["home", "root", "boot", "var", "opt"] {
        if Path::new("/").join(d).exists() {
            assert!(
                !Path::new(&format!("/proc/{pid}/root/{d}")).exists(),
                "/{d} must not be in the minimal view"
            );
        }
    }
    let rt = agent.runtime.to_string_lossy().into_owned();
    let rt_opts = opts_of(&m, &rt).expect("runtime dir mounted in the view");
    assert!(rt_opts.iter().any(|o| o == "rw"), "runtime dir rw: {dump}");
    // Every other mount of the view is read-only (proc/sys/dev keep their own flags only
    // when they are the runtime dir's).
    for (p, o) in &m {
        if p != &rt && !p.starts_with("/proc") && !p.starts_with("/sys") && !p.starts_with("/dev") {
            assert!(o.iter().any(|x| x == "ro"), "{p} read-only: {dump}");
        }
    }
}

#[test]
fn full_view_is_the_host_root_writable_and_unpruned() {
    let agent = start("full");
    let pid = role_pid(&agent, "collector");
    let m = mounts(pid);
    let dump = format!("{m:#?}");
    let root = opts_of(&m, "/").expect("a root mount");
    assert!(root.iter().any(|o| o == "rw"), "root read-write: {dump}");
    // Nothing pruned: a host directory that has content shows the same content.
    for d in ["etc", "usr", "root", "home", "boot"] {
        let host = Path::new("/").join(d);
        let Ok(mut it) = std::fs::read_dir(&host) else {
            continue;
        };
        if let Some(Ok(first)) = it.next() {
            let inside = PathBuf::from(format!("/proc/{pid}/root/{d}")).join(first.file_name());
            assert!(
                inside.symlink_metadata().is_ok(),
                "{} visible in the full view",
                inside.display()
            );
        }
    }
    let rt = agent.runtime.to_string_lossy().into_owned();
    assert!(opts_of(&m, &rt).is_some(), "runtime dir mounted: {dump}");
}
