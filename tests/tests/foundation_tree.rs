//! `vigil run` as root starts four processes whose kernel state is what the design says; once
//! the collector's start-up is over, no process but the supervisor holds a capability.

use std::time::Duration;

use vigil_ipc_proto::Role;
use vigil_tests::{Agent, cap, cap_bit, ns_of, proc_status};

const NOBODY: u32 = 65534;

#[test]
fn four_processes_with_the_designed_privileges() {
    let mut agent = Agent::start_default();
    let report = agent.wait_steady(Duration::from_secs(30));
    assert_eq!(report.processes.len(), 4, "{report:?}");
    let me = std::process::id();

    for p in &report.processes {
        let k = proc_status(p.pid).expect("child alive");
        // What `vigil status` reports is what the kernel says.
        assert_eq!(
            (p.cap_prm, p.cap_eff, p.cap_bnd, p.cap_amb, p.cap_inh),
            (k.cap_prm, k.cap_eff, k.cap_bnd, k.cap_amb, k.cap_inh),
            "{:?}",
            p.role
        );
        assert_eq!(p.uids, k.uids);
        assert_eq!(p.no_new_privs, k.no_new_privs);
        assert_eq!(p.seccomp, k.seccomp);

        match p.role {
            Role::Supervisor => {
                assert_eq!(p.pid, agent.pid());
                assert_eq!(k.uids[1], 0);
                assert!(!k.no_new_privs);
                // Once the view is built it keeps what restarting the children needs: their
                // ids and signals, CAP_SETPCAP for their bounding sets, and the privhelper's
                // start-up set of the default features (kmsg; BPF exec events and flows, from
                // tracepoints: no network capability).
                let restart = [cap::KILL, cap::SETGID, cap::SETUID, cap::SETPCAP];
                let privhelper_start = [cap::SYSLOG, cap::PERFMON, cap::BPF];
                let want = restart
                    .iter()
                    .chain(&privhelper_start)
                    .fold(0, |m, c| m | cap_bit(*c));
                assert_eq!(
                    (k.cap_eff, k.cap_prm, k.cap_bnd, k.cap_amb, k.cap_inh),
                    (want, want, want, 0, 0),
                    "supervisor keeps only the restart set"
                );
            }
            Role::Privhelper => {
                assert_eq!(k.uids, [NOBODY; 4], "privhelper runs as the agent user");
                // The default features (kmsg, BPF exec and flows) need privilege at start-up
                // only: after it nothing is left, the bounding set included.
                assert_eq!(
                    (k.cap_inh, k.cap_prm, k.cap_eff, k.cap_bnd, k.cap_amb),
                    (0, 0, 0, 0, 0),
                    "privhelper in steady state holds no capability"
                );
                assert!(k.no_new_privs);
                assert_eq!(k.seccomp, 2);
            }
            Role::Collector | Role::Shipper => {
                assert_eq!(k.uids, [NOBODY; 4], "{:?} runs as nobody", p.role);
                assert_eq!(k.gids[0], 65534);
                assert_eq!(
                    (k.cap_inh, k.cap_prm, k.cap_eff, k.cap_bnd, k.cap_amb),
                    (0, 0, 0, 0, 0),
                    "{:?} holds no capability",
                    p.role
                );
                assert!(k.no_new_privs);
                assert_eq!(k.seccomp, 2);
                assert!(
                    p.landlock.starts_with("enforced"),
                    "{:?} landlock: {}",
                    p.role,
                    p.landlock
                );
            }
            Role::StatusClient => panic!("status client in the tree"),
        }
        if p.role != Role::Supervisor {
            // glibc's per-thread cache is off in the privhelper alone (spawn.rs, malloc_tunables):
            // the environment it was started with says so.
            let env = std::fs::read(format!("/proc/{}/environ", p.pid)).expect("environ");
            let tunables: Vec<&[u8]> = env
                .split(|b| *b == 0)
                .filter(|v| v.starts_with(b"GLIBC_TUNABLES="))
                .collect();
            let want: &[&[u8]] = match p.role {
                Role::Privhelper => &[b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0"],
                _ => &[],
            };
            assert_eq!(tunables, want, "{:?}", p.role);
            // Children live in the supervisor's new mount namespace, not the host's.
            assert_ne!(ns_of(p.pid, "mnt"), ns_of(me, "mnt"), "{:?}", p.role);
            assert_eq!(ns_of(p.pid, "mnt"), ns_of(agent.pid(), "mnt"));
            assert_eq!(p.restarts, 0);
        }
    }
    assert!(report.virtual_root);
    assert_eq!(report.mount_mode, "read-only");
    let st = agent.stop();
    assert!(st.success(), "clean shutdown: {st}");
    for p in &report.processes {
        assert!(
            proc_status(p.pid).is_err(),
            "{:?} still alive after shutdown",
            p.role
        );
    }
}

/// The collector's view of the host: root read-only, boot/root/home pruned, runtime dir writable.
#[test]
fn read_only_view_with_pruned_dirs() {
    let mut agent = Agent::start_default();
    agent.wait_ready(Duration::from_secs(30));
    let pid = agent.role_pid(Role::Collector);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mut root_ro = None;
    let mut runtime_rw = false;
    let rt = std::fs::canonicalize(&agent.runtime_dir).unwrap();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (mnt, opts) = (f[4], f[5]);
        if mnt == "/" {
            root_ro = Some(opts.split(',').any(|o| o == "ro"));
        }
        if std::path::Path::new(mnt) == rt {
            runtime_rw = opts.split(',').any(|o| o == "rw");
        }
    }
    assert_eq!(
        root_ro,
        Some(true),
        "root of the view is read-only:\n{mountinfo}"
    );
    assert!(runtime_rw, "runtime dir is writable:\n{mountinfo}");
    // Pruned directories are empty in the view (host has content there).
    for d in ["root", "boot", "home"] {
        let host_has = std::fs::read_dir(format!("/{d}"))
            .map(|mut r| r.next().is_some())
            .unwrap_or(false);
        let view = std::fs::read_dir(format!("/proc/{pid}/root/{d}"))
            .map(|r| r.count())
            .unwrap_or(0);
        if host_has {
            assert_eq!(view, 0, "/{d} is pruned in the view");
        }
    }
    // Everything the test machine has in /etc is visible (read-only host view).
    assert!(std::path::Path::new(&format!("/proc/{pid}/root/etc/passwd")).exists());
}
