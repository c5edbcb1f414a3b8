//! Issue 2: a reduced bounding set gives the expected feature table and fallbacks;
//! VIGIL_ENFORCE_SYS_CAPS=1 fails at once naming what is missing.

use std::time::Duration;

use vigil_ipc_proto::{Role, StatusReport};
use vigil_tests::{Agent, cap, cap_bit, capsh_drop, ns_of, proc_status};

fn feature(r: &StatusReport, name: &str) -> bool {
    r.features
        .iter()
        .find(|f| f.name.as_str() == name)
        .unwrap_or_else(|| panic!("feature {name} not in the table: {:?}", r.features))
        .enabled
}

fn pid_of(r: &StatusReport, role: Role) -> u32 {
    r.processes.iter().find(|p| p.role == role).unwrap().pid
}

#[test]
fn without_syslog_only_kernel_events_turn_off() {
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_syslog"))
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    if std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
        .unwrap()
        .trim()
        == "1"
    {
        assert!(!feature(&r, "kmsg_events"));
        let warn = agent
            .stderr
            .wait_for(Duration::from_secs(5), |l| l.contains("kmsg_events"))
            .expect("one warning names the feature");
        assert!(warn.contains("CAP_SYSLOG"), "{warn}");
    }
    for f in [
        "process_metrics",
        "host_metrics",
        "virtual_root",
        "user_switch",
    ] {
        assert!(feature(&r, f), "{f} stays on");
    }
    let ph = proc_status(pid_of(&r, Role::Privhelper)).unwrap();
    assert_eq!(ph.cap_eff & cap_bit(cap::SYSLOG), 0);
    assert!(agent.stop().success());
}

#[test]
fn without_sys_admin_no_remount_and_keep_going() {
    // A host directory any uid-0 process may write (1777), outside the runtime dir.
    let outside = tempfile::Builder::new()
        .prefix("vigil-caps-outside-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        outside.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let probe = format!("write:{}", outside.path().display());
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_sys_admin"))
        .args(["--user", "nobody", "--interval-ms", "500"])
        .env("VIGIL_SELFTEST", format!("supervisor:{probe}"))
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    assert!(!r.virtual_root);
    assert!(!feature(&r, "virtual_root"));
    // No view of its own: the uid-0 supervisor confines its writes to its runtime dir
    // (Landlock), so the host directory is refused although DAC would let root write it.
    let sup = r
        .processes
        .iter()
        .find(|p| p.role == Role::Supervisor)
        .unwrap();
    assert!(
        sup.landlock.starts_with("writes: ")
            && sup.landlock.contains(agent.runtime_dir.to_str().unwrap()),
        "{sup:?}"
    );
    assert!(proc_status(sup.pid).unwrap().no_new_privs);
    let line = agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| {
            l.contains(&format!("selftest supervisor {probe}:"))
        })
        .expect("the supervisor's write probe ran");
    assert!(line.trim_end().ends_with("EACCES"), "{line}");
    // Namespace counters come from /proc/PID/net/dev (netns_source = "proc"): no SYS_ADMIN.
    assert!(feature(&r, "netns_metrics"));
    assert!(feature(&r, "process_metrics"));
    agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| l.contains("NO_REMOUNT_ROOT"))
        .expect("says it does not remount");
    // The one missing-capabilities warning names exactly the view.
    let warn = agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("required system capabilities not present")
        })
        .expect("one warning");
    assert!(
        warn.contains("virtual_root (needs CAP_SYS_ADMIN)") && !warn.contains("netns"),
        "{warn}"
    );
    // No new mount namespace; the children are still fully sandboxed otherwise.
    let col = pid_of(&r, Role::Collector);
    assert_eq!(ns_of(col, "mnt"), ns_of(std::process::id(), "mnt"));
    let k = proc_status(col).unwrap();
    assert_eq!((k.cap_eff, k.cap_prm, k.cap_bnd), (0, 0, 0));
    assert!(k.no_new_privs);
    assert_eq!(k.seccomp, 2);
    assert!(agent.stop().success());
}

#[test]
fn without_setuid_children_stay_root_with_a_warning() {
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_setuid,cap_setgid"))
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    assert!(!feature(&r, "user_switch"));
    agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("root") && (l.contains("CAP_SETUID") || l.contains("user_switch"))
        })
        .expect("warns that the children run as root");
    for role in [Role::Collector, Role::Shipper] {
        let k = proc_status(pid_of(&r, role)).unwrap();
        assert_eq!(k.uids[0], 0, "{role:?} stays root");
        assert_eq!(
            (k.cap_eff, k.cap_prm, k.cap_bnd),
            (0, 0, 0),
            "{role:?} but with no caps"
        );
        assert!(k.no_new_privs);
    }
    assert!(agent.stop().success());
}

#[test]
fn non_root_mode_false_keeps_children_root() {
    let mut agent = Agent::builder()
        .args([
            "--user",
            "nobody",
            "--non-root-mode",
            "false",
            "--interval-ms",
            "500",
        ])
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    let k = proc_status(pid_of(&r, Role::Shipper)).unwrap();
    assert_eq!(k.uids[0], 0);
    assert_eq!(k.cap_eff, 0);
    assert!(agent.stop().success());
}

#[test]
fn enforce_sys_caps_fails_naming_the_missing_ones() {
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_syslog,cap_bpf"))
        .args(["--user", "nobody"])
        .env("VIGIL_ENFORCE_SYS_CAPS", "1")
        .start();
    let st = agent
        .wait_exit(Duration::from_secs(20))
        .expect("exits at once");
    assert!(!st.success());
    let err = agent.stderr.text();
    assert!(err.contains("CAP_BPF"), "{err}");
    assert!(
        err.contains("ebpf_exec") && err.contains("ebpf_flows_tracepoint"),
        "{err}"
    );
    if std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
        .unwrap()
        .trim()
        == "1"
    {
        assert!(err.contains("CAP_SYSLOG"), "{err}");
    }
    assert!(
        !std::path::Path::new(&agent.runtime_dir.join("vigil.sock")).exists(),
        "nothing was started"
    );
}

#[test]
fn unknown_user_is_a_clear_error() {
    let mut agent = Agent::builder()
        .args(["--user", "no-such-user-vigil"])
        .start();
    let st = agent
        .wait_exit(Duration::from_secs(20))
        .expect("exits at once");
    assert!(!st.success());
    let err = agent.stderr.text();
    assert!(err.contains("no-such-user-vigil"), "{err}");
    assert!(err.contains("passwd"), "says where it looked: {err}");
}
