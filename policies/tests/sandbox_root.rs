//! Root test of `vigil_policies::apply` on the real kernel. `harness = false`: the binary's
//! `main` is single-threaded, so every scenario re-executes this binary with
//! `VIGIL_SANDBOX_SCENARIO` set and the child applies the sandbox to a whole process (setresuid,
//! capset and seccomp are per thread; a test-harness thread would leave the others untouched).

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use vigil_ipc_proto::procstatus::ProcStatusFields;
use vigil_ipc_proto::{Channel, ChildToSupervisor, Ids, LandlockPlan, Role, SandboxPlan};
use vigil_policies::{LandlockVars, landlock_plan};

const SCENARIO: &str = "VIGIL_SANDBOX_SCENARIO";
const HOST_ROOT: &str = "VIGIL_SANDBOX_HOST_ROOT";
const REPORT_FD: &str = "VIGIL_SANDBOX_REPORT_FD";
const ALLOWED_PORT: &str = "VIGIL_SANDBOX_ALLOWED_PORT";
const DENIED_PORT: &str = "VIGIL_SANDBOX_DENIED_PORT";
const NOBODY: u32 = 65534;
const CAP_SYSLOG: u8 = 34;
const CAP_BPF: u8 = 39;

fn plan(role: Role, host_root: &str, keep: Vec<u8>) -> SandboxPlan {
    let vars = LandlockVars {
        host_root: host_root.to_string(),
        journal_dir: format!("{host_root}/journal"),
        connect_ports: std::env::var(ALLOWED_PORT)
            .ok()
            .and_then(|p| p.parse().ok())
            .into_iter()
            .collect(),
        ..LandlockVars::default()
    };
    let landlock: LandlockPlan = landlock_plan(role, &vars).expect("landlock template");
    SandboxPlan {
        ids: Some(Ids {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![],
        }),
        steady_caps: keep.clone(),
        non_dumpable: !keep.is_empty(),
        keep_caps: keep,
        seccomp: vec![role.as_str().to_string()],
        landlock,
    }
}

fn check(ok: bool, what: String, failures: &mut Vec<String>) {
    if !ok {
        failures.push(what);
    }
}

/// Child side of "supervisor-writes": a uid-0 process with every capability (CAP_DAC_OVERRIDE
/// included) confines its writes to the journal dir; reading stays open.
fn supervisor_writes(host_root: &str) -> ! {
    let journal = format!("{host_root}/journal");
    let report = match vigil_policies::landlock::restrict_writes(std::slice::from_ref(&journal)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("restrict_writes: {e}");
            std::process::exit(3);
        }
    };
    let mut failures = Vec::new();
    check(
        report.starts_with("writes: ") && report.contains(&journal),
        format!("report {report}"),
        &mut failures,
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    check(
        ProcStatusFields::parse(&status).is_some_and(|k| k.no_new_privs),
        "NoNewPrivs not set".into(),
        &mut failures,
    );
    let inside = std::fs::write(format!("{journal}/segment"), b"x").map_err(|e| e.raw_os_error());
    check(
        inside.is_ok(),
        format!("write in the journal: {inside:?}"),
        &mut failures,
    );
    for path in [
        format!("{host_root}/written"),
        format!("{host_root}/journal-sibling"),
    ] {
        let err = std::fs::write(&path, b"x").err();
        check(
            err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::EACCES),
            format!("write {path}: {err:?}"),
            &mut failures,
        );
    }
    let mkdir = std::fs::create_dir(format!("{host_root}/dir")).map_err(|e| e.raw_os_error());
    check(
        mkdir == Err(Some(libc::EACCES)),
        format!("mkdir: {mkdir:?}"),
        &mut failures,
    );
    let read = std::fs::read_dir(host_root).map(|d| d.count());
    check(read.is_ok(), format!("read_dir: {read:?}"), &mut failures);
    if failures.is_empty() {
        std::process::exit(0);
    }
    for f in &failures {
        eprintln!("supervisor-writes: {f}");
    }
    std::process::exit(1);
}

/// Child side: apply, then look at ourselves from inside. Exit 0 when every check holds.
fn child(scenario: &str) -> ! {
    let host_root = std::env::var(HOST_ROOT).expect("host root");
    if scenario == "supervisor-writes" {
        supervisor_writes(&host_root);
    }
    let fd: i32 = std::env::var(REPORT_FD)
        .expect("report fd")
        .parse()
        .expect("fd");
    let (role, keep) = match scenario {
        "privhelper" => (Role::Privhelper, vec![CAP_SYSLOG, CAP_BPF]),
        "shipper" => (Role::Shipper, vec![]),
        _ => (Role::Collector, vec![]),
    };
    // The collector with flows on: its policy plus the bpf() map lookups.
    let flows = matches!(scenario, "collector-flows" | "bpf_update");
    let mut plan = plan(role, &host_root, keep);
    if flows {
        plan.seccomp.push("collector-flows".into());
    }
    // Opened before the sandbox (the shipper's Landlock set has no /proc), read after: procfs
    // generates the text at the first read.
    let mut status_file = std::fs::File::open("/proc/self/status").expect("/proc/self/status");
    let report = match vigil_policies::apply(role, &plan, fd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apply: {e}");
            std::process::exit(3);
        }
    };
    let mut failures = Vec::new();
    let mut status = String::new();
    let _ = std::io::Read::read_to_string(&mut status_file, &mut status);
    let expect_caps = match scenario {
        "privhelper" => (1u64 << CAP_SYSLOG) | (1u64 << CAP_BPF),
        _ => 0,
    };
    let k = ProcStatusFields::parse(&status);
    check(
        k.is_some(),
        format!("/proc/self/status: {status}"),
        &mut failures,
    );
    let k = k.unwrap_or_default();
    for (key, got, want) in [
        ("CapEff", k.cap_eff, expect_caps),
        ("CapPrm", k.cap_prm, expect_caps),
        ("CapBnd", k.cap_bnd, expect_caps),
        ("CapInh", k.cap_inh, 0),
        ("CapAmb", k.cap_amb, 0),
        ("NoNewPrivs", u64::from(k.no_new_privs), 1),
        ("Seccomp", u64::from(k.seccomp), 2),
    ] {
        check(
            got == want,
            format!("{key} {got:016x}, want {want:016x}"),
            &mut failures,
        );
    }
    check(
        k.uids.iter().all(|&u| u == 65534),
        format!("Uid: {:?}", k.uids),
        &mut failures,
    );
    check(
        report.uid == NOBODY && report.no_new_privs && report.seccomp == plan.seccomp.join("+"),
        format!("report {report:?}"),
        &mut failures,
    );
    check(
        report.landlock.starts_with("enforced") || report.landlock.starts_with("partially"),
        format!("landlock {}", report.landlock),
        &mut failures,
    );
    match scenario {
        "collector" | "privhelper" => {
            // The host root is world-writable (a temp dir made 0777), so only Landlock refuses.
            let err = std::fs::write(format!("{host_root}/written"), b"x").err();
            check(
                err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::EACCES),
                format!("write under read-only host root: {err:?}"),
                &mut failures,
            );
            if scenario == "collector" {
                let kmsg = std::fs::File::open("/dev/kmsg");
                check(
                    kmsg.is_err(),
                    "collector opened /dev/kmsg".into(),
                    &mut failures,
                );
            } else {
                // CAP_SYSLOG kept and /dev/kmsg in the privhelper's Landlock set.
                // (No Debug of the File: it readlinks /proc/self/fd, not in the policy.)
                let kmsg = std::fs::File::open("/dev/kmsg").map(drop);
                check(
                    kmsg.is_ok(),
                    format!("privhelper /dev/kmsg: {kmsg:?}"),
                    &mut failures,
                );
            }
        }
        "collector-flows" => {
            // A map lookup is let through to the kernel (which finds no such descriptor).
            let attr = [u32::MAX as u64, 0, 0, 0];
            // SAFETY: bpf(BPF_MAP_LOOKUP_ELEM) on an invalid descriptor: EBADF, nothing read.
            let r = unsafe { libc::syscall(libc::SYS_bpf, 1, attr.as_ptr(), 32) };
            let e = std::io::Error::last_os_error().raw_os_error();
            check(
                r == -1 && e == Some(libc::EBADF),
                format!("bpf(BPF_MAP_LOOKUP_ELEM, bad fd): {r} {e:?}"),
                &mut failures,
            );
        }
        "shipper" => {
            // Read-write journal dir, nothing else writable; TCP connect to the OTLP port only.
            let journal = format!("{host_root}/journal/segment");
            let w = std::fs::write(&journal, b"x").map_err(|e| e.raw_os_error());
            check(w.is_ok(), format!("write {journal}: {w:?}"), &mut failures);
            let err = std::fs::write(format!("{host_root}/written"), b"x").err();
            check(
                err.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::EACCES),
                format!("write outside the journal: {err:?}"),
                &mut failures,
            );
            let port = |k: &str| -> u16 {
                std::env::var(k)
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0)
            };
            let ok = std::net::TcpStream::connect(("127.0.0.1", port(ALLOWED_PORT)))
                .map(drop)
                .map_err(|e| e.raw_os_error());
            check(
                ok.is_ok(),
                format!("connect to the OTLP port: {ok:?}"),
                &mut failures,
            );
            let denied = std::net::TcpStream::connect(("127.0.0.1", port(DENIED_PORT)))
                .map(drop)
                .map_err(|e| e.raw_os_error());
            check(
                denied == Err(Some(libc::EACCES)),
                format!("connect to another port: {denied:?}"),
                &mut failures,
            );
        }
        forbidden => {
            if !failures.is_empty() {
                eprintln!("{failures:?}");
                std::process::exit(4);
            }
            // SAFETY: raw syscalls with harmless arguments; the filter traps before the kernel
            // looks at them.
            let r = unsafe {
                match forbidden {
                    "bpf" => libc::syscall(libc::SYS_bpf, 0, 0, 0),
                    // With flows on, any command but the two lookups (here MAP_UPDATE_ELEM).
                    "bpf_update" => libc::syscall(libc::SYS_bpf, 2, 0, 0),
                    "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
                    "setns" => libc::syscall(libc::SYS_setns, -1, 0),
                    "mount" => libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0),
                    "finit_module" => libc::syscall(libc::SYS_finit_module, -1, 0, 0),
                    // Argument conditions: the collector may only create AF_NETLINK
                    // sockets and signal its own thread group.
                    "socket_inet" => libc::syscall(libc::SYS_socket, libc::AF_INET, 1, 0),
                    "tgkill_other" => libc::syscall(libc::SYS_tgkill, 1, 1, 0),
                    _ => -99,
                }
            };
            eprintln!("{forbidden} returned {r}: not killed");
            std::process::exit(5);
        }
    }
    if failures.is_empty() {
        std::process::exit(0);
    }
    for f in &failures {
        eprintln!("{scenario}: {f}");
    }
    std::process::exit(1);
}

/// Parent side: run one scenario; returns the exit status and the datagram received, if any.
fn run(
    scenario: &str,
    host_root: &str,
    ports: (u16, u16),
) -> (std::process::ExitStatus, Option<ChildToSupervisor>) {
    let (mut ours, theirs) = Channel::pair().expect("socketpair");
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).expect("clear cloexec");
    let status = Command::new(std::env::current_exe().expect("current exe"))
        .env(SCENARIO, scenario)
        .env(HOST_ROOT, host_root)
        .env(REPORT_FD, theirs.as_raw_fd().to_string())
        .env(ALLOWED_PORT, ports.0.to_string())
        .env(DENIED_PORT, ports.1.to_string())
        .status()
        .expect("spawn child");
    drop(theirs);
    ours.set_nonblocking(true).expect("nonblocking");
    let msg = ours.recv::<ChildToSupervisor>().ok();
    (status, msg)
}

fn main() {
    if let Ok(s) = std::env::var(SCENARIO) {
        child(&s);
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "sandbox_root needs root (CI runs as root); not skipping"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let root = dir.path().to_str().expect("utf-8 temp path").to_string();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).expect("journal dir");
    std::fs::set_permissions(
        &journal,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod journal");
    // Loopback listeners: the shipper may connect to the first (its OTLP port), not the second.
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let ports = (
        allowed.local_addr().expect("addr").port(),
        denied.local_addr().expect("addr").port(),
    );
    let mut failed = 0;
    let mut report = |name: &str, ok: bool, detail: String| {
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            println!("    {detail}");
            failed += 1;
        }
    };
    for s in [
        "collector",
        "collector-flows",
        "privhelper",
        "shipper",
        "supervisor-writes",
    ] {
        let (st, msg) = run(s, &root, ports);
        report(s, st.success() && msg.is_none(), format!("{st:?} {msg:?}"));
    }
    for (name, nr) in [
        ("bpf", libc::SYS_bpf),
        ("bpf_update", libc::SYS_bpf),
        ("ptrace", libc::SYS_ptrace),
        ("setns", libc::SYS_setns),
        ("mount", libc::SYS_mount),
        ("finit_module", libc::SYS_finit_module),
        ("socket_inet", libc::SYS_socket),
        ("tgkill_other", libc::SYS_tgkill),
    ] {
        let (st, msg) = run(name, &root, ports);
        let killed = st.signal() == Some(libc::SIGSYS);
        let reported = matches!(
            msg,
            Some(ChildToSupervisor::SeccompViolation { syscall, arch })
                if syscall == nr as u32 && arch != 0
        );
        report(
            &format!("seccomp_kills_{name}"),
            killed && reported,
            format!("status {st:?}, report {msg:?}"),
        );
    }
    if failed > 0 {
        eprintln!("{failed} sandbox scenario(s) failed");
        std::process::exit(1);
    }
}
