//! Root: interface counters of another network namespace through a netlink socket handed over
//! by a (fake) privhelper, cached per namespace inode and re-asked when the namespace goes.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

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
    let (mut col, mut fake) = Channel::pair().unwrap();
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
        &["netns_metrics"],
        CollectorConfig {
            host: false,
            processes: false,
            containers: false,
            disks: false,
            ..Default::default()
        },
    );
    let mut cy = Cycle::new(&init);
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
