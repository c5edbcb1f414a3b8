//! run() inside the shipper's sandbox contract (and, in a child process, as the agent user): read-write on the journal directory only,
//! TCP connect only to the OTLP port. The ruleset is applied to the thread that runs the
//! shipper (Landlock without TSYNC restricts the calling thread only), so the receiver in the
//! other threads of this test is unaffected.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
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
        sandbox_this_thread(&jd, port, &[]);
        vigil_shipper::run(&init, ship_control, ship_collector, Default::default())
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

const CHILD_ENV: &str = "VIGIL_SHIPPER_AGENT_USER_CHILD";

/// Entry point of the re-executed child (a no-op in a normal run): as the agent user, sandbox
/// itself, run the shipper on the inherited channels.
#[test]
fn agent_user_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p: Vec<&str> = spec.split(' ').collect();
    let (ctl, col, port): (i32, i32, u16) = (
        p[0].parse().unwrap(),
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
    );
    let journal = std::path::PathBuf::from(p[3]);
    assert_eq!(nix::unistd::getuid().as_raw(), 65534);
    let k = vigil_testkit::proc_status("thread-self").unwrap();
    assert_eq!(k.cap_eff, 0, "{k:?}");
    // SAFETY: the parent left these descriptors open across exec for us alone.
    let control = unsafe { Channel::from_raw_fd(ctl) };
    // SAFETY: as above.
    let collector = unsafe { Channel::from_raw_fd(col) };
    let mut init = init(
        &journal,
        Some(otlp_cfg(format!("http://127.0.0.1:{port}"))),
        "",
    );
    init.shipper.journal_segment_bytes = 8192;
    sandbox_this_thread(&journal, port, &[]);
    vigil_shipper::run(&init, control, collector, Default::default()).unwrap();
}

/// The deployment shape: a separate process running as nobody (no capabilities), Landlock and
/// seccomp applied, journal directory owned by that user.
#[test]
fn as_agent_user_in_a_child_process() {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    nix::unistd::chown(
        &journal,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let (control, child_control) = Channel::pair().unwrap();
    let (mut collector, child_collector) = Channel::pair().unwrap();
    for fd in [child_control.as_fd(), child_collector.as_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
    }
    let spec = format!(
        "{} {} {} {}",
        child_control.as_raw_fd(),
        child_collector.as_raw_fd(),
        rx.port,
        journal.display()
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "agent_user_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop((child_control, child_collector));
    handshake(&mut collector);
    for b in 0..10u64 {
        collector
            .send(&vigil_ipc_proto::CollectorToShipper::Batch(
                vigil_ipc_proto::Batch {
                    seq: b,
                    records: logs(b as i64 * 30..b as i64 * 30 + 30),
                },
            ))
            .unwrap();
        assert!(wait_reply(&mut collector, b));
    }
    let want: BTreeSet<i64> = (0..300).collect();
    let (got, _) = rx.wait_ids(&want, Duration::from_secs(20));
    assert_eq!(got, want);
    control
        .send(&vigil_ipc_proto::SupervisorToChild::Shutdown)
        .unwrap();
    assert!(child.wait().unwrap().success());
    for e in std::fs::read_dir(&journal).unwrap() {
        assert_eq!(e.unwrap().metadata().unwrap().uid(), 65534);
    }
}
