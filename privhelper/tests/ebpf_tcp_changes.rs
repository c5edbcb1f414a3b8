//! The TCP state change counter (run as root): loaded and attached once, its map handed out
//! read-only, and the collector's read-only mapping of it counting the changes of a real
//! loopback connection.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;

use vigil_collector::ebpf::mapping::Mapping;
use vigil_collector::ebpf::tcpchanges::{TcpChanges, VALUE_SIZE};
use vigil_ipc_proto::{BpfProgram, Feature, PrivResponse};
use vigil_privhelper::bpf::BpfManager;

use common::*;

#[test]
fn a_loopback_connection_is_counted_through_the_read_only_mapping() {
    let mut mgr = BpfManager::new();
    let cfg = init(&[Feature::EbpfTcpChanges], &[]);
    let att = mgr
        .attach(BpfProgram::TcpChanges, &cfg)
        .expect("attach tcp changes");
    assert_eq!(
        att.response,
        PrivResponse::BpfCounters {
            program: BpfProgram::TcpChanges,
            value_size: VALUE_SIZE as u32
        }
    );
    assert!(att.prog_ids.iter().all(|&id| prog_exists(id)));
    let PrivResponse::BpfCounters { value_size, .. } = att.response else {
        unreachable!()
    };
    let mut fds = att.fds;
    let fd = fds.remove(0);
    // Frozen: a writable mapping is refused, whatever the descriptor.
    assert!(
        Mapping::new(fd.as_fd(), VALUE_SIZE, true, 0).is_err(),
        "a writable mapping of a frozen map"
    );
    // TcpChanges::new checks fdinfo: an array of one value, mmap-able, frozen.
    let changes = TcpChanges::new(fd, value_size).expect("read-only mapping");
    let before = changes.count();

    // LISTEN; SYN_SENT, ESTABLISHED (client); SYN_RECV, ESTABLISHED (server side); then a
    // half close: FIN_WAIT1 (client), CLOSE_WAIT (server side): at least 7 (the client's
    // FIN_WAIT2 may come after the server reads its EOF).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut &s, &mut buf).unwrap(), 0, "EOF");
    let after = changes.count();
    assert!(after >= before + 7, "{before} → {after}");

    // Detached with the manager: no more counting.
    drop(mgr);
    let settled = changes.count();
    drop((c, s, l));
    let _ = TcpStream::connect("127.0.0.1:9");
    assert_eq!(changes.count(), settled, "counted after detach");
}

/// The feature off: refused, nothing loaded.
#[test]
fn refused_when_the_feature_is_off() {
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &[]);
    assert!(mgr.attach(BpfProgram::TcpChanges, &cfg).is_err());
    assert!(mgr.prog_ids().is_empty());
}
