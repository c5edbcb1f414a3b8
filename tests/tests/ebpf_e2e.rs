//! Issue 5 end to end: the real agent — privhelper loads and attaches, the unprivileged
//! collector consumes the ring buffers it was passed — reports process exec/exit events and
//! network flow metrics on its JSON-lines output.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use vigil_testkit::netns::VethNetns;
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
    // The collector checked the flow maps the privhelper attached (logged by the collector).
    assert!(
        agent
            .stderr
            .wait_for(Duration::from_secs(20), |l| l
                .contains("eBPF flow table ready")
                && l.contains("FlowsTracepoint"))
            .is_some(),
        "no eBPF flow table: {}",
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
    // Flows are emitted on eviction (collector.flow_evict_ms, 1 s here). Loopback packets are
    // counted once, as received.
    let m = agent
        .wait_json(Duration::from_secs(40), |v| {
            v["type"] == "metric"
                && v["name"] == "vigil.network.flow.packets"
                && *attr(v, "source.port") == port
                && *attr(v, "network.io.direction") == "receive"
        })
        .unwrap_or_else(|| panic!("no flow metric: {}", agent.stderr.text()));
    assert_eq!(m["value"], 25);
    assert_eq!(*attr(&m, "network.transport"), "udp");
    assert_eq!(*attr(&m, "network.interface.name"), "lo");
    let b = agent
        .wait_json(Duration::from_secs(5), |v| {
            v["name"] == "vigil.network.flow.bytes"
                && *attr(v, "source.port") == port
                && *attr(v, "network.io.direction") == "receive"
        })
        .expect("bytes metric");
    assert!(
        !agent
            .json_lines()
            .iter()
            .any(|v| v["name"] == "vigil.network.flow.packets"
                && *attr(v, "source.port") == port
                && *attr(v, "network.io.direction") == "transmit"),
        "a loopback packet is not counted twice"
    );
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
    assert_eq!(
        ids.len(),
        5,
        "TCP state changes, exec, exit, flow tracepoints (received, transmitted): {ids:?}"
    );
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

#[test]
fn tc_flows_on_a_veth_from_the_real_agent() {
    let pid = std::process::id();
    let x = (pid % 250) as u8;
    let ns = VethNetns::addressed(
        format!("vigil-e2e-tc-{pid}"),
        format!("vge{}h", pid % 100_000),
        format!("vge{}n", pid % 100_000),
        Ipv4Addr::new(10, 200, x, 249),
        Ipv4Addr::new(10, 200, x, 250),
    );
    let (host_ip, ns_ip) = (ns.host_ip, ns.ns_ip);

    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[collector]\nflow_evict_ms = 1000\nflows_source = \"tc\"\nflow_interfaces = [\"{}\"]\n",
            ns.host_if
        ),
    )
    .unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "500", "--config"])
        .arg(cfg.path().to_str().unwrap())
        .start();
    agent.wait_ready(Duration::from_secs(30));
    assert!(
        agent
            .stderr
            .wait_for(Duration::from_secs(20), |l| l
                .contains("eBPF flow table ready")
                && l.contains("FlowsTc"))
            .is_some(),
        "no tc flow table: {}",
        agent.stderr.text()
    );

    // A receiver inside the namespace (setns is per thread for network namespaces).
    let (tx_addr, rx_addr) = std::sync::mpsc::channel();
    let server = ns.run_inside(move || {
        let r = UdpSocket::bind(SocketAddr::from((ns_ip, 0))).unwrap();
        tx_addr.send(r.local_addr().unwrap()).unwrap();
        r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        (0..30).all(|_| r.recv(&mut buf).is_ok())
    });
    let to = rx_addr.recv_timeout(Duration::from_secs(10)).unwrap();
    let tx = UdpSocket::bind(SocketAddr::from((host_ip, 0))).unwrap();
    let port = i64::from(tx.local_addr().unwrap().port());
    for _ in 0..30 {
        tx.send_to(&[5u8; 200], to).unwrap();
    }
    assert!(server.join().unwrap(), "datagrams arrived in the namespace");

    let m = agent
        .wait_json(Duration::from_secs(30), |v| {
            v["type"] == "metric"
                && v["name"] == "vigil.network.flow.packets"
                && *attr(v, "source.port") == port
                && *attr(v, "vigil.flow.source") == "tc"
        })
        .unwrap_or_else(|| panic!("no tc flow metric: {}", agent.stderr.text()));
    assert_eq!(m["value"], 30);
    assert_eq!(*attr(&m, "network.io.direction"), "transmit");
    assert_eq!(*attr(&m, "network.interface.name"), ns.host_if.as_str());
    assert_eq!(*attr(&m, "destination.address"), ns_ip.to_string());
    // tc egress knows the sending socket's cgroup: attributed to this test's cgroup.
    assert!(attr(&m, "process.linux.cgroup").is_string(), "{m}");
    let b = agent
        .wait_json(Duration::from_secs(5), |v| {
            v["name"] == "vigil.network.flow.bytes"
                && *attr(v, "source.port") == port
                && *attr(v, "vigil.flow.source") == "tc"
        })
        .expect("bytes metric");
    assert_eq!(b["value"], 30 * (14 + 20 + 8 + 200));
    agent.stop();
}
