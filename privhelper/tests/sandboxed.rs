//! The privhelper as it runs in production: a separate process (this test binary re-executed)
//! that applies the real sandbox with `vigil_policies::apply` (uid/gid 65534, only
//! SYS_ADMIN, SYSLOG, SYS_PTRACE and DAC_READ_SEARCH kept, NoNewPrivs, the privhelper Landlock
//! ruleset, the privhelper seccomp policy) and then calls `run()` on fds 3 and 4. This process
//! plays the supervisor and the collector. Any syscall the policy forgot kills the child with
//! SIGSYS, reported on the control channel: the test then names it.
//!
//! `harness = false`: the child must still be single-threaded when it applies the sandbox.

use std::fs::File;
use std::io::IoSlice;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use vigil_ipc_proto::Feature;
use vigil_ipc_proto::frame;
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, FdKind, InitConfig, LandlockPlan, NetnsTarget, PrivErrorCode,
    PrivRequest, PrivResponse, Role, SandboxPlan, SupervisorToChild, fds,
};

const CHILD_ENV: &str = "VIGIL_PRIVHELPER_SANDBOXED_CHILD";
const AGENT_UID: u32 = 65534;
/// CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SYSLOG.
const KEEP_CAPS: [u8; 4] = [2, 19, 21, 34];
/// After start-up (socket counts, setns): CAP_SYSLOG goes.
const STEADY_CAPS: [u8; 3] = [2, 19, 21];

/// CapEff, CapPrm, CapBnd of a process.
fn cap_sets(pid: u32) -> [u64; 3] {
    let k = vigil_testkit::proc_status(pid).unwrap();
    [k.cap_eff, k.cap_prm, k.cap_bnd]
}

/// `landlock`: apply the privhelper Landlock ruleset too.
fn init(landlock_on: bool) -> InitConfig {
    let landlock = vigil_policies::landlock_plan(
        Role::Privhelper,
        &vigil_policies::LandlockVars {
            // Not "/": the ruleset must be what lets the privhelper work, not a host-wide grant.
            host_root: "/usr".into(),
            runtime_dir: "/tmp".into(),
            journal_dir: "/tmp".into(),
            connect_ports: Vec::new(),
        },
    )
    .expect("privhelper landlock template");
    vigil_testkit::init(Role::Privhelper)
        .sandbox(SandboxPlan {
            ids: Some(vigil_ipc_proto::Ids {
                uid: AGENT_UID,
                gid: AGENT_UID,
                groups: Vec::new(),
            }),
            keep_caps: KEEP_CAPS.to_vec(),
            // Socket counts and setns serve after start-up too.
            steady_caps: STEADY_CAPS.to_vec(),
            non_dumpable: true,
            seccomp: vec!["privhelper".into()],
            landlock: LandlockPlan {
                enabled: landlock.enabled && landlock_on,
                ..landlock
            },
        })
        .features(&[
            Feature::KmsgEvents,
            Feature::ProcessSockets,
            Feature::NetnsMetricsSetns,
        ])
        .build()
}

fn child_main() -> ! {
    // SAFETY: the parent placed the channel ends at 3 and 4 (pre_exec below); nothing else in
    // this fresh process refers to them.
    let control = unsafe { Channel::from_raw_fd(fds::CONTROL) };
    // SAFETY: as above.
    let collector = unsafe { Channel::from_raw_fd(fds::PEER_A) };
    let init = init(std::env::var(CHILD_ENV).as_deref() == Ok("landlock"));
    let report = match vigil_policies::apply(Role::Privhelper, &init.sandbox, fds::CONTROL) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox: {e}");
            std::process::exit(3);
        }
    };
    if control.send(&ChildToSupervisor::Ready(report)).is_err() {
        std::process::exit(4);
    }
    match vigil_privhelper::run(&init, control, collector) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("privhelper: {e}");
            std::process::exit(1);
        }
    }
}

fn high(fd: &impl AsFd) -> OwnedFd {
    let n = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(200)).unwrap();
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; we own it alone.
    unsafe { OwnedFd::from_raw_fd(n) }
}

struct Privhelper {
    child: Child,
    control: Channel,
    collector: Channel,
}

impl Privhelper {
    fn spawn(landlock: bool) -> Privhelper {
        let (control, ctl_child) = Channel::pair().unwrap();
        let (collector, col_child) = Channel::pair().unwrap();
        let srcs = [high(&ctl_child), high(&col_child)];
        let raw = [srcs[0].as_raw_fd(), srcs[1].as_raw_fd()];
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(CHILD_ENV, if landlock { "landlock" } else { "no-landlock" })
            .stdin(Stdio::null());
        // SAFETY: only dup2 and close_range (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for (i, &src) in raw.iter().enumerate() {
                    if libc::dup2(src, fds::CONTROL + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop((srcs, ctl_child, col_child));
        control
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut p = Privhelper {
            child,
            control,
            collector,
        };
        match p.control.recv::<ChildToSupervisor>() {
            Ok(ChildToSupervisor::Ready(r)) => {
                assert_eq!(r.uid, AGENT_UID, "{r:?}");
                assert!(r.no_new_privs, "{r:?}");
                assert_ne!(r.seccomp, "off", "{r:?}");
                println!("sandbox: {r:?}");
            }
            other => p.die(&format!("expected Ready, got {other:?}")),
        }
        p.collector
            .handshake(Role::Collector, Some(Role::Privhelper))
            .unwrap_or_else(|e| p.die(&format!("handshake: {e}")));
        p
    }

    /// Fail with what the child said last (a seccomp violation names the syscall).
    fn die(&mut self, what: &str) -> ! {
        let _ = self.control.set_read_timeout(Some(Duration::from_secs(2)));
        let mut last = Vec::new();
        while let Ok(m) = self.control.recv::<ChildToSupervisor>() {
            if let ChildToSupervisor::SeccompViolation { syscall, .. } = &m {
                last.push(format!(
                    "seccomp killed the privhelper on {}",
                    vigil_policies::syscall_name(*syscall)
                ));
            }
            last.push(format!("{m:?}"));
        }
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        panic!("{what}; child status {status:?}; control: {last:?}");
    }

    fn request(&mut self, req: &PrivRequest) -> (PrivResponse, Vec<OwnedFd>) {
        if let Err(e) = self.collector.send(req) {
            self.die(&format!("send {req:?}: {e}"));
        }
        match self.collector.recv_with_fds(4) {
            Ok(x) => x,
            Err(e) => self.die(&format!("answer to {req:?}: {e}")),
        }
    }
}

struct Cleanup(Vec<Vec<String>>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let _ = Command::new("ip").args(args).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `landlock`, the kernel's Landlock ptrace scoping applies: a Landlocked process may not
/// pass `ptrace_may_access` on processes outside its domain, so the fd links of other processes
/// (socket counts) and `/proc/PID/ns/net` of other processes are refused (EACCES), whatever
/// the capabilities. The privhelper answers that with `sockets: None` and `PermissionDenied`,
/// and keeps serving. Without Landlock (seccomp, uid and capabilities as in production) every
/// request works in full.
fn sandboxed_privhelper_serves_every_request(landlock: bool) {
    let pid = std::process::id();
    let name = format!("vigil-ph-sbx-{pid}");
    let (host_if, ns_if) = (format!("vphsh{pid}"), format!("vphsn{pid}"));
    let _cleanup = Cleanup(vec![
        vec!["link".into(), "del".into(), host_if.clone()],
        vec!["netns".into(), "del".into(), name.clone()],
    ]);
    ip(&["netns", "add", &name]);
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
    ]);
    ip(&["link", "set", &ns_if, "netns", &name]);
    let ns_inode = std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap()
        .ino();

    // A root-owned process with a socket pair: another user's /proc/PID/fd for uid 65534.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::from(OwnedFd::from(a)))
        .stdout(Stdio::from(OwnedFd::from(b)))
        .spawn()
        .unwrap();

    let mut p = Privhelper::spawn(landlock);
    // Start-up: every capability of its features permitted; the bounding set already only
    // what outlives start-up.
    let caps = |pid: u32| {
        let st = cap_sets(pid);
        (st[0], st[1], st[2])
    };
    let mask = |nums: &[u8]| nums.iter().fold(0u64, |m, n| m | 1 << n);
    let (eff, prm, bnd) = caps(p.child.id());
    assert_eq!((eff, prm), (mask(&KEEP_CAPS), mask(&KEEP_CAPS)));
    assert_eq!(bnd, mask(&STEADY_CAPS));

    // /dev/kmsg through the passed fd.
    let marker = format!("vigil-sbx-test-{pid}-{:?}", Instant::now());
    let (resp, fds) = p.request(&PrivRequest::OpenKmsg);
    assert_eq!(resp, PrivResponse::Fd { kind: FdKind::Kmsg });
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap()
        .write_all(format!("<6>{marker}\n").as_bytes())
        .unwrap();
    let mut kmsg = File::from(fds.into_iter().next().unwrap());
    assert!(
        vigil_testkit::kmsg_fd_finds(&mut kmsg, &marker),
        "marker read through the sandboxed privhelper's kmsg fd"
    );

    // Another user's fds.
    let (resp, _) = p.request(&PrivRequest::ProcFdStats {
        pids: vec![sleeper.id(), 1],
    });
    let PrivResponse::FdStats(stats) = resp else {
        p.die(&format!("FdStats expected, got {resp:?}"))
    };
    assert!(stats[0].fds.is_some_and(|n| n >= 3), "{stats:?}");
    if landlock {
        assert_eq!(stats[0].sockets, None, "Landlock ptrace scoping: {stats:?}");
    } else {
        assert_eq!(stats[0].sockets, Some(2), "{stats:?}");
    }
    assert!(stats[1].fds.is_some(), "pid 1 readable: {stats:?}");

    // Namespaces: listed, entered, left.
    let (resp, _) = p.request(&PrivRequest::ListNetns);
    let PrivResponse::Netns(list) = resp else {
        p.die(&format!("Netns expected, got {resp:?}"))
    };
    assert!(
        list.iter()
            .any(|n| n.inode == ns_inode && n.name.as_deref() == Some(name.as_str())),
        "{list:?}"
    );
    for target in [
        NetnsTarget::Named(name.clone()),
        NetnsTarget::Pid(std::process::id()),
    ] {
        let (resp, fds) = p.request(&PrivRequest::NetlinkRouteInNetns {
            target: target.clone(),
        });
        let by_pid = matches!(target, NetnsTarget::Pid(_));
        if landlock && by_pid {
            assert!(
                matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::PermissionDenied),
                "Landlock ptrace scoping: {resp:?}"
            );
            assert!(fds.is_empty());
            continue;
        }
        assert_eq!(
            resp,
            PrivResponse::Fd {
                kind: FdKind::NetlinkRoute
            },
            "{target:?}"
        );
        assert_eq!(fds.len(), 1);
    }

    // Hostile input is refused the same way under seccomp.
    p.collector.send_raw(b"\x03\0\0\0abc").unwrap();
    let (resp, _) = p.collector.recv_with_fds::<PrivResponse>(4).unwrap();
    assert!(matches!(resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest));
    let (resp, _) = p.request(&PrivRequest::NetlinkRouteInNetns {
        target: NetnsTarget::Named("../../etc/passwd".into()),
    });
    assert!(matches!(resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest));
    let big = frame::encode(&PrivRequest::ProcFdStats {
        pids: vec![1; vigil_ipc_proto::MAX_FD_STAT_PIDS + 1],
    })
    .unwrap();
    p.collector.send_raw(&big).unwrap();
    let (resp, _) = p.collector.recv_with_fds::<PrivResponse>(4).unwrap();
    assert!(matches!(resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest));

    // No descriptor leaks in the privhelper: what it hands out, and what a hostile peer pushes
    // at it, is closed on its side.
    let child_fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = child_fds(p.child.id());
    // Once-only: a second /dev/kmsg is refused.
    let (resp, fds) = p.request(&PrivRequest::OpenKmsg);
    assert!(
        matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::OutOfPhase),
        "{resp:?}"
    );
    assert!(fds.is_empty());
    let devnull = File::open("/dev/null").unwrap();
    const ROUNDS: u64 = 20;
    for _ in 0..ROUNDS {
        let (_, fds) = p.request(&PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Named(name.clone()),
        });
        assert_eq!(fds.len(), 1);
        // One descriptor where none is allowed, then more than a frame may carry (MSG_CTRUNC).
        p.collector
            .send_with_fds(&PrivRequest::ListNetns, &[devnull.as_fd()])
            .unwrap();
        let many = [devnull.as_raw_fd(); 8];
        let bytes = frame::encode(&PrivRequest::ListNetns).unwrap();
        sendmsg::<()>(
            p.collector.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&many)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        for _ in 0..2 {
            let (resp, fds) = p.collector.recv_with_fds::<PrivResponse>(4).unwrap();
            assert!(
                matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest),
                "{resp:?}"
            );
            assert!(fds.is_empty());
        }
    }
    assert_eq!(
        child_fds(p.child.id()),
        before,
        "privhelper leaks descriptors"
    );

    // The end of start-up: exactly the steady-state capabilities remain, start-up requests
    // are refused, the per-cycle ones still served.
    let (resp, _) = p.request(&PrivRequest::Ready);
    assert_eq!(
        resp,
        PrivResponse::Ready {
            caps: STEADY_CAPS.to_vec()
        }
    );
    let (eff, prm, bnd) = caps(p.child.id());
    assert_eq!(
        (eff, prm, bnd),
        (mask(&STEADY_CAPS), mask(&STEADY_CAPS), mask(&STEADY_CAPS))
    );
    for req in [PrivRequest::OpenKmsg, PrivRequest::Ready] {
        let (resp, fds) = p.request(&req);
        assert!(
            matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::OutOfPhase),
            "{req:?} after Ready: {resp:?}"
        );
        assert!(fds.is_empty());
    }
    let (resp, _) = p.request(&PrivRequest::ProcFdStats {
        pids: vec![sleeper.id()],
    });
    assert!(matches!(resp, PrivResponse::FdStats(_)), "{resp:?}");

    // Stats, then a clean shutdown: exit 0, not SIGSYS.
    p.control.send(&SupervisorToChild::StatsRequest).unwrap();
    match p.control.recv::<ChildToSupervisor>() {
        Ok(ChildToSupervisor::Stats(s)) => {
            let served = ROUNDS + if landlock { 1 } else { 2 };
            assert_eq!(
                s.get("served_netlink_route_in_netns"),
                Some(served),
                "{s:?}"
            );
            assert_eq!(s.get("bad_frames"), Some(1 + 2 * ROUNDS), "{s:?}");
            // The bad name and the oversized list; a second kmsg; kmsg and Ready after Ready.
            assert_eq!(s.get("refused"), Some(5), "{s:?}");
            assert_eq!(s.get("out_of_phase"), Some(3), "{s:?}");
            assert_eq!(s.get("steady_state"), Some(1), "{s:?}");
        }
        other => p.die(&format!("Stats expected, got {other:?}")),
    }
    p.control.send(&SupervisorToChild::Shutdown).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            p.die("no exit after Shutdown");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        p.die(&format!("exit {status:?} signal {:?}", status.signal()));
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    println!("test sandboxed_privhelper_serves_every_request (landlock: {landlock}) ... ok");
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_main();
    }
    // libtest-like flags (--list, filters) are accepted and ignored: there is one test.
    if std::env::args().any(|a| a == "--list") {
        println!("sandboxed_privhelper_serves_every_request: test");
        return;
    }
    sandboxed_privhelper_serves_every_request(false);
    sandboxed_privhelper_serves_every_request(true);
}
