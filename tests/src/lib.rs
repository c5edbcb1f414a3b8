//! Harness shared by the end-to-end tests: start the real `vigil` binary, talk to it the way an
//! operator would (`vigil status` over its socket, its stdout JSON lines), and read the real
//! kernel state of each of its processes from /proc.

pub mod backends;
pub mod conformance;
pub mod otlp;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;
use vigil_ipc_proto::{Channel, ClientRequest, ClientResponse, ProtoError, Role, StatusReport};

/// The `vigil` binary cargo built next to this test executable (target/<profile>/vigil).
pub fn vigil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("vigil");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Captured output of a child process, filled by reader threads.
#[derive(Default, Clone)]
pub struct Output {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Output {
    fn spawn_reader(&self, r: impl Read + Send + 'static) {
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines were captured so far.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines from index `start` on (to read a long output piece by piece).
    pub fn lines_from(&self, start: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines[start.min(lines.len())..].to_vec()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The newest line for which `f` answers, without copying the lines (an agent at a busy
    /// host prints tens of thousands of lines a cycle).
    pub fn find_last<T>(&self, f: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let mut f = f;
        self.lines.lock().unwrap().iter().rev().find_map(|l| f(l))
    }

    /// Wait until some line satisfies `pred`; returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                for l in &lines[seen..] {
                    if pred(l) {
                        return Some(l.clone());
                    }
                }
                seen = lines.len();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Default)]
pub struct AgentBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    runtime_dir: Option<PathBuf>,
    /// Leave the runtime dir's mode as the test made it.
    runtime_dir_as_is: bool,
}

impl AgentBuilder {
    /// Extra arguments after `vigil run`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Run vigil under a wrapper command, e.g. `capsh --drop=cap_syslog --`.
    pub fn wrapper<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.wrapper = it.into_iter().map(Into::into).collect();
        self
    }

    /// Use this runtime directory instead of a fresh temporary one (to test restarts over the
    /// same journal).
    pub fn runtime_dir(mut self, p: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(p.into());
        self
    }

    /// Use this runtime directory exactly as the test made it (mode and all).
    pub fn runtime_dir_as_is(mut self, p: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(p.into());
        self.runtime_dir_as_is = true;
        self
    }

    pub fn start(self) -> Agent {
        let (runtime_dir, tmp) = match self.runtime_dir {
            Some(p) => (p, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("vigil-e2e-")
                    .tempdir_in("/tmp")
                    .expect("tempdir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        if !self.runtime_dir_as_is {
            std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
            // The agent user must be able to traverse to its journal directory.
            std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod runtime dir");
        }
        let bin = vigil_bin();
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(&bin);
            c
        };
        cmd.arg("run")
            .arg("--runtime-dir")
            .arg(&runtime_dir)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn vigil");
        let stdout = Output::default();
        let stderr = Output::default();
        stdout.spawn_reader(child.stdout.take().unwrap());
        stderr.spawn_reader(child.stderr.take().unwrap());
        Agent {
            child,
            runtime_dir,
            _tmp: tmp,
            stdout,
            stderr,
        }
    }
}

/// A running `vigil run`. Dropping it kills the whole tree.
pub struct Agent {
    child: Child,
    pub runtime_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub stdout: Output,
    pub stderr: Output,
}

impl Agent {
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Start with the defaults the tests use: agent user `nobody`, 500 ms interval.
    pub fn start_default() -> Agent {
        Agent::builder()
            .args(["--user", "nobody", "--interval-ms", "500"])
            .start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("vigil.sock")
    }

    /// One status request over the supervisor's socket.
    pub fn status(&self) -> Result<StatusReport, String> {
        status_at(&self.socket_path())
    }

    /// Wait until the three children are up with their sandbox reported.
    pub fn wait_ready(&mut self, timeout: Duration) -> StatusReport {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "vigil exited early with {st}\n--- stderr ---\n{}",
                    self.stderr.text()
                );
            }
            match self.status() {
                Ok(r)
                    if r.processes.len() == 4
                        && r.processes
                            .iter()
                            .filter(|p| p.role != Role::Supervisor)
                            .all(|p| p.pid != 0 && !p.landlock.is_empty()) =>
                {
                    return r;
                }
                Ok(r) => last = format!("{r:?}"),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!(
                    "vigil not ready after {timeout:?}: {last}\n--- stderr ---\n{}",
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status once the privhelper reports its steady state (the collector's start-up is
    /// over and it kept only the capabilities its per-cycle requests need).
    pub fn wait_steady(&mut self, timeout: Duration) -> StatusReport {
        let deadline = Instant::now() + timeout;
        self.wait_ready(timeout);
        loop {
            let r = self.status().expect("status");
            let steady = r
                .stats
                .iter()
                .find(|(role, _)| *role == Role::Privhelper)
                .and_then(|(_, s)| s.get("steady_state"));
            if steady == Some(1) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "privhelper not in its steady state after {timeout:?}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pid of one role from a status report.
    pub fn role_pid(&self, role: Role) -> u32 {
        let r = self.status().expect("status");
        r.processes
            .iter()
            .find(|p| p.role == role)
            .unwrap_or_else(|| panic!("no {role} in {r:?}"))
            .pid
    }

    /// JSON objects printed on stdout by the default JSON-lines exporter.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The JSON objects of the stdout lines that contain `needle` (only those are parsed).
    pub fn json_lines_with(&self, needle: &str) -> Vec<serde_json::Value> {
        self.stdout
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait for a JSON line satisfying `pred`.
    pub fn wait_json(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        self.stdout
            .wait_for(timeout, |l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| pred(&v))
                    .unwrap_or(false)
            })
            .and_then(|l| serde_json::from_str(&l).ok())
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Wait for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        match self.wait_exit(Duration::from_secs(15)) {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                panic!("vigil did not stop within 15s of SIGTERM");
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- vigil stderr ---\n{}", self.stderr.text());
        }
    }
}

/// SIGTERM a child we started, by its pid; SIGKILL it if it is still there after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Connect to a supervisor's status socket and ask for its report.
pub fn status_at(path: &Path) -> Result<StatusReport, String> {
    let mut ch = connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    ch.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    ch.handshake(Role::StatusClient, Some(Role::Supervisor))
        .map_err(|e| format!("handshake: {e}"))?;
    ch.send(&ClientRequest::Status).map_err(|e| e.to_string())?;
    match ch.recv::<ClientResponse>().map_err(|e| e.to_string())? {
        ClientResponse::Status(r) => Ok(r),
        ClientResponse::Error(e) => Err(e),
    }
}

/// A raw SOCK_SEQPACKET connection to a Unix socket path.
pub fn connect(path: &Path) -> Result<Channel, ProtoError> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ProtoError::Io(e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| ProtoError::Io(e.into()))?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .map_err(|e| ProtoError::Io(e.into()))?;
    Ok(Channel::from_fd(fd))
}

/// The kernel's view of one process, from /proc/PID/status, read by the agent's own parser
/// (the fields `vigil status` reports), and its other lines by name for the rarer checks.
pub use vigil_testkit::{proc_status, proc_status_kib, proc_status_line};

/// Bit of a capability in the /proc masks.
pub const fn cap_bit(cap: u32) -> u64 {
    1u64 << cap
}

/// Capability numbers from linux/capability.h used by the tests.
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const KILL: u32 = 5;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_ADMIN: u32 = 12;
    pub const NET_RAW: u32 = 13;
    pub const SYS_CHROOT: u32 = 18;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYSLOG: u32 = 34;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// Wrapper that starts vigil with these capabilities dropped from the bounding set (so they
/// are absent from its permitted set after exec), e.g. `capsh_drop("cap_syslog,cap_bpf")`.
pub fn capsh_drop(caps: &str) -> Vec<String> {
    vec![
        "capsh".into(),
        format!("--drop={caps}"),
        "--".into(),
        "-c".into(),
        "exec \"$0\" \"$@\"".into(),
    ]
}

/// Namespace identity of a process (`mnt:[4026531841]`).
pub fn ns_of(pid: u32, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A name no other run (or earlier boot record still in the kernel ring) uses: `vg<tag>` and 24
/// bits of time and pid, short enough for a process name (15 bytes).
pub fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let x = (nanos as u64) ^ (u64::from(std::process::id()) << 20);
    format!("vg{tag}{:06x}", x & 0xff_ffff)
}

/// One line into the kernel log. A fresh open per line: /dev/kmsg rate-limits each opener to
/// 10 lines per 5 s when `kernel.printk_devkmsg=ratelimit` (the default). The trailing newline
/// matters: without it the kernel keeps the record open for a continuation and readers do not
/// see it until some other message is logged.
pub fn kmsg(line: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write /dev/kmsg");
}

/// Segfault lines for `name` with pids `ns` into the kernel log: each becomes one `Segfault`
/// log record with `process.executable.name = name` and `process.pid = n` (the markers the
/// delivery tests count).
pub fn kmsg_segfaults(name: &str, ns: impl IntoIterator<Item = i64>) {
    for n in ns {
        kmsg(&format!(
            "<6>{name}[{n}]: segfault at 0 ip 0000000000000000 sp 00007ffc00000000 error 4 in {name}[1000,2000]"
        ));
    }
}

/// Run a command, panic with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Values of every `KEY=` assignment of a systemd unit's text, in order (comments skipped).
pub fn unit_directive(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The system calls of one `systemd-analyze syscall-filter` group, nested groups expanded.
pub fn syscall_group(group: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", group])
        .output()
        .expect("systemd-analyze missing: apt-get install systemd (deploy/ci-deps.sh)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {group}"
    );
    let mut set = std::collections::BTreeSet::new();
    for l in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let name = t.split_whitespace().next().unwrap_or_default();
        if name.starts_with('@') {
            set.extend(syscall_group(name));
        } else {
            set.insert(name.to_string());
        }
    }
    assert!(!set.is_empty(), "empty syscall group {group}");
    set
}

/// The system calls a unit's `SystemCallFilter=` lines allow, composed as systemd does: the
/// first line is the allow list (this helper refuses a deny-list unit), later lines add
/// (plain) or remove (`~`) names and groups.
pub fn unit_syscall_allowlist(text: &str) -> std::collections::BTreeSet<String> {
    let lines = unit_directive(text, "SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the unit's first SystemCallFilter= must be an allow list: {lines:?}"
    );
    let mut allowed = std::collections::BTreeSet::new();
    for l in &lines {
        let (deny, list) = match l.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, l.as_str()),
        };
        for item in list.split_whitespace() {
            let names = if item.starts_with('@') {
                syscall_group(item)
            } else {
                std::iter::once(item.to_string()).collect()
            };
            for n in names {
                if deny {
                    allowed.remove(&n);
                } else {
                    allowed.insert(n);
                }
            }
        }
    }
    allowed
}

/// Address family numbers (linux/socket.h) of `RestrictAddressFamilies=` names.
pub fn address_family(name: &str) -> u32 {
    match name {
        "AF_UNIX" => 1,
        "AF_INET" => 2,
        "AF_INET6" => 10,
        "AF_NETLINK" => 16,
        "AF_PACKET" => 17,
        other => panic!("address family {other} not known to the harness"),
    }
}

/// Loads a seccomp filter (libseccomp through ctypes) that allows exactly the listed system
/// calls and `socket()` of the listed families, failing everything else with EPERM, then
/// execs the rest of its command line: what systemd's `SystemCallFilter=`,
/// `SystemCallErrorNumber=EPERM` and `RestrictAddressFamilies=` install before ExecStart.
/// With `mdwe` = 1 also what `MemoryDenyWriteExecute=yes` adds (systemd 252 does it with
/// seccomp): no mmap that is both writable and executable, no mprotect to executable.
const SECCOMP_EXEC_PY: &str = r#"
import ctypes, os, sys
allow_file, families, mdwe, argv = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.c_void_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
ALLOW, EPERM, EQ, MASKED_EQ = 0x7fff0000, 0x00050000 | 1, 4, 7
PROT_WRITE, PROT_EXEC = 2, 4
ctx = lib.seccomp_init(EPERM)
assert ctx, "seccomp_init"
nr_of = lambda n: lib.seccomp_syscall_resolve_name(n)
def allow_if(nr, arg, op, a, b=0):
    cmp = Cmp(arg, op, a, b)
    assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 1, ctypes.byref(cmp)) == 0, nr
special = {nr_of(b"socket")}
if mdwe:
    special |= {nr_of(b"mmap"), nr_of(b"mprotect"), nr_of(b"pkey_mprotect")}
allowed = set()
for name in open(allow_file).read().split():
    nr = nr_of(name.encode())
    if nr < 0:
        continue  # not a syscall of this architecture
    allowed.add(nr)
    if nr not in special:
        assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None) == 0, name
for fam in families.split(","):
    allow_if(nr_of(b"socket"), 0, EQ, int(fam))
if mdwe:
    # prot is argument 2 of all three: allowed unless writable+executable (mmap) or
    # executable (mprotect, pkey_mprotect).
    allow_if(nr_of(b"mmap"), 2, MASKED_EQ, PROT_EXEC, 0)
    allow_if(nr_of(b"mmap"), 2, MASKED_EQ, PROT_WRITE, 0)
    for n in (b"mprotect", b"pkey_mprotect"):
        if nr_of(n) in allowed:
            allow_if(nr_of(n), 2, MASKED_EQ, PROT_EXEC, 0)
assert lib.seccomp_load(ctx) == 0, "seccomp_load (NoNewPrivs set?)"
os.execv(argv[0], argv)
"#;

/// A wrapper (for [`AgentBuilder::wrapper`]) that starts a program the way systemd starts
/// `unit`'s ExecStart, at the process level (there is no systemd PID 1 to ask): as its
/// `User=`/`Group=` with supplementary groups, with exactly its `AmbientCapabilities=` as
/// inheritable+ambient and its `CapabilityBoundingSet=` as bounding set (both minus
/// `without`, e.g. `["CAP_NET_RAW"]`), its `SecureBits=`, `NoNewPrivileges=`, and its
/// syscall, address-family and `MemoryDenyWriteExecute=` filters. The mount-namespace settings (ProtectSystem=,
/// InaccessiblePaths=, PrivateDevices=, ...) are not emulated. `dir` receives the filter
/// files and must be readable by the unit's user.
pub fn systemd_unit_wrapper(unit_text: &str, without: &[&str], dir: &Path) -> Vec<String> {
    let one = |key: &str| -> String {
        let v = unit_directive(unit_text, key);
        assert_eq!(v.len(), 1, "expected one {key}= in the unit: {v:?}");
        v[0].clone()
    };
    let caps = |key: &str| -> String {
        let mut s = String::from("-all");
        for c in one(key).split_whitespace() {
            if !without.contains(&c) {
                s.push_str(&format!(
                    ",+{}",
                    c.to_lowercase().trim_start_matches("cap_")
                ));
            }
        }
        s
    };
    let user = one("User");
    let group = one("Group");
    let mut w: Vec<String> = vec![
        "setpriv".into(),
        format!("--reuid={user}"),
        format!("--regid={group}"),
        "--init-groups".into(),
        format!("--inh-caps={}", caps("AmbientCapabilities")),
        format!("--ambient-caps={}", caps("AmbientCapabilities")),
        format!("--bounding-set={}", caps("CapabilityBoundingSet")),
    ];
    let bits: Vec<String> = unit_directive(unit_text, "SecureBits")
        .iter()
        .flat_map(|l| {
            l.split_whitespace()
                .map(|b| format!("+{}", b.replace('-', "_")))
        })
        .collect();
    if !bits.is_empty() {
        w.push(format!("--securebits={}", bits.join(",")));
    }
    if unit_directive(unit_text, "NoNewPrivileges") == ["yes"] {
        w.push("--no-new-privs".into());
    }
    assert_eq!(
        unit_directive(unit_text, "SystemCallErrorNumber"),
        ["EPERM"],
        "the emulated filter fails calls with EPERM"
    );
    let allow = unit_syscall_allowlist(unit_text);
    let allow_file = dir.join("syscalls.allow");
    std::fs::write(
        &allow_file,
        allow.iter().cloned().collect::<Vec<_>>().join("\n"),
    )
    .expect("write syscall list");
    let families: Vec<String> = one("RestrictAddressFamilies")
        .split_whitespace()
        .map(|f| address_family(f).to_string())
        .collect();
    let script = dir.join("seccomp-exec.py");
    std::fs::write(&script, SECCOMP_EXEC_PY).expect("write seccomp loader");
    for p in [&allow_file, &script] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mdwe = unit_directive(unit_text, "MemoryDenyWriteExecute") == ["yes"];
    w.extend([
        // The system interpreter: a user's pyenv shim is not reachable for the unit's user.
        "/usr/bin/python3".into(),
        script.display().to_string(),
        allow_file.display().to_string(),
        families.join(","),
        if mdwe { "1" } else { "0" }.into(),
    ]);
    w
}

/// The features on in the default configuration on this kernel whatever the launch (the
/// supervisor's virtual_root and user_switch depend on it): fd counts and network namespace
/// counters need no capability at all.
pub const DEFAULT_ON: &[&str] = &[
    "host_metrics",
    "process_metrics",
    "process_iter",
    "process_fds",
    "container_metrics",
    "disk_metrics",
    "net_metrics",
    "netns_metrics",
    "disk_io",
    "paging_metrics",
    "pressure_metrics",
    "connection_metrics",
    "ebpf_tcp_changes",
    "k8s_names",
    "kmsg_events",
    "ebpf_exec",
    "ebpf_flows_tracepoint",
];

/// Wait until every marker of `want` is among those `arrived` returns (asked every 100 ms);
/// past `timeout`, fail naming the missing ones.
pub fn wait_markers_by(
    name: &str,
    want: &std::collections::BTreeSet<i64>,
    timeout: Duration,
    mut arrived: impl FnMut() -> std::collections::BTreeSet<i64>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = arrived();
        if want.is_subset(&got) {
            return;
        }
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            Instant::now() < deadline,
            "{name}: {} of {} markers missing after {timeout:?}: {missing:?}",
            missing.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent as the delivery tests run it: user nobody, a cycle a second, no JSON lines (the
/// backend is what they read).
pub const QUIET_ARGS: [&str; 6] = [
    "--user",
    "nobody",
    "--interval-ms",
    "1000",
    "--json-lines",
    "",
];
