//! run() inside the shipper's Landlock contract: read-write on the journal directory only,
//! TCP connect only to the OTLP port. The ruleset is applied to the thread that runs the
//! shipper (Landlock without TSYNC restricts the calling thread only), so the receiver in the
//! other threads of this test is unaffected.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
};
use vigil_ipc_proto::Channel;

#[test]
fn run_under_landlock_journal_dir_and_otlp_port_only() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    // "localhost": resolved without /etc/hosts, which the sandbox cannot read.
    let mut init = init(
        &journal,
        Some(otlp_cfg(format!("http://localhost:{}", rx.port))),
        journal.join("out.jsonl").to_str().unwrap(),
    );
    init.shipper.journal_segment_bytes = 8192;
    let port = rx.port;
    let (control, ship_control) = Channel::pair().unwrap();
    let (mut collector, ship_collector) = Channel::pair().unwrap();
    let jd = journal.clone();
    let t = std::thread::spawn(move || {
        let abi = ABI::V4;
        let status = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .unwrap()
            .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)
            .unwrap()
            .create()
            .unwrap()
            .add_rules(path_beneath_rules([&jd], AccessFs::from_all(abi)))
            .unwrap()
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .unwrap()
            .restrict_self()
            .unwrap();
        assert_eq!(status.ruleset, RulesetStatus::FullyEnforced);
        // The sandbox is real: nothing outside the journal directory, no other port.
        assert!(std::fs::read("/etc/hostname").is_err());
        assert!(std::fs::write(jd.parent().unwrap().join("escape"), b"x").is_err());
        let other = if port == 9 { 10 } else { 9 };
        let denied = std::net::TcpStream::connect(("127.0.0.1", other)).unwrap_err();
        assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
        // Seccomp for this thread: the documented syscalls and nothing else (ENOSYS for the
        // rest, so a missing one shows as a failure here rather than a silent kill).
        let mut filter =
            libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Errno(libc::ENOSYS))
                .unwrap();
        for name in vigil_shipper::SYSCALLS {
            if let Ok(sc) = libseccomp::ScmpSyscall::from_name(name) {
                filter.add_rule(libseccomp::ScmpAction::Allow, sc).unwrap();
            }
        }
        filter.load().unwrap();
        assert_eq!(
            std::fs::metadata("/").map(|_| ()).ok(),
            Some(()),
            "stat is allowed"
        );
        vigil_shipper::run(&init, ship_control, ship_collector)
    });
    handshake(&mut collector);
    for b in 0..10 {
        let batch = logs(b * 30..b * 30 + 30);
        collector
            .send(&vigil_ipc_proto::CollectorToShipper::Batch(
                vigil_ipc_proto::Batch {
                    seq: b as u64,
                    records: batch,
                },
            ))
            .unwrap();
        assert!(wait_reply(&mut collector, b as u64));
    }
    let want: BTreeSet<i64> = (0..300).collect();
    let (got, _) = rx.wait_ids(&want, Duration::from_secs(20));
    assert_eq!(got, want);
    control
        .send(&vigil_ipc_proto::SupervisorToChild::Shutdown)
        .unwrap();
    t.join().unwrap().unwrap();
    assert!(!dir.path().join("escape").exists());
    let json = std::fs::read_to_string(journal.join("out.jsonl")).unwrap();
    let test_lines = json.lines().filter(|l| l.contains("\"test.id\"")).count();
    assert_eq!(test_lines, 300);
}
