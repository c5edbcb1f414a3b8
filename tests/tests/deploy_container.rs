//! SLOW (about 3 minutes on a fresh machine, 30 s when the static binary is up to date): the
//! container image of deploy/container, built offline with buildah from a static release
//! binary, runs the way the non-privileged DaemonSet runs it:
//!
//!   podman --runtime runc run --cap-drop ALL --cap-add <the add-list of the DaemonSet>
//!     --security-opt no-new-privileges (allowPrivilegeEscalation: false)
//!     --read-only --read-only-tmpfs=false (readOnlyRootFilesystem, no tmpfs of podman's own)
//!     --network host --pid host --device /dev/kmsg:/dev/kmsg:r
//!     -v /:/hostfs:ro -v <journal dir>:<same path>
//!     -v deploy/kubernetes/non-privileged/vigil.toml:/etc/vigil/vigil.toml:ro (its ConfigMap)
//!     vigil:deploytest run --config /etc/vigil/vigil.toml --runtime-dir <journal dir>
//!       --otlp-endpoint ...   (only what a test must override)
//!
//! and checks: no SYS_ADMIN anywhere, every default feature on (the view is the runtime's:
//! virtual_root off by configuration, no warning), eBPF programs attached, the children run as
//! the agent user, nothing outside the runtime dir is writable (the runtime's mounts, then the
//! supervisor's and the children's own confinement), `vigil status` (the liveness probe)
//! answers inside the container, OTLP metrics and logs reach a receiver on loopback, a smaller
//! add-list turns exactly the matching features off, the minimal mode's view is built with
//! SYS_ADMIN, and the journal written while the backend was unreachable is shipped by the next
//! container on the same host directory.
//!
//! Seccomp: the runtime's RuntimeDefault profile decides whether bpf() and perf_event_open
//! pass. containerd's current profile allows them to a container holding CAP_BPF /
//! CAP_PERFMON; podman's and CRI-O's (containers/common, /usr/share/containers/seccomp.json)
//! only to one holding CAP_SYS_ADMIN. The non-privileged runs use podman's profile turned into
//! containerd's in that respect (`containerd_like_profile`); one run with podman's own
//! profile shows what a CRI-O node gives the same DaemonSet: everything but eBPF.
//!
//! runc, not crun: Debian 12's crun refuses hybrid cgroup hierarchies ("cgroups in hybrid mode
//! not supported"), which this VM has. Tools: deploy/ci-deps.sh (podman, buildah, runc).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use vigil_tests::DEFAULT_ON;
use vigil_tests::otlp::{Metric, Received, Receiver, free_port};

const IMAGE: &str = "localhost/vigil:deploytest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (deploy/ci-deps.sh installs it)"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

/// Add-list of the non-privileged DaemonSet (the source of truth for this test).
fn manifest_add_list() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/non-privileged/vigil.yaml"))
        .unwrap();
    let mut out = Vec::new();
    let mut in_add = false;
    for l in yaml.lines() {
        let t = l.trim();
        if t == "add:" {
            in_add = true;
            continue;
        }
        if in_add {
            match t.strip_prefix("- ") {
                Some(c) => out.push(c.split('#').next().unwrap().trim().to_string()),
                None if t.starts_with('#') => {}
                None => break,
            }
        }
    }
    assert!(out.len() > 3, "no add-list found");
    out
}

fn cap_number(name: &str) -> u32 {
    const CAPS: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    CAPS.iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("unknown capability {name}")) as u32
}

/// The timestamps of every record received: log records (time, or observed time), gauge and
/// sum points.
fn record_times(r: &Received) -> Vec<u64> {
    let logs = r
        .logs
        .iter()
        .map(|l| l.log.time_unix_nano.max(l.log.observed_time_unix_nano));
    let points = r.metrics.iter().flat_map(|m| point_times(&m.metric));
    logs.chain(points).collect()
}

fn point_times(m: &Metric) -> Vec<u64> {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.time_unix_nano).collect(),
        _ => Vec::new(),
    }
}

/// The debug `vigil` next to this test (target/debug/vigil).
fn vigil_host_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("vigil")
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn hard_limit(res: libc::__rlimit_resource_t) -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(res, &mut l) };
    l.rlim_max.min(1 << 20)
}

/// podman's default seccomp profile (containers/common: podman's and CRI-O's RuntimeDefault)
/// with bpf and perf_event_open allowed as containerd's RuntimeDefault allows them: to a
/// container holding CAP_BPF, respectively CAP_PERFMON, instead of CAP_SYS_ADMIN only.
/// Returns the file and how many syscall names podman's profile tied to CAP_SYS_ADMIN (0: the
/// installed profile already lets CAP_BPF through).
fn containerd_like_profile(dir: &Path) -> (PathBuf, usize) {
    let src = "/usr/share/containers/seccomp.json";
    let text = std::fs::read_to_string(src)
        .unwrap_or_else(|e| panic!("{src}: {e} (deploy/ci-deps.sh installs podman)"));
    let mut profile: serde_json::Value = serde_json::from_str(&text).expect("seccomp JSON");
    let ebpf = |n: &serde_json::Value| n == "bpf" || n == "perf_event_open";
    let mut moved = 0;
    let rules = profile["syscalls"].as_array_mut().expect("syscalls");
    for rule in rules.iter_mut() {
        let filters = [&rule["includes"]["caps"], &rule["excludes"]["caps"]];
        let sys_admin = filters
            .iter()
            .filter_map(|c| c.as_array())
            .flatten()
            .any(|c| c == "CAP_SYS_ADMIN");
        if !sys_admin {
            continue;
        }
        if let Some(names) = rule["names"].as_array_mut() {
            let before = names.len();
            names.retain(|n| !ebpf(n));
            moved += before - names.len();
        }
    }
    rules.retain(|r| r["names"].as_array().is_none_or(|n| !n.is_empty()));
    for (name, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        rules.push(serde_json::json!({
            "names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}
        }));
    }
    let path = dir.join("containerd-like-seccomp.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    (path, moved)
}

/// How a test container runs. [`Opts::daemonset`] is the non-privileged DaemonSet's way.
struct Opts {
    caps: Vec<String>,
    /// podman arguments: host mounts, config mount, seccomp profile, environment.
    podman: Vec<String>,
    /// `vigil run` arguments before the ones every run gets (runtime dir, interval, output).
    args: Vec<String>,
}

impl Opts {
    /// The add-list `caps`, the host root read-only at /hostfs, the DaemonSet's vigil.toml
    /// (deploy/kubernetes/non-privileged, its ConfigMap) at /etc/vigil read-only, and the
    /// seccomp profile `seccomp` (None: podman's default).
    fn daemonset(caps: &[String], seccomp: Option<&Path>) -> Opts {
        let toml = repo().join("deploy/kubernetes/non-privileged/vigil.toml");
        let mut podman = vec![
            "-v".to_string(),
            "/:/hostfs:ro".to_string(),
            "-v".to_string(),
            format!("{}:/etc/vigil/vigil.toml:ro", toml.display()),
        ];
        if let Some(p) = seccomp {
            podman.push("--security-opt".into());
            podman.push(format!("seccomp={}", p.display()));
        }
        Opts {
            caps: caps.to_vec(),
            podman,
            args: vec!["--config".into(), "/etc/vigil/vigil.toml".into()],
        }
    }

    fn env(mut self, k: &str, v: &str) -> Opts {
        self.podman.push("--env".into());
        self.podman.push(format!("{k}={v}"));
        self
    }
}

struct Container {
    name: String,
}

impl Container {
    /// The non-privileged DaemonSet's way, containerd's seccomp behaviour.
    fn start(name: &str, opts: Opts, journal: &Path, endpoint: &str) -> Container {
        let _ = run(podman().args(["rm", "-f", name]));
        let nofile = hard_limit(libc::RLIMIT_NOFILE).min(8192);
        let nproc = hard_limit(libc::RLIMIT_NPROC).min(4096);
        let j = journal.to_str().unwrap();
        ok(podman()
            .args(["run", "-d", "--name", name])
            .args(["--cap-drop", "ALL", "--cap-add", &opts.caps.join(",")])
            .args(["--security-opt", "no-new-privileges"])
            // readOnlyRootFilesystem: no writable tmpfs at /tmp, /run, /var/tmp either.
            .args(["--read-only", "--read-only-tmpfs=false"])
            .args(["--network", "host", "--pid", "host"])
            // runc would set podman's default limits, which the VM's hard limits may be
            // below; lowering is always allowed.
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
            .args(&opts.podman)
            .args(["-v", &format!("{j}:{j}")])
            .args(["--device", "/dev/kmsg:/dev/kmsg:r"])
            .arg(IMAGE)
            .arg("run")
            .args(&opts.args)
            .args(["--runtime-dir", j, "--interval-ms", "1000", "--json-lines="])
            .args(["--otlp-endpoint", endpoint]));
        Container { name: name.into() }
    }

    fn pid(&self) -> u32 {
        ok(podman().args(["inspect", "--format", "{{.State.Pid}}", &self.name]))
            .trim()
            .parse()
            .unwrap()
    }

    fn logs(&self) -> String {
        let out = run(podman().args(["logs", &self.name]));
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let l = self.logs();
            if l.contains(needle) || Instant::now() > end {
                return l;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn status(&self, journal: &Path) -> Output {
        run(podman()
            .args([
                "exec",
                &self.name,
                "/usr/local/bin/vigil",
                "status",
                "--runtime-dir",
            ])
            .arg(journal))
    }

    fn stop(&self) {
        let _ = run(podman().args(["stop", "-t", "10", &self.name]));
        let _ = run(podman().args(["rm", "-f", &self.name]));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(podman().args(["rm", "-f", &self.name]));
    }
}

/// The outcome of a selftest probe line: the text after `selftest <role> <probe>:`.
fn selftest(logs: &str, role: &str, probe: &str) -> String {
    let needle = format!("selftest {role} {probe}:");
    let line = logs
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` line:\n{logs}"));
    let rest = &line[line.find(&needle).unwrap() + needle.len()..];
    // Child warnings end with the role field of the supervisor's log line.
    rest.split(" role=").next().unwrap().trim().to_string()
}

/// `path=RESULT` pairs of a write-host probe.
fn path_results(s: &str) -> Vec<(String, String)> {
    s.split_whitespace()
        .filter_map(|kv| kv.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn refused(outcome: &str) -> bool {
    outcome == "EROFS" || outcome == "EACCES"
}

/// Try to write `path` through the mounts of process `pid` (/proc/PID/root), as this test
/// process: root with every capability, so only a read-only mount refuses (EROFS). A directory
/// gets a file created and removed; a file is opened for writing, nothing written.
fn write_through(pid: u32, path: &str) -> String {
    let p = PathBuf::from(format!("/proc/{pid}/root{path}"));
    let res = if p.is_dir() {
        let f = p.join(format!(".vigil-deploy-test-{}", std::process::id()));
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&f)
            .map(drop);
        if r.is_ok() {
            let _ = std::fs::remove_file(&f);
        }
        r
    } else {
        std::fs::OpenOptions::new().write(true).open(&p).map(drop)
    };
    match res {
        Ok(()) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
            None => e.to_string(),
        },
    }
}

fn names<'a>(it: impl IntoIterator<Item = &'a &'a str>) -> BTreeSet<String> {
    it.into_iter().map(|s| s.to_string()).collect()
}

/// The feature list of the supervisor's "starting" line.
fn features(logs: &str) -> BTreeSet<String> {
    let line = logs
        .lines()
        .find(|l| l.contains(" starting ") && l.contains("features="))
        .unwrap_or_else(|| panic!("no starting line in:\n{logs}"));
    let list = line.split("features=").nth(1).unwrap();
    list.split_whitespace()
        .next()
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Records the journal holds that its OTLP exporter has not shipped, from the checkpoint the
/// shipper writes (`next_seq` minus the exporter's acknowledged position).
fn unshipped(dir: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(dir.join("journal/checkpoint.json")) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("checkpoint is JSON");
    let next = v["next_seq"].as_u64().expect("next_seq");
    next.saturating_sub(v["acks"]["otlp"].as_u64().unwrap_or(next))
}

fn journal_bytes(dir: &Path) -> u64 {
    walk(&dir.join("journal"))
}

fn walk(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() { walk(&e.path()) } else { m.len() }
        })
        .sum()
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Build the image once per test process (both tests need it).
fn build_image() {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    // 1. The image, built offline (FROM scratch, static binary; cargo's build is incremental).
    // VIGIL_IMAGE_BINARY=<static vigil> reuses a binary built beforehand (e.g. by .ci/run).
    let mut build = Command::new("sh");
    build
        .arg(repo().join("deploy/container/build.sh"))
        .arg(IMAGE)
        .env("CARGO_TARGET_DIR", repo().join("target"));
    if let Ok(b) = std::env::var("VIGIL_IMAGE_BINARY") {
        build.env("VIGIL_BINARY", b);
    }
    let out = run(&mut build);
    assert!(
        out.status.success(),
        "deploy/container/build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let size: u64 = ok(podman().args(["image", "inspect", "--format", "{{.Size}}", IMAGE]))
        .trim()
        .parse()
        .unwrap();
    assert!(size < 64 << 20, "image is {size} bytes");
    if std::env::var_os("VIGIL_IMAGE_BINARY").is_none() {
        hot_code_ordered();
    }

    *built = true;
}

/// The image's binary was linked with the hot functions first (link/cc): the ordering file
/// link/order wrote beside it names nearly every function of link/hot-functions.txt, so
/// build.sh's RUSTFLAGS kept the v0 mangling the list is written in.
fn hot_code_ordered() {
    let deps = repo().join("target/x86_64-unknown-linux-gnu/release/deps");
    let order = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("vigil-") && n.ends_with(".order")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no vigil-*.order in {}: not linked by link/cc",
                deps.display()
            )
        });
    let ordered = std::fs::read_to_string(&order).unwrap().lines().count();
    let listed = std::fs::read_to_string(repo().join("link/hot-functions.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(
        ordered * 10 >= listed * 9,
        "{} orders {ordered} symbols for the {listed} functions listed",
        order.display()
    );
}

/// A fresh journal directory under /run (see deploy/kubernetes: it must be a real directory
/// inside the host view at the same path), removed at the end.
fn journal_dir(tag: &str) -> (PathBuf, Cleanup, String) {
    let journal = PathBuf::from(format!(
        "/run/vigil-deploy-test-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&journal);
    std::fs::create_dir_all(&journal).unwrap();
    let name = format!("vigil-deploy-test-{tag}-{}", std::process::id());
    (journal.clone(), Cleanup(journal), name)
}

#[test]
fn slow_image_builds_and_runs_non_privileged_with_the_add_list() {
    build_image();
    let caps = manifest_add_list();
    assert!(
        !caps.iter().any(|c| c == "SYS_ADMIN"),
        "the non-privileged add-list grants SYS_ADMIN: {caps:?}"
    );
    let profiles = tempfile::tempdir().unwrap();
    let (containerd_like, moved) = containerd_like_profile(profiles.path());
    let (journal, _cleanup, name) = journal_dir("run");
    let j = journal.to_str().unwrap().to_string();

    // 2. Exactly the add-list and the DaemonSet's vigil.toml: every default feature on, the
    // view the runtime's, eBPF attached, children as the agent user, nothing writable outside
    // the runtime dir, data shipped.
    let rx = Receiver::start();
    // Write probes from inside: the supervisor once its confinement is in place, each child
    // inside its sandbox. /hostfs/dev/shm and the host's /proc/sys are writable mounts under
    // the runtime's read-only /hostfs (checked below).
    let outside = [
        "/hostfs/etc",
        "/hostfs/tmp",
        "/hostfs/dev/shm",
        "/hostfs/proc/sys/kernel/hostname",
        "/tmp",
        "/etc/vigil/vigil.toml",
    ];
    let mut probes: Vec<String> = outside
        .iter()
        .map(|p| format!("supervisor:write:{p}"))
        .collect();
    probes.push(format!("supervisor:write:{j}"));
    for role in ["privhelper", "collector", "shipper"] {
        probes.push(format!("{role}:write-host"));
        probes.push(format!("{role}:write:/hostfs/dev/shm"));
    }
    let opts =
        Opts::daemonset(&caps, Some(&containerd_like)).env("VIGIL_SELFTEST", &probes.join(","));
    let c = Container::start(&name, opts, &journal, &rx.endpoint());
    let logs = c.wait_log(
        "eBPF flow table ready program=FlowsTracepoint",
        Duration::from_secs(30),
    );
    let on = features(&logs);
    assert_eq!(
        on,
        names(DEFAULT_ON.iter().chain(&["user_switch"])),
        "the add-list turns on every default feature:\n{logs}"
    );
    // virtual_root is off by configuration (no_remount_root), not for a missing capability.
    assert!(
        logs.contains("virtual_root=false")
            && logs.contains("no_remount_root set: the host view is the one the container runtime"),
        "{logs}"
    );
    assert!(
        !logs.contains("required system capabilities not present") && !logs.contains("missing"),
        "warning with the add-list:\n{logs}"
    );
    for line in [
        "eBPF ring buffer mapped program=ExecExit",
        "eBPF flow table ready program=FlowsTracepoint",
    ] {
        assert!(logs.contains(line), "{line}: not attached:\n{logs}");
    }
    assert!(!logs.contains("eBPF source unavailable"), "{logs}");
    // The supervisor as the runtime started it: NoNewPrivs (allowPrivilegeEscalation: false),
    // the runtime's seccomp profile in force (the supervisor installs none itself), and no
    // capability outside the add-list, SYS_ADMIN least of all, in its bounding set.
    let pid = c.pid();
    let k = vigil_tests::proc_status(pid).unwrap();
    assert!(k.no_new_privs, "{k:?}");
    assert_eq!(k.seccomp, 2, "runtime seccomp profile not applied");
    let bnd = k.cap_bnd;
    let allowed: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    assert_eq!(
        bnd & !allowed,
        0,
        "bounding set {bnd:#x} exceeds the add-list {allowed:#x}"
    );
    assert_eq!(bnd & (1 << cap_number("SYS_ADMIN")), 0, "{bnd:#x}");
    for role in ["privhelper", "collector", "shipper"] {
        assert!(
            logs.contains(&format!("sandboxed role={role} uid=65534")),
            "{role} not running as nobody:\n{logs}"
        );
    }

    // Nothing outside the runtime dir is writable. First the runtime's view itself, through
    // the supervisor's mounts (/proc/PID/root) as a process no permission check stops: the
    // image, the host root and the config are read-only mounts, the runtime dir is not. But a
    // readOnly hostPath is read-only at its top only: the host's /dev/shm under it is not.
    for path in [
        "/",
        "/tmp",
        "/usr/local/bin",
        "/hostfs/etc",
        "/hostfs/tmp",
        "/etc/vigil/vigil.toml",
    ] {
        assert_eq!(
            write_through(pid, path),
            "EROFS",
            "{path} through the runtime's mounts"
        );
    }
    assert_eq!(write_through(pid, &j), "ok", "the runtime dir");
    assert_eq!(
        write_through(pid, "/hostfs/dev/shm"),
        "ok",
        "the runtime's view is read-only all the way down now: update the comments on \
         no_remount_root in generate.py and the supervisor's write confinement"
    );
    // So the supervisor (uid 0) confines itself: every place outside the runtime dir is
    // refused, the writable submounts included (EACCES: Landlock), the runtime dir is not.
    for path in outside {
        let got = selftest(&logs, "supervisor", &format!("write:{path}"));
        assert!(refused(&got), "supervisor writing {path}: {got}");
    }
    for path in ["/hostfs/dev/shm", "/hostfs/proc/sys/kernel/hostname"] {
        let got = selftest(&logs, "supervisor", &format!("write:{path}"));
        assert_eq!(got, "EACCES", "supervisor writing {path}");
    }
    assert_eq!(selftest(&logs, "supervisor", &format!("write:{j}")), "ok");
    // The children write nowhere but the shipper's journal.
    let journal_sub = format!("{j}/journal");
    for role in ["privhelper", "collector", "shipper"] {
        let res = path_results(&selftest(&logs, role, "write-host"));
        assert_eq!(res.len(), 6, "{role}: {res:?}");
        for (path, got) in &res {
            if role == "shipper" && *path == journal_sub {
                assert_eq!(got, "ok", "the shipper writes its journal");
            } else {
                assert!(refused(got), "{role} writing {path}: {got}");
            }
        }
        let shm = selftest(&logs, role, "write:/hostfs/dev/shm");
        assert!(refused(&shm), "{role} writing /hostfs/dev/shm: {shm}");
    }
    let st = run(Command::new(vigil_host_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(&journal));
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status JSON");
    let sup = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "Supervisor")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        sup["landlock"].as_str().unwrap_or(""),
        format!("writes: {j} only (ABI {})", landlock_abi()),
        "{sup}"
    );

    let got = rx.wait(Duration::from_secs(30), |r| {
        let metrics = r.metrics.iter().any(|m| !point_times(&m.metric).is_empty());
        (metrics && !r.logs.is_empty()).then_some(())
    });
    assert!(
        got.is_some(),
        "no OTLP metrics and logs: {:?}\n{}",
        rx.received.lock().unwrap().requests,
        c.logs()
    );
    // `vigil status` answers over the root-only socket in the shared runtime directory
    // (from the host side: the same directory, the same uid 0).
    let st = run(Command::new(vigil_host_bin())
        .args(["status", "--runtime-dir"])
        .arg(&journal));
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        st.status.success() && text.contains("collector"),
        "vigil status failed: {text}{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // An exec probe (`podman exec`, like the kubelet's) runs in the mount namespace of the
    // container's first process: here the container's own (no view of the supervisor's), with
    // the image's binary. generate.py turns the probes on (EXEC_PROBES).
    let st = c.status(&journal);
    let probes_on = std::fs::read_to_string(repo().join("deploy/kubernetes/generate.py"))
        .unwrap()
        .contains("EXEC_PROBES = True");
    assert!(
        st.status.success() && probes_on,
        "`podman exec {IMAGE} vigil status` succeeded={}, generate.py EXEC_PROBES={probes_on}: {}{}",
        st.status.success(),
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    c.stop();
    drop(c);

    // 3. The same DaemonSet under podman's own RuntimeDefault, which is CRI-O's too: bpf()
    // only for a container holding CAP_SYS_ADMIN. Everything but eBPF works, and the
    // collector says why eBPF does not (generate.py says so at seccompProfile).
    let (journal, _cleanup2, name) = journal_dir("crio");
    let c = Container::start(
        &name,
        Opts::daemonset(&caps, None),
        &journal,
        &rx.endpoint(),
    );
    let logs = c.wait_log(
        "eBPF source unavailable: privhelper refused FlowsTracepoint",
        Duration::from_secs(30),
    );
    if moved > 0 {
        for program in ["ExecExit", "FlowsTracepoint"] {
            assert!(
                logs.contains(&format!(
                    "eBPF source unavailable: privhelper refused {program}"
                )),
                "{program} attached under a profile that ties bpf() to CAP_SYS_ADMIN:\n{logs}"
            );
        }
    } else {
        assert!(!logs.contains("eBPF source unavailable"), "{logs}");
    }
    assert!(logs.contains("sandboxed role=shipper uid=65534"), "{logs}");
    let st = c.status(&journal);
    assert!(st.status.success(), "{}", c.logs());
    // `vigil status` does not call them on: the collector told the supervisor.
    let text = String::from_utf8_lossy(&st.stdout);
    if moved > 0 {
        for (feature, program) in [
            ("ebpf_exec", "ExecExit"),
            ("ebpf_flows_tracepoint", "FlowsTracepoint"),
            ("ebpf_tcp_changes", "TcpChanges"),
        ] {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(feature))
                .unwrap_or_else(|| panic!("no {feature} line in status:\n{text}"));
            assert!(
                line.contains("off")
                    && line.contains(&format!("did not work: privhelper refused {program}")),
                "{line}\n{text}"
            );
        }
    }
    c.stop();
    drop(c);

    // 4. A smaller add-list (no BPF, PERFMON, SYSLOG): exactly the features that need them
    // are off, with the warning, and the agent keeps running. virtual_root is off by the
    // configuration, so the warning does not name it.
    let small: Vec<String> = caps
        .iter()
        .filter(|c| !["BPF", "PERFMON", "SYSLOG"].contains(&c.as_str()))
        .cloned()
        .collect();
    // (a fresh runtime dir: the journal test covers re-use)
    let (journal, _cleanup3, name) = journal_dir("small");
    let opts = Opts::daemonset(&small, Some(&containerd_like));
    let c = Container::start(&name, opts, &journal, &rx.endpoint());
    let logs = c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    let on = features(&logs);
    // (/dev/kmsg needs CAP_SYSLOG only with kernel.dmesg_restrict=1)
    let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").unwrap();
    let off: &[&str] = if restrict.trim() == "0" {
        &[
            "process_iter",
            "ebpf_tcp_changes",
            "ebpf_exec",
            "ebpf_flows_tracepoint",
        ]
    } else {
        &[
            "process_iter",
            "ebpf_tcp_changes",
            "kmsg_events",
            "ebpf_exec",
            "ebpf_flows_tracepoint",
        ]
    };
    assert_eq!(
        on,
        names(
            DEFAULT_ON
                .iter()
                .filter(|f| !off.contains(f))
                .chain(&["user_switch"])
        ),
        "off without BPF, PERFMON, SYSLOG: exactly {off:?}\n{logs}"
    );
    let warning = logs
        .lines()
        .find(|l| l.contains("required system capabilities not present"))
        .unwrap_or_else(|| panic!("no warning naming the missing capabilities:\n{logs}"));
    for f in off {
        assert!(warning.contains(f), "{f} not in {warning}");
    }
    for f in ["virtual_root", "SYS_ADMIN", "netns", "process_fds"] {
        assert!(!warning.contains(f), "{f} in {warning}");
    }
    c.stop();
    drop(c);

    // 5. The minimal mode's host mounts (deploy/kubernetes/minimal: only the listed host
    // directories, read-only, under /hostfs). That variant is privileged and builds the
    // supervisor's own view: the add-list plus SYS_ADMIN, podman's default profile.
    let yaml =
        std::fs::read_to_string(repo().join("deploy/kubernetes/minimal/vigil.yaml")).unwrap();
    let mut view = Vec::new();
    for l in yaml.lines() {
        if let Some(p) = l.trim().strip_prefix("mountPath: /hostfs/")
            && Path::new("/").join(p).exists()
        {
            view.push("-v".to_string());
            view.push(format!("/{p}:/hostfs/{p}:ro"));
        }
    }
    assert!(view.len() >= 8, "minimal mounts: {view:?}");
    let mut with_view = caps.clone();
    with_view.push("SYS_ADMIN".into());
    let opts = Opts {
        caps: with_view,
        podman: view,
        args: [
            "--host-root",
            "/hostfs",
            "--user",
            "nobody",
            "--mount-mode",
            "minimal",
        ]
        .map(String::from)
        .to_vec(),
    };
    let (journal, _cleanup4, name) = journal_dir("minimal");
    let c = Container::start(&name, opts, &journal, &rx.endpoint());
    let logs = c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    assert!(logs.contains("mode=\"minimal\""), "{logs}");
    let on = features(&logs);
    for f in [
        "virtual_root",
        "user_switch",
        "ebpf_exec",
        "process_metrics",
    ] {
        assert!(on.contains(f), "minimal: {f} off: {on:?}\n{logs}");
    }
    // The exec probe finds the binary inside the supervisor's view too.
    let st = c.status(&journal);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    c.stop();
}

/// The kernel's Landlock ABI version (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr and size 0 only queries.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    }
}

/// The journal written while the backend was unreachable is shipped by the next container on
/// the same host directory (a re-created pod), with exactly the doctor's add-list (no
/// CAP_FOWNER: the supervisor takes the journal dir back with CAP_CHOWN before its chmod).
#[test]
fn slow_journal_survives_container_recreation() {
    build_image();
    let caps = manifest_add_list();
    let profiles = tempfile::tempdir().unwrap();
    let (containerd_like, _) = containerd_like_profile(profiles.path());
    let daemonset = || Opts::daemonset(&caps, Some(&containerd_like));
    let (journal, _cleanup, name) = journal_dir("journal");
    // First container: creates the journal directory, ships to a receiver.
    let rx = Receiver::start();
    let c = Container::start(&name, daemonset(), &journal, &rx.endpoint());
    c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    rx.wait(Duration::from_secs(30), |r| {
        (!r.requests.is_empty()).then_some(())
    });
    c.stop();
    drop(c);

    // 4. Backend unreachable: the data goes to the journal on the host directory.
    let dead = free_port();
    let before = unshipped(&journal);
    let c = Container::start(
        &name,
        daemonset(),
        &journal,
        &format!("http://127.0.0.1:{dead}"),
    );
    c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    let logs = c.logs();
    c.stop();
    drop(c);
    let after = unshipped(&journal);
    assert!(
        after > before && journal_bytes(&journal) > 0,
        "nothing journaled ({before} -> {after} records not shipped):\n{logs}"
    );

    // 5. A new container on the same directory ships what the removed one journaled.
    let restart = now_ns();
    let rx2 = Receiver::start();
    let c = Container::start(&name, daemonset(), &journal, &rx2.endpoint());
    let old_records = |r: &Received| {
        let n = record_times(r)
            .into_iter()
            .filter(|&t| t > 0 && t < restart)
            .count();
        (n > 0).then_some(n)
    };
    let old = rx2.wait(Duration::from_secs(40), old_records).unwrap_or(0);
    assert!(
        old > 0,
        "no record from before the new container was shipped ({} requests)\n{}",
        rx2.received.lock().unwrap().requests.len(),
        c.logs()
    );
    c.stop();
}
