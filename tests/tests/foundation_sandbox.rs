//! Issue 2: from inside the collector's and shipper's sandbox, writes to the host view,
//! /dev/kmsg, bpf(), ptrace, setns, mount and module loading fail; a syscall outside the policy
//! kills the role and the supervisor reports which role and which syscall.
//!
//! The probes run in the real agent's real children (see child/src/selftest.rs).

use std::time::Duration;

use vigil_ipc_proto::Role;
use vigil_tests::Agent;

fn selftest_line(agent: &Agent, role: &str, probe: &str) -> String {
    let needle = format!("selftest {role} {probe}:");
    let line = agent
        .stderr
        .wait_for(Duration::from_secs(30), |l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` line:\n{}", agent.stderr.text()));
    line[line.find(&needle).unwrap() + needle.len()..]
        .trim()
        .to_string()
}

/// `path=RESULT` pairs of a write-host probe.
fn results(s: &str) -> Vec<(String, String)> {
    s.split_whitespace()
        .filter(|kv| kv.starts_with('/'))
        .filter_map(|kv| kv.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn writes_and_kmsg_are_refused_inside_the_sandbox() {
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .env(
            "VIGIL_SELFTEST",
            "collector:write-host,collector:kmsg,shipper:write-host,shipper:kmsg",
        )
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let journal = format!("{}/journal", agent.runtime_dir.display());

    for role in ["collector", "shipper"] {
        let res = results(&selftest_line(&agent, role, "write-host"));
        assert_eq!(res.len(), 6, "{res:?}");
        for (path, outcome) in &res {
            if role == "shipper" && path == &journal {
                assert_eq!(outcome, "ok", "the shipper may write its journal");
            } else {
                assert!(
                    outcome.starts_with("EROFS") || outcome.starts_with("EACCES"),
                    "{role} writing {path}: {outcome}"
                );
            }
        }
        let kmsg = selftest_line(&agent, role, "kmsg");
        assert!(
            kmsg.starts_with("EACCES") || kmsg.starts_with("EPERM"),
            "{role} opening /dev/kmsg: {kmsg}"
        );
    }
    // Probes that fail politely do not kill anyone.
    let report = agent.status().unwrap();
    assert!(report.processes.iter().all(|p| p.restarts == 0));
}

fn forbidden_syscall_kills_and_is_reported(syscall: &str) {
    let agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500"])
        .env(
            "VIGIL_SELFTEST",
            format!("collector:sys:{syscall},shipper:sys:{syscall}"),
        )
        .start();
    for role in ["collector", "shipper"] {
        let line = agent
            .stderr
            .wait_for(Duration::from_secs(30), |l| {
                l.contains(role) && l.contains("seccomp") && l.contains(syscall)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no seccomp report for {role}/{syscall}:\n{}",
                    agent.stderr.text()
                )
            });
        assert!(!line.contains("NOT KILLED"), "{line}");
    }
    assert!(
        !agent.stderr.text().contains("NOT KILLED"),
        "a forbidden syscall was let through:\n{}",
        agent.stderr.text()
    );
    // The supervisor keeps running and restarts the killed roles.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = agent.status().expect("supervisor alive");
        let restarted = |role| {
            r.processes
                .iter()
                .any(|p| p.role == role && p.restarts >= 1)
        };
        if restarted(Role::Collector) && restarted(Role::Shipper) {
            let last = r
                .processes
                .iter()
                .find(|p| p.role == Role::Collector)
                .and_then(|p| p.last_exit.clone())
                .unwrap_or_default();
            assert!(
                last.contains("SIGSYS") || last.contains(syscall),
                "last exit of the collector says why: {last}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "roles not restarted: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bpf_is_killed() {
    forbidden_syscall_kills_and_is_reported("bpf");
}

#[test]
fn ptrace_is_killed() {
    forbidden_syscall_kills_and_is_reported("ptrace");
}

#[test]
fn setns_is_killed() {
    forbidden_syscall_kills_and_is_reported("setns");
}

#[test]
fn mount_is_killed() {
    forbidden_syscall_kills_and_is_reported("mount");
}

#[test]
fn module_loading_is_killed() {
    forbidden_syscall_kills_and_is_reported("finit_module");
}
