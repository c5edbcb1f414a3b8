//! The tc flow programs and the flow tracepoints beside the socket filter (run as root): veth
//! traffic into a network namespace made here, counted the same by all three, tc and the
//! tracepoints knowing the sending cgroup, the tracepoints ignoring the other namespace's
//! devices.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use vigil_collector::ebpf::EbpfSource;
use vigil_collector::ebpf::flows::FlowKey;
use vigil_collector::ebpf::records::{Direction, FlowSource};
use vigil_ipc_proto::BpfProgram;
use vigil_privhelper::bpf::BpfManager;

use common::*;
use vigil_testkit::netns::VethNetns;

/// This process's cgroup v2 id: the inode of its cgroup directory.
fn own_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    std::fs::metadata(format!("{}{}", cgroup2_mount(), rel.trim_end_matches('/')))
        .unwrap()
        .ino()
}

/// The cgroup id the flow `k` was attributed to.
fn cgroup_of(src: &EbpfSource, k: &FlowKey) -> u64 {
    src.flows().get(k).map(|s| s.cgroup_id).unwrap_or(0)
}

/// A network namespace with a veth pair to the host, addressed 10.200.x.y/30 with x, y from the
/// pid and `tag` so parallel runs do not collide.
fn netns(tag: u8) -> VethNetns {
    let pid = std::process::id();
    let (x, y) = ((pid % 250) as u8, (tag % 60) * 4);
    VethNetns::addressed(
        format!("vigil-ebpf-{pid}-{tag}"),
        format!("vgh{}{tag}", pid % 100_000),
        format!("vgn{}{tag}", pid % 100_000),
        Ipv4Addr::new(10, 200, x, y + 1),
        Ipv4Addr::new(10, 200, x, y + 2),
    )
}

#[test]
fn every_flow_source_counts_veth_traffic_into_a_netns() {
    let _serial = flow_lock();
    let ns = netns(1);
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &[&ns.host_if]);
    let sock = mgr.attach(BpfProgram::FlowsSocketFilter, &cfg).unwrap();
    let tc = mgr.attach(BpfProgram::FlowsTc, &cfg).expect("attach tc");
    let tp = mgr
        .attach(BpfProgram::FlowsTracepoint, &cfg)
        .expect("attach the tracepoints");
    assert_eq!(mgr.tc_interfaces(), vec![ns.host_if.clone()]);
    let sock = Drainer::start(EbpfSource::from_response(&sock.response, sock.fds).unwrap());
    let tc = Drainer::start(EbpfSource::from_response(&tc.response, tc.fds).unwrap());
    let tp = Drainer::start(EbpfSource::from_response(&tp.response, tp.fds).unwrap());
    // A loader running inside the namespace: its packet socket sees that namespace's
    // interfaces (what the privhelper does for a container after setns).
    let ns_if = ns.ns_if.clone();
    let (inner_mgr, inner, inner_ifi) = ns
        .run_inside(move || {
            let mut m = BpfManager::new();
            let a = m
                .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
                .unwrap();
            let c = std::ffi::CString::new(ns_if).unwrap();
            // SAFETY: if_nametoindex reads a NUL-terminated name.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            assert_ne!(idx, 0);
            (m, a, idx)
        })
        .join()
        .unwrap();
    let inner = Drainer::start(EbpfSource::from_response(&inner.response, inner.fds).unwrap());

    let ns_ip = IpAddr::V4(ns.ns_ip);
    let (tx, rx) = std::sync::mpsc::channel();
    let server = ns.run_inside(move || {
        let l = TcpListener::bind(SocketAddr::new(ns_ip, 0)).unwrap();
        let u = UdpSocket::bind(SocketAddr::new(ns_ip, 0)).unwrap();
        tx.send((l.local_addr().unwrap(), u.local_addr().unwrap()))
            .unwrap();
        serve(l, u).join().unwrap()
    });
    let (tcp_srv, udp_srv) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (tcp_cli, udp_cli) = send_traffic(tcp_srv, udp_srv, IpAddr::V4(ns.host_ip));
    assert_eq!(server.join().unwrap(), (TCP_BYTES, UDP_COUNT));

    let (mut sock, mut tc, mut tp) = (sock.finish(), tc.finish(), tp.finish());
    let ifi = ns.host_ifindex();
    for (src, kind) in [
        (&mut sock, FlowSource::Socket),
        (&mut tc, FlowSource::Tc),
        (&mut tp, FlowSource::Tracepoint),
    ] {
        let tcp_eg = key(ifi, Direction::Egress, 6, tcp_cli, tcp_srv, kind);
        let tcp_back = key(ifi, Direction::Ingress, 6, tcp_srv, tcp_cli, kind);
        let udp_eg = key(ifi, Direction::Egress, 17, udp_cli, udp_srv, kind);
        drain_until(src, |s| stats(s, &udp_eg).1 >= UDP_COUNT);
        let (b, p) = stats(src, &tcp_eg);
        check_tcp(&format!("{kind:?} veth tcp"), b, p);
        assert!(stats(src, &tcp_back).1 > 0, "{kind:?}: ACKs from the netns");
        assert_eq!(
            stats(src, &udp_eg),
            (UDP_COUNT * UDP_FRAME, UDP_COUNT),
            "{kind:?} udp"
        );
        assert_eq!(src.stats.malformed, 0);
    }
    // Inside the namespace the same packets arrive on the other end of the veth.
    let mut inner = inner.finish();
    let k = |proto, s, d| {
        key(
            inner_ifi,
            Direction::Ingress,
            proto,
            s,
            d,
            FlowSource::Socket,
        )
    };
    let (tcp_in, udp_in) = (k(6, tcp_cli, tcp_srv), k(17, udp_cli, udp_srv));
    drain_until(&mut inner, |s| stats(s, &udp_in).1 >= UDP_COUNT);
    assert_eq!(stats(&inner, &udp_in), (UDP_COUNT * UDP_FRAME, UDP_COUNT));
    let (b, p) = stats(&inner, &tcp_in);
    check_tcp("in-netns socket filter tcp", b, p);
    let inner_ids = inner_mgr.prog_ids();
    drop(inner);
    drop(inner_mgr);
    assert_detached(&inner_ids);

    // The host's tracepoints did not count the namespace's devices: the same packets arriving
    // on its end of the veth are not in their table.
    for (proto, s, d) in [(6, tcp_cli, tcp_srv), (17, udp_cli, udp_srv)] {
        let k = key(
            inner_ifi,
            Direction::Ingress,
            proto,
            s,
            d,
            FlowSource::Tracepoint,
        );
        assert_eq!(
            stats(&tp, &k),
            (0, 0),
            "netns device counted, proto {proto}"
        );
    }

    // tc egress and the transmit tracepoint know the sending socket's cgroup: this test
    // process's.
    for (src, kind) in [(&tc, FlowSource::Tc), (&tp, FlowSource::Tracepoint)] {
        let tcp_eg = key(ifi, Direction::Egress, 6, tcp_cli, tcp_srv, kind);
        assert_eq!(cgroup_of(src, &tcp_eg), own_cgroup_id(), "{kind:?} tcp");
        let udp_eg = key(ifi, Direction::Egress, 17, udp_cli, udp_srv, kind);
        assert_eq!(cgroup_of(src, &udp_eg), own_cgroup_id(), "{kind:?} udp");
    }
    // The socket filter cannot know it.
    let udp_eg_s = key(
        ifi,
        Direction::Egress,
        17,
        udp_cli,
        udp_srv,
        FlowSource::Socket,
    );
    assert_eq!(cgroup_of(&sock, &udp_eg_s), 0);

    // Both sources saw the very same packets on the host side of the veth.
    let tcp_eg_s = key(
        ifi,
        Direction::Egress,
        6,
        tcp_cli,
        tcp_srv,
        FlowSource::Socket,
    );
    let tcp_eg_t = key(ifi, Direction::Egress, 6, tcp_cli, tcp_srv, FlowSource::Tc);
    assert_eq!(stats(&sock, &tcp_eg_s), stats(&tc, &tcp_eg_t));
    let tcp_eg_p = key(
        ifi,
        Direction::Egress,
        6,
        tcp_cli,
        tcp_srv,
        FlowSource::Tracepoint,
    );
    assert_eq!(stats(&sock, &tcp_eg_s), stats(&tp, &tcp_eg_p));

    let ids = mgr.prog_ids();
    assert_eq!(
        ids.len(),
        6,
        "socket filter (received, transmitted), tc ingress, tc egress, tracepoints (rx, tx)"
    );
    drop(sock);
    drop(tc);
    drop(tp);
    drop(mgr);
    assert_detached(&ids);
    drop(ns);
}
