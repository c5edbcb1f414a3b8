//! Issue 15: process metrics from the BPF task iterator, compared with /proc field by field on
//! a busy host — processes of several users (one whose real and effective ids differ),
//! threads (some spinning), zombies, a process in another pid namespace, and processes
//! starting and exiting all through the dumps. The program is the privhelper's own (loaded by
//! `vigil_privhelper::bpf::taskiter`), the decoder the collector's, and the iterators are
//! created the way the collector creates them: as uid 65534 holding no capability, with
//! NoNewPrivs (the measurement ARCHITECTURE.md cites). The real agent is then checked to
//! take its processes from the iterator, with no descriptors kept per process.
//!
//! Each /proc value is read once before and once after the dump: a counter must lie between
//! the two, anything else must equal one of them (a value that changed between the reads is
//! the only tolerance).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_collector::taskiter::{RECORD_SIZE, TaskRecord, decode_dump};

/// /proc's view of one process.
#[derive(Debug, Clone, PartialEq)]
struct ProcView {
    comm: Vec<u8>,
    state: u8,
    ppid: u32,
    minflt: u64,
    majflt: u64,
    utime: u64,
    stime: u64,
    threads: u32,
    starttime: u64,
    vsize: u64,
    rss: u64,
    ruid: u32,
    euid: u32,
    rgid: u32,
    egid: u32,
    fds: u32,
    vcsw: u64,
    ivcsw: u64,
}

fn read_view(pid: u32) -> Option<ProcView> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = std::fs::metadata(format!("/proc/{pid}/fd")).ok()?.len() as u32;
    let close = stat.iter().rposition(|&c| c == b')')?;
    let open = stat.iter().position(|&c| c == b'(')?;
    let comm = stat[open + 1..close].to_vec();
    let rest = std::str::from_utf8(&stat[close + 2..]).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let ids = |key: &str| -> Option<(u32, u32)> {
        let l = status.lines().find(|l| l.starts_with(key))?;
        let mut it = l[key.len()..].split_whitespace().map(|v| v.parse::<u32>());
        Some((it.next()?.ok()?, it.next()?.ok()?))
    };
    let kv = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    let (ruid, euid) = ids("Uid:")?;
    let (rgid, egid) = ids("Gid:")?;
    Some(ProcView {
        comm,
        state: *f.first()?.as_bytes().first()?,
        ppid: n(4)? as u32,
        minflt: n(10)?,
        majflt: n(12)?,
        utime: n(14)?,
        stime: n(15)?,
        threads: n(20)? as u32,
        starttime: n(22)?,
        vsize: n(23)?,
        rss: n(24)?,
        ruid,
        euid,
        rgid,
        egid,
        fds,
        vcsw: kv("voluntary_ctxt_switches:")?,
        ivcsw: kv("nonvoluntary_ctxt_switches:")?,
    })
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// /proc/PID/ns/pid unreadable even for root: a process this VM hides from inspection (its
/// pid 1 and that thread group); the task iterator does not visit those either.
fn hidden(pid: u32) -> bool {
    matches!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")),
        Err(e) if e.raw_os_error() == Some(libc::EACCES)
    )
}

/// Make one iterator from `link` in a forked child that first becomes uid/gid 65534 with no
/// supplementary group, no capability and NoNewPrivs — the collector's credentials — and
/// return the dump it read. `Err` carries the child's errno.
fn dump_unprivileged(link: &OwnedFd) -> Result<Vec<u8>, String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the kernel just made these; each is owned once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let link_fd = link.as_raw_fd();
    let helper = std::env::current_exe().unwrap();
    // A fresh process (exec of this test binary as the helper), so the fork is of a
    // single-threaded image: ids and capabilities are dropped by pre_exec-free syscalls in
    // the helper itself.
    let mut cmd = Command::new(helper);
    cmd.env("VIGIL_TASKITER_HELPER", link_fd.to_string())
        .env("VIGIL_TASKITER_OUT", w.as_raw_fd().to_string())
        .args(["--exact", "helper_dumps_unprivileged", "--nocapture"])
        .stdout(Stdio::null());
    inherit(&mut cmd, [link_fd, w.as_raw_fd()]);
    let mut child = cmd.spawn().unwrap();
    drop(w);
    let mut out = Vec::new();
    std::fs::File::from(r).read_to_end(&mut out).unwrap();
    let st = child.wait().unwrap();
    if !st.success() {
        return Err(format!(
            "helper failed: {st}: {}",
            String::from_utf8_lossy(&out)
        ));
    }
    let (tag, body) = out.split_at(1.min(out.len()));
    match tag {
        b"+" => Ok(body.to_vec()),
        _ => Err(String::from_utf8_lossy(body).into_owned()),
    }
}

/// The unprivileged side of [`dump_unprivileged`] (runs only when that sets the variables).
#[test]
fn helper_dumps_unprivileged() {
    let (Ok(link), Ok(out)) = (
        std::env::var("VIGIL_TASKITER_HELPER"),
        std::env::var("VIGIL_TASKITER_OUT"),
    ) else {
        return;
    };
    let link: i32 = link.parse().unwrap();
    // SAFETY: the parent passed this descriptor open for us.
    let mut out = unsafe { std::fs::File::from_raw_fd(out.parse().unwrap()) };
    // SAFETY: plain syscalls on this process's own credentials.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    for key in ["CapEff:", "CapPrm:", "CapAmb:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    // SAFETY: the parent passed this descriptor open for us; owned once here.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    let mut it = vigil_collector::taskiter::TaskIter::new(link);
    let mut recs = Vec::new();
    match it.dump(&mut recs) {
        Ok(_) => {
            let mut bytes = vec![b'+'];
            // Re-encode what was decoded: the parent compares records, not bytes.
            for r in &recs {
                bytes.extend_from_slice(&encode(r));
            }
            out.write_all(&bytes).unwrap();
        }
        Err(e) => out.write_all(format!("-{e}").as_bytes()).unwrap(),
    }
}

/// Back to the kernel's layout (only what the comparison reads).
fn encode(r: &TaskRecord) -> [u8; RECORD_SIZE] {
    let mut b = [0u8; RECORD_SIZE];
    let mut put32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put32(0, vigil_collector::taskiter::MAGIC);
    put32(4, r.pid);
    put32(8, r.ppid);
    put32(12, r.flags);
    put32(16, r.ruid);
    put32(20, r.euid);
    put32(24, r.rgid);
    put32(28, r.egid);
    put32(32, r.state);
    put32(36, r.exit_state);
    put32(40, r.nr_threads);
    put32(44, r.threads_seen);
    put32(152, r.fds);
    let mut put64 = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    for (off, v) in [
        (48, r.start_boottime_ns),
        (56, r.utime_ns),
        (64, r.stime_ns),
        (72, r.runtime_ns),
        (80, r.prev_utime_ns),
        (88, r.prev_stime_ns),
        (96, r.min_flt),
        (104, r.maj_flt),
        (112, r.rss_pages),
        (120, r.vm_pages),
        (128, r.cgroup_id),
        (136, r.nvcsw),
        (144, r.nivcsw),
    ] {
        put64(off, v);
    }
    b[160..176].copy_from_slice(&r.comm);
    b
}

/// The busy host: children killed (and reaped) on drop.
struct Host {
    children: Vec<Child>,
    stop: Arc<AtomicBool>,
    churn: Option<std::thread::JoinHandle<u64>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.churn.take() {
            let _ = h.join();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn busy_host() -> Host {
    let mut children = Vec::new();
    // Several users, idle.
    for i in 0..150 {
        let uid = ["65534", "1234", "0"][i % 3];
        children.push(spawn(&[
            "setpriv",
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            "sleep",
            "300",
        ]));
    }
    // Real and effective ids apart.
    children.push(spawn(&[
        "python3",
        "-c",
        "import os,time; os.setresgid(0,2000,0); os.setresuid(0,1000,0); time.sleep(300)",
    ]));
    // Threads: sleeping ones, and spinning ones that exit (their times move to the group).
    children.push(spawn(&[
        "python3",
        "-c",
        "import threading,time\n\
         def spin(n):\n    t=time.time()+n\n    while time.time()<t: pass\n\
         [threading.Thread(target=time.sleep,args=(300,)).start() for _ in range(6)]\n\
         [threading.Thread(target=spin,args=(0.3,)).start() for _ in range(3)]\n\
         threading.Thread(target=spin,args=(300,)).start()\n\
         time.sleep(300)",
    ]));
    // Zombies: children exited and never waited for by their parent (sleep does not wait).
    for _ in 0..3 {
        children.push(spawn(&[
            "sh",
            "-c",
            "sleep 0.05 & sleep 0.05 & exec sleep 300",
        ]));
    }
    // Another pid namespace.
    children.push(spawn(&[
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        "sleep 300 & sleep 300",
    ]));
    // Processes starting and exiting all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut n = 0;
        while !s.load(Ordering::Relaxed) {
            if let Ok(mut c) = Command::new("sh").args(["-c", "exit 0"]).spawn() {
                let _ = c.wait();
                n += 1;
            }
        }
        n
    });
    std::thread::sleep(Duration::from_millis(600));
    Host {
        children,
        stop,
        churn: Some(churn),
    }
}

/// `iter` lies between `before` and `after` (counters).
fn between(before: u64, iter: u64, after: u64) -> bool {
    before <= iter && iter <= after
}

/// A gauge: equal to /proc's when /proc read the same value before and after the dump; one
/// that moved between the reads may have gone anywhere meanwhile (up and back down), so it
/// is not compared.
fn within(before: u64, iter: u64, after: u64) -> bool {
    before != after || iter == before
}

/// Equal to the value before or after.
fn either<T: PartialEq>(before: T, iter: T, after: T) -> bool {
    iter == before || iter == after
}

#[test]
fn the_iterator_matches_proc_for_every_process_of_a_busy_host() {
    let host = busy_host();
    let link = vigil_privhelper::bpf::taskiter::link().expect("load and attach the task iterator");
    let page = 4096u64;
    const TICK: u64 = 10_000_000;
    let mut compared = 0usize;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    // Sleep states that differ from both reads around the dump and gauges that differ from
    // equal reads around it, by pid (see "state" and "threads" below).
    let mut flickers: HashMap<u32, Vec<String>> = HashMap::new();
    for round in 0..3 {
        let pids = all_pids();
        let before: HashMap<u32, ProcView> = pids
            .iter()
            .filter_map(|&p| Some((p, read_view(p)?)))
            .collect();
        let t0 = Instant::now();
        let dump = dump_unprivileged(&link).expect("BPF_ITER_CREATE as uid 65534, no caps");
        let dump_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut recs = Vec::new();
        assert_eq!(decode_dump(&dump, &mut recs), 0, "garbage in the dump");
        let after: HashMap<u32, ProcView> = recs
            .iter()
            .filter_map(|r| Some((r.pid, read_view(r.pid)?)))
            .collect();
        let by_pid: HashMap<u32, &TaskRecord> = recs.iter().map(|r| (r.pid, r)).collect();
        assert_eq!(by_pid.len(), recs.len(), "a pid twice in one dump");
        // Every process /proc listed before the dump and still there after it is in the dump,
        // unless this VM hides it from everyone.
        for &pid in before.keys() {
            if !by_pid.contains_key(&pid) && read_view(pid).is_some() && !hidden(pid) {
                failures.push(format!(
                    "round {round}: pid {pid} in /proc, not in the dump"
                ));
            }
        }
        for r in &recs {
            let (Some(b), Some(a)) = (before.get(&r.pid), after.get(&r.pid)) else {
                // Started during the dump, or exited right after it.
                *kinds
                    .entry("unbracketed (born or gone around the dump)")
                    .or_default() += 1;
                continue;
            };
            if a.starttime != b.starttime {
                continue; // the pid was reused between the reads
            }
            compared += 1;
            let mut bad = |what: &str, ok: bool, detail: String| {
                if !ok {
                    failures.push(format!("round {round}: pid {} {what}: {detail}", r.pid));
                }
            };
            let (u, s) = r.cputime_ns((0, 0));
            // This test allocates, opens and closes descriptors during the dump itself: its
            // gauges may go up and back down between the reads.
            let me = r.pid == std::process::id();
            // /proc shows a kernel thread's full name (comm holds its first 15 bytes) and adds
            // a kernel worker's workqueue (kworker/1:2-events).
            let kworker =
                r.flags & vigil_collector::taskiter::F_KTHREAD != 0 && b.comm.starts_with(r.comm());
            bad(
                "comm",
                kworker || either(&b.comm[..], r.comm(), &a.comm[..]),
                format!(
                    "{:?} {:?}",
                    String::from_utf8_lossy(r.comm()),
                    String::from_utf8_lossy(&b.comm)
                ),
            );
            bad(
                "ppid",
                either(b.ppid, r.ppid, a.ppid),
                format!("{} {} {}", b.ppid, r.ppid, a.ppid),
            );
            bad(
                "start",
                r.start_ticks() == b.starttime,
                format!("{} {}", r.start_ticks(), b.starttime),
            );
            // Running is a moment: a task may run between the reads and sleep again. So is a
            // blocked sleep: an idle kernel worker (I) takes a mutex (D) between two reads that
            // both show it idle. Such a flicker is set aside; a wrong letter would repeat for
            // the same task in every round, a flicker does not.
            let ran = r.state_letter() == b'R' || b.state == b'R' || a.state == b'R';
            let states = format!(
                "{} {} {}",
                b.state as char,
                r.state_letter() as char,
                a.state as char
            );
            let asleep = |c: u8| matches!(c, b'S' | b'D' | b'I');
            let agree = ran || either(b.state, r.state_letter(), a.state);
            if !agree && asleep(b.state) && asleep(r.state_letter()) && asleep(a.state) {
                flickers
                    .entry(r.pid)
                    .or_default()
                    .push(format!("round {round}: {states}"));
            } else {
                bad("state", agree, states);
            }
            bad(
                "uid",
                (r.ruid, r.euid) == (b.ruid, b.euid),
                format!("{:?} {b:?}", (r.ruid, r.euid)),
            );
            bad(
                "gid",
                (r.rgid, r.egid) == (b.rgid, b.egid),
                format!("{:?}", (r.rgid, r.egid)),
            );
            bad(
                "cpu",
                between(b.utime + b.stime, (u + s) / TICK + 1, a.utime + a.stime + 2),
                format!(
                    "{}+{} {}+{} {}+{}",
                    b.utime,
                    b.stime,
                    u / TICK,
                    s / TICK,
                    a.utime,
                    a.stime
                ),
            );
            bad(
                "utime",
                u / TICK + 1 >= b.utime && s / TICK + 1 >= b.stime,
                format!("{} {} {} {}", u / TICK, s / TICK, b.utime, b.stime),
            );
            bad(
                "minflt",
                between(b.minflt, r.min_flt, a.minflt),
                format!("{} {} {}", b.minflt, r.min_flt, a.minflt),
            );
            bad(
                "majflt",
                between(b.majflt, r.maj_flt, a.majflt),
                format!("{} {} {}", b.majflt, r.maj_flt, a.majflt),
            );
            // A gauge read equal before and after the dump but not in it went up and back down
            // meanwhile (a thread started and gone, a large allocation mapped and freed: seen
            // once, vsize 52191232 42749952 52191232) — or the iterator is wrong. Like a sleep
            // state's flicker it is set aside once; a wrong value repeats for the same process
            // in every round.
            let gauges: [(&str, u64, u64, u64); 4] = [
                (
                    "threads",
                    b.threads.into(),
                    r.nr_threads.into(),
                    a.threads.into(),
                ),
                ("vsize", b.vsize, r.vm_pages * page, a.vsize),
                ("rss", b.rss, r.rss_pages, a.rss),
                ("fds", b.fds.into(), r.fds.into(), a.fds.into()),
            ];
            for (what, before, iter, after) in gauges {
                if !within(before, iter, after) && (!me || what == "threads") {
                    flickers
                        .entry(r.pid)
                        .or_default()
                        .push(format!("round {round}: {what} {before} {iter} {after}"));
                }
            }
            bad(
                "switches",
                between(b.vcsw, r.nvcsw, a.vcsw) && between(b.ivcsw, r.nivcsw, a.ivcsw),
                format!(
                    "{}/{} {}/{} {}/{}",
                    b.vcsw, b.ivcsw, r.nvcsw, r.nivcsw, a.vcsw, a.ivcsw
                ),
            );
            let kind = match r.state_letter() {
                b'Z' => "zombie",
                _ if r.flags & vigil_collector::taskiter::F_KTHREAD != 0 => "kernel thread",
                _ if r.nr_threads > 1 => "multi-threaded",
                _ if r.ruid != r.euid => "real != effective uid",
                _ if r.euid != 0 => "other user",
                _ => "root",
            };
            *kinds.entry(kind).or_default() += 1;
        }
        eprintln!(
            "round {round}: {} records, {} bytes, dump {dump_ms:.2} ms",
            recs.len(),
            dump.len()
        );
    }
    let churned = {
        let mut h = host;
        h.stop.store(true, Ordering::Relaxed);
        h.churn.take().map(|j| j.join().unwrap()).unwrap_or(0)
    };
    eprintln!("compared {compared} process samples by kind {kinds:?}; {churned} processes churned");
    eprintln!("flickers (pid: rounds, /proc before, iterator, /proc after): {flickers:?}");
    for (pid, rounds) in &flickers {
        if rounds.len() > 1 || flickers.len() > 5 {
            failures.push(format!("pid {pid} flickers: {rounds:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for k in [
        "zombie",
        "kernel thread",
        "multi-threaded",
        "real != effective uid",
        "other user",
    ] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "no {k} compared: {kinds:?}"
        );
    }
    assert!(compared > 3 * 150, "{compared}");
    assert!(churned > 10, "the churn did not run: {churned}");
}

/// The process in another pid namespace: the iterator made from inside it shows that
/// namespace's numbers (pid 1 is its init), as its /proc does.
#[test]
fn an_iterator_made_in_a_child_pid_namespace_shows_its_numbers() {
    let link = vigil_privhelper::bpf::taskiter::link().expect("task iterator");
    // Close-on-exec: the other tests of this binary spawn children concurrently, and one that
    // inherited the write end would hold the read below open for its whole life (the
    // pre_exec below clears the flag for this child only).
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let link_fd = link.as_raw_fd();
    let w_fd = w.as_raw_fd();
    // unshare(CLONE_NEWPID) affects the children: fork once more inside.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
    ])
    .arg(format!(
        "sleep 30 {w_fd}>&- {link_fd}>&- & exec {} --exact helper_dumps_in_namespace --nocapture",
        std::env::current_exe().unwrap().display()
    ))
    .env("VIGIL_TASKITER_NS_LINK", link_fd.to_string())
    .env("VIGIL_TASKITER_NS_OUT", w_fd.to_string())
    .stdout(Stdio::null());
    inherit(&mut cmd, [link_fd, w_fd]);
    let mut child = cmd.spawn().unwrap();
    drop(w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    // "pid ppid comm" per record, as the namespace sees them.
    let rows: Vec<(u32, u32, String)> = out
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.to_string(),
            ))
        })
        .collect();
    assert!(rows.iter().any(|(p, pp, _)| *p == 1 && *pp == 0), "{out}");
    assert!(
        rows.iter().any(|(_, pp, c)| *pp == 1 && c == "sleep"),
        "{out}"
    );
    assert!(
        rows.len() <= 4,
        "the host's processes leak into the namespace: {out}"
    );
}

#[test]
fn helper_dumps_in_namespace() {
    let (Ok(link), Ok(out)) = (
        std::env::var("VIGIL_TASKITER_NS_LINK"),
        std::env::var("VIGIL_TASKITER_NS_OUT"),
    ) else {
        return;
    };
    // SAFETY: the parent passed both descriptors open for us; each is owned once here.
    let (link, mut out) = unsafe {
        (
            OwnedFd::from_raw_fd(link.parse().unwrap()),
            std::fs::File::from_raw_fd(out.parse().unwrap()),
        )
    };
    let mut it = vigil_collector::taskiter::TaskIter::new(link);
    let mut recs = Vec::new();
    it.dump(&mut recs).unwrap();
    for r in recs {
        writeln!(
            out,
            "{} {} {}",
            r.pid,
            r.ppid,
            String::from_utf8_lossy(r.comm())
        )
        .unwrap();
    }
}

/// Let the child `cmd` starts inherit `fds` (close-on-exec cleared in the child only).
fn inherit(cmd: &mut Command, fds: [std::os::fd::RawFd; 2]) {
    // SAFETY: only async-signal-safe fcntl calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The collector's open descriptors.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The real agent with the default configuration takes its processes from the iterator:
/// the feature is on, the collector's seccomp carries the `collector-taskiter` extra, every
/// process of the cycle but the ones this VM hides comes from the dump, the collector keeps
/// no descriptor per process, the privhelper holds no capability once start-up is over, and
/// a process of another user is reported with its owner, state and threads. With
/// `process_iter = false` the same agent reads /proc as before.
#[test]
fn the_agent_takes_processes_from_the_iterator_and_falls_back_to_proc_when_told() {
    use vigil_ipc_proto::Role;
    let mut sleepers: Vec<Child> = (0..300)
        .map(|_| {
            spawn(&[
                "setpriv",
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "sleep",
                "300",
            ])
        })
        .collect();
    let mut threaded = spawn(&[
        "python3",
        "-c",
        "import threading,time\n[threading.Thread(target=time.sleep,args=(300,)).start() for _ in range(4)]\ntime.sleep(300)",
    ]);
    let tpid = i64::from(threaded.id());
    for iter in [true, false] {
        let cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cfg.path(), format!("[collector]\nprocess_iter = {iter}\n")).unwrap();
        let mut agent = vigil_tests::Agent::builder()
            .args(["--user", "nobody", "--interval-ms", "500", "--config"])
            .arg(cfg.path().to_str().unwrap())
            .start();
        agent.wait_ready(Duration::from_secs(30));
        let threads = agent.wait_json(Duration::from_secs(30), |v| {
            v["name"] == "process.thread.count" && v["resource"]["process.pid"] == tpid
        });
        let threads = threads.unwrap_or_else(|| panic!("no thread count: {}", agent.stderr.text()));
        assert_eq!(threads["value"], 5, "{threads}");
        let pid = i64::from(sleepers[0].id());
        let owner = agent
            .wait_json(Duration::from_secs(20), |v| {
                v["name"] == "process.memory.usage" && v["resource"]["process.pid"] == pid
            })
            .expect("the sleeper's memory");
        assert_eq!(owner["resource"]["process.owner"], "nobody");
        let args = &owner["resource"]["process.command_args"];
        assert_eq!(args[0], "sleep", "{owner}");
        assert_eq!(args[1], "300", "{owner}");
        assert!(owner["resource"].get("process.command_line").is_none());
        // Two more cycles, so the counters are of a steady one.
        std::thread::sleep(Duration::from_millis(1200));
        // The collector's counters come with the supervisor's next stats round.
        let deadline = Instant::now() + Duration::from_secs(15);
        let st = loop {
            let st = agent.status().unwrap();
            let has = st
                .stats
                .iter()
                .any(|(r, s)| *r == Role::Collector && s.get("procs_from_iter").is_some());
            if has || Instant::now() > deadline {
                break st;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        let on = st
            .features
            .iter()
            .any(|f| f.name.as_str() == "process_iter" && f.enabled);
        let stats = |role: Role| {
            st.stats
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        let c = stats(Role::Collector);
        let (from_iter, missed, processes) = (
            c.get("procs_from_iter").unwrap(),
            c.get("procs_iter_missed").unwrap(),
            c.get("processes").unwrap(),
        );
        let collector = st
            .processes
            .iter()
            .find(|p| p.role == Role::Collector)
            .unwrap();
        let privhelper = st
            .processes
            .iter()
            .find(|p| p.role == Role::Privhelper)
            .unwrap();
        let fds = fd_count(collector.pid);
        eprintln!(
            "process_iter = {iter}: feature on {on}, {processes} processes, {from_iter} from the \
             iterator, {missed} through /proc, collector seccomp {}, {fds} descriptors",
            collector.seccomp_policy
        );
        assert!(processes > 300, "{processes}");
        if iter {
            assert!(on, "{:?}", st.features);
            // Flows are on by default too: their lookup-only extra comes first.
            assert_eq!(
                collector.seccomp_policy,
                "collector+collector-flows+collector-taskiter"
            );
            assert_eq!(from_iter + missed, processes);
            // Only what this VM hides from every reader (pid 1's group) comes from /proc.
            let hidden_now = all_pids().into_iter().filter(|&p| hidden(p)).count() as u64;
            assert!(missed <= hidden_now, "{missed} > {hidden_now}");
            assert!(fds < 100, "the collector keeps {fds} descriptors");
            assert_eq!(
                privhelper.kernel.cap_eff, 0,
                "the privhelper kept capabilities"
            );
        } else {
            assert!(!on);
            assert_eq!(collector.seccomp_policy, "collector+collector-flows");
            assert_eq!(from_iter, 0);
            assert!(
                fds > 600,
                "the /proc path keeps two descriptors per process: {fds}"
            );
        }
        drop(agent);
    }
    let _ = threaded.kill();
    let _ = threaded.wait();
    for c in &mut sleepers {
        let _ = c.kill();
        let _ = c.wait();
    }
}
