//! Connection counts two ways, on the same sockets: NETLINK_SOCK_DIAG dumps (what the
//! collector uses) against parsing /proc/net/{tcp,tcp6,udp,udp6}, with N listening TCP
//! sockets, N connected pairs and N UDP sockets opened here (N = 0, 1,000, 4,000). CPU time per
//! count (getrusage, user + system).
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
        "{:>6} {:>9} {:>16} {:>16} {:>7}",
        "N", "sockets", "sock_diag_ms", "proc_net_ms", "ratio"
    );
    for n in [0usize, 1000, 4000] {
        while held.len() < n {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            held.push((l, c, s, u));
        }
        let rounds = 50;
        let c0 = cpu_time();
        let mut total = 0u64;
        for _ in 0..rounds {
            let ss = read_sockstat(std::path::Path::new("/proc"), &mut buf).unwrap();
            let c = diag.counts(&ss, None).unwrap();
            total += c.tcp.iter().chain(&c.udp).sum::<u64>();
        }
        let nl = (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64;
        let c0 = cpu_time();
        for _ in 0..rounds {
            let c = count_proc_net(std::path::Path::new("/proc"), &mut buf).unwrap();
            black_box(c);
        }
        let pn = (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64;
        println!(
            "{:>6} {:>9} {:>16.3} {:>16.3} {:>7.1}",
            n,
            total / rounds,
            nl,
            pn,
            pn / nl
        );
    }
}
