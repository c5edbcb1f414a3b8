//! The launch of deploy/systemd/vigil.service, for real, without a systemd PID 1: the
//! harness's `systemd_unit_wrapper` reads the unit and starts the agent the way systemd would
//! start its ExecStart — as `User=vigil`/`Group=vigil` with exactly the unit's
//! `AmbientCapabilities=` and `CapabilityBoundingSet=`, its `SecureBits=`, NoNewPrivs, its
//! `SystemCallFilter=` (EPERM), `RestrictAddressFamilies=` and `MemoryDenyWriteExecute=` as a
//! seccomp filter — with the
//! unit's ExecStart flags (own runtime dir). What the unit leaves to systemd's mount
//! namespace (ProtectSystem=, InaccessiblePaths=, PrivateDevices=) is not emulated.
//!
//! Checked from /proc and from `vigil status --json` run by root: every default feature on,
//! user_switch satisfied, virtual_root off (no_remount_root), no user or mount namespace of
//! the agent's own, the privhelper exactly the unit's four capabilities, collector and
//! shipper none, NoNewPrivs, seccomp 2 and the `vigil` uid everywhere, no warning at all;
//! JSON lines with metrics, an exec event and a kmsg event come out. One capability fewer
//! turns off exactly its feature, with one warning.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vigil_ipc_proto::{Role, StatusReport};
use vigil_tests::{
    Agent, DEFAULT_ON, cap, cap_bit, ns_of, proc_status, systemd_unit_wrapper, unit_directive,
    vigil_bin,
};

fn unit_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/systemd/vigil.service");
    std::fs::read_to_string(p).unwrap()
}

/// uid and gid of a user in the host's /etc/passwd (the unit's `vigil`; ./dev.sh and
/// deploy/systemd/vigil.sysusers.conf create it).
fn passwd_ids(name: &str) -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/passwd").unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .unwrap_or_else(|| {
            panic!(
                "user {name} missing: useradd --system --no-create-home {name} (./dev.sh test does)"
            )
        })
}

fn cap_number(name: &str) -> u32 {
    match name {
        "CAP_NET_RAW" => cap::NET_RAW,
        "CAP_SYSLOG" => cap::SYSLOG,
        "CAP_PERFMON" => cap::PERFMON,
        "CAP_BPF" => cap::BPF,
        "CAP_NET_ADMIN" => cap::NET_ADMIN,
        "CAP_DAC_READ_SEARCH" => cap::DAC_READ_SEARCH,
        "CAP_SYS_PTRACE" => cap::SYS_PTRACE,
        "CAP_SYS_ADMIN" => cap::SYS_ADMIN,
        other => panic!("{other} in the unit: add it to this test"),
    }
}

/// The unit's ambient set as a /proc mask, minus `without`.
fn unit_mask(unit: &str, key: &str, without: &[&str]) -> u64 {
    let v = unit_directive(unit, key);
    assert_eq!(v.len(), 1, "{key}: {v:?}");
    v[0].split_whitespace()
        .filter(|c| !without.contains(c))
        .map(|c| cap_bit(cap_number(c)))
        .sum()
}

/// The unit's ExecStart arguments after `run`, without `--runtime-dir DIR` (the harness
/// passes its own).
fn exec_flags(unit: &str) -> Vec<String> {
    let exec = unit_directive(unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(&words[..2], ["/usr/local/bin/vigil", "run"], "{words:?}");
    let mut out = Vec::new();
    let mut it = words[2..].iter();
    while let Some(w) = it.next() {
        if *w == "--runtime-dir" {
            assert_eq!(it.next(), Some(&"/run/vigil"));
            continue;
        }
        out.push(w.to_string());
    }
    assert!(out.contains(&"--no-remount-root".to_string()), "{out:?}");
    out
}

struct Launched {
    agent: Agent,
    uid: u32,
    gid: u32,
    _runtime: tempfile::TempDir,
    _files: tempfile::TempDir,
}

/// Start the agent as the unit would, minus the capabilities in `without`.
fn launch(without: &[&str]) -> Launched {
    let unit = unit_text();
    let (uid, gid) = passwd_ids("vigil");
    // RuntimeDirectory=vigil: systemd creates it owned by the unit's user.
    let runtime = tempfile::Builder::new()
        .prefix("vigil-unit-")
        .tempdir_in("/tmp")
        .unwrap();
    nix::unistd::chown(
        runtime.path(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    let files = tempfile::Builder::new()
        .prefix("vigil-unit-filter-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        files.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = Agent::builder()
        .wrapper(systemd_unit_wrapper(&unit, without, files.path()))
        .runtime_dir(runtime.path())
        .args(exec_flags(&unit))
        .args(["--interval-ms", "500"])
        .start();
    Launched {
        agent,
        uid,
        gid,
        _runtime: runtime,
        _files: files,
    }
}

/// `vigil status --json`, run by root against the supervisor running as `vigil`.
fn status_json(dir: &Path) -> StatusReport {
    let out = Command::new(vigil_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vigil status --json as root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn feature<'a>(r: &'a StatusReport, name: &str) -> &'a vigil_ipc_proto::FeatureState {
    r.features
        .iter()
        .find(|f| f.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not in {:?}", r.features))
}

/// What holds whatever the capability set: the agent user everywhere, no namespace of its
/// own, NoNewPrivs and a seccomp filter on every process (the supervisor's is the unit's),
/// the children's sandbox as `vigil status --json` and /proc both show it.
fn check_processes(l: &Launched, r: &StatusReport, unit_caps: u64, privhelper_caps: u64) {
    assert!(!r.virtual_root);
    assert_eq!(r.user, "vigil");
    assert_eq!(r.processes.len(), 4);
    let me = std::process::id();
    for p in &r.processes {
        let k = proc_status(p.pid).unwrap();
        let role = p.role;
        assert_eq!(k.uids, [l.uid; 4], "{role:?}");
        assert_eq!(k.gids, [l.gid; 4], "{role:?}");
        assert!(k.no_new_privs, "{role:?}");
        assert_eq!(k.seccomp, 2, "{role:?}: seccomp mode");
        assert_eq!(
            ns_of(p.pid, "user"),
            ns_of(me, "user"),
            "{role:?}: no userns"
        );
        assert_eq!(ns_of(p.pid, "mnt"), ns_of(me, "mnt"), "{role:?}: no view");
        // The report is what the kernel says.
        assert_eq!(
            (
                p.uids, p.cap_eff, p.cap_prm, p.cap_bnd, p.cap_amb, p.cap_inh
            ),
            (
                k.uids, k.cap_eff, k.cap_prm, k.cap_bnd, k.cap_amb, k.cap_inh
            ),
            "{role:?}"
        );
        assert_eq!(p.no_new_privs, k.no_new_privs);
        // No CAP_SETPCAP: every bounding set is the unit's (inert, see the supervisor's note).
        assert_eq!(k.cap_bnd, unit_caps, "{role:?}: bounding set");
        let (eff, amb) = match role {
            Role::Supervisor => (unit_caps, unit_caps),
            Role::Privhelper => (privhelper_caps, 0),
            _ => (0, 0),
        };
        assert_eq!((k.cap_eff, k.cap_prm), (eff, eff), "{role:?}: {k:?}");
        assert_eq!((k.cap_amb, k.cap_inh), (amb, amb), "{role:?}: {k:?}");
        if matches!(role, Role::Collector | Role::Shipper) {
            assert!(
                p.landlock.starts_with("enforced"),
                "{role:?}: {}",
                p.landlock
            );
        }
    }
    // The status socket is the agent user's, 0600; root got in (SO_PEERCRED uid 0).
    let sock = std::fs::metadata(l.agent.socket_path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((sock.uid(), sock.mode() & 0o777), (l.uid, 0o600));
}

#[test]
fn unit_launch_runs_every_default_feature_as_the_agent_user() {
    let unit = unit_text();
    let mut l = launch(&[]);
    l.agent.wait_steady(Duration::from_secs(30));
    let r = status_json(&l.agent.runtime_dir);
    let caps = unit_mask(&unit, "AmbientCapabilities", &[]);
    assert_eq!(caps, unit_mask(&unit, "CapabilityBoundingSet", &[]));
    assert_eq!(
        caps,
        cap_bit(cap::BPF) | cap_bit(cap::PERFMON) | cap_bit(cap::SYSLOG)
    );
    // After start-up the privhelper holds nothing: the default features need privilege to
    // open and attach only.
    check_processes(&l, &r, caps, 0);

    for f in DEFAULT_ON {
        assert!(feature(&r, f).enabled, "{f} off: {:?}", feature(&r, f));
    }
    let us = feature(&r, "user_switch");
    assert!(
        us.enabled && us.reason == "already the agent user",
        "{us:?}"
    );
    let vr = feature(&r, "virtual_root");
    assert!(
        !vr.enabled && vr.reason.contains("no_remount_root"),
        "{vr:?}"
    );
    for f in ["process_sockets", "netns_metrics_setns", "ebpf_flows_tc"] {
        assert_eq!(feature(&r, f).reason, "disabled in config", "{f}");
    }

    // Data: metrics, an exec event (eBPF under the unit's syscall filter), a kernel event
    // from /dev/kmsg (opened by the privhelper with the unit's CAP_SYSLOG).
    assert!(
        l.agent
            .wait_json(Duration::from_secs(20), |v| v["type"] == "metric")
            .is_some(),
        "no metric: {}",
        l.agent.stderr.text()
    );
    let mut c = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let pid = i64::from(c.id());
    c.wait().unwrap();
    assert!(
        l.agent
            .wait_json(Duration::from_secs(30), |v| {
                v["event_name"] == "process.exec" && v["attributes"]["process.pid"] == pid
            })
            .is_some(),
        "no process.exec for {pid}: {}",
        l.agent.stderr.text()
    );
    let dev = format!("vdu{}", std::process::id());
    vigil_tests::kmsg(&format!(
        "<2>EXT4-fs ({dev}): Remounting filesystem read-only"
    ));
    assert!(
        l.agent
            .wait_json(Duration::from_secs(20), |v| {
                v["event_name"] == "FilesystemIsReadOnly"
                    && v["attributes"]["system.device"] == dev.as_str()
            })
            .is_some(),
        "no FilesystemIsReadOnly event for {dev}: {}",
        l.agent.stderr.text()
    );

    // Nothing to warn about in the unit's launch; the inert bounding set and the service
    // manager's view are said once, as information.
    let err = l.agent.stderr.text();
    let warnings: Vec<&str> = err.lines().filter(|x| x.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "warnings: {warnings:#?}\n{err}");
    for info in [
        "no CAP_SETPCAP: the children keep the inherited bounding set (CAP_SYSLOG, CAP_PERFMON, CAP_BPF)",
        "no_remount_root set: the host view is the one the service manager built",
    ] {
        assert_eq!(
            err.lines()
                .filter(|x| x.contains(" INFO ") && x.contains(info))
                .count(),
            1,
            "{info}\n{err}"
        );
    }
    assert!(l.agent.stop().success());
}

#[test]
fn one_capability_fewer_turns_off_exactly_its_feature() {
    let unit = unit_text();
    // CAP_SYSLOG: /dev/kmsg, which kernel.dmesg_restrict=1 (as on the test machines) guards.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
            .unwrap()
            .trim(),
        "1"
    );
    let mut l = launch(&["CAP_SYSLOG"]);
    l.agent.wait_steady(Duration::from_secs(30));
    let r = status_json(&l.agent.runtime_dir);
    let caps = unit_mask(&unit, "AmbientCapabilities", &["CAP_SYSLOG"]);
    check_processes(&l, &r, caps, 0);
    let kmsg = feature(&r, "kmsg_events");
    assert!(
        !kmsg.enabled && kmsg.reason == "missing CAP_SYSLOG",
        "{kmsg:?}"
    );
    for f in DEFAULT_ON.iter().filter(|f| **f != "kmsg_events") {
        assert!(feature(&r, f).enabled, "{f} off: {:?}", feature(&r, f));
    }
    assert!(feature(&r, "user_switch").enabled);
    let err = l.agent.stderr.text();
    let warnings: Vec<&str> = err.lines().filter(|x| x.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].ends_with(
            "required system capabilities not present: CAP_SYSLOG; these features are off: kmsg_events (needs CAP_SYSLOG)"
        ),
        "{}",
        warnings[0]
    );
    assert!(l.agent.stop().success());
}
