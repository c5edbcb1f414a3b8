//! Benchmark (root): loopback iperf3 throughput without and with the flow socket filter attached
//! (flows counted in the kernel, the table read by the collector's reader), TCP and 64-byte UDP
//! floods, in one run: rounds interleaved, the order of "without" and "with" alternating per
//! round; per-round ratios and medians printed, with the machine's load around the run.
//!
//! `cargo run --release -p vigil-privhelper --example ebpf_bench -- [seconds] [rounds] [read_ms]`
//! Needs iperf3 in PATH. First it measures what one read of the flow table costs the collector
//! with 1,000 and 10,000 flows in it (one datagram to each of that many ports). While the filter is attached a thread reads the flow table and totals
//! every `read_ms` (default 1000; the collector reads every `collector.flow_evict_ms`, 10 s by
//! default) exactly as the collector does (`EbpfSource::read_flows`), and its CPU per read is
//! printed too (`EBPF_BENCH_NO_READER=1`: no reader, for variants of the program whose maps
//! the collector cannot read). `EBPF_BENCH_TC_LO=1`: the tc programs (tcx links) on `lo`
//! instead of the socket filter — ingress and egress, so each loopback packet runs two
//! programs and is counted twice (what `flows_source = "tc"` with `flow_interfaces = ["lo"]`
//! costs). `EBPF_BENCH_PIN=n,m`: the iperf3 client pinned to CPU n and the server to CPU m
//! (iperf3 `-A`), so where the scheduler puts the two does not vary between runs.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_collector::ebpf::EbpfSource;
use vigil_ipc_proto::{BpfProgram, CollectorConfig, Feature, InitConfig, Role};
use vigil_privhelper::bpf::BpfManager;

const PORT: &str = "5399";

fn tc_lo() -> bool {
    std::env::var_os("EBPF_BENCH_TC_LO").is_some()
}

/// The flow program measured: the socket filter, or tc on `lo` (`EBPF_BENCH_TC_LO`).
fn program() -> BpfProgram {
    if tc_lo() {
        BpfProgram::FlowsTc
    } else {
        BpfProgram::FlowsSocketFilter
    }
}

fn init() -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .hostname("bench")
        .features(&[
            Feature::EbpfFlowsSocket,
            Feature::EbpfFlowsTc,
            Feature::EbpfExec,
        ])
        .collector(CollectorConfig {
            flow_interfaces: vec!["lo".into()],
            ..CollectorConfig::default()
        })
        .build()
}

/// The iperf3 server, killed when dropped (also when a run panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server() -> Server {
    let c = Command::new("iperf3")
        .args(["-s", "-p", PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s (is iperf3 installed?)");
    std::thread::sleep(Duration::from_millis(300));
    Server(c)
}

/// `EBPF_BENCH_PIN` if set: two CPU numbers `n,m`; anything else ends the run with one line.
fn pin() -> Option<String> {
    let v = std::env::var("EBPF_BENCH_PIN").ok()?;
    let ok = v
        .split_once(',')
        .is_some_and(|(n, m)| n.parse::<u16>().is_ok() && m.parse::<u16>().is_ok());
    if !ok {
        eprintln!("EBPF_BENCH_PIN={v:?}: two CPU numbers, client then server, e.g. 0,1");
        std::process::exit(2);
    }
    Some(v)
}

#[derive(Clone, Copy, PartialEq)]
enum Traffic {
    Tcp,
    Udp64,
}

/// One iperf3 client run; returns bits per second (TCP: received; UDP: sent, as iperf3's
/// end.sum reports it).
fn client(secs: u32, t: Traffic) -> f64 {
    let mut args = vec![
        "-c".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        PORT.into(),
        "-t".into(),
        secs.to_string(),
        "-J".into(),
    ];
    if t == Traffic::Udp64 {
        args.extend(["-u", "-b", "0", "-l", "64"].map(String::from));
    }
    if let Some(cpus) = pin() {
        // `-A n,m`: the client on CPU n, the server on CPU m.
        args.extend(["-A".to_string(), cpus]);
    }
    let out = Command::new("iperf3")
        .args(&args)
        .output()
        .expect("iperf3 -c");
    let json = String::from_utf8_lossy(&out.stdout);
    // Minimal extraction: the last "bits_per_second" in end.sum_received / end.sum.
    let key = match t {
        Traffic::Udp64 => "\"sum\":",
        Traffic::Tcp => "\"sum_received\":",
    };
    let tail = json.rfind(key).map(|i| &json[i..]).unwrap_or("");
    tail.split("\"bits_per_second\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bits_per_second in iperf3 output: {json}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What the reader saw while the filter was attached.
#[derive(Default)]
struct ReadStats {
    reads: u64,
    cpu: Duration,
    entries: u64,
    packets: u64,
    lost: u64,
    evicted: u64,
}

/// The collector's reader in a thread: the table and totals every `every`.
fn reader(
    mut src: EbpfSource,
    every: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<ReadStats>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = std::thread::spawn(move || {
        let mut st = ReadStats::default();
        loop {
            let last = stop2.load(Ordering::Relaxed);
            let t = thread_cpu();
            let n = src.read_flows().expect("read flows");
            st.cpu += thread_cpu() - t;
            st.reads += 1;
            st.entries += n as u64;
            if last {
                break;
            }
            let until = Instant::now() + every;
            while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let f = src.flows();
        st.packets = src.stats.flow_packets;
        st.lost = f.lost_packets;
        st.evicted = f.evicted_flows;
        st
    });
    (stop, h)
}

/// One run with the filter attached and read; returns (bits/s, what the reader saw).
fn with_filter(secs: u32, t: Traffic, every: Duration) -> (f64, ReadStats) {
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program(), &init())
        .expect("attach the flow program");
    if std::env::var_os("EBPF_BENCH_NO_READER").is_some() {
        // Variants of the program whose maps the collector does not read (BENCHMARKS.md).
        return (client(secs, t), ReadStats::default());
    }
    let src = EbpfSource::from_response(&att.response, att.fds).expect("flow maps");
    let (stop, h) = reader(src, every);
    let bps = client(secs, t);
    stop.store(true, Ordering::Relaxed);
    let st = h.join().expect("reader");
    drop(mgr);
    (bps, st)
}

/// CPU of one `read_flows` (median of 21) with `n` flows in the table, and the entries read.
fn read_cost(n: u16) -> (Duration, usize) {
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program(), &init())
        .expect("attach the flow program");
    let mut src = EbpfSource::from_response(&att.response, att.fds).expect("flow maps");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for p in 0..n {
        let _ = tx.send_to(&[0u8; 8], ("127.0.0.1", 30_000 + p));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut cpu = Vec::new();
    let mut entries = 0;
    for _ in 0..21 {
        let t = thread_cpu();
        entries = src.read_flows().expect("read flows");
        cpu.push((thread_cpu() - t).as_secs_f64());
    }
    drop(mgr);
    (Duration::from_secs_f64(median(cpu)), entries)
}

fn main() {
    pin(); // a bad value ends the run before any measurement
    let no_reader = std::env::var_os("EBPF_BENCH_NO_READER").is_some();
    for n in [1000u16, 10_000].into_iter().filter(|_| !no_reader) {
        let (cpu, entries) = read_cost(n);
        println!(
            "flow table read with {n} flows sent ({entries} entries): {:.0} us CPU per read \
             (median of 21)",
            cpu.as_secs_f64() * 1e6
        );
    }
    let arg = |i: usize, d: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let secs = arg(1, 5) as u32;
    let rounds = arg(2, 5) as usize;
    let every = Duration::from_millis(arg(3, 1000));
    let load_before = loadavg();
    let srv = server();
    let mut rows: Vec<(Traffic, Vec<f64>, Vec<f64>)> = vec![
        (Traffic::Tcp, vec![], vec![]),
        (Traffic::Udp64, vec![], vec![]),
    ];
    let mut reads = ReadStats::default();
    let mut filtered = Duration::ZERO;
    for round in 0..rounds {
        for (t, without, with) in rows.iter_mut() {
            let mut one = |on: bool| {
                if on {
                    let t0 = Instant::now();
                    let (b, st) = with_filter(secs, *t, every);
                    filtered += t0.elapsed();
                    reads.reads += st.reads;
                    reads.cpu += st.cpu;
                    reads.entries += st.entries;
                    reads.packets += st.packets;
                    reads.lost += st.lost;
                    reads.evicted += st.evicted;
                    with.push(b);
                } else {
                    without.push(client(secs, *t));
                }
            };
            // Alternate which goes first, so a drift of the machine does not favour one.
            let first_on = round % 2 == 1;
            one(first_on);
            one(!first_on);
        }
        eprintln!("round {} of {rounds} done, load {}", round + 1, loadavg());
    }
    drop(srv);

    println!(
        "loopback iperf3, {rounds} interleaved rounds of {secs} s runs per case (order \
         alternating); load average before {load_before}, after {}",
        loadavg()
    );
    for (t, without, with) in &rows {
        let ratios: Vec<f64> = without.iter().zip(with).map(|(a, b)| b / a).collect();
        let per_round: Vec<f64> = ratios
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect();
        match t {
            Traffic::Tcp => println!(
                "TCP           without {:.2} Gbit/s, with {:.2} Gbit/s, median ratio {:.3} \
                 (per round {per_round:?})",
                median(without.clone()) / 1e9,
                median(with.clone()) / 1e9,
                median(ratios.clone()),
            ),
            Traffic::Udp64 => println!(
                "UDP 64 B      without {:.0} datagrams/s, with {:.0}, median ratio {:.3} \
                 (per round {per_round:?})",
                median(without.clone()) / 8.0 / 64.0,
                median(with.clone()) / 8.0 / 64.0,
                median(ratios.clone()),
            ),
        }
    }
    println!(
        "flow table:   {} reads in {:.1} s with the filter, {:.0} entries per read, {:.1} us CPU \
         per read; {} packets counted in the kernel, {} lost (evicted unread or no room), {} \
         flows evicted",
        reads.reads,
        filtered.as_secs_f64(),
        reads.entries as f64 / reads.reads.max(1) as f64,
        reads.cpu.as_secs_f64() * 1e6 / reads.reads.max(1) as f64,
        reads.packets,
        reads.lost,
        reads.evicted,
    );
}
