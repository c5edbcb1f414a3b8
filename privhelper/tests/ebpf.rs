//! Real BPF tests (run as root): load and attach every program, generate real processes and
//! real traffic (loopback, and a veth pair into a network namespace made here), consume the
//! ring buffers with the collector's mmap consumer, and check the counts.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_collector::ebpf::flows::FlowKey;
use vigil_collector::ebpf::records::{Direction, FlowSource};
use vigil_collector::ebpf::{BpfRecord, EbpfSource, ProcEventKind, RingBuf};
use vigil_ipc_proto::Feature;
use vigil_ipc_proto::{BpfProgram, CollectorConfig, InitConfig, PrivErrorCode, PrivResponse, Role};
use vigil_privhelper::bpf::{BpfError, BpfManager};

fn init(features: &[Feature], ifaces: &[&str]) -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .features(features)
        .collector(CollectorConfig {
            flow_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ..CollectorConfig::default()
        })
        .build()
}

const ALL: [Feature; 3] = [
    Feature::EbpfExec,
    Feature::EbpfFlowsSocket,
    Feature::EbpfFlowsTc,
];

fn prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .expect("bpftool runs")
}

/// After the manager is dropped, the kernel frees the programs (RCU-deferred: poll a little).
fn assert_detached(ids: &[u32]) {
    assert!(!ids.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<u32> = ids.iter().copied().filter(|&i| prog_exists(i)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "programs {alive:?} still loaded after the loader was dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fdinfo_field(fd: &OwnedFd, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn disabled_feature_is_refused() {
    let mut mgr = BpfManager::new();
    for p in [
        BpfProgram::ExecExit,
        BpfProgram::FlowsSocketFilter,
        BpfProgram::FlowsTc,
    ] {
        let err = mgr.attach(p, &init(&[], &[])).unwrap_err();
        assert!(matches!(err, BpfError::FeatureDisabled(_)), "{err}");
        assert_eq!(err.to_priv_error().code, PrivErrorCode::FeatureDisabled);
    }
    assert!(mgr.prog_ids().is_empty());
    // Bad interface names are refused before anything is loaded.
    for bad in ["", "../etc", "a/b", "x:1", "0123456789abcdef"] {
        let err = mgr
            .attach(BpfProgram::FlowsTc, &init(&ALL, &[bad]))
            .unwrap_err();
        assert_eq!(
            err.to_priv_error().code,
            PrivErrorCode::BadRequest,
            "{bad:?}"
        );
    }
    let err = mgr
        .attach(BpfProgram::FlowsTc, &init(&ALL, &["vigilnosuchif0"]))
        .unwrap_err();
    assert!(matches!(err, BpfError::TcAttach(_)), "{err}");
    assert!(mgr.prog_ids().is_empty());
}

#[test]
fn exec_and_exit_of_20_processes() {
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &[]);
    let att = mgr.attach(BpfProgram::ExecExit, &cfg).expect("attach exec");
    assert_eq!(att.ring_size, 256 * 1024);
    assert_eq!(
        att.response(),
        PrivResponse::BpfRingbuf {
            program: BpfProgram::ExecExit,
            ring_size: 256 * 1024
        }
    );
    // A second request: a new descriptor for the same map, no second load.
    let again = mgr.attach(BpfProgram::ExecExit, &cfg).expect("re-attach");
    assert_ne!(again.fd.as_raw_fd(), att.fd.as_raw_fd());
    assert_eq!(
        fdinfo_field(&again.fd, "map_id:"),
        fdinfo_field(&att.fd, "map_id:")
    );
    assert_eq!(again.prog_ids, att.prog_ids);
    assert_eq!(mgr.prog_ids().len(), 2);
    drop(again);

    let mut src = EbpfSource::new(BpfProgram::ExecExit, att.fd, att.ring_size).expect("mmap");
    let mut pids = HashSet::new();
    for _ in 0..20 {
        let st = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        pids.insert(st.id());
        let mut st = st;
        assert!(st.wait().unwrap().success());
    }
    let mut three = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let three_pid = three.id();
    assert_eq!(three.wait().unwrap().code(), Some(3));
    let mut killed = Command::new("/bin/sh")
        .args(["-c", "kill -9 $$"])
        .spawn()
        .unwrap();
    let killed_pid = killed.id();
    killed.wait().unwrap();

    // The ring buffer descriptor is pollable: readable now that records are pending.
    let mut pfd = libc::pollfd {
        fd: src.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!((r, pfd.revents & libc::POLLIN), (1, libc::POLLIN));
    assert!(src.pending_bytes() > 0);

    let mut execs: HashMap<u32, String> = HashMap::new();
    let mut exits: HashMap<u32, Option<i32>> = HashMap::new();
    let mut ppids: HashMap<u32, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = std::process::id();
    loop {
        src.drain_raw(usize::MAX, |r| {
            if let BpfRecord::Proc(e) = r {
                match e.kind {
                    ProcEventKind::Exec => {
                        ppids.insert(e.pid, e.ppid);
                        execs.insert(e.pid, e.comm);
                    }
                    ProcEventKind::Exit => {
                        exits.insert(e.pid, e.exit_code());
                    }
                }
            }
        })
        .unwrap();
        let done = pids
            .iter()
            .chain([&three_pid, &killed_pid])
            .all(|p| execs.contains_key(p) && exits.contains_key(p));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing events: execs {execs:?} exits {exits:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &pids {
        assert_eq!(execs[p], "true", "comm of {p}");
        assert_eq!(exits[p], Some(0), "exit code of {p}");
        assert_eq!(ppids[p], me, "parent of {p}");
    }
    assert_eq!(execs[&three_pid], "sh");
    assert_eq!(exits[&three_pid], Some(3));
    assert_eq!(exits[&killed_pid], None, "killed by a signal: no exit code");
    assert_eq!(mgr.drops(BpfProgram::ExecExit), Some(0));
    assert_eq!(src.stats.malformed, 0);

    // The records become log records.
    let mut out = Vec::new();
    Command::new("/bin/true").status().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    src.drain(&mut out, &[]).unwrap();
    assert!(out.iter().any(|r| matches!(r,
        vigil_ipc_proto::Record::Log { log, .. } if log.event_name == "process.exit"
            && log.attributes.iter().any(|kv| kv.key == "process.exit.code"))));

    let ids = mgr.prog_ids();
    for id in &ids {
        assert!(prog_exists(*id));
    }
    drop(src);
    drop(mgr);
    assert_detached(&ids);
}

/// Flow tests run one at a time: each one's traffic lands in every attached flow ring.
static FLOW_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn flow_lock() -> std::sync::MutexGuard<'static, ()> {
    FLOW_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drains a source on a thread while the test generates traffic, so that unrelated traffic on
/// the host cannot fill the ring meanwhile.
struct Drainer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<EbpfSource>,
}

impl Drainer {
    fn start(mut src: EbpfSource) -> Drainer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                src.drain(&mut out, &[]).unwrap();
                out.clear();
                std::thread::sleep(Duration::from_millis(2));
            }
            src
        });
        Drainer { stop, handle }
    }

    fn finish(self) -> EbpfSource {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Drain `src` until `done` holds for its flow table (or 10 s pass).
fn drain_until(src: &mut EbpfSource, mut done: impl FnMut(&EbpfSource) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        src.drain(&mut out, &[]).unwrap();
        if done(src) {
            // One more pass for stragglers of the same flows.
            std::thread::sleep(Duration::from_millis(100));
            src.drain(&mut out, &[]).unwrap();
            return;
        }
        assert!(Instant::now() < deadline, "flow records did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key(
    ifindex: u32,
    direction: Direction,
    proto: u8,
    s: SocketAddr,
    d: SocketAddr,
    source: FlowSource,
) -> FlowKey {
    FlowKey {
        ifindex,
        direction,
        proto,
        saddr: s.ip(),
        daddr: d.ip(),
        sport: s.port(),
        dport: d.port(),
        source,
    }
}

const TCP_BYTES: usize = 1_000_000;
const UDP_COUNT: u64 = 50;
const UDP_PAYLOAD: usize = 1000;
/// Ethernet + IPv4 + UDP.
const UDP_FRAME: u64 = 14 + 20 + 8 + UDP_PAYLOAD as u64;

/// Client side of the traffic: a TCP stream of TCP_BYTES to `tcp`, UDP_COUNT datagrams to `udp`.
/// Returns the client's (tcp, udp) addresses.
fn send_traffic(tcp: SocketAddr, udp: SocketAddr, bind_ip: IpAddr) -> (SocketAddr, SocketAddr) {
    let mut c = TcpStream::connect(tcp).expect("tcp connect");
    let tcp_local = c.local_addr().unwrap();
    let buf = vec![0x5au8; 64 * 1024];
    let mut left = TCP_BYTES;
    while left > 0 {
        let n = left.min(buf.len());
        c.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut ack = [0u8; 1];
    // The server answers one byte once it read everything.
    c.read_exact(&mut ack).unwrap();
    drop(c);
    let u = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).unwrap();
    let udp_local = u.local_addr().unwrap();
    for _ in 0..UDP_COUNT {
        u.send_to(&[7u8; UDP_PAYLOAD], udp).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    (tcp_local, udp_local)
}

/// Server side: accept one TCP connection and read all; receive UDP_COUNT datagrams.
fn serve(l: TcpListener, u: UdpSocket) -> std::thread::JoinHandle<(usize, u64)> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        s.write_all(&[1]).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0;
        while got < UDP_COUNT {
            let n = u.recv(&mut buf).unwrap();
            assert_eq!(n, UDP_PAYLOAD);
            got += 1;
        }
        (total, got)
    })
}

/// The TCP data direction: payload within per-packet header tolerance (Ethernet 14 + IPv4 20 +
/// TCP 20..60), at least one packet per 64 KiB.
fn check_tcp(what: &str, bytes: u64, packets: u64) {
    let payload = TCP_BYTES as u64;
    assert!(packets >= payload / 65_536, "{what}: {packets} packets");
    assert!(
        bytes >= payload + packets * 54 && bytes <= payload + packets * 94,
        "{what}: {bytes} bytes in {packets} packets for {payload} payload bytes"
    );
}

fn stats(src: &EbpfSource, k: &FlowKey) -> (u64, u64) {
    src.flows()
        .get(k)
        .map(|s| (s.bytes, s.packets))
        .unwrap_or((0, 0))
}

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
fn cgroup2_mount() -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(String::from))?
        })
        .expect("cgroup2 mounted")
}

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

/// A network namespace with a veth pair to the host, removed on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new(tag: u8) -> Netns {
        let pid = std::process::id();
        let name = format!("vigil-ebpf-{pid}-{tag}");
        let host_if = format!("vgh{}{tag}", pid % 100_000);
        let ns_if = format!("vgn{}{tag}", pid % 100_000);
        // 10.200.x.y/30 with x, y from the pid and tag so parallel runs do not collide.
        let x = (pid % 250) as u8;
        let y = (tag % 60) * 4;
        let host_ip = Ipv4Addr::new(10, 200, x, y + 1);
        let ns_ip = Ipv4Addr::new(10, 200, x, y + 2);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let n = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            host_ip,
            ns_ip,
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        n
    }

    fn host_ifindex(&self) -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.host_if))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Run `f` on a thread that entered the namespace (setns is per thread for CLONE_NEWNET).
    fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a descriptor we hold; affects this thread only.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn socket_filter_and_tc_count_veth_traffic_into_a_netns() {
    let _serial = flow_lock();
    let ns = Netns::new(1);
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &[&ns.host_if]);
    let sock = mgr.attach(BpfProgram::FlowsSocketFilter, &cfg).unwrap();
    let tc = mgr.attach(BpfProgram::FlowsTc, &cfg).expect("attach tc");
    assert_eq!(mgr.tc_interfaces(), vec![ns.host_if.clone()]);
    let sock = Drainer::start(EbpfSource::new(sock.program, sock.fd, sock.ring_size).unwrap());
    let tc = Drainer::start(EbpfSource::new(tc.program, tc.fd, tc.ring_size).unwrap());
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
    let inner = Drainer::start(EbpfSource::new(inner.program, inner.fd, inner.ring_size).unwrap());

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

    let (mut sock, mut tc) = (sock.finish(), tc.finish());
    let ifi = ns.host_ifindex();
    for (src, kind) in [(&mut sock, FlowSource::Socket), (&mut tc, FlowSource::Tc)] {
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

    // tc egress knows the sending socket's cgroup: this test process's.
    let tcp_eg_t = key(ifi, Direction::Egress, 6, tcp_cli, tcp_srv, FlowSource::Tc);
    assert_eq!(cgroup_of(&tc, &tcp_eg_t), own_cgroup_id());
    let udp_eg_t = key(ifi, Direction::Egress, 17, udp_cli, udp_srv, FlowSource::Tc);
    assert_eq!(cgroup_of(&tc, &udp_eg_t), own_cgroup_id());
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

    let ids = mgr.prog_ids();
    assert_eq!(
        ids.len(),
        4,
        "socket filter (received, transmitted), tc ingress, tc egress"
    );
    drop(sock);
    drop(tc);
    drop(mgr);
    assert_detached(&ids);
    drop(ns);
}

const CHILD_ENV: &str = "VIGIL_EBPF_UNPRIV_CHILD";
const CHILD_FD: i32 = 10;

/// Helper entry for `consumer_works_unprivileged`: does nothing unless started by it.
#[test]
fn unprivileged_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(';');
    let ring_size: u32 = parts.next().unwrap().parse().unwrap();
    let want: HashSet<u32> = parts
        .next()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    // We really are unprivileged.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |n: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(n))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    // bpf() is really refused here: even BPF_OBJ_GET_INFO_BY_FD on the passed descriptor (which
    // the kernel alone would allow an unprivileged holder) fails.
    let mut info = [0u8; 256];
    let mut attr = [0u64; 2];
    attr[0] = CHILD_FD as u64 | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: bpf(BPF_OBJ_GET_INFO_BY_FD = 15) with a live attr and buffer.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 15, attr.as_mut_ptr(), 16) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    // SAFETY: CHILD_FD was placed by the parent for us; we take ownership once.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(CHILD_FD) };
    let mut ring = RingBuf::new(fd, ring_size).expect("mmap as nobody");
    let mut seen = HashSet::new();
    ring.consume(usize::MAX, |b| {
        if let Some(BpfRecord::Proc(e)) = vigil_collector::ebpf::records::parse(b)
            && e.kind == ProcEventKind::Exec
        {
            seen.insert(e.pid);
        }
    })
    .unwrap();
    let missing: Vec<_> = want.difference(&seen).collect();
    assert!(missing.is_empty(), "exec events missing for {missing:?}");
    println!("UNPRIV-CONSUMED {}", seen.len());
}

/// A seccomp filter refusing bpf(2) with EPERM and allowing everything else.
fn deny_bpf_filter() -> [libc::sock_filter; 6] {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_bpf as u32),
        f(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, RET_ALLOW),
    ]
}

#[test]
fn consumer_works_unprivileged() {
    let mut mgr = BpfManager::new();
    let att = mgr.attach(BpfProgram::ExecExit, &init(&ALL, &[])).unwrap();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let mut c = Command::new("/bin/true").spawn().unwrap();
        pids.push(c.id().to_string());
        c.wait().unwrap();
    }
    let spec = format!("{};{}", att.ring_size, pids.join(","));
    let fd = att.fd.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "unprivileged_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, spec);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, CHILD_FD) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(65534, 65534, 65534) < 0
                || libc::setresuid(65534, 65534, 65534) < 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // setresuid away from 0 cleared the permitted/effective sets; clear the rest.
            let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3
            let data = [0u32; 6];
            if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // As the collector's policy does: bpf() is not allowed at all (EPERM here).
            let mut filter = deny_bpf_filter();
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("UNPRIV-CONSUMED"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = mgr.prog_ids();
    drop(att);
    drop(mgr);
    assert_detached(&ids);
}

const CAPS_CHILD_ENV: &str = "VIGIL_EBPF_CAPS_CHILD";
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn cap_mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c))
}

/// Helper entry for `loads_as_agent_user_with_only_feature_capabilities`: does nothing unless
/// started by it. Runs as uid 65534 with exactly the capabilities named in the environment.
#[test]
fn caps_child_entry() {
    let Ok(spec) = std::env::var(CAPS_CHILD_ENV) else {
        return;
    };
    let caps: Vec<u32> = spec.split(',').map(|c| c.parse().unwrap()).collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |n: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(n))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(field("CapEff:"), format!("{:016x}", cap_mask(&caps)));
    assert_eq!(field("NoNewPrivs:"), "1");
    let has = |c: u32| caps.contains(&c);
    let full = has(CAP_PERFMON) && has(CAP_NET_RAW) && has(CAP_NET_ADMIN);
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &["lo"]);
    for (p, needs) in [
        (BpfProgram::ExecExit, CAP_PERFMON),
        (BpfProgram::FlowsSocketFilter, CAP_NET_RAW),
        (BpfProgram::FlowsTc, CAP_NET_ADMIN),
    ] {
        match (mgr.attach(p, &cfg), has(CAP_BPF) && has(needs)) {
            (Ok(a), true) => println!("CAPS-OK {p:?} ring {}", a.ring_size),
            (Err(e), false) => {
                assert_eq!(
                    e.to_priv_error().code,
                    PrivErrorCode::PermissionDenied,
                    "{p:?}: {e}"
                );
                println!("CAPS-DENIED {p:?}");
            }
            (r, _) => panic!("{p:?} with caps {caps:?}: {r:?}"),
        }
    }
    if full {
        let a = mgr.attach(BpfProgram::ExecExit, &cfg).unwrap();
        let mut src = EbpfSource::new(a.program, a.fd, a.ring_size).unwrap();
        let mut c = Command::new("/bin/true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        while !seen {
            src.drain_raw(usize::MAX, |r| {
                if let BpfRecord::Proc(e) = r
                    && e.pid == pid
                    && e.kind == ProcEventKind::Exit
                {
                    seen = true;
                }
            })
            .unwrap();
            assert!(Instant::now() < deadline, "no exit event for {pid}");
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("CAPS-EVENTS ok");
    }
}

fn run_caps_child(caps: &[u32]) -> String {
    let spec = caps
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mask = cap_mask(caps);
    let caps = caps.to_vec();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "caps_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CAPS_CHILD_ENV, spec);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(65534, 65534, 65534) < 0
                || libc::setresuid(65534, 65534, 65534) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
            let (lo, hi) = (mask as u32, (mask >> 32) as u32);
            // effective, permitted, inheritable; low words then high words
            let data = [lo, lo, lo, hi, hi, hi];
            if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &c in &caps {
                if libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    c as libc::c_ulong,
                    0,
                    0,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "caps child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn loads_as_agent_user_with_only_feature_capabilities() {
    // BPF + PERFMON + NET_RAW + NET_ADMIN as uid 65534: every program loads and attaches.
    let out = run_caps_child(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON, CAP_BPF]);
    for p in ["ExecExit", "FlowsSocketFilter", "FlowsTc"] {
        assert!(out.contains(&format!("CAPS-OK {p}")), "{out}");
    }
    assert!(out.contains("CAPS-EVENTS ok"), "{out}");
    // CAP_BPF alone: each program is refused with PermissionDenied (raw tracepoints need
    // PERFMON, the packet socket NET_RAW, tc NET_ADMIN).
    let out = run_caps_child(&[CAP_BPF]);
    for p in ["ExecExit", "FlowsSocketFilter", "FlowsTc"] {
        assert!(out.contains(&format!("CAPS-DENIED {p}")), "{out}");
    }
    // Each feature with exactly its own capability pair (tc needs no PERFMON: no direct packet
    // access).
    for (pair, ok) in [
        (CAP_PERFMON, "ExecExit"),
        (CAP_NET_RAW, "FlowsSocketFilter"),
        (CAP_NET_ADMIN, "FlowsTc"),
    ] {
        let out = run_caps_child(&[CAP_BPF, pair]);
        for p in ["ExecExit", "FlowsSocketFilter", "FlowsTc"] {
            let want = if p == ok { "CAPS-OK" } else { "CAPS-DENIED" };
            assert!(
                out.contains(&format!("{want} {p}")),
                "caps BPF+{pair}: {out}"
            );
        }
    }
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

const HOLD_CHILD_ENV: &str = "VIGIL_EBPF_HOLD_CHILD";

/// Helper entry for `sigkill_of_the_loader_detaches_everything`: does nothing unless started by
/// it. Attaches every program, prints their ids, then waits to be killed.
#[test]
fn hold_child_entry() {
    if std::env::var(HOLD_CHILD_ENV).is_err() {
        return;
    }
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &["lo"]);
    for p in [
        BpfProgram::ExecExit,
        BpfProgram::FlowsSocketFilter,
        BpfProgram::FlowsTc,
    ] {
        mgr.attach(p, &cfg).unwrap();
    }
    let ids: Vec<String> = mgr.prog_ids().iter().map(|i| i.to_string()).collect();
    println!("HOLD-IDS {}", ids.join(","));
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed");
}

#[test]
fn sigkill_of_the_loader_detaches_everything() {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    /// Kills the holder if an assertion below fails first.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let mut ids = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print "test hold_child_entry ... " first on the same line.
        if let Some((_, rest)) = line.split_once("HOLD-IDS ") {
            ids = rest.split(',').map(|i| i.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(
        ids.len(),
        6,
        "exec, exit, socket filter (received, transmitted), tc ingress, tc egress"
    );
    for id in &ids {
        assert!(
            prog_exists(*id),
            "program {id} loaded while the loader lives"
        );
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
    child.0.wait().unwrap();
    // Nothing pinned: the kernel drops every program, link and map with the process.
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

/// The IPC path as the roles use it: the collector's `ebpf::start` asks over a real SEQPACKET
/// channel, the privhelper side answers with `bpf::respond` (descriptor over SCM_RIGHTS); a
/// feature the privhelper has off is refused and the collector goes on without it.
#[test]
fn attach_over_the_ipc_channel() {
    use vigil_ipc_proto::{Channel, PrivRequest, Role};
    let (coll, mut privh) = Channel::pair().unwrap();
    // The privhelper allows only exec; the collector (wrongly) believes flows are on too.
    let priv_init = init(&[Feature::EbpfExec], &[]);
    let coll_init = init(&[Feature::EbpfExec, Feature::EbpfFlowsSocket], &[]);
    let server = std::thread::spawn(move || {
        privh
            .handshake(Role::Privhelper, Some(Role::Collector))
            .unwrap();
        let mut answered = Vec::new();
        for _ in 0..2 {
            let req: PrivRequest = privh.recv().unwrap();
            let PrivRequest::BpfAttach { program } = req else {
                panic!("unexpected {req:?}")
            };
            let (resp, fd) = vigil_privhelper::bpf::respond(program, &priv_init);
            let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
            privh.send_with_fds(&resp, &fds).unwrap();
            answered.push((program, matches!(resp, PrivResponse::BpfRingbuf { .. })));
        }
        answered
    });
    let mut client =
        vigil_collector::privclient::PrivClient::connect(coll, std::time::Duration::from_secs(10))
            .unwrap();
    let mut set = vigil_collector::ebpf::start(&mut client, &coll_init);
    assert_eq!(
        server.join().unwrap(),
        vec![
            (BpfProgram::ExecExit, true),
            (BpfProgram::FlowsSocketFilter, false)
        ]
    );
    assert_eq!(set.sources().len(), 1);
    assert_eq!(set.sources()[0].program, BpfProgram::ExecExit);
    let mut c = Command::new("/bin/true").spawn().unwrap();
    let pid = i64::from(c.id());
    c.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        assert!(set.service(Instant::now(), &mut out, &[]).is_empty());
        let found = out.iter().any(|r| match r {
            vigil_ipc_proto::Record::Log { log, .. } => {
                log.event_name == "process.exec"
                    && log.attributes.iter().any(|kv| {
                        kv.key == "process.pid" && kv.value == vigil_ipc_proto::AttrValue::I64(pid)
                    })
            }
            _ => false,
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no process.exec for {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup v2 directory made for a test, removed on drop.
struct TestCgroup {
    outer: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The exited members leave asynchronously: retry a little.
        for _ in 0..50 {
            let _ = std::fs::remove_dir(&self.dir);
            if std::fs::remove_dir(&self.outer).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn exec_in_a_container_cgroup_is_attributed() {
    use std::os::unix::fs::MetadataExt;
    use vigil_collector::ebpf::CgroupResolver;
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let outer = std::path::PathBuf::from(format!(
        "{}/vigil-ebpf-test-{}",
        cgroup2_mount(),
        std::process::id()
    ));
    let dir = outer.join(format!("docker-{CID}.scope"));
    std::fs::create_dir_all(&dir).expect("mkdir in the cgroup v2 hierarchy");
    let cg = TestCgroup { outer, dir };
    let ino = std::fs::metadata(&cg.dir).unwrap().ino();

    let mut mgr = BpfManager::new();
    let att = mgr.attach(BpfProgram::ExecExit, &init(&ALL, &[])).unwrap();
    let mut src = EbpfSource::new(att.program, att.fd, att.ring_size).unwrap();
    src.set_cgroup_resolver(CgroupResolver::discover().expect("cgroup2 mount"));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true",
        cg.dir.display()
    );
    let mut c = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = i64::from(c.id());
    assert!(c.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let attrs = loop {
        src.drain(&mut out, &[]).unwrap();
        // The second exec of that pid (sh -> true) happened inside the cgroup.
        let found = out.iter().find_map(|r| match r {
            vigil_ipc_proto::Record::Log { log, .. }
                if log.event_name == "process.exec"
                    && log.body.starts_with("exec true")
                    && log.attributes.iter().any(|kv| {
                        kv.key == "process.pid" && kv.value == vigil_ipc_proto::AttrValue::I64(pid)
                    }) =>
            {
                Some(log.attributes.clone())
            }
            _ => None,
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "no exec of true for {pid}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(
        get("container.id"),
        Some(vigil_ipc_proto::AttrValue::Str(CID.into()))
    );
    let cg_path = format!(
        "0::/vigil-ebpf-test-{}/docker-{CID}.scope",
        std::process::id()
    );
    assert_eq!(
        get("process.linux.cgroup"),
        Some(vigil_ipc_proto::AttrValue::Str(cg_path))
    );
    // And the raw id is the directory's inode.
    let mut r = CgroupResolver::discover().unwrap();
    assert!(
        r.path(ino)
            .unwrap()
            .ends_with(&format!("docker-{CID}.scope"))
    );
    drop(src);
    drop(mgr);
    drop(cg);
}
