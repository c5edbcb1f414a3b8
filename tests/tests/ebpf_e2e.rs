//! Issue 5 end to end: the real agent — privhelper loads and attaches, the unprivileged
//! collector consumes the ring buffers it was passed — reports process exec/exit events and
//! network flow metrics on its JSON-lines output.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use vigil_tests::Agent;

fn attr<'a>(v: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    &v["attributes"][k]
}

#[test]
fn exec_exit_events_and_loopback_flows_from_the_real_agent() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "[collector]\nflow_evict_ms = 1000\n").unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500", "--config"])
        .arg(cfg.path().to_str().unwrap())
        .start();
    agent.wait_ready(Duration::from_secs(30));
    // The collector maps the rings the privhelper attached (logged by the collector).
    assert!(
        agent
            .stderr
            .wait_for(Duration::from_secs(20), |l| l
                .contains("eBPF ring buffer mapped")
                && l.contains("FlowsSocketFilter"))
            .is_some(),
        "no eBPF ring mapped: {}",
        agent.stderr.text()
    );

    let mut c = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let pid = i64::from(c.id());
    assert_eq!(c.wait().unwrap().code(), Some(7));
    let exec = agent.wait_json(Duration::from_secs(30), |v| {
        v["type"] == "log" && v["event_name"] == "process.exec" && *attr(v, "process.pid") == pid
    });
    let exec = exec.unwrap_or_else(|| panic!("no process.exec for {pid}: {}", agent.stderr.text()));
    assert_eq!(*attr(&exec, "process.executable.name"), "sh");
    assert_eq!(
        *attr(&exec, "process.parent_pid"),
        i64::from(std::process::id())
    );
    let exit = agent
        .wait_json(Duration::from_secs(30), |v| {
            v["type"] == "log"
                && v["event_name"] == "process.exit"
                && *attr(v, "process.pid") == pid
        })
        .expect("process.exit");
    assert_eq!(*attr(&exit, "process.exit.code"), 7);

    let lo = Ipv4Addr::LOCALHOST;
    let rx = UdpSocket::bind(SocketAddr::from((lo, 0))).unwrap();
    let tx = UdpSocket::bind(SocketAddr::from((lo, 0))).unwrap();
    let port = i64::from(tx.local_addr().unwrap().port());
    for _ in 0..25 {
        tx.send_to(&[3u8; 200], rx.local_addr().unwrap()).unwrap();
    }
    // Flows are emitted on eviction (collector.flow_evict_ms, 1 s here).
    let m = agent
        .wait_json(Duration::from_secs(40), |v| {
            v["type"] == "metric"
                && v["name"] == "network.flow.packets"
                && *attr(v, "source.port") == port
                && *attr(v, "network.io.direction") == "transmit"
        })
        .unwrap_or_else(|| panic!("no flow metric: {}", agent.stderr.text()));
    assert_eq!(m["value"], 25);
    assert_eq!(*attr(&m, "network.transport"), "udp");
    assert_eq!(*attr(&m, "network.interface.name"), "lo");
    let b = agent
        .wait_json(Duration::from_secs(5), |v| {
            v["name"] == "network.flow.bytes"
                && *attr(v, "source.port") == port
                && *attr(v, "network.io.direction") == "transmit"
        })
        .expect("bytes metric");
    assert_eq!(b["value"], 25 * (14 + 20 + 8 + 200));

    // Nothing pinned: once the agent stops, the kernel has unloaded every program it attached.
    let ids: Vec<u32> = agent
        .stderr
        .lines()
        .iter()
        .filter(|l| l.contains("BPF program attached"))
        .filter_map(|l| {
            let rest = l.split("prog_ids=[").nth(1)?;
            Some(rest.split(']').next()?.to_string())
        })
        .flat_map(|s| {
            s.split(',')
                .filter_map(|i| i.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    assert_eq!(ids.len(), 3, "exec, exit, socket filter: {ids:?}");
    let loaded = |id: u32| {
        Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
            .map(|o| o.status.success())
            .unwrap()
    };
    assert!(ids.iter().all(|&i| loaded(i)));
    agent.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ids.iter().any(|&i| loaded(i)) {
        assert!(
            std::time::Instant::now() < deadline,
            "programs {ids:?} outlived the agent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
