//! `run()` in a thread with real Channel pairs and fake privhelper / shipper / supervisor peers:
//! handshakes, Resume, kmsg fd passing, ProcFdStats, batching within MAX_FRAME, the unacked
//! window with drop-oldest, acks, stats, shutdown.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use vigil_ipc_proto::Feature;

use common::*;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use vigil_ipc_proto::{
    AttrValue, Channel, ChildToSupervisor, CollectorConfig, CollectorToShipper, FdKind, PrivError,
    PrivErrorCode, PrivRequest, PrivResponse, ProcFdStat, Record, Role, ShipperToCollector,
    SupervisorToChild,
};

fn fake_privhelper(mut ch: Channel, kmsg: std::os::fd::OwnedFd) {
    ch.handshake(Role::Privhelper, Some(Role::Collector))
        .unwrap();
    loop {
        let req = match ch.recv::<PrivRequest>() {
            Ok(r) => r,
            Err(_) => return,
        };
        let r = match req {
            PrivRequest::OpenKmsg => {
                ch.send_with_fds(&PrivResponse::Fd { kind: FdKind::Kmsg }, &[kmsg.as_fd()])
            }
            PrivRequest::ProcFdStats { pids } => {
                assert!(pids.len() <= vigil_ipc_proto::MAX_FD_STAT_PIDS);
                ch.send(&PrivResponse::FdStats(
                    pids.iter()
                        .map(|&pid| ProcFdStat {
                            pid,
                            fds: Some(3),
                            sockets: Some(1),
                        })
                        .collect(),
                ))
            }
            PrivRequest::ListNetns => ch.send(&PrivResponse::Netns(Vec::new())),
            _ => ch.send(&PrivResponse::Error(PrivError {
                code: PrivErrorCode::FeatureDisabled,
                message: "off".into(),
            })),
        };
        if r.is_err() {
            return;
        }
    }
}

/// A datagram pair standing in for /dev/kmsg: one record per datagram, as the kernel reads it.
fn kmsg_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// The shipper's side of the collector's start: hello both ways, then where kmsg resumes.
fn greet_as_shipper(ch: &mut Channel, last_kmsg_seq: Option<u64>) {
    ch.handshake(Role::Shipper, Some(Role::Collector)).unwrap();
    ch.send(&ShipperToCollector::Resume { last_kmsg_seq })
        .unwrap();
}

#[test]
fn run_batches_acks_resume_stats_shutdown() {
    let (ctl_sup, ctl_col) = Channel::pair().unwrap();
    let (ph_col, ph_fake) = Channel::pair().unwrap();
    let (sh_col, mut sh_fake) = Channel::pair().unwrap();
    let (kmsg_writer, kmsg_reader) = kmsg_pair();
    for rec in [
        "2,99,1000,-;EXT4-fs (old1): Remounting filesystem read-only",
        "2,100,1001,-;EXT4-fs (old2): Remounting filesystem read-only",
    ] {
        nix::unistd::write(&kmsg_writer, rec.as_bytes()).unwrap();
    }
    let ph = std::thread::spawn(move || fake_privhelper(ph_fake, kmsg_reader));
    let cfg = CollectorConfig {
        interval_ms: 200,
        max_batch_records: 50,
        max_unacked_batches: 4,
        ebpf_exec: false,
        ebpf_flows: false,
        process_sockets: true,
        ..Default::default()
    };
    let init = common::init(
        &[
            Feature::KmsgEvents,
            Feature::ProcessFds,
            Feature::ProcessSockets,
            Feature::NetnsMetrics,
            Feature::HostMetrics,
        ],
        cfg,
    );
    let col = std::thread::spawn(move || vigil_collector::run(&init, ctl_col, ph_col, sh_col));

    greet_as_shipper(&mut sh_fake, Some(100));
    sh_fake
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();

    // Phase 1: no acks. Exactly the window (4) arrives, then nothing while cycles go on.
    let mut got = Vec::new();
    while let Ok(CollectorToShipper::Batch(b)) = sh_fake.recv::<CollectorToShipper>() {
        got.push(b);
    }
    assert_eq!(got.len(), 4, "window of 4 unacked batches");
    std::thread::sleep(Duration::from_millis(500));

    // Phase 2: ack everything for a while; a new kernel event arrives (phase 1 may have
    // dropped batches, so the event is written only now).
    nix::unistd::write(
        &kmsg_writer,
        b"2,101,1002,-;EXT4-fs (sdz9): Remounting filesystem read-only",
    )
    .unwrap();
    let mut last_seq = 0;
    let mut all = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    let mut pending = got;
    while Instant::now() < end {
        for b in pending.drain(..) {
            assert!(
                b.seq > last_seq,
                "seq increases: {} after {last_seq}",
                b.seq
            );
            assert!(b.records.len() <= 50);
            assert!(
                vigil_ipc_proto::frame::encoded_len(&CollectorToShipper::Batch(b.clone())).unwrap()
                    <= vigil_ipc_proto::frame::MAX_FRAME
            );
            last_seq = b.seq;
            sh_fake
                .send(&ShipperToCollector::Ack { seq: b.seq })
                .unwrap();
            all.extend(b.records);
        }
        match sh_fake.recv::<CollectorToShipper>() {
            Ok(CollectorToShipper::Batch(b)) => pending.push(b),
            Err(e) if e.is_would_block() => {}
            Err(e) => panic!("{e}"),
        }
    }
    // Kernel events: only seq 101 (Resume said 100).
    let events: Vec<_> = all
        .iter()
        .filter_map(|r| match r {
            Record::Log { log, .. } => Some(log),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_name, "FilesystemIsReadOnly");
    assert!(
        events[0]
            .attributes
            .iter()
            .any(|a| a.key == "linux.kmsg.seq" && a.value == AttrValue::I64(101))
    );
    // Socket counts (and with them fd counts) came from the fake privhelper.
    let p = all
        .iter()
        .find_map(|r| match r {
            Record::Process(p) => Some(p),
            _ => None,
        })
        .expect("process records");
    assert_eq!((p.open_fds, p.sockets), (Some(3), Some(1)));
    assert!(all.iter().any(|r| metric(r, "system.cpu.time").is_some()));

    // Stats.
    let mut ctl = ctl_sup;
    ctl.send(&SupervisorToChild::StatsRequest).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ChildToSupervisor::Stats(st) = ctl.recv::<ChildToSupervisor>().unwrap() else {
        panic!("no stats")
    };
    assert!(st.get("cycles").unwrap() >= 5, "{st:?}");
    assert!(st.get("dropped_batches").unwrap() > 0, "{st:?}");
    assert_eq!(st.get("kmsg_records"), Some(3));
    assert_eq!(st.get("kmsg_skipped_resumed"), Some(2));
    assert_eq!(st.get("kmsg_events"), Some(1));
    assert!(st.get("batches_acked").unwrap() >= 4);
    assert!(st.get("last_cycle_us").unwrap() > 0);

    ctl.send(&SupervisorToChild::Shutdown).unwrap();
    col.join().unwrap().unwrap();
    ph.join().unwrap();
}

/// A feature the supervisor turned on that the privhelper refuses (as under a container
/// runtime's seccomp profile that denies bpf()): the collector keeps running and tells the
/// supervisor which feature is off and why, so `vigil status` does not say "on".
#[test]
fn a_refused_feature_is_reported_off_and_collection_goes_on() {
    let (mut ctl, ctl_col) = Channel::pair().unwrap();
    let (ph_col, ph_fake) = Channel::pair().unwrap();
    let (sh_col, mut sh_fake) = Channel::pair().unwrap();
    let (_kmsg_writer, kmsg_reader) = kmsg_pair();
    let ph = std::thread::spawn(move || fake_privhelper(ph_fake, kmsg_reader));
    let cfg = CollectorConfig {
        interval_ms: 200,
        kmsg: false,
        ebpf_exec: true,
        ebpf_flows: false,
        ..Default::default()
    };
    let init = common::init(&[Feature::EbpfExec, Feature::HostMetrics], cfg);
    let col = std::thread::spawn(move || vigil_collector::run(&init, ctl_col, ph_col, sh_col));
    greet_as_shipper(&mut sh_fake, None);

    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let first = ctl.recv::<ChildToSupervisor>();
    if first.is_err() && col.is_finished() {
        panic!("collector ended: {:?}", col.join().unwrap());
    }
    match first.unwrap() {
        ChildToSupervisor::FeatureOff { feature, reason } => {
            assert_eq!(feature, Feature::EbpfExec);
            assert!(reason.contains("refused ExecExit"), "{reason}");
        }
        other => panic!("expected FeatureOff, got {other:?}"),
    }
    // Collection goes on without it.
    sh_fake
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(
        sh_fake.recv::<CollectorToShipper>(),
        Ok(CollectorToShipper::Batch(_))
    ));
    ctl.send(&SupervisorToChild::Shutdown).unwrap();
    col.join().unwrap().unwrap();
    ph.join().unwrap();
}
