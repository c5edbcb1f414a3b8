//! One full collection cycle (host, processes with fd counts, containers, disks, network; no
//! privhelper) over this host's processes plus N sleeping children, N = 100 and 2,000, each
//! record encoded into batch frames as the collector sends them: CPU time per cycle
//! (getrusage of this process, user + system), wall time, peak RSS (VmHWM). Then the hot path
//! alone, hand-written /proc/PID/stat vs the `procfs` crate for the same fields.
//!
//! `cargo bench -p vigil-collector --bench cycle` (plain binary, prints a table).
//!
//! `-- --groups all` turns on every group issue 12 added (`--without a,b` leaves those out;
//! `--connected` holds one established TCP connection, see below) (disk I/O, paging, pressure,
//! connections, Kubernetes names, per-process faults and context switches); `-- --busy` makes
//! the 2,000 children wake every 500 ms (bench/loadgen.c, 20 µs of CPU each time) and waits
//! 600 ms between cycles, so every child has run since the last cycle (the worst case for
//! anything read only for processes that ran). The same file builds against the code before
//! issue 12 (feature names it does not know are ignored there), which is how BENCHMARKS.md
//! compares the two.

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_ipc_proto::Feature;

use vigil_collector::batch::Batcher;
use vigil_collector::cycle::Cycle;
use vigil_ipc_proto::{Channel, CollectorConfig, InitConfig, Role};

fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

fn vm_hwm_kb() -> u64 {
    vigil_testkit::proc_status_kib("self", "VmHWM").unwrap_or(0)
}

/// Every feature issue 12 added, on, but those in `without`; without `--groups all`, only what
/// the bench had before.
fn features(all: bool, without: &[String]) -> Vec<Feature> {
    let mut f = vec![Feature::ProcessFds];
    if all {
        for x in [
            Feature::ProcessMetrics,
            Feature::DiskIo,
            Feature::PagingMetrics,
            Feature::PressureMetrics,
            Feature::ConnectionMetrics,
            Feature::K8sNames,
        ] {
            if !without.iter().any(|w| w == x.as_str()) {
                f.push(x);
            }
        }
    }
    f
}

fn init(all: bool, without: &[String]) -> InitConfig {
    vigil_testkit::init(Role::Collector)
        .hostname("bench")
        .features(&features(all, without))
        .collector(CollectorConfig {
            netns: false,
            ..Default::default()
        })
        .build()
}

fn spawn(n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect()
}

/// bench/loadgen.c with `n` busy-ish children (each 20 µs of CPU every 500 ms); killed with
/// its process group when the returned child is killed (the children die with their parent).
fn spawn_busy(n: usize) -> Child {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/loadgen.c");
    let bin = std::env::temp_dir().join(format!("vigil-cycle-loadgen-{}", std::process::id()));
    let ok = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(src)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "gcc bench/loadgen.c");
    let mut c = Command::new(&bin)
        .args(["0", &n.to_string(), "20", "500"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("loadgen");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("loadgen ready");
    assert!(line.starts_with("ready"), "{line}");
    c
}

/// `k` cycles after a warm-up one: (processes, descriptors kept, median CPU ms and wall ms of
/// one cycle, records per cycle).
fn measure(
    all: bool,
    without: &[String],
    cached: bool,
    busy: bool,
    k: usize,
) -> (u64, usize, f64, f64, u64) {
    let init = init(all, without);
    let mut cy = Cycle::new(&init).unwrap();
    if !cached {
        cy.procs.set_fd_budget(0);
    }
    let (ph, _peer) = Channel::pair().unwrap();
    let mut ph = vigil_collector::privclient::PrivClient::greeted(ph);
    let mut batcher = Batcher::new(256, 64);
    // Warm caches (command lines, users, cached descriptors).
    batcher.supersede();
    cy.collect(&mut ph, &mut batcher);
    batcher.seal();
    let mut cpu = Vec::with_capacity(k);
    let mut wall = Vec::with_capacity(k);
    let r0 = cy.stats.records;
    for _ in 0..k {
        if busy {
            // Every child runs at least once before the next cycle.
            std::thread::sleep(Duration::from_millis(600));
        }
        let c0 = cpu_time();
        let w0 = Instant::now();
        // Each cycle's frames supersede the last ones (nobody sends them here).
        batcher.supersede();
        cy.collect(&mut ph, &mut batcher);
        batcher.seal();
        black_box(batcher.unsent());
        cpu.push(cpu_time() - c0);
        wall.push(w0.elapsed());
    }
    let records = (cy.stats.records - r0) / k as u64;
    // The median cycle: a shared machine's other work lands in a few cycles, not all.
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    (
        cy.stats.processes,
        cy.procs.cached(),
        median(&mut cpu),
        median(&mut wall),
        records,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let all = args.windows(2).any(|w| w[0] == "--groups" && w[1] == "all");
    let busy = args.iter().any(|a| a == "--busy");
    // `--connected`: one established loopback TCP connection held open, so connection counts
    // walk the kernel's established hash (a host with only listeners skips that walk).
    let _conn = args.iter().any(|a| a == "--connected").then(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let s = l.accept().expect("accept");
        (l, c, s)
    });
    // `--without connection_metrics,...`: all groups but these.
    let without: Vec<String> = args
        .windows(2)
        .find(|w| w[0] == "--without")
        .map(|w| w[1].split(',').map(String::from).collect())
        .unwrap_or_default();
    let k = 20;
    // As the collector does at start (its seccomp filter only reads limits afterwards).
    let limit = vigil_collector::procs::raise_fd_limit().unwrap_or(1024);
    let mut children = Vec::new();
    let mut loadgen = None;
    println!(
        "groups: {}, children: {}",
        if all {
            "all (issue 12)"
        } else {
            "as before issue 12"
        },
        if busy {
            "busy (wake every 500 ms, 600 ms between cycles)"
        } else {
            "sleeping"
        }
    );
    println!(
        "{:>6} {:>6} {:>10} {:>14} {:>14} {:>8} {:>12}",
        "extra", "procs", "fds_kept", "cpu_ms(med)", "wall_ms(med)", "records", "VmHWM_kB"
    );
    let sizes: &[usize] = if busy { &[2000] } else { &[100, 2000] };
    for &n in sizes {
        if busy {
            loadgen = Some(spawn_busy(n));
        } else {
            children.extend(spawn(n - children.len()));
        }
        std::thread::sleep(Duration::from_millis(300));
        // Descriptors kept between cycles (the default, as the RLIMIT_NOFILE allows), then
        // none: every process opened, read and closed by path each cycle.
        for cached in [true, false] {
            let (procs, kept, cpu, wall, records) = measure(all, &without, cached, busy, k);
            println!(
                "{:>6} {:>6} {:>10} {:>14.2} {:>14.2} {:>8} {:>12}",
                n,
                procs,
                kept,
                cpu,
                wall,
                records,
                vm_hwm_kb()
            );
        }
    }
    println!("(RLIMIT_NOFILE {limit})");
    if let Some(mut l) = loadgen {
        let _ = l.kill();
        let _ = l.wait();
        return;
    }

    // Hot path: the stat fields of every process, hand-written vs procfs.
    let rounds = 20;
    let mut buf = Vec::with_capacity(4096);
    let mut path = std::path::PathBuf::new();
    let c0 = cpu_time();
    let mut sum = 0u64;
    for _ in 0..rounds {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            path.clear();
            path.push("/proc");
            path.push(name);
            path.push("stat");
            if vigil_collector::util::read_into(&path, &mut buf).is_ok()
                && let Ok(s) = vigil_collector::procs::parse_stat(&buf)
            {
                sum = sum.wrapping_add(
                    s.utime
                        + s.stime
                        + s.vsize
                        + s.rss as u64
                        + s.starttime
                        + u64::from(s.ppid)
                        + s.num_threads as u64
                        + u64::from(s.state),
                );
            }
        }
    }
    let hand = (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64;
    let c0 = cpu_time();
    for _ in 0..rounds {
        for p in procfs::process::all_processes().unwrap().flatten() {
            if let Ok(s) = p.stat() {
                sum = sum.wrapping_add(
                    s.utime
                        + s.stime
                        + s.vsize
                        + s.rss
                        + s.starttime
                        + s.ppid as u64
                        + s.num_threads as u64
                        + s.state as u64,
                );
            }
        }
    }
    let pf = (cpu_time() - c0).as_secs_f64() * 1000.0 / rounds as f64;
    black_box(sum);
    println!(
        "stat of every process ({} procs): hand-written {hand:.2} ms CPU, procfs {pf:.2} ms CPU, ratio {:.2}",
        children.len(),
        pf / hand
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
