//! SLOW (about 3 minutes on a fresh machine, 20 s when the static binary is up to date): the
//! container image of deploy/container, built offline with buildah from a static release
//! binary, runs the way the non-privileged DaemonSet runs it:
//!
//!   podman --runtime runc run --cap-drop ALL --cap-add <the add-list of the DaemonSet>
//!     --security-opt no-new-privileges (allowPrivilegeEscalation: false)
//!     --read-only (readOnlyRootFilesystem) --network host --pid host
//!     -v /:/hostfs:ro -v <journal dir>:<same path> --device /dev/kmsg:/dev/kmsg:r
//!     vigil:deploytest run --host-root /hostfs --runtime-dir <journal dir> --otlp-endpoint ...
//!
//! with podman's default seccomp profile (the RuntimeDefault analogue) and checks: the
//! supervisor enables every feature the add-list allows (virtual root included), the children
//! run as the agent user, `vigil status` (the liveness probe) answers inside the container,
//! OTLP metrics and logs reach a receiver on loopback, a smaller add-list turns exactly the
//! matching features off, and the journal written while the backend was unreachable is
//! shipped by the next container on the same host directory.
//!
//! runc, not crun: Debian 12's crun refuses hybrid cgroup hierarchies ("cgroups in hybrid mode
//! not supported"), which this VM has. Tools: deploy/ci-deps.sh (podman, buildah, runc).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use vigil_tests::DEFAULT_ON;

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

/// What one OTLP request carried: its path and the timestamps of its records.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    times: Vec<u64>,
}

struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || serve(s, g));
            }
        });
        Receiver { port, got }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn snapshot(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn wait(&self, timeout: Duration, mut pred: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
        let end = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if pred(&s) || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn serve(s: TcpStream, got: Arc<Mutex<Vec<Got>>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut len, mut gzip) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-encoding" => gzip = v.trim() == "gzip",
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let raw = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            body
        };
        let mut times = Vec::new();
        if path.ends_with("/v1/logs") {
            let req = ExportLogsServiceRequest::decode(&raw[..]).expect("OTLP logs");
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    for lr in sl.log_records {
                        times.push(lr.time_unix_nano.max(lr.observed_time_unix_nano));
                    }
                }
            }
        } else if path.ends_with("/v1/metrics") {
            let req = ExportMetricsServiceRequest::decode(&raw[..]).expect("OTLP metrics");
            for rm in req.resource_metrics {
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        match m.data {
                            Some(Data::Gauge(g)) => {
                                times.extend(g.data_points.iter().map(|p| p.time_unix_nano))
                            }
                            Some(Data::Sum(s)) => {
                                times.extend(s.data_points.iter().map(|p| p.time_unix_nano))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        got.lock().unwrap().push(Got { path, times });
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
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

struct Container {
    name: String,
}

impl Container {
    fn start(name: &str, caps: &[String], journal: &Path, endpoint: &str) -> Container {
        let root = vec!["-v".to_string(), "/:/hostfs:ro".to_string()];
        Self::start_with(name, caps, journal, endpoint, &root, "read-only")
    }

    fn start_with(
        name: &str,
        caps: &[String],
        journal: &Path,
        endpoint: &str,
        host_view: &[String],
        mode: &str,
    ) -> Container {
        let _ = run(podman().args(["rm", "-f", name]));
        let nofile = hard_limit(libc::RLIMIT_NOFILE).min(8192);
        let nproc = hard_limit(libc::RLIMIT_NPROC).min(4096);
        let j = journal.to_str().unwrap();
        ok(podman()
            .args(["run", "-d", "--name", name])
            .args(["--cap-drop", "ALL", "--cap-add", &caps.join(",")])
            .args(["--security-opt", "no-new-privileges"])
            .args(["--read-only", "--network", "host", "--pid", "host"])
            // runc would set podman's default limits, which the VM's hard limits may be
            // below; lowering is always allowed.
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
            .args(host_view)
            .args(["-v", &format!("{j}:{j}")])
            .args(["--device", "/dev/kmsg:/dev/kmsg:r"])
            .arg(IMAGE)
            .args(["run", "--host-root", "/hostfs", "--runtime-dir", j])
            .args(["--mount-mode", mode])
            .args(["--user", "nobody", "--interval-ms", "1000", "--json-lines="])
            .args(["--otlp-endpoint", endpoint]));
        Container { name: name.into() }
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

    *built = true;
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
    let (journal, _cleanup, name) = journal_dir("run");

    // 2. Full add-list: every feature on, children as the agent user, data shipped.
    let rx = Receiver::start();
    let c = Container::start(&name, &caps, &journal, &rx.endpoint());
    let logs = c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    let on = features(&logs);
    assert_eq!(
        on,
        names(DEFAULT_ON.iter().chain(&["virtual_root", "user_switch"])),
        "the full add-list turns on every default feature:\n{logs}"
    );
    // The supervisor as the runtime started it: NoNewPrivs (allowPrivilegeEscalation: false),
    // the runtime's default seccomp profile in force (the supervisor installs none itself),
    // and no capability outside the add-list in its bounding set.
    let pid = ok(podman().args(["inspect", "--format", "{{.State.Pid}}", &c.name]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or_else(|| panic!("no {k} in {status}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("Seccomp"), "2", "runtime seccomp profile not applied");
    let bnd = u64::from_str_radix(&field("CapBnd"), 16).unwrap();
    let allowed: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    assert_eq!(
        bnd & !allowed,
        0,
        "bounding set {bnd:#x} exceeds the add-list {allowed:#x}"
    );
    assert!(
        !logs.contains("missing"),
        "warning with the full add-list:\n{logs}"
    );
    for role in ["privhelper", "collector", "shipper"] {
        assert!(
            logs.contains(&format!("sandboxed role={role} uid=65534")),
            "{role} not running as nobody:\n{logs}"
        );
    }
    let got = rx.wait(Duration::from_secs(30), |g| {
        g.iter()
            .any(|x| x.path == "/v1/metrics" && !x.times.is_empty())
            && g.iter()
                .any(|x| x.path == "/v1/logs" && !x.times.is_empty())
    });
    assert!(
        got.iter().any(|x| x.path == "/v1/metrics") && got.iter().any(|x| x.path == "/v1/logs"),
        "no OTLP metrics and logs: {got:?}\n{}",
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
    // container's first process: the supervisor, which lives in its trimmed host view, where
    // the image's binary does not exist. Hence no exec probes in deploy/kubernetes yet
    // (generate.py EXEC_PROBES). Once the supervisor keeps the binary visible there, this
    // fails: turn EXEC_PROBES on and replace this check with a passing `podman exec`.
    let st = c.status(&journal);
    let probes_on = std::fs::read_to_string(repo().join("deploy/kubernetes/generate.py"))
        .unwrap()
        .contains("EXEC_PROBES = True");
    assert_eq!(
        st.status.success(),
        probes_on,
        "`podman exec {IMAGE} vigil status` succeeded={} but generate.py EXEC_PROBES={probes_on}: {}{}",
        st.status.success(),
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    c.stop();
    drop(c);

    // 3. A smaller add-list (no BPF, PERFMON, SYSLOG, SYS_ADMIN): exactly the features that
    // need them are off, with the warning, and the agent keeps running (NO_REMOUNT_ROOT).
    // SYS_ADMIN is the supervisor's only (its view): fd counts and namespace counters stay.
    let small: Vec<String> = caps
        .iter()
        .filter(|c| !["BPF", "PERFMON", "SYSLOG", "SYS_ADMIN"].contains(&c.as_str()))
        .cloned()
        .collect();
    // (a fresh runtime dir: the journal test covers re-use)
    let (journal, _cleanup2, name) = journal_dir("small");
    let c = Container::start(&name, &small, &journal, &rx.endpoint());
    let logs = c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    let on = features(&logs);
    // (/dev/kmsg needs CAP_SYSLOG only with kernel.dmesg_restrict=1)
    let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").unwrap();
    let off: &[&str] = if restrict.trim() == "0" {
        &["ebpf_exec", "ebpf_flows_socket"]
    } else {
        &["kmsg_events", "ebpf_exec", "ebpf_flows_socket"]
    };
    assert_eq!(
        on,
        names(
            DEFAULT_ON
                .iter()
                .filter(|f| !off.contains(f))
                .chain(&["user_switch"])
        ),
        "off without BPF, PERFMON, SYSLOG, SYS_ADMIN: exactly virtual_root and {off:?}\n{logs}"
    );
    let warning = logs
        .lines()
        .find(|l| l.contains("required system capabilities not present"))
        .unwrap_or_else(|| panic!("no warning naming the missing capabilities:\n{logs}"));
    for f in [
        "virtual_root (needs CAP_SYS_ADMIN)",
        "ebpf_exec",
        "ebpf_flows_socket",
    ] {
        assert!(warning.contains(f), "{f} not in {warning}");
    }
    assert!(
        !warning.contains("netns") && !warning.contains("process_fds"),
        "{warning}"
    );
    c.stop();
    drop(c);

    // 4. The minimal mode's host mounts (deploy/kubernetes/minimal: only the listed host
    // directories, read-only, under /hostfs) with the non-privileged add-list.
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
    let (journal, _cleanup3, name) = journal_dir("minimal");
    let c = Container::start_with(&name, &caps, &journal, &rx.endpoint(), &view, "minimal");
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
    c.stop();
}

/// The journal written while the backend was unreachable is shipped by the next container on
/// the same host directory (a re-created pod), with exactly the doctor's add-list (no
/// CAP_FOWNER: the supervisor takes the journal dir back with CAP_CHOWN before its chmod).
#[test]
fn slow_journal_survives_container_recreation() {
    build_image();
    let caps = manifest_add_list();
    let (journal, _cleanup, name) = journal_dir("journal");
    // First container: creates the journal directory, ships to a receiver.
    let rx = Receiver::start();
    let c = Container::start(&name, &caps, &journal, &rx.endpoint());
    c.wait_log("sandboxed role=shipper", Duration::from_secs(30));
    rx.wait(Duration::from_secs(30), |g| !g.is_empty());
    c.stop();
    drop(c);

    // 4. Backend unreachable: the data goes to the journal on the host directory.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let before = unshipped(&journal);
    let c = Container::start(&name, &caps, &journal, &format!("http://127.0.0.1:{dead}"));
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
    let c = Container::start(&name, &caps, &journal, &rx2.endpoint());
    let got = rx2.wait(Duration::from_secs(40), |g| {
        g.iter()
            .flat_map(|x| &x.times)
            .any(|&t| t > 0 && t < restart)
    });
    let old = got
        .iter()
        .flat_map(|x| &x.times)
        .filter(|&&t| t > 0 && t < restart)
        .count();
    assert!(
        old > 0,
        "no record from before the new container was shipped ({} requests)\n{}",
        got.len(),
        c.logs()
    );
    c.stop();
}
