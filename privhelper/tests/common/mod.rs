//! What the real BPF tests (`ebpf_*.rs`, run as root) share: the Init they attach with, the
//! check that dropping the loader detaches its programs, a consumer draining on a thread, and the
//! TCP and UDP traffic the flow programs count.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_collector::ebpf::EbpfSource;
use vigil_collector::ebpf::flows::FlowKey;
use vigil_collector::ebpf::records::{Direction, FlowSource};
use vigil_ipc_proto::Feature;
use vigil_ipc_proto::{CollectorConfig, InitConfig, Role};

pub fn init(features: &[Feature], ifaces: &[&str]) -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .features(features)
        .collector(CollectorConfig {
            flow_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ..CollectorConfig::default()
        })
        .build()
}

pub const ALL: [Feature; 4] = [
    Feature::EbpfExec,
    Feature::EbpfFlowsTracepoint,
    Feature::EbpfFlowsSocket,
    Feature::EbpfFlowsTc,
];

pub fn prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .expect("bpftool runs")
}

/// After the manager is dropped, the kernel frees the programs (RCU-deferred: poll a little).
pub fn assert_detached(ids: &[u32]) {
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

/// Flow tests run one at a time: each one's traffic lands in every attached flow ring.
pub static FLOW_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn flow_lock() -> std::sync::MutexGuard<'static, ()> {
    FLOW_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drains a source on a thread while the test generates traffic, so that unrelated traffic on
/// the host cannot fill the ring meanwhile.
pub struct Drainer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<EbpfSource>,
}

impl Drainer {
    pub fn start(mut src: EbpfSource) -> Drainer {
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

    pub fn finish(self) -> EbpfSource {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Drain `src` until `done` holds for its flow table (or 10 s pass).
pub fn drain_until(src: &mut EbpfSource, mut done: impl FnMut(&EbpfSource) -> bool) {
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

pub fn key(
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

pub const TCP_BYTES: usize = 1_000_000;
pub const UDP_COUNT: u64 = 50;
pub const UDP_PAYLOAD: usize = 1000;
/// Ethernet + IPv4 + UDP.
pub const UDP_FRAME: u64 = 14 + 20 + 8 + UDP_PAYLOAD as u64;

/// Client side of the traffic: a TCP stream of TCP_BYTES to `tcp`, UDP_COUNT datagrams to `udp`.
/// Returns the client's (tcp, udp) addresses.
pub fn send_traffic(tcp: SocketAddr, udp: SocketAddr, bind_ip: IpAddr) -> (SocketAddr, SocketAddr) {
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
pub fn serve(l: TcpListener, u: UdpSocket) -> std::thread::JoinHandle<(usize, u64)> {
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
pub fn check_tcp(what: &str, bytes: u64, packets: u64) {
    let payload = TCP_BYTES as u64;
    assert!(packets >= payload / 65_536, "{what}: {packets} packets");
    assert!(
        bytes >= payload + packets * 54 && bytes <= payload + packets * 94,
        "{what}: {bytes} bytes in {packets} packets for {payload} payload bytes"
    );
}

pub fn stats(src: &EbpfSource, k: &FlowKey) -> (u64, u64) {
    src.flows()
        .get(k)
        .map(|s| (s.bytes, s.packets))
        .unwrap_or((0, 0))
}

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(String::from))?
        })
        .expect("cgroup2 mounted")
}
