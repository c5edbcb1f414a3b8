//! Issue 5, privileges: while the real agent traces, the collector holds no capability and every
//! BPF program belonging to the agent is held by the privhelper alone; a burst of short-lived
//! processes gives an exec and an exit event for each; without CAP_BPF or CAP_PERFMON exactly
//! the dependent features turn off and the agent keeps running.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use vigil_ipc_proto::{Role, StatusReport};
use vigil_tests::{Agent, capsh_drop, proc_status};

fn on(r: &StatusReport, name: &str) -> bool {
    r.features
        .iter()
        .any(|f| f.name.as_str() == name && f.enabled)
}

fn pid_of(r: &StatusReport, role: Role) -> u32 {
    r.processes.iter().find(|p| p.role == role).unwrap().pid
}

#[test]
fn burst_of_short_processes_and_who_holds_the_programs() {
    let mut agent = Agent::start_default();
    let r = agent.wait_ready(Duration::from_secs(30));
    agent
        .stderr
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("eBPF ring buffer mapped") && l.contains("ExecExit")
        })
        .expect("exec/exit ring mapped");

    let mut pids = HashSet::new();
    for _ in 0..20 {
        let mut c = Command::new("/bin/true").spawn().unwrap();
        pids.insert(i64::from(c.id()));
        c.wait().unwrap();
    }
    for kind in ["process.exec", "process.exit"] {
        let mut missing = pids.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !missing.is_empty() && std::time::Instant::now() < deadline {
            for v in agent.json_lines() {
                if v["event_name"] == kind
                    && let Some(p) = v["attributes"]["process.pid"].as_i64()
                {
                    missing.remove(&p);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(missing.is_empty(), "no {kind} for {missing:?}");
    }

    // During tracing: the collector still holds nothing.
    let k = proc_status(pid_of(&r, Role::Collector)).unwrap();
    assert_eq!((k.cap_eff, k.cap_prm, k.cap_bnd, k.cap_amb), (0, 0, 0, 0));

    // Every BPF program or link descriptor of the agent is held by the privhelper only
    // (/proc/PID/fdinfo shows `prog_id:` for program and link descriptors), but the task
    // iterator's link, which the collector holds to create its dumps (issue 15): one
    // `link_type: iter`, nothing else.
    let privhelper = pid_of(&r, Role::Privhelper);
    let collector = pid_of(&r, Role::Collector);
    let mut held_by = Vec::new();
    let mut iter_links = 0;
    for p in &r.processes {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fdinfo", p.pid)) else {
            continue;
        };
        for e in dir.flatten() {
            let info = std::fs::read_to_string(e.path()).unwrap_or_default();
            if info.lines().any(|l| l.starts_with("prog_id:")) {
                let iter_link = info
                    .lines()
                    .any(|l| l.split_whitespace().eq(["link_type:", "iter"]));
                if p.pid == collector && iter_link {
                    iter_links += 1;
                    continue;
                }
                held_by.push(p.pid);
            }
        }
    }
    assert_eq!(
        iter_links, 1,
        "the collector holds the task iterator's link"
    );
    assert!(
        held_by.len() >= 2,
        "the privhelper holds the exec/exit programs: {held_by:?}"
    );
    assert!(
        held_by.iter().all(|p| *p == privhelper),
        "BPF programs held by {held_by:?}, privhelper is {privhelper}"
    );
    assert!(agent.stop().success());
}

fn run_without(cap: &str, config: &str) -> (Agent, StatusReport) {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config).unwrap();
    let mut agent = Agent::builder()
        .wrapper(capsh_drop(cap))
        .args(["--user", "nobody", "--interval-ms", "500", "--config"])
        .arg(cfg.path().to_str().unwrap())
        .start();
    let r = agent.wait_ready(Duration::from_secs(30));
    (agent, r)
}

#[test]
fn without_cap_bpf_no_ebpf_feature_and_the_agent_runs() {
    let (mut agent, r) = run_without("cap_bpf", "");
    assert!(!on(&r, "ebpf_exec") && !on(&r, "ebpf_flows_tracepoint"));
    assert!(on(&r, "process_metrics") && on(&r, "kmsg_events"));
    agent
        .wait_json(Duration::from_secs(20), |v| v["name"] == "process.cpu.time")
        .expect("process metrics keep coming");
    assert!(agent.try_wait().is_none());
    assert!(agent.stop().success());
}

#[test]
fn without_cap_perfmon_no_exec_events_but_socket_flows() {
    // The default flow tracepoints need PERFMON too; the socket filter does not.
    let (mut agent, r) = run_without("cap_perfmon", "[collector]\nflows_source = \"socket\"\n");
    assert!(!on(&r, "ebpf_exec"));
    assert!(
        on(&r, "ebpf_flows_socket"),
        "socket filter needs BPF + NET_RAW only"
    );
    agent
        .stderr
        .wait_for(Duration::from_secs(20), |l| {
            l.contains("eBPF flow table ready") && l.contains("FlowsSocketFilter")
        })
        .expect("socket filter attached");
    assert!(agent.try_wait().is_none());
    assert!(agent.stop().success());
}
