//! Issue 14's chaos soak: the real agent ships to the real rotel collector while every child
//! role is SIGKILLed at random intervals, the backend is stopped and started again on its port,
//! the journal's file system (a tmpfs of its own) is filled to the last byte and freed, and
//! kernel-log markers and execs of uniquely named binaries stream in. At the end every marker
//! is at the receiver at least once, every duplicate is one the journal's at-least-once
//! contract allows, no role grew in descriptors or memory, and the journal never went over its
//! byte bound.
//!
//! `VIGIL_SOAK_SECS` sets the chaos phase (75 s by default, the CI run; `bench/chaos_soak.sh`
//! runs it long), `VIGIL_SOAK_SEED` the seed of every random choice (printed at the start).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vigil_ipc_proto::Role;
use vigil_tests::backends::Rotel;
use vigil_tests::otlp::free_port;
use vigil_tests::{Agent, Output, kmsg, proc_status_kib, sh, unique_name};

const ROLES: [Role; 3] = [Role::Privhelper, Role::Collector, Role::Shipper];
const TMPFS_BYTES: u64 = 64 << 20;
/// `shipper.journal_max_bytes`: well under the tmpfs, so the bound (not the file system) is
/// what limits the journal while the file system has room.
const JOURNAL_MAX: u64 = 24 << 20;
const MARKER_EVERY: Duration = Duration::from_millis(250);
const EXEC_EVERY: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(500);
/// How long after its first delivery a copy of a record can still be sent again: the shipper's
/// request timeout (3 s here) plus the checkpoint interval (200 ms) plus the test's polling.
const REPLAY_WINDOW: Duration = Duration::from_secs(5);
/// An exec counts as observable when the collector that saw it lived this long after it.
const EXEC_SETTLE: Duration = Duration::from_secs(5);

/// splitmix64: every random choice of a run follows from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `[lo, hi]` seconds.
    fn secs(&mut self, (lo, hi): (f64, f64)) -> Duration {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + (hi - lo) * u)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// How often each kind of chaos comes and how long it lasts, in seconds.
struct Params {
    chaos: Duration,
    seed: u64,
    /// Quiet start; the roles' descriptors and memory at its end are the baseline.
    warmup: Duration,
    kill_every: (f64, f64),
    flap_every: (f64, f64),
    flap_down: (f64, f64),
    fill_every: (f64, f64),
    fill_hold: (f64, f64),
    drain: Duration,
}

impl Params {
    fn from_env() -> Params {
        let secs: u64 = std::env::var("VIGIL_SOAK_SECS")
            .ok()
            .map(|s| s.parse().expect("VIGIL_SOAK_SECS: seconds"))
            .unwrap_or(75);
        let seed = std::env::var("VIGIL_SOAK_SEED")
            .ok()
            .map(|s| s.parse().expect("VIGIL_SOAK_SEED: a number"))
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                t.as_nanos() as u64 ^ u64::from(std::process::id())
            });
        let long = secs >= 600;
        Params {
            chaos: Duration::from_secs(secs),
            seed,
            warmup: Duration::from_secs(if long { 60 } else { 20 }),
            // The supervisor restarts the whole group after a kill with a backoff that doubles
            // from 0.5 s and resets after a minute of health: the long run's kills leave it
            // time to reset most of the time, the short one's let it grow a few steps.
            kill_every: if long { (30.0, 120.0) } else { (8.0, 16.0) },
            flap_every: if long { (30.0, 120.0) } else { (10.0, 20.0) },
            flap_down: if long { (2.0, 20.0) } else { (2.0, 6.0) },
            fill_every: if long { (30.0, 120.0) } else { (10.0, 20.0) },
            fill_hold: if long { (5.0, 30.0) } else { (3.0, 8.0) },
            drain: Duration::from_secs(if long { 180 } else { 60 }),
        }
    }
}

/// A tmpfs of `TMPFS_BYTES` mounted for the run (unmounted when dropped, after the agent).
struct Tmpfs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("vigil-soak-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mnt = dir.path().join("rt");
        std::fs::create_dir(&mnt).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={TMPFS_BYTES},mode=0755 vigil-soak {}",
            mnt.display()
        ));
        Tmpfs { mnt, _dir: dir }
    }

    /// Write a file until the file system says ENOSPC; the bytes written.
    fn fill(&self) -> u64 {
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let mut total = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0xa5u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        total
    }

    fn free(&self) {
        std::fs::remove_file(self.mnt.join("filler")).unwrap();
    }

    /// Bytes of the journal's files (segments and checkpoint).
    fn journal_bytes(&self) -> u64 {
        let Ok(rd) = std::fs::read_dir(self.mnt.join("journal")) else {
            return 0;
        };
        rd.filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}

/// One run of one role (a pid): when the test first saw it and what it measured.
#[derive(Debug)]
struct Incarnation {
    role: Role,
    pid: u32,
    since: Instant,
    samples: Vec<Sample>,
}

/// One look at a role.
#[derive(Debug, Clone, Copy)]
struct Sample {
    age: Duration,
    /// VmRSS, kB: reported.
    rss: u64,
    /// RssAnon, kB: what must not grow. VmRSS also counts the binary's pages as code paths
    /// are first taken (backend errors, a full disk) and the eBPF rings' pages as traffic
    /// fills them (shared with the kernel, bounded by the ring's size): neither is a leak,
    /// and both follow what else the host does.
    anon: u64,
    fds: usize,
}

/// Open descriptors, less the collector's per-process /proc handles (/proc/PID and files in
/// it, cached while that host process lives: their number follows the host, not the agent).
fn fd_count(pid: u32) -> Option<usize> {
    let per_process = |t: &std::path::Path| {
        t.strip_prefix("/proc").ok().is_some_and(|rest| {
            rest.components().next().is_some_and(|c| {
                let c = c.as_os_str().to_string_lossy();
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())
            })
        })
    };
    let rd = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        rd.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| !per_process(t))
            .count(),
    )
}

/// An incarnation's last sample, with the fewest descriptors it held over its last two
/// seconds: a descriptor a collection cycle has open for a moment is not one it keeps (a leak
/// shows in the minimum too).
fn settled(samples: &[Sample]) -> Sample {
    let last = *samples.last().unwrap();
    let fds = samples
        .iter()
        .filter(|s| s.age + Duration::from_secs(2) >= last.age)
        .map(|s| s.fds)
        .min()
        .unwrap();
    Sample { fds, ..last }
}

/// The three roles' pids when all are up and sandboxed, from one status request.
fn group(agent: &Agent) -> Option<[u32; 3]> {
    let r = agent.status().ok()?;
    let mut pids = [0; 3];
    for (i, role) in ROLES.iter().enumerate() {
        let p = r.processes.iter().find(|p| p.role == *role)?;
        if p.pid == 0 || p.landlock.is_empty() {
            return None;
        }
        pids[i] = p.pid;
    }
    Some(pids)
}

/// What the receiver got, read incrementally from every rotel run's output.
#[derive(Default)]
struct Delivered {
    /// Outputs of every rotel run and how far each was read.
    outputs: Vec<(Output, usize)>,
    /// Marker number → (copies, when the test first saw it).
    markers: BTreeMap<u64, (usize, Instant)>,
    execs: BTreeSet<String>,
}

impl Delivered {
    fn scan(&mut self, run: &str) {
        let body = format!("Body: Str(vigil-soak {run}-");
        let exec = format!("vgx{}", &run[3..]);
        let now = Instant::now();
        for (out, cursor) in &mut self.outputs {
            let lines = out.lines_from(*cursor);
            *cursor += lines.len();
            for l in &lines {
                if let Some(rest) = l.trim().strip_prefix(&body) {
                    let n: u64 = rest[..6].parse().expect("marker number");
                    self.markers.entry(n).or_insert((0, now)).0 += 1;
                } else if let Some(i) = l.find(&exec) {
                    let name = &l[i..(i + exec.len() + 4).min(l.len())];
                    self.execs.insert(name.to_string());
                }
            }
        }
    }
}

#[test]
fn chaos_soak() {
    let p = Params::from_env();
    let mut rng = Rng(p.seed);
    eprintln!(
        "chaos soak: seed {} (VIGIL_SOAK_SEED), chaos {:?} (VIGIL_SOAK_SECS)",
        p.seed, p.chaos
    );
    let run = unique_name("k");

    let tmpfs = Tmpfs::mount();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("vigil.toml");
    // A lookback of a minute: the first markers may be written before the collector opens
    // /dev/kmsg (readiness is the sandbox, not the kmsg source), and only this run's markers
    // are counted.
    std::fs::write(
        &cfg,
        format!(
            "[collector]\nkmsg_lookback = \"1m\"\n\
             [shipper]\njournal_max_bytes = {JOURNAL_MAX}\njournal_segment_bytes = {}\n\
             [shipper.otlp]\ntimeout_ms = 3000\nmax_batch_delay_ms = 100\n\
             retry_initial_ms = 100\nretry_max_ms = 1000\n",
            JOURNAL_MAX / 8
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut rotel = Some(Rotel::start_logs_at(&addr));
    let mut delivered = Delivered::default();
    delivered
        .outputs
        .push((rotel.as_ref().unwrap().out.clone(), 0));

    let mut agent = Agent::builder()
        .runtime_dir(&tmpfs.mnt)
        .args(vigil_tests::QUIET_ARGS)
        .arg("--config")
        .arg(cfg.display().to_string())
        .args(["--otlp-endpoint", &format!("http://{addr}")])
        .start();
    agent.wait_ready(Duration::from_secs(60));

    // The streams: kmsg markers at a steady rate, execs of uniquely named copies of true(1).
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let marker_thread = {
        let (stop, sent, run) = (stop.clone(), sent.clone(), run.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let n = sent.lock().unwrap().len();
                kmsg(&format!("<4>vigil-soak {run}-{n:06} marker"));
                sent.lock().unwrap().push(Instant::now());
                next += MARKER_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let bin_dir = tempfile::tempdir().unwrap();
    let execs: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let exec_thread = {
        let (stop, execs, run) = (stop.clone(), execs.clone(), run.clone());
        let dir = bin_dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("vgx{}{k:04}", &run[3..]);
                let path = dir.join(&name);
                std::fs::copy("/bin/true", &path).unwrap();
                let t = Instant::now();
                let st = std::process::Command::new(&path).status().unwrap();
                assert!(st.success());
                std::fs::remove_file(&path).unwrap();
                execs.lock().unwrap().push((name, t));
                k += 1;
                std::thread::sleep(EXEC_EVERY);
            }
        })
    };

    let t0 = Instant::now();
    let mut incarnations: Vec<Incarnation> = Vec::new();
    // (when, the group's pids if it was up)
    let mut timeline: Vec<(Instant, Option<[u32; 3]>)> = Vec::new();
    let mut journal_max = 0u64;
    let mut sample = |agent: &Agent, incs: &mut Vec<Incarnation>, tl: &mut Vec<_>| {
        let now = Instant::now();
        let g = group(agent);
        tl.push((now, g));
        for (i, role) in ROLES.iter().enumerate() {
            let Some(pid) = g.map(|g| g[i]) else { continue };
            let (Some(rss), Some(anon), Some(fds)) = (
                proc_status_kib(pid, "VmRSS"),
                proc_status_kib(pid, "RssAnon"),
                fd_count(pid),
            ) else {
                continue;
            };
            let inc = match incs.iter_mut().position(|c| c.pid == pid) {
                Some(k) => &mut incs[k],
                None => {
                    incs.push(Incarnation {
                        role: *role,
                        pid,
                        since: now,
                        samples: Vec::new(),
                    });
                    incs.last_mut().unwrap()
                }
            };
            inc.samples.push(Sample {
                age: now - inc.since,
                rss,
                anon,
                fds,
            });
        }
        journal_max = journal_max.max(tmpfs.journal_bytes());
    };

    // Warm-up: no chaos; the first incarnations' figures at its end are the baseline.
    while t0.elapsed() < p.warmup {
        sample(&agent, &mut incarnations, &mut timeline);
        delivered.scan(&run);
        std::thread::sleep(TICK);
    }
    sample(&agent, &mut incarnations, &mut timeline);
    let baseline: BTreeMap<Role, Sample> = incarnations
        .iter()
        .map(|c| (c.role, settled(&c.samples)))
        .collect();
    assert_eq!(baseline.len(), 3, "{incarnations:?}");

    // Chaos.
    let mut kills: Vec<(Instant, Role)> = Vec::new();
    let mut kill_order: Vec<Role> = Vec::new();
    let mut flaps: Vec<Instant> = Vec::new();
    let mut fills: Vec<(Instant, Option<Instant>)> = Vec::new();
    let mut filled_bytes = 0u64;
    let start = Instant::now();
    let mut next_kill = start + rng.secs(p.kill_every);
    let mut next_flap = start + rng.secs(p.flap_every);
    let mut next_fill = start + rng.secs(p.fill_every);
    let mut last_killed: Option<[u32; 3]> = None;
    while start.elapsed() < p.chaos {
        let now = Instant::now();
        sample(&agent, &mut incarnations, &mut timeline);
        delivered.scan(&run);
        assert!(
            agent.try_wait().is_none(),
            "vigil exited during the soak\n{}",
            agent.stderr.text()
        );
        // Kill the next role of a shuffled round (every role is killed as often), once the
        // group killed last is back.
        if now >= next_kill
            && let Some(g) = timeline.last().unwrap().1
            && last_killed != Some(g)
        {
            if kill_order.is_empty() {
                kill_order = ROLES.to_vec();
                rng.shuffle(&mut kill_order);
            }
            let role = kill_order.pop().unwrap();
            let pid = g[ROLES.iter().position(|r| *r == role).unwrap()];
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
            kills.push((Instant::now(), role));
            last_killed = Some(g);
            next_kill = Instant::now() + rng.secs(p.kill_every);
        }
        if now >= next_flap {
            match rotel.take() {
                Some(mut r) => {
                    r.stop(Duration::from_secs(10));
                    flaps.push(Instant::now());
                    next_flap = Instant::now() + rng.secs(p.flap_down);
                }
                None => {
                    let r = Rotel::start_logs_at(&addr);
                    delivered.outputs.push((r.out.clone(), 0));
                    rotel = Some(r);
                    next_flap = Instant::now() + rng.secs(p.flap_every);
                }
            }
        }
        if now >= next_fill {
            match fills.last_mut() {
                Some((_, end @ None)) => {
                    tmpfs.free();
                    *end = Some(Instant::now());
                    next_fill = Instant::now() + rng.secs(p.fill_every);
                }
                _ => {
                    let t = Instant::now();
                    filled_bytes = filled_bytes.max(tmpfs.fill());
                    fills.push((t, None));
                    next_fill = Instant::now() + rng.secs(p.fill_hold);
                }
            }
        }
        std::thread::sleep(TICK);
    }
    let chaos_took = start.elapsed();

    // Calm: streams stop, the backend is up, the file system has room; the agent drains.
    stop.store(true, Ordering::Relaxed);
    marker_thread.join().unwrap();
    exec_thread.join().unwrap();
    if rotel.is_none() {
        let r = Rotel::start_logs_at(&addr);
        delivered.outputs.push((r.out.clone(), 0));
        rotel = Some(r);
    }
    if let Some((_, end @ None)) = fills.last_mut() {
        tmpfs.free();
        *end = Some(Instant::now());
    }
    let sent = sent.lock().unwrap().clone();
    let execs = execs.lock().unwrap().clone();
    let calm = Instant::now();
    while calm.elapsed() < p.drain && delivered.markers.len() < sent.len() {
        sample(&agent, &mut incarnations, &mut timeline);
        delivered.scan(&run);
        std::thread::sleep(TICK);
    }
    let drained = calm.elapsed();
    // The last incarnations are measured at least as old as the baseline was.
    let last_of = |incs: &[Incarnation], role: Role| -> Option<Duration> {
        incs.iter()
            .rev()
            .find(|c| c.role == role)
            .and_then(|c| c.samples.last().map(|s| s.age))
    };
    while ROLES
        .iter()
        .any(|r| last_of(&incarnations, *r).is_none_or(|age| age < baseline[r].age))
    {
        assert!(
            calm.elapsed() < p.drain + p.warmup * 2,
            "the group did not stay up after the chaos: {incarnations:?}"
        );
        sample(&agent, &mut incarnations, &mut timeline);
        delivered.scan(&run);
        std::thread::sleep(TICK);
    }
    std::thread::sleep(Duration::from_secs(2));
    delivered.scan(&run);
    let status = agent.status().expect("status at the end");
    drop(rotel);

    // Every marker at least once.
    let lost: Vec<usize> = (0..sent.len())
        .filter(|n| !delivered.markers.contains_key(&(*n as u64)))
        .collect();

    // Duplicates. The journal's contract is at least once: a record is acknowledged to its
    // exporter (and the checkpoint written, at most 200 ms later) only after the backend
    // answered, so a copy the backend got can be sent again when (a) the shipper dies between
    // the backend's answer and the checkpoint — any kill restarts the shipper with the group —
    // or the checkpoint cannot be written because the file system is full, until it has room
    // again; (b) the backend stops after taking a request and before answering it. Each
    // duplicate must lie within `REPLAY_WINDOW` of its first delivery of such an event, and
    // have no more extra copies than such events.
    let within = |a: Instant, b: Instant| {
        let d = if a > b { a - b } else { b - a };
        d <= REPLAY_WINDOW
    };
    let explaining = |first: Instant| -> usize {
        let by_kill = kills
            .iter()
            .filter(|(k, _)| {
                within(*k, first)
                    || (*k > first
                        && fills.iter().any(|(s, e)| {
                            let e = e.unwrap_or(calm);
                            *s <= *k && e + REPLAY_WINDOW >= first && *k <= e + REPLAY_WINDOW
                        }))
            })
            .count();
        let by_flap = flaps.iter().filter(|f| within(**f, first)).count();
        by_kill + by_flap
    };
    let mut duplicates = 0usize;
    let mut bound = 0usize;
    let mut unexplained = Vec::new();
    for (n, (copies, first)) in &delivered.markers {
        let e = explaining(*first);
        bound += e;
        duplicates += copies - 1;
        if copies - 1 > e {
            unexplained.push((*n, *copies, e));
        }
    }

    // Execs: one made while the group that saw it had been up `EXEC_SETTLE` (its eBPF
    // programs attached and rings mapped, which follows the ready report) and stayed up as
    // long after it must be delivered; one made while the group was down or restarting has no
    // one to see it (the exec tracepoint's program is the privhelper's, loaded again with the
    // group).
    let observable = |t: Instant| -> bool {
        // A sample at least EXEC_SETTLE before the exec and one at least as long after it,
        // and the same group in every sample between.
        let from = timeline.iter().rev().find(|(s, _)| *s + EXEC_SETTLE <= t);
        let to = timeline.iter().find(|(s, _)| *s >= t + EXEC_SETTLE);
        let (Some((tb, Some(gb))), Some((ta, _))) = (from, to) else {
            return false;
        };
        timeline
            .iter()
            .filter(|(s, _)| s >= tb && s <= ta)
            .all(|(_, g)| *g == Some(*gb))
    };
    let exec_observable: Vec<&(String, Instant)> =
        execs.iter().filter(|(_, t)| observable(*t)).collect();
    // Exec events are not replayed (the ring is the privhelper's, read once). One whose batch
    // the shipper refused because the journal's disk was full waits in the collector for
    // space; a group restart before space comes back drops it, and the collector says so (the
    // journal's contract: nothing is durable that the disk could not take). Such execs are
    // reported, each explained by a fill, a kill during it or within 10 s of its end, and the
    // collector's warning; any other missing exec fails.
    let end_of_chaos = Instant::now();
    // Held batches reach the shipper in order, behind the window of unacknowledged ones: one
    // made just before a fill can be refused by it, and what was held during a fill drains
    // only after space returns (seconds, when other load made many events).
    const HELD: Duration = Duration::from_secs(10);
    let lost_to_full_disk = |t: Instant| {
        fills.iter().any(|(a, b)| {
            let end = b.unwrap_or(end_of_chaos) + HELD;
            t + HELD >= *a && t <= end && kills.iter().any(|(k, _)| *k >= t && *k <= end)
        })
    };
    let (exec_dropped_full, exec_missing): (Vec<&(String, Instant)>, Vec<_>) = exec_observable
        .iter()
        .copied()
        .filter(|(n, _)| !delivered.execs.contains(n))
        .partition(|(_, t)| lost_to_full_disk(*t));
    // Where each missing exec fell, seconds from the start of the chaos: the fills and kills
    // around it.
    let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    for (n, t) in &exec_missing {
        let fills_near: Vec<(f64, Option<f64>)> = fills
            .iter()
            .filter(|(a, b)| {
                secs(*a) < secs(*t) + 30.0 && b.is_none_or(|b| secs(b) + 30.0 > secs(*t))
            })
            .map(|(a, b)| (secs(*a), b.map(secs)))
            .collect();
        let kills_near: Vec<(f64, Role)> = kills
            .iter()
            .filter(|(k, _)| (secs(*k) - secs(*t)).abs() < 30.0)
            .map(|(k, r)| (secs(*k), *r))
            .collect();
        eprintln!(
            "missing exec {n} at {:.1}s: fills {fills_near:?} kills {kills_near:?}",
            secs(*t)
        );
    }
    let exec_missing: Vec<&String> = exec_missing.iter().map(|(n, _)| n).collect();
    let exec_dropped_full: Vec<&String> = exec_dropped_full.iter().map(|(n, _)| n).collect();
    let dropped_said = agent
        .stderr
        .text()
        .contains("not acknowledged by the shipper are dropped with this collector");

    // Descriptors and memory: the last incarnation of each role at its last sample (at least
    // as old as the baseline) against the first incarnation at the end of the warm-up.
    let mut figures = Vec::new();
    let mut grown = Vec::new();
    for role in ROLES {
        let a = baseline[&role];
        let last = incarnations.iter().rev().find(|c| c.role == role).unwrap();
        let b = settled(&last.samples);
        let runs = incarnations.iter().filter(|c| c.role == role).count();
        figures.push(format!(
            "{role}: anon {}→{} kB (rss {}→{}) fds {}→{} (ages {}s/{}s, {runs} runs)",
            a.anon,
            b.anon,
            a.rss,
            b.rss,
            a.fds,
            b.fds,
            a.age.as_secs(),
            b.age.as_secs()
        ));
        if b.anon * 10 > a.anon * 11 || b.fds > a.fds + 2 {
            grown.push(role);
        }
    }

    let kills_by: BTreeMap<String, usize> = ROLES
        .iter()
        .map(|r| (r.to_string(), kills.iter().filter(|(_, k)| k == r).count()))
        .collect();
    let stats_of = |role: Role| {
        status
            .stats
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, s)| format!("{s:?}"))
            .unwrap_or_default()
    };
    eprintln!(
        "chaos soak summary: seed {} chaos {}s (drain {}s) kills {kills_by:?} flaps {} fills {} \
         (up to {} MiB) markers {} lost {} duplicates {duplicates} (bound {bound}) execs {} \
         (observable {}, missing {}, dropped with the disk full {}) journal max {} of {} bytes | {}",
        p.seed,
        chaos_took.as_secs(),
        drained.as_secs(),
        flaps.len(),
        fills.len(),
        filled_bytes >> 20,
        sent.len(),
        lost.len(),
        execs.len(),
        exec_observable.len(),
        exec_missing.len(),
        exec_dropped_full.len(),
        journal_max,
        JOURNAL_MAX,
        figures.join("; ")
    );
    eprintln!(
        "counters of the last runs: shipper {} collector {}",
        stats_of(Role::Shipper),
        stats_of(Role::Collector)
    );

    assert!(
        lost.is_empty(),
        "{} of {} markers never arrived: {lost:?}",
        lost.len(),
        sent.len()
    );
    assert!(
        unexplained.is_empty(),
        "duplicates the journal's contract does not allow (marker, copies, events): {unexplained:?}"
    );
    assert!(
        exec_missing.is_empty(),
        "execs made while the collector was up never arrived: {exec_missing:?}"
    );
    assert!(
        exec_dropped_full.is_empty() || dropped_said,
        "execs {exec_dropped_full:?} dropped with the disk full, and the collector did not say so"
    );
    assert!(grown.is_empty(), "grew: {grown:?}: {figures:?}");
    assert!(
        journal_max <= JOURNAL_MAX,
        "journal {journal_max} bytes over its bound {JOURNAL_MAX}"
    );
    for role in ROLES {
        assert!(kills_by[&role.to_string()] >= 1, "{role} never killed");
    }
    assert!(!flaps.is_empty() && !fills.is_empty());
}
