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
use vigil_ipc_proto::{
    BpfProgram, CollectorConfig, InitConfig, LandlockPlan, Role, SandboxPlan, ShipperConfig,
};
use vigil_privhelper::bpf::BpfManager;

const PORT: &str = "5399";

fn init() -> InitConfig {
    InitConfig {
        role: Role::Privhelper,
        sandbox: SandboxPlan {
            ids: None,
            keep_caps: Vec::new(),
            seccomp: false,
            landlock: LandlockPlan::default(),
        },
        host_root: "/".into(),
        runtime_dir: "/tmp".into(),
        hostname: "bench".into(),
        enabled_features: vec!["ebpf_flows_socket".into(), "ebpf_exec".into()],
        collector: CollectorConfig::default(),
        shipper: ShipperConfig::default(),
    }
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

fn main() {
    let secs: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut srv = server();

    let tcp_base = client(secs, false);
    let udp_base = client(secs, true);

    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(BpfProgram::FlowsSocketFilter, &init())
        .expect("attach socket filter");
    let mut src = EbpfSource::new(att.program, att.fd, att.ring_size).expect("mmap ring");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let consumer = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut busy = Duration::ZERO;
        while !stop2.load(Ordering::Relaxed) {
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
        }
        src.drain(&mut out, &[]).expect("drain");
        (src.stats, src.flows().len(), busy)
    });

    let t0 = Instant::now();
    let tcp_filt = client(secs, false);
    let t_tcp = t0.elapsed();
    let udp_filt = client(secs, true);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (stats, flows, busy) = consumer.join().expect("consumer");
    let drops = mgr.drops(BpfProgram::FlowsSocketFilter).unwrap_or(0);
    drop(mgr);
    let tcp_base2 = client(secs, false);
    let _ = srv.kill();
    let _ = srv.wait();

    let g = |b: f64| b / 1e9;
    println!("loopback iperf3, {secs} s per run");
    println!(
        "TCP  without filter: {:.2} Gbit/s (again after detach: {:.2})",
        g(tcp_base),
        g(tcp_base2)
    );
    println!(
        "TCP  with filter:    {:.2} Gbit/s  ratio {:.3}",
        g(tcp_filt),
        tcp_filt / tcp_base
    );
    let pps = |b: f64| b / 8.0 / 64.0;
    println!(
        "UDP 64 B without filter: {:.0} datagrams/s; with filter: {:.0}  ratio {:.3}",
        pps(udp_base),
        pps(udp_filt),
        udp_filt / udp_base
    );
    println!(
        "ring buffer: {} records consumed in {:.1} s = {:.0} records/s (TCP part {:.1} s), \
         consumer busy {:.2} s, {} kernel-side drops (ring full), {} flows, {} malformed",
        stats.records,
        elapsed.as_secs_f64(),
        stats.records as f64 / elapsed.as_secs_f64(),
        t_tcp.as_secs_f64(),
        busy.as_secs_f64(),
        drops,
        flows,
        stats.malformed
    );
}
