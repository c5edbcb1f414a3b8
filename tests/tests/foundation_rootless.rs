//! Issue 2: started by an ordinary user, vigil still runs and sandboxes itself as far as the
//! kernel allows (user namespace for the virtual root, NoNewPrivs, seccomp, Landlock), and the
//! feature table says what is off.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use std::process::Command;
use std::time::Instant;

use vigil_ipc_proto::{Role, StatusReport};
use vigil_tests::{Agent, ns_of, proc_status, vigil_bin};

const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

/// `vigil status --json` run as the invoking user: in rootless mode the socket answers only
/// the user that started the agent (root outside its user namespace is an unmapped stranger).
fn status_as_nobody(dir: &std::path::Path) -> Option<StatusReport> {
    let out = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .arg(vigil_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(dir)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn rootless_start_sandboxes_itself() {
    let dir = tempfile::Builder::new()
        .prefix("vigil-rootless-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let mut agent = Agent::builder()
        .wrapper(AS_NOBODY)
        .runtime_dir(dir.path())
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        if let Some(r) = status_as_nobody(dir.path())
            && r.processes.len() == 4
            && r.processes.iter().all(|p| p.pid != 0)
            && r.processes
                .iter()
                .all(|p| p.role == Role::Supervisor || !p.landlock.is_empty())
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not ready:\n{}",
            agent.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Root outside the agent's user namespace is refused.
    assert!(agent.status().is_err());
    let on = |n: &str| r.features.iter().any(|f| f.name.as_str() == n && f.enabled);
    for f in [
        "kmsg_events",
        "ebpf_exec",
        "ebpf_flows_tracepoint",
        "ebpf_tcp_changes",
    ] {
        assert!(!on(f), "{f} is off without privileges");
    }
    // Capless features: fd counts (st_size of /proc/PID/fd) and namespace counters
    // (/proc/PID/net/dev) need no privilege at all.
    for f in [
        "process_metrics",
        "host_metrics",
        "process_fds",
        "netns_metrics",
    ] {
        assert!(on(f), "{f} needs no privilege");
    }
    // Started by nobody with `--user nobody`: nobody to switch to.
    let us = r
        .features
        .iter()
        .find(|f| f.name.as_str() == "user_switch")
        .unwrap();
    assert!(
        us.enabled && us.reason == "already the agent user",
        "{us:?}"
    );
    // The warning names what is off and why.
    agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("required system capabilities not present") && l.contains("kmsg_events")
        })
        .expect("one warning with features and capabilities");
    let warned = agent.stderr.text();
    assert!(
        !warned.contains("user_switch (needs") && !warned.contains("virtual_root (needs"),
        "nothing of the supervisor's own is missing when it is the agent user:\n{warned}"
    );

    let sup = proc_status(agent.pid()).unwrap();
    assert_eq!(sup.uids, [65534; 4]);
    for p in r.processes.iter().filter(|p| p.role != Role::Supervisor) {
        let k = proc_status(p.pid).unwrap();
        assert_eq!(k.uids, [65534; 4], "{:?} runs as the invoking user", p.role);
        assert_eq!(
            (k.cap_eff, k.cap_prm, k.cap_bnd, k.cap_amb),
            (0, 0, 0, 0),
            "{:?}",
            p.role
        );
        assert!(k.no_new_privs);
        assert_eq!(k.seccomp, 2);
        if p.role != Role::Privhelper {
            assert!(
                p.landlock.starts_with("enforced"),
                "{:?}: {}",
                p.role,
                p.landlock
            );
        }
        if r.virtual_root {
            // The view was built in a user namespace of our own.
            assert_ne!(ns_of(p.pid, "user"), ns_of(std::process::id(), "user"));
            assert_ne!(ns_of(p.pid, "mnt"), ns_of(std::process::id(), "mnt"));
        }
    }
    assert!(
        r.virtual_root,
        "unprivileged user namespaces work on the test machines: the view must be built"
    );
    assert!(agent.stop().success());
}
