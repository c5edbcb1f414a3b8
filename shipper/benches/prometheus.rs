//! Prometheus endpoint benchmark (run: `cargo bench -p vigil-shipper --bench prometheus`;
//! `cargo test --benches` runs a short smoke).
//!
//! One collection cycle of a host with N processes is made of N process records (command lines
//! of 40–120 bytes) and the other records a host like the bench harness's load has: the host
//! (cpu, memory, load: 21 series), 5 filesystems (30), 4 interfaces (32), 12 cgroups (144), 400
//! flows (800), the shipper's own metrics (12). For N = 2,000 and 10,000:
//! 1. store memory: bytes the store holds after two cycles, counted by a counting global
//!    allocator (requested bytes, and the number of blocks: glibc adds about 16 bytes to each);
//! 2. ingest: time to feed one cycle into the store, per record;
//! 3. render: one whole scrape rendered in 64 KiB pieces, text format and OpenMetrics: time,
//!    bytes, series, and the most memory the rendering had allocated at once;
//! 4. HTTP: scrapes through the endpoint on 127.0.0.1 (a client thread, the endpoint pumped on
//!    this thread as the run loop does), time per scrape.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use vigil_ipc_proto::*;
use vigil_shipper::convert::ResourceDefaults;
use vigil_shipper::export::prometheus::Endpoint;
use vigil_shipper::export::prometheus::store::{Cursor, Format, Store};
use vigil_shipper::stats::Stats;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(n: isize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        // SAFETY: as the caller's contract.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed))
}

const NOW: u64 = 1_700_000_010_000_000_000;

fn process(i: u32) -> Record {
    Record::Process(Box::new(ProcessRecord {
        time_unix_nano: NOW,
        start_time_unix_nano: NOW - 1_000_000_000_000,
        pid: 1000 + i,
        ppid: 1,
        uid: 1000 + i % 7,
        gid: 100,
        state: b'S',
        threads: 1 + i % 4,
        cpu_user_ns: 1_250_000_000 + u64::from(i) * 10_000_000,
        cpu_system_ns: 500_000_000,
        memory_rss_bytes: 1_400_000 + u64::from(i) * 4096,
        memory_virtual_bytes: 2_600_000,
        open_fds: Some(3 + i % 50),
        sockets: None,
        executable_name: format!("worker-{}", i % 40),
        command_args: format!(
            "/usr/lib/app/worker-{}\0--config\0/etc/app/{i}.toml\0",
            i % 40
        ) + &"x".repeat((i % 80) as usize),
        user_name: format!("user{}", i % 7),
        group_name: "users".into(),
        ..ProcessRecord::default()
    }))
}

fn m(name: &str, unit: &str, counter: bool, v: f64, attrs: Vec<KeyValue>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        kind: if counter {
            MetricKind::Sum { monotonic: true }
        } else {
            MetricKind::Gauge
        },
        start_time_unix_nano: NOW - 1,
        time_unix_nano: NOW,
        value: MetricValue::F64(v),
        attributes: attrs,
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue::str(k, v)
}

/// Everything but the processes: host, filesystems, interfaces, cgroups, flows, self-metrics.
fn others() -> Vec<Record> {
    let host = vec![kv("host.name", "bench-host")];
    let mut out = Vec::new();
    let mut h = Vec::new();
    for mode in [
        "user",
        "nice",
        "system",
        "idle",
        "wait",
        "interrupt",
        "softirq",
        "steal",
    ] {
        h.push(m(
            "system.cpu.time",
            "s",
            true,
            10.0,
            vec![kv("cpu.mode", mode)],
        ));
    }
    for st in [
        "used",
        "free",
        "buffered",
        "cached",
        "slab_reclaimable",
        "slab_unreclaimable",
    ] {
        h.push(m(
            "system.memory.usage",
            "By",
            false,
            1e9,
            vec![kv("system.memory.state", st)],
        ));
    }
    for n in ["1m", "5m", "15m"] {
        h.push(m(
            &format!("system.cpu.load_average.{n}"),
            "{thread}",
            false,
            0.5,
            vec![],
        ));
    }
    for n in [
        "system.memory.limit",
        "system.linux.memory.available",
        "system.uptime",
        "system.boot_time",
    ] {
        h.push(m(n, "By", false, 1.0, vec![]));
    }
    out.push(Record::Metrics {
        resource: host.clone(),
        metrics: h,
    });
    let mut fs = Vec::new();
    for d in 0..5 {
        for st in ["used", "free", "reserved"] {
            for name in ["system.filesystem.usage", "system.filesystem.inodes.usage"] {
                fs.push(m(
                    name,
                    "By",
                    false,
                    1.0,
                    vec![
                        kv("system.device", &format!("/dev/vd{d}")),
                        kv("system.filesystem.mountpoint", &format!("/mnt/{d}")),
                        kv("system.filesystem.type", "ext4"),
                        kv("system.filesystem.state", st),
                    ],
                ));
            }
        }
    }
    out.push(Record::Metrics {
        resource: host.clone(),
        metrics: fs,
    });
    let mut net = Vec::new();
    for i in ["lo", "eth0", "veth1", "docker0"] {
        for dir in ["receive", "transmit"] {
            for name in [
                "system.network.io",
                "system.network.packets",
                "system.network.errors",
                "system.network.dropped",
            ] {
                net.push(m(
                    name,
                    "By",
                    true,
                    1.0,
                    vec![
                        kv("network.interface.name", i),
                        kv("network.io.direction", dir),
                    ],
                ));
            }
        }
    }
    out.push(Record::Metrics {
        resource: host.clone(),
        metrics: net,
    });
    for c in 0..12 {
        let id = format!("{c:064x}");
        let resource = vec![
            kv("host.name", "bench-host"),
            kv("linux.cgroup.path", &format!("/kubepods/pod{c}/{id}")),
            kv("linux.cgroup.version", "2"),
            kv("container.id", &id),
            kv("k8s.pod.uid", &format!("0000-{c}")),
        ];
        let metrics = (0..12)
            .map(|k| {
                m(
                    &format!("container.metric{k}"),
                    "By",
                    k % 2 == 0,
                    1.0,
                    vec![],
                )
            })
            .collect();
        out.push(Record::Metrics { resource, metrics });
    }
    for f in 0..400u32 {
        let attrs = vec![
            kv("network.transport", "tcp"),
            kv("network.type", "ipv4"),
            kv("source.address", &format!("10.0.{}.{}", f / 256, f % 256)),
            KeyValue::i64("source.port", 40000 + i64::from(f)),
            kv("destination.address", "10.1.0.1"),
            KeyValue::i64("destination.port", 443),
            kv("network.io.direction", "transmit"),
            kv("vigil.flow.source", "socket"),
            kv("network.interface.name", "eth0"),
        ];
        out.push(Record::Metrics {
            resource: host.clone(),
            metrics: vec![
                m("network.flow.bytes", "By", true, 1e6, attrs.clone()),
                m("network.flow.packets", "{packet}", true, 1e3, attrs),
            ],
        });
    }
    let own = (0..12)
        .map(|k| {
            m(
                &format!("vigil.shipper.counter{k}"),
                "{record}",
                true,
                1.0,
                vec![],
            )
        })
        .collect();
    out.push(Record::Metrics {
        resource: vec![kv("service.name", "vigil")],
        metrics: own,
    });
    out
}

fn cycle(n: u32) -> Vec<Record> {
    let mut v: Vec<Record> = (0..n).map(process).collect();
    v.extend(others());
    v
}

fn defaults() -> ResourceDefaults {
    ResourceDefaults::new("bench-host")
}

/// Render a whole scrape in CHUNK pieces, as a connection does (the piece sent, then cleared).
fn render(store: &mut Store, fmt: Format) -> (usize, usize) {
    let mut cur = Cursor::default();
    let mut out = String::new();
    let (mut bytes, mut series) = (0, 0);
    loop {
        let done = store.render(
            fmt,
            &mut cur,
            &mut out,
            vigil_shipper::export::prometheus::CHUNK,
        );
        bytes += out.len();
        series += out.lines().filter(|l| !l.starts_with('#')).count();
        out.clear();
        if done {
            return (bytes, series);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn store_bench(n: u32, reps: usize) {
    let t0 = Instant::now();
    let records = cycle(n);
    let (b0, k0) = live();
    let mut store = Store::new(&defaults(), Duration::from_secs(3), t0);
    for r in records.iter().cloned() {
        store.ingest(r, t0);
    }
    let mut ingest = Vec::new();
    for _ in 0..reps {
        let batch = records.clone();
        let t = Instant::now();
        for r in batch {
            store.ingest(r, t0);
        }
        ingest.push(t.elapsed().as_secs_f64());
    }
    let (b1, k1) = live();
    let (procs, series) = store.len();
    println!(
        "N={n}: store holds {procs} processes + {series} other series: {:.0} KiB requested in {} blocks (≈ {:.0} KiB with glibc's 16 B a block)",
        (b1 - b0) as f64 / 1024.0,
        k1 - k0,
        ((b1 - b0) + 16 * (k1 - k0)) as f64 / 1024.0
    );
    println!(
        "N={n}: ingest one cycle ({} records): median {:.2} ms, {:.0} ns/record",
        records.len(),
        median(ingest.clone()) * 1e3,
        median(ingest) * 1e9 / records.len() as f64
    );
    for fmt in [Format::Text, Format::OpenMetrics] {
        let mut times = Vec::new();
        let mut shape = (0, 0);
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        for _ in 0..reps {
            let t = Instant::now();
            shape = render(&mut store, fmt);
            times.push(t.elapsed().as_secs_f64());
        }
        println!(
            "N={n}: render {fmt:?}: median {:.1} ms per scrape, {:.2} MB, {} series, {:.0} KiB allocated at most while rendering",
            median(times) * 1e3,
            shape.0 as f64 / 1e6,
            shape.1,
            (PEAK.load(Ordering::Relaxed) - base) as f64 / 1024.0
        );
    }
}

/// Scrapes through the endpoint: a client thread, the endpoint pumped here.
fn http_bench(n: u32, scrapes: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let now = Instant::now();
    let mut ep = Endpoint::new(
        OwnedFd::from(listener),
        &defaults(),
        Duration::from_secs(60),
        now,
    )
    .unwrap();
    for r in cycle(n) {
        ep.ingest(r, now);
    }
    let client = std::thread::spawn(move || {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..scrapes {
            let t = Instant::now();
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n")
                .unwrap();
            let mut body = Vec::new();
            s.read_to_end(&mut body).unwrap();
            times.push(t.elapsed().as_secs_f64());
            bytes = body.len();
        }
        (times, bytes)
    });
    let mut stats = Stats::default();
    while !client.is_finished() {
        let wake = ep.step(Instant::now(), &mut stats);
        let mut fds: Vec<PollFd> = Vec::new();
        ep.poll_fds(&mut fds);
        let ms = wake.map_or(100, |w| {
            w.saturating_duration_since(Instant::now())
                .as_millis()
                .min(100)
        }) as u16;
        let _ = poll(&mut fds, ms);
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        ep.handle(&ready, Instant::now(), &mut stats);
    }
    let (times, bytes) = client.join().unwrap();
    println!(
        "N={n}: HTTP scrape on 127.0.0.1 (OpenMetrics, {:.2} MB): median {:.1} ms over {scrapes}; {} scrapes counted",
        bytes as f64 / 1e6,
        median(times) * 1e3,
        stats.prometheus_scrapes
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a quick smoke.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        store_bench(50, 1);
        http_bench(50, 1);
        return;
    }
    for n in [2_000, 10_000] {
        store_bench(n, 20);
        http_bench(n, 20);
    }
}
