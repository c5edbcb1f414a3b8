//! Issue 3: open fd and socket counts of *another user's* process come from the privhelper
//! (CAP_DAC_READ_SEARCH lists its /proc/PID/fd, CAP_SYS_PTRACE reads the links), and are
//! absent without those capabilities while the other process metrics stay.

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

#[test]
fn fd_and_socket_counts_of_another_users_process() {
    let mut child = other_users_process();
    let pid = child.id();
    let mut agent = Agent::start_default();
    agent.wait_ready(Duration::from_secs(30));
    let fds = metric_for(&agent, pid, "process.open_file_descriptor.count")
        .expect("fd count of uid 4242's process");
    assert!(fds["value"].as_f64().unwrap() >= 5.0, "{fds}");
    let socks = metric_for(&agent, pid, "process.linux.socket.count").expect("socket count");
    assert!(socks["value"].as_f64().unwrap() >= 2.0, "{socks}");
    assert!(agent.stop().success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn without_dac_read_search_and_ptrace_no_fd_counts_but_process_metrics() {
    let mut child = other_users_process();
    let pid = child.id();
    let mut agent = Agent::builder()
        .wrapper(capsh_drop("cap_dac_read_search,cap_sys_ptrace"))
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    assert!(
        r.features
            .iter()
            .any(|f| f.name == "process_fds" && !f.enabled)
    );
    metric_for(&agent, pid, "process.memory.usage").expect("process metrics stay");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !agent.json_lines().iter().any(|v| {
            v["name"] == "process.open_file_descriptor.count" && v["resource"]["process.pid"] == pid
        }),
        "no fd counts without the capabilities"
    );
    assert!(agent.stop().success());
    let _ = child.kill();
    let _ = child.wait();
}
