//! The flow socket filter (run as root): real loopback TCP and UDP (IPv4 and IPv6) counted
//! per flow, a ring that wraps, a ring nobody drains (drops counted and reported).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use vigil_collector::ebpf::EbpfSource;
use vigil_collector::ebpf::records::{Direction, FlowSource};
use vigil_ipc_proto::BpfProgram;
use vigil_privhelper::bpf::BpfManager;

use common::*;

#[test]
fn socket_filter_counts_loopback_tcp_and_udp() {
    let _serial = flow_lock();
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .expect("attach socket filter");
    assert_eq!(att.ring_size, 1024 * 1024);
    let drainer = Drainer::start(EbpfSource::new(att.program, att.fd, att.ring_size).unwrap());

    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let l = TcpListener::bind(SocketAddr::new(lo, 0)).unwrap();
    let u = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    let (tcp_srv, udp_srv) = (l.local_addr().unwrap(), u.local_addr().unwrap());
    let server = serve(l, u);
    let (tcp_cli, udp_cli) = send_traffic(tcp_srv, udp_srv, lo);
    let (read, got) = server.join().unwrap();
    assert_eq!((read, got), (TCP_BYTES, UDP_COUNT));

    // IPv6 too: UDP over ::1 (Ethernet 14 + IPv6 40 + UDP 8 + payload).
    let lo6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let u6s = UdpSocket::bind(SocketAddr::new(lo6, 0)).unwrap();
    let u6c = UdpSocket::bind(SocketAddr::new(lo6, 0)).unwrap();
    let (u6s_addr, u6c_addr) = (u6s.local_addr().unwrap(), u6c.local_addr().unwrap());
    for _ in 0..20 {
        u6c.send_to(&[9u8; 300], u6s_addr).unwrap();
    }
    u6s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..20 {
        let mut b = [0u8; 512];
        assert_eq!(u6s.recv(&mut b).unwrap(), 300);
    }

    let mut src = drainer.finish();
    let ifi = 1; // lo
    let src_ = FlowSource::Socket;
    let udp6_eg = key(ifi, Direction::Egress, 17, u6c_addr, u6s_addr, src_);
    let tcp_eg = key(ifi, Direction::Egress, 6, tcp_cli, tcp_srv, src_);
    let tcp_in = key(ifi, Direction::Ingress, 6, tcp_cli, tcp_srv, src_);
    let udp_eg = key(ifi, Direction::Egress, 17, udp_cli, udp_srv, src_);
    let udp_in = key(ifi, Direction::Ingress, 17, udp_cli, udp_srv, src_);
    let udp6_in = key(ifi, Direction::Ingress, 17, u6c_addr, u6s_addr, src_);
    drain_until(&mut src, |s| {
        stats(s, &udp_in).1 >= UDP_COUNT && stats(s, &udp6_in).1 >= 20
    });
    // Loopback: every packet is counted once, arriving (the socket for every interface
    // ignores outgoing packets, and loopback has no transmit socket of its own).
    let (ib, ip) = stats(&src, &tcp_in);
    check_tcp("lo tcp client->server", ib, ip);
    assert_eq!(stats(&src, &tcp_eg), (0, 0), "no loopback egress records");
    assert_eq!(stats(&src, &udp_in), (UDP_COUNT * UDP_FRAME, UDP_COUNT));
    assert_eq!(stats(&src, &udp_eg), (0, 0));
    assert_eq!(
        stats(&src, &udp6_in),
        (20 * (14 + 40 + 8 + 300), 20),
        "udp over ::1"
    );
    assert_eq!(stats(&src, &udp6_eg), (0, 0));
    // The reverse TCP direction (ACKs, the one-byte answer) exists too.
    let back = key(ifi, Direction::Ingress, 6, tcp_srv, tcp_cli, src_);
    assert!(stats(&src, &back).1 > 0);
    assert_eq!(mgr.drops(BpfProgram::FlowsSocketFilter), Some(0));

    // Eviction turns them into metrics with the documented names and attributes.
    let recs = src.evict_flows(&[]);
    let has = |name: &str, v: i64| {
        recs.iter().any(|r| match r {
            vigil_ipc_proto::Record::Metrics { metrics, .. } => metrics.iter().any(|m| {
                m.name == name
                    && m.value == vigil_ipc_proto::MetricValue::I64(v)
                    && m.attributes.iter().any(|kv| {
                        kv.key == "source.port"
                            && kv.value
                                == vigil_ipc_proto::AttrValue::I64(i64::from(udp_cli.port()))
                    })
                    && m.attributes.iter().any(|kv| {
                        kv.key == "network.interface.name"
                            && kv.value == vigil_ipc_proto::AttrValue::Str("lo".into())
                    })
            }),
            _ => false,
        })
    };
    assert!(has("vigil.network.flow.packets", UDP_COUNT as i64));
    assert!(has(
        "vigil.network.flow.bytes",
        (UDP_COUNT * UDP_FRAME) as i64
    ));

    let ids = mgr.prog_ids();
    drop(src);
    drop(mgr);
    assert_detached(&ids);
}

/// More records than the 1 MiB flow ring holds (80-byte records with their headers straddle
/// its end), consumed through `EbpfSources` as the collector's loop does; counts stay exact,
/// eviction emits them.
#[test]
fn flow_ring_wraps_and_sources_service_evicts() {
    use vigil_collector::ebpf::EbpfSources;
    let _serial = flow_lock();
    const N: u64 = 40_000;
    const PAYLOAD: usize = 16;
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .unwrap();
    let src = EbpfSource::new(att.program, att.fd, att.ring_size).unwrap();
    let mut set = EbpfSources::new(vec![src], 100);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rx = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    let tx = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    rx.set_nonblocking(true).unwrap();
    let (to, from) = (rx.local_addr().unwrap(), tx.local_addr().unwrap());
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..N {
        tx.send_to(&[1u8; PAYLOAD], to).unwrap();
        while rx.recv(&mut buf).is_ok() {}
        if i % 500 == 0 {
            assert!(set.service(Instant::now(), &mut out, &[]).is_empty());
        }
    }
    let eg = key(1, Direction::Egress, 17, from, to, FlowSource::Socket);
    let inn = key(1, Direction::Ingress, 17, from, to, FlowSource::Socket);
    let frame = (14 + 20 + 8 + PAYLOAD) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        set.service(Instant::now(), &mut out, &[]);
        let s = &set.sources()[0];
        if stats(s, &inn).1 >= N {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", stats(s, &inn));
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = &set.sources()[0];
    // Loopback: once per packet, as received.
    assert_eq!(stats(s, &inn), (N * frame, N));
    assert_eq!(stats(s, &eg), (0, 0));
    assert!(s.stats.records >= N);
    assert!(
        s.stats.records * 80 > 1024 * 1024,
        "the ring wrapped at least once"
    );
    assert_eq!(s.stats.malformed, 0);
    assert_eq!(mgr.drops(BpfProgram::FlowsSocketFilter), Some(0));
    // Each eviction emits the flows active since the previous one (cumulative values): the
    // final count shows up exactly once (loopback: one direction, received), at the first
    // eviction after the last packet was counted (at the latest the one after this sleep).
    std::thread::sleep(Duration::from_millis(150));
    set.service(Instant::now(), &mut out, &[]);
    let port = vigil_ipc_proto::AttrValue::I64(i64::from(from.port()));
    let n = out
        .iter()
        .filter(|r| match r {
            vigil_ipc_proto::Record::Metrics { metrics, .. } => metrics.iter().any(|m| {
                m.name == "vigil.network.flow.packets"
                    && m.value == vigil_ipc_proto::MetricValue::I64(N as i64)
                    && m.attributes
                        .iter()
                        .any(|kv| kv.key == "source.port" && kv.value == port)
            }),
            _ => false,
        })
        .count();
    assert_eq!(n, 1, "final count once");
    let c = set.counters();
    assert!(c.iter().any(|(k, v)| k == "ebpf_flow_packets" && *v >= N));
    let ids = mgr.prog_ids();
    drop(set);
    drop(mgr);
    assert_detached(&ids);
}

/// A ring nobody drains fills up: the kernel counts what it could not write, and the next record
/// written carries that count to the unprivileged consumer.
#[test]
fn full_ring_drops_are_counted_and_reported_in_records() {
    let _serial = flow_lock();
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .unwrap();
    let mut src = EbpfSource::new(att.program, att.fd, att.ring_size).unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rx = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    let tx = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    rx.set_nonblocking(true).unwrap();
    let to = rx.local_addr().unwrap();
    let mut buf = [0u8; 64];
    // 1 MiB / 80-byte records (header included) ~ 13k records; 20k datagrams make 20k
    // records on lo (counted once, as received).
    for _ in 0..20_000 {
        tx.send_to(&[1u8; 8], to).unwrap();
        while rx.recv(&mut buf).is_ok() {}
    }
    let dropped = mgr.drops(BpfProgram::FlowsSocketFilter).unwrap();
    assert!(dropped > 0, "the undrained ring must have overflowed");
    let mut out = Vec::new();
    src.drain(&mut out, &[]).unwrap();
    // A full ring: every slot it has was written.
    assert!(src.stats.records >= 13_000, "{}", src.stats.records);
    // Room again: the next records carry the kernel's count.
    for _ in 0..10 {
        tx.send_to(&[1u8; 8], to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    src.drain(&mut out, &[]).unwrap();
    let now = mgr.drops(BpfProgram::FlowsSocketFilter).unwrap();
    assert!(
        src.stats.kernel_drops >= dropped && src.stats.kernel_drops <= now,
        "consumer saw {} drops, kernel counted {dropped}..{now}",
        src.stats.kernel_drops
    );
}
