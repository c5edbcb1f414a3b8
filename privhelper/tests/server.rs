//! The privhelper server end to end, as root: `run()` in a thread with real channels
//! (`Channel::pair`), real /dev/kmsg, real /proc, a real network namespace with a veth end.
//! The test side plays the collector (and the supervisor on the control channel).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vigil_testkit::KillOnDrop;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{MsgFlags, recv, send, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use vigil_ipc_proto::Feature;
use vigil_ipc_proto::frame::{self, HEADER_LEN, MAX_FRAME};
use vigil_ipc_proto::{
    BpfProgram, Channel, ChildToSupervisor, FdKind, Hello, InitConfig, MAX_FD_STAT_PIDS,
    NetnsTarget, PrivErrorCode, PrivRequest, PrivResponse, ProtoError, Role, RoleStats,
    SupervisorToChild,
};
use vigil_privhelper::PrivhelperError;
use vigil_privhelper::server::MAX_CONSECUTIVE_BAD;
use vigil_testkit::netns::VethNetns;

const ALL: [Feature; 3] = [
    Feature::KmsgEvents,
    Feature::ProcessSockets,
    Feature::NetnsMetricsSetns,
];

fn init(features: &[Feature]) -> InitConfig {
    vigil_testkit::init(Role::Privhelper)
        .features(features)
        .build()
}

/// A privhelper running `run()` in a thread; the test holds the supervisor's and the
/// collector's ends.
struct Harness {
    control: Channel,
    collector: Channel,
    thread: Option<JoinHandle<Result<(), PrivhelperError>>>,
    /// Kernel thread id of the server thread (to look at its network namespace).
    tid: i32,
}

impl Harness {
    /// Started, without the collector's hello (for handshake tests).
    fn start_raw(features: &[Feature]) -> Harness {
        let (control, ctl_child) = Channel::pair().unwrap();
        let (collector, col_ph) = Channel::pair().unwrap();
        let init = init(features);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            vigil_privhelper::run(&init, ctl_child, col_ph)
        });
        let tid = rx.recv().unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Harness {
            control,
            collector,
            thread: Some(thread),
            tid,
        }
    }

    fn start(features: &[Feature]) -> Harness {
        let mut h = Harness::start_raw(features);
        assert_eq!(
            h.collector
                .handshake(Role::Collector, Some(Role::Privhelper))
                .unwrap(),
            Role::Privhelper
        );
        h
    }

    fn recv(&mut self) -> (PrivResponse, Vec<OwnedFd>) {
        self.collector
            .recv_with_fds(vigil_ipc_proto::channel::MAX_FDS)
            .unwrap()
    }

    fn request(&mut self, req: &PrivRequest) -> (PrivResponse, Vec<OwnedFd>) {
        self.collector.send(req).unwrap();
        self.recv()
    }

    /// The request must be refused with `code`, and no descriptor attached.
    fn expect_error(&mut self, req: &PrivRequest, code: PrivErrorCode) {
        let (resp, fds) = self.request(req);
        match resp {
            PrivResponse::Error(e) => assert_eq!(e.code, code, "{req:?}: {e:?}"),
            other => panic!("{req:?}: expected {code:?}, got {other:?}"),
        }
        assert!(fds.is_empty());
    }

    fn raw_expect_bad_request(&mut self, bytes: &[u8]) {
        self.collector.send_raw(bytes).unwrap();
        let (resp, fds) = self.recv();
        assert!(
            matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest),
            "{resp:?}"
        );
        assert!(fds.is_empty());
    }

    fn stats(&mut self) -> RoleStats {
        self.control.send(&SupervisorToChild::StatsRequest).unwrap();
        loop {
            match self.control.recv::<ChildToSupervisor>().unwrap() {
                ChildToSupervisor::Stats(s) => return s,
                ChildToSupervisor::Warning(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A valid request is still served.
    fn assert_serves(&mut self) {
        let me = std::process::id();
        let (resp, _) = self.request(&PrivRequest::ProcFdStats { pids: vec![me] });
        match resp {
            PrivResponse::FdStats(v) => {
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].pid, me);
                assert!(v[0].fds.unwrap() >= 3);
            }
            other => panic!("{other:?}"),
        }
    }

    fn assert_running(&self) {
        assert!(!self.thread.as_ref().unwrap().is_finished());
    }

    fn shutdown(mut self) {
        self.control.send(&SupervisorToChild::Shutdown).unwrap();
        let t = self.thread.take().unwrap();
        t.join().expect("server thread panicked").expect("run() ok");
    }
}

fn netns_inode_of(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn open_kmsg_reads_a_line_written_to_kmsg() {
    let mut h = Harness::start(&[Feature::KmsgEvents]);
    let marker = format!(
        "vigil-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (resp, fds) = h.request(&PrivRequest::OpenKmsg);
    assert_eq!(resp, PrivResponse::Fd { kind: FdKind::Kmsg });
    assert_eq!(fds.len(), 1);
    let fd = fds.into_iter().next().unwrap();
    let fl = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL).unwrap());
    assert!(fl.contains(OFlag::O_NONBLOCK));
    assert_eq!(fl & OFlag::O_ACCMODE, OFlag::O_RDONLY);

    OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap()
        .write_all(format!("<6>{marker}\n").as_bytes())
        .unwrap();

    let mut f = File::from(fd);
    let found = vigil_testkit::kmsg_fd_finds(&mut f, &marker);
    assert!(found, "{marker} not read from the passed /dev/kmsg fd");
    assert_eq!(h.stats().get("served_open_kmsg"), Some(1));
    h.shutdown();
}

/// A child `sleep` with exactly 0,1,2 (/dev/null), 3 and 4 (a Unix socket pair) and 5 (a file).
fn child_with_known_fds() -> Child {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let file = File::open("/dev/null").unwrap();
    // Move the sources far above 3..5 so the dup2s below never clobber one another.
    let hi = |fd: &dyn AsFd| -> OwnedFd {
        let n = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(200)).unwrap();
        // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; we own it alone.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }
    };
    let srcs = [hi(&a), hi(&b), hi(&file)];
    let raw: Vec<i32> = srcs.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("sleep");
    cmd.arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2 and close_range (async-signal-safe) between fork and exec; dup2 clears
    // FD_CLOEXEC on the target, close_range drops everything above 5, so exactly 0..=5 survive.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &src) in raw.iter().enumerate() {
                if libc::dup2(src, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Whatever the test process inherited without close-on-exec goes too.
            if libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(srcs);
    child
}

/// fd counts alone are the collector's own business where the kernel gives them by stat:
/// the privhelper then refuses `ProcFdStats` unless socket counts are on.
#[test]
fn proc_fd_stats_only_for_what_the_privhelper_does() {
    assert!(
        vigil_policies::probe::fd_count_by_stat(),
        "this test machine's kernel (>= 6.2) counts fds by stat"
    );
    let mut h = Harness::start(&[Feature::ProcessFds]);
    let (resp, _) = h.request(&PrivRequest::ProcFdStats {
        pids: vec![std::process::id()],
    });
    assert!(
        matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::FeatureDisabled),
        "{resp:?}"
    );
}

#[test]
fn proc_fd_stats_counts_fds_and_sockets() {
    let mut h = Harness::start(&[Feature::ProcessSockets]);
    let child = KillOnDrop(child_with_known_fds());
    let pid = child.0.id();
    let mut gone_child = Command::new("true").spawn().unwrap();
    let gone = gone_child.id();
    gone_child.wait().unwrap();

    // The dynamic loader opens and closes libraries right after exec: wait for steady state.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let (resp, fds) = h.request(&PrivRequest::ProcFdStats {
            pids: vec![pid, gone, pid],
        });
        assert!(fds.is_empty());
        let PrivResponse::FdStats(v) = resp else {
            panic!("{resp:?}")
        };
        if v[0].fds == Some(6) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats.len(), 2, "duplicates are dropped: {stats:?}");
    assert_eq!(stats[0].pid, pid);
    let listing: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| (e.file_name(), std::fs::read_link(e.path()).ok()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stats[0].fds, Some(6), "{stats:?} {listing:?}");
    assert_eq!(stats[0].sockets, Some(2), "{stats:?}");
    assert_eq!(stats[1].pid, gone);
    assert_eq!((stats[1].fds, stats[1].sockets), (None, None));

    // The largest request answers in one frame.
    let max: Vec<u32> = (1..=MAX_FD_STAT_PIDS as u32).collect();
    let (resp, _) = h.request(&PrivRequest::ProcFdStats { pids: max });
    match resp {
        PrivResponse::FdStats(v) => assert_eq!(v.len(), MAX_FD_STAT_PIDS),
        other => panic!("{other:?}"),
    }
    assert!(h.stats().get("served_proc_fd_stats").unwrap() >= 2);
    h.shutdown();
}

/// A named network namespace with one end of a veth pair; deleted on drop, also on failure.
fn netns(tag: &str) -> VethNetns {
    let pid = std::process::id();
    VethNetns::new(
        format!("vigil-ph-test-{pid}-{tag}"),
        format!("vph{tag}h{pid}"),
        format!("vph{tag}n{pid}"),
    )
}

/// Names of the interfaces an RTM_GETLINK dump on this NETLINK_ROUTE socket returns.
fn dump_links(sock: &OwnedFd) -> Vec<String> {
    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const IFLA_IFNAME: u16 = 3;
    setsockopt(sock, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[0u8; 16]); // struct ifinfomsg, AF_UNSPEC
    send(sock.as_raw_fd(), &req, MsgFlags::empty()).unwrap();

    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let mut names = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16_at(&buf, off + 4);
            assert!(len >= 16 && off + len <= n, "bad netlink message");
            match ty {
                NLMSG_DONE => return names,
                NLMSG_ERROR => panic!("netlink error in dump"),
                RTM_NEWLINK => {
                    let mut a = off + 16 + 16;
                    while a + 4 <= off + len {
                        let alen = u16_at(&buf, a) as usize;
                        let aty = u16_at(&buf, a + 2) & 0x3fff;
                        if alen < 4 {
                            break;
                        }
                        if aty == IFLA_IFNAME {
                            let v = &buf[a + 4..a + alen];
                            let v = v.split(|&c| c == 0).next().unwrap();
                            names.push(String::from_utf8_lossy(v).into_owned());
                        }
                        a += (alen + 3) & !3;
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

#[test]
fn netns_list_and_netlink_socket_inside() {
    let guard = netns("a");
    let mut h = Harness::start(&[Feature::NetnsMetricsSetns]);
    let ns_inode = netns_inode_of(&format!("/run/netns/{}", guard.name));
    let host_inode = netns_inode_of("/proc/self/ns/net");

    // A process living in the namespace too.
    let sleeper = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &guard.name, "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sleeper_pid = sleeper.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(format!("/proc/{sleeper_pid}/ns/net"))
        .map(|m| m.ino())
        .ok()
        != Some(ns_inode)
    {
        assert!(Instant::now() < deadline, "ip netns exec did not enter");
        std::thread::sleep(Duration::from_millis(10));
    }

    let (resp, fds) = h.request(&PrivRequest::ListNetns);
    assert!(fds.is_empty());
    let PrivResponse::Netns(list) = resp else {
        panic!("{resp:?}")
    };
    let ours: Vec<_> = list.iter().filter(|n| n.inode == ns_inode).collect();
    assert_eq!(ours.len(), 1, "{list:?}");
    assert_eq!(ours[0].name.as_deref(), Some(guard.name.as_str()));
    assert!(
        ours[0].pid.is_some(),
        "the sleeper's pid is recorded: {list:?}"
    );
    assert!(
        list.iter().all(|n| n.inode != host_inode),
        "host netns excluded"
    );

    // Named target: the socket sees the namespace's veth end, not the host's.
    for target in [
        NetnsTarget::Named(guard.name.clone()),
        NetnsTarget::Pid(sleeper_pid),
    ] {
        let (resp, fds) = h.request(&PrivRequest::NetlinkRouteInNetns {
            target: target.clone(),
        });
        assert_eq!(
            resp,
            PrivResponse::Fd {
                kind: FdKind::NetlinkRoute
            },
            "{target:?}"
        );
        assert_eq!(fds.len(), 1);
        let links = dump_links(&fds[0]);
        assert!(links.contains(&guard.ns_if), "{target:?}: {links:?}");
        assert!(links.contains(&"lo".to_string()), "{links:?}");
        assert!(!links.contains(&guard.host_if), "{target:?}: {links:?}");
        // The server thread came back to the host namespace.
        assert_eq!(
            netns_inode_of(&format!("/proc/self/task/{}/ns/net", h.tid)),
            host_inode
        );
    }

    // And the host's namespace (target: this process) shows the host end, not the other.
    let (_, fds) = h.request(&PrivRequest::NetlinkRouteInNetns {
        target: NetnsTarget::Pid(std::process::id()),
    });
    let links = dump_links(&fds[0]);
    assert!(links.contains(&guard.host_if) && !links.contains(&guard.ns_if));

    // Unknown names and vanished processes: NotFound, and still in the host namespace.
    h.expect_error(
        &PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Named(format!("{}-nope", guard.name)),
        },
        PrivErrorCode::NotFound,
    );
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    h.expect_error(
        &PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Pid(gone_pid),
        },
        PrivErrorCode::NotFound,
    );
    assert_eq!(
        netns_inode_of(&format!("/proc/self/task/{}/ns/net", h.tid)),
        host_inode
    );
    let s = h.stats();
    assert_eq!(s.get("served_netlink_route_in_netns"), Some(3));
    assert_eq!(s.get("served_list_netns"), Some(1));
    assert_eq!(s.get("errors"), Some(2));
    h.shutdown();
    drop(guard);
}

#[test]
fn disabled_features_are_refused() {
    let mut h = Harness::start(&[]);
    for req in [
        PrivRequest::OpenKmsg,
        PrivRequest::ProcFdStats { pids: vec![1] },
        PrivRequest::ListNetns,
        PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Pid(1),
        },
        PrivRequest::BpfAttach {
            program: BpfProgram::ExecExit,
        },
        PrivRequest::BpfAttach {
            program: BpfProgram::FlowsTracepoint,
        },
        PrivRequest::BpfAttach {
            program: BpfProgram::FlowsSocketFilter,
        },
        PrivRequest::BpfAttach {
            program: BpfProgram::FlowsTc,
        },
    ] {
        h.expect_error(&req, PrivErrorCode::FeatureDisabled);
    }
    let s = h.stats();
    assert_eq!(s.get("refused"), Some(8));
    assert_eq!(s.get("served_total"), Some(0));
    h.shutdown();
}

#[test]
fn hostile_peer_gets_errors_and_the_server_keeps_serving() {
    let mut h = Harness::start(&ALL);
    let valid = frame::encode(&PrivRequest::ProcFdStats {
        pids: vec![1, 2, 3],
    })
    .unwrap();

    // Malformed frames: each answered with BadRequest.
    let mut bad_frames: Vec<Vec<u8>> = vec![
        b"\x01\x02garbage".to_vec(),
        b"\xff".to_vec(),
        valid[..valid.len() - 1].to_vec(), // truncated payload
        valid[..HEADER_LEN].to_vec(),      // header only
        valid[..2].to_vec(),               // not even a header
        [valid.clone(), vec![0]].concat(), // trailing byte
        vec![0u8; HEADER_LEN + MAX_FRAME + 100], // oversized datagram
    ];
    let mut unknown = frame::encode(&PrivRequest::OpenKmsg).unwrap();
    unknown[HEADER_LEN] = 0x7f; // unknown variant index
    bad_frames.push(unknown);
    let mut lying = valid.clone();
    lying[..4].copy_from_slice(&u32::MAX.to_le_bytes()); // length prefix far too large
    bad_frames.push(lying);
    for f in &bad_frames {
        h.raw_expect_bad_request(f);
    }
    // A frame carrying a descriptor.
    let devnull = File::open("/dev/null").unwrap();
    h.collector
        .send_with_fds(&PrivRequest::OpenKmsg, &[devnull.as_fd()])
        .unwrap();
    let (resp, fds) = h.recv();
    assert!(
        matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest),
        "{resp:?}"
    );
    assert!(fds.is_empty());
    // More descriptors than any frame may carry.
    let many = [devnull.as_raw_fd(); 8];
    nix::sys::socket::sendmsg::<()>(
        h.collector.as_raw_fd(),
        &[std::io::IoSlice::new(&valid)],
        &[nix::sys::socket::ControlMessage::ScmRights(&many)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let (resp, fds) = h.recv();
    assert!(
        matches!(&resp, PrivResponse::Error(e) if e.code == PrivErrorCode::BadRequest),
        "{resp:?}"
    );
    assert!(fds.is_empty());
    h.assert_serves();

    // Well-formed requests that fail validation.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let refused = [
        PrivRequest::ProcFdStats {
            pids: vec![1; MAX_FD_STAT_PIDS + 1],
        },
        PrivRequest::ProcFdStats { pids: vec![0] },
        PrivRequest::ProcFdStats {
            pids: vec![1, u32::MAX],
        },
        PrivRequest::ProcFdStats {
            pids: vec![pid_max + 1],
        },
        PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Pid(0),
        },
        PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Pid(u32::MAX),
        },
    ]
    .into_iter()
    .chain(
        [
            "../x",
            "a/b",
            "..",
            ".",
            "",
            "a b",
            "x\0y",
            &"n".repeat(200),
        ]
        .into_iter()
        .map(|n| PrivRequest::NetlinkRouteInNetns {
            target: NetnsTarget::Named(n.to_string()),
        }),
    )
    .collect::<Vec<_>>();
    for req in &refused {
        h.expect_error(req, PrivErrorCode::BadRequest);
    }
    // Not a network namespace file (a regular file in /proc is not nsfs): never entered.
    h.assert_serves();
    h.assert_running();

    let s = h.stats();
    assert_eq!(s.get("bad_frames"), Some(bad_frames.len() as u64 + 2));
    assert_eq!(s.get("refused"), Some(refused.len() as u64));
    assert_eq!(s.get("collector_closed"), Some(0));

    // Many bad frames in a row: each answered, then the channel is closed; the privhelper
    // itself keeps answering the supervisor.
    for _ in 0..MAX_CONSECUTIVE_BAD {
        h.raw_expect_bad_request(b"\x03\0\0\0abc");
    }
    match h.collector.recv_with_fds::<PrivResponse>(4) {
        Err(ProtoError::Closed) => {}
        other => panic!("expected the channel closed, got {other:?}"),
    }
    h.assert_running();
    let s = h.stats();
    assert_eq!(s.get("collector_closed"), Some(1));
    assert_eq!(
        s.get("bad_frames"),
        Some(bad_frames.len() as u64 + 2 + MAX_CONSECUTIVE_BAD as u64)
    );
    h.shutdown();
}

#[test]
fn bad_hellos_close_the_channel_only() {
    let wrong_version = {
        let mut hello = Hello::new(Role::Collector);
        hello.version = 999;
        frame::encode(&hello).unwrap()
    };
    let wrong_role = frame::encode(&Hello::new(Role::Shipper)).unwrap();
    let wrong_magic = {
        let mut hello = Hello::new(Role::Collector);
        hello.magic = *b"EVIL";
        frame::encode(&hello).unwrap()
    };
    for bytes in [wrong_version, wrong_role, wrong_magic, b"junk".to_vec()] {
        let mut h = Harness::start_raw(&ALL);
        // The privhelper's own hello arrives first.
        let hello: Hello = h.collector.recv().unwrap();
        assert_eq!(hello.role, Role::Privhelper);
        h.collector.send_raw(&bytes).unwrap();
        match h.collector.recv_with_fds::<PrivResponse>(4) {
            Err(ProtoError::Closed) => {}
            other => panic!("expected the channel closed, got {other:?}"),
        }
        h.assert_running();
        assert_eq!(h.stats().get("collector_closed"), Some(1));
        h.shutdown();
    }
}

/// A zero-length datagram is a malformed frame (the channel tells it from end of stream by
/// the socket's hang-up state): it is refused with BadRequest and the channel keeps serving.
#[test]
fn empty_datagram_is_refused_not_fatal() {
    let mut h = Harness::start(&ALL);
    h.assert_serves();
    h.collector.send_raw(&[]).unwrap();
    match h.collector.recv_with_fds::<PrivResponse>(4) {
        Ok((PrivResponse::Error(e), _)) => assert_eq!(e.code, PrivErrorCode::BadRequest),
        other => panic!("expected a BadRequest refusal, got {other:?}"),
    }
    h.assert_running();
    h.assert_serves();
    assert_eq!(h.stats().get("collector_closed"), Some(0));
    h.shutdown();
}

#[test]
fn closed_control_channel_ends_run() {
    let h = Harness::start(&ALL);
    let Harness {
        control, thread, ..
    } = h;
    drop(control);
    let r = thread.unwrap().join().expect("no panic");
    assert!(matches!(r, Err(PrivhelperError::ControlClosed)), "{r:?}");
}

#[test]
fn arbitrary_datagrams_never_break_the_server() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;

    let h = RefCell::new(Harness::start(&ALL));
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    // Raw bytes, and well-framed payloads of random bytes (these reach the decoder).
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..512),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|p| {
            let mut f = (p.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&p);
            f
        }),
    ];
    runner
        .run(&strategy, |bytes| {
            let mut h = h.borrow_mut();
            h.collector.send_raw(&bytes).unwrap();
            // Exactly one answer per datagram, whatever it was.
            let (_resp, _fds) = h.recv();
            h.assert_running();
            h.assert_serves();
            Ok(())
        })
        .unwrap();
    h.into_inner().shutdown();
}
