//! Issue 3 end to end: the real agent's sandboxed collector (agent user, no capabilities,
//! seccomp, Landlock) reports host, process and kernel-event records on the JSON-lines output:
//! a child running as nobody carries the user name and the fd count the privhelper counted, and
//! a line written to /dev/kmsg comes out as a FilesystemIsReadOnly event (NPD's reason).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use vigil_tests::Agent;

#[test]
fn collector_reports_processes_host_and_kernel_events() {
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let mut child = std::process::Command::new("sleep")
        .arg("120")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = i64::from(child.id());

    let rss = agent.wait_json(Duration::from_secs(30), |v| {
        v["type"] == "metric"
            && v["name"] == "process.memory.usage"
            && v["resource"]["process.pid"] == pid
    });
    let rss =
        rss.unwrap_or_else(|| panic!("no process metrics for {pid}: {}", agent.stderr.text()));
    assert_eq!(rss["resource"]["process.owner"], "nobody");
    assert_eq!(rss["resource"]["process.executable.name"], "sleep");
    assert!(rss["resource"]["host.name"].is_string());
    let fds = agent.wait_json(Duration::from_secs(20), |v| {
        v["name"] == "process.unix.file_descriptor.count" && v["resource"]["process.pid"] == pid
    });
    assert!(
        fds.is_some_and(|v| v["value"].as_i64().unwrap_or(0) >= 3),
        "no fd count: {}",
        agent.stderr.text()
    );
    assert!(
        agent
            .wait_json(Duration::from_secs(10), |v| v["name"] == "system.cpu.time")
            .is_some()
    );
    assert!(
        agent
            .wait_json(Duration::from_secs(10), |v| v["name"]
                == "system.filesystem.usage")
            .is_some()
    );

    let dev = format!("vigile2e{}", std::process::id());
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap()
        .write_all(format!("<2>EXT4-fs ({dev}): Remounting filesystem read-only\n").as_bytes())
        .unwrap();
    let ev = agent.wait_json(Duration::from_secs(20), |v| {
        v["type"] == "log"
            && v["event_name"] == "FilesystemIsReadOnly"
            && v["attributes"]["system.device"] == dev.as_str()
    });
    assert!(ev.is_some(), "no kernel event: {}", agent.stderr.text());

    assert!(
        !agent.stderr.text().contains("killed by seccomp"),
        "{}",
        agent.stderr.text()
    );
    let _ = child.kill();
    let _ = child.wait();
}
