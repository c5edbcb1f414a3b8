//! kill -9 of the shipper mid-stream: it runs in a child process (this test binary re-executed),
//! is SIGKILLed several times while the backend is still refusing data, and restarted over the
//! same journal. Every record acknowledged to the collector must reach the backend; duplicates
//! are allowed and counted.

mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use vigil_ipc_proto::{Channel, CollectorToShipper, SupervisorToChild};

const CHILD_ENV: &str = "VIGIL_SHIPPER_CRASH_CHILD";

/// Entry point of the re-executed child; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let (ctl, col): (i32, i32) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
    // SAFETY: the parent left these two descriptors open across exec for us; nothing else in
    // this process owns them.
    let control = unsafe { Channel::from_raw_fd(ctl) };
    // SAFETY: as above.
    let collector = unsafe { Channel::from_raw_fd(col) };
    let init = common::init(
        std::path::Path::new(parts[2]),
        Some(otlp_cfg(parts[3].to_string())),
        "",
    );
    vigil_shipper::run(&init, control, collector, Default::default()).unwrap();
}

struct Running {
    child: Child,
    control: Channel,
    collector: Channel,
}

fn spawn(journal: &std::path::Path, endpoint: &str) -> Running {
    let (control, child_control) = Channel::pair().unwrap();
    let (mut collector, child_collector) = Channel::pair().unwrap();
    for fd in [child_control.as_fd(), child_collector.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    }
    let spec = format!(
        "{} {} {} {}",
        child_control.as_raw_fd(),
        child_collector.as_raw_fd(),
        journal.display(),
        endpoint
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop((child_control, child_collector));
    handshake(&mut collector);
    Running {
        child,
        control,
        collector,
    }
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let rx = Receiver::start();
    // The backend refuses for a while, so each kill leaves unshipped records in the journal.
    rx.push_replies((0..40).map(|_| Reply::status(503)));
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let endpoint = rx.endpoint();
    let mut acked = BTreeSet::new();
    let mut next_id = 0i64;
    let mut seq = 0u64;
    for round in 0..4 {
        let mut r = spawn(&journal, &endpoint);
        for _ in 0..15 {
            let batch = logs(next_id..next_id + 20);
            seq += 1;
            assert!(
                r.collector
                    .send(&CollectorToShipper::Batch(vigil_ipc_proto::Batch {
                        seq,
                        records: batch
                    }))
                    .is_ok()
            );
            if wait_reply(&mut r.collector, seq) {
                acked.extend(next_id..next_id + 20);
            }
            next_id += 20;
        }
        if round < 3 {
            // One more batch in flight (maybe journaled, maybe not), then kill -9.
            let _ = r
                .collector
                .send(&CollectorToShipper::Batch(vigil_ipc_proto::Batch {
                    seq: seq + 1,
                    records: logs(next_id..next_id + 20),
                }));
            seq += 1;
            next_id += 20;
            std::thread::sleep(Duration::from_millis(30 * round));
            r.child.kill().unwrap();
            let status = r.child.wait().unwrap();
            assert!(!status.success());
        } else {
            let (got, n) = rx.wait_ids(&acked, Duration::from_secs(30));
            let lost: Vec<_> = acked.difference(&got).collect();
            assert!(lost.is_empty(), "{} acknowledged records lost", lost.len());
            eprintln!(
                "kill -9 x3: {} records acknowledged, {} received ({} distinct, {} duplicates)",
                acked.len(),
                n,
                got.len(),
                n - got.len()
            );
            r.control.send(&SupervisorToChild::Shutdown).unwrap();
            assert!(r.child.wait().unwrap().success());
        }
    }
}
