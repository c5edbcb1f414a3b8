//! The flow socket filter and the flow tracepoints (run as root): real loopback TCP and UDP
//! (IPv4 and IPv6) counted per flow in the kernel, exactly, by both; many packets read by the
//! collector's loop; a full flow table (evictions and the packets they lose counted, nothing
//! else lost); maps that user space cannot write.

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
    counts_loopback_tcp_and_udp(BpfProgram::FlowsSocketFilter, FlowSource::Socket);
}

#[test]
fn tracepoints_count_loopback_tcp_and_udp() {
    counts_loopback_tcp_and_udp(BpfProgram::FlowsTracepoint, FlowSource::Tracepoint);
}

/// Loopback traffic as `program` counts it: every packet once, as received, with its
/// link-layer header (what the packet socket sees), in flows of `src_`.
fn counts_loopback_tcp_and_udp(program: BpfProgram, src_: FlowSource) {
    let _serial = flow_lock();
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program, &init(&ALL, &[]))
        .expect("attach the flow program");
    assert_eq!(
        att.response,
        vigil_ipc_proto::PrivResponse::BpfFlowMap {
            program,
            max_entries: 16384
        }
    );
    assert_eq!(att.fds.len(), 2);
    let drainer = Drainer::start(EbpfSource::from_response(&att.response, att.fds).unwrap());

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
    // ignores outgoing packets, and loopback has no transmit socket of its own; the transmit
    // tracepoint's program skips loopback).
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
    let t = mgr.flow_totals(program).unwrap();
    assert_eq!(t.not_stored, 0);
    assert!(t.packets >= UDP_COUNT + 20);
    assert_eq!(src.flows().evicted_flows, 0);
    assert_eq!(src.flows().lost_packets, 0);

    // Eviction turns them into metrics with the documented names and attributes.
    let recs = src.evict_flows(&[]);
    let source_name = match src_ {
        FlowSource::Tracepoint => "tracepoint",
        _ => "socket",
    };
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
                    && m.attributes.iter().any(|kv| {
                        kv.key == "vigil.flow.source"
                            && kv.value == vigil_ipc_proto::AttrValue::Str(source_name.into())
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

/// Many packets of one flow, read by `EbpfSources` as the collector's loop does (the table read
/// at each eviction): counts exact, the final count emitted once.
#[test]
fn many_packets_counted_exactly_and_sources_service_evicts() {
    use vigil_collector::ebpf::EbpfSources;
    let _serial = flow_lock();
    const N: u64 = 40_000;
    const PAYLOAD: usize = 16;
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .unwrap();
    let src = EbpfSource::from_response(&att.response, att.fds).unwrap();
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
        if i == N / 2 {
            // Past the eviction interval however fast the sends are: one read mid-stream.
            std::thread::sleep(Duration::from_millis(150));
        }
        if i % 5000 == 0 {
            assert!(set.service(Instant::now(), &mut out, &[]).is_empty());
        }
    }
    let eg = key(1, Direction::Egress, 17, from, to, FlowSource::Socket);
    let inn = key(1, Direction::Ingress, 17, from, to, FlowSource::Socket);
    let frame = (14 + 20 + 8 + PAYLOAD) as u64;
    // The counters only grow: one read after the last packet has them all.
    std::thread::sleep(Duration::from_millis(150));
    assert!(set.service(Instant::now(), &mut out, &[]).is_empty());
    let s = &set.sources()[0];
    // Loopback: once per packet, as received.
    assert_eq!(stats(s, &inn), (N * frame, N));
    assert_eq!(stats(s, &eg), (0, 0));
    assert_eq!(s.stats.malformed, 0);
    assert!(s.stats.flow_reads >= 2);
    assert_eq!(s.flows().lost_packets, 0);
    assert_eq!(
        mgr.flow_totals(BpfProgram::FlowsSocketFilter)
            .unwrap()
            .not_stored,
        0
    );
    // Each eviction emits the flows active since the previous one (cumulative values): the
    // final count shows up exactly once.
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
    assert!(
        c.iter()
            .any(|(k, v)| k == "ebpf_flow_overflow_packets" && *v == 0)
    );
    let ids = mgr.prog_ids();
    drop(set);
    drop(mgr);
    assert_detached(&ids);
}

/// More flows than the kernel's table holds: it evicts the least recently used; the collector
/// counts the evictions and the packets counted in no flow it reported, and the packets it did
/// report plus those lost are exactly what the programs counted.
#[test]
fn full_flow_table_evictions_and_lost_packets_are_counted() {
    let _serial = flow_lock();
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .unwrap();
    let mut src = EbpfSource::from_response(&att.response, att.fds).unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let tx = UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
    // Ports nobody listens on: one flow each (the ICMP answers are rate-limited, a few flows).
    let base: u16 = 20_000;
    let flows: u16 = 20_000;
    for i in 0..flows {
        let _ = tx.send_to(&[1u8; 8], SocketAddr::new(lo, base + i));
    }
    std::thread::sleep(Duration::from_millis(50));
    src.read_flows().unwrap();
    let t = src.flows().totals;
    let table = src.flows();
    let reported: u64 = table.iter().map(|(_, s)| s.packets).sum();
    assert!(
        table.evicted_flows >= u64::from(flows) - 16_384,
        "{} evictions",
        table.evicted_flows
    );
    // Every flow evicted before the first read had unread packets.
    assert!(
        table.lost_packets >= table.evicted_flows,
        "{} lost, {} evicted",
        table.lost_packets,
        table.evicted_flows
    );
    assert_eq!(reported + table.lost_packets, t.packets, "{t:?}");
    assert!(table.len() <= 16_384);
    let (evicted, lost) = (table.evicted_flows as i64, table.lost_packets as i64);
    // Reported as metrics with the flows.
    let recs = src.evict_flows(&[]);
    let value = |name: &str| {
        recs.iter().find_map(|r| match r {
            vigil_ipc_proto::Record::Metrics { metrics, .. } => {
                metrics.iter().find(|m| m.name == name).map(|m| m.value)
            }
            _ => None,
        })
    };
    use vigil_ipc_proto::MetricValue::I64;
    assert_eq!(value("vigil.network.flow.evictions"), Some(I64(evicted)));
    assert_eq!(value("vigil.network.flow.lost"), Some(I64(lost)));
    // The counters say so too.
    let set = vigil_collector::ebpf::EbpfSources::new(vec![src], 100);
    let c = set.counters();
    let get = |k: &str| c.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap();
    assert!(get("ebpf_flow_evictions") >= u64::from(flows) - 16_384);
    assert!(get("ebpf_flow_overflow_packets") >= get("ebpf_flow_evictions"));
}

/// Nobody the privhelper hands the descriptors to can write the flow maps (created with
/// `BPF_F_RDONLY`: the descriptors are read-only): updates and deletes are refused by the
/// kernel, even for root.
#[test]
fn flow_maps_are_read_only_from_user_space() {
    use std::os::fd::AsRawFd;
    let _serial = flow_lock();
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init(&ALL, &[]))
        .unwrap();
    // bpf(cmd, union bpf_attr { map_fd, key, value, flags }) on each map.
    for (fd, key_size, value_size) in [(&att.fds[0], 48, 32), (&att.fds[1], 4, 32 * 4096)] {
        let key = vec![0u8; key_size];
        let value = vec![0u8; value_size];
        for cmd in [2u64 /* UPDATE_ELEM */, 3 /* DELETE_ELEM */] {
            let value = if cmd == 2 { value.as_ptr() as u64 } else { 0 };
            let attr: [u64; 4] = [fd.as_raw_fd() as u64, key.as_ptr() as u64, value, 0];
            // SAFETY: bpf() with a live attr whose buffers outlive the call.
            let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), 32) };
            assert_eq!(
                (r, std::io::Error::last_os_error().raw_os_error()),
                (-1, Some(libc::EPERM)),
                "cmd {cmd}"
            );
        }
    }
}
