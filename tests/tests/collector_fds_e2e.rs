//! Open fd and socket counts of *another user's* process: fd counts need no capability at all
//! (the capless collector stats /proc/PID/fd, whose size is the count on Linux >= 6.2), socket
//! counts are opt-in and come from the privhelper (CAP_DAC_READ_SEARCH lists /proc/PID/fd,
//! CAP_SYS_PTRACE reads the links), absent without those capabilities while the rest stays.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigil_tests::{Agent, capsh_drop};

/// A process of uid/gid 4242 holding a socket pair (fds 3 and 4) besides stdio.
fn other_users_process() -> Child {
    let (a, b) = UnixStream::pair().unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(4242)
        .gid(4242);
    // Keep both socket ends open in the child (clear close-on-exec on them).
    let fds = [
        std::os::fd::AsRawFd::as_raw_fd(&a),
        std::os::fd::AsRawFd::as_raw_fd(&b),
    ];
    // SAFETY: only fcntl on descriptors we own, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in fds {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop((a, b));
    child
}

fn metric_for(agent: &Agent, pid: u32, name: &str) -> Option<serde_json::Value> {
    agent.wait_json(Duration::from_secs(20), |v| {
        v["name"] == name && v["resource"]["process.pid"] == pid
    })
}

fn value(v: &serde_json::Value) -> i64 {
    v["value"].as_i64().unwrap_or(-1)
}

/// (descriptors, sockets) of `pid` as root sees them: the socket pair and stdio, plus whatever
/// the test runner itself left open and inheritable.
fn listing(pid: u32) -> (i64, i64) {
    let mut n = 0;
    let mut s = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        n += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            s += 1;
        }
    }
    (n, s)
}

#[test]
fn fd_counts_of_another_users_process_need_no_capability() {
    let mut child = other_users_process();
    let pid = child.id();
    // Neither capability that lists or reads another user's /proc/PID/fd.
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_dac_read_search,cap_sys_ptrace"))
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    assert!(
        r.features
            .iter()
            .any(|f| f.name.as_str() == "process_fds" && f.enabled)
    );
    let fds = metric_for(&agent, pid, "process.unix.file_descriptor.count")
        .expect("fd count of uid 4242's process");
    // stdin, stdout, stderr and the socket pair (at least).
    let (n, _) = listing(pid);
    assert!(n >= 5);
    assert_eq!(value(&fds), n, "{fds}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !agent.json_lines().iter().any(|v| {
            v["name"] == "process.linux.socket.count" && v["resource"]["process.pid"] == pid
        }),
        "socket counts are opt-in"
    );
    // The privhelper was asked nothing for them (its counters come with the periodic stats).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ph = loop {
        let served = agent.status().unwrap().stats.iter().find_map(|(role, s)| {
            (*role == vigil_ipc_proto::Role::Privhelper)
                .then(|| s.get("served_proc_fd_stats"))
                .flatten()
        });
        if served.is_some() || std::time::Instant::now() > deadline {
            break served;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ph, Some(0));
    assert!(agent.stop().success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn socket_counts_through_the_privhelper_when_asked_for() {
    let mut child = other_users_process();
    let pid = child.id();
    let cfg = std::env::temp_dir().join(format!("vigil-fds-e2e-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[collector]\nprocess_sockets = true\n").unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500", "--config"])
        .arg(cfg.display().to_string())
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let socks = metric_for(&agent, pid, "process.linux.socket.count").expect("socket count");
    let (n, s) = listing(pid);
    assert!(s >= 2);
    assert_eq!(value(&socks), s, "{socks}");
    let fds = metric_for(&agent, pid, "process.unix.file_descriptor.count").expect("fd count");
    assert_eq!(value(&fds), n, "{fds}");
    assert!(agent.stop().success());

    // Without CAP_SYS_PTRACE the feature is off (one warning), fd counts stay.
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_sys_ptrace"))
        .args(["--user", "nobody", "--interval-ms", "500", "--config"])
        .arg(cfg.display().to_string())
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    assert!(
        r.features
            .iter()
            .any(|f| f.name.as_str() == "process_sockets" && !f.enabled)
    );
    metric_for(&agent, pid, "process.unix.file_descriptor.count").expect("fd counts stay");
    metric_for(&agent, pid, "process.memory.usage").expect("process metrics stay");
    assert!(
        !agent.json_lines().iter().any(|v| {
            v["name"] == "process.linux.socket.count" && v["resource"]["process.pid"] == pid
        }),
        "no socket counts without CAP_SYS_PTRACE"
    );
    assert!(agent.stop().success());
    let _ = std::fs::remove_file(&cfg);
    let _ = child.kill();
    let _ = child.wait();
}
