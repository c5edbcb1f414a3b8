//! Issue 12 end to end, one test per new group, each on real kernel state the test makes: disk
//! I/O on a loop device backed by a file on tmpfs, PSI of a memory cgroup under pressure (and
//! the page faults it causes), connection counts of sockets the test opens, the opt-in
//! /proc/PID/io of another user's process, process counts by state.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::netns::LoopbackNetns;
use vigil_tests::conformance::Table;
use vigil_tests::{Agent, sh};

fn agent(extra_toml: &str) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!("[collector]\ninterval_ms = 500\n{extra_toml}"),
    )
    .unwrap();
    let mut a = Agent::builder()
        .args(["--user", "nobody", "--config"])
        .arg(cfg.display().to_string())
        .start();
    a.wait_ready(Duration::from_secs(30));
    (a, dir)
}

/// The newest value of `name` whose line satisfies `pred`, waiting until `done(value)`.
fn wait_value(
    a: &Agent,
    secs: u64,
    name: &str,
    pred: impl Fn(&Value) -> bool,
    done: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        // Only the lines naming the metric are parsed (a run's output grows fast).
        last = a
            .json_lines_with(&format!("\"name\":\"{name}\""))
            .iter()
            .rev()
            .find(|l| l["name"] == name && pred(l))
            .and_then(|l| l["value"].as_f64());
        if last.is_some_and(&done) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last
}

/// Every line the agent wrote conforms to the table.
fn conforms(a: &Agent) {
    let (problems, _) = Table::load().check_lines(&a.json_lines());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

struct Loop {
    dev: String,
    file: String,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn disk_io_of_a_loop_device() {
    let file = format!("/dev/shm/vigil-disk-{}", std::process::id());
    sh(&format!("truncate -s 64M {file}"));
    let dev = sh(&format!("losetup -f --show {file}")).trim().to_string();
    let lo = Loop {
        dev: dev.clone(),
        file,
    };
    let name = dev.trim_start_matches("/dev/").to_string();
    // node-exporter's default leaves loop devices out: include them here.
    let (a, _d) = agent("disk_devices_exclude = \"^(ram|fd)\\\\d+$\"\n");
    let is_dev = |l: &Value, dir: &str| {
        l["attributes"]["system.device"] == name.as_str()
            && l["attributes"]["disk.io.direction"] == dir
    };
    let before = wait_value(&a, 20, "system.disk.io", |l| is_dev(l, "write"), |_| true)
        .expect("the loop device is reported");
    sh(&format!(
        "dd if=/dev/urandom of={dev} bs=1M count=8 oflag=direct status=none"
    ));
    sh(&format!(
        "dd if={dev} of=/dev/null bs=1M count=4 iflag=direct status=none"
    ));
    let w = wait_value(
        &a,
        20,
        "system.disk.io",
        |l| is_dev(l, "write"),
        |v| v >= before + 8.0 * 1048576.0,
    );
    assert!(
        w.is_some_and(|v| v >= before + 8.0 * 1048576.0),
        "written {w:?}, before {before}"
    );
    let r = wait_value(
        &a,
        10,
        "system.disk.operations",
        |l| is_dev(l, "read"),
        |v| v >= 4.0,
    );
    assert!(r.is_some_and(|v| v >= 4.0), "read operations {r:?}");
    let t = wait_value(
        &a,
        10,
        "system.disk.io_time",
        |l| l["attributes"]["system.device"] == name.as_str(),
        |v| v > 0.0,
    );
    assert!(t.is_some_and(|v| v > 0.0), "io_time {t:?}");
    conforms(&a);
    drop(a);
    drop(lo);
}

/// A process that fills and re-reads a file twice the size of its memory cgroup's limit, in
/// a cgroup2 directory named like a docker container (PSI is accounted there) and a memory
/// limit (v1 memory controller on hybrid hosts, memory.max on pure cgroup2).
struct Pressured {
    dirs: Vec<String>,
    child: std::process::Child,
    file: String,
}

impl Drop for Pressured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The shell's current `cat` outlives it: kill whatever is left in the cgroups.
        for _ in 0..50 {
            let mut left = false;
            for d in &self.dirs {
                let procs =
                    std::fs::read_to_string(format!("{d}/cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    left = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

fn pressured(tag: &str, id: &str) -> Pressured {
    let unified = if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let mut dirs = Vec::new();
    let mut joins = Vec::new();
    let v2 = format!("{unified}/{tag}/docker-{id}.scope");
    std::fs::create_dir_all(&v2).unwrap();
    dirs.extend([format!("{unified}/{tag}"), v2.clone()]);
    if unified == "/sys/fs/cgroup" {
        std::fs::write(format!("{unified}/{tag}/cgroup.subtree_control"), "+memory").unwrap();
        std::fs::write(format!("{v2}/memory.max"), "32M").unwrap();
    } else {
        let m = format!("/sys/fs/cgroup/memory/{tag}");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(format!("{m}/memory.limit_in_bytes"), "32M").unwrap();
        dirs.push(m.clone());
        joins.push(format!("echo $$ > {m}/cgroup.procs"));
    }
    joins.push(format!("echo $$ > {v2}/cgroup.procs"));
    let file = format!("/var/tmp/vigil-psi-{}", std::process::id());
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} && dd if=/dev/zero of={file} bs=1M count=96 status=none && \
             while true; do cat {file} > /dev/null; done",
            joins.join(" && ")
        ))
        .spawn()
        .unwrap();
    Pressured { dirs, child, file }
}

#[test]
fn pressure_of_a_memory_cgroup_and_page_faults() {
    let tag = format!("vigil-psi-{}", std::process::id());
    let id = format!(
        "{:064x}",
        u128::from(std::process::id()) * 0xfeed_beef_1234_5678
    );
    let (a, _d) = agent("");
    let of_ctr = |l: &Value| {
        l["resource"]["container.id"] == id.as_str()
            && l["attributes"]["system.pressure.stall_type"] == "some"
    };
    let host_faults = |l: &Value| l["attributes"]["system.paging.fault.type"] == "minor";
    let f0 = wait_value(&a, 20, "system.paging.faults", host_faults, |_| true).unwrap();
    let _p = pressured(&tag, &id);
    let stall = wait_value(
        &a,
        60,
        "container.memory.linux.pressure.total",
        of_ctr,
        |v| v > 0.0,
    );
    assert!(
        stall.is_some_and(|v| v > 0.0),
        "no memory stall for the cgroup: {stall:?}\n{}",
        a.stderr.text()
    );
    let host = wait_value(
        &a,
        10,
        "system.memory.linux.pressure.total",
        |l| l["attributes"]["system.pressure.stall_type"] == "some",
        |v| v > 0.0,
    );
    assert!(
        host.is_some_and(|v| v > 0.0),
        "host memory pressure {host:?}"
    );
    // Filling the page cache faulted pages in: the host's minor faults grew.
    let f1 = wait_value(&a, 10, "system.paging.faults", host_faults, |v| v > f0).unwrap();
    assert!(f1 > f0, "minor faults {f0} → {f1}");
    conforms(&a);
}

#[test]
fn connection_counts_follow_the_sockets_opened() {
    let (a, _d) = agent("");
    let count = |state: &'static str, transport: &'static str| {
        move |l: &Value| {
            l["attributes"]["network.connection.state"] == state
                && l["attributes"]["network.transport"] == transport
        }
    };
    let name = "system.network.connection.count";
    let listen0 = wait_value(&a, 20, name, count("listen", "tcp"), |_| true).unwrap_or(0.0);
    let listeners: Vec<std::net::TcpListener> = (0..300)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut pairs = Vec::new();
    for l in listeners.iter().take(100) {
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        pairs.push((c, s));
    }
    let udp: Vec<std::net::UdpSocket> = (0..50)
        .map(|_| std::net::UdpSocket::bind("[::1]:0").unwrap())
        .collect();
    let listen = wait_value(&a, 20, name, count("listen", "tcp"), |v| v >= 300.0);
    assert!(
        listen.is_some_and(|v| v >= 300.0 && v > listen0),
        "listening {listen:?} (before {listen0})"
    );
    let est = wait_value(&a, 10, name, count("established", "tcp"), |v| v >= 200.0);
    assert!(est.is_some_and(|v| v >= 200.0), "established {est:?}");
    let unconnected = wait_value(&a, 10, name, count("closed", "udp"), |v| v >= 50.0);
    assert!(
        unconnected.is_some_and(|v| v >= 50.0),
        "udp {unconnected:?}"
    );
    drop((listeners, pairs, udp));
    conforms(&a);
}

/// The agent in a network namespace of its own (`ip netns exec`), so that it counts only the
/// sockets this test makes: a half close, a change of state with no socket more or less in use
/// (which only the kernel's count of TCP state changes shows), is in the counts within a few
/// cycles, and quiet cycles reuse the last walk of the TCP hash instead of walking again.
#[test]
fn connection_states_follow_a_change_without_walking_every_cycle() {
    let ns = LoopbackNetns::new(format!("vigil-tcpchg-{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[collector]\ninterval_ms = 200\n").unwrap();
    let mut a = Agent::builder()
        .wrapper(["ip", "netns", "exec", ns.name.as_str()])
        .args(["--user", "nobody", "--config"])
        .arg(cfg.display().to_string())
        .start();
    a.wait_ready(Duration::from_secs(30));
    // A connection held open; a line on stdin half-closes it (the client's FIN).
    let mut py = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name.as_str(), "python3", "-c"])
        .arg(
            "import socket, sys\n\
             l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n\
             c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n\
             print('ready', flush=True); sys.stdin.readline()\n\
             c.shutdown(socket.SHUT_WR); print('closed', flush=True); sys.stdin.readline()\n",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let name = "system.network.connection.count";
    let state = |s: &'static str| {
        move |l: &Value| {
            l["attributes"]["network.connection.state"] == s
                && l["attributes"]["network.transport"] == "tcp"
        }
    };
    assert_eq!(
        wait_value(&a, 10, name, state("established"), |v| v == 2.0),
        Some(2.0)
    );
    // Quiet cycles: the last walk's counts stand (any TCP change on the host walks again).
    let skipped = || {
        a.status()
            .ok()
            .and_then(|st| {
                st.stats
                    .iter()
                    .find(|(r, _)| *r == vigil_ipc_proto::Role::Collector)
                    .and_then(|(_, s)| s.get("tcp_walks_skipped"))
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while skipped() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(skipped() > 0, "no cycle reused a walk");
    // The half close: both ends change state, nothing is opened or closed.
    let mut stdin = py.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "closed");
    // Within 3 s: well before the walk that comes 10 s after the last one anyway.
    let cw = wait_value(&a, 3, name, state("close_wait"), |v| v == 1.0);
    assert_eq!(cw, Some(1.0), "close_wait");
    assert_eq!(
        wait_value(&a, 1, name, state("fin_wait_2"), |v| v == 1.0),
        Some(1.0),
        "fin_wait_2"
    );
    drop(stdin);
    let _ = py.wait();
    conforms(&a);
}

/// A python process of uid 1 (not the agent user) that wrote 8 MiB and then waits.
fn writer_of_another_user(file: &str) -> std::process::Child {
    std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "import os,time\nf=os.open('{file}',os.O_WRONLY|os.O_CREAT,0o600)\n\
                 os.write(f,b'x'*(8<<20))\nos.fsync(f)\nprint('ok',flush=True)\ntime.sleep(120)"
            ),
        ])
        .uid(1)
        .gid(1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn process_io_of_another_users_process_is_opt_in() {
    let file = format!("/tmp/vigil-pio-{}", std::process::id());
    let _ = std::fs::remove_file(&file);
    let mut child = writer_of_another_user(&file);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ok");
    let pid = i64::from(child.id());
    let mine = |l: &Value| l["resource"]["process.pid"] == pid;
    // Off by default: no /proc/PID/io, no executable path.
    {
        let (a, _d) = agent("");
        assert!(wait_value(&a, 20, "process.cpu.time", mine, |_| true).is_some());
        assert!(
            a.json_lines_with("process.disk.io").is_empty()
                && a.json_lines_with("process.executable.path").is_empty(),
            "process I/O without the opt-in"
        );
    }
    let (a, _d) = agent("process_io = true\n");
    let written = wait_value(
        &a,
        30,
        "process.disk.io",
        |l| mine(l) && l["attributes"]["disk.io.direction"] == "write",
        |v| v >= 8.0 * 1048576.0,
    );
    assert!(
        written.is_some_and(|v| v >= 8.0 * 1048576.0),
        "written {written:?}\n{}",
        a.stderr.text()
    );
    let ops = wait_value(
        &a,
        10,
        "process.disk.operations",
        |l| mine(l) && l["attributes"]["disk.io.direction"] == "write",
        |v| v >= 1.0,
    );
    assert!(ops.is_some_and(|v| v >= 1.0), "write calls {ops:?}");
    let exe = a
        .json_lines_with("process.executable.path")
        .into_iter()
        .find(|l| mine(l) && l["resource"]["process.executable.path"].is_string())
        .expect("executable path");
    let path = exe["resource"]["process.executable.path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::canonicalize("/usr/bin/python3").unwrap(),
        std::path::Path::new(&path),
        "{path}"
    );
    assert_eq!(exe["resource"]["process.user.id"], 1);
    let st = vigil_tests::proc_status(a.role_pid(vigil_ipc_proto::Role::Privhelper)).unwrap();
    let needed = vigil_tests::cap_bit(vigil_tests::cap::DAC_READ_SEARCH)
        | vigil_tests::cap_bit(vigil_tests::cap::SYS_PTRACE);
    assert_eq!(
        st.cap_eff & needed,
        needed,
        "privhelper holds the opt-in's capabilities"
    );
    conforms(&a);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);
}

#[test]
fn process_counts_by_state() {
    let mut stopped = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stopped.id() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    // A zombie: a child that exits while its parent (sh) never waits (exec sleep).
    let mut parent = std::process::Command::new("sh")
        .args(["-c", "true & exec sleep 120"])
        .spawn()
        .unwrap();
    let (a, _d) = agent("");
    let state = |s: &'static str| move |l: &Value| l["attributes"]["process.state"] == s;
    for s in ["running", "sleeping", "stopped", "defunct"] {
        let v = wait_value(&a, 20, "system.process.count", state(s), |v| v >= 1.0);
        assert!(v.is_some_and(|v| v >= 1.0), "{s}: {v:?}");
    }
    let created = wait_value(&a, 10, "system.process.created", |_| true, |v| v > 0.0);
    assert!(created.is_some_and(|v| v > 0.0));
    // The stopped process's own record says so.
    let pid = i64::from(stopped.id());
    assert!(a.json_lines_with("\"stopped\"").iter().any(
        |l| l["resource"]["process.pid"] == pid && l["resource"]["process.state"] == "stopped"
    ));
    conforms(&a);
    let _ = stopped.kill();
    let _ = stopped.wait();
    let _ = parent.kill();
    let _ = parent.wait();
}
