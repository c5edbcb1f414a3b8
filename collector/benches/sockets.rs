//! Connection counts, on the same sockets: NETLINK_SOCK_DIAG dumps (what the collector uses),
//! TCP of both families from one walk of the hash or one walk per family, the counts of a walk
//! reused while the kernel's count of TCP state changes does not move (a constant here), and
//! parsing /proc/net/{tcp,tcp6,udp,udp6}, with N listening TCP sockets, N connected pairs and
//! N UDP sockets opened here, half IPv4, half IPv6 (N = 0, 1,000, 4,000). CPU time per count
//! (getrusage, user + system).
//!
//! `cargo bench -p vigil-collector --bench sockets`

use std::hint::black_box;
use std::time::Duration;

use vigil_collector::sockets::{SockDiag, count_proc_net, read_sockstat};

fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = vigil_collector::procs::raise_fd_limit();
    let mut held = Vec::new();
    let mut diag = SockDiag::open().expect("sock_diag");
    let mut buf = Vec::new();
    println!(
        "{:>6} {:>9} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "N",
        "sockets",
        "one_walk_ms",
        "per_family",
        "no_change",
        "proc_net_ms",
        "fam/one",
        "proc/one"
    );
    let proc = std::path::Path::new("/proc");
    for n in [0usize, 1000, 4000] {
        // Half IPv4, half IPv6: a listener, a connected pair and a UDP socket each.
        while held.len() < n {
            let lo = if held.len() % 2 == 0 {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let l = std::net::TcpListener::bind(lo).unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            let u = std::net::UdpSocket::bind(lo).unwrap();
            held.push((l, c, s, u));
        }
        let rounds = 50;
        let mut total = 0u64;
        // `changes`: none (a walk every time), or the same count every time (the reuse path:
        // the first call walks, the others do not).
        let mut time = |diag: &mut SockDiag, both: bool, changes: Option<u64>| {
            diag.tcp_both = both;
            let c0 = cpu_time();
            for _ in 0..rounds {
                let ss = read_sockstat(proc, &mut buf).unwrap();
                let c = diag.counts(&ss, changes).unwrap();
                total += c.tcp.iter().chain(&c.udp).sum::<u64>();
            }
            (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64
        };
        let one = time(&mut diag, true, None);
        let fam = time(&mut diag, false, None);
        let same = time(&mut diag, true, Some(0));
        let counted = total / (3 * rounds);
        let c0 = cpu_time();
        for _ in 0..rounds {
            let c = count_proc_net(proc, &mut buf).unwrap();
            black_box(c);
        }
        let pn = (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64;
        println!(
            "{:>6} {:>9} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>9.2} {:>9.1}",
            n,
            counted,
            one,
            fam,
            same,
            pn,
            fam / one,
            pn / one
        );
    }
}
