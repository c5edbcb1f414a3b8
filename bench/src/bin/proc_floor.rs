//! `vigil-proc-floor K`: the floor of one per-process collection cycle — the raw /proc reads any
//! collector of vigil's field list needs, with nothing else (no parsing beyond splitting, no
//! records, no IPC): per process `stat` (cpu times, state, ppid, threads, start time, comm),
//! `statm` (rss, vms), `cmdline`, the owner uid (fstat of the /proc/PID directory) and the
//! number of entries in `fd/`. One reused buffer, `openat` relative to the /proc/PID dirfd.
//! Prints `{"cycle_cpu_ms": [...], "processes": n, "max_rss_kib": r}` (CPU by getrusage).
//! `--lean`: measure the cheapest variant instead of the full list; `--cached-fds`: the same
//! with /proc/PID and /proc/PID/stat kept open between cycles (pread). `--breakdown` first prints the median cost of each read alone on stderr, and of the cheapest
//! variant (stat + fd count from `stat("/proc/PID/fd").st_size`; statm is redundant with stat's
//! vsize/rss, cmdline can be cached per (pid, start time)).
//! Used by bench/run.py as the "proc-floor" row: a lower bound, not a peer.

use std::ffi::CString;
use std::time::Duration;

fn cpu() -> Duration {
    // SAFETY: getrusage fills a struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn read_at(dirfd: i32, name: &[u8], buf: &mut [u8]) -> usize {
    // SAFETY: name is NUL-terminated; buf is ours.
    unsafe {
        let fd = libc::openat(
            dirfd,
            name.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n.max(0) as usize
    }
}

fn count_fds(dirfd: i32) -> u64 {
    // SAFETY: plain libc directory iteration on a descriptor we open and close.
    unsafe {
        let fd = libc::openat(
            dirfd,
            c"fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let d = libc::fdopendir(fd);
        if d.is_null() {
            libc::close(fd);
            return 0;
        }
        let mut n: u64 = 0;
        while !libc::readdir64(d).is_null() {
            n += 1;
        }
        libc::closedir(d);
        n.saturating_sub(2)
    }
}

/// `parts`: bit 0 stat, 1 statm, 2 cmdline, 3 fd count by readdir, 4 fd count by stat()'s
/// st_size (Linux >= 6.2) (the dir open + fstat always run).
fn cycle(buf: &mut [u8], parts: u32) -> (usize, u64) {
    let mut procs = 0;
    let mut sink = 0u64;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = CString::new(format!("/proc/{s}")).unwrap();
        // SAFETY: NUL-terminated path; the descriptor is closed below.
        let dirfd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dirfd < 0 {
            continue;
        }
        // SAFETY: fstat into a struct we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        unsafe { libc::fstat(dirfd, &mut st) };
        sink += st.st_uid as u64;
        if parts & 1 != 0 {
            let n = read_at(dirfd, b"stat\0", buf);
            // fields after the comm: state ppid ... utime stime ... num_threads ... starttime
            if let Some(p) = buf[..n].iter().rposition(|&b| b == b')') {
                sink += buf[p..n]
                    .split(|&b| b == b' ')
                    .filter(|f| !f.is_empty())
                    .count() as u64;
            }
        }
        if parts & 2 != 0 {
            sink += read_at(dirfd, b"statm\0", buf) as u64;
        }
        if parts & 4 != 0 {
            sink += read_at(dirfd, b"cmdline\0", buf) as u64;
        }
        if parts & 8 != 0 {
            sink += count_fds(dirfd);
        }
        if parts & 16 != 0 {
            // Linux >= 6.2: stat() of /proc/PID/fd reports the number of open fds as st_size.
            // SAFETY: fstatat into a struct we own.
            let mut fst: libc::stat = unsafe { std::mem::zeroed() };
            unsafe { libc::fstatat(dirfd, c"fd".as_ptr(), &mut fst, 0) };
            sink += fst.st_size as u64;
        }
        // SAFETY: we opened it.
        unsafe { libc::close(dirfd) };
        procs += 1;
    }
    (procs, sink)
}

/// The cheapest variant with descriptors kept open across cycles: per known pid, `pread` of a
/// still-open /proc/PID/stat (no open/close) and `fstatat(dirfd, "fd")`; new pids are opened
/// once, vanished ones closed. Costs two descriptors per process (RLIMIT_NOFILE is raised as
/// far as it goes; past it, processes are read by path and counted in `by_path`).
fn cycle_cached(
    buf: &mut [u8],
    open: &mut std::collections::HashMap<u32, (i32, i32)>,
    by_path: &mut u64,
    budget: usize,
) -> (usize, u64) {
    let mut seen = std::collections::HashSet::with_capacity(open.len());
    let mut sink = 0u64;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let kept = match open.get(&pid) {
            Some(&fds) => Some(fds),
            // As vigil's collector: two descriptors per process while that leaves 256 free.
            None if open.len() >= budget => None,
            None => {
                let path = CString::new(format!("/proc/{pid}")).unwrap();
                // SAFETY: NUL-terminated paths; descriptors closed when the pid vanishes.
                let (d, s) = unsafe {
                    let d = libc::open(
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    let s = if d >= 0 {
                        libc::openat(d, c"stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
                    } else {
                        -1
                    };
                    (d, s)
                };
                if d >= 0 && s >= 0 {
                    open.insert(pid, (d, s));
                    Some((d, s))
                } else {
                    // SAFETY: closing what we opened.
                    unsafe {
                        if d >= 0 {
                            libc::close(d);
                        }
                    }
                    None
                }
            }
        };
        let Some((dirfd, statfd)) = kept else {
            // Out of descriptors (RLIMIT_NOFILE): read by path this cycle, as vigil does, so
            // every process is still counted.
            let path = CString::new(format!("/proc/{pid}")).unwrap();
            // SAFETY: NUL-terminated path; the descriptor is closed below.
            let d = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if d < 0 {
                continue;
            }
            sink += read_at(d, b"stat\0", buf) as u64;
            let mut fst: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstatat into our struct; closing our descriptor.
            unsafe {
                libc::fstatat(d, c"fd".as_ptr(), &mut fst, 0);
                libc::close(d);
            }
            sink += fst.st_size as u64;
            seen.insert(pid);
            *by_path += 1;
            continue;
        };
        // SAFETY: reads into our buffer / struct on descriptors we own.
        let n = unsafe { libc::pread(statfd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n <= 0 {
            continue; // vanished (ESRCH): dropped below
        }
        sink += buf[..n as usize].iter().filter(|&&b| b == b' ').count() as u64;
        let mut fst: libc::stat = unsafe { std::mem::zeroed() };
        unsafe { libc::fstatat(dirfd, c"fd".as_ptr(), &mut fst, 0) };
        sink += fst.st_size as u64 + fst.st_uid as u64;
        seen.insert(pid);
    }
    open.retain(|pid, (d, s)| {
        let keep = seen.contains(pid);
        if !keep {
            // SAFETY: ours.
            unsafe {
                libc::close(*d);
                libc::close(*s);
            }
        }
        keep
    });
    (seen.len(), sink)
}

fn main() {
    if std::env::args().any(|a| a == "--cached-fds") {
        // SAFETY: raising our own limit (to 1 Mi as root, else to the hard limit).
        unsafe {
            let mut rl: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
            let want = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                rl.rlim_cur = rl.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            }
        }
    }
    let k: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut buf = vec![0u8; 64 * 1024];
    if std::env::args().any(|a| a == "--breakdown") {
        // Median CPU ms per cycle of each part alone (the dir open + fstat is in every row).
        for (name, parts) in [
            ("open+fstat only", 0),
            ("+stat", 1),
            ("+statm", 2),
            ("+cmdline", 4),
            ("+fd count", 8),
            ("+fd st_size", 16),
            ("all", 15),
            ("stat+fd st_size", 17),
        ] {
            let mut v: Vec<f64> = (0..k)
                .map(|_| {
                    let c0 = cpu();
                    std::hint::black_box(cycle(&mut buf, parts));
                    (cpu() - c0).as_secs_f64() * 1e3
                })
                .collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            eprintln!("{name:16} {:8.2} ms/cycle", v[v.len() / 2]);
        }
    }
    let parts = if std::env::args().any(|a| a == "--lean") {
        17
    } else {
        15
    };
    let cached = std::env::args().any(|a| a == "--cached-fds");
    let mut open = std::collections::HashMap::new();
    let mut by_path = 0u64;
    let budget = {
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: getrlimit fills the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        (rl.rlim_cur.saturating_sub(256) / 2) as usize
    };
    let mut run = |buf: &mut [u8]| {
        if cached {
            cycle_cached(buf, &mut open, &mut by_path, budget)
        } else {
            cycle(buf, parts)
        }
    };
    run(&mut buf);
    let mut ms = Vec::new();
    let mut procs = 0;
    for _ in 0..k {
        let c0 = cpu();
        let (p, sink) = run(&mut buf);
        std::hint::black_box(sink);
        ms.push((cpu() - c0).as_secs_f64() * 1e3);
        procs = p;
    }
    // VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the parent's (Python's) peak.
    let rss = vigil_tests::proc_status_kib("self", "VmHWM").unwrap_or(0);
    let by_path = by_path / (k as u64 + 1);
    println!(
        "{}",
        serde_json::json!({"cycle_cpu_ms": ms, "processes": procs, "max_rss_kib": rss,
            "read_by_path_per_cycle": by_path})
    );
}
