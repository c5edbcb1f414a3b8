//! Root: interface counters of other network namespaces, both sources: /proc/PID/net/dev read
//! by a thread with no capability (netns_source "proc", the default), and a netlink socket
//! handed over by a (fake) privhelper, cached per namespace inode (netns_source "setns").

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use vigil_ipc_proto::Feature;

use common::*;
use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
use vigil_collector::cycle::Cycle;
use vigil_ipc_proto::{
    AttrValue, Channel, CollectorConfig, FdKind, NetnsInfo, PrivRequest, PrivResponse, Role,
};

#[test]
fn links_of_another_namespace() {
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "root test");
    // A thread in a new network namespace makes the socket, as the privhelper would.
    let (sock, ino) = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        let ino = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let s = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .unwrap();
        (s, ino)
    })
    .join()
    .unwrap();
    let (col, mut fake) = Channel::pair().unwrap();
    let mut col = vigil_collector::privclient::PrivClient::greeted(col);
    let _ = Role::Privhelper;
    let asked = std::thread::spawn(move || {
        let mut asks = 0;
        for round in 0..2 {
            let PrivRequest::ListNetns = fake.recv::<PrivRequest>().unwrap() else {
                panic!()
            };
            fake.send(&PrivResponse::Netns(vec![NetnsInfo {
                inode: ino,
                name: Some("t".into()),
                pid: None,
            }]))
            .unwrap();
            if round == 0 {
                let PrivRequest::NetlinkRouteInNetns { .. } = fake.recv::<PrivRequest>().unwrap()
                else {
                    panic!()
                };
                asks += 1;
                fake.send_with_fds(
                    &PrivResponse::Fd {
                        kind: FdKind::NetlinkRoute,
                    },
                    &[sock.as_fd()],
                )
                .unwrap();
            }
        }
        asks
    });
    let init = common::init(
        &[Feature::NetnsMetricsSetns],
        CollectorConfig {
            host: false,
            processes: false,
            containers: false,
            disks: false,
            netns_source: "setns".into(),
            ..Default::default()
        },
    );
    let mut cy = Cycle::new(&init).unwrap();
    for _ in 0..2 {
        let mut out = Vec::new();
        cy.collect(&mut col, &mut out);
        let r = out
            .iter()
            .find(|r| res(r, "linux.netns.inode") == Some(&AttrValue::I64(ino as i64)))
            .expect("netns record");
        assert_eq!(res(r, "linux.netns.name"), Some(&s("t")));
        let m = metric(r, "system.network.io").expect("io");
        assert!(
            m.attributes
                .iter()
                .any(|a| a.key == "network.interface.name" && a.value == s("lo"))
        );
    }
    // The socket was asked for once and reused on the second cycle.
    assert_eq!(asked.join().unwrap(), 1);
    assert_eq!(cy.stats.netns_errors, 0);
}

/// setresuid(2) for the calling thread only (the raw syscall; libc's applies to every
/// thread). Leaving uid 0 clears the thread's capabilities.
fn drop_thread_to_nobody() {
    // SAFETY: a plain syscall with integer arguments; it changes only this thread's ids.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
    assert_eq!(rc, 0, "setresuid");
    let k = vigil_testkit::proc_status("thread-self").unwrap();
    assert_eq!(k.cap_eff, 0, "{k:?}");
}

#[test]
fn namespaces_of_processes_without_any_capability() {
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "root test");
    // Another user's process in a new network namespace, with traffic on its loopback.
    let script = "ip link set lo up && for i in $(seq 25); do echo x > /dev/udp/127.0.0.1/9; done \
        && exec setpriv --reuid=65534 --regid=65534 --clear-groups sleep 31.5";
    let mut child = std::process::Command::new("unshare")
        .args(["--net", "bash", "-c", script])
        .spawn()
        .unwrap();
    let own = std::fs::metadata("/proc/self/net/dev").unwrap().ino();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let target = loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let ino = std::fs::metadata(format!("/proc/{p}/net/dev")).ok()?.ino();
            let uid = std::fs::metadata(format!("/proc/{p}")).ok()?.uid();
            (cmd == b"sleep\x0031.5\0" && ino != own && uid == 65534).then_some(p)
        });
        if let Some(p) = found {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no sleep in a netns");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = std::fs::metadata(format!("/proc/{target}/net/dev"))
        .unwrap()
        .ino();
    let out = std::thread::spawn(move || {
        drop_thread_to_nobody();
        let (cy, out) = common::one_cycle(
            &[Feature::NetnsMetrics],
            CollectorConfig {
                host: false,
                containers: false,
                disks: false,
                ..Default::default()
            },
        );
        assert_eq!(cy.stats.netns_errors, 0);
        out
    })
    .join()
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let r = out
        .iter()
        .find(|r| res(r, "linux.netns.id") == Some(&AttrValue::I64(id as i64)))
        .unwrap_or_else(|| panic!("no record for netns {id}"));
    assert!(res(r, "process.pid").is_some());
    let tx = match r {
        vigil_ipc_proto::Record::Metrics { metrics, .. } => metrics
            .iter()
            .find(|m| {
                m.name == "system.network.packet.count"
                    && m.attributes.iter().any(|a| a.value == s("lo"))
                    && m.attributes.iter().any(|a| a.value == s("transmit"))
            })
            .map(|m| m.value),
        _ => None,
    };
    match tx {
        Some(vigil_ipc_proto::MetricValue::I64(n)) => assert!(n >= 25, "lo tx packets {n}"),
        other => panic!("lo transmit packets: {other:?}"),
    }
    // Our own namespace is the host's interface counters, not repeated here.
    assert!(
        !out.iter()
            .any(|r| res(r, "linux.netns.id") == Some(&AttrValue::I64(own as i64)))
    );
}
