//! Benchmark (root): loopback iperf3 throughput without and with a flow program attached
//! (flows counted in the kernel, the table read by the collector's reader), TCP and 64-byte UDP
//! floods, in one run: rounds interleaved, the order of "without" and "with" alternating per
//! round; per-round ratios, their medians and the 95 % interval of each median (bootstrap)
//! printed, with the machine's load around the run.
//!
//! `cargo run --release -p vigil-privhelper --example ebpf_bench -- [seconds] [rounds] [read_ms]`
//! Needs iperf3 in PATH. First it measures what one read of the flow table costs the collector
//! with 1,000 and 10,000 flows in it (one datagram to each of that many ports). While the filter is attached a thread reads the flow table and totals
//! every `read_ms` (default 1000; the collector reads every `collector.flow_evict_ms`, 10 s by
//! default) exactly as the collector does (`EbpfSource::read_flows`), and its CPU per read is
//! printed too (`EBPF_BENCH_NO_READER=1`: no reader, for variants of the program whose maps
//! the collector cannot read). `EBPF_BENCH_SOURCE`: the flow programs, as `collector.
//! flows_source` names them, comma-separated, each run beside no program in every round (the
//! order rotating): `tracepoint` (the default source), `socket` (the socket filter, what the
//! bench measures without the variable), `tc` — the tc programs (tcx links) on `lo`, ingress
//! and egress, so each loopback packet runs two programs and is counted twice (what
//! `flows_source = "tc"` with `flow_interfaces = ["lo"]` costs; `EBPF_BENCH_TC_LO=1` says the
//! same). `EBPF_BENCH_PIN=n,m`: the iperf3 client pinned to CPU n and the server to CPU m
//! (iperf3 `-A`), so where the scheduler puts the two does not vary between runs.
//! `EBPF_BENCH_PROG_NS=1`: the kernel's BPF statistics on for the run (`BPF_ENABLE_STATS`,
//! which adds two clock reads to every program run, so the throughput ratios of such a run are
//! not the budget's), and the ns per run of each flow program printed per traffic kind.
//! `EBPF_BENCH_HOLD=secs`: no measurement; the first program is attached and read as in a run
//! for that long, then detached, so that a profiler (`perf record -a`) can watch traffic made
//! outside (BENCHMARKS.md, "where a datagram's time goes").

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vigil_collector::ebpf::EbpfSource;
use vigil_ipc_proto::{BpfProgram, CollectorConfig, Feature, InitConfig, Role};
use vigil_privhelper::bpf::BpfManager;

const PORT: &str = "5399";

/// The flow programs measured, each beside no program in every round (`EBPF_BENCH_SOURCE`,
/// comma-separated; `EBPF_BENCH_TC_LO`); anything else ends the run with one line.
fn programs() -> Vec<BpfProgram> {
    if std::env::var_os("EBPF_BENCH_TC_LO").is_some() {
        return vec![BpfProgram::FlowsTc];
    }
    let Ok(list) = std::env::var("EBPF_BENCH_SOURCE") else {
        return vec![BpfProgram::FlowsSocketFilter];
    };
    let mut v = Vec::new();
    for name in list.split(',') {
        let Some(p) = BpfProgram::flows_source(name) else {
            eprintln!("EBPF_BENCH_SOURCE={list:?}: {name:?} is not one of tracepoint, socket, tc");
            std::process::exit(2);
        };
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

fn init() -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .hostname("bench")
        .features(&[
            Feature::EbpfFlowsTracepoint,
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

/// The 95 % interval of the median of `v` by bootstrap (2,000 resamples, a fixed xorshift
/// seed so a run's numbers repeat): how far the median ratio could move with other rounds.
fn median_interval(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut meds: Vec<f64> = (0..2000)
        .map(|_| {
            let sample = (0..v.len())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v[(x % v.len() as u64) as usize]
                })
                .collect();
            median(sample)
        })
        .collect();
    meds.sort_by(|a, b| a.total_cmp(b));
    (meds[50], meds[1949])
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
/// The thread wakes once per read (a wait on the stop channel with a timeout), not to poll:
/// on two vCPUs a 64-byte flood's throughput moves with every extra wake-up.
fn reader(
    mut src: EbpfSource,
    every: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<ReadStats>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let mut st = ReadStats::default();
        let mut last = false;
        loop {
            let t = thread_cpu();
            let n = src.read_flows().expect("read flows");
            st.cpu += thread_cpu() - t;
            st.reads += 1;
            st.entries += n as u64;
            if last {
                break;
            }
            // Stopped (or the sender gone): one last read, so the totals include the run's end.
            last = !matches!(
                stopped.recv_timeout(every),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
        }
        let f = src.flows();
        st.packets = src.stats.flow_packets;
        st.lost = f.lost_packets;
        st.evicted = f.evicted_flows;
        st
    });
    (stop, h)
}

/// (program name, ns per run) of each program id, from the kernel's statistics (bpftool's
/// JSON: `"name":"...","run_time_ns":N,"run_cnt":N`).
fn prog_ns(ids: &[u32]) -> Vec<(String, f64)> {
    let field = |json: &str, key: &str| -> Option<String> {
        let rest = json.split(&format!("\"{key}\":")).nth(1)?;
        let v = rest.split([',', '}']).next()?.trim().trim_matches('"');
        Some(v.to_string())
    };
    ids.iter()
        .filter_map(|id| {
            let out = Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string(), "-j"])
                .output()
                .ok()?;
            let json = String::from_utf8_lossy(&out.stdout);
            let ns: f64 = field(&json, "run_time_ns")?.parse().ok()?;
            let runs: f64 = field(&json, "run_cnt")?.parse().ok()?;
            (runs > 0.0).then(|| (field(&json, "name").unwrap_or_default(), ns / runs))
        })
        .collect()
}

/// One run with the filter attached and read; returns (bits/s, what the reader saw, ns per
/// run of each program when `EBPF_BENCH_PROG_NS` is set).
fn with_filter(
    program: BpfProgram,
    secs: u32,
    t: Traffic,
    every: Duration,
) -> (f64, ReadStats, Vec<(String, f64)>) {
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program, &init())
        .expect("attach the flow program");
    let ns = |ids: &[u32]| {
        if std::env::var_os("EBPF_BENCH_PROG_NS").is_some() {
            prog_ns(ids)
        } else {
            Vec::new()
        }
    };
    if std::env::var_os("EBPF_BENCH_NO_READER").is_some() {
        // Variants of the program whose maps the collector does not read (BENCHMARKS.md).
        let bps = client(secs, t);
        return (bps, ReadStats::default(), ns(&att.prog_ids));
    }
    let src = EbpfSource::from_response(&att.response, att.fds).expect("flow maps");
    let (stop, h) = reader(src, every);
    let bps = client(secs, t);
    let _ = stop.send(());
    let st = h.join().expect("reader");
    let per_run = ns(&att.prog_ids);
    drop(mgr);
    (bps, st, per_run)
}

/// `program` attached and read every second for `secs`, then detached (`EBPF_BENCH_HOLD`).
fn hold(program: BpfProgram, secs: Duration) {
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program, &init())
        .expect("attach the flow program");
    let src = EbpfSource::from_response(&att.response, att.fds).expect("flow maps");
    let (stop, h) = reader(src, Duration::from_secs(1));
    println!("{program:?} attached for {} s", secs.as_secs());
    std::thread::sleep(secs);
    let _ = stop.send(());
    let st = h.join().expect("reader");
    println!("{} packets counted, {} lost", st.packets, st.lost);
}

/// CPU of one `read_flows` (median of 21) with `n` flows in the table, and the entries read.
fn read_cost(program: BpfProgram, n: u16) -> (Duration, usize) {
    let mut mgr = BpfManager::new();
    let att = mgr
        .attach(program, &init())
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

/// One traffic kind's throughputs: without a program, and with each program measured.
struct Row {
    t: Traffic,
    without: Vec<f64>,
    with: Vec<Vec<f64>>,
}

impl Traffic {
    fn name(self) -> &'static str {
        match self {
            Traffic::Tcp => "TCP",
            Traffic::Udp64 => "UDP 64 B",
        }
    }

    /// A throughput in this traffic's unit.
    fn show(self, bps: f64) -> String {
        match self {
            Traffic::Tcp => format!("{:.2} Gbit/s", bps / 1e9),
            Traffic::Udp64 => format!("{:.0} datagrams/s", bps / 8.0 / 64.0),
        }
    }
}

fn main() {
    // Bad values end the run before any measurement.
    pin();
    let progs = programs();
    println!("flow programs: {progs:?}");
    if let Some(v) = std::env::var_os("EBPF_BENCH_HOLD") {
        let Some(secs) = v.to_str().and_then(|v| v.parse().ok()) else {
            eprintln!("EBPF_BENCH_HOLD={v:?}: a number of seconds");
            std::process::exit(2);
        };
        hold(progs[0], Duration::from_secs(secs));
        return;
    }
    let no_reader = std::env::var_os("EBPF_BENCH_NO_READER").is_some();
    for &p in &progs {
        for n in [1000u16, 10_000].into_iter().filter(|_| !no_reader) {
            let (cpu, entries) = read_cost(p, n);
            println!(
                "{p:?}: flow table read with {n} flows sent ({entries} entries): {:.0} us CPU \
                 per read (median of 21)",
                cpu.as_secs_f64() * 1e6
            );
        }
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
    // Held for the run: the kernel counts each program's runs and time while it is open.
    let _stats = std::env::var_os("EBPF_BENCH_PROG_NS").map(|_| {
        aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS (root)")
    });
    let srv = server();
    let mut rows: Vec<Row> = [Traffic::Tcp, Traffic::Udp64]
        .into_iter()
        .map(|t| Row {
            t,
            without: Vec::new(),
            with: vec![Vec::new(); progs.len()],
        })
        .collect();
    // (traffic, program name) -> ns per run, one value per round.
    let mut per_run: Vec<(Traffic, String, Vec<f64>)> = Vec::new();
    let mut reads: Vec<ReadStats> = progs.iter().map(|_| ReadStats::default()).collect();
    let mut filtered = vec![Duration::ZERO; progs.len()];
    // Case 0 is no program, case i the (i-1)-th program.
    let cases = progs.len() + 1;
    for round in 0..rounds {
        for row in rows.iter_mut() {
            // The order rotates every round and reverses every other pass, so a drift of the
            // machine favours no case.
            let mut order: Vec<usize> = (0..cases).map(|i| (i + round) % cases).collect();
            if (round / cases) % 2 == 1 {
                order.reverse();
            }
            for case in order {
                let Some(i) = case.checked_sub(1) else {
                    row.without.push(client(secs, row.t));
                    continue;
                };
                let t0 = Instant::now();
                let (b, st, ns) = with_filter(progs[i], secs, row.t, every);
                filtered[i] += t0.elapsed();
                for (name, v) in ns {
                    match per_run
                        .iter_mut()
                        .find(|(k, n, _)| *k == row.t && *n == name)
                    {
                        Some((_, _, vs)) => vs.push(v),
                        None => per_run.push((row.t, name, vec![v])),
                    }
                }
                let r = &mut reads[i];
                r.reads += st.reads;
                r.cpu += st.cpu;
                r.entries += st.entries;
                r.packets += st.packets;
                r.lost += st.lost;
                r.evicted += st.evicted;
                row.with[i].push(b);
            }
        }
        eprintln!("round {} of {rounds} done, load {}", round + 1, loadavg());
    }
    drop(srv);

    println!(
        "loopback iperf3, {rounds} interleaved rounds of {secs} s runs per case (order \
         rotating); load average before {load_before}, after {}",
        loadavg()
    );
    for row in &rows {
        for (p, with) in progs.iter().zip(&row.with) {
            let ratios: Vec<f64> = row.without.iter().zip(with).map(|(a, b)| b / a).collect();
            let per_round: Vec<f64> = ratios
                .iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect();
            let (lo, hi) = median_interval(&ratios);
            println!(
                "{:<9} {p:?}: without {}, with {}, median ratio {:.3} (95 % interval of the \
                 median {lo:.3}-{hi:.3}; per round {per_round:?})",
                row.t.name(),
                row.t.show(median(row.without.clone())),
                row.t.show(median(with.clone())),
                median(ratios.clone()),
            );
        }
    }
    for (t, name, vs) in &per_run {
        println!(
            "{:<9} {name}: {:.1} ns per run (median of {}, BPF_ENABLE_STATS)",
            t.name(),
            median(vs.clone()),
            vs.len()
        );
    }
    for ((p, r), took) in progs.iter().zip(&reads).zip(&filtered) {
        println!(
            "{p:?} flow table: {} reads in {:.1} s with the program, {:.0} entries per read, \
             {:.1} us CPU per read; {} packets counted in the kernel, {} lost (evicted unread \
             or no room), {} flows evicted",
            r.reads,
            took.as_secs_f64(),
            r.entries as f64 / r.reads.max(1) as f64,
            r.cpu.as_secs_f64() * 1e6 / r.reads.max(1) as f64,
            r.packets,
            r.lost,
            r.evicted,
        );
    }
}
