//! The BPF loader (run as root): what it refuses, the capabilities each program needs (as the
//! agent user), a consumer with no privilege at all, SIGKILL of the loader detaching everything,
//! and the attach request over the real IPC channel.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_collector::ebpf::{BpfRecord, EbpfSource, ProcEventKind, RingBuf};
use vigil_ipc_proto::Feature;
use vigil_ipc_proto::{BpfProgram, PrivErrorCode, PrivResponse};
use vigil_privhelper::bpf::{BpfError, BpfManager};

use common::*;

#[test]
fn disabled_feature_is_refused() {
    let mut mgr = BpfManager::new();
    for p in [
        BpfProgram::ExecExit,
        BpfProgram::FlowsTracepoint,
        BpfProgram::FlowsSocketFilter,
        BpfProgram::FlowsTc,
    ] {
        let err = mgr.attach(p, &init(&[], &[])).unwrap_err();
        assert!(matches!(err, BpfError::FeatureDisabled(_)), "{err}");
        assert_eq!(err.to_priv_error().code, PrivErrorCode::FeatureDisabled);
    }
    assert!(mgr.prog_ids().is_empty());
    // Bad interface names are refused before anything is loaded.
    for bad in ["", "../etc", "a/b", "x:1", "0123456789abcdef"] {
        let err = mgr
            .attach(BpfProgram::FlowsTc, &init(&ALL, &[bad]))
            .unwrap_err();
        assert_eq!(
            err.to_priv_error().code,
            PrivErrorCode::BadRequest,
            "{bad:?}"
        );
    }
    let err = mgr
        .attach(BpfProgram::FlowsTc, &init(&ALL, &["vigilnosuchif0"]))
        .unwrap_err();
    assert!(matches!(err, BpfError::TcAttach(_)), "{err}");
    assert!(mgr.prog_ids().is_empty());
}

const CHILD_ENV: &str = "VIGIL_EBPF_UNPRIV_CHILD";
const CHILD_FD: i32 = 10;

/// Helper entry for `consumer_works_unprivileged`: does nothing unless started by it.
#[test]
fn unprivileged_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(';');
    let ring_size: u32 = parts.next().unwrap().parse().unwrap();
    let want: HashSet<u32> = parts
        .next()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    // We really are unprivileged.
    let k = vigil_testkit::proc_status("self").unwrap();
    assert_eq!(k.uids, [65534; 4]);
    assert_eq!(k.cap_eff, 0);
    assert_eq!(k.cap_prm, 0);
    assert!(k.no_new_privs);
    assert_eq!(k.seccomp, 2);
    // bpf() is really refused here: even BPF_OBJ_GET_INFO_BY_FD on the passed descriptor (which
    // the kernel alone would allow an unprivileged holder) fails.
    let mut info = [0u8; 256];
    let mut attr = [0u64; 2];
    attr[0] = CHILD_FD as u64 | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: bpf(BPF_OBJ_GET_INFO_BY_FD = 15) with a live attr and buffer.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 15, attr.as_mut_ptr(), 16) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    // SAFETY: CHILD_FD was placed by the parent for us; we take ownership once.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(CHILD_FD) };
    let mut ring = RingBuf::new(fd, ring_size).expect("mmap as nobody");
    let mut seen = HashSet::new();
    ring.consume(usize::MAX, |b| {
        if let Some(BpfRecord::Proc(e)) = vigil_collector::ebpf::records::parse(b)
            && e.kind == ProcEventKind::Exec
        {
            seen.insert(e.pid);
        }
    })
    .unwrap();
    let missing: Vec<_> = want.difference(&seen).collect();
    assert!(missing.is_empty(), "exec events missing for {missing:?}");
    println!("UNPRIV-CONSUMED {}", seen.len());
}

/// A seccomp filter refusing bpf(2) with EPERM and allowing everything else.
fn deny_bpf_filter() -> [libc::sock_filter; 6] {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_bpf as u32),
        f(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, RET_ALLOW),
    ]
}

#[test]
fn consumer_works_unprivileged() {
    let mut mgr = BpfManager::new();
    let att = mgr.attach(BpfProgram::ExecExit, &init(&ALL, &[])).unwrap();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let mut c = Command::new("/bin/true").spawn().unwrap();
        pids.push(c.id().to_string());
        c.wait().unwrap();
    }
    let spec = format!("{};{}", att.ring_size().unwrap(), pids.join(","));
    let fd = att.fds[0].as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "unprivileged_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, spec);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, CHILD_FD) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(65534, 65534, 65534) < 0
                || libc::setresuid(65534, 65534, 65534) < 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // setresuid away from 0 cleared the permitted/effective sets; clear the rest.
            let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3
            let data = [0u32; 6];
            if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // As the collector's policy does: bpf() is not allowed at all (EPERM here).
            let mut filter = deny_bpf_filter();
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("UNPRIV-CONSUMED"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = mgr.prog_ids();
    drop(att);
    drop(mgr);
    assert_detached(&ids);
}

const CAPS_CHILD_ENV: &str = "VIGIL_EBPF_CAPS_CHILD";
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn cap_mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c))
}

/// Helper entry for `loads_as_agent_user_with_only_feature_capabilities`: does nothing unless
/// started by it. Runs as uid 65534 with exactly the capabilities named in the environment.
#[test]
fn caps_child_entry() {
    let Ok(spec) = std::env::var(CAPS_CHILD_ENV) else {
        return;
    };
    let caps: Vec<u32> = spec.split(',').map(|c| c.parse().unwrap()).collect();
    let k = vigil_testkit::proc_status("self").unwrap();
    assert_eq!(k.uids, [65534; 4]);
    assert_eq!(k.cap_eff, cap_mask(&caps));
    assert!(k.no_new_privs);
    let has = |c: u32| caps.contains(&c);
    let full = has(CAP_PERFMON) && has(CAP_NET_RAW) && has(CAP_NET_ADMIN);
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &["lo"]);
    for (p, needs) in [
        (BpfProgram::ExecExit, CAP_PERFMON),
        (BpfProgram::FlowsTracepoint, CAP_PERFMON),
        (BpfProgram::FlowsSocketFilter, CAP_NET_RAW),
        (BpfProgram::FlowsTc, CAP_NET_ADMIN),
    ] {
        match (mgr.attach(p, &cfg), has(CAP_BPF) && has(needs)) {
            (Ok(a), true) => println!("CAPS-OK {p:?} {:?}", a.response),
            (Err(e), false) => {
                assert_eq!(
                    e.to_priv_error().code,
                    PrivErrorCode::PermissionDenied,
                    "{p:?}: {e}"
                );
                println!("CAPS-DENIED {p:?}");
            }
            (r, _) => panic!("{p:?} with caps {caps:?}: {r:?}"),
        }
    }
    if full {
        let a = mgr.attach(BpfProgram::ExecExit, &cfg).unwrap();
        let mut src = EbpfSource::from_response(&a.response, a.fds).unwrap();
        let mut c = Command::new("/bin/true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        while !seen {
            src.drain_raw(usize::MAX, |r| {
                if let BpfRecord::Proc(e) = r
                    && e.pid == pid
                    && e.kind == ProcEventKind::Exit
                {
                    seen = true;
                }
            })
            .unwrap();
            assert!(Instant::now() < deadline, "no exit event for {pid}");
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("CAPS-EVENTS ok");
    }
}

fn run_caps_child(caps: &[u32]) -> String {
    let spec = caps
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mask = cap_mask(caps);
    let caps = caps.to_vec();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "caps_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CAPS_CHILD_ENV, spec);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0
                || libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(65534, 65534, 65534) < 0
                || libc::setresuid(65534, 65534, 65534) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
            let (lo, hi) = (mask as u32, (mask >> 32) as u32);
            // effective, permitted, inheritable; low words then high words
            let data = [lo, lo, lo, hi, hi, hi];
            if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &c in &caps {
                if libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    c as libc::c_ulong,
                    0,
                    0,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "caps child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn loads_as_agent_user_with_only_feature_capabilities() {
    // BPF + PERFMON + NET_RAW + NET_ADMIN as uid 65534: every program loads and attaches.
    const PROGRAMS: [&str; 4] = [
        "ExecExit",
        "FlowsTracepoint",
        "FlowsSocketFilter",
        "FlowsTc",
    ];
    let out = run_caps_child(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON, CAP_BPF]);
    for p in PROGRAMS {
        assert!(out.contains(&format!("CAPS-OK {p}")), "{out}");
    }
    assert!(out.contains("CAPS-EVENTS ok"), "{out}");
    // CAP_BPF alone: each program is refused with PermissionDenied (raw tracepoints and the
    // flow tracepoints need PERFMON, the packet socket NET_RAW, tc NET_ADMIN).
    let out = run_caps_child(&[CAP_BPF]);
    for p in PROGRAMS {
        assert!(out.contains(&format!("CAPS-DENIED {p}")), "{out}");
    }
    // Each feature with exactly its own capability pair (tc needs no PERFMON: no direct packet
    // access; the flow tracepoints no network capability).
    for (pair, ok) in [
        (CAP_PERFMON, &["ExecExit", "FlowsTracepoint"][..]),
        (CAP_NET_RAW, &["FlowsSocketFilter"][..]),
        (CAP_NET_ADMIN, &["FlowsTc"][..]),
    ] {
        let out = run_caps_child(&[CAP_BPF, pair]);
        for p in PROGRAMS {
            let want = if ok.contains(&p) {
                "CAPS-OK"
            } else {
                "CAPS-DENIED"
            };
            assert!(
                out.contains(&format!("{want} {p}")),
                "caps BPF+{pair}: {out}"
            );
        }
    }
}

const HOLD_CHILD_ENV: &str = "VIGIL_EBPF_HOLD_CHILD";

/// Helper entry for `sigkill_of_the_loader_detaches_everything`: does nothing unless started by
/// it. Attaches every program, prints their ids, then waits to be killed.
#[test]
fn hold_child_entry() {
    if std::env::var(HOLD_CHILD_ENV).is_err() {
        return;
    }
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &["lo"]);
    for p in [
        BpfProgram::ExecExit,
        BpfProgram::FlowsTracepoint,
        BpfProgram::FlowsSocketFilter,
        BpfProgram::FlowsTc,
    ] {
        mgr.attach(p, &cfg).unwrap();
    }
    let ids: Vec<String> = mgr.prog_ids().iter().map(|i| i.to_string()).collect();
    println!("HOLD-IDS {}", ids.join(","));
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed");
}

#[test]
fn sigkill_of_the_loader_detaches_everything() {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    /// Kills the holder if an assertion below fails first.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let mut ids = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print "test hold_child_entry ... " first on the same line.
        if let Some((_, rest)) = line.split_once("HOLD-IDS ") {
            ids = rest.split(',').map(|i| i.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(
        ids.len(),
        8,
        "exec, exit, flow tracepoints (rx, tx), socket filter (received, transmitted), tc \
         ingress, tc egress"
    );
    for id in &ids {
        assert!(
            prog_exists(*id),
            "program {id} loaded while the loader lives"
        );
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
    child.0.wait().unwrap();
    // Nothing pinned: the kernel drops every program, link and map with the process.
    assert_detached(&ids);
}

/// The IPC path as the roles use it: the collector's `ebpf::start` asks over a real SEQPACKET
/// channel, the privhelper side answers with `bpf::respond` (descriptor over SCM_RIGHTS); a
/// feature the privhelper has off is refused and the collector goes on without it.
#[test]
fn attach_over_the_ipc_channel() {
    use vigil_ipc_proto::{Channel, PrivRequest, Role};
    let (coll, mut privh) = Channel::pair().unwrap();
    // The privhelper allows only exec; the collector (wrongly) believes flows are on too.
    let priv_init = init(&[Feature::EbpfExec], &[]);
    let coll_init = init(&[Feature::EbpfExec, Feature::EbpfFlowsTracepoint], &[]);
    let server = std::thread::spawn(move || {
        privh
            .handshake(Role::Privhelper, Some(Role::Collector))
            .unwrap();
        let mut answered = Vec::new();
        for _ in 0..2 {
            let req: PrivRequest = privh.recv().unwrap();
            let PrivRequest::BpfAttach { program } = req else {
                panic!("unexpected {req:?}")
            };
            let (resp, fds) = vigil_privhelper::bpf::respond(program, &priv_init);
            let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            privh.send_with_fds(&resp, &fds).unwrap();
            answered.push((program, matches!(resp, PrivResponse::BpfRingbuf { .. })));
        }
        answered
    });
    let mut client =
        vigil_collector::privclient::PrivClient::connect(coll, std::time::Duration::from_secs(10))
            .unwrap();
    let mut set = vigil_collector::ebpf::start(&mut client, &coll_init);
    assert_eq!(
        server.join().unwrap(),
        vec![
            (BpfProgram::ExecExit, true),
            (BpfProgram::FlowsTracepoint, false)
        ]
    );
    assert_eq!(set.sources().len(), 1);
    assert_eq!(set.sources()[0].program, BpfProgram::ExecExit);
    let mut c = Command::new("/bin/true").spawn().unwrap();
    let pid = i64::from(c.id());
    c.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        assert!(set.service(Instant::now(), &mut out, &[]).is_empty());
        let found = out.iter().any(|r| match r {
            vigil_ipc_proto::Record::Log { log, .. } => {
                log.event_name == "process.exec"
                    && log.attributes.iter().any(|kv| {
                        kv.key == "process.pid" && kv.value == vigil_ipc_proto::AttrValue::I64(pid)
                    })
            }
            _ => false,
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no process.exec for {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
