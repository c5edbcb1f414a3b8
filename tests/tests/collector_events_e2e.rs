//! Issue 3 end to end with the real agent: interface counters of a network namespace attributed
//! to it, every kernel event kind parsed from /dev/kmsg, a real OOM kill in a memory cgroup, and
//! what goes away (and what stays) when capabilities are dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::netns::VethNetns;
use vigil_tests::{Agent, capsh_drop, sh};

/// Tests of this file that write to /dev/kmsg (or make the kernel write a lot there) run one at a
/// time, so that a stack trace is not interleaved with another test's lines.
static KMSG: Mutex<()> = Mutex::new(());

fn start(wrapper: Option<&str>) -> Agent {
    start_with(wrapper, "")
}

/// As [`start`], with `[collector]` keys of a TOML config file (e.g. `netns_source = "setns"`).
fn start_with(wrapper: Option<&str>, collector_toml: &str) -> Agent {
    let mut b = Agent::builder().args(["--user", "nobody", "--interval-ms", "500"]);
    if !collector_toml.is_empty() {
        let path = std::env::temp_dir().join(format!(
            "vigil-e2e-{}-{:x}.toml",
            std::process::id(),
            collector_toml.len() * 31 + collector_toml.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, format!("[collector]\n{collector_toml}\n")).unwrap();
        b = b.args(["--config".to_string(), path.display().to_string()]);
    }
    if let Some(caps) = wrapper {
        b = b.wrapper(capsh_drop(caps));
    }
    let mut a = b.start();
    a.wait_ready(Duration::from_secs(30));
    a
}

/// A network namespace with a veth pair, one end inside (10.231.x.y/30, or 10.232 with a tag).
fn netns(tag: &str) -> VethNetns {
    let pid = std::process::id();
    let (a, b) = (((pid / 64) % 256) as u8, ((pid % 64) * 4) as u8);
    let c = if tag.is_empty() { 231 } else { 232 };
    VethNetns::addressed(
        format!("vigil-e2e-{tag}{pid}"),
        format!("vh{tag}{pid}"),
        format!("vn{tag}{pid}"),
        Ipv4Addr::new(10, c, a, b + 1),
        Ipv4Addr::new(10, c, a, b + 2),
    )
}

/// A UDP socket bound inside the namespace (a thread enters it, the socket stays in it).
fn udp_socket(ns: &VethNetns, port: u16) -> UdpSocket {
    let addr = SocketAddr::from((ns.ns_ip, port));
    ns.run_inside(move || UdpSocket::bind(addr).expect("bind in netns"))
        .join()
        .unwrap()
}

/// Which namespace's records: the host's (no netns attribute), one named by `ip netns`
/// (netns_source "setns"), one known by its `linux.netns.id` (netns_source "proc").
#[derive(Debug, Clone, Copy)]
enum Ns<'a> {
    Host,
    Named(&'a str),
    Id(u64),
}

impl Ns<'_> {
    fn matches(&self, res: &Value) -> bool {
        let named = res["linux.netns.name"].as_str();
        let id = res["linux.netns.id"].as_u64();
        match *self {
            Ns::Host => named.is_none() && id.is_none() && res["linux.netns.inode"].is_null(),
            Ns::Named(n) => named == Some(n),
            Ns::Id(i) => id == Some(i),
        }
    }
}

/// [rx bytes, tx bytes, rx packets, tx packets] of `ifname` in the namespace `ns` from the
/// latest cycle in `lines` that has all four.
/// The latest complete counters of `ifname` in `ns` among `lines`, of samples taken at or after
/// `since_ns` (Unix ns).
fn counters(lines: &[Value], ns: Ns<'_>, ifname: &str, since_ns: u64) -> Option<[i64; 4]> {
    let mut by_time: BTreeMap<u64, [Option<i64>; 4]> = BTreeMap::new();
    for v in lines {
        // The conventions name the interface `system.device` on system.network.packet.count.
        let a = &v["attributes"];
        let ifn = a["network.interface.name"]
            .as_str()
            .or(a["system.device"].as_str());
        if v["type"] != "metric" || ifn != Some(ifname) {
            continue;
        }
        if !ns.matches(&v["resource"]) {
            continue;
        }
        let rx = v["attributes"]["network.io.direction"] == "receive";
        let idx = match v["name"].as_str() {
            Some("system.network.io") => usize::from(!rx),
            Some("system.network.packet.count") => 2 + usize::from(!rx),
            _ => continue,
        };
        let t = v["time_unix_nano"].as_u64().unwrap_or(0);
        if t < since_ns {
            continue;
        }
        by_time.entry(t).or_default()[idx] = v["value"].as_i64();
    }
    by_time
        .values()
        .rev()
        .find(|a| a.iter().all(Option::is_some))
        .map(|a| a.map(Option::unwrap))
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn wait_counters(
    agent: &Agent,
    from: usize,
    ns: Ns<'_>,
    ifname: &str,
    since_ns: u64,
    timeout: Duration,
) -> [i64; 4] {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = agent.json_lines();
        if let Some(c) = counters(&lines[from.min(lines.len())..], ns, ifname, since_ns) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no counters of {ifname} in {ns:?} after {timeout:?}\n{}",
            agent.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process of another user (uid 4242) living in the namespace; its /proc/PID/net/dev inode
/// is the namespace's `linux.netns.id`.
fn resident(ns: &VethNetns) -> (Kill, u64) {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            "--reuid=4242",
            "--regid=4242",
        ])
        .args(["--clear-groups", "sleep", "120"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let k = Kill(child);
    let own = std::fs::metadata("/proc/self/net/dev").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // `ip netns exec` execs setpriv, which execs sleep: same pid, namespace entered first.
        if let (Ok(m), Ok(cmd)) = (
            std::fs::metadata(format!("/proc/{pid}/net/dev")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) && cmd.starts_with(b"sleep\0")
            && std::os::linux::fs::MetadataExt::st_ino(&m)
                != std::os::linux::fs::MetadataExt::st_ino(&own)
        {
            return (k, std::os::linux::fs::MetadataExt::st_ino(&m));
        }
        assert!(Instant::now() < deadline, "no sleep inside {}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Traffic through the veth pair moves the namespace's counters, attributed to it and never
/// to the host, and the host end's the other way round. `setns`: the privhelper's netlink
/// socket inside a named namespace with no process; otherwise /proc/PID/net/dev of a process
/// living in it (the default, no capability).
fn counters_follow_traffic(setns: bool) {
    let ns = netns(if setns { "s" } else { "" });
    let (_resident, id) = resident(&ns);
    let (agent, sel) = if setns {
        (
            start_with(None, "netns_source = \"setns\""),
            Ns::Named(&ns.name),
        )
    } else {
        (start(None), Ns::Id(id))
    };
    let before = wait_counters(&agent, 0, sel, &ns.ns_if, 0, Duration::from_secs(20));

    const N: usize = 50;
    const LEN: usize = 200;
    let inner = udp_socket(&ns, 9999);
    inner
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let outer = UdpSocket::bind(format!("{}:0", ns.host_ip)).unwrap();
    outer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let payload = [0x5au8; LEN];
    let mut buf = [0u8; 2048];
    for _ in 0..N {
        outer
            .send_to(&payload, inner.local_addr().unwrap())
            .unwrap();
        let (n, from) = inner.recv_from(&mut buf).expect("datagram into the netns");
        assert_eq!(n, LEN);
        inner.send_to(&payload, from).unwrap();
        let (n, _) = outer
            .recv_from(&mut buf)
            .expect("datagram out of the netns");
        assert_eq!(n, LEN);
    }
    // Samples taken after the traffic (a line printed after it may have been sampled before).
    let mark = agent.json_lines().len();
    let done = unix_ns();
    let after = wait_counters(&agent, mark, sel, &ns.ns_if, done, Duration::from_secs(20));
    let d: Vec<i64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let (n, len) = (N as i64, (N * LEN) as i64);
    assert!(
        d[0] >= len && d[1] >= len && d[2] >= n && d[3] >= n,
        "deltas [rx By, tx By, rx pkts, tx pkts] {d:?} (before {before:?}, after {after:?}) \
         after {N} datagrams of {LEN} bytes each way"
    );

    // Attribution: the namespace's interface never shows as a host interface, the host end of
    // the pair does, with the same traffic the other way round.
    let lines = agent.json_lines();
    assert!(
        !lines.iter().any(
            |v| v["attributes"]["network.interface.name"] == ns.ns_if.as_str()
                && !sel.matches(&v["resource"])
        ),
        "{} reported outside its namespace",
        ns.ns_if
    );
    let ns_rec = lines.iter().find(|v| sel.matches(&v["resource"])).unwrap();
    if setns {
        let ino = std::fs::metadata(format!("/run/netns/{}", ns.name)).unwrap();
        assert_eq!(
            ns_rec["resource"]["linux.netns.inode"].as_u64(),
            Some(std::os::linux::fs::MetadataExt::st_ino(&ino))
        );
    } else {
        assert_eq!(
            ns_rec["resource"]["process.pid"].as_u64(),
            Some(u64::from(_resident.0.id()))
        );
    }
    let host = wait_counters(
        &agent,
        mark,
        Ns::Host,
        &ns.host_if,
        done,
        Duration::from_secs(10),
    );
    assert!(
        host[1] >= len && host[3] >= n && host[0] >= len && host[2] >= n,
        "host end {host:?}"
    );
    drop(agent);
}

#[test]
fn netns_interface_counters_follow_traffic() {
    counters_follow_traffic(false);
}

#[test]
fn netns_interface_counters_follow_traffic_setns() {
    counters_follow_traffic(true);
}

/// One write per record, and a fresh open per line: /dev/kmsg rate-limits each opener to 10
/// lines per 5 s under the default `kernel.printk_devkmsg=ratelimit`.
fn kmsg_write(lines: &[String]) {
    for l in lines {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .unwrap()
            .write_all(format!("{l}\n").as_bytes())
            .unwrap();
    }
}

fn wait_event(agent: &Agent, marker: &str, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent
        .wait_json(Duration::from_secs(15), |v| {
            v["type"] == "log" && v["event_name"] == name && pred(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {name} event\n--- logs with {marker} ---\n{}\n--- stderr ---\n{}",
                agent
                    .json_lines()
                    .iter()
                    .filter(|v| v["type"] == "log" && v.to_string().contains(marker))
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                agent.stderr.text()
            )
        })
}

#[test]
fn every_kmsg_event_kind() {
    let _k = KMSG.lock().unwrap_or_else(|e| e.into_inner());
    let agent = start(None);
    let pid = std::process::id();
    let fake = 3_000_000 + pid % 1_000_000;
    let name = format!("vigfake{pid}");
    let pids = pid.to_string();
    let pod = format!("{:08x}-1234-4abc-8def-{:012x}", pid, u64::from(pid) * 7);
    let cid = format!("{:064x}", u64::from(pid) * 1_000_003);
    let memcg = format!("/kubepods/burstable/pod{pod}/{cid}");
    let dev = format!("vdz{pid}");
    kmsg_write(&[
        format!(
            "<3>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
             oom_memcg={memcg},task_memcg={memcg},task={name},pid={fake},uid=0"
        ),
        format!(
            "<3>Out of memory: Killed process {fake} ({name}) total-vm:123456kB, \
             anon-rss:65432kB, file-rss:100kB, shmem-rss:0kB, UID:0 pgtables:300kB \
             oom_score_adj:900"
        ),
        format!("<2>EXT4-fs ({dev}): Remounting filesystem read-only"),
        format!(
            "<6>{name}[{}]: segfault at 0 ip 00000000004005d6 sp 00007ffc2b0e9a10 error 6 \
             in {name}[400000+1000]",
            fake + 2
        ),
        format!("<6>vigil e2e {pid} done"),
    ]);

    let attr = |v: &Value, k: &str| v["attributes"][k].clone();
    let ours = |v: &Value| v["attributes"]["process.pid"] == i64::from(fake);
    let ev = wait_event(&agent, &pids, "PodOOMKilling", ours);
    assert_eq!(attr(&ev, "process.executable.name"), name.as_str());
    assert_eq!(attr(&ev, "k8s.pod.uid"), pod.as_str());
    assert_eq!(attr(&ev, "container.id"), cid.as_str());
    assert_eq!(attr(&ev, "linux.oom.oom_memcg"), memcg.as_str());

    let ev = wait_event(&agent, &pids, "OOMKilling", ours);
    assert_eq!(attr(&ev, "process.executable.name"), name.as_str());
    assert_eq!(attr(&ev, "k8s.pod.uid"), pod.as_str());
    assert_eq!(attr(&ev, "container.id"), cid.as_str());
    assert_eq!(attr(&ev, "linux.oom.total_vm_kb"), 123456);
    assert_eq!(attr(&ev, "linux.oom.anon_rss_kb"), 65432);
    assert_eq!(attr(&ev, "linux.oom.score_adj"), 900);

    let ev = wait_event(&agent, &pids, "FilesystemIsReadOnly", |v| {
        v["attributes"]["system.device"] == dev.as_str()
    });
    assert_eq!(attr(&ev, "system.filesystem.type"), "ext4");

    let ev = wait_event(&agent, &pids, "Segfault", |v| {
        v["attributes"]["process.pid"] == i64::from(fake + 2)
    });
    assert_eq!(attr(&ev, "process.executable.name"), name.as_str());

    let hung = |n: u32| fake + 10 + n;
    let ev = stack_event(
        &agent,
        &pids,
        "TaskHung",
        |n| {
            vec![
                format!(
                    "<3>INFO: task {name}:{} blocked for more than 122 seconds.",
                    hung(n)
                ),
                "<3>      Not tainted 6.18.0 #1".into(),
                "<4>Call Trace:".into(),
                " <TASK>".into(),
                format!(" vigil_hung_{pid}+0x1/0x2"),
                " schedule+0x2f/0xb0".into(),
                " </TASK>".into(),
                format!("<6>vigil e2e {pid} hung done"),
            ]
        },
        |n, v| v["attributes"]["process.pid"] == i64::from(hung(n)),
        &[
            "<TASK>".into(),
            format!("vigil_hung_{pid}+0x1/0x2"),
            "schedule+0x2f/0xb0".into(),
            "</TASK>".into(),
        ],
    );
    assert_eq!(attr(&ev, "process.executable.name"), name.as_str());
    assert_eq!(attr(&ev, "linux.task.blocked_seconds"), 122);

    for (event, head, func) in [
        (
            "KernelBug",
            // A NULL pointer dereference is a KernelOops (NPD's name): tests/kernel_events_e2e.rs.
            "<3>BUG: scheduling while atomic: swapper/0/0/0x00000002",
            "vigil_bug",
        ),
        ("KernelOops", "<0>Oops: 0002 [#1] PREEMPT SMP", "vigil_oops"),
    ] {
        let tag = |n: u32| format!("vigil{pid}x{n}");
        let ev = stack_event(
            &agent,
            &pids,
            event,
            |n| {
                vec![
                    format!("{head} {}", tag(n)),
                    "<4>Call Trace:".into(),
                    format!(" {func}_{pid}+0x10/0x20"),
                    " do_syscall_64+0x5d/0x90".into(),
                    format!("<6>vigil e2e {pid} {event} done"),
                ]
            },
            |n, v| v["body"].as_str().is_some_and(|b| b.ends_with(&tag(n))),
            &[
                format!("{func}_{pid}+0x10/0x20"),
                "do_syscall_64+0x5d/0x90".into(),
            ],
        );
        assert!(ev["resource"]["host.name"].is_string());
    }
}

/// Write an event with its `Call Trace:` (`lines(attempt)`), wait for the event
/// (`pred(attempt, _)`) and check its stack is exactly `frames`. Another writer of /dev/kmsg (a
/// test of another session on this machine) may slip an event line between ours, which ends the
/// stack early: then the group is written again under new ids, at most three times in all.
fn stack_event(
    agent: &Agent,
    marker: &str,
    event: &str,
    lines: impl Fn(u32) -> Vec<String>,
    pred: impl Fn(u32, &Value) -> bool,
    frames: &[String],
) -> Value {
    let mut last = Value::Null;
    for n in 0..3 {
        kmsg_write(&lines(n));
        let ev = wait_event(agent, marker, event, |v| pred(n, v));
        let stack = ev["attributes"]["exception.stacktrace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if stack.lines().eq(frames.iter().map(String::as_str)) {
            return ev;
        }
        eprintln!("attempt {n}: {event} with stack {stack:?}, expected {frames:?}");
        last = ev;
    }
    panic!("{event} never came with its stack {frames:?}: {last}");
}

/// A v1 memory cgroup holding one process; the process is killed and the cgroup removed on drop.
struct MemCgroup {
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn real_oom_kill_in_a_memory_cgroup() {
    let _k = KMSG.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new("/sys/fs/cgroup/memory");
    assert!(
        root.join("memory.limit_in_bytes").exists(),
        "no cgroup v1 memory controller at {}",
        root.display()
    );
    let rel = format!("/vigil-oom-{}", std::process::id());
    let dir = root.join(&rel[1..]);
    if dir.exists() {
        let _ = std::fs::remove_dir(&dir);
    }
    std::fs::create_dir(&dir).unwrap();
    let mut cg = MemCgroup { dir, child: None };
    std::fs::write(cg.dir.join("memory.limit_in_bytes"), "33554432").unwrap();
    let agent = start(None);

    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /usr/bin/python3 -c '\
b = []\nwhile True: b.append(bytearray(1 << 20))'",
        cg.dir.display()
    );
    let started = Instant::now();
    let child = cg
        .child
        .insert(Command::new("sh").arg("-c").arg(&script).spawn().unwrap());
    let pid = i64::from(child.id());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "python3 in a 32 MiB cgroup not killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    cg.child = None;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );

    let ev = agent
        .wait_json(Duration::from_secs(15), |v| {
            v["type"] == "log"
                && v["event_name"] == "OOMKilling"
                && v["attributes"]["process.pid"] == pid
        })
        .unwrap_or_else(|| {
            panic!(
                "no OOMKilling for {pid}; kernel log:\n{}\n--- stderr ---\n{}",
                sh("dmesg | tail -n 40"),
                agent.stderr.text()
            )
        });
    let a = &ev["attributes"];
    assert_eq!(a["process.executable.name"], "python3", "{ev}");
    assert_eq!(a["linux.oom.task_memcg"], rel.as_str(), "{ev}");
    assert!(
        a["linux.oom.anon_rss_kb"].as_i64().unwrap_or(0) > 10_000,
        "{ev}"
    );
    assert!(
        ev["body"]
            .as_str()
            .is_some_and(|b| b.contains(&format!("Killed process {pid} (python3)"))),
        "{ev}"
    );
    // Not a pod: no PodOOMKilling for it.
    assert!(
        !agent
            .json_lines()
            .iter()
            .any(|v| v["event_name"] == "PodOOMKilling" && v["attributes"]["process.pid"] == pid)
    );
}

/// Wait until records matching `pred` came from `n` distinct cycles; returns them.
fn wait_cycles(agent: &Agent, n: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m: Vec<Value> = agent.json_lines().into_iter().filter(|v| pred(v)).collect();
        let times: std::collections::BTreeSet<u64> = m
            .iter()
            .filter_map(|v| v["time_unix_nano"].as_u64())
            .collect();
        if times.len() >= n {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} cycles of {n}\n{}",
            times.len(),
            agent.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn feature_on(agent: &Agent, name: &str) -> bool {
    let r = agent.status().expect("status");
    r.features
        .iter()
        .find(|f| f.name.as_str() == name)
        .unwrap_or_else(|| panic!("no feature {name}: {:?}", r.features))
        .enabled
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper(uid: Option<u32>) -> Kill {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("sleep");
    c.arg("120");
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    Kill(c.spawn().unwrap())
}

fn fd_metrics_of(agent: &Agent, pid: u32) -> (usize, usize) {
    let lines = agent.json_lines();
    let count = |name: &str| {
        lines
            .iter()
            .filter(|v| v["name"] == name && v["resource"]["process.pid"] == i64::from(pid))
            .count()
    };
    (
        count("process.unix.file_descriptor.count"),
        count("process.linux.socket.count"),
    )
}

#[test]
fn capabilities_decide_fd_counts() {
    // (dropped, socket counts asked for, fd counts of root's process, its socket counts)
    for (drop, sockets_on, fds, sockets) in [
        // Default: fd counts by stat, no capability; socket counts are opt-in.
        ("", false, true, false),
        (
            "cap_sys_ptrace,cap_dac_read_search,cap_sys_admin",
            false,
            true,
            false,
        ),
        // Socket counts: the privhelper reads the links (DAC_READ_SEARCH + SYS_PTRACE).
        ("", true, true, true),
        ("cap_sys_ptrace", true, true, false),
    ] {
        // Every process every cycle (not only when it changed): the sleepers' records are
        // counted below.
        let agent = start_with(
            (!drop.is_empty()).then_some(drop),
            if sockets_on {
                "process_refresh_ms = 0\nprocess_sockets = true"
            } else {
                "process_refresh_ms = 0"
            },
        );
        let root = sleeper(None);
        let pid = root.0.id();
        let own = sleeper(Some(65534));
        // Process metrics keep coming for the other user's (root's) process.
        wait_cycles(&agent, 4, &format!("{drop}: process metrics"), |v| {
            v["name"] == "process.memory.usage" && v["resource"]["process.pid"] == i64::from(pid)
        });
        let (f, s) = fd_metrics_of(&agent, pid);
        let (of, os) = fd_metrics_of(&agent, own.0.id());
        assert_eq!(
            (of > 0, os > 0),
            (fds, sockets),
            "without {drop}: fd/socket records of the agent user's process {of}/{os}"
        );
        assert_eq!(
            (f > 0, s > 0),
            (fds, sockets),
            "without {drop}: fd/socket records {f}/{s}"
        );
        assert!(feature_on(&agent, "process_fds"), "{drop}");
        assert_eq!(feature_on(&agent, "process_sockets"), sockets, "{drop}");
        // The fd count is the process's: sleep holds stdin..stderr at least.
        let n = agent
            .json_lines()
            .iter()
            .rev()
            .find(|v| {
                v["name"] == "process.unix.file_descriptor.count"
                    && v["resource"]["process.pid"] == i64::from(pid)
            })
            .and_then(|v| v["value"].as_i64())
            .unwrap();
        assert!((3..64).contains(&n), "{drop}: {n} fds");
        if sockets_on && !sockets {
            assert!(
                agent.stderr.text().contains("process_sockets (needs"),
                "one warning names the feature: {}",
                agent.stderr.text()
            );
        }
        assert!(
            !agent.stderr.text().contains("killed by seccomp"),
            "{}",
            agent.stderr.text()
        );
    }
}

#[test]
fn without_sys_admin_netns_counters_still_come_from_proc() {
    let ns = netns("c");
    let (_resident, id) = resident(&ns);
    let agent = start(Some("cap_sys_admin,cap_sys_ptrace,cap_dac_read_search"));
    assert!(feature_on(&agent, "netns_metrics"));
    assert!(feature_on(&agent, "net_metrics"));
    wait_counters(&agent, 0, Ns::Id(id), &ns.ns_if, 0, Duration::from_secs(20));
    wait_counters(&agent, 0, Ns::Host, &ns.host_if, 0, Duration::from_secs(20));
    wait_counters(&agent, 0, Ns::Host, "lo", 0, Duration::from_secs(20));
    drop(agent);

    // The setns source needs both: without them it is off, said once, and the host's
    // counters stay.
    let agent = start_with(Some("cap_sys_admin"), "netns_source = \"setns\"");
    assert!(!feature_on(&agent, "netns_metrics_setns"));
    assert!(!feature_on(&agent, "netns_metrics"));
    assert!(agent.stderr.text().contains("netns_metrics_setns (needs"));
    wait_cycles(&agent, 4, "host interface counters", |v| {
        v["name"] == "system.network.io"
            && v["attributes"]["network.interface.name"] == ns.host_if.as_str()
            && Ns::Host.matches(&v["resource"])
    });
    let lines = agent.json_lines();
    assert!(
        !lines.iter().any(|v| !Ns::Host.matches(&v["resource"])
            && v["attributes"]["network.interface.name"].is_string()),
        "netns counters without cap_sys_admin"
    );
}
