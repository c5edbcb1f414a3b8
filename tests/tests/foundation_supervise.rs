//! Issue 2: supervision (restart with a count, clean shutdown), the status socket against
//! hostile and unprivileged clients, and the `status` / `doctor` commands.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vigil_ipc_proto::frame::{HEADER_LEN, MAX_FRAME, encode};
use vigil_ipc_proto::{ClientRequest, ClientResponse, Hello, Role};
use vigil_tests::{Agent, connect, proc_status, vigil_bin};

fn wait_restarted(agent: &Agent, role: Role, old_pid: u32, old_restarts: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = agent.status()
            && r.processes.len() == 4
            && let Some(p) = r.processes.iter().find(|p| p.role == role)
            && p.pid != old_pid
            && p.pid != 0
            && p.restarts > old_restarts
            && r.processes
                .iter()
                .all(|p| p.role == Role::Supervisor || !p.landlock.is_empty())
        {
            return p.pid;
        }
        assert!(Instant::now() < deadline, "{role:?} not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A SIGKILLed child is restarted (with the peers whose channels it shared, see
/// supervisor/src/supervise.rs), counted, and sandboxed again; its last exit says SIGKILL.
#[test]
fn killed_children_are_restarted_and_counted() {
    let mut agent = Agent::start_default();
    agent.wait_ready(Duration::from_secs(30));
    for role in [Role::Collector, Role::Shipper, Role::Privhelper] {
        let before = agent.status().unwrap();
        let p = before.processes.iter().find(|p| p.role == role).unwrap();
        let (old, old_restarts) = (p.pid, p.restarts);
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        let new = wait_restarted(&agent, role, old, old_restarts);
        let k = proc_status(new).unwrap();
        assert!(k.no_new_privs && k.seccomp == 2, "{role:?} {k:?}");
        let r = agent.status().unwrap();
        let p = r.processes.iter().find(|p| p.role == role).unwrap();
        assert_eq!(p.restarts, old_restarts + 1, "{role:?} counted once");
        assert!(
            p.last_exit.as_deref().unwrap_or("").contains("SIGKILL"),
            "{role:?}: {:?}",
            p.last_exit
        );
    }
    // With the supervisor narrowed to its restart set, the new privhelper still serves the
    // collector's start-up (kmsg, BPF) and reaches its steady state.
    agent.wait_steady(Duration::from_secs(30));
    assert!(agent.stop().success());
}

#[test]
fn hostile_status_clients_get_errors_and_the_agent_lives_on() {
    let mut agent = Agent::start_default();
    agent.wait_ready(Duration::from_secs(30));
    let sock = agent.socket_path();

    let attempts: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        vec![],
        vec![0xff; 3],
        // Length prefix lying about the size.
        [&1000u32.to_le_bytes()[..], b"abc"].concat(),
        // Oversized datagram.
        vec![7u8; HEADER_LEN + MAX_FRAME + 64],
        // Wrong protocol version.
        encode(&Hello {
            magic: *b"VGIL",
            version: 999,
            role: Role::StatusClient,
        })
        .unwrap(),
        // Wrong magic.
        encode(&Hello {
            magic: *b"EVIL",
            version: vigil_ipc_proto::PROTOCOL_VERSION,
            role: Role::StatusClient,
        })
        .unwrap(),
    ];
    for bytes in &attempts {
        let mut ch = connect(&sock).expect("connect");
        ch.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = ch.send_raw(bytes);
        // Either an error answer or a closed connection; never a hang, never a status report.
        match ch.recv::<ClientResponse>() {
            Ok(ClientResponse::Status(_)) => panic!("answered a bad hello with a report"),
            Ok(ClientResponse::Error(_)) | Err(_) => {}
        }
    }
    // A good hello followed by an unknown request variant.
    let mut ch = connect(&sock).unwrap();
    ch.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ch.handshake(Role::StatusClient, Some(Role::Supervisor))
        .unwrap();
    let mut bad = encode(&ClientRequest::Status).unwrap();
    bad[HEADER_LEN] = 0x55;
    ch.send_raw(&bad).unwrap();
    assert!(!matches!(
        ch.recv::<ClientResponse>(),
        Ok(ClientResponse::Status(_))
    ));

    // Many clients that connect and vanish.
    for _ in 0..200 {
        drop(connect(&sock).unwrap());
    }
    // Still alive and answering.
    let r = agent.status().expect("status after abuse");
    assert_eq!(r.processes.len(), 4);
    assert!(r.processes.iter().all(|p| p.restarts == 0));
    assert!(agent.try_wait().is_none());
}

#[test]
fn status_socket_refuses_non_root() {
    let mut agent = Agent::start_default();
    agent.wait_ready(Duration::from_secs(30));
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(vigil_bin())
        .arg("status")
        .arg("--runtime-dir")
        .arg(&agent.runtime_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody must not read the status");
}

#[test]
fn status_and_doctor_commands() {
    let mut agent = Agent::start_default();
    let report = agent.wait_steady(Duration::from_secs(30));

    let out = Command::new(vigil_bin())
        .args(["status", "--runtime-dir"])
        .arg(&agent.runtime_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for p in &report.processes {
        assert!(text.contains(&p.pid.to_string()), "{text}");
        assert!(text.contains(p.role.as_str()), "{text}");
    }
    // In the steady state no child holds a capability, and the report says so by set.
    assert_eq!(text.matches("effective: -").count(), 3, "{text}");
    assert!(
        text.contains("phase: steady state (start-up requests refused; holds no capability)"),
        "the privhelper's phase:\n{text}"
    );

    let out = Command::new(vigil_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(&agent.runtime_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(v["processes"].as_array().unwrap().len(), 4, "{v}");

    let out = Command::new(vigil_bin()).arg("doctor").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "kmsg_events",
        "ebpf_exec",
        "netns_metrics",
        "perf_event_paranoid",
        "dmesg_restrict",
        "unprivileged_bpf_disabled",
        "BTF",
        "Landlock",
        "setcap",
        "AmbientCapabilities=",
        "CapabilityBoundingSet=",
        "securityContext",
    ] {
        assert!(text.contains(needle), "doctor lacks {needle}:\n{text}");
    }
    let setcap = Command::new(vigil_bin())
        .args(["doctor", "--emit", "setcap"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&setcap.stdout);
    assert!(line.trim_start().starts_with("setcap "), "{line}");
    assert!(
        line.contains("cap_bpf") || line.contains("cap_syslog"),
        "{line}"
    );
    assert!(agent.stop().success());
}

/// A hostile child (the collector, via the self-test hook) sends malformed frames on its
/// control channel: the supervisor counts them, keeps running, and restarts nobody.
#[test]
fn hostile_child_frames_are_counted_not_fatal() {
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .env("VIGIL_SELFTEST", "collector:control-garbage")
        .start();
    agent.wait_ready(Duration::from_secs(30));
    agent
        .stderr
        .wait_for(Duration::from_secs(10), |l| l.contains("malformed frames"))
        .expect("probe ran");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = agent.status().expect("supervisor alive");
        let bad = r
            .stats
            .iter()
            .find(|(role, _)| *role == Role::Supervisor)
            .and_then(|(_, s)| s.get("bad_control_frames"))
            .unwrap_or(0);
        if bad >= 3 {
            assert!(r.processes.iter().all(|p| p.restarts == 0), "{r:?}");
            break;
        }
        assert!(Instant::now() < deadline, "bad frames not counted: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
}

/// A role that dies the same way at every start (the shipper calling ptrace through the
/// self-test hook: a seccomp kill each time) is reported once as a failure that will not fix
/// itself, its repeats are not logged again, restarts back off, and `vigil status` keeps the
/// last cause.
#[test]
fn a_deterministic_crash_loop_is_reported_once_and_backs_off() {
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .env("VIGIL_SELFTEST", "shipper:sys:ptrace")
        .start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let restarts = loop {
        let r = agent.status().ok();
        let shipper = r.as_ref().and_then(|r| {
            r.processes
                .iter()
                .find(|p| p.role == Role::Shipper)
                .cloned()
        });
        if let Some(p) = shipper.filter(|p| p.restarts >= 4) {
            let last = p.last_exit.unwrap_or_default();
            assert!(last.contains("ptrace"), "last cause: {last}");
            break p.restarts;
        }
        assert!(Instant::now() < deadline, "{:?}", r);
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(1));
    let text = agent.stderr.text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("failed 3 times in a row the same way"), 1, "{text}");
    assert!(
        count("shipper killed by seccomp: syscall ptrace") <= 2,
        "{text}"
    );
    // Backoff: 0.5 + 1 + 2 s between the first four starts at least.
    let started: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("started role=shipper"))
        .collect();
    assert!(started.len() as u32 >= restarts, "{text}");
    assert!(agent.stop().success());
}

/// Two agents on one runtime dir: the second exits at once, naming the dir and the first one's
/// pid; the first runs on untouched.
#[test]
fn a_second_agent_on_the_same_runtime_dir_is_refused() {
    let mut first = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    first.wait_ready(Duration::from_secs(30));
    let mut second = Agent::builder()
        .runtime_dir(&first.runtime_dir)
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let st = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second agent exits by itself");
    assert!(!st.success());
    let err = second.stderr.text();
    assert!(
        err.contains(&format!("in use by another vigil (pid {})", first.pid()))
            && err.contains(&first.runtime_dir.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("started role"), "{err}");
    let r = first.status().expect("the first one still answers");
    assert!(r.processes.iter().all(|p| p.restarts == 0), "{r:?}");
    assert!(first.stop().success());
}

/// A runtime dir made by `mktemp -d` (0700, root) is made enterable for the agent user (its
/// journal is inside); a parent it cannot enter is one error naming the path and the fix.
#[test]
fn an_unreachable_runtime_dir_is_fixed_or_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::Builder::new()
        .prefix("vigil-e2e-rt-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = parent.path().join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .runtime_dir_as_is(&rt)
        .start();
    agent.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let r = agent.status().unwrap();
    assert!(r.processes.iter().all(|p| p.restarts == 0), "{r:?}");
    let mode = std::fs::metadata(&rt).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o711);
    assert!(agent.stop().success());

    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody"])
        .runtime_dir_as_is(&rt)
        .start();
    let st = agent.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!st.success());
    let err = agent.stderr.text();
    assert!(
        err.contains(&format!(
            "{}: the agent user nobody",
            parent.path().display()
        )) && err.contains("chmod o+x"),
        "{err}"
    );
    assert!(!err.contains("started role"), "{err}");
}
