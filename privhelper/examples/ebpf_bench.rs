//! Benchmark (root): loopback iperf3 throughput without and with the flow socket filter attached
//! (same run, ratio printed), and the flow ring buffer's consumed records per second.
//!
//! `cargo run --release -p vigil-privhelper --example ebpf_bench [seconds]`
//! Needs iperf3 in PATH. The consumer is the collector's (mmap + poll, no bpf()).

use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_collector::ebpf::EbpfSource;
use vigil_ipc_proto::{BpfProgram, Feature, InitConfig, Role};
use vigil_privhelper::bpf::BpfManager;

const PORT: &str = "5399";

fn init() -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .hostname("bench")
        .features(&[Feature::EbpfFlowsSocket, Feature::EbpfExec])
        .build()
}

fn server() -> Child {
    let c = Command::new("iperf3")
        .args(["-s", "-p", PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s (is iperf3 installed?)");
    std::thread::sleep(Duration::from_millis(300));
    c
}

/// One iperf3 client run; returns (bits per second received, packets per second if UDP).
fn client(secs: u32, udp: bool) -> f64 {
    let mut args = vec![
        "-c".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        PORT.into(),
        "-t".into(),
        secs.to_string(),
        "-J".into(),
    ];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"].map(String::from));
    }
    let out = Command::new("iperf3")
        .args(&args)
        .output()
        .expect("iperf3 -c");
    let json = String::from_utf8_lossy(&out.stdout);
    // Minimal extraction: the last "bits_per_second" in end.sum_received / end.sum.
    let key = if udp { "\"sum\":" } else { "\"sum_received\":" };
    let tail = json.rfind(key).map(|i| &json[i..]).unwrap_or("");
    tail.split("\"bits_per_second\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bits_per_second in iperf3 output: {json}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Consumer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64, Duration)>,
}

/// The collector's consumer in a thread: poll (100 ms timeout, the flow ring wakes it only
/// when 256 KiB are pending) then drain into the flow table.
fn consume(mut src: EbpfSource) -> Consumer {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut busy = Duration::ZERO;
        loop {
            let last = stop2.load(Ordering::Relaxed);
            let mut pfd = libc::pollfd {
                fd: src.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            let t = Instant::now();
            src.drain(&mut out, &[]).expect("drain");
            busy += t.elapsed();
            out.clear();
            if last {
                break;
            }
        }
        (src.stats.records, src.stats.malformed, busy)
    });
    Consumer { stop, handle }
}

fn main() {
    let secs: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut srv = server();
    let (mut tcp_r, mut udp_r) = (Vec::new(), Vec::new());
    let (mut tcp_b, mut tcp_f, mut udp_b, mut udp_f) = (vec![], vec![], vec![], vec![]);
    let (mut records, mut malformed, mut drops) = (0u64, 0u64, 0u64);
    let mut busy = Duration::ZERO;
    let mut filtered_time = Duration::ZERO;
    for _ in 0..rounds {
        let tb = client(secs, false);
        let ub = client(secs, true);
        let mut mgr = BpfManager::new();
        let att = mgr
            .attach(BpfProgram::FlowsSocketFilter, &init())
            .expect("attach socket filter");
        let src = EbpfSource::new(att.program, att.fd, att.ring_size).expect("mmap ring");
        let c = consume(src);
        let t0 = Instant::now();
        let tf = client(secs, false);
        let uf = client(secs, true);
        filtered_time += t0.elapsed();
        c.stop.store(true, Ordering::Relaxed);
        let (r, m, b) = c.handle.join().expect("consumer");
        records += r;
        malformed += m;
        busy += b;
        drops += mgr.drops(BpfProgram::FlowsSocketFilter).unwrap_or(0);
        drop(mgr);
        tcp_r.push(tf / tb);
        udp_r.push(uf / ub);
        tcp_b.push(tb);
        tcp_f.push(tf);
        udp_b.push(ub);
        udp_f.push(uf);
    }
    let _ = srv.kill();
    let _ = srv.wait();

    let g = |b: f64| b / 1e9;
    let pps = |b: f64| b / 8.0 / 64.0;
    println!(
        "loopback iperf3, {rounds} rounds of {secs} s runs (without, then with the socket filter); medians"
    );
    println!(
        "TCP           without {:.2} Gbit/s, with {:.2} Gbit/s, ratio {:.3} (per round {:?})",
        g(median(tcp_b)),
        g(median(tcp_f)),
        median(tcp_r.clone()),
        tcp_r
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "UDP 64 B      without {:.0} datagrams/s, with {:.0}, ratio {:.3} (per round {:?})",
        pps(median(udp_b)),
        pps(median(udp_f)),
        median(udp_r.clone()),
        udp_r
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "ring buffer:  {records} records in {:.1} s with the filter = {:.0} records/s produced and \
         consumed; consumer busy {:.2} s = {:.0} records/s per busy core-second; \
         {drops} kernel-side drops (ring full), {malformed} malformed",
        filtered_time.as_secs_f64(),
        records as f64 / filtered_time.as_secs_f64(),
        busy.as_secs_f64(),
        records as f64 / busy.as_secs_f64().max(1e-9),
    );
}
